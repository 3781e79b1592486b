"""Tests for `pbx.media.dtmf`: RFC 4733 payloads, receiver and sender; Goertzel in-band detection."""

from __future__ import annotations

import math
import random
import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.dtmf import (
    COLUMN_FREQUENCIES,
    DIGITS,
    ROW_FREQUENCIES,
    DtmfReceiver,
    DtmfSender,
    InbandDtmfDetector,
    TelephoneEvent,
    digit_to_event,
    event_to_digit,
    goertzel_power,
)

RATE = 8000
FULL_SCALE = 32767
KEYPAD = ("123A", "456B", "789C", "*0#D")


def frequencies(digit: str) -> tuple[float, float]:
    for row, keys in enumerate(KEYPAD):
        if digit in keys:
            return ROW_FREQUENCIES[row], COLUMN_FREQUENCIES[keys.index(digit)]
    raise AssertionError(digit)


def sines(freqs: tuple[float, ...], n: int, amplitude: float = 0.4) -> list[float]:
    return [
        sum(amplitude * FULL_SCALE * math.sin(2 * math.pi * f * i / RATE) for f in freqs) for i in range(n)
    ]


def to_pcm(signal: list[float], noise_sigma: float = 0.0, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    out = []
    for x in signal:
        if noise_sigma:
            x += rng.gauss(0.0, noise_sigma)
        out.append(max(-32768, min(32767, round(x))))
    return struct.pack(f"<{len(out)}h", *out)


def keyed(digits: str, on_ms: int = 80, off_ms: int = 80) -> list[float]:
    signal: list[float] = [0.0] * (off_ms * RATE // 1000)
    for digit in digits:
        signal += sines(frequencies(digit), on_ms * RATE // 1000)
        signal += [0.0] * (off_ms * RATE // 1000)
    return signal


def detect(pcm: bytes, block: int = 320) -> list[str]:
    detector = InbandDtmfDetector()
    found: list[str] = []
    for i in range(0, len(pcm), block):
        found += detector.feed(pcm[i : i + block])
    return found


# Each of two tones at 0.4 full scale has power A**2/2; 20 dB below their sum is sigma = A / 10.
SIGMA_20DB = 0.4 * FULL_SCALE / 10


class TelephoneEventTests(SynchronousTestCase):
    def test_parse_and_serialize(self) -> None:
        # '5', end bit, R bit set (ignored), volume 10, duration 800.
        event = TelephoneEvent.parse(bytes([5, 0x80 | 0x40 | 10]) + (800).to_bytes(2, "big"))
        self.assertEqual(event, TelephoneEvent(event=5, end=True, volume=10, duration=800))
        self.assertEqual(event.digit, "5")
        self.assertEqual(bytes(event), bytes([5, 0x8A, 0x03, 0x20]))
        self.assertEqual(TelephoneEvent.parse(b"\x0b\x3f\xff\xff"), TelephoneEvent(11, False, 63, 0xFFFF))

    def test_strict(self) -> None:
        self.assertRaises(ValueError, TelephoneEvent.parse, b"\x01\x02\x03")
        self.assertRaises(ValueError, TelephoneEvent.parse, b"\x01\x02\x03\x04\x05")
        self.assertRaises(ValueError, TelephoneEvent, 256)
        self.assertRaises(ValueError, TelephoneEvent, 1, volume=64)
        self.assertRaises(ValueError, TelephoneEvent, 1, duration=0x10000)

    def test_digit_mapping(self) -> None:
        self.assertEqual([event_to_digit(e) for e in range(16)], list("0123456789*#ABCD"))
        self.assertEqual([digit_to_event(d) for d in "0*#Dd"], [0, 10, 11, 15, 15])
        self.assertRaises(ValueError, event_to_digit, 16)
        self.assertRaises(ValueError, digit_to_event, "E")
        self.assertRaises(ValueError, digit_to_event, "12")

    @given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
    def test_property_round_trip(self, event: int, end: bool, volume: int, duration: int) -> None:
        value = TelephoneEvent(event, end, volume, duration)
        self.assertEqual(TelephoneEvent.parse(value.to_bytes()), value)


def packets_of(digit: str, timestamp: int, duration: int = 800) -> list[tuple[int, bool, TelephoneEvent]]:
    return [
        (ts, marker, TelephoneEvent.parse(p))
        for marker, ts, p in DtmfSender().packets(digit, timestamp, duration)
    ]


def receive(receiver: DtmfReceiver, packets: list[tuple[int, bool, TelephoneEvent]]) -> list[str]:
    digits: list[str] = []
    for ts, marker, event in packets:
        digits += receiver.feed(ts, marker, event)
    return digits


class DtmfSenderTests(SynchronousTestCase):
    def test_packet_sequence(self) -> None:
        sent = DtmfSender(volume=10).packets("#", timestamp=1000, duration=800)
        self.assertEqual([m for m, _, _ in sent], [True] + [False] * 6)
        self.assertEqual({ts for _, ts, _ in sent}, {1000})
        events = [TelephoneEvent.parse(p) for _, _, p in sent]
        self.assertEqual([e.duration for e in events], [160, 320, 480, 640, 800, 800, 800])
        self.assertEqual([e.end for e in events], [False] * 4 + [True] * 3)
        self.assertEqual({(e.event, e.volume) for e in events}, {(11, 10)})

    def test_short_digit_and_errors(self) -> None:
        sent = DtmfSender().packets("1", timestamp=0, duration=100)
        self.assertEqual(
            [(m, TelephoneEvent.parse(p).end) for m, _, p in sent],
            [(True, True), (False, True), (False, True)],
        )
        self.assertRaises(ValueError, DtmfSender().packets, "1", 0, 0)
        self.assertRaises(ValueError, DtmfSender().packets, "1", 0, 0x10000)
        self.assertRaises(ValueError, DtmfSender().packets, "x", 0)


class DtmfReceiverTests(SynchronousTestCase):
    def test_each_digit_once_despite_three_end_packets(self) -> None:
        receiver = DtmfReceiver()
        packets = packets_of("1", 0) + packets_of("2", 1600) + packets_of("2", 3200)
        self.assertEqual(receive(receiver, packets), ["1", "2", "2"])
        self.assertEqual(receiver.flush(), [])

    def test_reported_on_the_first_end_packet(self) -> None:
        receiver = DtmfReceiver()
        packets = packets_of("7", 500)
        self.assertEqual(receive(receiver, packets[:4]), [])
        self.assertEqual(receive(receiver, packets[4:5]), ["7"])
        self.assertEqual(receive(receiver, packets[5:]), [])

    def test_lost_end_reported_when_the_next_event_starts(self) -> None:
        receiver = DtmfReceiver()
        first = [p for p in packets_of("3", 0) if not p[2].end]
        self.assertEqual(receive(receiver, first), [])
        self.assertEqual(receive(receiver, packets_of("4", 1600)[:1]), ["3"])
        self.assertEqual(receive(receiver, packets_of("4", 1600)[1:]), ["4"])

    def test_lost_end_reported_on_flush(self) -> None:
        receiver = DtmfReceiver()
        self.assertEqual(receive(receiver, [p for p in packets_of("9", 0) if not p[2].end]), [])
        self.assertEqual(receiver.flush(), ["9"])
        self.assertEqual(receiver.flush(), [])
        self.assertEqual(receive(receiver, packets_of("9", 0)[-3:]), [])  # its late end changes nothing

    def test_new_event_before_the_previous_end_redundancy(self) -> None:
        """Ends of '5' arrive interleaved after '6' started: still one '5' and one '6'."""
        receiver = DtmfReceiver()
        five, six = packets_of("5", 8000), packets_of("6", 8960)
        packets = five[:3] + six[:2] + five[4:] + six[2:]
        self.assertEqual(receive(receiver, packets), ["5", "6"])

    def test_lost_start_packet(self) -> None:
        receiver = DtmfReceiver()
        self.assertEqual(receive(receiver, packets_of("A", 0)[1:]), ["A"])

    def test_timestamp_wraps(self) -> None:
        receiver = DtmfReceiver()
        packets = packets_of("1", 0xFFFFFF00) + packets_of("2", 0x00000600)
        self.assertEqual(receive(receiver, packets), ["1", "2"])

    def test_non_dtmf_events_are_ignored(self) -> None:
        receiver = DtmfReceiver()
        self.assertEqual(receiver.feed(0, True, TelephoneEvent(16, end=True)), [])

    @given(st.lists(st.sampled_from(DIGITS), min_size=1, max_size=6), st.randoms(use_true_random=False))
    def test_property_lossless_duplicated_stream(self, digits: list[str], rng: random.Random) -> None:
        """Every packet duplicated and some adjacent packets swapped: the digits come out once, in order."""
        packets = []
        for i, digit in enumerate(digits):
            packets += packets_of(digit, 1000 + 1600 * i)
        packets = [p for p in packets for _ in range(2)]
        for _ in range(3):
            i = rng.randrange(len(packets) - 1)
            if packets[i][0] == packets[i + 1][0]:
                packets[i], packets[i + 1] = packets[i + 1], packets[i]
        receiver = DtmfReceiver()
        self.assertEqual(receive(receiver, packets) + receiver.flush(), digits)


class GoertzelTests(SynchronousTestCase):
    def test_power_of_a_sine(self) -> None:
        n, amplitude = 205, 1000.0
        signal = [amplitude * math.sin(2 * math.pi * 770 * i / RATE) for i in range(n)]
        expected = (n * amplitude / 2) ** 2
        self.assertLess(abs(goertzel_power(signal, 770) / expected - 1.0), 0.05)
        self.assertLess(goertzel_power(signal, 1336), expected / 100)
        self.assertEqual(goertzel_power([0] * n, 770), 0.0)


class InbandDtmfDetectorTests(SynchronousTestCase):
    def test_every_digit(self) -> None:
        self.assertEqual(detect(to_pcm(keyed(DIGITS))), list(DIGITS))

    def test_every_digit_with_white_noise_at_20_db(self) -> None:
        for seed in range(3):
            self.assertEqual(detect(to_pcm(keyed(DIGITS), SIGMA_20DB, seed)), list(DIGITS), seed)

    def test_block_size_does_not_matter(self) -> None:
        pcm = to_pcm(keyed("159#"))
        self.assertEqual(detect(pcm, block=2), list("159#"))
        self.assertEqual(detect(pcm, block=1000), list("159#"))

    def test_a_held_digit_is_reported_once_and_repeats_are_seen(self) -> None:
        self.assertEqual(detect(to_pcm(keyed("5", on_ms=1000))), ["5"])
        self.assertEqual(detect(to_pcm(keyed("55"))), ["5", "5"])

    def test_twist_limit(self) -> None:
        row, col = frequencies("5")
        weak_column = [
            0.4 * FULL_SCALE * math.sin(2 * math.pi * row * i / RATE)
            + 0.04 * FULL_SCALE * math.sin(2 * math.pi * col * i / RATE)
            for i in range(800)
        ]  # 20 dB of twist
        self.assertEqual(detect(to_pcm(weak_column)), [])

    def test_no_detection_in_silence(self) -> None:
        self.assertEqual(detect(bytes(16000)), [])
        self.assertEqual(detect(to_pcm([0.0] * 8000, noise_sigma=50.0)), [])

    def test_no_detection_on_440_hz(self) -> None:
        self.assertEqual(detect(to_pcm(sines((440.0,), 8000, amplitude=0.8))), [])
        self.assertEqual(detect(to_pcm(sines((350.0, 440.0), 8000))), [])  # dial tone

    def test_no_detection_on_a_single_dtmf_frequency(self) -> None:
        self.assertEqual(detect(to_pcm(sines((770.0,), 4000, amplitude=0.8))), [])

    def test_no_detection_on_white_noise(self) -> None:
        self.assertEqual(detect(to_pcm([0.0] * 16000, noise_sigma=0.3 * FULL_SCALE, seed=7)), [])

    def test_no_detection_on_speech_like_signal(self) -> None:
        """Voiced harmonics of a gliding pitch shaped by moving formants, in syllables, over some noise."""
        rng = random.Random(11)
        signal: list[float] = []
        phase = 0.0
        for _ in range(12):  # 12 syllables of 150-300 ms
            n = rng.randrange(1200, 2400)
            f0_start, f0_end = rng.uniform(90, 160), rng.uniform(110, 240)
            formants = (rng.uniform(300, 900), rng.uniform(900, 2300), rng.uniform(2300, 3200))
            for i in range(n):
                f0 = f0_start + (f0_end - f0_start) * i / n
                phase += 2 * math.pi * f0 / RATE
                envelope = math.sin(math.pi * i / n)
                x = 0.0
                for k in range(1, int(3400 / f0)):
                    gain = sum(1.0 / (1.0 + ((k * f0 - f) / 120.0) ** 2) for f in formants) / k**0.5
                    x += gain * math.sin(k * phase)
                signal.append(2500.0 * envelope * x)
            signal += [0.0] * rng.randrange(200, 800)
        self.assertEqual(detect(to_pcm(signal, noise_sigma=300.0, seed=3)), [])

    def test_odd_pcm_is_refused(self) -> None:
        self.assertRaises(ValueError, InbandDtmfDetector().feed, b"\x00")
