"""The console's HTML pages (Jinja2 templates in `pbx/admin/templates`, autoescaped).

Per tenant: registrations, calls, trunks, CDRs, voicemail, extensions, dialplans. Every form carries the
session's CSRF token (`csrf` field) and posts to an action that redirects back (post/redirect/get) with a
one-line notice. Live pages (registrations, calls, trunks) refresh by short polling: `static/console.js`
fetches the page with `?partial=1` every few seconds and swaps the `<main>` content (no framework, no
inline script: the Content-Security-Policy allows scripts from the console only).

The login form is CSRF-protected too (a double-submit token in a short-lived cookie), so another site
cannot log a browser in under its own account.
"""

from __future__ import annotations

import hmac
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pbx.admin.api import wav_response
from pbx.admin.extensions import EDITABLE, ExtensionProblem
from pbx.admin.http import Ctx, HttpError, Response, Route, not_found, route
from pbx.admin.view import NotFound

if TYPE_CHECKING:
    from pbx.admin.site import ConsoleApp

PAGES = ("calls", "registrations", "trunks", "cdrs", "voicemail", "extensions", "dialplans")
LIVE = ("calls", "registrations", "trunks")
STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
_T = "/t/{tenant}"


def page_routes(app: ConsoleApp) -> list[Route]:
    pages = _Pages(app)
    routes = [
        route("GET", "/", pages.home),
        route("GET", "/login", pages.login_form, public=True),
        route("POST", "/login", pages.login, public=True),
        route("POST", "/logout", pages.logout),
        route("GET", "/static/{name}", pages.static, public=True),
        route("GET", f"{_T}/cdrs.csv", pages.cdrs_csv),
        route("GET", f"{_T}/voicemail/{{mailbox}}/{{message}}.wav", pages.audio),
        route("POST", f"{_T}/registrations/{{extension}}/unregister", pages.unregister),
        route("POST", f"{_T}/calls/{{call_id}}/hangup", pages.hangup),
        route("GET", f"{_T}/calls/{{call_id}}/trace", pages.page_trace),
        route("POST", f"{_T}/voicemail/{{mailbox}}/{{message}}/delete", pages.delete_message),
        route("POST", f"{_T}/extensions", pages.add_extension),
        route("POST", f"{_T}/extensions/{{number}}", pages.change_extension),
        route("POST", f"{_T}/extensions/{{number}}/delete", pages.remove_extension),
        route("POST", f"{_T}/dialplans/reload", pages.reload),
        route("POST", f"{_T}/dialplans/simulate", pages.simulate),
    ]
    routes += [route("GET", f"{_T}/{name}", getattr(pages, f"page_{name}")) for name in PAGES]
    return routes


class _Pages:
    def __init__(self, app: ConsoleApp) -> None:
        self.app = app
        self.view = app.view

    # -- rendering ------------------------------------------------------------------------------------------

    def render(self, ctx: Ctx, template: str, tenant: str, page: str, **values: Any) -> Response:
        assert ctx.principal is not None and ctx.session is not None
        notice = ctx.session.data.pop("notice", None)
        values.update(
            user=ctx.principal,
            csrf=ctx.session.csrf,
            tenant=tenant,
            tenants=self.app.visible_tenants(ctx.principal),
            writable=ctx.principal.can_change(tenant),
            page=page,
            pages=PAGES,
            live=page in LIVE,
            notice=notice,
            now=time.time(),
            fmt_time=_fmt_time,
        )
        if ctx.arg("partial"):
            body = self.app.templates.get_template(template).blocks["main"]
            context = self.app.templates.get_template(template).new_context(values)
            return Response("".join(body(context)).encode())
        return Response(self.app.templates.get_template(template).render(values).encode())

    def back(self, ctx: Ctx, tenant: str, page: str, notice: str) -> Response:
        if ctx.session is not None:
            ctx.session.data["notice"] = notice
        return Response.redirect(f"/t/{tenant}/{page}")

    def _browser(self, ctx: Ctx) -> None:
        """Pages are for browsers: a bearer token gets the API instead."""
        if ctx.session is None:
            raise HttpError(400, "use_api", "pages need a browser session; scripts use /api/v1")

    # -- login --------------------------------------------------------------------------------------------

    def home(self, ctx: Ctx) -> Response:
        assert ctx.principal is not None
        tenants = self.app.visible_tenants(ctx.principal)
        if not tenants:
            raise not_found("your user sees no tenant")
        return Response.redirect(f"/t/{tenants[0]}/calls")

    def login_form(self, ctx: Ctx, error: str = "", status: int = 200) -> Response:
        token = secrets.token_urlsafe(24)
        ctx.request.addCookie(
            b"pbx_login",
            token.encode(),
            path=b"/login",
            httpOnly=True,
            secure=self.app.secure,
            sameSite="strict",
        )
        page = self.app.templates.get_template("login.html").render(csrf=token, error=error, user=None)
        return Response(page.encode(), status=status)

    async def login(self, ctx: Ctx) -> Response:
        cookie = (ctx.request.getCookie(b"pbx_login") or b"").decode("ascii", "replace")
        offered = ctx.arg("csrf")
        if not cookie or not hmac.compare_digest(cookie.encode(), offered.encode()):
            return self.login_form(ctx, "The form expired: please try again.", 403)
        try:
            await self.app.login(ctx, ctx.arg("username"), ctx.arg("password"))
        except HttpError as e:
            return self.login_form(ctx, e.reason[:1].upper() + e.reason[1:] + ".", e.status)
        return Response.redirect("/")

    def logout(self, ctx: Ctx) -> Response:
        self.app.logout(ctx)
        return Response.redirect("/login")

    def static(self, ctx: Ctx) -> Response:
        name = ctx.params["name"]
        if name not in STATIC:
            raise not_found()
        path = Path(__file__).resolve().parent / "static" / name
        return Response(path.read_bytes(), STATIC[name], 200, {"Cache-Control": "max-age=300"})

    # -- pages --------------------------------------------------------------------------------------------

    def _page(self, ctx: Ctx) -> str:
        self._browser(ctx)
        return self.app.tenant(ctx)

    def page_calls(self, ctx: Ctx) -> Response:
        tenant = self._page(ctx)
        return self.render(ctx, "calls.html", tenant, "calls", calls=self.view.calls(tenant))

    def page_trace(self, ctx: Ctx) -> Response:
        """One call's ladder: its SIP messages on every leg, the template lines, media and timers."""
        tenant = self._page(ctx)
        trace = self.view.trace(tenant, ctx.params["call_id"])
        if trace is None:
            raise HttpError(404, "not_found", "no trace of that call (unknown, forgotten, or tracing is off)")
        start = trace.get("started_at") or 0.0
        return self.render(ctx, "trace.html", tenant, "calls", trace=trace, start=start)

    def page_registrations(self, ctx: Ctx) -> Response:
        tenant = self._page(ctx)
        rows = self.view.registrations(tenant)
        return self.render(ctx, "registrations.html", tenant, "registrations", registrations=rows)

    async def page_trunks(self, ctx: Ctx) -> Response:
        tenant = self._page(ctx)
        nodes = await self.view.trunk_nodes(tenant)  # every node's view, from the store
        return self.render(ctx, "trunks.html", tenant, "trunks", trunks=self.view.trunks(tenant), nodes=nodes)

    def _cdr_filters(self, ctx: Ctx) -> dict[str, str]:
        return {k: ctx.arg(k) for k in ("caller", "dialed", "cause", "since", "until")}

    async def page_cdrs(self, ctx: Ctx) -> Response:
        tenant = self._page(ctx)
        filters = self._cdr_filters(ctx)
        rows = await self.view.cdrs(tenant, filters, 200)
        query = "&".join(f"{k}={v}" for k, v in filters.items() if v)
        return self.render(ctx, "cdrs.html", tenant, "cdrs", cdrs=rows, filters=filters, query=query)

    async def cdrs_csv(self, ctx: Ctx) -> Response:
        tenant = self.app.tenant(ctx)
        rows = await self.view.cdrs(tenant, self._cdr_filters(ctx), 1000)
        return Response(
            self.view.cdrs_csv(rows).encode(),
            "text/csv; charset=utf-8",
            200,
            {"Content-Disposition": f'attachment; filename="cdrs-{tenant}.csv"'},
        )

    async def page_voicemail(self, ctx: Ctx) -> Response:
        tenant = self._page(ctx)
        boxes = self.view.mailbox_list(tenant)
        for box in boxes:
            box["messages"] = await self.view.messages(tenant, box["number"])
        return self.render(ctx, "voicemail.html", tenant, "voicemail", boxes=boxes)

    async def audio(self, ctx: Ctx) -> Response:
        tenant = self.app.tenant(ctx)
        path = await self.view.message_audio(tenant, ctx.params["mailbox"], ctx.params["message"])
        return wav_response(path)

    def page_extensions(self, ctx: Ctx) -> Response:
        tenant = self._page(ctx)
        rows = self.view.extensions.extensions(tenant)
        return self.render(ctx, "extensions.html", tenant, "extensions", extensions=rows)

    def page_dialplans(self, ctx: Ctx, **extra: Any) -> Response:
        tenant = self._page(ctx)
        info = self.view.dialplans_of(tenant)
        return self.render(ctx, "dialplans.html", tenant, "dialplans", templates=info["templates"], **extra)

    # -- actions ------------------------------------------------------------------------------------------

    async def unregister(self, ctx: Ctx) -> Response:
        tenant = self.app.tenant(ctx, write=True)
        extension = ctx.params["extension"]
        try:
            await self.view.unregister(tenant, extension, ctx.arg("contact") or None)
        except NotFound as e:
            return self.back(ctx, tenant, "registrations", str(e))
        return self.back(ctx, tenant, "registrations", f"Unregistered {extension}.")

    def hangup(self, ctx: Ctx) -> Response:
        tenant = self.app.tenant(ctx, write=True)
        try:
            self.view.hangup(tenant, ctx.params["call_id"])
        except NotFound:
            return self.back(ctx, tenant, "calls", "That call has already ended.")
        return self.back(ctx, tenant, "calls", "Call hung up.")

    async def delete_message(self, ctx: Ctx) -> Response:
        tenant = self.app.tenant(ctx, write=True)
        await self.view.delete_message(tenant, ctx.params["mailbox"], ctx.params["message"])
        return self.back(ctx, tenant, "voicemail", "Message deleted.")

    def _fields(self, ctx: Ctx) -> dict[str, Any]:
        fields: dict[str, Any] = {
            k: ctx.arg(k) for k in EDITABLE if k not in ("may_call_out", "allow_srtp_over_plain")
        }
        fields["may_call_out"] = bool(ctx.arg("may_call_out"))
        fields["allow_srtp_over_plain"] = bool(ctx.arg("allow_srtp_over_plain"))
        if not fields["srtp"]:
            fields["srtp"] = "optional"
        return fields

    async def add_extension(self, ctx: Ctx) -> Response:
        tenant = self.app.tenant(ctx, write=True)
        number = ctx.arg("number").strip()
        try:
            await self.view.extensions.add(tenant, number, self._fields(ctx), ctx.arg("password"))
        except ExtensionProblem as e:
            return self.back(ctx, tenant, "extensions", f"Not added: {e}")
        return self.back(ctx, tenant, "extensions", f"Extension {number} added.")

    async def change_extension(self, ctx: Ctx) -> Response:
        tenant = self.app.tenant(ctx, write=True)
        number = ctx.params["number"]
        if self.view.extensions.get(tenant, number) is None:
            raise not_found(f"no extension {number[:64]}")
        password = ctx.arg("password") or None
        fields = {} if ctx.arg("password_only") else self._fields(ctx)
        try:
            await self.view.extensions.change(tenant, number, fields, password)
        except ExtensionProblem as e:
            return self.back(ctx, tenant, "extensions", f"Not changed: {e}")
        what = "password reset" if ctx.arg("password_only") else "saved"
        return self.back(ctx, tenant, "extensions", f"Extension {number} {what}.")

    async def remove_extension(self, ctx: Ctx) -> Response:
        tenant = self.app.tenant(ctx, write=True)
        number = ctx.params["number"]
        if self.view.extensions.get(tenant, number) is None:
            raise not_found(f"no extension {number[:64]}")
        await self.view.extensions.remove(tenant, number)
        await self.view.unregister_removed(tenant, number)
        return self.back(ctx, tenant, "extensions", f"Extension {number} removed.")

    def reload(self, ctx: Ctx) -> Response:
        tenant = self.app.tenant(ctx, write=True)
        result = self.view.reload_dialplans(tenant)
        notice = (
            f"{result['checked']} template(s) checked: OK."
            if result["ok"]
            else f"{len(result['problems'])} problem(s): " + "; ".join(result["problems"][:3])
        )
        return self.back(ctx, tenant, "dialplans", notice)

    def simulate(self, ctx: Ctx) -> Response:
        self._browser(ctx)
        tenant = self.app.tenant(ctx)
        results = [r for r in ctx.arg("results").replace(",", " ").split() if r]
        digits = [d for d in ctx.arg("digits").replace(",", " ").split() if d]
        form = {
            "from": ctx.arg("from"),
            "to": ctx.arg("to"),
            "results": ctx.arg("results"),
            "digits": ctx.arg("digits"),
        }
        try:
            outcome = self.view.simulate(tenant, form["from"], form["to"], results, digits)
        except ValueError as e:
            outcome = {"ok": False, "error": str(e), "lines": []}
        return self.page_dialplans(ctx, simulation=outcome, form=form)


def _fmt_time(seconds: float | None) -> str:
    if not seconds:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
