"""The calling INVITE session: ACK and re-ACK, forks, CANCEL, 2xx after CANCEL (RFC 3261 13.2, 9.1)."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.session_uac import UacSession
from tests.sip.session_net import ANSWER, OFFER, A, B, Call, Flow


def _answer_as_fork(call: Call, invite: Request, status: int, tag: str, body: bytes = ANSWER) -> None:
    """Deliver to A a response from another fork (B, with its own To tag and Contact)."""
    response = invite.response(status, to_tag=tag)
    response.headers.add("Contact", f"<sip:fork-{tag}@127.0.0.2:5060>")
    if body:
        response.headers.add("Content-Type", "application/sdp")
        response.body = body
    message = parse_message(response.to_bytes())
    call.a.stack.message_received(message, Flow(call.net, A, B))
    call.net.run()


def test_invite_headers_ack_and_re_ack_of_retransmitted_2xx() -> None:
    call = Call()
    uac, _uas = call.establish()
    invite = call.net.sent(A, "INVITE")[0]
    assert invite.headers.get_all("Supported") == ["timer"]
    assert invite.headers.get("Session-Expires") == "1800" and invite.headers.get("Min-SE") == "90"
    assert "UPDATE" in invite.headers.get_all("Allow")
    acks = call.net.sent(A, "ACK")
    assert len(acks) == 1 and acks[0].cseq.number == 1 and acks[0].body == b""
    assert call.caller.names() == ["provisional", "answered", "confirmed"]
    assert uac.dialog is not None and call.a.stack.dialogs.usage_of(uac.dialog) is uac
    # The UAS's 2xx again (its ACK was lost): the same ACK again, from the INVITE transaction (Accepted) ...
    ok = call.net.sent(B, 200)[0]
    call.a.stack.message_received(parse_message(ok.to_bytes()), Flow(call.net, A, B))
    call.net.run()
    assert len(call.net.sent(A, "ACK")) == 2
    # ... and one that matches no transaction (here: another branch) through the dialog table.
    stray = ok.copy()
    stray.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother")
    call.a.stack.message_received(parse_message(stray.to_bytes()), Flow(call.net, A, B))
    call.net.run()
    assert len(call.net.sent(A, "ACK")) == 3
    call.net.advance(40)  # the ACK is remembered for 64*T1 only
    call.a.stack.message_received(parse_message(stray.to_bytes()), Flow(call.net, A, B))
    call.net.run()
    assert len(call.net.sent(A, "ACK")) == 3
    assert call.caller.names() == ["provisional", "answered", "confirmed"]
    uac.bye()
    call.net.run()
    assert call.callee.events[-1] == ("terminated", "bye received")
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_second_fork_2xx_is_acked_and_byed() -> None:
    call = Call()
    uac, uas = call.establish()
    invite = next(iter(call.net.sent(A, "INVITE")))
    received = invite.copy()
    received.headers.set("Via", received.headers.get("Via") + ";received=127.0.0.1")
    _answer_as_fork(call, received, 200, "fork2")
    acks = call.net.sent(A, "ACK")
    byes = call.net.sent(A, "BYE")
    assert (
        len(acks) == 2 and acks[1].to.tag == "fork2" and str(acks[1].uri) == "sip:fork-fork2@127.0.0.2:5060"
    )
    assert len(byes) == 1 and byes[0].to.tag == "fork2"
    _answer_as_fork(call, received, 200, "fork2")  # its retransmission: ACK again, no second BYE
    assert len(call.net.sent(A, "ACK")) == 3 and len(call.net.sent(A, "BYE")) == 1
    assert not uac.ended and uac.dialog is not None and uac.dialog.remote_tag == uas.local_tag
    assert call.caller.names() == ["provisional", "answered", "confirmed"]
    uac.bye()
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_cancel_waits_for_a_provisional_response() -> None:
    call = Call()
    call.net.drop = lambda m, s, d: isinstance(m, Response) and m.status == 100  # no 100 Trying reaches A
    call.uac.start()
    call.net.run()
    call.uac.cancel()
    call.net.run()
    assert call.net.sent(A, "CANCEL") == []  # RFC 3261 9.1: not before a provisional response
    assert call.uas is not None
    call.uas.provisional(180)
    call.net.run()
    assert len(call.net.sent(A, "CANCEL")) == 1
    assert ("provisional", 180) not in call.caller.events
    assert call.caller.events == [("failed", 487), ("terminated", "cancelled")]
    assert call.callee.events == [("cancelled", None), ("terminated", "cancelled")]
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_2xx_crossing_cancel_is_acked_and_byed() -> None:
    call = Call()
    call.uac.start()
    call.net.run()
    uas = call.uas
    assert uas is not None
    uas.provisional(180)
    call.net.run()
    call.net.drop = lambda m, s, d: isinstance(m, Request) and m.method == "CANCEL"  # the CANCEL is late
    call.uac.cancel()
    uas.answer(ANSWER)
    call.net.run()
    assert len(call.net.sent(A, "CANCEL")) == 1
    assert len(call.net.sent(A, "ACK")) == 1 and len(call.net.sent(A, "BYE")) == 1
    assert call.caller.events == [("provisional", 180), ("terminated", "cancelled")]
    assert call.callee.events == [("confirmed", None), ("terminated", "bye received")]
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_cancel_unanswered_gives_up_after_64_t1() -> None:
    call = Call()
    call.uac.start()
    call.net.run()
    assert call.uas is not None
    call.uas.provisional(180)
    call.net.run()
    call.net.drop = lambda m, s, d: True  # the network dies
    call.uac.cancel()
    call.net.advance(31.9)
    assert not call.uac.ended
    call.net.advance(0.2)
    assert call.caller.events[-2:] == [("failed", 408), ("terminated", "cancelled")]
    call.uas.reject(500)
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_offer_in_2xx_answered_asynchronously_in_ack() -> None:
    call = Call(body=b"")
    later: Deferred[bytes] = Deferred()
    call.caller.offer_received = lambda session, body, ctype: later  # type: ignore[method-assign]
    uac, _uas = call.establish()
    assert call.net.sent(A, "ACK") == []
    later.callback(ANSWER)
    call.net.run()
    ack = call.net.sent(A, "ACK")[0]
    assert ack.body == ANSWER and ack.headers.get("Content-Type") == "application/sdp"
    assert call.callee.events == [("answer", ANSWER), ("confirmed", None)]
    uac.bye()
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []


def test_timeout_and_injected_sender() -> None:
    call = Call()
    sent: list[Request] = []

    def sender(request: Request, tu: object, transport: str, host: str, port: int) -> object:
        sent.append(request)
        return call.a.stack.send_request(request, tu, transport, host, port)  # type: ignore[arg-type]

    uac = UacSession(call.a.stack, call.uac.invite, call.caller, sender=sender)
    call.net.drop = lambda m, s, d: True
    uac.start()
    call.net.advance(33)
    assert len(sent) == 1 and sent[0].method == "INVITE" and sent[0].body == OFFER
    assert call.caller.events == [("failed", 408), ("terminated", "failed")]
    call.quiesce()
    assert call.net.clock.getDelayedCalls() == []
