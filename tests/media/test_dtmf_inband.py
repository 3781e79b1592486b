"""Property test of the Goertzel in-band detector: any digit string, at any reasonable level, with twist
within limits and white noise 20 dB below the tones, through G.711 or not, is detected exactly once each."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pbx.media import g711
from pbx.media.dtmf import COLUMN_FREQUENCIES, DIGITS, ROW_FREQUENCIES, InbandDtmfDetector

RATE = 8000
KEYPAD = ("123A", "456B", "789C", "*0#D")


def keyed(
    digits: str, level: float, twist_db: float, on_ms: int, off_ms: int, snr_db: float, seed: int
) -> bytes:
    rng = random.Random(seed)
    row_amp = level
    col_amp = level * 10 ** (twist_db / 20)
    noise = math.sqrt((row_amp**2 + col_amp**2) / 2) / 10 ** (snr_db / 20)
    out = bytearray()
    phase = rng.uniform(0, 2 * math.pi)
    for digit in digits:
        row = next(r for r, keys in enumerate(KEYPAD) if digit in keys)
        low, high = ROW_FREQUENCIES[row], COLUMN_FREQUENCIES[KEYPAD[row].index(digit)]
        for i in range(on_ms * RATE // 1000):
            t = i / RATE
            x = row_amp * math.sin(2 * math.pi * low * t + phase) + col_amp * math.sin(2 * math.pi * high * t)
            out += max(-32768, min(32767, round(x + rng.gauss(0, noise)))).to_bytes(2, "little", signed=True)
        for _ in range(off_ms * RATE // 1000):
            out += max(-32768, min(32767, round(rng.gauss(0, noise)))).to_bytes(2, "little", signed=True)
    return bytes(out)


class InbandPropertyTests(SynchronousTestCase):
    @settings(max_examples=40, deadline=None)
    @given(
        digits=st.text(alphabet=DIGITS, min_size=1, max_size=5),
        level=st.floats(1500.0, 12000.0),
        twist_db=st.floats(-3.0, 3.0),
        on_ms=st.integers(70, 200),
        off_ms=st.integers(70, 150),
        seed=st.integers(0, 2**32),
        codec=st.sampled_from(["none", "PCMU", "PCMA"]),
    )
    def test_every_digit_once_in_noise(
        self, digits: str, level: float, twist_db: float, on_ms: int, off_ms: int, seed: int, codec: str
    ) -> None:
        pcm = keyed(digits, level, twist_db, on_ms, off_ms, 20.0, seed)
        if codec == "PCMU":
            pcm = g711.ulaw_decode(g711.ulaw_encode(pcm))
        elif codec == "PCMA":
            pcm = g711.alaw_decode(g711.alaw_encode(pcm))
        detector = InbandDtmfDetector()
        found: list[str] = []
        for offset in range(0, len(pcm), 320):  # 20 ms packets
            found += detector.feed(pcm[offset : offset + 320])
        self.assertEqual("".join(found), digits)
