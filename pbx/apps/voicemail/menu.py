"""Mailbox access after the PIN: the counts, the messages one by one, and the mailbox options.

The keys follow Asterisk's and FreeSWITCH's habits (docs/voicemail.md has the map):

- main menu: `1` listen to the messages, `0` mailbox options, `*` goodbye;
- on a message (while its envelope or audio plays, or at the message menu after it): `7` delete, `9` save
  (mark it old; it stays), `4` previous, `6` next, `5` repeat, `#` skip to the next, `0` mailbox options,
  `*` back to the main menu. A message played to its end, or skipped past (`6`, `#`), is marked old;
- mailbox options: `1` record the unavailable greeting, `2` the busy greeting, `3` the name, `4` change the
  PIN (entered twice, 4 to 12 digits), `*` back.

A menu with no key for `timeout` seconds is played again, up to `repeats` more times; then the caller hears
goodbye and the call ends. So does a caller pressing only keys the menu does not know (each is a miss), so
every loop here is bounded. The session reads and changes the box only through `IMailboxes`; it never sees
or says the PIN except to store a new one.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from twisted.logger import Logger

from pbx.apps.base import AppCall
from pbx.apps.voicemail import speech
from pbx.apps.voicemail.boxes import GREETINGS, IMailboxes
from pbx.store.records import VoicemailMessage

__all__ = ["MIN_PIN_DIGITS", "MAX_PIN_DIGITS", "MailboxSession", "MenuSettings", "Voice"]

MIN_PIN_DIGITS = 4
MAX_PIN_DIGITS = 12

_MAIN_KEYS = "10*"
_MESSAGE_KEYS = "79456#0*"
_OPTION_KEYS = "1234*"


@dataclass(frozen=True, slots=True)
class MenuSettings:
    """The timings of mailbox access.

    Attributes:
        timeout: seconds a menu waits for a key (and an entry for its first digit).
        digit_timeout: seconds an entry (PIN, mailbox number) waits for each further digit.
        repeats: how often a menu is played again after a timeout or an unknown key before goodbye.
        greeting_seconds: the longest greeting.
        name_seconds: the longest recorded name.
        silence_seconds: silence that ends a greeting or name recording.
        zone: the time zone the envelope's time is spoken in (None: the PBX host's).
    """

    timeout: float = 10.0
    digit_timeout: float = 5.0
    repeats: int = 3
    greeting_seconds: float = 60.0
    name_seconds: float = 10.0
    silence_seconds: float = 5.0
    zone: tzinfo | None = None


class Voice:
    """Speaking and listening on one call's endpoint: prompts (looked up per tenant), menus, entries.

    Args:
        call: the call.
        endpoint: its `IMediaEndpoint`.
        prompt: (tenant, name) -> what the endpoint plays (`IvrApps.prompt`: a tenant's file or the name).
        settings: the timings.
    """

    _log = Logger()

    def __init__(
        self, call: AppCall, endpoint: Any, prompt: Callable[[str, str], str], settings: MenuSettings
    ) -> None:
        self.call = call
        self.endpoint = endpoint
        self._prompt = prompt
        self.settings = settings

    async def say(self, names: Sequence[str], *, barge_in: bool = False) -> str | None:
        """Play prompts (or WAV files, by path) in order; the key that interrupted them with `barge_in`, else
        None. A prompt that cannot be played is logged and skipped, as `play` does."""
        if self.call.ended:
            return None
        items = [n if n.endswith(".wav") else self._prompt(self.call.tenant, n) for n in names]
        try:
            pressed: str | None = await self.endpoint.play(items, barge_in=barge_in)
        except ValueError as e:
            self._log.error(
                "Call {id}: cannot play {names}: {e}", id=self.call.id, names=list(names), e=str(e)
            )
            return None
        return pressed

    async def choose(self, names: Sequence[str], keys: str) -> str | None:
        """Play a menu (a key interrupts it) and wait `timeout` for one of `keys`; None when the caller
        hung up or missed `repeats` + 1 times in a row (no key, or one the menu does not know)."""
        misses = 0
        while not self.call.ended:
            pressed = await self.say(names, barge_in=True)
            if pressed is None and not self.call.ended:
                pressed = await self.endpoint.collect(1, timeout=self.settings.timeout, terminators="")
            if self.call.ended:
                return None
            self.endpoint.clear_digits()
            if pressed and pressed in keys:
                return pressed
            if pressed:
                await self.say(["invalid"])
            misses += 1
            if misses > self.settings.repeats:
                return None
        return None

    async def entry(self, names: Sequence[str], max_digits: int) -> str:
        """Play a prompt (typing may begin during it) and collect digits until `#`, `max_digits` or a
        timeout; "" for nothing (or when the caller hung up)."""
        self.endpoint.clear_digits()
        await self.say(names, barge_in=True)
        if self.call.ended:
            return ""
        got: str = await self.endpoint.collect(
            max_digits, timeout=self.settings.digit_timeout, first_timeout=self.settings.timeout
        )
        return "" if self.call.ended else got


class MailboxSession:
    """One caller in one mailbox, after the right PIN.

    Args:
        voice: the call's voice.
        mailboxes: the boxes (`IMailboxes`).
        tenant: the box's tenant.
        number: the box's number.
    """

    _log = Logger()

    def __init__(self, voice: Voice, mailboxes: IMailboxes, tenant: str, number: str) -> None:
        self.voice = voice
        self.mailboxes = mailboxes
        self.tenant = tenant
        self.number = number
        self.call = voice.call

    async def run(self) -> str:
        """Counts, the messages, then the main menu until goodbye; how it ended: "goodbye" (`*`),
        "timeout" (no key) or "closed" (the caller hung up)."""
        messages = await self.mailboxes.messages(self.tenant, self.number)
        new = sum(1 for m in messages if m.folder == "new")
        self._log.info(
            "Call {id}: mailbox {tenant}/{box} has {new} new and {old} old messages",
            id=self.call.id,
            tenant=self.tenant,
            box=self.number,
            new=new,
            old=len(messages) - new,
        )
        pressed = await self.voice.say(speech.counts(new, len(messages) - new), barge_in=True)
        if self.call.ended:
            return "closed"
        self.voice.endpoint.clear_digits()
        key: str | None = pressed if pressed is not None and pressed in _MAIN_KEYS else None
        if key is None and messages:
            key = "1"  # the messages play straight after the counts
        while not self.call.ended:
            if key is None:
                key = await self.voice.choose(["vm-access-menu"], _MAIN_KEYS)
            if key is None:
                return await self._timed_out()
            if key == "*":
                await self.voice.say(["goodbye"])
                return "closed" if self.call.ended else "goodbye"
            ended = await (self.listen() if key == "1" else self.options())
            if ended is not None:
                return ended
            key = None
        return self._gone()

    def _gone(self) -> str:
        """The caller hung up ("closed"), or missed every repeat of a menu ("timeout")."""
        return "closed" if self.call.ended else "timeout"

    async def _timed_out(self) -> str:
        if not self.call.ended:
            await self.voice.say(["goodbye"])
        return self._gone()

    # -- the messages --------------------------------------------------------------------------------------

    async def listen(self) -> str | None:
        """Play the messages, new first, and obey the message keys; None to go back to the main menu, or
        how the call ended."""
        items = list(await self.mailboxes.messages(self.tenant, self.number))
        if not items:
            await self.voice.say(["vm-no-messages"])
            return None
        index, replay = 0, True
        while not self.call.ended:
            if index >= len(items):
                await self.voice.say(["vm-no-more-messages"])
                return None
            key = None
            if replay:
                key = await self._play(items, index)
                if self.call.ended:
                    break
                if key is not None and key not in _MESSAGE_KEYS:
                    await self.voice.say(["invalid"])
                    key = None
            replay = False
            if key is None:
                key = await self.voice.choose(["vm-message-menu"], _MESSAGE_KEYS)
                if key is None:
                    return await self._timed_out()
            message = items[index]
            if key == "7":
                await self.mailboxes.delete(message)
                self._log.info(
                    "Call {id}: message {msg} of {tenant}/{box} deleted",
                    id=self.call.id,
                    msg=message.id,
                    tenant=self.tenant,
                    box=self.number,
                )
                del items[index]
                await self.voice.say(["vm-message-deleted"])
                replay = True
            elif key == "9":
                items[index] = await self._mark_old(message)
                await self.voice.say(["vm-message-saved"])
                index, replay = index + 1, True
            elif key in "6#":
                items[index] = await self._mark_old(message)  # skipped past: heard enough
                index, replay = index + 1, True
            elif key == "4":
                if index == 0:
                    await self.voice.say(["vm-first-message"])
                else:
                    index, replay = index - 1, True
            elif key == "5":
                replay = True
            elif key == "0":
                ended = await self.options()
                if ended is not None:
                    return ended
            else:  # "*"
                return None
        return "closed"

    async def _play(self, items: list[VoicemailMessage], index: int) -> str | None:
        """The envelope then the audio of `items[index]`; the key that interrupted them, or None. A message
        played to its end is marked old (in `items` too)."""
        message = items[index]
        envelope = speech.envelope(
            index + 1, message.received_at, message.caller_number, self.voice.settings.zone
        )
        self.voice.endpoint.clear_digits()
        key = await self.voice.say(envelope, barge_in=True)
        if key is not None or self.call.ended:
            return key
        key = await self.voice.say([str(self.mailboxes.audio_path(message))], barge_in=True)
        if key is None and not self.call.ended:
            items[index] = await self._mark_old(message)
        return key

    async def _mark_old(self, message: VoicemailMessage) -> VoicemailMessage:
        if message.folder == "old":
            return message
        return await self.mailboxes.mark_old(message)

    # -- mailbox options -----------------------------------------------------------------------------------

    async def options(self) -> str | None:
        """The mailbox options until `*`; None to go back, or how the call ended."""
        while not self.call.ended:
            key = await self.voice.choose(["vm-options-menu"], _OPTION_KEYS)
            if key is None:
                return await self._timed_out()
            if key == "*":
                return None
            if key == "4":
                await self.change_pin()
            else:
                await self.record(GREETINGS[int(key) - 1])
        return "closed"

    async def record(self, kind: str) -> None:
        """Record a greeting (`unavailable`, `busy`) or the name, after a beep, until `#` or silence."""
        settings = self.voice.settings
        await self.voice.say(["vm-record-name" if kind == "name" else "vm-record-greeting", "tone:beep"])
        if self.call.ended:
            return
        endpoint = self.voice.endpoint
        endpoint.clear_digits()
        try:
            path = self.mailboxes.greeting_path(self.tenant, self.number, kind)
            path.parent.mkdir(parents=True, exist_ok=True)
            result = await endpoint.record(
                str(path),
                max_seconds=settings.name_seconds if kind == "name" else settings.greeting_seconds,
                silence_seconds=settings.silence_seconds,
                stop_digits="#",
            )
        except Exception as e:  # a full or read-only disk: the caller is told, the call goes on
            self._log.error(
                "Call {id}: cannot record the {kind} of {tenant}/{box}: {e}",
                id=self.call.id,
                kind=kind,
                tenant=self.tenant,
                box=self.number,
                e=str(e),
            )
            await self.voice.say(["vm-nothing-recorded"])
            return
        self._log.info(
            "Call {id}: {kind} of {tenant}/{box} recorded ({duration:.1f} s, {reason})",
            id=self.call.id,
            kind=kind,
            tenant=self.tenant,
            box=self.number,
            duration=result.duration,
            reason=result.reason,
        )
        if result.path is None:
            await self.voice.say(["vm-nothing-recorded"])
        else:
            await self.voice.say(["vm-name-recorded" if kind == "name" else "vm-greeting-recorded"])

    async def change_pin(self) -> None:
        """A new PIN typed twice (4 to 12 digits, both the same) replaces the old one."""
        first = await self.voice.entry(["vm-enter-new-pin"], MAX_PIN_DIGITS + 1)
        if self.call.ended:
            return
        if not (MIN_PIN_DIGITS <= len(first) <= MAX_PIN_DIGITS and first.isdigit()):
            await self.voice.say(["vm-pin-invalid"])
            return
        second = await self.voice.entry(["vm-reenter-pin"], MAX_PIN_DIGITS + 1)
        if self.call.ended:
            return
        if not hmac.compare_digest(first.encode(), second.encode()):
            await self.voice.say(["vm-pins-do-not-match"])
            return
        await self.mailboxes.set_pin(self.tenant, self.number, first)
        self._log.info(
            "Call {id}: PIN of {tenant}/{box} changed", id=self.call.id, tenant=self.tenant, box=self.number
        )
        await self.voice.say(["vm-pin-changed"])
