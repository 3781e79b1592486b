"""The metrics service (pbx.service.metrics): the lag probe, chained trace hooks, the wiring."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.service.metrics import LagProbe, chain


class LagProbeTests(SynchronousTestCase):
    def test_the_probe_reports_how_late_its_timer_ran(self) -> None:
        clock = Clock()
        probe = LagProbe(clock, interval=1.0)
        probe.start()
        clock.advance(1.0)
        self.assertEqual(probe(), 0.0)
        clock.advance(1.25)  # the reactor was busy: the tick due at 2.0 runs at 2.25
        self.assertEqual(probe(), 0.25)
        probe.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class ChainTests(SynchronousTestCase):
    def test_hooks_are_called_in_order(self) -> None:
        seen: list[str] = []
        self.assertIsNone(chain([]))
        one = lambda *args: seen.append("one")  # noqa: E731
        self.assertIs(chain([one]), one)
        both = chain([one, lambda *args: seen.append("two")])
        assert both is not None
        both("recv", "UDP", None, b"x")
        self.assertEqual(seen, ["one", "two"])
        three = chain([one, lambda *args: seen.append("two"), lambda *args: seen.append("three")])
        assert three is not None
        three("send", "UDP", None, b"y")
        self.assertEqual(seen, ["one", "two", "one", "two", "three"])
