"""Descriptor exhaustion and connection hygiene shown on a real `twistd pbx` (issue 10).

(a) With a low open files limit (soft and hard: the PBX raises its soft limit to the hard one at start), idle
    TCP connections from several loopback addresses use up every descriptor: a call then fails because its
    dialplan template cannot be read. Once the connections close, the next call goes through the dialplan
    again, without the template file being touched, and a new TCP connection is served.
(b) A TLS connection that never starts its handshake is closed after `sip.tls_handshake_timeout`.
(c) One source address cannot hold more than `sip.max_connections_per_address` connections, while another
    address (127.0.0.2) still registers and is answered over TCP.

Every wait is on a socket, a response or a log line, with a timeout; loops are bounded in count and time.
"""

from __future__ import annotations

import resource
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pbx.sip.digest import DigestChallenge, answer_challenge
from tests.e2e.harness import PbxProcess, options_request, write_config
from tests.e2e.test_registrar import SipPhone, SipResponse

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
FILE_LIMIT = 256
SOURCES = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
MAX_IDLE_CONNECTIONS = 600  # bound on the connections opened to exhaust FILE_LIMIT descriptors
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)

StartPbx = Callable[..., tuple[PbxProcess, dict]]


@pytest.fixture
def start_pbx(tmp_path: Path) -> Iterator[StartPbx]:
    """Start `twistd pbx` (IPv4 only, `sip` under [sip], `dialplan` as main.j2); stop all at the end."""
    started: list[PbxProcess] = []

    def start(
        sip: str = "", dialplan: str = "hangup 486\n", preexec_fn: Callable[[], None] | None = None
    ) -> tuple[PbxProcess, dict]:
        directory = tmp_path / f"pbx{len(started)}"
        directory.mkdir()
        ports = write_config(directory, ipv6=False, trace=False, extra=f"\n[sip]\n{sip}\n")
        (directory / "dialplans" / "default" / "main.j2").write_text(dialplan)
        process = PbxProcess(ports["path"], preexec_fn=preexec_fn)
        started.append(process)
        process.wait_ready(ports["listeners"])
        process.wait_for(r"Location service loaded \d+ bindings")
        return process, ports

    yield start
    for process in started:
        process.stop()


def low_file_limit() -> None:
    """In the child before exec: soft AND hard limits low, so the PBX cannot raise them back."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


# -- a caller over UDP: INVITE -> 407 -> INVITE with credentials -> final response ---------------------------


class Caller(SipPhone):
    """`SipPhone` placing calls: the final response's status (non-2xx finals are ACKed)."""

    def call(self, user: str, password: str, dialed: str, timeout: float = 5.0) -> int | None:
        call_id = f"{secrets.token_hex(8)}@pytest"
        uri = f"sip:{dialed}@{self.server[0]}:{self.server[1]}"
        first = self._invite(uri, user, call_id, 1, None, timeout)
        if first is None or first.status != 407:
            return first.status if first is not None else None
        challenge = DigestChallenge.parse(first.get_all("Proxy-Authenticate")[0])
        credentials = answer_challenge(challenge, method="INVITE", uri=uri, username=user, password=password)
        final = self._invite(uri, user, call_id, 2, str(credentials), timeout)
        return final.status if final is not None else None

    def _invite(
        self, uri: str, user: str, call_id: str, cseq: int, authorization: str | None, timeout: float
    ) -> SipResponse | None:
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        auth = f"Proxy-Authorization: {authorization}\r\n" if authorization else ""
        common = (
            f"Via: SIP/2.0/UDP {self.local};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{self.server[0]}>;tag={self.tag}\r\n"
        )
        invite = (
            f"INVITE {uri} SIP/2.0\r\n{common}"
            f"To: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n"
            f"Contact: <sip:{user}@{self.local}>\r\n{auth}"
            f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
        ).encode()
        self.sock.sendto(invite, self.server)
        deadline = time.monotonic() + timeout
        for _ in range(20):  # provisional responses, retransmissions
            response = self.receive_response(max(0.0, deadline - time.monotonic()))
            if response is None:
                return None
            if response.get_all("Call-ID") != [call_id] or response.status < 200:
                continue
            to = response.get_all("To")[0]
            ack = (
                f"ACK {uri} SIP/2.0\r\n{common}To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} ACK\r\n"
                f"Content-Length: 0\r\n\r\n"
            ).encode()
            self.sock.sendto(ack, self.server)  # RFC 3261 17.1.1.3: the ACK of a non-2xx final response
            return response
        return None


def open_connection(port: int, source: str, timeout: float = 2.0) -> socket.socket | None:
    try:
        return socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0))
    except OSError:
        return None


def closed_by_peer(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the peer closed (EOF or reset), None if it stayed open for `timeout` seconds."""
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        for _ in range(100):  # bounded: a peer sending bytes before closing
            if not sock.recv(4096):
                break
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return time.monotonic() - start


def tcp_options(sock: socket.socket, port: int, timeout: float = 5.0) -> bytes:
    """Send OPTIONS on a connected socket; the response head (b"" if none came)."""
    local_port = sock.getsockname()[1]
    sock.sendall(options_request(HOST, port, "TCP", local_port, branch=f"z9hG4bK{secrets.token_hex(6)}"))
    sock.settimeout(timeout)
    data = b""
    try:
        for _ in range(100):
            chunk = sock.recv(65535)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                break
    except (TimeoutError, ConnectionError):
        pass
    return data


# -- (a) descriptors exhausted, then back --------------------------------------------------------------------


def test_calls_work_again_once_exhausted_descriptors_come_back(start_pbx):
    process, ports = start_pbx(
        "max_connections = 100000\nmax_connections_per_address = 100000\nfirst_message_timeout = 0\n",
        preexec_fn=low_file_limit,
    )
    process.wait_for(rf"Open files limit: {FILE_LIMIT} \(hard limit {FILE_LIMIT}")
    template = ports["dir"] / "dialplans" / "default" / "main.j2"
    stamp = template.stat().st_mtime_ns
    caller = Caller((HOST, ports["sip"]))
    held: list[socket.socket] = []
    try:
        # Idle TCP connections from several addresses until the PBX runs out of descriptors.
        for index in range(MAX_IDLE_CONNECTIONS):
            sock = open_connection(ports["sip"], SOURCES[index % len(SOURCES)])
            if sock is not None:
                held.append(sock)
            if index % 20 == 19 and "EMFILE encountered" in process.output:
                break
        process.wait_for(r"EMFILE encountered", timeout=20)

        # A call now: its template cannot be opened (the first call of this PBX, so nothing is compiled).
        status = caller.call("1001", "pass1001", "2000")
        process.wait_for(r"cannot read the template now \(Too many open files\)", timeout=10)
        assert status == 503, status  # Retry-After: the template could not be read now, not a broken one
        assert caller.call("1001", "pass1001", "2000") == 503  # still out of descriptors
    finally:
        for sock in held:
            sock.close()

    # The connections are gone: the next calls reach the dialplan's `hangup 486` (polled, bounded).
    statuses = []
    deadline = time.monotonic() + 30
    for _ in range(30):
        statuses.append(caller.call("1001", "pass1001", "2000"))
        if statuses[-1] == 486 or time.monotonic() > deadline:
            break
    assert statuses[-1] == 486, f"{statuses}\n{process.output[-3000:]}"
    assert caller.call("1001", "pass1001", "2000") == 486
    assert template.stat().st_mtime_ns == stamp  # nobody touched the template
    fresh = open_connection(ports["sip"], HOST)  # and the TCP listener serves again
    assert fresh is not None
    with fresh:
        assert tcp_options(fresh, ports["sip"]).startswith(b"SIP/2.0 200 ")
    process.wait_for(r"is readable again")
    assert process.proc.poll() is None
    caller.close()


# -- (b) a TLS connection that never handshakes -----------------------------------------------------------


def test_a_tls_connection_without_a_handshake_is_closed_after_the_timeout(start_pbx):
    process, ports = start_pbx("tls_handshake_timeout = 1.0\n")
    sock = open_connection(ports["tls"], HOST)
    assert sock is not None
    with sock:
        took = closed_by_peer(sock, timeout=15)  # idle_timeout is 600 s
    assert took is not None, "the silent TLS connection was not closed"
    assert 0.5 < took < 4.0, f"closed after {took:.1f} s"
    process.wait_for(r"TLS handshake on .* not completed in time; closing", timeout=5)


# -- (c) one address at its cap, another unaffected -------------------------------------------------------

CAP = 5


def test_one_address_is_capped_while_another_registers(start_pbx):
    process, ports = start_pbx(f"max_connections_per_address = {CAP}\n")
    port = ports["sip"]
    held: list[socket.socket] = []
    phone = SipPhone((HOST, port), "127.0.0.2")
    try:
        for _ in range(CAP):
            sock = open_connection(port, "127.0.0.1")
            assert sock is not None
            held.append(sock)
        assert tcp_options(held[0], port).startswith(b"SIP/2.0 200 ")  # the first ones are served
        for attempt in range(3):  # beyond the cap: accepted by the kernel, closed at once by the PBX
            extra = open_connection(port, "127.0.0.1")
            assert extra is not None
            with extra:
                took = closed_by_peer(extra, timeout=5)
            assert took is not None and took < 2.0, f"attempt {attempt}: connection {CAP + 1} was kept"
        process.wait_for(r"Refused a TCP connection from 127\.0\.0\.1: it has 5 open", timeout=5)

        # Another address is unaffected: OPTIONS over TCP and a REGISTER over UDP.
        other = open_connection(port, "127.0.0.2")
        assert other is not None
        with other:
            assert tcp_options(other, port).startswith(b"SIP/2.0 200 ")
        assert phone.register("1002", "pass1002").status == 200
        assert tcp_options(held[-1], port).startswith(b"SIP/2.0 200 ")  # and the capped ones still work

        # A closed connection frees a place for its address.
        held.pop(0).close()
        replacement: socket.socket | None = None
        deadline = time.monotonic() + 10
        for _ in range(20):  # the PBX notices the close within a reactor turn (polled, bounded)
            replacement = open_connection(port, "127.0.0.1")
            assert replacement is not None
            answer = tcp_options(replacement, port, timeout=2)
            if answer.startswith(b"SIP/2.0 200 ") or time.monotonic() > deadline:
                break
            replacement.close()
            replacement = None
        assert replacement is not None, "no place for 127.0.0.1 after one of its connections closed"
        held.append(replacement)
    finally:
        phone.close()
        for sock in held:
            sock.close()
