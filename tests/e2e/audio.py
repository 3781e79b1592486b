"""Audio checks for end-to-end tests: read a WAV that a phone dumped, and measure tones in it (Goertzel).

A phone that plays a known tone (`tests.e2e.baresip.write_tone_wav`) and dumps what it hears (baresip's
`sndfile`) lets a test prove that media crossed the relay: the other phone's frequency must be clearly
present in the dump, well above the phone's own frequency (no echo or loop-back) and above the noise floor
(neighbouring frequencies that nobody plays).

Pure Python (no numpy): a few seconds at 8 kHz is a few tens of thousands of samples, which the Goertzel
recurrence handles in milliseconds per frequency. Only 16-bit PCM WAV files are read (what `sndfile` writes
for G.711 calls); stereo files are mixed down to mono.
"""

from __future__ import annotations

import array
import math
import sys
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Audio:
    """Mono samples scaled to -1.0 .. 1.0, and their sample rate."""

    rate: int
    samples: Sequence[float]

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate if self.rate else 0.0

    def window(self, start: float = 0.0, end: float | None = None) -> Audio:
        """The samples from `start` to `end` seconds (the end when `end` is None)."""
        first = max(0, int(start * self.rate))
        last = len(self.samples) if end is None else min(len(self.samples), int(end * self.rate))
        return Audio(self.rate, self.samples[first:last])

    def rms(self) -> float:
        """Root mean square level (0.0 for no samples)."""
        if not self.samples:
            return 0.0
        return math.sqrt(sum(s * s for s in self.samples) / len(self.samples))


def read_wav(path: Path) -> Audio:
    """Read a 16-bit PCM WAV file (mono, or mixed down to mono).

    Raises:
        ValueError: the file is not 16-bit PCM.
    """
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit samples; only 16-bit PCM is read")
        channels = w.getnchannels()
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
    pcm = array.array("h")
    pcm.frombytes(raw[: len(raw) - len(raw) % 2])
    if sys.byteorder == "big":
        pcm.byteswap()  # WAV is little-endian
    if channels > 1:
        frames = len(pcm) // channels
        mono = [sum(pcm[i * channels + c] for c in range(channels)) / channels for i in range(frames)]
        return Audio(rate, [s / 32768.0 for s in mono])
    return Audio(rate, [s / 32768.0 for s in pcm])


def goertzel_power(samples: Sequence[float], rate: int, frequency: float) -> float:
    """The power of `frequency` in `samples`, normalised by the number of samples.

    A sine of amplitude A at `frequency` gives about A**2 / 4 whatever the length; silence gives 0.
    """
    n = len(samples)
    if n == 0:
        return 0.0
    coefficient = 2.0 * math.cos(2.0 * math.pi * frequency / rate)
    s_prev = s_prev2 = 0.0
    for x in samples:
        s = x + coefficient * s_prev - s_prev2
        s_prev2, s_prev = s_prev, s
    power = s_prev * s_prev + s_prev2 * s_prev2 - coefficient * s_prev * s_prev2
    return power / (n * n)


@dataclass(frozen=True)
class ToneReport:
    """Tone levels in a recording, for assertions and their messages."""

    seconds: float
    rms: float
    levels: dict[float, float]  # frequency -> Goertzel power

    def ratio(self, wanted: float, other: float) -> float:
        """How many times stronger `wanted` is than `other` (inf when `other` is absent)."""
        below = self.levels[other]
        return math.inf if below <= 0 else self.levels[wanted] / below

    def noise_floor(self, exclude: Iterable[float]) -> float:
        """The strongest level among the frequencies not in `exclude`."""
        skip = set(exclude)
        rest = [level for f, level in self.levels.items() if f not in skip]
        return max(rest) if rest else 0.0

    def __str__(self) -> str:
        parts = ", ".join(f"{f:g} Hz: {level:.2e}" for f, level in sorted(self.levels.items()))
        return f"{self.seconds:.2f} s, rms {self.rms:.4f}; {parts}"


# Frequencies nobody plays in the tests: the noise floor (away from 440/1000 Hz and their harmonics).
NOISE_PROBES = (300.0, 700.0, 1300.0, 1700.0, 2300.0, 2900.0)


def tone_report(
    audio: Audio, frequencies: Iterable[float], probes: Iterable[float] = NOISE_PROBES
) -> ToneReport:
    """Goertzel power at each of `frequencies` and of the noise `probes`."""
    levels = {float(f): goertzel_power(audio.samples, audio.rate, f) for f in (*frequencies, *probes)}
    return ToneReport(audio.seconds, audio.rms(), levels)


def assert_hears(
    audio: Audio,
    expected: float,
    own: float,
    *,
    min_ratio: float = 100.0,
    min_power: float = 1e-4,
    label: str = "",
) -> ToneReport:
    """Assert that `expected` dominates `audio`: `min_ratio` times the `own` tone and the noise floor.

    `min_power` (about an amplitude of 0.02 full scale) rules out a recording that is silence with tiny
    numerical noise, where ratios mean nothing.
    """
    report = tone_report(audio, (expected, own))
    what = f"{label}: " if label else ""
    assert report.levels[expected] >= min_power, f"{what}{expected:g} Hz is too weak: {report}"
    assert report.ratio(expected, own) >= min_ratio, f"{what}{own:g} Hz (own tone) is too strong: {report}"
    floor = report.noise_floor((expected, own))
    assert floor <= 0 or report.levels[expected] / floor >= min_ratio, f"{what}noise is too strong: {report}"
    return report
