"""A media patch: two RTP transports joined inside the PBX, each one's audio sent to the other.

The relay joins the two legs of ONE call. Some features join two calls that the PBX answered itself, each
with its own relay leg and its own codec (call park: the parked call and the call that retrieves it): a
`MediaPatch` is then attached as the consumer of both legs (`IRelayLeg.attach`) and forwards what each
phone sends to the other:

- audio in the source's codec (`PatchSide.payload_type`) is re-labelled with the target's payload type and
  translated between G.711 mu-law and A-law when the two codecs differ (`pbx.media.transcode`);
- RFC 4733 telephone-events go across when both sides negotiated them (with the target's payload type),
  and are dropped otherwise; any other payload type is dropped;
- each direction continues the RTP stream the target phone was receiving (`continue_from`: the SSRC, next
  sequence number and a timestamp advanced by the time elapsed, from the endpoint that played to it), since
  some phones (baresip) drop packets whose timestamp goes backwards, even across an SSRC change;
- RTCP is not forwarded (each side's reports describe a stream the other never saw).

It knows nothing of SIP or calls: whoever attached it detaches the legs and calls `close`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

from pbx.media.transcode import convert_rtp, table_for

__all__ = ["MediaPatch", "PatchSide"]

_RATE = 8000  # G.711 and its telephone-events: 8 kHz RTP clock


@dataclass(frozen=True, slots=True)
class PatchSide:
    """One side of a patch: where to send, and the format its phone speaks.

    Attributes:
        transport: has `send_rtp(data)` (an `IRelayLeg`, or its SRTP wrapper).
        codec: "PCMU" or "PCMA".
        payload_type: the codec's RTP payload type on this side.
        telephone_event: the RFC 4733 payload type on this side, or None.
        continue_from: (ssrc, seq, timestamp, reactor time) of the last packet this side's phone got, or None.
    """

    transport: Any
    codec: str
    payload_type: int
    telephone_event: int | None = None
    continue_from: tuple[int, int, int, float] | None = None


class _Direction:
    """What goes from one side to the other: the translation and the outgoing stream's numbering."""

    __slots__ = ("_base", "_clock", "_dtmf", "_out", "_payload_type", "_start", "_table", "count", "target")

    def __init__(self, clock: IReactorTime, source: PatchSide, target: PatchSide, rng: random.Random) -> None:
        self._clock = clock
        self.target = target
        self._payload_type = source.payload_type
        self._table = table_for(source.codec, target.codec)
        self._dtmf = (
            (source.telephone_event, target.telephone_event)
            if source.telephone_event is not None and target.telephone_event is not None
            else None
        )
        last = target.continue_from
        if last is not None:
            ssrc, seq, ts, at = last
            elapsed = max(0.0, clock.seconds() - at)
            self._out = (ssrc, (seq + 1) & 0xFFFF, (ts + int(elapsed * _RATE) + 160) & 0xFFFFFFFF)
        else:
            self._out = (rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32))
        self._base: tuple[int, int] | None = None  # the first incoming packet's (seq, timestamp)
        self._start = self._out
        self.count = 0

    def forward(self, data: bytes) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        payload_type = data[1] & 0x7F
        if payload_type == self._payload_type:
            packet = convert_rtp(data, self._table, self.target.payload_type)
        elif self._dtmf is not None and payload_type == self._dtmf[0]:
            packet = convert_rtp(data, None, self._dtmf[1])
        else:
            return
        if packet is None:
            return
        seq = int.from_bytes(data[2:4], "big")
        ts = int.from_bytes(data[4:8], "big")
        if self._base is None:
            self._base = (seq, ts)
        ssrc, first_seq, first_ts = self._start
        out = bytearray(packet)
        out[2:4] = ((first_seq + seq - self._base[0]) & 0xFFFF).to_bytes(2, "big")
        out[4:8] = ((first_ts + ts - self._base[1]) & 0xFFFFFFFF).to_bytes(4, "big")
        out[8:12] = ssrc.to_bytes(4, "big")
        self.count += 1
        self.target.transport.send_rtp(bytes(out))


class _Consumer:
    """The consumer attached to one side's leg: its packets go the other way."""

    __slots__ = ("_direction", "_patch")

    def __init__(self, patch: MediaPatch, direction: _Direction) -> None:
        self._patch = patch
        self._direction = direction

    def rtp_received(self, data: bytes, addr: Any) -> None:
        if not self._patch.closed:
            self._direction.forward(data)

    def rtcp_received(self, data: bytes, addr: Any) -> None:
        """Not forwarded (see the module docstring)."""


class MediaPatch:
    """Two sides joined: attach `consumer_a` to side a's leg and `consumer_b` to side b's.

    Args:
        clock: time source (to continue each target's stream).
        a: one side.
        b: the other side.
        rng: random source for a stream that continues nothing.
    """

    def __init__(
        self, clock: IReactorTime, a: PatchSide, b: PatchSide, rng: random.Random | None = None
    ) -> None:
        rng = rng or random.Random()
        self.closed = False
        self._a_to_b = _Direction(clock, a, b, rng)
        self._b_to_a = _Direction(clock, b, a, rng)
        self.consumer_a = _Consumer(self, self._a_to_b)
        self.consumer_b = _Consumer(self, self._b_to_a)

    @property
    def forwarded(self) -> tuple[int, int]:
        """Packets sent (a to b, b to a)."""
        return (self._a_to_b.count, self._b_to_a.count)

    def close(self) -> None:
        """Forward nothing more (the legs are detached by whoever attached them)."""
        self.closed = True
