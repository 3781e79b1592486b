"""Tests for `pbx.media.endpoint.MediaEndpoint`: paced playback, barge-in, digits from every source with
de-duplication, collect, RTP receive statistics, RTCP, music on hold (recording: test_recorder.py)."""

from __future__ import annotations

import os
import random
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pbx.media import g711, tones
from pbx.media.dtmf import DtmfSender, TelephoneEvent
from pbx.media.endpoint import MediaEndpoint, MediaEngine
from pbx.media.interfaces import IMediaEndpoint, IMediaEngine
from pbx.media.rtp import RtcpPacket, RtcpReceiverReport, RtcpReportBlock, RtcpSenderReport
from tests.media.mediafakes import FakeTransport, Phone, make_prompt_dir

TE = 101


def results(d: object) -> list[object]:
    out: list[object] = []
    d.addBoth(out.append)  # type: ignore[attr-defined]
    return out


class EndpointTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.tmp))
        self.prompts = make_prompt_dir(os.path.join(self.tmp, "sounds"))
        self.clock = Clock()
        self.clock.advance(1_700_000_000.0)
        self.engine = MediaEngine(self.clock, self.prompts, rng=random.Random(5))
        self.transport = FakeTransport()
        self.endpoint = self.make()
        self.phone = Phone()

    def make(self, **kwargs: object) -> MediaEndpoint:
        return self.engine.create_endpoint(self.transport, **kwargs)  # type: ignore[arg-type]

    def run_for(self, seconds: float, step: float = 0.005) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(step)

    def send_digit_rfc4733(self, digit: str, endpoint: MediaEndpoint | None = None, repeat: int = 1) -> None:
        endpoint = endpoint or self.endpoint
        for marker, ts, payload in DtmfSender().packets(digit, self.phone.ts, 800):
            for _ in range(repeat):
                endpoint.rtp_received(
                    self.phone.packet(payload, TE, marker, ts=ts, advance=False), Phone.ADDR
                )
        self.phone.ts += 800


class PlaybackTests(EndpointTestCase):
    def test_interfaces(self) -> None:
        verifyObject(IMediaEndpoint, self.endpoint)
        verifyObject(IMediaEngine, self.engine)

    def test_plays_a_prompt_in_paced_packets(self) -> None:
        done = results(self.endpoint.play(["welcome"]))
        self.assertTrue(self.endpoint.playing)
        start = self.clock.seconds()
        times: list[float] = []
        step = 0.0  # the first packet is due now
        while not done:
            before = len(self.transport.rtp)
            self.clock.advance(step)
            step = 0.005
            if len(self.transport.rtp) > before:
                times.append(self.clock.seconds())
        self.assertEqual(done, [None])
        packets = self.transport.packets()
        self.assertEqual(len(packets), 25)  # 0.5 s
        expected = g711.ulaw_encode(tones.tone_pcm("dial", 0.5))
        self.assertEqual(b"".join(p.payload for p in packets), expected)
        self.assertEqual([round(t - start, 3) for t in times], [round(0.02 * n, 3) for n in range(25)])
        first = packets[0]
        self.assertTrue(first.marker)
        self.assertFalse(any(p.marker for p in packets[1:]))
        for n, p in enumerate(packets):
            self.assertEqual(p.payload_type, 0)
            self.assertEqual(p.ssrc, first.ssrc)
            self.assertEqual(p.sequence_number, (first.sequence_number + n) & 0xFFFF)
            self.assertEqual(p.timestamp, (first.timestamp + 160 * n) & 0xFFFFFFFF)
        self.assertFalse(self.endpoint.playing)
        self.assertEqual(len(self.engine.pacer), 0)
        stats = self.endpoint.stats()
        self.assertEqual((stats.packets_sent, stats.octets_sent, stats.late_sends), (25, 4000, 0))

    def test_no_drift_over_minutes_with_an_irregular_clock(self) -> None:
        """Five minutes of music on hold while the reactor wakes up 0.5-13 ms late, irregularly."""
        sent_at: list[float] = []
        self.endpoint.on_sent = lambda late: sent_at.append(self.clock.seconds())
        self.endpoint.music_on_hold()
        start = self.clock.seconds()
        rng = random.Random(2)
        while self.clock.seconds() - start < 300.0:
            self.clock.advance(rng.uniform(0.0005, 0.013))
        packets = self.transport.packets()
        self.assertEqual(len(packets), len(sent_at))
        self.assertGreaterEqual(len(packets), 15_000)
        first = packets[0]
        for n, (packet, at) in enumerate(zip(packets, sent_at, strict=True)):
            self.assertEqual(packet.timestamp, (first.timestamp + 160 * n) & 0xFFFFFFFF)
            due = start + 0.02 * n
            self.assertTrue(due - 2e-5 <= at < due + 0.0131, (n, at - due))  # float time at 1.7e9 s
        stats = self.endpoint.stats()
        self.assertEqual(stats.resyncs, 0)
        self.assertLess(stats.max_late_ms, 13.1)

    def test_list_of_items_and_pcma(self) -> None:
        endpoint = self.make(codec="PCMA")
        done = results(endpoint.play(["silence:100", "tone:beep", "digits:42", "dtmf:1"]))
        self.run_for(2.0)
        self.assertEqual(done, [None])
        packets = self.transport.packets()
        self.assertEqual({p.payload_type for p in packets}, {8})
        payload = b"".join(p.payload for p in packets)
        self.assertEqual(payload[:800], b"\xd5" * 800)
        self.assertEqual(payload[800:4800], g711.alaw_encode(tones.tone_pcm("beep")))
        # 0.1 s silence + 0.5 s beep + 2 x 0.1 s digits + 0.2 s DTMF
        self.assertEqual(len(packets), 5 + 25 + 10 + 10)

    def test_bad_items_fail_before_sending(self) -> None:
        for items in (["welcome", "nonexistent"], ["tone:nope"], ["silence:x"], ["dtmf:Z"], ["../etc"]):
            failures = results(self.endpoint.play(items))
            self.assertIsInstance(failures[0].value, ValueError, items)  # type: ignore[attr-defined]
        self.assertEqual(self.transport.rtp, [])

    def test_other_wav_formats_are_converted_or_refused(self) -> None:
        import wave

        path = os.path.join(self.tmp, "stereo16k.wav")
        with wave.open(path, "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(bytes(4 * 16000))
        done = results(self.endpoint.play([path]))
        self.run_for(1.1)
        self.assertEqual(done, [None])
        self.assertEqual(len(self.transport.rtp), 50)
        bad = os.path.join(self.tmp, "8bit.wav")
        with wave.open(bad, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(1)
            w.setframerate(8000)
            w.writeframes(bytes(800))
        failure = results(self.endpoint.play([bad]))[0]
        self.assertIn("8-bit", str(failure.value))  # type: ignore[attr-defined]

    def test_marker_and_timestamp_after_silence(self) -> None:
        results(self.endpoint.play(["silence:40"]))
        self.run_for(0.1)
        self.clock.advance(1.0)
        results(self.endpoint.play(["silence:40"]))
        self.run_for(0.1)
        p = self.transport.packets()
        self.assertEqual([x.marker for x in p], [True, False, True, False])
        gap = (p[2].timestamp - p[1].timestamp) & 0xFFFFFFFF
        self.assertLess(abs(gap / 8000 - 1.08), 0.006)  # the real time between the two packets
        self.assertEqual(p[2].sequence_number, (p[1].sequence_number + 1) & 0xFFFF)

    def test_continue_a_stream_the_phone_already_receives(self) -> None:
        self.assertIsNone(self.endpoint.last_sent)
        results(self.endpoint.play(["silence:100"]))
        self.run_for(0.2)
        last = self.endpoint.last_sent
        assert last is not None
        ssrc, seq, ts, at = last
        self.assertEqual(self.transport.packets()[-1].sequence_number, seq)
        self.endpoint.close()
        self.clock.advance(1.0)
        self.transport.rtp.clear()
        after = self.make(continue_from=last)
        results(after.play(["silence:40"]))
        self.run_for(0.1)
        first = self.transport.packets()[0]
        self.assertEqual((first.ssrc, first.sequence_number), (ssrc, (seq + 1) & 0xFFFF))
        elapsed = ((first.timestamp - ts) & 0xFFFFFFFF) / 8000
        self.assertLess(abs(elapsed - (self.clock.seconds() - 0.1 - at)), 0.021)

    def test_a_new_play_replaces_the_current_one(self) -> None:
        first = results(self.endpoint.play(["menu"]))
        self.run_for(0.1)
        second = results(self.endpoint.play(["silence:20"]))
        self.assertEqual(first, [None])
        self.run_for(0.1)
        self.assertEqual(second, [None])

    def test_stop_and_close(self) -> None:
        done = results(self.endpoint.play(["menu"]))
        self.run_for(0.1)
        self.endpoint.stop()
        self.assertEqual(done, [None])
        sent = len(self.transport.rtp)
        self.run_for(0.1)
        self.assertEqual(len(self.transport.rtp), sent)
        done = results(self.endpoint.play(["menu"]))
        self.endpoint.close()
        self.assertEqual(done, [None])
        self.assertEqual(self.engine.endpoints, 0)
        self.assertEqual(len(self.engine.pacer), 0)
        bye = RtcpPacket.parse_compound(self.transport.rtcp[-1])
        self.assertEqual(bye[-1].packet_type, 203)  # type: ignore[attr-defined]
        self.assertEqual(results(self.endpoint.play(["menu"])), [None])
        self.endpoint.close()

    def test_music_on_hold_loops_until_stopped(self) -> None:
        self.endpoint.music_on_hold()
        self.run_for(0.99)
        packets = self.transport.packets()
        self.assertEqual(len(packets), 50)
        moh = g711.ulaw_encode(tones.tone_pcm("ringback", 0.2))
        self.assertEqual(b"".join(p.payload for p in packets[:20]), moh * 2)
        self.endpoint.stop()
        self.run_for(0.2)
        self.assertEqual(len(self.transport.rtp), 50)

    def test_send_digits_rfc4733(self) -> None:
        done = results(self.endpoint.send_digits("12"))
        self.run_for(1.0)
        self.assertEqual(done, [None])
        packets = self.transport.packets()
        self.assertEqual({p.payload_type for p in packets}, {TE})
        events = [(p.timestamp, TelephoneEvent.parse(p.payload)) for p in packets]
        ends = {(ts, e.digit) for ts, e in events if e.end}
        self.assertEqual(sorted(d for _, d in ends), ["1", "2"])
        self.assertEqual(sum(p.marker for p in packets), 2)

    def test_send_digits_inband_without_telephone_event(self) -> None:
        endpoint = self.make(telephone_event=None)
        results(endpoint.send_digits("7"))
        self.run_for(0.5)
        self.assertEqual({p.payload_type for p in self.transport.packets()}, {0})
        self.assertEqual(len(self.transport.rtp), 10)


class DigitTests(EndpointTestCase):
    def test_barge_in_stops_the_prompt_and_the_digit_is_collected(self) -> None:
        done = results(self.endpoint.play(["menu"]))
        self.run_for(0.2)
        self.send_digit_rfc4733("1")
        self.assertEqual(done, ["1"])
        self.assertFalse(self.endpoint.playing)
        collected = results(self.endpoint.collect(4, timeout=2.0))
        self.send_digit_rfc4733("0")
        self.send_digit_rfc4733("0")
        self.assertEqual(collected, [])
        self.send_digit_rfc4733("#")
        self.assertEqual(collected, ["100"])

    def test_without_barge_in_digits_are_kept(self) -> None:
        done = results(self.endpoint.play(["welcome"], barge_in=False))
        self.send_digit_rfc4733("4")
        self.run_for(0.6)
        self.assertEqual(done, [None])
        self.assertEqual(len(self.transport.rtp), 25)
        self.assertEqual(results(self.endpoint.collect(1)), ["4"])

    def test_clear_digits(self) -> None:
        self.endpoint.inject_digit("4")
        self.endpoint.clear_digits()
        got = results(self.endpoint.collect(1, timeout=1.0))
        self.clock.advance(1.0)
        self.assertEqual(got, [""])

    def test_collect_timeouts(self) -> None:
        got = results(self.endpoint.collect(4, timeout=2.0, first_timeout=5.0))
        self.clock.advance(4.9)
        self.assertEqual(got, [])
        self.endpoint.inject_digit("1")
        self.clock.advance(1.9)
        self.endpoint.inject_digit("2", "inband")
        self.clock.advance(1.9)
        self.assertEqual(got, [])
        self.clock.advance(0.2)
        self.assertEqual(got, ["12"])
        got = results(self.endpoint.collect(2, timeout=2.0))
        self.clock.advance(2.0)
        self.assertEqual(got, [""])
        got = results(self.endpoint.collect(2))
        self.endpoint.inject_digit("3")
        self.clock.advance(1.1)
        self.endpoint.inject_digit("4")
        self.assertEqual(got, ["34"])
        self.assertEqual(self.clock.getDelayedCalls().__len__(), 1)  # only the RTCP timer

    def test_a_new_collect_ends_the_previous_one(self) -> None:
        first = results(self.endpoint.collect(3))
        self.endpoint.inject_digit("9")
        second = results(self.endpoint.collect(3))
        self.assertEqual(first, ["9"])
        self.endpoint.close()
        self.assertEqual(second, [""])

    def test_on_digit_subscribers(self) -> None:
        seen: list[tuple[str, str]] = []
        unsubscribe = self.endpoint.on_digit(lambda d, s: seen.append((d, s)))
        self.endpoint.on_digit(lambda d, s: 1 / 0)
        self.send_digit_rfc4733("5")
        self.clock.advance(2.0)
        self.endpoint.inject_digit("*")
        unsubscribe()
        self.clock.advance(2.0)
        self.endpoint.inject_digit("6")
        self.assertEqual(seen, [("5", "rfc4733"), ("*", "info")])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 3)

    def test_rfc4733_redundancy_gives_one_digit(self) -> None:
        seen: list[str] = []
        self.endpoint.on_digit(lambda d, s: seen.append(d))
        self.send_digit_rfc4733("7", repeat=1)
        # the same event again (retransmitted ends with new sequence numbers) and a duplicate packet
        phone = self.phone
        end = TelephoneEvent(7, end=True, duration=800).to_bytes()
        for _ in range(3):
            self.endpoint.rtp_received(phone.packet(end, TE, ts=phone.ts - 800, advance=False), Phone.ADDR)
        self.assertEqual(seen, ["7"])
        self.clock.advance(1.0)
        self.assertEqual(seen, ["7"])

    def test_rfc4733_lost_end_is_reported_after_a_quiet_period(self) -> None:
        seen: list[str] = []
        self.endpoint.on_digit(lambda d, s: seen.append(d))
        start = TelephoneEvent(3, end=False, duration=160).to_bytes()
        self.endpoint.rtp_received(self.phone.packet(start, TE, True, advance=False), Phone.ADDR)
        self.clock.advance(0.2)
        self.assertEqual(seen, [])
        self.clock.advance(0.2)
        self.assertEqual(seen, ["3"])

    def test_info_and_rfc4733_for_the_same_press_count_once(self) -> None:
        seen: list[tuple[str, str]] = []
        self.endpoint.on_digit(lambda d, s: seen.append((d, s)))
        self.assertTrue(self.endpoint.inject_digit("5", "info"))
        self.clock.advance(0.1)
        self.send_digit_rfc4733("5")
        self.clock.advance(1.5)
        # a second press: RFC 4733 first this time, then INFO
        self.send_digit_rfc4733("5")
        self.clock.advance(0.05)
        self.assertFalse(self.endpoint.inject_digit("5", "info"))
        # a quick double press from one source is two presses
        self.clock.advance(2.0)
        self.assertTrue(self.endpoint.inject_digit("8", "info"))
        self.assertTrue(self.endpoint.inject_digit("8", "info"))
        self.assertEqual(seen, [("5", "info"), ("5", "rfc4733"), ("8", "info"), ("8", "info")])
        self.assertEqual(self.endpoint.duplicate_digits, 2)
        self.assertEqual(self.endpoint.stats().digits, {"rfc4733": 1, "info": 3, "inband": 0})

    def test_inject_digit_validates(self) -> None:
        self.assertRaises(ValueError, self.endpoint.inject_digit, "x")
        self.assertRaises(ValueError, self.endpoint.inject_digit, "1", "carrier-pigeon")
        self.assertTrue(self.endpoint.inject_digit("a"))
        self.assertEqual(results(self.endpoint.collect(1)), ["A"])

    def test_inband_detection_without_telephone_event(self) -> None:
        endpoint = self.make(telephone_event=None)
        seen: list[tuple[str, str]] = []
        endpoint.on_digit(lambda d, s: seen.append((d, s)))
        rng = random.Random(3)
        pcm = bytearray(tones.silence_pcm(200) + tones.dtmf_pcm("159#*0", 80, 80))
        for i in range(0, len(pcm), 2):  # white noise at about -40 dBFS
            sample = int.from_bytes(pcm[i : i + 2], "little", signed=True) + round(rng.gauss(0, 300))
            pcm[i : i + 2] = max(-32768, min(32767, sample)).to_bytes(2, "little", signed=True)
        encoded = g711.ulaw_encode(bytes(pcm))
        for offset in range(0, len(encoded), 160):
            endpoint.rtp_received(self.phone.packet(encoded[offset : offset + 160]), Phone.ADDR)
            self.clock.advance(0.02)
        self.assertEqual(seen, [(d, "inband") for d in "159#*0"])

    def test_no_inband_detection_when_telephone_event_is_negotiated(self) -> None:
        encoded = g711.ulaw_encode(tones.dtmf_pcm("1"))
        for offset in range(0, len(encoded), 160):
            self.endpoint.rtp_received(self.phone.packet(encoded[offset : offset + 160]), Phone.ADDR)
        self.assertEqual(self.endpoint.stats().digits["inband"], 0)


class ReceiveTests(EndpointTestCase):
    def feed(self, packets: list[bytes]) -> None:
        for p in packets:
            self.endpoint.rtp_received(p, Phone.ADDR)
            self.clock.advance(0.02)

    def test_loss_reorder_duplicates_and_wrap(self) -> None:
        audio = b"\xff" * 160
        packets = [self.phone.packet(audio) for _ in range(20)]  # sequence wraps at 65535
        stream = [*packets[:5], packets[6], packets[5], *packets[7:10], *packets[11:], packets[12]]
        self.feed(stream)
        stats = self.endpoint.stats()
        self.assertEqual(stats.remote_ssrc, 0x1234)
        self.assertEqual(stats.packets_received, 19)
        self.assertEqual(stats.expected, 20)
        self.assertEqual(stats.lost, 1)
        self.assertEqual(stats.duplicates, 1)
        self.assertEqual(stats.reordered, 1)
        self.assertLess(stats.jitter_ms, 5.0)

    def test_ssrc_change_is_followed(self) -> None:
        self.feed([self.phone.packet(b"\xff" * 160) for _ in range(5)])
        other = Phone(ssrc=0x9999, seq=100, ts=5)
        self.feed([other.packet(b"\xff" * 160)])
        self.assertEqual(self.endpoint.stats().remote_ssrc, 0x1234)  # one stray packet does not switch
        self.feed([self.phone.packet(b"\xff" * 160)])
        self.feed([other.packet(b"\xff" * 160) for _ in range(4)])
        stats = self.endpoint.stats()
        self.assertEqual((stats.remote_ssrc, stats.ssrc_changes), (0x9999, 1))
        self.assertEqual(stats.lost, 0)

    def test_garbage_is_counted_never_raised(self) -> None:
        for junk in (b"", b"\x00" * 12, b"\x80" * 5, b"\xbf" + b"\x00" * 11, self.phone.packet(b"", pt=96)):
            self.endpoint.rtp_received(junk, Phone.ADDR)
        self.endpoint.rtcp_received(b"\x80\xc8\x00\x10", Phone.ADDR)
        stats = self.endpoint.stats()
        self.assertEqual(stats.invalid, 5)
        self.assertEqual(stats.rtcp_invalid, 1)

    def test_silent_peer(self) -> None:
        got = results(self.endpoint.collect(1, timeout=3.0))
        self.run_for(4.0, step=0.5)
        self.assertEqual(got, [""])
        self.assertEqual(self.endpoint.stats().packets_received, 0)

    def test_rtcp_reports_are_sent_and_parsed(self) -> None:
        self.endpoint.music_on_hold()
        for _ in range(400):  # 8 s of sending and receiving
            self.endpoint.rtp_received(self.phone.packet(b"\xff" * 160), Phone.ADDR)
            self.clock.advance(0.02)
        self.assertGreaterEqual(len(self.transport.rtcp), 1)
        report = RtcpPacket.parse_compound(self.transport.rtcp[0])
        sr = report[0]
        self.assertIsInstance(sr, RtcpSenderReport)
        assert isinstance(sr, RtcpSenderReport)
        self.assertEqual(sr.ssrc, self.endpoint.stats().ssrc)
        self.assertGreater(sr.packet_count, 100)
        self.assertEqual(sr.reports[0].ssrc, 0x1234)
        self.assertEqual(report[1].packet_type, 202)  # type: ignore[attr-defined]
        # the phone reports about us
        our = self.endpoint.stats().ssrc
        rr = RtcpReceiverReport(0x1234, (RtcpReportBlock(our, fraction_lost=12, jitter=40),))
        self.endpoint.rtcp_received(rr.to_bytes(), Phone.ADDR)
        stats = self.endpoint.stats()
        self.assertEqual((stats.rtcp_received, stats.remote_fraction_lost, stats.remote_jitter), (1, 12, 40))
        self.endpoint.stop()
        for _ in range(4):
            self.clock.advance(8.0)  # reports come every 2.5-7.5 s
        kinds = [type(RtcpPacket.parse_compound(r)[0]).__name__ for r in self.transport.rtcp]
        self.assertEqual(kinds[-1], "RtcpReceiverReport")  # nothing sent since the last report
