"""Mailbox access after the PIN (`pbx.apps.voicemail.menu`): every key of the main menu, the messages and
the mailbox options, the timeouts, and the PIN change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import fail, succeed

from pbx.media.interfaces import RecordingResult
from tests.apps.voicemail.harness import Access


def opened(tmp_path: Path, *messages: tuple[str, str]) -> Access:
    """A call in box 1002 holding `messages` ((id, folder) ...), right after the PIN."""
    run = Access(tmp_path)
    for at, (msg_id, folder) in enumerate(messages):
        run.boxes.add("1002", msg_id, folder=folder, at=1_765_000_000.0 + 3600 * at)
    return run.start().login()


def audio(run: Access, msg_id: str) -> str:
    return str(run.boxes.root / "voicemail" / "default" / "1002" / f"{msg_id}.wav")


def heard(run: Access) -> list[str]:
    """The messages whose audio was played, in order."""
    return [Path(item).stem for item in run.said() if item.startswith("/")]


def test_messages_play_after_the_counts_new_first_with_their_envelope(tmp_path: Path) -> None:
    run = opened(tmp_path, ("old1", "old"), ("new1", "new"))
    run.until("vm-message")
    envelope = run.ep.played[-1][0]
    assert envelope[:3] == ["vm-message", "digit-1", "vm-received"]
    assert envelope[-8:] == [
        "vm-from",
        "digit-5",
        "digit-5",
        "digit-5",
        "digit-1",
        "digit-2",
        "digit-3",
        "digit-4",
    ]
    run.until(audio(run, "new1"))
    assert run.boxes.folder("1002", "new1") == "new"
    run.until("vm-message-menu")  # played to its end: heard
    assert run.boxes.folder("1002", "new1") == "old"
    run.keys("6").until(audio(run, "old1")).until("vm-message-menu").keys("6")
    run.until("vm-no-more-messages").until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"
    assert heard(run) == ["new1", "old1"]
    assert run.boxes.marked == ["new1"]


def test_7_deletes_and_the_next_message_plays(tmp_path: Path) -> None:
    run = opened(tmp_path, ("a", "new"), ("b", "new"))
    run.until("vm-message-menu").keys("7").until("vm-message-deleted").until(audio(run, "b"))
    assert run.boxes.deleted == ["a"]
    run.until("vm-message-menu").keys("7").until("vm-no-more-messages").until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"
    assert run.boxes.deleted == ["a", "b"] and run.boxes.store["1002"] == []


def test_7_during_the_envelope_deletes_at_once_without_hearing_it(tmp_path: Path) -> None:
    run = opened(tmp_path, ("a", "new"))
    run.until("vm-received").keys("7").until("vm-message-deleted")
    assert run.boxes.deleted == ["a"] and run.boxes.marked == []
    run.until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"
    assert heard(run) == []


def test_9_saves_the_message_as_old_and_it_stays(tmp_path: Path) -> None:
    run = opened(tmp_path, ("a", "new"), ("b", "new"))
    run.until(audio(run, "a")).keys("9").until("vm-message-saved")
    assert run.boxes.folder("1002", "a") == "old"
    run.until(audio(run, "b"))
    run.call.end()
    assert run.finish() == "closed"
    assert run.boxes.deleted == [] and run.boxes.folder("1002", "b") == "new"


def test_hash_skips_to_the_next_and_marks_old(tmp_path: Path) -> None:
    run = opened(tmp_path, ("a", "new"), ("b", "new"))
    run.until(audio(run, "a")).keys("#").until(audio(run, "b"))
    assert run.boxes.folder("1002", "a") == "old"  # skipped past
    run.call.end()
    assert run.finish() == "closed"


def test_4_goes_back_and_5_repeats(tmp_path: Path) -> None:
    run = opened(tmp_path, ("a", "new"), ("b", "new"))
    run.until(audio(run, "a")).keys("4").until("vm-first-message")  # nothing before the first
    run.until("vm-message-menu").keys("5").until(audio(run, "a"))
    run.until("vm-message-menu").keys("6").until(audio(run, "b")).keys("4")  # b interrupted: stays new
    run.until(audio(run, "a")).until("vm-message-menu").keys("*")
    run.until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"
    assert heard(run) == ["a", "a", "b", "a"]
    assert run.boxes.folder("1002", "b") == "new"


def test_1_at_the_main_menu_plays_the_messages_again(tmp_path: Path) -> None:
    run = opened(tmp_path, ("a", "new"))
    run.until("vm-message-menu").keys("*").until("vm-access-menu").keys("1").until(audio(run, "a"))
    run.until("vm-message-menu").keys("6").until("vm-no-more-messages")
    run.until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"
    assert heard(run) == ["a", "a"]


def test_an_empty_box_goes_to_the_main_menu(tmp_path: Path) -> None:
    run = opened(tmp_path).until("vm-access-menu").keys("1").until("vm-no-messages")
    run.until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"


def test_a_key_during_the_counts_is_a_main_menu_key(tmp_path: Path) -> None:
    run = opened(tmp_path, ("a", "new")).until("you-have").keys("*")
    assert run.finish() == "goodbye"
    assert heard(run) == []


def test_no_key_repeats_the_menu_three_times_then_goodbye(tmp_path: Path) -> None:
    run = opened(tmp_path)
    assert run.finish() == "timeout"
    said = run.said()
    assert said.count("vm-access-menu") == 4 and said[-1] == "goodbye"
    assert run.call.hung_up == ["pbx"]


def test_the_message_menu_times_out_too(tmp_path: Path) -> None:
    run = opened(tmp_path, ("a", "new"))
    assert run.finish() == "timeout"
    assert run.said().count("vm-message-menu") == 4 and run.said()[-1] == "goodbye"


def test_an_unknown_key_says_invalid_and_counts_as_a_miss(tmp_path: Path) -> None:
    run = (
        opened(tmp_path).until("vm-access-menu").keys("8").until("invalid").until("vm-access-menu").keys("*")
    )
    assert run.finish() == "goodbye"
    run = opened(tmp_path / "2")
    for _ in range(4):
        run.until("vm-access-menu").keys("3")
    assert run.finish() == "timeout"


def test_0_options_and_star_back_to_the_message(tmp_path: Path) -> None:
    run = opened(tmp_path, ("a", "new"))
    run.until("vm-message-menu").keys("0").until("vm-options-menu").keys("*")
    run.until("vm-message-menu").keys("7").until("vm-message-deleted")
    assert run.boxes.deleted == ["a"]
    run.until("vm-access-menu").keys("0").until("vm-options-menu").keys("*").until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"


def test_options_record_the_greetings_and_the_name(tmp_path: Path) -> None:
    run = opened(tmp_path).until("vm-access-menu").keys("0")
    for key, kind, prompt, done in (
        ("1", "unavailable", "vm-record-greeting", "vm-greeting-recorded"),
        ("2", "busy", "vm-record-greeting", "vm-greeting-recorded"),
        ("3", "name", "vm-record-name", "vm-name-recorded"),
    ):
        run.until("vm-options-menu").keys(key).until(prompt)
        assert run.ep.played[-1][0] == [prompt, "tone:beep"]
        run.clock.advance(4.5)  # after the beep: recording
        run.clock.advance(3)
        run.keys("#").until(done)
        path = run.boxes.greeting_path("default", "1002", kind)
        assert run.ep.records[-1]["path"] == str(path) and path.parent.is_dir()
    assert [r["max_seconds"] for r in run.ep.records] == [60.0, 60.0, 10.0]
    run.until("vm-options-menu").keys("*").until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"


def test_a_recording_with_no_audio_or_an_unwritable_disk_says_nothing_was_recorded(tmp_path: Path) -> None:
    run = opened(tmp_path).until("vm-access-menu").keys("0")
    outcomes: list[Any] = [succeed(RecordingResult(None, 0.0, "no_audio")), fail(OSError("read-only"))]
    run.ep.record = lambda *args, **kwargs: outcomes.pop(0)  # type: ignore[method-assign]
    for _ in range(2):
        run.until("vm-options-menu").keys("2").until("vm-nothing-recorded")
    run.call.end()
    assert run.finish() == "closed"


def test_change_pin(tmp_path: Path) -> None:
    run = opened(tmp_path).until("vm-access-menu").keys("0").until("vm-options-menu").keys("4")
    run.until("vm-enter-new-pin").keys("24680#").until("vm-reenter-pin").keys("24680#").until(
        "vm-pin-changed"
    )
    assert run.boxes.pins["1002"] == "24680"
    run.until("vm-options-menu").keys("*").until("vm-access-menu").keys("*")
    assert run.finish() == "goodbye"


def test_change_pin_needs_two_equal_entries_of_4_to_12_digits(tmp_path: Path) -> None:
    run = opened(tmp_path).until("vm-access-menu").keys("0")
    run.until("vm-options-menu").keys("4").until("vm-enter-new-pin").keys("123#").until("vm-pin-invalid")
    run.until("vm-options-menu").keys("4").until("vm-enter-new-pin").keys("1" * 13).until("vm-pin-invalid")
    run.until("vm-options-menu").keys("4").until("vm-enter-new-pin").keys("5555#")
    run.until("vm-reenter-pin").keys("5556#").until("vm-pins-do-not-match")
    run.until("vm-options-menu").keys("4").until("vm-enter-new-pin").keys("123456789012")  # 12: no # needed
    run.until("vm-reenter-pin").keys("123456789012#").until("vm-pin-changed")
    assert run.boxes.pins["1002"] == "123456789012"
    run.call.end()
    assert run.finish() == "closed"
