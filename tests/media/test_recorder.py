"""Tests for recording through `MediaEndpoint.record` (`pbx.media.recorder`): silence timeout, max length,
stop digit, no audio, loss and reordering keep real time, atomic write."""

from __future__ import annotations

import os

from pbx.media import g711, tones
from pbx.media.interfaces import RecordingResult
from pbx.media.recorder import frame_energy
from pbx.media.wav import read_pcm
from tests.media.mediafakes import Phone
from tests.media.test_endpoint import EndpointTestCase, results

TONE = g711.ulaw_encode(tones.tone_pcm("dial", 1.0))
SILENCE = b"\xff" * 160


class RecorderTests(EndpointTestCase):
    def talk(self, encoded: bytes, skip: set[int] | None = None, swap: int | None = None) -> None:
        """Send `encoded` in 20 ms packets in real time (dropping packet indices in `skip`)."""
        frames = [encoded[i : i + 160] for i in range(0, len(encoded), 160)]
        packets = [self.phone.packet(f) for f in frames]
        if swap is not None:
            packets[swap], packets[swap + 1] = packets[swap + 1], packets[swap]
        for n, packet in enumerate(packets):
            if skip is None or n not in skip:
                self.endpoint.rtp_received(packet, Phone.ADDR)
            self.clock.advance(0.02)

    def result(self, d: object) -> RecordingResult:
        out = results(d)
        self.assertEqual(len(out), 1, out)
        assert isinstance(out[0], RecordingResult), out
        return out[0]

    def test_silence_ends_the_recording_and_is_trimmed(self) -> None:
        path = os.path.join(self.tmp, "msg.wav")
        d = self.endpoint.record(path, max_seconds=30, silence_seconds=2.0)
        self.talk(TONE)
        self.talk(SILENCE * 150)  # 3 s of silence
        result = self.result(d)
        self.assertEqual((result.reason, result.path, result.heard_audio), ("silence", path, True))
        self.assertAlmostEqual(result.duration, 1.0, places=2)
        rate, channels, width, pcm = read_pcm(path)
        self.assertEqual((rate, channels, width), (8000, 1, 2))
        self.assertEqual(pcm, g711.ulaw_decode(TONE))
        self.assertEqual([n for n in os.listdir(self.tmp) if n.startswith(".tmp")], [])

    def test_max_length(self) -> None:
        path = os.path.join(self.tmp, "max.wav")
        d = self.endpoint.record(path, max_seconds=0.5, silence_seconds=0)
        self.talk(TONE)
        result = self.result(d)
        self.assertEqual(result.reason, "max_length")
        self.assertAlmostEqual(result.duration, 0.5, places=2)

    def test_stop_digit_rfc4733_is_not_buffered(self) -> None:
        path = os.path.join(self.tmp, "digit.wav")
        d = self.endpoint.record(path, stop_digits="#*")
        self.talk(TONE[:4000])
        self.send_digit_rfc4733("*")
        result = self.result(d)
        self.assertEqual((result.reason, result.digit), ("digit", "*"))
        self.assertAlmostEqual(result.duration, 0.5, places=2)
        got = results(self.endpoint.collect(1, timeout=1.0))
        self.clock.advance(1.0)
        self.assertEqual(got, [""])

    def test_other_digits_do_not_stop_it(self) -> None:
        d = self.endpoint.record(os.path.join(self.tmp, "x.wav"), silence_seconds=0, max_seconds=2)
        self.talk(TONE[:1600])
        self.endpoint.inject_digit("5")
        self.assertNoResult(d)
        self.endpoint.stop()
        self.assertEqual(self.result(d).reason, "stopped")

    def test_no_audio_writes_nothing(self) -> None:
        path = os.path.join(self.tmp, "none.wav")
        d = self.endpoint.record(path, silence_seconds=3.0)
        self.talk(SILENCE * 100)
        self.clock.advance(2.0)
        result = self.result(d)
        self.assertEqual((result.reason, result.path, result.heard_audio), ("no_audio", None, False))
        self.assertFalse(os.path.exists(path))

    def test_silent_peer_ends_by_silence_timeout(self) -> None:
        d = self.endpoint.record(os.path.join(self.tmp, "none.wav"), silence_seconds=3.0)
        self.clock.advance(3.0)
        self.assertEqual(self.result(d).reason, "no_audio")

    def test_loss_and_reordering_keep_real_time(self) -> None:
        path = os.path.join(self.tmp, "lossy.wav")
        d = self.endpoint.record(path, silence_seconds=0)
        self.talk(TONE, skip={10, 11}, swap=20)
        self.endpoint.close()
        result = self.result(d)
        self.assertEqual(result.reason, "closed")
        pcm = read_pcm(path)[3]
        expected = bytearray(g711.ulaw_decode(TONE))
        expected[10 * 320 : 12 * 320] = bytes(640)
        self.assertEqual(pcm, bytes(expected))

    def test_a_backlog_after_a_stall_keeps_its_place(self) -> None:
        """The reactor (or the sender) stalls for 2.5 s, then the packets of that time arrive at once: they
        are placed by their timestamps, so the file is the whole tone with no gap and no overwrite."""
        path = os.path.join(self.tmp, "stall.wav")
        d = self.endpoint.record(path, silence_seconds=0, max_seconds=30)
        tone = TONE * 5  # 5 s
        frames = [tone[i : i + 160] for i in range(0, len(tone), 160)]
        for frame in frames[:50]:  # 1 s in real time
            self.endpoint.rtp_received(self.phone.packet(frame), Phone.ADDR)
            self.clock.advance(0.02)
        self.clock.advance(2.5)  # nothing is read meanwhile
        for frame in frames[50:175]:  # the backlog of those 2.5 s, at once
            self.endpoint.rtp_received(self.phone.packet(frame), Phone.ADDR)
        for frame in frames[175:]:  # on time again
            self.endpoint.rtp_received(self.phone.packet(frame), Phone.ADDR)
            self.clock.advance(0.02)
        self.endpoint.stop()
        self.assertEqual(self.result(d).reason, "stopped")
        self.assertEqual(read_pcm(path)[3], g711.ulaw_decode(tone))

    def test_a_timestamp_jump_is_re_anchored_at_the_clock(self) -> None:
        """A peer that restarts its timestamps (far ahead or far behind) goes on at the clock's position."""
        for jump in (0x40000000, -30 * 8000):
            path = os.path.join(self.tmp, f"jump{jump}.wav")
            d = self.endpoint.record(path, silence_seconds=0, max_seconds=30)
            self.talk(TONE)  # 1 s
            self.phone.ts = (self.phone.ts + jump) & 0xFFFFFFFF
            self.talk(TONE)  # 1 s more, right after
            self.endpoint.stop()
            self.assertEqual(self.result(d).reason, "stopped")
            pcm = read_pcm(path)[3]
            self.assertLessEqual(abs(len(pcm) - 2 * 16000), 4)  # the clock's 20 ms steps are floats
            self.assertNotIn(bytes(64), pcm)  # no gap

    def test_a_new_recording_stops_the_previous_one(self) -> None:
        first = self.endpoint.record(os.path.join(self.tmp, "a.wav"))
        self.talk(TONE[:1600])
        second = self.endpoint.record(os.path.join(self.tmp, "b.wav"))
        self.assertEqual(self.result(first).reason, "stopped")
        self.talk(TONE[:1600])
        self.endpoint.close()
        self.assertEqual(self.result(second).reason, "closed")

    def test_bad_directory_fails(self) -> None:
        failure = results(self.endpoint.record("/nonexistent/dir/x.wav"))[0]
        self.assertIsInstance(failure.value, ValueError)  # type: ignore[attr-defined]

    def test_write_error_fails_the_deferred(self) -> None:
        def broken(path: str, pcm: bytes) -> None:
            raise OSError(28, "No space left on device")

        endpoint = self.engine.create_endpoint(self.transport)
        endpoint._writer = broken  # type: ignore[attr-defined]
        d = endpoint.record(os.path.join(self.tmp, "full.wav"), silence_seconds=0)
        encoded = TONE[:1600]
        for i in range(0, len(encoded), 160):
            endpoint.rtp_received(self.phone.packet(encoded[i : i + 160]), Phone.ADDR)
        endpoint.stop()
        failure = results(d)[0]
        self.assertIsInstance(failure.value, OSError)  # type: ignore[attr-defined]

    def test_frame_energy(self) -> None:
        self.assertEqual(frame_energy(SILENCE, "PCMU"), 0.0)
        self.assertEqual(frame_energy(b"\xd5" * 160, "PCMA"), 64.0)
        self.assertGreater(frame_energy(TONE[:160], "PCMU"), 500.0**2)
