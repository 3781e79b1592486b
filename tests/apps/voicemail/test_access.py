"""Mailbox access (`voicemailmain`): which box, the PIN, wrong PINs and the brute-force guard."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from pbx.apps.voicemail.access import VoicemailAccess
from pbx.dialplan.simulate import simulate_call
from tests.apps.voicemail.access_fakes import FakeGuard
from tests.apps.voicemail.harness import Access


@pytest.fixture
def logged() -> list[str]:
    lines: list[str] = []

    def observe(event: LogEvent) -> None:
        lines.append(formatEvent(event) or "")
        failure = event.get("log_failure")
        if failure is not None:
            lines.append(failure.getTraceback())

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def test_register_plugs_in_voicemailmain(tmp_path: Path) -> None:
    apps: dict[str, object] = {}
    access = Access(tmp_path).access
    access.register(apps)
    assert apps == {"voicemailmain": access.voicemailmain}
    assert isinstance(access, VoicemailAccess)


def test_own_box_right_pin_announces_the_counts(tmp_path: Path) -> None:
    run = Access(tmp_path).start()
    assert run.call.sent == [200]
    run.login("1234").until("vm-no-messages").until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"
    said = run.said()
    assert said[0] == "vm-enter-pin" and "vm-wrong-pin" not in said
    assert said[-1] == "goodbye"
    assert run.call.hung_up == ["pbx"]
    assert run.guard.failures == []
    assert run.boxes.checked == [("1002", "1234")]


def test_counts_of_new_and_old(tmp_path: Path) -> None:
    run = Access(tmp_path)
    run.boxes.add("1002", "a")
    run.boxes.add("1002", "b")
    run.boxes.add("1002", "c", folder="old")
    run.start().login().until("new-messages")
    assert run.ep.played[-1][0] == ["you-have", "digit-2", "new-messages", "and", "digit-1", "old-message"]
    run.call.end()
    assert run.finish() == "closed"


def test_three_wrong_pins_end_the_call_and_count_for_the_guard(tmp_path: Path, logged: list[str]) -> None:
    run = Access(tmp_path).start()
    for pin in ("1111", "2222", "3333"):
        run.login(pin)
    assert run.finish() == "refused"
    assert run.said().count("vm-wrong-pin") == 3 and run.said()[-1] == "goodbye"
    assert run.guard.failures == [("192.0.2.7", "default/1002")] * 3
    assert run.call.hung_up == ["pbx"]
    assert "you-have" not in run.said() and "vm-no-messages" not in run.said()
    text = "\n".join(logged)
    assert "wrong PIN for mailbox default/1002 from 192.0.2.7 (attempt 3 of 3)" in text
    for pin in ("1111", "2222", "3333"):  # the PIN is never logged
        assert pin not in text


def test_max_pin_attempts_is_configurable(tmp_path: Path) -> None:
    run = Access(tmp_path, max_pin_attempts=1).start().login("0000")
    assert run.finish() == "refused"
    assert len(run.guard.failures) == 1


def test_the_right_pin_after_a_wrong_one_opens_the_box(tmp_path: Path) -> None:
    run = Access(tmp_path).start().login("0000").login("1234").until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"
    assert len(run.guard.failures) == 1


def test_a_source_blocked_by_a_wrong_pin_is_hung_up_at_once(tmp_path: Path) -> None:
    run = Access(tmp_path, guard=FakeGuard(max_failures=2)).start().login("1111").login("2222")
    assert run.finish() == "blocked"
    assert len(run.guard.failures) == 2
    assert run.call.hung_up == ["pbx"]
    assert run.said().count("vm-wrong-pin") == 1  # the second wrong PIN gets no answer: the call ends


def test_a_blocked_source_is_refused(tmp_path: Path) -> None:
    run = Access(tmp_path, guard=FakeGuard(blocked=("192.0.2.7",))).start()
    assert run.finish() == "blocked"
    assert run.call.rejected == [(403, "Forbidden")]
    assert run.call.sent == [] and run.engine.created == []


def test_ask_with_an_unknown_box_is_exactly_a_wrong_pin(tmp_path: Path) -> None:
    def attempt(box: str, pin: str) -> Access:
        run = Access(tmp_path).start("voicemailmain ask")
        for _ in range(3):
            run.until("vm-enter-mailbox").keys(box + "#").login(pin)
        assert run.finish() == "refused"
        return run

    unknown, wrong = attempt("7777", "1234"), attempt("1002", "0000")
    assert unknown.said() == wrong.said()
    assert [p for p, _ in unknown.ep.played] == [p for p, _ in wrong.ep.played]
    assert unknown.guard.failures == [("192.0.2.7", "default/7777")] * 3
    assert wrong.guard.failures == [("192.0.2.7", "default/1002")] * 3
    assert unknown.boxes.checked == [("7777", "1234")] * 3  # the PIN is checked even for no box


def test_ask_opens_the_box_typed(tmp_path: Path) -> None:
    run = Access(tmp_path).start("voicemailmain ask")
    run.until("vm-enter-mailbox").keys("1003#").login("987654").until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"
    assert run.boxes.checked == [("1003", "987654")]


def test_a_named_box(tmp_path: Path) -> None:
    run = Access(tmp_path).start("voicemailmain 1003")
    run.login("1234")  # 1002's PIN does not open 1003
    run.login("987654").until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"
    assert run.guard.failures == [("192.0.2.7", "default/1003")]
    assert "vm-enter-mailbox" not in run.said()


def test_a_named_unknown_box_is_a_wrong_pin(tmp_path: Path) -> None:
    run = Access(tmp_path).start("voicemailmain 4444")
    for _ in range(3):
        run.login("1234")
    assert run.finish() == "refused"
    assert run.guard.failures == [("192.0.2.7", "default/4444")] * 3


def test_a_caller_without_a_box_is_asked_for_one(tmp_path: Path) -> None:
    run = Access(tmp_path, extension="1009").start()
    run.until("vm-enter-mailbox").keys("1002#").login("1234").until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"


def test_no_pin_typed_is_a_missed_attempt_not_a_failed_authentication(tmp_path: Path) -> None:
    run = Access(tmp_path).start()
    assert run.finish() == "refused"  # three prompts, no key
    assert run.said().count("vm-enter-pin") == 3
    assert run.guard.failures == [] and run.boxes.checked == []


def test_a_too_long_pin_is_wrong(tmp_path: Path) -> None:
    run = Access(tmp_path, max_pin_attempts=1).start().login("1234" * 4)
    assert run.finish() == "refused"
    assert run.boxes.checked == [("1002", "1234123412341")]  # 13 digits: longer than any PIN


def test_hanging_up_during_the_pin(tmp_path: Path) -> None:
    run = Access(tmp_path).start().until("vm-enter-pin").keys("12")
    run.call.end()
    assert run.finish() == "closed"
    assert run.guard.failures == [] and run.call.hung_up == []


def test_no_media_fails(tmp_path: Path) -> None:
    run = Access(tmp_path)
    run.call._sdp = None
    run.start()
    assert run.finish() == "failed"
    assert run.engine.created == []


def test_a_failing_store_is_logged_and_the_call_hung_up(tmp_path: Path, logged: list[str]) -> None:
    run = Access(tmp_path)

    def broken(tenant: str, number: str) -> object:
        raise OSError("disk gone")

    run.boxes.messages = broken  # type: ignore[method-assign]
    run.start().login()
    assert run.finish() == "failed"
    assert run.call.hung_up == ["pbx"]
    assert any("mailbox access failed" in line for line in logged)


def test_the_simulator_shows_mailbox_access() -> None:
    from tests.dialplan.test_simulate import Script, new_context

    out = simulate_call(Script({"main": "voicemailmain ask\nhangup"}), new_context(), [])
    assert out[-1].startswith("# end: mailbox access")


@pytest.mark.parametrize(("cost", "answered"), [(0.0, 1.0), (0.7, 1.0), (1.5, 1.5)])
def test_a_wrong_pin_is_answered_a_second_after_the_entry_whatever_the_check_costs(
    tmp_path: Path, cost: float, answered: float
) -> None:
    """An unknown box (nothing to check) and a hashed PIN (a PBKDF2 in a thread) sound the same."""
    run = Access(tmp_path, max_pin_attempts=1)
    run.boxes.check_pin = lambda tenant, number, pin: deferLater(run.clock, cost, lambda: False)  # type: ignore[method-assign]
    run.start().until("vm-enter-pin").keys("0000#")
    typed = run.clock.seconds()
    while "vm-wrong-pin" not in run.ep.played[-1][0]:
        run.clock.advance(0.05)
    assert run.clock.seconds() - typed == pytest.approx(answered, abs=0.06)
    assert run.finish() == "refused"
