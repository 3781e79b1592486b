"""What crosses from one leg to the other (pbx.b2bua.normalise): the allow-list, bounds, identity, reasons."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua.normalise import (
    CROSSING,
    IDENTITY_HEADERS,
    MAX_DISPLAY_NAME,
    MAX_HEADER_LENGTH,
    MAX_REPEATS,
    asserted_identity,
    bounded,
    crossing_body,
    crossing_headers,
    display_name,
    reason_phrase,
    trusted_headers,
)
from pbx.sip.message import Headers


def headers(*pairs: tuple[str, str]) -> Headers:
    out = Headers()
    for name, value in pairs:
        out.add(name, value)
    return out


class AllowListTests(SynchronousTestCase):
    def test_only_the_allow_list_crosses(self) -> None:
        """Of an INFO's headers only Content-Disposition, Event and Subscription-State cross: never Via,
        Contact, Call-ID, Record-Route, User-Agent, Warning or an identity header."""
        request = headers(
            ("Via", "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx"),
            ("Contact", "<sip:1001@192.168.1.20:5060>"),
            ("Call-ID", "inside@10.0.0.5"),
            ("Record-Route", "<sip:10.0.0.1;lr>"),
            ("User-Agent", "Yealink SIP-T46S 66.86"),
            ("Warning", '399 10.0.0.1 "internal"'),
            ("P-Asserted-Identity", "<sip:+15550000000@evil.example>"),
            ("Diversion", "<sip:1000@10.0.0.1>;reason=unconditional"),
            ("Content-Disposition", "render"),
            ("Event", "talk"),
            ("X-Internal", "10.0.0.5"),
        )
        self.assertEqual(crossing_headers(request), [("Content-Disposition", "render"), ("Event", "talk")])
        self.assertEqual(set(CROSSING) & set(IDENTITY_HEADERS), set())

    def test_repeated_and_long_headers_are_bounded(self) -> None:
        many = headers(*[("Event", f"e{i}") for i in range(50)], ("Subscription-State", "x" * 5000))
        passed = crossing_headers(many)
        self.assertEqual(passed, [("Event", f"e{i}") for i in range(MAX_REPEATS)])
        self.assertEqual(bounded(["a" * (MAX_HEADER_LENGTH + 1), "ok"]), ["ok"])
        self.assertEqual(bounded(["a", "b", "c"], repeats=2), ["a", "b"])


class BodyTests(SynchronousTestCase):
    def test_sdp_never_crosses_outside_offer_answer(self) -> None:
        sdp = b"v=0\r\no=x 1 1 IN IP4 10.0.0.5\r\n"
        self.assertEqual(crossing_body("application/sdp", sdp), b"")
        self.assertEqual(crossing_body("Application/SDP; charset=x", sdp), b"")
        self.assertEqual(crossing_body("application/dtmf-relay", b"Signal=1"), b"Signal=1")
        self.assertEqual(crossing_body(None, b"x"), b"x")


class DisplayNameTests(SynchronousTestCase):
    def test_bounded_and_printable(self) -> None:
        self.assertEqual(display_name("A" * 5000), "A" * MAX_DISPLAY_NAME)
        self.assertEqual(display_name("Bob\x00\x1b[31m Smith"), "Bob[31m Smith")
        self.assertEqual(display_name("  Zoë  "), "Zoë")
        self.assertEqual(display_name(None), "")


class ReasonPhraseTests(SynchronousTestCase):
    def test_plain_reasons_cross(self) -> None:
        self.assertEqual(reason_phrase(180, "Ringing"), "Ringing")
        self.assertEqual(reason_phrase(486, "Busy Here"), "Busy Here")
        self.assertIsNone(reason_phrase(486, None))

    def test_reasons_naming_the_inside_become_standard(self) -> None:
        """A reason with an address, a URI or a host, an over-long or non-ASCII one: the standard phrase."""
        self.assertEqual(reason_phrase(480, "Forwarded by 10.1.2.3"), "Temporarily Unavailable")
        self.assertEqual(reason_phrase(486, "busy at sip:1002@pbx.internal"), "Busy Here")
        self.assertEqual(reason_phrase(486, "user@host busy"), "Busy Here")
        self.assertEqual(reason_phrase(503, "fe80::1 down"), "Service Unavailable")
        self.assertEqual(reason_phrase(180, "R" * 200), "Ringing")
        self.assertEqual(reason_phrase(180, "Sonnerie \u00e9"), "Ringing")


class IdentityTests(SynchronousTestCase):
    def test_pai_names_the_caller(self) -> None:
        found = asserted_identity(
            headers(("P-Asserted-Identity", '"Alice A" <sip:+15551234567@carrier.test>'))
        )
        self.assertEqual(found, ("+15551234567", "Alice A"))

    def test_tel_uri_and_several_entries(self) -> None:
        value = "<sip:bad user@x>, <tel:+15557654321;cpc=ordinary>"
        self.assertEqual(asserted_identity(headers(("P-Asserted-Identity", value))), ("+15557654321", ""))

    def test_rpid_when_no_pai(self) -> None:
        rpid = '"Bob" <sip:5551000@carrier.test>;party=calling;privacy=off'
        self.assertEqual(asserted_identity(headers(("Remote-Party-ID", rpid))), ("5551000", "Bob"))

    def test_nothing_usable(self) -> None:
        self.assertIsNone(asserted_identity(headers()))
        self.assertIsNone(asserted_identity(headers(("P-Asserted-Identity", "not a uri <<<"))))
        self.assertIsNone(asserted_identity(headers(("P-Asserted-Identity", "<sip:" + "9" * 40 + "@x>"))))

    def test_trusted_headers_rebuild_pai_and_bound_diversion(self) -> None:
        carrier = headers(
            ("P-Asserted-Identity", "<sip:+15551234567@10.9.9.9>"),
            *[("Diversion", f"<sip:+1555000000{i}@carrier.test>;reason=no-answer") for i in range(9)],
            ("History-Info", "<sip:x@carrier.test>;index=1"),
        )
        out = trusted_headers(carrier, "+15551234567", "Alice", "a.example")
        self.assertEqual(out[0], ("P-Asserted-Identity", '"Alice" <sip:+15551234567@a.example>'))
        self.assertEqual([n for n, _ in out].count("Diversion"), MAX_REPEATS)
        self.assertIn(("History-Info", "<sip:x@carrier.test>;index=1"), out)
        self.assertNotIn("10.9.9.9", repr(out))

    def test_no_pai_for_anonymous(self) -> None:
        self.assertEqual(trusted_headers(headers(), "anonymous", "", "a.example"), ())
