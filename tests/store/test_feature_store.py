"""`IFeatureStore`: one suite against the memory and the SQLite stores, then what only SQLite does (durable
across reopening, migration from the previous schema)."""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from pbx.store import (
    ExtensionFeatures,
    IFeatureStore,
    MemoryLocationStore,
    SqliteLocationStore,
    StoreClosedError,
)
from pbx.store.sqlite import SCHEMA_VERSION
from tests.store.contract import StoreContract
from tests.store.test_location_store import reactor, temporary_directory


def features(extension: str = "1001", **overrides: Any) -> ExtensionFeatures:
    return ExtensionFeatures(tenant=overrides.pop("tenant", "default"), extension=extension, **overrides)


class FeatureStoreTestsMixin(StoreContract):
    """The `IFeatureStore` contract; a subclass provides `make_store`."""

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IFeatureStore, self.store))

    async def test_empty(self) -> None:
        self.assertEqual(await self.store.all_features(), [])

    async def test_save_replaces_and_lists_in_order(self) -> None:
        await self.store.save_features(features("1002", dnd=True))
        await self.store.save_features(features("1001", forward_all="1003", updated_at=5.0))
        await self.store.save_features(features("1001", forward_all="", forward_busy="1000", updated_at=6.0))
        await self.store.save_features(
            features("1001", tenant="acme", forward_noanswer="trunk:carrier/5551234")
        )
        self.assertEqual(
            await self.store.all_features(),
            [
                features("1001", tenant="acme", forward_noanswer="trunk:carrier/5551234"),
                features("1001", forward_all="", forward_busy="1000", updated_at=6.0),
                features("1002", dnd=True),
            ],
        )

    async def test_closed_store_refuses(self) -> None:
        await self.store.close()
        with self.assertRaises(StoreClosedError):
            await self.store.save_features(features())


class MemoryFeatureStoreTests(FeatureStoreTestsMixin, TestCase):
    def make_store(self) -> Any:
        return MemoryLocationStore()


class SqliteFeatureStoreTests(FeatureStoreTestsMixin, TestCase):
    def make_store(self) -> Any:
        self.path = temporary_directory(self) / "pbx.sqlite3"
        return SqliteLocationStore(self.path, reactor)

    async def test_reopen_sees_the_settings(self) -> None:
        """What was acknowledged is there after a restart (None and "" stay apart)."""
        await self.store.save_features(features(dnd=True, forward_all="", forward_busy="1000"))
        await self.store.close()
        self.store = SqliteLocationStore(self.path, reactor)
        (only,) = await self.store.all_features()
        self.assertEqual(only, features(dnd=True, forward_all="", forward_busy="1000"))
        self.assertIsNone(only.forward_noanswer)

    async def test_migrates_the_previous_schema(self) -> None:
        """A version 3 database (before the features migration) gains the features table and moves on."""
        conn = sqlite3.connect(self.path)
        conn.execute("CREATE TABLE bindings (tenant TEXT)")
        conn.execute("CREATE TABLE cdrs (id INTEGER PRIMARY KEY)")
        conn.execute(f"PRAGMA user_version={3}")
        conn.commit()
        conn.close()
        await self.store.save_features(features(dnd=True))
        self.assertEqual(len(await self.store.all_features()), 1)
        conn = sqlite3.connect(self.path)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
        conn.close()
