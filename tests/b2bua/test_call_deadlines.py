"""`CallDeadlines`: every answered call's maximum duration from one rolling delayed call."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua.call import CallDeadlines


class FakeCall:
    def __init__(self, name: str, ended: list[str], deadlines: CallDeadlines | None = None) -> None:
        self.id = name
        self._ended = ended
        self._deadlines = deadlines

    def _too_long(self) -> None:
        self._ended.append(self.id)
        if self._deadlines is not None:
            self._deadlines.discard(self)  # as Call._end does while it hangs up


class CallDeadlinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.ended: list[str] = []
        self.deadlines = CallDeadlines(self.clock, 100.0)

    def call(self, name: str) -> Any:
        call = FakeCall(name, self.ended, self.deadlines)
        self.deadlines.add(call)  # type: ignore[arg-type]
        return call

    def test_each_call_at_its_own_deadline(self) -> None:
        self.call("a")
        self.clock.advance(10)
        self.call("b")
        self.clock.advance(5)
        self.call("c")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(84.9)
        self.assertEqual(self.ended, [])
        self.clock.advance(0.1)
        self.assertEqual(self.ended, ["a"])
        self.clock.advance(9.9)
        self.assertEqual(self.ended, ["a"])
        self.clock.advance(0.1)
        self.assertEqual(self.ended, ["a", "b"])
        self.clock.advance(5)
        self.assertEqual(self.ended, ["a", "b", "c"])
        self.assertEqual(len(self.deadlines), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_call_that_ends_first_is_forgotten(self) -> None:
        a = self.call("a")
        self.clock.advance(30)
        self.call("b")
        self.deadlines.discard(a)
        self.assertEqual(len(self.deadlines), 1)
        self.clock.advance(70)  # a's deadline: nothing due, the call waits for b's
        self.assertEqual(self.ended, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(30)
        self.assertEqual(self.ended, ["b"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_last_call_leaving_stops_the_delayed_call(self) -> None:
        a, b = self.call("a"), self.call("b")
        self.deadlines.discard(a)
        self.deadlines.discard(b)
        self.deadlines.discard(b)  # twice: nothing happens
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(200)
        self.assertEqual(self.ended, [])

    def test_added_twice_keeps_the_first_deadline(self) -> None:
        a = self.call("a")
        self.clock.advance(50)
        self.deadlines.add(a)  # type: ignore[arg-type]
        self.clock.advance(50)
        self.assertEqual(self.ended, ["a"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_error_in_one_call_does_not_stop_the_others(self) -> None:
        broken = FakeCall("broken", self.ended)
        broken._too_long = lambda: 1 / 0  # type: ignore[method-assign]
        self.deadlines.add(broken)  # type: ignore[arg-type]
        self.call("b")
        self.clock.advance(100)
        self.assertEqual(self.ended, ["b"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
