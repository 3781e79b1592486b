"""DTMF interworking between the legs of a call, shown with SIPp against a live `twistd pbx` (RFC 4733, SIP
INFO `application/dtmf-relay`):

- a caller without telephone-event presses 1 and # by SIP INFO; the callee negotiated telephone-event and
  receives RFC 4733 events on its RTP socket (here the test's own UDP socket, named in the callee's SDP):
  a start packet with the marker bit, updates, three end packets, one timestamp per event, sequence numbers
  without a gap, and no INFO reaches the callee;
- the reverse: a caller with telephone-event sends RFC 4733 events for 5 and # from the test's socket to
  the PBX's port (which its SIPp scenario wrote to a file); the callee has no telephone-event, allows INFO,
  and its scenario requires an INFO with Signal=5 then Signal=#.

SIPp does the signalling; the test's sockets are the phones' RTP ends (no root, no pcap). Every wait has a
timeout; the PBX log must have no traceback.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx.media.dtmf import DtmfSender, TelephoneEvent
from pbx.media.rtp import RtpPacket
from tests.e2e.test_calls_sipp import (  # noqa: F401 (fixtures)
    CallPbx,
    Sipp,
    SippSet,
    sipp,
    start_pbx,
)
from tests.e2e.test_offer_answer_sipp import assert_no_traceback

pytestmark = pytest.mark.e2e

DIAL_1002 = "dial 1002 timeout=10\nhangup\n"


@pytest.fixture
def rtp_sockets() -> Iterator[list[socket.socket]]:
    """UDP sockets on 127.0.0.1 that stand for the phones' RTP ends; closed at the end."""
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def rtp_socket(opened: list[socket.socket]) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    opened.append(s)
    return s


def start_caller(sipp: SippSet, pbx: CallPbx, scenario: str, rtp_port: int, name: str = "uac") -> Sipp:  # noqa: F811
    """The caller 1001 dialling 1002 in the background, its SDP naming `rtp_port` (CSV field4)."""
    csv = sipp.users_csv([("1001", "pass1001", "1002", str(rtp_port))], f"{name}_users")
    return sipp.start(name, scenario, [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=20)


def start_callee(sipp: SippSet, pbx: CallPbx, scenario: str, rtp_port: int) -> Sipp:  # noqa: F811
    """1002 registered and answering with `scenario`, its SDP naming `rtp_port`."""
    port = sipp.register(pbx, "1002")
    return sipp.uas("uas", scenario, "1002", port, ["-key", "rtp_port", str(rtp_port)])


def wait_for_port(path: Path, watched: Sipp, timeout: float = 15.0) -> int:
    """The PBX's RTP port that a SIPp scenario wrote to `path` (`<exec>`, written then renamed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text().strip())
        if watched.proc.poll() is not None:
            raise AssertionError(f"{watched.name} ended before writing {path.name}\n{watched}")
        time.sleep(0.02)  # polling the file system for an event: the file
    raise AssertionError(f"no {path.name} after {timeout} s\n{watched}")


def receive_rtp(sock: socket.socket, done: callable, timeout: float = 10.0) -> list[RtpPacket]:  # type: ignore[valid-type]
    """RTP packets arriving on `sock` until `done(packets)` or the timeout."""
    packets: list[RtpPacket] = []
    deadline = time.monotonic() + timeout
    while not done(packets):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data = sock.recv(2048)
        except TimeoutError:
            break
        packets.append(RtpPacket.parse(data))
    return packets


def events_of(packets: list[RtpPacket], payload_type: int = 101) -> dict[int, list[RtpPacket]]:
    """The telephone-event packets by event timestamp (one key press each), in arrival order."""
    out: dict[int, list[RtpPacket]] = {}
    for packet in packets:
        if packet.payload_type == payload_type:
            out.setdefault(packet.timestamp, []).append(packet)
    return out


def ended(packets: list[RtpPacket], presses: int) -> bool:
    """Whether `presses` events have their three end packets."""
    events = events_of(packets)
    complete = [p for p in events.values() if sum(TelephoneEvent.parse(x.payload).end for x in p) >= 3]
    return len(complete) >= presses


def test_info_from_the_caller_reaches_the_callee_as_rfc4733_events(start_pbx, sipp, rtp_sockets):  # noqa: F811
    pbx = start_pbx(DIAL_1002)
    callee_rtp = rtp_socket(rtp_sockets)
    uas = start_callee(sipp, pbx, "dtmf_uas_events.xml", callee_rtp.getsockname()[1])
    uac = start_caller(sipp, pbx, "dtmf_uac_info.xml", rtp_socket(rtp_sockets).getsockname()[1])
    packets = receive_rtp(callee_rtp, lambda got: ended(got, 2))
    sipp.check(pbx, uac, uas)
    events = list(events_of(packets).values())
    assert len(events) == 2, packets
    digits = []
    for press in events:
        payloads = [TelephoneEvent.parse(p.payload) for p in press]
        assert press[0].marker and not any(p.marker for p in press[1:]), press
        assert [p.end for p in payloads][-3:] == [True, True, True], payloads
        assert not any(p.end for p in payloads[:-3]), payloads
        assert payloads[-1].duration == 160 * 8, payloads  # the INFO's 160 ms, in 8 kHz ticks
        assert len({p.event for p in payloads}) == 1
        digits.append(payloads[0].digit)
    assert digits == ["1", "#"]
    seqs = [p.sequence_number for p in packets]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))], seqs
    assert len({p.ssrc for p in packets}) == 1
    assert events[0][0].timestamp != events[1][0].timestamp
    assert uas.requests("INFO") == []  # answered by the PBX, converted
    assert len(uac.responses(200)) >= 3  # the INVITE's, both INFOs', the BYE's
    pbx.ended(200)
    assert_no_traceback(pbx)


def test_rfc4733_events_from_the_caller_reach_the_callee_as_info(start_pbx, sipp, rtp_sockets):  # noqa: F811
    pbx = start_pbx(DIAL_1002)
    caller_rtp, callee_rtp = rtp_socket(rtp_sockets), rtp_socket(rtp_sockets)
    uas = start_callee(sipp, pbx, "dtmf_uas_info.xml", callee_rtp.getsockname()[1])
    uac = start_caller(sipp, pbx, "dtmf_uac_events.xml", caller_rtp.getsockname()[1])
    pbx_port = wait_for_port(sipp.directory / "pbx_port_a.txt", uac)
    sender = DtmfSender()
    seq, ssrc = 1000, 0x1234ABCD
    for n, digit in enumerate("5#"):
        start = 80000 + 4000 * n
        for marker, timestamp, payload in sender.packets(digit, start, 960):
            seq += 1
            packet = RtpPacket(101, seq, timestamp, ssrc, payload, marker=marker)
            caller_rtp.sendto(packet.to_bytes(), ("127.0.0.1", pbx_port))
    sipp.check(pbx, uac, uas)
    infos = uas.requests("INFO")
    assert len(infos) == 2, infos
    bodies = [m.split("\r\n\r\n", 1)[1] for m in infos]
    assert "Signal=5" in bodies[0] and "Duration=120" in bodies[0], bodies
    assert "Signal=#" in bodies[1], bodies
    assert all("Content-Type: application/dtmf-relay" in m for m in infos), infos
    pbx.ended(200)
    assert_no_traceback(pbx)
