"""`voicemailmain` inside a real B2BUA call (tests/b2bua/fakes.py harness, `FakeEngine` endpoints, the real
`BruteForceGuard`): the call gives the application the authenticated extension and the source address,
SIP INFO digits reach the PIN entry, wrong PINs block the source, and the PBX hangs up at the end."""

from __future__ import annotations

from pathlib import Path

from pbx.apps import IvrApps
from pbx.apps.voicemail.access import VoicemailAccess
from pbx.registrar import BruteForceGuard
from tests.apps.fakes import FakeEndpoint, FakeEngine
from tests.apps.test_call_ivr import send_info
from tests.apps.voicemail.access_fakes import FakeMailboxes
from tests.b2bua.fakes import CALLER_ADDRESS, TENANT, CallerPhone, Harness


class Access:
    def __init__(self, tmp_path: Path) -> None:
        self.h = Harness.build(tmp_path / "dialplans", "voicemailmain")
        self.engine = FakeEngine(self.h.clock)
        self.boxes = FakeMailboxes(tmp_path, {"1001": "1234"}, tenant=TENANT)
        self.guard = BruteForceGuard(self.h.clock, max_failures=3)
        media = IvrApps(self.engine, tmp_path / "dialplans", tmp_path / "recordings")
        VoicemailAccess(self.boxes, media, self.h.clock, self.guard).register(self.h.b2bua.apps)

    @property
    def endpoint(self) -> FakeEndpoint:
        (endpoint,) = self.engine.created
        return endpoint

    def call(self) -> CallerPhone:
        phone = self.h.place_call("*97")
        phone.ack()
        return phone

    def wait(self, seconds: float) -> None:
        """Let `seconds` pass in small steps (what is scheduled meanwhile runs at its time)."""
        self.h.clock.pump([0.25] * int(seconds * 4))

    def keys(self, digits: str) -> None:
        self.wait(1)
        for digit in digits:
            self.endpoint.press(digit)


def test_own_box_of_the_authenticated_extension_and_goodbye(tmp_path: Path) -> None:
    access = Access(tmp_path)
    phone = access.call()
    assert phone.txn is not None and phone.txn.statuses == [200]
    access.keys("1234#")
    assert access.boxes.checked == [("1001", "1234")]
    access.wait(5)  # "You have no messages"
    access.keys("*")
    access.wait(5)  # "Goodbye"
    assert access.h.b2bua.calls == {}
    assert [s.method for s in access.h.stack.sent("BYE")] == ["BYE"]
    assert access.endpoint.closed
    access.h.location.stop()
    access.h.clock.advance(64)  # the BYE's transaction
    assert access.h.clock.getDelayedCalls() == []


def test_sip_info_digits_enter_the_pin(tmp_path: Path) -> None:
    access = Access(tmp_path)
    phone = access.call()
    access.h.clock.advance(1)
    for digit in "1234#":
        assert send_info(
            phone, f"Signal={digit}\r\nDuration=160\r\n".encode(), "application/dtmf-relay"
        ).statuses == [200]
    assert access.boxes.checked == [("1001", "1234")]
    phone.bye()
    assert access.h.b2bua.calls == {}


def test_wrong_pins_block_the_callers_source(tmp_path: Path) -> None:
    access = Access(tmp_path)
    access.call()
    for pin in ("1111", "2222", "3333"):
        access.keys(pin + "#")
        access.wait(3)  # a second, then "That PIN is incorrect"
    assert access.guard.blocked_sources == [CALLER_ADDRESS[0]]
    assert access.guard.counters["failures"] == 3
    assert access.h.b2bua.calls == {}  # hung up at once
    assert [s.method for s in access.h.stack.sent("BYE")] == ["BYE"]
    access.h.clock.advance(600)  # the block ends
    assert access.guard.blocked_sources == []
