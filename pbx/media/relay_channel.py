"""One socket of a relay leg: the media relay's hot path (RFC 3550 5.1 and 6.4.1 for what is checked; the
latching of RFC 7362). `pbx.media.relay` explains the rules; this module holds the datagram protocol that
applies them.

`_Channel` validates a datagram (version 2, the minimum length), decides whether its source takes the latch,
and writes it out of the peer leg's socket to the other phone. While its leg is attached it hands packets to
the consumer instead; after the PBX spoke to the other phone it rewrites SSRC, sequence number and timestamp
so that phone hears one stream; with a transform (`set_transform`: transcoding, DTMF interworking) what it
relays is what the transform returns. Each of these swaps `datagramReceived` for the instance, so the plain
path stays a few attribute reads and one `write`. `_RtcpChannel` is the same for RTCP.

This module knows nothing of SIP, SDP, port pools or sessions.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

__all__ = ["QUIET_SECONDS", "SWITCH_AFTER", "Address", "RelayConsumer", "Transform"]

Address = tuple[str, int]
Transform = Callable[[bytes], "bytes | None"]

SWITCH_AFTER = 3  # packets in a row from a new source that move the latch
QUIET_SECONDS = 0.5  # silence of the latched source after which one packet from a new source moves the latch
_RTP_MIN = 12  # RFC 3550 5.1: the fixed header
_RTCP_MIN = 8  # RFC 3550 6.4: the smallest RR (no report blocks)
_RTP_IDS = struct.Struct("!HII")  # sequence number, timestamp, SSRC at offset 2 of an RTP header
_FRAME = 160  # timestamp step assumed between the PBX's last packet and the relayed stream (20 ms at 8 kHz)

_log = Logger(namespace="pbx.media.relay")  # the relay's messages


class RelayConsumer(Protocol):
    """What `IRelayLeg.attach` takes: receives what the leg's phone sends while the leg is attached."""

    def rtp_received(self, data: bytes, addr: Address) -> None:
        """An RTP packet (version 2, at least 12 bytes) from the phone's latched address `addr`."""

    def rtcp_received(self, data: bytes, addr: Address) -> None:
        """An RTCP packet (version 2, at least 8 bytes) from the phone's latched RTCP address `addr`."""


def _no_send(datagram: bytes, addr: Address) -> None:
    """The writer of a channel that is not wired (yet or any more)."""


class _Rare:
    """What a channel keeps only once something unusual happened: counters of dropped, invalid, foreign or
    unsent packets and of errors, the contest for its latch, the continued stream after the PBX spoke to the
    other phone, what the PBX itself sent. Most channels never need it (4 channels per call: 17 slots fewer
    each, ~0.5 KB a call)."""

    __slots__ = (
        "candidate",
        "consumer_errors",
        "continue_",
        "continued_ssrc",
        "dropped",
        "foreign",
        "heard_at",
        "heard_mark",
        "invalid",
        "offsets",
        "relatched",
        "run",
        "run_mark",
        "send_errors",
        "sent",
        "sent_last",
        "stray_at",
        "unsent",
    )

    def __init__(self) -> None:
        self.dropped = self.invalid = self.foreign = self.relatched = self.send_errors = 0
        self.sent = self.unsent = self.consumer_errors = 0
        self.stray_at = 0.0  # when a valid packet last arrived while unwired (parked for reuse)
        self.candidate: Address | None = None  # a new source competing for the latch
        self.run = 0  # its packets in a row
        self.run_mark = 0  # packets heard from the latched source when its run started
        self.heard_mark = -1  # packets heard from the latched source at `heard_at`
        self.heard_at = 0.0
        self.continue_: tuple[int, int, int] | None = None  # (ssrc, seq, ts) relayed RTP continues from
        self.offsets: tuple[int, int] | None = None
        self.continued_ssrc = -1
        self.sent_last: bytes | None = None  # the last datagram `send` sent to this channel's phone

    def copy(self) -> _Rare:
        clone = object.__new__(_Rare)
        for name in _Rare.__slots__:
            setattr(clone, name, getattr(self, name))
        return clone


class _Channel(DatagramProtocol):
    """One socket of a leg (its RTP or its RTCP): validates, latches, forwards through the peer channel.

    `target` is where what arrives here goes (the other leg's phone); the peer channel sets it whenever its
    own phone's address changes, so the hot path needs no lookup through the peer.
    """

    # Slots, not a __dict__ (4 channels per call: about 1.6 KB each with one, 0.2 KB with slots and the
    # rarely needed state in `_Rare`). The base class keeps an instance dict available, so attaching can
    # still shadow `datagramReceived` per channel.
    __slots__ = (
        "_call_id",
        "_clock",
        "_consumer",
        "_leg_name",
        "_own_port",
        "_peer",
        "_rare",
        "_send",
        "_transform",
        "last",
        "numPorts",
        "octets",
        "packets",
        "remote",
        "source",
        "target",
        "transport",
    )
    noisy = False
    _min_length = _RTP_MIN
    kind = "RTP"

    def __init__(self, leg_name: str, call_id: str, clock: IReactorTime) -> None:
        self.transport: Any = None  # DatagramProtocol's, as slots
        self.numPorts = 0
        self._leg_name = leg_name
        self._call_id = call_id
        self._clock = clock
        self._peer: _Channel | None = None
        self._send: Callable[[bytes, Address], Any] = _no_send
        self.target: Address | None = None  # where packets received here are sent
        self.source: Address | None = None  # latched address of this channel's phone
        self.remote: Address | None = None  # this channel's phone according to its SDP
        self.packets = 0
        self.octets = 0
        self.last: bytes | None = None  # the last datagram relayed to the other phone
        self._consumer: Callable[[bytes, Address], object] | None = None  # set while the leg is attached
        self._transform: Transform | None = None  # rewrites relayed RTP (transcoding, DTMF interworking)
        self._own_port: Any = None  # this channel's own socket (an IListeningPort with `write`)
        self._rare: _Rare | None = None  # made by the first unusual event (`_more`)

    def _more(self) -> _Rare:
        rare = self._rare
        if rare is None:
            rare = self._rare = _Rare()
        return rare

    # The counters, as read from outside (0 until counted).
    @property
    def dropped(self) -> int:
        """Valid packets not relayed: the other phone's address unknown yet (or the other leg attached)."""
        return self._rare.dropped if self._rare is not None else 0

    @property
    def invalid(self) -> int:
        """Datagrams that are not RTP (RTCP) version 2 of the minimum length."""
        return self._rare.invalid if self._rare is not None else 0

    @property
    def foreign(self) -> int:
        """Valid packets from a source that did not (yet) take the latch."""
        return self._rare.foreign if self._rare is not None else 0

    @property
    def relatched(self) -> int:
        """Times the latch moved to a new source."""
        return self._rare.relatched if self._rare is not None else 0

    @property
    def send_errors(self) -> int:
        return self._rare.send_errors if self._rare is not None else 0

    @property
    def sent(self) -> int:
        """Packets the PBX itself sent to this channel's phone (`send`)."""
        return self._rare.sent if self._rare is not None else 0

    @property
    def unsent(self) -> int:
        """... that it could not, because the phone's address was unknown or the channel closed."""
        return self._rare.unsent if self._rare is not None else 0

    @property
    def consumer_errors(self) -> int:
        return self._rare.consumer_errors if self._rare is not None else 0

    @property
    def stray_at(self) -> float:
        """When a valid packet last arrived while unwired (parked for reuse); 0 if none did."""
        return self._rare.stray_at if self._rare is not None else 0.0

    @property
    def sent_last(self) -> bytes | None:
        """The last datagram `send` sent to this channel's phone."""
        return self._rare.sent_last if self._rare is not None else None

    def snapshot(self) -> _Channel:
        """An unwired copy with this channel's addresses and counters (what a closed leg keeps)."""
        clone = object.__new__(type(self))
        # Every slot, in one statement (a setattr loop costs ten times as much; tests/media checks the list).
        (
            clone._call_id,
            clone._clock,
            clone._consumer,
            clone._leg_name,
            clone._own_port,
            clone._peer,
            clone._rare,
            clone._send,
            clone._transform,
            clone.last,
            clone.numPorts,
            clone.octets,
            clone.packets,
            clone.remote,
            clone.source,
            clone.target,
            clone.transport,
        ) = (
            self._call_id,
            self._clock,
            self._consumer,
            self._leg_name,
            self._own_port,
            self._peer,
            self._rare.copy() if self._rare is not None else None,  # the parked channel may count on
            self._send,
            self._transform,
            self.last,
            self.numPorts,
            self.octets,
            self.packets,
            self.remote,
            self.source,
            self.target,
            self.transport,
        )
        return clone

    def reuse(self, leg_name: str, call_id: str) -> None:
        """Forget everything of the previous call (a parked socket taken for a new one)."""
        self._leg_name, self._call_id = leg_name, call_id
        self.target = self.source = self.remote = None
        self.packets = self.octets = 0
        self.last = self._transform = self._rare = None
        if self.datagramReceived.__func__ is not _Channel.datagramReceived:  # type: ignore[attr-defined]
            del self.datagramReceived  # attached or continuing: back to the class's hot path

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:  # the hot path
        if len(datagram) < self._min_length or (datagram[0] & 0xC0) != 0x80:
            self._more().invalid += 1
            return
        if addr != self.source and not self._learn(addr):
            return
        target = self.target
        if target is None:
            self._more().dropped += 1
            return
        self.packets += 1
        self.octets += len(datagram)
        self.last = datagram  # what the other phone got last (`UdpRelayLeg.last_sent`)
        try:
            self._send(datagram, target)
        except Exception as e:  # never raise into the reactor (EPERM from a firewall, ENETUNREACH, ...)
            self._send_failed(target, e)

    def _relay_continuing(self, datagram: bytes, addr: Address) -> None:
        """`datagramReceived` after the PBX spoke to the other phone: relay as usual, but rewrite the RTP
        header (SSRC, sequence number and timestamp offsets) so the other phone hears one continuous stream:
        phones drop packets whose timestamp goes backwards, even across an SSRC change (baresip)."""
        if len(datagram) < _RTP_MIN or (datagram[0] & 0xC0) != 0x80:
            self._more().invalid += 1
            return
        if addr != self.source and not self._learn(addr):
            return
        target = self.target
        if target is None:
            self._more().dropped += 1
            return
        datagram = self._continued(datagram)
        self.packets += 1
        self.octets += len(datagram)
        self.last = datagram
        try:
            self._send(datagram, target)
        except Exception as e:
            self._send_failed(target, e)

    def _continued(self, datagram: bytes) -> bytes:
        """`datagram` with SSRC, sequence number and timestamp moved to continue `_continue`'s stream."""
        rare = self._more()
        seq, ts, ssrc = _RTP_IDS.unpack_from(datagram, 2)
        out_ssrc, out_seq, out_ts = rare.continue_ or (ssrc, seq, ts)  # the last packet the phone got
        offsets = rare.offsets
        if offsets is None or ssrc != rare.continued_ssrc:  # first packet, or the source's stream changed
            offsets = rare.offsets = ((out_seq + 1 - seq) & 0xFFFF, (out_ts + _FRAME - ts) & 0xFFFFFFFF)
            rare.continued_ssrc = ssrc
        out_seq, out_ts = (seq + offsets[0]) & 0xFFFF, (ts + offsets[1]) & 0xFFFFFFFF
        rare.continue_ = (out_ssrc, out_seq, out_ts)
        out = bytearray(datagram)
        _RTP_IDS.pack_into(out, 2, out_seq, out_ts, out_ssrc)
        return bytes(out)

    def _relay_transformed(self, datagram: bytes, addr: Address) -> None:
        """`datagramReceived` with a transform set (`set_transform`): relay what the transform returns
        (after the continuing rewrite, if any); a packet it swallows (None) is neither relayed nor
        counted."""
        if len(datagram) < self._min_length or (datagram[0] & 0xC0) != 0x80:
            self._more().invalid += 1
            return
        if addr != self.source and not self._learn(addr):
            return
        target = self.target
        if target is None:
            self._more().dropped += 1
            return
        if self._continuing:
            datagram = self._continued(datagram)
        transform = self._transform
        out = transform(datagram) if transform is not None else datagram
        if out is None:
            return
        self.packets += 1
        self.octets += len(out)
        self.last = out
        try:
            self._send(out, target)
        except Exception as e:
            self._send_failed(target, e)

    def _relaying(self) -> Callable[[bytes, Address], None] | None:
        """The `datagramReceived` of an unattached channel: None for the class's hot path."""
        if self._transform is not None:
            return self._relay_transformed
        if self._continuing:
            return self._relay_continuing
        return None

    @property
    def _continuing(self) -> bool:
        """Whether relayed RTP continues a stream the PBX sent (`continue_stream`)."""
        rare = self._rare
        return rare is not None and rare.continue_ is not None

    def _set_relaying(self) -> None:
        method = self._relaying()
        if method is not None:
            self.datagramReceived = method  # type: ignore[method-assign,assignment]
        elif self.datagramReceived.__func__ is not _Channel.datagramReceived:  # type: ignore[attr-defined]
            del self.datagramReceived

    def set_transform(self, transform: Transform | None) -> None:
        """Pass relayed packets through `transform` (None: relay as received) from the next packet on (RTP;
        RTCP only through `UdpRelayLeg.set_rtcp_transform`, for SRTCP)."""
        self._transform = transform
        if self._consumer is None:
            self._set_relaying()

    def continue_stream(self, last: bytes) -> None:
        """From now on, rewrite relayed RTP to continue the stream whose last packet was `last` (what the
        PBX itself sent to the other phone), until this channel is reused."""
        if len(last) < _RTP_MIN or self.kind != "RTP":
            return
        seq, ts, ssrc = _RTP_IDS.unpack_from(last, 2)
        rare = self._more()
        rare.continue_ = (ssrc, seq, ts)
        rare.offsets = None
        self.last = None  # the old relayed stream is not what the phone heard last any more
        if self._consumer is None:
            self._set_relaying()

    def _deliver(self, datagram: bytes, addr: Address) -> None:
        """`datagramReceived` while attached: validate and latch as usual, then hand to the consumer."""
        if len(datagram) < self._min_length or (datagram[0] & 0xC0) != 0x80:
            self._more().invalid += 1
            return
        if addr != self.source and not self._learn(addr):
            return
        consumer = self._consumer
        if consumer is None:  # detached by an earlier call in this reactor turn: unreachable in practice
            return
        self.packets += 1
        self.octets += len(datagram)
        try:
            consumer(datagram, addr)
        except Exception:  # never raise into the reactor
            rare = self._more()
            rare.consumer_errors += 1
            if rare.consumer_errors == 1:
                _log.failure(
                    "{call_id} leg {leg} {kind}: the attached consumer failed",
                    call_id=self._call_id,
                    leg=self._leg_name,
                    kind=self.kind,
                )

    def attach(self, consumer: Callable[[bytes, Address], object]) -> None:
        """Deliver what this channel's phone sends to `consumer`; withhold the other phone's packets."""
        self._consumer = consumer
        self.datagramReceived = self._deliver  # type: ignore[method-assign]
        self._point_peer()

    def detach(self) -> None:
        """Relay again both ways; if the PBX sent RTP to this channel's phone meanwhile, what the other
        phone sends is rewritten to continue that stream."""
        if self._consumer is not None:
            self._consumer = None
            self._set_relaying()  # the class's hot path, or the continuing or transforming one
            self._point_peer()
            sent_last = self.sent_last
            if sent_last is not None and self._peer is not None:
                self._peer.continue_stream(sent_last)

    def send(self, datagram: bytes) -> None:
        """Send `datagram` from this channel's own socket to its phone (latched, else SDP address)."""
        port = self._own_port
        target = self.source or self.remote
        if port is None or target is None:
            self._more().unsent += 1
            return
        try:
            port.write(datagram, target)
        except Exception as e:  # as for relayed packets
            self._send_failed(target, e)
            return
        rare = self._more()
        rare.sent += 1
        rare.sent_last = datagram

    def _learn(self, addr: Address) -> bool:
        """A valid packet from `addr`, which is not the latched source: does it take the latch over?"""
        if self._peer is None:  # closed, or parked for reuse: a late packet of a call that ended
            self._more().stray_at = self._clock.seconds()
            return False
        if self.source is None or addr == self.remote:
            if self.source is not None:
                self._more().relatched += 1
            self._latch(addr)
            return True
        rare = self._more()
        heard = self.packets + rare.dropped  # packets from the latched source so far
        now = self._clock.seconds()
        quiet = heard == rare.heard_mark and now - rare.heard_at >= QUIET_SECONDS
        if heard != rare.heard_mark:
            rare.heard_mark, rare.heard_at = heard, now
        if addr == rare.candidate and heard == rare.run_mark:
            rare.run += 1
        else:
            rare.candidate, rare.run, rare.run_mark = addr, 1, heard
        if quiet or rare.run >= SWITCH_AFTER:
            rare.relatched += 1
            self._latch(addr)
            return True
        rare.foreign += 1
        return False

    def _latch(self, addr: Address) -> None:
        _log.debug(
            "{call_id} leg {leg} {kind} latched to {addr} (was {old}, SDP {remote})",
            call_id=self._call_id,
            leg=self._leg_name,
            kind=self.kind,
            addr=addr,
            old=self.source,
            remote=self.remote,
        )
        self.source = addr
        self._forget_contest()
        self._point_peer()

    def _forget_contest(self) -> None:
        """No source competes for the latch any more (it moved, or the media did)."""
        rare = self._rare
        if rare is not None:
            rare.candidate = None
            rare.heard_mark = -1

    def set_remote(self, remote: Address | None) -> None:
        if remote != self.remote:
            self.remote = remote
            self.source = None  # learn again: the media moved
            self._forget_contest()
            self._point_peer()

    def _point_peer(self) -> None:
        """Tell the peer channel where our phone is now (it sends what its phone sends there); nowhere
        while we are attached (the PBX speaks to our phone, not the other one)."""
        if self._peer is not None:
            self._peer.target = self._destination()

    def _destination(self) -> Address | None:
        """Where the peer channel sends to reach our phone: None while attached."""
        if self._consumer is not None:
            return None
        return self.source or self.remote

    def wire(self, peer: _Channel, peer_port: IListeningPort, own_port: IListeningPort) -> None:
        """Send what arrives here out of `peer_port` (the other leg's socket) to the other leg's phone;
        `send` uses `own_port`."""
        self._peer = peer
        self._send = peer_port.write  # type: ignore[attr-defined]
        self._own_port = own_port
        self.target = peer._destination()

    def unwire(self) -> None:
        self._peer = None
        self._send = _no_send
        self._own_port = None
        self.target = None
        self.detach()

    def _send_failed(self, target: Address, error: Exception) -> None:
        rare = self._more()
        rare.send_errors += 1
        if rare.send_errors == 1:
            _log.warn(
                "{call_id} leg {leg} {kind}: cannot send to {target}: {error}",
                call_id=self._call_id,
                leg=self._leg_name,
                kind=self.kind,
                target=target,
                error=error,
            )


class _RtcpChannel(_Channel):
    __slots__ = ()
    _min_length = _RTCP_MIN
    kind = "RTCP"
