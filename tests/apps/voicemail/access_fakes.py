"""Fakes for mailbox access: a call that knows its caller and source, an in-memory `IMailboxes`, a guard."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from twisted.internet.defer import Deferred, succeed

from pbx.store.records import VoicemailMessage
from tests.apps.fakes import FakeCall


@dataclass(frozen=True)
class Box:
    number: str
    name: str = ""
    phones: tuple[str, ...] = ()
    email: str = ""
    max_messages: int = 100
    max_message_seconds: float = 180.0


@dataclass(frozen=True)
class Caller:
    extension: str


class AccessCall(FakeCall):
    """A `FakeCall` that authenticated as `extension` from `source`, and can be hung up or rejected."""

    def __init__(self, extension: str = "1002", source: str = "192.0.2.7") -> None:
        super().__init__()
        self.caller = Caller(extension)
        self.source = source
        self.hung_up: list[str] = []
        self.rejected: list[tuple[int, str | None]] = []

    def hangup(self, by: str) -> None:
        self.hung_up.append(by)
        self.end()

    def reject(self, status: int, reason: str | None = None) -> None:
        self.rejected.append((status, reason))
        self.end()


class FakeMailboxes:
    """An `IMailboxes` in memory: boxes with PINs, messages, what was marked old, deleted, and set."""

    def __init__(self, root: Path, pins: dict[str, str], tenant: str = "default") -> None:
        self.root = root
        self.tenant = tenant
        self.boxes = {number: Box(number) for number in pins}
        self.pins = dict(pins)
        self.store: dict[str, list[VoicemailMessage]] = {number: [] for number in pins}
        self.checked: list[tuple[str, str]] = []  # (box, pin) asked of check_pin
        self.deleted: list[str] = []
        self.marked: list[str] = []

    def add(
        self, box: str, msg_id: str, folder: str = "new", caller: str = "5551234", at: float = 0.0
    ) -> None:
        self.store[box].append(
            VoicemailMessage(
                tenant=self.tenant,
                mailbox=box,
                id=msg_id,
                folder=folder,
                caller_number=caller,
                received_at=at,
                duration=3.0,
                audio=f"voicemail/{self.tenant}/{box}/{msg_id}.wav",
            )
        )

    def folder(self, box: str, msg_id: str) -> str | None:
        return next((m.folder for m in self.store[box] if m.id == msg_id), None)

    # IMailboxes

    def mailbox(self, tenant: str, number: str) -> Box | None:
        return self.boxes.get(number) if tenant == self.tenant else None

    def counts(self, tenant: str, number: str) -> tuple[int, int]:
        messages = self.store.get(number, [])
        new = sum(1 for m in messages if m.folder == "new")
        return new, len(messages) - new

    def prepare(
        self, tenant: str, number: str, *, caller_number: str = "", caller_name: str = "", call_id: str = ""
    ) -> Path:
        raise NotImplementedError

    def commit(self, tenant: str, number: str, audio: Path, **_: object) -> Deferred[VoicemailMessage]:
        raise NotImplementedError

    def discard(self, audio: Path) -> None:
        raise NotImplementedError

    def messages(self, tenant: str, number: str) -> Deferred[list[VoicemailMessage]]:
        messages = self.store.get(number, [])
        return succeed(
            [m for m in messages if m.folder == "new"] + [m for m in messages if m.folder == "old"]
        )

    def audio_path(self, message: VoicemailMessage) -> Path:
        return self.root / message.audio

    def mark_old(self, message: VoicemailMessage) -> Deferred[VoicemailMessage]:
        self.marked.append(message.id)
        old = replace(message, folder="old")
        box = self.store[message.mailbox]
        box[:] = [old if m.id == message.id else m for m in box]
        return succeed(old)

    def delete(self, message: VoicemailMessage) -> Deferred[None]:
        self.deleted.append(message.id)
        box = self.store[message.mailbox]
        box[:] = [m for m in box if m.id != message.id]
        return succeed(None)

    def greeting(self, tenant: str, number: str, kind: str) -> Path | None:
        path = self.greeting_path(tenant, number, kind)
        return path if path.exists() else None

    def greeting_path(self, tenant: str, number: str, kind: str) -> Path:
        return self.root / "voicemail" / tenant / number / f"greeting-{kind}.wav"

    def check_pin(self, tenant: str, number: str, pin: str) -> Deferred[bool]:
        self.checked.append((number, pin))
        return succeed(tenant == self.tenant and self.pins.get(number) == pin)

    def set_pin(self, tenant: str, number: str, pin: str) -> Deferred[None]:
        self.pins[number] = pin
        return succeed(None)


class FakeGuard:
    """Blocks a source after `max_failures` failures."""

    def __init__(self, max_failures: int = 100, blocked: tuple[str, ...] = ()) -> None:
        self.max_failures = max_failures
        self.failures: list[tuple[str, str]] = []
        self.blocked = set(blocked)

    def is_blocked(self, source: str) -> bool:
        return source in self.blocked

    def failure(self, source: str, account: str) -> bool:
        self.failures.append((source, account))
        if sum(1 for s, _ in self.failures if s == source) >= self.max_failures:
            self.blocked.add(source)
        return source in self.blocked
