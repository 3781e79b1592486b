"""The B2BUA on INVITE sessions (`pbx.b2bua.bridge`): what the caller's `UasSession` and the callee's
`CalleeSession` bring to a call, checked on the wire of the fakes."""

from __future__ import annotations

from .fakes import (
    PBX_CONTACT,
    RELAY_ADDRESS,
    FakeServerTransaction,
    callee_sdp,
    deliver,
    respond_to,
    sdp_body,
    wire_request,
)
from .test_b2bua import PORT_A, PORT_B, B2BUATestCase, audio, statuses


class EarlyDialogTests(B2BUATestCase):
    def test_a_bye_in_the_early_dialog_ends_the_call_like_a_cancel(self) -> None:
        """RFC 3261 15.1.2: the caller BYEs after our 180: 200, its INVITE 487, the ringing leg a CANCEL."""
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        h.callee().respond(180)
        bye = phone.bye()
        self.assertEqual(statuses(bye), [200])
        self.assertEqual(statuses(phone.txn), [180, 487])
        self.assertEqual(len(h.stack.cancels), 1)
        (cdr,) = h.cdrs()
        self.assertEqual((cdr.cause, cdr.status, cdr.hangup_by), ("cancelled", 487, "caller"))
        h.callee().respond(487)
        self.assertIdle(h)

    def test_the_callee_reason_phrase_is_passed_on(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        callee = h.callee()
        ringing = callee.response(180)
        ringing.reason = "Ringing Loudly"
        callee.sent.tu.response_received(callee.sent.transaction, ringing)
        assert phone.txn is not None
        self.assertEqual(phone.txn.responses[0].reason, "Ringing Loudly")
        phone.cancel()
        callee.respond(487)
        self.assertIdle(h)


class InDialogTests(B2BUATestCase):
    def test_update_with_an_offer_is_passed_on_as_an_update(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        txn = phone.request("UPDATE", sdp_body(port=49190, version=2))
        (update,) = h.stack.sent("UPDATE")
        self.assertEqual(update.destination, ("udp", "127.0.0.1", 5062))
        self.assertEqual(audio(update.request.body)[:2], (RELAY_ADDRESS, PORT_B))
        self.assertEqual(h.relay.created[0].leg("a").remote, ("192.168.1.10", 49190))
        respond_to(update, 200, callee_sdp(port=30020, version=2), contact=callee.contact)
        self.assertEqual(statuses(txn), [200])
        assert txn.final is not None
        self.assertEqual(audio(txn.final.body)[:2], (RELAY_ADDRESS, PORT_A))
        self.assertEqual(txn.final.headers.get("Contact"), PBX_CONTACT)
        self.assertEqual(h.relay.created[0].leg("b").remote, ("192.168.1.20", 30020))
        phone.bye()
        self.assertIdle(h)

    def test_options_in_the_dialog_is_answered_by_the_pbx(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h)
        txn = phone.request("OPTIONS")
        self.assertEqual(statuses(txn), [200])
        self.assertIn("INFO", txn.final.headers.get_all("Allow"))  # type: ignore[union-attr]
        self.assertEqual(h.stack.sent("OPTIONS"), [])
        phone.bye()
        self.assertIdle(h)

    def test_info_and_its_answer_keep_their_bodies_and_types(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h)
        phone.cseq += 1  # an INFO of a type other than SDP (SDP never crosses outside offer/answer)
        headers = phone._dialog_headers("INFO", phone.cseq)
        body = b"Signal=5\r\nDuration=160\r\n"
        request = wire_request("INFO", PBX_CONTACT[1:-1], headers, body, content_type="application/x-test")
        txn = FakeServerTransaction(request, phone.flow)
        deliver(h.b2bua, txn)
        (info,) = h.stack.sent("INFO")
        self.assertEqual(info.request.body, b"Signal=5\r\nDuration=160\r\n")
        self.assertEqual(info.request.headers.get("Content-Type"), "application/x-test")  # as sent
        response = info.request.response(200, "Fine")
        response.headers.add("Content-Type", "text/plain")
        response.body = b"ok"
        info.tu.response_received(info.transaction, response)
        self.assertEqual(statuses(txn), [200])
        assert txn.final is not None
        self.assertEqual((txn.final.reason, txn.final.body), ("Fine", b"ok"))
        self.assertEqual(txn.final.headers.get("Content-Type"), "text/plain")
        phone.bye()
        self.assertIdle(h)

    def test_an_sdp_body_outside_offer_answer_does_not_cross(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h)
        txn = phone.request("INFO", b"v=0\r\no=phone 1 1 IN IP4 192.168.1.10\r\n")  # typed application/sdp
        (info,) = h.stack.sent("INFO")
        self.assertEqual(info.request.body, b"")
        response = info.request.response(200)
        response.headers.add("Content-Type", "application/sdp")
        response.body = b"v=0\r\no=callee 1 1 IN IP4 192.168.1.20\r\n"
        info.tu.response_received(info.transaction, response)
        assert txn.final is not None
        self.assertEqual((txn.final.status, txn.final.body), (200, b""))
        phone.bye()
        self.assertIdle(h)

    def test_reinvites_crossing_are_glare(self) -> None:
        """The callee's re-INVITE is being passed to the caller when the caller's own arrives: 491."""
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        from_callee = callee.request("INVITE", callee_sdp(version=2))
        (to_caller,) = [s for s in h.stack.sent("INVITE") if s.request.to.tag is not None]
        self.assertEqual(to_caller.destination, ("udp", "192.168.1.10", 5060))
        from_caller = phone.request("INVITE", sdp_body(version=2))
        self.assertEqual(statuses(from_caller), [491])
        respond_to(to_caller, 200, sdp_body(version=3), contact="<sip:1001@192.168.1.10:5060>")
        self.assertEqual(statuses(from_callee), [200])
        phone.bye()
        self.assertIdle(h)

    def test_a_relayed_request_that_gets_481_ends_the_call(self) -> None:
        """RFC 3261 12.2.1.2: a 481 to a request in the dialog means the callee's dialog is gone."""
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h)
        txn = phone.request("INFO")
        (info,) = h.stack.sent("INFO")
        respond_to(info, 481)
        self.assertEqual(statuses(txn), [481])
        (bye,) = h.stack.sent("BYE")
        self.assertEqual(bye.destination, ("udp", "192.168.1.10", 5060))
        (cdr,) = h.cdrs()
        self.assertEqual(cdr.hangup_by, "pbx")
        self.assertIdle(h)

    def test_a_reinvite_without_offer_whose_2xx_has_none_is_488(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        txn = phone.request("INVITE")
        (reinvite,) = [s for s in h.stack.sent("INVITE") if s.request.to.tag is not None]
        self.assertEqual(reinvite.request.body, b"")
        respond_to(reinvite, 200, contact=callee.contact)
        self.assertEqual(statuses(txn), [488])
        self.assertEqual(len([a for a in h.stack.acks if a.request.cseq.number == 2]), 1)
        self.assertEqual(len(h.b2bua.calls), 1)
        phone.bye()
        self.assertIdle(h)
