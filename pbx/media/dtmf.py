"""DTMF: RFC 4733 telephone-events (payload, receiver, sender) and in-band Goertzel detection (Q.23/Q.24).

`TelephoneEvent` is the 4-octet payload of RFC 4733 section 2.3 (event, E bit, R bit ignored on receipt and
sent as 0, 6-bit volume in -dBm0, 16-bit duration in RTP timestamp units); events 0-15 are the DTMF digits of
section 3.2 (0-9, * = 10, # = 11, A-D = 12-15).

`DtmfReceiver` (section 2.5.2) identifies an event by its RTP timestamp (the event's start), reports each
digit once when its end is seen, ignores the retransmitted end packets (section 2.5.1.4 sends three) and
anything older than the current event, and reports an event whose end was lost when the next event starts or
when the caller's timer calls `flush()` (timers are inputs: it holds no clock). The marker bit is only
informative, so a lost start packet does not lose the digit. It does not handle long-duration events split at
duration 0xFFFF (section 2.5.1.3), audio/red redundancy (RFC 2198), or non-DTMF events (16 and up: ignored).

`DtmfSender` builds the packet sequence of section 2.5.1 for one digit: a start packet with the marker bit,
an update every packet interval (160 ticks = 20 ms at 8 kHz), and three end packets, all with the same
timestamp. Sequence numbers, SSRC and pacing are the caller's.

`InbandDtmfDetector` finds DTMF tones in 16-bit little-endian PCM with the Goertzel algorithm on 205-sample
windows (at 8 kHz): the strongest row and column tone must carry most of the window's energy, be clearly
above the other tones of their group, and respect the twist limits (8 dB normal, 4 dB reverse); a digit
must be seen in two consecutive windows and is reported once until two windows without it. It does not
check second harmonics or the exact Q.24 timing and frequency-deviation limits, and generates no tones.

`parse_dtmf_info` reads the digit of a SIP INFO body (`application/dtmf-relay`: "Signal=5\r\nDuration=160";
`application/dtmf`: "5"): plain text in, a digit out; it imports nothing of SIP.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DIGITS",
    "COLUMN_FREQUENCIES",
    "ROW_FREQUENCIES",
    "DtmfReceiver",
    "DtmfSender",
    "InbandDtmfDetector",
    "TelephoneEvent",
    "digit_to_event",
    "event_to_digit",
    "goertzel_power",
    "parse_dtmf_info",
]

DIGITS = "0123456789*#ABCD"
"""The DTMF digits in RFC 4733 event-code order: DIGITS[event] for events 0-15."""

ROW_FREQUENCIES = (697.0, 770.0, 852.0, 941.0)
COLUMN_FREQUENCIES = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")

_EVENT = struct.Struct("!BBH")


def event_to_digit(event: int) -> str:
    """The DTMF digit of an RFC 4733 event code 0-15; ValueError for any other code."""
    if not 0 <= event < len(DIGITS):
        raise ValueError(f"telephone-event {event} is not a DTMF digit (0-15)")
    return DIGITS[event]


def digit_to_event(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit ('0'-'9', '*', '#', 'A'-'D', case-insensitive)."""
    index = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return index


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The RFC 4733 section 2.3 payload: event code, end bit, volume (0-63, -dBm0) and duration (ticks)."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    SIZE = 4

    def __post_init__(self) -> None:
        for name, value, high in (("event", self.event, 255), ("volume", self.volume, 63)):
            if not 0 <= value <= high:
                raise ValueError(f"telephone-event {name} must be in 0..{high}, got {value}")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError(f"telephone-event duration must be in 0..65535, got {self.duration}")

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse exactly 4 octets; the reserved R bit is ignored (section 2.3.4)."""
        if len(payload) != cls.SIZE:
            raise ValueError(f"telephone-event payload must be 4 bytes, got {len(payload)}")
        event, flags, duration = _EVENT.unpack(payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def to_bytes(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    __bytes__ = to_bytes

    @property
    def digit(self) -> str:
        return event_to_digit(self.event)


def _older(timestamp: int, than: int) -> bool:
    """RTP timestamp comparison modulo 2**32 (RFC 3550 serial arithmetic)."""
    return 0 < ((than - timestamp) & 0xFFFFFFFF) < 0x80000000


class DtmfReceiver:
    """Turns received telephone-event packets into digits, each reported once (RFC 4733 section 2.5.2)."""

    __slots__ = ("_event", "_pending", "_timestamp")

    def __init__(self) -> None:
        self._timestamp: int | None = None  # start of the latest event seen
        self._event = 0
        self._pending = False  # the latest event is not reported yet

    def feed(self, timestamp: int, marker: bool, event: TelephoneEvent) -> list[str]:
        """One packet (its RTP timestamp and marker bit and its payload); the digits it completes."""
        del marker  # informative only: a lost start packet must not lose the digit
        if self._timestamp is not None and (
            timestamp == self._timestamp or _older(timestamp, self._timestamp)
        ):
            if timestamp == self._timestamp and self._pending and event.end:
                self._pending = False
                return self._digit(self._event)
            return []  # an update or retransmitted end of the current event, or a late packet of an old one
        digits = self.flush()  # a new event: the previous one lost its end
        self._timestamp, self._event, self._pending = timestamp, event.event, True
        if event.end:
            self._pending = False
            digits += self._digit(event.event)
        return digits

    def flush(self) -> list[str]:
        """Report the current event if its end never came (call it after a quiet period, e.g. 200 ms)."""
        if not self._pending:
            return []
        self._pending = False
        return self._digit(self._event)

    @staticmethod
    def _digit(event: int) -> list[str]:
        return [DIGITS[event]] if event < len(DIGITS) else []


class DtmfSender:
    """Builds the RFC 4733 packets of one digit: (marker, rtp timestamp, payload) tuples, in sending order."""

    def __init__(self, volume: int = 10, packet_ticks: int = 160, end_repeats: int = 3) -> None:
        if not 0 <= volume <= 63 or packet_ticks <= 0 or end_repeats < 1:
            raise ValueError("volume must be 0..63, packet_ticks positive and end_repeats at least 1")
        self.volume = volume
        self.packet_ticks = packet_ticks
        self.end_repeats = end_repeats

    def packets(self, digit: str, timestamp: int, duration: int = 800) -> list[tuple[bool, int, bytes]]:
        """The packets of `digit` from `timestamp`, lasting `duration` ticks (default 100 ms at 8 kHz)."""
        event = digit_to_event(digit)
        if not 0 < duration <= 0xFFFF:
            raise ValueError(f"DTMF duration must be in 1..65535 ticks, got {duration}")
        timestamp &= 0xFFFFFFFF
        out: list[tuple[bool, int, bytes]] = []
        elapsed = min(self.packet_ticks, duration)
        while elapsed < duration:
            payload = TelephoneEvent(event, end=False, volume=self.volume, duration=elapsed)
            out.append((not out, timestamp, payload.to_bytes()))
            elapsed += self.packet_ticks
        end = TelephoneEvent(event, end=True, volume=self.volume, duration=duration).to_bytes()
        for _ in range(self.end_repeats):
            out.append((not out, timestamp, end))
        return out


def goertzel_power(samples: Sequence[int], freq: float, rate: int = 8000) -> float:
    """The squared magnitude of `samples` at `freq` Hz (Goertzel): a sine of amplitude A gives ~(N*A/2)**2."""
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


class InbandDtmfDetector:
    """Finds DTMF digits in 16-bit little-endian mono PCM fed in blocks of any size; reports each once."""

    MIN_RMS = 300.0  # about -41 dBFS: quieter windows are silence
    MIN_TONE_SHARE = 0.75  # the two tones carry at least this share of the window's energy (speech: < 0.55)
    MIN_PEAK_RATIO = 6.3  # 8 dB above the other tones of the same group
    NORMAL_TWIST = 10 ** (8 / 10)  # row stronger than column by at most 8 dB
    REVERSE_TWIST = 10 ** (4 / 10)  # column stronger than row by at most 4 dB

    def __init__(self, rate: int = 8000) -> None:
        if rate < 4000:
            raise ValueError(f"sample rate too low for DTMF: {rate}")
        self._min_row_share = 0.999 * self.MIN_TONE_SHARE / (1.0 + self.REVERSE_TWIST)
        self.rate = rate
        self.window = round(205 * rate / 8000)
        self._buffer = array("h")
        self._candidate: str | None = None
        self._count = 0
        self._reported: str | None = None
        self._quiet = 0

    def feed(self, pcm: bytes) -> list[str]:
        """Add PCM; the digits newly detected."""
        if len(pcm) % 2:
            raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
        block = array("h")
        block.frombytes(pcm)
        if sys.byteorder == "big":
            block.byteswap()
        self._buffer.extend(block)
        digits: list[str] = []
        n = self.window
        while len(self._buffer) >= n:
            window = self._buffer[:n]
            del self._buffer[:n]
            digit = self.classify(window)
            if digit is not None and digit == self._candidate:
                self._count += 1
            else:
                self._candidate, self._count = digit, 1
            if digit is None:
                self._quiet += 1
                if self._quiet >= 2:
                    self._reported = None
            else:
                self._quiet = 0
                if self._count >= 2 and digit != self._reported:
                    self._reported = digit
                    digits.append(digit)
        return digits

    def classify(self, window: Sequence[int]) -> str | None:
        """The digit one analysis window holds, if any (no memory of earlier windows)."""
        n = len(window)
        energy = float(sum(x * x for x in window))
        if n == 0 or energy / n < self.MIN_RMS**2:
            return None
        rows = [goertzel_power(window, f, self.rate) for f in ROW_FREQUENCIES]
        row = max(range(4), key=rows.__getitem__)
        row_power = rows[row]
        # The share and reverse-twist checks below imply that the row tone alone carries at least
        # MIN_TONE_SHARE / (1 + REVERSE_TWIST) of the energy: speech and other tones stop here, before
        # the four column filters (half the cost of a window).
        if 2.0 * row_power / (n * energy) < self._min_row_share:
            return None
        cols = [goertzel_power(window, f, self.rate) for f in COLUMN_FREQUENCIES]
        col = max(range(4), key=cols.__getitem__)
        col_power = cols[col]
        if row_power <= 0 or col_power <= 0:
            return None
        # A sine of amplitude A over n samples: Goertzel power (n*A/2)**2, energy n*A**2/2.
        if 2.0 * (row_power + col_power) / (n * energy) < self.MIN_TONE_SHARE:
            return None
        if row_power > col_power * self.NORMAL_TWIST or col_power > row_power * self.REVERSE_TWIST:
            return None
        for powers, peak in ((rows, row), (cols, col)):
            for i, power in enumerate(powers):
                if i != peak and power * self.MIN_PEAK_RATIO > powers[peak]:
                    return None
        return _KEYPAD[row][col]


DTMF_INFO_TYPES = ("application/dtmf-relay", "application/dtmf")
"""The SIP INFO content types `parse_dtmf_info` understands."""


def _info_digit(value: str) -> str | None:
    value = value.strip()
    if len(value) == 1 and value.upper() in DIGITS:
        return value.upper()
    if value in ("10", "11", "12", "13", "14", "15"):  # the RFC 4733 event code (some phones): 10 = *
        return DIGITS[int(value)]
    return None


def parse_dtmf_info(content_type: str, body: bytes | str) -> str | None:
    """The DTMF digit of a SIP INFO body, or None when the type is not DTMF or the body holds no digit.

    `application/dtmf-relay` bodies are "key=value" lines ("Signal=5", "Duration=160"; keys case-insensitive,
    CRLF or LF); `application/dtmf` bodies are the digit alone ("5"), though a "Signal=" line is accepted in
    either type. Digits are 0-9, *, #, A-D (returned upper-case); "10".."15" are read as the RFC 4733 event
    codes of *, #, A-D. Parameters of the content type ("; charset=...") are ignored.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in DTMF_INFO_TYPES:
        return None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "signal":
            return _info_digit(value)
    if media_type == "application/dtmf":
        return _info_digit(text)
    return None
