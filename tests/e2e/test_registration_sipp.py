"""`pbx.sip.registration.RegistrationClient` against SIPp as a registrar, over real UDP and TCP on loopback.

The client runs in `tests/e2e/registration_driver.py` (a subprocess with a real reactor, SipStack and
TransportManager) and prints its state changes; SIPp challenges, checks every digest with `<verifyauth>`
(exit code 0: all were right), grants a 3 s expiry so that a refresh happens within the test, and takes the
unregister at stop. The CSeqs, Call-IDs, Contacts and nonce-counts are checked here from SIPp's trace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pbx.sip.digest import DigestCredentials
from tests.e2e.harness import REPO, free_port
from tests.e2e.test_calls_sipp import Sipp, header
from tests.e2e.test_client_auth_sipp import check_md5_digest

SCENARIOS = Path(__file__).parent / "scenarios"
pytestmark = pytest.mark.e2e


def drive(servers: list[Sipp], *extra: str) -> list[dict]:
    """Run the driver to completion (bounded) against `servers` (its targets, in order); its JSON lines."""
    command = [
        sys.executable,
        "-m",
        "tests.e2e.registration_driver",
        "--port",
        str(free_port()),
        "--timeout",
        "25",
    ]
    for server in servers:
        command += ["--server-port", str(server.port)]
    command += extra
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    details = "\n".join(str(server) for server in servers)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}\n{details}"
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def tcp_listening(sipp: Sipp, timeout: float = 10.0) -> Sipp:
    """Wait until SIPp listens on its TCP port (from /proc/net/tcp: state 0A is LISTEN)."""
    wanted = {f"0100007F:{sipp.port:04X}", f"00000000:{sipp.port:04X}"}
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 1):
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        if any(row[1] in wanted and row[3] == "0A" for row in rows):
            return sipp
        if sipp.proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)  # polling /proc/net/tcp for an event: the listen
    raise AssertionError(f"{sipp.name} is not listening on TCP {sipp.port}\n{sipp}")


def states(lines: list[dict]) -> list[tuple[str, int | None, int | None]]:
    return [(line["state"], line["code"], line["expires"]) for line in lines if "state" in line]


def cseqs(requests: list[str]) -> list[int]:
    return [int(header(request, "CSeq")[0].split()[0]) for request in requests]


def check_registration(sipp: Sipp, lines: list[dict], transport: str, first_cseq: int = 1) -> list[str]:
    """The common checks of a 401, 200 (3 s), refresh, unregister run; returns the REGISTERs."""
    assert states(lines) == [
        ("registering", None, None),
        ("registered", 200, 3),  # our Contact's expires in the 200, not its Expires: 99 nor our 60
        ("registering", 200, None),
        ("registered", 200, 3),
        ("stopped", 200, None),
        ("stopped", 200, None),  # with the unregister's answer
    ]
    registered = [line for line in lines if line.get("state") == "registered"]
    assert 1.3 < registered[1]["at"] - registered[0]["at"] < 2.5  # refreshed at half of 3 s
    assert lines[-1] == {"step": "stopped", "delayed_calls": 0}
    requests = sipp.requests("REGISTER")
    assert cseqs(requests) == list(range(first_cseq, first_cseq + 4))
    assert len({header(r, "Call-ID")[0] for r in requests}) == 1
    assert len({header(r, "From")[0] for r in requests}) == 1
    assert [header(r, "Expires") for r in requests] == [["60"], ["60"], ["60"], ["0"]]
    contacts = [header(r, "Contact")[0] for r in requests]
    assert contacts[0].endswith(";expires=60") and contacts[3].endswith(";expires=0")
    assert len({c.split(";expires=")[0] for c in contacts}) == 1
    assert f";transport={transport}" in contacts[0] if transport != "udp" else ";transport" not in contacts[0]
    assert all(header(r, "Via")[0].startswith(f"SIP/2.0/{transport.upper()} ") for r in requests)
    answers = [check_md5_digest(header(r, "Authorization")[0], "REGISTER") for r in requests[1:]]
    assert [c.nc for c in answers] == ["00000001", "00000002", "00000003"]
    assert len({c.nonce for c in answers}) == 1
    return requests


def test_register_refresh_and_unregister_over_udp(tmp_path: Path) -> None:
    sipp = Sipp("registrar", SCENARIOS / "registration_uas.xml", [], tmp_path).wait_listening()
    try:
        lines = drive([sipp])
        assert sipp.wait() == 0, str(sipp)
    finally:
        sipp.kill()
    requests = check_registration(sipp, lines, "udp")
    assert "Authorization" not in requests[0]


def test_register_over_tcp_keeps_one_connection(tmp_path: Path) -> None:
    """Over TCP the refresh and the unregister travel on the connection of the first REGISTER."""
    sipp = tcp_listening(Sipp("registrar", SCENARIOS / "registration_uas.xml", ["-t", "t1"], tmp_path))
    try:
        lines = drive([sipp], "--transport", "tcp")
        assert sipp.wait() == 0, str(sipp)
    finally:
        sipp.kill()
    check_registration(sipp, lines, "tcp")
    [counters] = [line for line in lines if line.get("step") == "counters"]
    assert (counters["connections_opened"], counters["messages_sent"]) == (1, 4)


def test_failover_from_a_503_and_sticking_to_the_registrar(tmp_path: Path) -> None:
    """The first target answers 503: the same attempt goes on to the second, which keeps the refresh and the
    unregister (the first never hears from us again)."""
    busy = Sipp("busy", SCENARIOS / "registration_busy_uas.xml", [], tmp_path).wait_listening()
    sipp = Sipp("registrar", SCENARIOS / "registration_uas.xml", [], tmp_path).wait_listening()
    try:
        lines = drive([busy, sipp])
        assert sipp.wait() == 0, str(sipp)
        assert busy.wait() == 0, str(busy)
    finally:
        sipp.kill()
        busy.kill()
    check_registration(sipp, lines, "udp", first_cseq=2)
    assert cseqs(busy.requests("REGISTER")) == [1]
    assert {line["target"] for line in lines if line.get("state") == "registered"} == {sipp.port}


def test_interval_too_brief_then_digest(tmp_path: Path) -> None:
    """423 Min-Expires: 120 is followed at once; the 200's Expires header gives the granted time."""
    sipp = Sipp("registrar", SCENARIOS / "registration_423_uas.xml", [], tmp_path).wait_listening()
    try:
        lines = drive([sipp], "--refreshes", "0")
        assert sipp.wait() == 0, str(sipp)
    finally:
        sipp.kill()
    assert states(lines) == [
        ("registering", None, None),
        ("registered", 200, 120),
        ("stopped", 200, None),
        ("stopped", 200, None),
    ]
    requests = sipp.requests("REGISTER")
    assert cseqs(requests) == [1, 2, 3, 4]
    assert [header(r, "Expires") for r in requests] == [["60"], ["120"], ["120"], ["0"]]
    answers = [DigestCredentials.parse(header(r, "Authorization")[0]) for r in requests[2:]]
    assert [c.nc for c in answers] == ["00000001", "00000002"]


def test_wrong_password_fails_without_an_unregister(tmp_path: Path) -> None:
    """The negative control: SIPp's verifyauth refuses (403, its call fails); the client reports `failed`
    with the 403 and, never having been registered, sends no unregister."""
    sipp = Sipp("registrar", SCENARIOS / "registration_uas.xml", [], tmp_path).wait_listening()
    try:
        lines = drive([sipp], "--password", "wrong", "--stop-on-failure")
        assert sipp.wait() != 0, str(sipp)
    finally:
        sipp.kill()
    assert states(lines) == [("registering", None, None), ("failed", 403, None), ("stopped", 403, None)]
    assert len(sipp.requests("REGISTER")) == 2
