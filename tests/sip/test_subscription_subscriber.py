"""The subscriber (RFC 6665 4.1) on the real stack with fake transports and a Clock: SUBSCRIBE fields,
NOTIFY handling (also before the 2xx), refresh before expiry, re-subscribing after `terminated`, 423,
failures, and unsubscribing on stop."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from pbx.sip.interfaces import IDialogUsage
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.subscription_subscriber import Notification, Subscriber, refresh_delay
from pbx.sip.uri import SipURI, parse_uri
from tests.sip.test_stack import FakeFlow, deliver, make_stack

CT = "application/simple-message-summary"


class World:
    def __init__(self, expires: int = 600) -> None:
        self.stack, self.transports, self.clock = make_stack()
        self.notified: list[Notification] = []
        resource = parse_uri("sip:1000@192.0.2.20:5060")
        assert isinstance(resource, SipURI)
        self.subscriber = Subscriber(
            self.stack,
            resource,
            "<sip:monitor@example.com>",
            "message-summary",
            [CT],
            self.notified.append,
            expires=expires,
            retry_delay=30,
        )
        self.flow = FakeFlow(remote=("192.0.2.20", 5060))
        self.notify_cseq = 0

    def requests(self) -> list[Request]:
        out = [parse_message(data) for data, *_ in self.transports.sent]
        return [r for r in out if isinstance(r, Request)]

    def last(self) -> Request:
        return self.requests()[-1]

    def respond(self, request: Request, status: int = 200, **headers: str) -> None:
        response = request.response(status, to_tag=request.to.tag or "n1")
        if 200 <= status < 300 and request.method == "SUBSCRIBE":
            response.headers.add("Contact", "<sip:notifier@192.0.2.20:5060>")
            response.headers.add("Expires", request.headers.get("Expires") or "600")
        for name, value in headers.items():
            response.headers.set(name.replace("_", "-"), value)
        deliver(self.stack, response.to_bytes(), self.flow)

    def notify(
        self,
        request: Request,
        state: str | None,
        body: bytes = b"Messages-Waiting: no\r\n",
        tag: str = "n1",
        event: str = "message-summary",
    ) -> Response:
        self.notify_cseq += 1
        lines = [
            "NOTIFY sip:pbx@127.0.0.1:5060 SIP/2.0",
            f"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKn{self.notify_cseq}{request.call_id[:6]};rport",
            "Max-Forwards: 70",
            f"From: <sip:1000@192.0.2.20:5060>;tag={tag}",
            f"To: {request.headers.get('From')}",
            f"Call-ID: {request.call_id}",
            f"CSeq: {self.notify_cseq} NOTIFY",
            "Contact: <sip:notifier@192.0.2.20:5060>",
            f"Event: {event}",
            f"Subscription-State: {state}",
            f"Content-Type: {CT}",
        ]
        if state is None:
            lines.remove("Subscription-State: None")
        data = ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        before = len(self.flow.sent)
        deliver(self.stack, data, self.flow)
        assert len(self.flow.sent) == before + 1
        response = parse_message(self.flow.sent[-1])
        assert isinstance(response, Response)
        return response

    def stop(self, tag: str = "n1") -> None:
        done = self.subscriber.stop()
        unsubscribe = self.last()
        assert unsubscribe.headers.get("Expires") == "0"
        self.respond(unsubscribe)
        assert not done.called
        assert self.notify(unsubscribe, "terminated", tag=tag).status == 200
        assert done.called
        self.finish()

    def finish(self) -> None:
        assert len(self.stack.dialogs) == 0
        self.clock.advance(64)  # Timers K and J of the transactions
        assert self.clock.getDelayedCalls() == []


def test_refresh_delay_leaves_timer_f_but_never_before_half_time():
    assert refresh_delay(3600) == 3568
    assert refresh_delay(60) == 30
    assert refresh_delay(5) == 2.5


def test_subscribe_then_notify_then_refresh_before_expiry_then_stop():
    world = World(expires=600)
    verifyObject(IDialogUsage, world.subscriber)
    world.subscriber.start()
    [subscribe] = world.requests()
    assert world.transports.sent[0][1:] == ("udp", "192.0.2.20", 5060)
    assert str(subscribe.uri) == "sip:1000@192.0.2.20:5060"
    assert subscribe.headers.get("Event") == "message-summary"
    assert subscribe.headers.get("Accept") == CT
    assert subscribe.headers.get("Expires") == "600"
    assert subscribe.headers.get("Contact") == "<sip:pbx@127.0.0.1:5060>"
    assert subscribe.from_.tag and subscribe.to.tag is None
    world.respond(subscribe)
    response = world.notify(subscribe, "active;expires=600", b"Messages-Waiting: yes\r\n")
    assert response.status == 200
    [note] = world.notified
    assert note.state.state == "active" and note.body == b"Messages-Waiting: yes\r\n"
    assert note.content_type == CT
    assert world.subscriber.state == "active"
    world.clock.advance(567)
    assert len(world.requests()) == 1
    world.clock.advance(1)
    refresh = world.last()
    assert refresh.method == "SUBSCRIBE" and refresh.to.tag == "n1" and refresh.cseq.number == 2
    assert str(refresh.uri) == "sip:notifier@192.0.2.20:5060"  # the 2xx's Contact
    assert refresh.call_id == subscribe.call_id and refresh.headers.get("Expires") == "600"
    world.respond(refresh, Expires="120")  # the notifier granted less
    world.clock.advance(refresh_delay(120) - 1)
    assert world.last().cseq.number == 2
    world.clock.advance(1)
    assert world.last().cseq.number == 3
    world.respond(world.last())
    world.stop()


def test_a_notify_before_the_200_makes_the_dialog():
    world = World()
    world.subscriber.start()
    [subscribe] = world.requests()
    response = world.notify(subscribe, "pending;expires=600", b"", tag="n7")
    assert response.status == 200 and response.to.tag == subscribe.from_.tag
    dialog = world.subscriber.dialog
    assert dialog is not None and dialog.remote_tag == "n7" and dialog.state == "confirmed"
    assert world.subscriber.state == "pending"
    world.respond(subscribe, to_tag="n7")
    world.notify(subscribe, "active;expires=600", tag="n7")
    assert [n.state.state for n in world.notified] == ["pending", "active"]
    world.clock.advance(refresh_delay(600))
    refresh = world.last()
    assert refresh.to.tag == "n7" and refresh.cseq.number == 2
    world.respond(refresh)
    world.stop(tag="n7")


def test_terminated_deactivated_subscribes_again_at_once_with_a_new_dialog():
    world = World()
    world.subscriber.start()
    first = world.last()
    world.respond(first)
    world.notify(first, "active;expires=600")
    world.notify(first, "terminated;reason=deactivated")
    assert world.subscriber.dialog is None and len(world.stack.dialogs) == 0
    world.clock.advance(0)
    second = world.last()
    assert second.call_id != first.call_id and second.to.tag is None and second.cseq.number == 1
    world.respond(second)
    world.notify(second, "terminated;reason=timeout")  # again at once: only after retry_delay
    world.clock.advance(29)
    assert world.last().call_id == second.call_id
    world.clock.advance(1)
    third = world.last()
    assert third.call_id not in (first.call_id, second.call_id)
    world.respond(third)
    world.stop()


def test_terminated_probation_waits_retry_after_and_rejected_never_comes_back():
    world = World()
    world.subscriber.start()
    first = world.last()
    world.respond(first)
    world.notify(first, "terminated;reason=probation;retry-after=20")
    world.clock.advance(19)
    assert len(world.requests()) == 1
    world.clock.advance(1)
    second = world.last()
    assert second.call_id != first.call_id
    world.respond(second)
    world.notify(second, "terminated;reason=rejected")
    assert world.subscriber.state == "terminated"
    world.clock.advance(3600)
    assert len(world.requests()) == 2
    assert world.subscriber.stop().called
    world.finish()


def test_notify_with_another_event_489_and_without_state_400():
    world = World()
    world.subscriber.start()
    subscribe = world.last()
    world.respond(subscribe)
    assert world.notify(subscribe, "active", event="presence").status == 489
    assert world.notify(subscribe, None).status == 400
    assert world.notify(subscribe, "active;expires=x").status == 400
    assert world.notified == []
    assert world.notify(subscribe, "active;expires=600").status == 200
    assert world.notified[-1].state.state == "active"
    world.stop()


def test_423_to_the_subscribe_asks_again_with_min_expires():
    world = World(expires=10)
    world.subscriber.start()
    first = world.last()
    world.respond(first, 423, Min_Expires="60")
    second = world.last()
    assert second.headers.get("Expires") == "60" and second.call_id != first.call_id
    world.respond(second)
    world.stop()


def test_refused_subscribe_gives_up_and_503_tries_again_later():
    world = World()
    world.subscriber.start()
    world.respond(world.last(), 503, Retry_After="45")
    assert world.subscriber.state == "terminated" and len(world.stack.dialogs) == 0
    world.clock.advance(44)
    assert len(world.requests()) == 1
    world.clock.advance(1)
    world.respond(world.last(), 403)
    assert world.subscriber.failure == 403
    world.clock.advance(3600)
    assert len(world.requests()) == 2
    world.finish()


def test_refresh_answered_481_subscribes_anew_and_500_keeps_trying():
    world = World(expires=600)
    world.subscriber.start()
    first = world.last()
    world.respond(first)
    world.clock.advance(refresh_delay(600))
    refresh = world.last()
    world.respond(refresh, 500)
    assert world.subscriber.dialog is not None
    world.clock.advance(16)  # min(retry_delay, left / 2)
    again = world.last()
    assert again.cseq.number == 3 and again.call_id == first.call_id
    world.respond(again, 481)
    assert world.subscriber.dialog is None
    world.clock.advance(30)
    fresh = world.last()
    assert fresh.call_id != first.call_id and fresh.to.tag is None
    world.respond(fresh)
    world.stop()


def test_stop_while_the_subscribe_is_in_flight_unsubscribes_on_its_200():
    world = World()
    world.subscriber.start()
    first = world.last()
    done: Deferred[None] = world.subscriber.stop()
    assert not done.called
    world.respond(first)
    unsubscribe = world.last()
    assert unsubscribe.headers.get("Expires") == "0" and unsubscribe.to.tag == "n1"
    world.respond(unsubscribe, 481)
    assert done.called
    world.finish()


def test_stop_without_final_notify_gives_up_after_64_t1():
    world = World()
    world.subscriber.start()
    world.respond(world.last())
    done = world.subscriber.stop()
    world.respond(world.last())
    world.clock.advance(31)
    assert not done.called
    world.clock.advance(1)
    assert done.called
    world.finish()


def test_a_2xx_granting_zero_seconds_ends_the_subscription_without_a_refresh_loop():
    world = World()
    world.subscriber.start()
    world.respond(world.last(), Expires="0")
    assert world.subscriber.dialog is None and world.subscriber.state == "terminated"
    world.clock.advance(29)
    assert len(world.requests()) == 1
    world.clock.advance(1)
    world.respond(world.last())
    world.stop()
