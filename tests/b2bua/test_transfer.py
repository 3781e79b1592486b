"""Transfers on fakes (`pbx.b2bua.transfer`, `pbx.b2bua.refer`): REFER blind and attended, NOTIFY progress,
refusals, and INVITE with Replaces; time is a `task.Clock`, every test ends with nothing left."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua.refer import Referral, parse_refer, parse_replaces, sipfrag
from pbx.b2bua.transfer import replacement_sdp
from pbx.sip.errors import SipError

from .fakes import (
    CALLER_CONTACT,
    PBX_CONTACT,
    CalleePhone,
    CallerPhone,
    FakeServerTransaction,
    Harness,
    callee_sdp,
    deliver,
    respond_to,
    sdp_body,
    wire_request,
)
from .test_b2bua import REG_1003, B2BUATestCase, audio, statuses

DIALPLAN = """
{% if call.dialed is match("^9[0-9]+$") %}
dial trunk:carrier/{{ call.dialed[1:] }}
{% else %}
set referred={{ call.referred_by }}
dial {{ call.dialed }} timeout=20
{% endif %}
"""


def refer(phone: CallerPhone, refer_to: str, *extra: tuple[str, str]) -> FakeServerTransaction:
    """A REFER from the caller in its call's dialog."""
    phone.cseq += 1
    headers = [
        *phone._dialog_headers("REFER", phone.cseq),
        ("Contact", CALLER_CONTACT),
        ("Refer-To", refer_to),
    ]
    headers += extra
    request = wire_request("REFER", PBX_CONTACT[1:-1], headers)
    txn = FakeServerTransaction(request, phone.flow)
    deliver(phone.harness.b2bua, txn)
    return txn


def callee_refer(callee: CalleePhone, refer_to: str) -> FakeServerTransaction:
    """A REFER from a called phone in its dialog with the PBX."""
    callee.cseq += 1
    invite = callee.invite
    headers = [
        ("From", f"{invite.headers.get('To')};tag={callee.tag}"),
        ("To", str(invite.headers.get("From"))),
        ("Call-ID", str(invite.call_id)),
        ("CSeq", f"{callee.cseq} REFER"),
        ("Contact", callee.contact),
        ("Refer-To", refer_to),
    ]
    request = wire_request(
        "REFER", PBX_CONTACT[1:-1], headers, via_host=f"{callee.sent.host}:{callee.sent.port}"
    )
    txn = FakeServerTransaction(request, callee.flow)
    deliver(callee.harness.b2bua, txn)
    return txn


def in_dialog(h: Harness, method: str) -> list[Any]:
    return [s for s in h.stack.sent(method) if s.request.to.tag is not None]


def sipfrags(h: Harness) -> list[bytes]:
    return [s.request.body for s in h.stack.sent("NOTIFY")]


class ParsingTests(SynchronousTestCase):
    def test_refer_to_and_replaces(self) -> None:
        request = wire_request(
            "REFER",
            "sip:pbx@198.51.100.1",
            [
                ("Refer-To", "<sip:1003@a.example?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>"),
                ("Refer-Sub", "false"),
            ],
        )
        found = parse_refer(request)
        self.assertEqual(found.target, "1003")
        self.assertFalse(found.subscribe)
        assert found.replaces is not None
        self.assertEqual(
            (found.replaces.call_id, found.replaces.to_tag, found.replaces.from_tag), ("abc@h", "1", "2")
        )
        self.assertTrue(found.replaces.matches("abc@h", "2", "1"))
        self.assertFalse(found.replaces.matches("abc@h", "2", "3"))

    def test_bad_refers_are_400(self) -> None:
        for headers in (
            [],
            [("Refer-To", "<sip:1003@a.example>"), ("Refer-To", "<sip:1004@a.example>")],
            [("Refer-To", "<tel:+15551234>")],
            [("Refer-To", "<sip:a.example>")],
            [("Refer-To", "<sip:dial%201003@a.example>")],
            [("Refer-To", "<sip:1003@a.example>"), ("Refer-Sub", "maybe")],
        ):
            with self.assertRaises(SipError) as raised:
                parse_refer(wire_request("REFER", "sip:pbx@198.51.100.1", headers))
            self.assertEqual(raised.exception.status, 400)
        with self.assertRaises(SipError):
            parse_replaces("abc;to-tag=1")

    def test_sipfrag(self) -> None:
        self.assertEqual(sipfrag(180), b"SIP/2.0 180 Ringing\r\n")

    def test_a_referral_without_subscription_sends_nothing(self) -> None:
        finals: list[int] = []
        referral = Referral(object(), False, finals.append)
        referral.progress(100)
        referral.progress(200)
        referral.progress(486)
        self.assertEqual(finals, [200])

    def test_replacement_sdp_keeps_the_negotiated_codec(self) -> None:
        ours = sdp_body("198.51.100.9", 40000, direction="sendonly")
        theirs = callee_sdp(formats=(("8", "PCMA/8000"), ("101", "telephone-event/8000")))
        self.assertEqual(audio(replacement_sdp(ours, theirs))[1:], (40000, ["8", "101"]))
        self.assertIn(b"a=sendrecv", replacement_sdp(ours, theirs))


class BlindTransferTests(B2BUATestCase):
    def setUp(self) -> None:
        self.h = self.build(DIALPLAN)
        self.h.register_1002()
        self.h.register(REG_1003)

    def test_the_caller_transfers_its_callee_to_another_extension(self) -> None:
        h = self.h
        phone, callee = self.answered(h)
        txn = refer(phone, "<sip:1003@a.example>", ("Referred-By", "<sip:1001@a.example>"))
        self.assertEqual(statuses(txn), [202])
        self.assertEqual(h.stack.sent("NOTIFY"), [])  # after the 202
        h.clock.advance(0)
        (notify,) = h.stack.sent("NOTIFY")
        self.assertEqual(notify.request.body, b"SIP/2.0 100 Trying\r\n")
        self.assertEqual(notify.request.headers.get("Event"), "refer")
        self.assertEqual(notify.request.headers.get("Content-Type"), "message/sipfrag;version=2.0")
        self.assertEqual(notify.destination, ("udp", "192.168.1.10", 5060))
        respond_to(notify, 200)
        (reinvite,) = in_dialog(h, "INVITE")
        self.assertEqual(reinvite.destination, ("udp", "127.0.0.1", 5062))  # the transferee, 1002
        self.assertEqual(audio(reinvite.request.body)[:2], ("198.51.100.9", 40004))  # the new call's relay
        respond_to(
            reinvite, 200, callee_sdp(version=2, formats=(("0", "PCMU/8000"),)), contact=callee.contact
        )
        (invite,) = [s for s in h.invites() if s.request.uri.user == "1003"]
        self.assertIn("sip:1001@a.example", invite.request.headers.get("From") or "")  # as the transferor
        self.assertEqual(audio(invite.request.body)[:2], ("198.51.100.9", 40006))
        (new,) = [c for c in h.b2bua.calls.values() if c.referred_by]
        self.assertEqual(
            (new.referred_by, new.caller.extension, new.vars["referred"]), ("1001", "1001", "1001")
        )
        carol = CalleePhone(h, invite)
        carol.respond(180)
        self.assertEqual(sipfrags(h)[-1], b"SIP/2.0 180 Ringing\r\n")
        respond_to(h.stack.sent("NOTIFY")[-1], 200)
        carol.answer(callee_sdp("192.168.1.30", 31000, formats=(("0", "PCMU/8000"),)))
        final = h.stack.sent("NOTIFY")[-1]
        self.assertEqual(final.request.body, b"SIP/2.0 200 OK\r\n")
        self.assertEqual(final.request.headers.get("Subscription-State"), "terminated;reason=noresource")
        self.assertEqual(h.stack.sent("BYE"), [])
        respond_to(final, 200)
        (bye,) = h.stack.sent("BYE")  # the transferor's leg ends
        self.assertEqual(bye.destination, ("udp", "192.168.1.10", 5060))
        self.assertEqual(h.relay.created[1].leg("b").remote, ("192.168.1.30", 31000))
        callee.bye()  # the transferee hangs up: the new call ends
        self.assertEqual(len(h.stack.sent("BYE")), 2)
        causes = sorted((c.caller, c.dialed, c.cause) for c in h.cdrs())
        self.assertEqual(causes, [("1001", "1002", "transferred"), ("1001", "1003", "normal")])
        self.assertIdle(h)

    def test_the_callee_transfers_the_caller(self) -> None:
        h = self.h
        _phone, callee = self.answered(h)
        txn = callee_refer(callee, "<sip:1003@a.example>")
        self.assertEqual(statuses(txn), [202])
        h.clock.advance(0)
        respond_to(h.stack.sent("NOTIFY")[0], 200)
        (reinvite,) = in_dialog(h, "INVITE")
        self.assertEqual(reinvite.destination, ("udp", "192.168.1.10", 5060))  # the caller, 1001
        respond_to(reinvite, 200, sdp_body(version=2, formats=(("8", "PCMA/8000"),)), contact=CALLER_CONTACT)
        (invite,) = [s for s in h.invites() if s.request.uri.user == "1003"]
        self.assertIn("sip:1002@a.example", invite.request.headers.get("From") or "")
        carol = CalleePhone(h, invite)
        carol.answer(callee_sdp("192.168.1.30", 31000, formats=(("8", "PCMA/8000"),)))
        respond_to(h.stack.sent("NOTIFY")[-1], 200)
        (bye,) = h.stack.sent("BYE")
        self.assertEqual(bye.destination, ("udp", "127.0.0.1", 5062))
        carol.bye()
        self.assertIdle(h)

    def test_a_transfer_to_a_busy_target_reports_the_failure(self) -> None:
        h = self.h
        phone, callee = self.answered(h)
        refer(phone, "<sip:1003@a.example>")
        h.clock.advance(0)
        respond_to(h.stack.sent("NOTIFY")[0], 200)
        (reinvite,) = in_dialog(h, "INVITE")
        respond_to(reinvite, 200, callee_sdp(version=2), contact=callee.contact)
        (invite,) = [s for s in h.invites() if s.request.uri.user == "1003"]
        CalleePhone(h, invite).respond(486)
        final = h.stack.sent("NOTIFY")[-1]
        self.assertEqual(final.request.body, b"SIP/2.0 486 Busy Here\r\n")
        respond_to(final, 200)
        self.assertEqual(h.stack.sent("BYE"), [])  # the transferor is still there: the transferee is back
        back = in_dialog(h, "INVITE")[-1]
        self.assertEqual(back.destination, ("udp", "127.0.0.1", 5062))
        self.assertEqual(audio(back.request.body)[:2], ("198.51.100.9", 40002))  # its first relay leg
        respond_to(back, 200, callee_sdp(port=30600, version=3), contact=callee.contact)
        self.assertEqual(h.relay.created[0].leg("b").remote, ("192.168.1.20", 30600))
        bye = phone.bye()  # the two talk again, then the transferor hangs up
        self.assertEqual(statuses(bye), [200])
        (to_bob,) = h.stack.sent("BYE")
        self.assertEqual(to_bob.destination, ("udp", "127.0.0.1", 5062))
        self.assertEqual([c.cause for c in h.cdrs()], ["busy", "normal"])
        self.assertIdle(h)

    def test_a_transfer_to_a_trunk_the_transferor_may_not_use_is_refused(self) -> None:
        h = self.h
        phone, callee = self.answered(h)
        refer(phone, "<sip:915551234@a.example>")
        h.clock.advance(0)
        respond_to(h.stack.sent("NOTIFY")[0], 200)
        (reinvite,) = in_dialog(h, "INVITE")
        respond_to(reinvite, 200, callee_sdp(version=2), contact=callee.contact)
        final = h.stack.sent("NOTIFY")[-1]
        self.assertEqual(final.request.body, b"SIP/2.0 403 Forbidden\r\n")
        self.assertEqual([s for s in h.invites() if s.request.uri.user != "1002"], [])
        respond_to(final, 200)
        respond_to(in_dialog(h, "INVITE")[-1], 200, callee_sdp(version=3), contact=callee.contact)
        callee.bye()  # back with the transferor, the transferee hangs up
        self.assertEqual(len(h.stack.sent("BYE")), 1)
        self.assertIdle(h)

    def test_refer_sub_false_sends_no_notify(self) -> None:
        h = self.h
        phone, callee = self.answered(h)
        txn = refer(phone, "<sip:1003@a.example>", ("Refer-Sub", "false"))
        self.assertEqual(statuses(txn), [202])
        assert txn.final is not None
        self.assertEqual(txn.final.headers.get("Refer-Sub"), "false")
        h.clock.advance(0)
        (reinvite,) = in_dialog(h, "INVITE")
        respond_to(reinvite, 200, callee_sdp(version=2), contact=callee.contact)
        (invite,) = [s for s in h.invites() if s.request.uri.user == "1003"]
        CalleePhone(h, invite).answer()
        self.assertEqual(h.stack.sent("NOTIFY"), [])
        self.assertEqual(len(h.stack.sent("BYE")), 1)
        callee.bye()
        self.assertIdle(h)

    def test_the_transferor_hanging_up_first_does_not_stop_the_transfer(self) -> None:
        h = self.h
        phone, callee = self.answered(h)
        refer(phone, "<sip:1003@a.example>")
        h.clock.advance(0)
        phone.bye()
        self.assertEqual(h.stack.sent("BYE"), [])  # the transferee is not hung up
        (reinvite,) = in_dialog(h, "INVITE")
        respond_to(reinvite, 200, callee_sdp(version=2), contact=callee.contact)
        (invite,) = [s for s in h.invites() if s.request.uri.user == "1003"]
        carol = CalleePhone(h, invite)
        carol.answer()
        carol.bye()
        self.assertEqual(len(h.stack.sent("BYE")), 1)
        self.assertIdle(h)

    def test_a_refer_before_the_answer_or_from_an_unknown_party_is_refused(self) -> None:
        h = self.h
        phone = h.place_call()
        callee = h.callee()
        callee.respond(180)
        txn = refer(phone, "<sip:1003@a.example>")
        self.assertEqual(statuses(txn), [403])
        phone.cancel()
        callee.respond(487)
        self.assertIdle(h)


class AttendedTransferTests(B2BUATestCase):
    def test_refer_with_replaces_joins_the_transferee_and_the_consulted_party(self) -> None:
        h = self.build(DIALPLAN)
        h.register_1002()
        h.register(REG_1003)
        phone, bob = self.answered(h)  # 1001 -> 1002
        consult = h.place_call("1003")  # 1001 -> 1003, the consultation
        (invite,) = [s for s in h.invites() if s.request.uri.user == "1003"]
        carol = CalleePhone(h, invite)
        carol.answer(
            callee_sdp("192.168.1.30", 31000, formats=(("8", "PCMA/8000"), ("101", "telephone-event/8000")))
        )
        consult.ack()
        tag = consult.learn_tag()
        replaces = f"{consult.call_id}%3Bto-tag%3D{tag}%3Bfrom-tag%3D{consult.tag}"
        txn = refer(phone, f"<sip:1003@a.example?Replaces={replaces}>")
        self.assertEqual(statuses(txn), [202])
        h.clock.advance(0)
        respond_to(h.stack.sent("NOTIFY")[0], 200)
        (reinvite,) = in_dialog(h, "INVITE")
        self.assertEqual(reinvite.destination, ("udp", "127.0.0.1", 5062))  # bob moves
        self.assertEqual(
            audio(reinvite.request.body)[1:], (40004, ["8", "101"])
        )  # consult's leg a, its codec
        (bye,) = h.stack.sent("BYE")  # the transferor's consultation leg
        self.assertEqual(bye.request.call_id, consult.call_id)
        respond_to(
            reinvite,
            200,
            callee_sdp(port=30500, version=2, formats=(("8", "PCMA/8000"),)),
            contact=bob.contact,
        )
        self.assertEqual(h.relay.created[1].leg("a").remote, ("192.168.1.20", 30500))
        final = h.stack.sent("NOTIFY")[-1]
        self.assertEqual(final.request.body, b"SIP/2.0 200 OK\r\n")
        respond_to(final, 200)
        self.assertEqual(len(h.stack.sent("BYE")), 2)  # and the transferor's first call
        (first_cdr,) = h.cdrs()
        self.assertEqual(first_cdr.cause, "transferred")
        bob.bye()  # bob hangs up: carol gets the BYE
        (last,) = h.stack.sent("BYE")[2:]
        self.assertEqual(last.destination, ("udp", "127.0.0.1", 5070))
        self.assertIdle(h)

    def test_a_replaces_naming_someone_elses_call_is_refused(self) -> None:
        h = self.build(DIALPLAN)
        h.register_1002()
        h.register(REG_1003)
        phone, _bob = self.answered(h)
        other = h.place_call("1003", user="1004")
        (invite,) = [s for s in h.invites() if s.request.uri.user == "1003"]
        CalleePhone(h, invite).answer()
        other.ack()
        tag = other.learn_tag()
        txn = refer(
            phone, f"<sip:1003@a.example?Replaces={other.call_id}%3Bto-tag%3D{tag}%3Bfrom-tag%3D{other.tag}>"
        )
        self.assertEqual(statuses(txn), [403])
        phone.bye()
        other.bye()
        self.assertIdle(h)


class InviteWithReplacesTests(B2BUATestCase):
    def test_another_device_of_the_same_extension_takes_the_call_over(self) -> None:
        h = self.build(DIALPLAN)
        h.register_1002()
        phone, _bob = self.answered(h)
        tag = phone.learn_tag()
        replaces = f"{phone.call_id};to-tag={tag};from-tag={phone.tag}"
        device = h.caller("1002", extra=[("Replaces", replaces)], body=sdp_body("192.168.1.11", 49400))
        txn = device.call()
        self.assertEqual(statuses(txn), [200])
        assert txn.final is not None
        self.assertEqual(audio(txn.final.body)[:2], ("198.51.100.9", 40000))
        self.assertEqual(h.relay.created[0].leg("a").remote, ("192.168.1.11", 49400))
        (bye,) = h.stack.sent("BYE")
        self.assertEqual(bye.destination, ("udp", "192.168.1.10", 5060))  # the replaced device
        device.ack()
        device.bye()
        self.assertEqual(len(h.stack.sent("BYE")), 2)
        self.assertIdle(h)

    def test_replaces_from_another_extension_or_an_unknown_dialog_is_refused(self) -> None:
        h = self.build(DIALPLAN)
        h.register_1002()
        phone, _bob = self.answered(h)
        tag = phone.learn_tag()
        other = h.caller(
            "1002", user="1004", extra=[("Replaces", f"{phone.call_id};to-tag={tag};from-tag={phone.tag}")]
        )
        self.assertEqual(statuses(other.call()), [403])
        unknown = h.caller("1002", extra=[("Replaces", "nope@x;to-tag=1;from-tag=2")])
        self.assertEqual(statuses(unknown.call()), [481])
        phone.bye()
        self.assertIdle(h)


class TransferToApplicationTests(B2BUATestCase):
    def test_attended_transfer_onto_a_call_the_pbx_answers_itself(self) -> None:
        """1001 calls an application of the PBX (park, IVR, voicemail: here a fake `answer` that answers and
        waits), then transfers 1002 onto that call: 1002 takes 1001's place on the application's relay leg
        (same SDP, same codec) and the application goes on with 1002."""
        h = self.build(DIALPLAN.replace("{% else %}", '{% elif call.dialed == "700" %}\nanswer\n{% else %}'))
        running: list[Any] = []

        def hold(call: Any, action: Any) -> Any:
            from twisted.internet.defer import Deferred

            call.answer_locally()
            done: Deferred[str] = Deferred()
            running.append((call, done))
            return done

        h.b2bua.apps["answer"] = hold
        h.register_1002()
        phone, bob = self.answered(h)
        app_call_phone = h.place_call("700")
        app_call_phone.ack()
        ((app_call, done),) = running
        own = app_call.own_sdp
        tag = app_call_phone.learn_tag()
        replaces = f"{app_call_phone.call_id}%3Bto-tag%3D{tag}%3Bfrom-tag%3D{app_call_phone.tag}"
        self.assertEqual(statuses(refer(phone, f"<sip:700@a.example?Replaces={replaces}>")), [202])
        h.clock.advance(0)
        respond_to(h.stack.sent("NOTIFY")[0], 200)
        (reinvite,) = in_dialog(h, "INVITE")
        self.assertEqual(reinvite.destination, ("udp", "127.0.0.1", 5062))
        self.assertEqual(audio(reinvite.request.body), audio(own))  # the application's leg and codec
        respond_to(
            reinvite,
            200,
            callee_sdp(port=30700, version=2, formats=(("0", "PCMU/8000"),)),
            contact=bob.contact,
        )
        self.assertEqual(h.relay.created[1].leg("a").remote, ("192.168.1.20", 30700))
        self.assertIs(app_call.a, bob_session(h, app_call))
        respond_to(h.stack.sent("NOTIFY")[-1], 200)
        byes = [b.request.call_id for b in h.stack.sent("BYE")]
        self.assertEqual(sorted(byes), sorted([app_call_phone.call_id, phone.call_id]))  # 1001 left both
        done.callback("done")  # the application ends: its call hangs up 1002
        last = h.stack.sent("BYE")[-1]
        self.assertEqual(last.destination, ("udp", "127.0.0.1", 5062))
        self.assertIdle(h)


def bob_session(h: Harness, call: Any) -> Any:
    session = call.a
    assert session.dialog is not None and session.target == ("udp", "127.0.0.1", 5062)
    return session
