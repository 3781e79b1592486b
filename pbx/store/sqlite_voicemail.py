"""The voicemail index in the PBX's SQLite database: `IVoicemailStore` for `SqliteLocationStore`.

Two tables, created by the store's schema migration 2 -> 3 (`MIGRATION`): `voicemail_messages` (one row per
message; its audio is a WAV file the row names, written durably before the row) and `voicemail_pins` (the hash
of a PIN an owner set by phone; the PIN itself is never stored). Every write runs through the store's group
commit (`_run`), so a message's Deferred fires once its row is durable; the offline reader
(`pbx.store.sqlite.read_messages`) opens the file read-only, safe while the PBX runs.

This module knows SQL only: nothing of WAV files, mailboxes' settings, MWI or the reactor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Final

from twisted.internet.defer import Deferred

from pbx.store.records import VoicemailMessage

MIGRATION: Final[tuple[str, ...]] = (
    """
    CREATE TABLE IF NOT EXISTS voicemail_messages (
        tenant TEXT NOT NULL,
        mailbox TEXT NOT NULL,
        id TEXT NOT NULL,
        folder TEXT NOT NULL,
        caller_number TEXT NOT NULL,
        caller_name TEXT NOT NULL,
        received_at REAL NOT NULL,
        duration REAL NOT NULL,
        call_id TEXT NOT NULL,
        audio TEXT NOT NULL,
        emailed INTEGER NOT NULL,
        PRIMARY KEY (tenant, mailbox, id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS voicemail_pins (
        tenant TEXT NOT NULL,
        mailbox TEXT NOT NULL,
        pin_hash TEXT NOT NULL,
        PRIMARY KEY (tenant, mailbox)
    ) WITHOUT ROWID
    """,
)
"""Schema migration 2 -> 3 of `pbx.store.sqlite`: the voicemail index and the PINs owners set."""

_COLUMNS = (
    "tenant, mailbox, id, folder, caller_number, caller_name, received_at, duration, call_id, audio, emailed"
)
_NAMES = tuple(name.strip() for name in _COLUMNS.split(","))
_UPSERT = f"INSERT OR REPLACE INTO voicemail_messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPDATE = (
    "UPDATE voicemail_messages SET folder = ?, caller_number = ?, caller_name = ?, received_at = ?, "
    "duration = ?, call_id = ?, audio = ?, emailed = ? WHERE tenant = ? AND mailbox = ? AND id = ?"
)
_DELETE = "DELETE FROM voicemail_messages WHERE tenant = ? AND mailbox = ? AND id = ?"
_BOX = f"SELECT {_COLUMNS} FROM voicemail_messages WHERE tenant = ? AND mailbox = ? ORDER BY received_at, id"
_ALL = f"SELECT {_COLUMNS} FROM voicemail_messages ORDER BY tenant, mailbox, received_at, id"
_PIN = "SELECT pin_hash FROM voicemail_pins WHERE tenant = ? AND mailbox = ?"
_SET_PIN = "INSERT OR REPLACE INTO voicemail_pins (tenant, mailbox, pin_hash) VALUES (?, ?, ?)"


def _row(m: VoicemailMessage) -> tuple[object, ...]:
    return (
        m.tenant, m.mailbox, m.id, m.folder, m.caller_number, m.caller_name, m.received_at, m.duration,
        m.call_id, m.audio, int(m.emailed),
    )  # fmt: skip


def _message(row: tuple[Any, ...]) -> VoicemailMessage:
    values = dict(zip(_NAMES, row, strict=True))
    values["emailed"] = bool(values["emailed"])
    return VoicemailMessage(**values)


def _select(conn: sqlite3.Connection, query: str, args: tuple[object, ...] = ()) -> list[VoicemailMessage]:
    return [_message(row) for row in conn.execute(query, args)]


class SqliteVoicemailStore:
    """`IVoicemailStore` over the store's group commit (a mixin of `SqliteLocationStore`, which provides
    `_run`; the `implementer` declaration is there)."""

    _run: Callable[..., Deferred[Any]]

    def add_message(self, message: VoicemailMessage) -> Deferred[None]:
        """See `IVoicemailStore.add_message`."""
        row = _row(message)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(_UPSERT, row)

        return self._run(insert)

    def messages(self, tenant: str, mailbox: str) -> Deferred[list[VoicemailMessage]]:
        """See `IVoicemailStore.messages`."""
        return self._run(lambda conn: _select(conn, _BOX, (tenant, mailbox)), weight=0)

    def all_messages(self) -> Deferred[list[VoicemailMessage]]:
        """See `IVoicemailStore.all_messages`."""
        return self._run(lambda conn: _select(conn, _ALL), weight=0)

    def update_message(self, message: VoicemailMessage) -> Deferred[None]:
        """See `IVoicemailStore.update_message`."""
        row = _row(message)
        args = (*row[3:], *row[:3])

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(_UPDATE, args)

        return self._run(update)

    def delete_message(self, tenant: str, mailbox: str, id: str) -> Deferred[None]:
        """See `IVoicemailStore.delete_message`."""

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute(_DELETE, (tenant, mailbox, id))

        return self._run(delete)

    def pin_hash(self, tenant: str, mailbox: str) -> Deferred[str | None]:
        """See `IVoicemailStore.pin_hash`."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(_PIN, (tenant, mailbox)).fetchone()
            return None if row is None else str(row[0])

        return self._run(read, weight=0)

    def set_pin_hash(self, tenant: str, mailbox: str, pin_hash: str) -> Deferred[None]:
        """See `IVoicemailStore.set_pin_hash`."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(_SET_PIN, (tenant, mailbox, pin_hash))

        return self._run(write)


def select_messages(
    conn: sqlite3.Connection, tenant: str | None = None, mailbox: str | None = None
) -> list[VoicemailMessage]:
    """The messages of one box, oldest first, or (without a box) of every box by tenant and box."""
    if tenant is None or mailbox is None:
        return _select(conn, _ALL)
    return _select(conn, _BOX, (tenant, mailbox))
