"""Flows and transport bookkeeping (RFC 3261 18, RFC 5626 flows): the values a transport hands upward.

- `UdpFlow`: one UDP socket plus a peer address; `StreamFlow`: one TCP or TLS connection. Both implement
  `IFlow`, so a response or a later request can go back the way a message came in.
- `TransportCounters` and `TransportMonitor`: counters, the optional message trace, rate-limited logging.

This module knows nothing of parsing, protocols, transactions or the PBX.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IAddress, IReactorTime, ITransport
from twisted.logger import Logger
from zope.interface import implementer

from pbx.sip.interfaces import IFlow

_log = Logger(namespace="pbx.sip.transport")

TraceFunction = Callable[[str, str, IFlow, bytes], None]
"""trace(direction "send"/"recv", transport "UDP"/"TCP"/"TLS", flow, message bytes)."""


class TransportError(Exception):
    """A message could not be sent: no suitable listener, a refused connection, a failed TLS handshake."""


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
    connections_cut_handshake: int = 0
    connections_cut_silent: int = 0
    connections_cut_blocked: int = 0
    connections_refused_rate: int = 0
    connections_refused_address: int = 0
    connections_refused_global: int = 0
    sends_to_closed_flows: int = 0

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
        if data[:1] not in (b"\r", b"\n", b"") or data.strip(b"\r\n"):
            self.counters.messages_sent += 1
            if self.trace is not None:
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


_NORMALIZED: dict[str, str] = {}  # host text -> normalize_host(text): every datagram's source goes through it
_IPS: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address | None] = {}


def normalize_host(host: str) -> str:
    """Canonical text of an IP literal (brackets removed), or a lower-cased host name."""
    found = _NORMALIZED.get(host)
    if found is None:
        text = host.strip("[]")
        try:
            found = ipaddress.ip_address(text).compressed
        except ValueError:
            found = text.lower()
        if len(_NORMALIZED) >= 4096:  # hosts come from the network: bounded
            _NORMALIZED.clear()
        _NORMALIZED[host] = found
    return found


def peer_address(addr: IAddress | tuple[Any, ...]) -> tuple[str, int]:
    if isinstance(addr, tuple):
        return normalize_host(str(addr[0])), int(addr[1])
    if isinstance(addr, IPv4Address | IPv6Address):
        return normalize_host(addr.host), int(addr.port)
    raise TypeError(f"not an IP address: {addr!r}")


def ip_or_none(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address object of an IP literal (brackets allowed), None for anything else; remembered."""
    try:
        return _IPS[host]
    except KeyError:
        pass
    try:
        found: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        found = None
    if len(_IPS) >= 4096:
        _IPS.clear()
    _IPS[host] = found
    return found


@implementer(IFlow)
class UdpFlow:
    """A UDP socket plus one peer's address; equal to any other flow with the same two addresses.

    Args:
        port_transport: the listening UDP port (anything with `write(data, addr)`).
        remote_address: the peer's (host, port) as seen on the wire.
        local_address: (host, port) the port is bound to.
        monitor: counters and trace; None for a private one.
        from_socket: `remote_address` is what this port's socket reported for a datagram it received, or
            another IP literal of the socket's family: the flow then sends with the socket's `sendto` itself,
            skipping the address checks of Twisted's `Port.write` (three address parses per datagram
            there, ~2 % of a busy registrar's time).
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
        from_socket: bool = False,
    ) -> None:
        self._port = port_transport
        self.remote_address = peer_address(remote_address)
        self.local_address = peer_address(local_address)
        self._monitor = monitor
        sock = getattr(port_transport, "socket", None) if from_socket else None
        self._sendto: Callable[[bytes, Any], object] | None = getattr(sock, "sendto", None)
        self._raw_address = remote_address

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
        sendto = self._sendto
        if sendto is None:
            self._port.write(data, self.remote_address)
        else:
            try:
                sendto(data, self._raw_address)
            except OSError as e:  # as Twisted's Port.write: EINTR again, EMSGSIZE raised, refusals ignored
                if e.errno == errno.EINTR:
                    sendto(data, self._raw_address)
                elif e.errno == errno.EMSGSIZE:
                    raise MessageLengthError("message too long") from None
                elif e.errno != errno.ECONNREFUSED:
                    raise
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
        return f"<UdpFlow {format_address(self.local_address)} -> {format_address(self.remote_address)}>"


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
        self.local_address = peer_address(local_address)
        self.remote_address = peer_address(remote_address)
        self._connection = connection
        self._monitor = monitor
        self._open = True
        self._watchers: list[Any] = []  # client transactions waiting for an answer on this connection

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

    def watch(self, transaction: Any) -> None:
        """Tell `transaction` (its `connection_failed(reason)`) if the connection breaks before it is done:
        a request sent on a connection that the peer then ends with an error (a reset, a TLS alert such as
        TLS 1.3's "certificate required", sent only after our side of the handshake) gets no answer on it,
        and waiting for Timer B/F would only delay the failure (RFC 3261 17.1.4)."""
        watchers = self._watchers
        if len(watchers) >= 32:  # a long-lived connection: forget the transactions that have ended
            watchers[:] = [w for w in watchers if not w.terminated]
        if transaction not in watchers:
            watchers.append(transaction)

    def _mark_closed(self, failure: str | None = None) -> None:
        """The connection is gone; `failure` says why when the peer or the network broke it."""
        self._open = False
        watchers, self._watchers = self._watchers, []
        if failure is None:
            return
        for transaction in watchers:
            if not transaction.terminated:
                transaction.connection_failed(failure)

    def __repr__(self) -> str:
        state = "" if self._open else " closed"
        local, remote = format_address(self.local_address), format_address(self.remote_address)
        return f"<StreamFlow {self.transport} {local} -> {remote}{state}>"


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ClosedInboundFlows:
    """Source addresses of accepted TCP/TLS connections that have closed (RFC 5626 5.3, RFC 5923).

    A peer that connected to us (a phone over TCP or TLS) is reached over that connection: its source port is
    ephemeral, nothing listens there, and a phone such as baresip does not listen for TLS at all. Once the
    connection is gone, a request to its address (a BYE to the caller, an INVITE to the registered phone)
    must fail at once rather than open a new connection to a port that is not a listener. The peer comes
    back by connecting again (and re-registering); a new accepted connection from the address clears it.

    Bounded: at most `limit` addresses (the oldest are forgotten first), each for `lifetime` seconds.

    Args:
        clock: time source.
        lifetime: seconds an address is remembered.
        limit: addresses remembered at most.
    """

    def __init__(self, clock: IReactorTime, lifetime: float = 3600.0, limit: int = 10_000) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._limit = limit
        self._closed: dict[
            tuple[str, str, int], float
        ] = {}  # key -> closed at (insertion order: oldest first)

    def __len__(self) -> int:
        return len(self._closed)

    def closed(self, key: tuple[str, str, int]) -> None:
        """The accepted connection from `key` (transport, host, port) closed (and no other is open)."""
        self._closed.pop(key, None)
        self._closed[key] = self._clock.seconds()
        while len(self._closed) > self._limit:
            del self._closed[next(iter(self._closed))]

    def opened(self, key: tuple[str, str, int]) -> None:
        """A connection from `key` was accepted again."""
        self._closed.pop(key, None)

    def __contains__(self, key: object) -> bool:
        at = self._closed.get(key)  # type: ignore[call-overload]
        if at is None:
            return False
        if self._clock.seconds() - at > self._lifetime:
            del self._closed[key]  # type: ignore[arg-type]
            return False
        return True
