"""The location service, CDRs and voicemail index in PostgreSQL: one database shared by several PBX processes.

`PostgresStore` is `SqliteLocationStore`'s engine and SQL on a `psycopg` 3 connection instead of an SQLite
file: the same group commit on one worker thread (the reactor thread never blocks on the database; each
caller's Deferred fires once the transaction holding its work has committed, so a `200` to REGISTER still
means "durable"), the same SAVEPOINT per call, the same queries. The stores' SQL is written once, in the
SQLite dialect most of it shares with PostgreSQL; `to_postgres` translates the few differences when a
statement is first used (and memoises the result):

- `?` placeholders become `%s` (and a literal `%` becomes `%%` in statements with parameters);
- `INSERT OR REPLACE` becomes `INSERT ... ON CONFLICT (primary key) DO UPDATE SET` every other column (the
  primary keys are read from the `CREATE TABLE` statements of the migrations), `INSERT OR IGNORE` becomes
  `... ON CONFLICT DO NOTHING`;
- in `CREATE TABLE`: `REAL` becomes `DOUBLE PRECISION` (PostgreSQL's `REAL` has 24 bits: no timestamps),
  an `INTEGER PRIMARY KEY` (SQLite's row id) becomes an identity column, `WITHOUT ROWID` goes.

So every migration of `pbx.store.sqlite._MIGRATIONS` is also the PostgreSQL schema's, in the same order:
the schema version lives in the one-row table `pbx_schema`, and the migrations run in one transaction under
an advisory lock, so nodes starting together migrate once. A database newer than this code is refused.

A lost connection (the server restarted, a network cut) fails the transaction that saw it; the next call
connects again. The URL's password never reaches a log line (`safe_url`).

This module knows SQL, threads and libpq; nothing of SIP or the reactor beyond `callFromThread`.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from pbx.store.interfaces import ICdrStore, ILocationStore, IVoicemailStore, StoreError
from pbx.store.records import Binding, BindingChange, PutBinding, check_changes
from pbx.store.sqlite import (
    _COLUMNS,
    _MIGRATIONS,
    SCHEMA_VERSION,
    SqliteLocationStore,
    _apply,
    _load,
    _Worker,
)

try:  # an optional dependency at import time: the SQLite default must work without it
    import psycopg
    from psycopg.pq import TransactionStatus
except ImportError:  # pragma: no cover - psycopg is a dependency of the package
    psycopg = None  # type: ignore[assignment]

T = TypeVar("T")

MIGRATION_LOCK: Final = 0x7062_7873  # pg_advisory_xact_lock key: "pbxs"
BINDINGS_CHANNEL: Final = "pbx_bindings"
"""The LISTEN/NOTIFY channel on which a node says which address-of-record it changed (`BindingFeed`)."""
MAILBOXES_CHANNEL: Final = "pbx_mailboxes"
"""The channel on which a node says which voicemail box's messages it changed (MWI on the other nodes)."""
_LOAD_AOR = (
    f"SELECT {_COLUMNS} FROM bindings WHERE tenant = ? AND aor = ? AND expires_at > ? ORDER BY contact"
)

_log = Logger(namespace="pbx.store")

_CREATE_TABLE = re.compile(r"CREATE TABLE(?: IF NOT EXISTS)? (\w+)\s*\((.*)\)", re.DOTALL | re.IGNORECASE)
_TABLE_KEY = re.compile(r"PRIMARY KEY\s*\(([^)]*)\)", re.IGNORECASE)
_COLUMN_KEY = re.compile(r"^\s*\"?(\w+)\"?\s+\w+[^,]*\bPRIMARY KEY\b", re.IGNORECASE | re.MULTILINE)
_INSERT = re.compile(
    r"^\s*INSERT OR (REPLACE|IGNORE) INTO (\w+)\s*\(([^)]*)\)(.*)$", re.DOTALL | re.IGNORECASE
)


def safe_url(url: str) -> str:
    """`url` with its password replaced by `***` (for log lines and error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unparsable URL)"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


@functools.cache
def primary_keys() -> dict[str, tuple[str, ...]]:
    """Table -> its primary key columns, from the migrations' `CREATE TABLE` statements."""
    keys: dict[str, tuple[str, ...]] = {}
    for migration in _MIGRATIONS:
        for statement in migration:
            match = _CREATE_TABLE.search(statement)
            if match is None:
                continue
            table, body = match.group(1), match.group(2)
            found = _TABLE_KEY.search(body)
            if found is not None:
                keys[table] = tuple(c.strip().strip('"') for c in found.group(1).split(","))
            else:
                column = _COLUMN_KEY.search(body)
                if column is not None:
                    keys[table] = (column.group(1),)
    return keys


@functools.lru_cache(maxsize=1024)
def to_postgres(sql: str, with_parameters: bool = True) -> str:
    """A statement of the stores' SQLite-dialect SQL in PostgreSQL's (see the module docstring)."""
    if _CREATE_TABLE.search(sql) is not None:
        sql = re.sub(r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
        sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
        sql = re.sub(r"\)\s*WITHOUT ROWID\s*$", ")", sql.rstrip())
    insert = _INSERT.match(sql)
    if insert is not None:
        verb, table, columns, rest = insert.groups()
        sql = f"INSERT INTO {table} ({columns}){rest.rstrip().rstrip(';')}"
        if verb.upper() == "IGNORE":
            sql += " ON CONFLICT DO NOTHING"
        else:
            key = primary_keys().get(table)
            if key is None:
                raise StoreError(f"INSERT OR REPLACE into {table}: no primary key known for it")
            names = [c.strip() for c in columns.split(",")]
            others = [n for n in names if n.strip('"') not in key]
            updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in others)
            conflict = ", ".join(key)
            sql += f" ON CONFLICT ({conflict}) " + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")
    if with_parameters:
        sql = sql.replace("%", "%%").replace("?", "%s")
    return sql


class PgConnection:
    """The part of `sqlite3.Connection` the stores' SQL functions use (`execute`), on a psycopg connection
    in autocommit mode (the store opens and ends its transactions with explicit statements)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        if parameters:
            return self.raw.execute(to_postgres(sql, True), tuple(parameters))
        return self.raw.execute(to_postgres(sql, False))

    @property
    def in_transaction(self) -> bool:
        return bool(self.raw.info.transaction_status != TransactionStatus.IDLE)

    def close(self) -> None:
        self.raw.close()


@implementer(ILocationStore, ICdrStore, IVoicemailStore)
class PostgresStore(SqliteLocationStore):
    """Bindings, CDRs and the voicemail index in a PostgreSQL database (see the module docstring).

    Args:
        url: a libpq connection URL (`postgresql://user:password@host:port/database`; any libpq parameter
            in its query string).
        reactor: delivers results from the worker thread (`callFromThread`).
        threadpool: a pool of exactly one thread to use instead of starting one.
        max_batch: most changes per transaction.
        connect_timeout: seconds a connection attempt may take.
    """

    _BEGIN = "BEGIN"

    def __init__(
        self,
        url: str,
        reactor: IReactorFromThreads,
        *,
        threadpool: ThreadPool | None = None,
        max_batch: int = 1000,
        connect_timeout: float = 5.0,
    ) -> None:
        if psycopg is None:  # pragma: no cover
            raise StoreError("PostgreSQL needs the psycopg package (pip install 'psycopg[binary]')")
        super().__init__(Path("postgresql"), reactor, threadpool=threadpool, max_batch=max_batch)
        self.url = url
        self.node = secrets.token_hex(8)  # tells this process's notifications from the other nodes'
        self._feeds: list[BindingFeed] = []
        self._connect_timeout = connect_timeout
        if self._worker is not None:
            self._worker = _Worker(reactor, "postgresql")

    def __repr__(self) -> str:
        return f"<PostgresStore {safe_url(self.url)}>"

    # Several PBX processes on one database: who changed which registration

    def apply(self, changes: Sequence[BindingChange]) -> Deferred[None]:
        """See `ILocationStore.apply`; the other nodes are told (NOTIFY, delivered at commit) which
        addresses-of-record changed."""
        try:
            batch = check_changes(changes)
        except TypeError as e:
            return fail(e)
        keys = sorted(
            {
                (c.binding.tenant, c.binding.aor) if isinstance(c, PutBinding) else (c.tenant, c.aor)
                for c in batch
            }
        )
        payloads = [json.dumps([self.node, tenant, aor]) for tenant, aor in keys]

        def work(conn: Any) -> None:
            _apply(conn, batch)
            for payload in payloads:
                conn.execute("SELECT pg_notify(?, ?)", (BINDINGS_CHANNEL, payload))

        return self._run(work, weight=max(1, len(batch)))

    def load_aor(self, tenant: str, aor: str, now: float) -> Deferred[list[Binding]]:
        """The unexpired bindings of one address-of-record as stored now."""
        return self._run(lambda conn: _load(conn, now, _LOAD_AOR, (tenant, aor, now)), weight=0)

    def watch_bindings(self, changed: Callable[[str | None, str | None], object]) -> BindingFeed:
        """Call `changed(tenant, aor)` on the reactor thread when another node changed that address-of-record,
        and `changed(None, None)` when changes may have been missed (the feed's connection was lost and is
        back): then reload everything. Stopped by `close`."""
        feed = BindingFeed(self.url, self.node, self._reactor, changed)
        self._feeds.append(feed)
        feed.start()
        return feed

    def announce_mailbox(self, tenant: str, mailbox: str) -> Deferred[None]:
        """Tell the other nodes that this node changed the messages of `mailbox` (their MWI reloads it)."""
        payload = json.dumps([self.node, tenant, mailbox])

        def work(conn: Any) -> None:
            conn.execute("SELECT pg_notify(?, ?)", (MAILBOXES_CHANNEL, payload))

        return self._run(work)

    def watch_mailboxes(self, changed: Callable[[str | None, str | None], object]) -> BindingFeed:
        """As `watch_bindings`, for voicemail boxes: `changed(tenant, mailbox)` when another node changed the
        box's messages, `changed(None, None)` after changes may have been missed."""
        feed = BindingFeed(self.url, self.node, self._reactor, changed, channel=MAILBOXES_CHANNEL)
        self._feeds.append(feed)
        feed.start()
        return feed

    def close(self) -> Deferred[None]:
        feeds, self._feeds = self._feeds, []
        for feed in feeds:
            feed.stop()
        return super().close()

    def _lost_connection(self, failure: Failure) -> bool:
        return bool(failure.check(psycopg.OperationalError, psycopg.InterfaceError))

    @staticmethod
    def _in_transaction(conn: Any) -> bool:
        return bool(conn.in_transaction)

    # Worker thread

    def _open_on_worker(self) -> None:
        old, self._conn = self._conn, None
        if old is not None:  # a connection that broke: let it go
            try:
                old.close()
            except Exception:
                pass
        try:
            raw = psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(self._connect_timeout))
            )
        except psycopg.Error as e:
            raise StoreError(f"{safe_url(self.url)}: cannot connect ({_first_line(e)})") from None
        try:
            conn = PgConnection(raw)
            migrate(conn)
        except BaseException:
            raw.close()
            raise
        self._conn = conn  # type: ignore[assignment]


class BindingFeed:
    """LISTEN on `channel` (`BINDINGS_CHANNEL`, `MAILBOXES_CHANNEL`) on a connection and thread of its own;
    reports the other nodes' changes as `changed(tenant, key)`.

    The thread waits for notifications at most half a second at a time so `stop` returns promptly; a lost
    connection is retried with back-off (0.5 s doubling to 10 s), and once back it reports `(None, None)`:
    what happened meanwhile is unknown.
    """

    def __init__(
        self,
        url: str,
        node: str,
        reactor: IReactorFromThreads,
        changed: Callable[[str | None, str | None], object],
        channel: str = BINDINGS_CHANNEL,
    ) -> None:
        self._channel = channel
        self._url = url
        self._node = node
        self._reactor = reactor
        self._changed = changed
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="postgresql-listen", daemon=True)
        self.listening = threading.Event()  # set once LISTEN is in force (tests wait on it)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        delay, connected_before = 0.5, False
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    self.listening.set()
                    delay = 0.5
                    if connected_before:
                        self._reactor.callFromThread(self._changed, None, None)
                    connected_before = True
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self._received(notice.payload)
            except psycopg.Error as e:
                self.listening.clear()
                if self._stopping.is_set():
                    return
                self._reactor.callFromThread(
                    _log.warn, "PostgreSQL change feed lost ({why}); retrying in {delay:g} s",
                    why=_first_line(e), delay=delay,
                )  # fmt: skip
                self._stopping.wait(delay)
                delay = min(delay * 2, 10.0)

    def _received(self, payload: str) -> None:
        try:
            node, tenant, aor = json.loads(payload)
        except (ValueError, TypeError):
            return
        if node != self._node and isinstance(tenant, str) and isinstance(aor, str):
            self._reactor.callFromThread(self._changed, tenant, aor)


def migrate(conn: PgConnection) -> None:
    """Bring the schema to `SCHEMA_VERSION` in one transaction, nodes starting together taking turns."""
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS pbx_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM pbx_schema").fetchone()
        if row is None:
            conn.execute("INSERT INTO pbx_schema (version) VALUES (0)")
            version = 0
        else:
            version = int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(f"schema version {version} is newer than this PBX's {SCHEMA_VERSION}")
        for migration in _MIGRATIONS[version:]:
            for statement in migration:
                conn.execute(statement)
        conn.execute("UPDATE pbx_schema SET version = ?", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def read_postgres(url: str, read: Any) -> list[Any]:
    """`read(connection)` on a short-lived connection to the database at `url` (for offline tools, while
    the PBX runs or not); [] when the PBX has not created its tables yet."""
    if psycopg is None:  # pragma: no cover
        raise StoreError("PostgreSQL needs the psycopg package (pip install 'psycopg[binary]')")
    try:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        raise StoreError(f"{safe_url(url)}: cannot connect ({_first_line(e)})") from None
    try:
        return list(read(PgConnection(raw)))
    except psycopg.errors.UndefinedTable:
        return []
    finally:
        raw.close()


def write_postgres(url: str, work: Callable[[Any], T]) -> T:
    """`work(connection)` in one transaction on the database at `url`, its schema brought up to date first
    (offline tools that write: `pbx user ...`, with the PBX down or running)."""
    if psycopg is None:  # pragma: no cover
        raise StoreError("PostgreSQL needs the psycopg package (pip install 'psycopg[binary]')")
    try:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        raise StoreError(f"{safe_url(url)}: cannot connect ({_first_line(e)})") from None
    conn = PgConnection(raw)
    try:
        migrate(conn)
        conn.execute("BEGIN")
        try:
            result = work(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result
    finally:
        raw.close()
