"""Mailbox access: the dialplan action `voicemailmain` (`*97`, `*98` in the demo dialplan).

- `voicemailmain`: the caller's own box, the extension its INVITE authenticated as (digest auth, or the
  extension of a trusted peer); a caller with no box of its own is asked for one, as with `ask`;
- `voicemailmain ask`: asks for the mailbox number first;
- `voicemailmain NUMBER`: that box.

The application answers and asks for the PIN (digits by RFC 4733, SIP INFO or in-band tones: the media
endpoint collects them all; `#` ends the entry). A wrong PIN is said so and asked again; after
`max_pin_attempts` wrong ones the caller hears goodbye and the call ends. Every wrong PIN counts as a failed
authentication of the account `TENANT/NUMBER` from the call's source address for the brute-force guard, the
registrar's: enough failures block the source (the SIP stack then drops all it sends), and the call ends at
once. A source already blocked is refused (403). An unknown box (`ask`, `NUMBER`) behaves exactly like a
wrong PIN, so mailbox numbers cannot be enumerated; the PIN is never logged.

After the PIN, `pbx.apps.voicemail.menu.MailboxSession` announces the counts and plays the messages. The call
ends when the application does (goodbye, timeout, wrong PINs). Nothing here reads the config: `pbx/service`
gives the mailboxes (`IMailboxes`), the guard and the settings.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from pbx.apps.base import AppCall
from pbx.apps.ivr import IvrApps
from pbx.apps.voicemail.boxes import IMailboxes
from pbx.apps.voicemail.menu import MAX_PIN_DIGITS, MailboxSession, MenuSettings, Voice
from pbx.dialplan import Action

__all__ = ["ASK", "MAX_MAILBOX_DIGITS", "WRONG_PIN_DELAY", "AccessCall", "AuthFailures", "VoicemailAccess"]

ASK = "ask"
"""The argument of `voicemailmain` that asks the caller for the mailbox number."""

MAX_MAILBOX_DIGITS = 16
"""The longest mailbox number a caller may type."""

WRONG_PIN_DELAY = 1.0
"""Seconds from the end of a PIN entry to the answer "That PIN is incorrect", whatever the check cost (a box
whose PIN is hashed costs a PBKDF2, an unknown box nothing): the time of the answer tells nothing about the
box, and guessing is slower."""


class Identity(Protocol):
    """Who the call authenticated as (`pbx.b2bua.b2bua.Caller`)."""

    @property
    def extension(self) -> str: ...


class AccessCall(AppCall, Protocol):
    """What mailbox access needs of a call beyond `AppCall` (`pbx.b2bua.call.Call` has it all)."""

    @property
    def caller(self) -> Identity: ...

    @property
    def source(self) -> str:
        """The IP address the caller's INVITE came from (what the guard blocks)."""

    def hangup(self, by: str) -> None:
        """End the answered call (BYE)."""

    def reject(self, status: int, reason: str | None = None) -> None:
        """Refuse the call before it is answered."""


class AuthFailures(Protocol):
    """The brute-force guard as mailbox access uses it (`pbx.registrar.BruteForceGuard`)."""

    def is_blocked(self, source: str) -> bool:
        """Whether `source` is blocked now."""

    def failure(self, source: str, account: str) -> bool:
        """Count a failed authentication of `account` from `source`; True when the source is now blocked."""


class VoicemailAccess:
    """The `voicemailmain` action.

    Args:
        mailboxes: the voicemail boxes.
        media: the media applications (their endpoint on the caller's leg and the tenants' prompts).
        clock: time source (the pause before a wrong PIN is answered).
        guard: the brute-force guard, or None (no blocking).
        max_pin_attempts: wrong PINs before the call ends.
        settings: menu timings and the time zone of the envelopes.
    """

    _log = Logger()

    def __init__(
        self,
        mailboxes: IMailboxes,
        media: IvrApps,
        clock: IReactorTime,
        guard: AuthFailures | None = None,
        *,
        max_pin_attempts: int = 3,
        settings: MenuSettings | None = None,
    ) -> None:
        self.mailboxes = mailboxes
        self.media = media
        self.clock = clock
        self.guard = guard
        self.max_pin_attempts = max(1, max_pin_attempts)
        self.settings = settings or MenuSettings()

    def register(self, apps: MutableMapping[str, Any]) -> None:
        """Plug `voicemailmain` into a B2BUA's `apps` table."""
        apps["voicemailmain"] = self.voicemailmain

    async def voicemailmain(self, call: AccessCall, action: Action) -> str:
        """`voicemailmain [ask|NUMBER]`: how it ended: "goodbye", "timeout", "refused" (wrong PINs),
        "blocked" (the source is blocked), "closed" (the caller hung up) or "failed" (no media)."""
        source = call.source
        if self.guard is not None and self.guard.is_blocked(source):
            self._log.warn("Call {id}: mailbox access refused to blocked {source}", id=call.id, source=source)
            if call.answered:
                call.hangup("pbx")
            else:
                call.reject(403, "Forbidden")
            return "blocked"
        number = self._box_of(call, action)
        call.answer_locally()
        endpoint = None
        if not call.ended and await call.media_ready() and not call.ended:
            endpoint = self.media.endpoint(call)
        if endpoint is None:
            return "closed" if call.ended else "failed"
        voice = Voice(call, endpoint, self.media.prompt, self.settings)
        try:
            result = await self._access(call, voice, number)
        except Exception:
            self._log.failure("Call {id}: mailbox access failed", id=call.id)
            result = "failed"
        if not call.ended:
            call.hangup("pbx")
        return result

    def _box_of(self, call: AccessCall, action: Action) -> str | None:
        """The box the action names, the caller's own, or None to ask for it."""
        if action.args:
            return None if action.args[0] == ASK else action.args[0]
        own = call.caller.extension
        if own and self.mailboxes.mailbox(call.tenant, own) is not None:
            return own
        self._log.info("Call {id}: {ext} has no mailbox: asking for one", id=call.id, ext=own or "?")
        return None

    async def _access(self, call: AccessCall, voice: Voice, number: str | None) -> str:
        opened = await self.login(call, voice, number)
        if isinstance(opened, tuple):
            return await MailboxSession(voice, self.mailboxes, call.tenant, opened[0]).run()
        return opened

    async def login(self, call: AccessCall, voice: Voice, number: str | None) -> tuple[str] | str:
        """Ask for the box (when `number` is None) and the PIN, up to `max_pin_attempts` times.

        Returns:
            (the opened box's number,), or how it ended: "refused", "blocked" or "closed".
        """
        tenant, source = call.tenant, call.source
        for attempt in range(1, self.max_pin_attempts + 1):
            box = number
            if box is None:
                box = await voice.entry(["vm-enter-mailbox"], MAX_MAILBOX_DIGITS)
                if call.ended:
                    return "closed"
            pin = await voice.entry(["vm-enter-pin"], MAX_PIN_DIGITS + 1)
            if call.ended:
                return "closed"
            entered = self.clock.seconds()
            if pin and await self._opens(tenant, box, pin):
                voice.endpoint.clear_digits()
                self._log.info(
                    "Call {id}: mailbox {tenant}/{box} opened from {source}",
                    id=call.id,
                    tenant=tenant,
                    box=box,
                    source=source,
                )
                return (box,)
            if pin:  # a PIN was tried: a failed authentication (nothing typed is only a missed attempt)
                self._log.warn(
                    "Call {id}: wrong PIN for mailbox {tenant}/{box} from {source} (attempt {n} of {max})",
                    id=call.id,
                    tenant=tenant,
                    box=box or "?",
                    source=source,
                    n=attempt,
                    max=self.max_pin_attempts,
                )
                if self.guard is not None and self.guard.failure(source, f"{tenant}/{box}"):
                    return "blocked"
                wait = entered + WRONG_PIN_DELAY - self.clock.seconds()
                if wait > 0:
                    await deferLater(self.clock, wait)
                if call.ended:
                    return "closed"
            await voice.say(
                ["vm-wrong-pin"] if attempt < self.max_pin_attempts else ["vm-wrong-pin", "goodbye"]
            )
            if call.ended:
                return "closed"
        return "refused"

    async def _opens(self, tenant: str, box: str, pin: str) -> bool:
        """Whether `pin` opens `box`. The PIN is checked for an unknown box too, and the answer is the same as
        for a wrong PIN, so the voice reveals nothing (`IMailboxes.check_pin` decides what the check costs;
        every try is a guard failure, which bounds any timing probe)."""
        try:
            right = bool(await self.mailboxes.check_pin(tenant, box, pin))
        except Exception:
            self._log.failure("Could not check the PIN of mailbox {tenant}/{box}", tenant=tenant, box=box)
            return False
        return right and bool(box) and self.mailboxes.mailbox(tenant, box) is not None
