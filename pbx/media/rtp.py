"""RTP and RTCP packets as immutable values that parse strictly and round-trip (RFC 3550).

`RtpPacket` is the fixed header of RFC 3550 section 5.1 with its CSRC list, the header extension of section
5.3.1 (profile-defined 16 bits plus the raw extension words; RFC 8285 one-/two-byte elements are not split
here) and padding (section 5.1, P bit: the last padding octet counts the padding, itself included). The
version is always 2. `RtpPacket.parse` raises `ValueError` with a precise message for anything malformed.

RTCP (section 6): `RtcpPacket.parse_compound` splits a compound packet (section 6.1) at the common header's
length field and parses Sender Reports (6.4.1, PT 200) and Receiver Reports (6.4.2, PT 201) with their
report blocks; every other type (SDES, BYE, APP, RFC 4585 feedback, XR, ...) is kept raw as `RtcpUnknown`.
Profile-specific extensions of SR/RR are kept as raw bytes. Padding of an RTCP packet is checked and
dropped on parse and never produced. The compound-packet rules of 6.1 (first packet SR/RR, an SDES CNAME)
are not enforced, so reduced-size RTCP (RFC 5506) parses too.

This module knows nothing of sockets, sessions, sequence-number tracking, jitter or loss computation
(appendix A), SRTP, or payload formats: the payload is opaque bytes.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "RTCP_RR",
    "RTCP_SR",
    "RtcpPacket",
    "RtcpReceiverReport",
    "RtcpReportBlock",
    "RtcpSenderReport",
    "RtcpUnknown",
    "RtpPacket",
]

RTP_VERSION = 2
RTCP_SR = 200
RTCP_RR = 201

_RTP_HEADER = struct.Struct("!BBHII")
_U32 = 0xFFFFFFFF


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 section 5.1); `padding` is the number of padding octets (0 = P bit clear)."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int = 0
    extension: bytes | None = None
    padding: int = 0

    version: ClassVar[int] = RTP_VERSION

    def __post_init__(self) -> None:
        _check_range("payload_type", self.payload_type, 0, 127)
        _check_range("sequence_number", self.sequence_number, 0, 0xFFFF)
        _check_range("timestamp", self.timestamp, 0, _U32)
        _check_range("ssrc", self.ssrc, 0, _U32)
        _check_range("padding", self.padding, 0, 255)
        _check_range("extension_profile", self.extension_profile, 0, 0xFFFF)
        if not isinstance(self.payload, bytes):
            raise ValueError(f"payload must be bytes, got {type(self.payload).__name__}")
        if not isinstance(self.csrc, tuple) or len(self.csrc) > 15:
            raise ValueError(f"csrc must be a tuple of at most 15 identifiers, got {self.csrc!r}")
        for csrc in self.csrc:
            _check_range("csrc", csrc, 0, _U32)
        if self.extension is None:
            if self.extension_profile:
                raise ValueError("extension_profile is set but there is no extension")
        elif (
            not isinstance(self.extension, bytes) or len(self.extension) % 4 or len(self.extension) > 0x3FFFC
        ):
            raise ValueError("extension must be bytes, a multiple of 4 octets and at most 65535 words long")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """One RTP packet; ValueError says what is wrong (length, version, CSRCs, extension, padding)."""
        data = bytes(data)
        if len(data) < 12:
            raise ValueError(f"RTP packet too short: {len(data)} bytes, the fixed header is 12")
        first, second, seq, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise ValueError(f"RTP version must be 2, got {version}")
        csrc_count = first & 0x0F
        pos = 12 + 4 * csrc_count
        if len(data) < pos:
            raise ValueError(f"RTP packet too short for {csrc_count} CSRCs: {len(data)} bytes, need {pos}")
        csrc = struct.unpack_from(f"!{csrc_count}I", data, 12)
        extension_profile, extension = 0, None
        if first & 0x10:
            if len(data) < pos + 4:
                raise ValueError(
                    f"RTP header extension past end: header at byte {pos}, packet is {len(data)}"
                )
            extension_profile, words = struct.unpack_from("!HH", data, pos)
            end = pos + 4 + 4 * words
            if len(data) < end:
                raise ValueError(
                    f"RTP header extension past end: {words} words end at byte {end}, packet is {len(data)}"
                )
            extension = data[pos + 4 : end]
            pos = end
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0:
                raise ValueError("bad RTP padding: P bit set but the padding count is 0")
            if padding > end - pos:
                raise ValueError(f"bad RTP padding: {padding} octets but only {end - pos} follow the header")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=data[pos:end],
            marker=bool(second & 0x80),
            csrc=csrc,
            extension_profile=extension_profile,
            extension=extension,
            padding=padding,
        )

    def to_bytes(self) -> bytes:
        """The wire form; padding octets are zero except the last, which counts them."""
        first = (RTP_VERSION << 6) | (0x20 if self.padding else 0) | len(self.csrc)
        if self.extension is not None:
            first |= 0x10
        parts = [
            _RTP_HEADER.pack(
                first,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number,
                self.timestamp,
                self.ssrc,
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)

    __bytes__ = to_bytes

    def replace(self, **changes: Any) -> RtpPacket:
        """A copy with some fields changed (validated like the constructor)."""
        return dataclasses.replace(self, **changes)


# --- RTCP -------------------------------------------------------------------------------------------------

_REPORT_BLOCK = struct.Struct("!IB3sIIII")


@dataclass(frozen=True, slots=True)
class RtcpReportBlock:
    """A reception report block (RFC 3550 section 6.4.1); `cumulative_lost` is signed 24-bit."""

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_seq: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    SIZE: ClassVar[int] = 24

    def __post_init__(self) -> None:
        _check_range("ssrc", self.ssrc, 0, _U32)
        _check_range("fraction_lost", self.fraction_lost, 0, 255)
        _check_range("cumulative_lost", self.cumulative_lost, -0x800000, 0x7FFFFF)
        for name in ("highest_seq", "jitter", "lsr", "dlsr"):
            _check_range(name, getattr(self, name), 0, _U32)

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> RtcpReportBlock:
        if len(data) < offset + cls.SIZE:
            raise ValueError(f"RTCP report block too short: need {cls.SIZE} bytes at offset {offset}")
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        return cls(ssrc, fraction, int.from_bytes(lost, "big", signed=True), highest, jitter, lsr, dlsr)

    def to_bytes(self) -> bytes:
        lost = self.cumulative_lost.to_bytes(3, "big", signed=True)
        return _REPORT_BLOCK.pack(
            self.ssrc, self.fraction_lost, lost, self.highest_seq, self.jitter, self.lsr, self.dlsr
        )

    __bytes__ = to_bytes


def _rtcp_header(packet_type: int, count: int, body_length: int) -> bytes:
    if body_length % 4:
        raise ValueError(f"RTCP packet body must be a multiple of 4 octets, got {body_length}")
    if body_length > 4 * 0xFFFF:
        raise ValueError(f"RTCP packet body too long for the 16-bit length field: {body_length} octets")
    return struct.pack("!BBH", (RTP_VERSION << 6) | count, packet_type, body_length // 4)


class RtcpPacket:
    """Base of the RTCP packet values; `RtcpPacket.parse_compound` parses a whole datagram."""

    __slots__ = ()

    def to_bytes(self) -> bytes:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    @staticmethod
    def parse_compound(data: bytes) -> list[RtcpPacket]:
        """Every packet of a compound RTCP datagram (RFC 3550 section 6.1), in order; strict ValueError."""
        data = bytes(data)
        if not data:
            raise ValueError("RTCP compound packet is empty")
        packets: list[RtcpPacket] = []
        pos = 0
        while pos < len(data):
            if len(data) - pos < 4:
                raise ValueError(
                    f"RTCP packet too short: {len(data) - pos} bytes at offset {pos}, header is 4"
                )
            first, packet_type, words = struct.unpack_from("!BBH", data, pos)
            version = first >> 6
            if version != RTP_VERSION:
                raise ValueError(f"RTCP version must be 2, got {version} at offset {pos}")
            end = pos + 4 + 4 * words
            if end > len(data):
                raise ValueError(
                    f"RTCP packet length past end: {words} words at offset {pos} end at byte {end}, "
                    f"datagram is {len(data)}"
                )
            body = data[pos + 4 : end]
            if first & 0x20:
                padding = body[-1] if body else 0
                if padding == 0 or padding > len(body) or padding % 4:
                    raise ValueError(f"bad RTCP padding count {padding} at offset {pos}")
                body = body[:-padding]
            count = first & 0x1F
            if packet_type == RTCP_SR:
                packets.append(RtcpSenderReport._parse_body(count, body))
            elif packet_type == RTCP_RR:
                packets.append(RtcpReceiverReport._parse_body(count, body))
            else:
                packets.append(RtcpUnknown(packet_type, count, body))
            pos = end
        return packets

    @staticmethod
    def build_compound(packets: list[RtcpPacket]) -> bytes:
        """The datagram for several RTCP packets (concatenated, RFC 3550 section 6.1)."""
        return b"".join(packet.to_bytes() for packet in packets)


def _parse_blocks(
    kind: str, count: int, body: bytes, offset: int
) -> tuple[tuple[RtcpReportBlock, ...], bytes]:
    end = offset + count * RtcpReportBlock.SIZE
    if len(body) < end:
        raise ValueError(
            f"RTCP {kind} too short for {count} report blocks: body is {len(body)} bytes, need {end}"
        )
    blocks = tuple(RtcpReportBlock.parse(body, offset + i * RtcpReportBlock.SIZE) for i in range(count))
    return blocks, body[end:]


def _check_reports(reports: tuple[RtcpReportBlock, ...], extension: bytes) -> None:
    if not isinstance(reports, tuple) or len(reports) > 31:
        raise ValueError(f"reports must be a tuple of at most 31 report blocks, got {len(reports)}")
    if len(extension) % 4:
        raise ValueError(f"profile-specific extension must be a multiple of 4 octets, got {len(extension)}")


@dataclass(frozen=True, slots=True)
class RtcpSenderReport(RtcpPacket):
    """SR (RFC 3550 section 6.4.1): `ntp` is the 64-bit NTP timestamp (seconds << 32 | fraction)."""

    ssrc: int
    ntp: int
    rtp_ts: int
    packet_count: int
    octet_count: int
    reports: tuple[RtcpReportBlock, ...] = ()
    extension: bytes = field(default=b"")

    packet_type: ClassVar[int] = RTCP_SR

    def __post_init__(self) -> None:
        _check_range("ssrc", self.ssrc, 0, _U32)
        _check_range("ntp", self.ntp, 0, 2**64 - 1)
        for name in ("rtp_ts", "packet_count", "octet_count"):
            _check_range(name, getattr(self, name), 0, _U32)
        _check_reports(self.reports, self.extension)

    @classmethod
    def _parse_body(cls, count: int, body: bytes) -> RtcpSenderReport:
        if len(body) < 24:
            raise ValueError(f"RTCP SR too short: body is {len(body)} bytes, sender info is 24")
        ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body)
        reports, extension = _parse_blocks("SR", count, body, 24)
        return cls(ssrc, ntp, rtp_ts, packets, octets, reports, extension)

    def to_bytes(self) -> bytes:
        body = b"".join(
            [
                struct.pack("!IQIII", self.ssrc, self.ntp, self.rtp_ts, self.packet_count, self.octet_count),
                *(block.to_bytes() for block in self.reports),
                self.extension,
            ]
        )
        return _rtcp_header(RTCP_SR, len(self.reports), len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpReceiverReport(RtcpPacket):
    """RR (RFC 3550 section 6.4.2)."""

    ssrc: int
    reports: tuple[RtcpReportBlock, ...] = ()
    extension: bytes = field(default=b"")

    packet_type: ClassVar[int] = RTCP_RR

    def __post_init__(self) -> None:
        _check_range("ssrc", self.ssrc, 0, _U32)
        _check_reports(self.reports, self.extension)

    @classmethod
    def _parse_body(cls, count: int, body: bytes) -> RtcpReceiverReport:
        if len(body) < 4:
            raise ValueError(f"RTCP RR too short: body is {len(body)} bytes, need the 4-byte SSRC")
        (ssrc,) = struct.unpack_from("!I", body)
        reports, extension = _parse_blocks("RR", count, body, 4)
        return cls(ssrc, reports, extension)

    def to_bytes(self) -> bytes:
        body = b"".join(
            [struct.pack("!I", self.ssrc), *(block.to_bytes() for block in self.reports), self.extension]
        )
        return _rtcp_header(RTCP_RR, len(self.reports), len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpUnknown(RtcpPacket):
    """Other RTCP packets, raw: its type, the 5-bit count/subtype field and the body after the header."""

    packet_type: int
    count: int
    body: bytes

    def __post_init__(self) -> None:
        _check_range("packet_type", self.packet_type, 0, 255)
        _check_range("count", self.count, 0, 31)
        if len(self.body) % 4:
            raise ValueError(f"RTCP packet body must be a multiple of 4 octets, got {len(self.body)}")

    def to_bytes(self) -> bytes:
        return _rtcp_header(self.packet_type, self.count, len(self.body)) + self.body
