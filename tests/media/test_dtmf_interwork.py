"""Tests for `pbx.media.dtmf_interwork`: INFO bodies, RFC 4733 events generated into a relayed stream, events
and in-band tones converted, transcoding through a leg's transform, de-duplication, timers."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.dtmf import InbandDtmfDetector, TelephoneEvent, parse_dtmf_info
from pbx.media.dtmf_interwork import Interworking, LegFormats, build_dtmf_info, info_duration
from pbx.media.g711 import alaw_decode, ulaw_decode, ulaw_encode
from pbx.media.relay_memory import MemoryMediaRelay, MemoryRelayLeg
from pbx.media.rtp import RtpPacket
from pbx.media.tones import dtmf_pcm, silence_pcm
from pbx.media.transcode import ULAW_TO_ALAW

PCMU = ((0, "pcmu"),)
PCMA = ((8, "pcma"),)
SSRC = 0xCAFE


class InfoBodyTests(SynchronousTestCase):
    def test_build_and_parse(self) -> None:
        content_type, body = build_dtmf_info("5", 160)
        self.assertEqual(content_type, "application/dtmf-relay")
        self.assertEqual(body, b"Signal=5\r\nDuration=160\r\n")
        self.assertEqual(parse_dtmf_info(content_type, body), "5")
        self.assertEqual(info_duration(body), 160)
        self.assertEqual(build_dtmf_info("*")[1], b"Signal=*\r\nDuration=100\r\n")
        self.assertEqual(build_dtmf_info("a")[1][:8], b"Signal=A")

    def test_durations_as_phones_write_them(self) -> None:
        self.assertEqual(info_duration(b"Signal= 1\nDuration= 250\n"), 250)
        self.assertEqual(info_duration("signal=1\r\nduration=90"), 90)
        self.assertIsNone(info_duration(b"Signal=1\r\n"))
        self.assertIsNone(info_duration(b"Signal=1\r\nDuration=-5\r\n"))
        self.assertIsNone(info_duration(b"Duration=99999999999\r\n"))
        self.assertIsNone(info_duration(b"\xff\xfe"))

    def test_not_a_digit(self) -> None:
        for bad in ("", "55", "x", "\n"):
            self.assertRaises(ValueError, build_dtmf_info, bad)


class Call:
    """A relay session of a memory relay on a Clock with both phones' addresses known."""

    def __init__(self, a: LegFormats, b: LegFormats) -> None:
        self.clock = Clock()
        self.session = MemoryMediaRelay(clock=self.clock).create_session("call")
        self.a: MemoryRelayLeg = self.session.leg("a")
        self.b: MemoryRelayLeg = self.session.leg("b")
        self.a.set_remote("192.0.2.1", 4000)
        self.b.set_remote("192.0.2.2", 5000)
        self.infos: list[tuple[str, str, int]] = []
        self.interworking = Interworking(self.session, self.clock, lambda *args: self.infos.append(args))
        self.interworking.configure(a, b)
        self.seq = 100
        self.ts = 8000

    def send(self, leg: MemoryRelayLeg, payload: bytes, pt: int = 0, marker: bool = False) -> bytes | None:
        """The phone of `leg` sends one 20 ms packet; what the relay passes on (None: withheld)."""
        self.seq += 1
        self.ts += 160
        packet = RtpPacket(pt, self.seq, self.ts, SSRC, payload, marker=marker).to_bytes()
        return leg.relay_rtp(packet)

    def event(self, leg: MemoryRelayLeg, digit_event: int, duration: int, end: bool, start: int) -> None:
        self.seq += 1
        payload = TelephoneEvent(digit_event, end=end, duration=duration).to_bytes()
        out = leg.relay_rtp(RtpPacket(101, self.seq, start, SSRC, payload).to_bytes())
        assert out is None  # events are converted, not relayed

    def run(self, seconds: float = 2.0) -> None:
        self.clock.pump([0.02] * int(seconds / 0.02))


def parsed(packets: list[bytes]) -> list[RtpPacket]:
    return [RtpPacket.parse(p) for p in packets]


class InfoToEventsTests(SynchronousTestCase):
    def test_an_info_digit_becomes_rfc4733_events_continuing_the_stream(self) -> None:
        call = Call(LegFormats(PCMU), LegFormats(PCMU, 101))
        relayed = call.send(call.a, b"\xff" * 160)
        assert relayed is not None
        last = RtpPacket.parse(relayed)
        self.assertTrue(call.interworking.info_received("a", "5", 160))
        self.assertIsNone(call.send(call.a, b"\xff" * 160))  # its audio waits while the PBX speaks
        call.run()
        events = parsed(call.b.sent_rtp)
        self.assertEqual(len(events), 7 + 3)  # an update every 20 ms of 160 ms, then three end packets
        self.assertTrue(events[0].marker)
        self.assertFalse(any(e.marker for e in events[1:]))
        self.assertEqual({e.payload_type for e in events}, {101})
        self.assertEqual({e.ssrc for e in events}, {SSRC})
        self.assertEqual(
            [e.sequence_number for e in events],
            list(range(last.sequence_number + 1, last.sequence_number + 11)),
        )
        self.assertEqual({e.timestamp for e in events}, {events[0].timestamp})
        self.assertGreaterEqual(events[0].timestamp, last.timestamp)
        payloads = [TelephoneEvent.parse(e.payload) for e in events]
        self.assertEqual({p.event for p in payloads}, {5})
        self.assertEqual([p.duration for p in payloads[:7]], [160 * i for i in range(1, 8)])
        self.assertEqual([(p.end, p.duration) for p in payloads[7:]], [(True, 1280)] * 3)
        # The phone's audio follows on with the next sequence number.
        after = call.send(call.a, b"\xff" * 160)
        assert after is not None
        self.assertEqual(RtpPacket.parse(after).sequence_number, events[-1].sequence_number + 1)
        self.assertEqual(call.clock.getDelayedCalls(), [])

    def test_digits_queue_and_the_events_of_each_have_their_own_timestamp(self) -> None:
        call = Call(LegFormats(PCMU), LegFormats(PCMU, 101))
        for digit in "12#":
            self.assertTrue(call.interworking.info_received("a", digit, None))
        call.run(3)
        events = parsed(call.b.sent_rtp)
        starts = sorted({e.timestamp for e in events})
        self.assertEqual(len(starts), 3)
        self.assertEqual([TelephoneEvent.parse(e.payload).event for e in events if e.marker], [1, 2, 11])
        seqs = [e.sequence_number for e in events]
        self.assertEqual(seqs, [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))])
        self.assertEqual(call.clock.getDelayedCalls(), [])

    def test_info_is_passed_on_between_phones_that_both_take_it_or_both_have_events(self) -> None:
        call = Call(LegFormats(PCMU, None, True), LegFormats(PCMU, None, True))
        self.assertFalse(call.interworking.info_received("a", "1", 100))
        call = Call(LegFormats(PCMU, 101), LegFormats(PCMU, 101))
        self.assertFalse(call.interworking.info_received("a", "1", 100))
        self.assertEqual(call.b.sent_rtp, [])

    def test_info_to_a_phone_with_neither_becomes_in_band_tones_in_its_codec(self) -> None:
        call = Call(LegFormats(PCMU, 101), LegFormats(PCMA))
        self.assertTrue(call.interworking.info_received("a", "9", 100))
        call.run()
        audio = parsed(call.b.sent_rtp)
        self.assertEqual({p.payload_type for p in audio}, {8})
        detector = InbandDtmfDetector()
        digits = [d for p in audio for d in detector.feed(alaw_decode(p.payload))]
        self.assertEqual(digits, ["9"])
        stamps = [p.timestamp for p in audio]
        self.assertEqual(stamps, [stamps[0] + 160 * i for i in range(len(stamps))])
        self.assertEqual(call.clock.getDelayedCalls(), [])

    def test_close_stops_what_is_being_generated(self) -> None:
        call = Call(LegFormats(PCMU), LegFormats(PCMU, 101))
        call.interworking.info_received("a", "1", 1000)
        call.clock.advance(0.1)
        call.interworking.close()
        self.assertEqual(call.clock.getDelayedCalls(), [])
        sent = len(call.b.sent_rtp)
        call.run(1)
        self.assertEqual(len(call.b.sent_rtp), sent)


class EventsOutTests(SynchronousTestCase):
    def test_rfc4733_events_become_an_info_with_the_duration(self) -> None:
        call = Call(LegFormats(PCMU, None, True), LegFormats(PCMU, 101))
        for i in range(1, 6):
            call.event(call.b, 3, 160 * i, False, start=50000)
        for _ in range(3):
            call.event(call.b, 3, 960, True, start=50000)
        self.assertEqual(call.infos, [("a", "3", 120)])
        self.assertEqual(call.a.sent_rtp, [])

    def test_rfc4733_events_become_tones_for_a_phone_without_info(self) -> None:
        call = Call(LegFormats(PCMU), LegFormats(PCMU, 101))
        call.event(call.b, 11, 800, True, start=9000)
        call.run()
        detector = InbandDtmfDetector()
        digits = [d for p in parsed(call.a.sent_rtp) for d in detector.feed(ulaw_decode(p.payload))]
        self.assertEqual(digits, ["#"])
        self.assertEqual(call.infos, [])

    def test_the_telephone_event_type_is_rewritten_between_phones_that_both_have_events(self) -> None:
        call = Call(LegFormats(PCMU, 101), LegFormats(PCMU, 96))
        out = call.send(call.a, TelephoneEvent(1, duration=160).to_bytes(), pt=101)
        assert out is not None
        self.assertEqual(RtpPacket.parse(out).payload_type, 96)
        self.assertEqual(call.session.leg("b").transform is not None, True)

    def test_a_press_sent_both_as_events_and_as_info_is_given_once(self) -> None:
        call = Call(LegFormats(PCMU, None, True), LegFormats(PCMU, 101))
        call.event(call.b, 4, 800, True, start=7000)
        self.assertTrue(call.interworking.info_received("b", "4", 100))  # the INFO copy: swallowed
        self.assertEqual(call.infos, [("a", "4", 100)])
        call = Call(LegFormats(PCMU, None, True), LegFormats(PCMU, 101))
        self.assertFalse(call.interworking.info_received("b", "4", 100))  # first: passed on as it is
        call.event(call.b, 4, 800, True, start=7000)
        self.assertEqual(call.infos, [])


class InbandTests(SynchronousTestCase):
    def test_tones_from_a_phone_without_events_become_events(self) -> None:
        call = Call(LegFormats(PCMU), LegFormats(PCMU, 101))
        audio = ulaw_encode(silence_pcm(100) + dtmf_pcm("7", 120, 0) + silence_pcm(200))
        for i in range(0, len(audio), 160):
            call.send(call.a, audio[i : i + 160])
            call.clock.advance(0.02)
        call.run()
        events = [e for e in parsed(call.b.sent_rtp) if e.payload_type == 101]
        self.assertTrue(events)
        self.assertEqual({TelephoneEvent.parse(e.payload).event for e in events}, {7})
        self.assertEqual(call.clock.getDelayedCalls(), [])


class TranscodeTests(SynchronousTestCase):
    def test_pcmu_and_pcma_phones(self) -> None:
        call = Call(LegFormats(PCMU, 101), LegFormats(PCMA, 101))
        payload = ulaw_encode(dtmf_pcm("1", 20, 0))
        out = call.send(call.a, payload)
        assert out is not None
        packet = RtpPacket.parse(out)
        self.assertEqual(packet.payload_type, 8)
        self.assertEqual(packet.payload, payload.translate(ULAW_TO_ALAW))
        back = call.send(call.b, packet.payload, pt=8)
        assert back is not None
        self.assertEqual(RtpPacket.parse(back).payload_type, 0)

    def test_phones_that_agree_get_no_transform(self) -> None:
        call = Call(LegFormats(PCMU, 101), LegFormats(PCMU, 101))
        self.assertIsNone(call.a.transform)
        self.assertIsNone(call.b.transform)
        self.assertEqual(call.interworking.paths, {})

    def test_a_new_answer_removes_or_changes_the_transforms(self) -> None:
        call = Call(LegFormats(PCMU, 101), LegFormats(PCMA, 101))
        self.assertIsNotNone(call.a.transform)
        call.interworking.configure(LegFormats(PCMU, 101), LegFormats(PCMU, 101))
        self.assertIsNone(call.a.transform)
        call.interworking.configure(LegFormats(PCMA, 101), LegFormats(PCMU, 101))
        out = call.send(call.a, b"\xd5" * 160, pt=8)
        assert out is not None
        self.assertEqual(RtpPacket.parse(out).payload_type, 0)
