"""SIP over sockets: the Twisted protocols that turn datagrams and byte streams into messages (RFC 3261 18).

- `SipDatagramProtocol` decodes UDP datagrams; CRLF-only datagrams are keep-alives and a STUN Binding request
  is answered with the mapped address (RFC 5626 4.4.2 and 8.4, RFC 5389).
- `SipStreamProtocol` frames TCP/TLS streams by Content-Length (18.3), answers a double-CRLF ping with a
  single-CRLF pong (RFC 5626 3.5.1), and cuts connections that are idle, trickle a partial message for too
  long, break framing, never finish their TLS handshake, or (accepted ones) send no SIP message in time.
  Other connections are unaffected.

Before anything is parsed, each datagram and each framed stream message is offered to an optional
`Admission` (`pbx.sip.admission`: per-source rate limits, blocks, raw-byte screens); what it refuses is
dropped there, and a stream whose source is blocked is cut. Protocols decode and hand off to an
`IMessageSink`; nothing raised by a peer or by the sink reaches the reactor. This module knows nothing of
transactions, connection management (`pbx.sip.transport`) or the PBX.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import DatagramProtocol, Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pbx.sip.admission import Admission
from pbx.sip.errors import SipParseError
from pbx.sip.flow import (
    StreamFlow,
    TransportMonitor,
    UdpFlow,
    peer_address,
)
from pbx.sip.intake import DatagramIntake
from pbx.sip.interfaces import IFlow, IMessageSink
from pbx.sip.parser import DEFAULT_LIMITS, ParserLimits, StreamFramer, parse_message
from pbx.sip.tls import describe_failure

DEFAULT_HEADER_TIMEOUT = 32.0
"""Seconds a partial message may stay buffered on a stream before the sender is cut off (64*T1)."""
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds a TLS connection may take to complete its handshake."""
DEFAULT_FIRST_MESSAGE_TIMEOUT = 30.0
"""Seconds an accepted connection may take to send its first SIP message (CRLF keep-alives do not count)."""

_ABORT_GRACE = 5.0  # seconds a closing connection gets before it is aborted
UDP_MAX_PACKET = 65535
_STUN_COOKIE = 0x2112A442
_log = Logger(namespace="pbx.sip.transport")


def _deliver(
    sink: IMessageSink,
    monitor: TransportMonitor,
    limits: ParserLimits,
    data: bytes,
    flow: IFlow,
    stream: bool,
) -> bool:
    """Parse one message and hand it (or the parse error) to the sink; True when it parsed."""
    if monitor.trace is not None:
        monitor.traced("recv", flow, data)
    try:
        message = parse_message(data, limits, stream=stream)
    except SipParseError as e:
        monitor.counters.undecodable += 1
        monitor.warn("undecodable", "Undecodable message from {flow}: {reason}", flow=flow, reason=e.reason)
        monitor.call_sink(sink.undecodable, data, flow, e)
        return False
    monitor.counters.messages_received += 1
    monitor.call_sink(sink.message_received, message, flow)
    return True


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
        admission: asked before anything else is done with a datagram (keep-alives included); None admits
            everything. Ignored when `intake` is given.
        intake: the pre-parse entry (`pbx.sip.intake`: admission, then overload screening), shared by the
            listeners of one transport manager; None for a private one around `admission`.
    """

    noisy = False
    max_flows = 16384
    """Flows kept for reuse (one per peer address); past that the cache starts over."""

    def __init__(
        self,
        sink: IMessageSink,
        *,
        clock: IReactorTime,
        limits: ParserLimits = DEFAULT_LIMITS,
        monitor: TransportMonitor | None = None,
        answer_stun: bool = True,
        admission: Admission | None = None,
        intake: DatagramIntake | None = None,
    ) -> None:
        self._sink = sink
        self.intake = intake if intake is not None else DatagramIntake(admission)
        self._limits = limits
        self.monitor = monitor if monitor is not None else TransportMonitor(clock)
        self._answer_stun = answer_stun
        self._local: tuple[str, int] = ("0.0.0.0", 0)
        # Peer address as received -> its flow: a flow is an immutable value, and building one per datagram
        # (normalizing two addresses) was a noticeable part of the cost of a request.
        self._flows: dict[tuple[str, int], UdpFlow] = {}

    def startProtocol(self) -> None:
        assert self.transport is not None
        self._local = peer_address(self.transport.getHost())
        self._flows.clear()

    def flow_for(self, addr: tuple[str, int]) -> UdpFlow:
        """The flow to the peer at `addr` (as the socket reports it) through this socket."""
        flow = self._flows.get(addr)
        if flow is None:
            flows = self._flows
            if len(flows) >= self.max_flows:
                flows.clear()
            flow = flows[addr] = UdpFlow(
                self.transport, addr, self._local, monitor=self.monitor, from_socket=True
            )
        return flow

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        try:
            self._datagram_received(datagram, addr)
        except Exception:
            self.monitor.failure(
                "udp-internal", "Unexpected error handling a datagram from {addr}", addr=addr
            )

    def _datagram_received(self, datagram: bytes, addr: tuple[str, int]) -> None:
        intake = self.intake  # the one pre-parse entry: admission, then (below) overload screening
        if not intake.admit(addr[0], datagram):
            return
        if datagram[:1] in (b"\r", b"\n", b"") and not datagram.strip(b"\r\n"):
            self.monitor.counters.keepalives_received += 1
            return
        if datagram[0] < 0x40 and _is_stun(datagram):  # SIP starts with a letter: one call less for it
            self.monitor.counters.keepalives_received += 1
            response = _stun_binding_response(datagram, peer_address(addr)) if self._answer_stun else None
            if response is not None and self.transport is not None:
                self.transport.write(response, addr)
                self.monitor.counters.keepalives_sent += 1
            return
        flow = self._flows.get(addr) or self.flow_for(addr)
        if intake.prioritize and intake.defers(datagram):  # new work waits for the end of the turn
            intake.later(self._handle, datagram, flow)  # (unless it is refused at once)
            return
        screen = intake.screen
        if screen is not None and screen(datagram, flow):
            return
        _deliver(self._sink, self.monitor, self._limits, datagram, flow, stream=False)

    def _handle(self, datagram: bytes, flow: UdpFlow) -> None:
        """The overload screen, then the parser, for a datagram the intake deferred (`intake.later`)."""
        try:
            screen = self.intake.screen
            if screen is not None and screen(datagram, flow):
                return
            _deliver(self._sink, self.monitor, self._limits, datagram, flow, stream=False)
        except Exception:
            self.monitor.failure(
                "udp-internal", "Unexpected error handling a datagram from {addr}", addr=flow.remote_address
            )


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
        handshake_timeout: TLS only: seconds from connect to a completed handshake; None disables.
        first_message_timeout: seconds from connect to the first SIP message that parses (CRLF keep-alives
            and undecodable messages do not count: a peer that only pings or sends garbage has not shown it
            speaks SIP); None disables. For accepted connections: the peer that connects speaks first.
        monitor: counters and trace; None for a private one.
        admission: asked for each framed message (and ping) before it is parsed; a refused one is dropped,
            and the connection is cut once its source is blocked. None admits everything.
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
        handshake_timeout: float | None = None,
        first_message_timeout: float | None = None,
        monitor: TransportMonitor | None = None,
        admission: Admission | None = None,
        on_ready: Callable[[SipStreamProtocol], object] | None = None,
        on_closed: Callable[[SipStreamProtocol, Failure], object] | None = None,
    ) -> None:
        self._sink = sink
        self._admission = admission
        self._clock = clock
        self.transport_name = transport
        self._limits = limits
        self._idle_timeout = idle_timeout or None
        self._header_timeout = header_timeout or None
        self._handshake_timeout = (handshake_timeout or None) if transport == "TLS" else None
        self._first_message_timeout = first_message_timeout or None
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
        self._handshake_timer: IDelayedCall | None = None
        self._first_message_timer: IDelayedCall | None = None
        self._abort_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        wire = self._wire
        self.flow = StreamFlow(
            wire,
            self.transport_name,
            peer_address(wire.getHost()),
            peer_address(wire.getPeer()),
            monitor=self.monitor,
        )
        self.monitor.counters.connections_opened += 1
        self.monitor.counters.connections_open += 1
        self._reset_idle_timer()
        if self._first_message_timeout is not None:
            self._first_message_timer = self._clock.callLater(
                self._first_message_timeout, self._first_message_timeout_expired
            )
        if self.transport_name != "TLS":
            self._become_ready()
        elif self._handshake_timeout is not None:
            self._handshake_timer = self._clock.callLater(
                self._handshake_timeout, self._handshake_timeout_expired
            )

    def handshakeCompleted(self) -> None:
        if self._handshake_timer is not None:
            if self._handshake_timer.active():
                self._handshake_timer.cancel()
            self._handshake_timer = None
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
            error = None if reason.check(ConnectionDone) else reason.value
            broken = describe_failure(error, self.transport) if error is not None else None
            self.flow._mark_closed(broken.removeprefix("TLS handshake failed: ") if broken else None)
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
        admission = self._admission
        if admission is not None and admission.is_blocked(self.flow.remote_address[0]):
            self._cut("connections_cut_blocked", abort=True)
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
            if admission is not None and not admission.admit(self.flow.remote_address[0], item):
                if admission.is_blocked(self.flow.remote_address[0]):
                    self._cut("connections_cut_blocked", abort=True)
                    return
                continue
            if item == StreamFramer.PING:
                self.monitor.counters.keepalives_received += 1
                self._wire.write(b"\r\n")  # RFC 5626 3.5.1 pong
                self.monitor.counters.keepalives_sent += 1
                continue
            progressed = True
            if _deliver(self._sink, self.monitor, self._limits, item, self.flow, stream=True):
                self._first_message_seen()
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

    def _first_message_seen(self) -> None:
        if self._first_message_timer is not None:
            if self._first_message_timer.active():
                self._first_message_timer.cancel()
            self._first_message_timer = None

    def _first_message_timeout_expired(self) -> None:
        self._first_message_timer = None
        self.monitor.warn("silent", "No SIP message on {flow} in time; closing", flow=self.flow)
        self._cut("connections_cut_silent")

    def _handshake_timeout_expired(self) -> None:
        self._handshake_timer = None
        self.monitor.warn(
            "handshake", "TLS handshake on {flow} not completed in time; closing", flow=self.flow
        )
        self._cut("connections_cut_handshake", abort=True)  # nor would such a peer take part in a TLS close

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

    def _cut(self, counter: str | None, *, abort: bool = False) -> None:
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
        if abort:
            self._abort()
            return
        self.transport.loseConnection()
        self._abort_timer = self._clock.callLater(_ABORT_GRACE, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        elif self.transport is not None:
            self.transport.loseConnection()

    @property
    def _wire(self) -> ITransport:
        assert self.transport is not None, "not connected"
        return self.transport

    def _cancel_timers(self) -> None:
        for timer in (self._idle_timer, self._header_timer, self._handshake_timer, self._first_message_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle_timer = self._header_timer = self._handshake_timer = self._first_message_timer = None


class _RefusedConnection(Protocol):
    """Stands in for a refused TLS connection (Twisted's TLS wrapper needs a protocol): aborts at once."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]


class SipStreamFactory(ServerFactory):
    """Builds a `SipStreamProtocol` per accepted connection.

    Args:
        sink: passed to each protocol.
        admit: called with each new protocol (before its connection is made) and the peer's address;
            False refuses the connection: it is closed at once (no protocol is connected).
        protocol_kwargs: keyword arguments of `SipStreamProtocol` (clock, transport, timeouts...).
    """

    noisy = False

    def __init__(
        self,
        sink: IMessageSink,
        *,
        admit: Callable[[SipStreamProtocol, IAddress | None], bool] | None = None,
        **protocol_kwargs: Any,
    ) -> None:
        self._sink = sink
        self._admit = admit
        self._kwargs = protocol_kwargs

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        protocol = SipStreamProtocol(self._sink, **self._kwargs)
        protocol.factory = self
        if self._admit is not None and not self._admit(protocol, addr):
            # A plain TCP port closes the socket when given None; the TLS wrapper needs a protocol.
            return _RefusedConnection() if self._kwargs.get("transport") == "TLS" else None
        return protocol
