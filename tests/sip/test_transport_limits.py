"""Connection hygiene in `pbx.sip.protocols` and `pbx.sip.transport` (issue 10): the TLS handshake timeout,
the first-message timeout of accepted connections, the per-source-address and total caps on accepted
connections, and a wildcard route probe that fails (no descriptor) not being remembered."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from pbx.sip import transport as transport_module
from pbx.sip.parser import ParserLimits
from pbx.sip.transport import SipStreamProtocol, TransportManager
from tests.sip.test_transport import OPTIONS, FakeReactor, RecordingSink, lose, stream_protocol


class HandshakeTimeoutTests(SynchronousTestCase):
    def test_a_tls_connection_that_never_handshakes_is_aborted(self) -> None:
        protocol, wire, clock = stream_protocol(RecordingSink(), transport="TLS", handshake_timeout=10)
        clock.advance(9.9)
        self.assertFalse(wire.disconnecting)
        clock.advance(0.1)
        self.assertTrue(wire.disconnecting)
        self.assertTrue(wire.disconnected)  # aborted: such a peer would not answer a TLS close_notify
        self.assertEqual(protocol.monitor.counters.connections_cut_handshake, 1)
        self.assertFalse(protocol.ready)
        lose(protocol)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_completed_handshake_stops_the_timer(self) -> None:
        protocol, wire, clock = stream_protocol(RecordingSink(), transport="TLS", handshake_timeout=10)
        clock.advance(5)
        protocol.handshakeCompleted()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(100)
        self.assertFalse(wire.disconnecting)
        self.assertTrue(protocol.ready)
        lose(protocol)

    def test_tcp_has_no_handshake_timer(self) -> None:
        protocol, _, clock = stream_protocol(RecordingSink(), transport="TCP", handshake_timeout=10)
        self.assertEqual(clock.getDelayedCalls(), [])
        lose(protocol)


class FirstMessageTimeoutTests(SynchronousTestCase):
    def test_keepalives_and_garbage_are_not_a_first_message(self) -> None:
        sink = RecordingSink()
        protocol, wire, clock = stream_protocol(sink, first_message_timeout=30)
        clock.advance(10)
        protocol.dataReceived(b"\r\n\r\n")  # a ping: answered, but not SIP
        self.assertEqual(wire.value(), b"\r\n")
        clock.advance(10)
        protocol.dataReceived(b"NOT SIP AT ALL\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(len(sink.undecodables), 1)
        clock.advance(10)
        self.assertTrue(wire.disconnecting)
        self.assertEqual(protocol.monitor.counters.connections_cut_silent, 1)
        lose(protocol)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_message_in_time_stops_the_timer(self) -> None:
        sink = RecordingSink()
        protocol, wire, clock = stream_protocol(sink, first_message_timeout=30)
        clock.advance(29)
        protocol.dataReceived(OPTIONS)
        self.assertEqual(len(sink.messages), 1)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(1000)
        self.assertFalse(wire.disconnecting)
        self.assertEqual(protocol.monitor.counters.connections_cut_silent, 0)
        lose(protocol)

    def test_on_tls_the_handshake_time_counts(self) -> None:
        protocol, wire, clock = stream_protocol(
            RecordingSink(), transport="TLS", handshake_timeout=10, first_message_timeout=30
        )
        clock.advance(9)
        protocol.handshakeCompleted()
        clock.advance(21)
        self.assertTrue(wire.disconnecting)
        self.assertEqual(protocol.monitor.counters.connections_cut_silent, 1)
        lose(protocol)
        self.assertEqual(clock.getDelayedCalls(), [])


class ConnectionCapTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def manager(self, **kwargs: Any) -> TransportManager:
        manager = TransportManager(
            self.reactor,
            RecordingSink(),
            limits=ParserLimits(),
            idle_timeout=600,
            tls_server_options="server-options",
            **kwargs,
        )
        manager.listen_tcp("10.0.0.1", 5060)
        manager.listen_tls("10.0.0.1", 5061)
        return manager

    def accept(self, host: str, port: int = 40000, tls: bool = False) -> tuple[Any, StringTransport]:
        """What the listening port does: build a protocol (None: close the socket), then connect it."""
        factory = (self.reactor.sslServers if tls else self.reactor.tcpServers)[0][1]
        kind = IPv6Address if ":" in host else IPv4Address
        peer = kind("TCP", host, port)
        protocol = factory.buildProtocol(peer)
        wire = StringTransport(hostAddress=IPv4Address("TCP", "10.0.0.1", 5060), peerAddress=peer)
        if protocol is not None:
            protocol.makeConnection(wire)
        return protocol, wire

    def messages(self, text: str) -> list[dict[str, Any]]:
        return [e for e in self.logged if text in e.get("log_format", "")]

    def test_one_address_is_capped_others_are_not(self) -> None:
        manager = self.manager(max_connections_per_address=2, first_message_timeout=0)
        first, _ = self.accept("192.0.2.9", 40000)
        second, _ = self.accept("192.0.2.9", 40001)
        self.assertIsInstance(first, SipStreamProtocol)
        self.assertIsInstance(second, SipStreamProtocol)
        refused, _ = self.accept("192.0.2.9", 40002)
        self.assertIsNone(refused)  # the listening port closes the socket at once
        self.assertEqual(manager.counters.connections_refused_address, 1)
        self.assertEqual(manager.connections_from("192.0.2.9"), 2)
        self.assertEqual(len(self.messages("sip.max_connections_per_address")), 1)
        # another address (a phone behind another NAT) still gets in, over TCP and TLS
        other, wire = self.accept("192.0.2.10")
        other.dataReceived(OPTIONS)
        self.assertFalse(wire.disconnecting)
        self.assertIsInstance(self.accept("192.0.2.10", 40001, tls=True)[0], SipStreamProtocol)
        # a closed connection frees its place
        lose(first)
        self.assertEqual(manager.connections_from("192.0.2.9"), 1)
        again, _ = self.accept("192.0.2.9", 40003)
        self.assertIsInstance(again, SipStreamProtocol)
        self.assertEqual(manager.counters.connections_open, 4)

    def test_ipv6_sources_are_counted_by_their_normal_form(self) -> None:
        manager = self.manager(max_connections_per_address=1, first_message_timeout=0)
        self.assertIsNotNone(self.accept("2001:db8::1")[0])
        self.assertIsNone(self.accept("2001:0db8:0:0::1", 40001)[0])
        self.assertEqual(manager.connections_from("[2001:db8::1]"), 1)

    def test_a_refused_tls_connection_is_aborted_before_any_handshake(self) -> None:
        manager = self.manager(max_connections_per_address=1, first_message_timeout=0)
        self.accept("192.0.2.9", tls=True)
        refused, wire = self.accept("192.0.2.9", 40001, tls=True)
        self.assertNotIsInstance(refused, SipStreamProtocol)
        self.assertTrue(wire.disconnected)
        self.assertEqual(manager.counters.connections_refused_address, 1)
        self.assertEqual(manager.counters.connections_open, 1)

    def test_the_total_cap_refuses_and_logs_rate_limited(self) -> None:
        manager = self.manager(max_connections=3, first_message_timeout=0)
        accepted = [self.accept(f"192.0.2.{n}")[0] for n in range(1, 4)]
        self.assertTrue(all(isinstance(p, SipStreamProtocol) for p in accepted))
        for n in range(20):
            self.assertIsNone(self.accept(f"198.51.100.{n}")[0])
        self.assertEqual(manager.counters.connections_refused_global, 20)
        lines = self.messages("sip.max_connections)")
        self.assertEqual(len(lines), 10)  # the monitor's burst; the rest are counted
        self.assertEqual(lines[0]["count"], 3)
        self.reactor.advance(60)
        self.assertIsNone(self.accept("198.51.100.99")[0])
        self.assertIn(
            "10 similar messages suppressed", self.messages("sip.max_connections)")[-1]["log_format"]
        )
        lose(accepted[0])
        self.assertIsInstance(self.accept("198.51.100.99")[0], SipStreamProtocol)

    def test_outgoing_connections_count_towards_the_total_but_are_not_refused(self) -> None:
        manager = self.manager(max_connections=1, first_message_timeout=0)
        manager.send(OPTIONS, "TCP", "192.0.2.5", 5060)
        manager.send(OPTIONS, "TCP", "192.0.2.6", 5060)
        for host, port, factory, *_ in self.reactor.tcpClients:
            protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
            protocol.makeConnection(
                StringTransport(
                    hostAddress=IPv4Address("TCP", "10.0.0.1", 40001),
                    peerAddress=IPv4Address("TCP", host, port),
                )
            )
        self.assertEqual(manager.counters.connections_open, 2)
        self.assertIsNone(self.accept("192.0.2.9")[0])
        self.assertEqual(manager.counters.connections_refused_global, 1)

    def test_accepted_connections_get_the_first_message_timeout_and_outgoing_ones_do_not(self) -> None:
        manager = self.manager(first_message_timeout=30)
        incoming, incoming_wire = self.accept("192.0.2.9")
        manager.send(OPTIONS, "TCP", "192.0.2.5", 5060)
        host, port, factory, *_ = self.reactor.tcpClients[0]
        outgoing = factory.buildProtocol(IPv4Address("TCP", host, port))
        outgoing_wire = StringTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.1", 40001), peerAddress=IPv4Address("TCP", host, port)
        )
        outgoing.makeConnection(outgoing_wire)
        self.reactor.advance(30)
        self.assertTrue(incoming_wire.disconnecting)
        self.assertFalse(outgoing_wire.disconnecting)
        self.assertEqual(manager.counters.connections_cut_silent, 1)
        lose(incoming)
        self.assertEqual(manager.connections_from("192.0.2.9"), 0)
        lose(outgoing)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_tls_handshake_timeout_applies_to_accepted_and_outgoing_connections(self) -> None:
        manager = self.manager(handshake_timeout=10, first_message_timeout=0)
        manager._tls_client_options_factory = lambda host: ("client-options", host)
        incoming, incoming_wire = self.accept("192.0.2.9", tls=True)
        sent = manager.send(OPTIONS, "TLS", "192.0.2.5", 5061)
        host, port, factory, *_ = self.reactor.sslClients[0]
        outgoing = factory.buildProtocol(IPv4Address("TCP", host, port))
        outgoing_wire = StringTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.1", 40001), peerAddress=IPv4Address("TCP", host, port)
        )
        outgoing.makeConnection(outgoing_wire)
        self.reactor.advance(10)
        self.assertTrue(incoming_wire.disconnected)
        self.assertTrue(outgoing_wire.disconnected)
        self.assertEqual(manager.counters.connections_cut_handshake, 2)
        lose(incoming)
        lose(outgoing)
        self.failureResultOf(sent)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_stopping_manager_accepts_nothing(self) -> None:
        manager = self.manager(first_message_timeout=0)
        manager.stop()
        self.assertIsNone(self.accept("192.0.2.9")[0])


class RouteProbeTests(SynchronousTestCase):
    def test_a_failed_route_probe_is_asked_again(self) -> None:
        """With no descriptor for the probe socket the wildcard is given for now, not remembered."""
        manager = TransportManager(FakeReactor(), RecordingSink(), limits=ParserLimits(), idle_timeout=60)
        manager.listen_udp("0.0.0.0", 5060)
        answers: list[str | None] = [None, "192.0.2.50"]
        original = transport_module._route_source
        transport_module._route_source = lambda destination: answers.pop(0)  # type: ignore[assignment]
        self.addCleanup(setattr, transport_module, "_route_source", original)
        self.assertEqual(manager.local_address("UDP", "192.0.2.1"), ("0.0.0.0", 5060))
        self.assertEqual(manager.local_address("UDP", "192.0.2.1"), ("192.0.2.50", 5060))
        self.assertEqual(manager.local_address("UDP", "192.0.2.1"), ("192.0.2.50", 5060))  # remembered
