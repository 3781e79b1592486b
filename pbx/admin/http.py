"""The console's HTTP plumbing: a request context, JSON and error answers, a small path router, and the
security headers every answer carries.

Routes are `(method, pattern)` with `{name}` segments; a handler takes a `Ctx` and returns a value (sent as
JSON), a `Response`, or a Deferred/coroutine of either, or raises `HttpError`. Nothing here knows the PBX.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.web.server import Request

from pbx.admin.auth import Principal, Session

MAX_BODY = 64 * 1024
"""The largest request body the console reads."""

SECURITY_HEADERS: Mapping[bytes, bytes] = {
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"same-origin",
    b"Cache-Control": b"no-store",
    b"Content-Security-Policy": (
        b"default-src 'self'; script-src 'self'; style-src 'self'; media-src 'self'; img-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}


class HttpError(Exception):
    """An answer other than success: status, a short machine-readable `error` and a human `reason`."""

    def __init__(
        self, status: int, error: str, reason: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = dict(headers or {})


def not_found(reason: str = "no such object") -> HttpError:
    return HttpError(404, "not_found", reason)


@dataclass(slots=True)
class Response:
    """A non-JSON answer (HTML, CSV, a WAV file, a redirect)."""

    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def redirect(cls, location: str, status: int = 303) -> Response:
        return cls(b"", "text/plain; charset=utf-8", status, {"Location": location})


@dataclass(slots=True)
class Ctx:
    """One request as a handler sees it.

    Attributes:
        request: The twisted.web request.
        params: The `{name}` segments of the route.
        principal: The authenticated user, or None on public routes.
        session: The browser session, or None (a bearer token, or public).
    """

    request: Request
    params: dict[str, str]
    principal: Principal | None = None
    session: Session | None = None
    _body: Any = None

    @property
    def method(self) -> str:
        return (self.request.method or b"GET").decode("ascii", "replace")

    def arg(self, name: str, default: str = "") -> str:
        """A query-string (or urlencoded form) value, decoded; `default` when absent."""
        values = (self.request.args or {}).get(name.encode())
        if not values:
            return default
        return values[0].decode("utf-8", "replace")

    def args(self, name: str) -> list[str]:
        return [v.decode("utf-8", "replace") for v in (self.request.args or {}).get(name.encode(), [])]

    def json(self) -> dict[str, Any]:
        """The JSON object of the body ({} when empty)."""
        if self._body is None:
            raw = self.request.content.read(MAX_BODY + 1) if self.request.content is not None else b""
            if len(raw) > MAX_BODY:
                raise HttpError(413, "too_large", f"the body is larger than {MAX_BODY} bytes")
            if not raw.strip():
                self._body = {}
            else:
                try:
                    self._body = json.loads(raw)
                except ValueError:
                    raise HttpError(400, "bad_json", "the body is not valid JSON") from None
            if not isinstance(self._body, dict):
                raise HttpError(400, "bad_json", "the body must be a JSON object")
        return dict(self._body)

    @property
    def wants_form(self) -> bool:
        content_type = self.request.getHeader(b"content-type") or b""
        return content_type.startswith(b"application/x-www-form-urlencoded")


Handler = Callable[[Ctx], Any | Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    public: bool = False


def route(method: str, template: str, handler: Handler, *, public: bool = False) -> Route:
    """A route for `template` ("/api/v1/tenants/{tenant}/calls"); a `{name}` matches one segment."""
    regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
    return Route(method, re.compile(regex), handler, public)


def match(routes: list[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route for `method` and `path` with its parameters; a known path with another method raises 405."""
    allowed = []
    for r in routes:
        m = r.pattern.match(path)
        if m is None:
            continue
        if r.method == method or (method == "HEAD" and r.method == "GET"):
            return r, m.groupdict()
        allowed.append(r.method)
    if allowed:
        raise HttpError(
            405,
            "method_not_allowed",
            f"use {', '.join(sorted(set(allowed)))}",
            {"Allow": ", ".join(sorted(set(allowed)))},
        )
    return None


def json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str).encode()


def send(
    request: Request, status: int, body: bytes, content_type: str, headers: Mapping[str, str] = {}
) -> None:
    """Write a whole answer with the security headers (unless the client has gone)."""
    if getattr(request, "_pbx_gone", False) or request.finished:
        return
    request.setResponseCode(status)
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)
    request.setHeader(b"Content-Type", content_type.encode())
    for key, text in headers.items():
        request.setHeader(key.encode(), text.encode())
    request.setHeader(b"Content-Length", str(len(body)).encode())
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def send_error(request: Request, error: HttpError) -> None:
    body = json_body({"error": error.error, "reason": error.reason, "status": error.status})
    send(request, error.status, body, "application/json", error.headers)
