"""The seam between call control and the media relay that anchors a call's RTP (RFC 3550; symmetric RTP,
RFC 4961).

A B2BUA asks an `IMediaRelay` for one `IRelaySession` per bridged call. The session has two legs, "a" (the
caller's side) and "b" (the callee's side); each leg has a local RTP port (RTCP on the next port) that the
SDP sent to that leg's phone advertises, and learns where that phone really is: from its SDP first
(`set_remote`), then from the source of the packets it sends (latching). What arrives on one leg is sent from
the other leg's socket to the other phone.

`pbx.media.relay.UdpMediaRelay` implements it in-process; an external engine (rtpengine's ng protocol) or
worker processes can implement it later without the B2BUA noticing. Nothing here knows about SIP or SDP
parsing: the caller passes plain addresses and ports.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

__all__ = ["IMediaRelay", "IRelayLeg", "IRelaySession", "LegStats", "SessionStats", "LEGS"]

LEGS = ("a", "b")

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class LegStats:
    """Counters of one leg, for what its phone sent: direction "a -> b" is `SessionStats.a`.

    Attributes:
        name: "a" or "b".
        local_port: our RTP port of this leg (RTCP is `local_port + 1`).
        remote: the RTP destination from this leg's SDP, or None (not set, port 0, or c=0.0.0.0).
        rtcp_remote: the RTCP destination from the SDP (a=rtcp, else RTP port + 1), or None.
        latched: where this leg's RTP really comes from (and where we send to), or None before any packet.
        rtcp_latched: the same for RTCP.
        packets: RTP packets from this leg's phone relayed to the other leg's phone.
        bytes: their size in bytes (RTP header and payload, no UDP/IP headers).
        rtcp_packets: RTCP packets relayed the same way.
        rtcp_bytes: their size in bytes.
        dropped: valid packets dropped because the other leg did not know yet where to send.
        invalid: datagrams that were not RTP/RTCP version 2 (never relayed).
        foreign: packets from a source other than the latched one that had not (yet) taken the latch over.
        relatched: how often the latch moved to a new source after the first one (RTP and RTCP).
        send_errors: packets the kernel refused to send (ICMP errors aside, which UDP ignores).
    """

    name: str
    local_port: int
    remote: Address | None
    rtcp_remote: Address | None
    latched: Address | None
    rtcp_latched: Address | None
    packets: int
    bytes: int
    rtcp_packets: int
    rtcp_bytes: int
    dropped: int
    invalid: int
    foreign: int
    relatched: int
    send_errors: int


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A snapshot of a session's counters: `a` is what the "a" phone sent (a -> b), `b` the reverse."""

    call_id: str
    a: LegStats
    b: LegStats


class IRelayLeg(Interface):
    """One side of a relayed call: our local ports and where that side's phone is."""

    name = Attribute("'a' or 'b'.")
    local_port = Attribute("int: our RTP port for this leg (even); RTCP is local_port + 1. Goes into m=.")
    local_address = Attribute("str: the IP address the SDP sent to this leg's phone must carry in c=.")
    remote = Attribute("(host, port) of RTP from this leg's SDP, or None.")
    latched = Attribute("(host, port) this leg's RTP actually comes from, or None before the first packet.")

    def set_remote(host: str, port: int, rtcp_port: int | None = None) -> None:
        """Where this leg's phone said (in its SDP) it receives: used until its packets show where it is.

        Args:
            host: an IP literal (resolve names first). "0.0.0.0"/"::" (RFC 2543 hold) means "do not send".
            port: the m= port; 0 (a rejected stream) means "do not send".
            rtcp_port: from a=rtcp (RFC 3605); default port + 1.

        A new address (a re-INVITE moving the media) forgets the latch so the leg learns again; the same
        address (a session refresh) keeps it.

        Raises:
            ValueError: a host name, a multicast/broadcast address, an address family the relay cannot
                reach, or a port outside 0..65535.
        """


class IRelaySession(Interface):
    """The relay of one call: two legs, "a" and "b"."""

    call_id = Attribute("str: the call it belongs to (for logs and stats).")
    closed = Attribute("bool: True once close() was called.")

    def leg(name: str) -> IRelayLeg:
        """Leg "a" or "b" (KeyError otherwise)."""

    def stats() -> SessionStats:
        """A snapshot of the counters and latched addresses of both legs."""

    def close() -> Deferred[None]:
        """Stop relaying and give the ports back; idempotent.

        Returns a Deferred that fires (with None) when the sockets are closed and the ports are back in the
        pool; callers may ignore it.
        """


class IMediaRelay(Interface):
    """Creates relay sessions (RTP anchoring for a B2BUA)."""

    sessions = Attribute("int: how many sessions are open.")

    def create_session(call_id: str) -> IRelaySession:
        """A new session with both legs' ports open and nothing to send to yet.

        Raises:
            pbx.media.ports.PortsExhausted: when no two port pairs can be had (answer the call 503/488).
        """

    def close() -> Deferred[None]:
        """Close every open session; returns a Deferred that fires when all their sockets are closed."""
