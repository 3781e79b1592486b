"""Overload control built from `[overload]`: the event loop's lag monitor and the stack's guard.

`build_overload` gives the stack its `OverloadGuard` (new INVITEs and REGISTERs shed under overload, also
before parsing at the critical level) and sizes its cache of stateless answers; the returned service runs
the `LagMonitor` while the PBX runs. `OverloadService.guard` and `.monitor` are what metrics read.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.logger import Logger

from pbx.config import Config
from pbx.sip import refusal
from pbx.sip.overload import (
    CRITICAL,
    HIGH,
    NORMAL,
    LagMonitor,
    OverloadGuard,
    OverloadPolicy,
    Prioritize,
    QueueDrop,
    ReceiveBufferLimit,
    SocketQueueDelay,
)
from pbx.sip.stack import SipStack
from pbx.sip.stateless_cache import StatelessCache
from pbx.sip.transport import UDP_RECEIVE_BUFFER

_log = Logger(namespace="pbx")


class OverloadService(service.Service):
    """Runs the lag monitor between start and stop; `guard` is None when overload control is off."""

    def __init__(
        self,
        monitor: LagMonitor | None,
        guard: OverloadGuard | None,
        socket_delay: SocketQueueDelay | None = None,
    ) -> None:
        self.monitor = monitor
        self.guard = guard
        self.socket_delay = socket_delay

    def startService(self) -> None:
        super().startService()
        if self.monitor is not None:
            self.monitor.start()

    def stopService(self) -> Any:
        if self.monitor is not None:
            self.monitor.stop()
        return super().stopService()


def build_overload(config: Config, stack: SipStack, the_reactor: Any) -> OverloadService:
    """The guard and lag monitor of `[overload]`, attached to `stack` (and its UDP listeners)."""
    settings = config.overload
    stack.stateless_cache = StatelessCache(
        the_reactor, lifetime=64 * stack.timers.t1, max_entries=settings.stateless_cache_size
    )
    stack.by_bytes = (
        StatelessCache(  # new requests screened before parsing, by their bytes (SipStack._screen)
            the_reactor, lifetime=64 * stack.timers.t1, max_entries=settings.stateless_cache_size
        )
    )
    if not settings.enabled:
        return OverloadService(None, None)
    transports = stack.transport
    socket_delay = None
    if transports is not None:  # input waiting in the UDP sockets' buffers counts as lag too
        intake = transports.intake  # drained at the rate of every datagram read, refused ones included
        socket_delay = SocketQueueDelay(
            the_reactor,
            lambda: transports.udp_sockets,
            lambda: intake.read,
            refused=lambda: intake.refused,
        )
    monitor = LagMonitor(
        the_reactor,
        interval=settings.lag_interval,
        high=settings.lag_high,
        critical=settings.lag_critical,
        attack=settings.lag_attack,
    )
    policy = OverloadPolicy(
        max_pending=settings.max_pending,
        max_rate=settings.max_rate,
        burst=settings.burst,
        retry_after=settings.retry_after,
        drop_critical=settings.drop_critical,
        follow_completions=settings.follow_completions,
        finish_critical=settings.finish_critical,
        reject_high=settings.reject_high,
        increase=settings.increase,
        decrease=settings.decrease,
    )
    guard = OverloadGuard(the_reactor, monitor, policy)
    stack.set_overload(guard)
    # New work waits in the sockets' buffers and behind the work in flight (store commits wait in their
    # own queue while the loop idles): both are part of each sample.
    monitor.queue_delay = (
        guard.work_delay if socket_delay is None else lambda: socket_delay() + guard.work_delay()
    )
    if transports is not None:
        transports.intake.screen = stack.shed_screen.screen  # stack.screen_datagram, one call less
        if settings.prioritize:  # while shedding: new work after the rest of the turn
            ports = lambda: transports.udp_ports  # noqa: E731
            monitor.listeners.append(Prioritize(transports.intake, guard, ports, settings.read_budget))
            if settings.refuse_at_once:  # what is surely refused is not deferred
                transports.intake.refuse = stack.shed_screen.quick
        if refusal.SPEEDUPS is None:
            _log.info(
                "Overload control: pbx.sip._refusal (the C twin of the 503 made from raw bytes) was not "
                "built when the PBX was installed (no C compiler or Python headers); the Python functions "
                "serve, and each refusal under overload costs about 50 % more CPU (docs/style.md rule 14)"
            )
        if socket_delay is not None and settings.queue_drop > 0:
            transports.intake.new_starts = guard.starts
            monitor.listeners.append(QueueDrop(transports.intake, socket_delay, settings.queue_drop))
    monitor.listeners.append(LevelLog(guard))
    if transports is not None and settings.receive_buffer:
        normal = getattr(transports, "_udp_receive_buffer", 0) or UDP_RECEIVE_BUFFER
        level = HIGH if settings.receive_buffer_level == "high" else CRITICAL
        hold = round(settings.receive_buffer_hold / settings.lag_interval)
        limit = ReceiveBufferLimit(
            lambda: transports.udp_sockets, settings.receive_buffer, normal, level, hold=hold
        )
        monitor.listeners.append(limit)
    return OverloadService(monitor, guard, socket_delay)


class LevelLog:
    """Logs each change of the overload level (a line per change, not per request)."""

    def __init__(self, guard: OverloadGuard) -> None:
        self._guard = guard
        self._level = NORMAL

    def __call__(self, monitor: LagMonitor) -> None:
        level = monitor.level()
        if level == self._level:
            return
        self._level = level
        counters = self._guard.counters
        _log.warn(
            "Overload level {state} (lag {lag:.3f} s): admitting {share:.0%} of new exchanges; "
            "so far {rejected} refused with 503, {dropped} dropped, {admitted} admitted "
            "({finishing} with credentials)",
            state=("normal", "high", "critical")[level],
            lag=monitor.lag,
            share=self._guard.admit_share,
            rejected=counters["rejected"],
            dropped=counters["dropped"],
            admitted=counters["admitted"],
            finishing=self._guard.finishing,
        )
