"""A standalone RTP/RTCP transport on a UDP port pair from a `PortPool` (for tests, benchmarks and endpoints
that are not attached to a relay leg).

`UdpRtpTransport.open(reactor, pool, host, consumer)` binds the pool's next even port for RTP and the odd
port above it for RTCP (trying the next pair when one is taken), sends to the address given with
`set_remote` (RTCP to the RTP port + 1 unless told otherwise), and hands every datagram it receives to
`consumer.rtp_received`/`rtcp_received`. Like a relay leg it latches: once the peer's RTP arrives from
somewhere else than `set_remote` said (NAT), it sends there. It implements `IRtpTransport`.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from pbx.media.interfaces import IRtpConsumer, IRtpTransport
from pbx.media.ports import PortPool, PortsExhausted, out_of_resources

__all__ = ["UdpRtpTransport"]

Address = tuple[str, int]


class _Side(DatagramProtocol):
    def __init__(self, owner: UdpRtpTransport, rtcp: bool) -> None:
        self.owner = owner
        self.rtcp = rtcp

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.owner._received(datagram, addr, self.rtcp)


@implementer(IRtpTransport)
class UdpRtpTransport:
    """RTP on `port`, RTCP on `port + 1`, both bound to `host`."""

    def __init__(self, pool: PortPool, port: int, consumer: IRtpConsumer | None = None) -> None:
        self.pool = pool
        self.port = port
        self.consumer = consumer
        self.remote: Address | None = None
        self.rtcp_remote: Address | None = None
        self.sent = 0
        self.send_errors = 0
        self.received = 0
        self._rtp: IListeningPort | None = None
        self._rtcp: IListeningPort | None = None
        self._rtp_side = _Side(self, False)
        self._rtcp_side = _Side(self, True)

    @classmethod
    def open(
        cls, reactor: IReactorUDP, pool: PortPool, host: str, consumer: IRtpConsumer | None = None
    ) -> UdpRtpTransport:
        """Bind the next free pair of `pool` on `host`; PortsExhausted when none can be bound."""
        for _ in range(pool.available):
            port = pool.allocate()
            transport = cls(pool, port, consumer)
            try:
                transport._rtp = reactor.listenUDP(port, transport._rtp_side, host, 8192)
            except CannotListenError as e:
                pool.release(port)
                if out_of_resources(e):  # no descriptor: no other port binds now either
                    raise PortsExhausted(f"cannot open RTP sockets now: {e.socketError}") from e
                continue
            try:
                transport._rtcp = reactor.listenUDP(port + 1, transport._rtcp_side, host, 8192)
            except CannotListenError as e:
                transport._rtp.stopListening()
                pool.release(port)
                if out_of_resources(e):
                    raise PortsExhausted(f"cannot open RTP sockets now: {e.socketError}") from e
                continue
            return transport
        raise PortsExhausted(f"no bindable RTP port pair in {pool!r}")

    def set_remote(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        """Where the peer receives RTP (and RTCP: `rtcp_port`, default `port + 1`); ValueError unless `host`
        is an IP literal (resolve names first)."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"RTP remote must be an IP address, got {host!r}") from None
        self.remote = (host, port)
        self.rtcp_remote = (host, port + 1 if rtcp_port is None else rtcp_port)

    def send_rtp(self, data: bytes) -> None:
        self._send(self._rtp, self.remote, data)

    def send_rtcp(self, data: bytes) -> None:
        self._send(self._rtcp, self.rtcp_remote, data)

    def _send(self, listener: IListeningPort | None, target: Address | None, data: bytes) -> None:
        if listener is None or target is None:
            return
        try:
            # The socket itself: Port.write re-validates the address string on every datagram (~30 % of
            # a send); set_remote and latching only ever store IP literals of the socket's family.
            listener.socket.sendto(data, target)  # type: ignore[attr-defined]
            self.sent += 1
        except Exception:  # ECONNREFUSED from an earlier ICMP error, ENOBUFS, ...: never raise
            self.send_errors += 1

    def _received(self, datagram: bytes, addr: Address, rtcp: bool) -> None:
        self.received += 1
        if rtcp:
            if self.rtcp_remote != addr:
                self.rtcp_remote = addr
            if self.consumer is not None:
                self.consumer.rtcp_received(datagram, addr)
            return
        if self.remote != addr:
            self.remote = addr
        if self.consumer is not None:
            self.consumer.rtp_received(datagram, addr)

    def close(self) -> Deferred[Any]:
        """Close both sockets and give the pair back to the pool; idempotent."""
        listeners = [p for p in (self._rtp, self._rtcp) if p is not None]
        if not listeners:
            return succeed(None)
        self._rtp = self._rtcp = None
        self.pool.release(self.port)
        return DeferredList([maybeDeferred(p.stopListening) for p in listeners])
