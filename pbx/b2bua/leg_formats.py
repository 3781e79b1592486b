"""What each side of one bridged call negotiated, and the relay conversions that follow from it (RFC 3264,
RFC 4733; `pbx.b2bua.codec_plan` for the SDP decisions, `pbx.media.dtmf_interwork` for the relay's).

`CallFormats` is the part of a `MediaBridge` that only exists when the relay can convert (it has a clock):
it keeps each side's last audio offer (cut down to its formats: what an answer is mapped back to), each
side's negotiated formats and DTMF facts (its Allow, a forced DTMF mode), and creates the call's
`Interworking` only when the two sides first differ, so that a call between phones that agree costs one
small object and nothing on the relay's hot path.

This module knows nothing of SIP messages: call control passes media descriptions, Allow values and digits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.interfaces import IReactorTime

from pbx.b2bua.codec_plan import answer_for, augment_offer, leg_formats, restrict_offer_to
from pbx.media.dtmf_interwork import Interworking, LegFormats
from pbx.media.interfaces import IRelaySession
from pbx.media.transcode import payload_map
from pbx.sip.sdp import MediaDescription, RtpMap

__all__ = ["DTMF_MODES", "CallFormats"]

DTMF_MODES = ("auto", "rfc4733", "info", "inband")
"""How DTMF may be forced to reach one side (`CallFormats.dtmf_mode`)."""

_SIDE = {"a": 0, "b": 1}
_OTHER = {"a": "b", "b": "a"}
_FORMAT_LINES = frozenset({"rtpmap", "fmtp"})
_ALL_INFO = (True, True)
_AUTO = ("auto", "auto")


def _slim(media: MediaDescription) -> MediaDescription:
    """An offer kept for the call's length: only its formats and their rtpmap/fmtp lines."""
    attributes = tuple(a for a in media.attributes if a[0].lower() in _FORMAT_LINES)
    return MediaDescription(
        media.media, media.port, proto=media.proto, formats=media.formats, attributes=attributes
    )


class CallFormats:
    """The negotiated formats of a call's two sides and the conversions between them (module docstring).

    Args:
        session: the call's relay session.
        clock: paces the DTMF the relay generates.
        allowed: the lower-case encodings the B2BUA lets through (None: all).
    """

    __slots__ = (
        "_allowed",
        "_clock",
        "_formats",
        "_info",
        "_modes",
        "_offers",
        "_session",
        "interworking",
        "send_info",
    )

    def __init__(self, session: IRelaySession, clock: IReactorTime, allowed: frozenset[str] | None) -> None:
        self._session = session
        self._clock = clock
        self._allowed = allowed
        # Each side's last offer: its formats and rtpmap/fmtp lines (`_slim`), and its rtpmap.
        self._offers: list[tuple[MediaDescription, dict[str, RtpMap]] | None] = [None, None]
        self._formats: list[LegFormats | None] = [None, None]
        # Per side; shared tuples until a side differs from the default (one bridge per call, kept all call).
        self._info: tuple[bool, bool] = _ALL_INFO  # takes DTMF INFO (until an Allow without INFO is seen)
        self._modes: tuple[str, str] = _AUTO
        self.interworking: Interworking | None = None  # made when the sides first differ
        self.send_info: Callable[[str, str, int], object] | None = (
            None  # (side, digit, ms): set by the bridge
        )

    def offer(
        self, side: str, media: MediaDescription, codecs: Sequence[str] | None = None
    ) -> MediaDescription:
        """`side`'s audio offer (already filtered to the allow-list) as the other side gets it: cut to
        `codecs` when given (a trunk's list), with the other G.711 law and telephone-event added.

        Raises:
            SipError: 488 when `codecs` leaves nothing.
        """
        rtpmap = media.rtpmap
        self._offers[_SIDE[side]] = (_slim(media), rtpmap)
        own = leg_formats(media, rtpmap=rtpmap)
        if codecs is not None:
            media = restrict_offer_to(media, codecs)
            rtpmap = media.rtpmap
        passed = augment_offer(media, self._allowed, rtpmap)
        self._before_answer(side, own, passed)
        return passed

    def _before_answer(self, side: str, own: LegFormats, passed: MediaDescription) -> None:
        """A first offer that reaches the other side with a G.711 law its offerer lacks: the answerer may
        send in that law from the moment it answers, often before its answer is read here (RFC 3264 5.1: an
        offerer takes any format it offered at once), so its RTP is converted to the offerer's law from now
        on. The answer replaces these provisional formats (`answer`); a re-offer leaves the negotiated ones.
        """
        index = _SIDE[side]
        if self._formats[index] is not None or self._formats[1 - index] is not None:
            return
        answerer = leg_formats(passed)
        if not payload_map(answerer.audio, own.audio):
            return
        self._formats[index] = own
        self._formats[1 - index] = LegFormats(answerer.audio, own.telephone_event, own.info)
        self._configure()

    def answer(self, side: str, media: MediaDescription) -> MediaDescription:
        """`side`'s answer in the terms of the other side's offer; the relay converts between them.

        Raises:
            SipError: 488 when no codec of the answer can be given to the offerer.
        """
        offerer = _OTHER[side]
        offer = self._offers[_SIDE[offerer]]
        if offer is None or not media.port:
            return media
        out, offerer_formats, answerer_formats = answer_for(offer[0], media, offer[1])
        self._formats[_SIDE[offerer]] = offerer_formats
        self._formats[_SIDE[side]] = answerer_formats
        self._configure()
        return out

    def _effective(self, index: int) -> LegFormats | None:
        """A side's formats with its DTMF method as negotiated, or as `dtmf_mode` forces it."""
        formats = self._formats[index]
        if formats is None:
            return None
        mode = self._modes[index]
        if mode == "info":
            return LegFormats(formats.audio, None, True)
        if mode == "inband":
            return LegFormats(formats.audio, None, False)
        return LegFormats(formats.audio, formats.telephone_event, self._info[index])

    def _configure(self, force: bool = False) -> None:
        a, b = self._effective(0), self._effective(1)
        if a is None or b is None:
            return
        if self.interworking is None:
            differ = a.telephone_event != b.telephone_event
            if not (force or differ or payload_map(a.audio, b.audio) or payload_map(b.audio, a.audio)):
                return  # the phones agree: the relay's plain hot path, nothing to keep
            self.interworking = Interworking(self._session, self._clock, self._send_info)
        self.interworking.configure(a, b)

    def _send_info(self, side: str, digit: str, duration_ms: int) -> None:
        if self.send_info is not None:
            self.send_info(side, digit, duration_ms)

    def note_allow(self, side: str, allow: Sequence[str]) -> None:
        """The values of `side`'s Allow headers (none: no header): without INFO there, a phone without
        telephone-event gets DTMF as in-band tones instead of INFO."""
        methods = {m.strip().upper() for value in allow for m in value.split(",")}
        info = not allow or "INFO" in methods
        index = _SIDE[side]
        if info != self._info[index]:
            self._info = (info, self._info[1]) if index == 0 else (self._info[0], info)
            self._configure()

    def negotiated(self, side: str) -> LegFormats | None:
        """`side`'s formats and DTMF method as they are used now (None before its answer)."""
        return self._effective(_SIDE[side])

    def dtmf_mode(self, side: str, mode: str) -> None:
        """Force how DTMF reaches `side`'s phone (`MediaBridge.dtmf_mode`)."""
        if mode not in DTMF_MODES:
            raise ValueError(f"DTMF mode must be one of {', '.join(DTMF_MODES)}, got {mode!r}")
        self._modes = (mode, self._modes[1]) if side == "a" else (self._modes[0], mode)
        self._configure()

    def dtmf_info(self, side: str, digit: str, duration_ms: int | None) -> bool:
        """A DTMF INFO from `side`'s phone: True when converted for the other side, False to pass it on."""
        if self.interworking is None:
            self._configure(force=True)
            if self.interworking is None:  # no answer yet
                return False
        return self.interworking.info_received(side, digit, duration_ms)

    def close(self) -> None:
        if self.interworking is not None:
            self.interworking.close()
