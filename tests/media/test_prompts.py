"""The shipped prompts (sounds/en): all there, 8 kHz mono 16-bit, not silent, small, and no false DTMF."""

from __future__ import annotations

import math
import os
from array import array

from twisted.trial.unittest import SynchronousTestCase

from pbx.media.dtmf import InbandDtmfDetector
from pbx.media.player import CODECS, PromptLibrary
from pbx.media.wav import read_pcm

SOUNDS = os.path.join(os.path.dirname(__file__), "..", "..", "sounds", "en")
REQUIRED = [
    "welcome",
    "menu",
    "invalid",
    "goodbye",
    "please-hold",
    "transfer",
    "you-have",
    "new-message",
    "new-messages",
    "no-new-messages",
    "vm-enter-pin",
    "vm-wrong-pin",
    "vm-leave-message",
    "vm-message-saved",
    "vm-main-menu",
    "vm-person-at-extension",
    "vm-is-unavailable",
    "vm-is-busy",
    "vm-mailbox-full",
    "vm-sorry-unavailable",
    "beep",
    "moh",
    *(f"digit-{d}" for d in range(10)),
]


class ShippedPromptTests(SynchronousTestCase):
    def test_every_prompt_is_8khz_mono_16bit_and_audible(self) -> None:
        for name in REQUIRED:
            rate, channels, width, pcm = read_pcm(os.path.join(SOUNDS, name + ".wav"))
            self.assertEqual((rate, channels, width), (8000, 1, 2), name)
            samples = array("h", pcm)
            self.assertGreater(len(samples), 8000 * 0.3, name)
            rms = math.sqrt(sum(x * x for x in samples) / len(samples))
            self.assertGreater(rms, 1000, name)  # speech or music, not silence
        self.assertGreater(len(read_pcm(os.path.join(SOUNDS, "moh.wav"))[3]), 2 * 8000 * 10)

    def test_total_size_is_modest(self) -> None:
        total = sum(os.path.getsize(os.path.join(SOUNDS, n)) for n in os.listdir(SOUNDS))
        self.assertLess(total, 3_500_000)  # with the voicemail menus, numbers, days and months

    def test_preload_encodes_everything(self) -> None:
        library = PromptLibrary(SOUNDS)
        self.assertGreaterEqual(library.preload(), len(REQUIRED))
        self.assertIs(library.encoded("menu", CODECS["PCMU"]), library.encoded("menu", CODECS["PCMU"]))

    def test_speech_prompts_do_not_look_like_dtmf(self) -> None:
        for name in ("menu", "vm-main-menu", "welcome", "invalid", "vm-leave-message"):
            pcm = read_pcm(os.path.join(SOUNDS, name + ".wav"))[3]
            self.assertEqual(InbandDtmfDetector().feed(pcm), [], name)
