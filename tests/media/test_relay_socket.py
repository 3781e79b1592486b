"""`pbx.media.relay_socket.RelaySocket`: a relay channel's UDP socket on the real reactor, over loopback."""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, InvalidAddressError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pbx.media.relay_socket import RelaySocket, listen_udp


class Recorder(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.waiting: Deferred[None] | None = None
        self.started = self.stopped = 0

    def startProtocol(self) -> None:
        self.started += 1

    def stopProtocol(self) -> None:
        self.stopped += 1

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))
        if datagram == b"boom":
            raise ValueError("a failing protocol")
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.callback(None)

    def next(self) -> Deferred[None]:
        self.waiting = Deferred()
        return self.waiting


def peer(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(5)
    return sock


class RelaySocketTests(TestCase):
    timeout = 10

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor

    @defer.inlineCallbacks
    def test_datagrams_both_ways_and_a_close_that_frees_the_port_at_once(
        self,
    ) -> defer.Generator[Deferred[None], object, None]:
        protocol = Recorder()
        port = RelaySocket(self.reactor, 0, protocol, "127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertEqual(protocol.started, 1)
        self.assertIs(protocol.transport, port)
        number = port.getHost().port
        phone = peer()
        self.addCleanup(phone.close)
        arrived = protocol.next()
        phone.sendto(b"boom", ("127.0.0.1", number))  # the protocol raises: logged, the socket goes on
        phone.sendto(b"rtp", ("127.0.0.1", number))
        yield arrived
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(protocol.received, [(b"boom", phone.getsockname()), (b"rtp", phone.getsockname())])
        port.write(b"back", phone.getsockname())
        self.assertEqual(phone.recvfrom(100), (b"back", ("127.0.0.1", number)))
        self.assertEqual(port.stopListening().result, None)
        self.assertEqual((protocol.stopped, port.fileno()), (1, -1))
        self.assertIsNone(protocol.transport)
        again = RelaySocket(self.reactor, number, Recorder(), "127.0.0.1")
        again.stopListening()
        port.stopListening()  # twice: nothing more
        self.assertEqual(protocol.stopped, 1)
        with self.assertRaises(OSError):
            port.write(b"late", phone.getsockname())

    @defer.inlineCallbacks
    def test_ipv6_addresses_are_host_and_port(self) -> defer.Generator[Deferred[None], object, None]:
        try:
            phone = peer(socket.AF_INET6, "::1")
        except OSError:
            self.skipTest("no IPv6 loopback")
        self.addCleanup(phone.close)
        protocol = Recorder()
        port = RelaySocket(self.reactor, 0, protocol, "::1")
        self.addCleanup(port.stopListening)
        arrived = protocol.next()
        phone.sendto(b"rtp6", ("::1", port.getHost().port))
        yield arrived
        self.assertEqual(protocol.received, [(b"rtp6", phone.getsockname()[:2])])
        with self.assertRaises(InvalidAddressError):
            port.write(b"x", ("127.0.0.1", 5004))

    def test_names_and_other_families_are_refused_never_resolved(self) -> None:
        port = RelaySocket(self.reactor, 0, Recorder(), "127.0.0.1")
        self.addCleanup(port.stopListening)
        for host in ("localhost", "::1", ""):
            with self.assertRaises(InvalidAddressError):
                port.write(b"x", (host, 5004))

    def test_a_port_in_use_cannot_listen(self) -> None:
        taken = peer()
        self.addCleanup(taken.close)
        with self.assertRaises(CannotListenError) as caught:
            RelaySocket(self.reactor, taken.getsockname()[1], Recorder(), "127.0.0.1")
        self.assertEqual(caught.exception.socketError.errno, errno.EADDRINUSE)


class ListenTests(SynchronousTestCase):
    def test_a_reactor_without_descriptors_listens_its_own_way(self) -> None:
        calls: list[tuple[Any, ...]] = []

        class FakeReactor(Clock):
            def listenUDP(
                self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
            ) -> str:
                calls.append((port, protocol, interface, maxPacketSize))
                return "fake port"

        protocol = Recorder()
        self.assertEqual(listen_udp(FakeReactor(), 4000, protocol, "10.0.0.1", 1500), "fake port")
        self.assertEqual(calls, [(4000, protocol, "10.0.0.1", 1500)])
