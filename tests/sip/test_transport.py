"""Tests for `pbx.sip.transport`: datagram and stream protocols on fakes, the manager on a memory reactor,
and a few round trips over real loopback sockets (UDP, TCP with connection reuse, TLS, IPv6)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.error import CannotListenError, ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pbx.sip.errors import SipParseError
from pbx.sip.interfaces import IFlow, IMessageSink
from pbx.sip.message import Request, Response
from pbx.sip.parser import ParserLimits
from pbx.sip.tls import client_options_factory, ensure_dev_certificate, server_options
from pbx.sip.transport import (
    SipDatagramProtocol,
    SipStreamProtocol,
    StreamFlow,
    TransportError,
    TransportManager,
    TransportMonitor,
    UdpFlow,
)

OPTIONS = (
    b"OPTIONS sip:pbx@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:pbx@127.0.0.1>\r\n"
    b"From: <sip:alice@192.0.2.1>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 63104 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
MESSAGE = (
    b"MESSAGE sip:pbx@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKmsg1\r\n"
    b"To: <sip:pbx@127.0.0.1>\r\n"
    b"From: <sip:alice@192.0.2.1>;tag=99\r\n"
    b"Call-ID: msg-1\r\n"
    b"CSeq: 1 MESSAGE\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 5\r\n"
    b"\r\n"
    b"hello"
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    b"To: <sip:pbx@127.0.0.1>;tag=a6c85cf\r\n"
    b"From: <sip:alice@192.0.2.1>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 63104 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


@implementer(IMessageSink)
class RecordingSink:
    """Records what a transport delivers; optionally raises to prove nothing escapes."""

    def __init__(self, raise_on: type[Exception] | None = None) -> None:
        self.messages: list[tuple[Any, IFlow]] = []
        self.undecodables: list[tuple[bytes, IFlow, Exception]] = []
        self._raise_on = raise_on

    def message_received(self, message: object, flow: IFlow) -> None:
        self.messages.append((message, flow))
        if self._raise_on is not None:
            raise self._raise_on("sink exploded")

    def undecodable(self, data: bytes, flow: IFlow, error: Exception) -> None:
        self.undecodables.append((data, flow, error))
        if self._raise_on is not None:
            raise self._raise_on("sink exploded")


class FakeUdpPort:
    """A listening UDP port that records what is written."""

    def __init__(self, host: str = "10.0.0.1", port: int = 5060) -> None:
        address_type = IPv6Address if ":" in host else IPv4Address
        self.address = address_type("UDP", host, port)
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False
        self.fail_with: Exception | None = None

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append((data, addr))

    def getHost(self) -> IPv4Address | IPv6Address:
        return self.address

    def stopListening(self) -> None:
        self.stopped = True


class FakeReactor(MemoryReactorClock):
    """A memory reactor that also fakes `listenUDP`."""

    def __init__(self) -> None:
        super().__init__()
        self.udp: list[tuple[FakeUdpPort, Any, int]] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> Any:
        fake = FakeUdpPort(interface or "0.0.0.0", port or 5060 + len(self.udp))
        protocol.makeConnection(fake)
        self.udp.append((fake, protocol, maxPacketSize))
        return fake


def udp_protocol(sink: RecordingSink, **kwargs: Any) -> tuple[SipDatagramProtocol, FakeUdpPort, Clock]:
    clock = Clock()
    protocol = SipDatagramProtocol(sink, clock=clock, **kwargs)
    port = FakeUdpPort()
    protocol.makeConnection(port)
    return protocol, port, clock


def stream_protocol(
    sink: RecordingSink, transport: str = "TCP", **kwargs: Any
) -> tuple[SipStreamProtocol, StringTransport, Clock]:
    clock = Clock()
    protocol = SipStreamProtocol(sink, clock=clock, transport=transport, **kwargs)
    wire = StringTransport(
        hostAddress=IPv4Address("TCP", "10.0.0.1", 5060), peerAddress=IPv4Address("TCP", "192.0.2.7", 40000)
    )
    protocol.makeConnection(wire)
    return protocol, wire, clock


def stun_request(transaction_id: bytes = b"0123456789ab") -> bytes:
    return struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction_id


def lose(protocol: SipStreamProtocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


class DatagramProtocolTests(SynchronousTestCase):
    def test_datagram_becomes_message_on_a_udp_flow(self) -> None:
        """A datagram is parsed and delivered with a flow that answers to its real source (RFC 3581)."""
        sink = RecordingSink()
        protocol, port, _ = udp_protocol(sink)
        protocol.datagramReceived(OPTIONS, ("192.0.2.1", 40123))
        [(message, flow)] = sink.messages
        self.assertIsInstance(message, Request)
        self.assertEqual(message.method, "OPTIONS")
        verifyObject(IFlow, flow)
        self.assertEqual((flow.transport, flow.reliable, flow.secure), ("UDP", False, False))
        self.assertEqual(flow.remote_address, ("192.0.2.1", 40123))
        self.assertEqual(flow.local_address, ("10.0.0.1", 5060))
        self.assertTrue(flow.connected())
        flow.send(OK)
        self.assertEqual(port.sent, [(OK, ("192.0.2.1", 40123))])
        self.assertEqual(protocol.monitor.counters.messages_received, 1)
        self.assertEqual(protocol.monitor.counters.messages_sent, 1)

    def test_one_flow_per_peer_is_reused(self) -> None:
        """The flow of a peer is built once (addresses normalized once) and reused for its next datagrams."""
        sink = RecordingSink()
        protocol, _, _ = udp_protocol(sink)
        protocol.datagramReceived(OPTIONS, ("192.0.2.1", 40123))
        protocol.datagramReceived(OPTIONS, ("192.0.2.1", 40123))
        protocol.datagramReceived(OPTIONS, ("192.0.2.1", 40124))
        first, second, third = (flow for _, flow in sink.messages)
        self.assertIs(first, second)
        self.assertIsNot(first, third)
        self.assertEqual(third.remote_address, ("192.0.2.1", 40124))

    def test_flow_cache_is_bounded(self) -> None:
        sink = RecordingSink()
        protocol, _, _ = udp_protocol(sink)
        protocol.max_flows = 3
        for port in range(10):
            protocol.datagramReceived(OPTIONS, ("192.0.2.1", 40000 + port))
        self.assertLessEqual(len(protocol._flows), 3)
        self.assertEqual([f.remote_address[1] for _, f in sink.messages], list(range(40000, 40010)))

    def test_garbage_is_undecodable(self) -> None:
        sink = RecordingSink()
        protocol, _, _ = udp_protocol(sink)
        protocol.datagramReceived(b"\x80garbage that is not SIP", ("192.0.2.1", 5060))
        self.assertEqual(sink.messages, [])
        [(data, flow, error)] = sink.undecodables
        self.assertEqual(data, b"\x80garbage that is not SIP")
        self.assertIsInstance(error, SipParseError)
        self.assertEqual(flow.remote_address, ("192.0.2.1", 5060))
        self.assertEqual(protocol.monitor.counters.undecodable, 1)

    def test_crlf_keepalives_are_ignored(self) -> None:
        sink = RecordingSink()
        protocol, port, _ = udp_protocol(sink)
        for keepalive in (b"", b"\r\n", b"\r\n\r\n"):
            protocol.datagramReceived(keepalive, ("192.0.2.1", 5060))
        self.assertEqual((sink.messages, sink.undecodables, port.sent), ([], [], []))
        self.assertEqual(protocol.monitor.counters.keepalives_received, 3)

    def test_stun_binding_request_is_answered_with_the_mapped_address(self) -> None:
        """RFC 5626 4.4.2 keep-alive: XOR-MAPPED-ADDRESS carries the source address (RFC 5389 15.2)."""
        sink = RecordingSink()
        protocol, port, _ = udp_protocol(sink)
        protocol.datagramReceived(stun_request(), ("192.0.2.1", 40123))
        [(response, addr)] = port.sent
        self.assertEqual(addr, ("192.0.2.1", 40123))
        kind, length, cookie = struct.unpack("!HHI", response[:8])
        self.assertEqual((kind, length, cookie), (0x0101, 12, 0x2112A442))
        self.assertEqual(response[8:20], b"0123456789ab")
        attr, attr_len, _, family, xport = struct.unpack("!HHBBH", response[20:28])
        self.assertEqual((attr, attr_len, family), (0x0020, 8, 1))
        self.assertEqual(xport ^ 0x2112, 40123)
        xaddr = bytes(a ^ b for a, b in zip(response[28:32], struct.pack("!I", 0x2112A442), strict=True))
        self.assertEqual(socket.inet_ntoa(xaddr), "192.0.2.1")
        self.assertEqual(sink.undecodables, [])

    def test_stun_over_ipv6_xors_with_the_transaction_id(self) -> None:
        sink = RecordingSink()
        protocol, port, _ = udp_protocol(sink)
        protocol.datagramReceived(stun_request(b"abcdefghijkl"), ("2001:db8::1", 5060))
        [(response, _)] = port.sent
        mask = struct.pack("!I", 0x2112A442) + b"abcdefghijkl"
        xaddr = bytes(a ^ b for a, b in zip(response[28:44], mask, strict=True))
        self.assertEqual(socket.inet_ntop(socket.AF_INET6, xaddr), "2001:db8::1")

    def test_sink_exceptions_do_not_escape(self) -> None:
        sink = RecordingSink(raise_on=ZeroDivisionError)
        protocol, _, _ = udp_protocol(sink)
        protocol.datagramReceived(OPTIONS, ("192.0.2.1", 5060))
        protocol.datagramReceived(b"garbage", ("192.0.2.1", 5060))
        protocol.datagramReceived(OPTIONS, ("192.0.2.1", 5060))
        self.assertEqual((len(sink.messages), len(sink.undecodables)), (2, 1))
        self.assertEqual(protocol.monitor.counters.sink_errors, 3)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 3)

    def test_error_logging_is_rate_limited(self) -> None:
        sink = RecordingSink(raise_on=ZeroDivisionError)
        clock = Clock()
        monitor = TransportMonitor(clock, log_interval=60, log_burst=2)
        protocol = SipDatagramProtocol(sink, clock=clock, monitor=monitor)
        protocol.makeConnection(FakeUdpPort())
        for _ in range(5):
            protocol.datagramReceived(OPTIONS, ("192.0.2.1", 5060))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        clock.advance(60)
        protocol.datagramReceived(OPTIONS, ("192.0.2.1", 5060))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(monitor.counters.sink_errors, 6)

    def test_udp_flows_compare_by_addresses(self) -> None:
        port = FakeUdpPort()
        a = UdpFlow(port, ("192.0.2.1", 5060), ("10.0.0.1", 5060))
        b = UdpFlow(port, ("192.0.2.1", 5060), ("10.0.0.1", 5060))
        c = UdpFlow(port, ("192.0.2.1", 5061), ("10.0.0.1", 5060))
        self.assertEqual(a, b)
        self.assertEqual(hash(a), hash(b))
        self.assertNotEqual(a, c)
        self.assertEqual(len({a, b, c}), 2)

    def test_flows_from_the_socket_send_with_sendto_and_handle_its_errors_as_twisted_does(self) -> None:
        import errno as errno_codes

        from twisted.internet.error import MessageLengthError

        class Socket:
            def __init__(self) -> None:
                self.sent: list[tuple[bytes, object]] = []
                self.errors: list[int] = []

            def sendto(self, data: bytes, addr: object) -> None:
                if self.errors:
                    raise OSError(self.errors.pop(0), "error")
                self.sent.append((data, addr))

        port = FakeUdpPort()
        port.socket = Socket()  # type: ignore[attr-defined]
        flow = UdpFlow(port, ("::1", 5062, 0, 0), ("::1", 5060), from_socket=True)
        flow.write(b"x")
        self.assertEqual(port.socket.sent, [(b"x", ("::1", 5062, 0, 0))])  # type: ignore[attr-defined]
        self.assertEqual(flow.remote_address, ("::1", 5062))
        port.socket.errors = [errno_codes.EINTR]  # type: ignore[attr-defined]
        flow.write(b"again")
        port.socket.errors = [errno_codes.ECONNREFUSED]  # type: ignore[attr-defined]
        flow.write(b"refused: ignored")
        port.socket.errors = [errno_codes.EMSGSIZE]  # type: ignore[attr-defined]
        self.assertRaises(MessageLengthError, flow.write, b"too big")
        self.assertEqual([d for d, _ in port.socket.sent], [b"x", b"again"])  # type: ignore[attr-defined]
        self.assertEqual(port.sent, [])  # Port.write never used

    def test_udp_send_errors_are_swallowed_by_flow_send(self) -> None:
        port = FakeUdpPort()
        port.fail_with = OSError(101, "Network is unreachable")
        monitor = TransportMonitor(Clock())
        flow = UdpFlow(port, ("192.0.2.1", 5060), ("10.0.0.1", 5060), monitor=monitor)
        flow.send(OK)
        self.assertEqual(monitor.counters.send_errors, 1)
        self.assertRaises(OSError, flow.write, OK)


class StreamProtocolTests(SynchronousTestCase):
    def test_framing_across_chunk_boundaries(self) -> None:
        """Messages split anywhere, or several in one chunk, come out whole (RFC 3261 18.3)."""
        sink = RecordingSink()
        protocol, _, _ = stream_protocol(sink)
        stream = MESSAGE + OPTIONS + MESSAGE
        for i in range(0, len(stream), 7):
            protocol.dataReceived(stream[i : i + 7])
        self.assertEqual([m.method for m, _ in sink.messages], ["MESSAGE", "OPTIONS", "MESSAGE"])
        self.assertEqual(sink.messages[0][0].body, b"hello")
        protocol.dataReceived(OPTIONS + MESSAGE)
        self.assertEqual(len(sink.messages), 5)
        flow = sink.messages[0][1]
        verifyObject(IFlow, flow)
        self.assertIsInstance(flow, StreamFlow)
        self.assertEqual((flow.transport, flow.reliable, flow.secure), ("TCP", True, False))
        self.assertEqual(flow.remote_address, ("192.0.2.7", 40000))
        self.assertEqual(flow.local_address, ("10.0.0.1", 5060))

    def test_ping_gets_a_pong(self) -> None:
        """RFC 5626 3.5.1: a double CRLF is answered with a single CRLF and reaches no sink."""
        sink = RecordingSink()
        protocol, wire, _ = stream_protocol(sink)
        protocol.dataReceived(b"\r\n")
        self.assertEqual(wire.value(), b"")
        protocol.dataReceived(b"\r\n")
        self.assertEqual(wire.value(), b"\r\n")
        protocol.dataReceived(b"\r\n\r\n" + OPTIONS)
        self.assertEqual(wire.value(), b"\r\n\r\n")
        self.assertEqual(len(sink.messages), 1)
        self.assertEqual(protocol.monitor.counters.keepalives_received, 2)

    def test_oversized_message_closes_the_connection(self) -> None:
        sink = RecordingSink()
        protocol, wire, _ = stream_protocol(sink, limits=ParserLimits(max_message_size=300))
        protocol.dataReceived(MESSAGE.replace(b"Content-Length: 5", b"Content-Length: 5000"))
        self.assertTrue(wire.disconnecting)
        self.assertFalse(protocol.flow.connected())
        self.assertEqual(protocol.monitor.counters.connections_cut_oversized, 1)
        protocol.dataReceived(OPTIONS)
        self.assertEqual((sink.messages, sink.undecodables), ([], []))

    def test_endless_header_is_cut_at_the_buffer_limit(self) -> None:
        sink = RecordingSink()
        protocol, wire, _ = stream_protocol(sink, limits=ParserLimits(max_message_size=300))
        protocol.dataReceived(b"INVITE sip:x SIP/2.0\r\n" + b"X-Pad: aaaaaaaa\r\n" * 30)
        self.assertTrue(wire.disconnecting)
        self.assertEqual(protocol.monitor.counters.connections_cut_oversized, 1)

    def test_bad_content_length_closes_the_connection(self) -> None:
        sink = RecordingSink()
        protocol, wire, _ = stream_protocol(sink)
        protocol.dataReceived(MESSAGE.replace(b"Content-Length: 5", b"Content-Length: five"))
        self.assertTrue(wire.disconnecting)
        self.assertEqual(protocol.monitor.counters.connections_cut_framing, 1)

    def test_malformed_framed_message_is_undecodable_and_the_connection_lives(self) -> None:
        sink = RecordingSink()
        protocol, wire, _ = stream_protocol(sink)
        protocol.dataReceived(OPTIONS.replace(b"OPTIONS sip:pbx@127.0.0.1 SIP/2.0", b"OPTIONS"))
        protocol.dataReceived(OPTIONS)
        self.assertEqual((len(sink.undecodables), len(sink.messages)), (1, 1))
        self.assertIsInstance(sink.undecodables[0][2], SipParseError)
        self.assertFalse(wire.disconnecting)

    def test_idle_timeout_closes_and_received_bytes_reset_it(self) -> None:
        sink = RecordingSink()
        protocol, wire, clock = stream_protocol(sink, idle_timeout=30, header_timeout=None)
        clock.advance(29)
        protocol.dataReceived(b"\r\n\r\n")
        clock.advance(29)
        self.assertFalse(wire.disconnecting)
        clock.advance(1)
        self.assertTrue(wire.disconnecting)
        self.assertFalse(protocol.flow.connected())
        self.assertEqual(protocol.monitor.counters.connections_cut_idle, 1)
        clock.advance(5)  # no close within the grace period: abort
        self.assertTrue(wire.disconnected)
        lose(protocol)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(protocol.monitor.counters.connections_open, 0)

    def test_slow_sender_is_cut_after_the_header_timeout(self) -> None:
        sink = RecordingSink()
        protocol, wire, clock = stream_protocol(sink, idle_timeout=100, header_timeout=32)
        for byte in OPTIONS[:32]:  # one byte a second keeps the idle timer happy
            protocol.dataReceived(bytes([byte]))
            clock.advance(0.999)
        self.assertFalse(wire.disconnecting)
        clock.advance(0.1)
        self.assertTrue(wire.disconnecting)
        self.assertEqual(protocol.monitor.counters.connections_cut_slow, 1)
        self.assertEqual(sink.messages, [])
        lose(protocol)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_header_timer_restarts_per_message_and_ignores_pending_crlf(self) -> None:
        sink = RecordingSink()
        protocol, wire, clock = stream_protocol(sink, header_timeout=32)
        protocol.dataReceived(OPTIONS[:20])
        clock.advance(30)
        protocol.dataReceived(OPTIONS[20:] + OPTIONS[:20])  # one completes, the next starts
        clock.advance(30)
        protocol.dataReceived(OPTIONS[20:] + b"\r\n")  # a lone CRLF (a pong) is not a partial message
        clock.advance(100)
        self.assertFalse(wire.disconnecting)
        self.assertEqual(len(sink.messages), 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_sink_exceptions_do_not_escape(self) -> None:
        sink = RecordingSink(raise_on=ZeroDivisionError)
        protocol, wire, _ = stream_protocol(sink)
        protocol.dataReceived(OPTIONS + OPTIONS)
        self.assertEqual(len(sink.messages), 2)
        self.assertFalse(wire.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_tls_is_ready_after_the_handshake(self) -> None:
        ready: list[SipStreamProtocol] = []
        closed: list[SipStreamProtocol] = []
        protocol, _, _ = stream_protocol(
            RecordingSink(),
            transport="TLS",
            on_ready=ready.append,
            on_closed=lambda p, _: closed.append(p),
        )
        self.assertEqual(ready, [])
        protocol.handshakeCompleted()
        self.assertEqual(ready, [protocol])
        self.assertTrue(protocol.flow.secure)
        lose(protocol)
        self.assertEqual(closed, [protocol])
        self.assertFalse(protocol.flow.connected())
        self.assertTrue(protocol.when_closed().called)

    def test_trace_sees_messages_but_not_keepalives(self) -> None:
        traced: list[tuple[str, str, bytes]] = []
        monitor = TransportMonitor(Clock(), lambda d, t, f, data: traced.append((d, t, data)))
        protocol, _, _ = stream_protocol(RecordingSink(), monitor=monitor)
        protocol.dataReceived(b"\r\n\r\n" + OPTIONS)
        protocol.flow.send(OK)
        protocol.flow.send(b"\r\n\r\n")
        self.assertEqual(traced, [("recv", "TCP", OPTIONS), ("send", "TCP", OK)])

    def test_send_after_close_is_dropped(self) -> None:
        protocol, wire, _ = stream_protocol(RecordingSink())
        lose(protocol)
        protocol.flow.send(OK)
        self.assertEqual(wire.value(), b"")


class TransportManagerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.sink = RecordingSink()
        self.traced: list[tuple[str, str, bytes]] = []
        self.manager = TransportManager(
            self.reactor,
            self.sink,
            limits=ParserLimits(),
            idle_timeout=60,
            tls_client_options_factory=lambda host: ("client-options", host),
            tls_server_options="server-options",
            trace=lambda d, t, f, data: self.traced.append((d, t, data)),
        )

    def connect_outgoing(
        self, index: int = 0, peer: tuple[str, int] = ("192.0.2.5", 5060), tls: bool = False
    ) -> tuple[SipStreamProtocol, StringTransport]:
        clients = self.reactor.sslClients if tls else self.reactor.tcpClients
        host, port, factory = clients[index][:3]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        wire = StringTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.1", 40001), peerAddress=IPv4Address("TCP", *peer)
        )
        protocol.makeConnection(wire)
        return protocol, wire

    def accept(
        self, index: int = 0, peer: tuple[str, int] = ("192.0.2.9", 40000)
    ) -> tuple[Any, StringTransport]:
        factory = self.reactor.tcpServers[index][1]
        protocol = factory.buildProtocol(IPv4Address("TCP", *peer))
        wire = StringTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.1", 5060), peerAddress=IPv4Address("TCP", *peer)
        )
        protocol.makeConnection(wire)
        return protocol, wire

    def test_udp_send_uses_a_listener_of_the_right_family_and_scope(self) -> None:
        loopback = self.manager.listen_udp("127.0.0.1", 5060)
        anywhere = self.manager.listen_udp("0.0.0.0", 5062)
        v6 = self.manager.listen_udp("::1", 5064)
        self.assertEqual(self.reactor.udp[0][2], 65535)  # datagrams up to the UDP maximum
        flow = self.successResultOf(self.manager.send(OPTIONS, "udp", "127.0.0.1", 5070))
        self.assertEqual(loopback.sent, [(OPTIONS, ("127.0.0.1", 5070))])
        self.assertEqual(flow.local_address, ("127.0.0.1", 5060))
        self.successResultOf(self.manager.send(OPTIONS, "UDP", "192.0.2.1", 5060))
        self.assertEqual(anywhere.sent, [(OPTIONS, ("192.0.2.1", 5060))])
        self.successResultOf(self.manager.send(OPTIONS, "UDP", "[::1]", 5060))
        self.assertEqual(v6.sent, [(OPTIONS, ("::1", 5060))])
        self.assertEqual(self.manager.counters.messages_sent, 3)
        self.assertEqual([d for d, _, _ in self.traced], ["send"] * 3)

    def test_udp_flow_per_destination_kept_until_the_listeners_change(self) -> None:
        loopback = self.manager.listen_udp("127.0.0.1", 5060)
        first = self.successResultOf(self.manager.send(OPTIONS, "UDP", "127.0.0.1", 5070))
        self.assertIs(self.successResultOf(self.manager.send(MESSAGE, "UDP", "127.0.0.1", 5070)), first)
        self.assertIs(self.manager.flow_for("UDP", "127.0.0.1", 5070), first)
        self.assertNotEqual(self.manager.flow_for("UDP", "127.0.0.1", 5071), first)
        self.assertEqual(loopback.sent, [(OPTIONS, ("127.0.0.1", 5070)), (MESSAGE, ("127.0.0.1", 5070))])
        self.manager.listen_udp("0.0.0.0", 5062)  # another listener may be the better choice now
        again = self.successResultOf(self.manager.send(OPTIONS, "UDP", "127.0.0.1", 5070))
        self.assertIsNot(again, first)
        self.assertEqual(again, first)

    def test_udp_send_failures(self) -> None:
        self.failureResultOf(self.manager.send(OPTIONS, "UDP", "192.0.2.1", 5060), TransportError)
        self.manager.listen_udp("127.0.0.1", 5060)
        failure = self.failureResultOf(self.manager.send(OPTIONS, "UDP", "192.0.2.1", 5060), TransportError)
        self.assertIn("no UDP listener", failure.getErrorMessage())  # loopback cannot reach it
        self.failureResultOf(self.manager.send(OPTIONS, "UDP", "example.com", 5060), TransportError)
        self.reactor.udp[0][0].fail_with = OSError(90, "Message too long")
        failure = self.failureResultOf(self.manager.send(OPTIONS, "UDP", "127.0.0.1", 5060), TransportError)
        self.assertIn("Message too long", failure.getErrorMessage())
        self.failureResultOf(self.manager.send(OPTIONS, "SCTP", "127.0.0.1", 5060), TransportError)

    def test_received_datagrams_reach_the_sink_and_the_trace(self) -> None:
        self.manager.listen_udp("127.0.0.1", 5060)
        self.reactor.udp[0][1].datagramReceived(OPTIONS, ("127.0.0.1", 5099))
        [(_, flow)] = self.sink.messages
        self.assertEqual(self.manager.flow_for("UDP", "127.0.0.1", 5099), flow)
        self.assertEqual(self.traced, [("recv", "UDP", OPTIONS)])
        self.assertEqual(self.manager.counters.as_dict()["messages_received"], 1)

    def test_tcp_send_connects_queues_and_then_reuses(self) -> None:
        first = self.manager.send(OPTIONS, "tcp", "192.0.2.5", 5060)
        second = self.manager.send(MESSAGE, "TCP", "192.0.2.5", 5060)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertNoResult(first)
        protocol, wire = self.connect_outgoing()
        flow = self.successResultOf(first)
        self.assertIs(self.successResultOf(second), flow)
        self.assertEqual(wire.value(), OPTIONS + MESSAGE)
        self.assertIs(self.successResultOf(self.manager.send(OK, "TCP", "192.0.2.5", 5060)), flow)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertIs(self.manager.flow_for("TCP", "192.0.2.5", 5060), flow)
        self.assertIsNone(self.manager.flow_for("TLS", "192.0.2.5", 5060))
        lose(protocol)
        self.assertIsNone(self.manager.flow_for("TCP", "192.0.2.5", 5060))
        self.assertFalse(self.manager.send_on_flow(OK, flow))
        self.manager.send(OK, "TCP", "192.0.2.5", 5060)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_connection_to_a_host_name_is_reused_by_name_and_address(self) -> None:
        d = self.manager.send(OPTIONS, "TCP", "Proxy.Example.com", 5060)
        self.assertEqual(self.reactor.tcpClients[0][:2], ("Proxy.Example.com", 5060))
        self.connect_outgoing(peer=("192.0.2.5", 5060))
        flow = self.successResultOf(d)
        self.assertIs(self.manager.flow_for("TCP", "proxy.example.com", 5060), flow)
        self.assertIs(self.manager.flow_for("TCP", "192.0.2.5", 5060), flow)

    def test_failed_connection_errbacks_every_queued_send(self) -> None:
        first = self.manager.send(OPTIONS, "TCP", "192.0.2.5", 5060)
        second = self.manager.send(OPTIONS, "TCP", "192.0.2.5", 5060)
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        for d in (first, second):
            failure = self.failureResultOf(d, TransportError)
            self.assertIn("TCP connection to 192.0.2.5:5060 failed", failure.getErrorMessage())
            self.assertIn("refused", failure.getErrorMessage())
        self.assertEqual(self.manager.counters.connect_failures, 1)
        self.manager.send(OPTIONS, "TCP", "192.0.2.5", 5060)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_cancelled_send_is_not_written(self) -> None:
        d = self.manager.send(OPTIONS, "TCP", "192.0.2.5", 5060)
        kept = self.manager.send(MESSAGE, "TCP", "192.0.2.5", 5060)
        d.cancel()
        self.failureResultOf(d)
        _, wire = self.connect_outgoing()
        self.successResultOf(kept)
        self.assertEqual(wire.value(), MESSAGE)

    def test_incoming_connection_is_reused_for_sends_to_its_source(self) -> None:
        """RFC 3261 18.2.2: a send to a peer that connected to us goes on that connection."""
        self.manager.listen_tcp("10.0.0.1", 5060)
        protocol, wire = self.accept(peer=("192.0.2.9", 40000))
        protocol.dataReceived(OPTIONS)
        [(_, incoming)] = self.sink.messages
        flow = self.successResultOf(self.manager.send(OK, "TCP", "192.0.2.9", 40000))
        self.assertIs(flow, incoming)
        self.assertEqual(wire.value(), OK)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertTrue(self.manager.send_on_flow(OK, flow))
        self.assertEqual(self.manager.counters.connections_open, 1)

    def test_tls_connects_with_client_options_for_the_server_name_and_waits_for_the_handshake(self) -> None:
        d = self.manager.send(OPTIONS, "TLS", "192.0.2.5", 5061, server_name="pbx.example.com")
        creator = self.reactor.sslClients[0][3]
        self.assertEqual(creator, ("client-options", "pbx.example.com"))
        protocol, wire = self.connect_outgoing(tls=True, peer=("192.0.2.5", 5061))
        self.assertNoResult(d)
        self.assertEqual(wire.value(), b"")
        protocol.handshakeCompleted()
        flow = self.successResultOf(d)
        self.assertEqual((flow.transport, flow.secure), ("TLS", True))
        self.assertEqual(wire.value(), OPTIONS)

    def test_tls_handshake_failure_errbacks(self) -> None:
        d = self.manager.send(OPTIONS, "TLS", "192.0.2.5", 5061)
        protocol, _ = self.connect_outgoing(tls=True, peer=("192.0.2.5", 5061))
        protocol.connectionLost(Failure(ValueError("certificate verify failed")))
        failure = self.failureResultOf(d, TransportError)
        self.assertIn("certificate verify failed", failure.getErrorMessage())

    def test_tls_without_configuration(self) -> None:
        manager = TransportManager(self.reactor, self.sink, limits=ParserLimits(), idle_timeout=60)
        self.assertRaises(ValueError, manager.listen_tls, "127.0.0.1", 5061)
        failure = self.failureResultOf(manager.send(OPTIONS, "TLS", "192.0.2.5", 5061), TransportError)
        self.assertIn("TLS", failure.getErrorMessage())

    def test_listen_tls_uses_the_server_options(self) -> None:
        self.manager.listen_tls("::1", 5061)
        port, _, options, _, interface = self.reactor.sslServers[0]
        self.assertEqual((port, options, interface), (5061, "server-options", "::1"))

    def test_local_address(self) -> None:
        self.manager.listen_udp("127.0.0.1", 5060)
        self.manager.listen_udp("192.0.2.100", 5062)
        self.manager.listen_udp("::1", 5064)
        self.manager.listen_tcp("::1", 5070)
        self.assertEqual(self.manager.local_address("udp", "127.0.0.1"), ("127.0.0.1", 5060))
        self.assertEqual(self.manager.local_address("UDP", "192.0.2.1"), ("192.0.2.100", 5062))
        self.assertEqual(self.manager.local_address("UDP", "example.com"), ("192.0.2.100", 5062))
        self.assertEqual(self.manager.local_address("UDP", "::1"), ("::1", 5064))
        self.assertEqual(self.manager.local_address("tcp", "[::1]"), ("::1", 5070))
        self.assertRaises(TransportError, self.manager.local_address, "TLS", "127.0.0.1")

    def test_local_address_is_the_advertised_name_of_a_listener_behind_nat(self) -> None:
        self.manager.listen_udp("0.0.0.0", 5060, advertise="pbx.example.com")
        self.manager.listen_tcp("10.0.0.1", 5060, advertise="203.0.113.7")
        self.manager.listen_udp("2001:db8::2", 5061, advertise="[2001:db8::7]")
        self.assertEqual(self.manager.local_address("udp", "192.0.2.1"), ("pbx.example.com", 5060))
        self.assertEqual(self.manager.local_address("tcp", "192.0.2.1"), ("203.0.113.7", 5060))
        self.assertEqual(self.manager.local_address("udp", "2001:db8::1"), ("2001:db8::7", 5061))

    def test_idle_incoming_connections_are_closed(self) -> None:
        self.manager.listen_tcp("10.0.0.1", 5060)
        protocol, wire = self.accept()
        protocol.dataReceived(OPTIONS)  # else the first-message timeout would cut it first
        self.reactor.advance(60)
        self.assertTrue(wire.disconnecting)
        self.assertEqual(self.manager.counters.connections_cut_idle, 1)
        lose(protocol)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.manager.counters.connections_open, 0)

    def test_stop_closes_everything(self) -> None:
        udp = self.manager.listen_udp("127.0.0.1", 5060)
        self.manager.listen_tcp("10.0.0.1", 5060)
        incoming, incoming_wire = self.accept()
        pending = self.manager.send(OPTIONS, "TCP", "192.0.2.77", 5060)
        stopped = self.manager.stop()
        self.assertTrue(udp.stopped)
        self.assertTrue(incoming_wire.disconnecting)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.failureResultOf(pending, TransportError)
        self.assertNoResult(stopped)
        lose(incoming)
        self.successResultOf(stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.failureResultOf(self.manager.send(OPTIONS, "TCP", "192.0.2.5", 5060), TransportError)

    def test_sink_is_verified(self) -> None:
        verifyObject(IMessageSink, self.sink)


@implementer(IMessageSink)
class QueueSink:
    """A sink for real-socket tests: `get()` waits for the next delivery."""

    def __init__(self) -> None:
        self._queue: DeferredQueue[tuple[Any, IFlow]] = DeferredQueue()

    def message_received(self, message: object, flow: IFlow) -> None:
        self._queue.put((message, flow))

    def undecodable(self, data: bytes, flow: IFlow, error: Exception) -> None:
        self._queue.put((error, flow))

    def get(self) -> Deferred[tuple[Any, IFlow]]:
        return self._queue.get()


class LoopbackTests(TestCase):
    """Real sockets on loopback, port 0; every manager is stopped before the test ends."""

    timeout = 20

    def manager(self, **kwargs: Any) -> tuple[TransportManager, QueueSink]:
        sink = QueueSink()
        manager = TransportManager(reactor, sink, limits=ParserLimits(), idle_timeout=60, **kwargs)
        self.addCleanup(manager.stop)
        return manager, sink

    @inlineCallbacks
    def test_udp_round_trip(self) -> Any:
        server, server_sink = self.manager()
        client, client_sink = self.manager()
        port = server.listen_udp("127.0.0.1", 0).getHost().port
        client_port = client.listen_udp("127.0.0.1", 0).getHost().port
        sent_flow = yield client.send(OPTIONS, "UDP", "127.0.0.1", port)
        request, flow = yield server_sink.get()
        self.assertEqual(request.method, "OPTIONS")
        self.assertEqual(flow.remote_address, ("127.0.0.1", client_port))
        flow.send(OK)
        response, back = yield client_sink.get()
        self.assertIsInstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertEqual(back, sent_flow)

    def test_udp_receive_buffer_is_enlarged(self) -> None:
        """SO_RCVBUF is asked for on listening UDP sockets (Linux grants up to net.core.rmem_max)."""
        manager, _ = self.manager(udp_receive_buffer=1 << 20)
        listening = manager.listen_udp("127.0.0.1", 0)
        granted = listening.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        default, _ = self.manager(udp_receive_buffer=0)
        untouched = (
            default.listen_udp("127.0.0.1", 0).getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        )
        try:
            rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        except OSError:
            rmem_max = 0
        if rmem_max >= 1 << 20:
            self.assertGreaterEqual(granted, 1 << 20)
        self.assertGreaterEqual(granted, untouched)

    @inlineCallbacks
    def test_tcp_connect_and_reuse_of_the_incoming_connection(self) -> Any:
        server, server_sink = self.manager()
        client, client_sink = self.manager()
        port = server.listen_tcp("127.0.0.1", 0).getHost().port
        client_flow = yield client.send(OPTIONS, "TCP", "127.0.0.1", port)
        _, incoming = yield server_sink.get()
        host, peer_port = incoming.remote_address
        reply_flow = yield server.send(OK, "TCP", host, peer_port)
        self.assertIs(reply_flow, incoming)
        response, flow = yield client_sink.get()
        self.assertEqual(response.status, 200)
        self.assertIs(flow, client_flow)
        again = yield client.send(MESSAGE, "tcp", "127.0.0.1", port)
        self.assertIs(again, client_flow)
        message, _ = yield server_sink.get()
        self.assertEqual(message.body, b"hello")
        self.assertEqual(server.counters.connections_opened, 1)
        self.assertEqual(client.counters.connections_opened, 1)

    @inlineCallbacks
    def test_tcp_connection_refused(self) -> Any:
        probe = reactor.listenTCP(0, _NoFactory(), interface="127.0.0.1")
        port = probe.getHost().port
        yield probe.stopListening()
        client, _ = self.manager()
        try:
            yield client.send(OPTIONS, "TCP", "127.0.0.1", port)
        except TransportError as e:
            self.assertIn(f"127.0.0.1:{port}", str(e))
        else:
            self.fail("the send should have failed")

    @inlineCallbacks
    def test_tls_round_trip_with_the_dev_certificate(self) -> Any:
        cert, key = ensure_dev_certificate(Path(self.mktemp()), [])
        server, server_sink = self.manager(tls_server_options=server_options(cert, key))
        client, client_sink = self.manager(tls_client_options_factory=client_options_factory(cert))
        port = server.listen_tls("127.0.0.1", 0).getHost().port
        client_flow = yield client.send(OPTIONS, "TLS", "127.0.0.1", port, server_name="localhost")
        self.assertTrue(client_flow.secure)
        request, incoming = yield server_sink.get()
        self.assertEqual(request.method, "OPTIONS")
        self.assertEqual(incoming.transport, "TLS")
        incoming.send(OK)
        response, flow = yield client_sink.get()
        self.assertEqual(response.status, 200)
        self.assertIs(flow, client_flow)
        by_address = yield client.send(MESSAGE, "TLS", "127.0.0.1", port)  # verified against the IP SAN
        self.assertIs(by_address, client_flow)

    @inlineCallbacks
    def test_tls_refuses_a_certificate_for_another_name(self) -> Any:
        cert, key = ensure_dev_certificate(Path(self.mktemp()), [])
        server, _ = self.manager(tls_server_options=server_options(cert, key))
        client, _ = self.manager(tls_client_options_factory=client_options_factory(cert))
        port = server.listen_tls("127.0.0.1", 0).getHost().port
        try:
            yield client.send(OPTIONS, "TLS", "127.0.0.1", port, server_name="wrong.example")
        except TransportError as e:
            self.assertIn("TLS connection", str(e))
        else:
            self.fail("the send should have failed")

    @inlineCallbacks
    def test_wildcard_listener_sends_and_reports_a_routable_address(self) -> Any:
        server, server_sink = self.manager()
        client, _ = self.manager()
        port = server.listen_udp("127.0.0.1", 0).getHost().port
        client_port = client.listen_udp("0.0.0.0", 0).getHost().port
        self.assertEqual(client.local_address("udp", "127.0.0.1"), ("127.0.0.1", client_port))
        yield client.send(OPTIONS, "UDP", "127.0.0.1", port)
        _, flow = yield server_sink.get()
        self.assertEqual(flow.remote_address, ("127.0.0.1", client_port))

    @inlineCallbacks
    def test_udp_over_ipv6_loopback(self) -> Any:
        server, server_sink = self.manager()
        client, client_sink = self.manager()
        try:
            port = server.listen_udp("::1", 0).getHost().port
            client.listen_udp("::1", 0)
        except CannotListenError:
            self.skipTest("no IPv6 loopback")
        yield client.send(OPTIONS, "UDP", "::1", port)
        _, flow = yield server_sink.get()
        self.assertEqual(flow.remote_address[0], "::1")
        flow.send(OK)
        response, _ = yield client_sink.get()
        self.assertEqual(response.status, 200)


class _NoFactory:
    """A factory for a port that is only opened to learn a free port number."""

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def buildProtocol(self, addr: Any) -> None:
        return None
