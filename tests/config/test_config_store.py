"""`[store] url` (issue 17): empty for SQLite, a postgresql:// URL otherwise; a bad value names the key and
never echoes a password."""

from __future__ import annotations

import pytest

from pbx.config import ConfigError, parse_config
from tests.config.test_config import BASE, data


def test_default_is_sqlite() -> None:
    config = parse_config(data(), BASE)
    assert config.store.url == "" and not config.store.postgresql


def test_a_postgresql_url() -> None:
    url = "postgresql://pbx:s3cret@db.internal:5432/pbx?sslmode=verify-full"
    config = parse_config(data(store={"url": url}), BASE)
    assert config.store.url == url and config.store.postgresql
    assert "s3cret" not in repr(config.store)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://pbx:s3cret@db/pbx", "must be a postgresql:// URL"),
        ("postgresql://pbx:s3cret@db:notaport/pbx", "is not a URL"),
        ("postgresql:///pbx", "must name the database server's host"),
    ],
)
def test_bad_urls_name_the_key_and_hide_the_password(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(data(store={"url": url}), BASE)
    assert "store.url" in str(raised.value) and reason in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"store\.path"):
        parse_config(data(store={"path": "x"}), BASE)
