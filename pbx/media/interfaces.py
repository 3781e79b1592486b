"""The seam between call control and the media relay that anchors a call's RTP (RFC 3550; symmetric RTP,
RFC 4961).

A B2BUA asks an `IMediaRelay` for one `IRelaySession` per bridged call. The session has two legs, "a" (the
caller's side) and "b" (the callee's side); each leg has a local RTP port (RTCP on the next port) that the
SDP sent to that leg's phone advertises, and learns where that phone really is: from its SDP first
(`set_remote`), then from the source of the packets it sends (latching). What arrives on one leg is sent from
the other leg's socket to the other phone.

`pbx.media.relay.UdpMediaRelay` implements it in-process; `pbx.media.rtpengine.RtpengineRelay` on an
external rtpengine (its ng protocol): its sessions have a `ready` Deferred, their legs get their ports once
it fired, and they cannot be attached or transform packets (the B2BUA uses it for bridged calls only).
Nothing here knows about SIP or SDP parsing: the caller passes plain addresses and ports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

__all__ = [
    "DIGIT_SOURCES",
    "EndpointStats",
    "IMediaEndpoint",
    "IMediaEngine",
    "IMediaRelay",
    "IRelayLeg",
    "IRelaySession",
    "IRtpConsumer",
    "IRtpTransport",
    "LEGS",
    "LegStats",
    "RecordingResult",
    "STOP_REASONS",
    "SessionStats",
]

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
    attached = Attribute("bool: True between attach() and detach().")

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

    def attach(consumer: Any) -> None:
        """Let the PBX itself listen and speak on this leg (IVR, announcements, music on hold).

        Args:
            consumer: has `rtp_received(data: bytes, addr: (host, port))` and `rtcp_received(data, addr)`.

        Until `detach`, what this leg's phone sends (valid RTP/RTCP from the latched source: latching goes on
        as usual) is passed to the consumer instead of being relayed to the other leg, and what the other
        leg's phone sends is not forwarded to this leg's phone (dropped and counted in the other leg's
        `dropped`). Each leg attaches independently: both may be. Attaching again replaces the consumer;
        attaching a closed leg does nothing. The consumer is called from the reactor thread; its exceptions
        are logged, never raised into the reactor.
        """

    def detach() -> None:
        """Relay both ways again (a no-op when not attached). Closing the session detaches too."""

    def set_transform(transform: Callable[[bytes], bytes | None] | None) -> None:
        """Pass each RTP packet this leg's phone sends through `transform` before it is relayed to the other
        phone (transcoding, DTMF interworking: `pbx.media.dtmf_interwork`): what it returns is sent instead,
        None drops the packet. The packet given is valid RTP (version 2, at least 12 bytes) from the latched
        source. None removes the transform (the relay's plain hot path again). Not applied while the leg is
        attached; RTCP is not transformed here (`UdpRelayLeg.set_rtcp_transform` does, for SRTCP). The
        transform must not raise."""

    def send_rtp(data: bytes) -> None:
        """Send one RTP packet (`data` is the whole packet, header included) from this leg's RTP port to
        this leg's phone: its latched address, else the SDP address. Silently dropped (and counted) when
        neither is known or the session is closed. Works attached or not."""

    def send_rtcp(data: bytes) -> None:
        """Send one RTCP packet from this leg's RTCP port to the phone's RTCP address, like `send_rtp`."""


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
    clock = Attribute(
        "IReactorTime | None: paces the DTMF the B2BUA generates between legs (None: no interworking)."
    )

    def create_session(call_id: str) -> IRelaySession:
        """A new session with both legs' ports open and nothing to send to yet.

        Raises:
            pbx.media.ports.PortsExhausted: when no two port pairs can be had (answer the call 503/488).
        """

    def close() -> Deferred[None]:
        """Close every open session; returns a Deferred that fires when all their sockets are closed."""


# --- The PBX speaking and listening on a call leg (IVR, voicemail, music on hold) --------------------------
#
# An `IMediaEndpoint` is the PBX's own RTP end on one call leg: it sends paced G.711 audio (prompts, tones,
# music) and RFC 4733 digits through an `IRtpTransport` (a relay leg while it is attached, or a standalone UDP
# port pair), and it is the `IRtpConsumer` the transport hands received packets to (digits, recordings).
# Nothing here knows about SIP: call control passes the negotiated codec and telephone-event payload types,
# and the digits of SIP INFO requests through `inject_digit`.

DIGIT_SOURCES = ("rfc4733", "info", "inband")
"""Where a digit came from: RTP telephone-event, a SIP INFO request, or Goertzel detection in the audio."""

STOP_REASONS = ("max_length", "silence", "digit", "stopped", "closed", "no_audio")
"""Why a recording ended (`RecordingResult.reason`)."""


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What `IMediaEndpoint.record` produced.

    Attributes:
        path: the WAV file written (8 kHz mono 16-bit), or None when nothing was written (`reason` "no_audio",
            or a recording cut off by `close()` before any audio).
        duration: seconds of audio in the file (trailing silence that ended the recording is trimmed).
        reason: one of `STOP_REASONS`: "max_length" (reached `max_seconds`), "silence" (`silence_seconds` of
            silence after speech), "digit" (a stop digit; see `digit`), "stopped" (`stop()` was called),
            "closed" (the endpoint was closed; whatever was heard is still saved), "no_audio" (only silence
            or no packets at all until the recording ended: no file is written).
        digit: the stop digit when `reason` is "digit", else None.
        heard_audio: whether any packet above the silence threshold arrived.
    """

    path: str | None
    duration: float
    reason: str
    digit: str | None = None
    heard_audio: bool = False


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """Counters of one media endpoint (RFC 3550 appendix A for loss and jitter).

    Attributes:
        ssrc: our SSRC.
        packets_sent, octets_sent: RTP packets we sent (audio and telephone-events), payload octets (RFC 3550
            SR semantics).
        packets_received, octets_received: valid RTP packets received, payload octets.
        remote_ssrc: the SSRC we currently receive from, or None before any packet.
        ssrc_changes: how often the remote SSRC changed (each change restarts the sequence statistics).
        expected: packets expected from the remote source (highest extended sequence - first + 1).
        lost: cumulative packets lost (expected - received, may be negative with duplicates; RFC 3550 A.3).
        duplicates: packets received twice (same sequence number in the recent window).
        reordered: packets that arrived after a later one.
        jitter_ms: interarrival jitter estimate (RFC 3550 A.8), in milliseconds.
        late_sends: packets sent more than `LATE_THRESHOLD` (5 ms) after their scheduled time.
        max_late_ms: the latest a packet was sent after its schedule, in ms.
        resyncs: how often the shared pacer (all endpoints of the engine) fell so far behind (> 100 ms)
            that it skipped ahead instead of bursting.
        rtcp_sent, rtcp_received: RTCP compound packets sent and parsed.
        rtcp_invalid: RTCP datagrams that did not parse.
        invalid: RTP datagrams that did not parse or carried an unexpected payload type.
        digits: digits delivered to the application (after de-duplication), by source name.
        remote_fraction_lost, remote_jitter: what the peer's last report block about us said (RTCP), or None.
    """

    ssrc: int
    packets_sent: int
    octets_sent: int
    packets_received: int
    octets_received: int
    remote_ssrc: int | None
    ssrc_changes: int
    expected: int
    lost: int
    duplicates: int
    reordered: int
    jitter_ms: float
    late_sends: int
    max_late_ms: float
    resyncs: int
    rtcp_sent: int
    rtcp_received: int
    rtcp_invalid: int
    invalid: int
    digits: dict[str, int]
    remote_fraction_lost: int | None = None
    remote_jitter: int | None = None


class IRtpTransport(Interface):
    """Where an endpoint sends its packets: a relay leg while attached (`IRelayLeg.attach`), or a standalone
    UDP port pair (`pbx.media.udp.UdpRtpTransport`). The transport knows the peer's address (SDP, latching);
    the endpoint never handles addresses."""

    def send_rtp(data: bytes) -> None:
        """Send one RTP datagram to the peer's RTP address; silently dropped while the peer is unknown.

        Must not raise (send errors are counted by the transport)."""

    def send_rtcp(data: bytes) -> None:
        """Send one RTCP datagram to the peer's RTCP address (RTP port + 1 or a=rtcp); never raises."""


class IRtpConsumer(Interface):
    """What a transport hands received packets to (an `IMediaEndpoint` is one)."""

    def rtp_received(data: bytes, addr: Address) -> None:
        """One datagram from the peer's RTP port (unparsed: the consumer validates it); never raises."""

    def rtcp_received(data: bytes, addr: Address) -> None:
        """One datagram from the peer's RTCP port (unparsed); never raises."""


class IMediaEndpoint(IRtpConsumer):
    """The PBX speaking and listening on one call leg: play, collect digits, record, music on hold.

    Made by `pbx.media.endpoint.MediaEngine(clock, prompt_dir).create_endpoint(transport, codec="PCMU",
    payload_type=None, telephone_event=101)` (one engine per process: it holds the shared pacer and the
    prompt cache). Hand it to the transport as its consumer (`leg.attach(endpoint)`), and call `close()`
    before detaching.

    Digits. Every key press reaches the application once, whatever the source: RFC 4733 telephone-events
    (when `telephone_event` is not None), in-band tones detected by Goertzel (only when `telephone_event` is
    None), and SIP INFO digits the caller passes to `inject_digit`. A digit equal to one delivered from
    ANOTHER source within `DEDUP_SECONDS` (1 s) is taken as the same key press (phones that send both
    RFC 4733 and INFO; each delivery absorbs at most one report per other source); repeats from the same
    source are always new presses. Delivered digits go to the
    `on_digit` subscribers and into the digit buffer that `collect` reads: digits typed during a prompt
    (barge-in or not) stay in the buffer and count towards the next `collect`, until `clear_digits()`.

    One output at a time: `play`, `music_on_hold` and `send_digits` replace what is being sent (the
    replaced `play` fires with None). `record` and `collect` run alongside output (a recording usually
    follows a beep played first).
    """

    codec = Attribute("str: 'PCMU' or 'PCMA'.")
    payload_type = Attribute(
        "int: the RTP payload type of the audio codec (0 for PCMU, 8 for PCMA unless set)."
    )
    telephone_event = Attribute("int | None: the negotiated RFC 4733 payload type; None = in-band detection.")
    closed = Attribute("bool: True once close() was called.")
    playing = Attribute("bool: True while a play() or music_on_hold() is sending.")
    last_sent = Attribute(
        "(ssrc, seq, timestamp, reactor time) of the last audio packet sent, or None: pass it as"
        " `continue_from` to whatever sends to this phone next (a relay after detach, another endpoint)."
    )

    def on_digit(callback: Callable[[str, str], object]) -> Callable[[], None]:
        """Call `callback(digit, source)` for each delivered digit (source in `DIGIT_SOURCES`).

        Returns a function that unsubscribes. Exceptions from the callback are logged, never raised."""

    def inject_digit(digit: str, source: str = "info") -> bool:
        """A digit that arrived outside RTP (a SIP INFO body parsed with `pbx.media.dtmf.parse_dtmf_info`).

        Returns True when delivered, False when dropped as a duplicate of the same press from another source.
        ValueError for a non-DTMF digit."""

    def play(items: Sequence[str], barge_in: bool = True) -> Deferred[str | None]:
        """Play items in order, paced in 20 ms packets.

        Items:
        - a prompt name ("welcome": <prompt dir>/welcome.wav) or a path to a WAV file (16-bit PCM; other
          rates and channel counts are converted; other formats fail the Deferred with ValueError);
        - "tone:beep", "tone:ringback", "tone:busy", "tone:dial", "tone:congestion": a beep lasts 0.5 s, the
          others 4 s unless a length is added ("tone:ringback:10" = 10 s);
        - "silence:MS" ("silence:500");
        - "digits:1234": says each digit with the prompts "digit-0".."digit-9";
        - "dtmf:123": in-band DTMF tones, 100 ms each with 100 ms gaps.

        With `barge_in`, a digit (from any source) stops the playback: the Deferred fires with that digit,
        which also stays in the digit buffer. Without it, digits only go to the buffer. Fires with None
        when everything was played, or when `stop()`, `close()` or another output replaced it. An unknown
        item or unreadable file fails the Deferred with ValueError (nothing of the list is played)."""

    def music_on_hold(path: str | None = None) -> None:
        """Loop a file (default: the prompt "moh") until `stop()`, another output or `close()`.

        Raises ValueError (synchronously) when the file is missing or not a 16-bit PCM WAV."""

    def send_digits(digits: str, duration_ms: int = 100) -> Deferred[None]:
        """Send digits as RFC 4733 events (in-band tones without telephone-event); fires when sent."""

    def stop() -> None:
        """Stop the current output (play fires with None) and the current recording (reason "stopped").

        Does not cancel a pending `collect`."""

    def collect(
        max_digits: int,
        timeout: float = 5.0,
        first_timeout: float | None = None,
        terminators: str = "#",
    ) -> Deferred[str]:
        """Collect up to `max_digits` digits, starting with the buffered ones.

        Fires with the digits (terminator excluded) when `max_digits` are in, a terminator is pressed, no
        digit came for `first_timeout` (default `timeout`) seconds at the start, or no further digit came for
        `timeout` seconds after one (inter-digit timeout). "" means nothing was typed. A new collect()
        cancels the previous one (it fires with what it had). `close()` fires it with what it had."""

    def clear_digits() -> None:
        """Forget buffered digits (e.g. before a menu that must not see earlier presses)."""

    def record(
        path: str,
        max_seconds: float = 60.0,
        silence_seconds: float = 5.0,
        stop_digits: str = "#",
    ) -> Deferred[RecordingResult]:
        """Record what the peer sends into a WAV file at `path`, written atomically when the recording ends.

        Ends at `max_seconds`, after `silence_seconds` without audio above the threshold (counted from the
        start too, so a silent caller ends it; 0 disables), on a digit in `stop_digits` (not recorded:
        the audio of the last 200 ms before an in-band stop digit is dropped), on `stop()` or `close()`.
        Lost packets are filled with silence so the file keeps real time. A recording that heard no audio
        writes no file and reports reason "no_audio". Digits ending a recording are not put in the buffer."""

    def stats() -> EndpointStats:
        """A snapshot of the counters (RTP, RTCP, pacing, digits)."""

    def close() -> None:
        """Stop everything (pending Deferreds fire as documented), send an RTCP BYE, leave the pacer.

        Idempotent. The endpoint does not close its transport."""


class IMediaEngine(Interface):
    """Makes endpoints that share one clock, one pacer (one timer per 20 ms tick for all) and one prompt
    cache. `pbx.media.endpoint.MediaEngine(clock, prompt_dir)` implements it."""

    endpoints = Attribute("int: how many endpoints are open.")

    def create_endpoint(
        transport: IRtpTransport,
        codec: str = "PCMU",
        payload_type: int | None = None,
        telephone_event: int | None = 101,
        continue_from: tuple[int, int, int, float] | None = None,
    ) -> IMediaEndpoint:
        """A new endpoint sending through `transport` (attach it to the transport as consumer yourself).

        `continue_from` = (ssrc, seq, timestamp, reactor time) of the last packet the phone received on
        this leg (from the relay or an earlier endpoint): the endpoint then continues that stream (same
        SSRC, next sequence number, timestamp advanced by the time elapsed) instead of starting a random
        one, because some phones (baresip) drop packets whose timestamp goes backwards even across an SSRC
        change. ValueError for a codec other than PCMU/PCMA."""

    def close() -> None:
        """Close every endpoint and stop the pacer."""
