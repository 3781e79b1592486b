"""Admin users, API tokens and console-managed extensions in the PBX's SQLite database: `IAdminStore` for
`SqliteLocationStore`, plus synchronous helpers for `pbx user ...` while the PBX is down (or up: WAL lets a
second connection write between the PBX's commits).

Three tables, created by one self-contained schema migration (`MIGRATION`, appended to
`pbx.store.sqlite._MIGRATIONS`): `admin_users`, `admin_tokens`, `admin_extensions`.

This module knows SQL only: nothing of password hashing, roles or the reactor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from twisted.internet.defer import Deferred

from pbx.store.admin import AdminUser, ApiToken, StoredExtension

T = TypeVar("T")

MIGRATION: Final[tuple[str, ...]] = (
    """
    CREATE TABLE IF NOT EXISTS admin_users (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL,
        tenant TEXT NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS admin_tokens (
        token_hash TEXT PRIMARY KEY,
        "user" TEXT NOT NULL,  -- quoted: a reserved word in PostgreSQL
        label TEXT NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS admin_extensions (
        tenant TEXT NOT NULL,
        number TEXT NOT NULL,
        name TEXT NOT NULL,
        ha1_md5 TEXT NOT NULL,
        ha1_sha256 TEXT NOT NULL,
        forward_all TEXT NOT NULL,
        forward_busy TEXT NOT NULL,
        forward_noanswer TEXT NOT NULL,
        ring_timeout REAL NOT NULL,
        may_call_out INTEGER NOT NULL,
        srtp TEXT NOT NULL,
        allow_srtp_over_plain INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        realm TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (tenant, number)
    ) WITHOUT ROWID
    """,
)
"""The console's schema migration of `pbx.store.sqlite` (self-contained: it creates only its own tables)."""

_USER_COLUMNS = "name, password_hash, role, tenant, created_at"
_TOKEN_COLUMNS = 'token_hash, "user", label, created_at'
_EXT_COLUMNS = (
    "tenant, number, name, ha1_md5, ha1_sha256, forward_all, forward_busy, forward_noanswer, ring_timeout, "
    "may_call_out, srtp, allow_srtp_over_plain, deleted, realm, updated_at"
)
_EXT_NAMES = tuple(name.strip() for name in _EXT_COLUMNS.split(","))
_BOOLS = ("may_call_out", "allow_srtp_over_plain", "deleted")


def _user(row: tuple[Any, ...]) -> AdminUser:
    return AdminUser(name=row[0], password_hash=row[1], role=row[2], tenant=row[3], created_at=row[4])


def _extension(row: tuple[Any, ...]) -> StoredExtension:
    values = dict(zip(_EXT_NAMES, row, strict=True))
    for name in _BOOLS:
        values[name] = bool(values[name])
    return StoredExtension(**values)


def select_users(conn: sqlite3.Connection) -> list[AdminUser]:
    return [_user(row) for row in conn.execute(f"SELECT {_USER_COLUMNS} FROM admin_users ORDER BY name")]


def select_user(conn: sqlite3.Connection, name: str) -> AdminUser | None:
    row = conn.execute(f"SELECT {_USER_COLUMNS} FROM admin_users WHERE name = ?", (name,)).fetchone()
    return None if row is None else _user(row)


def upsert_user(conn: sqlite3.Connection, user: AdminUser) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO admin_users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
        (user.name, user.password_hash, user.role, user.tenant, user.created_at),
    )


def remove_user(conn: sqlite3.Connection, name: str) -> bool:
    conn.execute('DELETE FROM admin_tokens WHERE "user" = ?', (name,))
    return conn.execute("DELETE FROM admin_users WHERE name = ?", (name,)).rowcount > 0


def insert_token(conn: sqlite3.Connection, token: ApiToken) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO admin_tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?)",
        (token.token_hash, token.user, token.label, token.created_at),
    )


def select_token(conn: sqlite3.Connection, token_hash: str) -> ApiToken | None:
    row = conn.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens WHERE token_hash = ?", (token_hash,)
    ).fetchone()
    return None if row is None else ApiToken(token_hash=row[0], user=row[1], label=row[2], created_at=row[3])


def select_extensions(conn: sqlite3.Connection) -> list[StoredExtension]:
    query = f"SELECT {_EXT_COLUMNS} FROM admin_extensions ORDER BY tenant, number"
    return [_extension(row) for row in conn.execute(query)]


def upsert_extension(conn: sqlite3.Connection, e: StoredExtension) -> None:
    row = tuple(int(v) if n in _BOOLS else v for n, v in ((n, getattr(e, n)) for n in _EXT_NAMES))
    marks = ", ".join("?" * len(_EXT_NAMES))
    conn.execute(f"INSERT OR REPLACE INTO admin_extensions ({_EXT_COLUMNS}) VALUES ({marks})", row)


class SqliteAdminStore:
    """`IAdminStore` over the store's group commit (a mixin of `SqliteLocationStore`, which provides `_run`;
    the `implementer` declaration is there)."""

    _run: Callable[..., Deferred[Any]]

    def admin_users(self) -> Deferred[list[AdminUser]]:
        """See `IAdminStore.admin_users`."""
        return self._run(select_users, weight=0)

    def admin_user(self, name: str) -> Deferred[AdminUser | None]:
        """See `IAdminStore.admin_user`."""
        return self._run(lambda conn: select_user(conn, name), weight=0)

    def put_admin_user(self, user: AdminUser) -> Deferred[None]:
        """See `IAdminStore.put_admin_user`."""
        return self._run(lambda conn: upsert_user(conn, user))

    def delete_admin_user(self, name: str) -> Deferred[bool]:
        """See `IAdminStore.delete_admin_user`."""
        return self._run(lambda conn: remove_user(conn, name))

    def api_token(self, token_hash: str) -> Deferred[ApiToken | None]:
        """See `IAdminStore.api_token`."""
        return self._run(lambda conn: select_token(conn, token_hash), weight=0)

    def put_api_token(self, token: ApiToken) -> Deferred[None]:
        """See `IAdminStore.put_api_token`."""
        return self._run(lambda conn: insert_token(conn, token))

    def stored_extensions(self) -> Deferred[list[StoredExtension]]:
        """See `IAdminStore.stored_extensions`."""
        return self._run(select_extensions, weight=0)

    def put_extension(self, extension: StoredExtension) -> Deferred[None]:
        """See `IAdminStore.put_extension`."""
        return self._run(lambda conn: upsert_extension(conn, extension))

    def delete_stored_extension(self, tenant: str, number: str) -> Deferred[None]:
        """See `IAdminStore.delete_stored_extension`."""

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM admin_extensions WHERE tenant = ? AND number = ?", (tenant, number))

        return self._run(delete)


def offline(path: Path, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work(connection)` in one transaction on the database file, creating it (and its schema) if need be:
    the `pbx user` commands, which must work with the PBX down. Safe while the PBX runs (WAL, busy
    timeout)."""
    from pbx.store.sqlite import open_offline  # the schema lives there; it imports this module

    conn = open_offline(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result
    finally:
        conn.close()
