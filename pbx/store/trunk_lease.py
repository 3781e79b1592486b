"""Who registers a trunk (issue 17): one lease per trunk in the shared store, so that one PBX node holds the
carrier's registration and the others do not add bindings of their own.

A lease is a row (tenant, trunk) -> (node, expires_at). A node takes it with one conditional statement:
insert the row, or on conflict overwrite it only when it is the node's own or has expired
(`INSERT ... ON CONFLICT DO UPDATE ... WHERE`), then reads the row back in the same transaction. In
PostgreSQL the conflicting row is locked and the condition evaluated on its latest committed version, so two
nodes racing for an expired lease cannot both win; SQLite has one writer at a time. The holder renews the
lease well before `expires_at`; a node that dies stops renewing and another takes the lease once it has
expired; a node that stops or drains releases it (deletes its own row) so another takes it at its next try.
Expiry times are the nodes' wall clocks (epoch seconds): they must agree to well within the lease's length.

- `TrunkLease`: the record; `ITrunkLeaseStore`: the interface;
- `MIGRATION` and the SQL (SQLite dialect; `pbx.store.postgres` runs it unchanged but for placeholders);
- `SqliteTrunkLeaseStore` and `MemoryTrunkLeaseStore`: the mixins of the SQLite and memory stores.

This module knows SQL and plain values only: nothing of SIP, trunks' configuration or the reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import Interface

from pbx.store.interfaces import StoreClosedError


@dataclass(frozen=True, slots=True)
class TrunkLease:
    """The node that holds a trunk's registration, until when.

    Attributes:
        tenant: the tenant's name.
        trunk: the trunk's name.
        node: the holder (`pbx.service.trunk_store.node_name`).
        expires_at: wall-clock epoch seconds when the lease lapses unless renewed.
    """

    tenant: str
    trunk: str
    node: str
    expires_at: float


class ITrunkLeaseStore(Interface):
    """One lease per (tenant, trunk). Every method returns a Deferred that fires on the reactor thread."""

    def take_trunk_lease(
        tenant: str, trunk: str, node: str, now: float, until: float
    ) -> Deferred[TrunkLease]:
        """Take or renew the lease for `node` until `until`, unless another node holds it and it has not
        expired at `now`; fires with the lease as it stands afterwards (`node` is the holder if it won)."""

    def release_trunk_lease(tenant: str, trunk: str, node: str) -> Deferred[None]:
        """Give up `node`'s lease on the trunk (nothing if another node holds it)."""

    def trunk_leases() -> Deferred[list[TrunkLease]]:
        """Every lease, expired ones included, sorted by (tenant, trunk)."""


MIGRATION: Final[tuple[str, ...]] = (
    """
    CREATE TABLE IF NOT EXISTS trunk_leases (
        tenant TEXT NOT NULL,
        trunk TEXT NOT NULL,
        node TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (tenant, trunk)
    ) WITHOUT ROWID
    """,
)
"""The schema migration of `pbx.store.sqlite` that adds the leases' table (self-contained)."""

_TAKE = (
    "INSERT INTO trunk_leases (tenant, trunk, node, expires_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (tenant, trunk) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at "
    "WHERE trunk_leases.node = excluded.node OR trunk_leases.expires_at <= ?"
)
_ONE = "SELECT tenant, trunk, node, expires_at FROM trunk_leases WHERE tenant = ? AND trunk = ?"
_RELEASE = "DELETE FROM trunk_leases WHERE tenant = ? AND trunk = ? AND node = ?"
_ALL = "SELECT tenant, trunk, node, expires_at FROM trunk_leases ORDER BY tenant, trunk"


def take(conn: Any, tenant: str, trunk: str, node: str, now: float, until: float) -> TrunkLease:
    """The conditional take of `ITrunkLeaseStore.take_trunk_lease` on a connection (`sqlite3.Connection` or
    `pbx.store.postgres.PgConnection`), inside the caller's transaction."""
    conn.execute(_TAKE, (tenant, trunk, node, until, now))
    row = conn.execute(_ONE, (tenant, trunk)).fetchone()
    return TrunkLease(row[0], row[1], row[2], float(row[3]))


def select_trunk_leases(conn: Any) -> list[TrunkLease]:
    """Every lease by tenant and trunk."""
    return [TrunkLease(t, k, n, float(e)) for t, k, n, e in conn.execute(_ALL)]


class SqliteTrunkLeaseStore:
    """`ITrunkLeaseStore` over the store's group commit (a mixin of `SqliteLocationStore`, which provides
    `_run`; the `implementer` declaration is there)."""

    _run: Callable[..., Deferred[Any]]

    def take_trunk_lease(
        self, tenant: str, trunk: str, node: str, now: float, until: float
    ) -> Deferred[TrunkLease]:
        """See `ITrunkLeaseStore.take_trunk_lease`."""
        return self._run(lambda conn: take(conn, tenant, trunk, node, now, until))

    def release_trunk_lease(self, tenant: str, trunk: str, node: str) -> Deferred[None]:
        """See `ITrunkLeaseStore.release_trunk_lease`."""

        def release(conn: Any) -> None:
            conn.execute(_RELEASE, (tenant, trunk, node))

        return self._run(release)

    def trunk_leases(self) -> Deferred[list[TrunkLease]]:
        """See `ITrunkLeaseStore.trunk_leases`."""
        return self._run(select_trunk_leases, weight=0)


class MemoryTrunkLeaseStore:
    """`ITrunkLeaseStore` in a dict (a mixin of `MemoryLocationStore`, which provides `_closed`)."""

    _closed: bool

    def _lease_rows(self) -> dict[tuple[str, str], TrunkLease]:
        rows: dict[tuple[str, str], TrunkLease] | None = self.__dict__.get("_trunk_lease_rows")
        if rows is None:
            rows = self.__dict__["_trunk_lease_rows"] = {}
        return rows

    def take_trunk_lease(
        self, tenant: str, trunk: str, node: str, now: float, until: float
    ) -> Deferred[TrunkLease]:
        """See `ITrunkLeaseStore.take_trunk_lease`."""
        if self._closed:
            return fail(StoreClosedError())
        rows = self._lease_rows()
        held = rows.get((tenant, trunk))
        if held is None or held.node == node or held.expires_at <= now:
            held = rows[(tenant, trunk)] = TrunkLease(tenant, trunk, node, until)
        return succeed(held)

    def release_trunk_lease(self, tenant: str, trunk: str, node: str) -> Deferred[None]:
        """See `ITrunkLeaseStore.release_trunk_lease`."""
        if self._closed:
            return fail(StoreClosedError())
        rows = self._lease_rows()
        held = rows.get((tenant, trunk))
        if held is not None and held.node == node:
            del rows[(tenant, trunk)]
        return succeed(None)

    def trunk_leases(self) -> Deferred[list[TrunkLease]]:
        """See `ITrunkLeaseStore.trunk_leases`."""
        if self._closed:
            return fail(StoreClosedError())
        rows = self._lease_rows()
        return succeed([rows[key] for key in sorted(rows)])
