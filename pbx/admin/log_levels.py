"""Log levels per subsystem, changeable while the PBX runs (`LogLevels`), and the JSON API over them.

A subsystem is a Twisted logger namespace prefix (`pbx.sip`, `pbx.b2bua.call`, `pbx.apps`): setting
`pbx.sip` to `warn` hides the info lines of every `pbx.sip.*` logger. The filtering is Twisted's
`LogLevelFilterPredicate` (the longest configured prefix wins); `LogLevels.predicate` goes in front of the
log observer (`pbx.service.logs.quiet_log_observer`), and the console or `[metrics] listen`'s API change it
with `set_level(namespace, level)`.

`GET /api/v1/log/levels` lists them; `POST` with a JSON body `{"namespace": "pbx.sip", "level": "warn"}`
sets one (`"level": null` or `"default"` clears it). Bearer-token protected; without a token the listener
refuses changes (a page in a browser could otherwise POST to a loopback port).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from twisted.logger import LogLevel, LogLevelFilterPredicate
from twisted.web.resource import Resource
from twisted.web.server import Request

from pbx.admin.metrics import authorized
from pbx.admin.trace_api import send_json

LEVELS: Mapping[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}
_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*){0,15}")
MAX_NAMESPACES = 200
_NONE: Mapping[str, str] = MappingProxyType({})


class LogLevels:
    """The level of each subsystem (namespace prefix); everything else logs from `default` up.

    Args:
        levels: namespace -> level name ("debug", "info", "warn", "error", "critical"), e.g. from `[log]`.
        default: the level of the namespaces not named (debug: everything, as twistd logs by default).
    """

    def __init__(self, levels: Mapping[str, str] = _NONE, default: str = "debug") -> None:
        self.default = LEVELS[default]
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=self.default)
        self._levels: dict[str, str] = {}
        for namespace, level in levels.items():
            self.set_level(namespace, level)

    def set_level(self, namespace: str, level: str | None) -> None:
        """Log `namespace` (and the namespaces under it) from `level` up; None or "default" clears it.

        Raises:
            ValueError: an unknown level, a malformed namespace, or too many namespaces.
        """
        if not _NAMESPACE.fullmatch(namespace):
            raise ValueError(f"not a logger namespace: {namespace[:80]!r}")
        if level is None or level == "default":
            self._levels.pop(namespace, None)
            self._rebuild()
            return
        name = level.lower()
        if name not in LEVELS:
            raise ValueError(f"unknown level {level[:20]!r}: one of debug, info, warn, error, critical")
        if namespace not in self._levels and len(self._levels) >= MAX_NAMESPACES:
            raise ValueError("too many namespaces with their own level")
        self._levels[namespace] = "warn" if name == "warning" else name
        self.predicate.setLogLevelForNamespace(namespace, LEVELS[name])

    def _rebuild(self) -> None:
        self.predicate.clearLogLevels()
        self.predicate.defaultLogLevel = self.default
        for namespace, level in self._levels.items():
            self.predicate.setLogLevelForNamespace(namespace, LEVELS[level])

    def levels(self) -> dict[str, str]:
        """namespace -> level name, of the namespaces set."""
        return dict(self._levels)


class LogLevelsResource(Resource):
    """`GET` the levels; `POST {"namespace": ..., "level": ...}` to change one (needs the token)."""

    isLeaf = True

    def __init__(self, levels: LogLevels, token: str = "") -> None:
        super().__init__()
        self._levels = levels
        self._token = token.encode()

    def render_GET(self, request: Request) -> bytes:
        if not authorized(request, self._token):
            return send_json(request, 401, {"error": "unauthorized", "reason": "a bearer token is needed"})
        return send_json(
            request, 200, {"default": self._levels.default.name, "levels": self._levels.levels()}
        )

    def render_POST(self, request: Request) -> bytes:
        if not self._token:
            return send_json(
                request, 403, {"error": "forbidden", "reason": "set [metrics] token to change levels"}
            )
        if not authorized(request, self._token):
            return send_json(request, 401, {"error": "unauthorized", "reason": "a bearer token is needed"})
        try:
            body: Any = json.loads(request.content.read(4096) if request.content is not None else b"")
            namespace, level = body["namespace"], body.get("level")
            if not isinstance(namespace, str) or not (level is None or isinstance(level, str)):
                raise TypeError
            self._levels.set_level(namespace, level)
        except ValueError as e:
            return send_json(request, 400, {"error": "bad request", "reason": str(e)})
        except (KeyError, TypeError):
            reason = 'a JSON object {"namespace": "pbx.sip", "level": "warn"} is needed'
            return send_json(request, 400, {"error": "bad request", "reason": reason})
        return send_json(
            request, 200, {"default": self._levels.default.name, "levels": self._levels.levels()}
        )
