"""Dialing SIP URIs through a live `twistd pbx`: digest challenges answered, RFC 3263 with failover.

1. SIPp as a carrier that challenges the PBX's INVITE with 407 (proxy realm) and 401 (server realm), and its
   BYE with 401 (`client_auth_call_uas.xml`, which checks the digests with `verifyauth`): the PBX answers
   with the tenant's `[[tenants.default.credentials]]`, and the call from a SIPp phone goes through.
2. A name resolved through a `twisted.names` server on a loopback port (`sip.nameservers`): its SRV records
   give a dead target first (nothing listens: the TCP connection is refused) and a live SIPp second; the PBX
   fails over to the live one within the same INVITE.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, free_port
from tests.e2e.test_calls_sipp import launch_pbx, sipp  # noqa: F401  (the fixture)
from tests.e2e.test_registration_sipp import tcp_listening

pytestmark = pytest.mark.e2e

CREDENTIALS = """
[[tenants.default.credentials]]
realm = "proxy.sipp.test"
username = "1001"
password = "secret"

[[tenants.default.credentials]]
realm = "sipp.test"
username = "1001"
password = "secret"
"""


def test_a_challenging_uri_target_is_answered_on_invite_and_bye(tmp_path: Path, sipp) -> None:  # noqa: F811
    carrier_port = free_port()
    pbx = launch_pbx(tmp_path / "pbx", f"dial sip:carrier@127.0.0.1:{carrier_port}\nhangup\n", CREDENTIALS)
    try:
        carrier = sipp.start("carrier", "client_auth_call_uas.xml", port=carrier_port, timeout=30)
        carrier.wait_listening()
        phone = sipp.uac(pbx, "call_uac.xml", "9000")
        sipp.check(pbx, phone, carrier)
        call_id = pbx.ended(200, "normal")
        assert "Traceback" not in pbx.process.output
        invites = carrier.requests("INVITE")
        assert [i.split("\r\n", 1)[0] for i in invites] == [
            f"INVITE sip:carrier@127.0.0.1:{carrier_port} SIP/2.0"
        ] * 3
        assert call_id not in invites[0]  # topology hiding holds for URI targets too
        assert len(carrier.requests("BYE")) == 2  # challenged once, then accepted
    finally:
        pbx.process.stop()


def test_a_name_is_resolved_by_srv_and_a_dead_target_fails_over(tmp_path: Path, sipp) -> None:  # noqa: F811
    dns_port, dead_port, live_port = free_port(), free_port(udp=False), free_port()
    zone = {
        "_sip._tcp.carrier.example.test": [
            ["SRV", 10, 0, dead_port, "dead.example.test"],
            ["SRV", 20, 0, live_port, "live.example.test"],
        ],
        "dead.example.test": [["A", "127.0.0.1"]],
        "live.example.test": [["A", "127.0.0.1"]],
    }
    dns = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.dns_server", str(dns_port), json.dumps(zone)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert dns.stdout is not None and dns.stdout.readline().strip() == b"ready"
        extra = f'[sip]\nnameservers = ["127.0.0.1:{dns_port}"]\n'
        pbx = launch_pbx(tmp_path / "pbx", "dial sip:bob@carrier.example.test timeout=20\nhangup\n", extra)
        try:
            live = tcp_listening(
                sipp.start("live", "call_uas.xml", ["-t", "t1", "-s", "bob"], port=live_port)
            )
            phone = sipp.uac(pbx, "call_uac.xml", "9000")
            sipp.check(pbx, phone, live)
            pbx.ended(200, "normal")
            (invite,) = live.requests("INVITE")
            assert invite.startswith("INVITE sip:bob@carrier.example.test SIP/2.0"), invite
            pbx.wait_for(rf"Trying sip:bob@carrier\.example\.test at \('tcp', '127\.0\.0\.1', {live_port}\)")
            assert "Traceback" not in pbx.process.output
        finally:
            pbx.process.stop()
    finally:
        dns.kill()
        dns.wait(10)
