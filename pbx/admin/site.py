"""The console's web site: one twisted.web resource serving the pages, the JSON API, static files and the
resources other parts of the PBX mount into it.

Every request goes through `ConsoleApp.handle`:

1. A mounted resource (`ConsoleApp.mount`) whose path prefix matches gets the request, after the console's
   authentication unless it was mounted `public` (then an optional `bearer_token` is required instead).
   The user is at `request.pbx_principal` (a `pbx.admin.auth.Principal`, or None on a public mount).
2. Otherwise the routes of `pbx.admin.api` and `pbx.admin.pages` are matched. Non-public routes need a
   session cookie (browsers; CSRF token required on every unsafe method, as the `X-CSRF-Token` header or
   the form's `csrf` field) or an `Authorization: Bearer` token (scripts; no CSRF: no ambient credential).

Mounting, for the lead's merge (`pbx/service/admin.py` is where it is done):

    app.mount("metrics", metrics_resource, public=True, bearer_token=config_token_or_None)
    app.mount("api/v1/calls", trace_resource)          # behind login; request.pbx_principal says who

Sessions live in a cookie named `pbx_session` (`__Host-pbx_session` under TLS): HttpOnly, SameSite=Strict,
Secure under TLS, Path=/. The session id is random; its expiry is kept on the server.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request, Site

from pbx.admin.auth import LockedOut, Logins, Principal, Session, Sessions, csrf_ok
from pbx.admin.http import (
    SECURITY_HEADERS,
    Ctx,
    HttpError,
    Response,
    Route,
    json_body,
    match,
    not_found,
    send,
    send_error,
)
from pbx.admin.view import NotFound, PbxView

_log = Logger(namespace="pbx.admin")

HERE = Path(__file__).resolve().parent
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True, slots=True)
class Mount:
    """A resource mounted at a path prefix."""

    prefix: tuple[str, ...]
    resource: Resource
    public: bool = False
    bearer_token: str | None = None
    admin_only: bool = False  # behind login, and only for an admin of everything (PBX-wide data)


class ConsoleApp:
    """Authentication, routing and rendering of the console.

    Args:
        view: What the console shows and does.
        logins: Password and token checks with lock-out.
        sessions: The browsers' sessions.
        secure: Whether the console is served over TLS (Secure cookies, `__Host-` prefix).
        lockout: Seconds a lock-out lasts (the `Retry-After` of a refused login).
        users: The `IAdminStore` (the API's user listing for admins).
    """

    def __init__(
        self,
        view: PbxView,
        logins: Logins,
        sessions: Sessions,
        *,
        secure: bool = False,
        lockout: float = 900.0,
        users: Any = None,
    ) -> None:
        from pbx.admin.api import api_routes
        from pbx.admin.pages import page_routes

        self.view = view
        self.logins = logins
        self.sessions = sessions
        self.secure = secure
        self.lockout = lockout
        self.users = users
        self.cookie = "__Host-pbx_session" if secure else "pbx_session"
        self.templates = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.mounts: list[Mount] = []
        self.routes: list[Route] = api_routes(self) + page_routes(self)

    # -- mounting ---------------------------------------------------------------------------------------

    def mount(
        self,
        path: str,
        resource: Resource,
        *,
        public: bool = False,
        bearer_token: str | None = None,
        admin_only: bool = False,
    ) -> None:
        """Serve `resource` at `path` ("metrics", "api/v1/calls"); see the module docstring. `admin_only`:
        behind login and for admins of every tenant only (403 for the others)."""
        prefix = tuple(p for p in path.strip("/").split("/") if p)
        if not prefix:
            raise ValueError("a mount needs a path")
        self.mounts.append(Mount(prefix, resource, public and not admin_only, bearer_token, admin_only))
        self.mounts.sort(key=lambda m: -len(m.prefix))

    def resource(self) -> Resource:
        """The twisted.web resource of the whole console."""
        return _Root(self)

    def site(self) -> Site:
        site = Site(self.resource())
        site.displayTracebacks = False
        return site

    # -- the request --------------------------------------------------------------------------------------

    async def handle(self, request: Request) -> None:
        segments = [s.decode("utf-8", "replace") for s in request.postpath or []]
        path = "/" + "/".join(segments)
        method = (request.method or b"GET").decode("ascii", "replace")
        api = path.startswith("/api/")
        try:
            for mounted in self.mounts:
                if tuple(segments[: len(mounted.prefix)]) == mounted.prefix:
                    api = True  # a mounted resource's refusals are JSON, never a redirect to the login page
                    await self._serve_mount(request, mounted, method)
                    return
            found = match(self.routes, method, path)
            if found is None:
                raise not_found(f"nothing at {path[:200]}")
            route, params = found
            ctx = Ctx(request, params)
            if not route.public:
                await self.authenticate(ctx)
                if method in UNSAFE and ctx.session is not None:
                    header = request.getHeader(b"x-csrf-token")
                    offered = header.decode("latin-1") if header is not None else None
                    if offered is None and ctx.wants_form:
                        offered = ctx.arg("csrf") or None
                    if not csrf_ok(ctx.session, offered):
                        raise HttpError(403, "csrf", "missing or wrong CSRF token")
            result = route.handler(ctx)
            if inspect.isawaitable(result) or isinstance(result, Deferred):
                result = await result
            if isinstance(result, Response):
                send(request, result.status, result.body, result.content_type, result.headers)
            else:
                send(request, 200, json_body(result), "application/json")
        except HttpError as e:
            self._error(request, e, api, method)
        except NotFound as e:
            self._error(request, not_found(str(e)), api, method)
        except Exception:
            _log.failure("Console: {method} {path} failed", method=method, path=path[:200])
            self._error(request, HttpError(500, "internal", "internal error (logged)"), api, method)

    def _error(self, request: Request, error: HttpError, api: bool, method: str) -> None:
        if api:
            send_error(request, error)
        elif error.status == 401 and method == "GET":
            send(request, 303, b"", "text/plain", {"Location": "/login"})
        else:
            page = self.templates.get_template("error.html").render(error=error, user=None)
            send(request, error.status, page.encode(), "text/html; charset=utf-8", error.headers)

    async def authenticate(self, ctx: Ctx) -> Principal:
        """The principal of a bearer token or a session cookie; HttpError 401 without one."""
        header = ctx.request.getHeader(b"authorization")
        if header is not None:
            scheme, _, token = header.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise HttpError(401, "unauthenticated", "use Authorization: Bearer TOKEN", _challenge())
            principal = await self.logins.token(token.strip())
            if principal is None:
                raise HttpError(401, "unauthenticated", "unknown token", _challenge())
            ctx.principal = principal
            return principal
        session = self.session_of(ctx.request)
        if session is None:
            raise HttpError(401, "unauthenticated", "log in first", _challenge())
        ctx.principal, ctx.session = session.principal, session
        return session.principal

    def session_of(self, request: Request) -> Session | None:
        cookie = request.getCookie(self.cookie.encode())
        return self.sessions.get(cookie.decode("ascii", "replace")) if cookie else None

    async def login(self, ctx: Ctx, name: str, password: str) -> Session:
        """Check a name and password, start a session and set its cookie."""
        source = getattr(ctx.request.getClientAddress(), "host", "") or "unknown"
        try:
            principal = await self.logins.login(name, password, source)
        except LockedOut:
            raise HttpError(
                429,
                "locked_out",
                "too many failed logins: try again later",
                {"Retry-After": f"{self.lockout:.0f}"},
            ) from None
        if principal is None:
            raise HttpError(401, "bad_login", "wrong user name or password")
        old = self.session_of(ctx.request)
        if old is not None:
            self.sessions.end(old.id)
        session = self.sessions.create(principal)
        ctx.request.addCookie(
            self.cookie.encode(),
            session.id.encode(),
            path=b"/",
            httpOnly=True,
            secure=self.secure,
            sameSite="strict",
        )
        _log.info("Console: {user} logged in from {source}", user=principal.name, source=source)
        return session

    def logout(self, ctx: Ctx) -> None:
        session = self.session_of(ctx.request)
        if session is not None:
            self.sessions.end(session.id)
        ctx.request.addCookie(
            self.cookie.encode(),
            b"",
            path=b"/",
            httpOnly=True,
            secure=self.secure,
            sameSite="strict",
            max_age=b"0",
        )

    def tenant(self, ctx: Ctx, *, write: bool = False) -> str:
        """The route's `{tenant}` if the user sees it (404 otherwise: another tenant does not exist for
        them); 403 if they see it but `write` is asked and they may not change it."""
        assert ctx.principal is not None
        tenant = ctx.params.get("tenant", "")
        if tenant not in self.view.tenants or not ctx.principal.can_see(tenant):
            raise not_found(f"no tenant {tenant[:64]}")
        if write and not ctx.principal.can_change(tenant):
            raise HttpError(403, "forbidden", "your role may not change this tenant")
        return tenant

    def visible_tenants(self, principal: Principal) -> list[str]:
        return principal.tenants(list(self.view.tenants))

    async def _serve_mount(self, request: Request, mounted: Mount, method: str) -> None:
        principal: Principal | None = None
        if mounted.bearer_token is not None:
            given = request.getHeader(b"authorization") or b""
            expected = f"Bearer {mounted.bearer_token}".encode()
            if not hmac.compare_digest(given, expected):
                raise HttpError(401, "unauthenticated", "a bearer token is required", _challenge())
        elif not mounted.public:
            ctx = Ctx(request, {})
            principal = await self.authenticate(ctx)
            raw = request.getHeader(b"x-csrf-token")
            offered = raw.decode("latin-1") if raw is not None else None
            if method in UNSAFE and ctx.session is not None and not csrf_ok(ctx.session, offered):
                raise HttpError(403, "csrf", "missing or wrong CSRF token")
            if mounted.admin_only and not principal.is_admin:
                raise HttpError(403, "forbidden", "only an admin of every tenant may use this")
        request.pbx_principal = principal  # type: ignore[attr-defined]
        assert request.prepath is not None and request.postpath is not None
        for _ in mounted.prefix:
            request.prepath.append(request.postpath.pop(0))
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        child = getChildForRequest(mounted.resource, request)
        body = child.render(request)
        if body is NOT_DONE_YET:
            return
        if not request.finished:
            request.write(body)
            request.finish()


def _challenge() -> dict[str, str]:
    return {"WWW-Authenticate": 'Bearer realm="pbx"'}


class _Root(Resource):
    """Hands every request to the app (all routing is the app's)."""

    isLeaf = True

    def __init__(self, app: ConsoleApp) -> None:
        super().__init__()
        self._app = app

    def render(self, request: Request) -> Any:
        request.notifyFinish().addErrback(lambda _: setattr(request, "_pbx_gone", True))
        ensureDeferred(self._app.handle(request))
        return NOT_DONE_YET


def tenants_of(principal: Principal, tenants: Sequence[str]) -> list[str]:
    return principal.tenants(list(tenants))
