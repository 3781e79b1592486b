"""The embedded location service: `ILocationStore` on an SQLite file, with group commit on one worker thread.

Threading: the sqlite3 connection is created, used and closed on a single dedicated worker thread (`_Worker`:
one long-lived thread fed by a queue; or an injected Twisted `ThreadPool` of exactly one thread); the reactor
thread never touches it and never waits for SQLite (see "Direct commits" for the one exception, opt-in, that
writes without waiting). Results come back to the reactor thread through
`reactor.callFromThread`. The thread starts with the first call, not in the constructor, so a store built
before `twistd` forks still works. (Not Twisted's ThreadPool by default: each of its jobs leaves a closure
that refers to itself, cyclic garbage per commit for the collector to find under load.)

Group commit: work is queued on the reactor thread. When the worker is idle the whole queue (up to `max_batch`
changes) goes to it as ONE transaction; whatever is called meanwhile waits for the next one. Each caller's
Deferred fires after the transaction holding its work has committed, so thousands of REGISTERs per second can
each wait for durability at the cost of a few commits. Each call runs inside its own SAVEPOINT: a call that
raises is rolled back and fails alone; a failed COMMIT fails every call of the batch.

Direct commits (`direct=True`, what the PBX uses): a location change (`apply`) that finds the worker idle and
nothing queued before it is committed at once on the reactor thread, on a second connection of its own, and
its Deferred has fired when `apply` returns. Handing each REGISTER's commit to the worker and back (the
worker woken, the GIL passed twice, `callFromThread` waking the reactor through its pipe for one more loop
turn) cost more than the commit itself (about 40 us of CPU: a page appended to the WAL in the page cache, the
WAL's file locks). The direct connection never waits and never syncs: it has no busy timeout (a write lock
held elsewhere, by an offline `pbx user` command or a long worker transaction, sends the change to the
worker, which waits for it), `synchronous=NORMAL` never syncs at a commit, and it never checkpoints
(`wal_autocheckpoint=0`): the worker runs a passive checkpoint every `checkpoint_every` direct commits,
during which direct commits go on. The two connections are never used at once for writing: direct commits
are made only while the worker runs no transaction, so changes still commit in the order they were made,
and a batch's callbacks all run before the next batch commits. `apply_delay` lets location changes wait a
few milliseconds for each other, so that a busy registrar commits them in groups (as `cdr_delay` does for
CDRs). Durability is the same as the worker's commits (below): the `200` to a REGISTER still follows its
commit.

Durability: WAL journal with `synchronous=NORMAL`. A commit has written the transaction to the WAL file (the
OS page cache) before it returns, so an acknowledged change survives the process dying in any way (`kill -9`,
a crash, the OOM killer); only an OS crash or power loss can lose the last commits, because the WAL is fsynced
at checkpoints rather than at every commit. Pass `synchronous="FULL"` to fsync every group commit too.

Schema: `_MIGRATIONS[i]` (a tuple of single SQL statements) takes the database from version i to i+1; the
version lives in `PRAGMA user_version` and every pending migration runs in one transaction at open. Later
tables (CDRs, the voicemail index) belong in this file as further migrations, with their queries run through
`_run`, so that the whole PBX shares one connection, one writer thread and one commit queue.

This module knows SQL and threads; it knows nothing of SIP, of registration policy, or of the global reactor.
"""

from __future__ import annotations

import queue
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from pbx.store import sqlite_admin, sqlite_features, sqlite_voicemail, trunk_lease, trunk_state
from pbx.store.admin import IAdminStore
from pbx.store.interfaces import (
    ICdrStore,
    IFeatureStore,
    ILocationStore,
    IVoicemailStore,
    StoreClosedError,
    StoreError,
)
from pbx.store.records import (
    Binding,
    BindingChange,
    Cdr,
    DeleteAor,
    DeleteBinding,
    ExtensionFeatures,
    PutBinding,
    VoicemailMessage,
    check_changes,
)
from pbx.store.sqlite_admin import SqliteAdminStore
from pbx.store.sqlite_features import SqliteFeatureStore
from pbx.store.sqlite_voicemail import SqliteVoicemailStore
from pbx.store.trunk_lease import ITrunkLeaseStore, SqliteTrunkLeaseStore
from pbx.store.trunk_state import ITrunkStateStore, SqliteTrunkStateStore

T = TypeVar("T")
_log = Logger(namespace="pbx.store.sqlite")

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: the registrar's bindings (RFC 3261 10.3). No index on expires_at: purging scans the table
    # (milliseconds at 100,000 rows, once a minute), which is cheaper than updating an index on every refresh.
    (
        """
    CREATE TABLE IF NOT EXISTS bindings (
        tenant TEXT NOT NULL,
        aor TEXT NOT NULL,
        contact TEXT NOT NULL,
        expires_at REAL NOT NULL,
        q REAL NOT NULL,
        call_id TEXT NOT NULL,
        cseq INTEGER NOT NULL,
        received TEXT NOT NULL,
        local TEXT NOT NULL,
        instance_id TEXT,
        reg_id INTEGER,
        user_agent TEXT NOT NULL,
        path TEXT NOT NULL,
        registered_at REAL NOT NULL,
        PRIMARY KEY (tenant, aor, contact)
    ) WITHOUT ROWID
    """,
    ),
    # 1 -> 2: call detail records, written once per call when it ends.
    (
        """
    CREATE TABLE IF NOT EXISTS cdrs (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        caller TEXT NOT NULL,
        dialed TEXT NOT NULL,
        answered_by TEXT NOT NULL,
        start REAL NOT NULL,
        answer REAL,
        "end" REAL NOT NULL,
        cause TEXT NOT NULL,
        status INTEGER NOT NULL,
        hangup_by TEXT NOT NULL,
        legs TEXT NOT NULL
    )
    """,
        "CREATE INDEX IF NOT EXISTS cdrs_start ON cdrs (start)",
    ),
    # 2 -> 3: the voicemail index and the PINs owners set (pbx/store/sqlite_voicemail.py).
    sqlite_voicemail.MIGRATION,
    # 3 -> 4: what owners set by phone with feature codes: DND, forwarding (pbx/store/sqlite_features.py).
    sqlite_features.MIGRATION,
    # 4 -> 5: the console's admin users, API tokens and managed extensions (pbx/store/sqlite_admin.py).
    sqlite_admin.MIGRATION,
    # 5 -> 6: each node's view of each trunk (pbx/store/trunk_state.py).
    trunk_state.MIGRATION,
    # 6 -> 7: which node registers each trunk (pbx/store/trunk_lease.py).
    trunk_lease.MIGRATION,
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)
"""The `PRAGMA user_version` this code writes and understands."""

_COLUMNS = (
    "tenant, aor, contact, expires_at, q, call_id, cseq, received, local, instance_id, reg_id, user_agent, "
    "path, registered_at"
)
_UPSERT = f"INSERT OR REPLACE INTO bindings ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_DELETE = "DELETE FROM bindings WHERE tenant = ? AND aor = ? AND contact = ?"
_DELETE_AOR = "DELETE FROM bindings WHERE tenant = ? AND aor = ?"
_LOAD = f"SELECT {_COLUMNS} FROM bindings WHERE expires_at > ? ORDER BY tenant, aor, contact"
_PURGE = "DELETE FROM bindings WHERE expires_at <= ?"


_CDR_COLUMNS = (  # "end" quoted: a reserved word in PostgreSQL (pbx.store.postgres runs this SQL too)
    'call_id, tenant, caller, dialed, answered_by, start, answer, "end", cause, status, hangup_by, legs'
)
_CDR_INSERT = f"INSERT INTO cdrs ({_CDR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_CDR_RECENT = f"SELECT {_CDR_COLUMNS} FROM cdrs ORDER BY id DESC LIMIT ?"


def _cdr_row(cdr: Cdr) -> tuple[object, ...]:
    return (
        cdr.call_id, cdr.tenant, cdr.caller, cdr.dialed, cdr.answered_by, cdr.start, cdr.answer, cdr.end,
        cdr.cause, cdr.status, cdr.hangup_by, cdr.legs,
    )  # fmt: skip


def _cdrs(conn: sqlite3.Connection, limit: int) -> list[Cdr]:
    names = [c.strip().strip('"') for c in _CDR_COLUMNS.split(",")]
    return [Cdr(**dict(zip(names, row, strict=True))) for row in conn.execute(_CDR_RECENT, (limit,))]


@dataclass(slots=True)
class _Work:
    """One queued call: a function of the connection, the changes it counts for, its caller's Deferred, and
    whether it may be committed on the reactor thread (`direct`: a location change)."""

    fn: Callable[[sqlite3.Connection], Any]
    weight: int
    deferred: Deferred[Any]
    direct: bool = False


class _Worker:
    """One long-lived thread running jobs from a queue, results delivered on the reactor thread.

    What `deferToThreadPool` on a one-thread `ThreadPool` does, without the self-referencing closure the pool
    makes for each job (reference cycles per commit, left for the cyclic collector). Not a daemon thread: like
    the pool's, it keeps the process alive until `stop`.
    """

    def __init__(self, reactor: IReactorFromThreads, name: str) -> None:
        self._reactor = reactor
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self._name)
        self._thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """`fn(*args)` on the worker; the Deferred fires on the reactor thread."""
        d: Deferred[T] = Deferred()
        self._jobs.put((fn, args, d))
        return d

    def stop(self) -> None:
        """Let the worker finish its queue, then join it."""
        self._jobs.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _loop(self) -> None:
        call = self._reactor.callFromThread
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, d = job
            job = None
            try:
                result = fn(*args)
            except BaseException:
                call(d.errback, Failure())
            else:
                call(d.callback, result)
            fn = args = d = result = None  # type: ignore[assignment]  # hold nothing between jobs


@implementer(
    ILocationStore, ICdrStore, IVoicemailStore, IFeatureStore, IAdminStore, ITrunkStateStore, ITrunkLeaseStore
)
class SqliteLocationStore(
    SqliteVoicemailStore, SqliteFeatureStore, SqliteAdminStore, SqliteTrunkStateStore, SqliteTrunkLeaseStore
):
    """Bindings, CDRs and the voicemail index (`SqliteVoicemailStore`) in an SQLite database file, written
    with group commit on one worker thread.

    The constructor starts nothing, so a store can be built before `twistd` forks into the background. The
    first call starts the worker thread (unless a pool was given) and queues the opening of the database
    (connect, WAL, schema) as its first job; calls made meanwhile queue behind it. If opening fails, the calls
    waiting for it fail with that error (so the registrar's start-up `load` reports it), and the next call
    tries to open again: only a successful open is remembered (a full descriptor table passes). Once used,
    the store must be closed (from a service's `stopService`): `close()` drains the queue, closes the
    connection and stops the worker thread the store started; left running, that thread keeps the process
    from exiting.

    Attributes:
        commits: Transactions committed so far (group commit makes this far smaller than the number of calls).
    """

    def __init__(
        self,
        path: Path,
        reactor: IReactorFromThreads,
        *,
        threadpool: ThreadPool | None = None,
        max_batch: int = 1000,
        synchronous: str = "NORMAL",
        cdr_delay: float = 0.0,
        direct: bool = False,
        checkpoint_every: int = 1000,
        apply_delay: float = 0.0,
    ) -> None:
        """Prepare to use the database at `path`; nothing is opened before the first call.

        Args:
            path: The database file; created (with its schema) if missing. Its directory must exist.
            reactor: Delivers results from the worker thread (`callFromThread`).
            threadpool: A pool of exactly one thread to use instead of starting one; the caller starts it
                before the first call and stops it after `close`.
            max_batch: Most changes per transaction. A single `apply` larger than this still commits whole.
            synchronous: "NORMAL" (survives process death, see the module docstring) or "FULL" (also power
                loss: one fsync per group commit).
            cdr_delay: Seconds a CDR that finds the worker idle waits before its transaction starts (the
                reactor must then provide `IReactorTime`), so that the CDRs of that time and whatever else
                comes share one commit; 0: at once. A PBX ends a call every few milliseconds under load, and
                a transaction of its own for each CDR (the worker woken, a commit, the result sent back to
                the reactor) cost about 110 us of CPU where a shared one costs a few.
            direct: Commit location changes (`apply`) on the reactor thread when the worker is idle, on a
                connection of their own (see "Direct commits" in the module docstring). Only with
                `synchronous="NORMAL"`, which never syncs at a commit.
            checkpoint_every: With `direct`: a WAL checkpoint on the worker after this many direct commits
                (the direct connection never checkpoints itself).
            apply_delay: Seconds a location change that finds the store idle waits for others before its
                transaction starts, as `cdr_delay` (the reactor must then provide `IReactorTime`); 0: at once.

        Raises:
            ValueError: If `threadpool` may run more than one thread, or an argument is out of range.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        if threadpool is not None and threadpool.max != 1:
            raise ValueError("the SQLite connection needs a thread pool of exactly one thread (max=1)")
        if direct and synchronous != "NORMAL":
            raise ValueError("direct commits would sync on the reactor thread: use synchronous='NORMAL'")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, not {checkpoint_every}")
        self.commits = 0
        self._path = path
        self._reactor = reactor
        self._max_batch = max_batch
        self._synchronous = synchronous
        self._cdr_delay = cdr_delay
        self._apply_delay = apply_delay
        self._delayed: IDelayedCall | None = None  # the pump a waiting CDR asked for (`cdr_delay`)
        self._direct = direct
        self._checkpoint_every = checkpoint_every
        self._direct_commits = 0  # since the last checkpoint
        self._holding = False  # firing a batch's callbacks: the next batch waits (`_finish`)
        self._checkpointing = False  # the worker's job is a checkpoint (`_busy` too)
        self.direct_commits = 0
        self._owns_pool = threadpool is None
        self._pool = threadpool
        self._worker = _Worker(reactor, f"sqlite:{path.name}") if threadpool is None else None
        # Reactor-thread state.
        self._queue: list[_Work] = []
        self._started = False
        self._busy = False  # a job (open, batch, close) is on the worker
        self._open = False  # the open job succeeded
        self._closing = False
        self._closed = False
        self._close_waiters: list[Deferred[None]] = []
        # Worker-thread state: only ever touched by functions running on the worker.
        self._conn: sqlite3.Connection | None = None
        # The direct connection (`direct`): opened and closed by the worker, used on the reactor thread only
        # while the worker is idle (`_busy` false): never by two threads at once.
        self._direct_conn: sqlite3.Connection | None = None

    # ILocationStore

    def apply(self, changes: Sequence[BindingChange]) -> Deferred[None]:
        """See `ILocationStore.apply`."""
        try:
            batch = check_changes(changes)
        except TypeError as e:
            return fail(e)
        return self._run(
            lambda conn: _apply(conn, batch),
            weight=max(1, len(batch)),
            delay=self._apply_delay,
            direct=self._direct,
        )

    def load(self, now: float) -> Deferred[list[Binding]]:
        """See `ILocationStore.load`."""
        return self._run(lambda conn: _load(conn, now))

    def purge_expired(self, now: float) -> Deferred[int]:
        """See `ILocationStore.purge_expired`."""
        return self._run(lambda conn: conn.execute(_PURGE, (now,)).rowcount)

    def close(self) -> Deferred[None]:
        """See `ILocationStore.close`."""
        if self._closed:
            return succeed(None)
        if not self._started:
            self._closing = self._closed = True
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._close_waiters.append(waiter)
        if not self._closing:
            self._closing = True
            self._pump()
        return waiter

    # The generic facility

    def write_cdr(self, cdr: Cdr) -> Deferred[None]:
        """See `ICdrStore.write_cdr`."""
        row = _cdr_row(cdr)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(_CDR_INSERT, row)

        return self._run(insert, delay=self._cdr_delay)

    def cdrs(self, limit: int) -> Deferred[list[Cdr]]:
        """See `ICdrStore.cdrs`."""
        return self._run(lambda conn: _cdrs(conn, limit), weight=0)

    def _run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        weight: int = 1,
        delay: float = 0.0,
        direct: bool = False,
    ) -> Deferred[T]:
        """Run `fn(connection)` on the worker thread, inside the next group-commit transaction.

        `fn` runs within a SAVEPOINT of a transaction the store opened; it must not BEGIN, COMMIT or ROLLBACK
        itself, and must not keep the connection or cursors. It may read and write any table.

        Args:
            fn: The work; its return value (or exception) is the Deferred's result.
            weight: How many rows it changes, roughly, counted against `max_batch`.
            delay: Seconds it may wait for more work when the worker is idle (`cdr_delay`); any work that
                does not wait takes it along.
            direct: It may be committed on the reactor thread (`direct`), if the store allows it.

        Returns:
            A Deferred firing on the reactor thread with `fn`'s result once the transaction has committed; or
            failing with `fn`'s exception (its changes rolled back), with the error of a failed commit (every
            call in that transaction fails), or with `StoreClosedError` after `close()`.
        """
        if self._closing:
            return fail(StoreClosedError("the location store is closed"))
        d: Deferred[T] = Deferred()
        self._queue.append(_Work(fn, weight, d, direct))
        if not self._started:
            self._start()
        if delay > 0:
            if self._delayed is None and (not self._busy or self._checkpointing):  # else: taken when done
                self._delayed = cast(IReactorTime, self._reactor).callLater(delay, self._delayed_pump)
            return d
        self._pump()
        return d

    def _delayed_pump(self) -> None:
        self._delayed = None
        self._pump()

    # Reactor thread: the queue

    def _start(self) -> None:
        """Start the worker thread (if it is ours) and send it the open job."""
        self._started = True
        if self._worker is not None:
            self._worker.start()
        self._send_open()

    def _send_open(self) -> None:
        self._busy = True
        opened = self._on_worker(self._open_on_worker)
        opened.addCallbacks(self._opened, self._open_failed)

    def _pump(self) -> None:
        """Commit the next location changes directly (`direct`), else give the worker the next batch (or the
        close job, or a checkpoint) if it is idle; open first if need be."""
        if self._holding:
            return
        # Also while the worker checkpoints: a passive checkpoint and a writer may run at once.
        idle = not self._busy or self._checkpointing
        if idle and self._queue and self._direct_conn is not None and self._queue[0].direct:
            batch = self._take_batch(direct=True)
            self._cancel_delayed_if_drained()
            self._commit_directly(batch)
            return  # it pumps again once its callbacks have run
        if self._busy:
            return
        if self._queue and not self._open:
            self._send_open()  # after a failed open: this call tries again
            return
        if self._direct_commits >= self._checkpoint_every:
            self._direct_commits = 0
            self._busy = self._checkpointing = True
            self._on_worker(self._checkpoint_on_worker).addBoth(self._checkpointed)
        elif self._queue:
            batch = self._take_batch()
            self._cancel_delayed_if_drained()
            self._busy = True
            d = self._on_worker(self._transact, [w.fn for w in batch])
            d.addCallbacks(self._committed, self._commit_failed, callbackArgs=(batch,), errbackArgs=(batch,))
        elif self._closing and not self._closed:
            self._busy = True
            self._on_worker(self._close_on_worker).addBoth(self._shut)

    def _cancel_delayed_if_drained(self) -> None:
        if not self._queue and self._delayed is not None:  # what waited goes now
            self._delayed.cancel()
            self._delayed = None

    def _commit_directly(self, batch: list[_Work]) -> None:
        """Commit `batch` (location changes, first in the queue) on the reactor thread, on the direct
        connection. When another connection holds the write lock (an offline tool, a long worker batch), the
        batch goes back to the head of the queue for the worker, which waits for the lock."""
        conn = self._direct_conn
        assert conn is not None
        try:
            conn.execute(self._BEGIN)
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:  # also its extended codes (BUSY_RECOVERY)
                self._queue[:0] = batch
                for work in batch:
                    work.direct = False
                self._pump()
                return
            outcomes: list[tuple[bool, Any]] = [(False, Failure())] * len(batch)
        else:
            try:
                outcomes = self._transact_begun(conn, [w.fn for w in batch])
            except Exception:
                outcomes = [(False, Failure())] * len(batch)
            else:
                self.commits += 1
                self.direct_commits += 1
                self._direct_commits += 1
        self._finish(batch, outcomes)

    def _checkpointed(self, result: object) -> None:
        self._busy = self._checkpointing = False
        if isinstance(result, Failure):
            _log.warn("WAL checkpoint failed: {error}", error=result.getErrorMessage())
        self._pump()

    def _on_worker(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        if self._worker is not None:
            return self._worker.run(fn, *args)
        assert self._pool is not None
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def _take_batch(self, *, direct: bool = False) -> list[_Work]:
        """The next batch from the queue (up to `max_batch` changes); `direct`: only of direct work."""
        taken, total = 0, 0
        for work in self._queue:
            if (taken and total + work.weight > self._max_batch) or (direct and not work.direct):
                break
            taken += 1
            total += work.weight
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _opened(self, _: None) -> None:
        self._open = True
        self._busy = False
        self._pump()

    def _open_failed(self, failure: Failure) -> None:
        """Fail the calls that waited for this open; nothing is remembered, so later calls open again."""
        self._busy = False
        queued, self._queue = self._queue, []
        for work in queued:
            work.deferred.errback(failure)
        self._pump()  # the callbacks may have queued more work (a new attempt), or closed the store

    def _committed(self, outcomes: list[tuple[bool, Any]], batch: list[_Work]) -> None:
        self.commits += 1
        self._busy = False
        self._finish(batch, outcomes)

    def _commit_failed(self, failure: Failure, batch: list[_Work]) -> None:
        self._busy = False
        if self._lost_connection(failure):
            self._open = False  # the next call connects again (a database server restarted)
        self._finish(batch, [(False, failure)] * len(batch))

    def _finish(self, batch: list[_Work], outcomes: Sequence[tuple[bool, Any]]) -> None:
        """Fire the callers' Deferreds of a finished batch and pump the next one."""
        if not self._direct:
            self._pump()  # the worker starts on the next batch while the callers' callbacks run
            _fire(batch, outcomes)
            return
        # The next batch may commit on this thread: only after this one's callbacks, so they fire in order.
        self._holding = True
        try:
            _fire(batch, outcomes)
        finally:
            self._holding = False
        self._pump()

    def _shut(self, result: Failure | None) -> None:
        self._closed = True
        self._busy = False
        if self._delayed is not None:
            self._delayed.cancel()
            self._delayed = None
        if self._worker is not None:
            self._worker.stop()  # joins a thread that has just finished its last job
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    def _lost_connection(self, failure: Failure) -> bool:
        """Whether a failed transaction means the connection is gone (never, for a file)."""
        return False

    # Worker thread

    def _open_on_worker(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=5.0)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self._path}: SQLite refused WAL mode (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            _migrate(conn, self._path)
        except BaseException:
            conn.close()
            raise
        direct = None
        if self._direct:
            try:
                # No busy wait (a lock held elsewhere sends the work to the worker) and no checkpoints (the
                # worker's job, `_checkpoint_on_worker`): nothing on this connection waits or syncs.
                direct = sqlite3.connect(self._path, isolation_level=None, timeout=0, check_same_thread=False)
                direct.execute("PRAGMA wal_autocheckpoint=0")
                direct.execute(f"PRAGMA synchronous={self._synchronous}")
            except BaseException:
                if direct is not None:
                    direct.close()
                conn.close()
                raise
        self._conn, self._direct_conn = conn, direct

    def _checkpoint_on_worker(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _transact(self, fns: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None, "the open job runs first"
        conn.execute(self._BEGIN)
        return self._transact_begun(conn, fns)

    def _transact_begun(
        self, conn: Any, fns: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[tuple[bool, Any]]:
        """The rest of `_transact` once its transaction has begun (on `conn`, the worker's or the direct
        connection)."""
        outcomes: list[tuple[bool, Any]] = []
        if len(fns) == 1:  # alone in its transaction (the usual case below ~1,000 changes/s): no savepoint
            return self._transact_one(conn, fns[0])
        try:
            for fn in fns:
                conn.execute("SAVEPOINT work_item")
                try:
                    value = fn(conn)
                except Exception:
                    outcomes.append((False, Failure()))
                    conn.execute("ROLLBACK TO SAVEPOINT work_item")
                else:
                    outcomes.append((True, value))
                conn.execute("RELEASE SAVEPOINT work_item")
            conn.execute("COMMIT")
        except BaseException:
            # Some errors (disk full, I/O) roll SQLite back by themselves; a failed COMMIT does not.
            if self._in_transaction(conn):
                conn.execute("ROLLBACK")
            raise
        return outcomes

    def _transact_one(self, conn: Any, fn: Callable[[sqlite3.Connection], Any]) -> list[tuple[bool, Any]]:
        """`_transact` for a transaction of one call: its failure rolls the whole transaction back, which is
        what its savepoint would have done (two statements fewer per commit)."""
        try:
            try:
                value = fn(conn)
            except Exception:
                failure = Failure()
                if self._in_transaction(conn):  # some errors (disk full, I/O) rolled back already
                    conn.execute("ROLLBACK")
                return [(False, failure)]
            conn.execute("COMMIT")
        except BaseException:
            if self._in_transaction(conn):
                conn.execute("ROLLBACK")
            raise
        return [(True, value)]

    _BEGIN = "BEGIN IMMEDIATE"

    @staticmethod
    def _in_transaction(conn: Any) -> bool:
        return bool(conn.in_transaction)

    def _close_on_worker(self) -> None:
        direct, self._direct_conn = self._direct_conn, None
        if direct is not None:
            direct.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _fire(batch: list[_Work], outcomes: Sequence[tuple[bool, Any]]) -> None:
    for work, (ok, value) in zip(batch, outcomes, strict=True):
        if ok:
            work.deferred.callback(value)
        else:
            work.deferred.errback(value)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to `SCHEMA_VERSION` in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            # Refuse rather than guess: a newer PBX wrote this file.
            raise StoreError(f"{path}: schema version {version} is newer than this PBX's {SCHEMA_VERSION}")
        for migration in _MIGRATIONS[version:]:
            for statement in migration:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _apply(conn: sqlite3.Connection, changes: tuple[BindingChange, ...]) -> None:
    for change in changes:
        if isinstance(change, PutBinding):
            b = change.binding
            conn.execute(
                _UPSERT,
                (
                    b.tenant,
                    b.aor,
                    b.contact,
                    b.expires_at,
                    b.q,
                    b.call_id,
                    b.cseq,
                    b.received,
                    b.local,
                    b.instance_id,
                    b.reg_id,
                    b.user_agent,
                    b.path,
                    b.registered_at,
                ),
            )
        elif isinstance(change, DeleteBinding):
            conn.execute(_DELETE, (change.tenant, change.aor, change.contact))
        elif isinstance(change, DeleteAor):
            conn.execute(_DELETE_AOR, (change.tenant, change.aor))


def _load(
    conn: sqlite3.Connection, now: float, query: str = _LOAD, args: tuple[object, ...] | None = None
) -> list[Binding]:
    intern = sys.intern  # values shared by many bindings are stored once in memory
    return [
        Binding(
            tenant=intern(tenant),
            aor=aor,
            contact=contact,
            expires_at=expires_at,
            q=q,
            call_id=call_id,
            cseq=cseq,
            received=received,
            local=intern(local),
            instance_id=instance_id,
            reg_id=reg_id,
            user_agent=intern(user_agent),
            path=intern(path),
            registered_at=registered_at,
        )
        for (
            tenant,
            aor,
            contact,
            expires_at,
            q,
            call_id,
            cseq,
            received,
            local,
            instance_id,
            reg_id,
            user_agent,
            path,
            registered_at,
        ) in conn.execute(query, (now,) if args is None else args)
    ]


def _read_only(path: Path, read: Callable[[sqlite3.Connection], list[T]]) -> list[T]:
    """`read(connection)` on a read-only connection; [] when there is no database or table yet.

    Safe while the PBX runs: WAL mode lets a reader see the last committed state without blocking it.
    """
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return read(conn)
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise
    finally:
        conn.close()


def read_bindings(path: Path, now: float) -> list[Binding]:
    """Every unexpired binding in a PBX database, read synchronously (for offline tools)."""
    return _read_only(path, lambda conn: _load(conn, now))


def read_cdrs(path: Path, limit: int = 50) -> list[Cdr]:
    """The most recent CDRs, newest first, read synchronously (for offline tools)."""
    return _read_only(path, lambda conn: _cdrs(conn, limit))


def read_messages(
    path: Path, tenant: str | None = None, mailbox: str | None = None
) -> list[VoicemailMessage]:
    """The voicemail messages of one box (or of every box), oldest first, read synchronously (for offline
    tools)."""
    return _read_only(path, lambda conn: sqlite_voicemail.select_messages(conn, tenant, mailbox))


def read_features(path: Path) -> list[ExtensionFeatures]:
    """What extensions' owners set by phone (DND, forwarding), read synchronously (for offline tools)."""
    return _read_only(path, sqlite_features.select_features)


def read_trunk_leases(path: Path) -> list[trunk_lease.TrunkLease]:
    """Which node holds each trunk's registration, read synchronously (for `pbx trunks status`)."""
    return _read_only(path, trunk_lease.select_trunk_leases)


def read_trunk_statuses(path: Path) -> list[trunk_state.TrunkStatus]:
    """Each node's view of each trunk, read synchronously (for `pbx trunks status`)."""
    return _read_only(path, trunk_state.select_trunk_statuses)


def open_offline(path: Path) -> sqlite3.Connection:
    """A connection to a PBX database for offline tools that write (`pbx user ...`): WAL, the schema
    brought up to date (the file is created if missing). The caller closes it."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn
