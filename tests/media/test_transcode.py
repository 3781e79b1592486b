"""Tests for `pbx.media.transcode`: the µ-law <-> A-law tables, payload maps, and RTP packet conversion."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.g711 import ALAW_DECODE, ULAW_DECODE, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from pbx.media.rtp import RtpPacket
from pbx.media.transcode import (
    ALAW_TO_ULAW,
    ULAW_TO_ALAW,
    convert_rtp,
    counterpart,
    payload_map,
    payload_offset,
    table_for,
)

ALL_CODES = bytes(range(256))


def close_enough(value: int, converted: int) -> bool:
    """Within the quantisation step of the coarser law at that level (an eighth, at least 16 near zero)."""
    return abs(value - converted) <= max(abs(value) / 8, 16)


class TableTests(SynchronousTestCase):
    def test_tables_are_translate_tables(self) -> None:
        self.assertEqual(len(ULAW_TO_ALAW), 256)
        self.assertEqual(len(ALAW_TO_ULAW), 256)

    def test_each_code_keeps_its_value_within_a_quantisation_step(self) -> None:
        for code in range(256):
            self.assertTrue(close_enough(ULAW_DECODE[code], ALAW_DECODE[ULAW_TO_ALAW[code]]), code)
            self.assertTrue(close_enough(ALAW_DECODE[code], ULAW_DECODE[ALAW_TO_ULAW[code]]), code)

    def test_the_table_is_what_decoding_and_encoding_give(self) -> None:
        self.assertEqual(ALL_CODES.translate(ULAW_TO_ALAW), alaw_encode(ulaw_decode(ALL_CODES)))
        self.assertEqual(ALL_CODES.translate(ALAW_TO_ULAW), ulaw_encode(alaw_decode(ALL_CODES)))

    def test_signs_are_kept(self) -> None:
        for code in range(256):
            value, converted = ULAW_DECODE[code], ALAW_DECODE[ULAW_TO_ALAW[code]]
            self.assertTrue(value * converted >= 0, code)

    def test_a_round_trip_is_stable_after_the_first_conversion(self) -> None:
        """Converting back and forth (a call transferred between a PCMU and a PCMA leg) loses nothing more
        after the first conversion."""
        once = ALL_CODES.translate(ULAW_TO_ALAW)
        self.assertEqual(once.translate(ALAW_TO_ULAW).translate(ULAW_TO_ALAW), once)
        once = ALL_CODES.translate(ALAW_TO_ULAW)
        self.assertEqual(once.translate(ULAW_TO_ALAW).translate(ALAW_TO_ULAW), once)

    @given(st.binary(max_size=400))
    def test_translation_keeps_length_and_round_trips_stably(self, payload: bytes) -> None:
        alaw = payload.translate(ULAW_TO_ALAW)
        self.assertEqual(len(alaw), len(payload))
        self.assertEqual(alaw.translate(ALAW_TO_ULAW).translate(ULAW_TO_ALAW), alaw)
        for before, after in zip(payload, alaw, strict=True):
            self.assertTrue(close_enough(ULAW_DECODE[before], ALAW_DECODE[after]))

    @given(st.lists(st.integers(-32768, 32767), max_size=160))
    def test_converting_codes_equals_converting_the_audio(self, samples: list[int]) -> None:
        pcm = struct.pack(f"<{len(samples)}h", *samples)
        ulaw = ulaw_encode(pcm)
        self.assertEqual(ulaw.translate(ULAW_TO_ALAW), alaw_encode(ulaw_decode(ulaw)))

    def test_names(self) -> None:
        self.assertEqual(counterpart("PCMU"), "pcma")
        self.assertEqual(counterpart("pcma"), "pcmu")
        self.assertIsNone(counterpart("G722"))
        self.assertIs(table_for("PCMU", "PCMA"), ULAW_TO_ALAW)
        self.assertIs(table_for("pcma", "pcmu"), ALAW_TO_ULAW)
        self.assertIsNone(table_for("pcmu", "pcmu"))
        self.assertIsNone(table_for("g722", "pcmu"))


class PayloadMapTests(SynchronousTestCase):
    def test_same_codecs_and_types_need_nothing(self) -> None:
        self.assertEqual(payload_map(((0, "pcmu"), (8, "pcma")), ((0, "pcmu"), (8, "pcma"))), {})

    def test_pcmu_to_pcma(self) -> None:
        self.assertEqual(payload_map(((0, "pcmu"),), ((8, "pcma"),)), {0: (ULAW_TO_ALAW, 8)})
        self.assertEqual(payload_map(((8, "pcma"),), ((0, "pcmu"),)), {8: (ALAW_TO_ULAW, 0)})

    def test_the_same_codec_under_another_type_is_retyped(self) -> None:
        self.assertEqual(payload_map(((96, "opus"),), ((111, "opus"),)), {96: (None, 111)})

    def test_what_cannot_be_converted_is_left_alone(self) -> None:
        self.assertEqual(payload_map(((9, "g722"),), ((8, "pcma"),)), {})


def rtp(payload: bytes, pt: int = 0, **kwargs: object) -> bytes:
    return RtpPacket(pt, 7, 1600, 0x1234, payload, **kwargs).to_bytes()  # type: ignore[arg-type]


class ConvertTests(SynchronousTestCase):
    def test_payload_is_translated_and_the_type_rewritten_marker_kept(self) -> None:
        payload = ulaw_encode(struct.pack("<4h", 0, 1000, -1000, 30000))
        out = convert_rtp(rtp(payload, marker=True), ULAW_TO_ALAW, 8)
        assert out is not None
        packet = RtpPacket.parse(out)
        self.assertEqual((packet.payload_type, packet.marker), (8, True))
        self.assertEqual(packet.payload, payload.translate(ULAW_TO_ALAW))
        self.assertEqual((packet.sequence_number, packet.timestamp, packet.ssrc), (7, 1600, 0x1234))

    def test_csrcs_extension_and_padding_are_not_translated(self) -> None:
        packet = rtp(b"\x01\x02\x03", csrc=(5, 6), extension_profile=0xBEDE, extension=b"\xff" * 8, padding=4)
        out = convert_rtp(packet, ULAW_TO_ALAW, 8)
        assert out is not None
        parsed = RtpPacket.parse(out)
        self.assertEqual(parsed.csrc, (5, 6))
        self.assertEqual(parsed.extension, b"\xff" * 8)
        self.assertEqual(parsed.padding, 4)
        self.assertEqual(parsed.payload, b"\x01\x02\x03".translate(ULAW_TO_ALAW))

    def test_retyping_only_copies_nothing_else(self) -> None:
        packet = rtp(b"abc", pt=101)
        self.assertIs(convert_rtp(packet, None, 101), packet)
        out = convert_rtp(packet, None, 96)
        assert out is not None
        self.assertEqual(RtpPacket.parse(out).payload_type, 96)
        self.assertEqual(out[2:], packet[2:])

    def test_inconsistent_headers_are_refused(self) -> None:
        packet = bytearray(rtp(b""))
        packet[0] |= 0x0F  # 15 CSRCs that are not there
        self.assertIsNone(payload_offset(bytes(packet)))
        self.assertIsNone(convert_rtp(bytes(packet), ULAW_TO_ALAW, 8))
        self.assertIsNone(payload_offset(b"\x80\x00"))
        padded = bytearray(rtp(b"ab"))
        padded[0] |= 0x20
        padded[-1] = 200  # more padding than payload
        self.assertIsNone(payload_offset(bytes(padded)))

    @given(st.binary(max_size=200))
    def test_any_datagram_converts_or_is_refused_without_raising(self, tail: bytes) -> None:
        packet = b"\x80\x00" + bytes(10) + tail
        out = convert_rtp(packet, ULAW_TO_ALAW, 8)
        if out is not None:
            self.assertEqual(len(out), len(packet))
        for first in (0x90, 0xA0, 0x8F, 0xBF):
            convert_rtp(bytes([first]) + packet[1:], ULAW_TO_ALAW, 8)
