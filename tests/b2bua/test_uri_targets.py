"""Dialing a SIP URI: RFC 3263 targets tried in order, and 401/407 challenges answered with credentials.

The B2BUA is built on the fakes of `tests/b2bua/fakes.py` (a recording stack, a task.Clock); the resolver is a
dictionary of canned targets. Each test ends with no call, dialog, relay session or timer left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from pbx.sip.client_auth import Credentials
from pbx.sip.digest import DigestChallenge, DigestCredentials
from pbx.sip.resolver import ResolutionError, Target

from .fakes import CalleePhone, Harness, Sent, callee_sdp, respond_to

URI = "sip:bob@carrier.example"
FIRST, SECOND = Target("udp", "192.0.2.50", 5060, "carrier.example"), Target("udp", "192.0.2.51", 5070, "x")


def challenge(sent: Sent, status: int, realm: str) -> Any:
    """A 401/407 to a request the B2BUA sent, with an MD5 challenge for `realm`."""
    response = sent.request.response(status, to_tag="chal")
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    response.headers.add(
        name, str(DigestChallenge(realm=realm, nonce="n0nce", algorithm="MD5", qop=("auth",)))
    )
    sent.tu.response_received(sent.transaction, response)
    return response


class UriTargetTests(SynchronousTestCase):
    def build(self, main: str = f"dial {URI}\nhangup", **options: Any) -> Harness:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        self.lookups: list[str] = []

        def locate(uri: str) -> Deferred[list[Target]]:
            self.lookups.append(uri)
            return succeed([FIRST, SECOND])

        options.setdefault("locate", locate)
        return Harness.build(path, main, **options)

    def assertIdle(self, h: Harness) -> None:
        self.assertEqual((h.b2bua.calls, len(h.stack.dialogs), h.relay.sessions), ({}, 0, 0))
        self.assertEqual(h.leftover_timers(), [])

    def test_the_uri_is_resolved_and_the_first_target_rings(self) -> None:
        h = self.build()
        phone = h.place_call("9000")
        (sent,) = h.invites()
        self.assertEqual(self.lookups, [URI])
        self.assertEqual((sent.destination, str(sent.request.uri)), (("udp", "192.0.2.50", 5060), URI))
        self.assertEqual(sent.request.to.uri, sent.request.uri)
        callee = CalleePhone(h, sent)
        callee.respond(180)
        callee.answer()
        phone.ack()
        self.assertEqual(phone.txn.statuses, [180, 200])
        phone.bye()
        (bye,) = h.stack.sent("BYE")
        self.assertEqual(bye.destination, ("udp", "192.0.2.50", 5060))
        respond_to(bye, 200)
        self.assertIdle(h)

    def test_dialog_requests_follow_the_remote_target_or_the_route_set_not_the_first_hop(self) -> None:
        """RFC 3261 12.2.1.1: the ACK and BYE of a URI target go to the 2xx's Contact, or to the first
        Record-Route (reversed), not to the proxy the INVITE went to."""
        cases = [
            ((), "<sip:bob@192.0.2.77:5070>", ("udp", "192.0.2.77", 5070)),
            (
                ("<sip:192.0.2.9;lr>", "<sip:192.0.2.8;lr>"),
                "<sip:bob@192.0.2.77>",
                ("udp", "192.0.2.8", 5060),
            ),
            ((), "<sip:bob@192.0.2.77;transport=tcp>", ("tcp", "192.0.2.77", 5060)),
            ((), "<sip:bob@gw.carrier.example:5080>", ("udp", "192.0.2.50", 5060)),  # a name: no DNS here
        ]
        for record_route, contact, expected in cases:
            h = self.build()
            phone = h.place_call("9000")
            (sent,) = h.invites()
            callee = CalleePhone(h, sent)
            callee.contact = contact
            response = callee.response(200, callee_sdp())
            for route in record_route:
                response.headers.add("Record-Route", route)
            sent.tu.response_received(sent.transaction, response)
            phone.ack()
            (ack,) = [a for a in h.stack.acks if a.request.call_id == sent.request.call_id]
            self.assertEqual((ack.transport, ack.host, ack.port), expected, contact)
            phone.bye()
            (bye,) = h.stack.sent("BYE")
            self.assertEqual(bye.destination, expected, contact)
            respond_to(bye, 200)
            self.assertIdle(h)

    def test_a_target_that_times_out_or_answers_503_is_followed_by_the_next(self) -> None:
        for fails in ("timeout", "transport", 503):
            h = self.build()
            phone = h.place_call("9000")
            (first,) = h.invites()
            if fails == "timeout":
                first.tu.transaction_timeout(first.transaction)
            elif fails == "transport":
                first.tu.transport_error(first.transaction, "refused")
            else:
                CalleePhone(h, first).respond(503)
            second = h.invites()[1]
            self.assertEqual(second.destination, ("udp", "192.0.2.51", 5070), fails)
            self.assertEqual(second.request.call_id, first.request.call_id)
            CalleePhone(h, second).answer()
            phone.ack()
            self.assertEqual(phone.txn.statuses[-1], 200)
            phone.bye()
            respond_to(h.stack.sent("BYE")[0], 200)
            self.assertIdle(h)

    def test_no_failover_after_a_provisional_response(self) -> None:
        h = self.build(ring_timeout=60)
        phone = h.place_call("9000")
        (first,) = h.invites()
        callee = CalleePhone(h, first)
        callee.respond(180)
        callee.respond(503)
        self.assertEqual(len(h.invites()), 1)
        self.assertEqual(phone.txn.statuses, [180, 480])
        self.assertIdle(h)

    def test_unresolvable_uris_and_missing_resolvers_fail_the_dial(self) -> None:
        def nowhere(uri: str) -> Deferred[list[Target]]:
            return fail(ResolutionError("no such name"))

        for options in ({"locate": nowhere}, {"locate": lambda uri: succeed([])}, {"locate": None}):
            h = self.build(**options)
            phone = h.place_call("9000")
            self.assertEqual(h.invites(), [])
            self.assertEqual(phone.txn.statuses, [480])
            self.assertIdle(h)

    def test_challenges_to_the_invite_and_the_bye_are_answered(self) -> None:
        asked: list[tuple[str, str]] = []

        def credentials(tenant: str, realm: str) -> Credentials | None:
            asked.append((tenant, realm))
            return Credentials("pbxuser", "secret") if realm == "carrier" else None

        h = self.build(uri_credentials=credentials)
        phone = h.place_call("9000")
        (first,) = h.invites()
        challenge(first, 407, "carrier")
        second = h.invites()[1]
        authorization = DigestCredentials.parse(second.request.headers.get("Proxy-Authorization") or "")
        self.assertEqual((authorization.username, authorization.realm), ("pbxuser", "carrier"))
        self.assertEqual(second.request.cseq.number, first.request.cseq.number + 1)
        self.assertEqual(second.destination, first.destination)
        callee = CalleePhone(h, second)
        callee.answer()
        phone.ack()
        (ack,) = [a for a in h.stack.acks if a.request.call_id == second.request.call_id]
        self.assertEqual(ack.request.cseq.number, second.request.cseq.number)  # the ACK of the 2xx
        phone.bye()
        (bye,) = h.stack.sent("BYE")
        challenge(bye, 401, "carrier")
        retried = h.stack.sent("BYE")[1]
        self.assertIn("Authorization", retried.request.headers)
        self.assertEqual(retried.request.cseq.number, bye.request.cseq.number + 1)
        respond_to(retried, 200)
        self.assertEqual(asked[0], ("acme", "carrier"))
        self.assertIdle(h)

    def test_a_challenge_without_credentials_fails_the_target(self) -> None:
        h = self.build()
        phone = h.place_call("9000")
        (first,) = h.invites()
        challenge(first, 407, "carrier")
        self.assertEqual(len(h.invites()), 1)
        self.assertEqual(phone.txn.statuses, [480])
        self.assertIdle(h)

    def test_the_caller_hanging_up_cancels_a_challenged_leg(self) -> None:
        h = self.build(uri_credentials=lambda tenant, realm: Credentials("u", "p"))
        phone = h.place_call("9000")
        (first,) = h.invites()
        challenge(first, 407, "carrier")
        second = h.invites()[1]
        CalleePhone(h, second).respond(180)
        phone.cancel()
        (cancel,) = h.stack.cancels
        self.assertEqual(cancel.request.headers.get("Via"), second.request.headers.get("Via"))
        CalleePhone(h, second).respond(487)
        self.assertEqual(phone.txn.statuses[-1], 487)
        self.assertIdle(h)

    def test_the_callee_sdp_is_relayed(self) -> None:
        h = self.build()
        phone = h.place_call("9000")
        (sent,) = h.invites()
        CalleePhone(h, sent).answer(callee_sdp())
        phone.ack()
        self.assertIn(b"m=audio", phone.txn.responses[-1].body)
        phone.bye()
        respond_to(h.stack.sent("BYE")[0], 200)
        self.assertIdle(h)
