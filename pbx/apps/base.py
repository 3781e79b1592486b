"""What the call applications need of a call, and the negotiated media format they speak in.

The applications (`pbx.apps.ivr`) sit above the B2BUA in the layers: they use a `pbx.b2bua.Call` only through
the narrow `AppCall` protocol below, so they can be tested with a fake call and the B2BUA never imports them
(`pbx/tap.py` plugs them into `B2BUA.apps`). The PBX speaks on the caller's relay leg ("a"): an
`IMediaEndpoint` (`pbx.media.interfaces`) is attached to it while an application plays, collects digits or
records, and detached when a later `dial` bridges the call (the relay then carries the audio, no re-INVITE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from pbx.sip.sdp import SdpError, SessionDescription

__all__ = ["AppCall", "MediaFormat", "media_format"]


class AppCall(Protocol):
    """The part of a call the applications use (`pbx.b2bua.call.Call` implements it).

    Attributes:
        id: the call's identifier (for logs and recording names).
        tenant: the tenant's name (prompt overrides and recordings are per tenant).
        ended: True once the call is over (the applications then stop).
        answered: True once the caller got a 200 (from the PBX or a bridged callee).
        local_sdp: the SDP the PBX sent to the caller for its own media (in a 183 or the 200), else None;
            when the caller's INVITE had no offer, the PBX's offer cut down to the caller's answer, and None
            until that answer came (in the ACK: `media_ready`).
        endpoint: the `IMediaEndpoint` attached to the caller's relay leg, or None; the applications set it,
            the call closes and detaches it when it bridges, ends or hangs up.
    """

    id: str
    ended: bool
    endpoint: Any

    @property
    def tenant(self) -> str: ...

    @property
    def answered(self) -> bool: ...

    @property
    def local_sdp(self) -> bytes | None: ...

    def answer_locally(self) -> None:
        """Answer the caller with the PBX's own media (200 OK with `local_sdp`); nothing once answered.
        Raises `SipError` (400/413/488) when the caller's offer cannot be answered."""

    def early_media(self) -> bool:
        """Send `183 Session Progress` with `local_sdp` (early media) unless answered or already sent;
        True when the caller hears the PBX before an answer. False for a caller that sent no offer (it
        gets a 183 without SDP: no offer in an unreliable provisional, RFC 3261 13.2.1)."""

    def media_ready(self) -> Deferred[bool]:
        """Fires True once the media is agreed (at once, unless the PBX's 200 carried an offer whose answer
        the caller's ACK has yet to bring), False when the call ends first or the answer is unusable."""

    def media_leg(self) -> Any:
        """The caller's relay leg (`IRelayLeg`: attach, detach, send_rtp ...) once `local_sdp` exists."""


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """How the PBX talks RTP to one phone: the audio codec and its payload type, and the telephone-event
    payload type (None: the phone negotiated no RFC 4733 events, so digits are detected in-band)."""

    codec: str = "PCMU"
    payload_type: int = 0
    telephone_event: int | None = None


_STATIC = {"0": "PCMU", "8": "PCMA"}


def media_format(sdp: bytes) -> MediaFormat:
    """The format of the first audio stream of an SDP answer: its first G.711 format and telephone-event.

    Raises:
        ValueError: the SDP is malformed or has no PCMU/PCMA audio stream.
    """
    try:
        description = SessionDescription.parse(sdp)
    except SdpError as e:
        raise ValueError(f"malformed SDP: {e}") from None
    for media in description.media:
        if media.media.lower() != "audio" or not media.port:
            continue
        rtpmap = media.rtpmap
        codec: tuple[str, int] | None = None
        event: int | None = None
        for fmt in media.formats:
            entry = rtpmap.get(fmt)
            name = entry.encoding.upper() if entry is not None else _STATIC.get(fmt, "")
            if name in ("PCMU", "PCMA") and codec is None and fmt.isdigit():
                codec = (name, int(fmt))
            elif name == "TELEPHONE-EVENT" and event is None and fmt.isdigit():
                event = int(fmt)
        if codec is not None:
            return MediaFormat(codec[0], codec[1], event)
    raise ValueError("no PCMU or PCMA audio stream in the SDP")
