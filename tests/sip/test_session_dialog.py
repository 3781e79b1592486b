"""Both sides of an established INVITE session: re-INVITE and UPDATE with offer/answer, glare (RFC 3261 14,
RFC 3311 5.2), session timers (RFC 4028)."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred

from pbx.sip.errors import SipError
from pbx.sip.message import Request, Response, new_branch
from pbx.sip.parser import parse_message
from pbx.sip.session_events import LOCAL_OFFER, REMOTE_OFFER, STABLE, SessionRequestFailed
from pbx.sip.session_timer import SessionTimerPolicy, negotiate_uas
from pbx.sip.uri import parse_uri
from tests.sip.session_net import ANSWER, OFFER, A, B, Call, Flow

HOLD = b"v=0\r\no=a 1 2 IN IP4 127.0.0.1\r\na=sendonly\r\n"
RESUME = b"v=0\r\no=b 1 2 IN IP4 127.0.0.2\r\na=sendrecv\r\n"


def _finish(call: Call) -> None:
    if not call.uac.ended:
        call.uac.bye()
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_reinvite_both_ways_with_offer_answer() -> None:
    call = Call()
    uac, uas = call.establish()
    results: list[Response] = []
    uac.reinvite(HOLD).addCallback(results.append)
    assert uac.offer_answer == LOCAL_OFFER
    call.net.run()
    assert results[0].status == 200 and results[0].body == ANSWER
    assert ("offer", HOLD) in call.callee.events
    assert uac.offer_answer == STABLE and uas.offer_answer == STABLE
    assert len(call.net.sent(A, "ACK")) == 2
    uas.reinvite(RESUME).addCallback(results.append)
    call.net.run()
    assert results[1].status == 200 and ("offer", RESUME) in call.caller.events
    reinvite = call.net.sent(B, "INVITE")[0]
    assert reinvite.cseq.number == 1 and reinvite.to.tag == uac.dialog.local_tag  # type: ignore[union-attr]
    assert len(call.net.sent(B, "ACK")) == 1
    # A re-INVITE without an offer: the 2xx carries one, the ACK the answer.
    uac.reinvite().addCallback(results.append)
    call.net.run()
    assert results[2].body == OFFER and call.net.sent(A, "ACK")[-1].body == ANSWER
    assert ("answer", ANSWER) in call.callee.events
    assert uac.offer_answer == STABLE and uas.offer_answer == STABLE
    _finish(call)


def test_refused_offer_leaves_session_unchanged() -> None:
    call = Call()
    uac, uas = call.establish()

    def refuse(session: object, body: bytes, content_type: str) -> bytes:
        raise SipError(488)

    call.callee.offer_received = refuse  # type: ignore[method-assign]
    failures: list[int] = []
    uac.reinvite(HOLD).addErrback(lambda f: failures.append(f.value.status))
    call.net.run()
    assert failures == [488] and uac.offer_answer == STABLE and uas.offer_answer == STABLE
    assert not uac.ended and not uas.ended
    _finish(call)


def test_glare_both_reinvite_491_then_retry_in_rfc_ranges() -> None:
    for seed in range(5):
        call = Call(seed_a=seed, seed_b=100 + seed)
        uac, uas = call.establish()
        start = call.net.clock.seconds()
        results: list[tuple[str, int]] = []
        uac.reinvite(HOLD).addCallback(lambda r, out=results: out.append(("a", r.status)))
        uas.reinvite(RESUME).addCallback(lambda r, out=results: out.append(("b", r.status)))
        call.net.run()
        assert len(call.net.sent(A, 491)) == 1 and len(call.net.sent(B, 491)) == 1
        call.net.advance(5)
        assert sorted(results) == [("a", 200), ("b", 200)]
        a_times = [t - start for t in call.net.times(A, "INVITE")[1:]]
        b_times = [t - start for t in call.net.times(B, "INVITE")]
        assert a_times[0] == 0 and b_times[0] == 0
        assert 2.1 <= a_times[1] <= 4.0  # the owner of the Call-ID (the dialog's UAC) waits 2.1-4 s
        assert 0.0 <= b_times[1] <= 2.0  # the other side 0-2 s
        assert (
            round(a_times[1] * 100) == a_times[1] * 100
            or abs(a_times[1] * 100 - round(a_times[1] * 100)) < 1e-6
        )
        assert uac.offer_answer == STABLE and uas.offer_answer == STABLE
        assert len(call.net.sent(A, "INVITE")) == 3 and len(call.net.sent(B, "INVITE")) == 2
        _finish(call)


def test_second_reinvite_while_first_unanswered_gets_500_retry_after() -> None:
    call = Call()
    uac, uas = call.establish()
    pending: Deferred[bytes] = Deferred()
    call.callee.offer_received = lambda s, b, c: pending  # type: ignore[method-assign]
    uac.reinvite(HOLD)
    call.net.run()
    assert uas.offer_answer == REMOTE_OFFER
    first = [
        m for _t, s, _d, m in call.net.log if s == A and isinstance(m, Request) and m.method == "INVITE"
    ][-1]
    second = first.copy()
    second.headers.set("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={new_branch()};rport")
    second.headers.set("CSeq", f"{first.cseq.number + 1} INVITE")
    call.b.stack.message_received(parse_message(second.to_bytes()), Flow(call.net, B, A))
    call.net.run()
    refused = call.net.sent(B, 500)[0]
    retry_after = refused.headers.get("Retry-After")
    assert retry_after is not None and 0 <= int(retry_after) <= 10
    pending.callback(ANSWER)
    call.net.run()
    assert uac.offer_answer == STABLE and uas.offer_answer == STABLE
    _finish(call)


def test_update_glare_491_then_both_succeed() -> None:
    call = Call()
    uac, uas = call.establish()
    results: list[tuple[str, int]] = []
    uac.update(HOLD).addCallback(lambda r: results.append(("a", r.status)))
    uas.update(RESUME).addCallback(lambda r: results.append(("b", r.status)))
    call.net.run()
    assert len(call.net.sent(A, 491)) == 1 and len(call.net.sent(B, 491)) == 1
    call.net.advance(5)
    assert sorted(results) == [("a", 200), ("b", 200)]
    assert ("offer", HOLD) in call.callee.events and ("offer", RESUME) in call.caller.events
    assert uac.offer_answer == STABLE and uas.offer_answer == STABLE
    _finish(call)


def test_update_without_offer_and_update_during_our_reinvite() -> None:
    call = Call()
    uac, uas = call.establish()
    got: list[int] = []
    uas.update().addCallback(lambda r: got.append(r.status))
    call.net.run()
    assert got == [200]
    call.net.drop = lambda m, s, d: isinstance(m, Request) and m.method == "INVITE" and s == A
    uac.reinvite(HOLD)  # our offer is pending ...
    call.net.run()
    uas.update(RESUME).addErrback(lambda f: got.append(f.value.status))
    call.net.run()
    assert len(call.net.sent(A, 491)) == 1  # ... so an UPDATE with an offer gets 491 (RFC 3311 5.2)
    assert uas.offer_answer == STABLE
    call.net.drop = None
    call.net.advance(40)
    _finish(call)


def test_session_timer_refreshed_by_update_at_half_interval() -> None:
    policy = SessionTimerPolicy(interval=180)
    call = Call(uas_options={"policy": policy}, uac_options={"policy": policy})
    uac, uas = call.establish()
    ok = call.net.sent(B, 200)[0]
    assert ok.headers.get("Session-Expires") == "180;refresher=uac" and ok.headers.get("Require") == "timer"
    call.net.advance(500)
    assert call.net.times(A, "UPDATE") == [90, 180, 270, 360, 450]
    update = call.net.sent(A, "UPDATE")[0]
    assert update.headers.get("Session-Expires") == "180;refresher=uac" and update.body == b""
    assert not uac.ended and not uas.ended
    assert call.net.sent(B, "BYE") == [] and call.net.sent(A, "BYE") == []
    _finish(call)


def test_session_timer_refreshed_by_reinvite_when_update_not_allowed() -> None:
    policy = SessionTimerPolicy(interval=180)
    call = Call(
        uas_options={"policy": policy, "allow": "INVITE, ACK, BYE, CANCEL"}, uac_options={"policy": policy}
    )
    _uac, _uas = call.establish()
    call.net.advance(200)
    refreshes = call.net.sent(A, "INVITE")[1:]
    assert [t for t in call.net.times(A, "INVITE")][1:] == [90, 180]
    assert refreshes[0].body == OFFER  # our current description again
    assert refreshes[0].headers.get("Session-Expires") == "180;refresher=uac"
    assert len(call.net.sent(A, "ACK")) == 3
    _finish(call)


def test_no_refresh_bye_before_expiry() -> None:
    policy = SessionTimerPolicy(interval=180)
    call = Call(uas_options={"policy": policy}, uac_options={"policy": policy})
    uac, _uas = call.establish()
    call.net.drop = lambda m, s, d: s == A  # the refresher goes silent
    call.net.advance(147.9)
    assert call.net.sent(B, "BYE") == []
    call.net.advance(0.2)  # 180 - min(32, 180 / 3) = 148 s
    assert call.net.times(B, "BYE") == [148]
    assert call.callee.events[-1] == ("terminated", "session expired")
    assert uac.ended  # its refresh at 90 s timed out at 122 s: it ended the dialog too
    assert call.caller.events[-1] == ("terminated", "dialog gone")
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_reinvite_request_failures() -> None:
    call = Call()
    uac, _uas = call.establish()
    try:
        uac.reinvite(HOLD)
        uac.reinvite(HOLD)
    except ValueError:
        pass
    else:
        raise AssertionError("a second re-INVITE must be refused")
    call.net.run()
    uac.bye()
    failures: list[int] = []
    uac.reinvite(HOLD).addErrback(lambda f: failures.append(f.value.status))
    assert failures == [481]
    assert isinstance(SessionRequestFailed(481), Exception)
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_uas_refresher_when_the_uac_asks_for_it() -> None:
    """INVITE with `Session-Expires: 180;refresher=uas`: the UAS refreshes (by UPDATE) every 90 s."""
    policy = SessionTimerPolicy(interval=180)
    call = Call(uas_options={"policy": policy}, uac_options={"policy": policy})

    def sender(request: Request, tu: object, transport: str, host: str, port: int) -> object:
        if request.method == "INVITE" and request.to.tag is None:
            request.headers.set("Session-Expires", "180;refresher=uas")
        return call.a.stack.send_request(request, tu, transport, host, port)  # type: ignore[arg-type]

    call.uac._sender = sender
    uac, uas = call.establish()
    assert call.net.sent(B, 200)[0].headers.get("Session-Expires") == "180;refresher=uas"
    assert call.net.sent(B, 200)[0].headers.get("Require") is None
    assert uas.session_timer is not None and uas.session_timer.we_refresh
    assert uac.session_timer is not None and not uac.session_timer.we_refresh
    call.net.advance(200)
    assert call.net.times(B, "UPDATE") == [90, 180]
    assert call.net.sent(B, "UPDATE")[0].headers.get("Session-Expires") == "180;refresher=uac"
    assert not uac.ended and not uas.ended
    _finish(call)


def test_offers_crossing_reinvite_during_our_offer_in_2xx_and_update_during_theirs() -> None:
    call = Call(body=b"")
    call.net.drop = lambda m, s, d: isinstance(m, Request) and m.method == "ACK"  # our offer stays unanswered
    uac, uas = call.establish()
    assert uas.offer_answer == LOCAL_OFFER
    call.net.drop = None
    failures: list[int] = []
    uac.reinvite(HOLD).addErrback(lambda f: failures.append(f.value.status))
    call.net.run()
    assert len(call.net.sent(B, 491)) == 1  # an offer while ours (in the 2xx) is unanswered: 491
    call.net.advance(5)  # the ACK (retransmitted 2xx re-ACKed) arrives; the retry then succeeds
    assert failures == [] and uac.offer_answer == STABLE and uas.offer_answer == STABLE
    # An UPDATE with an offer while the peer's offer to us is still unanswered: 500 with Retry-After.
    pending: Deferred[bytes] = Deferred()
    call.callee.offer_received = lambda s, b, c: pending  # type: ignore[method-assign]
    uac.update(HOLD)
    call.net.run()
    first = [
        m for _t, s, _d, m in call.net.log if s == A and isinstance(m, Request) and m.method == "UPDATE"
    ][-1]
    second = first.copy()
    second.headers.set("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={new_branch()};rport")
    second.headers.set("CSeq", f"{first.cseq.number + 1} UPDATE")
    call.b.stack.message_received(parse_message(second.to_bytes()), Flow(call.net, B, A))
    call.net.run()
    refused = call.net.sent(B, 500)[0]
    assert refused.cseq.method == "UPDATE" and refused.headers.get("Retry-After") is not None
    pending.callback(ANSWER)
    call.net.run()
    assert uac.offer_answer == STABLE and uas.offer_answer == STABLE
    _finish(call)


def test_bye_while_a_reinvite_is_pending_both_ways() -> None:
    # The peer hangs up while we are still answering its re-INVITE: 487 to the re-INVITE, 200 to the BYE.
    call = Call()
    uac, _uas = call.establish()
    pending: Deferred[bytes] = Deferred()
    call.callee.offer_received = lambda s, b, c: pending  # type: ignore[method-assign]
    failures: list[int] = []
    uac.reinvite(HOLD).addErrback(lambda f: failures.append(f.value.status))
    call.net.run()
    uac.bye()
    call.net.run()
    assert failures == [481]  # ended by our own BYE
    assert call.net.sent(B, 487)[0].cseq.method == "INVITE"
    assert call.callee.events[-1] == ("terminated", "bye received")
    pending.callback(ANSWER)  # too late: nothing more is sent
    call.net.run()
    assert call.net.sent(B, 200)[-1].cseq.method == "BYE"
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_2xx_to_our_reinvite_after_our_bye_is_still_acked() -> None:
    call = Call()
    uac, uas = call.establish()
    call.net.drop = lambda m, s, d: isinstance(m, Request) and m.method == "BYE"  # the peer never hears it
    uac.reinvite(HOLD).addErrback(lambda f: None)
    uac.bye()
    call.net.run()
    acks = call.net.sent(A, "ACK")
    assert len(acks) == 2 and acks[1].cseq.number == call.net.sent(A, "INVITE")[-1].cseq.number
    assert uac.ended and not uas.ended
    call.net.drop = None
    uas.bye()
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_negotiate_uas_rules() -> None:
    """RFC 4028 9 in isolation: 422 only to a UAC that supports timer; never lengthened; refresher kept."""

    def invite(**headers: str) -> Request:
        request = Request("INVITE", parse_uri("sip:b@127.0.0.2"))
        for name, value in headers.items():
            request.headers.add(name.replace("_", "-"), value)
        return request

    policy = SessionTimerPolicy(interval=1800, min_se=600)
    with pytest.raises(SipError) as refused:
        negotiate_uas(invite(Supported="timer", Session_Expires="300"), policy)
    assert refused.value.status == 422 and ("Min-SE", "600") in refused.value.headers
    timer, headers = negotiate_uas(invite(Session_Expires="300"), policy)  # inserted by a proxy
    assert timer is not None and timer.interval == 300 and timer.we_refresh
    assert headers == [("Session-Expires", "300;refresher=uas")]
    timer, headers = negotiate_uas(invite(Supported="timer", Session_Expires="7200;refresher=uas"), policy)
    assert timer is not None and timer.interval == 1800 and timer.we_refresh  # shortened, refresher kept
    assert negotiate_uas(invite(), policy) == (None, [])
    timer, headers = negotiate_uas(invite(Supported="timer", Min_SE="2000"), policy)
    assert timer is not None and timer.interval == 2000 and not timer.we_refresh
    assert headers == [("Session-Expires", "2000;refresher=uac"), ("Require", "timer")]
    with pytest.raises(SipError):
        negotiate_uas(invite(Supported="timer", Session_Expires="abc"), policy)
