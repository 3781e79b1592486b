"""The in-memory twin of `UdpMediaRelay`: the same `IMediaRelay` interfaces, no sockets, for tests of call
control (the B2BUA's, the IVR's). Addresses come from a `PortPool`; what a phone "sends" is fed in by the
test and what the relay would send is recorded. Latching follows the UDP relay's rules (`_AddressRules`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from pbx.media.interfaces import (
    LEGS,
    IMediaRelay,
    IRelayLeg,
    IRelaySession,
    IRtpTransport,
    LegStats,
    SessionStats,
)
from pbx.media.ports import PortPool, PortsExhausted
from pbx.media.relay import _RTP_IDS, _RTP_MIN, Address, RelayConsumer, Transform
from pbx.media.relay_addresses import AddressRules as _AddressRules

__all__ = ["MemoryMediaRelay", "MemoryRelayLeg", "MemoryRelaySession"]


@implementer(IRelayLeg, IRtpTransport)
class MemoryRelayLeg:
    """A leg of `MemoryMediaRelay`: a pool port and the remotes it was given, no sockets."""

    def __init__(self, name: str, local_address: str, local_port: int, rules: _AddressRules) -> None:
        self.name = name
        self.local_address = local_address
        self.local_port = local_port
        self.remote: Address | None = None
        self.rtcp_remote: Address | None = None
        self.latched: Address | None = None
        self.remotes: list[tuple[str, int, int | None]] = []  # every set_remote call, for assertions
        self.consumer: RelayConsumer | None = None  # while attached
        self.sent_rtp: list[bytes] = []  # what send_rtp was given while the phone's address was known
        self.sent_rtcp: list[bytes] = []
        self.unsent = 0
        self.closed = False
        self.transform: Transform | None = None  # set_transform's
        self.tap: Callable[[bytes], object] | None = None  # set_tap's
        self._rules = rules

    @property
    def attached(self) -> bool:
        return self.consumer is not None

    def attach(self, consumer: RelayConsumer) -> None:
        if not self.closed:
            self.consumer = consumer

    def detach(self) -> None:
        self.consumer = None

    def set_transform(self, transform: Transform | None) -> None:
        if not self.closed:
            self.transform = transform

    def set_tap(self, tap: Callable[[bytes], object] | None) -> None:
        """Show each packet `relay_rtp` is given to `tap` first (`UdpRelayLeg.set_tap`)."""
        self.tap = tap

    def relay_rtp(self, data: bytes) -> bytes | None:
        """Test helper: what the relay would send to the other phone for `data` from this leg's phone
        (through the tap and the transform, when they are set)."""
        if self.tap is not None:
            self.tap(data)
        return data if self.transform is None else self.transform(data)

    def send_rtp(self, data: bytes) -> None:
        if self.closed or (self.latched or self.remote) is None:
            self.unsent += 1
        else:
            self.sent_rtp.append(data)

    @property
    def last_sent(self) -> tuple[int, int, int, float] | None:
        """(SSRC, sequence number, timestamp, 0.0) of the last `send_rtp` packet (nothing is relayed here)."""
        if not self.sent_rtp or len(self.sent_rtp[-1]) < _RTP_MIN:
            return None
        seq, ts, ssrc = _RTP_IDS.unpack_from(self.sent_rtp[-1], 2)
        return ssrc, seq, ts, 0.0

    def send_rtcp(self, data: bytes) -> None:
        if self.closed or self.rtcp_remote is None:
            self.unsent += 1
        else:
            self.sent_rtcp.append(data)

    def receive_rtp(self, data: bytes, addr: Address | None = None) -> bool:
        """Test helper: the phone sends `data` (from `addr`, default its SDP address). Delivered to the
        consumer while attached (True), else nothing happens (False): this relay relays nothing."""
        source = addr or self.latched or self.remote
        if self.consumer is None or source is None:
            return False
        self.latched = source
        self.consumer.rtp_received(data, source)
        return True

    def receive_rtcp(self, data: bytes, addr: Address | None = None) -> bool:
        """Test helper: like `receive_rtp`, for RTCP."""
        source = addr or self.rtcp_remote
        if self.consumer is None or source is None:
            return False
        self.consumer.rtcp_received(data, source)
        return True

    def set_remote(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        remote = self._rules.destination(host, port)
        rtcp = None
        if remote is not None:
            rtcp = self._rules.destination(host, port + 1 if rtcp_port is None else rtcp_port)
        if remote != self.remote:
            self.latched = None
        self.remote, self.rtcp_remote = remote, rtcp
        self.remotes.append((host, port, rtcp_port))

    def stats(self) -> LegStats:
        return LegStats(
            name=self.name,
            local_port=self.local_port,
            remote=self.remote,
            rtcp_remote=self.rtcp_remote,
            latched=self.latched,
            rtcp_latched=None,
            packets=0,
            bytes=0,
            rtcp_packets=0,
            rtcp_bytes=0,
            dropped=0,
            invalid=0,
            foreign=0,
            relatched=0,
            send_errors=0,
        )


@implementer(IRelaySession)
class MemoryRelaySession:
    """A session of `MemoryMediaRelay`."""

    def __init__(self, call_id: str, legs: dict[str, MemoryRelayLeg], relay: MemoryMediaRelay) -> None:
        self.call_id = call_id
        self.closed = False
        self._legs = legs
        self._relay = relay

    def leg(self, name: str) -> MemoryRelayLeg:
        return self._legs[name]

    def stats(self) -> SessionStats:
        return SessionStats(self.call_id, self._legs["a"].stats(), self._legs["b"].stats())

    def close(self) -> Deferred[None]:
        if not self.closed:
            self.closed = True
            for leg in self._legs.values():
                leg.closed = True
                leg.detach()
            self._relay._closed_session(self)
        return succeed(None)


@implementer(IMediaRelay)
class MemoryMediaRelay:
    """The in-memory `IMediaRelay`: allocates pool ports and records what call control asks, relays nothing.

    Args:
        pool: where legs' ports come from (default: 40000-40999).
        local_address: what `IRelayLeg.local_address` says.
        clock: the relay's clock, when call control should convert DTMF (`pbx.media.dtmf_interwork`).
    """

    def __init__(
        self, pool: PortPool | None = None, *, local_address: str = "127.0.0.1", clock: Any = None
    ) -> None:
        self.clock = clock  # an IReactorTime for DTMF interworking (None: the B2BUA converts nothing)
        self.pool = pool if pool is not None else PortPool(40000, 40999)
        self.local_address = local_address
        self.created: list[MemoryRelaySession] = []  # every session ever created, for assertions
        self._open: set[MemoryRelaySession] = set()
        self._rules = _AddressRules(local_address)

    @property
    def sessions(self) -> int:
        return len(self._open)

    def create_session(self, call_id: str) -> MemoryRelaySession:
        a = self.pool.allocate()
        try:
            b = self.pool.allocate()
        except PortsExhausted:
            self.pool.release(a)
            raise
        legs = {
            name: MemoryRelayLeg(name, self.local_address, port, self._rules)
            for name, port in zip(LEGS, (a, b), strict=True)
        }
        session = MemoryRelaySession(call_id, legs, self)
        self._open.add(session)
        self.created.append(session)
        return session

    def _closed_session(self, session: MemoryRelaySession) -> None:
        self._open.discard(session)
        for name in LEGS:
            self.pool.release(session.leg(name).local_port)

    def close(self) -> Deferred[None]:
        for session in list(self._open):
            session.close()
        return succeed(None)
