"""`pbx.service.wakeups`: the nap between polls of a busy event loop, on a scripted poller and fake time."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from pbx.service.wakeups import NappingPoller, nap_between_polls

READY = [(7, 1)]  # (fd, EPOLLIN)


class ScriptedPoller:
    """Each poll waits the scripted time on the clock (cut to its timeout) and returns the scripted events."""

    def __init__(self, clock: Clock, script: list[tuple[float, list[tuple[int, int]]]]) -> None:
        self.clock = clock
        self.script = script
        self.polls: list[tuple[float, float]] = []  # (when, timeout)
        self.registered: list[int] = []

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        self.polls.append((self.clock.seconds(), timeout))
        wait, events = self.script.pop(0)
        if 0 <= timeout < wait:
            self.clock.advance(timeout)
            return []
        self.clock.advance(wait)
        return events

    def register(self, fd: int, mask: int) -> None:
        self.registered.append(fd)


def napping(script: list[tuple[float, list[tuple[int, int]]]], window: float = 0.005):
    clock = Clock()
    clock.advance(100)
    poller = ScriptedPoller(clock, script)
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(round(seconds, 6))
        clock.advance(seconds)

    return NappingPoller(poller, window, sleep=sleep, monotonic=clock.seconds), poller, naps, clock


class NappingPollerTests(unittest.SynchronousTestCase):
    def test_an_idle_loop_never_naps(self) -> None:
        """Events after long waits (a quiet loop) are handled at once: no nap before any poll."""
        poller, _raw, naps, _ = napping([(1.0, READY), (0.5, READY), (2.0, READY)])
        for _ in range(3):
            self.assertEqual(poller.poll(-1, 10), READY)
        self.assertEqual(naps, [])
        self.assertEqual(poller.wakeups, 3)

    def test_a_busy_loop_naps_the_rest_of_the_window(self) -> None:
        """Events that came within the window after the poll began mark the loop busy: the next poll first
        sleeps what is left of the window since that wake-up, then reads what arrived meanwhile."""
        poller, _raw, naps, clock = napping([(1.0, READY), (0.001, READY), (0.0, READY), (5.0, READY)])
        poller.poll(-1, 10)  # after a long wait: not busy
        poller.poll(-1, 10)  # 1 ms: busy
        clock.advance(0.0015)  # the loop handles what it read
        poller.poll(-1, 10)  # naps 5 - 1.5 ms, then finds events at once: still busy
        poller.poll(-1, 10)  # naps 5 ms (nothing handled), then waits 5 s: no longer busy
        self.assertEqual(naps, [0.0035, 0.005])
        self.assertEqual(poller.naps, 2)

    def test_the_nap_never_delays_a_timer(self) -> None:
        """The nap is cut to the poll's timeout (the next timer) and the poll gets what is left of it."""
        poller, raw, naps, _ = napping([(1.0, READY), (0.001, READY), (0.0, READY)])
        poller.poll(-1, 10)
        poller.poll(-1, 10)
        poller.poll(0.002, 10)
        self.assertEqual(naps, [0.002])
        self.assertEqual(raw.polls[-1][1], 0)

    def test_a_non_blocking_poll_never_naps(self) -> None:
        poller, _raw, naps, _ = napping([(1.0, READY), (0.001, READY), (0.0, [])])
        poller.poll(-1, 10)
        poller.poll(-1, 10)
        self.assertEqual(poller.poll(0, 10), [])
        self.assertEqual(naps, [])

    def test_a_loop_busier_than_the_window_never_naps(self) -> None:
        """When handling one wake-up's work took longer than the window, the next poll goes straight on."""
        poller, _raw, naps, clock = napping([(1.0, READY), (0.001, READY), (0.0, READY)])
        poller.poll(-1, 10)
        poller.poll(-1, 10)
        clock.advance(0.01)
        poller.poll(-1, 10)
        self.assertEqual(naps, [])

    def test_everything_else_passes_through(self) -> None:
        poller, raw, _, _ = napping([])
        poller.register(9, 1)
        self.assertEqual(raw.registered, [9])


class EPollReactor:
    """Named as Twisted's: `nap_between_polls` wraps only that reactor's poller."""

    def __init__(self) -> None:
        self._poller = ScriptedPoller(Clock(), [])


class NapBetweenPollsTests(unittest.SynchronousTestCase):
    def test_wraps_an_epoll_reactors_poller(self) -> None:
        reactor = EPollReactor()
        raw = reactor._poller
        wrapped = nap_between_polls(reactor, 0.002)
        self.assertIsInstance(wrapped, NappingPoller)
        self.assertIs(reactor._poller, wrapped)
        self.assertIs(wrapped._poller, raw)

    def test_leaves_other_reactors_and_a_zero_window_alone(self) -> None:
        self.assertIsNone(nap_between_polls(Clock(), 0.002))

        class PollReactor:  # select.poll: milliseconds
            _poller = ScriptedPoller(Clock(), [])

        other = PollReactor()
        self.assertIsNone(nap_between_polls(other, 0.002))
        self.assertIsInstance(other._poller, ScriptedPoller)
        reactor = EPollReactor()
        raw = reactor._poller
        self.assertIsNone(nap_between_polls(reactor, 0))
        self.assertIs(reactor._poller, raw)

    def test_the_real_epoll_reactor_is_recognised(self) -> None:
        """Against the name check going stale: Twisted's epoll reactor class is still called so, and its
        poller still polls with a timeout in seconds (select.epoll)."""
        from twisted.internet import epollreactor

        real = epollreactor.EPollReactor()
        raw = real._poller
        self.addCleanup(raw.close)
        if getattr(real, "waker", None) is not None:
            self.addCleanup(real.waker.connectionLost, None)
        self.assertIsInstance(nap_between_polls(real, 0.002), NappingPoller)
        self.assertEqual(real._poller.poll(0.001, 1), [])  # through the wrapper to the real epoll
        self.assertIs(real._poller._poller, raw)
