"""The notifier (RFC 6665 4.2) on the real stack with fake transports and a Clock: 489, 406, 423, the first
NOTIFY, NOTIFY on change, refresh, unsubscribe, fetch, expiry, NOTIFY failures and shutdown."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pbx.sip.errors import SipError
from pbx.sip.interfaces import IClientTransactionUser, IDialogUsage
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.subscription import IEventPackage, SubscriptionState
from pbx.sip.subscription_notifier import Notifier, SubscriptionPolicy
from tests.sip.test_stack import FakeFlow, deliver, make_stack

CT = "application/simple-message-summary"


@implementer(IEventPackage)
class FakePackage:
    name = "message-summary"
    content_type = CT

    def __init__(self) -> None:
        self.state: dict[str, str] = {}

    def resource_for(self, request: Request, identity: Any) -> str:
        user = request.uri.user  # type: ignore[union-attr]
        if user != identity:
            raise SipError(403)
        return user

    def body(self, resource: Any) -> bytes:
        return f"state of {resource}: {self.state.get(resource, 'none')}\r\n".encode()


def subscribe(
    *,
    expires: int | None = 600,
    event: str = "message-summary",
    branch: str = "z9hG4bKs1",
    to_tag: str = "",
    cseq: int = 1,
    accept: str | None = None,
    user: str = "alice",
) -> bytes:
    lines = [
        f"SUBSCRIBE sip:{user}@example.com SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.10:5070;branch={branch};rport",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=sub1",
        f"To: <sip:{user}@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: sub-call@example.com",
        f"CSeq: {cseq} SUBSCRIBE",
        "Contact: <sip:alice@10.0.0.5:5070>",
        f"Event: {event}",
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if accept is not None:
        lines.append(f"Accept: {accept}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


class World:
    def __init__(self, authorize: Any = None, policy: SubscriptionPolicy | None = None) -> None:
        self.stack, self.transports, self.clock = make_stack()
        self.package = FakePackage()
        self.notifier = Notifier(
            self.stack,
            authorize or (lambda request, transaction: "alice"),
            [self.package],
            policy or SubscriptionPolicy(min_expires=60, max_expires=3600, default_expires=900),
        )
        self.stack.register("SUBSCRIBE", self.notifier)
        self.flow = FakeFlow()
        self.answered = 0

    def send(self, data: bytes) -> Response:
        before = len(self.flow.sent)
        deliver(self.stack, data, self.flow)
        assert len(self.flow.sent) == before + 1
        return self.flow.responses()[-1]

    def notifies(self) -> list[Request]:
        out = [parse_message(data) for data, *_ in self.transports.sent]
        assert all(isinstance(r, Request) and r.method == "NOTIFY" for r in out)
        return out  # type: ignore[return-value]

    def answer(self, status: int = 200) -> Request:
        """Answer the oldest NOTIFY not answered yet."""
        request = self.notifies()[self.answered]
        self.answered += 1
        deliver(self.stack, request.response(status).to_bytes(), self.flow)
        return request

    def finish(self) -> None:
        self.clock.advance(64)  # Timer K of the NOTIFY transactions
        assert self.clock.getDelayedCalls() == []


def state_of(notify: Request) -> SubscriptionState:
    return SubscriptionState.parse(notify.headers.get("Subscription-State") or "")


def test_providers_of_the_interfaces():
    world = World()
    verifyObject(IEventPackage, world.package)
    world.send(subscribe())
    [subscription] = world.notifier.subscriptions("message-summary", "alice")
    verifyObject(IDialogUsage, subscription)
    verifyObject(IClientTransactionUser, subscription)
    world.notifier.stop()
    world.answer()
    world.finish()


def test_unknown_event_gets_489_with_allow_events_and_missing_event_400():
    world = World()
    response = world.send(subscribe(event="presence"))
    assert response.status == 489
    assert response.headers.get("Allow-Events") == "message-summary"
    response = world.send(subscribe(event=None, branch="z9hG4bKs2").replace(b"Event: None\r\n", b""))
    assert response.status == 400 and response.reason == "Missing Event header"
    assert world.transports.sent == [] and len(world.stack.dialogs) == 0
    world.finish()


def test_accept_without_the_package_type_gets_406():
    world = World()
    assert world.send(subscribe(accept="application/pidf+xml")).status == 406
    assert world.send(subscribe(accept="application/*", branch="z9hG4bKs3")).status == 200
    world.notifier.stop()
    world.answer()
    world.answer()
    world.finish()


def test_too_brief_gets_423_with_min_expires_and_long_ones_are_capped():
    world = World()
    response = world.send(subscribe(expires=10))
    assert response.status == 423 and response.headers.get("Min-Expires") == "60"
    response = world.send(subscribe(expires=99999, branch="z9hG4bKs2"))
    assert response.status == 200 and response.headers.get("Expires") == "3600"
    world.notifier.stop()
    world.answer()
    world.answer()
    world.finish()


def test_subscribe_gets_200_and_the_first_notify_at_once():
    world = World()
    world.package.state["alice"] = "2 new"
    response = world.send(subscribe(expires=600, event="message-summary;id=7"))
    assert response.status == 200
    assert response.headers.get("Expires") == "600"
    assert response.to.tag and response.headers.get("Contact")
    assert response.headers.get("Allow-Events") == "message-summary"
    [notify] = world.notifies()
    assert notify.headers.get("Event") == "message-summary;id=7"
    assert str(state_of(notify)) == "active;expires=600"
    assert notify.headers.get("Content-Type") == CT
    assert notify.body == b"state of alice: 2 new\r\n"
    assert notify.from_.tag == response.to.tag and notify.to.tag == "sub1"
    assert str(notify.uri) == "sip:alice@10.0.0.5:5070"  # the remote target, sent to the source address
    assert world.transports.sent[0][1:] == ("udp", "192.0.2.10", 5070)
    assert len(world.stack.dialogs) == 1 and len(world.notifier) == 1
    world.answer()
    world.notifier.stop()
    world.answer()
    world.finish()


def test_default_expires_when_absent_and_authorize_may_answer_itself():
    challenged: list[Any] = []

    def authorize(request: Request, transaction: Any) -> Any:
        if "Authorization" not in request.headers:
            transaction.respond(request.response(401, to_tag="x"))
            challenged.append(request)
            return None
        d: Deferred[str] = Deferred()
        world.clock.callLater(1, d.callback, "alice")
        return d

    world = World(authorize)
    assert world.send(subscribe(expires=None)).status == 401
    assert world.transports.sent == [] and len(world.stack.dialogs) == 0
    deliver(
        world.stack,
        subscribe(expires=None, branch="z9hG4bKs2").replace(b"Event:", b"Authorization: Digest x\r\nEvent:"),
        world.flow,
    )
    world.clock.advance(1)
    response = world.flow.responses()[-1]
    assert response.status == 200 and response.headers.get("Expires") == "900"
    assert len(challenged) == 1
    world.notifier.stop()
    world.answer()
    world.answer()
    world.finish()


def test_the_package_refuses_other_resources_with_403():
    world = World()
    assert world.send(subscribe(user="bob")).status == 403
    assert len(world.stack.dialogs) == 0 and world.transports.sent == []
    world.finish()


def test_notify_on_change_and_one_notify_in_flight_at_a_time():
    world = World()
    world.send(subscribe())
    world.answer()
    world.package.state["alice"] = "1 new"
    assert world.notifier.notify("message-summary", "alice") == 1
    assert world.notifier.notify("message-summary", "nobody") == 0
    world.package.state["alice"] = "2 new"
    world.notifier.notify("message-summary", "alice")  # queued behind the one in flight
    world.clock.advance(3)  # its retransmissions are not new NOTIFYs
    bodies = [n.body for n in world.notifies() if n.cseq.number == 2]
    assert bodies and all(b == b"state of alice: 1 new\r\n" for b in bodies)
    assert {n.cseq.number for n in world.notifies()} == {1, 2}
    world.answered = len(world.notifies()) - 1
    world.answer()
    last = world.notifies()[-1]
    assert last.cseq.number == 3 and last.body == b"state of alice: 2 new\r\n"
    assert state_of(last).expires == 597
    world.answered = len(world.notifies()) - 1
    world.answer()
    world.notifier.stop()
    final = world.notifies()[-1]
    assert str(state_of(final)) == "terminated;reason=deactivated"
    world.answered = len(world.notifies()) - 1
    world.answer()
    world.finish()


def test_refresh_resets_the_expiry_and_sends_the_state():
    world = World()
    first = world.send(subscribe(expires=600))
    world.answer()
    world.clock.advance(500)
    tag = first.to.tag
    response = world.send(subscribe(expires=300, to_tag=tag, cseq=2, branch="z9hG4bKr1"))
    assert response.status == 200 and response.headers.get("Expires") == "300"
    refresh_notify = world.answer()
    assert str(state_of(refresh_notify)) == "active;expires=300"
    world.clock.advance(299)
    assert world.notifier.counters["expired"] == 0 and len(world.notifier) == 1
    world.clock.advance(1)
    assert world.notifier.counters["refreshed"] == 1 and world.notifier.counters["expired"] == 1
    world.answer()
    world.finish()


def test_refresh_with_another_event_gets_489_and_too_brief_423():
    world = World()
    tag = world.send(subscribe()).to.tag
    world.answer()
    assert world.send(subscribe(event="presence", to_tag=tag, cseq=2, branch="z9hG4bKr1")).status == 489
    response = world.send(subscribe(expires=5, to_tag=tag, cseq=3, branch="z9hG4bKr2"))
    assert response.status == 423 and response.headers.get("Min-Expires") == "60"
    assert len(world.notifier) == 1
    world.notifier.stop()
    world.answer()
    world.finish()


def test_unsubscribe_sends_terminated_with_the_current_state_and_forgets_the_dialog():
    world = World()
    world.package.state["alice"] = "3 old"
    tag = world.send(subscribe()).to.tag
    world.answer()
    response = world.send(subscribe(expires=0, to_tag=tag, cseq=2, branch="z9hG4bKu1"))
    assert response.status == 200 and response.headers.get("Expires") == "0"
    final = world.notifies()[-1]
    assert str(state_of(final)) == "terminated"
    assert final.body == b"state of alice: 3 old\r\n"
    assert len(world.stack.dialogs) == 0 and len(world.notifier) == 0
    assert world.notifier.counters["unsubscribed"] == 1
    # a later refresh of the dead subscription: the stack answers 481
    assert world.send(subscribe(to_tag=tag, cseq=3, branch="z9hG4bKu2")).status == 481
    world.answer()
    world.finish()


def test_fetch_expires_zero_gets_one_terminated_notify_and_no_subscription():
    world = World()
    response = world.send(subscribe(expires=0))
    assert response.status == 200 and response.headers.get("Expires") == "0"
    [notify] = world.notifies()
    assert str(state_of(notify)) == "terminated;reason=timeout"
    assert len(world.stack.dialogs) == 0 and len(world.notifier) == 0
    world.answer()
    world.finish()


def test_expiry_sends_terminated_timeout_and_removes_the_dialog():
    world = World()
    world.send(subscribe(expires=60))
    world.answer()
    assert len(world.stack.dialogs) == 1
    world.clock.advance(60)
    final = world.notifies()[-1]
    assert str(state_of(final)) == "terminated;reason=timeout"
    assert len(world.stack.dialogs) == 0 and len(world.notifier) == 0
    assert world.notifier.subscriptions("message-summary", "alice") == []
    world.answer()
    world.finish()


def test_notify_481_or_408_or_timeout_ends_the_subscription_without_another_notify():
    for outcome in (481, 408, 404, "timeout"):
        world = World()
        world.send(subscribe())
        if outcome == "timeout":
            world.clock.advance(32)  # Timer F
        else:
            world.answer(outcome)  # type: ignore[arg-type]
        assert len(world.notifier) == 0 and len(world.stack.dialogs) == 0, outcome
        assert world.notifier.counters["notify_failures"] == 1
        sent = len(world.transports.sent)
        world.notifier.notify("message-summary", "alice")
        assert len(world.transports.sent) == sent
        world.finish()


def test_notify_answered_with_a_transaction_error_keeps_the_subscription():
    world = World()
    world.send(subscribe())
    world.answer(500)
    assert len(world.notifier) == 1
    world.notifier.end("message-summary", "alice", "noresource")
    assert str(state_of(world.notifies()[-1])) == "terminated;reason=noresource"
    world.answer()
    world.finish()


def test_too_many_subscriptions_get_503():
    world = World(policy=SubscriptionPolicy(max_subscriptions=1))
    world.send(subscribe())
    response = world.send(subscribe(branch="z9hG4bKs2").replace(b"sub-call", b"other-call"))
    assert response.status == 503 and response.headers.get("Retry-After") == "60"
    world.notifier.stop()
    world.answer()
    world.answer()
    world.finish()


def test_a_subscribe_without_contact_or_with_a_bad_one_gets_400():
    world = World()
    response = world.send(subscribe().replace(b"Contact: <sip:alice@10.0.0.5:5070>\r\n", b""))
    assert response.status == 400
    response = world.send(
        subscribe(branch="z9hG4bKs2").replace(b"Contact: <sip:alice@10.0.0.5:5070>", b"Contact: <sip:@@>")
    )
    assert response.status == 400
    assert len(world.stack.dialogs) == 0 and world.transports.sent == []
    world.finish()


def test_the_200_copies_the_record_route_and_notifies_follow_it():
    """RFC 3261 12.1.1 (RFC 6665 4.2.1.1): a proxy that record-routed the SUBSCRIBE stays on the route set."""
    world = World()
    routes = ["<sip:192.0.2.1:5060;lr;ftag=sub1>", "<sip:192.0.2.2;lr>"]
    data = subscribe().replace(
        b"Max-Forwards: 70\r\n",
        b"Max-Forwards: 70\r\n" + b"".join(b"Record-Route: %s\r\n" % r.encode() for r in routes),
    )
    response = world.send(data)
    assert response.status == 200
    assert response.headers.get_all("Record-Route") == routes
    [notify] = world.notifies()
    assert notify.headers.get_all("Route") == routes
    world.answer()
    world.notifier.stop()
    world.answer()
    world.finish()
