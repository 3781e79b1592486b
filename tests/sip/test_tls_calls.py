"""Calls over TLS (issue 13): the Contact scheme the PBX puts in dialogs, and flows reached only on their
own connection.

- RFC 3261 26.2, 19.1 and RFC 5630: `sips:` only for a dialog whose Request-URI is `sips`; a `sip:` request
  that arrived over TLS gets a `sip:...;transport=tls` Contact (baresip closes a call whose 200 carries a
  `sips` Contact it did not ask for, "Function not implemented", and sends no ACK).
- RFC 5626 5.3 / RFC 5923: a peer that connected to us (a phone over TCP/TLS) is reached on that
  connection; once it has closed, a send to its source address fails at once instead of opening a new
  connection to an ephemeral port that nothing listens on. Our own connections (to listeners) reconnect.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from pbx.sip.flow import ClosedInboundFlows
from pbx.sip.message import Request
from pbx.sip.parser import ParserLimits, parse_message
from pbx.sip.session_events import SessionListener
from pbx.sip.session_uas import UasSession
from pbx.sip.transport import TransportError, TransportManager
from tests.sip.test_stack import FakeFlow, make_stack
from tests.sip.test_transport import OK, OPTIONS, FakeReactor, RecordingSink, lose


def invite(uri: str, transport: str = "TLS") -> Request:
    text = (
        f"INVITE {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 192.0.2.10:40000;branch=z9hG4bKtls1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:1001@127.0.0.1>;tag=a1\r\n"
        "To: <sip:1002@127.0.0.1>\r\n"
        "Call-ID: tls-call-1\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:1001@192.0.2.10:40000;transport={transport.lower()}>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


class ContactSchemeTests(SynchronousTestCase):
    def test_contact_over_tls_is_sip_with_transport_tls_unless_secure(self) -> None:
        stack, _, clock = make_stack()
        self.assertEqual(stack.contact_for("tls", "192.0.2.10"), "<sip:pbx@127.0.0.1:5060;transport=tls>")
        self.assertEqual(
            stack.contact_for("TLS", "192.0.2.10", secure=True), "<sips:pbx@127.0.0.1:5060;transport=tls>"
        )
        self.assertEqual(stack.contact_for("tcp", "192.0.2.10"), "<sip:pbx@127.0.0.1:5060;transport=tcp>")
        self.assertEqual(stack.contact_for("udp", "192.0.2.10", "u", secure=True), "<sip:u@127.0.0.1:5060>")
        self.assertEqual(clock.getDelayedCalls(), [])

    def uas_contact(self, uri: str) -> str:
        stack, _, clock = make_stack()
        transaction = SimpleNamespace(request=invite(uri), flow=FakeFlow("TLS", ("192.0.2.10", 40000), True))
        session = UasSession(stack, transaction, SessionListener())  # type: ignore[arg-type]
        self.assertEqual(clock.getDelayedCalls(), [])
        return session.contact

    def test_a_sip_invite_over_tls_gets_a_sip_contact_with_transport_tls(self) -> None:
        self.assertEqual(self.uas_contact("sip:1002@127.0.0.1"), "<sip:pbx@127.0.0.1:5060;transport=tls>")

    def test_a_sips_invite_gets_a_sips_contact(self) -> None:
        self.assertEqual(self.uas_contact("sips:1002@127.0.0.1"), "<sips:pbx@127.0.0.1:5060;transport=tls>")


class FlowReuseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.manager = TransportManager(
            self.reactor,
            RecordingSink(),
            limits=ParserLimits(),
            idle_timeout=0,
            tls_client_options_factory=lambda host: ("client-options", host),
            tls_server_options="server-options",
        )
        self.manager.listen_tcp("10.0.0.1", 5060)

    def tearDown(self) -> None:
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def accept(self, peer: tuple[str, int]) -> tuple[object, StringTransport]:
        factory = self.reactor.tcpServers[0][1]
        protocol = factory.buildProtocol(IPv4Address("TCP", *peer))
        wire = StringTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.1", 5060), peerAddress=IPv4Address("TCP", *peer)
        )
        protocol.makeConnection(wire)
        protocol.dataReceived(OPTIONS)
        return protocol, wire

    def test_requests_to_a_phone_go_on_its_connection_and_never_on_a_new_one(self) -> None:
        protocol, wire = self.accept(("192.0.2.9", 40000))
        self.successResultOf(self.manager.send(OK, "TCP", "192.0.2.9", 40000))
        self.assertEqual(wire.value(), OK)
        lose(protocol)
        failure = self.failureResultOf(self.manager.send(OPTIONS, "TCP", "192.0.2.9", 40000), TransportError)
        self.assertIn("reached only over its own connection", failure.getErrorMessage())
        self.assertEqual(self.reactor.tcpClients, [])  # no connection to the ephemeral port
        self.assertEqual(self.manager.counters.sends_to_closed_flows, 1)

    def test_the_phone_connecting_again_is_reached_on_the_new_connection(self) -> None:
        protocol, _ = self.accept(("192.0.2.9", 40000))
        lose(protocol)
        _, wire = self.accept(("192.0.2.9", 40000))
        self.successResultOf(self.manager.send(OK, "TCP", "192.0.2.9", 40000))
        self.assertEqual(wire.value(), OK)
        self.assertEqual(len(self.manager.closed_inbound), 0)

    def test_another_connection_from_the_address_keeps_it_reachable(self) -> None:
        first, _ = self.accept(("192.0.2.9", 40000))
        self.accept(("192.0.2.9", 40002))
        lose(first)
        self.assertNotIn(("TCP", "192.0.2.9", 40002), self.manager.closed_inbound)
        self.manager.send(OK, "TCP", "192.0.2.9", 5060)  # a listener's port: connects
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_our_own_connections_to_a_listener_reconnect(self) -> None:
        self.manager.send(OPTIONS, "TCP", "192.0.2.5", 5060)
        host, port, factory = self.reactor.tcpClients[0][:3]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        protocol.makeConnection(
            StringTransport(
                hostAddress=IPv4Address("TCP", "10.0.0.1", 40001),
                peerAddress=IPv4Address("TCP", "192.0.2.5", 5060),
            )
        )
        lose(protocol)
        self.manager.send(OPTIONS, "TCP", "192.0.2.5", 5060)
        self.assertEqual(len(self.reactor.tcpClients), 2)


class ClosedInboundFlowsTests(SynchronousTestCase):
    def test_remembered_for_a_lifetime_and_bounded(self) -> None:
        clock = Clock()
        flows = ClosedInboundFlows(clock, lifetime=60, limit=2)
        flows.closed(("TLS", "192.0.2.9", 40000))
        self.assertIn(("TLS", "192.0.2.9", 40000), flows)
        clock.advance(61)
        self.assertNotIn(("TLS", "192.0.2.9", 40000), flows)
        for port in (1, 2, 3):
            flows.closed(("TCP", "192.0.2.9", port))
        self.assertEqual(len(flows), 2)
        self.assertNotIn(("TCP", "192.0.2.9", 1), flows)
        flows.opened(("TCP", "192.0.2.9", 2))
        self.assertNotIn(("TCP", "192.0.2.9", 2), flows)
        self.assertIn(("TCP", "192.0.2.9", 3), flows)
        self.assertEqual(clock.getDelayedCalls(), [])
