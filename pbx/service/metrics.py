"""Metrics, call traces and log levels as a service: built from `[metrics]`, `[trace]` and `[log]`.

`build_observability` makes the `MetricsRegistry` (`pbx.admin.metrics`) over the PBX's parts, the
`CallTracer` (`pbx.b2bua.trace`) when `[trace] calls` (or `failed_calls`) is not 0, and hooks both into the
B2BUA's call observers and the SIP transports' trace hook (next to `--sip-trace`'s logger, if on). The
returned `MetricsService` (named "metrics": `top.getServiceNamed("metrics")`) holds them for the admin
console, which mounts `metrics_resource()`, `trace_resource()`... itself; with `[metrics] listen` the
service also serves them on a small listener of its own:

    GET  /metrics                         Prometheus text format
    GET  /api/v1/calls/CALL-ID/trace      one call's ladder (JSON; `pbx trace CALL-ID` prints it)
    GET  /api/v1/traces                   the kept traces (summaries)
    GET  /api/v1/log/levels               log levels per subsystem; POST {"namespace", "level"} to change

With `[metrics] token` every request needs `Authorization: Bearer TOKEN`.

Event-loop lag: until the overload monitor gives its own (`metrics.set_lag_source`), a one-second
`LoopingCall` measures how late it runs (`LagProbe`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from pbx.admin.log_levels import LogLevels, LogLevelsResource
from pbx.admin.metrics import MetricsRegistry, MetricsResource
from pbx.admin.trace_api import CallTraceResource, TraceListResource, send_json
from pbx.b2bua.trace import CallTracer
from pbx.config import Config
from pbx.service.log_json import LogSettings

_log = Logger(namespace="pbx")

TraceHook = Callable[[str, str, Any, bytes], None]


def chain(hooks: list[TraceHook]) -> TraceHook | None:
    """One transport trace hook calling each of `hooks` in turn (None for none, the hook itself for one)."""
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]
    if len(hooks) == 2:  # the default PBX's (metrics and call traces): every message passes here
        one, two = hooks

        def pair(direction: str, transport: str, flow: Any, data: bytes) -> None:
            one(direction, transport, flow, data)
            two(direction, transport, flow, data)

        return pair
    first, *rest = hooks

    def both(direction: str, transport: str, flow: Any, data: bytes) -> None:
        first(direction, transport, flow, data)
        for hook in rest:
            hook(direction, transport, flow, data)

    return both


class LagProbe:
    """How late the reactor runs a timer that should fire every `interval` seconds (the last lag seen)."""

    def __init__(self, clock: Any, interval: float = 1.0) -> None:
        self._clock = clock
        self._interval = interval
        self._expected: float | None = None
        self.lag = 0.0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def start(self) -> None:
        self._expected = self._clock.seconds() + self._interval
        self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        now = self._clock.seconds()
        if self._expected is not None:
            self.lag = max(0.0, now - self._expected)
        self._expected = now + self._interval

    def __call__(self) -> float:
        return self.lag


class _Root(Resource):
    def render_GET(self, request: Any) -> bytes:
        return send_json(request, 404, {"error": "not found", "reason": "try /metrics"})


class MetricsService(service.Service):
    """Holds the metrics, the tracer and the log levels; serves them on `[metrics] listen` when set.

    Attributes:
        metrics: the `MetricsRegistry`.
        tracer: the `CallTracer`, or None when call tracing is off.
        log_levels: the live log levels per subsystem.
        port: the listening port once started (None without a listener).
    """

    name = "metrics"

    def __init__(
        self,
        metrics: MetricsRegistry,
        tracer: CallTracer | None,
        log_levels: LogLevels,
        the_reactor: Any,
        *,
        listen: tuple[str, int] | None = None,
        token: str = "",
    ) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self.log_levels = log_levels
        self._reactor = the_reactor
        self._listen = listen
        self._token = token
        self.port: Any = None
        self.probe: LagProbe | None = None

    def metrics_resource(self) -> Resource:
        return MetricsResource(self.metrics, self._token)

    def site(self) -> Site:
        """The listener's site: /metrics, the trace API and the log levels."""
        root = _Root()
        root.putChild(b"metrics", self.metrics_resource())
        api, v1 = Resource(), Resource()
        root.putChild(b"api", api)
        api.putChild(b"v1", v1)
        if self.tracer is not None:
            v1.putChild(b"calls", CallTraceResource(self.tracer, self._token))
            v1.putChild(b"traces", TraceListResource(self.tracer, self._token))
        log = Resource()
        v1.putChild(b"log", log)
        log.putChild(b"levels", LogLevelsResource(self.log_levels, self._token))
        site = Site(root)
        site.displayTracebacks = False
        site.noisy = False
        return site

    def privilegedStartService(self) -> None:
        if self._listen is not None:
            host, port = self._listen
            self.port = self._reactor.listenTCP(port, self.site(), interface=host)
            _log.info("Metrics on http://{host}:{port}/metrics", host=host, port=self.port.getHost().port)
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        if self.metrics.lag_source is None:
            self.probe = LagProbe(self._reactor)
            self.metrics.set_lag_source(self.probe)
            self.probe.start()

    def stopService(self) -> Any:
        super().stopService()
        if self.probe is not None:
            self.probe.stop()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def build_observability(
    config: Config,
    the_reactor: Any,
    *,
    sip: Any,
    stack: Any,
    registrar: Any,
    calls: Any,
    trunks: Any = None,
    voicemail: Any = None,
    log: LogSettings | None = None,
) -> MetricsService:
    """The metrics over the PBX's parts, the call tracer, and both hooked into calls and SIP messages."""
    metrics = MetricsRegistry([t.name for t in config.tenants])
    b2bua = calls.b2bua
    metrics.attach(
        b2bua=b2bua,
        location=registrar.location,
        registrar=getattr(registrar, "registrar", None),
        guard=registrar.guard,
        stack=stack,
        relay=calls.relay,
        trunk_states=getattr(trunks, "states", None),
        mailboxes=getattr(voicemail, "mailboxes", None),
    )
    b2bua.observers.append(metrics.calls)
    hooks: list[TraceHook] = [h for h in (sip.transports.trace,) if h is not None]
    hooks.append(metrics.sip_counter)
    tracer = None
    trace = config.trace
    if trace.calls > 0 or trace.failed_calls > 0:
        tracer = CallTracer(
            the_reactor,
            keep=trace.calls,
            keep_failed=trace.failed_calls,
            max_events=trace.max_events,
            max_bytes=trace.max_bytes,
            body_bytes=trace.body_bytes,
        )
        b2bua.observers.append(tracer)
        hooks.append(tracer.sip_message)
        metrics.attach(tracer=tracer)
    sip.transports.trace = chain(hooks)
    settings = log if log is not None else LogSettings()
    settings.context.calls = b2bua.calls
    return MetricsService(
        metrics,
        tracer,
        settings.levels,
        the_reactor,
        listen=config.metrics.host_port,
        token=config.metrics.token,
    )
