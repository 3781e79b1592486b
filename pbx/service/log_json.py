"""Logs people can use: JSON lines with the call's ID and tenant, and the settings that pick the format.

`JsonLogLines` formats each Twisted log event as one JSON object on one line: `time` (RFC 3339, UTC, ms),
`level`, `namespace`, `text` (the formatted message), `call_id` and `tenant` on every call-related line,
the event's own simple fields (`cause`, `status`, `source` ...), and `traceback` for a failure.

A line is call-related when its logger's source is a call or an outbound leg (`Call._log`, `OutboundLeg._log`:
Twisted binds `log_source` to the instance), or when it names a call by the convention of the B2BUA and the
applications (`id=call.id`); the tenant then comes from the event (`tenant=`) or from the live call
(`LogContext.calls`, the B2BUA's calls by Call-ID, given once the B2BUA exists).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import LogEvent, formatEvent

from pbx.admin.log_levels import LogLevels
from pbx.b2bua.call import Call
from pbx.b2bua.leg import OutboundLeg

_SKIP = frozenset(("format", "message", "isError", "system", "time", "line"))
_MAX_FIELD = 500


class LogContext:
    """What the log formatter looks calls up in: `calls` (Call-ID -> call), set when the B2BUA is built."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: Mapping[str, Any] = {}


@dataclass
class LogSettings:
    """`[log]` made live: the format, the levels per subsystem, the call lookup for JSON lines."""

    format: str = "text"
    levels: LogLevels = field(default_factory=LogLevels)
    context: LogContext = field(default_factory=LogContext)


def call_fields(event: LogEvent, context: LogContext | None) -> tuple[str, str]:
    """(call ID, tenant) of a call-related event, else ("", "")."""
    source = event.get("log_source")
    call: Any = None
    if isinstance(source, Call):
        call = source
    elif isinstance(source, OutboundLeg):
        call = source.call
    elif isinstance(event.get("call"), Call):
        call = event["call"]
    if call is not None:
        return str(call.id), str(call.tenant)
    namespace = str(event.get("log_namespace", ""))
    call_id = event.get("call_id")
    if call_id is None and namespace.startswith(("pbx.b2bua", "pbx.apps")):
        call_id = event.get("id")
    if not isinstance(call_id, str) or not call_id:
        return "", ""
    tenant = event.get("tenant")
    if not isinstance(tenant, str):
        live = context.calls.get(call_id) if context is not None else None
        tenant = str(live.tenant) if live is not None else ""
    return call_id, tenant


class JsonLogLines:
    """A `FileLogObserver` format: one JSON object per event, one line each (see the module docstring)."""

    def __init__(self, context: LogContext | None = None) -> None:
        self._context = context

    def __call__(self, event: LogEvent) -> str | None:
        when = event.get("log_time")
        stamp = (
            datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(timespec="milliseconds")
            if isinstance(when, int | float)
            else None
        )
        level = event.get("log_level")
        out: dict[str, Any] = {
            "time": stamp,
            "level": level.name if level is not None else None,
            "namespace": event.get("log_namespace", "-"),
            "text": formatEvent(event),
        }
        call_id, tenant = call_fields(event, self._context)
        if call_id:
            out["call_id"] = call_id
            out["tenant"] = tenant
        for key, value in event.items():
            if key.startswith("log_") or key in _SKIP or key in out:
                continue
            if isinstance(value, str):
                out[key] = value[:_MAX_FIELD]
            elif isinstance(value, bool | int | float) or value is None:
                out[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            try:
                out["traceback"] = failure.getTraceback()
            except Exception:
                out["traceback"] = repr(failure)
        return json.dumps(out, ensure_ascii=False, default=str) + "\n"
