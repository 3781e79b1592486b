"""Tests for `pbx.media.wav`: read/write 8 kHz mono WAV, atomic replace, downmix, resample, clear errors."""

from __future__ import annotations

import os
import struct
import wave
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.wav import downmix_to_mono, load_prompt, read_pcm, resample_linear, write_pcm_atomic


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def samples_of(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 2}h", data))


class WavTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def write_wav(self, name: str, frames: bytes, rate: int, channels: int, width: int) -> str:
        path = self.path(name)
        with wave.open(path, "wb") as writer:
            writer.setnchannels(channels)
            writer.setsampwidth(width)
            writer.setframerate(rate)
            writer.writeframes(frames)
        return path

    def test_write_then_read(self) -> None:
        data = pcm(0, 1, -1, 32767, -32768)
        write_pcm_atomic(self.path("msg.wav"), data)
        self.assertEqual(read_pcm(self.path("msg.wav")), (8000, 1, 2, data))
        self.assertEqual(load_prompt(self.path("msg.wav")), data)
        self.assertEqual(os.listdir(self.dir), ["msg.wav"])  # no temp file left behind

    def test_replace_is_atomic_and_failure_keeps_the_old_file(self) -> None:
        target = self.path("greeting.wav")
        write_pcm_atomic(target, pcm(1, 2, 3))
        with mock.patch("pbx.media.wav.os.replace", side_effect=OSError("disk on fire")):
            self.assertRaises(OSError, write_pcm_atomic, target, pcm(4, 5, 6))
        self.assertEqual(read_pcm(target)[3], pcm(1, 2, 3))
        self.assertEqual(os.listdir(self.dir), ["greeting.wav"])
        write_pcm_atomic(target, pcm(7))
        self.assertEqual(read_pcm(target)[3], pcm(7))

    def test_write_refuses_odd_pcm(self) -> None:
        with self.assertRaises(ValueError) as caught:
            write_pcm_atomic(self.path("x.wav"), b"\x00")
        self.assertIn("x.wav", str(caught.exception))
        self.assertEqual(os.listdir(self.dir), [])

    def test_stereo_16_khz_prompt_is_converted(self) -> None:
        frames = pcm(*[v for i in range(1600) for v in (100 * (i % 50), -100 * (i % 50))])
        path = self.write_wav("stereo16k.wav", frames, 16000, 2, 2)
        self.assertEqual(read_pcm(path)[:3], (16000, 2, 2))
        prompt = load_prompt(path)
        self.assertEqual(len(prompt), 2 * 800)
        self.assertEqual(set(samples_of(prompt)), {0})

    def test_44_1_khz_prompt_is_converted(self) -> None:
        path = self.write_wav("cd.wav", pcm(*[1000] * 44100), 44100, 1, 2)
        self.assertEqual(samples_of(load_prompt(path)), [1000] * 8000)

    def test_8_and_24_bit_are_refused_naming_file_and_format(self) -> None:
        for width in (1, 3):
            path = self.write_wav(f"w{width}.wav", bytes(width * 10), 8000, 1, width)
            with self.assertRaises(ValueError) as caught:
                load_prompt(path)
            self.assertIn(f"w{width}.wav: {8 * width}-bit PCM (8000 Hz, 1 channel(s))", str(caught.exception))

    def test_compressed_and_garbage_are_refused(self) -> None:
        # A minimal RIFF/WAVE with format tag 7 (G.711 µ-law): `wave` only reads PCM.
        fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
        ulaw = (
            b"RIFF" + struct.pack("<I", 4 + 8 + 16 + 8 + 4) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
        )
        ulaw += b"data" + struct.pack("<I", 4) + b"\xff" * 4
        for name, content in (("ulaw.wav", ulaw), ("text.wav", b"hello"), ("empty.wav", b"")):
            with open(self.path(name), "wb") as file:
                file.write(content)
            with self.assertRaises(ValueError) as caught:
                load_prompt(self.path(name))
            self.assertIn(f"{name}: not a readable PCM WAV file", str(caught.exception))


class ConversionTests(SynchronousTestCase):
    def test_downmix(self) -> None:
        self.assertEqual(samples_of(downmix_to_mono(pcm(100, 300, -4, 4, 32767, 32767), 2)), [200, 0, 32767])
        self.assertEqual(downmix_to_mono(pcm(1, 2), 1), pcm(1, 2))
        self.assertRaises(ValueError, downmix_to_mono, pcm(1, 2, 3), 2)
        self.assertRaises(ValueError, downmix_to_mono, pcm(1), 0)

    def test_resample_interpolates(self) -> None:
        self.assertEqual(
            samples_of(resample_linear(pcm(0, 100, 200, 300), 8000, 16000)),
            [0, 50, 100, 150, 200, 250, 300, 300],
        )
        self.assertEqual(samples_of(resample_linear(pcm(0, 100, 200, 300), 16000)), [0, 200])
        self.assertEqual(resample_linear(b"", 44100), b"")
        self.assertRaises(ValueError, resample_linear, pcm(1), 0)

    @given(
        st.lists(st.integers(-32768, 32767), max_size=200),
        st.sampled_from([11025, 16000, 22050, 44100, 48000]),
    )
    def test_property_resample_length_and_range(self, values: list[int], rate: int) -> None:
        out = samples_of(resample_linear(pcm(*values), rate))
        self.assertEqual(len(out), len(values) * 8000 // rate)
        if values:
            self.assertTrue(all(min(values) <= v <= max(values) for v in out))
