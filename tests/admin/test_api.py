"""The console's JSON API through a real twisted.web Site (raw HTTP on a StringTransport, fake PBX objects):
authentication, roles and tenant isolation, CSRF, lock-out, and each action."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.admin.console_fakes import Console


@pytest.fixture
def console(tmp_path: Path) -> Console:
    return Console(tmp_path)


# -- authentication -----------------------------------------------------------------------------------------


def test_everything_but_login_and_openapi_needs_authentication(console: Console) -> None:
    client = console.client()
    reply = client.request("GET", "/api/v1/status")
    assert reply.status == 401
    assert reply.json == {"error": "unauthenticated", "reason": "log in first", "status": 401}
    assert reply.header("www-authenticate") == 'Bearer realm="pbx"'
    assert client.request("GET", "/api/v1/tenants/acme/calls").status == 401
    spec = client.request("GET", "/api/v1/openapi.json")
    assert spec.status == 200 and spec.json["openapi"].startswith("3.")
    assert "/api/v1/tenants/{tenant}/calls/{call_id}" in spec.json["paths"]


def test_login_sets_a_strict_httponly_cookie_and_returns_the_csrf_token(console: Console) -> None:
    client = console.client()
    reply = client.login("root")
    assert reply.status == 200
    assert reply.json["user"] == "root" and reply.json["role"] == "admin" and reply.json["csrf"]
    cookie = reply.header("set-cookie") or ""
    assert cookie.startswith("pbx_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; under TLS the cookie is __Host- and Secure
    assert client.request("GET", "/api/v1/status").json["tenants"] == ["acme", "globex"]
    assert reply.header("x-frame-options") == "DENY"
    assert "frame-ancestors 'none'" in (reply.header("content-security-policy") or "")


def test_wrong_password_and_unknown_user_get_the_same_answer(console: Console) -> None:
    client = console.client()
    wrong = client.login("root", "not-the-password")
    unknown = client.login("nobody", "not-the-password")
    assert wrong.status == unknown.status == 401
    assert (
        wrong.json
        == unknown.json
        == {"error": "bad_login", "reason": "wrong user name or password", "status": 401}
    )
    assert "set-cookie" not in wrong.headers


def test_lock_out_after_repeated_wrong_passwords_even_with_the_right_one(console: Console) -> None:
    client = console.client("192.0.2.9")
    for _ in range(2):
        assert client.login("root", "guess").status == 401
    third = client.login("root", "guess")
    assert third.status == 429 and third.json["error"] == "locked_out"
    assert third.header("retry-after") == "600"
    assert client.login("root").status == 429  # the right password does not help while locked out
    assert console.client("192.0.2.10").login("root").status == 200  # another address is not affected
    console.clock.advance(601)
    assert client.login("root").status == 200


def test_sessions_expire_on_the_server(console: Console) -> None:
    client = console.client()
    client.login("root")
    console.clock.advance(599)
    assert client.request("GET", "/api/v1/session").status == 200  # used: the expiry slides
    console.clock.advance(599)
    assert client.request("GET", "/api/v1/session").status == 200
    console.clock.advance(601)
    assert client.request("GET", "/api/v1/session").status == 401


def test_logout_ends_the_session(console: Console) -> None:
    client = console.client()
    client.login("root")
    cookie = dict(client.cookies)
    assert client.request("DELETE", "/api/v1/session").status == 200
    client.cookies = cookie  # a stolen copy of the cookie is worthless after logout
    assert client.request("GET", "/api/v1/status").status == 401


def test_bearer_tokens_need_no_csrf_and_unknown_tokens_are_refused(console: Console) -> None:
    console.add_token("ann", "pbx_test-token")
    script = console.client()
    script.token = "pbx_test-token"
    assert script.request("GET", "/api/v1/session").json["via"] == "token"
    console.add_call("c1")
    assert script.request("DELETE", "/api/v1/tenants/acme/calls/c1").status == 200
    script.token = "pbx_wrong"
    assert script.request("GET", "/api/v1/status").status == 401


# -- CSRF ---------------------------------------------------------------------------------------------------


def test_unsafe_methods_of_a_session_need_the_csrf_token(console: Console) -> None:
    console.add_call("c1")
    client = console.client()
    client.login("root")
    refused = client.request("DELETE", "/api/v1/tenants/acme/calls/c1", csrf=False)
    assert refused.status == 403 and refused.json["error"] == "csrf"
    wrong = client.request(
        "DELETE", "/api/v1/tenants/acme/calls/c1", csrf=False, headers={"X-CSRF-Token": "x"}
    )
    assert wrong.status == 403
    assert console.b2bua.calls["c1"].hung_up == ""
    assert client.request("DELETE", "/api/v1/tenants/acme/calls/c1").status == 200
    assert console.b2bua.calls["c1"].hung_up == "admin"


# -- roles and tenants --------------------------------------------------------------------------------------


def test_a_tenant_admin_never_sees_another_tenant(console: Console) -> None:
    console.add_call("g1", tenant="globex")
    ann = console.client()
    ann.login("ann")
    assert [t["name"] for t in ann.request("GET", "/api/v1/tenants").json] == ["acme"]
    assert ann.request("GET", "/api/v1/status").json["registrations"] == 1
    for path in ("calls", "registrations", "trunks", "cdrs", "voicemail", "extensions", "dialplans"):
        reply = ann.request("GET", f"/api/v1/tenants/globex/{path}")
        assert reply.status == 404, path
        assert reply.json["error"] == "not_found"
    assert ann.request("DELETE", "/api/v1/tenants/globex/calls/g1").status == 404
    assert ann.request("DELETE", "/api/v1/tenants/acme/calls/g1").status == 404  # not in acme either
    assert console.b2bua.calls["g1"].hung_up == ""
    assert ann.request("GET", "/api/v1/tenants/nosuch/calls").status == 404


def test_a_viewer_reads_but_changes_nothing(console: Console) -> None:
    console.add_call("c1")
    val = console.client()
    val.login("val")
    assert val.request("GET", "/api/v1/tenants/acme/calls").status == 200
    assert val.request("GET", "/api/v1/tenants/globex/calls").status == 404
    for method, path, body in (
        ("DELETE", "/api/v1/tenants/acme/calls/c1", None),
        ("DELETE", "/api/v1/tenants/acme/registrations/1001", None),
        ("POST", "/api/v1/tenants/acme/extensions", {"number": "1009", "password": "password-9"}),
        ("DELETE", "/api/v1/tenants/acme/extensions/1001", None),
        ("POST", "/api/v1/tenants/acme/dialplans/reload", None),
    ):
        reply = val.request(method, path, json_body=body)
        assert reply.status == 403, path
        assert reply.json["error"] == "forbidden"
    assert console.b2bua.calls["c1"].hung_up == ""


def test_the_admin_sees_every_tenant(console: Console) -> None:
    root = console.client()
    root.login("root")
    assert root.request("GET", "/api/v1/tenants/globex/registrations").json[0]["extension"] == "2001"


# -- data and actions ---------------------------------------------------------------------------------------


@pytest.fixture
def ann(console: Console):
    client = console.client()
    client.login("ann")
    return client


def test_registrations_and_unregister(console: Console, ann) -> None:
    rows = ann.request("GET", "/api/v1/tenants/acme/registrations").json
    assert rows == [
        {
            "extension": "1001", "contact": "sip:1001@127.0.0.1:5070", "transport": "udp",
            "source": "127.0.0.1:5070", "user_agent": "SIPp", "expires_in": rows[0]["expires_in"],
            "registered_at": 1.0,
        }
    ]  # fmt: skip
    assert ann.request("DELETE", "/api/v1/tenants/acme/registrations/1001").json == {"ok": True, "removed": 1}
    assert ann.request("GET", "/api/v1/tenants/acme/registrations").json == []
    assert ann.request("DELETE", "/api/v1/tenants/acme/registrations/1001").status == 404


def test_calls_and_hang_up(console: Console, ann) -> None:
    console.add_call("c1")
    ringing = console.add_call("c2", answered=False)
    calls = {c["id"]: c for c in ann.request("GET", "/api/v1/tenants/acme/calls").json}
    assert calls["c1"]["state"] == "answered" and calls["c1"]["duration"] == 10.0
    assert calls["c1"]["legs"] == [
        {"extension": "1002", "uri": "sip:1002@127.0.0.1:5072", "status": 200, "winner": False}
    ]
    assert calls["c2"]["state"] == "ringing"
    assert ann.request("DELETE", "/api/v1/tenants/acme/calls/c2").status == 200
    assert ringing.rejected == 480 and ringing.hangup_by == "admin"
    assert ann.request("DELETE", "/api/v1/tenants/acme/calls/nope").status == 404


def test_trunks(ann) -> None:
    [trunk] = ann.request("GET", "/api/v1/tenants/acme/trunks").json
    assert trunk["trunk"] == "carrier" and trunk["state"] == "failed"
    assert trunk["last_error"] == "403 Forbidden" and trunk["calls"] == 0


def test_cdrs_filters_and_csv(console: Console, ann) -> None:
    console.add_cdr("acme", "1001", "1002")
    console.add_cdr("acme", "1002", "=cmd()", cause="busy")
    console.add_cdr("globex", "2001", "1002")
    rows = ann.request("GET", "/api/v1/tenants/acme/cdrs").json
    assert [r["dialed"] for r in rows] == ["=cmd()", "1002"]
    assert [r["caller"] for r in ann.request("GET", "/api/v1/tenants/acme/cdrs?cause=busy").json] == ["1002"]
    assert ann.request("GET", "/api/v1/tenants/acme/cdrs?caller=1001&limit=1").json[0]["dialed"] == "1002"
    csv = ann.request("GET", "/api/v1/tenants/acme/cdrs?format=csv")
    assert csv.header("content-type") == "text/csv; charset=utf-8"
    lines = csv.text.splitlines()
    assert lines[0].startswith("call_id,tenant,caller,dialed")
    assert "'=cmd()" in lines[1]  # a formula is defused for spreadsheets
    assert len(lines) == 3
    assert ann.request("GET", "/api/v1/tenants/acme/cdrs?limit=x").status == 400


def test_voicemail_list_play_delete(console: Console, ann, tmp_path: Path) -> None:
    console.add_message("acme", "1001", "m1", tmp_path)
    console.add_message("globex", "2001", "g1", tmp_path)
    assert ann.request("GET", "/api/v1/tenants/acme/voicemail").json == [
        {"number": "1001", "name": "Alice", "new": 1, "old": 0}
    ]
    [message] = ann.request("GET", "/api/v1/tenants/acme/voicemail/1001").json
    assert message["id"] == "m1" and message["duration"] == 3.0
    audio = ann.request("GET", "/api/v1/tenants/acme/voicemail/1001/m1/audio")
    assert (
        audio.status == 200 and audio.header("content-type") == "audio/wav" and audio.body.startswith(b"RIFF")
    )
    assert ann.request("GET", "/api/v1/tenants/acme/voicemail/2001/g1/audio").status == 404  # globex's box
    assert ann.request("GET", "/api/v1/tenants/acme/voicemail/1001/nope/audio").status == 404
    assert ann.request("DELETE", "/api/v1/tenants/acme/voicemail/1001/m1").status == 200
    assert ann.request("GET", "/api/v1/tenants/acme/voicemail/1001").json == []
    assert not (tmp_path / "voicemail/acme/1001/m1.wav").exists()


def test_extensions_add_change_reset_remove_take_effect_at_once(console: Console, ann) -> None:
    from pbx.sip.digest import ha1

    added = ann.request(
        "POST",
        "/api/v1/tenants/acme/extensions",
        json_body={"number": "1003", "password": "pass-1003", "name": "Carol"},
    )
    assert added.status == 201
    assert added.json["source"] == "console" and added.json["name"] == "Carol" and added.json["has_password"]
    assert console.extensions.ha1("1003", "acme.example", "MD5") == ha1(
        "1003", "acme.example", "pass-1003", "MD5"
    )
    assert "1003" in console.extensions.directory("acme").extensions
    assert console.extensions.ha1("1003", "globex.example", "MD5") is None
    again = ann.request(
        "POST", "/api/v1/tenants/acme/extensions", json_body={"number": "1003", "password": "pass-1003"}
    )
    assert again.status == 409
    bad = ann.request(
        "POST", "/api/v1/tenants/acme/extensions", json_body={"number": "1004", "password": "short"}
    )
    assert bad.status == 400 and "password" in bad.json["reason"]
    unknown = ann.request("PATCH", "/api/v1/tenants/acme/extensions/1003", json_body={"colour": "red"})
    assert unknown.status == 400 and "colour" in unknown.json["reason"]
    changed = ann.request(
        "PATCH",
        "/api/v1/tenants/acme/extensions/1003",
        json_body={"forward_busy": "1001", "password": "new-pass-1003"},
    )
    assert changed.status == 200 and changed.json["forward_busy"] == "1001"
    assert console.extensions.ha1("1003", "acme.example", "SHA-256") == ha1(
        "1003", "acme.example", "new-pass-1003", "SHA-256"
    )
    assert console.extensions.directory("acme").extensions["1003"].forward_busy == "1001"
    assert ann.request("DELETE", "/api/v1/tenants/acme/extensions/1003").status == 200
    assert console.extensions.ha1("1003", "acme.example", "MD5") is None
    assert ann.request("GET", "/api/v1/tenants/acme/extensions/1003").status == 404
    # A configured extension: editing stores an override; deleting hides it with a tombstone.
    assert (
        ann.request("PATCH", "/api/v1/tenants/acme/extensions/1002", json_body={"name": "Bob"}).json["source"]
        == "console"
    )
    assert ann.request("DELETE", "/api/v1/tenants/acme/extensions/1002").status == 200
    assert "1002" not in console.extensions.directory("acme").extensions
    assert [e.deleted for e in console.store.stored_extensions().result if e.number == "1002"] == [True]


def test_dialplans_reload_and_simulate(ann) -> None:
    info = ann.request("GET", "/api/v1/tenants/acme/dialplans").json
    assert info["templates"] == [{"template": "main", "file": "acme/main.j2", "error": ""}]
    reload = ann.request("POST", "/api/v1/tenants/acme/dialplans/reload").json
    assert reload["ok"] is True and reload["checked"] >= 1
    sim = ann.request(
        "POST",
        "/api/v1/tenants/acme/dialplans/simulate",
        json_body={"from": "1001", "to": "1002", "results": ["noanswer"]},
    ).json
    assert sim["ok"] is True
    assert sim["lines"][0].startswith("dial 1002")
    assert any(line.startswith("voicemail 1002") for line in sim["lines"])
    bad = ann.request(
        "POST", "/api/v1/tenants/acme/dialplans/simulate", json_body={"to": "1002", "results": ["maybe"]}
    )
    assert bad.status == 400


def test_errors_are_json_with_the_right_status(ann) -> None:
    assert ann.request("GET", "/api/v1/nothing").json["status"] == 404
    wrong_method = ann.request("PUT", "/api/v1/tenants/acme/calls")
    assert wrong_method.status == 405 and wrong_method.header("allow") == "GET"
    broken = ann.request(
        "POST", "/api/v1/tenants/acme/extensions", headers={"Content-Type": "application/json"}
    )
    assert broken.status == 400


def test_under_tls_the_cookie_is_secure_and_host_prefixed(tmp_path: Path) -> None:
    secure = Console(tmp_path)
    from pbx.admin.site import ConsoleApp

    secure.app = ConsoleApp(secure.view, secure.logins, secure.sessions, secure=True)
    secure.site = secure.app.site()
    client = secure.client()
    cookie = client.login("root").header("set-cookie") or ""
    assert cookie.startswith("__Host-pbx_session=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie and "Domain" not in cookie
    assert client.request("GET", "/api/v1/session").status == 200


def test_mounted_resources_sit_behind_the_login_or_a_token(console: Console) -> None:
    from twisted.web.resource import Resource

    class Trace(Resource):
        isLeaf = True

        def render_GET(self, request):
            who = request.pbx_principal.name if request.pbx_principal else "-"
            return f"{who} {'/'.join(p.decode() for p in request.postpath)}".encode()

    console.app.mount("api/v1/calls", Trace())
    console.app.mount("metrics", Trace(), public=True, bearer_token="scrape-token")
    client = console.client()
    assert client.request("GET", "/api/v1/calls/abc/trace").status == 401
    client.login("ann")
    assert client.request("GET", "/api/v1/calls/abc/trace").text == "ann abc/trace"
    assert client.request("GET", "/metrics").status == 401
    scraper = console.client()
    assert scraper.request("GET", "/metrics", headers={"Authorization": "Bearer scrape-token"}).text == "- "
    console.app.mount("open", Trace(), public=True)
    assert console.client().request("GET", "/open/x").text == "- x"


def test_admin_only_mounts_refuse_tenant_admins(console: Console) -> None:
    """PBX-wide resources (call traces of every tenant, log levels) mounted `admin_only`: 401 without a login,
    403 for a tenant's admin, served to an admin of everything."""
    from twisted.web.resource import Resource

    class Levels(Resource):
        isLeaf = True

        def render_GET(self, request):
            return b"levels"

    console.app.mount("api/v1/log/levels", Levels(), admin_only=True)
    assert console.client().request("GET", "/api/v1/log/levels").status == 401
    tenant_admin = console.client()
    tenant_admin.login("ann")
    assert tenant_admin.request("GET", "/api/v1/log/levels").status == 403
    root = console.client()
    root.login("root")
    assert root.request("GET", "/api/v1/log/levels").text == "levels"
