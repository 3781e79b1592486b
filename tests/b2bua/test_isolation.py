"""Topology hiding, identity and tenant isolation in the B2BUA (docs/security.md): what a callee or a carrier
receives of the caller's INVITE, identity headers from phones and trunks, and DIDs of tenants sharing a
carrier. The B2BUA runs on the fakes of `tests/b2bua/fakes.py`."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua import ExtensionInfo, TrustedPeer
from pbx.config.trunks import Trunk
from pbx.trunks.routing import TrunkRouting

from .fakes import (
    CalleePhone,
    FakeFlow,
    FakeServerTransaction,
    Harness,
    Registration,
    deliver,
    respond_to,
    sdp_body,
    wire_request,
)
from .test_trunk_calls import CARRIER, TrunkTestCase

PRIVATE_SDP = (
    b"v=0\r\no=phone 99 1 IN IP4 192.168.1.10\r\ns=Acme Deskphone\r\ni=desk\r\nc=IN IP4 192.168.1.10\r\n"
    b"t=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=rtcp:40001 IN IP4 192.168.1.10\r\na=candidate:1 1 UDP 2130706431 192.168.1.10 40000 typ host\r\n"
    b"a=ssrc:42 cname:alice@192.168.1.10\r\na=tool:AcmePhone 1.2\r\na=sendrecv\r\n"
)

PHONE_IDENTITY = [
    ("P-Asserted-Identity", "<sip:+15550000000@evil.example>"),
    ("P-Preferred-Identity", "<sip:+15550000001@evil.example>"),
    ("Remote-Party-ID", "<sip:+15550000002@evil.example>;party=calling"),
    ("Diversion", "<sip:+15550000003@evil.example>;reason=unconditional"),
    ("History-Info", "<sip:+15550000004@evil.example>;index=1"),
    ("X-Internal", "10.0.0.7"),
    ("Record-Route", "<sip:10.0.0.1;lr>"),
]

INSIDE = (
    "192.168.1.10",
    "evil.example",
    "AcmePhone",
    "Acme Deskphone",
    "TestPhone",
    "caller-call-",
    "10.0.0",
)


class TopologyTests(TrunkTestCase):
    def _assert_hidden(self, raw: str) -> None:
        for leaked in INSIDE:
            self.assertNotIn(leaked, raw)
        for header in ("P-Asserted-Identity: <sip:+1555000", "P-Preferred-Identity", "Remote-Party-ID"):
            self.assertNotIn(header, raw)
        for header in ("Diversion", "History-Info", "X-Internal", "Record-Route"):
            self.assertNotIn(f"{header}:", raw)

    def test_a_carrier_sees_nothing_of_the_phone(self) -> None:
        """The INVITE to the trunk: the PBX's Call-ID, Via, Contact, User-Agent and SDP; the identity the
        trunk presents (not the one the phone claimed); none of the phone's addresses or software."""
        h = self.build("dial trunk:carrier/{{ call.dialed[1:] }}")
        phone = h.place_call("915551234567", body=PRIVATE_SDP, extra=PHONE_IDENTITY)
        (sent,) = h.invites()
        raw = bytes(sent.request).decode()
        self._assert_hidden(raw)
        self.assertNotIn(phone.call_id, raw)
        self.assertEqual(
            sent.request.headers.get_all("P-Asserted-Identity"), ['"Alice" <sip:1001@carrier.example>']
        )
        self.assertNotIn("a=candidate", raw)
        self.assertIn("s=-\r\n", raw)
        h.b2bua.stop()

    def test_a_phone_sees_nothing_of_another_phone(self) -> None:
        h = self.build("dial 1003")
        h.register(Registration("1003", "sip:1003@192.0.2.30:5066", "udp:192.0.2.30:5066"))
        phone = h.place_call("1003", body=PRIVATE_SDP, extra=PHONE_IDENTITY, display_name="X" * 500)
        (sent,) = h.invites()
        raw = bytes(sent.request).decode()
        self._assert_hidden(raw)
        self.assertEqual(sent.request.from_.display_name, "Alice")  # the extension's name, not the phone's
        CalleePhone(h, sent).answer()
        phone.ack()
        self.finish(h, phone)
        self.assertIdle(h)

    def test_a_long_display_name_is_bounded(self) -> None:
        nameless = {"1001": ExtensionInfo("1001", name="", may_call_out=True)}
        h = self.build("dial 1003", extensions={**nameless, "1003": ExtensionInfo("1003", name="Carol")})
        h.register(Registration("1003", "sip:1003@192.0.2.30:5066", "udp:192.0.2.30:5066"))
        h.place_call("1003", display_name="N" * 300)
        (sent,) = h.invites()
        self.assertEqual(sent.request.from_.display_name, "N" * 64)
        h.b2bua.stop()

    def test_a_callees_reason_phrase_naming_the_inside_is_not_passed_back(self) -> None:
        h = self.build("dial 1003")
        h.register(Registration("1003", "sip:1003@192.0.2.30:5066", "udp:192.0.2.30:5066"))
        phone = h.place_call("1003")
        (sent,) = h.invites()
        ringing = sent.request.response(180, "Ringing at 10.20.30.40", to_tag="callee1")
        sent.tu.response_received(sent.transaction, ringing)
        assert phone.txn is not None
        ringing = [r for r in phone.txn.responses if r.status == 180]
        self.assertEqual([r.reason for r in ringing], ["Ringing"])
        h.b2bua.stop()


class SameCallIdTests(TrunkTestCase):
    def test_a_call_reusing_another_calls_call_id_never_takes_its_place(self) -> None:
        """A phone sends the Call-ID of a call in progress (another tenant's phone's, say): both calls live
        side by side, and the end of the second leaves the first one known (hung up when the PBX stops)."""
        h = self.build("dial 1003")
        h.register(Registration("1003", "sip:1003@192.0.2.30:5066", "udp:192.0.2.30:5066"))
        first = h.caller("1003")
        second = h.caller("1003", user="1002")
        second.call_id = first.call_id
        first.call()
        CalleePhone(h, h.invites()[0]).answer()
        first.ack()
        second.call()
        self.assertEqual(len(h.b2bua.calls), 2)
        h.b2bua.calls[next(k for k in h.b2bua.calls if k != first.call_id)].reject(486)
        self.assertEqual([c.caller.extension for c in h.b2bua.calls.values()], ["1001"])
        h.b2bua.stop()
        for bye in h.stack.sent("BYE"):
            respond_to(bye, 200)
        self.assertEqual(h.b2bua.calls, {})
        self.assertIdle(h)


class PeerTests(TrunkTestCase):
    def test_another_tenants_peer_is_challenged(self) -> None:
        """A gateway trusted by tenant "other" sends an INVITE to this tenant's domain: no trust carries
        over, it is challenged like any unknown source."""
        gateway = ("192.0.2.50", 5060)

        def peers(tenant: str, host: str) -> TrustedPeer | None:
            return TrustedPeer("gw", "1003") if (tenant, host) == ("other", gateway[0]) else None

        h = self.build("dial 1002", peers=peers)
        h.register_1002()
        phone = h.caller("1002", user="9999", flow=FakeFlow(remote_address=gateway))
        txn = phone.send_invite()
        self.assertEqual([r.status for r in txn.responses if r.status >= 200], [407])
        self.assertEqual(h.invites(), [])
        self.assertIsNotNone(h.b2bua.stateless_challenge(txn.request, FakeFlow(remote_address=gateway)))
        self.assertIdle(h)


TRUSTED = Trunk(
    "carrier",
    host="carrier.example",
    dids=("+15551230000",),
    networks=("203.0.113.0/24",),
    trust_identity=True,
)

INBOUND = "dial 1003"


def carrier_call_with_identity(h: Harness, source: tuple[str, int] = ("203.0.113.5", 5060)) -> None:
    headers = [
        ("From", '"Claimed" <sip:+15559876543@carrier.example>;tag=c1'),
        ("To", "<sip:+15551230000@198.51.100.1>"),
        ("Call-ID", f"carrier-identity-{id(h)}"),
        ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:+15559876543@{source[0]}:{source[1]}>"),
        ("P-Asserted-Identity", '"Asserted Name" <sip:+15551112222@10.9.9.9>'),
        ("Remote-Party-ID", "<sip:+15553334444@carrier.example>;party=calling"),
        ("Diversion", "<sip:+15557778888@carrier.example>;reason=no-answer"),
        ("History-Info", "<sip:+15551230000@carrier.example>;index=1"),
        ("P-Preferred-Identity", "<sip:+15556660000@carrier.example>"),
    ]
    request = wire_request(
        "INVITE", "sip:+15551230000@198.51.100.1", headers, sdp_body(), via_host="203.0.113.5"
    )
    txn = FakeServerTransaction(request, FakeFlow(remote_address=source))
    deliver(h.b2bua, txn)


class IdentityTests(TrunkTestCase):
    def test_an_untrusted_trunks_identity_headers_stop_at_the_pbx(self) -> None:
        h = self.build(INBOUND, CARRIER)
        h.register(Registration("1003", "sip:1003@192.0.2.30:5066", "udp:192.0.2.30:5066"))
        carrier_call_with_identity(h)
        (sent,) = h.invites()
        request = sent.request
        for name in (
            "P-Asserted-Identity",
            "Remote-Party-ID",
            "Diversion",
            "History-Info",
            "P-Preferred-Identity",
        ):
            self.assertNotIn(name, request.headers)
        self.assertEqual(request.from_.uri.user, "+15559876543")  # the From, as claimed
        self.assertEqual(request.from_.display_name, "Claimed")
        h.b2bua.stop()

    def test_a_trusted_trunk_asserts_the_caller(self) -> None:
        h = self.build(INBOUND, TRUSTED)
        h.register(Registration("1003", "sip:1003@192.0.2.30:5066", "udp:192.0.2.30:5066"))
        carrier_call_with_identity(h)
        (sent,) = h.invites()
        request = sent.request
        self.assertEqual(request.from_.uri.user, "+15551112222")
        self.assertEqual(request.from_.display_name, "Asserted Name")
        self.assertEqual(
            request.headers.get_all("P-Asserted-Identity"), ['"Asserted Name" <sip:+15551112222@a.example>']
        )
        self.assertEqual(
            request.headers.get_all("Diversion"), ["<sip:+15557778888@carrier.example>;reason=no-answer"]
        )
        self.assertEqual(len(request.headers.get_all("History-Info")), 1)
        self.assertNotIn("Remote-Party-ID", request.headers)
        self.assertNotIn("P-Preferred-Identity", request.headers)
        self.assertNotIn("10.9.9.9", bytes(request).decode())
        h.b2bua.stop()


class SharedCarrierTests(SynchronousTestCase):
    """Two tenants with trunks to one carrier (the same networks): each DID reaches its own tenant."""

    def test_each_did_goes_to_the_tenant_that_has_it(self) -> None:
        a = Trunk("carrier", host="carrier.example", dids=("+15551230000",), networks=("203.0.113.0/24",))
        b = Trunk("carrier", host="carrier.example", dids=("+15559990000",), networks=("203.0.113.0/24",))
        routing = TrunkRouting({"a": (a,), "b": (b,)})
        for did, tenant in (("+15551230000", "a"), ("+15559990000", "b"), ("+15550000000", "a")):
            request = wire_request(
                "INVITE",
                f"sip:{did}@198.51.100.1",
                [("From", "<sip:x@carrier.example>;tag=1"), ("To", f"<sip:{did}@198.51.100.1>"),
                 ("Call-ID", "c"), ("CSeq", "1 INVITE")],
                b"",
            )  # fmt: skip
            found = routing.inbound_call("203.0.113.5", request)
            assert found is not None
            self.assertEqual(found.tenant, tenant, did)
        self.assertIsNone(routing.inbound_call("192.0.2.1", request))
