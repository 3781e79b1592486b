"""`ITrunkStateStore` (issue 17 item 1, trunk state): one suite against the memory, SQLite and PostgreSQL
stores (the PostgreSQL class is in tests/store/test_postgres_store.py), then what only SQLite does (durable
across reopening, migration from the previous schema) and the offline read `pbx trunks status` uses."""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from pbx.store import MemoryLocationStore, SqliteLocationStore, StoreClosedError, offline
from pbx.store.sqlite import SCHEMA_VERSION
from pbx.store.trunk_state import ITrunkStateStore, TrunkStatus
from tests.store.contract import StoreContract
from tests.store.test_location_store import reactor, temporary_directory


def status(trunk: str = "carrier", node: str = "pbx1:5071", **overrides: Any) -> TrunkStatus:
    values: dict[str, Any] = {"tenant": "default", "state": "registered", "registration": "registered"}
    values.update(overrides)
    return TrunkStatus(trunk=trunk, node=node, **values)


class TrunkStateStoreTestsMixin(StoreContract):
    """The `ITrunkStateStore` contract; a subclass provides `make_store`."""

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(ITrunkStateStore, self.store))

    async def test_empty(self) -> None:
        self.assertEqual(await self.store.trunk_statuses(), [])

    async def test_one_row_per_node_replaced_on_change_and_listed_in_order(self) -> None:
        registered = status(
            code=200, reason="OK", expires_at=1_765_000_600.5, reachable=True, ping_code=200,
            contact="<sip:pbx@192.0.2.1:5071>", updated_at=1_765_000_000.25,
        )  # fmt: skip
        await self.store.save_trunk_status(status(state="registering", updated_at=1.0))
        failed = status(
            node="pbx2:5072", state="failed", registration="failed", code=403, reason="Forbidden",
            reachable=False, ping_code=408,
        )  # fmt: skip
        await self.store.save_trunk_status(failed)
        await self.store.save_trunk_status(status("backup", tenant="acme", state="up", registration="off"))
        await self.store.save_trunk_status(registered)
        self.assertEqual(
            await self.store.trunk_statuses(),
            [
                status("backup", tenant="acme", state="up", registration="off"),
                registered,
                failed,
            ],
        )

    async def test_closed_store_refuses(self) -> None:
        await self.store.close()
        with self.assertRaises(StoreClosedError):
            await self.store.save_trunk_status(status())


class MemoryTrunkStateStoreTests(TrunkStateStoreTestsMixin, TestCase):
    def make_store(self) -> Any:
        return MemoryLocationStore()


class SqliteTrunkStateStoreTests(TrunkStateStoreTestsMixin, TestCase):
    def make_store(self) -> Any:
        self.path = temporary_directory(self) / "pbx.sqlite3"
        return SqliteLocationStore(self.path, reactor)

    async def test_reopen_and_read_offline(self) -> None:
        """What was written is there after a restart, and for `pbx trunks status` (None stays None)."""
        await self.store.save_trunk_status(status(reachable=None, expires_at=None))
        await self.store.close()
        self.assertEqual(offline.trunk_statuses("", self.path.parent), [status()])
        self.store = SqliteLocationStore(self.path, reactor)
        (only,) = await self.store.trunk_statuses()
        self.assertIsNone(only.reachable)

    def test_offline_read_without_a_database(self) -> None:
        self.assertEqual(offline.trunk_statuses("", self.path.parent / "nowhere"), [])

    async def test_migrates_the_previous_schema(self) -> None:
        """A version 5 database (before the trunk state migration) gains the table and moves on."""
        conn = sqlite3.connect(self.path)
        conn.execute("CREATE TABLE bindings (tenant TEXT)")
        conn.execute(f"PRAGMA user_version={5}")
        conn.commit()
        conn.close()
        await self.store.save_trunk_status(status())
        self.assertEqual(len(await self.store.trunk_statuses()), 1)
        conn = sqlite3.connect(self.path)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
        conn.close()
