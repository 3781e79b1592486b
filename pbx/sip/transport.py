"""SIP transports: listeners and connections for UDP, TCP and TLS (RFC 3261 section 18).

`TransportManager` owns the listeners and connections: it sends from a listening UDP socket of the right
address family, reuses open TCP/TLS connections in either direction (18.2.2, 18.1.1), opens new ones and
queues data until they are ready, and keeps counters and an optional message trace. A peer that connected
to us is reached on that connection only (RFC 5626 5.3, RFC 5923): once it has closed, a send to its source
address fails (`ClosedInboundFlows`) instead of connecting to an ephemeral port nothing listens on.
The protocols that decode the bytes are in `pbx.sip.protocols`, the flows they deliver with in
`pbx.sip.flow`; both are re-exported here.

Connection hygiene: accepted TCP/TLS connections are capped per source address and in total (a refused
connection is closed at once and counted; the total cap is logged, rate-limited), a TLS connection must
complete its handshake within `handshake_timeout` and an accepted one must send a SIP message within
`first_message_timeout`, so that idle or half-open sockets cannot hold the PBX's descriptors. An optional
`Admission` (`pbx.sip.admission`) limits how fast each source may open connections and send messages.

This module does not know about transactions (retransmissions, Via `received`/`rport` handling,
the 1300-byte UDP limit of 18.1.1), RFC 3263 name resolution (UDP sends need IP literals) or the PBX.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IReactorSSL,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
)
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbx.sip.admission import Admission
from pbx.sip.flow import (
    ClosedInboundFlows,
    StreamFlow,
    TraceFunction,
    TransportCounters,
    TransportError,
    TransportMonitor,
    UdpFlow,
    format_address,
    ip_or_none,
    normalize_host,
    peer_address,
)
from pbx.sip.intake import DatagramIntake
from pbx.sip.interfaces import IFlow, IMessageSink
from pbx.sip.parser import ParserLimits
from pbx.sip.protocols import (
    DEFAULT_FIRST_MESSAGE_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    UDP_MAX_PACKET,
    SipDatagramProtocol,
    SipStreamFactory,
    SipStreamProtocol,
)
from pbx.sip.tls import describe_failure

__all__ = [
    "DEFAULT_FIRST_MESSAGE_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_ADDRESS",
    "ISipTransportReactor",
    "SipDatagramProtocol",
    "SipStreamFactory",
    "SipStreamProtocol",
    "StreamFlow",
    "TraceFunction",
    "TransportCounters",
    "TransportError",
    "TransportManager",
    "TransportMonitor",
    "UdpFlow",
]

_log = Logger(namespace="pbx.sip.transport")

UDP_RECEIVE_BUFFER = 4 * 2**20
"""SO_RCVBUF asked for on listening UDP sockets: room for a GC pause or a burst (the kernel's default, about
200 KB, holds some 160 requests). Linux caps it at net.core.rmem_max; the value granted is logged."""


DEFAULT_MAX_CONNECTIONS = 4096
"""TCP/TLS connections open at once (accepted and outgoing); accepting more is refused."""
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 64
"""Accepted TCP/TLS connections open at once from one source IP address (phones behind one NAT share one)."""


class ISipTransportReactor(IReactorUDP, IReactorTCP, IReactorSSL, IReactorTime):
    """The parts of a reactor the transport manager uses (a real reactor or `MemoryReactorClock`)."""


class _OutgoingFactory(ClientFactory):
    noisy = False

    def __init__(self, build: Callable[[], SipStreamProtocol], failed: Callable[[str], None]) -> None:
        self._build = build
        self._failed = failed

    def buildProtocol(self, addr: IAddress | None) -> SipStreamProtocol:
        return self._build()

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self._failed(reason.getErrorMessage())


class _PendingConnection:
    """An outgoing connection being opened, with the sends waiting for it."""

    def __init__(self, key: tuple[str, str, int], server_name: str) -> None:
        self.key = key
        self.server_name = server_name
        self.queue: list[tuple[bytes, Deferred[IFlow]]] = []
        self.connector: Any = None
        self.protocol: SipStreamProtocol | None = None


_Key = tuple[str, str, int]


class TransportManager:
    """Listeners and connections of one SIP stack, and the one way it sends bytes.

    Args:
        reactor: provides UDP, TCP, SSL and time (only `pbx/tap.py` passes the real one).
        sink: receives every message and undecodable input from every listener and connection.
        limits: parser bounds (also the stream framing buffer limit).
        idle_timeout: seconds without received bytes before a TCP/TLS connection is closed (0: never).
        tls_server_options: a server context factory (`pbx.sip.tls.server_options`), needed by `listen_tls`.
        tls_client_options_factory: host -> client connection creator (`pbx.sip.tls.client_options_factory`),
            needed to open TLS connections.
        trace: called as trace(direction, transport, flow, data) for each message sent or received.
        header_timeout: seconds a partial message may stay buffered on a stream.
        connect_timeout: seconds an outgoing TCP connect may take.
        udp_receive_buffer: bytes of SO_RCVBUF to ask for on each listening UDP socket (0: the kernel's
            default).
        max_connections: TCP/TLS connections open at once (ours included); past it accepted ones are refused.
        max_connections_per_address: accepted TCP/TLS connections open at once from one source IP address.
        handshake_timeout: seconds a TLS connection (either direction) may take to finish its handshake.
        first_message_timeout: seconds an accepted connection may take to send a SIP message that parses
            (CRLF keep-alives do not count); 0: no limit.
        admission: per-source rate limits, blocks and screens asked before parsing (`pbx.sip.admission`),
            for datagrams, stream messages and accepted connections; None for none.
    """

    def __init__(
        self,
        reactor: ISipTransportReactor,
        sink: IMessageSink,
        *,
        limits: ParserLimits,
        idle_timeout: float,
        tls_server_options: Any = None,
        tls_client_options_factory: Callable[[str], Any] | None = None,
        trace: TraceFunction | None = None,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        connect_timeout: float = 10.0,
        udp_receive_buffer: int = UDP_RECEIVE_BUFFER,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        first_message_timeout: float = DEFAULT_FIRST_MESSAGE_TIMEOUT,
        admission: Admission | None = None,
    ) -> None:
        self._reactor = reactor
        self.admission = admission
        self.intake = DatagramIntake(admission, reactor)  # every UDP listener's pre-parse entry
        if admission is not None:
            admission.observers.append(self._source_blocked)
        self._max_connections = max_connections
        self._max_per_address = max_connections_per_address
        self._handshake_timeout = handshake_timeout
        self._first_message_timeout = first_message_timeout
        self._per_address: dict[str, int] = {}  # source address -> accepted connections open
        self._source_of: dict[SipStreamProtocol, str] = {}
        self._udp_receive_buffer = udp_receive_buffer
        self._sink = sink
        self._limits = limits
        self._idle_timeout = idle_timeout
        self._header_timeout = header_timeout
        self._connect_timeout = connect_timeout
        self._tls_server_options = tls_server_options
        self._tls_client_options_factory = tls_client_options_factory
        self.monitor = TransportMonitor(reactor, trace)
        self._udp_ports: list[IListeningPort] = []
        self._stream_ports: list[tuple[str, IListeningPort]] = []
        # Per listening port its bound address (asked once); per (transport, hint host) local_address.
        self._bound_cache: dict[IListeningPort, tuple[Any, tuple[str, int]]] = {}
        self._local_cache: dict[tuple[str, str], tuple[str, int]] = {}
        # Per listening port the name or address others must use to reach it (behind NAT), if configured.
        self._advertised: dict[IListeningPort, str] = {}
        # Per (host, port) sent to, its UDP flow (flows keep no state of their own: one per destination will
        # do, as the listening protocols keep one per source); bounded, and forgotten when listeners change.
        self._udp_flows: dict[tuple[str, int], UdpFlow] = {}
        self._protocols: set[SipStreamProtocol] = set()
        self._connections: dict[_Key, list[SipStreamProtocol]] = {}
        self._keys: dict[SipStreamProtocol, list[_Key]] = {}
        self._pending: dict[_Key, _PendingConnection] = {}
        # Accepted connections by their source (transport, host, port), and the sources whose connection
        # closed: those are reached over their own connection only (RFC 5626 5.3), never a new one.
        self._inbound: dict[SipStreamProtocol, _Key] = {}
        self.closed_inbound = ClosedInboundFlows(reactor)
        self._stopping = False

    @property
    def counters(self) -> TransportCounters:
        """Running totals (`counters.as_dict()` for a plain dict)."""
        return self.monitor.counters

    @property
    def trace(self) -> TraceFunction | None:
        """The message trace hook; may be set or cleared at any time."""
        return self.monitor.trace

    @trace.setter
    def trace(self, trace: TraceFunction | None) -> None:
        self.monitor.trace = trace

    @property
    def udp_sockets(self) -> list[Any]:
        """The sockets of the listening UDP ports (overload control reads their receive queues)."""
        sockets = (getattr(port, "socket", None) for port in self._udp_ports)
        return [sock for sock in sockets if sock is not None]

    @property
    def udp_ports(self) -> list[IListeningPort]:
        """The listening UDP ports (overload control may change their read budget while it sheds)."""
        return list(self._udp_ports)

    # Listening

    def listen_udp(self, host: str, port: int, advertise: str = "") -> IListeningPort:
        """Listen for datagrams on host ("" or "0.0.0.0": any IPv4, "::": any IPv6) and port (0: any).

        `advertise` (for every listener): the name or address peers must use to reach it, put in Via and
        Contact instead of the bound address (a PBX behind NAT, or bound to a wildcard); "" for none.
        """
        protocol = SipDatagramProtocol(
            self._sink,
            clock=self._reactor,
            limits=self._limits,
            monitor=self.monitor,
            intake=self.intake,
        )
        listening = self._reactor.listenUDP(
            port, protocol, interface=host.strip("[]"), maxPacketSize=UDP_MAX_PACKET
        )
        self._udp_ports.append(listening)
        self._listening(listening, advertise)
        if self._udp_receive_buffer:
            _grow_receive_buffer(listening, self._udp_receive_buffer)
        return listening

    def listen_tcp(self, host: str, port: int, advertise: str = "") -> IListeningPort:
        """Accept TCP connections on host and port (0: any)."""
        listening = self._reactor.listenTCP(port, self._stream_factory("TCP"), interface=host.strip("[]"))
        self._stream_ports.append(("TCP", listening))
        self._listening(listening, advertise)
        return listening

    def listen_tls(
        self, host: str, port: int, advertise: str = "", *, server_options: Any = None
    ) -> IListeningPort:
        """Accept TLS connections on host and port (0: any).

        Args:
            server_options: this listener's context factory (one requiring client certificates, say);
                default the manager's `tls_server_options`.

        Raises:
            ValueError: the manager was built without `tls_server_options` and none is given.
        """
        options = server_options if server_options is not None else self._tls_server_options
        if options is None:
            raise ValueError("listen_tls needs tls_server_options")
        listening = self._reactor.listenSSL(
            port, self._stream_factory("TLS"), options, interface=host.strip("[]")
        )
        self._stream_ports.append(("TLS", listening))
        self._listening(listening, advertise)
        return listening

    def _listening(self, listening: IListeningPort, advertise: str) -> None:
        if advertise:
            self._advertised[listening] = advertise.strip("[]")
        self._local_cache.clear()
        self._udp_flows.clear()

    def local_address(self, transport: str, family_hint_host: str) -> tuple[str, int]:
        """The (host, port) of a listener for `transport`, to put in Via or Contact.

        The listener is chosen as for sending to `family_hint_host` (same address family, loopback for
        loopback; a host name counts as a remote IPv4 host). A wildcard bind is replaced by the source
        address the kernel would use to reach the hint (or its default route, for a name), and stays a
        wildcard when there is no route. A listener opened with `advertise` (behind NAT) gives that name or
        address instead.

        Raises:
            TransportError: no listener of that transport and family.
        """
        key = (transport, family_hint_host)
        found = self._local_cache.get(key)
        if found is not None:  # asked for every Via and Contact: remembered (until the listeners change)
            return found
        name = transport.upper()
        ports = self._udp_ports if name == "UDP" else [p for t, p in self._stream_ports if t == name]
        hint = ip_or_none(family_hint_host) or ipaddress.IPv4Address("0.0.0.0")  # a name: IPv4, not loopback
        listening = self._choose_port(ports, hint)
        if listening is None:
            raise TransportError(f"no {name} listener for IPv{hint.version}")
        bound, (host, port) = self._bound(listening)
        advertised = self._advertised.get(listening)
        if advertised:
            host = advertised
        elif bound is not None and bound.is_unspecified:
            probe = hint if not hint.is_unspecified else ipaddress.IPv4Address("192.0.2.1")  # TEST-NET-1
            source = _route_source(probe)
            if source is None:  # no route now, or no descriptor for the probe: asked again next time
                return host, port
            host = source
        if len(self._local_cache) >= 1024:
            self._local_cache.clear()
        self._local_cache[key] = (host, port)
        return host, port

    # Sending

    def send(
        self, data: bytes, transport: str, host: str, port: int, *, server_name: str | None = None
    ) -> Deferred[IFlow]:
        """Send bytes to host:port, reusing a flow when there is one.

        UDP goes out from a listening socket of the same address family (host must be an IP literal).
        TCP/TLS reuse an open connection to (host, port), incoming ones included, or connect and send when
        the connection is ready (after the TLS handshake); later sends reuse it.

        Args:
            data: a serialized message (or a keep-alive).
            transport: "UDP", "TCP" or "TLS".
            host: IP literal (or, for TCP/TLS, a host name to connect to).
            port: the peer's port.
            server_name: TLS only: the name to verify the server's certificate against (default: host).

        Returns:
            A Deferred firing with the flow used, or failing with `TransportError`.
        """
        name = transport.upper()
        if name == "UDP":
            flow = self._udp_flow(host, port)
            if flow is None:
                return fail(
                    TransportError(f"no UDP listener to send to {host}:{port} (an IP literal is needed)")
                )
            try:
                flow.write(data)
            except Exception as e:
                self.counters.send_errors += 1
                return fail(TransportError(f"UDP send to {host}:{port} failed: {e}"))
            return succeed(flow)
        if name not in ("TCP", "TLS"):
            return fail(TransportError(f"unsupported transport {transport!r}"))
        open_flow = self._stream_flow(name, host, port)
        if open_flow is not None:
            open_flow.send(data)
            return succeed(open_flow)
        if (name, normalize_host(host), port) in self.closed_inbound:
            self.counters.sends_to_closed_flows += 1
            return fail(
                TransportError(
                    f"the {name} connection from {format_address((host, port))} is closed: a peer that "
                    "connected to us is reached only over its own connection (RFC 5626), not a new one"
                )
            )
        return self._send_on_new_connection(data, name, host, port, server_name or host.strip("[]"))

    def send_on_flow(self, data: bytes, flow: IFlow) -> bool:
        """Send on `flow` if it is still connected; False (nothing sent) otherwise."""
        if not flow.connected():
            return False
        flow.send(data)
        return True

    def flow_for(self, transport: str, host: str, port: int) -> IFlow | None:
        """An open TCP/TLS connection to host:port, a UDP flow to it, or None."""
        name = transport.upper()
        if name == "UDP":
            return self._udp_flow(host, port)
        return self._stream_flow(name, host, port)

    def stop(self) -> Deferred[None]:
        """Stop listening, close every connection and fail pending sends; fires when all are closed."""
        self._stopping = True
        self.intake.stop()
        waits: list[Deferred[Any]] = []
        for listening in [*self._udp_ports, *(p for _, p in self._stream_ports)]:
            waits.append(maybeDeferred(listening.stopListening))
        self._udp_ports.clear()
        self._stream_ports.clear()
        self._advertised.clear()
        self._local_cache.clear()
        self._bound_cache.clear()
        self._udp_flows.clear()
        for pending in list(self._pending.values()):
            if pending.protocol is None and pending.connector is not None:
                try:
                    pending.connector.stopConnecting()
                except Exception:
                    pass
            self._pending_failed(pending, "the transport manager is stopping")
        for protocol in list(self._protocols):
            waits.append(protocol.when_closed())
            protocol.close()
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    # Internals

    def _stream_factory(self, name: str) -> SipStreamFactory:
        kwargs = self._protocol_kwargs(name, self._stream_ready)
        kwargs["first_message_timeout"] = self._first_message_timeout or None
        return SipStreamFactory(self._sink, admit=self._admit, **kwargs)

    def _admit(self, protocol: SipStreamProtocol, addr: IAddress | None) -> bool:
        """Take an accepted connection unless the total or its source address is at its cap."""
        try:
            host: str | None = peer_address(addr)[0]  # type: ignore[arg-type]
        except TypeError:
            host = None  # not an IP peer (a test's fake): only the total cap applies
        if self._stopping:
            return False
        if host is not None and self.admission is not None and not self.admission.admit_connection(host):
            self.counters.connections_refused_rate += 1
            return False
        if len(self._protocols) >= self._max_connections:
            self.counters.connections_refused_global += 1
            self.monitor.warn(
                "connection-cap",
                "Refused a {transport} connection from {host}: {count} connections open, the most allowed "
                "(sip.max_connections)",
                transport=protocol.transport_name,
                host=host,
                count=len(self._protocols),
            )
            return False
        if host is not None:
            count = self._per_address.get(host, 0)
            if count >= self._max_per_address:
                self.counters.connections_refused_address += 1
                self.monitor.warn(
                    "address-cap",
                    "Refused a {transport} connection from {host}: it has {count} open, the most allowed "
                    "(sip.max_connections_per_address)",
                    transport=protocol.transport_name,
                    host=host,
                    count=count,
                )
                return False
            self._per_address[host] = count + 1
            self._source_of[protocol] = host
        self._protocols.add(protocol)
        return True

    def _source_blocked(self, host: str, duration: float, reason: str) -> None:
        """A source the admission has just blocked: abort its accepted connections now (half-open ones
        would otherwise hold their descriptors until a timeout)."""
        for protocol, source in list(self._source_of.items()):
            if source == host:
                protocol._cut("connections_cut_blocked", abort=True)

    def connections_from(self, host: str) -> int:
        """Accepted TCP/TLS connections open now from source address `host`."""
        return self._per_address.get(normalize_host(host), 0)

    def _protocol_kwargs(self, name: str, on_ready: Callable[[SipStreamProtocol], object]) -> dict[str, Any]:
        return {
            "clock": self._reactor,
            "transport": name,
            "limits": self._limits,
            "idle_timeout": self._idle_timeout or None,
            "header_timeout": self._header_timeout or None,
            "handshake_timeout": self._handshake_timeout or None,
            "monitor": self.monitor,
            "admission": self.admission,
            "on_ready": on_ready,
            "on_closed": self._stream_closed,
        }

    def _stream_ready(self, protocol: SipStreamProtocol, alias: _Key | None = None) -> None:
        assert protocol.flow is not None
        self._protocols.add(protocol)
        host, port = protocol.flow.remote_address
        keys = [(protocol.transport_name, host, port)]
        if alias is not None and alias not in keys:
            keys.append(alias)
        for key in keys:
            self._connections.setdefault(key, []).append(protocol)
        self._keys[protocol] = keys
        if alias is None:  # accepted (ours always have the key they were opened for)
            source = (protocol.transport_name, normalize_host(host), port)
            self._inbound[protocol] = source
            self.closed_inbound.opened(source)

    def _stream_closed(self, protocol: SipStreamProtocol, reason: Failure) -> None:
        self._protocols.discard(protocol)
        host = self._source_of.pop(protocol, None)
        if host is not None:
            left = self._per_address.get(host, 0) - 1
            if left > 0:
                self._per_address[host] = left
            else:
                self._per_address.pop(host, None)
        keys = self._keys.pop(protocol, [])
        if keys and protocol.transport_name == "TLS" and isinstance(reason.value, SSL.Error):
            # A ready connection the peer's TLS ended: over TLS 1.3 a server refusing our client
            # certificate (or its absence) does so only after our side of the handshake completed.
            self.monitor.warn(
                "tls",
                "TLS connection with {peer} closed: {why}",
                peer=format_address(keys[0][1:]),
                why=describe_failure(reason.value, protocol.transport).removeprefix("TLS handshake failed: "),
            )
        for key in keys:
            protocols = self._connections.get(key, [])
            if protocol in protocols:
                protocols.remove(protocol)
            if not protocols:
                self._connections.pop(key, None)
        source = self._inbound.pop(protocol, None)
        if source is not None and self._stream_flow(*source) is None and not self._stopping:
            self.closed_inbound.closed(source)
        for pending in list(self._pending.values()):
            if pending.protocol is protocol:
                self._pending_failed(pending, _closed_before_ready(protocol, reason))

    def _stream_flow(self, name: str, host: str, port: int) -> StreamFlow | None:
        for protocol in reversed(self._connections.get((name, normalize_host(host), port), [])):
            if protocol.flow is not None and protocol.flow.connected():
                return protocol.flow
        return None

    def _send_on_new_connection(
        self, data: bytes, name: str, host: str, port: int, server_name: str
    ) -> Deferred[IFlow]:
        key = (name, normalize_host(host), port)
        pending = self._pending.get(key)
        if pending is None and self._stopping:
            return fail(TransportError("the transport manager is stopped"))
        connect = pending is None
        if pending is None:
            pending = self._pending[key] = _PendingConnection(key, server_name)
        entry: tuple[bytes, Deferred[IFlow]]

        def cancel(_: Deferred[IFlow]) -> None:
            if entry in pending.queue:
                pending.queue.remove(entry)

        waiter: Deferred[IFlow] = Deferred(cancel)
        entry = (data, waiter)
        pending.queue.append(entry)
        if connect:
            try:
                self._connect(pending, host.strip("[]"), port)
            except Exception as e:
                self._pending_failed(pending, str(e) or type(e).__name__)
        return waiter

    def _connect(self, pending: _PendingConnection, host: str, port: int) -> None:
        name = pending.key[0]
        creator = None
        if name == "TLS":
            if self._tls_client_options_factory is None:
                raise TransportError("no TLS client options configured")
            creator = self._tls_client_options_factory(pending.server_name)

        def build() -> SipStreamProtocol:
            protocol = SipStreamProtocol(
                self._sink, **self._protocol_kwargs(name, lambda p: self._outgoing_ready(pending, p))
            )
            pending.protocol = protocol
            self._protocols.add(protocol)
            return protocol

        factory = _OutgoingFactory(build, lambda why: self._pending_failed(pending, why))
        if creator is not None:
            pending.connector = self._reactor.connectSSL(
                host, port, factory, creator, timeout=self._connect_timeout, bindAddress=None
            )
        else:
            pending.connector = self._reactor.connectTCP(host, port, factory, timeout=self._connect_timeout)

    def _outgoing_ready(self, pending: _PendingConnection, protocol: SipStreamProtocol) -> None:
        self._stream_ready(protocol, alias=pending.key)
        if self._pending.get(pending.key) is pending:
            del self._pending[pending.key]
        flow = protocol.flow
        assert flow is not None
        queue, pending.queue = pending.queue, []
        for data, waiter in queue:
            flow.send(data)
            waiter.callback(flow)

    def _pending_failed(self, pending: _PendingConnection, why: str) -> None:
        if self._pending.get(pending.key) is not pending:
            return
        del self._pending[pending.key]
        self.counters.connect_failures += 1
        name, host, port = pending.key
        error = TransportError(f"{name} connection to {format_address((host, port))} failed: {why}")
        self.monitor.warn("connect", "{error}", error=error)
        queue, pending.queue = pending.queue, []
        for _, waiter in queue:
            waiter.errback(Failure(error))

    def _udp_flow(self, host: str, port: int) -> UdpFlow | None:
        flow = self._udp_flows.get((host, port))
        if flow is not None:
            return flow
        address = ip_or_none(host)
        if address is None:
            return None
        listening = self._choose_port(self._udp_ports, address)
        if listening is None:
            return None
        # An IP literal of the listener's own family (`_choose_port`), which the socket's `sendto` takes as it
        # is: the flow skips `Port.write`'s address checks (three parses of the address per datagram). Its
        # text is `address.compressed`, remembered (`str` of an address object formats it every time).
        flow = UdpFlow(
            listening,
            (normalize_host(host), port),
            self._bound(listening)[1],
            monitor=self.monitor,
            from_socket=True,
        )
        if len(self._udp_flows) >= 4096:  # destinations come from the network (Via, Contact): bounded
            self._udp_flows.clear()
        self._udp_flows[host, port] = flow
        return flow

    def _bound(self, listening: IListeningPort) -> tuple[Any, tuple[str, int]]:
        """(ip address object or None, (host, port)) a listening port is bound to, asked of it once."""
        found = self._bound_cache.get(listening)
        if found is None:
            local = peer_address(listening.getHost())
            found = self._bound_cache[listening] = (ip_or_none(local[0]), local)
        return found

    def _choose_port(
        self, ports: list[IListeningPort], destination: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> IListeningPort | None:
        """The listener to reach `destination` from: same family; exact, loopback, wildcard, then others."""
        best: tuple[int, IListeningPort] | None = None
        for listening in ports:
            bound = self._bound(listening)[0]
            if bound is None or bound.version != destination.version:
                continue
            if bound == destination:
                rank = 0
            elif bound.is_loopback:
                if not destination.is_loopback:
                    continue
                rank = 1
            elif bound.is_unspecified:
                rank = 2
            else:
                rank = 3
            if best is None or rank < best[0]:
                best = (rank, listening)
        return best[1] if best is not None else None


def _grow_receive_buffer(listening: IListeningPort, size: int) -> int | None:
    """Ask for SO_RCVBUF `size` on a listening UDP port's socket; log and return the usable size granted.

    Linux caps the request at net.core.rmem_max and reports twice the size asked (for its bookkeeping); the
    usable size is half of what it reports. A port without a socket (a test's fake) is left alone: None.
    """
    get_handle = getattr(listening, "getHandle", None)
    sock = get_handle() if get_handle is not None else None
    if not isinstance(sock, socket.socket):
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        reported = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    except OSError as e:
        _log.warn("Could not set SO_RCVBUF to {size} bytes: {error}", size=size, error=e)
        return None
    granted = reported // 2 if sys.platform.startswith("linux") else reported
    address = listening.getHost()
    log = _log.info if granted >= size else _log.warn
    log(
        "UDP receive buffer of {host}:{port}: {granted} bytes (asked for {size}; Linux caps it at "
        "net.core.rmem_max)",
        host=getattr(address, "host", "?"),
        port=getattr(address, "port", "?"),
        granted=granted,
        size=size,
    )
    return granted


def _route_source(destination: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The local address the kernel would send from to reach `destination` (no packet is sent)."""
    family = socket.AF_INET6 if destination.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((destination.compressed, 9))
            return normalize_host(probe.getsockname()[0])
    except OSError:
        return None


def _closed_before_ready(protocol: SipStreamProtocol, reason: Failure) -> str:
    """Why an outgoing connection closed before it was ready; for TLS, which check of the peer failed."""
    if protocol.transport_name != "TLS":
        return f"closed before it was ready: {reason.getErrorMessage()}"
    return describe_failure(reason.value or Exception("connection lost"), protocol.transport)
