"""Codecs and DTMF between the legs of a bridged call, through the B2BUA: the offer passed on gets the other
G.711 law and telephone-event, the answer comes back in the caller's terms and the relay converts; DTMF INFO
becomes RFC 4733 events and the reverse; no common codec is 488 (`pbx.b2bua.codec_plan`,
`pbx.media.dtmf_interwork`)."""

from __future__ import annotations

from typing import Any

from pbx.media.dtmf import TelephoneEvent
from pbx.media.rtp import RtpPacket
from pbx.media.transcode import ALAW_TO_ULAW
from pbx.sip.sdp import SessionDescription

from .fakes import (
    PBX_CONTACT,
    CallerPhone,
    FakeServerTransaction,
    Harness,
    callee_sdp,
    deliver,
    respond_to,
    sdp_body,
    wire_request,
)
from .test_b2bua import B2BUATestCase, audio, statuses

PCMU_ONLY = (("0", "PCMU/8000"),)
PCMA_TE = (("8", "PCMA/8000"), ("101", "telephone-event/8000"))
PCMU_TE = (("0", "PCMU/8000"), ("101", "telephone-event/8000"))


def info(
    phone: CallerPhone, body: bytes, content_type: str = "application/dtmf-relay"
) -> FakeServerTransaction:
    """A DTMF INFO from the caller in its dialog."""
    phone.cseq += 1
    headers = phone._dialog_headers("INFO", phone.cseq)
    request = wire_request("INFO", PBX_CONTACT[1:-1], headers, body, content_type=content_type)
    txn = FakeServerTransaction(request, phone.flow)
    deliver(phone.harness.b2bua, txn)
    return txn


def rtpmaps(body: bytes) -> dict[str, str]:
    media = SessionDescription.parse(body).media[0]
    return {pt: str(entry) for pt, entry in media.rtpmap.items()}


class InterworkingTests(B2BUATestCase):
    def call(
        self, h: Harness, caller: tuple[tuple[str, str], ...], callee: tuple[tuple[str, str], ...], **kw: Any
    ) -> tuple[CallerPhone, Any]:
        h.register_1002()
        phone = h.place_call(body=sdp_body(formats=caller), **kw)
        answerer = h.callee()
        answerer.answer(callee_sdp(formats=callee))
        phone.ack()
        return phone, answerer

    def test_a_pcmu_phone_and_a_pcma_callee_talk_through_the_relay(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call(body=sdp_body(formats=PCMU_ONLY))
        callee = h.callee()
        offered = audio(callee.invite.body)[2]
        self.assertEqual(offered, ["0", "8", "101"])  # PCMA after PCMU, and telephone-event
        self.assertEqual(rtpmaps(callee.invite.body)["101"], "telephone-event/8000")
        callee.answer(callee_sdp(formats=PCMA_TE))
        ok = phone.txn.final  # type: ignore[union-attr]
        assert ok is not None
        self.assertEqual(audio(ok.body)[2], ["0"])  # the caller's own codec, nothing it did not offer
        phone.ack()
        session = h.relay.created[0]
        out = session.leg("a").relay_rtp(RtpPacket(0, 1, 160, 9, b"\xff" * 160).to_bytes())
        assert out is not None
        self.assertEqual(
            (RtpPacket.parse(out).payload_type, RtpPacket.parse(out).payload), (8, b"\xd5" * 160)
        )
        back = session.leg("b").relay_rtp(RtpPacket(8, 1, 160, 9, b"\xd5" * 160).to_bytes())
        assert back is not None
        self.assertEqual(RtpPacket.parse(back).payload_type, 0)
        phone.bye()
        self.assertIdle(h)

    def test_a_law_added_to_the_offer_is_converted_before_the_answer_is_read(self) -> None:
        """A PCMA-only caller (a carrier): the callee is offered PCMU too and may send it as soon as it
        answers, before the PBX has read its 200 (RTP and SIP race on different sockets); those packets
        reach the caller as PCMA, never as a law it did not offer. The answer then sets the real formats."""
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call(body=sdp_body(formats=PCMA_TE))
        callee = h.callee()
        self.assertEqual(audio(callee.invite.body)[2], ["8", "0", "101"])
        session = h.relay.created[0]
        self.assertIsNone(session.leg("a").transform)  # what the caller sends, the callee was offered
        early = session.leg("b").relay_rtp(RtpPacket(0, 1, 160, 9, b"\xff" * 160).to_bytes())
        assert early is not None
        self.assertEqual(
            (RtpPacket.parse(early).payload_type, RtpPacket.parse(early).payload), (8, b"\xd5" * 160)
        )
        same = session.leg("b").relay_rtp(RtpPacket(8, 2, 320, 9, b"\xd5" * 160).to_bytes())
        assert same is not None
        self.assertEqual(RtpPacket.parse(same).payload_type, 8)
        callee.answer(callee_sdp(formats=PCMU_TE))
        ok = phone.txn.final  # type: ignore[union-attr]
        assert ok is not None
        self.assertEqual(audio(ok.body)[2], ["8", "101"])
        phone.ack()
        back = session.leg("b").relay_rtp(RtpPacket(0, 3, 480, 9, b"\xff" * 160).to_bytes())
        out = session.leg("a").relay_rtp(RtpPacket(8, 1, 160, 7, b"\xd5" * 160).to_bytes())
        assert back is not None and out is not None
        self.assertEqual((RtpPacket.parse(back).payload_type, RtpPacket.parse(out).payload_type), (8, 0))
        phone.bye()
        self.assertIdle(h)

    def test_an_offer_with_both_laws_sets_no_conversion_before_the_answer(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        callee = h.callee()
        session = h.relay.created[0]
        self.assertEqual((session.leg("a").transform, session.leg("b").transform), (None, None))
        callee.answer(callee_sdp(formats=PCMU_TE))
        phone.ack()
        phone.bye()
        self.assertIdle(h)

    def test_an_ordinary_call_is_passed_through_unchanged(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        callee = h.callee()
        self.assertEqual(audio(callee.invite.body)[2], ["0", "8", "101"])
        answer = callee_sdp(formats=PCMU_TE)
        callee.answer(answer)
        ok = phone.txn.final  # type: ignore[union-attr]
        assert ok is not None
        self.assertEqual(audio(ok.body)[2], ["0", "101"])
        session = h.relay.created[0]
        self.assertIsNone(session.leg("a").transform)
        self.assertIsNone(session.leg("b").transform)
        phone.ack()
        phone.bye()
        self.assertIdle(h)

    def test_a_callee_without_telephone_event_still_gets_the_callers_events_as_info_or_tones(self) -> None:
        h = self.build("dial 1002")
        phone, _callee = self.call(h, PCMU_TE, PCMU_ONLY)
        ok = phone.txn.final  # type: ignore[union-attr]
        assert ok is not None
        self.assertEqual(audio(ok.body)[2], ["0", "101"])  # the caller keeps its events: the PBX converts
        session = h.relay.created[0]
        self.assertIsNotNone(session.leg("a").transform)
        phone.bye()
        self.assertIdle(h)

    def test_info_from_the_caller_becomes_rfc4733_events_to_the_callee(self) -> None:
        h = self.build("dial 1002")
        phone, _callee = self.call(h, PCMU_ONLY, PCMU_TE)
        txn = info(phone, b"Signal=7\r\nDuration=200\r\n")
        self.assertEqual(statuses(txn), [200])
        self.assertEqual(h.stack.sent("INFO"), [])  # answered here, not passed on
        h.clock.pump([0.02] * 50)
        session = h.relay.created[0]
        events = [RtpPacket.parse(data) for kind, data in session.leg("b").sent if kind == "rtp"]
        self.assertEqual(len(events), 9 + 3)
        self.assertEqual({e.payload_type for e in events}, {101})
        self.assertTrue(events[0].marker)
        ends = [TelephoneEvent.parse(e.payload) for e in events[-3:]]
        self.assertEqual({(t.event, t.end, t.duration) for t in ends}, {(7, True, 1600)})
        phone.bye()
        self.assertIdle(h)

    def test_events_from_the_callee_become_info_to_a_caller_that_allows_it(self) -> None:
        h = self.build("dial 1002")
        phone, _callee = self.call(h, PCMU_ONLY, PCMU_TE, extra=[("Allow", "INVITE, ACK, BYE, CANCEL, INFO")])
        session = h.relay.created[0]
        for end, duration in ((False, 160), (True, 800), (True, 800), (True, 800)):
            payload = TelephoneEvent(11, end=end, duration=duration).to_bytes()
            self.assertIsNone(session.leg("b").relay_rtp(RtpPacket(101, 5, 4000, 9, payload).to_bytes()))
        (sent,) = h.stack.sent("INFO")
        self.assertEqual(sent.request.headers.get("Content-Type"), "application/dtmf-relay")
        self.assertEqual(sent.request.body, b"Signal=#\r\nDuration=100\r\n")
        self.assertEqual(sent.destination, ("udp", "192.168.1.10", 5060))
        respond_to(sent, 200)
        phone.bye()
        self.assertIdle(h)

    def test_info_between_two_phones_without_events_is_passed_on(self) -> None:
        h = self.build("dial 1002")
        phone, _callee = self.call(h, PCMU_ONLY, PCMU_ONLY)
        txn = info(phone, b"Signal=1\r\nDuration=100\r\n")
        (sent,) = h.stack.sent("INFO")
        self.assertEqual(sent.request.body, b"Signal=1\r\nDuration=100\r\n")
        respond_to(sent, 200)
        self.assertEqual(statuses(txn), [200])
        phone.bye()
        self.assertIdle(h)

    def test_an_answer_with_no_codec_the_caller_can_get_is_acked_byed_and_488(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call(body=sdp_body(formats=PCMU_ONLY))
        callee = h.callee()
        callee.answer(callee_sdp(formats=(("18", "G729/8000"),)))
        self.assertEqual(len(h.stack.acks), 1)
        (bye,) = h.stack.sent("BYE")
        respond_to(bye, 200)
        self.assertNotIn(200, statuses(phone.txn))
        (cdr,) = h.cdrs()
        self.assertIn("=488", cdr.legs)
        self.assertIdle(h)

    def test_no_common_codec_with_the_allow_list_is_488_before_anything_rings(self) -> None:
        h = self.build("dial 1002", codecs=("PCMA", "telephone-event"))
        h.register_1002()
        phone = h.place_call(body=sdp_body(formats=(("9", "G722/8000"),)))
        self.assertEqual(statuses(phone.txn)[-1], 488)
        self.assertEqual(h.invites(), [])
        self.assertIdle(h)

    def test_a_reinvite_to_pcma_on_the_caller_side_reconfigures_the_relay(self) -> None:
        h = self.build("dial 1002")
        phone, _callee = self.call(h, PCMU_TE, PCMU_TE)
        session = h.relay.created[0]
        self.assertIsNone(session.leg("a").transform)
        phone.request(
            "INVITE", sdp_body(formats=(("8", "PCMA/8000"), ("101", "telephone-event/8000")), version=2)
        )
        (reinvite,) = [s for s in h.stack.sent("INVITE") if s.request.to.tag is not None]
        self.assertEqual(audio(reinvite.request.body)[2], ["8", "0", "101"])
        respond_to(reinvite, 200, callee_sdp(formats=PCMU_TE, version=2))
        out = session.leg("a").relay_rtp(RtpPacket(8, 1, 160, 9, b"\xd5" * 160).to_bytes())
        assert out is not None
        self.assertEqual(RtpPacket.parse(out).payload, (b"\xd5" * 160).translate(ALAW_TO_ULAW))
        phone.bye()
        self.assertIdle(h)

    def test_a_forced_dtmf_mode_wins_over_the_negotiated_one(self) -> None:
        """A trunk configured for INFO gets the caller's events as INFO although it took telephone-event."""
        h = self.build("dial 1002")
        phone, _callee = self.call(h, PCMU_TE, PCMU_TE)
        call = h.b2bua.calls[phone.call_id]
        assert call.media is not None
        self.assertRaises(ValueError, call.media.dtmf_mode, "b", "smoke")
        call.media.dtmf_mode("b", "info")
        session = h.relay.created[0]
        for end in (False, True, True, True):
            payload = TelephoneEvent(2, end=end, duration=800).to_bytes()
            self.assertIsNone(session.leg("a").relay_rtp(RtpPacket(101, 5, 4000, 9, payload).to_bytes()))
        (sent,) = h.stack.sent("INFO")
        self.assertEqual(sent.request.body, b"Signal=2\r\nDuration=100\r\n")
        respond_to(sent, 200)
        phone.bye()
        self.assertIdle(h)

    def test_a_relay_without_a_clock_converts_nothing_and_offers_pass_as_before(self) -> None:
        h = self.build("dial 1002")
        h.relay.clock = None
        h.register_1002()
        phone = h.place_call(body=sdp_body(formats=PCMU_ONLY))
        callee = h.callee()
        self.assertEqual(audio(callee.invite.body)[2], ["0"])
        callee.answer(callee_sdp(formats=PCMU_TE))
        ok = phone.txn.final  # type: ignore[union-attr]
        assert ok is not None
        self.assertEqual(audio(ok.body)[2], ["0", "101"])  # passed through as it always was
        self.assertIsNone(h.relay.created[0].leg("a").transform)
        phone.ack()
        phone.bye()
        self.assertIdle(h)

    def test_infos_to_a_phone_go_one_at_a_time_in_order(self) -> None:
        h = self.build("dial 1002")
        phone, _callee = self.call(h, PCMU_ONLY, PCMU_TE)
        session = h.relay.created[0]
        for n, event in enumerate((1, 2, 3)):
            payload = TelephoneEvent(event, end=True, duration=800).to_bytes()
            session.leg("b").relay_rtp(RtpPacket(101, 5 + n, 4000 + 2000 * n, 9, payload).to_bytes())
        (first,) = h.stack.sent("INFO")  # the others wait for its answer
        self.assertEqual(first.request.body[:8], b"Signal=1")
        respond_to(first, 200)
        second = h.stack.sent("INFO")[-1]
        self.assertEqual(second.request.body[:8], b"Signal=2")
        respond_to(second, 500)  # a failure moves on too
        third = h.stack.sent("INFO")[-1]
        self.assertEqual(third.request.body[:8], b"Signal=3")
        respond_to(third, 200)
        self.assertEqual(len(h.stack.sent("INFO")), 3)
        phone.bye()
        self.assertIdle(h)
