"""The console's JSON API against a live PBX (`twistd pbx` with `[admin] listen` on a free loopback port),
driven over real HTTP while SIPp phones register and call: login and lock-out, CSRF, registrations and
unregister, a call in progress hung up from the API, voicemail list/play/delete, an extension added through
the API that a SIPp phone then registers with (no restart), dialplan reload and simulate, and the `pbx`
commands that talk to the API."""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.console_pbx import ADMIN_PASSWORD, ConsolePbx, Http, launch_console_pbx, pbx_cli
from tests.e2e.harness import executable
from tests.e2e.test_calls_sipp import SippSet

pytestmark = pytest.mark.e2e


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[SippSet]:
    directory = tmp_path / "sipp"
    directory.mkdir()
    group = SippSet(directory)
    yield group
    group.stop()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsolePbx]:
    """One PBX for the file's tests (each leaves it as it found it: no registration, no call)."""
    live = launch_console_pbx(tmp_path_factory.mktemp("console") / "pbx")
    yield live
    live.pbx.process.stop()


def login_from(url: str, source: str, name: str, password: str) -> int:
    """A login attempt from another loopback address (lock-outs are per source address)."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(
        parsed.hostname, parsed.port, timeout=15, source_address=(source, 0)
    )
    try:
        body = json.dumps({"username": name, "password": password})
        connection.request("POST", "/api/v1/session", body, {"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def wait_until(check, timeout: float = 10.0, what: str = "") -> object:
    """Poll the API for an event (a registration, a call) with a bound; return the first truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling the API for an event


def test_login_csrf_and_lock_out(console: ConsolePbx) -> None:
    browser = Http(console.url)
    assert browser.call("GET", "/api/v1/status").status == 401
    assert browser.login().status == 200
    status = browser.call("GET", "/api/v1/status").json
    assert status["tenants"] == ["default"] and status["calls"] == 0
    assert browser.call("POST", "/api/v1/tenants/default/dialplans/reload", csrf=False).status == 403
    reload = browser.call("POST", "/api/v1/tenants/default/dialplans/reload")
    assert reload.status == 200 and reload.json["checked"] >= 1
    answers = [login_from(console.url, "127.0.0.2", "root", f"guess-{n}") for n in range(6)]
    assert answers[:4] == [401] * 4 and answers[5] == 429
    assert login_from(console.url, "127.0.0.2", "root", ADMIN_PASSWORD) == 429  # even the right password
    assert login_from(console.url, "127.0.0.3", "root", ADMIN_PASSWORD) == 200  # another address is not
    assert Http(console.url, token=console.token).call("GET", "/api/v1/session").json["user"] == "root"


def test_registrations_calls_and_hang_up(console: ConsolePbx, sipp: SippSet) -> None:
    api = Http(console.url, token=console.token)
    pbx = console.pbx
    port = sipp.register(pbx, "1002")
    [row] = wait_until(lambda: api.call("GET", "/api/v1/tenants/default/registrations").json, what="1002")
    assert row["extension"] == "1002" and row["transport"] == "udp" and str(port) in row["contact"]
    uas = sipp.uas("uas", "call_uas.xml", "1002", port)
    csv = sipp.users_csv([("1001", "pass1001", "1002")], "held_users")
    uac = sipp.start("uac", "console_uac_held.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=30)
    [call] = wait_until(
        lambda: [
            c for c in api.call("GET", "/api/v1/tenants/default/calls").json if c["state"] == "answered"
        ],
        what="an answered call",
    )
    assert (call["caller"], call["dialed"], call["codec"]) == ("1001", "1002", "PCMU/8000")
    assert call["media"] is not None and set(call["media"]) == {"a", "b"}
    assert api.call("DELETE", f"/api/v1/tenants/default/calls/{call['id']}").json == {"ok": True}
    sipp.check(pbx, uac, uas)  # both phones got the PBX's BYE and answered it
    cdr = pbx.wait_cdr(call["id"])
    assert cdr["hangup_by"] == "admin", cdr
    assert api.call("GET", "/api/v1/tenants/default/calls").json == []
    assert api.call("DELETE", "/api/v1/tenants/default/registrations/1002").json["removed"] == 1
    assert api.call("GET", "/api/v1/tenants/default/registrations").json == []
    assert [r for r in api.call("GET", "/api/v1/tenants/default/cdrs").json if r["call_id"] == call["id"]]


def test_voicemail_list_play_delete(console: ConsolePbx) -> None:
    api = Http(console.url, token=console.token)
    assert api.call("GET", "/api/v1/tenants/default/voicemail").json == [
        {"number": "1002", "name": "Ext 1002", "new": 1, "old": 0}
    ]
    [message] = api.call("GET", "/api/v1/tenants/default/voicemail/1002").json
    assert message["id"] == console.message_id
    audio = api.call("GET", f"/api/v1/tenants/default/voicemail/1002/{message['id']}/audio")
    assert audio.status == 200 and audio.body[:4] == b"RIFF" and audio.headers["Content-Type"] == "audio/wav"
    assert api.call("DELETE", f"/api/v1/tenants/default/voicemail/1002/{message['id']}").status == 200
    assert api.call("GET", "/api/v1/tenants/default/voicemail/1002").json == []
    assert not list((console.pbx.directory / "data" / "voicemail" / "default" / "1002").glob("*.wav"))


def test_an_extension_added_by_the_api_registers_without_a_restart(
    console: ConsolePbx, sipp: SippSet
) -> None:
    api = Http(console.url, token=console.token)
    added = api.call(
        "POST",
        "/api/v1/tenants/default/extensions",
        {"number": "1050", "password": "pass1050", "name": "New"},
    )
    assert added.status == 201, added.body
    sipp.register(console.pbx, "1050")  # its digest: pass1050, known to the registrar at once
    rows = api.call("GET", "/api/v1/tenants/default/registrations").json
    assert [r["extension"] for r in rows] == ["1050"]
    # Removed again: its registration goes with it, and the next REGISTER of 1050 is refused.
    removed = api.call("DELETE", "/api/v1/tenants/default/extensions/1050")
    assert removed.json == {"ok": True, "unregistered": 1}
    assert api.call("GET", "/api/v1/tenants/default/registrations").json == []
    assert api.call("GET", "/api/v1/tenants/default/extensions/1050").status == 404
    sim = api.call("POST", "/api/v1/tenants/default/dialplans/simulate", {"from": "1001", "to": "1002"}).json
    assert sim["ok"] and sim["lines"][0].startswith("dial 1002")


def test_the_pbx_command_talks_to_the_api(console: ConsolePbx, sipp: SippSet) -> None:
    sipp.register(console.pbx, "1003")
    env = {**os.environ, "PBX_TOKEN": console.token}
    config = str(console.config)
    import subprocess

    def pbx(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [executable("pbx"), *args], capture_output=True, text=True, timeout=30, env=env, check=False
        )

    status = pbx("status", "--config", config)
    assert status.returncode == 0 and "registrations: 1" in status.stdout, status.stderr + status.stdout
    registrations = pbx("registrations", config, "--json", "--url", console.url)
    assert registrations.returncode == 0 and '"extension": "1003"' in registrations.stdout
    calls = pbx("calls", "--config", config)
    assert calls.returncode == 0 and "0 call(s)" in calls.stdout
    bad = pbx("calls", "--config", config, "--token", "pbx_wrong")
    assert bad.returncode == 1 and "401" in bad.stderr
    listing = pbx_cli(console.config, "user", "list")
    assert "root" in listing.stdout
    assert pbx("registrations", config, "--url", console.url).returncode == 0
    Http(console.url, token=console.token).call("DELETE", "/api/v1/tenants/default/registrations/1003")
