"""RFC 3263 server location against a real `twisted.names` authoritative server on loopback.

`tests/e2e/dns_resolve.py` runs in a subprocess (it needs a real reactor): it serves the zone `example.test`
on a free loopback UDP port and resolves URIs with `SipResolver(make_resolver(...))`. Takes about 3 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def resolved() -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "tests.e2e.dns_resolve"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_naptr_srv_a_aaaa_in_order(resolved: dict) -> None:
    """NAPTR by order (TCP 10, UDP 20, TLS 30; SCTP ignored), SRV by priority, A before AAAA."""
    assert resolved["results"]["sip:alice@example.test"] == [
        ["tcp", "127.0.0.1", 5081, None],
        ["tcp", "::1", 5081, None],
        ["tcp", "127.0.0.2", 5082, None],
        ["udp", "127.0.0.1", 5071, None],
        ["udp", "::1", 5071, None],
        ["tls", "127.0.0.1", 5091, "example.test"],
        ["tls", "::1", 5091, "example.test"],
    ]


def test_sips_transport_param_and_explicit_port(resolved: dict) -> None:
    results = resolved["results"]
    assert results["sips:alice@example.test"] == [
        ["tls", "127.0.0.1", 5091, "example.test"],
        ["tls", "::1", 5091, "example.test"],
    ]
    assert results["sip:alice@example.test;transport=udp"] == [
        ["udp", "127.0.0.1", 5071, None],
        ["udp", "::1", 5071, None],
    ]
    assert results["sip:alice@example.test:5070"] == [["udp", "127.0.0.1", 5070, None]]
    assert results["sip:127.0.0.1:5060"] == [["udp", "127.0.0.1", 5060, None]]


def test_fallbacks_without_naptr_or_srv(resolved: dict) -> None:
    results = resolved["results"]
    assert results["sip:plain.example.test"] == [["tcp", "127.0.0.2", 5099, None]]
    assert results["sip:bare.example.test"] == [["udp", "127.0.0.4", 5060, None]]
    assert results["sip:nowhere.example.test"] == {
        "error": "No SIP server found for nowhere.example.test",
        "transient": False,
    }


def test_cached_answers_and_transient_timeout(resolved: dict) -> None:
    assert resolved["again"] == resolved["results"]["sip:alice@example.test"]
    assert resolved["queries_on_repeat"] == 0
    assert resolved["cache"]["hits"] > 0
    assert resolved["dead"] == {"error": "DNS lookup for example.test failed", "transient": True}
