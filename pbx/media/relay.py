"""The in-process media relay: RTP anchoring for the B2BUA, with symmetric RTP and latching (RFC 3550,
RFC 4961; the "latching" of draft-ietf-mmusic-latching, RFC 7362).

`UdpMediaRelay` implements `IMediaRelay` with Twisted datagram protocols. A session has two legs; each leg
owns an RTP socket on an even pool port N and an RTCP socket on N + 1. A datagram that arrives on leg a's
RTP socket is sent *from leg b's RTP socket* to leg b's phone (and the reverse); RTCP likewise, on its own
sockets.

Where a leg's phone is (latching, the cure for one-way audio behind NAT):

1. Until the phone's first packet, its SDP address (`set_remote`) is used, RTCP at a=rtcp or port + 1.
2. The first valid packet on the leg's socket latches its source address: from then on we send there.
3. The latch moves to a new source when (a) that source is the SDP address itself, or (b) it sends
   `SWITCH_AFTER` (3) packets in a row with none from the latched source in between, or (c) the latched
   source has been silent for at least `QUIET_SECONDS` (0.5 s) when the new source's packet arrives.
   Packets from a source that has not (yet) taken the latch are dropped and counted as `foreign`. This lets a
   phone move (re-INVITE, NAT rebinding) within 3 packets (60 ms of G.711) and keeps stray packets (a
   previous call's late stream on a reused port, a scanner) from stealing or polluting the call. It is no
   defence against an attacker who can send bursts: that takes SRTP.
4. `set_remote` with a different address than before (a re-INVITE that moves the media, another fork
   answering) forgets the latch, so rule 1 applies again; the same address keeps it.
RTP and RTCP latch independently (behind NAT, RTCP's public port is rarely RTP's + 1).

Sockets: each leg binds its two sockets on a `PortPool` pair and closes them when the session closes, the
pair going back to the pool once they are closed. With `keep_open`, a closed leg's sockets are instead
"parked" (still open, unwired: what arrives is dropped) and a later leg takes the oldest parked pair that
has been quiet for `reuse_after` seconds, its channels reset (no latch, no remote, no counters), so a busy
PBX does not open and close four sockets per call.

Validation is minimal: RTP must be version 2 with at least the 12-byte fixed header, RTCP version 2 with at
least 8 bytes; anything else (garbage, STUN, a scanner's probe) is counted as `invalid` and never relayed.
Packets that arrive before the other leg knows where to send are dropped and counted.

The hot path, `_Channel.datagramReceived` (in `pbx.media.relay_channel`, with latching), reads a few
attributes and calls one `transport.write`; latching decisions, time and logging are off it. This module
does not know about SIP or SDP, ICE/STUN, RTCP-mux negotiation (multiplexed RTCP simply passes the RTP
check and is relayed on the RTP sockets), SRTP, or media timeouts (read `stats()` to detect a silent call).
Transcoding and DTMF interworking are not here: `UdpRelayLeg.set_transform(f)` passes what a leg's phone
sends through `f` before it is relayed (`pbx.media.dtmf_interwork.RtpPath`); without one the hot path is
unchanged.

The PBX itself can speak and listen on a leg (IVR, music on hold): `UdpRelayLeg.attach(consumer)` hands
what that leg's phone sends to `consumer.rtp_received`/`rtcp_received` instead of relaying it (latching still
learns where the phone is), and withholds from that phone what the other leg's phone sends (dropped and
counted in the other leg's `dropped`); `send_rtp`/`send_rtcp` send to the phone from the leg's own sockets;
`detach()` resumes relaying both ways. Each leg attaches independently. The unattached hot path is unchanged:
attaching swaps the channel's `datagramReceived` for the delivering one.

`pbx.media.relay_memory.MemoryMediaRelay` is the in-memory provider of the same interfaces, for tests of call
control.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP
from twisted.logger import Logger
from zope.interface import implementer

from pbx.media.interfaces import (
    IMediaRelay,
    IRelayLeg,
    IRelaySession,
    IRtpTransport,
    LegStats,
    SessionStats,
)
from pbx.media.ports import PortPool, PortsExhausted, out_of_resources
from pbx.media.relay_addresses import AddressRules as _AddressRules
from pbx.media.relay_channel import (
    _RTP_IDS,
    _RTP_MIN,
    QUIET_SECONDS,
    SWITCH_AFTER,
    RelayConsumer,
    Transform,
    _Channel,
    _RtcpChannel,
)
from pbx.media.relay_socket import listen_udp

__all__ = [
    "DEFAULT_MAX_PACKET",
    "IRelayReactor",
    "QUIET_SECONDS",
    "REUSE_AFTER",
    "RelayConsumer",
    "SWITCH_AFTER",
    "UdpMediaRelay",
]

Address = tuple[str, int]

DEFAULT_MAX_PACKET = 2048  # RTP over UDP stays below the path MTU; larger datagrams would be truncated
REUSE_AFTER = 1.0  # seconds a parked leg must have been quiet before a new call gets its sockets

_log = Logger(namespace="pbx.media.relay")


class IRelayReactor(IReactorUDP, IReactorTime):
    """What the relay needs of a reactor: UDP ports and the clock."""


@implementer(IRelayLeg, IRtpTransport)
class UdpRelayLeg:
    """One leg of a `UdpRelaySession`: an RTP and an RTCP socket on a pool port pair."""

    __slots__ = (
        "_closing",
        "_ports",
        "_retire",
        "_rtcp",
        "_rtp",
        "_rules",
        "_tap",
        "_transform",
        "local_address",
        "local_port",
        "name",
    )

    def __init__(
        self,
        name: str,
        local_address: str,
        local_port: int,
        channels: tuple[_Channel, _Channel],
        ports: tuple[IListeningPort, IListeningPort],
        rules: _AddressRules,
        retire: Callable[[UdpRelayLeg, tuple[_Channel, _Channel]], Deferred[None]],
    ) -> None:
        self.name = name
        self.local_address = local_address
        self.local_port = local_port
        self._rtp, self._rtcp = channels
        self._ports = ports
        self._rules = rules
        self._retire = retire
        self._closing: Deferred[None] | None = None
        self._transform: Transform | None = None  # set_transform's
        self._tap: Callable[[bytes], object] | None = None  # set_tap's

    @property
    def remote(self) -> Address | None:
        return self._rtp.remote

    @property
    def latched(self) -> Address | None:
        return self._rtp.source

    @property
    def rtcp_latched(self) -> Address | None:
        return self._rtcp.source

    def set_remote(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        if self._closing is not None:
            return
        rtp = self._rules.destination(host, port)
        rtcp = None
        if rtp is not None:
            rtcp = self._rules.destination(host, port + 1 if rtcp_port is None else rtcp_port)
        self._rtp.set_remote(rtp)
        self._rtcp.set_remote(rtcp)

    def wire_to(self, other: UdpRelayLeg) -> None:
        """Send what this leg's phone sends out of `other`'s sockets (RTP to RTP, RTCP to RTCP)."""
        self._rtp.wire(other._rtp, other._ports[0], self._ports[0])
        self._rtcp.wire(other._rtcp, other._ports[1], self._ports[1])

    @property
    def attached(self) -> bool:
        return self._rtp._consumer is not None

    def attach(self, consumer: RelayConsumer) -> None:
        """Hand this leg's phone's packets to `consumer` instead of the other leg, and withhold the other
        leg's packets from this phone, until `detach`. Attaching again replaces the consumer. A no-op on a
        closed leg."""
        if self._closing is not None:
            return
        self._rtp.attach(consumer.rtp_received)
        self._rtcp.attach(consumer.rtcp_received)

    def detach(self) -> None:
        """Relay both ways again (a no-op when not attached)."""
        self._rtp.detach()
        self._rtcp.detach()

    def set_transform(self, transform: Transform | None) -> None:
        """Pass the RTP this leg's phone sends through `transform` before it is relayed (None: as is)."""
        self._transform = transform
        self._apply_transform()

    def set_tap(self, tap: Callable[[bytes], object] | None) -> None:
        """Show every RTP packet this leg's phone sends to `tap` before it is relayed (and before any
        transform), unchanged (None: stop). The B2BUA watches DTMF events this way (in-call feature codes);
        it costs the relay's plain hot path while set. `tap` must not raise."""
        self._tap = tap
        self._apply_transform()

    def _apply_transform(self) -> None:
        if self._closing is not None:
            return
        transform, tap = self._transform, self._tap
        if tap is None:
            self._rtp.set_transform(transform)
        elif transform is None:
            self._rtp.set_transform(partial(_tapped, tap))
        else:
            self._rtp.set_transform(partial(_tapped_transform, tap, transform))

    def set_rtcp_transform(self, transform: Transform | None) -> None:
        """Pass the RTCP this leg's phone sends through `transform` before it is relayed (None: as is): SRTCP
        decrypted or encrypted between an SRTP leg and a plain one (`pbx.media.srtp`)."""
        if self._closing is None:
            self._rtcp.set_transform(transform)

    def send_rtp(self, data: bytes) -> None:
        """Send an RTP packet from this leg's RTP socket to this leg's phone (dropped and counted in
        `unsent` while its address is unknown or after close)."""
        self._rtp.send(data)

    @property
    def last_sent(self) -> tuple[int, int, int, float] | None:
        """(SSRC, sequence number, timestamp, now) of the last RTP packet this leg's phone was sent (relayed
        from the other phone, or by `send_rtp`), None before any: an endpoint attached next continues that
        stream (`continue_from`), since phones drop packets whose timestamp goes backwards."""
        own = self._rtp
        relayed = own._peer.last if own._peer is not None else None
        last = own.sent_last if own._consumer is not None or relayed is None else relayed
        last = last or relayed
        if last is None or len(last) < _RTP_MIN:
            return None
        seq, ts, ssrc = _RTP_IDS.unpack_from(last, 2)
        return ssrc, seq, ts, own._clock.seconds()

    def send_rtcp(self, data: bytes) -> None:
        """The same for RTCP, from the RTCP socket to the phone's RTCP address."""
        self._rtcp.send(data)

    @property
    def sent(self) -> int:
        """RTP and RTCP packets the PBX sent to this leg's phone with `send_rtp`/`send_rtcp`."""
        return self._rtp.sent + self._rtcp.sent

    @property
    def unsent(self) -> int:
        """Packets `send_rtp`/`send_rtcp` dropped: the phone's address was unknown or the leg closed."""
        return self._rtp.unsent + self._rtcp.unsent

    def stats(self) -> LegStats:
        rtp, rtcp = self._rtp, self._rtcp
        return LegStats(
            name=self.name,
            local_port=self.local_port,
            remote=rtp.remote,
            rtcp_remote=rtcp.remote,
            latched=rtp.source,
            rtcp_latched=rtcp.source,
            packets=rtp.packets,
            bytes=rtp.octets,
            rtcp_packets=rtcp.packets,
            rtcp_bytes=rtcp.octets,
            dropped=rtp.dropped + rtcp.dropped,
            invalid=rtp.invalid + rtcp.invalid,
            foreign=rtp.foreign + rtcp.foreign,
            relatched=rtp.relatched + rtcp.relatched,
            send_errors=rtp.send_errors + rtcp.send_errors,
        )

    def close(self) -> Deferred[None]:
        """Stop relaying; the relay closes the sockets (the port pair goes back to the pool once they are
        closed) or parks them for a later leg. Idempotent."""
        if self._closing is None:
            channels = self._rtp, self._rtcp
            for channel in channels:
                channel.unwire()
            # The sockets (and their channels) may serve another leg now: this one keeps copies with its
            # final state, on which nothing sends or relays any more.
            self._rtp, self._rtcp = channels[0].snapshot(), channels[1].snapshot()
            self._closing = self._retire(self, channels)
        if self._closing.called:  # parked: nothing to wait for
            return succeed(None)
        return _follow(self._closing)

    def __repr__(self) -> str:
        return f"<UdpRelayLeg {self.name} {self.local_address}:{self.local_port} latched={self.latched}>"


def _tapped(tap: Callable[[bytes], object], packet: bytes) -> bytes:
    tap(packet)
    return packet


def _tapped_transform(tap: Callable[[bytes], object], transform: Transform, packet: bytes) -> bytes | None:
    tap(packet)
    return transform(packet)


def _close_ports(ports: tuple[IListeningPort, ...], then: Callable[[], object]) -> Deferred[None]:
    """Stop listening on `ports`; call `then` once all are closed (whatever stopListening said)."""
    done: Deferred[None] = Deferred()

    def closed(_: object) -> None:
        then()
        done.callback(None)

    DeferredList([maybeDeferred(port.stopListening) for port in ports], consumeErrors=True).addBoth(closed)
    return done


def _follow(d: Deferred[None]) -> Deferred[None]:
    """A new Deferred that fires (with None) once `d` has fired, so several callers can wait for one close."""
    follower: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        follower.callback(None)
        return result

    d.addBoth(fire)
    return follower


@dataclass(slots=True)
class _Parked:
    """The sockets of a closed leg, kept open for a later one."""

    port: int
    channels: tuple[_Channel, _Channel]
    ports: tuple[IListeningPort, IListeningPort]
    parked_at: float


@implementer(IRelaySession)
class UdpRelaySession:
    """Two `UdpRelayLeg`s wired back to back; made by `UdpMediaRelay.create_session`."""

    __slots__ = ("_a", "_b", "_on_close", "call_id", "closed")

    def __init__(
        self, call_id: str, a: UdpRelayLeg, b: UdpRelayLeg, on_close: Callable[[UdpRelaySession], None]
    ) -> None:
        self.call_id = call_id
        self.closed = False
        self._a, self._b = a, b
        self._on_close = on_close
        a.wire_to(b)
        b.wire_to(a)

    def leg(self, name: str) -> UdpRelayLeg:
        if name == "a":
            return self._a
        if name == "b":
            return self._b
        raise KeyError(name)

    def stats(self) -> SessionStats:
        return SessionStats(self.call_id, self._a.stats(), self._b.stats())

    def close(self) -> Deferred[None]:
        if not self.closed:
            self.closed = True
            self._on_close(self)
        closing = [self._a.close(), self._b.close()]
        if all(d.called for d in closing):
            return succeed(None)
        return _all(closing)

    def __repr__(self) -> str:
        a, b = self._a, self._b
        return f"<UdpRelaySession {self.call_id} a={a.local_port} b={b.local_port} closed={self.closed}>"


def _all(ds: list[Deferred[None]]) -> Deferred[None]:
    """Fires (with None) when every one of `ds` has fired."""
    done: Deferred[None] = Deferred()
    DeferredList(ds, consumeErrors=True).addBoth(lambda _: done.callback(None))
    return done


@implementer(IMediaRelay)
class UdpMediaRelay:
    """Relays RTP/RTCP between the two legs of each session, in this process, with Twisted UDP ports.

    Args:
        reactor: a reactor providing `IReactorUDP` and `IReactorTime` (a fake one in tests).
        pool: where the legs' port pairs come from (and go back to when a session closes).
        bind_host: the IP address the sockets bind to ("0.0.0.0" or "::" for all; "::" also serves IPv4).
        advertise: the address SDP must carry (`IRelayLeg.local_address`); required when `bind_host` is a
            wildcard, typically the box's public address.
        max_packet_size: longer datagrams are truncated by the kernel (and then relayed truncated).
        keep_open: how many closed legs keep their two sockets open ("parked", their pool port still
            allocated) for later legs, instead of closing them and binding new ones: opening and closing
            four sockets per call is a good part of a short call's cost. 0 (the default) parks none.
        reuse_after: a parked leg is taken again only once it has been parked, and has received no valid
            RTP/RTCP, for this many seconds, so a late stream of the ended call cannot leak into (or take
            the latch of) the next one. Reused channels start from scratch: no latch, remote or counters.
    """

    def __init__(
        self,
        reactor: IRelayReactor,
        pool: PortPool,
        *,
        bind_host: str = "127.0.0.1",
        advertise: str | None = None,
        max_packet_size: int = DEFAULT_MAX_PACKET,
        keep_open: int = 0,
        reuse_after: float = REUSE_AFTER,
    ) -> None:
        self._rules = _AddressRules(bind_host)
        if advertise is None:
            if ipaddress.ip_address(bind_host).is_unspecified:
                raise ValueError(f"the relay binds to {bind_host}: say which address SDP must advertise")
            advertise = bind_host
        ipaddress.ip_address(advertise)  # a ValueError for a name
        self._reactor = reactor
        self._pool = pool
        self._bind_host = bind_host
        self._advertise = advertise
        self._max_packet_size = max_packet_size
        self._keep_open = keep_open
        self._reuse_after = reuse_after
        self._parked: deque[_Parked] = deque()
        self._open: set[UdpRelaySession] = set()
        self._forget = self._open.discard  # one bound method for every session and leg, not one each
        self._retire_leg = self._retire
        self._closed = False
        self.reused = 0  # legs that got parked sockets rather than new ones

    @property
    def sessions(self) -> int:
        return len(self._open)

    @property
    def clock(self) -> IReactorTime:
        """The relay's clock (what converted DTMF is paced by)."""
        return self._reactor

    @property
    def pool(self) -> PortPool:
        return self._pool

    @property
    def parked(self) -> int:
        """How many closed legs' sockets are kept open for reuse (their ports count as in use)."""
        return len(self._parked)

    def create_session(self, call_id: str) -> UdpRelaySession:
        if self._closed:
            raise RuntimeError("the media relay is closed")
        a = self._open_leg("a", call_id)
        try:
            b = self._open_leg("b", call_id)
        except BaseException:
            a.close()
            raise
        session = UdpRelaySession(call_id, a, b, self._forget)
        self._open.add(session)
        return session

    def _open_leg(self, name: str, call_id: str) -> UdpRelayLeg:
        """A parked leg's sockets if one has been quiet long enough, else new ones on the next pool pair
        that binds (and when no pair is left, a parked leg after all)."""
        leg = self._unpark(name, call_id)
        if leg is not None:
            return leg
        try:
            return self._bind_leg(name, call_id)
        except PortsExhausted:
            leg = self._unpark(name, call_id, force=True)
            if leg is None:
                raise
            return leg

    def _unpark(self, name: str, call_id: str, *, force: bool = False) -> UdpRelayLeg | None:
        parked = self._parked
        for _ in range(2):  # the oldest; if a stray packet keeps it busy, it goes back and the next is tried
            if not parked:
                return None
            entry = parked[0]
            rtp, rtcp = entry.channels
            quiet_since = max(entry.parked_at, rtp.stray_at, rtcp.stray_at)
            if force or self._reactor.seconds() - quiet_since >= self._reuse_after:
                parked.popleft()
                rtp.reuse(name, call_id)
                rtcp.reuse(name, call_id)
                self.reused += 1
                return UdpRelayLeg(
                    name,
                    self._advertise,
                    entry.port,
                    entry.channels,
                    entry.ports,
                    self._rules,
                    self._retire_leg,
                )
            if quiet_since == entry.parked_at:
                return None  # the oldest is not ready: none is
            parked.rotate(-1)
            entry.parked_at = quiet_since
        return None

    def _retire(self, leg: UdpRelayLeg, channels: tuple[_Channel, _Channel]) -> Deferred[None]:
        """A leg was closed (its channels unwired): park its sockets, or close them."""
        release = partial(self._pool.release, leg.local_port)
        if self._closed or len(self._parked) >= self._keep_open:
            return _close_ports(leg._ports, release)
        now = self._reactor.seconds()
        self._parked.append(_Parked(leg.local_port, channels, leg._ports, now))
        return succeed(None)

    def _bind_leg(self, name: str, call_id: str) -> UdpRelayLeg:
        """Open the RTP and RTCP sockets of one leg on the next pool pair that binds."""
        for _ in range(max(self._pool.available, 1)):
            port = self._pool.allocate()  # raises PortsExhausted
            rtp, rtcp = _Channel(name, call_id, self._reactor), _RtcpChannel(name, call_id, self._reactor)
            try:
                rtp_port = self._bind(port, rtp)
            except CannotListenError as e:
                self._pool.release(port)  # to the back of the queue: tried again after all the others
                if out_of_resources(e):  # no descriptor: no other port binds now either (nothing is kept)
                    raise PortsExhausted(f"cannot open RTP sockets now: {e.socketError}") from e
                continue
            try:
                rtcp_port = self._bind(port + 1, rtcp)
            except CannotListenError as e:
                _close_ports((rtp_port,), partial(self._pool.release, port))
                if out_of_resources(e):
                    raise PortsExhausted(f"cannot open RTP sockets now: {e.socketError}") from e
                continue
            channels, ports = (rtp, rtcp), (rtp_port, rtcp_port)
            return UdpRelayLeg(name, self._advertise, port, channels, ports, self._rules, self._retire_leg)
        raise PortsExhausted(f"no RTP port pair of {self._pool!r} can be bound on {self._bind_host}")

    def _bind(self, port: int, channel: _Channel) -> IListeningPort:
        return listen_udp(self._reactor, port, channel, self._bind_host, self._max_packet_size)

    def close(self) -> Deferred[None]:
        self._closed = True
        closing = [session.close() for session in list(self._open)]
        while self._parked:
            entry = self._parked.popleft()
            closing.append(_close_ports(entry.ports, partial(self._pool.release, entry.port)))
        return _all(closing)

    def __repr__(self) -> str:
        where = f"{self._bind_host} ({self._advertise})"
        return f"<UdpMediaRelay {where}: {self.sessions} sessions, {self._pool!r}>"
