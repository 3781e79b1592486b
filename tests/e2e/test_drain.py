"""SIGTERM drains a PBX node (issue 17, item 5): with `[calls] drain_timeout`, a stopping PBX answers OPTIONS
(a front proxy's health check) and new INVITEs with 503, lets the call that is up finish, then exits."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.harness import free_port, options_request, udp_exchange
from tests.e2e.test_calls_sipp import SCENARIOS, sipp, start_pbx  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e


def test_sigterm_drains_calls_then_exits(start_pbx, sipp, tmp_path):  # noqa: F811
    pbx = start_pbx(extra="[calls]\ndrain_timeout = 60\n")
    port = sipp.register(pbx, "1002")
    # The caller hangs up 6 s after the answer: the PBX is told to stop meanwhile.
    scenario = tmp_path / "call_uac_long.xml"
    text = (SCENARIOS / "call_uac.xml").read_text()
    assert text.count('<pause milliseconds="200"/>') == 1
    scenario.write_text(text.replace('<pause milliseconds="200"/>', '<pause milliseconds="6000"/>'))
    uas = sipp.uas("uas", "call_uas.xml", "1002", port)
    csv = sipp.users_csv([("1001", "pass1001", "1002")], "long_users")
    uac = sipp.start("uac", scenario, [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=30)
    # The PBX acknowledged the callee's 200 (an ACK to the callee's contact, not the caller's ACK of the 407
    # to the PBX's address): the call is up.
    pbx.wait_for(rf"ACK sip:1002@127\.0\.0\.1:{port}[ ;]")

    pbx.process.proc.send_signal(signal.SIGTERM)
    pbx.wait_for(r"Draining: no new calls; waiting up to 60 s for 1 call\(s\) to end")
    probe_port = free_port()
    answer = udp_exchange("127.0.0.1", pbx.sip, options_request("127.0.0.1", pbx.sip, "UDP", probe_port), 5)
    assert answer is not None and answer.startswith(b"SIP/2.0 503 "), answer
    assert b"Retry-After: 60" in answer

    sipp.check(pbx, uac, uas)  # the call ended normally with the caller's BYE
    assert pbx.process.proc.wait(timeout=20) in (0, -signal.SIGTERM)  # twistd exits by the signal it got
    pbx.wait_for(r"Call \S+ ended: normal \(status 200,")
    assert "Drain time is up" not in pbx.process.output
    assert "Traceback" not in pbx.process.output
