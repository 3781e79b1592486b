"""The subscriber and the notifier talking to each other: two real stacks on one Clock, joined by fake
transports that deliver each datagram a moment later. Subscribe, notify on change, refresh, shutdown of the
notifier (`deactivated`: the subscriber comes back at once), unsubscribe."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from pbx.sip.events.message_summary import CONTENT_TYPE, MessageSummary
from pbx.sip.stack import SipStack
from pbx.sip.subscription_notifier import Notifier, SubscriptionPolicy
from pbx.sip.subscription_subscriber import Notification, Subscriber
from pbx.sip.uri import SipURI, parse_uri
from tests.sip.test_stack import FakeFlow, deliver
from tests.sip.test_subscription_notifier import FakePackage


class Wire:
    """Transports of one stack: what it sends reaches the peer's stack `delay` seconds later."""

    def __init__(self, clock: Clock, stack: SipStack, address: tuple[str, int], delay: float = 0.01) -> None:
        self.clock, self.stack, self.address, self.delay = clock, stack, address, delay
        self.peer: Wire | None = None
        stack.attach_transport(self)

    def send(self, data: bytes, transport: str = "udp", host: str = "", port: int = 0) -> Any:
        peer = self.peer
        assert peer is not None and (not host or (host, port) == peer.address), (host, port)
        self.clock.callLater(self.delay, deliver, peer.stack, data, WireFlow(self))
        return succeed(None)

    def local_address(self, transport: str, host: str) -> tuple[str, int]:
        return self.address


class WireFlow(FakeFlow):
    """The flow a message arrived on: answers sent on it travel back over the wire."""

    def __init__(self, sender: Wire) -> None:
        super().__init__(remote=sender.address)
        assert sender.peer is not None
        self._back = sender.peer

    def send(self, data: bytes) -> None:
        self._back.send(data)


class Package(FakePackage):
    content_type = CONTENT_TYPE

    def body(self, resource: Any) -> bytes:
        new = int(self.state.get(resource, "0"))
        return MessageSummary.voice(new, 0).to_bytes()


def test_subscriber_and_notifier_end_to_end_on_a_clock():
    clock = Clock()
    phone, pbx = SipStack(clock), SipStack(clock)
    phone_wire, pbx_wire = Wire(clock, phone, ("192.0.2.1", 5060)), Wire(clock, pbx, ("192.0.2.2", 5060))
    phone_wire.peer, pbx_wire.peer = pbx_wire, phone_wire
    package = Package()
    notifier = Notifier(
        pbx, lambda request, transaction: "alice", [package], SubscriptionPolicy(min_expires=60)
    )
    pbx.register("SUBSCRIBE", notifier)
    seen: list[Notification] = []
    resource = parse_uri("sip:alice@192.0.2.2:5060")
    assert isinstance(resource, SipURI)
    subscriber = Subscriber(
        phone, resource, "<sip:alice@192.0.2.1>", "message-summary", [CONTENT_TYPE], seen.append, expires=120
    )

    def run(seconds: float) -> None:
        clock.pump([0.01] * round(seconds * 100))

    def waiting() -> list[bool]:
        return [MessageSummary.parse(n.body).waiting for n in seen]

    subscriber.start()
    run(1)
    assert [n.state.state for n in seen] == ["active"] and waiting() == [False]
    assert subscriber.state == "active" and len(notifier) == 1
    package.state["alice"] = "3"
    notifier.notify("message-summary", "alice")
    run(1)
    assert waiting() == [False, True]
    run(90)  # refreshed at 88 s (120 - 64*T1): the notifier sends the state again
    assert len(seen) == 3 and seen[-1].state.expires == 120
    notifier.stop()  # shutting down: deactivated, and the subscriber comes back at once
    run(1)
    assert seen[-2].state.reason == "deactivated"
    assert [n.state.state for n in seen[-2:]] == ["terminated", "active"]
    assert len(notifier) == 1 and len(phone.dialogs) == 1 and len(pbx.dialogs) == 1
    stopped = subscriber.stop()
    run(1)
    assert stopped.called and seen[-1].state.state == "terminated" and seen[-1].state.reason is None
    assert len(notifier) == 0 and len(phone.dialogs) == 0 and len(pbx.dialogs) == 0
    clock.advance(64)
    assert clock.getDelayedCalls() == []
