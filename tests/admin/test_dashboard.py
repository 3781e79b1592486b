"""The Grafana dashboard (docs/grafana-dashboard.json) asks only for metrics the PBX exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from pbx.admin.metrics import MetricsRegistry

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
DOCS = DASHBOARD.parent / "metrics.md"


def exported() -> set[str]:
    """Every sample name of a registry with a source of each kind attached."""
    metrics = MetricsRegistry(["a"])
    counters = {"requests": 1}
    layer = SimpleNamespace(
        client_count=0, server_count=0, retransmissions=SimpleNamespace(sent=0, received=0)
    )
    transport = SimpleNamespace(
        counters=SimpleNamespace(
            as_dict=lambda: {"connections_open": 0, "messages_received": 1}, connections_open=0
        )
    )
    metrics.attach(
        b2bua=SimpleNamespace(calls={}, counters={}),
        location=[],
        registrar=SimpleNamespace(counters={"registered": 1}),
        guard=SimpleNamespace(counters={}, blocked_sources=lambda: []),
        stack=SimpleNamespace(counters=counters, transactions=layer, transport=transport),
        relay=SimpleNamespace(sessions=0, parked=0),
        trunk_states=[SimpleNamespace(tenant="a", trunk="t", up=True, state="up")],
        mailboxes=SimpleNamespace(
            mailboxes=lambda: [("a", SimpleNamespace(number="1"))], counts=lambda t, n: (0, 0)
        ),
        tracer=[],
    )
    metrics.set_lag_source(lambda: 0.0)
    metrics.sip_counter("recv", "UDP", None, b"INVITE sip:x SIP/2.0")
    metrics.sip_counter("recv", "UDP", None, b"SIP/2.0 200 OK")
    call = SimpleNamespace(tenant="a", answered_at=1.0, started_at=0.0, cause="normal")
    for event in ("call_started", "call_answered", "call_ended"):
        getattr(metrics.calls, event)(call)
    metrics.calls.call_ended(SimpleNamespace(tenant="a", answered_at=None, started_at=0.0, cause="busy"))
    metrics.calls.dialplan_rendered(call, "main", 0.001)
    metrics.calls.leg_ended(call, SimpleNamespace(status=486))
    metrics.calls.timer_expired(call, "ring timeout")
    names = set()
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        names.update(s.name for s in family.samples)
    return names


def test_every_metric_of_the_dashboard_and_the_docs_is_exported() -> None:
    names = exported()
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    wanted = {m for e in exprs for m in re.findall(r"\bpbx_[a-z_]+", e)}
    assert wanted - names == set()
    documented = set(re.findall(r"`(pbx_[a-z_]+)`", DOCS.read_text()))
    families = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in names}
    assert documented - names - families == set()
    assert {n for n in families if not n.endswith("_total")} | {
        n[:-6] for n in families if n.endswith("_total")
    }
