"""Tests for `pbx.media.g711`: reference values, every code round-trips, monotonicity, strict PCM length."""

from __future__ import annotations

import struct
import warnings

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.g711 import (
    ALAW_DECODE,
    ULAW_DECODE,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

ALL_CODES = bytes(range(256))


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def samples_of(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 2}h", data))


class UlawTests(SynchronousTestCase):
    def test_reference_values(self) -> None:
        self.assertEqual(samples_of(ulaw_decode(b"\xff\x7f\x00\x80")), [0, 0, -32124, 32124])
        self.assertEqual(ulaw_encode(pcm(0, 32767, -32768, 32124, -32124)), b"\xff\x80\x00\x80\x00")
        # Segment boundaries of G.711 table 2a (transmitted codes are inverted).
        self.assertEqual(samples_of(ulaw_decode(bytes([0xFE, 0xEF, 0xDF, 0x8F]))), [8, 132, 396, 16764])

    def test_every_code_round_trips_except_the_negative_zero(self) -> None:
        for code in range(256):
            expected = 0xFF if code == 0x7F else code
            self.assertEqual(ulaw_encode(ulaw_decode(bytes([code]))), bytes([expected]), hex(code))

    def test_decode_table_is_antisymmetric_and_monotonic(self) -> None:
        for code in range(128):
            self.assertEqual(ULAW_DECODE[code], -ULAW_DECODE[code | 0x80])
        # 0x00..0x7F run from the most negative up to -0, 0x80..0xFF from the most positive down to +0.
        negatives = ULAW_DECODE[:128]
        positives = ULAW_DECODE[128:]
        self.assertEqual(list(negatives), sorted(negatives))
        self.assertEqual(list(positives), sorted(positives, reverse=True))

    def test_encode_is_monotonic_over_every_sample(self) -> None:
        decoded = samples_of(ulaw_decode(ulaw_encode(pcm(*range(-32768, 32768)))))
        self.assertEqual(decoded, sorted(decoded))

    def test_odd_length_pcm_is_refused(self) -> None:
        with self.assertRaises(ValueError) as caught:
            ulaw_encode(b"\x00\x00\x00")
        self.assertIn("even number of bytes, got 3", str(caught.exception))

    def test_empty(self) -> None:
        self.assertEqual((ulaw_encode(b""), ulaw_decode(b"")), (b"", b""))

    @given(st.binary(max_size=64))
    def test_property_encode_decode(self, codes: bytes) -> None:
        self.assertEqual(ulaw_encode(ulaw_decode(codes)), codes.replace(b"\x7f", b"\xff"))

    @given(st.lists(st.integers(-32768, 32767), max_size=32))
    def test_property_decode_encode_is_idempotent(self, values: list[int]) -> None:
        once = ulaw_decode(ulaw_encode(pcm(*values)))
        self.assertEqual(ulaw_decode(ulaw_encode(once)), once)


class AlawTests(SynchronousTestCase):
    def test_reference_values(self) -> None:
        self.assertEqual(samples_of(alaw_decode(b"\xd5\x55\xaa\x2a")), [8, -8, 32256, -32256])
        self.assertEqual(alaw_encode(pcm(0, -1, 32767, -32768)), b"\xd5\x55\xaa\x2a")

    def test_every_code_round_trips(self) -> None:
        self.assertEqual(alaw_encode(alaw_decode(ALL_CODES)), ALL_CODES)

    def test_decode_table_is_antisymmetric_and_monotonic(self) -> None:
        for code in range(128):
            self.assertEqual(ALAW_DECODE[code], -ALAW_DECODE[code | 0x80])
        self.assertEqual(len(set(ALAW_DECODE)), 256)  # A-law has no negative zero
        ordered = sorted(ALAW_DECODE)
        self.assertEqual(ordered[127:129], [-8, 8])

    def test_encode_is_monotonic_over_every_sample(self) -> None:
        decoded = samples_of(alaw_decode(alaw_encode(pcm(*range(-32768, 32768)))))
        self.assertEqual(decoded, sorted(decoded))

    def test_odd_length_pcm_is_refused(self) -> None:
        self.assertRaises(ValueError, alaw_encode, b"\x01")

    @given(st.binary(max_size=64))
    def test_property_encode_decode(self, codes: bytes) -> None:
        self.assertEqual(alaw_encode(alaw_decode(codes)), codes)


class AudioopAgreementTests(SynchronousTestCase):
    """Where the deprecated `audioop` still exists (until Python 3.13), every sample agrees with it."""

    def setUp(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                import audioop
            except ImportError:  # pragma: no cover - Python >= 3.13
                self.skipTest("audioop is gone")
        self.audioop = audioop
        self.every_sample = pcm(*range(-32768, 32768))

    def test_ulaw(self) -> None:
        self.assertEqual(ulaw_encode(self.every_sample), self.audioop.lin2ulaw(self.every_sample, 2))
        self.assertEqual(ulaw_decode(ALL_CODES), self.audioop.ulaw2lin(ALL_CODES, 2))

    def test_alaw(self) -> None:
        self.assertEqual(alaw_encode(self.every_sample), self.audioop.lin2alaw(self.every_sample, 2))
        self.assertEqual(alaw_decode(ALL_CODES), self.audioop.alaw2lin(ALL_CODES, 2))
