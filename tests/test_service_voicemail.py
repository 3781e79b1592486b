"""The voicemail service (`pbx/service/voicemail.py`): the mailboxes built from the config over the given
store, recovered at start; `when_ready` waits for that before the PBX says it is ready."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from pbx.config import load_config
from pbx.service import when_ready
from pbx.service.voicemail import VoicemailService, build_voicemail, mailbox_settings
from pbx.store import MemoryLocationStore

EXAMPLE = Path(__file__).resolve().parent.parent / "pbx.example.toml"


class SlowStore(MemoryLocationStore):
    """A store whose `all_messages` answers when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred[Any]] = []

    def all_messages(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


class VoicemailServiceTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        config = load_config(EXAMPLE)
        self.config = dataclasses.replace(config, data_dir=Path(self.mktemp()))

    def test_the_demo_boxes(self) -> None:
        boxes = mailbox_settings(self.config)
        self.assertEqual(sorted(boxes["default"]), ["1000", "1001", "1002", "1003", "8000"])
        built = build_voicemail(self.config, MemoryLocationStore(), Clock())
        self.assertEqual(built.mailboxes.boxes_of_phone("default", "1000"), ("1000", "8000"))
        self.assertEqual(built.mailboxes.root, self.config.data_dir / "voicemail")

    def test_ready_after_recovery(self) -> None:
        store = SlowStore()
        voicemail = build_voicemail(self.config, store, Clock())
        top = service.MultiService()
        voicemail.setServiceParent(top)
        service.Service().setServiceParent(top)  # services without `ready` are not waited for
        ready = when_ready(top)
        top.startService()
        self.assertNoResult(ready)
        store.pending[0].callback([])
        self.successResultOf(ready)
        self.assertEqual(voicemail.mailboxes.counts("default", "1000"), (0, 0))
        voicemail.mailboxes.prepare("default", "1000")  # recovered: recording allowed

    def test_a_failed_recovery_is_logged_and_the_pbx_still_starts(self) -> None:
        store = SlowStore()
        voicemail = VoicemailService(build_voicemail(self.config, store, Clock()).mailboxes)
        voicemail.startService()
        store.pending[0].errback(OSError("database disk image is malformed"))
        self.successResultOf(voicemail.ready)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
