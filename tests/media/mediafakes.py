"""Test helpers for the media endpoint: a recording transport, a scripted phone, a prompt directory."""

from __future__ import annotations

import os
import struct

from pbx.media import tones
from pbx.media.rtp import RtpPacket
from pbx.media.wav import write_pcm_atomic

__all__ = ["FakeTransport", "Phone", "make_prompt_dir"]


class FakeTransport:
    """An IRtpTransport that keeps what is sent (parsed RTP packets and raw RTCP)."""

    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []

    def send_rtp(self, data: bytes) -> None:
        self.rtp.append(data)

    def send_rtcp(self, data: bytes) -> None:
        self.rtcp.append(data)

    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(p) for p in self.rtp]


class Phone:
    """The far end: builds RTP packets with its own SSRC, sequence and timestamp."""

    ADDR = ("192.0.2.10", 4000)

    def __init__(self, ssrc: int = 0x1234, seq: int = 65530, ts: int = 0xFFFFF000) -> None:
        self.ssrc = ssrc
        self.seq = seq
        self.ts = ts

    def packet(
        self, payload: bytes, pt: int = 0, marker: bool = False, ts: int | None = None, advance: bool = True
    ) -> bytes:
        data = struct.pack(
            "!BBHII",
            0x80,
            (0x80 if marker else 0) | pt,
            self.seq,
            self.ts if ts is None else ts,
            self.ssrc,
        )
        self.seq = (self.seq + 1) & 0xFFFF
        if advance:
            self.ts = (self.ts + 160) & 0xFFFFFFFF
        return data + payload


def make_prompt_dir(directory: str) -> str:
    """A prompt directory with a few short prompts made of tones (welcome = 0.5 s, digit-N = 0.1 s ...)."""
    os.makedirs(directory, exist_ok=True)
    write_pcm_atomic(os.path.join(directory, "welcome.wav"), tones.tone_pcm("dial", 0.5))
    write_pcm_atomic(os.path.join(directory, "menu.wav"), tones.tone_pcm("busy", 1.0))
    write_pcm_atomic(os.path.join(directory, "moh.wav"), tones.tone_pcm("ringback", 0.2))
    for digit in "0123456789":
        write_pcm_atomic(os.path.join(directory, f"digit-{digit}.wav"), tones.dtmf_pcm(digit, 50, 50))
    return directory
