"""Call-progress and DTMF tones as 8 kHz mono 16-bit PCM (the North American precise tones, ANSI T1.401).

`tone_pcm(name, seconds)` generates one of `TONES`: "beep" (1000 Hz), "dial" (350 + 440 Hz, continuous),
"ringback" (440 + 480 Hz, 2 s on, 4 s off), "busy" (480 + 620 Hz, 0.5 s on, 0.5 s off), "congestion"
(480 + 620 Hz, 0.25 s on, 0.25 s off); `dtmf_pcm(digits)` the DTMF tones of digits (Q.23 frequencies,
100 ms each, 100 ms gaps); `silence_pcm(ms)` silence. Levels are about -13 dBFS per component: loud enough
to hear, far from clipping after G.711. Results are cached (they are immutable bytes).

Pure computation: no clock, no files, no RTP.
"""

from __future__ import annotations

import math
import sys
from array import array
from functools import lru_cache

from pbx.media.dtmf import COLUMN_FREQUENCIES, ROW_FREQUENCIES, digit_to_event

__all__ = ["DEFAULT_SECONDS", "RATE", "TONES", "dtmf_pcm", "silence_pcm", "tone_pcm"]

RATE = 8000
AMPLITUDE = 7000  # per component: -13.4 dBFS

# name: (frequencies, seconds on, seconds off); off == 0 means continuous
TONES: dict[str, tuple[tuple[float, ...], float, float]] = {
    "beep": ((1000.0,), 0.5, 0.0),
    "dial": ((350.0, 440.0), 1.0, 0.0),
    "ringback": ((440.0, 480.0), 2.0, 4.0),
    "busy": ((480.0, 620.0), 0.5, 0.5),
    "congestion": ((480.0, 620.0), 0.25, 0.25),
}

DEFAULT_SECONDS = {"beep": 0.5, "dial": 4.0, "ringback": 4.0, "busy": 4.0, "congestion": 4.0}
"""How long each tone plays when no length is given."""

_KEYPAD = ("123A", "456B", "789C", "*0#D")


def _pack(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def _sines(freqs: tuple[float, ...], count: int, start: int = 0) -> array[int]:
    steps = [2.0 * math.pi * f / RATE for f in freqs]
    return array(
        "h",
        (round(sum(AMPLITUDE * math.sin(step * (start + i)) for step in steps)) for i in range(count)),
    )


@lru_cache(maxsize=64)
def tone_pcm(name: str, seconds: float | None = None) -> bytes:
    """`seconds` of tone `name` (default `DEFAULT_SECONDS[name]`) with its cadence; ValueError if unknown."""
    try:
        freqs, on, off = TONES[name]
    except KeyError:
        raise ValueError(f"unknown tone {name!r}; known: {', '.join(sorted(TONES))}") from None
    if seconds is None:
        seconds = DEFAULT_SECONDS[name]
    if not 0 < seconds <= 600:
        raise ValueError(f"tone length must be in (0, 600] seconds, got {seconds}")
    total = round(seconds * RATE)
    if not off:
        return _pack(_sines(freqs, total))
    on_n, off_n = round(on * RATE), round(off * RATE)
    burst = _sines(freqs, on_n)
    period = burst + array("h", bytes(2 * off_n))
    reps = -(-total // len(period))
    return _pack((period * reps)[:total])


@lru_cache(maxsize=256)
def dtmf_pcm(digits: str, on_ms: int = 100, off_ms: int = 100) -> bytes:
    """In-band DTMF: each digit's tones for `on_ms`, then `off_ms` of silence; ValueError for non-digits."""
    out = array("h")
    for digit in digits:
        event = digit_to_event(digit)
        keys = "0123456789*#ABCD"[event]
        row = next(r for r, line in enumerate(_KEYPAD) if keys in line)
        col = _KEYPAD[row].index(keys)
        out += _sines((ROW_FREQUENCIES[row], COLUMN_FREQUENCIES[col]), on_ms * RATE // 1000)
        out += array("h", bytes(2 * (off_ms * RATE // 1000)))
    return _pack(out)


def silence_pcm(ms: int) -> bytes:
    """`ms` milliseconds of digital silence."""
    if not 0 <= ms <= 3_600_000:
        raise ValueError(f"silence must be 0..3600000 ms, got {ms}")
    return bytes(2 * (ms * RATE // 1000))
