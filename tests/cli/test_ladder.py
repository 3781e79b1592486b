"""The ladder printer of `pbx trace` (pbx.cli.ladder): columns per party, arrows, the template lines."""

from __future__ import annotations

from pbx.cli.ladder import render_ladder, render_list

TRACE = {
    "call_id": "abc@host",
    "tenant": "default",
    "caller": "1001",
    "dialed": "1002",
    "started_at": 100.0,
    "ended_at": 103.0,
    "cause": "normal",
    "status": 200,
    "active": False,
    "parties": [
        {"id": "caller", "label": "1001", "call_id": "abc@host"},
        {"id": "leg1", "label": "1002", "call_id": "leg@pbx"},
    ],
    "events": [
        {"t": 100.0, "kind": "sip", "party": "caller", "dir": "in", "peer": "UDP 10.0.0.1:5060",
         "line": "INVITE sip:1002@pbx SIP/2.0", "headers": {"cseq": "2 INVITE"}, "body": "v=0\nm=audio 4000"},
        {"t": 100.01, "kind": "action", "template": "main.j2", "lineno": 27, "text": "dial 1002 timeout=20"},
        {"t": 100.02, "kind": "sip", "party": "leg1", "dir": "out", "peer": "UDP 10.0.0.2:5062",
         "line": "INVITE sip:1002@10.0.0.2:5062 SIP/2.0", "headers": {}},
        {"t": 100.5, "kind": "sip", "party": "leg1", "dir": "in", "peer": "UDP 10.0.0.2:5062",
         "line": "SIP/2.0 180 Ringing", "headers": {}},
        {"t": 100.51, "kind": "sip", "party": "caller", "dir": "out", "peer": "UDP 10.0.0.1:5060",
         "line": "SIP/2.0 180 Ringing", "headers": {}},
        {"t": 102.0, "kind": "timer", "text": "ring timeout expired"},
        {"t": 103.0, "kind": "media", "text": "side a: latched 10.0.0.1:4000"},
    ],
    "dropped_events": 2,
}  # fmt: skip


def test_columns_arrows_and_steps() -> None:
    lines = render_ladder(TRACE, width=20).splitlines()
    assert lines[0] == "Call abc@host  tenant default  1001 -> 1002  ended: normal (status 200)"
    head = lines[1]
    assert head.startswith("time")
    assert head.index("caller 1001") < head.index("PBX") < head.index("leg1 1002")
    # Column centres: 10 + 20 * i + 10.
    invite, action, out_invite, ringing_in, ringing_out, timer, media, dropped = lines[3:]
    assert invite.startswith("+0.000")
    assert invite[20] == "|" and invite[40] == "|" and invite[39] == ">" and "INVITE" in invite[21:39]
    assert invite.endswith("UDP 10.0.0.1:5060  INVITE sip:1002@pbx SIP/2.0")
    assert action[40:] == "* main.j2:27  dial 1002 timeout=20"
    assert out_invite[40] == "|" and out_invite[59] == ">" and out_invite[60] == "|"
    assert ringing_in[41] == "<" and "180 Ringing" in ringing_in[41:60]
    assert ringing_out[21] == "<" and ringing_out.startswith("+0.510")
    assert timer[40:] == "! ring timeout expired"
    assert media[40:].startswith("~ side a")
    assert dropped == "(2 more events were not kept: the trace reached its cap)"


def test_headers_and_bodies_on_request() -> None:
    text = render_ladder(TRACE, headers=True)
    assert "cseq: 2 INVITE" in text and "m=audio 4000" in text
    assert "cseq" not in render_ladder(TRACE)


def test_a_long_label_is_cut_to_its_arrow_and_an_active_call_says_so() -> None:
    trace = dict(TRACE, active=True, events=[dict(TRACE["events"][3], line="SIP/2.0 487 Request Terminated")])
    lines = render_ladder(trace, width=14).splitlines()
    assert lines[0].endswith("(in progress)")
    assert "487 Re" in lines[3] and len(lines[3].split("  ")[0]) <= 10 + 3 * 14


def test_the_list() -> None:
    text = render_list([dict(TRACE, active=True), TRACE])
    lines = text.splitlines()
    assert lines[0].split() == ["call-id", "tenant", "caller", "dialed", "status", "cause"]
    assert lines[1].split()[4] == "active" and lines[2].split()[4] == "200"
    assert lines[-1] == "2 trace(s)"
