"""What offline tools (`pbx registrations`, `pbx voicemail list`) read from the store the PBX is configured
with: the SQLite file in the data directory, or the PostgreSQL database at `[store] url`; synchronously, safe
while the PBX runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pbx.store import sqlite, sqlite_features, sqlite_voicemail, trunk_lease, trunk_state
from pbx.store.records import Binding, Cdr, VoicemailMessage

T = TypeVar("T")

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


def features(url: str, data_dir: Path) -> list[Any]:
    """What extensions' owners set by phone (DND, forwarding)."""
    if url:
        from pbx.store.postgres import read_postgres

        return read_postgres(url, sqlite_features.select_features)
    return sqlite.read_features(data_dir / SQLITE_FILE)


def trunk_statuses(url: str, data_dir: Path) -> list[Any]:
    """Each PBX node's view of each trunk (`pbx.store.trunk_state.TrunkStatus`)."""
    if url:
        from pbx.store.postgres import read_postgres

        return read_postgres(url, trunk_state.select_trunk_statuses)
    return sqlite.read_trunk_statuses(data_dir / SQLITE_FILE)


def trunk_leases(url: str, data_dir: Path) -> list[Any]:
    """Which node holds each trunk's registration (`pbx.store.trunk_lease.TrunkLease`)."""
    if url:
        from pbx.store.postgres import read_postgres

        return read_postgres(url, trunk_lease.select_trunk_leases)
    return sqlite.read_trunk_leases(data_dir / SQLITE_FILE)


def write(url: str, data_dir: Path, work: Callable[[Any], T]) -> T:
    """`work(connection)` in one transaction on the store, its schema created or migrated first (the
    `pbx user` commands, with the PBX down or running)."""
    if url:
        from pbx.store.postgres import write_postgres

        return write_postgres(url, work)
    from pbx.store.sqlite_admin import offline

    data_dir.mkdir(parents=True, exist_ok=True)
    return offline(data_dir / SQLITE_FILE, work)
