"""Trunk state in the store (issue 17 item 1): what each PBX node knows of each trunk, for the other nodes'
and the operator's eyes (`pbx trunks status`).

Every node registers and pings its trunks itself and keeps their live state in memory
(`pbx.trunks.state.TrunkStates`, what call routing reads: no I/O per call). On every change a node writes
its view of the trunk here, one row per (tenant, trunk, node): registered or not, the last answer's code and
reason, when the binding expires, whether OPTIONS pings are answered, when it changed. With a shared
PostgreSQL store any node (and the offline `pbx trunks status`) sees every node's rows.

- `TrunkStatus`: the record; `ITrunkStateStore`: the interface;
- `MIGRATION` and the SQL functions (SQLite dialect, translated for PostgreSQL by `pbx.store.postgres`);
- `SqliteTrunkStateStore` and `MemoryTrunkStateStore`: the mixins of the SQLite and memory stores.

This module knows SQL and plain values only: nothing of SIP, trunks' configuration or the reactor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import Interface

from pbx.store.interfaces import StoreClosedError


@dataclass(frozen=True, slots=True, kw_only=True)
class TrunkStatus:
    """One node's view of one trunk at one moment.

    Attributes:
        tenant: the tenant's name.
        trunk: the trunk's name.
        node: the PBX node that wrote it (host name and SIP port: `pbx.service.trunks.node_name`).
        state: one word: disabled, down, up, off, registering, registered, failed, unregistered.
        registration: the registration's state (`pbx.trunks.state.REGISTRATION_STATES`).
        code: the status code of the last REGISTER answer, or None.
        reason: its reason phrase, or why it was made up (timeout, transport error), or None.
        expires_at: wall-clock epoch seconds when the binding lapses unless refreshed, or None.
        reachable: the OPTIONS verdict: None (no pings or none finished), True, False.
        ping_code: the status of the last ping's answer, or None.
        contact: the Contact registered, or None.
        updated_at: wall-clock epoch seconds of this row.
    """

    tenant: str
    trunk: str
    node: str
    state: str
    registration: str = "off"
    code: int | None = None
    reason: str | None = None
    expires_at: float | None = None
    reachable: bool | None = None
    ping_code: int | None = None
    contact: str | None = None
    updated_at: float = 0.0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.tenant, self.trunk, self.node)


class ITrunkStateStore(Interface):
    """Each node's view of each trunk (`TrunkStatus`), by (tenant, trunk, node). Every method returns a
    Deferred that fires on the reactor thread; writes take effect in the order they were called."""

    def save_trunk_status(status: TrunkStatus) -> Deferred[None]:
        """Store a node's view of a trunk (replacing that node's earlier one)."""

    def trunk_statuses() -> Deferred[list[TrunkStatus]]:
        """Every row, sorted by (tenant, trunk, node)."""


MIGRATION: Final[tuple[str, ...]] = (
    """
    CREATE TABLE IF NOT EXISTS trunk_states (
        tenant TEXT NOT NULL,
        trunk TEXT NOT NULL,
        node TEXT NOT NULL,
        state TEXT NOT NULL,
        registration TEXT NOT NULL,
        code INTEGER,
        reason TEXT,
        expires_at REAL,
        reachable INTEGER,
        ping_code INTEGER,
        contact TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (tenant, trunk, node)
    ) WITHOUT ROWID
    """,
)
"""The schema migration of `pbx.store.sqlite` that adds the trunks' table (self-contained)."""

_COLUMNS = (
    "tenant, trunk, node, state, registration, code, reason, expires_at, reachable, ping_code, contact, "
    "updated_at"
)
_UPSERT = f"INSERT OR REPLACE INTO trunk_states ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ALL = f"SELECT {_COLUMNS} FROM trunk_states ORDER BY tenant, trunk, node"


def _row(s: TrunkStatus) -> tuple[object, ...]:
    reachable = None if s.reachable is None else int(s.reachable)
    return (
        s.tenant, s.trunk, s.node, s.state, s.registration, s.code, s.reason, s.expires_at, reachable,
        s.ping_code, s.contact, s.updated_at,
    )  # fmt: skip


def select_trunk_statuses(conn: Any) -> list[TrunkStatus]:
    """Every row, by tenant, trunk and node (a `sqlite3.Connection` or `pbx.store.postgres.PgConnection`)."""
    found = []
    for row in conn.execute(_ALL):
        (
            tenant,
            trunk,
            node,
            state,
            registration,
            code,
            reason,
            expires_at,
            reachable,
            ping_code,
            contact,
            at,
        ) = row
        found.append(
            TrunkStatus(
                tenant=tenant,
                trunk=trunk,
                node=node,
                state=state,
                registration=registration,
                code=code,
                reason=reason,
                expires_at=expires_at,
                reachable=None if reachable is None else bool(reachable),
                ping_code=ping_code,
                contact=contact,
                updated_at=at,
            )
        )
    return found


class SqliteTrunkStateStore:
    """`ITrunkStateStore` over the store's group commit (a mixin of `SqliteLocationStore`, which provides
    `_run`; the `implementer` declaration is there)."""

    _run: Callable[..., Deferred[Any]]

    def trunk_statuses(self) -> Deferred[list[TrunkStatus]]:
        """See `ITrunkStateStore.trunk_statuses`."""
        return self._run(select_trunk_statuses, weight=0)

    def save_trunk_status(self, status: TrunkStatus) -> Deferred[None]:
        """See `ITrunkStateStore.save_trunk_status`."""
        row = _row(status)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(_UPSERT, row)

        return self._run(write)


class MemoryTrunkStateStore:
    """`ITrunkStateStore` in a dict (a mixin of `MemoryLocationStore`, which provides `_closed`)."""

    _closed: bool

    def _trunk_rows(self) -> dict[tuple[str, str, str], TrunkStatus]:
        rows: dict[tuple[str, str, str], TrunkStatus] | None = self.__dict__.get("_trunk_status_rows")
        if rows is None:
            rows = self.__dict__["_trunk_status_rows"] = {}
        return rows

    def trunk_statuses(self) -> Deferred[list[TrunkStatus]]:
        """See `ITrunkStateStore.trunk_statuses`."""
        if self._closed:
            return fail(StoreClosedError())
        rows = self._trunk_rows()
        return succeed([rows[key] for key in sorted(rows)])

    def save_trunk_status(self, status: TrunkStatus) -> Deferred[None]:
        """See `ITrunkStateStore.save_trunk_status`."""
        if self._closed:
            return fail(StoreClosedError())
        self._trunk_rows()[status.key] = status
        return succeed(None)
