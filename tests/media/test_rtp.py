"""Tests for `pbx.media.rtp`: strict RTP parsing with precise errors, RTCP SR/RR, round trips."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.rtp import (
    RtcpPacket,
    RtcpReceiverReport,
    RtcpReportBlock,
    RtcpSenderReport,
    RtcpUnknown,
    RtpPacket,
)

U32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def rtp_packets(draw: st.DrawFn) -> RtpPacket:
    extension = draw(st.none() | st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4)))
    return RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence_number=draw(st.integers(0, 0xFFFF)),
        timestamp=draw(U32),
        ssrc=draw(U32),
        payload=draw(st.binary(max_size=64)),
        marker=draw(st.booleans()),
        csrc=tuple(draw(st.lists(U32, max_size=15))),
        extension_profile=0 if extension is None else draw(st.integers(0, 0xFFFF)),
        extension=extension,
        padding=draw(st.integers(0, 255)),
    )


report_blocks = st.builds(
    RtcpReportBlock,
    ssrc=U32,
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_seq=U32,
    jitter=U32,
    lsr=U32,
    dlsr=U32,
)
words = st.binary(max_size=16).map(lambda b: b + bytes(-len(b) % 4))
rtcp_packets = st.one_of(
    st.builds(
        RtcpSenderReport,
        ssrc=U32,
        ntp=st.integers(0, 2**64 - 1),
        rtp_ts=U32,
        packet_count=U32,
        octet_count=U32,
        reports=st.lists(report_blocks, max_size=3).map(tuple),
        extension=words,
    ),
    st.builds(
        RtcpReceiverReport, ssrc=U32, reports=st.lists(report_blocks, max_size=3).map(tuple), extension=words
    ),
    st.builds(RtcpUnknown, packet_type=st.integers(202, 255), count=st.integers(0, 31), body=words),
)

# A PCMU packet as a phone sends it: V=2, M=1, PT=0, seq 0x1234, ts 0xDEADBEEF, ssrc 0x01020304, 4 bytes.
CAPTURED = bytes.fromhex("80801234deadbeef01020304") + b"\xff\xfe\x7f\x00"


class RtpParseTests(SynchronousTestCase):
    def test_captured_packet(self) -> None:
        packet = RtpPacket.parse(CAPTURED)
        self.assertEqual(
            packet,
            RtpPacket(
                payload_type=0,
                sequence_number=0x1234,
                timestamp=0xDEADBEEF,
                ssrc=0x01020304,
                payload=b"\xff\xfe\x7f\x00",
                marker=True,
            ),
        )
        self.assertEqual(packet.version, 2)
        self.assertEqual(packet.to_bytes(), CAPTURED)
        self.assertEqual(bytes(packet), CAPTURED)

    def test_csrc_extension_and_padding(self) -> None:
        data = (
            bytes([0x80 | 0x20 | 0x10 | 2, 8])
            + struct.pack("!HII", 7, 160, 99)
            + struct.pack("!II", 1, 2)
            + struct.pack("!HH", 0xBEDE, 1)
            + b"\x10\xaa\x00\x00"
            + b"payload"
            + b"\x00\x00\x03"
        )
        packet = RtpPacket.parse(data)
        self.assertEqual(packet.csrc, (1, 2))
        self.assertEqual((packet.extension_profile, packet.extension), (0xBEDE, b"\x10\xaa\x00\x00"))
        self.assertEqual((packet.payload, packet.padding, packet.payload_type), (b"payload", 3, 8))
        self.assertEqual(packet.to_bytes(), data)

    def assertParseError(self, data: bytes, message: str) -> None:
        with self.assertRaises(ValueError) as caught:
            RtpPacket.parse(data)
        self.assertIn(message, str(caught.exception))

    def test_too_short(self) -> None:
        self.assertParseError(CAPTURED[:11], "too short: 11 bytes")
        self.assertParseError(b"", "too short: 0 bytes")

    def test_csrcs_past_end(self) -> None:
        self.assertParseError(b"\x83" + CAPTURED[1:12] + b"\x00" * 8, "too short for 3 CSRCs")

    def test_wrong_version(self) -> None:
        self.assertParseError(b"\x40" + CAPTURED[1:], "version must be 2, got 1")
        self.assertParseError(b"\x00" + CAPTURED[1:], "version must be 2, got 0")

    def test_bad_padding(self) -> None:
        self.assertParseError(b"\xa0" + CAPTURED[1:12] + b"ab\x00", "padding count is 0")
        self.assertParseError(b"\xa0" + CAPTURED[1:12] + b"ab\x04", "bad RTP padding: 4 octets but only 3")
        self.assertParseError(b"\xa0" + CAPTURED[1:12], "bad RTP padding")

    def test_header_extension_past_end(self) -> None:
        self.assertParseError(b"\x90" + CAPTURED[1:12] + b"\xbe\xde", "header extension past end")
        self.assertParseError(b"\x90" + CAPTURED[1:12] + b"\xbe\xde\x00\x02abcd", "2 words end at byte 24")

    def test_padding_only_payload(self) -> None:
        packet = RtpPacket.parse(b"\xa0" + CAPTURED[1:12] + b"\x00\x02")
        self.assertEqual((packet.payload, packet.padding), (b"", 2))

    def test_constructor_validates(self) -> None:
        self.assertRaises(ValueError, RtpPacket, 128, 0, 0, 0)
        self.assertRaises(ValueError, RtpPacket, 0, 0x10000, 0, 0)
        self.assertRaises(ValueError, RtpPacket, 0, 0, 2**32, 0)
        self.assertRaises(ValueError, RtpPacket, 0, 0, 0, 0, csrc=tuple(range(16)))
        self.assertRaises(ValueError, RtpPacket, 0, 0, 0, 0, extension=b"abc")
        self.assertRaises(ValueError, RtpPacket, 0, 0, 0, 0, extension_profile=1)
        self.assertRaises(ValueError, RtpPacket, 0, 0, 0, 0, padding=256)

    def test_replace_and_immutability(self) -> None:
        packet = RtpPacket.parse(CAPTURED)
        self.assertEqual(packet.replace(sequence_number=5).sequence_number, 5)
        self.assertRaises(ValueError, packet.replace, sequence_number=-1)
        with self.assertRaises(AttributeError):
            packet.marker = False  # type: ignore[misc]

    @given(rtp_packets())
    def test_property_round_trip(self, packet: RtpPacket) -> None:
        data = packet.to_bytes()
        self.assertEqual(RtpPacket.parse(data), packet)
        self.assertEqual(RtpPacket.parse(data).to_bytes(), data)

    @given(st.binary(max_size=40))
    def test_property_garbage_parses_or_raises_value_error(self, data: bytes) -> None:
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return
        self.assertEqual(RtpPacket.parse(packet.to_bytes()), packet)


# An SR with one report block followed by an SDES CNAME, as sent by a typical phone.
SR_BLOCK = RtcpReportBlock(
    ssrc=0xCAFEBABE,
    fraction_lost=12,
    cumulative_lost=-3,
    highest_seq=0x0001FFFF,
    jitter=42,
    lsr=0x12345678,
    dlsr=65536,
)
SDES = bytes.fromhex("81ca0003") + struct.pack("!I", 0x11223344) + b"\x01\x02ab\x00\x00\x00\x00"


class RtcpTests(SynchronousTestCase):
    def test_sender_report_wire_format(self) -> None:
        sr = RtcpSenderReport(
            ssrc=0x11223344,
            ntp=0x83AA7E80_80000000,
            rtp_ts=8000,
            packet_count=50,
            octet_count=8000,
            reports=(SR_BLOCK,),
        )
        data = sr.to_bytes()
        self.assertEqual(data[:4], bytes.fromhex("81c8000c"))  # V=2, RC=1, PT=200, length 12 words
        self.assertEqual(len(data), 52)
        self.assertEqual(data[28:36], struct.pack("!I", 0xCAFEBABE) + bytes([12]) + b"\xff\xff\xfd")
        packets = RtcpPacket.parse_compound(data + SDES)
        self.assertEqual(packets, [sr, RtcpUnknown(202, 1, SDES[4:])])
        self.assertEqual(RtcpPacket.build_compound(packets), data + SDES)

    def test_receiver_report(self) -> None:
        rr = RtcpReceiverReport(ssrc=1, reports=(SR_BLOCK, SR_BLOCK.__class__(ssrc=2)))
        data = bytes(rr)
        self.assertEqual(data[:4], bytes.fromhex("82c9000d"))
        self.assertEqual(RtcpPacket.parse_compound(data), [rr])
        empty = RtcpReceiverReport(ssrc=7)
        self.assertEqual(bytes(empty), bytes.fromhex("80c90001 00000007"))

    def test_padding_is_checked_and_dropped(self) -> None:
        padded = bytes.fromhex("a0c90002 00000007 00000004")
        self.assertEqual(RtcpPacket.parse_compound(padded), [RtcpReceiverReport(ssrc=7)])
        with self.assertRaises(ValueError) as caught:
            RtcpPacket.parse_compound(bytes.fromhex("a0c90002 00000007 00000000"))
        self.assertIn("bad RTCP padding count 0", str(caught.exception))

    def assertCompoundError(self, data: bytes, message: str) -> None:
        with self.assertRaises(ValueError) as caught:
            RtcpPacket.parse_compound(data)
        self.assertIn(message, str(caught.exception))

    def test_errors(self) -> None:
        self.assertCompoundError(b"", "empty")
        self.assertCompoundError(bytes.fromhex("80c9"), "too short: 2 bytes at offset 0")
        self.assertCompoundError(bytes.fromhex("40c90001 00000007"), "version must be 2, got 1")
        self.assertCompoundError(bytes.fromhex("80c90002 00000007"), "length past end")
        self.assertCompoundError(bytes.fromhex("81c90001 00000007"), "RR too short for 1 report blocks")
        self.assertCompoundError(bytes.fromhex("80c80001 00000007"), "SR too short")
        self.assertCompoundError(bytes.fromhex("80c90000"), "RR too short")
        rr = bytes.fromhex("80c90001 00000007")
        self.assertCompoundError(rr + b"\x80", "too short: 1 bytes at offset 8")

    def test_constructors_validate(self) -> None:
        self.assertRaises(ValueError, RtcpReportBlock, ssrc=1, cumulative_lost=0x800000)
        self.assertRaises(ValueError, RtcpReportBlock, ssrc=1, fraction_lost=256)
        self.assertRaises(ValueError, RtcpReceiverReport, ssrc=1, reports=(SR_BLOCK,) * 32)
        self.assertRaises(ValueError, RtcpReceiverReport, ssrc=1, extension=b"abc")
        self.assertRaises(ValueError, RtcpUnknown, 203, 32, b"")

    @settings(max_examples=50)
    @given(st.lists(rtcp_packets, min_size=1, max_size=4))
    def test_property_compound_round_trip(self, packets: list[RtcpPacket]) -> None:
        data = RtcpPacket.build_compound(packets)
        self.assertEqual(RtcpPacket.parse_compound(data), packets)

    @given(st.binary(max_size=64))
    def test_property_garbage_parses_or_raises_value_error(self, data: bytes) -> None:
        try:
            packets = RtcpPacket.parse_compound(data)
        except ValueError:
            return
        self.assertEqual(RtcpPacket.parse_compound(RtcpPacket.build_compound(packets)), packets)
