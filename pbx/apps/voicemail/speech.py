"""What mailbox access says, as lists of prompt names: numbers, counts, and a message's envelope.

The prompts are the shipped ones (`scripts/make_prompts`): `digit-0`..`digit-9`, `num-10`..`num-19`,
`num-20`..`num-90` (tens), `num-hundred`, the weekdays `day-monday`.., the months `month-january`..,
`time-oh`, `time-oclock`, `time-am`, `time-pm`, and the words of the counts and the envelope. A tenant may
override any of them (`DIALPLAN_DIR/TENANT/sounds/NAME.wav`): the application looks each name up.

"You have 2 new messages and 1 old message"; "Message 3, received Monday, December 7, at 4 12 PM, from
5 5 5 1 2 3 4". Nothing here knows about calls, media or the clock: time stamps are given, with the zone
to speak them in.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

__all__ = ["counts", "envelope", "number", "spoken_digits", "when"]

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)


def number(n: int) -> list[str]:
    """A whole number as prompts: 0-999 in words ("one hundred twenty three"), larger ones digit by digit.

    Raises:
        ValueError: a negative number.
    """
    if n < 0:
        raise ValueError("a count cannot be negative")
    if n >= 1000:
        return spoken_digits(str(n))
    if n < 10:
        return [f"digit-{n}"]
    if n < 20:
        return [f"num-{n}"]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [f"num-{tens * 10}"] + ([f"digit-{ones}"] if ones else [])
    hundreds, rest = divmod(n, 100)
    return [f"digit-{hundreds}", "num-hundred"] + (number(rest) if rest else [])


def spoken_digits(text: str) -> list[str]:
    """The digits of `text` one by one (anything else, such as `+`, `*` or letters, is not spoken)."""
    return [f"digit-{c}" for c in text if c in "0123456789"]


def counts(new: int, old: int) -> list[str]:
    """ "You have N new message(s) and M old message(s)", or "You have no messages" when both are 0."""
    if not new and not old:
        return ["vm-no-messages"]
    return [
        "you-have",
        *number(new),
        "new-message" if new == 1 else "new-messages",
        "and",
        *number(old),
        "old-message" if old == 1 else "old-messages",
    ]


def when(timestamp: float, zone: tzinfo | None) -> list[str]:
    """A moment as "Monday, December 7, at 4 12 PM" (`zone` None: the PBX host's local time)."""
    moment = datetime.fromtimestamp(timestamp, zone)
    hour = moment.hour % 12 or 12
    if moment.minute == 0:
        minutes = ["time-oclock"]
    elif moment.minute < 10:
        minutes = ["time-oh", f"digit-{moment.minute}"]
    else:
        minutes = number(moment.minute)
    return [
        f"day-{_WEEKDAYS[moment.weekday()]}",
        f"month-{_MONTHS[moment.month - 1]}",
        *number(moment.day),
        "at",
        *number(hour),
        *minutes,
        "time-am" if moment.hour < 12 else "time-pm",
    ]


def envelope(position: int, received_at: float, caller_number: str, zone: tzinfo | None) -> list[str]:
    """What precedes a message: "Message N, received <when>, from <the caller's digits>" (or "from an
    unknown caller" when the number has no digit: withheld or anonymous).

    Args:
        position: the message's place in the box, from 1.
        received_at: when it was left (epoch seconds).
        caller_number: the caller's number as stored.
        zone: the time zone to speak the time in (None: the host's).
    """
    digits = spoken_digits(caller_number)
    caller = ["vm-from", *digits] if digits else ["vm-from-unknown"]
    return ["vm-message", *number(position), "vm-received", *when(received_at, zone), *caller]
