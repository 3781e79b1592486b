"""Call observers (pbx.b2bua.events): what busy lamps, pickup, park, metrics and the console are told."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua.events import CallEvents

from .fakes import Harness


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def call_started(self, call: Any) -> None:
        self.events.append(("call_started", call.caller.extension, call.dialed))

    def leg_started(self, call: Any, leg: Any) -> None:
        self.events.append(("leg_started", leg.extension))

    def leg_ended(self, call: Any, leg: Any) -> None:
        self.events.append(("leg_ended", leg.extension, str(leg.status)))

    def call_answered(self, call: Any) -> None:
        self.events.append(("call_answered", call.callee_extension))

    def call_ended(self, call: Any) -> None:
        self.events.append(("call_ended", call.cdr().cause))


class Partial:
    """Only one method, and it fails: the others still hear, and the call goes on."""

    def call_started(self, call: Any) -> None:
        raise RuntimeError("boom")


class CallEventsTests(SynchronousTestCase):
    def build(self, main: str) -> Harness:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        return Harness.build(path, main)

    def test_an_answered_call_is_started_rung_answered_and_ended(self) -> None:
        h = self.build("dial 1002")
        recorder = Recorder()
        h.b2bua.observers.append(Partial())
        h.b2bua.observers.append(recorder)
        h.register_1002()
        phone = h.place_call()
        callee = h.callee()
        callee.respond(180)
        callee.answer()
        phone.ack()
        phone.bye()
        self.assertEqual(
            recorder.events,
            [
                ("call_started", "1001", "1002"),
                ("leg_started", "1002"),
                ("call_answered", "1002"),
                ("call_ended", "normal"),
            ],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_busy_leg_ends_before_the_call(self) -> None:
        h = self.build("dial 1002")
        recorder = Recorder()
        h.b2bua.observers.append(recorder)
        h.register_1002()
        h.place_call()
        h.callee().respond(486)
        self.assertEqual(
            recorder.events,
            [
                ("call_started", "1001", "1002"),
                ("leg_started", "1002"),
                ("leg_ended", "1002", "486"),
                ("call_ended", "busy"),
            ],
        )

    def test_no_observers_is_falsy_and_removing_works(self) -> None:
        events = CallEvents()
        self.assertFalse(events)
        recorder = Recorder()
        events.append(recorder)
        self.assertTrue(events)
        events.remove(recorder)
        self.assertFalse(events)
