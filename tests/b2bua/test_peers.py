"""Trusted peers: INVITEs authenticated by source address skip the 407 and call as the peer's extension;
everyone else is still challenged (`B2BUA(peers=...)`, `pbx.service.adapters.peer_lookup`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua import TrustedPeer
from pbx.config import parse_config
from pbx.service.adapters import peer_lookup

from .fakes import TENANT, CallerPhone, FakeFlow, Harness

GATEWAY = ("192.0.2.10", 5080)
PEER = TrustedPeer("gw", "1003")


def lookup(tenant: str, host: str) -> TrustedPeer | None:
    return PEER if (tenant, host) == (TENANT, GATEWAY[0]) else None


class TrustedPeerTests(SynchronousTestCase):
    def build(self, main: str, peers: Any = lookup) -> Harness:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        return Harness.build(path, main, peers=peers)

    def test_a_peer_calls_without_a_challenge_as_its_extension(self) -> None:
        h = self.build('{% if caller.extension == "1003" and caller.authenticated %}dial 1002{% endif %}')
        h.register_1002()
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        phone = CallerPhone(h, "1002", user="9999", flow=FakeFlow(remote_address=GATEWAY))
        txn = phone.send_invite()  # no credentials at all
        self.assertEqual([r.status for r in txn.responses if r.status == 407], [])
        callee = h.callee()
        callee.respond(180)
        callee.answer()
        phone.ack()
        self.assertEqual(txn.final.status if txn.final else None, 200)
        phone.bye()
        (cdr,) = h.cdrs()
        self.assertEqual(
            (cdr.caller, cdr.dialed, cdr.answered_by, cdr.cause), ("1003", "1002", "1002", "normal")
        )
        self.assertEqual(h.b2bua.counters["challenged"], 0)
        (event,) = [e for e in logged if "ended" in e.get("line", "")]
        self.assertEqual((event["caller"], event["peer"]), ("1003", "gw"))
        self.assertIn(", 1003@acme (peer gw) -> 1002 answered by 1002", event["line"])
        self.assertEqual(formatEvent(event), event["line"])  # the line is the event's text

    def test_other_sources_are_still_challenged(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        for address in [("192.0.2.11", 5080), ("192.168.1.10", 5060)]:
            with self.subTest(address=address):
                phone = CallerPhone(h, "1002", flow=FakeFlow(remote_address=address))
                txn = phone.send_invite()
                self.assertEqual(txn.final.status if txn.final else None, 407)
        h.place_call("1002")  # a phone with credentials still calls
        self.assertEqual(len(h.invites()), 1)

    def test_without_peers_the_gateway_is_challenged_too(self) -> None:
        h = self.build("dial 1002", peers=None)
        phone = CallerPhone(h, "1002", flow=FakeFlow(remote_address=GATEWAY))
        txn = phone.send_invite()
        self.assertEqual(txn.final.status if txn.final else None, 407)

    def test_a_peer_whose_extension_is_gone_is_refused(self) -> None:
        h = self.build("dial 1002", peers=lambda tenant, host: TrustedPeer("gw", "7777"))
        phone = CallerPhone(h, "1002", flow=FakeFlow(remote_address=GATEWAY))
        txn = phone.send_invite()
        self.assertEqual(txn.final.status if txn.final else None, 403)


MINIMAL: dict[str, Any] = {
    "sip": {"listen": [{"transport": "udp", "host": "127.0.0.1"}]},
    "tenants": {
        "a": {
            "domain": "a.example",
            "extensions": {"1000": {"password": "x"}, "1001": {"password": "y"}},
            "peers": [
                {"name": "gw", "networks": ["192.0.2.10", "2001:db8::/64"], "extension": "1000"},
                {"name": "lan", "networks": ["198.51.100.0/24"], "extension": "1001"},
            ],
        },
        "b": {"domain": "b.example", "extensions": {"1000": {"password": "z"}}},
    },
}


class PeerLookupTests(SynchronousTestCase):
    def test_sources_map_to_the_tenants_peers(self) -> None:
        find = peer_lookup(parse_config(MINIMAL, Path("/etc/pbx")))
        assert find is not None
        self.assertEqual(find("a", "192.0.2.10"), TrustedPeer("gw", "1000"))
        self.assertEqual(find("a", "::ffff:192.0.2.10"), TrustedPeer("gw", "1000"))  # dual-stack socket
        self.assertEqual(find("a", "[2001:db8::5]"), TrustedPeer("gw", "1000"))
        self.assertEqual(find("a", "198.51.100.200"), TrustedPeer("lan", "1001"))
        for tenant, host in [("a", "192.0.2.11"), ("b", "192.0.2.10"), ("a", "gateway.example"), ("c", "x")]:
            with self.subTest(tenant=tenant, host=host):
                self.assertIsNone(find(tenant, host))

    def test_no_peers_configured_means_no_lookup(self) -> None:
        document = {**MINIMAL, "tenants": {"b": MINIMAL["tenants"]["b"]}}
        self.assertIsNone(peer_lookup(parse_config(document, Path("/etc/pbx"))))

    def test_answers_are_remembered_within_a_bound(self) -> None:
        from pbx.service import adapters

        find = peer_lookup(parse_config(MINIMAL, Path("/etc/pbx")))
        assert find is not None
        for i in range(adapters.PEER_MEMO_MAX + 10):  # more sources than the memo holds: it starts over
            self.assertIsNone(find("a", f"10.0.{i // 256}.{i % 256}"))
        self.assertEqual(find("a", "192.0.2.10"), TrustedPeer("gw", "1000"))
        self.assertEqual(find("a", "192.0.2.10"), TrustedPeer("gw", "1000"))
        self.assertIsNone(find("a", "192.0.2.11"))


class LogFormatTests(SynchronousTestCase):
    def test_the_call_line_is_its_own_format(self) -> None:
        from pbx.b2bua.b2bua import as_log_format

        for text in ("Call a@b ended: normal", "Call {x}@b ended: {cause} }{ {{", "Call {0}@{!r}"):
            self.assertEqual(formatEvent({"log_format": as_log_format(text), "line": "other"}), text)
