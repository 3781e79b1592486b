"""The key presses of one call leg: de-duplicated across sources, buffered, told to subscribers, collected.

`DigitBuffer` is the digit half of `pbx.media.endpoint.MediaEndpoint` (read `IMediaEndpoint` for what the
application sees). A digit arrives from one of `DIGIT_SOURCES` (RFC 4733 telephone-events, the in-band
Goertzel detector, SIP INFO or `inject_digit`); the same digit from ANOTHER source within `DEDUP_SECONDS` is
the same key press (phones that send both RFC 4733 and INFO, or whose tones leak in band) and is only counted
in `duplicates`. Digits are buffered until a `collect` takes them or `clear` drops them; `collect` ends on
`max_digits`, a terminator, or its inter-digit timeout.

The endpoint decides what happens between `first_report` and `publish` (a recording's stop digit is not
published) and after it (barge-in ends a prompt before `take_buffered` hands the digit to a `collect`). This
module knows nothing of RTP, SIP or the reactor beyond an `IReactorTime` for its timers.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pbx.media.interfaces import DIGIT_SOURCES

__all__ = ["DEDUP_SECONDS", "DigitBuffer"]

DEDUP_SECONDS = 1.0
"""A digit equal to one delivered from another source less than this long ago is the same key press."""

_log = Logger(namespace="pbx.media.endpoint")  # its messages are the endpoint's


class _Collect:
    __slots__ = ("deferred", "got", "max_digits", "terminators", "timeout", "timer")

    def __init__(self, max_digits: int, timeout: float, terminators: str) -> None:
        self.deferred: Deferred[str] = Deferred()
        self.max_digits = max_digits
        self.timeout = timeout
        self.terminators = terminators
        self.got = ""
        self.timer: IDelayedCall | None = None


class DigitBuffer:
    """De-duplication, buffer, subscribers and the one pending `collect` of a call leg's digits.

    Attributes:
        counts: digits reported per source (duplicates excluded), for `EndpointStats.digits`.
        duplicates: reports of a key press already delivered from another source.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.counts = dict.fromkeys(DIGIT_SOURCES, 0)
        self.duplicates = 0
        self._recent: list[tuple[float, str, set[str]]] = []  # delivered digits: time, digit, sources
        self._digits: list[str] = []
        self._subscribers: list[Callable[[str, str], object]] = []
        self._collect: _Collect | None = None

    def first_report(self, digit: str, source: str) -> bool:
        """Whether `digit` from `source` is a new key press (then counted for `source`).

        False when the same digit came from another source less than `DEDUP_SECONDS` ago: the same key
        press, counted in `duplicates` only.
        """
        now = self.clock.seconds()
        recent = [entry for entry in self._recent if now - entry[0] < DEDUP_SECONDS]
        self._recent = recent
        for _, seen, sources in recent:
            if seen == digit and source not in sources:
                sources.add(source)  # the same key press, reported by another source
                self.duplicates += 1
                return False
        recent.append((now, digit, {source}))
        self.counts[source] += 1
        return True

    def publish(self, digit: str, source: str) -> None:
        """Buffer `digit` and tell every subscriber (one that raises is logged, the others still hear)."""
        self._digits.append(digit)
        for callback in list(self._subscribers):
            try:
                callback(digit, source)
            except Exception:
                _log.failure("media endpoint: a digit subscriber failed")

    def on_digit(self, callback: Callable[[str, str], object]) -> Callable[[], None]:
        """Call `callback(digit, source)` for each published digit; returns the function that stops it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def unsubscribe_all(self) -> None:
        self._subscribers.clear()

    def clear(self) -> None:
        """Drop the buffered digits."""
        self._digits.clear()

    def collect(
        self,
        max_digits: int,
        timeout: float,
        first_timeout: float | None,
        terminators: str,
        closed: bool = False,
    ) -> Deferred[str]:
        """Collect up to `max_digits`, starting with the buffered ones (see `IMediaEndpoint.collect`).

        A pending collect ends first (with what it has); when `closed`, the new one fires at once with "".
        """
        if max_digits < 1 or timeout <= 0 or (first_timeout is not None and first_timeout <= 0):
            raise ValueError("max_digits must be at least 1 and the timeouts positive")
        self.end_collect()
        state = self._collect = _Collect(max_digits, timeout, terminators)
        deferred = state.deferred
        if closed:
            self.end_collect()
            return deferred
        self.take_buffered()
        if self._collect is state and state.timer is None:
            wait = timeout if state.got or first_timeout is None else first_timeout
            state.timer = self.clock.callLater(wait, self.end_collect)
        return deferred

    def take_buffered(self) -> None:
        """Hand the buffered digits to the pending collect, if any, and restart its inter-digit timer."""
        state = self._collect
        if state is None or not self._digits:
            return
        while self._digits:
            digit = self._digits.pop(0)
            if digit in state.terminators:
                self.end_collect()
                return
            state.got += digit
            if len(state.got) >= state.max_digits:
                self.end_collect()
                return
        if state.timer is not None and state.timer.active():
            state.timer.reset(state.timeout)
        else:
            state.timer = self.clock.callLater(state.timeout, self.end_collect)

    def end_collect(self) -> None:
        """Fire the pending collect, if any, with the digits it has."""
        state, self._collect = self._collect, None
        if state is None:
            return
        if state.timer is not None and state.timer.active():
            state.timer.cancel()
        state.deferred.callback(state.got)
