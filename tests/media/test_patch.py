"""`pbx.media.patch.MediaPatch`: two transports joined, each direction continuing the stream its target
phone was receiving, transcoding between PCMU and PCMA, events across, everything else dropped."""

from __future__ import annotations

import random

from twisted.internet.task import Clock

from pbx.media.patch import MediaPatch, PatchSide


class Sink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_rtp(self, data: bytes) -> None:
        self.sent.append(data)


def rtp(pt: int, seq: int, ts: int, ssrc: int = 0x11223344, payload: bytes = b"\xff" * 160) -> bytes:
    return (
        bytes([0x80, pt]) + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big") + payload
    )


def test_each_direction_continues_the_targets_stream() -> None:
    clock = Clock()
    clock.advance(100)
    a, b = Sink(), Sink()
    patch = MediaPatch(
        clock,
        PatchSide(a, "PCMU", 0, 101, continue_from=(0xAAAA, 65535, 1000, 99.0)),  # b's packets go here
        PatchSide(b, "PCMU", 0, 101),
        random.Random(1),
    )
    patch.consumer_b.rtp_received(rtp(0, 500, 90000), ("h", 1))
    patch.consumer_b.rtp_received(rtp(0, 501, 90160), ("h", 1))
    first, second = a.sent
    assert int.from_bytes(first[8:12], "big") == 0xAAAA  # the SSRC a's phone knew
    assert int.from_bytes(first[2:4], "big") == 0  # 65535 + 1, wrapped
    assert int.from_bytes(first[4:8], "big") == 1000 + 8000 + 160  # 1 s later, plus one packet
    assert int.from_bytes(second[2:4], "big") == 1
    assert int.from_bytes(second[4:8], "big") - int.from_bytes(first[4:8], "big") == 160
    assert first[12:] == b"\xff" * 160  # same codec: the payload as is
    assert patch.forwarded == (0, 2)


def test_transcoding_events_and_drops() -> None:
    clock = Clock()
    a, b = Sink(), Sink()
    patch = MediaPatch(clock, PatchSide(a, "PCMA", 8, None), PatchSide(b, "PCMU", 0, 101))
    patch.consumer_b.rtp_received(rtp(0, 1, 0), ("h", 1))
    (converted,) = a.sent
    assert converted[1] == 8 and converted[12:] != b"\xff" * 160  # mu-law silence became A-law
    patch.consumer_b.rtp_received(rtp(101, 2, 160, payload=b"\x01\x80\x00\xa0"), ("h", 1))  # a has no events
    patch.consumer_b.rtp_received(rtp(13, 3, 320), ("h", 1))  # comfort noise: dropped
    patch.consumer_b.rtp_received(b"\x00" * 8, ("h", 1))  # not RTP
    assert len(a.sent) == 1
    patch.consumer_a.rtp_received(rtp(8, 1, 0, payload=b"\xd5" * 160), ("h", 2))
    assert b.sent[0][1] == 0
    patch.close()
    patch.consumer_a.rtp_received(rtp(8, 2, 160), ("h", 2))
    assert len(b.sent) == 1
    assert clock.getDelayedCalls() == []
