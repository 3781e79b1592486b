"""`Admission` on the transports (issue 14): datagrams and stream messages are refused before the parser,
a blocked source's connection is cut, and new connections are rate limited per source."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from pbx.sip import protocols
from pbx.sip.admission import Admission, Limit
from pbx.sip.parser import ParserLimits
from pbx.sip.screening import RawScreen
from pbx.sip.transport import TransportManager
from tests.sip.test_transport import OPTIONS, FakeReactor, RecordingSink, lose, stream_protocol, udp_protocol

SCANNER = OPTIONS.replace(b"Content-Length", b"User-Agent: friendly-scanner\r\nContent-Length")


def admission(clock: Any, **kwargs: Any) -> Admission:
    options: dict[str, Any] = {
        "messages": Limit(5.0, 5.0),
        "connections": Limit(2.0, 2.0),
        "block_after": 5.0,
        "block_duration": 60.0,
        "screen": RawScreen(),
    }
    options.update(kwargs)
    return Admission(clock, **options)


class NoParse:
    """Fails the test if the parser is reached."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise AssertionError("parsed")


class DatagramAdmissionTests(SynchronousTestCase):
    def test_refused_datagrams_never_reach_the_parser(self) -> None:
        sink = RecordingSink()
        clock = Clock()
        gate = admission(clock)
        protocol, _, _ = udp_protocol(sink, admission=gate)
        for _ in range(5):
            protocol.datagramReceived(OPTIONS, ("192.0.2.1", 5060))
        self.assertEqual(len(sink.messages), 5)
        no_parse = NoParse()
        self.patch(protocols, "parse_message", no_parse)
        for _ in range(100):
            protocol.datagramReceived(OPTIONS, ("192.0.2.1", 5060))
            protocol.datagramReceived(b"\r\n\r\n", ("192.0.2.1", 5060))  # keep-alives count too
        protocol.datagramReceived(SCANNER, ("192.0.2.2", 5060))
        self.assertEqual(no_parse.calls, 0)
        self.assertEqual(gate.blocked_sources, ["192.0.2.1", "192.0.2.2"])
        self.assertEqual(protocol.monitor.counters.keepalives_received, 0)
        self.assertEqual(clock.getDelayedCalls(), [])


class StreamAdmissionTests(SynchronousTestCase):
    def test_stream_messages_are_limited_and_a_blocked_source_is_cut(self) -> None:
        clock = Clock()
        gate = admission(clock)
        sink = RecordingSink()
        protocol, wire, _ = stream_protocol(sink, admission=gate)
        protocol.dataReceived(OPTIONS * 8)  # 5 admitted, 3 dropped (strikes 3 of 5)
        self.assertEqual(len(sink.messages), 5)
        self.assertFalse(wire.disconnecting)
        protocol.dataReceived(OPTIONS * 3)  # strike 6: blocked, cut
        self.assertEqual(len(sink.messages), 5)
        self.assertTrue(wire.disconnected)  # aborted
        self.assertEqual(protocol.monitor.counters.connections_cut_blocked, 1)
        lose(protocol)

    def test_a_scanner_on_a_stream_is_cut(self) -> None:
        gate = admission(Clock())
        sink = RecordingSink()
        protocol, wire, _ = stream_protocol(sink, admission=gate)
        protocol.dataReceived(SCANNER + OPTIONS)
        self.assertEqual(sink.messages, [])
        self.assertTrue(wire.disconnected)
        lose(protocol)

    def test_a_connection_from_a_blocked_source_is_cut_at_its_next_bytes(self) -> None:
        gate = admission(Clock())
        sink = RecordingSink()
        protocol, wire, _ = stream_protocol(sink, admission=gate)
        gate.block("192.0.2.7", 600, "guard")
        protocol.dataReceived(OPTIONS)
        self.assertEqual(sink.messages, [])
        self.assertTrue(wire.disconnected)
        lose(protocol)


class ConnectionAdmissionTests(SynchronousTestCase):
    def test_new_connections_are_rate_limited_per_source(self) -> None:
        reactor = FakeReactor()
        gate = admission(reactor)
        manager = TransportManager(
            reactor, RecordingSink(), limits=ParserLimits(), idle_timeout=600, admission=gate
        )
        manager.listen_tcp("10.0.0.1", 5060)
        factory = reactor.tcpServers[0][1]
        accepted = []
        for port in range(40000, 40004):
            peer = IPv4Address("TCP", "192.0.2.9", port)
            protocol = factory.buildProtocol(peer)
            if protocol is not None:
                protocol.makeConnection(
                    StringTransport(hostAddress=IPv4Address("TCP", "10.0.0.1", 5060), peerAddress=peer)
                )
                accepted.append(protocol)
        self.assertEqual(len(accepted), 2)
        self.assertEqual(manager.counters.connections_refused_rate, 2)
        other = factory.buildProtocol(IPv4Address("TCP", "192.0.2.10", 40000))
        self.assertIsNotNone(other)
        for protocol in accepted:
            lose(protocol)

    def test_a_block_aborts_the_sources_open_connections(self) -> None:
        reactor = FakeReactor()
        gate = admission(reactor)
        manager = TransportManager(
            reactor, RecordingSink(), limits=ParserLimits(), idle_timeout=600, admission=gate
        )
        manager.listen_tcp("10.0.0.1", 5060)
        factory = reactor.tcpServers[0][1]
        wires = {}
        for host in ("192.0.2.9", "192.0.2.10"):
            peer = IPv4Address("TCP", host, 40000)
            wire = StringTransport(hostAddress=IPv4Address("TCP", "10.0.0.1", 5060), peerAddress=peer)
            factory.buildProtocol(peer).makeConnection(wire)
            wires[host] = wire
        gate.block("192.0.2.9", 60, "guard")
        self.assertTrue(wires["192.0.2.9"].disconnected)
        self.assertFalse(wires["192.0.2.10"].disconnecting)
        self.assertEqual(manager.counters.connections_cut_blocked, 1)
