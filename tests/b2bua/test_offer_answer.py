"""Offer/answer holes of the B2BUA (RFC 3261 13.2.1, RFC 3264), on the `tests/b2bua/fakes.py` harness:

- an INVITE without SDP that the PBX answers itself gets a 200 with the PBX's offer; the answer in the ACK
  sets up the media, and an ACK without a usable answer ends the call with BYE;
- a callee's 2xx without a usable answer (or, to an INVITE without offer, without a usable offer) is ACKed
  and BYEd, and that target counts as failed: the other forks ring on, the next dial line runs;
- a bad offer (malformed, not SDP, a `c=` that is not an address, too many streams, too large) is refused
  with 400, 413 or 488 before any action runs, with a reason phrase that echoes none of its bytes.
"""

from __future__ import annotations

from pbx.sip.sdp import MAX_MEDIA_DESCRIPTIONS, MAX_SDP_SIZE

from .fakes import RELAY_ADDRESS, callee_sdp, respond_to, sdp_body
from .test_b2bua import PORT_A, PORT_B, REG_1003, B2BUATestCase, audio, statuses

NO_AUDIO_ANSWER = (
    b"v=0\r\no=phone 1 1 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\n"
    b"m=audio 0 RTP/AVP 0\r\n"
)


def malformed_offers() -> dict[str, bytes]:
    """Offers no phone should send, by what is wrong with them."""
    good = sdp_body().decode()
    return {
        "port 99999": good.replace("m=audio 49170", "m=audio 99999").encode(),
        "port abc": good.replace("m=audio 49170", "m=audio abc").encode(),
        "not sdp": b"Hello, this is not a session description\r\n",
        "c= not an address": good.replace("c=IN IP4 192.168.1.10", "c=IN IP4 not-an-address").encode(),
        "c= IPv6 as IP4": good.replace("c=IN IP4 192.168.1.10", "c=IN IP4 2001:db8::1").encode(),
        "binary": b"v=0\r\no=\xff\xfe\x00\x01 1 1 IN IP4 1.2.3.4\r\ns=\x07\x1b[31m\r\n",
    }


def huge_offer(count: int = 2000) -> bytes:
    head = sdp_body().decode()
    return (head + "".join(f"m=audio {10000 + 2 * i} RTP/AVP 0\r\n" for i in range(count))).encode()


class LocalLateOfferTests(B2BUATestCase):
    """An INVITE without SDP to the PBX's own `answer` (no IVR applications plugged in)."""

    def test_200_carries_the_pbx_offer_and_the_ack_answer_sets_up_the_media(self) -> None:
        h = self.build("answer\ndial 1002")
        h.register_1002()
        phone = h.place_call("500", body=b"")
        self.assertEqual(statuses(phone.txn), [200])
        offer = phone.txn.final  # type: ignore[union-attr]
        assert offer is not None
        self.assertEqual(offer.headers.get("Content-Type"), "application/sdp")
        self.assertEqual(audio(offer.body), (RELAY_ADDRESS, PORT_A, ["0", "8", "101"]))
        self.assertIn(b"a=rtpmap:101 telephone-event/8000", offer.body)
        self.assertEqual(h.invites(), [])  # the dialplan waits for the answer
        phone.ack(sdp_body(port=49300, formats=(("8", "PCMA/8000"), ("101", "telephone-event/8000"))))
        self.assertEqual(h.relay.created[0].leg("a").remote, ("192.168.1.10", 49300))
        call = h.b2bua.calls[phone.call_id]
        assert call.local_sdp is not None
        self.assertEqual(audio(call.local_sdp), (RELAY_ADDRESS, PORT_A, ["8", "101"]))
        # The next dial offers the callee what the caller agreed to, from the relay, and PCMU after PCMA:
        # the relay converts if the callee takes it.
        callee = h.callee()
        self.assertEqual(audio(callee.invite.body), (RELAY_ADDRESS, PORT_B, ["8", "0", "101"]))
        callee.answer(callee_sdp(formats=(("8", "PCMA/8000"),)))
        self.assertEqual(statuses(phone.txn), [200])  # answered once only
        self.assertEqual(len(h.stack.acks), 1)
        phone.bye()
        self.assertIdle(h)

    def test_ack_without_answer_ends_the_call_with_bye(self) -> None:
        h = self.build("answer\ndial 1002")
        h.register_1002()
        phone = h.place_call("500", body=b"")
        phone.ack()
        (bye,) = h.stack.sent("BYE")
        self.assertEqual((bye.host, bye.port), ("192.168.1.10", 5060))
        self.assertEqual(h.invites(), [])
        (cdr,) = h.cdrs()
        self.assertEqual(cdr.hangup_by, "pbx")
        self.assertIdle(h)

    def test_unacceptable_answers_end_the_call_with_bye(self) -> None:
        answers = {
            "audio rejected": NO_AUDIO_ANSWER,
            "no common codec": sdp_body(formats=(("18", "G729/8000"),)),
            "malformed": b"v=0\r\nnonsense\r\n",
            "not sdp": (b"hello", "text/plain"),
        }
        for name, answer in answers.items():
            with self.subTest(name):
                h = self.build("answer\ndial 1002")
                h.register_1002()
                phone = h.place_call("500", body=b"")
                if isinstance(answer, tuple):
                    phone.ack(answer[0], content_type=answer[1])
                else:
                    phone.ack(answer)
                self.assertEqual(len(h.stack.sent("BYE")), 1)
                self.assertEqual(h.invites(), [])
                self.assertIdle(h)

    def test_no_ack_at_all_hangs_up_after_timer_h(self) -> None:
        h = self.build("answer\ndial 1002")
        h.register_1002()
        h.place_call("500", body=b"")
        h.clock.advance(64 * 0.5)
        self.assertEqual(len(h.stack.sent("BYE")), 1)
        self.assertEqual(h.invites(), [])
        self.assertIdle(h)


class CalleeWithoutAnswerTests(B2BUATestCase):
    """A callee's 2xx with no usable SDP is ACKed, BYEd and counts as a failed target."""

    def test_200_without_sdp_is_acked_and_byed_and_the_caller_is_not_answered(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        callee = h.callee()
        callee.respond(180)
        callee.respond(200)
        (ack,) = h.stack.acks
        self.assertEqual(ack.destination, ("udp", "127.0.0.1", 5062))
        (bye,) = h.stack.sent("BYE")
        self.assertEqual(bye.destination, ("udp", "127.0.0.1", 5062))
        self.assertEqual(statuses(phone.txn), [180, 480])  # never a 200 without SDP
        (cdr,) = h.cdrs()
        self.assertIn("=488", cdr.legs)
        self.assertIdle(h)

    def test_unusable_answers_fail_the_target_too(self) -> None:
        bad = {
            "malformed": (b"v=0\r\nnonsense\r\n", "application/sdp"),
            "not sdp": (b"hello", "text/plain"),
            "audio rejected": (NO_AUDIO_ANSWER, "application/sdp"),
            "c= not an address": (callee_sdp(address="callee.invalid"), "application/sdp"),
        }
        for name, (body, content_type) in bad.items():
            with self.subTest(name):
                h = self.build("dial 1002")
                h.register_1002()
                phone = h.place_call()
                h.callee().respond(200, body, content_type=content_type)
                self.assertEqual(len(h.stack.acks), 1)
                self.assertEqual(len(h.stack.sent("BYE")), 1)
                self.assertEqual(statuses(phone.txn), [480])
                self.assertIdle(h)

    def test_the_other_fork_rings_on_and_answers(self) -> None:
        h = self.build("dial 1002")
        h.register_1002(contacts=2)
        phone = h.place_call()
        broken, good = h.callees()
        broken.respond(180)
        good.respond(180)
        broken.respond(200)
        self.assertEqual(h.stack.cancels, [])  # the other fork is not cancelled
        self.assertEqual(statuses(phone.txn), [180])
        good.answer()
        self.assertEqual(statuses(phone.txn), [180, 200])
        answer = phone.txn.final  # type: ignore[union-attr]
        assert answer is not None
        self.assertEqual(audio(answer.body)[:2], (RELAY_ADDRESS, PORT_A))
        self.assertEqual(len(h.stack.acks), 2)  # the broken fork's and the winner's
        phone.ack()
        phone.bye()
        self.assertIdle(h)

    def test_the_next_dial_line_runs(self) -> None:
        h = self.build("dial 1002\ndial 1003")
        h.register_1002()
        h.register(REG_1003)
        phone = h.place_call()
        h.callee().respond(200)
        _first, second = h.callees()
        self.assertEqual(second.invite.uri.user, "1003")  # type: ignore[union-attr]
        second.answer()
        self.assertEqual(statuses(phone.txn), [200])
        phone.ack()
        phone.bye()
        self.assertIdle(h)

    def test_late_offer_200_without_offer_fails_the_target(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call(body=b"")
        h.callee().respond(200)
        self.assertEqual(len(h.stack.acks), 1)
        self.assertEqual(len(h.stack.sent("BYE")), 1)
        self.assertEqual(statuses(phone.txn), [480])
        self.assertIdle(h)

    def test_late_offer_ack_without_answer_byes_both_sides(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call(body=b"")
        h.callee().answer()
        self.assertEqual(statuses(phone.txn), [200])
        phone.ack()
        (ack,) = h.stack.acks
        self.assertEqual(ack.request.body, b"")
        byes = h.stack.sent("BYE")
        self.assertEqual(
            sorted(b.destination for b in byes), [("udp", "127.0.0.1", 5062), ("udp", "192.168.1.10", 5060)]
        )
        self.assertIdle(h)


class BadOfferTests(B2BUATestCase):
    """A bad offer gets 400, 413 or 488 on every path, before any action runs."""

    PATHS = {
        "dial": "dial 1002",
        "answer": "answer\ndial 1002",
        "early media": "progress\ndial 1002",
        "hangup": "hangup 404",
    }

    def assertSafeReason(self, reason: str, body: bytes) -> None:
        self.assertTrue(reason and all(0x20 <= ord(c) < 0x7F for c in reason), repr(reason))
        self.assertLessEqual(len(reason), 80)
        for echoed in ("99999", "abc", "Hello", "not-an-address", "2001:db8"):
            if echoed.encode() in body:
                self.assertNotIn(echoed, reason)

    def test_malformed_offers_are_400_or_488_on_every_path(self) -> None:
        for path, main in self.PATHS.items():
            for name, body in malformed_offers().items():
                with self.subTest(path=path, offer=name):
                    h = self.build(main)
                    h.register_1002()
                    phone = h.place_call(body=body)
                    self.assertIn(statuses(phone.txn)[-1], (400, 488))
                    self.assertEqual(len(statuses(phone.txn)), 1)
                    final = phone.txn.final  # type: ignore[union-attr]
                    assert final is not None
                    self.assertSafeReason(final.reason, body)
                    self.assertEqual(h.invites(), [])
                    self.assertIdle(h)

    def test_an_offer_that_is_not_sdp_by_content_type_is_488(self) -> None:
        for path, main in self.PATHS.items():
            with self.subTest(path):
                h = self.build(main)
                h.register_1002()
                phone = h.place_call(body=sdp_body(), content_type="text/plain")
                self.assertEqual(statuses(phone.txn), [488])
                self.assertEqual(phone.txn.final.headers.get("Accept"), "application/sdp")  # type: ignore[union-attr]
                self.assertEqual(h.invites(), [])
                self.assertIdle(h)

    def test_too_many_media_lines_are_refused_and_never_forwarded(self) -> None:
        for count, status in ((MAX_MEDIA_DESCRIPTIONS, 488), (1000, 488), (1500, 413)):
            for path, main in self.PATHS.items():
                with self.subTest(count=count, path=path):
                    h = self.build(main)
                    h.register_1002()
                    phone = h.place_call(body=huge_offer(count))  # plus the audio line: one too many
                    self.assertEqual(statuses(phone.txn), [status])
                    self.assertEqual(h.invites(), [])
                    self.assertIdle(h)

    def test_an_oversized_offer_is_413(self) -> None:
        h = self.build("answer")
        body = sdp_body() + b"a=x-padding:" + b"p" * MAX_SDP_SIZE + b"\r\n"
        phone = h.place_call("500", body=body)
        self.assertEqual(statuses(phone.txn), [413])
        self.assertIdle(h)


class ReinviteLateOfferTests(B2BUATestCase):
    """A re-INVITE without SDP passed across: the callee's 2xx has the offer, the caller's ACK the answer."""

    def test_ack_without_answer_ends_the_call_with_bye(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        phone.request("INVITE")
        (reinvite,) = [s for s in h.stack.sent("INVITE") if s.request.to.tag is not None]
        respond_to(reinvite, 200, callee_sdp(version=2), contact=callee.contact)
        phone.ack()  # no answer
        acks = [a for a in h.stack.acks if a.request.cseq.number == 2]
        self.assertEqual([a.request.body for a in acks], [b""])  # the callee's 2xx is still ACKed
        self.assertEqual(len(h.stack.sent("BYE")), 2)
        self.assertIdle(h)
