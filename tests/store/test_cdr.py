"""CDRs: written by both stores, read back newest first; the SQLite ones survive reopening."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from pbx.store import Cdr, ICdrStore, MemoryLocationStore, SqliteLocationStore
from pbx.store.sqlite import read_cdrs


def cdr(n: int, **over: object) -> Cdr:
    values: dict[str, object] = dict(
        call_id=f"c{n}", tenant="default", caller="1001", dialed="1002", start=100.0 + n, end=160.0 + n,
        cause="normal", status=200, answer=105.0 + n, answered_by="1002", hangup_by="caller",
        legs="1002@sip:1002@127.0.0.1=200",
    )  # fmt: skip
    values.update(over)
    return Cdr(**values)  # type: ignore[arg-type]


def test_cdr_durations() -> None:
    record = cdr(0)
    assert record.duration == 60.0 and record.billsec == 55.0
    assert cdr(0, answer=None).billsec == 0.0


def test_memory_store_keeps_cdrs_newest_first() -> None:
    store = MemoryLocationStore()
    assert verifyObject(ICdrStore, store)
    for n in range(3):
        store.write_cdr(cdr(n))
    result: list[list[Cdr]] = []
    store.cdrs(2).addCallback(result.append)
    assert [c.call_id for c in result[0]] == ["c2", "c1"]


class SqliteCdrTests(unittest.TestCase):
    @inlineCallbacks
    def test_written_cdrs_are_read_back_after_close(self):
        path = self.mktemp()
        store = SqliteLocationStore(Path(path), reactor)
        assert verifyObject(ICdrStore, store)
        for n in range(5):
            yield store.write_cdr(cdr(n, answer=None if n == 3 else 105.0 + n))
        recent = yield store.cdrs(10)
        yield store.close()
        self.assertEqual([c.call_id for c in recent], ["c4", "c3", "c2", "c1", "c0"])
        self.assertEqual(recent[1].answer, None)
        offline = read_cdrs(Path(path), 2)
        self.assertEqual([c.call_id for c in offline], ["c4", "c3"])

    @inlineCallbacks
    def test_cdrs_of_a_delay_share_one_commit(self):
        """With `cdr_delay`, CDRs that find the worker idle wait for each other: one transaction for all;
        work that does not wait (a binding change, a read) takes them along; close writes what waits."""
        store = SqliteLocationStore(Path(self.mktemp()), reactor, cdr_delay=0.05)
        yield store.cdrs(1)  # opened
        before = store.commits
        written = [store.write_cdr(cdr(n)) for n in range(5)]
        self.assertTrue(all(not d.called for d in written))
        yield written[-1]
        self.assertEqual(store.commits, before + 1)
        self.assertIsNone(store._delayed)
        waiting = store.write_cdr(cdr(5))
        read = yield store.cdrs(10)  # does not wait: takes the waiting CDR along
        self.assertTrue(waiting.called)
        self.assertIsNone(store._delayed)
        self.assertEqual([c.call_id for c in read][:1], ["c5"])
        last = store.write_cdr(cdr(6))
        yield store.close()
        self.assertTrue(last.called)
        self.assertIsNone(store._delayed)
        self.assertEqual(read_cdrs(store._path, 1)[0].call_id, "c6")
