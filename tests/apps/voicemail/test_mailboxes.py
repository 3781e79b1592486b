"""`pbx.apps.voicemail.mailboxes.Mailboxes`: prepare/commit/discard, counts and hooks, limits and storage
failures, PINs, greetings, and the start-up recovery of files and index (`kill -9` at any point)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pbx.apps.voicemail import files
from pbx.apps.voicemail.boxes import MailboxFull, StorageUnavailable
from pbx.apps.voicemail.mailboxes import Mailboxes
from pbx.config import Mailbox
from pbx.media.wav import write_pcm_atomic
from pbx.store import MemoryLocationStore, SqliteLocationStore
from pbx.store.records import VoicemailMessage
from tests.store.test_location_store import reactor

NOW = 1_700_000_000.0
BOXES = {
    "default": {
        "1001": Mailbox(number="1001", pin="1001", phones=("1001",), max_messages=2),
        "8000": Mailbox(number="8000", pin="8000", phones=("1000", "1001")),
    },
    "acme": {"1001": Mailbox(number="1001", pin="4321", phones=("1001",))},
}


def record(path: Path, seconds: float = 2.0) -> None:
    """What the recorder does: the WAV appears whole at `path`."""
    write_pcm_atomic(path, b"\x01\x00" * int(8000 * seconds))


class World:
    def __init__(self, case: SynchronousTestCase, store: Any = None, data_dir: Path | None = None) -> None:
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="pbx-vm-"))
            case.addCleanup(shutil.rmtree, data_dir, ignore_errors=True)
        self.data_dir = data_dir
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryLocationStore() if store is None else store
        self.boxes = Mailboxes(self.store, data_dir, BOXES, clock=self.clock, spare_bytes=0)
        self.changes: list[tuple[str, str]] = []
        self.arrived: list[tuple[VoicemailMessage, Any]] = []
        self.boxes.watchers.append(lambda tenant, box: self.changes.append((tenant, box)))
        self.boxes.listeners.append(lambda message, box: self.arrived.append((message, box)))

    def leave(self, case: SynchronousTestCase, tenant: str = "default", box: str = "1001", **kw: Any) -> Any:
        path = self.boxes.prepare(tenant, box, caller_number="1002", caller_name="Bob", call_id="c1")
        record(path, kw.pop("seconds", 2.0))
        d = self.boxes.commit(
            tenant,
            box,
            path,
            caller_number="1002",
            caller_name="Bob",
            received_at=NOW,
            duration=2.0,
            call_id="c1",
        )
        return case.successResultOf(d)


class MailboxesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = World(self)
        self.boxes = self.world.boxes
        self.successResultOf(self.boxes.recover())
        self.world.changes.clear()

    def test_prepare_gives_a_fresh_path_in_the_box_with_a_sidecar(self) -> None:
        path = self.boxes.prepare("default", "1001")
        self.assertEqual(path.parent, self.world.data_dir / "voicemail" / "default" / "1001")
        self.assertTrue(files.is_message_id(path.stem))
        self.assertEqual(path.suffix, ".wav")
        self.assertFalse(path.exists())
        self.assertTrue(path.with_suffix(".json").exists())
        self.assertNotEqual(path, self.boxes.prepare("default", "1001"))

    def test_commit_makes_a_message(self) -> None:
        message = self.world.leave(self)
        self.assertEqual((message.tenant, message.mailbox, message.folder), ("default", "1001", "new"))
        self.assertEqual(message.audio, f"voicemail/default/1001/{message.id}.wav")
        self.assertTrue(self.boxes.audio_path(message).is_file())
        self.assertFalse(self.boxes.audio_path(message).with_suffix(".json").exists())
        self.assertEqual(self.boxes.counts("default", "1001"), (1, 0))
        self.assertEqual(self.boxes.counts("acme", "1001"), (0, 0))
        self.assertEqual(self.world.changes, [("default", "1001")])
        self.assertEqual(self.world.arrived, [(message, BOXES["default"]["1001"])])
        self.assertEqual(self.successResultOf(self.boxes.messages("default", "1001")), [message])

    def test_own_changes_are_announced_and_other_nodes_changes_reloaded(self) -> None:
        """Nodes sharing the store: this node's changes go to `announcers`; a box another node changed is
        counted again from the store, its watchers told only when the counts moved, nothing announced."""
        announced: list[tuple[str, str]] = []
        self.boxes.announcers.append(lambda tenant, box: announced.append((tenant, box)))
        message = self.world.leave(self)
        self.assertEqual(announced, [("default", "1001")])
        self.world.changes.clear()
        key = (message.tenant, message.mailbox, message.id)
        self.world.store.voicemail[key] = replace(message, folder="old")  # another node: heard
        self.successResultOf(self.boxes.reload_counts("default", "1001"))
        self.assertEqual(self.boxes.counts("default", "1001"), (0, 1))
        self.assertEqual(self.world.changes, [("default", "1001")])
        self.successResultOf(self.boxes.reload_counts("default", "1001"))  # no change: no word
        self.successResultOf(self.boxes.reload_counts("default", "9999"))  # not a box here
        self.assertEqual(self.world.changes, [("default", "1001")])
        del self.world.store.voicemail[key]  # another node: deleted
        self.successResultOf(self.boxes.reload_counts(None, None))  # maybe missed: every box again
        self.assertEqual(self.boxes.counts("default", "1001"), (0, 0))
        self.assertEqual(announced, [("default", "1001")])

    def test_a_failing_hook_does_not_stop_the_others(self) -> None:
        self.boxes.watchers.insert(0, lambda *_: 1 / 0)
        self.world.leave(self)
        self.assertEqual(len(self.world.changes), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_commit_refuses_a_path_not_prepared_for_the_box(self) -> None:
        path = self.boxes.prepare("default", "1001")
        record(path)
        d = self.boxes.commit(
            "default", "8000", path, caller_number="", caller_name="", received_at=NOW, duration=1, call_id=""
        )
        self.failureResultOf(d, ValueError)

    def test_a_store_failure_discards_the_recording(self) -> None:
        path = self.boxes.prepare("default", "1001")
        record(path)
        self.world.store.add_message = lambda m: fail(OSError("disk I/O error"))  # type: ignore[method-assign]
        d = self.boxes.commit(
            "default", "1001", path, caller_number="", caller_name="", received_at=NOW, duration=1, call_id=""
        )
        self.failureResultOf(d, OSError)
        self.assertFalse(path.exists())
        self.assertFalse(path.with_suffix(".json").exists())
        self.assertEqual(self.boxes.counts("default", "1001"), (0, 0))

    def test_discard(self) -> None:
        path = self.boxes.prepare("default", "1001")
        record(path)
        self.boxes.discard(path)
        self.assertEqual(os.listdir(path.parent), [])
        self.boxes.discard(path)  # twice is harmless

    def test_full_box(self) -> None:
        self.world.leave(self)
        self.world.leave(self)
        with self.assertRaises(MailboxFull):
            self.boxes.prepare("default", "1001")

    def test_unknown_box(self) -> None:
        self.assertIsNone(self.boxes.mailbox("default", "9999"))
        with self.assertRaises(KeyError):
            self.boxes.prepare("default", "9999")

    def test_unwritable_storage(self) -> None:
        (self.world.data_dir / "voicemail").mkdir(exist_ok=True)
        (self.world.data_dir / "voicemail" / "default").write_text("not a directory")
        with self.assertRaises(StorageUnavailable):
            self.boxes.prepare("default", "1001")

    def test_disk_full(self) -> None:
        class Stats:
            f_bavail, f_frsize, f_flag = 10, 4096, 0

        self.patch(files.os, "statvfs", lambda _: Stats())
        with self.assertRaises(StorageUnavailable) as caught:
            self.boxes.prepare("default", "1001")
        self.assertIn("40960 bytes free", str(caught.exception))

    def test_sidecar_write_failure(self) -> None:
        def refuse(*args: Any, **kwargs: Any) -> None:
            raise OSError(28, "No space left on device")

        self.patch(files, "write_sidecar", refuse)
        with self.assertRaises(StorageUnavailable):
            self.boxes.prepare("default", "1001")

    def test_mark_old_and_delete(self) -> None:
        first = self.world.leave(self)
        second = self.world.leave(self)
        heard = self.successResultOf(self.boxes.mark_old(first))
        self.assertEqual(heard.folder, "old")
        self.assertIs(self.successResultOf(self.boxes.mark_old(heard)), heard)
        self.assertEqual(self.boxes.counts("default", "1001"), (1, 1))
        listed = self.successResultOf(self.boxes.messages("default", "1001"))
        self.assertEqual([m.id for m in listed], [second.id, first.id])  # new first
        self.successResultOf(self.boxes.delete(heard))
        self.assertFalse(self.boxes.audio_path(heard).exists())
        self.assertEqual(self.boxes.counts("default", "1001"), (1, 0))
        self.successResultOf(self.boxes.delete(second))
        self.assertEqual(self.boxes.counts("default", "1001"), (0, 0))
        self.assertEqual(len(self.world.changes), 5)

    def test_shared_box_counts_on_every_phone(self) -> None:
        self.world.leave(self, box="8000")
        self.world.leave(self, box="1001")
        self.assertEqual(self.boxes.boxes_of_phone("default", "1001"), ("1001", "8000"))
        self.assertEqual(self.boxes.phone_counts("default", "1001"), (2, 0))
        self.assertEqual(self.boxes.phone_counts("default", "1000"), (1, 0))
        self.assertEqual(self.boxes.phone_counts("acme", "1000"), (0, 0))

    def test_emailed_and_unsent(self) -> None:
        message = self.world.leave(self)
        self.assertEqual(self.successResultOf(self.boxes.unsent()), [])  # the box has no email
        mailed = self.successResultOf(self.boxes.mark_emailed(message))
        self.assertTrue(mailed.emailed)

    def test_pins(self) -> None:
        self.assertTrue(self.successResultOf(self.boxes.check_pin("default", "1001", "1001")))
        self.assertFalse(self.successResultOf(self.boxes.check_pin("default", "1001", "4321")))
        self.assertFalse(self.successResultOf(self.boxes.check_pin("default", "9999", "1001")))
        self.successResultOf(self.boxes.set_pin("default", "1001", "24680"))
        stored = self.world.store.pins[("default", "1001")]
        self.assertTrue(stored.startswith("pbkdf2_sha256$"))
        self.assertNotIn("24680", stored)
        self.assertTrue(self.successResultOf(self.boxes.check_pin("default", "1001", "24680")))
        self.assertFalse(self.successResultOf(self.boxes.check_pin("default", "1001", "1001")))
        self.failureResultOf(self.boxes.set_pin("default", "1001", "12"), ValueError)
        self.failureResultOf(self.boxes.set_pin("default", "9999", "1234"), KeyError)

    def test_pin_hash_format(self) -> None:
        stored = files.hash_pin("1234", iterations=10)
        self.assertTrue(files.pin_matches("1234", stored))
        self.assertFalse(files.pin_matches("1235", stored))
        self.assertNotEqual(stored, files.hash_pin("1234", iterations=10))  # salted
        for broken in ("", "x$1$00$00", "pbkdf2_sha256$0$00$00", "pbkdf2_sha256$1$zz$00"):
            self.assertFalse(files.pin_matches("1234", broken))

    def test_greetings(self) -> None:
        self.assertIsNone(self.boxes.greeting("default", "1001", "busy"))
        path = self.boxes.greeting_path("default", "1001", "busy")
        self.assertEqual(path, self.world.data_dir / "voicemail/default/1001/greetings/busy.wav")
        record(path)
        self.assertEqual(self.boxes.greeting("default", "1001", "busy"), path)
        with self.assertRaises(ValueError):
            self.boxes.greeting_path("default", "1001", "../x")


class RecoveryTests(SynchronousTestCase):
    """What a `kill -9` may leave, and what the next start makes of it."""

    def setUp(self) -> None:
        self.world = World(self)
        self.boxes = self.world.boxes
        self.box_dir = self.boxes.box_dir("default", "1001")

    def restart(self) -> World:
        world = World(self, self.world.store, self.world.data_dir)
        self.successResultOf(world.boxes.recover())
        return world

    def test_counts_are_loaded_and_watchers_told(self) -> None:
        self.successResultOf(self.boxes.recover())
        first = self.world.leave(self)
        self.world.leave(self, box="8000")
        self.successResultOf(self.boxes.mark_old(first))
        world = self.restart()
        self.assertEqual(world.boxes.counts("default", "1001"), (0, 1))
        self.assertEqual(world.boxes.counts("default", "8000"), (1, 0))
        self.assertEqual(sorted(world.changes), [("default", "1001"), ("default", "8000")])
        self.assertEqual(world.arrived, [])

    def test_killed_during_recording(self) -> None:
        """A temp file and a sidecar without audio: both go, nothing is counted."""
        self.successResultOf(self.boxes.recover())
        path = self.boxes.prepare("default", "1001")
        (self.box_dir / ".tmp-abc123.wav").write_bytes(b"RIFF half")
        greetings = self.boxes.greeting_path("default", "1001", "name").parent
        (greetings / ".tmp-x.wav").write_bytes(b"RIFF")
        world = self.restart()
        self.assertEqual(sorted(os.listdir(self.box_dir)), ["greetings"])
        self.assertEqual(os.listdir(greetings), [])
        self.assertEqual(world.boxes.counts("default", "1001"), (0, 0))
        self.assertFalse(path.with_suffix(".json").exists())

    def test_a_shared_store_leaves_the_other_nodes_work_alone(self) -> None:
        """Nodes sharing the store (PostgreSQL): a row whose audio is not here is kept and counted; a fresh
        temp file or unindexed WAV (another node recording, about to commit) stays; an old temp file goes."""
        self.successResultOf(self.boxes.recover())
        message = self.world.leave(self)
        self.boxes.audio_path(message).unlink()  # on another node's storage
        fresh = self.box_dir / ".tmp-fresh.wav"
        fresh.write_bytes(b"RIFF half")
        stale = self.box_dir / ".tmp-stale.wav"
        stale.write_bytes(b"RIFF half")
        pending = self.boxes.prepare("default", "1001", caller_number="1002")
        record(pending, 3.0)
        for path in (fresh, pending, pending.with_suffix(".json")):
            os.utime(path, (NOW - 60, NOW - 60))
        os.utime(stale, (NOW - 7200, NOW - 7200))
        world = World(self, self.world.store, self.world.data_dir)
        world.boxes.shared = True
        self.successResultOf(world.boxes.recover())
        self.assertEqual(world.boxes.counts("default", "1001"), (1, 0))
        self.assertEqual(
            [m.id for m in self.successResultOf(world.boxes.messages("default", "1001"))], [message.id]
        )
        self.assertTrue(fresh.exists() and pending.exists() and pending.with_suffix(".json").exists())
        self.assertFalse(stale.exists())

    def test_killed_between_rename_and_commit_adopts(self) -> None:
        """The caller finished: the WAV with its sidecar becomes a new message."""
        self.successResultOf(self.boxes.recover())
        path = self.boxes.prepare("default", "1001", caller_number="1002", caller_name="Bob", call_id="c9")
        record(path, 3.0)
        world = self.restart()
        (message,) = self.successResultOf(world.boxes.messages("default", "1001"))
        self.assertEqual(
            (message.id, message.caller_number, message.caller_name, message.call_id, message.received_at),
            (path.stem, "1002", "Bob", "c9", NOW),
        )
        self.assertAlmostEqual(message.duration, 3.0)
        self.assertEqual(world.boxes.counts("default", "1001"), (1, 0))
        self.assertEqual([m for m, _ in world.arrived], [message])
        self.assertEqual(os.listdir(self.box_dir), [path.name])

    def test_short_or_unexplained_audio_is_removed(self) -> None:
        self.successResultOf(self.boxes.recover())
        short = self.boxes.prepare("default", "1001")
        record(short, 0.5)
        stray = self.box_dir / "1700000000000-aaaaaa.wav"
        record(stray)
        world = self.restart()
        self.assertEqual(os.listdir(self.box_dir), [])
        self.assertEqual(world.boxes.counts("default", "1001"), (0, 0))

    def test_row_without_audio_is_dropped(self) -> None:
        self.successResultOf(self.boxes.recover())
        message = self.world.leave(self)
        os.unlink(self.boxes.audio_path(message))
        world = self.restart()
        self.assertEqual(self.successResultOf(world.boxes.messages("default", "1001")), [])
        self.assertEqual(world.boxes.counts("default", "1001"), (0, 0))

    def test_foreign_files_are_left_alone(self) -> None:
        self.box_dir.mkdir(parents=True)
        (self.box_dir / "README").write_text("mine")
        self.restart()
        self.assertEqual(os.listdir(self.box_dir), ["README"])

    def test_unconfigured_box_keeps_its_messages_uncounted(self) -> None:
        self.successResultOf(self.boxes.recover())
        self.world.leave(self)
        orphan_store = self.world.store
        boxes = Mailboxes(orphan_store, self.world.data_dir, {"default": {}}, clock=self.world.clock)
        self.successResultOf(boxes.recover())
        self.assertEqual(boxes.counts("default", "1001"), (0, 0))
        self.assertEqual(len(orphan_store.voicemail), 1)
        self.assertEqual(len(os.listdir(self.box_dir)), 1)


class SqliteRestartTests(TestCase):
    """With the SQLite store: a message committed before the store closes is counted after reopening."""

    async def test_message_survives_reopening(self) -> None:
        data_dir = Path(tempfile.mkdtemp(prefix="pbx-vm-"))
        self.addCleanup(shutil.rmtree, data_dir, ignore_errors=True)
        store = SqliteLocationStore(data_dir / "pbx.sqlite3", reactor)
        boxes = Mailboxes(store, data_dir, BOXES, clock=Clock())
        await boxes.recover()
        path = boxes.prepare("default", "1001")
        record(path)
        kw: dict[str, Any] = {"caller_number": "1", "caller_name": "", "received_at": NOW, "call_id": ""}
        await boxes.commit("default", "1001", path, duration=2.0, **kw)
        await store.close()
        store = SqliteLocationStore(data_dir / "pbx.sqlite3", reactor)
        self.addCleanup(store.close)
        again = Mailboxes(store, data_dir, BOXES, clock=Clock())
        await again.recover()
        self.assertEqual(again.counts("default", "1001"), (1, 0))


class BeforeRecoveryTests(SynchronousTestCase):
    def test_nothing_is_recorded_before_recovery(self) -> None:
        """Recovery would take a new recording for a leftover: until it is done, prepare refuses."""
        world = World(self)
        with self.assertRaises(StorageUnavailable):
            world.boxes.prepare("default", "1001")
        self.successResultOf(world.boxes.recover())
        world.boxes.prepare("default", "1001")


class ConfigPinHashTests(SynchronousTestCase):
    def test_a_hashed_pin_from_the_config(self) -> None:
        boxes = {"default": {"1001": Mailbox(number="1001", pin_hash=files.hash_pin("8642", iterations=10))}}
        mailboxes = Mailboxes(MemoryLocationStore(), Path(self.mktemp()), boxes, clock=Clock())
        self.assertTrue(self.successResultOf(mailboxes.check_pin("default", "1001", "8642")))
        self.assertFalse(self.successResultOf(mailboxes.check_pin("default", "1001", "")))
        self.assertFalse(self.successResultOf(mailboxes.check_pin("default", "1001", "1001")))
