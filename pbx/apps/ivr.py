"""The dialplan's media applications: `answer`, `progress`, `play`, `menu`, `ivr` and `record`.

Each is a coroutine `app(call, action) -> str` that the B2BUA's action runner awaits (`B2BUA.apps`, filled
by `pbx/tap.py` with `IvrApps.register`); docs/dialplan.md describes them for template authors. They speak
through an `IMediaEndpoint` (`pbx.media.interfaces`) attached to the caller's relay leg, created on first use
from the SDP the PBX sent to the caller (`AppCall.local_sdp`): its G.711 codec and telephone-event payload
type (no telephone-event: the endpoint detects digits in-band). SIP INFO digits reach the same endpoint
through the call (`inject_digit`).

- `answer` answers (200 with the PBX's SDP) and starts listening for digits; `progress` sends a 183 with SDP
  instead (early media: the caller hears what is played but is not charged, as Asterisk's `Progress()`).
- A caller whose INVITE had no SDP offer gets the PBX's offer in the 200 and the applications wait for its
  answer in the ACK (`AppCall.media_ready`; no usable answer: the call ends). Such a caller cannot get early
  media (an offer in a 183 needs PRACK, which the PBX does not do): `progress` sends a 183 without SDP, and
  `play`/`menu` with `noanswer=yes` answer the call, since they need media.
- `play` answers, unless `noanswer=yes` (then it sends the 183 if needed, like Asterisk's
  `Playback(...,noanswer)`), and plays its prompts in order; digits pressed meanwhile do not interrupt it.
- `menu` plays its prompt with barge-in and collects digits (`maxdigits`, `timeout`, `#` ends); with no
  entry it replays up to `retries` more times; with `choices=` an entry that is not one of them plays the
  `invalid` prompt and counts as a retry. It returns what was collected (`""` for nothing): the runner
  renders the template that printed the menu again with `digits` set to it.
- `ivr` answers; the runner then continues in `ivr/NAME.j2`.
- `record` answers, beeps (unless `beep=no`) and records into `DATA_DIR/recordings/TENANT/NAME.wav` until
  `#`, `maxlength` seconds, `silence` seconds of silence, or the caller hangs up (what was said is kept).

A prompt name is looked up in the tenant's own `DIALPLAN_DIR/TENANT/sounds/NAME.wav` first, then among the
shipped prompts (`sounds/en/NAME.wav`, the media engine's prompt directory); `tone:beep`, `silence:500`
and `digits:1234` are the endpoint's generated items.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from pbx.apps.base import AppCall, MediaFormat, media_format
from pbx.dialplan import Action

__all__ = ["DEFAULTS", "INVALID_PROMPT", "IvrApps"]

INVALID_PROMPT = "invalid"
"""What `menu` plays after an entry that is not one of its `choices=`, unless `invalid=` names another."""

DEFAULTS: dict[str, float] = {
    "menu.timeout": 5.0,
    "menu.maxdigits": 1,
    "menu.retries": 2,
    "record.maxlength": 300.0,
    "record.silence": 10.0,
}
"""The options' defaults (docs/dialplan.md lists them too)."""

App = Callable[[Any, Action], Awaitable[str]]


def _yes(action: Action, key: str, default: bool = False) -> bool:
    value = action.options.get(key)
    return default if value is None else value == "yes"


class IvrApps:
    """The media applications of the dialplan, sharing one media engine.

    Args:
        engine: an `IMediaEngine` (`create_endpoint(transport, codec, payload_type, telephone_event)`).
        dialplan_dir: where tenants' directories are (their `sounds/` override the shipped prompts).
        recordings_dir: where `record` writes (`TENANT/NAME.wav` below it).
    """

    _log = Logger()

    def __init__(self, engine: Any, dialplan_dir: Path, recordings_dir: Path) -> None:
        self.engine = engine
        self.dialplan_dir = Path(dialplan_dir)
        self.recordings_dir = Path(recordings_dir)

    def register(self, apps: MutableMapping[str, Any]) -> None:
        """Plug the applications into a B2BUA's `apps` table (action name -> app)."""
        apps.update(
            answer=self.answer,
            progress=self.progress,
            play=self.play,
            menu=self.menu,
            ivr=self.ivr,
            record=self.record,
        )

    # -- the endpoint on the caller's leg -----------------------------------------------------------------

    def endpoint(self, call: AppCall) -> Any:
        """The endpoint attached to the caller's leg (created on first use), or None without media (the
        caller sent no SDP offer, or none the PBX can speak: no PCMU/PCMA)."""
        if call.endpoint is not None:
            return call.endpoint
        sdp = call.local_sdp
        leg = call.media_leg()
        if sdp is None or leg is None or call.ended:
            self._log.warn("Call {id}: no media the PBX can speak (no SDP offer)", id=call.id)
            return None
        try:
            fmt = media_format(sdp)
        except ValueError as e:
            self._log.warn("Call {id}: no media the PBX can speak ({e})", id=call.id, e=str(e))
            return None
        endpoint = self._create(leg, fmt)
        leg.attach(endpoint)
        call.endpoint = endpoint
        return endpoint

    def _create(self, leg: Any, fmt: MediaFormat) -> Any:
        return self.engine.create_endpoint(leg, fmt.codec, fmt.payload_type, fmt.telephone_event)

    def prompt(self, tenant: str, name: str) -> str:
        """What to give the endpoint for a prompt name: the tenant's own file when there is one, else the
        name (a shipped prompt, or a generated item such as `tone:beep`)."""
        if ":" not in name:
            own = self.dialplan_dir / tenant / "sounds" / f"{name}.wav"
            if own.is_file():
                return str(own)
        return name

    def _prompts(self, call: AppCall, names: Sequence[str]) -> list[str]:
        return [self.prompt(call.tenant, n) for n in names]

    async def _play(
        self, call: AppCall, endpoint: Any, names: Sequence[str], *, barge_in: bool
    ) -> str | None:
        """Play prompts; the digit that interrupted them (barge-in) or None. A missing or unreadable prompt
        is logged and skipped (the call goes on, as Asterisk's Playback does)."""
        try:
            digit: str | None = await endpoint.play(self._prompts(call, names), barge_in=barge_in)
        except ValueError as e:
            self._log.error("Call {id}: cannot play {names}: {e}", id=call.id, names=list(names), e=str(e))
            return None
        return digit

    async def _media(self, call: AppCall, action: Action, *, early: bool = False) -> Any:
        """Answer (or send early media) as the action asks and return the endpoint once the media is agreed
        (None: no media). Early media that the caller cannot get (no offer from it) becomes an answer."""
        if not (early and not call.answered and call.early_media()):
            call.answer_locally()
        return await self._ready_endpoint(call)

    async def _ready_endpoint(self, call: AppCall) -> Any:
        if call.ended or not await call.media_ready() or call.ended:
            return None
        return self.endpoint(call)

    # -- the applications ---------------------------------------------------------------------------------

    async def answer(self, call: AppCall, action: Action) -> str:
        """`answer`: 200 with the PBX's media; digits are heard from now on."""
        await self._media(call, action)
        return "answered"

    async def progress(self, call: AppCall, action: Action) -> str:
        """`progress`: 183 Session Progress with SDP; the caller hears what `play noanswer=yes` plays (a
        caller that sent no offer gets a 183 without SDP: nothing is answered)."""
        if call.answered or call.early_media():
            await self._ready_endpoint(call)
        return "progress"

    async def ivr(self, call: AppCall, action: Action) -> str:
        """`ivr NAME`: answers; the action runner continues in `ivr/NAME.j2`."""
        await self._media(call, action)
        return "answered"

    async def play(self, call: AppCall, action: Action) -> str:
        """`play PROMPT... [noanswer=yes]`: plays the prompts in order, to the end."""
        endpoint = await self._media(call, action, early=_yes(action, "noanswer"))
        if endpoint is None:
            return "failed"
        await self._play(call, endpoint, action.args, barge_in=False)
        return "played"

    async def menu(self, call: AppCall, action: Action) -> str:
        """`menu prompt=NAME[&NAME...] ...`: the digits collected ("" for none) for the re-render."""
        endpoint = await self._media(call, action, early=_yes(action, "noanswer"))
        if endpoint is None:
            return ""
        prompts = action.options["prompt"].split("&")
        timeout = action.number("timeout", DEFAULTS["menu.timeout"])
        maxdigits = int(action.number("maxdigits", DEFAULTS["menu.maxdigits"]))
        retries = int(action.number("retries", DEFAULTS["menu.retries"]))
        choices = action.options.get("choices")
        valid = set(choices.split("|")) if choices else None
        invalid = action.options.get("invalid") or INVALID_PROMPT
        endpoint.clear_digits()
        entry = ""
        replay = True
        for attempt in range(retries + 1):
            if replay:
                await self._play(call, endpoint, prompts, barge_in=True)
            if call.ended:
                return ""
            replay = True
            entry = await endpoint.collect(maxdigits, timeout=timeout)
            if call.ended:
                return ""
            if not entry:
                continue
            if valid is None or entry in valid:
                return str(entry)
            self._log.info("Call {id}: menu entry {entry!r} is not a choice", id=call.id, entry=entry)
            if attempt < retries:
                endpoint.clear_digits()
                pressed = await self._play(call, endpoint, [invalid], barge_in=True)
                replay = pressed is None  # a key pressed during "invalid" is the next entry already
        return str(entry)

    async def record(self, call: AppCall, action: Action) -> str:
        """`record NAME [maxlength=S] [silence=S] [beep=no]`: how the recording ended (`STOP_REASONS`)."""
        endpoint = await self._media(call, action)
        if endpoint is None:
            return "failed"
        path = self.recording_path(call.tenant, action.args[0])
        os.makedirs(path.parent, exist_ok=True)
        if _yes(action, "beep", True):
            await self._play(call, endpoint, ["tone:beep"], barge_in=False)
            if call.ended:
                return "closed"
        endpoint.clear_digits()
        result = await endpoint.record(
            str(path),
            max_seconds=action.number("maxlength", DEFAULTS["record.maxlength"]),
            silence_seconds=action.number("silence", DEFAULTS["record.silence"]),
            stop_digits="#",
        )
        self._log.info(
            "Call {id}: recorded {path} ({duration:.1f} s, {reason})",
            id=call.id,
            path=result.path or "nothing",
            duration=result.duration,
            reason=result.reason,
        )
        return str(result.reason)

    def recording_path(self, tenant: str, name: str) -> Path:
        """Where `record NAME` writes for a tenant (names are validated: no dots, so never outside)."""
        return self.recordings_dir / tenant / f"{name}.wav"
