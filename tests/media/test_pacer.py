"""Tests for `pbx.media.pacer.MediaClock`: absolute deadlines, no drift, catch-up and resynchronisation."""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.pacer import MediaClock


class Member:
    def __init__(self, clock: Clock, pacer: MediaClock | None = None, stop_after: int | None = None) -> None:
        self.clock = clock
        self.pacer = pacer
        self.stop_after = stop_after
        self.deadlines: list[float] = []
        self.sent_at: list[float] = []

    def pace(self, deadline: float) -> None:
        self.deadlines.append(deadline)
        self.sent_at.append(self.clock.seconds())
        if self.stop_after is not None and len(self.deadlines) >= self.stop_after and self.pacer:
            self.pacer.remove(self)


def advance_irregularly(clock: Clock, seconds: float, rng: random.Random, max_step: float = 0.013) -> None:
    end = clock.seconds() + seconds
    while clock.seconds() < end:
        clock.advance(min(rng.uniform(0.0005, max_step), end - clock.seconds()))


class MediaClockTests(SynchronousTestCase):
    def test_deadlines_are_absolute_over_minutes(self) -> None:
        """Ten minutes of irregular clock steps: packet n is due at exactly start + n * 20 ms."""
        clock = Clock()
        clock.advance(1000.0)
        pacer = MediaClock(clock, phases=1)
        member = Member(clock)
        first = pacer.add(member)
        advance_irregularly(clock, 600.0, random.Random(1))
        deadlines = member.deadlines
        self.assertGreaterEqual(len(deadlines), 29_990)
        for n, deadline in enumerate(deadlines):
            self.assertAlmostEqual(deadline, first + n * 0.02, places=6)
        # every packet was sent no earlier than its deadline and, with steps under 13 ms, within 13 ms of it
        lateness = [sent - due for sent, due in zip(member.sent_at, deadlines, strict=True)]
        self.assertGreaterEqual(min(lateness), -1e-9)
        self.assertLess(max(lateness), 0.0131)
        self.assertEqual(pacer.resyncs, 0)

    def test_one_timer_for_all_members(self) -> None:
        clock = Clock()
        pacer = MediaClock(clock, phases=4)
        members = [Member(clock) for _ in range(300)]
        for member in members:
            pacer.add(member)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0.0)
        for _ in range(50):
            clock.advance(0.005)
            self.assertEqual(len(clock.getDelayedCalls()), 1)
        counts = {len(m.deadlines) for m in members}
        self.assertLessEqual(max(counts) - min(counts), 1)
        # spread over the four phases, 75 each
        phases = [round((m.deadlines[0] % 0.02) / 0.005) % 4 for m in members]
        self.assertEqual(sorted(phases.count(p) for p in range(4)), [75, 75, 75, 75])

    def test_late_tick_sends_what_is_due(self) -> None:
        clock = Clock()
        pacer = MediaClock(clock, phases=1)
        member = Member(clock)
        pacer.add(member)
        clock.advance(0.0)  # the first packet
        clock.advance(0.065)  # 65 ms late: three more are due now
        self.assertEqual(member.deadlines, [0.0, 0.02, 0.04, 0.06])
        self.assertEqual(pacer.resyncs, 0)
        self.assertEqual(pacer.late_calls, 1)
        clock.advance(0.015)
        self.assertEqual(member.deadlines[-1], 0.08)

    def test_far_behind_resynchronises_without_a_burst(self) -> None:
        clock = Clock()
        pacer = MediaClock(clock, phases=1)
        member = Member(clock)
        pacer.add(member)
        clock.advance(0.0)
        clock.advance(0.5)  # the reactor was blocked for half a second
        self.assertEqual(len(member.deadlines), 2)  # one packet, not 25
        self.assertEqual(pacer.resyncs, 1)
        self.assertAlmostEqual(member.deadlines[-1], 0.5)
        clock.advance(0.02)
        self.assertAlmostEqual(member.deadlines[-1], 0.52)

    def test_stops_when_empty_and_restarts(self) -> None:
        clock = Clock()
        pacer = MediaClock(clock)
        member = Member(clock, pacer, stop_after=3)
        pacer.add(member)
        clock.advance(0.0)
        for _ in range(10):
            clock.advance(0.02)
        self.assertEqual(len(member.deadlines), 3)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(pacer.running)
        clock.advance(1.234)
        again = Member(clock)
        first = pacer.add(again)
        self.assertEqual(first, clock.seconds())  # a new epoch, not the old grid
        clock.advance(0.0)
        self.assertEqual(again.deadlines, [first])

    def test_add_from_inside_pace_starts_next_slot(self) -> None:
        clock = Clock()
        pacer = MediaClock(clock, phases=1)
        late = Member(clock)

        class Adder(Member):
            def pace(self, deadline: float) -> None:
                super().pace(deadline)
                pacer.remove(self)
                pacer.add(late)

        adder = Adder(clock)
        pacer.add(adder)
        clock.advance(0.0)
        self.assertEqual(late.deadlines, [])
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0.02)
        self.assertEqual(late.deadlines, [0.02])

    def test_a_failing_member_is_removed(self) -> None:
        clock = Clock()
        pacer = MediaClock(clock)

        class Broken:
            def pace(self, deadline: float) -> None:
                raise RuntimeError("boom")

        good = Member(clock)
        pacer.add(Broken())
        pacer.add(good)
        for _ in range(10):
            clock.advance(0.005)
        self.assertEqual(pacer.errors, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(pacer), 1)
        self.assertGreater(len(good.deadlines), 1)
