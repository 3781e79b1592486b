"""No input kills a transport or the process (RFC 3261 8.2, 18.3; RFC 4475 in spirit).

A `twistd pbx` (sip_trace off) is fed about 3000 random and mutated datagrams over UDP and about 500 mutated
messages over a few TCP connections, plus a 2 MB message without a blank line, a slow sender trickling a
partial message and a garbage Content-Length. Meanwhile one well-behaved TCP connection stays open. Afterwards
OPTIONS over UDP, over a new TCP connection and over the old one still get `200`, the process is alive and its
log holds no traceback. A few checks look at the exact answers the stack gives to specific bad requests.

Everything is deterministic (`random.Random(1234)`) and waits on sockets with timeouts, never on sleeps. All
traffic goes to 127.0.0.1; generated Vias never carry `maddr`, so responses can only go to loopback.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PbxProcess, options_request, write_config

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
SEED = 1234
UDP_CASES = 3000
TCP_CASES = 500
TCP_CONNECTIONS = 5
# A liveness probe (OPTIONS, waiting for its 200) follows every 50 datagrams or 96 KB: it also paces the
# sender, so that the PBX's socket buffer (about 208 KB on Linux) never overflows and every case is parsed.
PROBE_EVERY = 50
PROBE_BYTES = 96 * 1024
SLOW_SENDER_LIMIT = 50.0  # seconds; the PBX cuts a partial message after 32 s (64*T1)
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3})", re.MULTILINE)


@pytest.fixture
def quiet_pbx(tmp_path: Path) -> Iterator[tuple[PbxProcess, dict]]:
    """A PBX on 127.0.0.1 only, sip_trace off: 3500 messages would otherwise drown the log. The fuzz sends
    far faster than a phone: the per-source rate limits (`[edge]`, tested in test_flood.py) are raised so that
    what meets the parser is the whole fuzz."""
    edge = "[edge]\nrate = 100000\nburst = 100000\nconnection_rate = 10000\nconnection_burst = 10000\n"
    ports = write_config(tmp_path, ipv6=False, trace=False, extra=edge)
    process = PbxProcess(ports["path"])
    try:
        process.wait_ready(ports["listeners"])
        yield process, ports
    finally:
        process.stop()


# -- building messages ---------------------------------------------------------------------------------


def sip_message(
    method: str,
    port: int,
    local_port: int,
    *,
    transport: str = "UDP",
    branch: str = "z9hG4bKrobust",
    body: bytes = b"",
    extra: list[tuple[str, str]] | None = None,
    uri: str | None = None,
) -> list[tuple[str, str]]:
    """The start line (as pseudo-header "") and headers of a valid request, to mutate before joining."""
    headers = [
        ("", f"{method} {uri or f'sip:1000@{HOST}:{port}'} SIP/2.0"),
        ("Via", f"SIP/2.0/{transport} {HOST}:{local_port};branch={branch};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:1001@{HOST}>;tag=f{branch[-6:]}"),
        ("To", f"<sip:1000@{HOST}>"),
        ("Call-ID", f"{branch}@{HOST}"),
        ("CSeq", f"1 {method}"),
        ("Contact", f"<sip:1001@{HOST}:{local_port};transport={transport.lower()}>"),
    ]
    headers.extend(extra or [])
    headers.append(("Content-Length", str(len(body))))
    headers.append(("__body__", body.decode("latin-1")))
    return headers


def join(headers: list[tuple[str, str]], eol: str = "\r\n") -> bytes:
    lines = []
    body = ""
    for name, value in headers:
        if name == "__body__":
            body = value
        elif name == "":
            lines.append(value)
        else:
            lines.append(f"{name}: {value}")
    return (eol.join(lines) + eol + eol + body).encode("utf-8", "surrogateescape")


def request_bytes(method: str, port: int, local_port: int, branch: str, **kwargs: object) -> bytes:
    return join(sip_message(method, port, local_port, branch=branch, **kwargs))  # type: ignore[arg-type]


SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)
METHODS = ["OPTIONS", "REGISTER", "INVITE", "BYE", "CANCEL", "ACK", "MESSAGE", "SUBSCRIBE", "NOTIFY", "INFO"]

GARBLED_VIAS = [
    "garbage",
    "SIP/2.0/UDP",
    "SIP/2.0/UDP ;branch=z9hG4bK1",
    "SIP/2.0/UDP 127.0.0.1:99999;branch=z9hG4bK1",
    "SIP/2.0/UDP 127.0.0.1:-1",
    "SIP/2.0/XYZ 127.0.0.1:5060;branch=z9hG4bK1",
    "SIP/3.0/UDP 127.0.0.1",
    "SIP/2.0/UDP [::1;branch=x",
    "SIP/2.0/UDP [zz::zz]:5060",
    "SIP/2.0/UDP 127.0.0.1;branch=;rport=abc",
    "SIP/2.0/UDP 127.0.0.1;rport=70000;received=notanip",
    "SIP/2.0/UDP 127.0.0.1;;;;=;=",
    "SIP/2.0/UDP 127.0.0.1:5060 , , ,",
    "SIP/2.0/UDP host_with_underscore:5060;branch=z9hG4bKa",
    "SIP/2.0/UDP 256.256.256.256:5060",
    '"quoted"/2.0/UDP 127.0.0.1',
    "SIP / 2.0 / UDP 127.0.0.1 : 5060 ; branch = z9hG4bKsp",
]
BAD_CSEQS = [
    "",
    "abc",
    "1",
    "OPTIONS",
    "-1 OPTIONS",
    "99999999999999999999 OPTIONS",
    "1 OPTIONS extra",
    "1\tX",
]
BAD_LENGTHS = ["", "abc", "-1", "99999", "4294967296", "1 2", "0x10", "٣", "1e3", "99999999999999999"]
BAD_URIS = [
    "sip:", "sip:@", "sip:[::1", "sip:x:99999", "tel:", "sips:;;;", "<sip:x>", "sip:user@host;;;=",
    "mailto:a@b", "http://x/", "sip:%zz@host", "sip:a@b?c=d&&", ":", "sip:1000@127.0.0.1:0",
]  # fmt: skip
BAD_START_LINES = [
    "", "OPTIONS", "OPTIONS sip:x", "OPTIONS  sip:x SIP/2.0", "OPTIONS sip:x SIP/3.0",
    "OPTIONS sip:x HTTP/1.1",
    "INV ITE sip:x SIP/2.0", "sip:x OPTIONS SIP/2.0", "GET / HTTP/1.1", "O\x00PTIONS sip:x SIP/2.0",
    "A" * 9000 + " sip:x SIP/2.0", "OPTIONS sip:x SIP/2.0 extra", "\tOPTIONS sip:x SIP/2.0", "SIP/2.0",
    "SIP/2.0 99 Too Small", "SIP/2.0 700 Too Big", "SIP/2.0 2000 OK", "SIP/2.0 abc", "SIP/1.0 200 OK",
]  # fmt: skip


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Flip, insert, delete, truncate or duplicate bytes."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            buf = bytearray(rng.randbytes(8))
        kind = rng.choice(["flip", "insert", "delete", "truncate", "duplicate", "set"])
        pos = rng.randrange(len(buf))
        if kind == "flip":
            buf[pos] ^= 1 << rng.randrange(8)
        elif kind == "set":
            buf[pos] = rng.choice([0, 0x0A, 0x0D, 0x20, 0x3A, 0x3B, 0x3C, 0xFF, 0xC3, rng.randrange(256)])
        elif kind == "insert":
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif kind == "delete":
            del buf[pos : pos + rng.randint(1, 32)]
        elif kind == "truncate":
            del buf[pos:]
        else:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start : start + rng.randint(1, 64)]
    return bytes(buf)


def _mutate_headers(rng: random.Random, headers: list[tuple[str, str]], method: str) -> list[tuple[str, str]]:
    """One header-level mutation of a request's header list."""
    h = list(headers)
    names = [n for n, _ in h]

    def replace(name: str, value: str) -> None:
        if name in names:
            h[names.index(name)] = (name, value)
        else:
            h.insert(1, (name, value))

    def remove(name: str) -> None:
        nonlocal h
        h = [(n, v) for n, v in h if n != name]

    def insert(name: str, value: str) -> None:
        h.insert(rng.randint(1, max(1, len(h) - 1)), (name, value))

    kind = rng.randrange(26)
    if kind == 0:
        insert("Via", dict(h).get("Via", f"SIP/2.0/UDP {HOST}"))
    elif kind == 1:
        remove("Via")
    elif kind == 2:
        replace("Via", rng.choice(GARBLED_VIAS))
    elif kind == 3:
        insert("Via", rng.choice(GARBLED_VIAS))
    elif kind == 4:
        remove("CSeq")
    elif kind == 5:
        replace("CSeq", rng.choice([*BAD_CSEQS, f"1 {rng.choice(METHODS)}"]))
    elif kind == 6:
        insert("CSeq", f"2 {method}")
    elif kind == 7:
        remove("Content-Length")
    elif kind == 8:
        replace("Content-Length", rng.choice(BAD_LENGTHS))
    elif kind == 9:
        insert("Content-Length", str(rng.randint(0, 500)))
    elif kind == 10:  # huge header value (kept under the UDP datagram limit)
        insert(
            rng.choice(["Subject", "X-Big", "User-Agent", "Contact"]), "x" * rng.choice([1000, 9000, 60000])
        )
    elif kind == 11:  # thousands of headers
        for i in range(rng.choice([300, 2000, 4000])):
            h.insert(1, (f"X-H{i}", "v"))
    elif kind == 12:  # NUL bytes
        i = rng.randrange(len(h) - 1)
        n, v = h[i]
        pos = rng.randint(0, len(v))
        h[i] = (n, v[:pos] + "\x00" * rng.randint(1, 3) + v[pos:])
    elif kind == 13:  # non-UTF-8 bytes (surrogate-escaped so they survive `join`)
        i = rng.randrange(len(h) - 1)
        n, v = h[i]
        junk = rng.choice(["\udcff\udcfe", "\udcc0\udc80", "\udced\udca0\udc80", "\udce9t\udce9", "\udc80"])
        h[i] = (n, v + junk) if rng.random() < 0.7 else (n + junk, v)
    elif kind == 14:
        h[0] = ("", rng.choice(BAD_START_LINES))
    elif kind == 15:
        h[0] = ("", f"{method} {rng.choice(BAD_URIS)} SIP/2.0")
    elif kind == 16:
        replace("Max-Forwards", rng.choice(["0", "abc", "-1", "256", "70 70", "", "0000000001"]))
    elif kind == 17:
        target = rng.choice(["From", "To", "Call-ID"])
        if rng.random() < 0.5:
            remove(target)
        else:
            replace(
                target, rng.choice(["", "<", "sip:", "<sip:x>;tag", '"unterminated <sip:x>', "a b c", ";;;"])
            )
    elif kind == 18:
        insert(
            rng.choice(["Require", "Proxy-Require", "Supported"]), rng.choice(["foo", "", ",,,", "100rel"])
        )
    elif kind == 19:  # a header line without colon, an empty name, a leading continuation
        insert(rng.choice(["NoColonHere", "", " folded", "Bad Name"]), "v")
    elif kind == 20:  # folded Via
        replace("Via", f"SIP/2.0/UDP {HOST}\r\n ;branch=z9hG4bKfold\r\n\t;rport")
    elif kind == 21:  # compact forms mixed with full ones
        h = [
            ({"Via": "v", "Call-ID": "i", "Content-Length": "l", "From": "f", "To": "t"}.get(n, n), v)
            for n, v in h
        ]
        insert("Call-ID", "second-call-id")
    elif kind == 22:
        insert(rng.choice(["Route", "Record-Route", "Contact", "Expires", "Event", "Authorization"]),
               rng.choice(["*", "<sip:x;lr", "Digest ,,,,", "-5", "<<>>", "sip:[", "\"\\\""]))  # fmt: skip
    elif kind == 23:  # body longer or shorter than Content-Length
        h[-1] = ("__body__", rng.choice(["", "x" * 10, "\r\n" * 50, SDP.decode()]))
    elif kind == 24:
        h = [(n.upper() if n not in ("", "__body__") else n, v) for n, v in h]
    else:
        insert("Via", f"SIP/2.0/UDP {HOST}:1;branch=z9hG4bK{rng.randrange(10**6)}")
    return h


def _response_garbage(rng: random.Random, port: int, local_port: int, n: int) -> bytes:
    status = rng.choice(
        ["200 OK", "180 Ringing", "100 Trying", "487 Terminated", "000 Zero", "999 Big", "200"]
    )
    branch = rng.choice([f"z9hG4bKresp{n}", "", "unknown", "z9hG4bK"])
    headers = [
        ("", f"SIP/2.0 {status}"),
        ("Via", f"SIP/2.0/UDP {HOST}:{port};branch={branch}"),
        ("From", f"<sip:1000@{HOST}>;tag=a"),
        ("To", f"<sip:1001@{HOST}>;tag=b"),
        ("Call-ID", f"resp{n}"),
        ("CSeq", rng.choice(["1 INVITE", "1 OPTIONS", "x", "", "1 FOO"])),
        ("Content-Length", "0"),
        ("__body__", ""),
    ]
    if rng.random() < 0.5:
        headers = _mutate_headers(rng, headers, "INVITE")
    data = join(headers)
    return _mutate_bytes(rng, data) if rng.random() < 0.3 else data


def fuzz_case(rng: random.Random, n: int, port: int, local_port: int, transport: str = "UDP") -> bytes:
    """The n-th fuzz input: random bytes, mutated requests or mutated responses."""
    roll = rng.random()
    if roll < 0.07:
        return rng.randbytes(rng.randint(0, 1500))
    if roll < 0.10:  # keep-alives, STUN look-alikes and odd framing
        return rng.choice(
            [
                b"\r\n\r\n", b"\r\n", b"", b"\x00" * 20,
                b"\x00\x01\x00\x00\x21\x12\xa4\x42" + rng.randbytes(12),
                b"\x00\x01\x00\x08\x21\x12\xa4\x42" + rng.randbytes(12), b"\r\n" * 3000,
            ]
        )  # fmt: skip
    if roll < 0.22:
        return _response_garbage(rng, port, local_port, n)
    method = rng.choice(METHODS)
    body = SDP if method == "INVITE" and rng.random() < 0.7 else (b"hello" if method == "MESSAGE" else b"")
    headers = sip_message(method, port, local_port, transport=transport, branch=f"z9hG4bKf{n}x", body=body)
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        headers = _mutate_headers(rng, headers, method)
    data = join(headers, eol=rng.choice(["\r\n"] * 8 + ["\n", "\r"]))
    if roll > 0.75:
        data = _mutate_bytes(rng, data)
    if rng.random() < 0.03:  # two messages in one datagram
        data += request_bytes("OPTIONS", port, local_port, f"z9hG4bKtwo{n}")
    return data


def _safe(data: bytes) -> bool:
    """Only loopback: a Via `maddr` could send a response elsewhere, so such inputs are skipped."""
    return b"maddr" not in data.lower() and len(data) <= 65000


def fuzz_corpus(rng: random.Random, count: int, port: int, local_port: int, transport: str) -> list[bytes]:
    cases: list[bytes] = []
    n = 0
    while len(cases) < count:
        data = fuzz_case(rng, n, port, local_port, transport)
        n += 1
        if _safe(data):
            cases.append(data)
    return cases


# -- talking to the PBX --------------------------------------------------------------------------------


def statuses(data: bytes) -> list[int]:
    return [int(code) for code in _STATUS.findall(data)]


def udp_probe(port: int, branch: str, tries: int = 3, timeout: float = 2.0) -> bytes | None:
    """OPTIONS over UDP, retransmitted like Timer E (lost datagrams are not failures), waiting for 200."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        s.settimeout(timeout)
        data = options_request(HOST, port, "UDP", s.getsockname()[1], branch)
        for _ in range(tries):
            s.sendto(data, (HOST, port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    reply = s.recv(65535)
                except TimeoutError:
                    break
                if branch.encode() in reply:
                    return reply
    return None


def udp_ask(port: int, data_for: Callable[[int], bytes], timeout: float = 5.0) -> bytes:
    """Send one request (built for our local port) and return the first final response."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        s.settimeout(timeout)
        s.sendto(data_for(s.getsockname()[1]), (HOST, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = s.recv(65535)
            if not reply.startswith(b"SIP/2.0 1"):
                return reply
    raise AssertionError("no final response")


def read_response(sock: socket.socket, timeout: float = 5.0, buffer: bytearray | None = None) -> bytes:
    """Read one response from a stream (framed by Content-Length); raise on timeout or close."""
    buf = buffer if buffer is not None else bytearray()
    deadline = time.monotonic() + timeout
    while True:
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            match = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", bytes(buf[:end]))
            total = end + 4 + (int(match.group(1)) if match else 0)
            if len(buf) >= total:
                message = bytes(buf[:total])
                del buf[:total]
                return message
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete response; buffered {bytes(buf[:300])!r}")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the PBX; buffered {bytes(buf[:300])!r}")
        buf += chunk


def tracebacks(output: str) -> list[str]:
    """The log entries holding a traceback or an "Unhandled" error (none are expected)."""
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\dT)", output)
    return [entry for entry in entries if "Traceback" in entry or "Unhandled" in entry]


def tcp_connect(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=5)


def tcp_options(sock: socket.socket, port: int, branch: str, buffer: bytearray | None = None) -> bytes:
    sock.sendall(options_request(HOST, port, "TCP", sock.getsockname()[1], branch))
    buf = buffer if buffer is not None else bytearray()
    for _ in range(50):  # skip responses to earlier requests on this connection
        reply = read_response(sock, 10.0, buf)
        if branch.encode() in reply:
            return reply
    raise AssertionError(f"no response for {branch}")


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True once the PBX has closed the connection (EOF or reset) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


# What follows each TCP fuzz message: a body for any Content-Length the message left unfinished (the PBX cuts
# anything over 64 KB), a blank line ending any unfinished header, then a probe OPTIONS on that connection.
TCP_FLUSH = b" " * 2048 + b"\r\n\r\n"


def tcp_fuzz(port: int, cases: list[bytes], seen: Counter[int], tag: str) -> Counter[str]:
    """Send each case on one connection, each followed by a flush and a probe; replace cut connections.

    Returns counts of outcomes: "alive" (the probe got its 200), "cut" (the PBX closed the connection),
    "stalled" (no answer within 2 s: the framing state is unknown, so the connection is replaced).
    """
    outcomes: Counter[str] = Counter()
    conn = tcp_connect(port)
    buf = bytearray()
    try:
        for n, data in enumerate(cases):
            branch = f"z9hG4bKtcp{tag}n{n}"
            probe = options_request(HOST, port, "TCP", conn.getsockname()[1], branch)
            outcome = "stalled"
            try:
                conn.sendall(data + TCP_FLUSH + probe)
                for _ in range(20):
                    reply = read_response(conn, 2.0, buf)
                    seen.update(statuses(reply[:12]))
                    if branch.encode() in reply:
                        assert reply.startswith(b"SIP/2.0 200 "), reply
                        outcome = "alive"
                        break
            except (ConnectionError, OSError) as e:
                outcome = "stalled" if isinstance(e, TimeoutError) else "cut"
            outcomes[outcome] += 1
            if outcome != "alive":
                conn.close()
                conn = tcp_connect(port)
                buf.clear()
    finally:
        conn.close()
    return outcomes


class SlowSender(threading.Thread):
    """Trickles one byte of a request per second (pacing by a recv timeout) until the PBX cuts it off."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.cut_after: float | None = None
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the test
            self.error = e

    def _run(self) -> None:
        payload = options_request(HOST, self.port, "TCP", 1, "z9hG4bKslow") * 2
        started = time.monotonic()
        with tcp_connect(self.port) as s:
            while time.monotonic() - started < SLOW_SENDER_LIMIT and self.sent < len(payload) // 2:
                try:
                    s.sendall(payload[self.sent : self.sent + 1])
                    self.sent += 1
                    s.settimeout(1.0)
                    if not s.recv(4096):
                        break
                except TimeoutError:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    break
            else:
                return
            self.cut_after = time.monotonic() - started


# -- the tests -----------------------------------------------------------------------------------------


def test_specific_answers(quiet_pbx):
    """Exact status codes for a few bad requests (RFC 3261 8.2.1-8.2.2, 16.3, 21.4)."""
    process, ports = quiet_pbx
    port = ports["sip"]

    def ask(method: str, branch: str, **kwargs: object) -> bytes:
        return udp_ask(port, lambda local: request_bytes(method, port, local, branch, **kwargs))

    def with_header(method: str, branch: str, name: str, value: str) -> bytes:
        def build(local: int) -> bytes:
            headers = sip_message(method, port, local, branch=branch)
            headers = [(n, value if n == name else v) for n, v in headers]
            if name not in dict(headers):
                headers.insert(1, (name, value))
            return join(headers)

        return udp_ask(port, build)

    reply = with_header("OPTIONS", "z9hG4bKcseq1", "CSeq", "abc OPTIONS")
    assert reply.startswith(b"SIP/2.0 400 ") and b"CSeq" in reply.split(b"\r\n")[0], reply
    reply = with_header("OPTIONS", "z9hG4bKcseq2", "CSeq", "1 REGISTER")
    assert reply.startswith(b"SIP/2.0 400 ") and b"CSeq" in reply.split(b"\r\n")[0], reply

    reply = with_header("REGISTER", "z9hG4bKmf0", "Max-Forwards", "0")
    assert reply.startswith(b"SIP/2.0 483 "), reply

    reply = ask("FROBNICATE", "z9hG4bKunknown")
    assert reply.startswith(b"SIP/2.0 501 "), reply

    reply = with_header("OPTIONS", "z9hG4bKrequire", "Require", "foo")
    assert reply.startswith(b"SIP/2.0 420 "), reply
    assert re.search(rb"(?im)^Unsupported:[ \t]*foo\r$", reply), reply

    reply = ask("OPTIONS", "z9hG4bKmailto", uri="mailto:alice@example.com")
    assert reply.startswith(b"SIP/2.0 416 "), reply

    assert process.proc.poll() is None


def test_no_input_kills_a_transport_or_the_process(quiet_pbx):
    process, ports = quiet_pbx
    port = ports["sip"]
    rng = random.Random(SEED)
    started = time.monotonic()

    # A well-behaved TCP connection that stays open through the whole abuse.
    good = tcp_connect(port)
    good_buf = bytearray()
    assert tcp_options(good, port, "z9hG4bKgood1", good_buf).startswith(b"SIP/2.0 200 ")

    # The slow sender runs beside everything else: it is cut after 32 s of a partial message.
    slow = SlowSender(port)
    slow.start()

    # -- UDP: 3000 random and mutated datagrams, a liveness probe every 50 of them or 96 KB ---------------
    seen: Counter[int] = Counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fuzz:
        fuzz.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        fuzz.bind((HOST, 0))
        local_port = fuzz.getsockname()[1]
        corpus = fuzz_corpus(rng, UDP_CASES, port, local_port, "UDP")
        since_probe: list[bytes] = []
        in_flight = 0
        for i, data in enumerate(corpus):
            fuzz.sendto(data, (HOST, port))
            since_probe.append(data)
            in_flight += len(data) + 1024  # the kernel's per-datagram overhead, roughly
            if len(since_probe) >= PROBE_EVERY or in_flight >= PROBE_BYTES or i == len(corpus) - 1:
                reply = udp_probe(port, f"z9hG4bKprobe{i}")
                assert reply is not None and reply.startswith(b"SIP/2.0 200 "), (
                    f"no 200 after UDP case {i}: {since_probe!r:.3000}\n{process.output[-3000:]}"
                )
                since_probe, in_flight = [], 0
                while True:
                    try:
                        seen.update(statuses(fuzz.recv(65535, socket.MSG_DONTWAIT)))
                    except BlockingIOError:
                        break
    assert seen[400] > 50, f"the fuzz barely reached the parser: {seen}"

    # -- TCP: 500 mutated messages over a few connections; a cut connection is replaced -------------------
    tcp_cases = fuzz_corpus(rng, TCP_CASES, port, 1, "TCP")
    per_connection = TCP_CASES // TCP_CONNECTIONS
    outcomes: Counter[str] = Counter()
    for c in range(TCP_CONNECTIONS):
        outcomes += tcp_fuzz(port, tcp_cases[c * per_connection : (c + 1) * per_connection], seen, f"c{c}")
    assert outcomes["cut"] > 0, f"no framing error cut a connection, the TCP fuzz is too tame: {outcomes}"
    assert outcomes["alive"] > TCP_CASES // 2, outcomes

    # A 2 MB message without a blank line is cut off (the framing buffer is bounded by max_message_size).
    with tcp_connect(port) as big:
        big.settimeout(10)
        head = b"OPTIONS sip:x SIP/2.0\r\nX-Long: "
        try:
            big.sendall(head + b"a" * (2 * 1024 * 1024 - len(head)))
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass  # cut off mid-send (or stuck: then closed_by_peer fails below)
        assert closed_by_peer(big, 10), "a 2 MB message without a blank line was not cut off"

    # Garbage Content-Length on a stream cannot be framed: the connection is closed.
    for length in (b"abc", b"-5", b"99999999999", b"1 2"):
        with tcp_connect(port) as bad:
            message = options_request(HOST, port, "TCP", bad.getsockname()[1], "z9hG4bKbadlen")
            bad.sendall(message.replace(b"Content-Length: 0", b"Content-Length: " + length))
            assert closed_by_peer(bad, 10), f"Content-Length: {length!r} did not close the connection"

    # -- afterwards everything still works --------------------------------------------------------------
    slow.join(SLOW_SENDER_LIMIT + 10 - (time.monotonic() - started))
    assert slow.error is None, slow.error
    assert slow.cut_after is not None, f"the slow sender was never cut off ({slow.sent} bytes trickled)"

    assert tcp_options(good, port, "z9hG4bKgood2", good_buf).startswith(b"SIP/2.0 200 "), "good conn hurt"
    good.close()
    with tcp_connect(port) as fresh:
        assert tcp_options(fresh, port, "z9hG4bKfresh").startswith(b"SIP/2.0 200 ")
    reply = udp_probe(port, "z9hG4bKfinal")
    assert reply is not None and reply.startswith(b"SIP/2.0 200 "), reply

    assert process.proc.poll() is None, f"the PBX died:\n{process.output[-5000:]}"
    problems = tracebacks(process.output)
    assert not problems, f"{len(problems)} tracebacks in the log; the first ones:\n" + "\n".join(problems[:3])
