"""Issue 14 item 4 (topology hiding and identity): what a phone puts in its INVITE does not reach a trunk.

The B2BUA builds each leg's INVITE afresh, so none of the caller's identity headers (P-Asserted-Identity,
Remote-Party-ID, Diversion, P-Preferred-Identity), its Call-ID, Via, Contact, Record-Route or private address
is forwarded: the trunk sees the PBX's own Call-ID and Contact and the identity the PBX asserts for the
extension. These tests pin that down so a later change that copies headers cannot open it silently.
"""

from __future__ import annotations

from .fakes import respond_to
from .test_trunk_calls import TrunkTestCase

SPOOFED = [
    ("P-Asserted-Identity", "<sip:+18005550100@evil.example>"),
    ("Remote-Party-ID", '"Bank" <sip:+18005550100@evil.example>;party=calling;screen=yes'),
    ("Diversion", "<sip:+18005550199@evil.example>;reason=unconditional"),
    ("P-Preferred-Identity", "<sip:+18005550100@evil.example>"),
    ("Record-Route", "<sip:10.9.8.7;lr>"),
    ("X-Internal-Route", "secret-10.9.8.7"),
]


class TopologyHidingTests(TrunkTestCase):
    def test_nothing_of_the_caller_reaches_the_trunk_but_what_the_pbx_asserts(self) -> None:
        h = self.build("dial trunk:carrier/{{ call.dialed[1:] }}")
        phone = h.place_call("915551234567", extra=SPOOFED)
        (first,) = h.invites()
        request = first.request
        wire = request.to_bytes().decode()
        for name in (
            "Remote-Party-ID",
            "Diversion",
            "P-Preferred-Identity",
            "Record-Route",
            "X-Internal-Route",
        ):
            self.assertNotIn(name, request.headers, name)
        self.assertEqual(
            request.headers.get_all("P-Asserted-Identity"), ['"Alice" <sip:1001@carrier.example>']
        )
        self.assertNotIn("evil.example", wire)
        self.assertNotIn("10.9.8.7", wire)
        self.assertNotIn("192.168.1.10", wire)  # the phone's (private) address: Via, Contact, Call-ID
        self.assertNotEqual(request.call_id, phone.call_id)
        self.assertEqual(len(request.headers.get_all("Via")), 1)  # the PBX's own, added by its stack
        respond_to(first, 486)
        self.assertIdle(h)

    def test_an_internal_callee_does_not_see_the_callers_headers_either(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call("1002", extra=SPOOFED)
        self.assertTrue(h.invites())
        for sent in h.invites():
            wire = sent.request.to_bytes().decode()
            self.assertNotIn("evil.example", wire)
            self.assertNotIn("10.9.8.7", wire)
            self.assertNotEqual(sent.request.call_id, phone.call_id)
            respond_to(sent, 486)
