"""The voicemail deposit inside a real B2BUA call (tests/b2bua/fakes.py harness, `FakeEngine` endpoints, a
fake `IMailboxes`): the busy greeting after a busy dial, the caller's identity from the call, and `0` for
the operator, which the interpreter dials (bridged when answered, the next line when not)."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from pbx.apps import IvrApps
from pbx.apps.voicemail.deposit import VoicemailDeposit
from tests.apps.fakes import FakeEndpoint, FakeEngine
from tests.apps.test_voicemail_deposit import Box, FakeMailboxes
from tests.b2bua.fakes import TENANT, CallerPhone, Harness


class Pbx:
    def __init__(self, tmp_path: Path, main: str) -> None:
        self.h = Harness.build(tmp_path / "dialplans", main)
        self.engine = FakeEngine(self.h.clock)
        self.boxes = FakeMailboxes(tmp_path / "voicemail", {(TENANT, "1003"): Box("1003", "Carol")})
        ivr = IvrApps(self.engine, tmp_path / "dialplans", tmp_path / "recordings")
        ivr.register(self.h.b2bua.apps)
        VoicemailDeposit(ivr, self.boxes, self.h.clock).register(self.h.b2bua.apps)
        self.clock: Clock = self.h.clock
        self.h.register_1002()

    def call(self, dialed: str) -> CallerPhone:
        phone = self.h.place_call(dialed)
        return phone

    @property
    def endpoint(self) -> FakeEndpoint:
        return self.engine.created[0]


def test_busy_dial_then_the_busy_greeting_and_the_callers_identity(tmp_path: Path) -> None:
    pbx = Pbx(tmp_path, "dial 1002 timeout=20\nvoicemail 1003 if=busy\nhangup\n")
    phone = pbx.call("1003")
    pbx.h.callee().respond(486)
    assert phone.txn is not None and phone.txn.statuses[-1] == 200  # the PBX answered for the mailbox
    phone.ack()
    assert pbx.endpoint.played[0][0][2] == "vm-is-busy"
    assert pbx.boxes.callers == [{"caller_number": "1001", "caller_name": "Alice", "call_id": phone.call_id}]
    pbx.endpoint.press("*")
    pbx.clock.advance(2)  # the beep
    pbx.clock.advance(5)
    pbx.endpoint.press("#")
    (message,) = pbx.boxes.committed
    assert (message["number"], message["caller_number"], message["duration"]) == ("1003", "1001", 5.0)
    pbx.clock.advance(10)  # saved, goodbye, then the PBX hangs up: voicemail ends the actions
    assert pbx.h.b2bua.calls == {}


@pytest.mark.parametrize("callee_answers", [True, False])
def test_zero_dials_the_operator(tmp_path: Path, callee_answers: bool) -> None:
    pbx = Pbx(tmp_path, "voicemail 1003 operator=1002\nplay sorry\n")
    phone = pbx.call("1003")
    phone.ack()
    pbx.clock.advance(1)
    pbx.endpoint.press("0")
    callee = pbx.h.callee()  # the interpreter dials the operator target
    assert pbx.boxes.committed == [] and pbx.boxes.discarded == pbx.boxes.prepared
    if callee_answers:
        callee.answer()
        call = pbx.h.b2bua.calls[phone.call_id]
        assert call.b is not None and pbx.endpoint.closed  # bridged: the PBX's media is gone
        phone.bye()
    else:
        callee.respond(486)
        assert pbx.endpoint.played[-1] == (["sorry"], False)  # the line after voicemail
        pbx.clock.advance(3)
    assert pbx.h.b2bua.calls == {}
