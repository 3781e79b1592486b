"""Observability settings as frozen values: `[metrics]` (Prometheus), `[trace]` (per-call ladders) and
`[log]` (format and levels per subsystem).

Like `pbx.config.model` it imports only the standard library; the metrics token is left out of `repr`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# The keys of each table, for `pbx.config.load.SCHEMA_KEYS` (documented in docs/configuration.md).
METRICS_KEYS: tuple[str, ...] = ("listen", "token")
TRACE_KEYS: tuple[str, ...] = ("calls", "failed_calls", "max_events", "max_bytes", "body_bytes")
LOG_KEYS: tuple[str, ...] = ("format", "levels")
LOG_FORMATS: tuple[str, ...] = ("text", "json")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warn", "error", "critical")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`[metrics]`: the PBX's own small HTTP listener for `/metrics` and the call-trace API.

    Attributes:
        listen: "HOST:PORT" ("[::1]:9464" for IPv6), or "" (the default) for no listener.
        token: a bearer token every request must carry (`Authorization: Bearer TOKEN`); "" for none.
    """

    listen: str = ""
    token: str = field(default="", repr=False)

    @property
    def host_port(self) -> tuple[str, int] | None:
        """(host, port) of `listen`, None when off."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class TraceConfig:
    """`[trace]`: per-call ladders (`pbx trace CALL-ID`).

    Attributes:
        calls: how many ended calls keep their trace (0: no tracing at all).
        failed_calls: how many failed calls keep theirs in addition (kept longer on a busy PBX).
        max_events: the most events one call's trace holds.
        max_bytes: the most bytes one call's trace holds (about).
        body_bytes: how much of each SIP body is kept.
    """

    calls: int = 100
    failed_calls: int = 100
    max_events: int = 200
    max_bytes: int = 32768
    body_bytes: int = 400


@dataclass(frozen=True, slots=True)
class LogConfig:
    """`[log]`: the log format and the level of each subsystem (a Twisted logger namespace prefix).

    Attributes:
        format: "text" (twistd's lines) or "json" (one JSON object per line).
        levels: namespace prefix ("pbx.sip", "pbx.b2bua") -> the lowest level logged for it.
    """

    format: str = "text"
    levels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
