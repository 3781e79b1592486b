"""A relay channel's UDP socket, read by the reactor (`IReactorFDSet`) without `twisted.internet.udp.Port`.

The relay opens four sockets per call (RTP and RTCP for each leg) and closes them when it ends. Twisted's
`udp.Port` does for each what a relay channel does not need: two legacy log lines ("... starting on 40002",
"(UDP Port 40002 Closed)", formatted, then filtered out by the PBX's log filter), a `callLater` to close,
an instance `__dict__` with a bound `fileno`, a log prefix and a write buffer of its own, and a host-name
check of the destination on every datagram sent. `RelaySocket` keeps a slotted object per socket and does
the same reads and writes as `udp.Port` for an unconnected socket (RFC 768 datagrams; up to 256 KiB read per
readiness event; `EWOULDBLOCK`/`EINTR`/`EMSGSIZE` on read end a read loop, `ECONNREFUSED` and kin are
ignored; on write `EINTR` retries, `EMSGSIZE` raises `MessageLengthError`, `ECONNREFUSED` is ignored).
An address a datagram is sent to must be an IP literal of the socket's family (checked once per new
destination, never resolved as a name: `InvalidAddressError` as with `udp.Port`).

`listen_udp(reactor, port, protocol, interface, max_packet_size)` uses it when the reactor can watch file
descriptors, and the reactor's own `listenUDP` otherwise (a fake reactor in tests). This module knows
nothing of RTP: it hands datagrams to a `DatagramProtocol`.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.abstract import isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError, InvalidAddressError, MessageLengthError
from twisted.internet.interfaces import IListeningPort, IReactorFDSet, IReadDescriptor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["RelaySocket", "listen_udp"]

_READ_IGNORE = frozenset({errno.EINTR, errno.EWOULDBLOCK, errno.EAGAIN, errno.EMSGSIZE, errno.EINPROGRESS})
_READ_REFUSED = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ENETRESET, errno.ETIMEDOUT})
MAX_THROUGHPUT = 256 * 1024
"""Bytes read at most per readiness event (`udp.Port.maxThroughput`): one socket cannot starve the others."""


@implementer(IListeningPort, IReadDescriptor)
class RelaySocket:
    """One bound, non-blocking UDP socket whose datagrams go to `protocol.datagramReceived(data, addr)`.

    Args:
        reactor: watches the socket (`addReader`/`removeReader`).
        port: the port to bind (0: any).
        protocol: gets the datagrams; `makeConnection(self)` when bound, `doStop()` when closed.
        interface: the address to bind (an IPv4 or IPv6 literal; "" for all IPv4 addresses).
        max_packet_size: longer datagrams are truncated by the kernel.
    """

    __slots__ = ("_checked", "_family", "_reactor", "_socket", "max_packet_size", "protocol")

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorFDSet,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        max_packet_size: int = 8192,
    ) -> None:
        family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind((interface, port))
            except BaseException:
                sock.close()
                raise
        except OSError as e:
            raise CannotListenError(interface, port, e) from e
        self._reactor = reactor
        self._socket: socket.socket | None = sock
        self._family = family
        self._checked: Any = None  # the last destination found to be an IP literal of our family
        self.max_packet_size = max_packet_size
        self.protocol = protocol
        protocol.makeConnection(self)  # type: ignore[arg-type]
        reactor.addReader(self)

    # -- IReadDescriptor ---------------------------------------------------------------------------------

    def doRead(self) -> None:
        """Read what is waiting (up to `MAX_THROUGHPUT` bytes) and hand each datagram to the protocol."""
        sock = self._socket
        if sock is None:
            return
        recvfrom = sock.recvfrom
        size = self.max_packet_size
        six = self._family == socket.AF_INET6
        read = 0
        while read < MAX_THROUGHPUT:
            try:
                data, addr = recvfrom(size)
            except OSError as e:
                if e.errno in _READ_IGNORE or e.errno in _READ_REFUSED:
                    return
                raise
            read += len(data)
            if six:
                addr = addr[:2]  # no flow info nor scope id, as udp.Port
            try:
                self.protocol.datagramReceived(data, addr)
            except BaseException:
                self._log.failure("Relay channel failed on a datagram from {addr}", addr=addr)
            if self._socket is None:  # the protocol closed us
                return

    def fileno(self) -> int:
        """The socket's descriptor; -1 once closed (what the reactor expects of a closed descriptor)."""
        sock = self._socket
        return sock.fileno() if sock is not None else -1

    def logPrefix(self) -> str:
        return "RelaySocket"

    def connectionLost(self, reason: Failure) -> None:
        """The reactor gave up on the socket (or is shutting down): close it."""
        self._close()

    # -- what a relay channel uses of a port -------------------------------------------------------------

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Send `datagram` to `addr` (an IP literal and a port)."""
        sock = self._socket
        if sock is None:
            raise OSError(errno.EBADF, "the socket is closed")
        if addr is not self._checked:
            self._check(addr)
        try:
            sock.sendto(datagram, addr)
        except OSError as e:
            if e.errno == errno.EINTR:
                self.write(datagram, addr)
            elif e.errno == errno.EMSGSIZE:
                raise MessageLengthError("message too long") from e
            elif e.errno != errno.ECONNREFUSED:  # platform dependent for an unconnected socket: ignored
                raise

    def _check(self, addr: tuple[str, int]) -> None:
        """Raise InvalidAddressError unless `addr`'s host is an IP literal of this socket's family (a name
        would be resolved, blocking the reactor)."""
        host = addr[0]
        try:
            socket.inet_pton(self._family, host)
        except (OSError, TypeError, ValueError):
            if self._family == socket.AF_INET6:
                raise InvalidAddressError(host, "an IPv6 socket sends to IPv6 addresses") from None
            raise InvalidAddressError(host, "an IPv4 socket sends to IPv4 addresses") from None
        self._checked = addr

    def getHost(self) -> IPv4Address | IPv6Address:
        sock = self._socket
        if sock is None:
            raise OSError(errno.EBADF, "the socket is closed")
        host, port = sock.getsockname()[:2]
        if self._family == socket.AF_INET6:
            return IPv6Address("UDP", host, port)
        return IPv4Address("UDP", host, port)

    def startListening(self) -> None:
        """Listening starts when the socket is made."""

    def stopListening(self) -> Deferred[None]:
        """Stop reading and close the socket (at once: its port is free when this returns)."""
        self._close()
        return succeed(None)

    loseConnection = stopListening

    def _close(self) -> None:
        sock = self._socket
        if sock is None:
            return
        self._reactor.removeReader(self)
        self._socket = None
        sock.close()
        self.protocol.doStop()

    def __repr__(self) -> str:
        return f"<RelaySocket fd {self.fileno()}>"


def listen_udp(
    reactor: Any, port: int, protocol: DatagramProtocol, interface: str, max_packet_size: int
) -> IListeningPort:
    """A `RelaySocket` on `reactor` when it watches file descriptors (the real reactors), else the reactor's
    own `listenUDP` (fakes in tests)."""
    if IReactorFDSet.providedBy(reactor):
        return RelaySocket(reactor, port, protocol, interface, max_packet_size)
    return reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=max_packet_size)
