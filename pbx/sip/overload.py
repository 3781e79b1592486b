"""Overload control in one server: how late the event loop runs; new work shed early (RFC 7339's idea).

A single-threaded server that takes in more than it can finish does not slow down gracefully: requests wait
in the socket buffer, clients retransmit them, the answers arrive after the clients gave up, and the work done
for them is lost (goodput collapses). RFC 7339 lets an overloaded server tell its upstream neighbours to send
less; what any server can do by itself is what RFC 3261 21.5.4 and RFC 7339 3 describe for the last resort:
refuse new work early and cheaply with `503 Service Unavailable` and `Retry-After`, so that the work already
accepted (transactions in progress, dialogs, retransmissions) keeps completing.

- `LagMonitor` measures the event loop's lag: a timer due every `interval` seconds notes how late it fired,
  smoothed (an exponentially weighted moving average). `lag` (seconds), `level()` and `overloaded` are the
  views others read (metrics, the shedding below). Time is injected.
- `SocketQueueDelay` estimates how long datagrams wait in the UDP receive buffers (every datagram read
  counts in the drain rate, those the admission refuses included), `OverloadGuard.work_delay` how long new
  work waits behind the work in flight (Little's law); the monitor adds both to its samples.
- `QueueDrop` (optional) drops new exchanges before parsing while the receive buffers' wait is too long.
- `OverloadGuard` decides, for a new request that could start work (an INVITE or REGISTER outside any
  dialog), whether to admit it, refuse it with a stateless `503` + `Retry-After`, or drop it unanswered:
  from the lag level, a cap on work in flight (asynchronous work the transaction users have not finished)
  and an optional cap on the rate of new exchanges. The stack asks it before parsing a UDP datagram when
  `pbx.sip.refusal` (or `pbx.sip.peek`) recognises a new INVITE or REGISTER in it (the cheapest refusal),
  else after parsing.

What is never shed: responses, ACK, CANCEL, requests inside a dialog (a To tag: BYE, re-INVITE, ...),
retransmissions of requests already accepted or answered (the stack checks them first). A new request that
carries credentials finishes an exchange whose first request was admitted (the challenge was sent), so it is
refused only past the critical level or the cap on work in flight.

This module knows nothing of the stack, of transactions or of the PBX: `pbx.sip.stack.SipStack` asks it.
"""

from __future__ import annotations

import enum
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pbx.sip.intake import DatagramIntake

NORMAL, HIGH, CRITICAL = 0, 1, 2
"""Levels of `LagMonitor.level()`: below `high`, from `high`, from `critical`."""


class LagMonitor:
    """How long new input waits, smoothed: a timer due every `interval` s notes how late it fires, plus what
    `queue_delay` (if given) says input waits in socket buffers before the loop reads it.

    A loop that is busy for 120 ms between two turns fires the timer up to 120 ms late; the smoothed lag
    follows such samples with weight `smoothing` (1.0: no smoothing). The timer alone cannot see a backlog in
    a socket's receive buffer (the loop reads a batch per turn, however many wait behind it): `queue_delay`
    (`SocketQueueDelay`) adds that wait. `listeners` are called with the monitor after each sample. The
    monitor keeps one `IDelayedCall` while started and none once stopped.

    Args:
        clock: the reactor's time.
        interval: seconds between two measures.
        smoothing: the weight of a new sample in the moving average (0 < smoothing <= 1).
        attack: the weight of a sample above the average (None: `smoothing`); 1.0 follows a rising lag at
            once (a backlog building up is seen within one sample) and lets it fall back slowly.
        high: lag in seconds from which `level()` is `HIGH`.
        critical: lag in seconds from which `level()` is `CRITICAL`.

    Attributes:
        lag: the smoothed lag in seconds.
        last: the last sample in seconds.
        peak: the highest sample seen since start.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        interval: float = 0.05,
        smoothing: float = 0.25,
        high: float = 0.2,
        critical: float = 1.0,
        queue_delay: Callable[[], float] | None = None,
        attack: float | None = None,
    ) -> None:
        attack = smoothing if attack is None else attack
        if interval <= 0 or not 0 < smoothing <= 1 or not 0 < attack <= 1 or not 0 < high <= critical:
            raise ValueError("need interval > 0, 0 < smoothing, attack <= 1 and 0 < high <= critical")
        self._clock = clock
        self.interval = interval
        self.smoothing = smoothing
        self.attack = attack
        self.high = high
        self.critical = critical
        self.lag = 0.0
        self.last = 0.0
        self.peak = 0.0
        self.queue_delay = queue_delay
        self.listeners: list[Callable[[LagMonitor], object]] = []
        self._due = 0.0
        self._timer: IDelayedCall | None = None

    @property
    def running(self) -> bool:
        return self._timer is not None

    def start(self) -> None:
        """Start measuring (again); the lag starts from zero."""
        if self._timer is not None:
            return
        self.lag = self.last = 0.0
        self._schedule()

    def stop(self) -> None:
        """Stop measuring; no timer is left behind."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _schedule(self) -> None:
        self._due = self._clock.seconds() + self.interval
        self._timer = self._clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        late = self._clock.seconds() - self._due
        if self.queue_delay is not None:
            late = max(0.0, late) + self.queue_delay()
        self._schedule()
        self.sample(late)
        for listener in self.listeners:
            listener(self)

    def sample(self, late: float) -> None:
        """Take one measure of lateness (seconds; negative values count as 0)."""
        late = max(0.0, late)
        self.last = late
        self.peak = max(self.peak, late)
        self.lag += (self.attack if late > self.lag else self.smoothing) * (late - self.lag)

    def level(self) -> int:
        """`NORMAL`, `HIGH` or `CRITICAL` for the smoothed lag."""
        lag = self.lag
        return CRITICAL if lag >= self.critical else HIGH if lag >= self.high else NORMAL

    @property
    def overloaded(self) -> bool:
        """Whether the smoothed lag is at or above `high`."""
        return self.lag >= self.high


SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
"""Linux (4.6+): a socket's memory counters; the first: bytes queued for reading (SK_MEMINFO_RMEM_ALLOC)."""


class SocketQueueDelay:
    """How long a datagram waits in the receive buffers of `sockets` before the loop reads it (an estimate).

    The bytes queued (Linux `SO_MEMINFO`; elsewhere nothing is measured and the delay is 0) over the bytes a
    queued datagram takes there (`bytes_per_datagram`: a 500-byte SIP request takes about 1,280 on Linux)
    give the datagrams waiting; over the rate the loop reads them (smoothed, at least `min_rate`) that is
    the wait. Meant as `LagMonitor`'s `queue_delay`, called once per sample.

    The read rate counts every datagram read, those the admission refuses included (`read`: the pre-parse
    entry's total, `pbx.sip.intake`): a flood of a blocked source drains at about a microsecond a datagram
    and is no backlog. While most of what was read since the last call was refused (`refused`: the
    admission's running total), a backlog is one when two samples in a row see it (the smaller of the last
    two estimates is returned): when a flood starts, the loop is busy with the burst the admission let
    through while the flood fills the buffer, and the rate of that turn says nothing of how fast the rest
    drains (the next turn drops it); a real backlog of the server's own work is still there one sample
    later. Otherwise the estimate is returned at once (a growing backlog of the server's own work must be
    seen without delay).

    Args:
        clock: the reactor's time.
        sockets: the sockets to look at now (listeners open after this is built).
        read: datagrams read so far (a running total).
        refused: datagrams the admission refused so far (a running total), or None.
        bytes_per_datagram: receive-buffer bytes one queued datagram takes.
        min_rate: the read rate assumed at least (datagrams per second), so that an idle loop that just got
            a burst is not taken for a slow one.
    """

    def __init__(
        self,
        clock: IReactorTime,
        sockets: Callable[[], Sequence[Any]],
        read: Callable[[], int],
        *,
        bytes_per_datagram: int = 1280,
        min_rate: float = 500.0,
        refused: Callable[[], int] | None = None,
    ) -> None:
        self._clock = clock
        self._refused = refused
        self._refused_before = 0
        self._sockets = sockets
        self._read = read
        self._per_datagram = bytes_per_datagram
        self._min_rate = min_rate
        self.rate = min_rate
        self.queued = 0.0
        self._last: tuple[float, int] | None = None  # (time, datagrams read) at the last call
        self._previous = 0.0  # the estimate of the last call
        self.delay = 0.0  # what the last call returned
        self._supported = True

    def __call__(self) -> float:
        now, count = self._clock.seconds(), self._read()
        then, before = self._last or (now, count)
        self._last = (now, count)
        refused = self._refused() if self._refused is not None else 0
        flooded = refused > self._refused_before  # the admission refused some since the last call
        self._refused_before = refused
        if now > then:
            self.rate = max(self._min_rate, 0.5 * self.rate + 0.5 * (count - before) / (now - then))
        queued = 0
        if self._supported:
            for sock in self._sockets():
                try:
                    queued += struct.unpack_from("I", sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))[0]
                except (OSError, struct.error, AttributeError):
                    self._supported = False  # not Linux, or not a socket: measure nothing from now on
                    queued = 0
                    break
        self.queued = queued / self._per_datagram
        estimate = self.queued / self.rate
        self.delay = min(estimate, self._previous) if flooded else estimate
        self._previous = estimate
        return self.delay


class ReceiveBufferLimit:
    """Shrinks the UDP sockets' receive buffers once the lag reaches `from_level` (`CRITICAL` or `HIGH`),
    restores them below `high`.

    A large buffer absorbs bursts and pauses; under sustained overload it becomes a queue of seconds, and
    everything in it is answered too late (after the clients' retransmissions, which join the queue). A
    small buffer under overload bounds that wait, and the kernel drops the excess at no cost to the loop;
    what it drops is retransmitted by its sender (RFC 3261 17: Timers A and E), also requests in dialogs
    and responses, which lose no state by it. A `LagMonitor` listener.

    Args:
        sockets: the sockets to size now.
        overloaded_size: SO_RCVBUF (bytes) under overload.
        normal_size: SO_RCVBUF (bytes) to restore (the transport's setting).
        from_level: the lag level from which the buffers are small (`CRITICAL` or `HIGH`).
        hold: samples below `HIGH` in a row before they grow back (0: at the first): a buffer that grows
            back at once fills again with the next burst.

    Attributes:
        limited: whether the buffers are small now.
        from_level: as given.
    """

    def __init__(
        self,
        sockets: Callable[[], Sequence[Any]],
        overloaded_size: int,
        normal_size: int,
        from_level: int = CRITICAL,
        hold: int = 0,
    ) -> None:
        self._sockets = sockets
        self.from_level = from_level
        self.hold = hold
        self._small = overloaded_size
        self._normal = normal_size
        self.limited = False
        self._calm = 0  # samples below HIGH in a row while limited

    def __call__(self, monitor: LagMonitor) -> None:
        level = monitor.level()
        limit = level >= self.from_level or (self.limited and level >= HIGH)
        if self.limited:
            self._calm = 0 if limit else self._calm + 1
            limit = self._calm <= self.hold  # stay small for `hold` calm samples
        if limit == self.limited:
            return
        self._calm = 0
        self.limited = limit
        size = self._small if limit else self._normal
        for sock in self._sockets():
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            except (OSError, AttributeError):
                continue


class QueueDrop:
    """Drops new exchanges before parsing while datagrams wait too long in the receive buffers (a
    `LagMonitor` listener): from one sample to the next, the intake's `dropping` follows whether the
    `SocketQueueDelay` is at least `target` seconds.

    A queue longer than the clients' retransmission timer (RFC 3261 17.1.1.2, 17.1.2.2: T1, 500 ms) feeds
    itself: every request in it is sent again before it is read, and refusing each with a 503 (tens of
    microseconds) is what keeps the loop busy. Dropping new INVITEs and REGISTERs (no credentials, no To
    tag: `pbx.sip.intake.new_exchange`) costs about as little as the admission's drops, so the queue drains
    within a turn or two; answers to admitted work (requests with credentials, retransmissions, requests in
    dialogs, responses) are never dropped this way. Once the queue is short, new requests get the guard's
    verdicts again (503 with Retry-After).

    Args:
        intake: the pre-parse entry whose `dropping` is set.
        delay: the receive buffers' wait, as sampled by the monitor.
        target: seconds of wait from which new exchanges are dropped.
    """

    def __init__(self, intake: DatagramIntake, delay: SocketQueueDelay, target: float) -> None:
        self._intake = intake
        self._delay = delay
        self.target = target

    def __call__(self, monitor: LagMonitor) -> None:
        self._intake.dropping = self._delay.delay >= self.target  # as sampled for the monitor


class Prioritize:
    """While the guard sheds, the work in progress goes first (a `LagMonitor` listener).

    With one UDP socket for everything, the datagrams that complete accepted work (responses from the far
    end, ACKs, BYEs and their answers) were handled in arrival order among the new INVITEs and REGISTERs;
    offered five times what it holds, the PBX answered admitted calls late, clients and callees
    retransmitted, and some admitted calls failed (each call's set-up crosses the server three or four
    times). While `guard.shedding`, from one sample to the next, the intake defers new INVITEs and
    REGISTERs (and their retransmissions) to the end of the reactor turn (`DatagramIntake.later`): whatever
    else was read in that turn is handled first. Once the guard sheds nothing, they are handled at once again.

    With `read_budget` (bytes, 0 by default), each UDP port also reads up to that much per turn (Twisted's
    `maxThroughput`, normally 256 KiB). Reading a full receive buffer at once was measured worse at five
    times the held load (REGISTER on time 1,326/s against 1,834/s, calls 140/s against 408/s, set-up 2-4 s):
    the whole batch of new requests is then refused or admitted in one long stretch while the buffer fills
    again, so everything waits longer; with Twisted's budget, reading and handling stay interleaved.

    Args:
        intake: the pre-parse entry (its `prioritize` and `new_starts` are set).
        guard: whose `shedding` decides.
        ports: the listening UDP ports now.
        read_budget: datagram bytes a port reads per turn at most while prioritizing; 0 leaves the ports'
            own budget.
    """

    def __init__(
        self,
        intake: DatagramIntake,
        guard: OverloadGuard,
        ports: Callable[[], Sequence[Any]],
        read_budget: int = 0,
    ) -> None:
        self._intake = intake
        self._guard = guard
        self._ports = ports
        self.read_budget = read_budget
        self._normal: dict[Any, int] = {}  # port -> its own budget, while changed
        intake.new_starts = guard.starts

    def __call__(self, monitor: LagMonitor) -> None:
        on = self._guard.shedding
        if on == self._intake.prioritize:
            return
        self._intake.prioritize = on
        normal = self._normal
        if on and self.read_budget:
            for port in self._ports():
                budget = getattr(port, "maxThroughput", None)
                if isinstance(budget, int):
                    normal[port] = budget
                    port.maxThroughput = max(budget, self.read_budget)
        else:
            for port, budget in normal.items():
                port.maxThroughput = budget
            normal.clear()


class Verdict(enum.Enum):
    """What to do with a new request."""

    ADMIT = "admit"
    REJECT = "reject"  # a stateless 503 with Retry-After
    DROP = "drop"  # no answer at all


@dataclass(frozen=True)
class OverloadPolicy:
    """The knobs of `OverloadGuard` (the `[overload]` config section, docs/configuration.md).

    Attributes:
        methods: the methods of new requests that may be shed (outside dialogs only).
        max_pending: work in flight (transaction users' unfinished asynchronous work: store commits,
            lookups) from which new requests get a 503; 0: no cap.
        max_rate: new exchanges (requests without credentials) admitted per second, in a token bucket of
            `burst`; 0: no cap. Mostly for tests and small hosts: it makes capacity deterministic.
        burst: the bucket's depth (0: max_rate, at least 1).
        retry_after: seconds in the 503's Retry-After (RFC 3261 20.33).
        drop_critical: at the critical lag level, drop new requests unanswered instead of answering 503.
        decrease: while the lag is at or above `high`, the share of new exchanges admitted is multiplied by
            this after each sample (down to `min_admit`) ...
        increase: ... and below `high` it grows by this much per sample (up to 1): additive increase,
            multiplicative decrease, so that admissions settle near what the server can finish.
        min_admit: the smallest share admitted below the critical level.
        follow_completions: while the lag is at or above `high`, also admit new exchanges no faster than
            exchanges complete (requests with credentials admitted: the second half of an exchange), times
            `drain`, in a token bucket (`admit_rate`), and past twice `high` also times `2 * high / lag`
            (a backlog after a burst or a pause drains in seconds: bench/RESULTS-issue14-overload.md, session
            13); below `high` that rate grows by `increase` per sample until the share is back at 1. A rate
            measured, not a share of what arrives: at 5x the held load a share of the arrivals swings, the
            rate of completions does not.
            Off here (the library's default: the AIMD share alone); the PBX's `[overload]` turns it on
            by default (`pbx.config`, session 12).
        drain: the part of the completion rate admitted while the lag is high (below 1: the queue drains).
        finish_critical: at the critical level, still admit requests with credentials (the second half of
            an exchange admitted before, whose first half's work would otherwise be lost), within the cap
            on work in flight; only new exchanges are shed.
        reject_high: from `high`, refuse a share of new exchanges (503); False: admit them until the
            critical level and let the kernel drop the excess (`ReceiveBufferLimit` from `HIGH`).
    """

    methods: frozenset[str] = frozenset({"INVITE", "REGISTER"})
    max_pending: int = 2000
    max_rate: float = 0.0
    burst: float = 0.0
    retry_after: int = 5
    drop_critical: bool = True
    decrease: float = 0.8
    increase: float = 0.05
    min_admit: float = 0.02
    follow_completions: bool = False
    drain: float = 0.95
    finish_critical: bool = False
    reject_high: bool = True


class OverloadGuard:
    """Admission of new work under overload, from the lag, the work in flight and the rate of new exchanges.

    Args:
        clock: the reactor's time (the rate bucket).
        monitor: the event loop's lag (None: the lag is not a signal).
        policy: thresholds and caps.

    The share of new exchanges admitted (`admit_share`) follows the lag, sample by sample (`on_sample`, a
    listener of the monitor): it shrinks while the lag is at or above `high` and grows back below it; the
    exchanges refused get a 503. At the critical level every new request is shed.

    Attributes:
        admit_share: the share of new exchanges (requests without credentials) admitted now, 0..1.
        pending: work in flight, kept by the stack (`work_started` / `work_finished`).
        counters: `admitted`, `rejected` (503), `dropped`, `rejected_lag`, `rejected_pending`,
            `rejected_rate`.
    """

    def __init__(
        self,
        clock: IReactorTime,
        monitor: LagMonitor | None = None,
        policy: OverloadPolicy = OverloadPolicy(),
    ) -> None:
        self._clock = clock
        self.monitor = monitor
        self.policy = policy
        self.methods = policy.methods
        self.retry_after = str(policy.retry_after)
        self.pending = 0
        self.admit_share = 1.0
        self._credit = 0.0
        self.admit_rate = 0.0  # new exchanges per second while following completions (0: not following)
        self.completion_rate = 0.0  # exchanges completed per second (smoothed)
        self._completed = 0  # requests with credentials admitted so far
        self._completed_seen = 0
        self._sampled = clock.seconds()
        self._rate_tokens = 0.0
        self._rate_refilled = self._sampled
        self.work_rate = 0.0  # pieces of work finished per second (smoothed, by `work_delay`)
        self.min_work_rate = 500.0
        self._finished = 0
        self._finished_seen = 0
        self._work_sampled = self._sampled
        if monitor is not None:
            monitor.listeners.append(self.on_sample)
        self._burst = float(policy.burst or max(1.0, policy.max_rate))
        self._tokens = self._burst
        self._refilled = clock.seconds()
        self.starts = tuple(method.encode() + b" " for method in sorted(policy.methods))
        """How the start lines of the requests to shed begin (for `pbx.sip.peek`)."""
        self.start_methods = {method.encode(): method for method in policy.methods}
        """The methods of the requests to shed, as bytes, to their names (for `pbx.sip.refusal`)."""
        self.counters = {
            "admitted": 0,
            "rejected": 0,
            "dropped": 0,
            "rejected_lag": 0,
            "rejected_pending": 0,
            "rejected_rate": 0,
        }

    def on_sample(self, monitor: LagMonitor) -> None:
        """Adjust the share of new exchanges admitted to the lag just measured (AIMD)."""
        policy = self.policy
        now = self._clock.seconds()
        elapsed, self._sampled = now - self._sampled, now
        if elapsed > 0:
            done, self._completed_seen = self._completed - self._completed_seen, self._completed
            self.completion_rate += 0.5 * (done / elapsed - self.completion_rate)
        if monitor.level() == NORMAL:
            self.admit_share = min(1.0, self.admit_share + policy.increase)
            if self.admit_share >= 1.0:
                self.admit_rate = 0.0
            elif self.admit_rate:
                self.admit_rate *= 1.0 + policy.increase
        else:
            self.admit_share = max(policy.min_admit, self.admit_share * policy.decrease)
            if policy.follow_completions and self.completion_rate >= 1.0:
                if not self.admit_rate:
                    self._rate_tokens, self._rate_refilled = 0.0, now
                # Past twice `high`, in proportion to the lag too (at four times `high`, half the rate): a
                # backlog of admitted work (the receive buffer full after a burst or a pause) then drains in
                # seconds; at `drain` alone it shrank by 5 % of the completion rate a second, and the work
                # admitted meanwhile was answered late (the clients retransmitting, the kernel dropping).
                backlog = min(1.0, 2.0 * monitor.high / monitor.lag)
                self.admit_rate = self.completion_rate * policy.drain * backlog

    @property
    def finishing(self) -> int:
        """Requests with credentials admitted so far (the second halves of exchanges: a running total)."""
        return self._completed

    def level(self) -> int:
        """The lag level, `NORMAL` without a monitor."""
        return self.monitor.level() if self.monitor is not None else NORMAL

    @property
    def shedding(self) -> bool:
        """Whether a new request may be refused now: the lag is high or was lately (fewer than all admitted),
        work in flight is at its cap, or a rate cap is set. Cheap; below this the stack does not screen
        datagrams before parsing (`pbx.sip.peek` would only add its cost to the parser's)."""
        policy = self.policy
        return (
            (self.admit_share < 1.0 and policy.reject_high)
            or policy.max_rate > 0
            or self.level() != NORMAL
            or (policy.max_pending > 0 and self.pending >= policy.max_pending)
        )

    def admit(self, credentials: bool) -> Verdict:
        """The verdict for a new request of one of `methods`, outside any dialog and not a retransmission.

        Args:
            credentials: whether it carries credentials (Authorization or Proxy-Authorization): it then
                finishes an exchange admitted before, and only the critical level or the cap on work in
                flight refuse it.
        """
        counters = self.counters
        monitor = self.monitor  # self.level(), one call less (asked for every new request while shedding)
        level = monitor.level() if monitor is not None else NORMAL
        if level == CRITICAL and not (credentials and self.policy.finish_critical):
            if self.policy.drop_critical:
                counters["dropped"] += 1
                return Verdict.DROP
            return self._reject("rejected_lag")
        policy = self.policy
        if policy.max_pending and self.pending >= policy.max_pending:
            return self._reject("rejected_pending")
        if not credentials and policy.reject_high:
            rate = self.admit_rate
            if rate:  # as fast as exchanges complete
                if not self._take_completion_token(rate):
                    return self._reject("rejected_lag")
            else:
                share = self.admit_share
                if share < 1.0:  # admit `share` of them, evenly spread
                    self._credit += share
                    if self._credit < 1.0:  # most of them while shedding: `_reject` inline
                        counters["rejected"] += 1
                        counters["rejected_lag"] += 1
                        return Verdict.REJECT
                    self._credit -= 1.0
        if not credentials:
            if policy.max_rate and not self._take_token():
                return self._reject("rejected_rate")
        else:
            self._completed += 1
        counters["admitted"] += 1
        return Verdict.ADMIT

    def surely_admits(self, credentials: bool) -> bool:
        """Whether `admit(credentials)` would admit a request now; changes and counts nothing. False also
        when the answer depends on a token bucket (`max_rate`, following completions): then ask `admit`.
        Lets the screen skip what only a refusal needs (`pbx.sip.shedding`) for requests parsed anyway."""
        policy = self.policy
        if not credentials:  # the share first: most new ones are refused while shedding
            if policy.max_rate:
                return False
            if policy.reject_high:
                share = self.admit_share
                if self.admit_rate or (share < 1.0 and self._credit + share < 1.0):
                    return False
        if policy.max_pending and self.pending >= policy.max_pending:
            return False
        return self.level() != CRITICAL or (credentials and policy.finish_critical)

    def refuses_new(self) -> bool:
        """Whether `admit(False)` would refuse a new exchange now (a 503 or a drop); changes and counts
        nothing. False also when a token bucket would decide (`max_rate`, following completions). Lets the
        screen refuse at once, from the raw bytes, what it would otherwise defer (`ShedScreen.quick`)."""
        policy, monitor = self.policy, self.monitor  # monitor.level() == CRITICAL, two calls less
        if (monitor is not None and monitor.lag >= monitor.critical) or (
            policy.max_pending and self.pending >= policy.max_pending
        ):
            return True
        if not policy.reject_high or self.admit_rate:
            return False
        share = self.admit_share
        return share < 1.0 and self._credit + share < 1.0

    def refuse(self) -> Verdict:
        """What `admit(False)` gives when `refuses_new()` is True (REJECT or DROP), counted as `admit`
        counts it; fewer steps than `admit`, for the refusal at once (`ShedScreen.quick`)."""
        counters, policy, monitor = self.counters, self.policy, self.monitor
        if monitor is not None and monitor.lag >= monitor.critical:
            if policy.drop_critical:
                counters["dropped"] += 1
                return Verdict.DROP
            why = "rejected_lag"
        elif policy.max_pending and self.pending >= policy.max_pending:
            why = "rejected_pending"
        else:  # the share: as `admit`, the credit grows by the share and stays below 1
            self._credit += self.admit_share
            why = "rejected_lag"
        counters["rejected"] += 1
        counters[why] += 1
        return Verdict.REJECT

    def _take_completion_token(self, rate: float) -> bool:
        now = self._clock.seconds()
        burst = max(1.0, rate * 0.05)  # 50 ms of them at once at most
        tokens = min(burst, self._rate_tokens + (now - self._rate_refilled) * rate)
        self._rate_refilled = now
        if tokens < 1.0:
            self._rate_tokens = tokens
            return False
        self._rate_tokens = tokens - 1.0
        return True

    def _reject(self, why: str) -> Verdict:
        self.counters["rejected"] += 1
        self.counters[why] += 1
        return Verdict.REJECT

    def _take_token(self) -> bool:
        now = self._clock.seconds()
        tokens = min(self._burst, self._tokens + (now - self._refilled) * self.policy.max_rate)
        self._refilled = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    # Work in flight, told by the stack.
    def work_started(self) -> None:
        self.pending += 1

    def work_finished(self, result: Any = None) -> Any:
        """Count one piece of work as done; returns `result` (usable as a Deferred callback)."""
        self.pending -= 1
        self._finished += 1
        return result

    def work_delay(self) -> float:
        """How long new work waits behind the work in flight (seconds, Little's law): what is pending over
        the rate it finishes (smoothed between two calls, at least `min_work_rate`). The event loop does not
        see this wait (store commits wait in their own queue while the loop idles), so `LagMonitor` adds it
        to its samples (a `queue_delay` part, see `pbx.service.overload`)."""
        now = self._clock.seconds()
        elapsed, self._work_sampled = now - self._work_sampled, now
        if elapsed > 0:
            done, self._finished_seen = self._finished - self._finished_seen, self._finished
            self.work_rate += 0.5 * (done / elapsed - self.work_rate)
        pending = self.pending
        return pending / max(self.work_rate, self.min_work_rate) if pending > 0 else 0.0

    def snapshot(self) -> dict[str, float]:
        """The figures for metrics: lag (s), level, work in flight and the counters."""
        monitor = self.monitor
        return {
            "lag": monitor.lag if monitor is not None else 0.0,
            "admit_share": self.admit_share,
            "admit_rate": self.admit_rate,
            "completion_rate": self.completion_rate,
            "lag_peak": monitor.peak if monitor is not None else 0.0,
            "level": self.level(),
            "pending": self.pending,
            **self.counters,
        }
