"""The media clock: one shared ticker that paces every sending endpoint in 20 ms packets.

Every packet is scheduled against an ABSOLUTE deadline, `epoch + k * slot`, computed from the reactor clock,
never "20 ms after the previous one": a late timer does not push later packets back, so nothing drifts over
minutes (the cause of choppy audio in Python SIP libraries that `sleep(0.02)` between packets).

One timer serves all endpoints. The 20 ms packet interval is split into `phases` slots (default 10 slots of
2 ms); each endpoint is put in the least-loaded phase when it registers and is paced on its phase's grid,
`epoch + phase * slot + n * 20 ms`. With 400 playbacks, each timer call then sends ~40 packets instead of
400, so the last packet of a burst leaves ~10x sooner after its deadline (a UDP send costs ~15-20 us in
Python: 400 in one burst is 6-8 ms). `phases=1` gives one timer call per 20 ms tick for everyone.

When the timer fires late (a busy reactor), the slots that are due are all served, oldest first (each
endpoint sends what it owes, with the deadlines it had). When it is more than `max_behind` (100 ms) late,
the pacer resynchronises instead of bursting: it skips to the current slot and counts a resync. The pacer
stops its timer when nobody is registered and starts a new epoch when someone registers again.

Nothing here knows about RTP: a member is anything with `pace(deadline: float) -> None`.
"""

from __future__ import annotations

import math
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["MediaClock", "Paced", "PACKET_SECONDS"]

PACKET_SECONDS = 0.020
"""The packet interval (ptime) of every endpoint: 20 ms, 160 samples at 8 kHz."""

_log = Logger()


class Paced(Protocol):
    """What registers with the `MediaClock`."""

    def pace(self, deadline: float) -> None:
        """Send what is due at `deadline` (reactor seconds); called once per packet interval."""


class MediaClock:
    """The shared 20 ms ticker.

    Args:
        clock: the reactor's time (task.Clock in tests).
        phases: slots per packet interval (1..20); members are spread over them.
        max_behind: seconds behind schedule beyond which the pacer skips ahead instead of catching up.
    """

    def __init__(
        self, clock: IReactorTime, phases: int = 10, interval: float = PACKET_SECONDS, max_behind: float = 0.1
    ) -> None:
        if not 1 <= phases <= 20:
            raise ValueError(f"phases must be 1..20, got {phases}")
        if interval <= 0 or max_behind < interval:
            raise ValueError("interval must be positive and max_behind at least one interval")
        self.clock = clock
        self.phases = phases
        self.interval = interval
        self.slot = interval / phases
        self.max_behind = max_behind
        self.resyncs = 0  # times the pacer skipped ahead
        self.late_calls = 0  # timer calls that had more than one slot due
        self.errors = 0
        self._members: list[dict[Paced, None]] = [{} for _ in range(phases)]
        self._phase_of: dict[Paced, int] = {}
        self._epoch = 0.0
        self._next = 0  # index of the next slot to serve
        self._timer: IDelayedCall | None = None
        self._firing = False  # inside _fire: the timer is off but the clock is running

    def __len__(self) -> int:
        return len(self._phase_of)

    def __contains__(self, member: object) -> bool:
        return member in self._phase_of

    @property
    def running(self) -> bool:
        return self._timer is not None or self._firing

    def add(self, member: Paced) -> float:
        """Register `member`; returns its first deadline (its first `pace` call is for that deadline)."""
        if member in self._phase_of:
            return self._deadline_for(self._phase_of[member])
        idle = self._timer is None and not self._firing
        if idle:
            self._epoch = self.clock.seconds()
            self._next = 0
        phase = min(range(self.phases), key=lambda p: len(self._members[p]))
        self._members[phase][member] = None
        self._phase_of[member] = phase
        if idle:
            self._schedule(self._epoch)
        return self._deadline_for(phase)

    def remove(self, member: Paced) -> None:
        """Unregister `member` (no-op when it is not registered); safe from inside `pace`."""
        phase = self._phase_of.pop(member, None)
        if phase is None:
            return
        del self._members[phase][member]
        if not self._phase_of and self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def stop(self) -> None:
        """Unregister everyone and stop the timer."""
        for member in list(self._phase_of):
            self.remove(member)

    def _deadline_for(self, phase: int) -> float:
        """The first deadline at or after the next served slot for a member of `phase`."""
        k = self._next + (phase - self._next) % self.phases
        return self._epoch + k * self.slot

    def _schedule(self, deadline: float) -> None:
        delay = max(0.0, deadline - self.clock.seconds())
        self._timer = self.clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        # The latest slot whose deadline has come; a timer firing up to 1 % of a slot early (float rounding of
        # large reactor times: 0.2 us at 1.7e9 s) counts as on time, so it can never spin.
        due = math.floor((now - self._epoch) / self.slot + 0.01)
        if due < self._next:  # fired early: wait for the deadline
            self._schedule(self._epoch + self._next * self.slot)
            return
        if (now - (self._epoch + self._next * self.slot)) > self.max_behind:
            self.resyncs += 1
            self._next = due  # skip ahead: no burst of stale packets
        elif due > self._next:
            self.late_calls += 1
        self._firing = True
        try:
            while self._next <= due and self._phase_of:
                k = self._next
                self._next = k + 1  # members added from inside pace() start at the next slot
                members = self._members[k % self.phases]
                if members:
                    deadline = self._epoch + k * self.slot
                    for member in list(members):
                        try:
                            member.pace(deadline)
                        except Exception:
                            self.errors += 1
                            _log.failure("media clock: a member failed to pace; removing it")
                            self.remove(member)
        finally:
            self._firing = False
        if self._phase_of and self._timer is None:
            self._schedule(self._epoch + self._next * self.slot)
