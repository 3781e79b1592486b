"""The console's JSON API (`/api/v1/...`, documented in docs/api.md and served as `/api/v1/openapi.json`).

Same data and actions as the pages, through `pbx.admin.view.PbxView`: registrations (unregister), active
calls (hang up), trunks, CDRs (filters, CSV), voicemail (list, play, delete), extensions (add, change,
remove, reset password), dialplans (templates with their last error, reload, simulate). Errors are JSON
`{"error", "reason", "status"}` with the HTTP status; another tenant's objects answer 404, a read-only user's
change 403.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from pbx.admin.extensions import ExtensionProblem
from pbx.admin.http import Ctx, HttpError, Response, Route, not_found, route
from pbx.admin.openapi import OPENAPI

if TYPE_CHECKING:
    from pbx.admin.site import ConsoleApp

_T = "/api/v1/tenants/{tenant}"


def api_routes(app: ConsoleApp) -> list[Route]:
    """Every route of the API."""
    api = _Api(app)
    return [
        route("GET", "/api/v1/openapi.json", api.openapi, public=True),
        route("POST", "/api/v1/session", api.login, public=True),
        route("DELETE", "/api/v1/session", api.logout),
        route("GET", "/api/v1/session", api.me),
        route("GET", "/api/v1/status", api.status),
        route("GET", "/api/v1/tenants", api.tenants),
        route("GET", f"{_T}/registrations", api.registrations),
        route("DELETE", f"{_T}/registrations/{{extension}}", api.unregister),
        route("GET", f"{_T}/calls", api.calls),
        route("DELETE", f"{_T}/calls/{{call_id}}", api.hangup),
        route("GET", f"{_T}/trunks", api.trunks),
        route("GET", f"{_T}/cdrs", api.cdrs),
        route("GET", f"{_T}/voicemail", api.mailboxes),
        route("GET", f"{_T}/voicemail/{{mailbox}}", api.messages),
        route("GET", f"{_T}/voicemail/{{mailbox}}/{{message}}/audio", api.audio),
        route("DELETE", f"{_T}/voicemail/{{mailbox}}/{{message}}", api.delete_message),
        route("GET", f"{_T}/extensions", api.extensions),
        route("POST", f"{_T}/extensions", api.add_extension),
        route("GET", f"{_T}/extensions/{{number}}", api.extension),
        route("PATCH", f"{_T}/extensions/{{number}}", api.change_extension),
        route("DELETE", f"{_T}/extensions/{{number}}", api.remove_extension),
        route("GET", f"{_T}/dialplans", api.dialplans),
        route("POST", f"{_T}/dialplans/reload", api.reload),
        route("POST", f"{_T}/dialplans/simulate", api.simulate),
    ]


def wav_response(path: Path) -> Response:
    """A message's WAV file (small: a voicemail is at most minutes of 8 kHz audio)."""
    return Response(path.read_bytes(), "audio/wav", 200, {"Content-Disposition": "inline"})


class _Api:
    def __init__(self, app: ConsoleApp) -> None:
        self.app = app
        self.view = app.view

    def openapi(self, ctx: Ctx) -> Response:
        return Response(json.dumps(OPENAPI, indent=1).encode(), "application/json")

    async def login(self, ctx: Ctx) -> dict[str, Any]:
        body = ctx.json()
        name, password = body.get("username"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            raise HttpError(400, "bad_request", "username and password (strings) are required")
        session = await self.app.login(ctx, name, password)
        return {**_who(session.principal), "csrf": session.csrf}

    def logout(self, ctx: Ctx) -> dict[str, Any]:
        self.app.logout(ctx)
        return {"ok": True}

    def me(self, ctx: Ctx) -> dict[str, Any]:
        assert ctx.principal is not None
        out = _who(ctx.principal)
        if ctx.session is not None:
            out["csrf"] = ctx.session.csrf
        return out

    def status(self, ctx: Ctx) -> dict[str, Any]:
        assert ctx.principal is not None
        return self.view.status(self.app.visible_tenants(ctx.principal))

    def tenants(self, ctx: Ctx) -> list[dict[str, Any]]:
        assert ctx.principal is not None
        out = []
        for name in self.app.visible_tenants(ctx.principal):
            seed = self.view.extensions.seed(name)
            out.append(
                {
                    "name": name,
                    "domain": seed.domain if seed else "",
                    "writable": ctx.principal.can_change(name),
                }
            )
        return out

    def registrations(self, ctx: Ctx) -> list[dict[str, Any]]:
        return self.view.registrations(self.app.tenant(ctx))

    async def unregister(self, ctx: Ctx) -> dict[str, Any]:
        tenant = self.app.tenant(ctx, write=True)
        removed = await self.view.unregister(tenant, ctx.params["extension"], ctx.arg("contact") or None)
        return {"ok": True, "removed": removed}

    def calls(self, ctx: Ctx) -> list[dict[str, Any]]:
        return self.view.calls(self.app.tenant(ctx))

    def hangup(self, ctx: Ctx) -> dict[str, Any]:
        tenant = self.app.tenant(ctx, write=True)
        self.view.hangup(tenant, ctx.params["call_id"])
        return {"ok": True}

    def trunks(self, ctx: Ctx) -> list[dict[str, Any]]:
        return self.view.trunks(self.app.tenant(ctx))

    async def cdrs(self, ctx: Ctx) -> Any:
        tenant = self.app.tenant(ctx)
        try:
            limit = int(ctx.arg("limit", "100"))
        except ValueError:
            raise HttpError(400, "bad_request", "limit must be a number") from None
        filters = {k: ctx.arg(k) for k in ("caller", "dialed", "cause", "since", "until")}
        rows = await self.view.cdrs(tenant, filters, limit)
        if ctx.arg("format") == "csv":
            return Response(
                self.view.cdrs_csv(rows).encode(),
                "text/csv; charset=utf-8",
                200,
                {"Content-Disposition": f'attachment; filename="cdrs-{tenant}.csv"'},
            )
        return rows

    def mailboxes(self, ctx: Ctx) -> list[dict[str, Any]]:
        return self.view.mailbox_list(self.app.tenant(ctx))

    def messages(self, ctx: Ctx) -> Deferred[list[dict[str, Any]]]:
        return self.view.messages(self.app.tenant(ctx), ctx.params["mailbox"])

    async def audio(self, ctx: Ctx) -> Response:
        tenant = self.app.tenant(ctx)
        path = await self.view.message_audio(tenant, ctx.params["mailbox"], ctx.params["message"])
        return wav_response(path)

    async def delete_message(self, ctx: Ctx) -> dict[str, Any]:
        tenant = self.app.tenant(ctx, write=True)
        await self.view.delete_message(tenant, ctx.params["mailbox"], ctx.params["message"])
        return {"ok": True}

    def extensions(self, ctx: Ctx) -> list[dict[str, Any]]:
        return self.view.extensions.extensions(self.app.tenant(ctx))

    def extension(self, ctx: Ctx) -> dict[str, Any]:
        found = self.view.extensions.get(self.app.tenant(ctx), ctx.params["number"])
        if found is None:
            raise not_found(f"no extension {ctx.params['number'][:64]}")
        return found

    async def add_extension(self, ctx: Ctx) -> Response:
        tenant = self.app.tenant(ctx, write=True)
        body = ctx.json()
        number, password = body.pop("number", None), body.pop("password", None)
        if not isinstance(number, str) or not isinstance(password, str):
            raise HttpError(400, "bad_request", "number and password (strings) are required")
        try:
            done = self.view.extensions.add(tenant, number, body, password)
        except ExtensionProblem as e:
            status = 409 if "exists" in str(e) else 400
            raise HttpError(status, "conflict" if status == 409 else "bad_request", str(e)) from None
        await done
        return _json_response(self.view.extensions.get(tenant, number), 201)

    async def change_extension(self, ctx: Ctx) -> dict[str, Any]:
        tenant = self.app.tenant(ctx, write=True)
        number = ctx.params["number"]
        if self.view.extensions.get(tenant, number) is None:
            raise not_found(f"no extension {number[:64]}")
        body = ctx.json()
        password = body.pop("password", None)
        try:
            done = self.view.extensions.change(tenant, number, body, password)
        except ExtensionProblem as e:
            raise HttpError(400, "bad_request", str(e)) from None
        await done
        found = self.view.extensions.get(tenant, number)
        assert found is not None
        return found

    async def remove_extension(self, ctx: Ctx) -> dict[str, Any]:
        tenant = self.app.tenant(ctx, write=True)
        number = ctx.params["number"]
        if self.view.extensions.get(tenant, number) is None:
            raise not_found(f"no extension {number[:64]}")
        await self.view.extensions.remove(tenant, number)
        return {"ok": True, "unregistered": await self.view.unregister_removed(tenant, number)}

    def dialplans(self, ctx: Ctx) -> dict[str, Any]:
        return self.view.dialplans_of(self.app.tenant(ctx))

    def reload(self, ctx: Ctx) -> dict[str, Any]:
        return self.view.reload_dialplans(self.app.tenant(ctx, write=True))

    def simulate(self, ctx: Ctx) -> dict[str, Any]:
        tenant = self.app.tenant(ctx)
        body = ctx.json()
        caller, dialed = body.get("from", ""), body.get("to")
        results, digits = body.get("results", []), body.get("digits", [])
        if not isinstance(dialed, str) or not dialed or not isinstance(caller, str):
            raise HttpError(
                400, "bad_request", "'to' (the number dialed) is required; 'from' is an extension"
            )
        if not _strings(results) or not _strings(digits):
            raise HttpError(400, "bad_request", "'results' and 'digits' are arrays of strings")
        try:
            return self.view.simulate(tenant, caller, dialed, results, digits)
        except ValueError as e:
            raise HttpError(400, "bad_request", str(e)) from None


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) <= 50


def _who(principal: Any) -> dict[str, Any]:
    return {"user": principal.name, "role": principal.role, "tenant": principal.tenant, "via": principal.via}


def _json_response(value: Any, status: int) -> Response:
    return Response(json.dumps(value, sort_keys=True).encode(), "application/json", status)
