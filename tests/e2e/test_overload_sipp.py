"""Overload without collapse, shown with SIPp against `twistd pbx` on loopback (issue 14, item 6).

What these tests prove: offered about twice the rate the PBX holds, REGISTERs with digest auth and calls
with digest auth keep completing at (at least 90 % of) the held rate, and the excess is refused early with a
stateless `503` + `Retry-After` instead of timing out: SIPp's exit code 0 means that every SIPp call either
completed (REGISTER -> 401 -> REGISTER -> 200; INVITE -> 407 -> ACK -> INVITE -> 200 -> ACK -> BYE -> 200)
or got a 503 — no timeouts, no unexpected answers (the late, different 401s of the collapse this prevents).

How it stays robust on a shared 2-core CI machine: the PBX's capacity is made deterministic with a low
configured cap on new exchanges (`[overload] max_rate`, the same guard that the event-loop lag drives on a
saturated PBX), far below what the machine can do, and the assertions are ratios of the counts SIPp saw
(200s and 503s, from its message trace) to that configured rate. Lag-driven shedding itself is covered by the
unit tests (tests/sip/test_overload.py, test_stack_overload.py) and measured by bench/overload_bench.py.

Also shown: a retransmitted REGISTER gets byte-for-byte the 401 its first copy got (the stateless answer
repeated from the cache: no new nonce).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PbxProcess, free_port, write_config
from tests.e2e.test_calls_sipp import DEMO_DIALPLAN, Sipp, SippSet, rtp_range

pytestmark = pytest.mark.e2e
SCENARIOS = Path(__file__).parent / "scenarios"
SECONDS = 8  # the offered load lasts this long


@pytest.fixture
def loadgen(tmp_path: Path) -> Iterator[SippSet]:
    """The test's SIPp processes, killed at its end whatever happened."""
    directory = tmp_path / "sipp"
    directory.mkdir()
    group = SippSet(directory)
    yield group
    group.stop()


def start_pbx(directory: Path, max_rate: int) -> tuple[PbxProcess, int]:
    """A PBX without message trace whose capacity for new exchanges is `max_rate` per second."""
    directory.mkdir(parents=True)
    low, high = rtp_range()
    extra = (
        f"[media]\nrtp_port_min = {low}\nrtp_port_max = {high}\n\n"
        '[registrar]\nkeepalive = "none"\n\n'
        f"[overload]\nmax_rate = {max_rate}\nburst = {max_rate // 4}\n"
    )
    ports = write_config(directory, ipv6=False, extra=extra, trace=False)
    dialplans = directory / "dialplans" / "default"
    (dialplans / "main.j2").write_text(DEMO_DIALPLAN)
    pbx = PbxProcess(ports["path"])
    try:
        pbx.wait_ready(ports["listeners"])
        pbx.wait_for(r"Location service loaded \d+ bindings")
    except BaseException:
        pbx.stop()
        raise
    return pbx, ports["sip"]


def offered(
    sipp: SippSet, name: str, scenario: str, port: int, rate: int, rows: list[tuple[str, ...]]
) -> Sipp:
    """SIPp offering `rate` new exchanges per second for SECONDS, bounded; waited for."""
    csv = sipp.users_csv(rows, name)
    run = sipp.start(
        name,
        SCENARIOS / scenario,
        [f"127.0.0.1:{port}", "-inf", str(csv), "-r", str(rate), "-buff_size", "4194304"],
        calls=rate * SECONDS,
        timeout=SECONDS + 40,
    )
    run.wait()
    return run


def first_answers(run: Sipp, method: str) -> tuple[int, int]:
    """(200s, 503s) SIPp received for the first request of each exchange and for the one with credentials,
    counted once per transaction (by Via branch: a retransmitted answer counts once)."""
    seen: dict[str, int] = {}
    for message in run.messages("received"):
        head = message.split("\r\n", 1)[0]
        if not head.startswith("SIP/2.0 ") or f" {method}" not in _header(message, "CSeq"):
            continue
        seen[_header(message, "Via")] = int(head.split()[1])
    statuses = list(seen.values())
    return statuses.count(200), statuses.count(503)


def _header(message: str, name: str) -> str:
    for line in message.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def test_register_offered_twice_the_held_rate(tmp_path: Path, loadgen: SippSet) -> None:
    """Capacity 40 new registrations/s, offered 80/s for 8 s: >= 90 % of 40/s complete, the rest get 503."""
    held = 40
    pbx, port = start_pbx(tmp_path / "pbx", held)
    try:
        users = [(str(n), f"pass{n}") for n in range(1000, 1004)]
        run = offered(loadgen, "register", "overload_register_uac.xml", port, 2 * held, users)
        assert run.proc.returncode == 0, f"{run}\n{pbx.output[-3000:]}"
        ok, shed = first_answers(run, "REGISTER")
        offered_total = 2 * held * SECONDS
        assert ok >= 0.9 * held * SECONDS, (ok, shed)
        assert ok <= held * SECONDS + held  # the cap held (plus its burst and rounding)
        assert ok + shed == offered_total, (ok, shed)  # everything else was refused early, none timed out
    finally:
        pbx.stop()


def test_calls_offered_twice_the_held_rate(tmp_path: Path, loadgen: SippSet) -> None:
    """Capacity 15 new calls/s, offered 30/s for 8 s: >= 90 % of 15/s are set up and torn down, the rest
    get 503 on their first INVITE; BYEs and ACKs of the accepted calls are never shed."""
    held = 15
    pbx, port = start_pbx(tmp_path / "pbx", held)
    try:
        callee = free_port()
        csv = loadgen.users_csv([("1002", "pass1002")], "callee")
        register = loadgen.start(
            "callee_register",
            SCENARIOS / "register_auth.xml",
            [f"127.0.0.1:{port}", "-inf", str(csv)],
            port=callee,
            timeout=10,
        )
        assert register.wait() == 0, str(register)
        uas = loadgen.start(
            "uas", SCENARIOS / "call_uas.xml", ["-s", "1002"], port=callee, calls=10_000, timeout=SECONDS + 40
        ).wait_listening()
        callers = [("1001", "pass1001", "1002")]
        run = offered(loadgen, "calls", "overload_call_uac.xml", port, 2 * held, callers)
        uas.kill()
        assert run.proc.returncode == 0, f"{run}\n{pbx.output[-3000:]}"
        ok, shed = first_answers(run, "INVITE")
        assert ok >= 0.9 * held * SECONDS, (ok, shed)
        assert ok <= held * SECONDS + held
        assert ok + shed == 2 * held * SECONDS, (ok, shed)
        byes = [
            m for m in run.messages("received") if m.startswith("SIP/2.0 200") and "BYE" in _header(m, "CSeq")
        ]
        assert len({_header(m, "Via") for m in byes}) == ok  # every call set up was torn down
    finally:
        pbx.stop()


def test_a_retransmitted_register_gets_the_same_401(tmp_path: Path) -> None:
    """The cache of stateless answers: the same bytes, no new nonce (RFC 3261 8.2.7, 17.2.2)."""
    pbx, port = start_pbx(tmp_path / "pbx", 100)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            local = s.getsockname()[1]
            request = (
                f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKretrans1;rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=r1\r\nTo: <sip:1000@127.0.0.1>\r\n"
                f"Call-ID: retrans1\r\nCSeq: 1 REGISTER\r\nContact: <sip:1000@127.0.0.1:{local}>\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            answers = []
            for _ in range(3):
                s.sendto(request, ("127.0.0.1", port))
                answers.append(s.recv(65535))
        assert answers[0].startswith(b"SIP/2.0 401 ") and len(set(answers)) == 1
    finally:
        pbx.stop()
