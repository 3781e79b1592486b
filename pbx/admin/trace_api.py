"""Call traces over HTTP (JSON): `GET /api/v1/calls/{call_id}/trace` and `GET /api/v1/traces`.

Resources over a `CallTracer` (`pbx.b2bua.trace`), for the console to mount (or to route to with
`trace_response`), and served by `pbx.service.metrics`' own listener until the console is there. Errors are
JSON with a reason and the right status (404 for an unknown call, 401 without the token). A Call-ID in the
path is percent-decoded (Call-IDs may hold `@`, `%` or `/`).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from twisted.web.resource import Resource
from twisted.web.server import Request

from pbx.admin.metrics import authorized
from pbx.b2bua.trace import CallTracer

MAX_LIST = 500
"""The most traces one list answer holds."""


def trace_response(tracer: CallTracer, call_id: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for one call's trace."""
    trace = tracer.get(call_id)
    if trace is None:
        return 404, {
            "error": "not found",
            "reason": f"no trace of call {call_id[:200]!r} (unknown or forgotten)",
        }
    return 200, trace.as_dict()


def traces_response(tracer: CallTracer, limit: int = 100, failed: bool = False) -> dict[str, Any]:
    """The summaries of the kept traces, active calls first, then the newest ended ones."""
    out = []
    for trace in tracer.traces():
        if failed and not trace.failed:
            continue
        out.append(trace.summary())
        if len(out) >= limit:
            break
    return {"traces": out}


def send_json(request: Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body, separators=(",", ":"), default=str).encode() + b"\n"


def _refused(request: Request) -> bytes:
    request.setHeader(b"WWW-Authenticate", b'Bearer realm="pbx"')
    return send_json(request, 401, {"error": "unauthorized", "reason": "a bearer token is needed"})


class CallTraceResource(Resource):
    """`/api/v1/calls/{call_id}/trace`: mount at `/api/v1/calls` (its children are Call-IDs)."""

    def __init__(self, tracer: CallTracer, token: str = "") -> None:
        super().__init__()
        self._tracer = tracer
        self._token = token.encode()

    def getChild(self, path: bytes, request: Request) -> Resource:
        return _OneCall(self._tracer, self._token, unquote(path.decode("utf-8", "replace")))

    def render_GET(self, request: Request) -> bytes:
        return send_json(request, 404, {"error": "not found", "reason": "use /api/v1/calls/CALL-ID/trace"})


class _OneCall(Resource):
    def __init__(self, tracer: CallTracer, token: bytes, call_id: str) -> None:
        super().__init__()
        self._tracer, self._token, self._call_id = tracer, token, call_id

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"trace" and not request.postpath:
            return _Trace(self._tracer, self._token, self._call_id)
        return _NotFound()

    def render_GET(self, request: Request) -> bytes:
        return send_json(request, 404, {"error": "not found", "reason": "use /api/v1/calls/CALL-ID/trace"})


class _Trace(Resource):
    isLeaf = True

    def __init__(self, tracer: CallTracer, token: bytes, call_id: str) -> None:
        super().__init__()
        self._tracer, self._token, self._call_id = tracer, token, call_id

    def render_GET(self, request: Request) -> bytes:
        if not authorized(request, self._token):
            return _refused(request)
        status, body = trace_response(self._tracer, self._call_id)
        return send_json(request, status, body)


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return send_json(request, 404, {"error": "not found", "reason": "no such resource"})


class TraceListResource(Resource):
    """`GET /api/v1/traces[?limit=N&failed=1]`: summaries of the kept traces."""

    isLeaf = True

    def __init__(self, tracer: CallTracer, token: str = "") -> None:
        super().__init__()
        self._tracer = tracer
        self._token = token.encode()

    def render_GET(self, request: Request) -> bytes:
        if not authorized(request, self._token):
            return _refused(request)
        args = request.args or {}
        try:
            limit = int((args.get(b"limit") or [b"100"])[0])
        except ValueError:
            return send_json(request, 400, {"error": "bad request", "reason": "limit must be a number"})
        limit = max(1, min(MAX_LIST, limit))
        failed = (args.get(b"failed") or [b""])[0] in (b"1", b"true", b"yes")
        return send_json(request, 200, traces_response(self._tracer, limit, failed))
