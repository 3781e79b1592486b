"""`B2BUA.stateless_challenge`: the 407 to a new INVITE without credentials is built without a transaction
(RFC 3261 8.2.7, `SipStack.answer_statelessly`); every other INVITE goes the stateful way (None), and the
ACK of a stateless 407 is dropped. (Written by ivr at the lead's request, 06:05 in requests.md.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pbx.registrar import ChallengePolicy
from pbx.sip.digest import DigestChallenge

from .fakes import DOMAIN, CallerPhone, FakeFlow, Harness, wire_request
from .test_peers import GATEWAY, lookup


class StatelessChallengeTests(SynchronousTestCase):
    def build(self, **kwargs: Any) -> Harness:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        return Harness.build(path, "dial 1002", peers=lookup, **kwargs)

    def test_a_new_invite_without_credentials_gets_a_407(self) -> None:
        h = self.build()
        phone = h.caller()
        response = h.b2bua.stateless_challenge(phone.invite_request(), phone.flow)
        assert response is not None
        self.assertEqual(response.status, 407)
        self.assertIsNotNone(response.to.tag)
        challenges = [DigestChallenge.parse(v) for v in response.headers.get_all("Proxy-Authenticate")]
        self.assertEqual({c.realm for c in challenges}, {"a.example"})
        self.assertEqual(h.b2bua.counters["challenged"], 1)
        self.assertEqual(h.b2bua.calls, {})

    def test_the_stateless_407_can_be_answered(self) -> None:
        h = self.build()
        h.register_1002()
        phone = h.caller()
        challenge = h.b2bua.stateless_challenge(phone.invite_request(), phone.flow)
        assert challenge is not None
        txn = phone.send_invite(phone.credentials(challenge))
        self.assertEqual(txn.statuses, [])  # ringing 1002
        self.assertEqual(len(h.invites()), 1)

    def test_md5_only_user_agents_get_md5_only(self) -> None:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        h = Harness.build(path, "dial 1002")
        # the harness' phones say "TestPhone/1.0"
        h.b2bua._challenges = ChallengePolicy(h.b2bua._auth, None, md5_only_user_agents=("testphone",))
        phone = h.caller()
        response = h.b2bua.stateless_challenge(phone.invite_request(), phone.flow)
        assert response is not None
        algorithms = [
            DigestChallenge.parse(v).algorithm for v in response.headers.get_all("Proxy-Authenticate")
        ]
        self.assertEqual(algorithms, ["MD5"])

    def test_stateful_cases(self) -> None:
        h = self.build()
        phone = h.caller()
        with_credentials = phone.invite_request('Digest username="1001"')
        self.assertIsNone(h.b2bua.stateless_challenge(with_credentials, phone.flow))
        from_peer = CallerPhone(h, "1002", flow=FakeFlow(remote_address=GATEWAY))
        self.assertIsNone(h.b2bua.stateless_challenge(from_peer.invite_request(), from_peer.flow))
        other_domain = CallerPhone(h, "1002", domain="elsewhere.example")
        self.assertIsNone(h.b2bua.stateless_challenge(other_domain.invite_request(), other_domain.flow))
        in_dialog = wire_request(
            "INVITE",
            f"sip:1002@{DOMAIN}",
            [
                ("From", f"<sip:1001@{DOMAIN}>;tag=a"),
                ("To", f"<sip:1002@{DOMAIN}>;tag=b"),
                ("Call-ID", "x"),
                ("CSeq", "2 INVITE"),
            ],
        )
        self.assertIsNone(h.b2bua.stateless_challenge(in_dialog, phone.flow))
        self.assertEqual(h.b2bua.counters["challenged"], 0)

    def test_the_ack_of_a_stateless_407_is_dropped(self) -> None:
        h = self.build()
        phone = h.caller()
        challenge = h.b2bua.stateless_challenge(phone.invite_request(), phone.flow)
        assert challenge is not None
        ack = wire_request(
            "ACK",
            f"sip:1002@{DOMAIN}",
            [
                ("From", phone.from_value),
                ("To", f"<sip:1002@{DOMAIN}>;tag={challenge.to.tag}"),
                ("Call-ID", phone.call_id),
                ("CSeq", "1 ACK"),
            ],
        )
        self.assertFalse(h.stack.dialogs.route_ack(ack, phone.flow))  # no dialog: dropped, nothing raised
        self.assertEqual((h.b2bua.calls, h.stack.sent("ACK")), ({}, []))
