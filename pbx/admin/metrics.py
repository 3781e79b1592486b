"""Prometheus metrics of the PBX (the text exposition format, served by `MetricsResource` at `/metrics`).

Everything is in one dedicated `CollectorRegistry` (never the process-global one), with bounded label sets:
tenants come from the config (anything else is counted as "other"), SIP methods from a fixed list (+ "other"),
response codes from a fixed list (else their class, "4xx"), causes from the B2BUA's fixed set.

Cheap on the hot path by design: most values are read at scrape time from counters the PBX keeps anyway
(`B2BUA.counters`, the stack's and transports' counters, the registrar's and brute-force guard's, the relay's
sessions, the trunks' states, the mailboxes' counts). What is counted as it happens is counted once per call
(a call observer: started, answered, ended by cause, setup time, dialplan render time, RTP packets at the
end) or with one dict increment per SIP message (`SipMessageCounter`, a transport trace hook). See
docs/metrics.md for the list.

This module takes plain objects (duck-typed: whatever the service layer hands it); it does not read the
config and names no reactor.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from twisted.web.resource import Resource
from twisted.web.server import Request

METHODS = (
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
)
"""SIP methods counted by name; any other is "other"."""
CODES = frozenset(
    (100, 180, 181, 182, 183, 200, 202, 401, 403, 404, 407, 408, 480, 481, 486, 487, 488, 500, 503, 603)
)
"""Response codes counted by number; any other by its class ("4xx")."""
CAUSES = (
    "normal",
    "pbx",
    "hangup",
    "cancelled",
    "busy",
    "declined",
    "noanswer",
    "unavailable",
    "failed",
)
"""How a call ended (`Call.cause`); any other is "other"."""
_METHOD_BYTES = {m.encode(): m for m in METHODS}
SETUP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
RENDER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
TRUNK_STATES: tuple[str, ...] = ("disabled", "down", "up", "off", "registering", "registered", "failed")
TRUNK_STATES += ("unregistered", "standby")  # standby: another node registers it (pbx/trunks/lease.py)


class SipMessageCounter:
    """SIP messages by direction and method (requests) or code (responses): a transport trace hook
    (`TransportManager.trace`), one dict increment per message; retransmissions count as messages."""

    __slots__ = ("requests", "responses")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, bytes], int] = {}
        self.responses: dict[tuple[str, bytes], int] = {}

    def __call__(self, direction: str, transport: str, flow: Any, data: bytes) -> None:
        if data.startswith(b"SIP/2.0 "):
            key = (direction, data[8:11])
            self.responses[key] = self.responses.get(key, 0) + 1
        else:
            method = data[: data.find(b" ", 0, 16)]
            key = (direction, method if method in _METHOD_BYTES else b"other")
            self.requests[key] = self.requests.get(key, 0) + 1

    def request_counts(self) -> dict[tuple[str, str], int]:
        """(direction "in"/"out", method) -> count."""
        out: dict[tuple[str, str], int] = {}
        for (direction, method), n in self.requests.items():
            key = ("in" if direction == "recv" else "out", method.decode("ascii", "replace"))
            out[key] = out.get(key, 0) + n
        return out

    def response_counts(self) -> dict[tuple[str, str], int]:
        """(direction, code or class) -> count."""
        out: dict[tuple[str, str], int] = {}
        for (direction, raw), n in self.responses.items():
            code = int(raw) if raw.isdigit() else 0
            label = str(code) if code in CODES else (f"{code // 100}xx" if 100 <= code < 700 else "other")
            key = ("in" if direction == "recv" else "out", label)
            out[key] = out.get(key, 0) + n
        return out


class CallMetrics:
    """A call observer (`b2bua.observers`): calls started, answered, ended by cause, setup time, dialplan
    render time, and the RTP packets of ended calls."""

    def __init__(self, registry: CollectorRegistry, tenant: Callable[[str], str]) -> None:
        self._tenant = tenant
        self.started = Counter(
            "pbx_calls_started", "Calls that passed authentication", ["tenant"], registry=registry
        )
        self.answered = Counter(
            "pbx_calls_answered", "Calls answered (by a callee or the PBX)", ["tenant"], registry=registry
        )
        self.ended = Counter(
            "pbx_calls_ended", "Calls ended, by cause", ["tenant", "cause"], registry=registry
        )
        self.failed = Counter(
            "pbx_calls_failed",
            "Calls ended without an answer, by cause",
            ["tenant", "cause"],
            registry=registry,
        )
        self.legs_failed = Counter(
            "pbx_call_legs_failed",
            "Outbound legs that failed, by status class",
            ["tenant", "status"],
            registry=registry,
        )
        self.setup = Histogram(
            "pbx_call_setup_seconds",
            "Time from the caller's INVITE to its 200",
            ["tenant"],
            buckets=SETUP_BUCKETS,
            registry=registry,
        )
        self.render = Histogram(
            "pbx_dialplan_render_seconds",
            "Time to render one dialplan template",
            ["tenant"],
            buckets=RENDER_BUCKETS,
            registry=registry,
        )
        self.timers = Counter(
            "pbx_call_timers_expired",
            "Ring timeouts and maximum durations reached",
            ["timer"],
            registry=registry,
        )
        self._by_tenant: dict[str, tuple[Any, Any, Any, Any]] = {}
        self._ended: dict[tuple[str, str], Any] = {}  # (tenant, cause) -> its series of `ended`
        self._failed: dict[tuple[str, str], Any] = {}  # and of `failed`
        self.rtp_relayed = 0  # RTP packets of ended calls (live calls are added at scrape time)
        self.rtp_dropped = 0  # fmt: skip

    def _children(self, tenant: str) -> tuple[Any, Any, Any, Any]:
        """The started, answered, setup and render series of a tenant (labels() looked up once)."""
        found = self._by_tenant.get(tenant)
        if found is None:
            label = self._tenant(tenant)
            found = self._by_tenant[tenant] = (
                self.started.labels(label),
                self.answered.labels(label),
                self.setup.labels(label),
                self.render.labels(label),
            )
        return found

    def call_started(self, call: Any) -> None:
        self._children(call.tenant)[0].inc()

    def call_answered(self, call: Any) -> None:
        _, answered, setup, _ = self._children(call.tenant)
        answered.inc()
        if call.answered_at is not None:
            setup.observe(max(0.0, call.answered_at - call.started_at))

    def leg_ended(self, call: Any, leg: Any) -> None:
        status = int(leg.status or 0)
        self.legs_failed.labels(self._tenant(call.tenant), f"{status // 100}xx" if status else "none").inc()

    def dialplan_rendered(self, call: Any, template: str, seconds: float) -> None:
        self._children(call.tenant)[3].observe(seconds)

    def timer_expired(self, call: Any, timer: str) -> None:
        self.timers.labels("ring_timeout" if timer == "ring timeout" else "max_duration").inc()

    def media_closing(self, call: Any, media: Any) -> None:
        try:
            stats = getattr(media, "final_stats", media.session.stats)()
        except Exception:
            return
        self.rtp_relayed += stats.a.packets + stats.b.packets
        self.rtp_dropped += stats.a.dropped + stats.b.dropped

    def call_ended(self, call: Any) -> None:
        self._series(self.ended, self._ended, call).inc()
        if call.answered_at is None:
            self._series(self.failed, self._failed, call).inc()

    def _series(self, counter: Counter, known: dict[tuple[str, str], Any], call: Any) -> Any:
        """The (tenant, cause) series of `counter` for `call`, looked up once per pair in `known`
        (`labels()` takes a lock and builds its key each time)."""
        found = known.get((call.tenant, call.cause))
        if found is None:
            cause = call.cause if call.cause in CAUSES else "other"
            found = counter.labels(self._tenant(call.tenant), cause)
            if len(known) < 4096:  # tenants x causes; past that (odd causes), looked up each time
                known[(call.tenant, call.cause)] = found
        return found


class PbxCollector(Collector):
    """Reads the PBX's own counters and states at scrape time (see `MetricsRegistry.attach`)."""

    def __init__(self, metrics: MetricsRegistry) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        for produce in (
            self._calls,
            self._registrations,
            self._security,
            self._sip,
            self._media,
            self._trunks,
            self._voicemail,
            self._process,
        ):
            try:
                yield from produce(m)
            except Exception:  # a source that fails must not take the others' metrics down
                m.scrape_errors += 1

    @staticmethod
    def _calls(m: MetricsRegistry) -> Iterator[Metric]:
        if m.b2bua is None:
            return
        active = GaugeMetricFamily("pbx_calls_active", "Calls in progress", labels=["tenant"])
        counts = dict.fromkeys(m.tenants, 0)
        for call in list(m.b2bua.calls.values()):
            tenant = m.tenant(call.caller.tenant)
            counts[tenant] = counts.get(tenant, 0) + 1
        for tenant, n in counts.items():
            active.add_metric([tenant], n)
        yield active
        c = m.b2bua.counters
        yield CounterMetricFamily(
            "pbx_invite_challenges", "INVITEs answered with a 407 challenge", c.get("challenged", 0)
        )

    @staticmethod
    def _registrations(m: MetricsRegistry) -> Iterator[Metric]:
        if m.location is None:
            return
        gauge = GaugeMetricFamily("pbx_registrations", "Registered contacts", labels=["tenant"])
        counts = dict.fromkeys(m.tenants, 0)
        for binding in m.location:
            tenant = m.tenant(binding.tenant)
            counts[tenant] = counts.get(tenant, 0) + 1
        for tenant, n in counts.items():
            gauge.add_metric([tenant], n)
        yield gauge
        if m.registrar is not None:
            family = CounterMetricFamily("pbx_register_events", "REGISTER outcomes", labels=["event"])
            for name, value in sorted(m.registrar.counters.items()):
                family.add_metric([name], value)
            yield family

    @staticmethod
    def _security(m: MetricsRegistry) -> Iterator[Metric]:
        guard = m.guard
        if guard is None:
            return
        c = guard.counters
        yield CounterMetricFamily(
            "pbx_auth_failures", "Failed digest authentications and PINs", c.get("failures", 0)
        )
        yield CounterMetricFamily(
            "pbx_source_blocks", "Sources blocked by the brute-force guard", c.get("blocks", 0)
        )
        yield CounterMetricFamily(
            "pbx_blocked_messages_dropped", "Messages dropped from blocked sources", c.get("dropped", 0)
        )
        yield GaugeMetricFamily("pbx_blocked_sources", "Sources blocked now", len(guard.blocked_sources()))

    @staticmethod
    def _sip(m: MetricsRegistry) -> Iterator[Metric]:
        counter = m.sip_counter
        requests = CounterMetricFamily(
            "pbx_sip_requests", "SIP requests sent and received", labels=["direction", "method"]
        )
        for (direction, method), n in sorted(counter.request_counts().items()):
            requests.add_metric([direction, method], n)
        yield requests
        responses = CounterMetricFamily(
            "pbx_sip_responses", "SIP responses sent and received", labels=["direction", "code"]
        )
        for (direction, code), n in sorted(counter.response_counts().items()):
            responses.add_metric([direction, code], n)
        yield responses
        stack = m.stack
        if stack is not None:
            family = CounterMetricFamily(
                "pbx_sip_stack_events", "What the stack did with messages", labels=["event"]
            )
            for name, value in sorted(stack.counters.items()):
                family.add_metric([name], value)
            yield family
            layer = stack.transactions
            tx = GaugeMetricFamily("pbx_sip_transactions", "Transactions in progress", labels=["kind"])
            tx.add_metric(["client"], layer.client_count)
            tx.add_metric(["server"], layer.server_count)
            yield tx
            retrans = getattr(layer, "retransmissions", None)
            if retrans is not None:
                family = CounterMetricFamily(
                    "pbx_sip_retransmissions", "Transaction retransmissions", labels=["direction"]
                )
                family.add_metric(["out"], retrans.sent)
                family.add_metric(["in"], retrans.received)
                yield family
            transport = stack.transport
            if transport is not None:
                tc = transport.counters
                family = CounterMetricFamily(
                    "pbx_sip_transport_events", "Transport counters", labels=["event"]
                )
                for name, value in sorted(tc.as_dict().items()):
                    if name != "connections_open":
                        family.add_metric([name], value)
                yield family
                yield GaugeMetricFamily(
                    "pbx_sip_connections_open", "Open TCP/TLS connections", tc.connections_open
                )

    @staticmethod
    def _media(m: MetricsRegistry) -> Iterator[Metric]:
        relayed, dropped = m.calls.rtp_relayed, m.calls.rtp_dropped
        if m.b2bua is not None:
            for call in list(m.b2bua.calls.values()):
                media = call.media
                if media is not None and not media.closed:
                    stats = media.session.stats()
                    relayed += stats.a.packets + stats.b.packets
                    dropped += stats.a.dropped + stats.b.dropped
        yield CounterMetricFamily("pbx_rtp_packets_relayed", "RTP packets relayed between call legs", relayed)
        yield CounterMetricFamily(
            "pbx_rtp_packets_dropped",
            "RTP packets dropped (no destination known yet for the other leg)",
            dropped,
        )
        if m.relay is not None:
            yield GaugeMetricFamily("pbx_relay_sessions", "Media relay sessions open", m.relay.sessions)
            parked = getattr(m.relay, "parked", None)
            if parked is not None:
                yield GaugeMetricFamily(
                    "pbx_relay_legs_parked", "Closed relay legs kept open for reuse", parked
                )

    @staticmethod
    def _trunks(m: MetricsRegistry) -> Iterator[Metric]:
        if m.trunk_states is None:
            return
        up = GaugeMetricFamily(
            "pbx_trunk_up", "Whether calls may go out on the trunk", labels=["tenant", "trunk"]
        )
        state = GaugeMetricFamily(
            "pbx_trunk_state",
            "The trunk's state (1 for the current one)",
            labels=["tenant", "trunk", "state"],
        )
        for trunk in m.trunk_states:
            tenant = m.tenant(trunk.tenant)
            up.add_metric([tenant, trunk.trunk], 1 if trunk.up else 0)
            for name in TRUNK_STATES:
                state.add_metric([tenant, trunk.trunk, name], 1 if trunk.state == name else 0)
        yield up
        yield state

    @staticmethod
    def _voicemail(m: MetricsRegistry) -> Iterator[Metric]:
        if m.mailboxes is None:
            return
        gauge = GaugeMetricFamily(
            "pbx_voicemail_messages", "Voicemail messages in the boxes", labels=["tenant", "state"]
        )
        totals: dict[tuple[str, str], int] = {}
        for tenant, box in m.mailboxes.mailboxes():
            new, old = m.mailboxes.counts(tenant, box.number)
            label = m.tenant(tenant)
            totals[(label, "new")] = totals.get((label, "new"), 0) + new
            totals[(label, "old")] = totals.get((label, "old"), 0) + old
        for (tenant, which), n in sorted(totals.items()):
            gauge.add_metric([tenant, which], n)
        yield gauge

    @staticmethod
    def _process(m: MetricsRegistry) -> Iterator[Metric]:
        if m.lag_source is not None:
            yield GaugeMetricFamily(
                "pbx_event_loop_lag_seconds", "How late the event loop runs timers", float(m.lag_source())
            )
        if m.tracer is not None:
            yield GaugeMetricFamily("pbx_call_traces", "Call traces kept (active and recent)", len(m.tracer))
        yield CounterMetricFamily(
            "pbx_metrics_scrape_errors", "Metric sources that failed at scrape time", m.scrape_errors
        )


class MetricsRegistry:
    """The PBX's metrics: a dedicated `CollectorRegistry`, a call observer and a SIP message counter.

    Args:
        tenants: the configured tenants' names (the only tenant label values, besides "other").

    Attach the sources with `attach(...)`, add `calls` to `b2bua.observers` and `sip_counter` to the
    transports' trace hook; `exposition()` is the text a scrape gets.
    """

    def __init__(self, tenants: Sequence[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.tenants = tuple(tenants)
        self._known = frozenset(self.tenants)
        self.calls = CallMetrics(self.registry, self.tenant)
        self.sip_counter = SipMessageCounter()
        self.b2bua: Any = None
        self.location: Iterable[Any] | None = None
        self.registrar: Any = None
        self.guard: Any = None
        self.stack: Any = None
        self.relay: Any = None
        self.trunk_states: Iterable[Any] | None = None
        self.mailboxes: Any = None
        self.tracer: Any = None
        self.lag_source: Callable[[], float] | None = None
        self.scrape_errors = 0
        self.registry.register(PbxCollector(self))

    def tenant(self, name: str) -> str:
        """`name` as a label value: a configured tenant, else "other" (labels stay bounded)."""
        return name if name in self._known or not self._known else "other"

    def attach(self, **sources: Any) -> None:
        """Give the sources to read at scrape time: b2bua, location, registrar, guard, stack, relay,
        trunk_states, mailboxes, tracer (any subset; a missing one leaves its metrics out)."""
        for name, value in sources.items():
            if not hasattr(self, name) or name.startswith("_"):
                raise TypeError(f"unknown metrics source {name!r}")
            setattr(self, name, value)

    def set_lag_source(self, source: Callable[[], float] | None) -> None:
        """`source()` -> the event loop's current lag in seconds (the overload monitor's, or our probe)."""
        self.lag_source = source

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """`GET /metrics`: the text exposition format; with a `token`, only for `Authorization: Bearer TOKEN`."""

    isLeaf = True

    def __init__(self, metrics: MetricsRegistry, token: str = "") -> None:
        super().__init__()
        self._metrics = metrics
        self._token = token.encode()

    def render_GET(self, request: Request) -> bytes:
        if not authorized(request, self._token):
            request.setResponseCode(401)
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="pbx"')
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"401 Unauthorized: a bearer token is needed\n"
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"Cache-Control", b"no-store")
        return self._metrics.exposition()


def authorized(request: Request, token: bytes) -> bool:
    """No token configured, or `Authorization: Bearer <token>` (compared in constant time)."""
    if not token:
        return True
    header = request.getHeader(b"authorization") or b""
    scheme, _, given = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)
