"""Media anchoring for one call: the relay session and the SDP rewriting around it (RFC 3264, RFC 4566).

The call's two sides are "a" (the caller) and "b" (whoever is called: every fork shares it). An SDP body that
arrives from one side is learnt (where that side's peer wants media) and rewritten for the other side, so each
phone only ever sees the PBX's address and relay ports (topology hiding). The first audio stream is relayed;
other streams (video) are declined with port 0, since the relay carries one audio stream per call. Codecs
are filtered to an allow-list. Between the two sides (`pbx.b2bua.codec_plan`): an offer passed on gets the
other G.711 law and telephone-event when it lacks them, the answer passed back is put in the offerer's terms,
and the relay converts PCMU <-> PCMA and DTMF (RFC 4733, SIP INFO, in band) where the two phones differ
(`pbx.media.dtmf_interwork`, once the relay has a clock); legs left without a common codec get 488.

Every body the B2BUA takes from a phone goes through `parse_sdp` first (RFC 3261 13.2.1, RFC 3264): a body
that is not `application/sdp`, malformed, too large (`pbx.sip.sdp` limits), or whose audio stream has a `c=`
that is not an IP address becomes a `SipError` (400, 413 or 488) whose reason phrase never echoes the
sender's bytes. `accepted_audio` says whether a description has an audio stream the PBX can use.

This module knows nothing of SIP transactions or dialogs: it turns bodies into bodies.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from pbx.b2bua.leg_formats import DTMF_MODES, CallFormats
from pbx.b2bua.srtp_plan import SecureSession, SrtpPlan, SrtpPolicy
from pbx.media.dtmf_interwork import Interworking, LegFormats
from pbx.media.interfaces import IMediaRelay, IRelaySession, SessionStats
from pbx.media.ports import PortsExhausted
from pbx.sip.errors import SipError
from pbx.sip.offer_answer import make_offer, relay_body
from pbx.sip.sdp import MAX_SDP_SIZE, MediaDescription, SdpError, SdpTooLarge, SessionDescription

OTHER = {"a": "b", "b": "a"}
_SIDE = {"a": 0, "b": 1}
_random = random.Random()

LOCAL_CODECS = ((0, "PCMU", 8000), (8, "PCMA", 8000), (101, "telephone-event", 8000))
"""What the PBX offers when it is the media end of a caller that sent no offer (payload type, name, rate)."""

_AUXILIARY = frozenset({"telephone-event", "cn"})
_REASON_CHARS = frozenset(map(chr, range(0x20, 0x7F))) - {'"', "'", "\\"}
_MAX_REASON = 60


def _reason(error: SdpError) -> str:
    """What is wrong with a body, for a reason phrase: the parser's words before the line it quotes, cut to
    printable ASCII and `_MAX_REASON` characters (the sender's bytes are never echoed)."""
    words = str(error).split("'", 1)[0].split('"', 1)[0]
    words = "".join(c for c in words if c in _REASON_CHARS).strip(" :")[:_MAX_REASON].strip()
    return f"Malformed SDP: {words}" if words else "Malformed SDP"


def sdp_failure(error: SdpError, size: int) -> SipError:
    """The response for a body that `SessionDescription.parse` refused: 413 for an oversized body, 488 for
    too many media descriptions, 400 for the rest."""
    if isinstance(error, SdpTooLarge):
        if size > MAX_SDP_SIZE:
            return SipError(413, "SDP Too Large")
        return SipError(488, "Too Many Media Streams", [("Warning", '304 pbx "Too many media streams"')])
    return SipError(400, _reason(error))


def parse_sdp(body: bytes, content_type: str | None = None) -> SessionDescription:
    """The session description in a body a phone sent (an offer or an answer), checked for what the relay
    needs: `application/sdp` (when a Content-Type is given), well-formed within the parser's limits, a `c=`
    for every active stream, and an IP address (IPv4 or IPv6, by its address type) in the `c=` of the first
    active audio stream (RFC 8866 allows a host name there; the relay cannot use one).

    Raises:
        SipError: 488 for another content type (with Accept: application/sdp), an unusable address or too
            many streams; 413 for a body over the size limit; 400 for a malformed body.
    """
    if content_type is not None and content_type.split(";", 1)[0].strip().lower() != "application/sdp":
        raise SipError(488, "Not SDP", [("Accept", "application/sdp")])
    try:
        sdp = SessionDescription.parse(body)
    except SdpError as e:
        raise sdp_failure(e, len(body)) from None
    audio_checked = False
    for media in sdp.media:
        if not media.port:
            continue
        connection = sdp.connection_for(media)
        if connection is None:
            raise SipError(400, "Malformed SDP: no c= line")
        if media.media.lower() == "audio" and not audio_checked:
            audio_checked = True
            if not _is_ip(connection.net_type, connection.addr_type, connection.host):
                raise SipError(
                    488, "Unusable Media Address", [("Warning", '301 pbx "Incompatible network address"')]
                )
    return sdp


def _is_ip(net_type: str, addr_type: str, host: str) -> bool:
    if net_type.upper() != "IN":
        return False
    kind = addr_type.upper()
    if kind == "IP4":
        return _is_ipv4(host)
    if kind != "IP6":
        return False
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


_DIGITS = frozenset("0123456789")


def _is_ipv4(host: str) -> bool:
    """Whether `ipaddress.IPv4Address(host)` accepts `host` (four decimal octets of 1-3 ASCII digits, no
    leading zero, at most 255), without building the address; the answers for the last hosts seen are kept
    (every description of a call names its phone's address, the same call after call)."""
    known = _IPV4_SEEN.get(host)
    if known is not None:
        return known
    octets = host.split(".")
    valid = len(octets) == 4
    if valid:
        for octet in octets:
            if not 0 < len(octet) <= 3 or not _DIGITS.issuperset(octet):
                valid = False
                break
            if (octet[0] == "0" and octet != "0") or int(octet) > 255:
                valid = False
                break
    if len(_IPV4_SEEN) >= 1024:  # bounded: hosts come from peers
        _IPV4_SEEN.clear()
    _IPV4_SEEN[host] = valid
    return valid


_IPV4_SEEN: dict[str, bool] = {}


def accepted_audio(sdp: SessionDescription) -> MediaDescription | None:
    """The first active audio stream with a codec (not only telephone-event or CN), or None."""
    for media in sdp.media:
        if media.media.lower() != "audio" or not media.port:
            continue
        rtpmap = media.rtpmap
        for fmt in media.formats:
            entry = rtpmap.get(fmt)
            if entry is None or entry.encoding.lower() not in _AUXILIARY:
                return media
        return None
    return None


_ALLOWED: dict[tuple[str, ...], frozenset[str] | None] = {}  # codec lists (one per B2BUA) -> lower-case set


def _allowed(codecs: Sequence[str]) -> frozenset[str] | None:
    """The encodings `codecs` lets through, lower-case; None for all ("*")."""
    key = tuple(codecs)
    try:
        return _ALLOWED[key]
    except KeyError:
        pass
    allowed = None if "*" in key else frozenset(c.lower() for c in key)
    if len(_ALLOWED) >= 64:
        _ALLOWED.clear()
    _ALLOWED[key] = allowed
    return allowed


class MediaBridge:
    """The relay session of one call and the SDP versions of each side.

    Args:
        relay: the media relay.
        call_id: for the relay's bookkeeping.
        codecs: encoding names allowed through ("PCMU", "PCMA", "telephone-event" ...); ("*",) for all.
    """

    __slots__ = (
        "_codecs",
        "_final",
        "_formats",
        "_session_id",
        "_versions",
        "closed",
        "external",
        "session",
        "srtp",
    )

    def __init__(self, relay: IMediaRelay, call_id: str, codecs: Sequence[str] = ("*",)) -> None:
        try:
            self.session: IRelaySession = relay.create_session(call_id)
        except PortsExhausted:
            raise SipError(503, "No media ports left", [("Retry-After", "5")]) from None
        # An external relay (rtpengine) sets the session up before its ports are known (`ready`).
        self.external = getattr(self.session, "ready", None) is not None
        self._codecs = _allowed(codecs)
        self.srtp = SrtpPlan(self.session)  # each side's SRTP (pbx.b2bua.srtp_plan)
        clock = getattr(
            relay, "clock", None
        )  # converting DTMF paces what it generates: no clock, no conversion
        secure = SecureSession(self.session, self.srtp)  # the codec plan's transforms go through SRTP
        self._formats = CallFormats(secure, clock, self._codecs) if clock is not None else None  # type: ignore[arg-type]
        # o= session ids must differ between calls, not be secret (RFC 8866 5.2): no system call for them.
        # Per side, indexed by _SIDE (one bridge per call is kept for the call's length): the o= session id is
        # this number + the index (one int, not two strings), the versions a list.
        self._session_id = _random.randrange(1, 10**9)
        self._versions = [0, 0]
        self.closed = False
        self._final: SessionStats | None = None  # the relay's counters read as the call ends (`final_stats`)

    def forward(
        self,
        from_side: str,
        body: bytes,
        *,
        is_offer: bool,
        parsed: SessionDescription | None = None,
        codecs: Sequence[str] | None = None,
    ) -> bytes:
        """Learn the SDP that `from_side`'s peer sent and rewrite it for the other side's peer. `parsed`:
        what `parse_sdp(body)` returned already (a body is parsed once). `codecs`: for an offer, the
        encodings the other side takes, in its order of preference (a trunk's list), None for any.

        Raises:
            SipError: 400 for malformed SDP, 488 when no allowed codec is left in an offer, or when an
                answer leaves the two sides without a codec in common that the relay can bridge, or the
                audio stream's address is not an IP address (`parse_sdp`), 413 for an oversized body.
        """
        sdp = parsed if parsed is not None else parse_sdp(body)
        audio = self._audio_index(sdp)
        if audio is not None:
            media = sdp.media[audio]
            connection = sdp.connection_for(media)
            leg = self.session.leg(from_side)
            if media.port and connection is not None and connection.address not in ("0.0.0.0", "::"):
                try:
                    leg.set_remote(connection.address, media.port, media.rtcp_port)
                except ValueError:
                    pass  # a host name or an address the relay cannot reach: latching learns the real one
            formats = self._formats  # None: a relay that cannot convert gets offers and answers as they are
            media = self.srtp.incoming(from_side, media, is_offer)  # plain from here on
            if is_offer:
                passed = self._filter(media) if self._codecs is not None else media
                if formats is not None:
                    passed = formats.offer(from_side, passed, codecs)
            else:
                passed = formats.answer(from_side, media) if formats is not None else media
            passed = self.srtp.outgoing(OTHER[from_side], passed, is_offer)
            if passed is not sdp.media[audio]:
                sdp = sdp.with_media(tuple(passed if i == audio else m for i, m in enumerate(sdp.media)))
        to_side = OTHER[from_side]
        out_leg = self.session.leg(to_side)
        ports: list[int | None] = [
            out_leg.local_port if i == audio and m.port else (0 if m.port else None)
            for i, m in enumerate(sdp.media)
        ]
        index = _SIDE[to_side]
        self._versions[index] += 1
        session_id, version = str(self._session_id + index), self._versions[index]
        return relay_body(sdp, out_leg.local_address, ports, session_id=session_id, version=version)

    def ready(self) -> Deferred[None]:
        """Fires when the relay session can be used: at once for the built-in relay; once rtpengine set the
        call up for `pbx.media.rtpengine` (whose legs have no ports before).

        Fails with `SipError` 503 when the relay could not set the session up (the session is closed).
        """
        if not self.external:
            return succeed(None)
        ready: Deferred[None] = self.session.ready  # type: ignore[attr-defined]
        waiting: Deferred[None] = Deferred()

        def failed(failure: Failure) -> None:
            waiting.errback(SipError(503, "Media Relay Unavailable", [("Retry-After", "5")]))

        ready.addCallbacks(waiting.callback, failed)
        return waiting

    def set_srtp(self, side: str, policy: SrtpPolicy) -> None:
        """`side`'s SRTP setting (its extension's or trunk's `srtp`, whether its signalling is TLS); before
        the first description of that side is forwarded."""
        self.srtp.set_policy(side, policy)

    def srtp_offer(self, side: str, sdp: SessionDescription) -> SessionDescription:
        """An offer from `side`'s phone that the PBX answers itself (IVR), with its audio stream made plain
        RTP (an SRTP offer's key is kept for the answer). Raises the `SipError` 488 of
        `SrtpPlan.incoming`."""
        audio = self._audio_index(sdp)
        if audio is None:
            return sdp
        media = self.srtp.incoming(side, sdp.media[audio], True)
        if media is sdp.media[audio]:
            return sdp
        return sdp.with_media(tuple(media if i == audio else m for i, m in enumerate(sdp.media)))

    def srtp_answer(self, side: str, sdp: SessionDescription) -> SessionDescription:
        """The PBX's own answer to `srtp_offer`'s offer, with `RTP/SAVP` and the PBX's key when the offer
        was SRTP."""
        audio = self._audio_index(sdp)
        if audio is None:
            return sdp
        media = self.srtp.outgoing(side, sdp.media[audio], False)
        if media is sdp.media[audio]:
            return sdp
        return sdp.with_media(tuple(media if i == audio else m for i, m in enumerate(sdp.media)))

    @property
    def interworking(self) -> Interworking | None:
        """The relay's conversions of this call, once its two sides differ (None before, or ever)."""
        return self._formats.interworking if self._formats is not None else None

    def set_info_sender(self, send: Callable[[str, str, int], object]) -> None:
        """How a digit converted for a phone that takes INFO is sent: `send(side, digit, duration_ms)`."""
        if self._formats is not None:
            self._formats.send_info = send

    def note_allow(self, side: str, allow: Sequence[str]) -> None:
        """The values of the Allow headers of `side`'s phone (its INVITE, its 2xx; none: no header): a phone
        without telephone-event gets DTMF by INFO unless its Allow leaves INFO out (then in-band tones)."""
        if self._formats is not None:
            self._formats.note_allow(side, allow)

    def dtmf_mode(self, side: str, mode: str) -> None:
        """Force how DTMF reaches `side`'s phone (a trunk's `dtmf` setting): "auto" (the default: RFC 4733
        when telephone-event was negotiated, else INFO or in-band by its Allow), "rfc4733" (the same),
        "info" or "inband". ValueError for another mode."""
        if mode not in DTMF_MODES:
            raise ValueError(f"DTMF mode must be one of {', '.join(DTMF_MODES)}, got {mode!r}")
        if self._formats is not None:
            self._formats.dtmf_mode(side, mode)

    def dtmf_info(self, side: str, digit: str, duration_ms: int | None) -> bool:
        """A DTMF INFO from `side`'s phone: True when the PBX converted it for the other side (answer it
        200, pass nothing on), False to pass it on as it is."""
        if self._formats is None or self.closed:
            return False
        return self._formats.dtmf_info(side, digit, duration_ms)

    def local_offer(self, side: str) -> bytes:
        """An offer of `LOCAL_CODECS` at `side`'s relay leg (the PBX as the media end of a caller whose
        INVITE had no offer: RFC 3261 13.2.1, the 2xx carries the offer, the ACK the answer)."""
        leg = self.session.leg(side)
        index = _SIDE[side]
        self._versions[index] += 1
        offer = make_offer(
            leg.local_address,
            leg.local_port,
            LOCAL_CODECS,
            session_id=str(self._session_id + index),
            version=self._versions[index],
        )
        return offer.to_bytes()

    def _filter(self, media: MediaDescription) -> MediaDescription:
        assert self._codecs is not None
        rtpmap = media.rtpmap
        kept = tuple(f for f in media.formats if f in rtpmap and rtpmap[f].encoding.lower() in self._codecs)
        if not any(rtpmap[f].encoding.lower() != "telephone-event" for f in kept):
            raise SipError(488, "No acceptable codec", [("Warning", '304 pbx "Media type not available"')])
        return media.with_formats(kept)

    @staticmethod
    def _audio_index(sdp: SessionDescription) -> int | None:
        for i, media in enumerate(sdp.media):
            if media.media == "audio" and media.port:
                return i
        return None

    def negotiated(self, side: str) -> LegFormats | None:
        """What `side`'s phone negotiated (codec, DTMF method), None before its answer or without a
        clock to convert with (for traces: `pbx.b2bua.trace`)."""
        return self._formats.negotiated(side) if self._formats is not None else None

    def final_stats(self) -> SessionStats:
        """The relay session's counters as the call ends (its `media_closing` observers: metrics, traces),
        read from the relay once for all of them."""
        if self._final is None:
            self._final = self.session.stats()
        return self._final

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._formats is not None:
                self._formats.close()
            self.session.close()
