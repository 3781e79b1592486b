"""`pbx trace CALL-ID` on a call that went through the IVR, a dial and voicemail (issue 16, item 4).

The PBX (its own metrics listener, a bearer token) routes 500 to `ivr main`; the IVR's menu takes the key
the SIPp caller presses by SIP INFO (`ivr_uac_info.xml`: "1"), dials 1002 (a SIPp UAS that rings and never
answers) for 2 s, then sends the caller to mailbox 1002, until the caller hangs up. `pbx trace` must print
a ladder with each step and the template line that chose it (`main.j2:2 ivr main`, `ivr/main.j2:4 dial
1002`, `ivr/main.j2:5 voicemail 1002`), the SIP messages of both legs, the ring timeout and the media;
`--json` gives the same as JSON; an unknown call exits 2 and a PBX that is not there exits 1.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.harness import free_port, run_pbx_cli
from tests.e2e.test_calls_sipp import sipp, start_pbx  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e

TOKEN = "e2e-trace-token-0123456789"
MAIN = """{% if call.dialed == "500" %}
ivr main
{% else %}
hangup 404
{% endif %}
"""
IVR = """{% if digits is none %}menu prompt=silence:1 maxdigits=1 timeout=5 retries=1
{% elif digits == "1" %}
dial 1002 timeout=2
voicemail 1002
{% else %}hangup
{% endif %}
"""
EXTRA = """[metrics]
listen = "127.0.0.1:{port}"
token = "{token}"

[voicemail]
min_message_seconds = 1
silence_seconds = 30

[tenants.default.mailboxes.1002]
pin = "4321"

"""


def pbx_trace(*args: str) -> subprocess.CompletedProcess:
    return run_pbx_cli("trace", *args)


def test_trace_of_an_ivr_dial_voicemail_call(start_pbx, sipp, tmp_path):  # noqa: F811
    port = free_port(udp=False)
    pbx = start_pbx(MAIN, extra=EXTRA.format(port=port, token=TOKEN))
    (pbx.directory / "dialplans" / "default" / "ivr").mkdir(exist_ok=True)
    (pbx.directory / "dialplans" / "default" / "ivr" / "main.j2").write_text(IVR)
    reg_port = sipp.register(pbx, "1002")
    uas = sipp.uas("uas", "call_uas_noanswer.xml", "1002", reg_port)
    uac = sipp.uac(pbx, "ivr_uac_info.xml", "500", caller="1001", extra_fields=["1"])
    sipp.check(pbx, uac, uas)
    call_id = pbx.ended(200)
    url = f"http://127.0.0.1:{port}"

    done = pbx_trace(call_id, "--url", url, "--token", TOKEN, "--width", "22")
    assert done.returncode == 0, done.stderr
    ladder = done.stdout
    (tmp_path / "ladder.txt").write_text(ladder)  # an artifact to look at
    lines = ladder.splitlines()
    assert lines[0].startswith(f"Call {call_id}  tenant default  1001 -> 500  ended: "), ladder
    assert "caller 1001" in lines[1] and "PBX" in lines[1] and "leg1 1002" in lines[1], ladder
    steps = [line for line in lines if "* " in line]
    expected = [r"main.j2:2  ivr main", "ivr/main.j2:1  menu", "ivr/main.j2:3  dial 1002 timeout=2",
                "ivr/main.j2:4  voicemail 1002"]  # fmt: skip
    for step, text in zip(steps, expected, strict=False):
        assert text in step, (text, ladder)
    assert len(steps) == len(expected), ladder
    assert any("-INVITE-" in line and ">|" in line for line in lines), ladder  # caller -> PBX, PBX -> leg
    assert any("CANCEL" in line for line in lines), ladder  # the ring timeout cancels leg 1
    assert any("ring timeout expired" in line for line in lines), ladder
    assert any("INFO" in line for line in lines), ladder  # the key pressed
    assert any("~ side a: latched" in line for line in lines), ladder
    assert "BYE" in ladder and "200 OK" in ladder, ladder

    raw = pbx_trace(call_id, "--url", url, "--token", TOKEN, "--json")
    assert raw.returncode == 0, raw.stderr
    trace = json.loads(raw.stdout)
    assert trace["call_id"] == call_id and trace["tenant"] == "default" and trace["status"] == 200
    actions = [(e["template"], e["lineno"], e["text"]) for e in trace["events"] if e["kind"] == "action"]
    assert [(t.rsplit("/", 2)[-1], line, text.split()[0]) for t, line, text in actions] == [
        ("main.j2", 2, "ivr"),
        ("main.j2", 1, "menu"),
        ("main.j2", 3, "dial"),
        ("main.j2", 4, "voicemail"),
    ], actions
    assert {p["id"] for p in trace["parties"]} == {"caller", "leg1"}

    listed = pbx_trace("--url", url, "--token", TOKEN)
    assert listed.returncode == 0 and call_id[:44] in listed.stdout, listed

    unknown = pbx_trace("no-such-call@nowhere", "--url", url, "--token", TOKEN)
    assert unknown.returncode == 2 and "no trace of call" in unknown.stderr, unknown
    refused = pbx_trace(call_id, "--url", url, "--token", "wrong-token-wrong-token")
    assert refused.returncode == 1 and "401" in refused.stderr, refused
    down = pbx_trace(call_id, "--url", f"http://127.0.0.1:{free_port(udp=False)}")
    assert down.returncode == 1 and "cannot reach the PBX" in down.stderr, down
