"""G.711 companding: µ-law and A-law encode (16-bit linear PCM -> 8-bit codes) and decode (ITU-T G.711).

The quantisation follows ITU-T G.711 (1988) tables 1a/2a (µ-law) and 1b/2b (A-law) as implemented by the
classic Sun reference code (`g711.c`, the same results as the removed `audioop.lin2ulaw`/`lin2alaw`): µ-law
works on the top 14 bits of the sample, A-law on the top 13 bits; codes are sent with the G.711 inversions
(µ-law: all bits inverted; A-law: even bits inverted, ``^ 0x55``). µ-law has two codes for zero (0x7F and
0xFF); the encoder always produces 0xFF.

PCM is signed 16-bit little-endian (the byte order of WAV files and of RFC 3551 L16 after conversion), one
channel. Both directions are table driven: the 256-entry decode tables are split into low and high bytes so
that decoding is two `bytes.translate` calls, and the 65536-entry encode tables are indexed by the unsigned
16-bit sample. All tables are built once at import.

This module knows nothing of RTP, packetisation (20 ms = 160 samples at 8 kHz is the caller's business),
sample-rate conversion or G.711 Appendix I/II (packet loss concealment, comfort noise).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable

__all__ = [
    "ALAW_DECODE",
    "ULAW_DECODE",
    "alaw_decode",
    "alaw_encode",
    "alaw_encode_sample",
    "alaw_decode_sample",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_encode_sample",
    "ulaw_decode_sample",
]

_ULAW_BIAS = 0x84  # 132: the µ-law bias, applied to the 14-bit magnitude as 33
_ULAW_CLIP = 8159  # largest 14-bit magnitude before the bias
_ULAW_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for seg, end in enumerate(ends):
        if value <= end:
            return seg
    return len(ends)


def ulaw_encode_sample(sample: int) -> int:
    """One signed 16-bit sample to its µ-law code (G.711 table 2a, transmitted form)."""
    if not -32768 <= sample <= 32767:
        raise ValueError(f"16-bit sample out of range: {sample}")
    value = sample >> 2  # 14-bit two's complement
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(value, _ULAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((value >> (seg + 1)) & 0x0F)) ^ mask


def ulaw_decode_sample(code: int) -> int:
    """One µ-law code to its signed 16-bit value (G.711 table 2a)."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"µ-law code out of range: {code}")
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return _ULAW_BIAS - magnitude if code & 0x80 else magnitude - _ULAW_BIAS


def alaw_encode_sample(sample: int) -> int:
    """One signed 16-bit sample to its A-law code (G.711 table 1b, transmitted form)."""
    if not -32768 <= sample <= 32767:
        raise ValueError(f"16-bit sample out of range: {sample}")
    value = sample >> 3  # 13-bit two's complement
    if value >= 0:
        mask = 0xD5
    else:
        mask, value = 0x55, -value - 1
    seg = _segment(value, _ALAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    quant = (value >> 1) if seg < 2 else (value >> seg)
    return ((seg << 4) | (quant & 0x0F)) ^ mask


def alaw_decode_sample(code: int) -> int:
    """One A-law code to its signed 16-bit value (G.711 table 1b)."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"A-law code out of range: {code}")
    code ^= 0x55
    magnitude = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    if seg == 0:
        magnitude += 8
    elif seg == 1:
        magnitude += 0x108
    else:
        magnitude = (magnitude + 0x108) << (seg - 1)
    return magnitude if code & 0x80 else -magnitude


ULAW_DECODE: tuple[int, ...] = tuple(ulaw_decode_sample(c) for c in range(256))
"""The µ-law decode table: code -> signed 16-bit sample."""
ALAW_DECODE: tuple[int, ...] = tuple(alaw_decode_sample(c) for c in range(256))
"""The A-law decode table: code -> signed 16-bit sample."""


def _split(table: tuple[int, ...]) -> tuple[bytes, bytes]:
    low = bytes(v & 0xFF for v in table)
    high = bytes((v >> 8) & 0xFF for v in table)
    return low, high


def _encode_table(encode: Callable[[int], int]) -> bytes:
    # Indexed by the unsigned view of the sample: 0..32767 are themselves, 32768..65535 are -32768..-1.
    return bytes(encode(u - 0x10000 if u & 0x8000 else u) for u in range(0x10000))


_ULAW_LOW, _ULAW_HIGH = _split(ULAW_DECODE)
_ALAW_LOW, _ALAW_HIGH = _split(ALAW_DECODE)
_ULAW_ENCODE = _encode_table(ulaw_encode_sample)
_ALAW_ENCODE = _encode_table(alaw_encode_sample)


def _decode(data: bytes, low: bytes, high: bytes) -> bytes:
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(low)
    out[1::2] = data.translate(high)
    return bytes(out)


def _encode(pcm: bytes, table: bytes, name: str) -> bytes:
    if len(pcm) % 2:
        raise ValueError(f"{name}: 16-bit PCM must have an even number of bytes, got {len(pcm)}")
    samples = array("H")
    samples.frombytes(pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    return bytes(map(table.__getitem__, samples))


def ulaw_decode(data: bytes) -> bytes:
    """µ-law codes to signed 16-bit little-endian PCM (two bytes per code)."""
    return _decode(data, _ULAW_LOW, _ULAW_HIGH)


def alaw_decode(data: bytes) -> bytes:
    """A-law codes to signed 16-bit little-endian PCM (two bytes per code)."""
    return _decode(data, _ALAW_LOW, _ALAW_HIGH)


def ulaw_encode(pcm: bytes) -> bytes:
    """Signed 16-bit little-endian PCM to µ-law codes; ValueError for an odd number of bytes."""
    return _encode(pcm, _ULAW_ENCODE, "ulaw_encode")


def alaw_encode(pcm: bytes) -> bytes:
    """Signed 16-bit little-endian PCM to A-law codes; ValueError for an odd number of bytes."""
    return _encode(pcm, _ALAW_ENCODE, "alaw_encode")
