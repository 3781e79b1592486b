"""Music on hold: what a held phone hears instead of silence.

When one side of a connected call puts the other on hold (a re-INVITE offering `a=sendonly`, `a=inactive` or
`c=0.0.0.0`), the B2BUA asks `MusicOnHold.start` for an endpoint on the HELD side's relay leg, in the codec
that side chose in its answer to the hold offer, continuing the RTP stream that phone was receiving when the
relay leg knows it (`last_sent`); the endpoint loops the tenant's `sounds/moh.wav`, else the
shipped `moh` prompt. On resume (or when the call ends) the B2BUA closes it and detaches the leg, and the
relay carries the two phones' audio again.

On a relay leg that plays files itself (rtpengine's `play media`: `pbx.media.rtpengine.RtpengineLeg`), the
endpoint is `RemoteMusic` instead: rtpengine loops the same file (its absolute path: rtpengine must see the
same file system) to the held phone in its codec until the B2BUA closes it (`stop media`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.logger import Logger

from pbx.apps.base import media_format

__all__ = ["MusicOnHold", "RemoteMusic"]

REMOTE_REPEATS = 1000
"""How many times rtpengine loops the music (the B2BUA stops it on resume; rtpengine's delete at the end)."""


class RemoteMusic:
    """Music on hold that the relay plays itself (`leg.play_media`), stopped by `close`."""

    _log = Logger()

    def __init__(self, leg: Any, path: str) -> None:
        self.leg = leg
        self.path = path
        self.closed = False
        leg.play_media(path, REMOTE_REPEATS).addErrback(self._failed, "play")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.leg.stop_media().addErrback(self._failed, "stop")

    def _failed(self, failure: Any, what: str) -> None:
        self._log.warn(
            "Music on hold on the relay: {what} failed: {e}", what=what, e=failure.getErrorMessage()
        )


class MusicOnHold:
    """Starts music on hold on a relay leg (`B2BUA.hold_music`).

    Args:
        engine: an `IMediaEngine`.
        dialplan_dir: tenants' directories (their `sounds/moh.wav` replaces the shipped music).
    """

    _log = Logger()

    def __init__(self, engine: Any, dialplan_dir: Path) -> None:
        self.engine = engine
        self.dialplan_dir = Path(dialplan_dir)

    def start(self, tenant: str, leg: Any, answer_sdp: bytes) -> Any:
        """An endpoint attached to `leg` playing music, or None when the held phone's answer has no codec
        the PBX speaks (it then hears silence, as before)."""
        own = self.dialplan_dir / tenant / "sounds" / "moh.wav"
        if getattr(leg, "play_media", None) is not None:  # rtpengine plays the file itself
            prompts = getattr(self.engine, "prompts", None)
            path = own if own.is_file() else Path(prompts.path_of("moh")) if prompts is not None else None
            return RemoteMusic(leg, str(path.resolve())) if path is not None else None
        try:
            fmt = media_format(answer_sdp)
        except ValueError as e:
            self._log.info("No music on hold: {e}", e=str(e))
            return None
        # Continue the stream the held phone was receiving (same SSRC, next sequence number and timestamp),
        # when the relay leg remembers it: phones drop packets whose timestamp goes backwards (baresip).
        last = getattr(leg, "last_sent", None)
        extra = {"continue_from": last} if last is not None else {}
        endpoint = self.engine.create_endpoint(leg, fmt.codec, fmt.payload_type, fmt.telephone_event, **extra)
        leg.attach(endpoint)
        endpoint.music_on_hold(str(own) if own.is_file() else None)
        return endpoint
