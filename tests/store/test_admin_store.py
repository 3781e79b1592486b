"""`IAdminStore`: one suite against the memory and the SQLite stores (users, tokens, stored extensions),
then the offline writer the `pbx user` commands use."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from pbx.store import MemoryLocationStore, SqliteLocationStore
from pbx.store.admin import AdminUser, ApiToken, IAdminStore, StoredExtension
from pbx.store.sqlite_admin import offline, select_users, upsert_user
from tests.store.contract import StoreContract
from tests.store.test_location_store import reactor, temporary_directory


class AdminStoreTestsMixin(StoreContract):
    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IAdminStore, self.store))

    async def test_users(self) -> None:
        ann = AdminUser(
            name="ann", password_hash="scrypt$x", role="tenant_admin", tenant="acme", created_at=1.0
        )
        root = AdminUser(name="root", password_hash="scrypt$y", role="admin")
        await self.store.put_admin_user(root)
        await self.store.put_admin_user(ann)
        self.assertEqual(await self.store.admin_users(), [ann, root])
        self.assertEqual(await self.store.admin_user("ann"), ann)
        self.assertIsNone(await self.store.admin_user("bob"))
        await self.store.put_api_token(ApiToken(token_hash="h1", user="ann", label="cron", created_at=2.0))
        self.assertEqual((await self.store.api_token("h1")).user, "ann")
        self.assertTrue(await self.store.delete_admin_user("ann"))
        self.assertFalse(await self.store.delete_admin_user("ann"))
        self.assertIsNone(await self.store.api_token("h1"))  # a removed user's tokens go with it

    async def test_extensions(self) -> None:
        one = StoredExtension(tenant="acme", number="1003", name="Carol", ha1_md5="a" * 32, may_call_out=True)
        gone = StoredExtension(tenant="acme", number="1002", deleted=True)
        await self.store.put_extension(one)
        await self.store.put_extension(gone)
        self.assertEqual(await self.store.stored_extensions(), [gone, one])
        await self.store.delete_stored_extension("acme", "1002")
        self.assertEqual(await self.store.stored_extensions(), [one])


class MemoryAdminStoreTests(AdminStoreTestsMixin, TestCase):
    def make_store(self) -> Any:
        return MemoryLocationStore()


class SqliteAdminStoreTests(AdminStoreTestsMixin, TestCase):
    def make_store(self) -> Any:
        self.path = temporary_directory(self) / "pbx.sqlite3"
        return SqliteLocationStore(self.path, reactor)

    async def test_offline_writer_and_the_running_store_share_the_file(self) -> None:
        user = AdminUser(name="root", password_hash="scrypt$z", role="admin")
        offline(self.path, lambda conn: upsert_user(conn, user))  # creates the file and its schema
        self.assertEqual(await self.store.admin_user("root"), user)
        await self.store.put_admin_user(AdminUser(name="zed", password_hash="h", role="viewer"))
        self.assertEqual([u.name for u in offline(self.path, select_users)], ["root", "zed"])
