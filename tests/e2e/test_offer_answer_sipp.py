"""Offer/answer holes (RFC 3261 13.2.1, RFC 3264) shown with SIPp against a live `twistd pbx`:

- an INVITE without SDP to the demo's auto-attendant (500) gets a 200 with the PBX's offer (PCMU, PCMA,
  telephone-event at its relay); the ACK brings the answer and the IVR runs until the caller's BYE; an ACK
  without an answer makes the PBX hang up with a BYE;
- a callee that answers 200 without SDP is ACKed and BYEd by the PBX, and the caller is never answered
  (480: its only target failed);
- a bad offer (a port of 99999 or `abc`, a `c=` that is not an address, a line that is not SDP, a
  Content-Type that is not application/sdp) to the auto-attendant or to an extension gets 400 or 488, with a
  reason phrase of printable ASCII that does not echo the offer, and no leg rings.

Every test checks the PBX's log for a traceback (`Traceback`, `Unhandled`). The PBX and the SIPp processes
come from `tests/e2e/test_calls_sipp.py` (free ports, bounded runs, waits on events with timeouts).
"""

from __future__ import annotations

import re
import socket

import pytest

from tests.e2e.harness import REPO
from tests.e2e.test_calls_sipp import (  # noqa: F401 (fixtures)
    SCENARIOS,
    CallPbx,
    body,
    header,
    queued,
    sipp,
    start_pbx,
)

pytestmark = pytest.mark.e2e

DIAL_1002 = "dial 1002 timeout=10\nhangup\n"
IVR_TEMPLATE = (REPO / "dialplans" / "default" / "ivr" / "main.j2").read_text()


def with_ivr(pbx: CallPbx) -> CallPbx:
    """Install the demo's auto-attendant (ivr/main.j2) in the test PBX's dialplans."""
    path = pbx.directory / "dialplans" / "default" / "ivr" / "main.j2"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(IVR_TEMPLATE)
    return pbx


def assert_no_traceback(pbx: CallPbx) -> None:
    output = pbx.process.output
    for word in ("Traceback", "Unhandled"):
        assert word not in output, f"{word} in the PBX log:\n{pbx.tail()}"


def test_late_offer_to_the_auto_attendant_gets_an_offer_and_the_ack_answer(start_pbx, sipp):  # noqa: F811
    pbx = with_ivr(start_pbx())
    uac = sipp.uac(pbx, "oa_uac_late_offer.xml", "500")
    sipp.check(pbx, uac)
    (invite,) = [m for m in uac.messages("sent") if m.startswith("INVITE ") and "Proxy-Authorization" in m]
    assert body(invite).strip() == "", invite
    (ok,) = uac.responses(200)[:1]
    offer = body(ok)
    assert re.search(r"^m=audio \d+ RTP/AVP 0 8 101\r$", offer, flags=re.MULTILINE), offer
    assert "a=rtpmap:8 PCMA/8000" in offer and "a=rtpmap:0 PCMU/8000" in offer
    call_id = pbx.ended(200, "normal")
    pbx.wait_for(rf"Call {re.escape(call_id)} ended: .*1001@default -> 500")
    assert_no_traceback(pbx)


def test_late_offer_ack_without_answer_is_hung_up(start_pbx, sipp):  # noqa: F811
    pbx = with_ivr(start_pbx())
    uac = sipp.uac(pbx, "oa_uac_late_offer_no_answer.xml", "500")
    sipp.check(pbx, uac)
    assert len(uac.requests("BYE")) >= 1
    pbx.wait_for(r"the ACK has no usable SDP answer")
    pbx.ended(200, "pbx")
    assert_no_traceback(pbx)


def test_callee_200_without_sdp_is_acked_and_byed_and_the_caller_not_answered(start_pbx, sipp):  # noqa: F811
    pbx = start_pbx(DIAL_1002)
    port = sipp.register(pbx, "1002")
    uas = sipp.uas("uas", "oa_uas_200_no_sdp.xml", "1002", port)
    uac = sipp.uac(pbx, "oa_uac_unanswered.xml", "1002")
    sipp.check(pbx, uac, uas)
    assert uac.responses(200) == []  # never a 200 (without SDP) to the caller
    assert len(uas.requests("ACK")) >= 1 and len(uas.requests("BYE")) == 1
    call_id = pbx.ended(480)
    cdr = pbx.wait_cdr(call_id)
    assert cdr["answer"] is None and "=488" in cdr["legs"], cdr
    assert_no_traceback(pbx)


BAD_OFFERS = {
    "port 99999": ("application/sdp", "c=IN IP4 127.0.0.1", "m=audio 99999 RTP/AVP 0"),
    "port abc": ("application/sdp", "c=IN IP4 127.0.0.1", "m=audio abc RTP/AVP 0"),
    "c= not an address": ("application/sdp", "c=IN IP4 999.999.1.1", "m=audio 40000 RTP/AVP 0"),
    "not sdp": ("application/sdp", "Hello there, this is no SDP", "m=audio 40000 RTP/AVP 0"),
    "content type": ("text/plain", "c=IN IP4 127.0.0.1", "m=audio 40000 RTP/AVP 0"),
}


@pytest.mark.parametrize("dialed", ["500", "1002"])
def test_bad_offers_get_400_or_488(start_pbx, sipp, dialed):  # noqa: F811
    pbx = with_ivr(start_pbx())
    port = sipp.register(pbx, "1002")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee:
        callee.bind(("127.0.0.1", port))  # 1002's registered contact: any INVITE would land here
        for n, (name, fields) in enumerate(BAD_OFFERS.items()):
            uac = sipp.uac(pbx, "oa_uac_bad_offer.xml", dialed, name=f"uac{n}", extra_fields=fields)
            sipp.check(pbx, uac)
            (final,) = [m for m in uac.messages("received") if re.match(r"SIP/2\.0 (400|488) ", m)]
            status_line = final.split("\r\n", 1)[0]
            assert re.fullmatch(r"SIP/2\.0 (400|488) [ -~]{1,80}", status_line), (name, status_line)
            for echoed in ("99999", "abc", "999.999", "Hello", "text/plain"):
                assert echoed not in status_line, (name, status_line)
            if name == "content type":
                assert header(final, "Accept") == ["application/sdp"], final
        leaked = queued(callee)
    assert not leaked, f"1002 got a request: {leaked!r}"
    pbx.wait_for(r"Call \S+ ended: .*\(status (400|488),", count=len(BAD_OFFERS))
    assert_no_traceback(pbx)


@pytest.mark.parametrize(("streams", "status"), [(1000, 488), (1500, 413)])
def test_huge_offers_are_refused_and_never_forwarded(start_pbx, sipp, tmp_path, streams, status):  # noqa: F811
    """Thousands of m= lines: 488 (too many streams), or 413 once the body is over the SDP size limit."""
    pbx = start_pbx()
    port = sipp.register(pbx, "1002")
    media = "\n".join(f"m=audio {10000 + 2 * i} RTP/AVP 0" for i in range(streams))
    scenario = (SCENARIOS / "oa_uac_bad_offer.xml").read_text()
    at = scenario.rindex("[field6]")  # only in the INVITE with credentials: SIPp loads ~32 KB of scenario
    scenario = scenario[:at] + media + scenario[at + len("[field6]") :]
    scenario = scenario.replace('<recv response="488"/>', f'<recv response="{status}"/>')
    path = tmp_path / f"oa_uac_huge_offer_{streams}.xml"
    path.write_text(scenario)
    fields = ("application/sdp", "c=IN IP4 127.0.0.1", "m=audio 40000 RTP/AVP 0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee:
        callee.bind(("127.0.0.1", port))
        uac = sipp.uac(pbx, path, "1002", extra_fields=fields)
        leaked = queued(callee)
    assert not leaked, f"1002 got a request: {leaked!r}"
    sipp.check(pbx, uac)
    assert len(uac.responses(status)) == 1
    pbx.ended(status)
    assert_no_traceback(pbx)
