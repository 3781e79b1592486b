"""`IVoicemailStore`: one suite against the memory and the SQLite stores, then what only SQLite does
(durable across reopening, migration from schema 2, the read-only reader of `pbx voicemail list`)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any

from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from pbx.store import IVoicemailStore, MemoryLocationStore, SqliteLocationStore, StoreClosedError
from pbx.store.records import VoicemailMessage
from pbx.store.sqlite import SCHEMA_VERSION, read_messages
from tests.store.contract import StoreContract
from tests.store.test_location_store import reactor, temporary_directory

NOW = 1_700_000_000.0


def message(id: str = "1700000000000-abcdef", **overrides: Any) -> VoicemailMessage:
    fields: dict[str, Any] = {
        "tenant": "default",
        "mailbox": "1001",
        "id": id,
        "caller_number": "1002",
        "caller_name": "Bob",
        "received_at": NOW,
        "duration": 4.5,
        "call_id": "abc@pbx",
        "audio": f"voicemail/default/1001/{id}.wav",
    }
    fields.update(overrides)
    return VoicemailMessage(**fields)


class VoicemailStoreTestsMixin(StoreContract):
    """The `IVoicemailStore` contract; a subclass provides `make_store`."""

    def make_store(self) -> Any:
        raise NotImplementedError

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IVoicemailStore, self.store))

    async def test_add_and_list_oldest_first(self) -> None:
        late = message("1700000000100-000002", received_at=NOW + 100)
        early = message("1700000000000-000001")
        other_box = message("1700000000000-000003", mailbox="1002")
        other_tenant = message("1700000000000-000004", tenant="acme")
        for m in (late, early, other_box, other_tenant):
            await self.store.add_message(m)
        self.assertEqual(await self.store.messages("default", "1001"), [early, late])
        self.assertEqual(await self.store.messages("acme", "1001"), [other_tenant])
        self.assertEqual(await self.store.messages("default", "9999"), [])
        everything = await self.store.all_messages()
        self.assertEqual(len(everything), 4)
        self.assertEqual(everything[0].tenant, "acme")

    async def test_add_replaces_same_id(self) -> None:
        await self.store.add_message(message())
        await self.store.add_message(message(duration=9.0))
        (only,) = await self.store.messages("default", "1001")
        self.assertEqual(only.duration, 9.0)

    async def test_update_keeps_folder_and_emailed(self) -> None:
        await self.store.add_message(message())
        await self.store.update_message(replace(message(), folder="old", emailed=True))
        (only,) = await self.store.messages("default", "1001")
        self.assertEqual((only.folder, only.emailed), ("old", True))

    async def test_update_of_absent_is_no_error(self) -> None:
        await self.store.update_message(message())
        self.assertEqual(await self.store.all_messages(), [])

    async def test_delete(self) -> None:
        await self.store.add_message(message())
        await self.store.delete_message("default", "1001", message().id)
        await self.store.delete_message("default", "1001", "absent")
        self.assertEqual(await self.store.messages("default", "1001"), [])

    async def test_pin_hash(self) -> None:
        self.assertIsNone(await self.store.pin_hash("default", "1001"))
        await self.store.set_pin_hash("default", "1001", "pbkdf2_sha256$1$00$11")
        await self.store.set_pin_hash("default", "1001", "pbkdf2_sha256$1$00$22")
        self.assertEqual(await self.store.pin_hash("default", "1001"), "pbkdf2_sha256$1$00$22")
        self.assertIsNone(await self.store.pin_hash("acme", "1001"))

    async def test_closed_store_refuses(self) -> None:
        await self.store.close()
        with self.assertRaises(StoreClosedError):
            await self.store.add_message(message())


class MemoryVoicemailStoreTests(VoicemailStoreTestsMixin, TestCase):
    def make_store(self) -> Any:
        return MemoryLocationStore()


class SqliteVoicemailStoreTests(VoicemailStoreTestsMixin, TestCase):
    def make_store(self) -> Any:
        self.path = temporary_directory(self) / "pbx.sqlite3"
        return SqliteLocationStore(self.path, reactor)

    async def test_reopen_sees_the_data(self) -> None:
        """What was acknowledged is there when the file is opened again, and for the offline reader."""
        await self.store.add_message(message())
        await self.store.add_message(message("1700000000001-000001", folder="old"))
        await self.store.set_pin_hash("default", "1001", "h")
        await self.store.close()
        self.store = SqliteLocationStore(self.path, reactor)
        self.assertEqual(len(await self.store.messages("default", "1001")), 2)
        self.assertEqual(await self.store.pin_hash("default", "1001"), "h")
        self.assertEqual(
            [m.id for m in read_messages(self.path, "default", "1001")],
            [message().id, "1700000000001-000001"],
        )
        self.assertEqual(len(read_messages(self.path)), 2)

    async def test_migrates_a_version_2_database(self) -> None:
        """A database of the previous schema (bindings and CDRs) gains the voicemail tables."""
        conn = sqlite3.connect(self.path)
        conn.execute("CREATE TABLE bindings (tenant TEXT)")
        conn.execute("CREATE TABLE cdrs (id INTEGER PRIMARY KEY)")
        conn.execute("PRAGMA user_version=2")
        conn.commit()
        conn.close()
        await self.store.add_message(message())
        self.assertEqual(len(await self.store.all_messages()), 1)
        conn = sqlite3.connect(self.path)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
        conn.close()

    def test_reader_without_database(self) -> None:
        self.assertEqual(read_messages(self.path, "default", "1001"), [])
