"""Tests for `pbx.media.tones`: frequencies, cadences, lengths, DTMF tones a detector accepts."""

from __future__ import annotations

from array import array

from twisted.trial.unittest import SynchronousTestCase

from pbx.media import tones
from pbx.media.dtmf import InbandDtmfDetector, goertzel_power


def samples(pcm: bytes) -> array[int]:
    return array("h", pcm)


class ToneTests(SynchronousTestCase):
    def test_lengths(self) -> None:
        self.assertEqual(len(tones.tone_pcm("beep")), 2 * 4000)
        self.assertEqual(len(tones.tone_pcm("ringback", 10.0)), 2 * 80000)
        self.assertEqual(len(tones.silence_pcm(500)), 8000)
        self.assertEqual(len(tones.dtmf_pcm("12", 100, 50)), 2 * (2 * 800 + 2 * 400))

    def test_frequencies(self) -> None:
        for name, freqs in (("dial", (350, 440)), ("busy", (480, 620)), ("beep", (1000,))):
            window = samples(tones.tone_pcm(name))[:400]
            strong = min(goertzel_power(window, f) for f in freqs)
            weak = goertzel_power(window, 1800.0)
            self.assertGreater(strong, 100 * weak, name)

    def test_cadence(self) -> None:
        ring = samples(tones.tone_pcm("ringback", 6.0))
        self.assertTrue(any(ring[: 2 * 8000]))
        self.assertFalse(any(ring[2 * 8000 + 1 : 6 * 8000]))
        busy = samples(tones.tone_pcm("busy", 2.0))
        self.assertFalse(any(busy[4001:8000]))
        self.assertTrue(any(busy[8000:12000]))

    def test_no_clipping(self) -> None:
        for name in tones.TONES:
            self.assertLess(max(map(abs, samples(tones.tone_pcm(name, 1.0)))), 32767)

    def test_dtmf_tones_are_detected(self) -> None:
        keys = "0123456789*#ABCD"
        self.assertEqual(InbandDtmfDetector().feed(tones.dtmf_pcm(keys)), list(keys))

    def test_errors(self) -> None:
        self.assertRaises(ValueError, tones.tone_pcm, "siren")
        self.assertRaises(ValueError, tones.tone_pcm, "busy", 0.0)
        self.assertRaises(ValueError, tones.tone_pcm, "busy", 601.0)
        self.assertRaises(ValueError, tones.dtmf_pcm, "E")
        self.assertRaises(ValueError, tones.silence_pcm, -1)
