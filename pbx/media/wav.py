"""WAV prompts and recordings: read 16-bit PCM WAV, write 8 kHz mono atomically, downmix and resample.

Uses the stdlib `wave` module (RIFF WAVE, WAVE_FORMAT_PCM only). `read_pcm` returns what the file holds;
`load_prompt` converts any 16-bit PCM WAV (any rate, any channel count) to the 8 kHz mono 16-bit
little-endian PCM the media layer plays (G.711 after `pbx.media.g711`), and refuses 8-bit, 24-bit, 32-bit
and compressed WAV with a `ValueError` naming the file and its format. `write_pcm_atomic` writes to a temp
file in the target's directory, fsyncs it and `os.replace`s it over the target, so a reader sees the old
file or the whole new one, never half a file (ARCHITECTURE.md, "Media").

The resampler is plain linear interpolation with no anti-alias filter: adequate for speech prompts recorded
at 16 kHz/44.1 kHz, not for music. This module knows nothing of RTP, packet timing or the reactor (file I/O
is blocking: run it in a thread or at start-up), nor of WAVE_FORMAT_EXTENSIBLE, float or compressed WAV.
"""

from __future__ import annotations

import os
import sys
import tempfile
import wave
from array import array

__all__ = ["PROMPT_RATE", "downmix_to_mono", "load_prompt", "read_pcm", "resample_linear", "write_pcm_atomic"]

PROMPT_RATE = 8000

StrPath = str | os.PathLike[str]


def read_pcm(path: StrPath) -> tuple[int, int, int, bytes]:
    """(rate, channels, sample width in bytes, raw little-endian frames) of a PCM WAV file.

    ValueError, naming the file, for anything the `wave` module cannot read (not RIFF/WAVE, compressed or
    extensible format, truncated header).
    """
    try:
        with wave.open(os.fspath(path), "rb") as reader:
            params = reader.getparams()
            frames = reader.readframes(params.nframes)
    except (wave.Error, EOFError) as error:
        raise ValueError(f"{os.fspath(path)}: not a readable PCM WAV file ({error})") from error
    return params.framerate, params.nchannels, params.sampwidth, frames


def _samples(pcm: bytes) -> array[int]:
    if len(pcm) % 2:
        raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
    samples = array("h")
    samples.frombytes(pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _to_bytes(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def downmix_to_mono(pcm: bytes, channels: int) -> bytes:
    """Average interleaved 16-bit channels into one (rounding toward negative infinity)."""
    if channels < 1:
        raise ValueError(f"channel count must be positive, got {channels}")
    if channels == 1:
        return bytes(pcm)
    samples = _samples(pcm)
    if len(samples) % channels:
        raise ValueError(f"{len(samples)} samples is not a whole number of {channels}-channel frames")
    columns = [samples[c::channels] for c in range(channels)]
    mixed = array("h", (sum(frame) // channels for frame in zip(*columns, strict=True)))
    return _to_bytes(mixed)


def resample_linear(pcm: bytes, from_rate: int, to_rate: int = PROMPT_RATE) -> bytes:
    """Resample mono 16-bit PCM by linear interpolation (no anti-alias filter)."""
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    samples = _samples(pcm)
    if from_rate == to_rate or not samples:
        return bytes(pcm)
    count = len(samples) * to_rate // from_rate
    last = len(samples) - 1
    out = array("h", bytes(2 * count))
    for i in range(count):
        position, remainder = divmod(i * from_rate, to_rate)
        a = samples[position]
        b = samples[min(position + 1, last)]
        out[i] = a + ((b - a) * remainder) // to_rate
    return _to_bytes(out)


def load_prompt(path: StrPath) -> bytes:
    """A 16-bit PCM WAV file as 8 kHz mono 16-bit little-endian PCM; ValueError naming file and format."""
    rate, channels, width, frames = read_pcm(path)
    if width != 2:
        raise ValueError(
            f"{os.fspath(path)}: {8 * width}-bit PCM ({rate} Hz, {channels} channel(s)) is not supported: "
            "prompts must be 16-bit PCM WAV"
        )
    return resample_linear(downmix_to_mono(frames, channels), rate, PROMPT_RATE)


def write_pcm_atomic(path: StrPath, pcm: bytes, rate: int = PROMPT_RATE) -> None:
    """Write mono 16-bit little-endian PCM as a WAV file that appears all at once (temp file + os.replace)."""
    if len(pcm) % 2:
        raise ValueError(f"{os.fspath(path)}: 16-bit PCM must have an even number of bytes, got {len(pcm)}")
    if rate <= 0:
        raise ValueError(f"{os.fspath(path)}: sample rate must be positive, got {rate}")
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".wav", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            with wave.open(file, "wb") as writer:
                writer.setnchannels(1)
                writer.setsampwidth(2)
                writer.setframerate(rate)
                writer.writeframes(pcm)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
