"""Busy lamps (`pbx.apps.busy_lamps`): the `dialog` package on the real notifier with fake transports and a
Clock; call events become early / confirmed / terminated with the caller in `<remote>`, versions count per
subscription, subscriptions stay inside the tenant and what it lets them watch."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from zope.interface.verify import verifyObject

from pbx.apps.busy_lamps import BusyLamps, DialogPackage
from pbx.sip.events.dialog_info import DialogInfo
from pbx.sip.subscription import IEventPackage
from pbx.sip.subscription_notifier import Notifier, SubscriptionPolicy
from tests.sip.test_stack import FakeFlow, deliver, make_stack
from tests.sip.test_subscription_notifier import subscribe


def watchable(tenant: str, watcher: str, number: str) -> int | None:
    if tenant != "default" or number not in ("1001", "1002", "1003", "701"):
        return 404
    return 403 if number == "1003" else None


class World:
    def __init__(self) -> None:
        self.stack, self.transports, self.clock = make_stack()
        self.notifier = Notifier(
            self.stack,
            lambda request, transaction: SimpleNamespace(tenant="default", number="1001"),
            [],
            SubscriptionPolicy(min_expires=60, max_expires=3600, default_expires=900),
        )
        self.lamps = BusyLamps(self.notifier, lambda tenant: "example.com")
        self.package = DialogPackage(self.lamps, watchable)
        self.notifier.add_package(self.package)
        self.stack.register("SUBSCRIBE", self.notifier)
        self.flow = FakeFlow()
        self.answered = 0

    def subscribe(self, user: str) -> int:
        deliver(self.stack, subscribe(event="dialog", user=user, branch=f"z9hG4bK{user}"), self.flow)
        return self.flow.responses()[-1].status

    def documents(self) -> list[DialogInfo]:
        """The bodies of the NOTIFYs sent so far, each answered 200 (one in flight per subscription)."""
        out = []
        while self.answered < len(self.transports.sent):
            from pbx.sip.parser import parse_message

            request = parse_message(self.transports.sent[self.answered][0])
            self.answered += 1
            deliver(self.stack, request.response(200).to_bytes(), self.flow)  # type: ignore[union-attr]
            assert request.headers.get("Content-Type") == "application/dialog-info+xml"
            out.append(DialogInfo.parse(request.body))
        return out

    def finish(self) -> None:
        self.notifier.stop()
        self.documents()
        self.clock.advance(64)
        assert self.clock.getDelayedCalls() == []


def call(id: str = "c1", caller: str = "1001", dialed: str = "1002", name: str = "Alice") -> Any:
    return SimpleNamespace(
        id=id,
        tenant="default",
        dialed=dialed,
        ended=False,
        callee_extension="",
        caller=SimpleNamespace(tenant="default", extension=caller, number="", name=name),
    )


def leg(extension: str) -> Any:
    return SimpleNamespace(extension=extension)


def states(document: DialogInfo) -> list[str]:
    return [d.state for d in document.dialogs]


def test_the_package_provides_the_interface() -> None:
    world = World()
    verifyObject(IEventPackage, world.package)
    assert "dialog" in world.notifier.allow_events


def test_ringing_answered_and_hung_up_with_versions_counting_up() -> None:
    world = World()
    assert world.subscribe("1002") == 200
    (first,) = world.documents()
    assert (first.entity, first.version, first.dialogs) == ("sip:1002@example.com", 0, ())
    c = call()
    world.lamps.call_started(c)  # 1001 calls: 1002's lamp does not change
    world.lamps.leg_started(c, leg("1002"))
    world.lamps.leg_started(c, leg("1002"))  # a second phone of 1002: the same dialog
    (ringing,) = world.documents()
    assert (ringing.version, states(ringing)) == (1, ["early"])
    dialog = ringing.dialogs[0]
    assert (dialog.direction, dialog.remote_identity, dialog.remote_display) == (
        "recipient",
        "sip:1001@example.com",
        "Alice",
    )
    c.callee_extension = "1002"
    world.lamps.call_answered(c)
    world.lamps.leg_ended(c, leg("1002"))  # the other phone's leg is cancelled: still in the call
    (talking,) = world.documents()
    assert (talking.version, states(talking)) == (2, ["confirmed"])
    world.lamps.call_ended(c)
    (idle,) = world.documents()
    assert (idle.version, states(idle), idle.idle) == (3, ["terminated"], True)
    world.finish()


def test_an_unanswered_ring_ends_when_its_legs_end() -> None:
    world = World()
    world.subscribe("1002")
    world.documents()
    c = call()
    world.lamps.leg_started(c, leg("1002"))
    world.lamps.leg_ended(c, leg("1002"))
    assert [states(d) for d in world.documents()] == [["early"], ["terminated"]]
    assert world.lamps.state("default", "1002") == ()
    world.finish()


def test_the_caller_shows_trying_then_confirmed() -> None:
    world = World()
    world.subscribe("1001")
    world.documents()
    c = call()
    world.lamps.call_started(c)
    world.lamps.call_answered(c)
    docs = world.documents()
    assert [states(d) for d in docs] == [["trying"], ["confirmed"]]
    assert docs[0].dialogs[0].direction == "initiator"
    world.finish()


def test_a_parked_call_lights_its_orbit() -> None:
    world = World()
    world.subscribe("701")
    world.documents()
    c = call(caller="1003", name="Carol")
    world.lamps.parked(c, "default", "701")
    world.lamps.unparked(c, "default", "701")
    docs = world.documents()
    assert [states(d) for d in docs] == [["confirmed"], ["terminated"]]
    assert docs[0].dialogs[0].remote_display == "Carol"
    world.finish()


def test_subscriptions_stay_inside_what_the_tenant_lets_watch() -> None:
    world = World()
    assert world.subscribe("1003") == 403
    assert world.subscribe("9999") == 404
    world.finish()
