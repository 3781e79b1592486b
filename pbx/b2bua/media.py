"""Media anchoring for one call: the relay session and the SDP rewriting around it (RFC 3264, RFC 4566).

The call's two sides are "a" (the caller) and "b" (whoever is called: every fork shares it). An SDP body that
arrives from one side is learnt (where that side's peer wants media) and rewritten for the other side, so each
phone only ever sees the PBX's address and relay ports (topology hiding). The first audio stream is relayed;
other streams (video) are declined with port 0, since the relay carries one audio stream per call. Codecs
are filtered to an allow-list; the B2BUA does not transcode, so what both ends have passes through.

This module knows nothing of SIP transactions or dialogs: it turns bodies into bodies.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pbx.media.interfaces import IMediaRelay, IRelaySession
from pbx.media.ports import PortsExhausted
from pbx.sip.errors import SipError
from pbx.sip.offer_answer import rewrite_for_relay
from pbx.sip.sdp import MediaDescription, SdpError, SessionDescription

OTHER = {"a": "b", "b": "a"}
_random = random.Random()


class MediaBridge:
    """The relay session of one call and the SDP versions of each side.

    Args:
        relay: the media relay.
        call_id: for the relay's bookkeeping.
        codecs: encoding names allowed through ("PCMU", "PCMA", "telephone-event" ...); ("*",) for all.
    """

    def __init__(self, relay: IMediaRelay, call_id: str, codecs: Sequence[str] = ("*",)) -> None:
        try:
            self.session: IRelaySession = relay.create_session(call_id)
        except PortsExhausted:
            raise SipError(503, "No media ports left", [("Retry-After", "5")]) from None
        self._codecs = None if "*" in codecs else {c.lower() for c in codecs}
        # o= session ids must differ between calls, not be secret (RFC 8866 5.2): no system call for them.
        self._session_ids = {"a": str(_random.randrange(1, 10**9)), "b": str(_random.randrange(1, 10**9))}
        self._versions = {"a": 0, "b": 0}
        self.closed = False

    def forward(self, from_side: str, body: bytes, *, is_offer: bool) -> bytes:
        """Learn the SDP that `from_side`'s peer sent and rewrite it for the other side's peer.

        Raises:
            SipError: 400 for malformed SDP, 488 when no allowed codec is left in an offer.
        """
        try:
            sdp = SessionDescription.parse(body)
        except SdpError as e:
            raise SipError(400, f"Malformed SDP: {e}") from None
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
            if is_offer and self._codecs is not None:
                media = self._filter(media)
                sdp = sdp.with_media(tuple(media if i == audio else m for i, m in enumerate(sdp.media)))
        to_side = OTHER[from_side]
        out_leg = self.session.leg(to_side)
        ports: list[int | None] = [
            out_leg.local_port if i == audio and m.port else (0 if m.port else None)
            for i, m in enumerate(sdp.media)
        ]
        self._versions[to_side] += 1
        rewritten = rewrite_for_relay(
            sdp,
            out_leg.local_address,
            ports,
            session_id=self._session_ids[to_side],
            version=self._versions[to_side],
        )
        return rewritten.to_bytes()

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

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.session.close()
