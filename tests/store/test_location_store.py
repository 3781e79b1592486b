"""Tests for `pbx.store`: one suite run against the memory and the SQLite location stores, then what only the
SQLite store does (group commit, its worker thread, schema, failures) and the size of a `Binding`."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import tracemalloc
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from pbx.store import (
    Binding,
    DeleteAor,
    DeleteBinding,
    ILocationStore,
    MemoryLocationStore,
    PutBinding,
    SqliteLocationStore,
    StoreClosedError,
    StoreError,
)
from pbx.store.sqlite import SCHEMA_VERSION
from tests.store.contract import StoreContract

NOW = 1_700_000_000.0
reactor = cast(IReactorFromThreads, _reactor)


def temporary_directory(case: SynchronousTestCase) -> Path:
    """A new directory outside the checkout, removed after the test (once its stores are closed)."""
    path = Path(tempfile.mkdtemp(prefix="pbx-store-"))
    case.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def binding(contact: str = "sip:1001@203.0.113.5:5062;transport=udp", **overrides: Any) -> Binding:
    """A realistic binding of 1001 in the default tenant, expiring an hour after NOW."""
    fields: dict[str, Any] = {
        "tenant": "default",
        "aor": "1001",
        "contact": contact,
        "expires_at": NOW + 3600,
        "q": 1.0,
        "call_id": "a84b4c76e66710@pc33.example.com",
        "cseq": 1826,
        "received": "udp:203.0.113.5:5062",
        "local": "udp:127.0.0.1:5060",
        "instance_id": None,
        "reg_id": None,
        "user_agent": "Yealink SIP-T46S 66.86.0.15",
        "path": "",
        "registered_at": NOW,
    }
    fields.update(overrides)
    return Binding(**fields)


class LocationStoreTestsMixin(StoreContract):
    """The `ILocationStore` contract; a subclass provides `make_store` and is a trial `TestCase`."""

    def make_store(self) -> ILocationStore:
        raise NotImplementedError

    async def test_provides_interface(self) -> None:
        """The store provides every method of ILocationStore."""
        self.assertTrue(verifyObject(ILocationStore, self.store))

    async def test_put_then_load(self) -> None:
        """A put binding comes back from load, field for field, including None and non-ASCII values."""
        plain = binding()
        outbound = binding(
            "sip:1001@[2001:db8::5]:5062;transport=tcp;ob",
            q=0.5,
            instance_id='"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"',
            reg_id=1,
            user_agent="Zoiper ✓ 5.6",
            path="<sip:edge1.example.com;lr>,<sip:edge2.example.com;lr>",
            received="tcp:[2001:db8::5]:40123",
            cseq=2**31 - 1,
        )
        await self.store.apply([PutBinding(plain), PutBinding(outbound)])
        loaded = await self.store.load(NOW)
        self.assertEqual(loaded, sorted([plain, outbound], key=lambda b: b.key))

    async def test_load_is_sorted_by_key(self) -> None:
        """load returns the bindings ordered by (tenant, aor, contact)."""
        bindings = [
            binding("sip:b@x", tenant="t2", aor="1001"),
            binding("sip:a@x", tenant="t1", aor="1002"),
            binding("sip:c@x", tenant="t1", aor="1001"),
            binding("sip:a@x", tenant="t1", aor="1001"),
        ]
        await self.store.apply([PutBinding(b) for b in bindings])
        loaded = await self.store.load(NOW)
        self.assertEqual([b.key for b in loaded], sorted(b.key for b in bindings))

    async def test_upsert_replaces_same_key(self) -> None:
        """Putting a binding with an existing (tenant, aor, contact) replaces it."""
        await self.store.apply([PutBinding(binding(cseq=1, expires_at=NOW + 60))])
        refreshed = binding(cseq=2, expires_at=NOW + 3600, call_id="other", q=0.7)
        await self.store.apply([PutBinding(refreshed)])
        self.assertEqual(await self.store.load(NOW), [refreshed])

    async def test_key_is_tenant_aor_and_contact(self) -> None:
        """The same contact under another tenant or AOR, or another contact, is another binding."""
        bindings = [
            binding(),
            binding(tenant="acme.example"),
            binding(aor="1002"),
            binding("sip:1001@10.0.0.9"),
        ]
        await self.store.apply([PutBinding(b) for b in bindings])
        self.assertEqual(len(await self.store.load(NOW)), 4)

    async def test_delete_binding(self) -> None:
        """DeleteBinding removes one binding; deleting an absent binding is no error."""
        keep, drop = binding("sip:keep@x"), binding("sip:drop@x")
        await self.store.apply([PutBinding(keep), PutBinding(drop)])
        await self.store.apply([DeleteBinding("default", "1001", "sip:drop@x")])
        await self.store.apply([DeleteBinding("default", "1001", "sip:never@x")])
        self.assertEqual(await self.store.load(NOW), [keep])

    async def test_delete_aor(self) -> None:
        """DeleteAor removes every binding of that AOR in that tenant, and nothing else."""
        other_tenant = binding(tenant="acme.example")
        other_aor = binding(aor="1002")
        await self.store.apply(
            [PutBinding(b) for b in (binding("sip:1@x"), binding("sip:2@x"), other_tenant, other_aor)]
        )
        await self.store.apply([DeleteAor("default", "1001"), DeleteAor("default", "9999")])
        self.assertEqual(await self.store.load(NOW), sorted([other_tenant, other_aor], key=lambda b: b.key))

    async def test_changes_apply_in_order(self) -> None:
        """Within a batch, later changes see earlier ones."""
        first, second = binding("sip:1@x"), binding("sip:2@x")
        await self.store.apply(
            [PutBinding(first), DeleteBinding("default", "1001", "sip:1@x"), DeleteAor("default", "1001")]
        )
        await self.store.apply([DeleteBinding("default", "1001", "sip:2@x"), PutBinding(second)])
        self.assertEqual(await self.store.load(NOW), [second])

    async def test_empty_batch(self) -> None:
        """An empty batch succeeds and changes nothing."""
        await self.store.apply([])
        self.assertEqual(await self.store.load(NOW), [])

    async def test_load_leaves_out_expired(self) -> None:
        """load returns only bindings with expires_at after now; expiring exactly now counts as expired."""
        live = binding("sip:live@x", expires_at=NOW + 0.001)
        await self.store.apply(
            [
                PutBinding(live),
                PutBinding(binding("sip:now@x", expires_at=NOW)),
                PutBinding(binding("sip:old@x", expires_at=NOW - 10)),
            ]
        )
        self.assertEqual(await self.store.load(NOW), [live])
        self.assertEqual(len(await self.store.load(NOW - 100)), 3)

    async def test_purge_expired(self) -> None:
        """purge_expired deletes the expired bindings, reports how many, and keeps the rest."""
        live = binding("sip:live@x", expires_at=NOW + 1)
        await self.store.apply(
            [
                PutBinding(live),
                PutBinding(binding("sip:now@x", expires_at=NOW)),
                PutBinding(binding("sip:old@x", expires_at=NOW - 10)),
            ]
        )
        self.assertEqual(await self.store.purge_expired(NOW), 2)
        self.assertEqual(await self.store.purge_expired(NOW), 0)
        self.assertEqual(await self.store.load(NOW - 100), [live])

    async def test_bad_batch_fails_and_changes_nothing(self) -> None:
        """A batch holding something that is not a BindingChange fails with TypeError and applies nothing."""
        await self.assertFailure(self.store.apply([PutBinding(binding()), "junk"]), TypeError)  # type: ignore[list-item]
        await self.assertFailure(self.store.apply("junk"), TypeError)  # type: ignore[arg-type]
        self.assertEqual(await self.store.load(NOW), [])

    async def test_many_concurrent_applies(self) -> None:
        """500 applies issued without waiting all succeed, and all their bindings are stored."""
        bindings = [binding(f"sip:{i}@x", aor=str(1000 + i % 50)) for i in range(500)]
        results = await gatherResults([self.store.apply([PutBinding(b)]) for b in bindings])
        self.assertEqual(results, [None] * 500)
        self.assertEqual(await self.store.load(NOW), sorted(bindings, key=lambda b: b.key))

    async def test_closed_store_refuses_calls(self) -> None:
        """After close, every call fails with StoreClosedError; closing again is harmless."""
        await self.store.close()
        await self.assertFailure(self.store.apply([]), StoreClosedError)
        await self.assertFailure(self.store.load(NOW), StoreClosedError)
        await self.assertFailure(self.store.purge_expired(NOW), StoreClosedError)
        await self.store.close()


class MemoryLocationStoreTests(LocationStoreTestsMixin, TestCase):
    def make_store(self) -> ILocationStore:
        return MemoryLocationStore()


class SqliteLocationStoreTests(LocationStoreTestsMixin, TestCase):
    def make_store(self) -> ILocationStore:
        self.path = temporary_directory(self)
        self.sqlite = SqliteLocationStore(self.path / "pbx.sqlite3", reactor)
        return self.sqlite

    async def test_group_commit(self) -> None:
        """500 applies issued without waiting share a few transactions; each fires after its commit."""
        await self.sqlite.load(NOW)  # the database is open
        before = self.sqlite.commits
        bindings = [binding(f"sip:{i}@x") for i in range(500)]
        commits_seen: list[int] = []
        deferreds = [
            self.sqlite.apply([PutBinding(b)]).addCallback(lambda _: commits_seen.append(self.sqlite.commits))
            for b in bindings
        ]
        await gatherResults(deferreds)
        self.assertLessEqual(self.sqlite.commits - before, 3)
        self.assertTrue(all(seen > before for seen in commits_seen))
        self.assertEqual(len(await self.sqlite.load(NOW)), 500)

    async def test_max_batch_bounds_a_transaction(self) -> None:
        """No transaction takes more than max_batch changes, but one larger apply still commits whole."""
        store = SqliteLocationStore(self.path / "small.sqlite3", reactor, max_batch=10)
        self.addCleanup(store.close)
        await store.load(NOW)
        before = store.commits
        await gatherResults([store.apply([PutBinding(binding(f"sip:{i}@x"))]) for i in range(100)])
        self.assertGreaterEqual(store.commits - before, 10)
        before = store.commits
        await store.apply([PutBinding(binding(f"sip:big{i}@x")) for i in range(25)])
        self.assertEqual(store.commits - before, 1)
        self.assertEqual(len(await store.load(NOW)), 125)

    async def test_reopen_keeps_bindings(self) -> None:
        """What was applied is there when the file is opened again."""
        bindings = [binding(f"sip:{i}@x", reg_id=i, instance_id=f"<urn:uuid:{i}>") for i in range(10)]
        await self.sqlite.apply([PutBinding(b) for b in bindings])
        await self.sqlite.close()
        self.store = self.sqlite = SqliteLocationStore(self.path / "pbx.sqlite3", reactor)
        self.assertEqual(await self.sqlite.load(NOW), bindings)

    async def test_file_is_wal_with_schema_version(self) -> None:
        """The database is in WAL mode and records its schema version."""
        await self.sqlite.load(NOW)
        await self.sqlite.close()
        conn = sqlite3.connect(self.path / "pbx.sqlite3")
        try:
            self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
            self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
        finally:
            conn.close()

    async def test_newer_schema_is_refused(self) -> None:
        """A file written by a newer schema makes every call fail with StoreError."""
        conn = sqlite3.connect(self.path / "new.sqlite3")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        conn.close()
        store = SqliteLocationStore(self.path / "new.sqlite3", reactor)
        self.addCleanup(store.close)
        await self.assertFailure(store.load(NOW), StoreError)

    async def test_open_failure_fails_the_waiting_calls_and_is_not_remembered(self) -> None:
        """A file that cannot be opened fails the calls waiting for it; the next call tries again (a full
        descriptor table, a missing directory, do not last), and close still releases the thread."""
        store = SqliteLocationStore(self.path / "missing-dir" / "x.sqlite3", reactor)
        first, second = store.load(NOW), store.apply([PutBinding(binding())])
        await self.assertFailure(first, sqlite3.OperationalError)
        await self.assertFailure(second, sqlite3.OperationalError)
        await self.assertFailure(store.apply([PutBinding(binding())]), sqlite3.OperationalError)
        (self.path / "missing-dir").mkdir()
        await store.apply([PutBinding(binding())])
        self.assertEqual(await store.load(NOW), [binding()])
        await store.close()

    async def test_open_failure_then_close(self) -> None:
        store = SqliteLocationStore(self.path / "missing-dir" / "x.sqlite3", reactor)
        await self.assertFailure(store.load(NOW), sqlite3.OperationalError)
        await store.close()

    async def test_connection_lives_on_one_worker_thread(self) -> None:
        """Every piece of work runs on the same thread, which is not the reactor's."""
        idents = await gatherResults([self.sqlite._run(lambda conn: threading.get_ident()) for _ in range(3)])
        self.assertEqual(len(set(idents)), 1)
        self.assertNotEqual(idents[0], threading.get_ident())

    async def test_failing_work_fails_alone(self) -> None:
        """Work that raises is rolled back and fails alone; the rest of its transaction commits."""
        await self.sqlite.load(NOW)

        def half_then_raise(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM bindings")
            raise ZeroDivisionError

        busy = self.sqlite.apply([PutBinding(binding("sip:a@x"))])  # in flight: the next three share a batch
        before = self.sqlite.commits
        results: list[Deferred[Any]] = [
            self.sqlite.apply([PutBinding(binding("sip:b@x"))]),
            self.sqlite._run(half_then_raise),
            self.sqlite.apply([PutBinding(binding("sip:c@x"))]),
        ]
        await busy
        await results[0]
        await self.assertFailure(results[1], ZeroDivisionError)
        await results[2]
        self.assertEqual(self.sqlite.commits - before, 2)
        self.assertEqual([b.contact for b in await self.sqlite.load(NOW)], ["sip:a@x", "sip:b@x", "sip:c@x"])

    async def test_failing_work_alone_in_its_transaction_is_rolled_back(self) -> None:
        """A transaction of one piece of work (no savepoint): when it raises, none of it is kept and the
        store goes on."""
        await self.sqlite.apply([PutBinding(binding("sip:a@x"))])

        def half_then_raise(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM bindings")
            raise ZeroDivisionError

        before = self.sqlite.commits
        await self.assertFailure(self.sqlite._run(half_then_raise), ZeroDivisionError)
        self.assertEqual(self.sqlite.commits - before, 1)  # the transaction's round trip, rolled back
        self.assertEqual([b.contact for b in await self.sqlite.load(NOW)], ["sip:a@x"])

    async def test_failed_commit_fails_the_whole_batch(self) -> None:
        """When COMMIT fails (here a deferred foreign key), every call of that batch fails and none of it is
        stored; the store goes on working."""
        await self.sqlite._run(
            lambda conn: [
                conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)"),
                conn.execute(
                    "CREATE TABLE child (pid INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
                ),
            ]
        )
        busy = self.sqlite.apply([PutBinding(binding("sip:a@x"))])
        doomed: list[Deferred[Any]] = [
            self.sqlite.apply([PutBinding(binding("sip:b@x"))]),
            self.sqlite._run(lambda conn: conn.execute("INSERT INTO child VALUES (42)").rowcount),
            self.sqlite.apply([PutBinding(binding("sip:c@x"))]),
        ]
        await busy
        for d in doomed:
            await self.assertFailure(d, sqlite3.IntegrityError)
        await self.sqlite.apply([PutBinding(binding("sip:d@x"))])
        self.assertEqual([b.contact for b in await self.sqlite.load(NOW)], ["sip:a@x", "sip:d@x"])

    async def test_close_finishes_queued_work(self) -> None:
        """close waits for what was asked before it; the changes are then on disk."""
        applied = [self.sqlite.apply([PutBinding(binding(f"sip:{i}@x"))]) for i in range(20)]
        await self.sqlite.close()
        self.assertEqual([d.called for d in applied], [True] * 20)
        self.store = self.sqlite = SqliteLocationStore(self.path / "pbx.sqlite3", reactor)
        self.assertEqual(len(await self.sqlite.load(NOW)), 20)

    async def test_injected_threadpool(self) -> None:
        """A given one-thread pool is used and left running by close; a bigger one is refused."""
        pool = ThreadPool(minthreads=1, maxthreads=1, name="test-sqlite")
        pool.start()
        self.addCleanup(pool.stop)
        store = SqliteLocationStore(self.path / "pool.sqlite3", reactor, threadpool=pool)
        ident = await store._run(lambda conn: threading.get_ident())
        self.assertIn(ident, [t.ident for t in pool.threads])
        await store.close()
        self.assertTrue(pool.started)
        big = ThreadPool(minthreads=1, maxthreads=4)
        self.assertRaises(ValueError, SqliteLocationStore, self.path / "x.sqlite3", reactor, threadpool=big)

    async def test_nothing_starts_before_the_first_call(self) -> None:
        """Building a store starts no thread and touches no file; closing an unused store is immediate."""
        store = SqliteLocationStore(self.path / "lazy.sqlite3", reactor)
        self.assertFalse(store._worker.started)
        self.assertFalse((self.path / "lazy.sqlite3").exists())
        await store.close()
        self.assertFalse(store._worker.started)
        await self.assertFailure(store.load(NOW), StoreClosedError)

    async def test_commits_leave_no_cyclic_garbage(self) -> None:
        """The worker thread keeps nothing between jobs and makes no reference cycles per commit (Twisted's
        ThreadPool made four objects of cyclic garbage per job)."""
        import gc

        store = SqliteLocationStore(self.path / "cycles.sqlite3", reactor)
        try:
            await store.apply([PutBinding(binding())])  # opened, warmed up
            gc.collect()
            gc.disable()
            try:
                for _ in range(20):
                    await store.apply([PutBinding(binding())])
                unreachable = gc.collect()
            finally:
                gc.enable()
            self.assertLess(unreachable, 20)
        finally:
            await store.close()

    def test_arguments_are_checked(self) -> None:
        """max_batch and synchronous are validated before anything starts."""
        with self.assertRaises(ValueError):
            SqliteLocationStore(self.path / "x.sqlite3", reactor, max_batch=0)
        with self.assertRaises(ValueError):
            SqliteLocationStore(self.path / "x.sqlite3", reactor, synchronous="OFF")


class DirectSqliteLocationStoreTests(LocationStoreTestsMixin, TestCase):
    """The contract again with `direct=True` (location changes committed on the reactor thread while the
    worker is idle), and what the direct path does on its own."""

    def make_store(self) -> ILocationStore:
        self.path = temporary_directory(self)
        self.sqlite = SqliteLocationStore(self.path / "pbx.sqlite3", reactor, direct=True)
        return self.sqlite

    async def opened(self, store: SqliteLocationStore) -> None:
        """Open `store` and return from a fresh reactor call: not from within the store's callbacks, where
        a new call waits until the batch's Deferreds have all fired."""
        await store.load(NOW)
        await deferLater(cast(IReactorTime, reactor), 0, lambda: None)

    async def test_apply_commits_on_the_reactor_thread_when_the_worker_is_idle(self) -> None:
        """Once open, an apply has committed when it returns: its Deferred has fired, the row is on disk
        (another connection reads it), and no worker transaction was used."""
        await self.opened(self.sqlite)
        commits = self.sqlite.commits
        d = self.sqlite.apply([PutBinding(binding())])
        self.assertTrue(d.called)
        await d
        self.assertEqual((self.sqlite.direct_commits, self.sqlite.commits), (1, commits + 1))
        conn = sqlite3.connect(self.path / "pbx.sqlite3")
        try:
            self.assertEqual(conn.execute("SELECT contact FROM bindings").fetchall(), [(binding().contact,)])
        finally:
            conn.close()
        self.assertEqual(await self.sqlite.load(NOW), [binding()])

    async def test_work_on_the_worker_keeps_its_order(self) -> None:
        """While the worker runs a job, an apply waits behind it (never committed past queued work)."""
        await self.opened(self.sqlite)
        release = threading.Event()
        order: list[str] = []
        slow = self.sqlite._run(lambda conn: release.wait(10)).addCallback(lambda _: order.append("slow"))
        queued = self.sqlite.apply([PutBinding(binding())]).addCallback(lambda _: order.append("apply"))
        self.assertFalse(queued.called)
        release.set()
        await gatherResults([slow, queued])
        self.assertEqual(order, ["slow", "apply"])
        self.assertEqual(await self.sqlite.load(NOW), [binding()])

    async def test_a_database_locked_elsewhere_sends_the_change_to_the_worker(self) -> None:
        """Another process's write lock (an offline `pbx user` command) never blocks the reactor: the change
        goes to the worker, which waits for the lock (up to its busy timeout) and then commits it."""
        await self.opened(self.sqlite)
        other = sqlite3.connect(self.path / "pbx.sqlite3", isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        d = self.sqlite.apply([PutBinding(binding())])
        self.assertFalse(d.called)
        other.execute("COMMIT")
        await d
        self.assertEqual(self.sqlite.direct_commits, 0)
        self.assertEqual(await self.sqlite.load(NOW), [binding()])
        await self.sqlite.apply([PutBinding(binding("sip:b@x"))])
        self.assertEqual(self.sqlite.direct_commits, 1)

    async def test_the_worker_checkpoints_the_wal(self) -> None:
        """The direct connection never checkpoints; the worker does, every `checkpoint_every` direct
        commits, so the WAL does not grow without bound."""
        store = SqliteLocationStore(self.path / "cp.sqlite3", reactor, direct=True, checkpoint_every=3)
        self.addCleanup(store.close)
        await self.opened(store)
        checkpoints: list[int] = []
        original = store._checkpoint_on_worker
        store._checkpoint_on_worker = lambda: (checkpoints.append(1), original())[1]  # type: ignore[method-assign]
        for i in range(7):
            await store.apply([PutBinding(binding(f"sip:{i}@x"))])
        await store.load(NOW)  # the worker has done what was asked before
        self.assertEqual(store.direct_commits, 7)
        self.assertEqual(len(checkpoints), 2)
        conn = sqlite3.connect(self.path / "cp.sqlite3")
        try:
            self.assertEqual(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0], 0)
        finally:
            conn.close()

    async def test_a_failed_direct_commit_fails_the_change(self) -> None:
        """A statement that fails on the direct connection fails its caller; nothing of it is stored and the
        store goes on committing directly."""
        await self.opened(self.sqlite)
        d = self.sqlite._run(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)"), direct=True)
        self.assertTrue(d.called)
        await self.assertFailure(d, sqlite3.OperationalError)
        before = self.sqlite.direct_commits
        await self.sqlite.apply([PutBinding(binding())])
        self.assertEqual(self.sqlite.direct_commits, before + 1)
        self.assertEqual(await self.sqlite.load(NOW), [binding()])

    async def test_apply_delay_commits_changes_together(self) -> None:
        """With `apply_delay`, changes that come within the delay share one direct commit, made when it ends;
        no delayed call is left."""
        store = SqliteLocationStore(self.path / "delay.sqlite3", reactor, direct=True, apply_delay=0.05)
        self.addCleanup(store.close)
        await self.opened(store)
        commits = store.commits
        applied = [store.apply([PutBinding(binding(f"sip:{i}@x"))]) for i in range(3)]
        self.assertEqual([d.called for d in applied], [False] * 3)
        await gatherResults(applied)
        self.assertEqual((store.commits - commits, store.direct_commits), (1, 1))
        self.assertIsNone(store._delayed)
        self.assertEqual(len(await store.load(NOW)), 3)

    def test_direct_needs_synchronous_normal(self) -> None:
        """FULL would fsync on the reactor thread: refused."""
        path = temporary_directory(self) / "x.sqlite3"
        with self.assertRaises(ValueError):
            SqliteLocationStore(path, reactor, direct=True, synchronous="FULL")
        with self.assertRaises(ValueError):
            SqliteLocationStore(path, reactor, direct=True, checkpoint_every=0)


class BindingTests(SynchronousTestCase):
    def test_q_is_checked(self) -> None:
        """q outside 0..1 is refused."""
        self.assertRaises(ValueError, binding, q=1.5)
        self.assertRaises(ValueError, binding, q=-0.1)

    def test_binding_is_small(self) -> None:
        """A binding with realistic, distinct strings takes well under 1 KiB, leaving room for an index within
        the 2 KiB per binding budget."""
        count = 10_000
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            kept = [
                binding(
                    f"sip:{1000 + i}@198.51.{i % 256}.{i // 256 % 256}:{5060 + i % 1000};transport=udp;ob",
                    aor=str(1000 + i),
                    call_id=f"{i:08x}-3c26-7ef1-b0e1-5a9d1f2e3c4b@198.51.100.7",
                    received=f"udp:198.51.{i % 256}.{i // 256 % 256}:{5060 + i % 1000}",
                    instance_id=f'"<urn:uuid:{i:08x}-0000-1000-8000-000a95a0e128>"',
                    reg_id=1,
                    expires_at=NOW + i,
                    registered_at=NOW + i / 3,
                    cseq=1000 + i,
                )
                for i in range(count)
            ]
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertEqual(len(kept), count)
        self.assertLess(used / count, 1024)
