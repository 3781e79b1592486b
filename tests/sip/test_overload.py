"""`LagMonitor` and `OverloadGuard`: the event loop's lag and the shedding decisions (RFC 7339's idea)."""

from __future__ import annotations

import socket
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from pbx.sip.overload import (
    CRITICAL,
    HIGH,
    NORMAL,
    LagMonitor,
    OverloadGuard,
    OverloadPolicy,
    ReceiveBufferLimit,
    SocketQueueDelay,
    Verdict,
)


def test_lag_follows_how_late_the_timer_fires_and_stops_cleanly() -> None:
    clock = Clock()
    monitor = LagMonitor(clock, interval=0.05, smoothing=0.5, high=0.1, critical=0.4)
    monitor.start()
    clock.pump([0.05] * 10)  # on time
    assert monitor.lag == 0.0 and monitor.level() == NORMAL and not monitor.overloaded
    clock.advance(0.65)  # the loop was busy: the timer fires 0.6 s late
    assert monitor.last == pytest.approx(0.6)
    assert monitor.lag == pytest.approx(0.3) and monitor.level() == HIGH and monitor.overloaded
    clock.advance(0.65)
    assert monitor.lag == pytest.approx(0.45) and monitor.level() == CRITICAL
    clock.pump([0.05] * 10)  # back on time: the lag decays
    assert monitor.lag < 0.001 and monitor.level() == NORMAL
    assert monitor.peak == pytest.approx(0.6)
    monitor.start()  # already running: nothing more
    assert len(clock.getDelayedCalls()) == 1
    monitor.stop()
    assert not monitor.running and clock.getDelayedCalls() == []
    monitor.stop()


def test_lag_monitor_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        LagMonitor(Clock(), high=1.0, critical=0.5)
    with pytest.raises(ValueError):
        LagMonitor(Clock(), interval=0)
    with pytest.raises(ValueError):
        LagMonitor(Clock(), attack=0)


def test_a_rising_lag_is_followed_with_the_attack_weight_a_falling_one_smoothed() -> None:
    monitor = LagMonitor(Clock(), smoothing=0.25, attack=1.0, high=0.2, critical=1.0)
    monitor.sample(0.3)
    assert monitor.lag == pytest.approx(0.3) and monitor.overloaded  # at once
    monitor.sample(0.1)
    assert monitor.lag == pytest.approx(0.25)  # a quarter of the way down
    default = LagMonitor(Clock())
    default.sample(0.4)
    assert default.attack == default.smoothing and default.lag == pytest.approx(0.1)


def overloaded_guard(lag: float, **policy: object) -> OverloadGuard:
    clock = Clock()
    monitor = LagMonitor(clock, high=0.2, critical=1.0)
    monitor.lag = lag
    guard = OverloadGuard(clock, monitor, OverloadPolicy(**policy))  # type: ignore[arg-type]
    if lag >= monitor.high:
        guard.admit_share = 0.0  # as after a while at that lag
    return guard


def test_normal_lag_admits_everything() -> None:
    guard = overloaded_guard(0.0)
    assert guard.admit(credentials=False) is Verdict.ADMIT
    assert guard.admit(credentials=True) is Verdict.ADMIT
    assert guard.counters["admitted"] == 2


def test_high_lag_refuses_new_exchanges_but_finishes_those_begun() -> None:
    """From `high`, a request without credentials (a new exchange) gets a 503; one with credentials
    answers a challenge we sent: it is the second half of work already admitted."""
    guard = overloaded_guard(0.3)
    assert guard.admit(credentials=False) is Verdict.REJECT
    assert guard.admit(credentials=True) is Verdict.ADMIT
    assert (guard.counters["rejected"], guard.counters["rejected_lag"]) == (1, 1)


def test_the_share_admitted_follows_the_lag_aimd() -> None:
    """Multiplicative decrease while the lag is high, additive increase below: admissions settle near what
    the server finishes instead of swinging between all and nothing; the admitted ones spread evenly."""
    clock = Clock()
    monitor = LagMonitor(clock, interval=0.05, smoothing=1.0, high=0.2, critical=1.0)
    guard = OverloadGuard(clock, monitor, OverloadPolicy(decrease=0.5, increase=0.1, min_admit=0.1))
    monitor.start()
    clock.advance(0.05 + 0.3)  # one sample 0.3 s late: HIGH
    assert monitor.level() == HIGH and guard.admit_share == 0.5
    verdicts = [guard.admit(credentials=False) for _ in range(6)]
    assert verdicts == [Verdict.REJECT, Verdict.ADMIT] * 3
    for _ in range(5):
        clock.advance(0.05 + 0.3)
    assert guard.admit_share == 0.1  # never below min_admit
    clock.pump([0.05] * 3)  # on time again
    assert guard.admit_share == pytest.approx(0.4)
    clock.pump([0.05] * 10)
    assert guard.admit_share == 1.0
    assert guard.admit(credentials=False) is Verdict.ADMIT
    monitor.stop()
    assert clock.getDelayedCalls() == []


def test_critical_lag_drops_every_new_request_or_rejects_it() -> None:
    guard = overloaded_guard(1.5)
    assert guard.admit(credentials=True) is Verdict.DROP
    assert guard.counters["dropped"] == 1
    guard = overloaded_guard(1.5, drop_critical=False)
    assert guard.admit(credentials=True) is Verdict.REJECT


def test_cap_on_work_in_flight() -> None:
    guard = overloaded_guard(0.0, max_pending=2)
    guard.work_started()
    guard.work_started()
    assert guard.admit(credentials=True) is Verdict.REJECT
    assert guard.counters["rejected_pending"] == 1
    assert guard.work_finished("result") == "result"
    assert guard.pending == 1
    assert guard.admit(credentials=True) is Verdict.ADMIT


def test_shedding_says_whether_anything_may_be_refused_now() -> None:
    """Below it the stack does not screen datagrams before parsing."""
    assert not overloaded_guard(0.0).shedding
    assert overloaded_guard(0.3).shedding and overloaded_guard(1.5).shedding
    assert overloaded_guard(0.0, max_rate=10).shedding
    guard = overloaded_guard(0.0, max_pending=1)
    guard.work_started()
    assert guard.shedding
    guard.work_finished()
    assert not guard.shedding
    guard.admit_share = 0.9  # the lag was high lately: still admitting fewer than all
    assert guard.shedding


ADMIT, REJECT = Verdict.ADMIT, Verdict.REJECT


def test_rate_cap_is_a_token_bucket_for_new_exchanges() -> None:
    clock = Clock()
    guard = OverloadGuard(clock, None, OverloadPolicy(max_rate=10, burst=2))
    assert [guard.admit(credentials=False) for _ in range(3)] == [
        Verdict.ADMIT,
        Verdict.ADMIT,
        Verdict.REJECT,
    ]
    assert guard.admit(credentials=True) is Verdict.ADMIT  # never counted against the rate
    clock.advance(0.1)  # one token back
    assert [guard.admit(credentials=False) for _ in range(2)] == [ADMIT, REJECT]
    clock.advance(10)  # never more than the burst
    assert [guard.admit(credentials=False) for _ in range(3)] == [
        Verdict.ADMIT,
        Verdict.ADMIT,
        Verdict.REJECT,
    ]
    assert guard.counters["rejected_rate"] == 3
    assert guard.level() == NORMAL and guard.snapshot()["lag"] == 0.0
    assert clock.getDelayedCalls() == []


class FakeSocket:
    def __init__(self, queued: int) -> None:
        self.queued = queued

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        return struct.pack("9I", self.queued, 212992, 0, 0, 0, 0, 0, 0, 0)


def test_socket_queue_delay_is_what_waits_over_the_read_rate() -> None:
    """1,000 datagrams queued (1.28 MB) read at 2,000/s: half a second of wait the timer cannot see."""
    clock = Clock()
    read = [0]
    sock = FakeSocket(1000 * 1280)
    delay = SocketQueueDelay(clock, lambda: [sock], lambda: read[0], min_rate=100)
    for _ in range(10):
        clock.advance(0.05)
        read[0] += 100  # 2,000/s
        measured = delay()
    assert delay.queued == 1000 and delay.rate == pytest.approx(2000, rel=0.01)
    assert measured == pytest.approx(0.5, rel=0.01)
    monitor = LagMonitor(clock, interval=0.05, smoothing=1.0, queue_delay=delay)
    monitor.start()
    read[0] += 100
    clock.advance(0.05)
    assert monitor.lag == pytest.approx(0.5, rel=0.01) and monitor.level() == HIGH
    monitor.stop()
    assert clock.getDelayedCalls() == []


def test_behind_a_refused_flood_a_backlog_seen_by_one_sample_only_is_not_counted() -> None:
    """A flood starts: the loop spends a turn on the burst the admission lets through (200 reads in 50 ms,
    some refused already) while 3,000 datagrams fill the buffer; the next turn drops them (3,600 reads):
    no backlog. Without refusals, a backlog of the server's own work counts from its first sample."""
    clock = Clock()
    read, refused = [0], [0]
    sock = FakeSocket(0)
    delay = SocketQueueDelay(clock, lambda: [sock], lambda: read[0], refused=lambda: refused[0])
    delay()
    clock.advance(0.05)
    read[0] += 200
    refused[0] += 50
    sock.queued = 3000 * 1280
    assert delay() == 0.0  # 3,000 over 2,250/s would have said 1.3 s
    clock.advance(0.05)
    read[0] += 3600
    refused[0] += 3590
    sock.queued = 10 * 1280
    assert delay() < 0.01
    clock.advance(0.05)  # the server's own work piles up, nothing refused: seen at once
    read[0] += 50
    sock.queued = 2000 * 1280
    assert delay() == pytest.approx(2000 / delay.rate) and delay.delay > 0.05
    assert clock.getDelayedCalls() == []


def test_socket_queue_delay_measures_nothing_where_unsupported() -> None:
    class NotLinux:
        def getsockopt(self, level: int, option: int, size: int) -> bytes:
            raise OSError("no SO_MEMINFO")

    delay = SocketQueueDelay(Clock(), lambda: [NotLinux()], lambda: 0)
    assert delay() == 0.0 and delay() == 0.0


def test_socket_queue_delay_on_a_real_socket() -> None:
    """Linux only: SO_MEMINFO counts the bytes of datagrams waiting (nothing is read here)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind(("127.0.0.1", 0))
        delay = SocketQueueDelay(Clock(), lambda: [receiver], lambda: 0, min_rate=100)
        for _ in range(50):
            sender.sendto(b"x" * 500, receiver.getsockname())
        measured = delay()
        if sys.platform.startswith("linux"):
            assert 20 <= delay.queued <= 100 and measured == pytest.approx(delay.queued / 100)


def test_receive_buffers_shrink_at_the_critical_level_and_grow_back_below_high() -> None:
    class Sized:
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def setsockopt(self, level: int, option: int, size: int) -> None:
            self.sizes.append(size)

    sock = Sized()
    limit = ReceiveBufferLimit(lambda: [sock, object()], 1000, 9000)  # a non-socket is skipped
    monitor = LagMonitor(Clock(), high=0.2, critical=1.0)
    for lag in (0.0, 0.5, 1.5, 0.5, 1.2, 0.1, 0.5):
        monitor.lag = lag
        limit(monitor)
    assert sock.sizes == [1000, 9000]  # limited at 1.5, still at 0.5 and 1.2, restored at 0.1
    assert not limit.limited


def test_receive_buffers_may_shrink_from_the_high_level() -> None:
    class Sized:
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def setsockopt(self, level: int, option: int, size: int) -> None:
            self.sizes.append(size)

    sock = Sized()
    limit = ReceiveBufferLimit(lambda: [sock], 1000, 9000, from_level=HIGH)
    monitor = LagMonitor(Clock(), high=0.2, critical=1.0)
    seen = []
    for lag in (0.1, 0.3, 1.5, 0.5, 0.1, 0.25):
        monitor.lag = lag
        limit(monitor)
        seen.append(limit.limited)
    assert seen == [False, True, True, True, False, True]
    assert sock.sizes == [1000, 9000, 1000]


def test_small_receive_buffers_may_be_held_for_calm_samples() -> None:
    class Sized:
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def setsockopt(self, level: int, option: int, size: int) -> None:
            self.sizes.append(size)

    sock = Sized()
    limit = ReceiveBufferLimit(lambda: [sock], 1000, 9000, from_level=HIGH, hold=2)
    monitor = LagMonitor(Clock(), high=0.2, critical=1.0)
    seen = []
    for lag in (0.3, 0.1, 0.1, 0.3, 0.1, 0.1, 0.1, 0.1):
        monitor.lag = lag
        limit(monitor)
        seen.append(limit.limited)
    assert seen == [True, True, True, True, True, True, False, False]
    assert sock.sizes == [1000, 9000]


def test_work_delay_is_what_is_pending_over_the_rate_it_finishes() -> None:
    """Little's law: 300 REGISTERs waiting for their store commits, finished at 200/s: a new one waits about
    1.5 s, though the loop itself is idle; nothing pending: no wait (a slow rate alone is no wait)."""
    clock = Clock()
    guard = OverloadGuard(clock)
    guard.min_work_rate = 10.0
    assert guard.work_delay() == 0.0
    for _ in range(400):
        guard.work_started()
    for _ in range(5):
        clock.advance(0.05)
        for _ in range(10):  # 200/s
            guard.work_finished()
        measured = guard.work_delay()
    assert guard.pending == 350
    assert guard.work_rate == pytest.approx(200 * (1 - 0.5**5))
    assert measured == pytest.approx(350 / guard.work_rate)
    monitor = LagMonitor(clock, interval=0.05, smoothing=1.0, queue_delay=guard.work_delay)
    guard.monitor = monitor
    monitor.listeners.append(guard.on_sample)
    monitor.start()
    clock.advance(0.05)
    assert monitor.level() == CRITICAL
    for _ in range(350):
        guard.work_finished()
    clock.advance(0.05)
    assert monitor.lag == 0.0 and monitor.level() == NORMAL
    monitor.stop()
    assert clock.getDelayedCalls() == []


def test_following_completions_admits_new_exchanges_as_fast_as_exchanges_complete() -> None:
    """From `high`, new exchanges are admitted at the rate requests with credentials were (times `drain`),
    however many arrive; below `high` that rate grows, and goes once the share is back at 1."""
    clock = Clock()
    monitor = LagMonitor(clock, interval=0.05, smoothing=1.0, high=0.2, critical=1.0)
    guard = OverloadGuard(clock, monitor, OverloadPolicy(follow_completions=True, drain=0.9, increase=0.1))
    monitor.start()
    for _ in range(20):  # 400 exchanges/s complete
        clock.advance(0.0025)
        assert guard.admit(credentials=True) is ADMIT
    clock.advance(0.3)  # the sample is 0.3 s late: HIGH
    assert monitor.level() == HIGH
    assert guard.completion_rate > 50.0
    assert guard.admit_rate == pytest.approx(0.9 * guard.completion_rate)  # below twice `high`: no backlog
    rate = guard.admit_rate
    admitted = 0
    for _ in range(200):  # 5,000 new exchanges/s offered for 0.04 s
        clock.advance(0.0002)
        admitted += guard.admit(credentials=False) is ADMIT
    assert admitted == pytest.approx(rate * 0.04, abs=1.5)
    assert guard.counters["rejected_lag"] == 200 - admitted
    clock.advance(0.011)  # on time again: the rate grows, then goes with the share back at 1
    assert monitor.level() == NORMAL and guard.admit_rate == pytest.approx(1.1 * rate)
    clock.pump([0.05] * 3)
    assert guard.admit_share == 1.0 and guard.admit_rate == 0.0
    monitor.stop()
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize(("late", "factor"), [(0.2, 1.0), (0.4, 1.0), (0.6, 2 / 3), (0.8, 0.5)])
def test_following_completions_admits_less_past_twice_the_target_lag(late: float, factor: float) -> None:
    """A backlog drains in proportion to the lag past twice `high` (0.2 s here): at four times the target,
    half the completion rate (times `drain`) is admitted; up to twice the target, the completion rate times
    `drain` (the usual swing of the lag around its target costs nothing)."""
    clock = Clock()
    monitor = LagMonitor(clock, interval=0.05, smoothing=1.0, high=0.2, critical=1.0)
    guard = OverloadGuard(clock, monitor, OverloadPolicy(follow_completions=True, drain=0.9))
    for _ in range(40):  # 400 exchanges/s complete for 0.1 s
        clock.advance(0.0025)
        guard.admit(credentials=True)
    monitor.sample(late)  # a sample as the monitor's timer takes it, told to the guard as its listener is
    guard.on_sample(monitor)
    assert monitor.level() == HIGH and guard.completion_rate == pytest.approx(200.0)  # smoothed from 0
    assert guard.admit_rate == pytest.approx(0.9 * factor * 200.0)
    assert clock.getDelayedCalls() == []


def test_finish_critical_keeps_admitting_the_second_half_of_exchanges() -> None:
    guard = overloaded_guard(1.5, finish_critical=True)
    assert guard.admit(credentials=True) is Verdict.ADMIT
    assert guard.admit(credentials=False) is Verdict.DROP
    guard = overloaded_guard(1.5, finish_critical=True, max_pending=1)
    guard.work_started()
    assert guard.admit(credentials=True) is Verdict.REJECT  # the cap on work in flight still holds


def test_without_reject_high_only_the_critical_level_and_the_caps_refuse() -> None:
    """`reject_high` false: from `high` the kernel sheds (small receive buffers), the guard admits, and
    does not ask for the datagrams to be screened before parsing for it."""
    guard = overloaded_guard(0.3, reject_high=False)
    assert guard.admit(credentials=False) is Verdict.ADMIT
    guard.admit_share = 0.5
    assert guard.level() == HIGH and guard.shedding  # the level is high: retransmissions are screened
    guard.monitor.lag = 0.0  # type: ignore[union-attr]
    assert not guard.shedding  # a share below 1 alone no longer asks for screening
    assert overloaded_guard(1.5, reject_high=False).admit(credentials=False) is Verdict.DROP


@given(
    lag=st.sampled_from([0.0, 0.3, 1.5]),
    share=st.floats(0.0, 1.0),
    credit=st.floats(0.0, 1.0),
    pending=st.integers(0, 3),
    credentials=st.booleans(),
    finish_critical=st.booleans(),
    max_rate=st.sampled_from([0.0, 5.0]),
)
def test_surely_admits_only_what_admit_admits(
    lag: float,
    share: float,
    credit: float,
    pending: int,
    credentials: bool,
    finish_critical: bool,
    max_rate: float,
) -> None:
    """The screen's shortcut (`surely_admits`) never lets through what `admit` would refuse, and it changes
    and counts nothing; where only a token bucket can tell, it says no (the slow way asks `admit`)."""
    guard = overloaded_guard(lag, max_pending=2, finish_critical=finish_critical, max_rate=max_rate)
    guard.admit_share, guard._credit, guard.pending = share, credit, pending
    before = (dict(guard.counters), guard._credit, guard.finishing)
    sure = guard.surely_admits(credentials)
    assert (dict(guard.counters), guard._credit, guard.finishing) == before
    if sure:
        assert guard.admit(credentials) is Verdict.ADMIT
    if max_rate and not credentials:
        assert not sure


@given(
    lag=st.sampled_from([0.0, 0.3, 1.5]),
    share=st.floats(0.0, 1.0),
    credit=st.floats(0.0, 1.0),
    pending=st.integers(0, 3),
    max_rate=st.sampled_from([0.0, 5.0]),
    admit_rate=st.sampled_from([0.0, 100.0]),
    reject_high=st.booleans(),
    drop_critical=st.booleans(),
)
def test_refuses_new_exactly_when_admit_refuses_a_new_exchange(
    lag: float,
    share: float,
    credit: float,
    pending: int,
    max_rate: float,
    admit_rate: float,
    reject_high: bool,
    drop_critical: bool,
) -> None:
    """The refusal at once (`refuses_new`, `ShedScreen.quick`) changes and counts nothing, and says yes only
    when `admit(False)` refuses; where no token bucket decides, it says no only when `admit` admits."""
    guard = overloaded_guard(
        lag, max_pending=2, max_rate=max_rate, reject_high=reject_high, drop_critical=drop_critical
    )
    guard.admit_share, guard._credit, guard.pending, guard.admit_rate = share, credit, pending, admit_rate
    before = (dict(guard.counters), guard._credit)
    refuses = guard.refuses_new()
    assert (dict(guard.counters), guard._credit) == before
    twin = overloaded_guard(
        lag, max_pending=2, max_rate=max_rate, reject_high=reject_high, drop_critical=drop_critical
    )
    twin.admit_share, twin._credit, twin.pending, twin.admit_rate = share, credit, pending, admit_rate
    verdict = guard.admit(credentials=False)
    if refuses:
        assert verdict is not Verdict.ADMIT
        assert twin.refuse() is verdict  # the short way: the same verdict, counted alike
        assert (twin.counters, twin._credit) == (guard.counters, guard._credit)
    elif not max_rate and not (admit_rate and reject_high):
        assert verdict is Verdict.ADMIT
