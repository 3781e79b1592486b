"""Read `[store]` (`pbx.config.store`); every problem is a `ConfigError` naming the key."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pbx.config.load import ConfigError
from pbx.config.store import StoreConfig

if TYPE_CHECKING:
    from pbx.config.load import _Parser

_SCHEMES = ("postgresql", "postgres")


def store(parser: _Parser, value: object) -> StoreConfig:
    """The `[store]` table: `url` empty (SQLite in `pbx.data_dir`) or a `postgresql://` URL."""
    table = parser._table(value, "store", "store")
    url = parser._string(table, "url", "store", "").strip()
    lease = parser._seconds(table, "trunk_lease", "store", 30.0, 0.0, 3600.0)
    if 0 < lease < 2:
        raise ConfigError("store.trunk_lease", f"must be 0 (off) or from 2 to 3600 seconds, not {lease:g}")
    if not url:
        return StoreConfig(trunk_lease=lease)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as e:
        raise ConfigError("store.url", f"is not a URL ({e})") from None
    if parts.scheme not in _SCHEMES:
        # Never echo the value: it may hold a password.
        raise ConfigError(
            "store.url", f"must be a postgresql:// URL (or empty for SQLite), not {parts.scheme}://..."
        )
    if not parts.hostname and "host=" not in parts.query:
        raise ConfigError("store.url", "must name the database server's host")
    return StoreConfig(url=url, trunk_lease=lease)
