"""Call pickup on fakes (`pbx.b2bua.pickup`): `pickup group`, `pickup EXTENSION`, permissions, two pickers
racing for one call, and INVITE with Replaces naming a ringing call; time is a `task.Clock`."""

from __future__ import annotations

from pbx.b2bua import ExtensionInfo

from .fakes import DOMAIN, Harness, sdp_body
from .test_b2bua import PORT_A, PORT_B, B2BUATestCase, audio, statuses

DIALPLAN = """
{% if call.dialed == "*8" %}
pickup group
{% elif call.dialed is match("^[*][*][0-9]+$") %}
pickup {{ call.dialed[2:] }}
{% else %}
dial {{ call.dialed }} timeout=20
{% endif %}
"""

EXTENSIONS = {
    "1001": ExtensionInfo("1001", name="Alice"),
    "1002": ExtensionInfo("1002", name="Bob", pickup_groups=("sales",)),
    "1003": ExtensionInfo("1003", name="Carol", pickup_groups=("support", "sales")),
    "1004": ExtensionInfo("1004", pickup_groups=("sales",), directed_pickup=True),
}
CAROL_SDP = sdp_body("192.168.1.30", 49300, formats=(("8", "PCMA/8000"), ("101", "telephone-event/8000")))


class PickupTests(B2BUATestCase):
    def ringing(self, extensions: dict[str, ExtensionInfo] = EXTENSIONS) -> tuple[Harness, object, object]:
        h = self.build(DIALPLAN, extensions=extensions)
        h.register_1002()
        phone = h.place_call("1002")
        callee = h.callee()
        callee.respond(180)
        return h, phone, callee

    def test_a_group_member_picks_up_the_ringing_call(self) -> None:
        h, phone, callee = self.ringing()
        picker = h.caller("*8", user="1003", body=CAROL_SDP)
        txn = picker.call()
        self.assertEqual(statuses(txn)[-1], 200)
        assert txn.final is not None and phone.txn is not None
        self.assertEqual(audio(txn.final.body), ("198.51.100.9", PORT_B, ["8", "101"]))
        self.assertEqual(statuses(phone.txn)[-1], 200)  # the caller is answered
        assert phone.txn.final is not None
        self.assertEqual(audio(phone.txn.final.body)[:2], ("198.51.100.9", PORT_A))
        self.assertEqual(h.relay.created[0].leg("b").remote, ("192.168.1.30", 49300))
        self.assertEqual(len(h.stack.cancels), 1)  # the ringing phone stops
        callee.respond(487)
        phone.ack()
        picker.ack()
        picker.bye()  # the picker hangs up: the caller gets the BYE
        (bye,) = h.stack.sent("BYE")
        self.assertEqual(bye.destination, ("udp", "192.168.1.10", 5060))
        cdrs = {c.dialed: c for c in h.cdrs()}
        self.assertEqual((cdrs["1002"].answered_by, cdrs["1002"].status), ("1003", 200))
        self.assertEqual(cdrs["*8"].cause, "picked up")
        self.assertIdle(h)

    def test_two_pickers_race_one_wins_the_other_gets_480(self) -> None:
        h, phone, callee = self.ringing()
        first = h.caller("*8", user="1003", body=CAROL_SDP)
        second = h.caller("**1002", user="1004")
        won, lost = first.call(), second.call()
        self.assertEqual(statuses(won)[-1], 200)
        self.assertEqual(statuses(lost)[-1], 480)
        assert lost.final is not None
        self.assertEqual(lost.final.reason, "Nothing To Pick Up")
        callee.respond(487)
        phone.ack()
        first.ack()
        phone.bye()
        self.assertIdle(h)

    def test_directed_pickup_needs_a_shared_group_or_the_permission(self) -> None:
        extensions = dict(EXTENSIONS)
        extensions["1003"] = ExtensionInfo("1003", pickup_groups=("support",))
        h, phone, callee = self.ringing(extensions)
        self.assertEqual(statuses(h.caller("**1002", user="1003").call())[-1], 480)
        self.assertEqual(statuses(h.caller("*8", user="1003").call())[-1], 480)
        directed = h.caller("**1002", user="1004")  # no shared group needed: directed_pickup
        self.assertEqual(statuses(directed.call())[-1], 200)
        callee.respond(487)
        phone.ack()
        directed.ack()
        directed.bye()
        self.assertIdle(h)

    def test_nothing_ringing_is_480_and_the_call_goes_on_ringing_after_a_refusal(self) -> None:
        h = self.build(DIALPLAN, extensions=EXTENSIONS)
        self.assertEqual(statuses(h.caller("*8", user="1003").call())[-1], 480)
        h.clock.advance(1)
        self.assertIdle(h)

    def test_an_invite_with_replaces_naming_the_ringing_call_picks_it_up(self) -> None:
        h, phone, callee = self.ringing()
        tag = phone.learn_tag()
        replaces = f"{phone.call_id};to-tag={tag};from-tag={phone.tag};early-only"
        picker = h.caller("1002", user="1003", extra=[("Replaces", replaces)], body=CAROL_SDP)
        txn = picker.call()
        self.assertEqual(statuses(txn)[-1], 200)
        self.assertEqual(statuses(phone.txn)[-1], 200)
        callee.respond(487)
        phone.ack()
        picker.ack()
        phone.bye()
        (bye,) = h.stack.sent("BYE")
        self.assertEqual(bye.destination, ("udp", "192.168.1.10", 5060))  # the picker's flow (same fake)
        self.assertIdle(h)

    def test_replaces_naming_a_ringing_call_without_permission_is_403(self) -> None:
        h, phone, callee = self.ringing()
        tag = phone.learn_tag()
        replaces = f"{phone.call_id};to-tag={tag};from-tag={phone.tag}"
        picker = h.caller("1002", user="1001", extra=[("Replaces", replaces)], domain=DOMAIN)
        self.assertEqual(statuses(picker.call())[-1], 403)
        phone.cancel()
        callee.respond(487)
        self.assertIdle(h)
