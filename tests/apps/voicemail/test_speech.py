"""What mailbox access says (`pbx.apps.voicemail.speech`): numbers, counts, envelopes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pbx.apps.voicemail.speech import counts, envelope, number, spoken_digits, when
from pbx.media.dtmf import InbandDtmfDetector
from pbx.media.wav import read_pcm

SOUNDS_DIR = Path(__file__).resolve().parents[3] / "sounds" / "en"


@pytest.mark.parametrize(
    ("n", "said"),
    [
        (0, ["digit-0"]),
        (7, ["digit-7"]),
        (13, ["num-13"]),
        (20, ["num-20"]),
        (42, ["num-40", "digit-2"]),
        (100, ["digit-1", "num-hundred"]),
        (305, ["digit-3", "num-hundred", "digit-5"]),
        (999, ["digit-9", "num-hundred", "num-90", "digit-9"]),
        (1234, ["digit-1", "digit-2", "digit-3", "digit-4"]),
    ],
)
def test_numbers(n: int, said: list[str]) -> None:
    assert number(n) == said


def test_a_negative_number_is_refused() -> None:
    with pytest.raises(ValueError):
        number(-1)


def test_caller_numbers_are_spoken_digit_by_digit_without_signs() -> None:
    assert spoken_digits("+49 30-12") == ["digit-4", "digit-9", "digit-3", "digit-0", "digit-1", "digit-2"]


def test_counts_singular_plural_and_none() -> None:
    assert counts(1, 2) == ["you-have", "digit-1", "new-message", "and", "digit-2", "old-messages"]
    assert counts(0, 1) == ["you-have", "digit-0", "new-messages", "and", "digit-1", "old-message"]
    assert counts(0, 0) == ["vm-no-messages"]


def stamp(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


def test_time_of_day() -> None:
    assert when(stamp(2026, 12, 7, 16, 12), UTC) == [
        "day-monday", "month-december", "digit-7", "at", "digit-4", "num-12", "time-pm",
    ]  # fmt: skip
    assert when(stamp(2026, 1, 31, 0, 5), UTC)[-5:] == ["at", "num-12", "time-oh", "digit-5", "time-am"]
    assert when(stamp(2026, 3, 1, 12, 0), UTC)[-4:] == ["at", "num-12", "time-oclock", "time-pm"]


def test_envelope() -> None:
    said = envelope(2, stamp(2026, 12, 7, 9, 30), "1001", UTC)
    assert said[:3] == ["vm-message", "digit-2", "vm-received"]
    assert said[-5:] == ["vm-from", "digit-1", "digit-0", "digit-0", "digit-1"]
    assert envelope(1, 0.0, "anonymous", UTC)[-1] == "vm-from-unknown"


def test_every_prompt_said_is_shipped() -> None:
    said = set(counts(1, 1) + counts(2, 0) + counts(0, 0) + number(999) + number(15) + number(18))
    for day in range(1, 8):  # every weekday, both halves of the day, every kind of minute
        said |= set(envelope(1, stamp(2026, 12, day, 9 + day, day * 7), "0123456789", UTC))
    for month in range(1, 13):
        said |= set(when(stamp(2026, month, 28, 23, 0), UTC))
    said |= {f"num-{n}" for n in range(10, 20)} | {f"num-{n}" for n in range(20, 100, 10)}
    missing = sorted(name for name in said if not (SOUNDS_DIR / f"{name}.wav").is_file())
    assert missing == []


def test_the_mailbox_access_prompts_are_phone_audio_without_false_digits() -> None:
    for name in (
        "vm-access-menu",
        "vm-message-menu",
        "vm-options-menu",
        "vm-enter-mailbox",
        "vm-enter-new-pin",
    ):
        rate, channels, width, pcm = read_pcm(str(SOUNDS_DIR / f"{name}.wav"))
        assert (rate, channels, width) == (8000, 1, 2), name
        assert InbandDtmfDetector().feed(pcm) == [], name
