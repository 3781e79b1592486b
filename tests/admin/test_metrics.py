"""Prometheus metrics (pbx.admin.metrics) over a real B2BUA on fakes, and the HTTP resources."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from pbx.admin.log_levels import LogLevels, LogLevelsResource
from pbx.admin.metrics import MetricsRegistry, MetricsResource, SipMessageCounter
from pbx.admin.trace_api import CallTraceResource, TraceListResource
from pbx.b2bua.trace import CallTracer
from tests.b2bua.fakes import TENANT, Harness


def samples(metrics: MetricsRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(resource, path: list[bytes], headers: dict[bytes, bytes] | None = None, method: bytes = b"GET"):
    request = DummyRequest(path)
    request.method = method
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    target = resource
    while path and not getattr(target, "isLeaf", False):
        target = target.getChildWithDefault(path.pop(0), request)
    body = target.render(request)
    return request.responseCode or 200, body


class SipCounterTests(SynchronousTestCase):
    def test_methods_are_bounded_and_codes_classed(self) -> None:
        counter = SipMessageCounter()
        for data in (b"INVITE sip:x SIP/2.0\r\n", b"FOOBAR sip:x SIP/2.0\r\n", b"garbage",
                     b"SIP/2.0 486 Busy", b"SIP/2.0 499 Odd", b"SIP/2.0 xyz"):  # fmt: skip
            counter("recv", "UDP", None, data)
        counter("send", "UDP", None, b"SIP/2.0 200 OK\r\n")
        self.assertEqual(counter.request_counts(), {("in", "INVITE"): 1, ("in", "other"): 2})
        self.assertEqual(
            counter.response_counts(),
            {("in", "486"): 1, ("in", "4xx"): 1, ("in", "other"): 1, ("out", "200"): 1},
        )


class CallMetricsTests(SynchronousTestCase):
    def build(self, main: str) -> tuple[Harness, MetricsRegistry]:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        h = Harness.build(path, main)
        metrics = MetricsRegistry([TENANT])
        metrics.attach(b2bua=h.b2bua, location=h.location, relay=h.relay, stack=None)
        h.b2bua.observers.append(metrics.calls)
        return h, metrics

    def test_an_answered_call_moves_the_counters(self) -> None:
        h, metrics = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        self.assertEqual(samples(metrics)[("pbx_calls_active", (("tenant", TENANT),))], 1)
        h.clock.advance(1.5)
        callee = h.callee()
        callee.answer()
        phone.ack()
        phone.bye()
        s = samples(metrics)
        t = (("tenant", TENANT),)
        self.assertEqual(s[("pbx_calls_started_total", t)], 1)
        self.assertEqual(s[("pbx_calls_answered_total", t)], 1)
        self.assertEqual(s[("pbx_calls_ended_total", (("cause", "normal"), ("tenant", TENANT)))], 1)
        self.assertEqual(s[("pbx_calls_active", t)], 0)
        self.assertEqual(s[("pbx_call_setup_seconds_count", t)], 1)
        self.assertEqual(s[("pbx_call_setup_seconds_bucket", (("le", "2.0"), ("tenant", TENANT)))], 1)
        self.assertEqual(s[("pbx_call_setup_seconds_bucket", (("le", "1.0"), ("tenant", TENANT)))], 0)
        self.assertEqual(s[("pbx_dialplan_render_seconds_count", t)], 1)
        self.assertEqual(s[("pbx_registrations", t)], 1)
        self.assertEqual(s[("pbx_metrics_scrape_errors_total", ())], 0)

    def test_a_busy_call_is_failed_by_cause_and_unknown_tenants_are_other(self) -> None:
        h, metrics = self.build("dial 1002")
        h.register_1002()
        h.place_call()
        h.callee().respond(486)
        s = samples(metrics)
        self.assertEqual(s[("pbx_calls_failed_total", (("cause", "busy"), ("tenant", TENANT)))], 1)
        self.assertEqual(s[("pbx_call_legs_failed_total", (("status", "4xx"), ("tenant", TENANT)))], 1)
        self.assertEqual(metrics.tenant("intruder"), "other")

    def test_sources_read_at_scrape_time(self) -> None:
        metrics = MetricsRegistry(["a"])
        guard = SimpleNamespace(
            counters={"failures": 7, "blocks": 2, "dropped": 3}, blocked_sources=lambda: ["x"]
        )
        trunk = SimpleNamespace(tenant="a", trunk="carrier", up=False, state="failed")
        boxes = SimpleNamespace(
            mailboxes=lambda: [("a", SimpleNamespace(number="1")), ("a", SimpleNamespace(number="2"))],
            counts=lambda tenant, number: (2, 1),
        )
        metrics.attach(guard=guard, trunk_states=[trunk], mailboxes=boxes)
        metrics.set_lag_source(lambda: 0.25)
        s = samples(metrics)
        self.assertEqual(s[("pbx_auth_failures_total", ())], 7)
        self.assertEqual(s[("pbx_blocked_sources", ())], 1)
        self.assertEqual(s[("pbx_trunk_up", (("tenant", "a"), ("trunk", "carrier")))], 0)
        self.assertEqual(
            s[("pbx_trunk_state", (("state", "failed"), ("tenant", "a"), ("trunk", "carrier")))], 1
        )
        self.assertEqual(s[("pbx_voicemail_messages", (("state", "new"), ("tenant", "a")))], 4)
        self.assertEqual(s[("pbx_event_loop_lag_seconds", ())], 0.25)

    def test_a_failing_source_is_counted_not_raised(self) -> None:
        metrics = MetricsRegistry(["a"])
        metrics.attach(guard=SimpleNamespace(counters=None))
        self.assertEqual(samples(metrics)[("pbx_metrics_scrape_errors_total", ())], 1)
        with self.assertRaises(TypeError):
            metrics.attach(nonsense=1)


class ResourceTests(SynchronousTestCase):
    def test_metrics_with_and_without_the_token(self) -> None:
        resource = MetricsResource(MetricsRegistry(["a"]), token="t" * 20)
        status, _ = get(resource, [])
        self.assertEqual(status, 401)
        status, body = get(resource, [], {b"authorization": b"Bearer " + b"t" * 20})
        self.assertEqual(status, 200)
        self.assertIn(b"pbx_metrics_scrape_errors_total 0.0", body)

    def test_trace_api(self) -> None:
        tracer = CallTracer(SimpleNamespace(seconds=lambda: 0.0))
        from pbx.b2bua.trace import CallTrace

        trace = CallTrace("a/b@c", 0.0)
        tracer._active["a/b@c"] = trace
        tracer._sip["a/b@c"] = (trace, "caller")
        status, body = get(CallTraceResource(tracer), [b"a%2Fb@c", b"trace"])
        self.assertEqual((status, json.loads(body)["call_id"]), (200, "a/b@c"))
        status, body = get(CallTraceResource(tracer), [b"unknown", b"trace"])
        self.assertEqual(status, 404)
        self.assertIn("no trace of call", json.loads(body)["reason"])
        status, body = get(TraceListResource(tracer), [])
        self.assertEqual([t["call_id"] for t in json.loads(body)["traces"]], ["a/b@c"])


class LogLevelsTests(SynchronousTestCase):
    def test_levels_change_at_run_time_and_bad_ones_are_refused(self) -> None:
        from twisted.logger import LogLevel, PredicateResult

        levels = LogLevels({"pbx.sip": "warn"})
        event = {"log_namespace": "pbx.sip.transport", "log_level": LogLevel.info}
        self.assertEqual(levels.predicate(event), PredicateResult.no)
        levels.set_level("pbx.sip", None)
        self.assertEqual(levels.predicate(event), PredicateResult.maybe)
        with self.assertRaises(ValueError):
            levels.set_level("pbx.sip", "loud")
        with self.assertRaises(ValueError):
            levels.set_level("not a namespace", "info")

    def test_the_api_needs_a_token_to_change(self) -> None:
        levels = LogLevels()
        status, _ = get(LogLevelsResource(levels), [], method=b"POST")
        self.assertEqual(status, 403)
        resource = LogLevelsResource(levels, token="k" * 20)
        request = DummyRequest([])
        request.method = b"POST"
        request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer " + b"k" * 20])
        from io import BytesIO

        request.content = BytesIO(b'{"namespace": "pbx.b2bua", "level": "error"}')
        body = json.loads(resource.render(request))
        self.assertEqual(body["levels"], {"pbx.b2bua": "error"})
        request.content = BytesIO(b'{"namespace": "pbx.b2bua", "level": "shout"}')
        resource.render(request)
        self.assertEqual(request.responseCode, 400)
