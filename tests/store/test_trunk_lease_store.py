"""`ITrunkLeaseStore` (issue 17: one node registers each trunk): one suite against the memory, SQLite and
PostgreSQL stores (the PostgreSQL class is in tests/store/test_postgres_store.py): a lease is taken by one
node, renewed by it, refused to the others until it expires or is released; two stores on one database
racing for an expired lease get one winner; SQLite migrates a version 6 database."""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from pbx.store import MemoryLocationStore, SqliteLocationStore, StoreClosedError
from pbx.store.sqlite import SCHEMA_VERSION
from pbx.store.trunk_lease import ITrunkLeaseStore, TrunkLease
from tests.store.contract import StoreContract
from tests.store.test_location_store import reactor, temporary_directory

T0 = 1_765_000_000.0


class TrunkLeaseStoreTestsMixin(StoreContract):
    """The `ITrunkLeaseStore` contract; a subclass provides `make_store` (and `second_store`: another store
    on the same database, or None when there is no such thing)."""

    def second_store(self) -> Any:
        return None

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(ITrunkLeaseStore, self.store))

    async def test_empty(self) -> None:
        self.assertEqual(await self.store.trunk_leases(), [])

    async def test_one_holder_until_it_expires(self) -> None:
        take = self.store.take_trunk_lease
        self.assertEqual(await take("default", "carrier", "a:5071", T0, T0 + 30), lease("a:5071", T0 + 30))
        # Another node is refused while the lease runs, and told who holds it.
        self.assertEqual(
            await take("default", "carrier", "b:5072", T0 + 29.5, T0 + 59.5), lease("a:5071", T0 + 30)
        )
        # The holder renews it.
        self.assertEqual(
            await take("default", "carrier", "a:5071", T0 + 10, T0 + 40), lease("a:5071", T0 + 40)
        )
        self.assertEqual(
            await take("default", "carrier", "b:5072", T0 + 39, T0 + 69), lease("a:5071", T0 + 40)
        )
        # Lapsed (the holder died): the next node takes it; the old holder is then refused.
        self.assertEqual(
            await take("default", "carrier", "b:5072", T0 + 40, T0 + 70), lease("b:5072", T0 + 70)
        )
        self.assertEqual(
            await take("default", "carrier", "a:5071", T0 + 41, T0 + 71), lease("b:5072", T0 + 70)
        )
        # Leases are per trunk and tenant.
        await take("acme", "carrier", "a:5071", T0 + 41, T0 + 71)
        await take("default", "backup", "a:5071", T0 + 41, T0 + 71)
        self.assertEqual(
            await self.store.trunk_leases(),
            [
                TrunkLease("acme", "carrier", "a:5071", T0 + 71),
                TrunkLease("default", "backup", "a:5071", T0 + 71),
                lease("b:5072", T0 + 70),
            ],
        )

    async def test_release_by_the_holder_only(self) -> None:
        take = self.store.take_trunk_lease
        await take("default", "carrier", "a:5071", T0, T0 + 30)
        await self.store.release_trunk_lease("default", "carrier", "b:5072")  # not its lease: nothing
        self.assertEqual(await self.store.trunk_leases(), [lease("a:5071", T0 + 30)])
        await self.store.release_trunk_lease("default", "carrier", "a:5071")
        self.assertEqual(await self.store.trunk_leases(), [])
        self.assertEqual(
            await take("default", "carrier", "b:5072", T0 + 1, T0 + 31), lease("b:5072", T0 + 31)
        )

    async def test_two_stores_racing_for_a_lapsed_lease_get_one_winner(self) -> None:
        other = self.second_store()
        if other is None:
            self.skipTest("one store only")
        self.addCleanup(other.close)
        await self.store.take_trunk_lease("default", "carrier", "dead:5070", T0, T0 + 30)
        for attempt in range(20):
            now = T0 + 30 + 10 * attempt
            results = await gatherResults(
                [
                    self.store.take_trunk_lease("default", "carrier", "a:5071", now, now + 10),
                    other.take_trunk_lease("default", "carrier", "b:5072", now, now + 10),
                ]
            )
            self.assertEqual(results[0], results[1])
            self.assertIn(results[0].node, ("a:5071", "b:5072"))

    async def test_closed_store_refuses(self) -> None:
        await self.store.close()
        with self.assertRaises(StoreClosedError):
            await self.store.take_trunk_lease("default", "carrier", "a:5071", T0, T0 + 30)


def lease(node: str, expires_at: float) -> TrunkLease:
    return TrunkLease("default", "carrier", node, expires_at)


class MemoryTrunkLeaseStoreTests(TrunkLeaseStoreTestsMixin, TestCase):
    def make_store(self) -> Any:
        return MemoryLocationStore()


class SqliteTrunkLeaseStoreTests(TrunkLeaseStoreTestsMixin, TestCase):
    def make_store(self) -> Any:
        self.path = temporary_directory(self) / "pbx.sqlite3"
        return SqliteLocationStore(self.path, reactor)

    def second_store(self) -> Any:
        return SqliteLocationStore(self.path, reactor)

    async def test_migrates_the_previous_schema(self) -> None:
        """A version 6 database (before the lease migration) gains the table and moves on."""
        conn = sqlite3.connect(self.path)
        conn.execute("CREATE TABLE bindings (tenant TEXT)")
        conn.execute(f"PRAGMA user_version={6}")
        conn.commit()
        conn.close()
        await self.store.take_trunk_lease("default", "carrier", "a:5071", T0, T0 + 30)
        self.assertEqual(await self.store.trunk_leases(), [lease("a:5071", T0 + 30)])
        conn = sqlite3.connect(self.path)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
        conn.close()
