"""Toll-fraud controls, part two: how many outbound calls and minutes a caller and a tenant may use.

Each limited party (an extension, a tenant) is a key with a `Limit`: at most ``concurrent`` outbound calls
at once, ``calls_per_hour`` new outbound calls and ``minutes_per_hour`` minutes of answered outbound calls in
any window of one hour (a sliding window, not a clock hour: a burst at 10:59 still counts at 11:30). Minutes
are counted from the moment an outbound call is answered; a call in progress counts the minutes it has had so
far, so a call that has run for 50 minutes leaves 10 of a 60-minute budget at once, not when it ends.

A limit refuses **new** calls; it never ends a call in progress (the PBX's ``max_call_duration`` does that).
0 means no limit.

A call is an *owner*: `start` counts it (once per hour window, however many trunks a failover dial tries,
and as one concurrent call while it has a leg out), `answered` starts its minutes, `stop` ends its concurrent
call (its minutes stop), `forget` drops it at the end of the call. `check` asks before a new leg: an owner
that already holds its concurrent call passes (the next fork of the same call).

No timers: old entries are dropped when a key is looked at. Time comes from the injected clock.
It knows nothing of SIP, calls or the config.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime

WINDOW = 3600.0
"""The sliding window of the hourly limits, in seconds."""

SWEEP = 60.0
"""How often (at most) `OutboundLimits.start` drops the keys that used nothing in the window, in seconds."""


@dataclass(frozen=True, slots=True)
class Limit:
    """The limits of one key; 0 for none."""

    concurrent: int = 0
    calls_per_hour: int = 0
    minutes_per_hour: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.concurrent or self.calls_per_hour or self.minutes_per_hour)


@dataclass(slots=True)
class _Usage:
    """What one key used: calls now, call starts and answered spans in the window, answered calls open."""

    active: set[Hashable] = field(default_factory=set)
    starts: deque[float] = field(default_factory=deque)
    spans: deque[tuple[float, float]] = field(default_factory=deque)  # (answered, ended), by end time
    open: dict[Hashable, float] = field(default_factory=dict)  # owner -> answered at

    def prune(self, since: float) -> None:
        while self.starts and self.starts[0] <= since:
            self.starts.popleft()
        while self.spans and self.spans[0][1] <= since:
            self.spans.popleft()

    def seconds(self, now: float, since: float) -> float:
        used = sum(end - max(begin, since) for begin, end in self.spans)
        return used + sum(now - max(begin, since) for begin in self.open.values())

    def __bool__(self) -> bool:
        return bool(self.active or self.starts or self.spans or self.open)


@dataclass(frozen=True, slots=True)
class Breach:
    """Which limit a new call would break: the key (``"tenant default"``) and the limit's name."""

    key: str
    limit: str
    used: float
    allowed: float

    def __str__(self) -> str:
        return f"{self.key}: {self.limit} {self.used:g} of {self.allowed:g}"


class OutboundLimits:
    """Concurrent calls, calls per hour and minutes per hour per key (module docstring).

    Args:
        clock: the time source.
        window: the sliding window in seconds (one hour).
    """

    def __init__(self, clock: IReactorTime, window: float = WINDOW) -> None:
        self._clock = clock
        self._window = window
        self._usage: dict[str, _Usage] = {}
        self._owners: dict[Hashable, tuple[tuple[str, ...], bool]] = {}  # owner -> (keys, active)
        self._swept = clock.seconds()

    def _get(self, key: str, now: float) -> _Usage | None:
        usage = self._usage.get(key)
        if usage is not None:
            usage.prune(now - self._window)
            if not usage:
                del self._usage[key]
                return None
        return usage

    def check(self, owner: Hashable, keys: Sequence[tuple[str, Limit]]) -> Breach | None:
        """The first limit a new outbound leg of `owner` would break, or None. An owner holding its
        concurrent call already passes; one counted this hour is not counted again."""
        held = self._owners.get(owner)
        if held is not None and held[1]:
            return None
        now = self._clock.seconds()
        since = now - self._window
        for key, limit in keys:
            if not limit:
                continue
            usage = self._get(key, now)
            if usage is None:
                continue
            if limit.concurrent and len(usage.active) >= limit.concurrent:
                return Breach(key, "concurrent calls", len(usage.active), limit.concurrent)
            if held is None and limit.calls_per_hour and len(usage.starts) >= limit.calls_per_hour:
                return Breach(key, "calls per hour", len(usage.starts), limit.calls_per_hour)
            minutes = usage.seconds(now, since) / 60
            if limit.minutes_per_hour and minutes >= limit.minutes_per_hour:
                return Breach(key, "minutes per hour", round(minutes, 1), limit.minutes_per_hour)
        return None

    def start(self, owner: Hashable, keys: Sequence[str]) -> None:
        """`owner` has an outbound leg out: one concurrent call per key, and one call this hour the
        first time."""
        held = self._owners.get(owner)
        if held is not None and held[1]:
            return
        now = self._clock.seconds()
        if now - self._swept >= SWEEP:
            self.sweep()
        names = tuple(keys) if held is None else held[0]
        for key in names:
            usage = self._usage.get(key)
            if usage is None:
                usage = self._usage[key] = _Usage()
            usage.active.add(owner)
            if held is None:
                usage.starts.append(now)
        self._owners[owner] = (names, True)

    def answered(self, owner: Hashable) -> None:
        """The outbound call of `owner` was answered: its minutes count from now."""
        held = self._owners.get(owner)
        if held is None or not held[1]:
            return
        now = self._clock.seconds()
        for key in held[0]:
            usage = self._usage.get(key)
            if usage is not None:
                usage.open.setdefault(owner, now)

    def stop(self, owner: Hashable) -> None:
        """`owner` has no outbound leg out any more: its concurrent call and its minutes end."""
        held = self._owners.get(owner)
        if held is None or not held[1]:
            return
        now = self._clock.seconds()
        for key in held[0]:
            usage = self._usage.get(key)
            if usage is None:
                continue
            usage.active.discard(owner)
            begin = usage.open.pop(owner, None)
            if begin is not None and now > begin:
                usage.spans.append((begin, now))
            if not usage:
                del self._usage[key]
        self._owners[owner] = (held[0], False)

    def forget(self, owner: Hashable) -> None:
        """The call `owner` is over (`stop`, then no memory of it but its counts)."""
        self.stop(owner)
        self._owners.pop(owner, None)

    def sweep(self) -> None:
        """Forget every key that used nothing in the window (`start` does it every `SWEEP` seconds, so the
        memory kept follows the parties that called out in the last hour)."""
        now = self._swept = self._clock.seconds()
        for key in list(self._usage):
            self._get(key, now)

    def usage(self, key: str) -> tuple[int, int, float]:
        """(concurrent calls, calls in the last hour, minutes in the last hour) of `key`."""
        now = self._clock.seconds()
        usage = self._get(key, now)
        if usage is None:
            return 0, 0, 0.0
        return len(usage.active), len(usage.starts), usage.seconds(now, now - self._window) / 60
