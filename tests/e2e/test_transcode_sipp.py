"""A PCMU-only phone and a PCMA-only callee (a carrier) hear each other through the PBX, shown with SIPp
against a live `twistd pbx` (G.711 µ-law <-> A-law in the relay):

The caller offers PCMU alone; the PBX offers the callee PCMU and PCMA; the callee answers PCMA alone; the
caller's 200 says PCMU. The test's UDP sockets are both phones' RTP ends: the caller's sends a 1000 Hz tone in
PCMU, the callee's a 600 Hz tone in PCMA, each to the PBX port its SIPp scenario wrote to a file. What
arrives at the callee must be PCMA (payload type 8) whose decoded audio holds 1000 Hz, and what arrives at
the caller PCMU (0) holding 600 Hz, each well above the other tone and the noise floor (Goertzel,
`tests/e2e/audio.py`).
"""

from __future__ import annotations

import math
import struct

import pytest

from pbx.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from pbx.media.rtp import RtpPacket
from tests.e2e.audio import goertzel_power
from tests.e2e.test_calls_sipp import sipp, start_pbx  # noqa: F401 (fixtures)
from tests.e2e.test_dtmf_interworking_sipp import (  # noqa: F401 (fixtures)
    DIAL_1002,
    receive_rtp,
    rtp_socket,
    rtp_sockets,
    start_callee,
    start_caller,
    wait_for_port,
)
from tests.e2e.test_offer_answer_sipp import assert_no_traceback

pytestmark = pytest.mark.e2e

PACKETS = 50  # one second of 20 ms packets each way


def tone(frequency: float, samples: int, amplitude: int = 8000) -> bytes:
    """16-bit little-endian PCM of a sine."""
    step = 2 * math.pi * frequency / 8000
    return struct.pack(f"<{samples}h", *(round(amplitude * math.sin(step * i)) for i in range(samples)))


def packets(payload: bytes, payload_type: int, ssrc: int) -> list[bytes]:
    return [
        RtpPacket(payload_type, 100 + n, 160 * n, ssrc, payload[160 * n : 160 * (n + 1)]).to_bytes()
        for n in range(len(payload) // 160)
    ]


def powers(pcm: bytes) -> dict[float, float]:
    samples = [s / 32768 for s in struct.unpack(f"<{len(pcm) // 2}h", pcm)]
    return {f: goertzel_power(samples, 8000, f) for f in (600.0, 1000.0, 1400.0, 2200.0)}


def test_a_pcmu_phone_and_a_pcma_callee_hear_each_other(start_pbx, sipp, rtp_sockets):  # noqa: F811
    pbx = start_pbx(DIAL_1002)
    caller_rtp, callee_rtp = rtp_socket(rtp_sockets), rtp_socket(rtp_sockets)
    uas = start_callee(sipp, pbx, "codec_uas.xml", callee_rtp.getsockname()[1])
    uac = start_caller(sipp, pbx, "codec_uac.xml", caller_rtp.getsockname()[1])
    port_a = wait_for_port(sipp.directory / "pbx_port_a.txt", uac)
    port_b = wait_for_port(sipp.directory / "pbx_port_b.txt", uas)
    (invite,) = [m for m in uas.requests("INVITE")]
    assert "m=audio" in invite and " RTP/AVP 0 8 101" in invite, invite  # PCMA added after PCMU
    (ok,) = [m for m in uac.responses(200) if "INVITE" in m.split("\r\n\r\n")[0]]
    assert "RTP/AVP 0\r\n" in ok or "RTP/AVP 0 " in ok, ok  # the caller is answered in its own codec
    for packet in packets(ulaw_encode(tone(1000, 160 * PACKETS)), 0, 0xA):
        caller_rtp.sendto(packet, ("127.0.0.1", port_a))
    for packet in packets(alaw_encode(tone(600, 160 * PACKETS)), 8, 0xB):
        callee_rtp.sendto(packet, ("127.0.0.1", port_b))
    at_callee = receive_rtp(callee_rtp, lambda got: len(got) >= PACKETS)
    at_caller = receive_rtp(caller_rtp, lambda got: len(got) >= PACKETS)
    sipp.check(pbx, uac, uas)
    assert len(at_callee) >= PACKETS * 0.9 and len(at_caller) >= PACKETS * 0.9, (
        len(at_callee),
        len(at_caller),
    )
    assert {p.payload_type for p in at_callee} == {8}
    assert {p.payload_type for p in at_caller} == {0}
    heard_by_callee = powers(alaw_decode(b"".join(p.payload for p in at_callee)))
    heard_by_caller = powers(ulaw_decode(b"".join(p.payload for p in at_caller)))
    assert heard_by_callee[1000.0] > 100 * max(heard_by_callee[600.0], heard_by_callee[2200.0]), (
        heard_by_callee
    )
    assert heard_by_caller[600.0] > 100 * max(heard_by_caller[1000.0], heard_by_caller[1400.0]), (
        heard_by_caller
    )
    pbx.ended(200)
    assert_no_traceback(pbx)
