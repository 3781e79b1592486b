"""SIP transports: UDP, TCP and TLS sockets turned into flows and parsed messages (RFC 3261 section 18).

- `SipDatagramProtocol` decodes UDP datagrams; CRLF-only datagrams are keep-alives and a STUN Binding request
  is answered with the mapped address (RFC 5626 4.4.2 and 8.4, RFC 5389). Every message arrives with a
  `UdpFlow` holding its real source address, so responses go back from the same socket to the address the
  request came from (RFC 3261 18.2.2, RFC 3581 symmetric response).
- `SipStreamProtocol` frames TCP/TLS streams by Content-Length (18.3), answers a double-CRLF ping with a
  single-CRLF pong (RFC 5626 3.5.1), and cuts connections that are idle, trickle a partial message for too
  long, or break framing (oversized message, bad Content-Length). Other connections are unaffected.
- `TransportManager` owns the listeners and connections: it sends from a listening UDP socket of the right
  address family, reuses open TCP/TLS connections in either direction (18.2.2, 18.1.1), opens new ones and
  queues data until they are ready, and keeps counters and an optional message trace.

Protocols decode and hand off to an `IMessageSink`; nothing raised by a peer or by the sink reaches the
reactor. This module does not know about transactions (retransmissions, Via `received`/`rport` handling,
the 1300-byte UDP limit of 18.1.1), RFC 3263 name resolution (UDP sends need IP literals) or the PBX.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IListeningPort,
    IReactorSSL,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
    ITransport,
)
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pbx.sip.errors import SipParseError
from pbx.sip.interfaces import IFlow, IMessageSink
from pbx.sip.parser import DEFAULT_LIMITS, ParserLimits, StreamFramer, parse_message

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
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

DEFAULT_HEADER_TIMEOUT = 32.0
"""Seconds a partial message may stay buffered on a stream before the sender is cut off (64*T1)."""

_ABORT_GRACE = 5.0  # seconds a closing connection gets before it is aborted
_UDP_MAX_PACKET = 65535
_STUN_COOKIE = 0x2112A442
_log = Logger(namespace="pbx.sip.transport")

TraceFunction = Callable[[str, str, IFlow, bytes], None]
"""trace(direction "send"/"recv", transport "UDP"/"TCP"/"TLS", flow, message bytes)."""


class TransportError(Exception):
    """A message could not be sent: no suitable listener, a refused connection, a failed TLS handshake."""


class ISipTransportReactor(IReactorUDP, IReactorTCP, IReactorSSL, IReactorTime):
    """The parts of a reactor the transport manager uses (a real reactor or `MemoryReactorClock`)."""


@dataclass
class TransportCounters:
    """Running totals kept by the protocols and flows of one manager (`connections_open` is a gauge)."""

    messages_received: int = 0
    messages_sent: int = 0
    undecodable: int = 0
    keepalives_received: int = 0
    keepalives_sent: int = 0
    sink_errors: int = 0
    send_errors: int = 0
    connect_failures: int = 0
    connections_opened: int = 0
    connections_open: int = 0
    connections_cut_idle: int = 0
    connections_cut_slow: int = 0
    connections_cut_oversized: int = 0
    connections_cut_framing: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for a status page or metrics)."""
        return asdict(self)


class TransportMonitor:
    """Counters, the optional trace hook and rate-limited logging shared by protocols and flows.

    Args:
        clock: time source for the log rate limit.
        trace: called for every message sent or received (keep-alives excluded).
        log_interval: seconds per logging window.
        log_burst: log lines per kind and window; the rest are counted and reported with the next line.
    """

    def __init__(
        self,
        clock: IReactorTime,
        trace: TraceFunction | None = None,
        *,
        log_interval: float = 60.0,
        log_burst: int = 10,
    ) -> None:
        self.counters = TransportCounters()
        self.trace = trace
        self._clock = clock
        self._interval = log_interval
        self._burst = log_burst
        self._windows: dict[str, list[float]] = {}  # kind -> [window start, logged, suppressed]

    def traced(self, direction: str, flow: IFlow, data: bytes) -> None:
        """Pass a message to the trace hook, if any; a failing hook is logged, never raised."""
        if self.trace is None:
            return
        try:
            self.trace(direction, flow.transport, flow, data)
        except Exception:
            self.failure("trace", "Message trace hook failed")

    def record_sent(self, flow: IFlow, data: bytes) -> None:
        """Count (and trace) bytes just written on `flow`."""
        if data.strip(b"\r\n"):
            self.counters.messages_sent += 1
            self.traced("send", flow, data)
        else:
            self.counters.keepalives_sent += 1

    def call_sink(self, method: Callable[..., object], *args: object) -> None:
        """Call a sink method; an exception is counted and logged, never raised into the reactor."""
        try:
            method(*args)
        except Exception:
            self.counters.sink_errors += 1
            self.failure("sink", "Message sink raised while handling input")

    def warn(self, kind: str, fmt: str, **kwargs: Any) -> None:
        """Log a warning unless too many of this kind were logged in the current window."""
        suppressed = self._admit(kind)
        if suppressed is not None:
            _log.warn(fmt + self._note(suppressed), **kwargs)

    def failure(self, kind: str, fmt: str, **kwargs: Any) -> None:
        """Log the exception being handled (call from an `except` block), rate-limited like `warn`."""
        suppressed = self._admit(kind)
        if suppressed is not None:
            _log.failure(fmt + self._note(suppressed), **kwargs)

    def _admit(self, kind: str) -> int | None:
        now = self._clock.seconds()
        window = self._windows.setdefault(kind, [now, 0, 0])
        if now - window[0] >= self._interval:
            window[:] = [now, 0, window[2]]
        if window[1] >= self._burst:
            window[2] += 1
            return None
        window[1] += 1
        suppressed, window[2] = int(window[2]), 0
        return suppressed

    @staticmethod
    def _note(suppressed: int) -> str:
        return f" ({suppressed} similar messages suppressed)" if suppressed else ""


def _norm_host(host: str) -> str:
    """Canonical text of an IP literal (brackets removed), or a lower-cased host name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower()


def _address(addr: IAddress | tuple[Any, ...]) -> tuple[str, int]:
    if isinstance(addr, tuple):
        return _norm_host(str(addr[0])), int(addr[1])
    if isinstance(addr, IPv4Address | IPv6Address):
        return _norm_host(addr.host), int(addr.port)
    raise TypeError(f"not an IP address: {addr!r}")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@implementer(IFlow)
class UdpFlow:
    """A UDP socket plus one peer's address; equal to any other flow with the same two addresses.

    Args:
        port_transport: the listening UDP port (anything with `write(data, addr)`).
        remote_address: the peer's (host, port) as seen on the wire.
        local_address: (host, port) the port is bound to.
        monitor: counters and trace; None for a private one.
    """

    transport = "UDP"
    reliable = False
    secure = False

    def __init__(
        self,
        port_transport: Any,
        remote_address: tuple[str, int],
        local_address: tuple[str, int],
        *,
        monitor: TransportMonitor | None = None,
    ) -> None:
        self._port = port_transport
        self.remote_address = _address(remote_address)
        self.local_address = _address(local_address)
        self._monitor = monitor

    def send(self, data: bytes) -> None:
        """Send a datagram; a socket error is counted and logged, not raised."""
        try:
            self.write(data)
        except Exception as e:
            if self._monitor is not None:
                self._monitor.counters.send_errors += 1
                self._monitor.warn("udp-send", "UDP send to {peer} failed: {error}", peer=self, error=e)

    def write(self, data: bytes) -> None:
        """Send a datagram, raising the socket's error (`OSError`, `MessageLengthError`)."""
        self._port.write(data, self.remote_address)
        if self._monitor is not None:
            self._monitor.record_sent(self, data)

    def connected(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UdpFlow):
            return NotImplemented
        return (self.local_address, self.remote_address) == (other.local_address, other.remote_address)

    def __hash__(self) -> int:
        return hash(("UDP", self.local_address, self.remote_address))

    def __repr__(self) -> str:
        return f"<UdpFlow {_fmt(self.local_address)} -> {_fmt(self.remote_address)}>"


@implementer(IFlow)
class StreamFlow:
    """One TCP or TLS connection; `connected()` turns False when it closes (or starts closing).

    Args:
        connection: the Twisted transport of the connection.
        transport: "TCP" or "TLS".
        local_address: our (host, port).
        remote_address: the peer's (host, port).
        monitor: counters and trace; None for a private one.
    """

    reliable = True

    def __init__(
        self,
        connection: ITransport,
        transport: str,
        local_address: tuple[str, int],
        remote_address: tuple[str, int],
        *,
        monitor: TransportMonitor | None = None,
    ) -> None:
        self.transport = transport
        self.secure = transport == "TLS"
        self.local_address = _address(local_address)
        self.remote_address = _address(remote_address)
        self._connection = connection
        self._monitor = monitor
        self._open = True

    def send(self, data: bytes) -> None:
        """Write on the connection; once it is closed the data is dropped (and counted)."""
        if not self._open:
            if self._monitor is not None:
                self._monitor.counters.send_errors += 1
            return
        self._connection.write(data)
        if self._monitor is not None:
            self._monitor.record_sent(self, data)

    def connected(self) -> bool:
        return self._open

    def close(self) -> None:
        """Close the connection after pending writes (for a flow that failed or is no longer wanted)."""
        if self._open:
            self._open = False
            self._connection.loseConnection()

    def _mark_closed(self) -> None:
        self._open = False

    def __repr__(self) -> str:
        state = "" if self._open else " closed"
        return (
            f"<StreamFlow {self.transport} {_fmt(self.local_address)} -> {_fmt(self.remote_address)}{state}>"
        )


def _fmt(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _deliver(
    sink: IMessageSink,
    monitor: TransportMonitor,
    limits: ParserLimits,
    data: bytes,
    flow: IFlow,
    stream: bool,
) -> None:
    """Parse one message and hand it (or the parse error) to the sink."""
    monitor.traced("recv", flow, data)
    try:
        message = parse_message(data, limits, stream=stream)
    except SipParseError as e:
        monitor.counters.undecodable += 1
        monitor.warn("undecodable", "Undecodable message from {flow}: {reason}", flow=flow, reason=e.reason)
        monitor.call_sink(sink.undecodable, data, flow, e)
        return
    monitor.counters.messages_received += 1
    monitor.call_sink(sink.message_received, message, flow)


def _stun_binding_response(datagram: bytes, source: tuple[str, int]) -> bytes | None:
    """The RFC 5389 Binding success response for a Binding request, else None (also for non-STUN input)."""
    if len(datagram) < 20:
        return None
    kind, length, cookie = struct.unpack("!HHI", datagram[:8])
    if kind != 0x0001 or cookie != _STUN_COOKIE or length + 20 != len(datagram):
        return None
    transaction_id = datagram[8:20]
    host, port = source
    address = ipaddress.ip_address(host)
    mask = struct.pack("!I", _STUN_COOKIE) + (transaction_id if address.version == 6 else b"")
    xored = bytes(a ^ b for a, b in zip(address.packed, mask, strict=True))
    value = struct.pack("!BBH", 0, 1 if address.version == 4 else 2, port ^ (_STUN_COOKIE >> 16)) + xored
    attribute = struct.pack("!HH", 0x0020, len(value)) + value  # XOR-MAPPED-ADDRESS
    return struct.pack("!HHI", 0x0101, len(attribute), _STUN_COOKIE) + transaction_id + attribute


def _is_stun(datagram: bytes) -> bool:
    return len(datagram) >= 20 and datagram[0] < 0x40 and datagram[4:8] == struct.pack("!I", _STUN_COOKIE)


class SipDatagramProtocol(DatagramProtocol):
    """Decode UDP datagrams into SIP messages for an `IMessageSink`.

    Args:
        sink: receives messages and undecodable input.
        clock: time source (log rate limit).
        limits: parser bounds.
        monitor: counters and trace; None for a private one.
        answer_stun: answer STUN Binding requests (RFC 5626 keep-alives on UDP).
    """

    noisy = False

    def __init__(
        self,
        sink: IMessageSink,
        *,
        clock: IReactorTime,
        limits: ParserLimits = DEFAULT_LIMITS,
        monitor: TransportMonitor | None = None,
        answer_stun: bool = True,
    ) -> None:
        self._sink = sink
        self._limits = limits
        self.monitor = monitor if monitor is not None else TransportMonitor(clock)
        self._answer_stun = answer_stun
        self._local: tuple[str, int] = ("0.0.0.0", 0)

    def startProtocol(self) -> None:
        assert self.transport is not None
        self._local = _address(self.transport.getHost())

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        try:
            self._datagram_received(datagram, addr)
        except Exception:
            self.monitor.failure(
                "udp-internal", "Unexpected error handling a datagram from {addr}", addr=addr
            )

    def _datagram_received(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if not datagram.strip(b"\r\n"):
            self.monitor.counters.keepalives_received += 1
            return
        if _is_stun(datagram):
            self.monitor.counters.keepalives_received += 1
            response = _stun_binding_response(datagram, _address(addr)) if self._answer_stun else None
            if response is not None and self.transport is not None:
                self.transport.write(response, addr)
                self.monitor.counters.keepalives_sent += 1
            return
        flow = UdpFlow(self.transport, addr, self._local, monitor=self.monitor)
        _deliver(self._sink, self.monitor, self._limits, datagram, flow, stream=False)


@implementer(IHandshakeListener)
class SipStreamProtocol(Protocol):
    """Frame one TCP or TLS connection into SIP messages for an `IMessageSink`.

    Args:
        sink: receives messages and undecodable input.
        clock: time source for the timeouts.
        transport: "TCP" or "TLS" (a TLS connection is ready only after its handshake).
        limits: parser bounds; `max_message_size` also bounds the framing buffer.
        idle_timeout: seconds without received bytes before the connection is closed; None disables.
        header_timeout: seconds a partial message may stay buffered; None disables.
        monitor: counters and trace; None for a private one.
        on_ready: called with this protocol when the connection can carry messages.
        on_closed: called with this protocol and the reason when the connection is gone.

    Attributes:
        flow: the `StreamFlow` of this connection (set when the connection is made).
        ready: True after TCP connect, or after the TLS handshake.
    """

    def __init__(
        self,
        sink: IMessageSink,
        *,
        clock: IReactorTime,
        transport: str = "TCP",
        limits: ParserLimits = DEFAULT_LIMITS,
        idle_timeout: float | None = None,
        header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
        monitor: TransportMonitor | None = None,
        on_ready: Callable[[SipStreamProtocol], object] | None = None,
        on_closed: Callable[[SipStreamProtocol, Failure], object] | None = None,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self.transport_name = transport
        self._limits = limits
        self._idle_timeout = idle_timeout or None
        self._header_timeout = header_timeout or None
        self.monitor = monitor if monitor is not None else TransportMonitor(clock)
        self._on_ready = on_ready
        self._on_closed = on_closed
        self._framer = StreamFramer(limits)
        self._tail = b""  # the last bytes received: the framer's buffer is always a suffix of the stream
        self.flow: StreamFlow | None = None
        self.ready = False
        self._closing = False
        self._closed = False
        self._closed_waiters: list[Deferred[None]] = []
        self._idle_timer: IDelayedCall | None = None
        self._header_timer: IDelayedCall | None = None
        self._abort_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        wire = self._wire
        self.flow = StreamFlow(
            wire,
            self.transport_name,
            _address(wire.getHost()),
            _address(wire.getPeer()),
            monitor=self.monitor,
        )
        self.monitor.counters.connections_opened += 1
        self.monitor.counters.connections_open += 1
        self._reset_idle_timer()
        if self.transport_name != "TLS":
            self._become_ready()

    def handshakeCompleted(self) -> None:
        if not self._closing:
            self._become_ready()

    def dataReceived(self, data: bytes) -> None:
        try:
            self._data_received(data)
        except Exception:
            self.monitor.failure("stream-internal", "Unexpected error on {flow}; closing", flow=self.flow)
            self._cut(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._cancel_timers()
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        self._abort_timer = None
        if self.flow is not None:
            self.flow._mark_closed()
            self.monitor.counters.connections_open -= 1
        if self._on_closed is not None:
            self.monitor.call_sink(self._on_closed, self, reason)
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def close(self) -> None:
        """Close the connection (aborting it if it has not closed after a grace period)."""
        self._cut(None)

    def when_closed(self) -> Deferred[None]:
        """A Deferred that fires once the connection is lost."""
        if self._closed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._closed_waiters.append(waiter)
        return waiter

    def _become_ready(self) -> None:
        if self.ready:
            return
        self.ready = True
        if self._on_ready is not None:
            self.monitor.call_sink(self._on_ready, self)

    def _data_received(self, data: bytes) -> None:
        if self._closing or self.flow is None:
            return
        self._reset_idle_timer()
        self._tail = (self._tail + data)[-3:]
        try:
            items = self._framer.feed(data)
        except SipParseError as e:
            oversized = e.status == 513
            self.monitor.warn(
                "framing", "Framing error on {flow} ({reason}); closing", flow=self.flow, reason=e.reason
            )
            self._cut("connections_cut_oversized" if oversized else "connections_cut_framing")
            return
        progressed = False
        for item in items:
            if self._closing:
                return
            if item == StreamFramer.PING:
                self.monitor.counters.keepalives_received += 1
                self._wire.write(b"\r\n")  # RFC 5626 3.5.1 pong
                self.monitor.counters.keepalives_sent += 1
                continue
            progressed = True
            _deliver(self._sink, self.monitor, self._limits, item, self.flow, stream=True)
        if not self._closing:
            self._update_header_timer(progressed)

    def _partial_message_buffered(self) -> bool:
        pending = self._framer.buffered
        return pending > len(self._tail) or (pending > 0 and bool(self._tail[-pending:].strip(b"\r\n")))

    def _update_header_timer(self, progressed: bool) -> None:
        partial = self._partial_message_buffered()
        if self._header_timer is not None and (progressed or not partial):
            if self._header_timer.active():
                self._header_timer.cancel()
            self._header_timer = None
        if partial and self._header_timer is None and self._header_timeout is not None:
            self._header_timer = self._clock.callLater(self._header_timeout, self._header_timeout_expired)

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        self.monitor.warn("slow", "Partial message on {flow} for too long; closing", flow=self.flow)
        self._cut("connections_cut_slow")

    def _reset_idle_timer(self) -> None:
        if self._idle_timeout is None:
            return
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.reset(self._idle_timeout)
        else:
            self._idle_timer = self._clock.callLater(self._idle_timeout, self._idle_timeout_expired)

    def _idle_timeout_expired(self) -> None:
        self._idle_timer = None
        _log.debug("Closing idle connection {flow}", flow=self.flow)
        self._cut("connections_cut_idle")

    def _cut(self, counter: str | None) -> None:
        if self._closing:
            return
        self._closing = True
        if counter is not None:
            setattr(self.monitor.counters, counter, getattr(self.monitor.counters, counter) + 1)
        self._cancel_timers()
        if self.flow is not None:
            self.flow._mark_closed()
        if self.transport is None:  # built but never connected: nothing to wait for
            self.connectionLost(Failure(ConnectionDone("closed before it was connected")))
            return
        self.transport.loseConnection()
        self._abort_timer = self._clock.callLater(_ABORT_GRACE, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()

    @property
    def _wire(self) -> ITransport:
        assert self.transport is not None, "not connected"
        return self.transport

    def _cancel_timers(self) -> None:
        for timer in (self._idle_timer, self._header_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle_timer = self._header_timer = None


class SipStreamFactory(ServerFactory):
    """Builds a `SipStreamProtocol` per accepted connection.

    Args:
        sink: passed to each protocol.
        on_build: called with each new protocol (before its connection is made).
        protocol_kwargs: keyword arguments of `SipStreamProtocol` (clock, transport, timeouts...).
    """

    noisy = False

    def __init__(
        self,
        sink: IMessageSink,
        *,
        on_build: Callable[[SipStreamProtocol], object] | None = None,
        **protocol_kwargs: Any,
    ) -> None:
        self._sink = sink
        self._on_build = on_build
        self._kwargs = protocol_kwargs

    def buildProtocol(self, addr: IAddress | None) -> SipStreamProtocol:
        protocol = SipStreamProtocol(self._sink, **self._kwargs)
        protocol.factory = self
        if self._on_build is not None:
            self._on_build(protocol)
        return protocol


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
    ) -> None:
        self._reactor = reactor
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
        self._protocols: set[SipStreamProtocol] = set()
        self._connections: dict[_Key, list[SipStreamProtocol]] = {}
        self._keys: dict[SipStreamProtocol, list[_Key]] = {}
        self._pending: dict[_Key, _PendingConnection] = {}
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

    # Listening

    def listen_udp(self, host: str, port: int) -> IListeningPort:
        """Listen for datagrams on host ("" or "0.0.0.0": any IPv4, "::": any IPv6) and port (0: any)."""
        protocol = SipDatagramProtocol(
            self._sink, clock=self._reactor, limits=self._limits, monitor=self.monitor
        )
        listening = self._reactor.listenUDP(
            port, protocol, interface=host.strip("[]"), maxPacketSize=_UDP_MAX_PACKET
        )
        self._udp_ports.append(listening)
        return listening

    def listen_tcp(self, host: str, port: int) -> IListeningPort:
        """Accept TCP connections on host and port (0: any)."""
        listening = self._reactor.listenTCP(port, self._stream_factory("TCP"), interface=host.strip("[]"))
        self._stream_ports.append(("TCP", listening))
        return listening

    def listen_tls(self, host: str, port: int) -> IListeningPort:
        """Accept TLS connections on host and port (0: any).

        Raises:
            ValueError: the manager was built without `tls_server_options`.
        """
        if self._tls_server_options is None:
            raise ValueError("listen_tls needs tls_server_options")
        listening = self._reactor.listenSSL(
            port, self._stream_factory("TLS"), self._tls_server_options, interface=host.strip("[]")
        )
        self._stream_ports.append(("TLS", listening))
        return listening

    def local_address(self, transport: str, family_hint_host: str) -> tuple[str, int]:
        """The (host, port) of a listener for `transport`, to put in Via or Contact.

        The listener is chosen as for sending to `family_hint_host` (same address family, loopback for
        loopback; a host name counts as a remote IPv4 host). A wildcard bind is replaced by the source
        address the kernel would use to reach the hint (or its default route, for a name), and stays a
        wildcard when there is no route. A public address behind NAT is configuration, not known here.

        Raises:
            TransportError: no listener of that transport and family.
        """
        name = transport.upper()
        ports = self._udp_ports if name == "UDP" else [p for t, p in self._stream_ports if t == name]
        hint = _ip(family_hint_host) or ipaddress.IPv4Address("0.0.0.0")  # a name: IPv4, not loopback
        listening = self._choose_port(ports, hint)
        if listening is None:
            raise TransportError(f"no {name} listener for IPv{hint.version}")
        host, port = _address(listening.getHost())
        if ipaddress.ip_address(host).is_unspecified:
            probe = hint if not hint.is_unspecified else ipaddress.IPv4Address("192.0.2.1")  # TEST-NET-1
            host = _route_source(probe) or host
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
        waits: list[Deferred[Any]] = []
        for listening in [*self._udp_ports, *(p for _, p in self._stream_ports)]:
            waits.append(maybeDeferred(listening.stopListening))
        self._udp_ports.clear()
        self._stream_ports.clear()
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
        return SipStreamFactory(
            self._sink, on_build=self._protocols.add, **self._protocol_kwargs(name, self._stream_ready)
        )

    def _protocol_kwargs(self, name: str, on_ready: Callable[[SipStreamProtocol], object]) -> dict[str, Any]:
        return {
            "clock": self._reactor,
            "transport": name,
            "limits": self._limits,
            "idle_timeout": self._idle_timeout or None,
            "header_timeout": self._header_timeout or None,
            "monitor": self.monitor,
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

    def _stream_closed(self, protocol: SipStreamProtocol, reason: Failure) -> None:
        self._protocols.discard(protocol)
        for key in self._keys.pop(protocol, []):
            protocols = self._connections.get(key, [])
            if protocol in protocols:
                protocols.remove(protocol)
            if not protocols:
                self._connections.pop(key, None)
        for pending in list(self._pending.values()):
            if pending.protocol is protocol:
                self._pending_failed(pending, f"closed before it was ready: {reason.getErrorMessage()}")

    def _stream_flow(self, name: str, host: str, port: int) -> StreamFlow | None:
        for protocol in reversed(self._connections.get((name, _norm_host(host), port), [])):
            if protocol.flow is not None and protocol.flow.connected():
                return protocol.flow
        return None

    def _send_on_new_connection(
        self, data: bytes, name: str, host: str, port: int, server_name: str
    ) -> Deferred[IFlow]:
        key = (name, _norm_host(host), port)
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
        error = TransportError(f"{name} connection to {_fmt((host, port))} failed: {why}")
        self.monitor.warn("connect", "{error}", error=error)
        queue, pending.queue = pending.queue, []
        for _, waiter in queue:
            waiter.errback(Failure(error))

    def _udp_flow(self, host: str, port: int) -> UdpFlow | None:
        address = _ip(host)
        if address is None:
            return None
        listening = self._choose_port(self._udp_ports, address)
        if listening is None:
            return None
        return UdpFlow(
            listening, (address.compressed, port), _address(listening.getHost()), monitor=self.monitor
        )

    @staticmethod
    def _choose_port(
        ports: list[IListeningPort], destination: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> IListeningPort | None:
        """The listener to reach `destination` from: same family; exact, loopback, wildcard, then others."""
        best: tuple[int, IListeningPort] | None = None
        for listening in ports:
            bound = _ip(_address(listening.getHost())[0])
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


def _route_source(destination: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The local address the kernel would send from to reach `destination` (no packet is sent)."""
    family = socket.AF_INET6 if destination.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((destination.compressed, 9))
            return _norm_host(probe.getsockname()[0])
    except OSError:
        return None
