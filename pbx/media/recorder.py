"""Recording what a call leg's peer says into an 8 kHz mono 16-bit WAV file, written atomically.

A `Recorder` is fed the decoded 20 ms frames of the current remote stream with their RTP timestamps and
places them by timestamp, so reordered packets land where they belong, duplicates overwrite themselves and
lost packets leave silence (the file keeps real time). A timestamp more than a second ahead of the reactor
clock, or more than `REANCHOR_LATE` seconds behind it (a new SSRC, a peer that restarts its timestamps), is
re-anchored at the clock's position. Packets that are merely late (a sender or a reactor that fell behind
for a moment, then delivered the backlog at once) keep the place their timestamps give them: re-anchoring
them at the clock would leave a gap and then overwrite audio when the stream caught up.

It ends on the first of: `max_seconds` of recording (reactor time), `silence_seconds` without a frame above
the energy threshold (from the start too: a silent or absent peer ends it), a stop digit (the endpoint
calls `stop_digit`; the last 200 ms are dropped when the digit was in-band, it would be in the audio), or
`finish(reason)`. Then trailing silence is trimmed (when silence ended it), the file is written with
`pbx.media.wav.write_pcm_atomic` (temp file + rename: readers never see half a file) and the result is
handed to the endpoint's callback. Nothing is written when no frame was ever above the threshold.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool

from pbx.media.g711 import ALAW_DECODE, ULAW_DECODE, alaw_decode, ulaw_decode
from pbx.media.interfaces import RecordingResult
from pbx.media.wav import write_pcm_atomic

__all__ = ["Recorder", "SILENCE_THRESHOLD", "frame_energy", "thread_writer"]

RATE = 8000
SILENCE_THRESHOLD = 500.0
"""RMS (16-bit sample units, about -36 dBFS) above which a frame counts as audio, not silence."""
REANCHOR_SAMPLES = RATE  # a timestamp more than 1 s ahead of the clock is re-anchored
REANCHOR_LATE = 10.0
"""Seconds a packet's timestamp may lag the reactor clock and still be placed by its timestamp."""
_LATE_SAMPLES = int(REANCHOR_LATE * RATE)
INBAND_DIGIT_TRIM = RATE // 5  # 200 ms

# Squared amplitude of every G.711 code, for energy without decoding.
_ULAW_SQUARES = tuple(v * v for v in ULAW_DECODE)
_ALAW_SQUARES = tuple(v * v for v in ALAW_DECODE)


def frame_energy(payload: bytes, codec: str) -> float:
    """Mean squared amplitude of a G.711 payload (no decoding)."""
    if not payload:
        return 0.0
    table = _ULAW_SQUARES if codec == "PCMU" else _ALAW_SQUARES
    return sum(map(table.__getitem__, payload)) / len(payload)


Writer = Callable[[str, bytes], object]


def thread_writer(reactor: IReactorThreads) -> Writer:
    """A recording writer that runs `write_pcm_atomic` (its fsync can take tens of ms on a busy disk) in the
    reactor's thread pool: `MediaEngine(..., writer=thread_writer(reactor))`."""

    def write(path: str, pcm: bytes) -> Deferred[None]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), write_pcm_atomic, path, pcm)

    return write


class Recorder:
    """One recording in progress; the endpoint feeds it and it calls `done(result or error)` exactly once.

    `writer(path, pcm)` writes the file (default `write_pcm_atomic`, inline); it may return a Deferred
    (a writer running in a thread), and `done` then waits for it."""

    def __init__(
        self,
        clock: IReactorTime,
        path: str,
        max_seconds: float,
        silence_seconds: float,
        stop_digits: str,
        done: Callable[[RecordingResult | BaseException], None],
        writer: Writer | None = None,
    ) -> None:
        if max_seconds <= 0 or silence_seconds < 0:
            raise ValueError("max_seconds must be positive and silence_seconds not negative")
        self.clock = clock
        self.path = path
        self.max_seconds = max_seconds
        self.silence_seconds = silence_seconds
        self.stop_digits = stop_digits
        self._done: Callable[[RecordingResult | BaseException], None] | None = done
        self._write = writer or write_pcm_atomic
        self._threshold = SILENCE_THRESHOLD**2
        self.start = clock.seconds()
        self.pcm = bytearray()
        self.heard_audio = False
        self._last_audio_end = 0  # byte offset just after the last frame above the threshold
        self._anchor: int | None = None  # RTP timestamp at byte offset 0 (for the current source)
        self._max_bytes = int(max_seconds * RATE) * 2
        self._max_timer: IDelayedCall | None = clock.callLater(max_seconds, self.finish, "max_length")
        self._silence_timer: IDelayedCall | None = None
        if silence_seconds:
            self._silence_timer = clock.callLater(silence_seconds, self.finish, "silence")

    @property
    def active(self) -> bool:
        return self._done is not None

    def feed(self, timestamp: int, payload: bytes, codec: str, new_source: bool = False) -> None:
        """A G.711 frame of the current remote source at RTP `timestamp`."""
        if self._done is None:
            return
        clock_pos = int((self.clock.seconds() - self.start) * RATE)
        if self._anchor is None or new_source:
            self._anchor = (timestamp - clock_pos) & 0xFFFFFFFF
        pos = ((timestamp - self._anchor + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        if pos - clock_pos > REANCHOR_SAMPLES or clock_pos - pos > _LATE_SAMPLES:
            self._anchor = (timestamp - clock_pos) & 0xFFFFFFFF
            pos = clock_pos
        if pos < 0:
            return  # from before the recording started
        data = ulaw_decode(payload) if codec == "PCMU" else alaw_decode(payload)
        start = 2 * pos
        end = min(start + len(data), self._max_bytes)
        if start >= self._max_bytes:
            return
        if len(self.pcm) < start:
            self.pcm.extend(bytes(start - len(self.pcm)))
        self.pcm[start:end] = data[: end - start]
        if frame_energy(payload, codec) >= self._threshold:
            self.heard_audio = True
            self._last_audio_end = max(self._last_audio_end, end)
            if self._silence_timer is not None and self._silence_timer.active():
                self._silence_timer.reset(self.silence_seconds)

    def stop_digit(self, digit: str, inband: bool) -> bool:
        """A digit arrived: True (and the recording ends) when it is one of the stop digits."""
        if self._done is None or digit not in self.stop_digits:
            return False
        if inband:
            del self.pcm[max(0, len(self.pcm) - 2 * INBAND_DIGIT_TRIM) :]
            self._last_audio_end = min(self._last_audio_end, len(self.pcm))
        self.finish("digit", digit)
        return True

    def finish(self, reason: str, digit: str | None = None) -> None:
        """End the recording now, write the file and report (only the first call does anything)."""
        done, self._done = self._done, None
        if done is None:
            return
        for timer in (self._max_timer, self._silence_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._max_timer = self._silence_timer = None
        if reason == "silence" or reason == "digit":
            del self.pcm[self._last_audio_end :]
        pcm = bytes(self.pcm[: self._max_bytes])
        self.pcm = bytearray()
        if not self.heard_audio:
            done(RecordingResult(None, 0.0, "no_audio", None, False))
            return
        result = RecordingResult(self.path, len(pcm) / (2 * RATE), reason, digit, True)
        try:
            written = self._write(self.path, pcm)
        except Exception as error:  # a full disk, a removed directory: the caller's Deferred fails
            done(error)
            return
        if isinstance(written, Deferred):  # a writer that runs in a thread
            written.addCallbacks(lambda _: done(result), lambda failure: done(failure.value))
        else:
            done(result)
