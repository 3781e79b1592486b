"""What the voicemail applications need of the mailboxes (`IMailboxes`), whoever keeps them.

The deposit application (`voicemail MAILBOX`) and mailbox access (`*97`/`*98`) use only this protocol, so they
are tested with a fake; `pbx.apps.voicemail.mailboxes.Mailboxes` implements it over an `IVoicemailStore`
and WAV files under `DATA_DIR/voicemail/TENANT/MAILBOX/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from twisted.internet.defer import Deferred

from pbx.store.records import VoicemailMessage

GREETINGS: tuple[str, ...] = ("unavailable", "busy", "name")
"""The recordings an owner can make: the greeting for unanswered/unregistered calls, the one for busy calls,
and the spoken name (used in the default greeting)."""


class Mailbox(Protocol):
    """A box's settings as the applications read them (`pbx.config.Mailbox` has these attributes; the
    applications never import the config)."""

    @property
    def number(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def phones(self) -> tuple[str, ...]: ...
    @property
    def email(self) -> str: ...
    @property
    def max_messages(self) -> int: ...
    @property
    def max_message_seconds(self) -> float: ...


class MailboxFull(Exception):
    """The mailbox holds `max_messages` messages: nothing can be recorded."""


class StorageUnavailable(Exception):
    """The voicemail directory cannot be written (full or read-only disk): nothing can be recorded now."""


class IMailboxes(Protocol):
    """The PBX's voicemail boxes.

    Counts are kept in memory (MWI reads them synchronously); every change tells the message-waiting
    indication of the box's phones.
    """

    def mailbox(self, tenant: str, number: str) -> Mailbox | None:
        """The configured box, or None when the tenant has no such box."""

    def counts(self, tenant: str, number: str) -> tuple[int, int]:
        """(new, old) message counts of a box; (0, 0) for an unknown box."""

    def prepare(
        self, tenant: str, number: str, *, caller_number: str = "", caller_name: str = "", call_id: str = ""
    ) -> Path:
        """Where a new message's audio is to be recorded (a fresh path inside the box's directory; the
        recorder writes it atomically). Raises `MailboxFull` or `StorageUnavailable`. The caller's details,
        when given, are kept beside it until `commit` or `discard` (what a message recovered after a crash
        between the recording and its commit keeps)."""

    def commit(
        self,
        tenant: str,
        number: str,
        audio: Path,
        *,
        caller_number: str,
        caller_name: str,
        received_at: float,
        duration: float,
        call_id: str,
    ) -> Deferred[VoicemailMessage]:
        """Index a recorded message (whose WAV at `audio`, from `prepare`, is already durable); fires once the
        entry is durable, then tells MWI and queues the e-mail. A message shorter than the configured minimum
        is not the caller's concern: the deposit application discards it before calling this."""

    def discard(self, audio: Path) -> None:
        """Remove a recording that will not become a message (too short, the caller went away early)."""

    def messages(self, tenant: str, number: str) -> Deferred[list[VoicemailMessage]]:
        """The box's messages: new ones first, each folder oldest first."""

    def audio_path(self, message: VoicemailMessage) -> Path:
        """The absolute path of a message's WAV."""

    def mark_old(self, message: VoicemailMessage) -> Deferred[VoicemailMessage]:
        """Move a heard message to the old folder (a no-op for an old one); tells MWI."""

    def delete(self, message: VoicemailMessage) -> Deferred[None]:
        """Remove a message (entry, then audio); tells MWI."""

    def greeting(self, tenant: str, number: str, kind: str) -> Path | None:
        """The owner's recorded greeting of `kind` (one of `GREETINGS`), or None when none was recorded."""

    def greeting_path(self, tenant: str, number: str, kind: str) -> Path:
        """Where a new greeting of `kind` is recorded (the recorder writes it atomically, replacing the
        old one)."""

    def check_pin(self, tenant: str, number: str, pin: str) -> Deferred[bool]:
        """Whether `pin` opens the box (the PIN the owner set by phone, else the config's); constant time."""

    def set_pin(self, tenant: str, number: str, pin: str) -> Deferred[None]:
        """Store a new PIN (hashed; never logged)."""
