"""RFC 4475 and RFC 5118, every case, against a live `twistd pbx` over UDP.

One PBX (127.0.0.1, sip_trace off) receives each of our messages in tests/data/torture/rfc4475/ and rfc5118/
(see tests/sip/torture_corpus.py and rfc-expected.toml) from its own UDP socket, and must:

- answer a request the RFC calls valid with an ordinary application answer (200, 403, 404, 405, 481, 501 ...:
  the PBX answers INVITEs and REGISTERs for the messages' unknown domains with 404 and 403, and BYEs outside a
  dialog with 481), never 400/416/420/505/513;
- answer a request the RFC calls invalid with exactly the expected status (400, 416, 420, 505);
- stay silent only where the RFC allows it: responses (which match no client transaction) and messages no
  response can be routed for (a broken status line, no Via at all).

After each message an OPTIONS from the same socket must get its `200` (for the silent cases, nothing may
arrive before it: the PBX handles datagrams in order), and the PBX's log must hold no traceback.

Rewriting, the only change made to the files' bytes: the sent-by (host and port) of the first Via is replaced
by 127.0.0.1 and the test socket's port, so that the answer comes back to the test (RFC 3261 18.2.2 sends it
to the source address and the sent-by port) and never to the messages' example hosts. Request-URIs are left
as written: their domains are unknown to the PBX, which then answers 404 (REGISTER) or asks for credentials
(INVITE), both ordinary answers. A non-2xx final answer to an INVITE is acknowledged, as a UAC would.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest

from pbx.sip.message import Response
from pbx.sip.parser import parse_message
from tests.e2e.harness import PbxProcess, options_request, write_config
from tests.sip.torture_corpus import CASES, VALID, Case

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
WAIT = 5.0  # seconds for each expected datagram
REFUSED = (400, 416, 420, 505, 513)
_VIA_NAME = re.compile(rb"^(?:via|v)[ \t]*:", re.IGNORECASE | re.MULTILINE)
_SENT_BY = re.compile(rb"(SIP\s*/\s*[0-9.]+\s*/\s*[A-Za-z]+\s+)(\[[^\]\s]*\]|[^\s;,:\[]+)(\s*:\s*\d+)?")


@pytest.fixture(scope="module")
def torture_pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PbxProcess, int]]:
    ports = write_config(tmp_path_factory.mktemp("torture"), ipv6=False, trace=False)
    process = PbxProcess(ports["path"])
    try:
        process.wait_ready(ports["listeners"])
        yield process, ports["sip"]
    finally:
        process.stop()


def route_to(data: bytes, port: int) -> bytes:
    """`data` with the sent-by of its first Via replaced by 127.0.0.1:`port` (head only, folds kept)."""
    end = data.find(b"\r\n\r\n")
    head, rest = (data, b"") if end < 0 else (data[:end], data[end:])
    via = _VIA_NAME.search(head)
    if via is None:
        return data
    match = _SENT_BY.search(head, via.end())
    if match is None:
        return data
    sent_by = f"{HOST}:{port}".encode()
    return head[: match.start(2)] + sent_by + head[match.end(3) if match.group(3) else match.end(2) :] + rest


def receive(sock: socket.socket, deadline: float) -> Response | None:
    """The next response on `sock`, or None at the deadline."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return None
        message = parse_message(data)
        assert isinstance(message, Response), data[:200]
        return message


def acknowledge(sock: socket.socket, sent: bytes, response: Response, port: int) -> None:
    """ACK a non-2xx final response to an INVITE (RFC 3261 17.1.1.3): same Request-URI and top Via."""
    uri_text = sent.split(b" ", 2)[1].decode("utf-8", "surrogateescape")
    headers = response.headers
    lines = [
        f"ACK {uri_text} SIP/2.0",
        *(f"{name}: {headers.get(name)}" for name in ("Via", "From", "To", "Call-ID")),
        f"CSeq: {(headers.get('CSeq') or '1').split()[0]} ACK",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"), (HOST, port))


def probe(sock: socket.socket, pbx_port: int, branch: str) -> list[Response]:
    """Send an OPTIONS and return every response up to and including its answer (which must be 200)."""
    local_port = sock.getsockname()[1]
    sock.sendto(options_request(HOST, pbx_port, "UDP", local_port, branch=branch), (HOST, pbx_port))
    deadline = time.monotonic() + WAIT
    seen: list[Response] = []
    while True:
        response = receive(sock, deadline)
        assert response is not None, f"no answer to the OPTIONS probe; before it: {seen}"
        seen.append(response)
        if response.call_id == f"probe-{branch}@{HOST}":
            assert response.status == 200
            return seen


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rfc_message_against_live_pbx(torture_pbx: tuple[PbxProcess, int], case: Case) -> None:
    process, pbx_port = torture_pbx
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        data = route_to(case.data, sock.getsockname()[1])
        sock.sendto(data, (HOST, pbx_port))
        branch = f"z9hG4bKtorture{case.name.replace('-', '')}"
        if case.expect == VALID or isinstance(case.expect, int):
            deadline = time.monotonic() + WAIT
            answers: list[Response] = []
            while not answers or answers[-1].status < 200:
                response = receive(sock, deadline)
                assert response is not None, f"{case.id}: no final answer; got {answers}"
                answers.append(response)
            final = answers[-1]
            if case.expect == VALID:
                assert final.status not in REFUSED, f"{case.id}: {final.status} {final.reason}"
            else:
                assert final.status == case.expect, f"{case.id}: {final.status} {final.reason}"
            assert final.reason.isascii() and final.reason.isprintable() and len(final.reason) <= 80
            if final.status >= 300 and (final.headers.get("CSeq") or "").split()[-1:] == ["INVITE"]:
                acknowledge(sock, data, final, pbx_port)
            probe(sock, pbx_port, branch)
        else:
            before = probe(sock, pbx_port, branch)[:-1]
            assert before == [], f"{case.id}: answered {[r.status for r in before]}, RFC wants silence"
    assert process.proc.poll() is None
    assert "Traceback" not in process.output
