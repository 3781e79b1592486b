"""Two PBX processes sharing one PostgreSQL database (issue 17, item 1), end to end with SIPp.

A phone registers through node A; a phone calling through node B reaches it (node B heard of the
registration through LISTEN/NOTIFY and read it from the database); the call's CDR is in the shared database;
and the offline `pbx registrations` reads the database both nodes use; once node A is killed (`kill -9`), the
registration it took still routes calls through node B. A message left through one node lights
the lamp of a phone subscribed on the other (MWI through LISTEN/NOTIFY). The PostgreSQL server is the tests'
own (tests/store/postgres_server.py): a temporary data directory, a free loopback port, run as the
`postgres` user when the tests run as root.
"""

from __future__ import annotations

import re

import pytest

from pbx.store import offline
from tests.e2e.harness import run_pbx_cli
from tests.e2e.test_calls_sipp import sipp, start_pbx  # noqa: F401 - fixtures
from tests.e2e.test_voicemail_deposit import (
    CALLER_BYE,
    DEMO_MAIN,
    MAILBOXES,
    caller_scenario,
    greeting_seconds,
    needs_root,
    pause,
    play,
    tone,
)
from tests.e2e.test_voicemail_email import wait_until
from tests.store import postgres_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(postgres_server.unavailable() is not None, reason=postgres_server.unavailable() or ""),
]


def test_a_registration_taken_by_one_node_routes_calls_on_the_other(start_pbx, sipp, tmp_path):  # noqa: F811
    url = postgres_server.server().url()
    store = f'[store]\nurl = "{url}"\n'
    node_a = start_pbx(extra=store)
    node_b = start_pbx(extra=store)
    for node in (node_a, node_b):
        node.wait_for(r"Store: PostgreSQL at postgresql://pbx@127\.0\.0\.1:\d+/postgres")

    port = sipp.register(node_a, "1002")
    node_b.wait_for(r"Registrations of 1002@default changed on another node: 1 contact\(s\)")
    uas = sipp.uas("uas", "call_uas.xml", "1002", port)
    uac = sipp.uac(node_b, "call_uac.xml", "1002")
    sipp.check(node_b, uac, uas)
    call_id = node_b.ended(200, "normal")

    rows = [c for c in offline.cdrs(url, tmp_path) if c.call_id == call_id]
    assert [(c.caller, c.dialed, c.answered_by) for c in rows] == [("1001", "1002", "1002")]
    listed = run_pbx_cli("registrations", str(node_b.ports["path"]))
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"default\s+1002\s+.*sip:1002@127\.0\.0\.1:{port}", listed.stdout), listed.stdout
    assert "Traceback" not in node_a.process.output + node_b.process.output

    # Node A dies (kill -9): the registration it took still routes calls on node B.
    node_a.process.kill9()
    uas = sipp.uas("uas2", "call_uas.xml", "1002", port)
    uac = sipp.uac(node_b, "call_uac.xml", "1002", name="uac2")
    sipp.check(node_b, uac, uas)


@needs_root
def test_a_message_left_through_one_node_lights_the_lamp_subscribed_on_the_other(start_pbx, sipp, tmp_path):  # noqa: F811
    """Phone 1002 subscribes to its mailbox on node A; 1003 leaves it a message through node B (1002 is not
    registered: the demo dialplan sends the call to voicemail). Node B announces the box (NOTIFY
    pbx_mailboxes), node A counts it again from the shared index and NOTIFYs the phone: Messages-Waiting: yes.
    """
    url = postgres_server.server().url()
    extra = f'[store]\nurl = "{url}"\n\n[mwi]\nmin_expires = 1\n' + MAILBOXES.format(max_messages=10)
    node_a = start_pbx(DEMO_MAIN, extra)
    node_b = start_pbx(DEMO_MAIN, extra)
    csv = sipp.users_csv([("1002", "pass1002")], "subscriber")
    lamp = sipp.start(
        "lamp", "subscribe_mwi_wait.xml", [f"127.0.0.1:{node_a.sip}", "-inf", str(csv)], timeout=60
    )
    wait_until(lambda: lamp.requests("NOTIFY"), 15, "the first NOTIFY (the box is empty)")
    assert "Messages-Waiting: no" in lamp.requests("NOTIFY")[0]

    lead = greeting_seconds() + 0.5 + 1.0
    steps = play("audio.pcap") + pause(lead + 2.0 + 0.5) + CALLER_BYE
    (sipp.directory / "audio.pcap").write_bytes(tone(tmp_path, 2.0, lead))
    scenario = tmp_path / "leave.xml"
    scenario.write_text(caller_scenario(steps))
    caller = sipp.uac(node_b, scenario, "1002", caller="1003", name="leave")
    sipp.check(node_b, caller)
    node_b.wait_for(r"voicemail default/1002: message \S+ saved")
    sipp.check(node_a, lamp)  # it saw Messages-Waiting: yes from node A
    assert "Messages-Waiting: yes" in lamp.requests("NOTIFY")[-1]
    assert "Traceback" not in node_a.process.output + node_b.process.output
