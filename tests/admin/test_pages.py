"""The console's HTML pages through a real twisted.web Site: the login form (with its own CSRF token), each
page, the forms' CSRF tokens, actions by form, partial refreshes, and tenant isolation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.admin.console_fakes import Client, Console


@pytest.fixture
def console(tmp_path: Path) -> Console:
    return Console(tmp_path)


def browser_login(client: Client, name: str) -> str:
    """Log in through the form; the session's CSRF token (from the first page)."""
    form = client.request("GET", "/login")
    assert form.status == 200
    token = client.page_csrf(form.text)
    reply = client.request(
        "POST", "/login", form={"csrf": token, "username": name, "password": f"{name}-password"}
    )
    assert reply.status == 303 and reply.header("location") == "/"
    home = client.request("GET", "/")
    assert home.status == 303
    page = client.request("GET", home.header("location") or "")
    assert page.status == 200
    return client.page_csrf(page.text)


def test_pages_redirect_to_the_login_form(console: Console) -> None:
    client = console.client()
    reply = client.request("GET", "/t/acme/calls")
    assert reply.status == 303 and reply.header("location") == "/login"


def test_the_login_form_needs_its_csrf_token(console: Console) -> None:
    client = console.client()
    client.request("GET", "/login")
    reply = client.request(
        "POST", "/login", form={"csrf": "forged", "username": "root", "password": "root-password"}
    )
    assert reply.status == 403 and "expired" in reply.text
    assert "pbx_session" not in client.cookies


def test_a_wrong_password_shows_the_form_again(console: Console) -> None:
    client = console.client()
    token = client.page_csrf(client.request("GET", "/login").text)
    reply = client.request("POST", "/login", form={"csrf": token, "username": "root", "password": "nope"})
    assert reply.status == 401 and "Wrong user name or password." in reply.text


def test_every_page_renders(console: Console, tmp_path: Path) -> None:
    console.add_call("c1")
    console.add_cdr("acme", "1001", "1002")
    console.add_message("acme", "1001", "m1", tmp_path)
    client = console.client()
    browser_login(client, "ann")
    expected = {
        "calls": 'data-call-id="c1"',
        "registrations": 'data-extension="1001"',
        "trunks": "403 Forbidden",
        "cdrs": "cdrs.csv",
        "voicemail": 'src="/t/acme/voicemail/1001/m1.wav"',
        "extensions": 'id="add-extension"',
        "dialplans": "main.j2",
    }
    for page, marker in expected.items():
        reply = client.request("GET", f"/t/acme/{page}")
        assert reply.status == 200, page
        assert marker in reply.text, page
        assert '<script src="/static/console.js"' in reply.text
    partial = client.request("GET", "/t/acme/calls?partial=1")
    assert "<html" not in partial.text and 'data-call-id="c1"' in partial.text
    assert client.request("GET", "/t/acme/voicemail/1001/m1.wav").header("content-type") == "audio/wav"
    assert client.request("GET", "/t/acme/cdrs.csv").text.startswith("call_id,")
    assert client.request("GET", "/static/console.js").status == 200
    assert client.request("GET", "/static/../site.py").status == 404


def test_every_form_carries_the_csrf_token(console: Console) -> None:
    console.add_call("c1")
    client = console.client()
    csrf = browser_login(client, "root")
    for page in ("calls", "registrations", "extensions", "dialplans"):
        html = client.request("GET", f"/t/acme/{page}").text
        forms = re.findall(r"<form method=\"post\".*?</form>", html, re.S)
        assert forms, page
        for form in forms:
            assert f'name="csrf" value="{csrf}"' in form, (page, form[:80])


def test_form_actions(console: Console) -> None:
    call = console.add_call("c1")
    client = console.client()
    csrf = browser_login(client, "ann")
    refused = client.request("POST", "/t/acme/calls/c1/hangup", form={})
    assert refused.status == 403 and call.hung_up == ""
    done = client.request("POST", "/t/acme/calls/c1/hangup", form={"csrf": csrf})
    assert done.status == 303 and call.hung_up == "admin"
    assert "Call hung up." in client.request("GET", "/t/acme/calls").text
    added = client.request(
        "POST",
        "/t/acme/extensions",
        form={"csrf": csrf, "number": "1005", "name": "Eve", "password": "pass-1005"},
    )
    assert added.status == 303 and "1005" in console.extensions.directory("acme").extensions
    edited = client.request(
        "POST",
        "/t/acme/extensions/1005",
        form={"csrf": csrf, "name": "Eve B", "srtp": "off", "ring_timeout": "20"},
    )
    assert edited.status == 303
    assert console.extensions.get("acme", "1005")["name"] == "Eve B"
    assert console.extensions.get("acme", "1005")["ring_timeout"] == 20.0
    client.request("POST", "/t/acme/extensions/1005/delete", form={"csrf": csrf})
    assert console.extensions.get("acme", "1005") is None
    client.request("POST", "/t/acme/registrations/1001/unregister", form={"csrf": csrf})
    assert [b.aor for b in console.location] == ["2001"]
    sim = client.request(
        "POST", "/t/acme/dialplans/simulate", form={"csrf": csrf, "from": "1001", "to": "1002"}
    )
    assert sim.status == 200 and "dial 1002" in sim.text


def test_the_trunks_page_shows_every_nodes_view_from_the_store(console: Console) -> None:
    """Rows other PBX nodes wrote to the shared store (issue 17) appear under the live trunks, the tenant's
    only."""
    from pbx.store.trunk_state import TrunkStatus

    client = console.client()
    browser_login(client, "ann")
    assert 'id="trunk-nodes"' not in client.request("GET", "/t/acme/trunks").text  # nothing in the store yet
    for tenant, node, code in (("acme", "pbx2:5072", 200), ("globex", "pbx3:5073", 403)):
        row = TrunkStatus(
            tenant=tenant, trunk="carrier", node=node, state="registered", code=code, reason="OK"
        )
        console.store.save_trunk_status(row)
    text = client.request("GET", "/t/acme/trunks").text
    assert 'id="trunk-nodes"' in text and "pbx2:5072" in text and "200 OK" in text
    assert "pbx3:5073" not in text


def test_a_tenant_admin_gets_404_for_another_tenants_pages(console: Console) -> None:
    client = console.client()
    csrf = browser_login(client, "ann")
    assert client.request("GET", "/t/globex/calls").status == 404
    console.add_call("g1", tenant="globex")
    assert client.request("POST", "/t/globex/calls/g1/hangup", form={"csrf": csrf}).status == 404
    assert console.b2bua.calls["g1"].hung_up == ""


def test_a_viewer_sees_no_buttons(console: Console) -> None:
    console.add_call("c1")
    client = console.client()
    csrf = browser_login(client, "val")
    html = client.request("GET", "/t/acme/calls").text
    assert "Hang up" not in html
    assert client.request("POST", "/t/acme/calls/c1/hangup", form={"csrf": csrf}).status == 403


def test_logout(console: Console) -> None:
    client = console.client()
    csrf = browser_login(client, "root")
    assert client.request("POST", "/logout", form={"csrf": csrf}).status == 303
    assert client.request("GET", "/t/acme/calls").status == 303


def test_a_calls_ladder_page(console: Console) -> None:
    """A traced call's ladder: its SIP messages and template lines; another tenant's call is not found."""

    class Trace:
        def __init__(self, tenant: str) -> None:
            self.tenant = tenant

        def as_dict(self) -> dict:
            return {
                "call_id": "c9@h",
                "tenant": self.tenant,
                "caller": "1001",
                "dialed": "1002",
                "started_at": 100.0,
                "active": False,
                "cause": "normal",
                "status": 200,
                "parties": [{"id": "caller", "label": "1001"}],
                "dropped_events": 0,
                "events": [
                    {"t": 100.0, "kind": "sip", "party": "caller", "dir": "in", "peer": "UDP 192.0.2.1:5060",
                     "line": "INVITE sip:1002@acme.example SIP/2.0", "headers": {"CSeq": "1 INVITE"}},
                    {"t": 100.01, "kind": "action", "template": "main.j2", "lineno": 3, "text": "dial 1002"},
                ],
            }  # fmt: skip

    class Tracer:
        def get(self, call_id: str):
            return {"c9@h": Trace("acme"), "g1@h": Trace("globex")}.get(call_id)

    console.view.tracer = Tracer()
    client = console.client()
    browser_login(client, "ann")
    page = client.request("GET", "/t/acme/calls/c9%40h/trace")
    assert page.status == 200
    for text in ("INVITE sip:1002@acme.example SIP/2.0", "CSeq: 1 INVITE", "main.j2:3", "dial 1002", "0.010"):
        assert text in page.text, text
    assert client.request("GET", "/t/acme/calls/g1%40h/trace").status == 404  # globex's call
    assert client.request("GET", "/t/acme/calls/nope/trace").status == 404
