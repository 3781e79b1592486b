"""The registrar shown with real peers: SIPp registering 100 users with digest auth (UDP and TCP), baresip
registering and unregistering, bindings surviving `kill -9`, no user enumeration, and the brute-force guard.

Every wait is on an event (a log line, a response, a process exit) with a timeout; ports are free ones.
"""

from __future__ import annotations

import dataclasses
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pbx.sip.digest import DigestChallenge, answer_challenge
from tests.e2e.baresip import Account, Baresip
from tests.e2e.harness import (
    PbxProcess,
    free_port,
    ipv6_loopback,
    registrations,
    run_sipp,
    write_config,
)

SCENARIOS = Path(__file__).parent / "scenarios"
pytestmark = pytest.mark.e2e


# -- helpers -------------------------------------------------------------------------------------------------


def extensions_toml(numbers: range) -> str:
    """`[tenants.default.extensions.N]` tables with password `pwN`."""
    return "".join(
        f'[tenants.default.extensions.{n}]\nname = "Load {n}"\npassword = "pw{n}"\n\n' for n in numbers
    )


def write_users_csv(path: Path, numbers: range) -> Path:
    """SIPp injection file: extension; password; the whole authentication keyword (PEERS.md)."""
    rows = [f"{n};pw{n};[authentication username={n} password=pw{n}]" for n in numbers]
    path.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
    return path


StartPbx = Callable[..., tuple[PbxProcess, dict]]


@pytest.fixture
def start_pbx(tmp_path: Path) -> Iterator[StartPbx]:
    """Start `twistd pbx` on a fresh config (`extra` appended), wait until it listens; stop all at the end."""
    started: list[PbxProcess] = []

    def start(extra: str = "", *, trace: bool = True) -> tuple[PbxProcess, dict]:
        directory = tmp_path / f"pbx{len(started)}"
        directory.mkdir()
        ports = write_config(directory, extra=extra, trace=trace)
        process = PbxProcess(ports["path"])
        started.append(process)
        process.wait_ready(ports["listeners"])
        process.wait_for(r"Location service loaded \d+ bindings")
        return process, ports

    yield start
    for process in started:
        process.stop()


def sipp_register(ports: dict, csv: Path, count: int, tmp_path: Path, transport: str = "u1") -> None:
    """Run register_auth.xml for `count` users of `csv`; fail with SIPp's errors unless every call passed."""
    error_file = tmp_path / f"sipp_err_{transport}_{csv.stem}.log"
    result = run_sipp(
        [
            f"127.0.0.1:{ports['sip']}",
            "-sf", str(SCENARIOS / "register_auth.xml"),
            "-inf", str(csv),
            "-t", transport,
            "-i", "127.0.0.1",
            "-p", str(free_port()),
            "-mp", str(free_port()),
            "-m", str(count),
            "-r", "50",
            "-timeout", "30s",
            "-timeout_error",
            "-trace_err",
            "-error_file", str(error_file),
        ],
        timeout=45,
        cwd=tmp_path,
    )  # fmt: skip
    errors = error_file.read_text() if error_file.exists() else ""
    assert result.returncode == 0, (
        f"SIPp failed ({result.returncode}):\n{result.stdout[-3000:]!r}\n{errors[-3000:]}"
    )


@dataclasses.dataclass
class SipResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    raw: bytes

    @classmethod
    def parse(cls, data: bytes) -> SipResponse:
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        lines = head.split("\r\n")
        version, status, reason = lines[0].split(" ", 2)
        assert version == "SIP/2.0", lines[0]
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return cls(int(status), reason, headers, data)

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def challenges(self) -> list[DigestChallenge]:
        return [DigestChallenge.parse(v) for v in self.get_all("WWW-Authenticate")]


class SipPhone:
    """A minimal UDP phone: sends REGISTERs from a socket bound to `bind` and reads the answers."""

    def __init__(
        self, server: tuple[str, int], bind: str = "127.0.0.1", user_agent: str = "pytest-phone"
    ) -> None:
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((bind, 0))
        self.server = server
        self.user_agent = user_agent
        self.call_id = f"{secrets.token_hex(8)}@pytest"
        self.tag = secrets.token_hex(4)
        self.cseq = 0
        self.requests: list[bytes] = []  # requests the PBX sent us (keep-alive OPTIONS), answered 200

    def close(self) -> None:
        self.sock.close()

    @property
    def local(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def request_uri(self) -> str:
        host, port = self.server
        return f"sip:[{host}]:{port}" if ":" in host else f"sip:{host}:{port}"

    def register_bytes(self, user: str, authorization: str | None = None, expires: int = 600) -> bytes:
        self.cseq += 1
        host = self.server[0]
        domain = f"[{host}]" if ":" in host else host
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        return (
            f"REGISTER {self.request_uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.local};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{domain}>;tag={self.tag}\r\n"
            f"To: <sip:{user}@{domain}>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {self.cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{self.local}>\r\n"
            f"Expires: {expires}\r\n"
            f"User-Agent: {self.user_agent}\r\n"
            f"{auth}"
            f"Content-Length: 0\r\n\r\n"
        ).encode()

    def send(self, data: bytes, timeout: float = 5.0) -> SipResponse | None:
        """Send a request; the first response to it, or None when nothing came within `timeout`."""
        self.sock.sendto(data, self.server)
        return self.receive_response(timeout)

    def receive_response(self, timeout: float) -> SipResponse | None:
        deadline = time.monotonic() + timeout
        for _ in range(100):  # bounded: a few keep-alive requests may arrive in between
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            if data.startswith(b"SIP/2.0 "):
                return SipResponse.parse(data)
            self._answer(data, addr)
        return None

    def receive_request(self, method: str, timeout: float) -> bytes:
        """Wait for a request from the PBX (answering it 200); raise on timeout."""
        deadline = time.monotonic() + timeout
        for _ in range(100):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            if data.startswith(method.encode() + b" "):
                self._answer(data, addr)
                return data
        raise AssertionError(f"no {method} from the PBX within {timeout} s")

    def drain(self) -> None:
        """Discard whatever is queued on the socket now."""
        self.sock.setblocking(False)
        try:
            for _ in range(1000):
                self.sock.recvfrom(65535)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def _answer(self, data: bytes, addr: tuple) -> None:
        self.requests.append(data)
        lines = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [
            line
            for line in lines[1:]
            if line.split(b":", 1)[0].strip().lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
        ]
        reply = b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"
        self.sock.sendto(reply, addr)

    def authorization(self, challenge: DigestChallenge, user: str, password: str) -> str:
        credentials = answer_challenge(
            challenge, method="REGISTER", uri=self.request_uri, username=user, password=password
        )
        return str(credentials)  # "Digest username=..., response=..."

    def register(self, user: str, password: str, expires: int = 600, timeout: float = 5.0) -> SipResponse:
        """REGISTER without credentials -> 401 -> REGISTER with the answer to the first challenge."""
        first = self.send(self.register_bytes(user, expires=expires), timeout)
        assert first is not None, f"no answer to REGISTER {user} from {self.local}"
        assert first.status == 401, first.raw
        authorization = self.authorization(first.challenges()[0], user, password)
        final = self.send(self.register_bytes(user, authorization, expires), timeout)
        assert final is not None, f"no answer to the authenticated REGISTER {user} from {self.local}"
        return final


# -- 1. SIPp: 100 users over UDP, a handful over TCP ---------------------------------------------------------


def test_sipp_registers_100_users_with_digest_udp_and_tcp(start_pbx, tmp_path):
    process, ports = start_pbx(extensions_toml(range(2000, 2105)), trace=False)
    sipp_register(ports, write_users_csv(tmp_path / "udp_users.csv", range(2000, 2100)), 100, tmp_path)
    sipp_register(ports, write_users_csv(tmp_path / "tcp_users.csv", range(2100, 2105)), 5, tmp_path, "t1")

    process.wait_for(r"Registered 2\d\d\d@default at ", count=105, timeout=10)
    rows = registrations(ports["path"])
    by_extension = {r.extension: r for r in rows}
    assert len(rows) == 105 and set(by_extension) == {str(n) for n in range(2000, 2105)}, rows
    for n in range(2000, 2105):
        row = by_extension[str(n)]
        transport = "tcp" if n >= 2100 else "udp"
        assert row.tenant == "default" and row.via.startswith(f"{transport}:127.0.0.1:"), row
        assert 540 < row.expires <= 600, row
        assert row.user_agent == "SIPp register_auth", row
    assert "Failed REGISTER authentication" not in process.output


# -- 2. baresip --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_registers_and_unregisters_on_quit(pbx, tmp_path, transport):
    process, ports = pbx
    account = Account("1001", "pass1001", "127.0.0.1", ports["sip"], transport=transport)
    phone = Baresip(tmp_path / "baresip", [account])
    try:
        line = phone.wait_registered(account, timeout=15)
        assert f"/{transport.upper()}/v4}} 200 OK" in line and "[1 binding]" in line, line
        process.wait_for(r"Registered 1001@default at sip:1001.*\(baresip", timeout=10)
        rows = [r for r in registrations(ports["path"]) if r.extension == "1001"]
        assert len(rows) == 1, rows
        assert rows[0].user_agent.startswith("baresip"), rows
        # UDP: baresip's listening port; TCP: the connection it opened (the flow requests go back through).
        flow = f"udp:127.0.0.1:{phone.sip_port}" if transport == "udp" else "tcp:127.0.0.1:"
        assert rows[0].via.startswith(flow), rows
        assert 540 < rows[0].expires <= 600, rows
    finally:
        code = phone.stop(timeout=10)
    # SIGTERM: baresip sends REGISTER with expiry 0 and exits once answered (the 200 follows the commit).
    assert code == 0, phone.output
    assert [r for r in registrations(ports["path"]) if r.extension == "1001"] == []


# -- 3. kill -9 and restart ----------------------------------------------------------------------------------


def test_bindings_survive_kill_9(start_pbx, tmp_path):
    extra = extensions_toml(range(2000, 2004)) + "[registrar]\nkeepalive_interval = 5.0\n"
    process, ports = start_pbx(extra)
    sipp_register(ports, write_users_csv(tmp_path / "users.csv", range(2000, 2004)), 4, tmp_path)
    phone = SipPhone(("127.0.0.1", ports["sip"]))
    try:
        assert phone.register("1001", "pass1001").status == 200
        process.wait_for(r"Registered (2\d\d\d|1001)@default at ", count=5)
        process.kill9()
        assert process.proc.returncode == -9

        phone.drain()  # anything sent by the killed process
        restarted = PbxProcess(ports["path"])
        try:
            restarted.wait_ready(ports["listeners"])
            restarted.wait_for(r"Location service loaded 5 bindings")
            rows = registrations(ports["path"])
            assert sorted(r.extension for r in rows) == ["1001", "2000", "2001", "2002", "2003"], rows
            for row in rows:
                assert 540 < row.expires <= 600, row
            # Routable from the loaded index: the restarted PBX's keep-alive reaches the phone through the
            # flow it registered on.
            options = phone.receive_request("OPTIONS", timeout=15)
            assert options.startswith(f"OPTIONS sip:1001@{phone.local}".encode()), options
        finally:
            restarted.stop()
    finally:
        phone.close()


# -- 4. no user enumeration ----------------------------------------------------------------------------------

# Headers whose values echo the request (or the time) and so differ between any two responses.
_ECHOED = {"via", "from", "to", "call-id", "cseq", "date", "www-authenticate"}


def _shape(response: SipResponse) -> tuple:
    """What an attacker could compare: status, reason, header names in order, the constant header values and
    the challenges without their nonces."""
    constant = [(n.lower(), v) for n, v in response.headers if n.lower() not in _ECHOED]
    challenges = [dataclasses.replace(c, nonce="") for c in response.challenges()]
    return response.status, response.reason, [n.lower() for n, _ in response.headers], constant, challenges


def test_known_and_unknown_extensions_are_answered_alike(pbx):
    process, ports = pbx
    server = ("127.0.0.1", ports["sip"])
    shapes: dict[str, dict[str, tuple]] = {"none": {}, "wrong": {}, "baresip": {}}
    for user in ("1001", "9999"):
        phone = SipPhone(server)
        try:
            first = phone.send(phone.register_bytes(user))
            assert first is not None and first.status == 401, first
            assert [c.algorithm for c in first.challenges()] == ["MD5", "SHA-256"], first.raw
            shapes["none"][user] = _shape(first)
            wrong = phone.authorization(first.challenges()[0], user, "not-the-password")
            second = phone.send(phone.register_bytes(user, wrong))
            assert second is not None, "no answer to wrong credentials"
            shapes["wrong"][user] = _shape(second)
            md5_phone = SipPhone(server, user_agent="baresip v1.0.0 (x86_64/linux)")
            try:
                third = md5_phone.send(md5_phone.register_bytes(user))
                assert third is not None and [c.algorithm for c in third.challenges()] == ["MD5"], third
                shapes["baresip"][user] = _shape(third)
            finally:
                md5_phone.close()
        finally:
            phone.close()
    for case, by_user in shapes.items():
        assert by_user["1001"] == by_user["9999"], f"{case}: {by_user}"
    assert shapes["wrong"]["1001"][0] == 401
    process.wait_for(r"Failed REGISTER authentication for 1001@default from 127\.0\.0\.1")
    process.wait_for(r"Failed REGISTER authentication for 9999@default from 127\.0\.0\.1")


# -- 5. the brute-force guard --------------------------------------------------------------------------------

BLOCK_DURATION = 5.0


def test_brute_force_source_is_blocked_others_are_not(start_pbx):
    process, ports = start_pbx(f"[security]\nmax_auth_failures = 3\nblock_duration = {BLOCK_DURATION}\n")
    server = ("127.0.0.1", ports["sip"])
    phones: list[SipPhone] = []

    def phone(bind: str = "127.0.0.1", to: tuple[str, int] = server) -> SipPhone:
        p = SipPhone(to, bind)
        phones.append(p)
        return p

    try:
        # A phone's REGISTER -> 401 -> REGISTER with credentials is never a failure, however often.
        legit = phone()
        for _ in range(10):
            assert legit.register("1001", "pass1001").status == 200
        assert "Blocked" not in process.output

        # Wrong answers from 127.0.0.1 (another port): the third one blocks the source.
        attacker = phone()
        for attempt in range(3):
            challenge = attacker.send(attacker.register_bytes("1002"))
            assert challenge is not None and challenge.status == 401, f"attempt {attempt}: {challenge}"
            guess = attacker.authorization(challenge.challenges()[0], "1002", f"guess{attempt}")
            attacker.sock.sendto(attacker.register_bytes("1002", guess), server)
            attacker.receive_response(timeout=2.0)  # the 401 for the guess, if any; not asserted
        process.wait_for(r"Blocked 127\.0\.0\.1 for 5 s", timeout=5)
        blocked_at = time.monotonic()

        # Everything from 127.0.0.1 is now dropped: no answer at all, not even a challenge.
        assert attacker.send(attacker.register_bytes("1002"), timeout=1.0) is None
        assert legit.send(legit.register_bytes("1001"), timeout=1.0) is None

        # Phones at other addresses are unaffected: 127.0.0.2 sending to the 127.0.0.1 listener, and ::1.
        assert phone("127.0.0.2").register("1002", "pass1002").status == 200
        if ipv6_loopback():
            assert phone("::1", ("::1", ports["sip"])).register("1003", "pass1003").status == 200

        # After block_duration the source is answered again (polled, bounded in count and time).
        answer = None
        deadline = blocked_at + BLOCK_DURATION + 10
        for _ in range(60):
            answer = attacker.send(attacker.register_bytes("1002"), timeout=0.5)
            if answer is not None or time.monotonic() > deadline:
                break
        waited = time.monotonic() - blocked_at
        assert answer is not None and answer.status == 401, f"still blocked after {waited:.1f} s"
        assert waited > BLOCK_DURATION - 1.5, f"answered again after only {waited:.1f} s"
        process.wait_for(r"Unblocked 127\.0\.0\.1", timeout=5)
        assert legit.register("1001", "pass1001").status == 200
    finally:
        for p in phones:
            p.close()
