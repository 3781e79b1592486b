"""Read the `[admin]` table of the TOML config into `pbx.config.admin.AdminConfig`.

Called by `pbx.config.load._Parser` (imported lazily from there, so the two modules need no import cycle);
every problem is a `ConfigError` naming the key.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from pbx.config.admin import AdminConfig
from pbx.config.load import ConfigError

if TYPE_CHECKING:
    from pbx.config.load import _Parser


def _listen(value: object) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets) -> (host, port); the host must be an IP address."""
    if not isinstance(value, str) or not value:
        raise ConfigError("admin.listen", "must be a string like '127.0.0.1:8080'")
    host, colon, port_text = value.rpartition(":")
    if not colon or not port_text.isdigit():
        raise ConfigError("admin.listen", f"must be HOST:PORT like '127.0.0.1:8080', not {value!r}")
    host = host.strip("[]")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        raise ConfigError("admin.listen", f"the host must be an IP address, not {host!r}") from None
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ConfigError("admin.listen", f"the port must be from 1 to 65535, not {port}")
    return host, port


def admin(parser: _Parser, value: object) -> AdminConfig:
    """The `[admin]` table; no `listen` (or "") leaves the console off."""
    table = parser._table(value, "admin", "admin")
    path = "admin"
    host, port = ("", 0)
    if table.get("listen", "") != "":
        host, port = _listen(table["listen"])
    certificate = parser._path(table, "certificate", path, "")
    private_key = parser._path(table, "private_key", path, "")
    if (certificate is None) != (private_key is None):
        missing = "private_key" if private_key is None else "certificate"
        other = "certificate" if missing == "private_key" else "private_key"
        raise ConfigError(f"admin.{missing}", f"is required when admin.{other} is set")
    for key, file in (("certificate", certificate), ("private_key", private_key)):
        if file is not None and not file.is_file():
            raise ConfigError(f"admin.{key}", f"no such file: {file}")
    url = parser._text(table, "url", path, "", empty=True)
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError("admin.url", f"must start with http:// or https://, not {url!r}")
    return AdminConfig(
        host=host,
        port=port,
        certificate=certificate,
        private_key=private_key,
        session_lifetime=parser._seconds(table, "session_lifetime", path, 3600.0, 60.0, 86400.0 * 30),
        max_login_failures=parser._integer(table, "max_login_failures", path, 5, 1, 1000),
        login_failure_window=parser._seconds(table, "login_failure_window", path, 300.0, 1.0, 86400.0),
        lockout_duration=parser._seconds(table, "lockout_duration", path, 900.0, 1.0, 86400.0),
        url=url,
    )
