"""Fewer event-loop wake-ups under load: a short nap before polling again, so one wake-up reads a batch.

Twisted's epoll reactor sleeps in `epoll_wait` until a socket is readable and then handles what is ready. At
the rates a PBX of one core meets (a few hundred SIP messages a second) most datagrams wake the loop on their
own, and on a virtual machine a wake-up is dear: the process is woken (~0.3 ms of CPU per request for the bare
responder at 400/s against ~0.16 ms at 1,000/s, bench/RESULTS-issue9.md, session 11) and the message's code
runs with cold caches (the same calls cost twice the CPU when each message follows an idle gap). With
`[pbx] poll_window` set, `NappingPoller` wraps the reactor's poller: while the loop is busy (its last poll
waited less than the window for its events) it sleeps what is left of the window since that wake-up before
polling again, so the datagrams that arrive meanwhile are read in one turn (a UDP port reads until EAGAIN).

- An idle loop never naps: the first message after a quiet spell is handled at once.
- Timers are not delayed: the nap is cut to the poll's timeout (the next timer; prompts are paced by timers).
- A loop whose turn took longer than the window goes straight on (overload: no nap at all).
- What waits is I/O: a SIP message by up to the window per hop, and RTP through the built-in relay by up
  to the window (jitter). Hence off by default; docs/configuration.md has what it was measured to save.

Only `pbx/tap.py` installs it (it alone names the reactor); it knows nothing of SIP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class NappingPoller:
    """A poller (`select.epoll`) whose `poll` naps first while the loop is busy; everything else (register,
    modify, unregister, close) passes through.

    Args:
        poller: the reactor's poller.
        window: the shortest time between two wake-ups while busy, in seconds.
        sleep, monotonic: injected for tests.
    """

    def __init__(
        self,
        poller: Any,
        window: float,
        *,
        sleep: Callable[[float], object] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._poller = poller
        self._window = window
        self._sleep = sleep
        self._monotonic = monotonic
        self._woke = 0.0  # when the last poll that returned events returned
        self._busy = False  # that poll waited less than a window for them
        self.wakeups = 0
        self.naps = 0

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        monotonic = self._monotonic
        if self._busy and timeout != 0:
            nap = self._window - (monotonic() - self._woke)
            if nap > 0:
                if timeout >= 0:
                    nap = min(nap, timeout)
                    timeout -= nap
                self._sleep(nap)
                self.naps += 1
        entered = monotonic()
        events = self._poller.poll(timeout, maxevents)
        if events:
            self._woke = now = monotonic()
            self._busy = now - entered < self._window
            self.wakeups += 1
        else:
            self._busy = False
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._poller, name)


def nap_between_polls(reactor: Any, window: float) -> NappingPoller | None:
    """Wrap Twisted's epoll reactor's poller in a `NappingPoller`; None (nothing done) for other reactors
    (the poll reactor's `select.poll` counts its timeout in milliseconds, not seconds) or a window of 0."""
    poller = getattr(reactor, "_poller", None)
    if type(reactor).__name__ != "EPollReactor" or not hasattr(poller, "poll") or window <= 0:
        return None
    napping = NappingPoller(poller, window)
    reactor._poller = napping
    return napping
