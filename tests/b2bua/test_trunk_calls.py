"""Calls through trunks: `dial trunk:NAME/NUMBER` (Request-URI, caller ID, P-Asserted-Identity, Privacy, the
carrier's challenge, codecs, failover, 403/503 fast failures, CDRs) and inbound calls by DID.

The B2BUA runs on the fakes of `tests/b2bua/fakes.py` (a recording stack, a task.Clock) with trunks built
directly as `pbx.config.Trunk` values; the resolver is a dictionary of canned targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua import ExtensionInfo
from pbx.config.trunks import Trunk
from pbx.sip.digest import DigestCredentials
from pbx.sip.resolver import Target
from pbx.trunks.routing import TrunkRouting

from .fakes import (
    EXTENSIONS,
    TENANT,
    CalleePhone,
    FakeFlow,
    FakeServerTransaction,
    Harness,
    Registration,
    callee_sdp,
    deliver,
    respond_to,
    sdp,
    sdp_body,
    wire_request,
)
from .test_uri_targets import challenge

CARRIER = Trunk(
    "carrier",
    host="carrier.example",
    username="acct",
    password="trunk-secret",
    realm="carrier",
    caller_id="",
    dids=("+15551230000", "15551230001"),
    networks=("203.0.113.0/24",),
    codecs=("PCMA", "PCMU", "telephone-event"),
)
BACKUP = Trunk("backup", host="backup.example", send_pai=False, networks=("2001:db8::/32",))
TARGETS = {
    "sip:carrier.example": [Target("udp", "203.0.113.5", 5060, "carrier.example")],
    "sip:backup.example": [Target("udp", "198.18.0.7", 5080, "backup.example")],
}
CALLERS = {
    **EXTENSIONS,
    "1001": ExtensionInfo("1001", name="Alice", may_call_out=True),
    "1002": ExtensionInfo("1002", name="Bob", may_call_out=False),
}


class States:
    """ITrunkStates with a switch per trunk and a registered Contact user."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.contacts: dict[str, str] = {}

    def is_up(self, tenant: str, trunk: str) -> bool:
        return trunk not in self.down

    def contact_user(self, tenant: str, trunk: str) -> str | None:
        return self.contacts.get(trunk)


class TrunkTestCase(SynchronousTestCase):
    def build(self, main: str, *trunks: Trunk, **options: Any) -> Harness:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        self.lookups: list[str] = []
        self.states = States()

        def locate(uri: str) -> Deferred[list[Target]]:
            self.lookups.append(uri)
            host = uri.split(";")[0].removeprefix("sip:").split("@")[-1]
            return succeed(TARGETS.get(f"sip:{host}", [Target("udp", "192.0.2.99", 5060, host)]))

        routing = TrunkRouting({TENANT: trunks or (CARRIER, BACKUP)}, self.states)
        options.setdefault("extensions", CALLERS)
        return Harness.build(path, main, locate=locate, trunks=routing, **options)

    def assertIdle(self, h: Harness) -> None:
        self.assertEqual((h.b2bua.calls, len(h.stack.dialogs), h.relay.sessions), ({}, 0, 0))
        self.assertEqual(h.leftover_timers(), [])
        routing = h.b2bua._trunks
        if routing is not None:
            self.assertEqual((routing.in_use(TENANT, "carrier"), routing.in_use(TENANT, "backup")), (0, 0))

    def finish(self, h: Harness, phone: Any) -> None:
        phone.bye()
        for bye in h.stack.sent("BYE"):
            respond_to(bye, 200)


class OutboundTests(TrunkTestCase):
    def test_request_uri_caller_id_pai_and_the_carriers_challenge(self) -> None:
        h = self.build("dial trunk:carrier/{{ call.dialed[1:] }}")
        phone = h.place_call("915551234567")
        (first,) = h.invites()
        request = first.request
        self.assertEqual(str(request.uri), "sip:15551234567@carrier.example")
        self.assertEqual(first.destination, ("udp", "203.0.113.5", 5060))
        self.assertEqual((request.from_.uri.user, request.from_.uri.host), ("1001", "carrier.example"))
        self.assertEqual(request.from_.display_name, "Alice")
        self.assertEqual(request.headers.get("P-Asserted-Identity"), '"Alice" <sip:1001@carrier.example>')
        self.assertNotIn("Privacy", request.headers)
        challenge(first, 407, "carrier")
        second = h.invites()[1]
        authorization = DigestCredentials.parse(second.request.headers.get("Proxy-Authorization") or "")
        self.assertEqual((authorization.username, authorization.realm), ("acct", "carrier"))
        CalleePhone(h, second).answer(callee_sdp(formats=(("8", "PCMA/8000"),)))
        phone.ack()
        self.assertEqual(phone.txn.statuses[-1], 200)
        self.finish(h, phone)
        (cdr,) = h.cdrs()
        self.assertIn("trunk:carrier/15551234567@sip:15551234567@carrier.example=200", cdr.legs)
        self.assertEqual(cdr.answered_by, "trunk:carrier/15551234567")
        self.assertIdle(h)

    def test_the_trunks_caller_id_and_name_win_and_callerid_sets_the_number(self) -> None:
        fixed = Trunk("carrier", host="carrier.example", caller_id="+15550001111", caller_id_name="ACME Inc")
        h = self.build("dial trunk:carrier/123 callerid=+15557654321", fixed)
        h.place_call("9123")
        request = h.invites()[0].request
        self.assertEqual(
            request.headers.get("From").split(";tag=")[0], '"ACME Inc" <sip:+15550001111@carrier.example>'
        )
        h.b2bua.stop()
        h2 = self.build("dial trunk:carrier/123 callerid=+15557654321 callername=Sales")
        h2.place_call("9123")
        request = h2.invites()[0].request
        self.assertEqual(
            request.headers.get("P-Asserted-Identity"), '"Sales" <sip:+15557654321@carrier.example>'
        )
        h2.b2bua.stop()

    def test_withheld_numbers_send_an_anonymous_from_and_privacy_id(self) -> None:
        for main, extra in (
            ("dial trunk:carrier/123 privacy=yes", ()),
            ("dial trunk:carrier/123", (("Privacy", "id"),)),
        ):
            h = self.build(main)
            h.place_call("9123", extra=extra)
            request = h.invites()[0].request
            self.assertEqual(request.from_.uri.user, "anonymous")
            self.assertEqual(request.from_.uri.host, "anonymous.invalid")
            self.assertEqual(request.headers.get("Privacy"), "id")
            self.assertEqual(request.headers.get("P-Asserted-Identity"), '"Alice" <sip:1001@carrier.example>')
            h.b2bua.stop()

    def test_the_offer_carries_the_trunks_codecs_in_its_order(self) -> None:
        h = self.build("dial trunk:carrier/123")
        h.place_call("9123")
        offer = sdp(h.invites()[0].request.body)
        self.assertEqual(offer.media[0].formats, ("8", "0", "101"))
        h.b2bua.stop()

    def test_no_common_codec_is_a_488_for_the_caller(self) -> None:
        h = self.build("dial trunk:carrier/123", Trunk("carrier", host="carrier.example", codecs=("G722",)))
        phone = h.place_call("9123")
        self.assertEqual(h.invites(), [])
        self.assertEqual(phone.txn.statuses, [488])
        self.assertIdle(h)

    def test_callers_that_may_not_call_out_get_403(self) -> None:
        h = self.build("dial trunk:carrier/123")
        phone = h.place_call("9123", user="1002")
        self.assertEqual(h.invites(), [])
        self.assertEqual(phone.txn.statuses, [403])
        self.assertIdle(h)

    def test_failover_after_503_timeout_or_transport_error(self) -> None:
        for fails in (503, 500, 603, "timeout", "transport", "ringtime"):
            h = self.build("dial trunk:carrier/123 trunk:backup/123 ringtime=20")
            phone = h.place_call("9123")
            (first,) = h.invites()
            callee = CalleePhone(h, first)
            if fails == "timeout":
                first.tu.transaction_timeout(first.transaction)
            elif fails == "transport":
                first.tu.transport_error(first.transaction, "refused")
            elif fails == "ringtime":
                callee.respond(180)
                h.clock.advance(20)
                self.assertEqual(len(h.stack.cancels), 1)
                callee.respond(487)
            else:
                callee.respond(fails)
            second = h.invites()[-1]
            self.assertEqual(second.destination, ("udp", "198.18.0.7", 5080), fails)
            self.assertEqual(str(second.request.uri), "sip:123@backup.example")
            self.assertNotIn("P-Asserted-Identity", second.request.headers)  # backup: send_pai = false
            CalleePhone(h, second).answer()
            phone.ack()
            self.assertEqual(phone.txn.statuses[-1], 200, fails)
            self.finish(h, phone)
            self.assertIdle(h)

    def test_no_failover_after_a_4xx_the_caller_should_hear(self) -> None:
        for status in (486, 404, 403, 484):
            h = self.build("dial trunk:carrier/123 trunk:backup/123\nhangup")
            phone = h.place_call("9123")
            CalleePhone(h, h.invites()[0]).respond(status)
            self.assertEqual(len(h.invites()), 1)
            self.assertEqual(phone.txn.statuses[-1], status)
            self.assertIdle(h)

    def test_no_failover_after_the_answer(self) -> None:
        h = self.build("dial trunk:carrier/123 trunk:backup/123")
        phone = h.place_call("9123")
        CalleePhone(h, h.invites()[0]).answer()
        phone.ack()
        phone.bye()
        respond_to(h.stack.sent("BYE")[0], 200)
        self.assertEqual(len(h.invites()), 1)
        self.assertIdle(h)

    def test_a_down_trunk_fails_fast_with_503_and_fails_over(self) -> None:
        h = self.build("dial trunk:carrier/123 trunk:backup/123")
        self.states.down.add("carrier")
        phone = h.place_call("9123")
        (only,) = h.invites()
        self.assertEqual(str(only.request.uri), "sip:123@backup.example")
        CalleePhone(h, only).respond(503)
        self.assertEqual(phone.txn.statuses[-1], 480)  # a carrier's 503 is not passed on
        (cdr,) = h.cdrs()
        self.assertIn("trunk:carrier/123@sip:123@carrier.example=503", cdr.legs)
        self.assertIn("trunk:backup/123@sip:123@backup.example=503", cdr.legs)
        self.assertIdle(h)

    def test_every_trunk_down_is_a_503_for_the_caller(self) -> None:
        h = self.build("dial trunk:carrier/123")
        self.states.down.add("carrier")
        phone = h.place_call("9123")
        self.assertEqual(h.invites(), [])
        self.assertEqual(phone.txn.statuses, [503])
        self.assertIdle(h)

    def test_a_trunk_at_max_calls_fails_fast(self) -> None:
        one = Trunk("carrier", host="carrier.example", max_calls=1)
        h = self.build("dial trunk:carrier/123", one)
        first = h.place_call("9123")
        self.assertEqual(len(h.invites()), 1)
        second = h.place_call("9123")
        self.assertEqual(second.txn.statuses, [503])
        self.assertEqual(len(h.invites()), 1)
        CalleePhone(h, h.invites()[0]).answer()
        first.ack()
        self.finish(h, first)
        third = h.place_call("9123")  # the trunk is free again
        self.assertEqual(len(h.invites()), 2)
        CalleePhone(h, h.invites()[1]).respond(486)
        self.assertEqual(third.txn.statuses[-1], 486)
        self.assertIdle(h)

    def test_early_media_from_the_carrier_reaches_the_caller(self) -> None:
        h = self.build("dial trunk:carrier/123")
        phone = h.place_call("9123")
        callee = CalleePhone(h, h.invites()[0])
        callee.respond(183, callee_sdp(formats=(("8", "PCMA/8000"),)))
        progress = phone.txn.responses[-1]
        self.assertEqual(progress.status, 183)
        self.assertIn(b"m=audio 40000 RTP/AVP 8", progress.body)
        callee.answer(callee_sdp(formats=(("8", "PCMA/8000"),)))
        phone.ack()
        self.finish(h, phone)
        self.assertIdle(h)

    def test_outbound_proxy_and_proxies(self) -> None:
        proxied = Trunk("carrier", host="carrier.example", outbound_proxy="192.0.2.80:5070", transport="udp")
        h = self.build("dial trunk:carrier/123", proxied)
        h.place_call("9123")
        sent = h.invites()[0]
        self.assertEqual(self.lookups, ["sip:192.0.2.80:5070;transport=udp"])
        self.assertEqual(str(sent.request.uri), "sip:123@carrier.example;transport=udp")
        self.assertEqual(sent.request.headers.get("Route"), "<sip:192.0.2.80:5070;transport=udp;lr>")
        h.b2bua.stop()
        listed = Trunk("carrier", proxies=("carrier.example", "backup.example"))
        h = self.build("dial trunk:carrier/123", listed)
        h.place_call("9123")
        first = h.invites()[0]
        self.assertEqual(str(first.request.uri), "sip:123@carrier.example")
        CalleePhone(h, first).respond(503)  # RFC 3263 failover inside the trunk
        self.assertEqual(h.invites()[1].destination, ("udp", "198.18.0.7", 5080))
        h.b2bua.stop()

    def test_unknown_trunks_are_unavailable(self) -> None:
        h = self.build("dial trunk:nosuch/123\nhangup 404")
        phone = h.place_call("9123")
        self.assertEqual(phone.txn.statuses, [404])
        self.assertIdle(h)


def carrier_invite(
    h: Harness,
    uri: str,
    *,
    source: tuple[str, int] = ("203.0.113.5", 5060),
    to: str | None = None,
    caller: str = "+15559876543",
) -> FakeServerTransaction:
    """An INVITE as a carrier sends it, without credentials."""
    headers = [
        ("From", f'"Caller" <sip:{caller}@carrier.example>;tag=carrier1'),
        ("To", f"<{to or uri}>"),
        ("Call-ID", f"carrier-{id(h)}-{uri}-{source[0]}"),
        ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:{caller}@{source[0]}:{source[1]}>"),
    ]
    request = wire_request("INVITE", uri, headers, sdp_body(), via_host=f"{source[0]}:{source[1]}")
    txn = FakeServerTransaction(request, FakeFlow(remote_address=source))
    deliver(h.b2bua, txn)
    return txn


INBOUND = """
{% if call.trunk == "carrier" and call.did in ("+15551230000", "15551230000") %}
dial 1003
{% elif call.trunk %}
hangup 480
{% else %}
hangup 404
{% endif %}
"""


class InboundTests(TrunkTestCase):
    def test_a_did_from_the_trunks_network_reaches_an_extension_without_a_challenge(self) -> None:
        h = self.build(INBOUND)
        h.register(Registration("1003", "sip:1003@192.168.1.30:5066", "udp:127.0.0.1:5066"))
        txn = carrier_invite(h, "sip:+15551230000@198.51.100.1")
        (sent,) = h.invites()
        self.assertEqual(str(sent.request.uri), "sip:1003@192.168.1.30:5066")
        self.assertEqual(sent.request.from_.uri.user, "+15559876543")
        self.assertEqual(sent.request.from_.display_name, "Caller")
        CalleePhone(h, sent).answer()
        self.assertEqual(txn.statuses[-1], 200)
        call = next(iter(h.b2bua.calls.values()))
        context = h.b2bua.context_for(call)
        self.assertEqual((context["call"].did, context["call"].trunk), ("+15551230000", "carrier"))
        self.assertEqual((context["caller"].extension, context["caller"].authenticated), (None, False))
        call.hangup("pbx")
        for bye in h.stack.sent("BYE"):
            respond_to(bye, 200)
        (cdr,) = h.cdrs()
        self.assertEqual((cdr.caller, cdr.dialed), ("trunk:carrier/+15559876543", "+15551230000"))
        self.assertIdle(h)

    def test_an_unknown_did_is_refused_with_404(self) -> None:
        h = self.build(INBOUND)
        txn = carrier_invite(h, "sip:15559999999@198.51.100.1")
        self.assertEqual(txn.statuses, [404])
        self.assertEqual(h.invites(), [])
        self.assertIdle(h)

    def test_the_did_from_to_and_the_registered_contact(self) -> None:
        registered = Trunk(
            "carrier",
            host="carrier.example",
            register=True,
            contact_user="trk7f3a",
            did_source="to",
            dids=("15551230001",),
        )
        h = self.build("hangup 486", registered)
        self.states.contacts["carrier"] = "trk7f3a"
        txn = carrier_invite(
            h, "sip:trk7f3a@198.51.100.1", source=("192.0.2.200", 5060), to="sip:15551230001@a.example"
        )
        self.assertEqual(txn.statuses, [486])  # routed (the template refused it), not challenged
        txn = carrier_invite(
            h, "sip:trk7f3a@198.51.100.1", source=("192.0.2.200", 5060), to="sip:15550000000@a.example"
        )
        self.assertEqual(txn.statuses, [404])
        self.assertIdle(h)

    def test_from_elsewhere_a_trunks_did_is_challenged(self) -> None:
        h = self.build(INBOUND)
        txn = carrier_invite(h, "sip:+15551230000@a.example", source=("192.0.2.200", 5060))
        self.assertEqual(txn.statuses, [407])
        self.assertIsNone(
            h.b2bua.stateless_challenge(txn.request, FakeFlow(remote_address=("203.0.113.9", 5060)))
        )
        self.assertIsNotNone(
            h.b2bua.stateless_challenge(txn.request, FakeFlow(remote_address=("192.0.2.9", 5060)))
        )
        self.assertIdle(h)

    def test_a_trunks_caller_cannot_call_out_through_a_trunk(self) -> None:
        h = self.build("dial trunk:backup/123")
        txn = carrier_invite(h, "sip:15551230001@198.51.100.1")
        self.assertEqual(txn.statuses, [403])
        self.assertIdle(h)


class RoutingTests(SynchronousTestCase):
    def test_source_networks_ipv4_ipv6_and_mapped(self) -> None:
        routing = TrunkRouting({"t": (CARRIER, BACKUP)})
        for source, name in (
            ("203.0.113.77", "carrier"),
            ("::ffff:203.0.113.77", "carrier"),
            ("2001:db8::5", "backup"),
            ("[2001:db8::5]", "backup"),
            ("203.0.114.1", None),
            ("not-an-address", None),
        ):
            found = routing.inbound(source, "15551230000")
            self.assertEqual(found.trunk.name if found else None, name, source)

    def test_disabled_trunks_take_no_calls(self) -> None:
        off = Trunk("carrier", host="carrier.example", networks=("203.0.113.0/24",), enabled=False)
        routing = TrunkRouting({"t": (off,)})
        self.assertIsNone(routing.inbound("203.0.113.5", "1"))
        self.assertFalse(routing.is_up("t", "carrier"))

    def test_dids_ignore_a_leading_plus(self) -> None:
        routing = TrunkRouting({"t": (CARRIER,)})
        self.assertTrue(routing.has_did("t", CARRIER, "15551230000"))
        self.assertTrue(routing.has_did("t", CARRIER, "+15551230001"))
        self.assertFalse(routing.has_did("t", CARRIER, "15551230002"))
        self.assertFalse(routing.has_did("t", CARRIER, ""))

    def test_acquire_and_release(self) -> None:
        routing = TrunkRouting({"t": (Trunk("x", host="h", max_calls=2),)})
        a, b, c = object(), object(), object()
        self.assertEqual([routing.acquire(o, "t", "x") for o in (a, b, c)], [True, True, False])
        self.assertTrue(routing.acquire(a, "t", "x"))  # held already
        routing.release(a)
        routing.release(a)
        self.assertEqual(routing.in_use("t", "x"), 1)
        self.assertTrue(routing.acquire(c, "t", "x"))


class OddNumberTests(TrunkTestCase):
    def test_star_and_hash_in_a_trunk_number(self) -> None:
        h = self.build('dial trunk:carrier/{{ "*67" ~ call.dialed[1:] ~ "#" }}')
        h.place_call("9123")
        (sent,) = h.invites()
        self.assertEqual(sent.request.uri.user, "*67123#")
        self.assertIn("%23@carrier.example", str(sent.request.uri))
        h.b2bua.stop()
