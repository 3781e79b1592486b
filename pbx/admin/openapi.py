"""The OpenAPI 3.0 description of the console's JSON API, served at `/api/v1/openapi.json` (docs/api.md
says the same in prose). Built from a compact table so that it stays next to the routes it describes."""

from __future__ import annotations

from typing import Any

_T = "/api/v1/tenants/{tenant}"

_ERROR = {"$ref": "#/components/responses/Error"}


def _op(
    summary: str, *, body: str | None = None, ok: str = "200", csv: bool = False, wav: bool = False
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": {}}}
    if csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    if wav:
        content = {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            ok: {"description": "success", "content": content},
            "400": _ERROR,
            "401": _ERROR,
            "403": _ERROR,
            "404": _ERROR,
        },
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return op


def _params(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]


_PATHS: dict[str, dict[str, dict[str, Any]]] = {
    "/api/v1/session": {
        "post": _op("Log in: sets the session cookie, returns the CSRF token", body="Login"),
        "get": _op("Who am I (and my CSRF token)"),
        "delete": _op("Log out"),
    },
    "/api/v1/status": {"get": _op("PBX-wide figures over the tenants I see")},
    "/api/v1/tenants": {"get": _op("The tenants I see")},
    "/api/v1/calls/{call_id}/trace": {
        "get": _op("A call's ladder: SIP messages of all legs, template lines, media, timers (admins only)")
    },
    "/api/v1/traces": {"get": _op("The kept call traces, active first (?failed=1 ?limit=N; admins only)")},
    "/api/v1/log/levels": {
        "get": _op("Log levels per subsystem (admins only)"),
        "post": _op("Set a subsystem's log level: {namespace, level} (admins only)"),
    },
    f"{_T}/registrations": {"get": _op("Registered contacts")},
    f"{_T}/registrations/{{extension}}": {
        "delete": _op("Unregister an extension (?contact= for one contact)")
    },
    f"{_T}/calls": {"get": _op("Active calls with legs and media counters")},
    f"{_T}/calls/{{call_id}}": {"delete": _op("Hang up a call")},
    f"{_T}/trunks": {"get": _op("Trunks: registration state, last error, calls")},
    f"{_T}/cdrs": {
        "get": _op("Recent CDRs (?caller ?dialed ?cause ?since ?until ?limit ?format=csv)", csv=True)
    },
    f"{_T}/voicemail": {"get": _op("Mailboxes with message counts")},
    f"{_T}/voicemail/{{mailbox}}": {"get": _op("A mailbox's messages")},
    f"{_T}/voicemail/{{mailbox}}/{{message}}": {"delete": _op("Delete a message")},
    f"{_T}/voicemail/{{mailbox}}/{{message}}/audio": {"get": _op("A message's WAV", wav=True)},
    f"{_T}/extensions": {
        "get": _op("Extensions (config and console)"),
        "post": _op("Add an extension", body="NewExtension", ok="201"),
    },
    f"{_T}/extensions/{{number}}": {
        "get": _op("One extension"),
        "patch": _op("Change an extension (fields and/or password)", body="ExtensionChange"),
        "delete": _op("Remove an extension"),
    },
    f"{_T}/dialplans": {"get": _op("Templates with their last error")},
    f"{_T}/dialplans/reload": {"post": _op("Check every template of the tenant now")},
    f"{_T}/dialplans/simulate": {"post": _op("The actions a call would run", body="Simulate")},
}

_EXTENSION_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "maxLength": 64},
    "forward_all": {"type": "string"},
    "forward_busy": {"type": "string"},
    "forward_noanswer": {"type": "string"},
    "ring_timeout": {"type": "number", "minimum": 0, "maximum": 600},
    "may_call_out": {"type": "boolean"},
    "srtp": {"type": "string", "enum": ["off", "optional", "mandatory"]},
    "allow_srtp_over_plain": {"type": "boolean"},
    "password": {"type": "string", "minLength": 8, "maxLength": 128},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "PBX console API",
        "version": "1",
        "description": "The operator's console of the PBX as JSON (docs/api.md).",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}, {"session": []}],
    "paths": {
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI"}},
            }
        },
        **{
            path: {
                **{method: {**op, "parameters": _params(path)} for method, op in ops.items()},
            }
            for path, ops in _PATHS.items()
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from `pbx user token NAME`",
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "pbx_session",
                "description": "Browser session; unsafe methods need the X-CSRF-Token header",
            },
        },
        "responses": {
            "Error": {
                "description": "An error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "reason", "status"],
                "properties": {
                    "error": {"type": "string"},
                    "reason": {"type": "string"},
                    "status": {"type": "integer"},
                },
            },
            "Login": {
                "type": "object",
                "required": ["username", "password"],
                "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
            },
            "NewExtension": {
                "type": "object",
                "required": ["number", "password"],
                "properties": {"number": {"type": "string"}, **_EXTENSION_FIELDS},
                "additionalProperties": False,
            },
            "ExtensionChange": {
                "type": "object",
                "properties": _EXTENSION_FIELDS,
                "additionalProperties": False,
            },
            "Simulate": {
                "type": "object",
                "required": ["to"],
                "properties": {
                    "from": {"type": "string"},
                    "to": {"type": "string"},
                    "results": {"type": "array", "items": {"type": "string"}},
                    "digits": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
"""The OpenAPI document."""
