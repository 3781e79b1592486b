"""What offline tools (`pbx registrations`, `pbx voicemail list`) read from the store the PBX is configured
with: the SQLite file in the data directory, or the PostgreSQL database at `[store] url`; synchronously, safe
while the PBX runs."""

from __future__ import annotations

from pathlib import Path

from pbx.store import sqlite, sqlite_voicemail
from pbx.store.records import Binding, Cdr, VoicemailMessage

SQLITE_FILE = "pbx.sqlite3"


def bindings(url: str, data_dir: Path, now: float) -> list[Binding]:
    """Every unexpired binding."""
    if url:
        from pbx.store.postgres import read_postgres

        return read_postgres(url, lambda conn: sqlite._load(conn, now))
    return sqlite.read_bindings(data_dir / SQLITE_FILE, now)


def cdrs(url: str, data_dir: Path, limit: int = 50) -> list[Cdr]:
    """The most recent CDRs, newest first."""
    if url:
        from pbx.store.postgres import read_postgres

        return read_postgres(url, lambda conn: sqlite._cdrs(conn, limit))
    return sqlite.read_cdrs(data_dir / SQLITE_FILE, limit)


def messages(
    url: str, data_dir: Path, tenant: str | None = None, mailbox: str | None = None
) -> list[VoicemailMessage]:
    """The voicemail messages of one box (or of every box), oldest first."""
    if url:
        from pbx.store.postgres import read_postgres

        return read_postgres(url, lambda conn: sqlite_voicemail.select_messages(conn, tenant, mailbox))
    return sqlite.read_messages(data_dir / SQLITE_FILE, tenant, mailbox)
