"""The PBX's voicemail boxes: `IMailboxes` over an `IVoicemailStore` and WAV files in the data directory.

A message is saved whole or not at all (issue 11, "storage that loses nothing"):

1. `prepare` checks the box (`MailboxFull`) and the disk (`StorageUnavailable`: unwritable, or less free space
   than the longest message needs), picks a fresh id and writes the message's sidecar (who called) beside
   where the audio will be: `voicemail/TENANT/MAILBOX/ID.wav`.
2. The recorder writes the WAV atomically (temp file + rename).
3. `commit` adds the index row; once the row is durable the message exists: counts change, the box's
   watchers (MWI) and listeners (e-mail) are told, the sidecar goes.

At start-up `recover` (before the PBX says it is ready; `prepare` refuses with `StorageUnavailable` until it
is done, so that no new recording is taken for a leftover) makes the files and the index agree: temp files
(recordings cut short) are deleted; a WAV with a sidecar but no row (`kill -9` between the rename and the
commit: the caller was done) is adopted as a new message; a WAV with neither is removed; a row whose WAV is
missing is dropped with a log line. Then the counts are in memory, and MWI reads them synchronously.

PINs: the config's PIN (or its `pin_hash`) opens a box until the owner sets another by phone (`set_pin`:
stored as a salted PBKDF2 hash, `files.hash_pin`); all are compared in constant time and never logged.
Hashing runs through `in_thread` (the reactor's thread pool in the PBX) so that it never stalls calls.

This module knows nothing of SIP, of calls or of the config: the composition root (`pbx.service.voicemail`)
hands it the boxes' settings as plain objects.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbx.apps.voicemail import files
from pbx.apps.voicemail.boxes import GREETINGS, Mailbox, MailboxFull, StorageUnavailable
from pbx.apps.voicemail.recovery import recover
from pbx.store.interfaces import IVoicemailStore
from pbx.store.records import VoicemailMessage

BYTES_PER_SECOND = 16_000
"""A recording's size: 8 kHz, 16-bit mono PCM."""


class MailboxSettings(Mailbox, Protocol):
    """What `Mailboxes` reads of a box's settings beyond `boxes.Mailbox` (`pbx.config.Mailbox` has it all)."""

    @property
    def pin(self) -> str: ...
    @property
    def pin_hash(self) -> str: ...
    @property
    def email_attach(self) -> bool: ...
    @property
    def delete_after_email(self) -> bool: ...
    @property
    def unsolicited_notify(self) -> bool: ...


NewMessageListener = Callable[[VoicemailMessage, MailboxSettings], object]
CountsWatcher = Callable[[str, str], object]
InThread = Callable[..., Deferred[Any]]


class Mailboxes:
    """The PBX's voicemail boxes (`boxes.IMailboxes`), with counts in memory for MWI.

    Hooks (append to the lists; each call is guarded: a hook that raises is logged, the others still run):

    - `listeners`: `listener(message, mailbox)` once a new message is durable (`commit`, or adopted by
      `recover`); `mailbox` is the box's settings (`email`, `email_attach`, `delete_after_email` ...).
      Voicemail to e-mail subscribes here, then calls `mark_emailed(message)` (and `delete(message)` for
      `delete_after_email`); `unsent()` lists what is still to mail after a restart.
    - `watchers`: `watcher(tenant, mailbox)` whenever a box's counts change (new, heard, deleted, recovered);
      message-waiting indication subscribes here (`pbx.service.voicemail`).

    Args:
        store: The index (`IVoicemailStore`: SQLite in the PBX, memory in tests).
        data_dir: The PBX's data directory; the files live under `data_dir/voicemail/`.
        boxes: The boxes' settings by tenant name, then box number.
        clock: Wall-clock time (message ids, received times of adopted messages).
        min_message_seconds: An orphan WAV shorter than this is not adopted (the deposit discards those).
        in_thread: `in_thread(fn, *args) -> Deferred` runs PIN hashing off the reactor thread (default: now).
        spare_bytes: Free space kept beyond the longest message a box allows before `prepare` refuses.
    """

    _log = Logger()

    def __init__(
        self,
        store: IVoicemailStore,
        data_dir: Path,
        boxes: Mapping[str, Mapping[str, MailboxSettings]],
        *,
        clock: IReactorTime,
        min_message_seconds: float = 1.0,
        in_thread: InThread = maybeDeferred,
        spare_bytes: int = 1 << 20,
    ) -> None:
        self._store = store
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "voicemail"
        self._boxes = {tenant: dict(numbers) for tenant, numbers in boxes.items()}
        self._clock = clock
        self._min_seconds = min_message_seconds
        self._in_thread = in_thread
        self._spare = spare_bytes
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._recovered = False
        self._phone_boxes: dict[tuple[str, str], list[str]] = {}
        for tenant, numbers in self._boxes.items():
            for number, box in numbers.items():
                for phone in box.phones:
                    self._phone_boxes.setdefault((tenant, phone), []).append(number)
        self.listeners: list[NewMessageListener] = []
        self.watchers: list[CountsWatcher] = []
        # Told of this process's own count changes only (not of `reload_counts`): the PostgreSQL store
        # announces them to the other PBX nodes, which reload that box (docs/scaling.md).
        self.announcers: list[CountsWatcher] = []
        # The store is shared with other PBX nodes: start-up recovery leaves their work alone (recovery.py).
        self.shared = False

    @property
    def store(self) -> IVoicemailStore:
        """The index the boxes are kept in."""
        return self._store

    # Boxes and counts

    def mailbox(self, tenant: str, number: str) -> MailboxSettings | None:
        """See `IMailboxes.mailbox`."""
        return self._boxes.get(tenant, {}).get(number)

    def mailboxes(self) -> Iterable[tuple[str, MailboxSettings]]:
        """Every configured box as (tenant, settings)."""
        return ((tenant, box) for tenant, numbers in self._boxes.items() for box in numbers.values())

    def counts(self, tenant: str, number: str) -> tuple[int, int]:
        """See `IMailboxes.counts`."""
        counts = self._counts.get((tenant, number))
        return (counts[0], counts[1]) if counts else (0, 0)

    def boxes_of_phone(self, tenant: str, extension: str) -> tuple[str, ...]:
        """The boxes whose `phones` include `extension` (its own first, then in config order)."""
        numbers = self._phone_boxes.get((tenant, extension), [])
        return tuple(sorted(numbers, key=lambda n: n != extension))

    def phone_counts(self, tenant: str, extension: str) -> tuple[int, int]:
        """(new, old) summed over the boxes a phone shows (`boxes_of_phone`): what its lamp says."""
        new = old = 0
        for number in self._phone_boxes.get((tenant, extension), ()):
            n, o = self.counts(tenant, number)
            new, old = new + n, old + o
        return (new, old)

    def _count(self, tenant: str, number: str, new: int, old: int) -> None:
        counts = self._counts.setdefault((tenant, number), [0, 0])
        counts[0] = max(0, counts[0] + new)
        counts[1] = max(0, counts[1] + old)
        self._tell(self.watchers, tenant, number)
        self._tell(self.announcers, tenant, number)

    def reload_counts(self, tenant: str | None, number: str | None) -> Deferred[None]:
        """Another PBX node changed box `number` of `tenant` in the shared store: count its messages again
        and tell the watchers if the counts moved (MWI). (None, None): changes may have been missed, reload
        every box."""
        if tenant is None or number is None:
            return self._store.all_messages().addCallback(self._reloaded_all)
        if self.mailbox(tenant, number) is None:
            return succeed(None)
        return self._store.messages(tenant, number).addCallback(self._reloaded, tenant, number)

    def _reloaded(self, rows: list[VoicemailMessage], tenant: str, number: str) -> None:
        new = sum(1 for m in rows if m.folder == "new")
        counts = [new, len(rows) - new]
        if self._counts.get((tenant, number), [0, 0]) != counts:
            self._counts[(tenant, number)] = counts
            self._tell(self.watchers, tenant, number)

    def _reloaded_all(self, rows: list[VoicemailMessage]) -> None:
        by_box: dict[tuple[str, str], list[VoicemailMessage]] = {key: [] for key in self._counts}
        for message in rows:
            by_box.setdefault((message.tenant, message.mailbox), []).append(message)
        for (tenant, number), messages in by_box.items():
            if self.mailbox(tenant, number) is not None:
                self._reloaded(messages, tenant, number)

    def _tell(self, hooks: list[Any], *args: Any) -> None:
        for hook in list(hooks):
            try:
                hook(*args)
            except Exception:
                self._log.failure("A voicemail hook failed", Failure())

    # Files

    def box_dir(self, tenant: str, number: str) -> Path:
        """The directory of a box's messages."""
        return self.root / tenant / number

    def audio_path(self, message: VoicemailMessage) -> Path:
        """See `IMailboxes.audio_path`."""
        return self.data_dir / message.audio

    def prepare(
        self, tenant: str, number: str, *, caller_number: str = "", caller_name: str = "", call_id: str = ""
    ) -> Path:
        """See `IMailboxes.prepare`. The caller's details, when given, go into the sidecar (what an adopted
        message keeps if the PBX dies before `commit`)."""
        box = self.mailbox(tenant, number)
        if box is None:
            raise KeyError(f"no mailbox {number} in tenant {tenant}")
        if not self._recovered:  # recovery would take the new files for leftovers
            raise StorageUnavailable("voicemail is starting: its files are being recovered")
        new, old = self.counts(tenant, number)
        if new + old >= box.max_messages:
            raise MailboxFull(f"{tenant}/{number} holds {new + old} messages (at most {box.max_messages})")
        directory = self.box_dir(tenant, number)
        needed = int(box.max_message_seconds * BYTES_PER_SECOND) + self._spare
        problem = files.writable_with_space(directory, needed)
        if problem is not None:
            self._log.warn("Voicemail storage unavailable: {problem}", problem=problem)
            raise StorageUnavailable(problem)
        now = self._clock.seconds()
        path = directory / f"{files.new_message_id(now)}{files.AUDIO}"
        try:
            files.write_sidecar(
                path, caller_number=caller_number, caller_name=caller_name, call_id=call_id, received_at=now
            )
        except OSError as e:
            files.remove(path.with_suffix(files.SIDECAR))
            self._log.warn(
                "Voicemail storage unavailable: {dir}: {why}", dir=str(directory), why=e.strerror or e
            )
            raise StorageUnavailable(f"{directory}: {e.strerror or e}") from None
        return path

    def discard(self, audio: Path) -> None:
        """See `IMailboxes.discard`."""
        files.remove(audio)
        files.remove(audio.with_suffix(files.SIDECAR))

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
        """See `IMailboxes.commit`. If the store fails, the recording is discarded and the Deferred fails."""
        box = self.mailbox(tenant, number)
        directory = self.box_dir(tenant, number)
        if box is None or audio.parent != directory or not files.is_message_id(audio.stem):
            return fail(ValueError(f"{audio} is not a recording prepared for {tenant}/{number}"))
        message = VoicemailMessage(
            tenant=tenant,
            mailbox=number,
            id=audio.stem,
            caller_number=caller_number,
            caller_name=caller_name,
            received_at=received_at,
            duration=duration,
            call_id=call_id,
            audio=audio.relative_to(self.data_dir).as_posix(),
        )

        def stored(_: None) -> VoicemailMessage:
            files.remove(audio.with_suffix(files.SIDECAR))
            self._arrived(message, box)
            return message

        def failed(failure: Failure) -> Failure:
            self._log.warn(
                "Voicemail: the message for {box} was not stored ({why}); its recording is discarded",
                box=f"{tenant}/{number}",
                why=failure.getErrorMessage(),
            )
            self.discard(audio)
            return failure

        return self._store.add_message(message).addCallbacks(stored, failed)

    def _arrived(self, message: VoicemailMessage, box: MailboxSettings) -> None:
        self._log.info(
            "Voicemail: new message {id} in {box} ({seconds:.1f} s)",
            id=message.id,
            box=f"{message.tenant}/{message.mailbox}",
            seconds=message.duration,
        )
        self._count(message.tenant, message.mailbox, 1, 0)
        self._tell(self.listeners, message, box)

    # Messages

    def messages(self, tenant: str, number: str) -> Deferred[list[VoicemailMessage]]:
        """See `IMailboxes.messages`."""

        def ordered(found: list[VoicemailMessage]) -> list[VoicemailMessage]:
            return [m for m in found if m.folder == "new"] + [m for m in found if m.folder != "new"]

        return self._store.messages(tenant, number).addCallback(ordered)

    def mark_old(self, message: VoicemailMessage) -> Deferred[VoicemailMessage]:
        """See `IMailboxes.mark_old`."""
        if message.folder == "old":
            return succeed(message)
        heard = replace(message, folder="old")

        def stored(_: None) -> VoicemailMessage:
            self._count(message.tenant, message.mailbox, -1, 1)
            return heard

        return self._store.update_message(heard).addCallback(stored)

    def mark_emailed(self, message: VoicemailMessage) -> Deferred[VoicemailMessage]:
        """Remember that a message was handed to the SMTP server (so a restart does not mail it again)."""
        mailed = replace(message, emailed=True)
        return self._store.update_message(mailed).addCallback(lambda _: mailed)

    def unsent(self) -> Deferred[list[tuple[VoicemailMessage, MailboxSettings]]]:
        """The messages of boxes with an e-mail address that were not mailed yet, with their box."""

        def pick(found: list[VoicemailMessage]) -> list[tuple[VoicemailMessage, MailboxSettings]]:
            result = []
            for message in found:
                box = self.mailbox(message.tenant, message.mailbox)
                if box is not None and box.email and not message.emailed:
                    result.append((message, box))
            return result

        return self._store.all_messages().addCallback(pick)

    def delete(self, message: VoicemailMessage) -> Deferred[None]:
        """See `IMailboxes.delete`."""

        def stored(_: None) -> None:
            files.remove(self.audio_path(message))
            if message.folder == "new":
                self._count(message.tenant, message.mailbox, -1, 0)
            else:
                self._count(message.tenant, message.mailbox, 0, -1)

        return self._store.delete_message(message.tenant, message.mailbox, message.id).addCallback(stored)

    # Greetings

    def greeting_path(self, tenant: str, number: str, kind: str) -> Path:
        """See `IMailboxes.greeting_path` (the greetings directory is created)."""
        if kind not in GREETINGS:
            raise ValueError(f"greeting must be one of {GREETINGS}, not {kind!r}")
        directory = self.box_dir(tenant, number) / files.GREETINGS_DIR
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageUnavailable(f"{directory}: {e.strerror or e}") from None
        return directory / f"{kind}{files.AUDIO}"

    def greeting(self, tenant: str, number: str, kind: str) -> Path | None:
        """See `IMailboxes.greeting`."""
        if kind not in GREETINGS:
            raise ValueError(f"greeting must be one of {GREETINGS}, not {kind!r}")
        path = self.box_dir(tenant, number) / files.GREETINGS_DIR / f"{kind}{files.AUDIO}"
        return path if path.is_file() else None

    # PINs

    def check_pin(self, tenant: str, number: str, pin: str) -> Deferred[bool]:
        """See `IMailboxes.check_pin`."""
        box = self.mailbox(tenant, number)
        if box is None:
            return succeed(False)

        def compare(stored: str | None) -> Any:
            stored = stored or box.pin_hash
            if not stored:
                return hmac.compare_digest(pin.encode(), box.pin.encode()) and bool(box.pin)
            return self._in_thread(files.pin_matches, pin, stored)

        return self._store.pin_hash(tenant, number).addCallback(compare)

    def set_pin(self, tenant: str, number: str, pin: str) -> Deferred[None]:
        """See `IMailboxes.set_pin`; fails with ValueError unless `pin` is 4 to 12 digits."""
        if self.mailbox(tenant, number) is None:
            return fail(KeyError(f"no mailbox {number} in tenant {tenant}"))
        if not files.PIN_PATTERN.fullmatch(pin):
            return fail(ValueError("a PIN must be 4 to 12 digits"))
        hashed = self._in_thread(files.hash_pin, pin)
        return hashed.addCallback(lambda stored: self._store.set_pin_hash(tenant, number, stored))

    # Start-up

    def recover(self) -> Deferred[None]:
        """Make the files and the index agree and load the counts (see the module docstring); run once at
        start-up, before calls are taken."""
        return self._store.all_messages().addCallback(self._recover)

    def _recover(self, rows: list[VoicemailMessage]) -> Deferred[None]:
        return recover(self, self._store, rows, self._min_seconds, self._clock.seconds())

    def loaded(self, counts: Mapping[tuple[str, str], tuple[int, int]]) -> None:
        """Take the counts `recover` found, and tell the watchers of every box that has messages."""
        self._counts = {key: [new, old] for key, (new, old) in counts.items()}
        self._recovered = True
        for tenant, number in counts:
            self._tell(self.watchers, tenant, number)

    def adopted(self, message: VoicemailMessage) -> None:
        """`recover` indexed an orphan WAV: tell the listeners as `commit` does (the counts come with
        `loaded`)."""
        box = self.mailbox(message.tenant, message.mailbox)
        if box is not None:
            self._tell(self.listeners, message, box)
