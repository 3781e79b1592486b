"""Drives `voicemailmain` against the fakes on a `task.Clock`: start it, wait for a prompt, press keys."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from pbx.apps import IvrApps
from pbx.apps.voicemail.access import VoicemailAccess
from pbx.apps.voicemail.menu import MenuSettings
from pbx.dialplan.actions import parse_line
from tests.apps.fakes import FakeEndpoint, FakeEngine
from tests.apps.voicemail.access_fakes import AccessCall, FakeGuard, FakeMailboxes

PINS = {"1002": "1234", "1003": "987654"}
SOUNDS_DIR = Path(__file__).resolve().parents[3] / "sounds" / "en"


class Access:
    """One call to `voicemailmain` with fake media, mailboxes and guard."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        guard: FakeGuard | None = None,
        extension: str = "1002",
        max_pin_attempts: int = 3,
    ) -> None:
        self.clock = Clock()
        self.engine = FakeEngine(self.clock)
        self.boxes = FakeMailboxes(tmp_path, PINS)
        self.guard = guard if guard is not None else FakeGuard()
        media = IvrApps(self.engine, tmp_path / "dialplans", tmp_path / "recordings")
        self.access = VoicemailAccess(
            self.boxes,
            media,
            self.clock,
            self.guard,
            max_pin_attempts=max_pin_attempts,
            settings=MenuSettings(zone=UTC),
        )
        self.call = AccessCall(extension)
        self.result: Deferred[str] | None = None

    def start(self, line: str = "voicemailmain") -> Access:
        action = parse_line(line)
        assert action is not None
        self.result = ensureDeferred(self.access.voicemailmain(self.call, action))
        return self

    @property
    def ep(self) -> FakeEndpoint:
        (endpoint,) = self.engine.created
        return endpoint

    def said(self) -> list[str]:
        """Every item played so far, in order."""
        if not self.engine.created:
            return []
        return [item for items, _ in self.ep.played for item in items]

    def until(self, name: str, limit: float = 300.0) -> Access:
        """Advance the clock until `name` is being played (AssertionError after `limit` seconds)."""
        waited = 0.0
        while waited <= limit:
            if self.ep.playing and name in self.ep.played[-1][0]:
                return self
            self.clock.advance(0.25)
            waited += 0.25
        raise AssertionError(f"{name!r} was not played; the last items: {self.said()[-12:]}")

    def keys(self, digits: str) -> Access:
        for digit in digits:
            self.ep.press(digit)
        return self

    def login(self, pin: str = "1234") -> Access:
        return self.until("vm-enter-pin").keys(pin + "#")

    def finish(self, limit: float = 600.0) -> str:
        """Run the clock until the application returns; its result (no timer may be left)."""
        assert self.result is not None
        waited = 0.0
        while not self.result.called and waited <= limit:
            self.clock.advance(0.5)
            waited += 0.5
        results: list[Any] = []
        self.result.addBoth(results.append)
        assert results, f"voicemailmain did not end; the last items: {self.said()[-12:]}"
        assert self.clock.getDelayedCalls() == []
        unshipped = {n for n in self.said() if ":" not in n and not n.endswith(".wav")}
        assert {n for n in unshipped if not (SOUNDS_DIR / f"{n}.wav").is_file()} == set()
        return str(results[0])
