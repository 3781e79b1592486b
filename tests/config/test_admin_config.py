"""The `[admin]` table: off by default, `listen`, TLS files, login policy, and errors naming their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.config import parse_config
from pbx.config.admin import AdminConfig
from tests.config.test_config import BASE, data, error_for


def test_off_by_default() -> None:
    admin = parse_config(data(), BASE).admin
    assert admin == AdminConfig()
    assert not admin.enabled and admin.base_url == ""


def test_listen_and_policy() -> None:
    admin = parse_config(
        data(admin={"listen": "127.0.0.1:8080", "session_lifetime": 600, "max_login_failures": 3}), BASE
    ).admin
    assert (admin.host, admin.port, admin.enabled) == ("127.0.0.1", 8080, True)
    assert admin.base_url == "http://127.0.0.1:8080"
    assert admin.session_lifetime == 600.0 and admin.max_login_failures == 3
    v6 = parse_config(data(admin={"listen": "[::1]:8443", "url": "https://pbx.example/"}), BASE).admin
    assert v6.host == "::1" and v6.base_url == "https://pbx.example"


def test_tls_files(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    admin = parse_config(
        data(admin={"listen": "127.0.0.1:8443", "certificate": "c.pem", "private_key": "k.pem"}), tmp_path
    ).admin
    assert admin.certificate == tmp_path / "c.pem"
    assert admin.base_url == "https://127.0.0.1:8443"


@pytest.mark.parametrize(
    ("table", "path", "message"),
    [
        ({"listen": "localhost:8080"}, "admin.listen", "IP address"),
        ({"listen": "127.0.0.1"}, "admin.listen", "HOST:PORT"),
        ({"listen": "127.0.0.1:0"}, "admin.listen", "port"),
        ({"certificate": "/nonexistent.pem"}, "admin.private_key", "required"),
        ({"session_lifetime": 1}, "admin.session_lifetime", "seconds"),
        ({"url": "ftp://x"}, "admin.url", "http"),
        ({"listne": "x"}, "admin.listne", "unknown key"),
    ],
)
def test_errors_name_the_key(table: dict, path: str, message: str) -> None:
    error = error_for(data(admin=table))
    assert error.path == path
    assert message in error.message
