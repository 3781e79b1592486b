"""Unattended transfer by keys (`dial ... transfer=##`, `pbx.b2bua.dtmf_transfer`): `##` + number + `#` (or a
pause) sent by SIP INFO or as RFC 4733 events on the relay; on fakes with a `task.Clock`."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua.dtmf_transfer import DIGIT_PAUSE, DigitWatch, event_payload_types
from pbx.media.dtmf import DtmfSender
from pbx.media.rtp import RtpPacket

from .fakes import (
    CALLER_CONTACT,
    PBX_CONTACT,
    CalleePhone,
    CallerPhone,
    FakeServerTransaction,
    callee_sdp,
    deliver,
    respond_to,
    wire_request,
)
from .test_b2bua import REG_1003, B2BUATestCase
from .test_transfer import in_dialog

DIALPLAN = "dial {{ call.dialed }} timeout=20 transfer=##\n"


def info(phone: CallerPhone, digit: str) -> None:
    """A DTMF INFO (`application/dtmf-relay`) from the caller in its call's dialog."""
    phone.cseq += 1
    body = f"Signal={digit}\r\nDuration=160\r\n".encode()
    headers = phone._dialog_headers("INFO", phone.cseq)
    request = wire_request("INFO", PBX_CONTACT[1:-1], headers, body, content_type="application/dtmf-relay")
    deliver(phone.harness.b2bua, FakeServerTransaction(request, phone.flow))


class DigitWatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fired: list[tuple[str, str]] = []
        self.watch = DigitWatch(self.clock, "##", lambda side, number: self.fired.append((side, number)))

    def press(self, side: str, keys: str) -> None:
        for key in keys:
            self.watch.digit(side, key)

    def test_code_number_and_hash(self) -> None:
        self.press("a", "12#3##1003#")
        self.assertEqual(self.fired, [("a", "1003")])
        self.assertTrue(self.watch.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_pause_ends_the_number_and_a_lone_code_expires(self) -> None:
        self.press("b", "##")
        self.clock.advance(DIGIT_PAUSE)
        self.assertEqual(self.fired, [])
        self.press("b", "##42")
        self.clock.advance(DIGIT_PAUSE - 0.1)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.fired, [("b", "42")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sides_are_separate_and_close_cancels(self) -> None:
        self.press("a", "#")
        self.press("b", "#1")
        self.assertEqual(self.fired, [])
        self.press("a", "#5")
        self.watch.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_rfc4733_events_through_the_tap(self) -> None:
        tap = self.watch.tap("a", frozenset({101}))
        ts = 1000
        for digit in "##7#":
            for marker, timestamp, payload in DtmfSender().packets(digit, ts):
                tap(RtpPacket(101, 1, timestamp, 0x1234, payload=payload, marker=marker).to_bytes())
            ts += 2000
        tap(RtpPacket(0, 2, ts, 0x1234, payload=b"\xff" * 160).to_bytes())  # audio: ignored
        self.assertEqual(self.fired, [("a", "7")])

    def test_event_payload_types(self) -> None:
        self.assertEqual(event_payload_types([callee_sdp(), None, b"junk"]), frozenset({101}))


class TransferByKeysTests(B2BUATestCase):
    def setUp(self) -> None:
        self.h = self.build(DIALPLAN)
        self.h.register_1002()
        self.h.register(REG_1003)

    def finish(self, callee: CalleePhone, transferee_contact: str, *, reinvites: int = 1) -> None:
        h = self.h
        h.clock.advance(0)
        reinvite = in_dialog(h, "INVITE")[-1]
        self.assertEqual(len(in_dialog(h, "INVITE")), reinvites)
        respond_to(reinvite, 200, callee_sdp(version=reinvites + 1), contact=transferee_contact)
        invite = [s for s in h.invites() if s.request.uri.user == "1003"][-1]
        carol = CalleePhone(h, invite)
        carol.answer(callee_sdp("192.168.1.30", 31000))
        self.assertEqual(h.stack.sent("NOTIFY"), [])  # nobody subscribed
        self.assertEqual(len(h.stack.sent("BYE")), 1)  # the party who keyed leaves
        carol.bye()
        self.assertEqual(len(h.stack.sent("BYE")), 2)
        self.assertIdle(h)

    def test_the_caller_keys_hash_hash_and_a_number_by_info(self) -> None:
        phone, callee = self.answered(self.h)
        for digit in "##1003#":
            info(phone, digit)
        self.finish(callee, callee.contact)
        (new,) = [c for c in self.h.cdrs() if c.dialed == "1003"]
        self.assertEqual(new.caller, "1001")

    def test_the_callee_keys_the_transfer_as_rfc4733_events(self) -> None:
        h = self.h
        _phone, callee = self.answered(h)
        leg = h.relay.created[0].leg("b")
        ts = 5000
        for digit in "##1003":
            for marker, timestamp, payload in DtmfSender().packets(digit, ts):
                leg.relay_rtp(RtpPacket(101, 1, timestamp, 0x55, payload=payload, marker=marker).to_bytes())
            ts += 2000
        h.clock.advance(DIGIT_PAUSE)  # no closing #: the pause ends the number
        self.finish(callee, CALLER_CONTACT)
        (new,) = [c for c in h.cdrs() if c.dialed == "1003"]
        self.assertEqual(new.caller, "1002")  # routed as the callee who keyed it

    def test_a_failed_transfer_gives_the_callee_back_and_the_keys_work_again(self) -> None:
        h = self.h
        phone, callee = self.answered(h)
        for digit in "##1003#":
            info(phone, digit)
        h.clock.advance(0)
        (reinvite,) = in_dialog(h, "INVITE")
        respond_to(reinvite, 200, callee_sdp(version=2), contact=callee.contact)
        (invite,) = [s for s in h.invites() if s.request.uri.user == "1003"]
        CalleePhone(h, invite).respond(486)
        self.assertEqual(h.stack.sent("BYE"), [])  # the caller is still there: the callee is back
        back = in_dialog(h, "INVITE")[-1]
        respond_to(back, 200, callee_sdp(version=3), contact=callee.contact)
        self.assertIsNotNone(h.relay.created[0].leg("a").tap)  # watched again
        for digit in "##1003#":
            info(phone, digit)
        self.finish(callee, callee.contact, reinvites=3)

    def test_without_the_dial_option_nothing_is_watched(self) -> None:
        h = self.build("dial {{ call.dialed }} timeout=20\n")
        h.register_1002()
        phone, _callee = self.answered(h)
        for digit in "##1003#":
            info(phone, digit)
        h.clock.advance(DIGIT_PAUSE)
        self.assertEqual(in_dialog(h, "INVITE"), [])
        self.assertIsNone(h.relay.created[0].leg("a").tap)
        phone.bye()
        self.assertIdle(h)
