"""Known B2BUA bugs, each pinned by a test of the correct behaviour marked `xfail(strict=True)`.

When a fix lands the test passes, strict xfail turns that into a failure, and the marker must go (move the
test next to its siblings in test_b2bua.py then). Each docstring says where the bug is, the input, what is
expected and what happens instead.
"""

from __future__ import annotations

from .fakes import CalleePhone, Registration, callee_sdp, respond_to, sdp_body
from .test_b2bua import B2BUATestCase

REG_1003 = Registration("1003", "sip:1003@192.168.1.30:5070", "udp:127.0.0.1:5070")


def reinvites(h) -> list:  # type: ignore[no-untyped-def]
    return [s for s in h.stack.sent("INVITE") if s.request.to.tag is not None]


class FixedBugs(B2BUATestCase):
    def test_cancel_after_a_100_trying_is_sent_at_once(self) -> None:
        """leg.py `OutboundLeg.response_received`: a 100 only sets `provisional` when a cancel is already
        wanted, so a leg that got `100 Trying` and nothing else is never CANCELled when the caller hangs up
        (or the ring timer fires): the CANCEL waits for a 180/183 that may never come. RFC 3261 9.1 allows
        the CANCEL after any provisional response, 100 included.
        Input: dial 1002; the leg answers 100; the caller CANCELs. Expected: a CANCEL to the leg.
        Got: none."""
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        h.callee().respond(100)
        phone.cancel()
        self.assertEqual(len(h.stack.cancels), 1)

    def test_ring_timeout_with_a_busy_fork_is_busy(self) -> None:
        """call.py `Call._ring_timeout` always finishes the dial as "noanswer" (`_last_statuses = [408]`),
        ignoring the final statuses the other legs already gave. docs/dialplan.md: `busy` = no answer and at
        at least one target answered 486/600/603; the first matching row wins.
        Input: `dial 1002 timeout=5` + `dial 1003 if=busy`, 1002 with two contacts: the first answers 486,
        the second rings (180) until the timeout. Expected: 1003 rings. Got: the caller gets 480 and 1003
        never rings."""
        h = self.build("dial 1002 timeout=5\ndial 1003 if=busy")
        h.register_1002(contacts=2)
        h.register(REG_1003)
        phone = h.place_call()
        one, two = h.callees()
        one.respond(486)
        two.respond(180)
        h.clock.advance(5)
        self.assertEqual([s.request.uri.user for s in h.invites()][-1], "1003")
        self.assertEqual(phone.txn.statuses, [180])

    def test_sequential_dial_stops_when_the_caller_cancels(self) -> None:
        """call.py `Call.dial` (strategy=sequential) checks `self.ended` after each target, but
        `caller_cancelled` resolves the dial ("cancelled") before it calls `_end`, so the loop goes on and
        INVITEs the next target; `_end` then cancels that leg (a CANCEL once it rings).
        Input: `dial 1002 1003 strategy=sequential ringtime=5`; 1002 rings; the caller CANCELs. Expected: no
        INVITE to 1003. Got: an INVITE to sip:1003@192.168.1.30:5070 after the caller's 487."""
        h = self.build("dial 1002 1003 strategy=sequential ringtime=5")
        h.register_1002()
        h.register(REG_1003)
        phone = h.place_call()
        h.callee().respond(180)
        phone.cancel()
        self.assertEqual(phone.txn.statuses, [180, 487])
        self.assertEqual([s.request.uri.user for s in h.invites()], ["1002"])

    def test_sequential_ringtime_defaults_to_the_timeout_divided_evenly(self) -> None:
        """call.py `Call.dial`: `ringtime = ringtime or timeout`, so each target rings the whole timeout and
        the dial lasts targets x timeout. docs/dialplan.md: each rings `ringtime` (default: timeout divided
        evenly), never longer than `timeout` in all.
        Input: `dial 1002 1003 strategy=sequential timeout=20`, 1002 rings. Expected: 1003 rings after 10 s,
        the caller gets 480 after 20 s. Got: 1003 rings only after 20 s; the dial lasts 40 s."""
        h = self.build("dial 1002 1003 strategy=sequential timeout=20")
        h.register_1002()
        h.register(REG_1003)
        phone = h.place_call()
        h.callee().respond(180)
        h.clock.advance(10)
        self.assertEqual(len(h.invites()), 2)
        CalleePhone(h, h.invites()[1]).respond(180)
        h.clock.advance(10)
        self.assertEqual(phone.txn.statuses, [180, 480])

    def test_bye_before_the_ack_stops_the_2xx_retransmissions(self) -> None:
        """call.py `Call.peer_request` (BYE) stops the *other* side's 2xx retransmitter (`_bye(other)`) and
        `_end` stops none, so when the caller sends BYE before its ACK (or the ACK was lost) the PBX keeps
        retransmitting the 200 for a call that has ended, for 32 s, and leaves the timers on the clock.
        Input: answered call, no ACK, caller BYE. Expected: no retransmission after the BYE, no timer left.
        Got: 200 retransmissions at 0.5, 1.5, 3.5 ... s and two Uas2xxRetransmitter timers."""
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h, ack=False)
        phone.bye()
        h.clock.pump([0.5] * 10)
        self.assertEqual(h.stack.responses, [])
        self.assertEqual(h.leftover_timers(), [])

    def test_late_offer_retransmitted_2xx_waits_for_the_answer(self) -> None:
        """leg.py `OutboundLeg._answered` ACKs a retransmitted 2xx with `send_ack(None)`, which before the
        caller's ACK has no body yet. For a late offer (INVITE without SDP) the ACK must carry the answer
        (RFC 3264, RFC 3261 13.2.2.4), so the callee gets an ACK without an answer, then a second ACK with it.
        Input: INVITE without SDP; the callee's 200 (offer) is retransmitted before the caller's ACK.
        Expected: no ACK to the callee until the caller's answer; one ACK, with the answer. Got: an ACK with
        an empty body first, then a second ACK with the SDP."""
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call(body=b"")
        callee = h.callee()
        callee.answer()
        callee.answer()  # a retransmission (T1 over UDP) while the caller is slow to ACK
        phone.ack(sdp_body())
        self.assertTrue(h.stack.acks)
        self.assertTrue(all(a.request.body for a in h.stack.acks), [a.request.body for a in h.stack.acks])

    def test_reinvite_without_sdp_forwards_the_answer_in_the_ack(self) -> None:
        """call.py `Call.response_relayed` ACKs the callee's 2xx to a relayed re-INVITE at once and empty.
        When the re-INVITE carried no SDP, that 2xx holds the offer and the answer comes in the caller's ACK
        (RFC 3261 14.1/13.2.1, RFC 3264), which `peer_ack` then drops, so the callee never gets an answer.
        Input: answered call; the caller re-INVITEs without SDP; the callee's 200 has an offer; the caller
        ACKs with an answer. Expected: the callee's ACK (CSeq 2) carries the answer rewritten to the relay.
        Got: an empty ACK right away, nothing after the caller's ACK."""
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        phone.request("INVITE")
        (reinvite,) = reinvites(h)
        respond_to(reinvite, 200, callee_sdp(version=2), contact=callee.contact)
        phone.ack(sdp_body(version=2))
        acks = [a for a in h.stack.acks if a.request.cseq.number == 2]
        self.assertEqual(len(acks), 1)
        self.assertIn(b"m=audio 40002", acks[0].request.body)

    def test_retransmitted_2xx_to_a_relayed_reinvite_is_only_acked(self) -> None:
        """call.py `Call.response_relayed` runs again for each 2xx retransmission the INVITE client
        transaction passes up (RFC 6026 Accepted): the SDP is rewritten again (o= version +1, so the caller
        gets a "retransmission" with another body) and `_retransmit_reinvite_2xx` replaces `pending_2xx`
        without stopping the first retransmitter, which then goes on after the caller's ACK for 32 s.
        Input: caller re-INVITE; the callee's 200 twice; the caller ACKs. Expected: one 200 to the caller, two
        ACKs to the callee, no retransmission after the caller's ACK. Got: two 200s (o= versions 2 and 3) and
        retransmissions at 0.5, 1.5, 3.5 ... s after the ACK."""
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        txn = phone.request("INVITE", sdp_body(version=2))
        (reinvite,) = reinvites(h)
        respond_to(reinvite, 200, callee_sdp(version=2), contact=callee.contact)
        respond_to(reinvite, 200, callee_sdp(version=2), contact=callee.contact)
        self.assertEqual(len([a for a in h.stack.acks if a.request.cseq.number == 2]), 2)
        phone.ack()
        h.clock.pump([0.5] * 10)
        self.assertEqual((txn.statuses, h.stack.responses), ([200], []))

    def test_invite_without_contact_is_400_before_ringing(self) -> None:
        """b2bua.py `_new_call` accepts an INVITE without Contact (RFC 3261 8.1.1.8: mandatory). The call
        rings; when the callee answers, call.py `_answer_caller` has already set `final_sent`/`answered_at`
        and ACKed the callee when `Dialog.create_uas` raises SipError(400) out of the leg's
        `response_received`. The caller never gets a final response, the callee stays connected and is never
        BYEd, and the call, its dialog and its relay session stay in the B2BUA for good (`active` stuck at 1).
        Input: authorized INVITE without Contact; the callee answers. Expected: 400 at once, no INVITE to the
        callee. Got: an INVITE to 1002; on its 200: SipError('400 Missing Contact header') from the leg and a
        stuck call."""
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.caller()
        make = phone.invite_request

        def without_contact(authorization: str | None = None):  # type: ignore[no-untyped-def]
            request = make(authorization)
            request.headers.remove("Contact")
            return request

        phone.invite_request = without_contact  # type: ignore[method-assign]
        txn = phone.call()
        self.assertEqual((txn.statuses, h.invites()), ([400], []))

    def test_provisional_from_a_cancelled_leg_of_an_earlier_dial_is_not_relayed(self) -> None:
        """call.py `Call.leg_progress` does not check that the leg belongs to the current dial (leg_answered
        does), and leg.py passes provisionals up once its CANCEL is sent. A 183 with SDP from a phone whose
        ringing timed out (CANCEL sent, 487 not yet received) reaches the caller while the next target rings,
        and `MediaBridge.forward("b", ...)` points relay leg "b" at the old phone.
        Input: `dial 1002 timeout=5` + `dial 1003 if=noanswer`; 1002 rings, times out (CANCEL), then sends
        a 183 with SDP (192.168.1.99:31000). Expected: the caller sees only the first 180; relay leg b not
        moved. Got: a 183 to the caller and leg b's remote set to ('192.168.1.99', 31000)."""
        h = self.build("dial 1002 timeout=5\ndial 1003 if=noanswer")
        h.register_1002()
        h.register(REG_1003)
        phone = h.place_call()
        first = h.callee()
        first.respond(180)
        h.clock.advance(5)
        self.assertEqual(len(h.stack.cancels), 1)
        first.respond(183, callee_sdp(address="192.168.1.99", port=31000))
        self.assertEqual(phone.txn.statuses, [180])
        self.assertNotEqual(h.relay.created[0].leg("b").remote, ("192.168.1.99", 31000))
