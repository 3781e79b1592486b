"""Leaving a message: the dialplan action
`voicemail MAILBOX [greeting=auto|busy|unavailable] [operator=TARGET]`.

The application answers the caller (a call already in early media, after `progress`, hears the greeting
there and is answered at the beep), plays the box's greeting, a beep, and records until `#`, silence, the
box's longest message or the caller's hang-up; the recording becomes a message through `IMailboxes.commit`
(`pbx.apps.voicemail.boxes`), with the caller's number and name, the time the recording started, its length
and the call's ID. docs/voicemail.md ("Leaving a message") tells template authors the same.

- The greeting: `greeting=busy` or `unavailable`, or `auto` (the default): busy when the last dial was busy,
  else unavailable. The owner's recording of that kind plays when there is one; else a spoken default
  built from the shipped prompts: the owner's recorded name, or "the person at extension" and the digits,
  then "is busy" / "is not available", then "please leave a message after the tone".
- Keys during the greeting: `*` (or any key but `0`) skips to the beep; `0` returns `OPERATOR` when the
  action has an `operator=` target, and the interpreter (`pbx.dialplan.interpreter`) dials it. Without
  one, `0` skips like `*`.
- A full box says "the mailbox is full" and records nothing; a box that cannot be written
  (`StorageUnavailable` from `prepare`, a recording the disk refused, an index entry not written) gets a
  spoken apology and one log line. The recorder writes the WAV atomically
  (`pbx.media.wav.write_pcm_atomic`), so there is never half a file, and audio without an index entry is
  discarded.
- A caller who hangs up after the beep still leaves the message: closing the endpoint finishes the
  recording with what was said (`RecordingResult.reason` "closed"), which is committed like any other. A
  message shorter than `min_message_seconds`, or one that heard only silence, is discarded.

The application knows the mailboxes only through `IMailboxes` and the call only through `AppCall` (plus the
caller's identity and the dial result, read when present), so it is tested with fakes.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pbx.apps.base import AppCall
from pbx.apps.ivr import IvrApps
from pbx.apps.voicemail.boxes import IMailboxes, Mailbox, MailboxFull, StorageUnavailable
from pbx.dialplan.actions import OPERATOR, Action

__all__ = ["PROMPTS", "VoicemailDeposit", "greeting_kind"]

PROMPTS: dict[str, str] = {
    "person": "vm-person-at-extension",
    "unavailable": "vm-is-unavailable",
    "busy": "vm-is-busy",
    "leave": "vm-leave-message",
    "full": "vm-mailbox-full",
    "sorry": "vm-sorry-unavailable",
    "saved": "vm-message-saved",
    "goodbye": "goodbye",
    "beep": "tone:beep",
}
"""The prompts the deposit plays (shipped in sounds/en by scripts/make_prompts; a tenant may override any)."""


def greeting_kind(option: str | None, last_result: str | None) -> str:
    """The greeting to play: `greeting=` when it names one, else (`auto`) busy after a busy dial, else
    unavailable."""
    if option in ("busy", "unavailable"):
        return option
    return "busy" if last_result == "busy" else "unavailable"


def _caller_id(call: Any) -> tuple[str, str]:
    """(number, name) of the caller as far as the call knows them: `Call.caller`'s authenticated extension
    and its directory name; for a caller that is no extension (from a trunk) or has no name, the From
    header's user part and display name (at most 64 characters each)."""
    caller = getattr(call, "caller", None)
    number = str(getattr(caller, "extension", "") or "")
    name = str(getattr(caller, "name", "") or "")
    invite = getattr(call, "invite", None)
    if not (number and name) and invite is not None:
        try:
            sender = invite.from_
            number = number or str(getattr(sender.uri, "user", "") or "")[:64]
            name = name or str(sender.display_name or "")[:64]
        except Exception:  # an unparsable From: nothing more, never a failed deposit
            pass
    return number, name


def _last_result(call: Any) -> str | None:
    state = getattr(call, "run_state", None)
    result = getattr(state, "result", None)
    return result if isinstance(result, str) else None


class VoicemailDeposit:
    """The `voicemail` action, over the mailboxes and the media applications' endpoints.

    Args:
        media: the media applications (`IvrApps`): the caller's endpoint and the tenant's prompt overrides.
        mailboxes: the voicemail boxes (`IMailboxes`).
        clock: the reactor's time (the message's `received_at`).
        min_message_seconds: a shorter message is discarded.
        silence_seconds: seconds of silence that end a recording (0: never).
    """

    _log = Logger()

    def __init__(
        self,
        media: IvrApps,
        mailboxes: IMailboxes,
        clock: IReactorTime,
        *,
        min_message_seconds: float = 1.0,
        silence_seconds: float = 10.0,
    ) -> None:
        self.media = media
        self.mailboxes = mailboxes
        self.clock = clock
        self.min_message_seconds = min_message_seconds
        self.silence_seconds = silence_seconds

    def register(self, apps: MutableMapping[str, Any]) -> None:
        """Plug `voicemail` into a B2BUA's `apps` table."""
        apps["voicemail"] = self.deposit

    # -- the application -----------------------------------------------------------------------------------

    async def deposit(self, call: AppCall, action: Action) -> str:
        """`voicemail MAILBOX ...`: how it ended: "recorded", "discarded" (too short or silent), "full",
        "failed" (no such box, no media, storage unavailable), "closed" (the caller left before the beep),
        or `OPERATOR` (0 pressed, with an `operator=` target)."""
        tenant, number = call.tenant, action.args[0]
        box = self.mailboxes.mailbox(tenant, number)
        if box is None:
            self._log.warn(
                "Call {id}: voicemail: tenant {tenant} has no mailbox {box}",
                id=call.id,
                tenant=tenant,
                box=number,
            )
            return "failed"
        early = not call.answered and call.endpoint is not None  # `progress` ran: greet in early media
        if not early:
            call.answer_locally()
        endpoint = await self._endpoint(call)
        if endpoint is None:
            return "failed"
        caller_number, caller_name = _caller_id(call)
        try:
            path = self.mailboxes.prepare(
                tenant, number, caller_number=caller_number, caller_name=caller_name, call_id=call.id
            )
        except MailboxFull:
            self._log.info(
                "Call {id}: voicemail {tenant}/{box} is full", id=call.id, tenant=tenant, box=number
            )
            await self._say(call, endpoint, [PROMPTS["full"], PROMPTS["goodbye"]])
            return "full"
        except StorageUnavailable as e:
            return await self._unavailable(call, endpoint, number, e)
        try:
            return await self._greet_and_record(call, action, endpoint, box, path)
        except BaseException:
            self.mailboxes.discard(path)
            raise

    async def _greet_and_record(
        self, call: AppCall, action: Action, endpoint: Any, box: Mailbox, path: Path
    ) -> str:
        tenant, number = call.tenant, box.number
        endpoint.clear_digits()
        kind = greeting_kind(action.options.get("greeting"), _last_result(call))
        key = await self._say(call, endpoint, self._greeting(tenant, number, kind), barge_in=True)
        if call.ended:
            self.mailboxes.discard(path)
            return "closed"
        if key == "0" and "operator" in action.options:
            self.mailboxes.discard(path)
            self._log.info("Call {id}: voicemail {box}: 0 pressed, to the operator", id=call.id, box=number)
            return OPERATOR
        if not call.answered:
            call.answer_locally()  # the greeting was early media; the message is not
        await self._say(call, endpoint, [PROMPTS["beep"]])
        if call.ended:
            self.mailboxes.discard(path)
            return "closed"
        caller_number, caller_name = _caller_id(call)
        received_at = self.clock.seconds()
        endpoint.clear_digits()
        self._log.info(
            "Call {id}: voicemail {tenant}/{box}: recording", id=call.id, tenant=tenant, box=number
        )
        try:
            result = await endpoint.record(
                str(path),
                max_seconds=box.max_message_seconds,
                silence_seconds=self.silence_seconds,
                stop_digits="#",
            )
        except (OSError, ValueError) as e:  # the disk refused the file (full, read-only): no file is left
            self.mailboxes.discard(path)
            return await self._unavailable(call, endpoint, number, e, logged=False)
        if result.path is None or result.duration < self.min_message_seconds:
            self.mailboxes.discard(path)
            self._log.info(
                "Call {id}: voicemail {box}: message discarded ({duration:.1f} s, {reason})",
                id=call.id,
                box=number,
                duration=result.duration,
                reason=result.reason,
            )
            await self._say(call, endpoint, [PROMPTS["goodbye"]])
            return "discarded"
        try:
            message = await self.mailboxes.commit(
                tenant,
                number,
                path,
                caller_number=caller_number,
                caller_name=caller_name,
                received_at=received_at,
                duration=result.duration,
                call_id=call.id,
            )
        except Exception as e:  # the index could not be written: the audio must not stay as an orphan
            self.mailboxes.discard(path)
            return await self._unavailable(call, endpoint, number, e)
        self._log.info(
            "Call {id}: voicemail {tenant}/{box}: message {message} saved ({duration:.1f} s, {reason})",
            id=call.id,
            tenant=tenant,
            box=number,
            message=message.id,
            duration=result.duration,
            reason=result.reason,
        )
        await self._say(call, endpoint, [PROMPTS["saved"], PROMPTS["goodbye"]])
        return "recorded"

    async def _endpoint(self, call: AppCall) -> Any:
        """The caller's endpoint once the media is agreed; None when the caller left or has no media."""
        if call.ended or not await call.media_ready() or call.ended:
            return None
        return self.media.endpoint(call)

    # -- prompts -------------------------------------------------------------------------------------------

    def _greeting(self, tenant: str, number: str, kind: str) -> list[str]:
        """The owner's greeting of `kind`, else the spoken default ("the person at extension 1002 is not
        available; please leave a message after the tone"), with the owner's recorded name if any."""
        recorded = self.mailboxes.greeting(tenant, number, kind)
        if recorded is not None:
            return [str(recorded)]
        name = self.mailboxes.greeting(tenant, number, "name")
        if name is not None:
            who = [str(name)]
        elif number.isdigit() and len(number) <= 32:
            who = [PROMPTS["person"], f"digits:{number}"]
        else:
            who = [PROMPTS["person"]]
        return [*who, PROMPTS[kind], PROMPTS["leave"]]

    async def _say(
        self, call: AppCall, endpoint: Any, names: Sequence[str], *, barge_in: bool = False
    ) -> str | None:
        """Play prompts (tenant overrides first) unless the caller is gone; the key that stopped them."""
        if call.ended:
            return None
        prompts = [n if "/" in n else self.media.prompt(call.tenant, n) for n in names]
        try:
            key: str | None = await endpoint.play(prompts, barge_in=barge_in)
        except ValueError as e:  # a missing prompt or an unreadable greeting: skipped, as `play` does
            self._log.error("Call {id}: cannot play {names}: {e}", id=call.id, names=list(names), e=str(e))
            return None
        return key

    async def _unavailable(
        self, call: AppCall, endpoint: Any, number: str, error: BaseException, *, logged: bool = True
    ) -> str:
        """The box cannot be written now: an apology to a caller still there, and a log line: a warning
        when nobody logged the failure yet (the recording's write), else an info line with the call's ID
        (`IMailboxes.prepare` and `commit` log their storage failures themselves)."""
        log = self._log.info if logged else self._log.error
        log(
            "Call {id}: voicemail {tenant}/{box}: storage unavailable, nothing recorded: {error}",
            id=call.id,
            tenant=call.tenant,
            box=number,
            error=str(error) or type(error).__name__,
        )
        await self._say(call, endpoint, [PROMPTS["sorry"], PROMPTS["goodbye"]])
        return "failed"
