"""Read the `[metrics]`, `[trace]` and `[log]` tables into `pbx.config.observe`'s frozen values.

Called by `pbx.config.load._Parser` (imported lazily there, as `load_voicemail` is); every problem is a
`ConfigError` naming the key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pbx.config.load import ConfigError, _kind
from pbx.config.observe import LOG_FORMATS, LOG_LEVELS, LogConfig, MetricsConfig, TraceConfig

if TYPE_CHECKING:
    from pbx.config.load import _Parser

_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,200}")


def metrics(parser: _Parser, value: object) -> MetricsConfig:
    """The `[metrics]` table."""
    table = parser._table(value, "metrics", "metrics")
    listen = parser._string(table, "listen", "metrics", "").strip()
    if listen:
        host, colon, port = listen.rpartition(":")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            number = 0
        if not colon or not 0 < number < 65536:
            raise ConfigError("metrics.listen", f"must be 'IP:PORT' like '127.0.0.1:9464', not {listen!r}")
    token = parser._string(table, "token", "metrics", "")
    if token and not _TOKEN.fullmatch(token):
        raise ConfigError("metrics.token", "must be 16 to 200 characters of letters, digits and ._~+/=-")
    return MetricsConfig(listen=listen, token=token)


def trace(parser: _Parser, value: object) -> TraceConfig:
    """The `[trace]` table."""
    table = parser._table(value, "trace", "trace")
    return TraceConfig(
        calls=parser._integer(table, "calls", "trace", 100, 0, 100_000),
        failed_calls=parser._integer(table, "failed_calls", "trace", 100, 0, 100_000),
        max_events=parser._integer(table, "max_events", "trace", 200, 10, 10_000),
        max_bytes=parser._integer(table, "max_bytes", "trace", 32768, 1024, 1 << 24),
        body_bytes=parser._integer(table, "body_bytes", "trace", 400, 0, 65536),
    )


def log(parser: _Parser, value: object) -> LogConfig:
    """The `[log]` table: `format` and `levels` (a table of namespace = level)."""
    table = parser._table(value, "log", "log")
    fmt = parser._string(table, "format", "log", "text").lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError("log.format", f"must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    levels = table.get("levels", {})
    if not isinstance(levels, dict):
        raise ConfigError("log.levels", f"must be a table of namespace = level, not {_kind(levels)}")
    out: dict[str, str] = {}
    for namespace, level in levels.items():
        if not _NAMESPACE.fullmatch(namespace):
            raise ConfigError(f"log.levels.{namespace}", "must be a logger namespace like 'pbx.sip'")
        if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
            raise ConfigError(f"log.levels.{namespace}", f"must be one of {', '.join(LOG_LEVELS)}")
        out[namespace] = level.lower()
    return LogConfig(format=fmt, levels=MappingProxyType(out))


def sections(parser: _Parser, root: Mapping[str, Any]) -> dict[str, Any]:
    """The `Config` fields `metrics`, `trace` and `log` from the root table."""
    return {
        "metrics": metrics(parser, root.get("metrics", {})),
        "trace": trace(parser, root.get("trace", {})),
        "log": log(parser, root.get("log", {})),
    }
