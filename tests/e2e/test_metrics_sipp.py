"""Prometheus metrics of a running `twistd pbx`, scraped during SIPp calls (issue 16, item 3).

The PBX serves `/metrics` on its own listener (`[metrics] listen`, a free loopback port, a bearer token);
a thread scrapes it while SIPp registers 1002 and places an answered call and a busy one; every scrape must
parse with `prometheus_client.parser`. After the calls the counters must have moved by what happened:
calls started, answered, ended by cause, failed, INVITEs in and out, 486 responses, one registration of
tenant "default", the call-setup histogram, and no relay session left.
"""

from __future__ import annotations

import itertools
import json
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import free_port
from tests.e2e.test_calls_sipp import CallPbx, sipp, start_pbx  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e

TOKEN = "e2e-metrics-token-0123456789"


def scrape(port: int, token: str = TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value of every sample of one scrape."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def start(start_pbx) -> tuple[CallPbx, int]:  # noqa: F811
    port = free_port(udp=False)
    pbx = start_pbx(extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n\n')
    pbx.wait_for(rf"Metrics on http://127\.0\.0\.1:{port}/metrics")
    return pbx, port


def test_metrics_move_with_sipp_calls(start_pbx, sipp):  # noqa: F811
    pbx, port = start(start_pbx)
    before = scrape(port)
    assert value(before, "pbx_registrations", tenant="default") == 0
    assert value(before, "pbx_calls_active", tenant="default") == 0

    scrapes: list[dict] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def scraper() -> None:  # every 50 ms while the calls run: each scrape must parse
        while not stop.is_set() and len(scrapes) < 400:
            try:
                scrapes.append(scrape(port))
            except BaseException as e:
                errors.append(e)
                return
            stop.wait(0.05)

    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    try:
        reg_port = sipp.register(pbx, "1002")
        uas = sipp.uas("uas", "call_uas.xml", "1002", reg_port)
        uac = sipp.uac(pbx, "call_uac.xml", "1002")
        sipp.check(pbx, uac, uas)
        pbx.ended(200, "normal")
        busy = sipp.uas("busy", "call_uas_busy.xml", "1002", reg_port)
        uac_busy = sipp.uac(pbx, "call_uac_busy.xml", "1002", name="uac_busy")
        sipp.check(pbx, uac_busy, busy)
        pbx.ended(486)
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    assert len(scrapes) >= 2

    after = scrape(port)
    moved = {
        name: value(after, name, **labels) - value(before, name, **labels)
        for name, labels in [
            ("pbx_calls_started_total", {"tenant": "default"}),
            ("pbx_calls_answered_total", {"tenant": "default"}),
            ("pbx_calls_ended_total", {"tenant": "default", "cause": "normal"}),
            ("pbx_calls_failed_total", {"tenant": "default", "cause": "busy"}),
            ("pbx_call_setup_seconds_count", {"tenant": "default"}),
        ]
    }
    assert moved == {
        "pbx_calls_started_total": 2,
        "pbx_calls_answered_total": 1,
        "pbx_calls_ended_total": 1,
        "pbx_calls_failed_total": 1,
        "pbx_call_setup_seconds_count": 1,
    }, moved
    assert value(after, "pbx_registrations", tenant="default") == 1
    assert value(after, "pbx_calls_active", tenant="default") == 0
    assert value(after, "pbx_relay_sessions") == 0
    # Two INVITEs from each caller (the first one challenged) and one to the callee per call.
    assert value(after, "pbx_sip_requests_total", direction="in", method="INVITE") >= 4
    assert value(after, "pbx_sip_requests_total", direction="out", method="INVITE") >= 2
    assert value(after, "pbx_sip_responses_total", direction="in", code="486") >= 1
    assert value(after, "pbx_sip_responses_total", direction="out", code="407") >= 2
    assert value(after, "pbx_sip_requests_total", direction="in", method="REGISTER") >= 2
    assert value(after, "pbx_dialplan_render_seconds_count", tenant="default") >= 2
    assert value(after, "pbx_event_loop_lag_seconds") >= 0
    # Counters never go down between scrapes.
    for earlier, later in itertools.pairwise([before, *scrapes, after]):
        for key in ("pbx_calls_started_total", "pbx_sip_requests_total"):
            for (name, labels), v in earlier.items():
                if name == key:
                    assert later.get((name, labels), 0) >= v, (name, labels)


def test_metrics_need_the_token(start_pbx):  # noqa: F811
    _, port = start(start_pbx)
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(port, token="wrong-token-wrong-token")
    assert refused.value.code == 401


def test_json_log_lines_name_the_call_and_its_tenant(start_pbx, sipp):  # noqa: F811
    """`[log] format = "json"`: every line is a JSON object; the call's lines carry `call_id` and `tenant`;
    `levels` hides the SIP trace's info lines (the harness turns `sip_trace` on)."""
    pbx = start_pbx(extra='[log]\nformat = "json"\nlevels = { "pbx.sip.trace" = "warn" }\n\n')
    reg_port = sipp.register(pbx, "1002")
    uas = sipp.uas("uas", "call_uas_busy.xml", "1002", reg_port)
    uac = sipp.uac(pbx, "call_uac_busy.xml", "1002")
    sipp.check(pbx, uac, uas)
    call_id = pbx.ended(486)
    lines = [json.loads(line) for line in pbx.process.output.splitlines() if line.strip()]
    assert all({"time", "level", "namespace", "text"} <= set(line) for line in lines), lines[:3]
    (ended,) = [line for line in lines if line["text"].startswith(f"Call {call_id} ended")]
    assert (ended["call_id"], ended["tenant"], ended["status"]) == (call_id, "default", 486), ended
    assert not [line for line in lines if line["namespace"] == "pbx.sip.trace"]
