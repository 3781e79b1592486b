"""Music on hold: what a held phone hears instead of silence.

When one side of a connected call puts the other on hold (a re-INVITE offering `a=sendonly`, `a=inactive` or
`c=0.0.0.0`), the B2BUA asks `MusicOnHold.start` for an endpoint on the HELD side's relay leg, in the codec
that side chose in its answer to the hold offer, continuing the RTP stream that phone was receiving when the
relay leg knows it (`last_sent`); the endpoint loops the tenant's `sounds/moh.wav`, else the
shipped `moh` prompt. On resume (or when the call ends) the B2BUA closes it and detaches the leg, and the
relay carries the two phones' audio again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.logger import Logger

from pbx.apps.base import media_format

__all__ = ["MusicOnHold"]


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
        own = self.dialplan_dir / tenant / "sounds" / "moh.wav"
        endpoint.music_on_hold(str(own) if own.is_file() else None)
        return endpoint
