"""The answering INVITE session over real stacks on an in-memory network with a Clock (RFC 3261 13.3, 9.2)."""

from __future__ import annotations

from pbx.sip.dialog import CONFIRMED, EARLY
from pbx.sip.message import Request, Response
from pbx.sip.session_events import LOCAL_OFFER, STABLE
from tests.sip.session_net import ANSWER, OFFER, A, B, Call


def test_provisional_makes_early_dialog_then_200_retransmitted_until_ack() -> None:
    call = Call()
    net = call.net
    net.drop = lambda m, s, d: isinstance(m, Request) and m.method == "ACK"  # lose every ACK at first
    call.uac.start()
    net.run()
    uas = call.uas
    assert uas is not None
    uas.provisional(180)
    net.run()
    ringing = net.sent(B, 180)[0]
    assert isinstance(ringing, Response) and ringing.to.tag == uas.local_tag
    assert uas.dialog is not None and uas.dialog.state == EARLY
    assert call.b.stack.dialogs.usage_of(uas.dialog) is uas
    assert call.caller.names() == ["provisional"]
    uas.answer(ANSWER)
    net.run()
    assert uas.dialog.state == CONFIRMED
    ok = net.sent(B, 200)[0]
    assert ok.headers.get("Contact") == "<sip:pbx@127.0.0.2:5060>" and ok.body == ANSWER
    assert ok.to.tag == uas.local_tag
    net.advance(0.5 + 1 + 2 - 0.01)  # retransmitted at T1, 2T1 (1.5 s), 4T1 (3.5 s)
    assert net.times(B, 200) == [0, 0.5, 1.5]
    net.drop = None
    net.advance(0.02)  # the 2xx at 3.5 s is ACKed
    assert net.times(B, 200) == [0, 0.5, 1.5, 3.5]
    net.advance(10)
    assert len(net.times(B, 200)) == 4  # no more after the ACK
    assert call.callee.names() == ["confirmed"]
    assert call.caller.names() == ["provisional", "answered", "confirmed"]
    call.uac.bye()
    net.run()
    assert len(net.sent(B, 200)) == 5  # the 200 to the BYE
    assert call.callee.events[-1] == ("terminated", "bye received")
    assert call.caller.events[-1] == ("terminated", "bye sent")
    assert len(call.b.stack.dialogs) == 0 and len(call.a.stack.dialogs) == 0
    call.quiesce()
    assert net.clock.getDelayedCalls() == []


def test_no_ack_bye_after_64_t1() -> None:
    call = Call()
    net = call.net
    net.drop = lambda m, s, d: isinstance(m, Request) and m.method == "ACK"
    call.establish()
    net.advance(31.9)
    assert net.sent(B, "BYE") == []
    net.advance(0.2)
    assert len(net.sent(B, "BYE")) == 1
    assert call.callee.events[-1] == ("terminated", "no ACK")
    assert call.caller.events[-1] == ("terminated", "bye received")
    call.quiesce()
    assert net.clock.getDelayedCalls() == []


def test_late_offer_answer_in_ack() -> None:
    call = Call(body=b"")
    uac, uas = call.establish()
    ok = call.net.sent(B, 200)[0]
    assert ok.body == OFFER  # our offer in the 2xx
    assert ("offer", OFFER) in call.caller.events  # the caller answered it ...
    ack = call.net.sent(A, "ACK")[0]
    assert ack.body == ANSWER  # ... in the ACK
    assert call.callee.events == [("answer", ANSWER), ("confirmed", None)]
    assert uas.offer_answer == STABLE and uac.offer_answer == STABLE
    uas.bye()
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_ack_without_answer_to_our_offer_ends_the_session() -> None:
    call = Call(body=b"")
    call.caller.answer = b""  # the caller cannot answer: ACK without body, then BYE
    call.establish()
    assert call.callee.events[-1][0] == "terminated"
    assert call.uas is not None and call.uas.ended
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_reject_after_ringing_same_tag() -> None:
    call = Call()
    call.uac.start()
    call.net.run()
    uas = call.uas
    assert uas is not None
    uas.provisional(180)
    uas.reject(486)
    call.net.run()
    busy = call.net.sent(B, 486)[0]
    assert busy.to.tag == uas.local_tag
    assert call.callee.events == [("terminated", "rejected")]
    assert call.caller.events == [("provisional", 180), ("failed", 486), ("terminated", "failed")]
    assert len(call.b.stack.dialogs) == 0
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_cancel_gets_487() -> None:
    call = Call()
    call.uac.start()
    call.net.run()
    assert call.uas is not None
    call.uas.provisional(180)
    call.net.run()
    call.uac.cancel()
    call.net.run()
    assert len(call.net.sent(A, "CANCEL")) == 1
    assert call.net.sent(B, 487)
    assert call.callee.events == [("cancelled", None), ("terminated", "cancelled")]
    assert call.caller.events[-2:] == [("failed", 487), ("terminated", "cancelled")]
    assert len(call.acceptor) == 0
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_session_interval_too_small_422_then_retry_with_min_se() -> None:
    from pbx.sip.session_timer import SessionTimerPolicy

    call = Call(
        uas_options={"policy": SessionTimerPolicy(interval=1800, min_se=600)},
        uac_options={"policy": SessionTimerPolicy(interval=300, min_se=90)},
    )
    uac, uas = call.establish()
    refused = call.net.sent(B, 422)[0]
    assert refused.headers.get("Min-SE") == "600"
    invites = call.net.sent(A, "INVITE")
    assert [i.headers.get("Session-Expires") for i in invites] == ["300", "600"]
    assert invites[1].cseq.number == 2 and invites[1].headers.get("Min-SE") == "600"
    ok = call.net.sent(B, 200)[0]
    assert ok.headers.get("Session-Expires") == "600;refresher=uac" and ok.headers.get("Require") == "timer"
    assert uac.session_timer is not None and uac.session_timer.we_refresh
    assert uas.session_timer is not None and not uas.session_timer.we_refresh
    uac.bye()
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_bye_while_our_offer_in_2xx_pending() -> None:
    call = Call(body=b"")
    call.net.drop = lambda m, s, d: isinstance(m, Request) and m.method == "ACK"
    uac, uas = call.establish()
    assert uas.offer_answer == LOCAL_OFFER
    uac.bye()
    call.net.run()
    assert call.callee.events[-1] == ("terminated", "bye received")
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_in_dialog_info_goes_to_listener_and_options_answered() -> None:
    call = Call()
    uac, uas = call.establish()
    call.callee.reply_status = 200
    got = []
    uac.request("INFO", b"Signal=1\r\n", "application/dtmf-relay").addCallback(got.append)
    call.net.run()
    assert got[0].status == 200 and ("request", "INFO") in call.callee.events
    call.callee.reply_status = 405
    uac.request("MESSAGE", b"hi", "text/plain").addErrback(lambda f: got.append(f.value.status))
    call.net.run()
    assert got[1] == 405
    uas.bye()
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_providers_verify() -> None:
    from zope.interface.verify import verifyObject

    from pbx.sip.interfaces import IDialogUsage, ITransactionUser
    from pbx.sip.session_events import ISessionListener, SessionListener

    call = Call()
    uac, uas = call.establish()
    assert verifyObject(IDialogUsage, uac) and verifyObject(IDialogUsage, uas)
    assert verifyObject(ITransactionUser, call.acceptor)
    assert verifyObject(ISessionListener, SessionListener())
    uac.bye()
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_acceptor_answers_500_when_the_application_fails() -> None:
    call = Call()

    def broken(session: object) -> None:
        raise RuntimeError("no application")

    call.acceptor._on_session = broken  # type: ignore[assignment]
    call.uac.start()
    call.net.run()
    assert call.net.sent(B, 500) and call.caller.events == [("failed", 500), ("terminated", "failed")]
    assert len(call.acceptor) == 0
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_record_route_is_copied_into_the_dialog_forming_responses() -> None:
    """RFC 3261 12.1.1: a proxy that record-routed the INVITE (Kamailio in front) stays on the caller's
    route set: its Record-Route values, in order, in the 18x and the 2xx."""
    route = [("Record-Route", "<sip:127.0.0.1:5060;lr;ftag=x>"), ("Record-Route", "<sip:127.0.0.1:5060;lr>")]
    call = Call(headers=route)
    uac, uas = call.establish()
    for status in (180, 200):
        (sent,) = call.net.sent(B, status)
        assert sent.headers.get_all("Record-Route") == [value for _, value in route], status
    assert uas.dialog is not None and uas.dialog.route_set == [value for _, value in route]
    assert uac.dialog is not None and uac.dialog.route_set == [value for _, value in reversed(route)]
    uas.bye()
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []
