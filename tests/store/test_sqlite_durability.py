"""Durability of `pbx.store.sqlite`: what a child process was told is durable survives `kill -9` of that
process, killed while it keeps writing; the file opens cleanly afterwards."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IReactorFromThreads
from twisted.trial.unittest import TestCase

from pbx.store import SqliteLocationStore

reactor = cast(IReactorFromThreads, _reactor)
ROOT = Path(__file__).resolve().parents[2]
ACKNOWLEDGED = 300

# Applies ACKNOWLEDGED bindings of tenant "acked" (one apply each, all at once), prints DURABLE once every
# Deferred has fired, then keeps writing tenant "more" until it is killed. With "direct" as its third argument
# the store commits location changes on the reactor thread and checkpoints on its worker every 5 commits.
CHILD = r"""
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from pbx.store import Binding, PutBinding, SqliteLocationStore

path, count, direct = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "direct"
store = SqliteLocationStore(path, reactor, direct=direct, checkpoint_every=5)


def binding(tenant, i):
    return Binding(
        tenant=tenant, aor=str(1000 + i % 100), contact=f"sip:{i}@198.51.100.{i % 250}:5062",
        expires_at=2e9 + i, call_id=f"call-{i}", cseq=i, received=f"udp:198.51.100.{i % 250}:5062",
        local="udp:127.0.0.1:5060", registered_at=1.7e9,
    )


def more(_, i=0):
    store.apply([PutBinding(binding("more", i + j)) for j in range(50)]).addCallback(more, i + 50)


def acknowledged(_):
    print("DURABLE", flush=True)
    more(None)


def start():
    applied = [store.apply([PutBinding(binding("acked", i))]) for i in range(count)]
    failed = lambda f: print("FAILED", f.getErrorMessage(), flush=True)
    gatherResults(applied).addCallbacks(acknowledged, failed)


reactor.callWhenRunning(start)
reactor.run()
"""


class KillTests(TestCase):
    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="pbx-store-"))
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        self.path = directory / "pbx.sqlite3"

    def _run_child_until_durable(self, timeout: float = 30.0, mode: str = "worker") -> None:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        )
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(self.path), str(ACKNOWLEDGED), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None and child.stderr is not None
        try:
            line = _read_line(child.stdout.fileno(), timeout)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
            errors = child.stderr.read().decode(errors="replace")
            child.stderr.close()
        self.assertEqual(child.returncode, -signal.SIGKILL)
        self.assertEqual(line, "DURABLE", f"the child said {line!r}; its stderr:\n{errors}")

    async def test_acknowledged_bindings_survive_sigkill(self) -> None:
        """Every binding acknowledged before SIGKILL is in the file, and the file passes integrity_check."""
        self._run_child_until_durable()
        await self._check_acknowledged()

    async def test_acknowledged_direct_commits_survive_sigkill(self) -> None:
        """The same with location changes committed on the reactor thread (`direct`, as the PBX runs its
        store), killed while it commits directly and its worker checkpoints."""
        self._run_child_until_durable(mode="direct")
        await self._check_acknowledged()

    async def _check_acknowledged(self) -> None:
        conn = sqlite3.connect(self.path)
        try:
            self.assertEqual(conn.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            acked = conn.execute("SELECT count(*) FROM bindings WHERE tenant = 'acked'").fetchone()[0]
            self.assertEqual(acked, ACKNOWLEDGED)
        finally:
            conn.close()

        store = SqliteLocationStore(self.path, reactor)
        self.addCleanup(store.close)
        loaded = [b for b in await store.load(0.0) if b.tenant == "acked"]
        self.assertEqual(sorted(b.cseq for b in loaded), list(range(ACKNOWLEDGED)))


def _read_line(fd: int, timeout: float) -> str:
    """The first line written to `fd`, waiting at most `timeout` seconds for it ("" at end of file)."""
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line from the child within {timeout} s (got {data!r})")
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")
