"""The `message-summary` event package body (RFC 3842 5): message waiting indication.

```
Messages-Waiting: yes
Message-Account: sip:1000@pbx.example.com
Voice-Message: 2/8 (0/2)
```

`MessageSummary` is an immutable value that `parse`s a body strictly (bounded size and counts, `ValueError`
with a precise message) and writes it back (`to_bytes`) so that parsing what it wrote gives the same value.
The optional message headers after the summary (RFC 3842 5.2, `msg-summary` extensions) are skipped when
parsing and never written. This module knows nothing of subscriptions, mailboxes or the PBX.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

CONTENT_TYPE: Final = "application/simple-message-summary"
EVENT: Final = "message-summary"

# The message-context-classes of RFC 3458 in the order they are written, with their header names.
CLASSES: Final = (
    ("voice", "Voice-Message"),
    ("fax", "Fax-Message"),
    ("pager", "Pager-Message"),
    ("multimedia", "Multimedia-Message"),
    ("text", "Text-Message"),
    ("none", "None"),
)
_BY_HEADER: Final = {header.lower(): name for name, header in CLASSES}
MAX_COUNT: Final = 2**31 - 1
MAX_BODY: Final = 8192
_COUNTS = re.compile(r"(\d{1,10})\s*/\s*(\d{1,10})(?:\s*\(\s*(\d{1,10})\s*/\s*(\d{1,10})\s*\))?")


@dataclass(frozen=True, slots=True)
class MessageCounts:
    """Counts of one message class: `new/old (urgent_new/urgent_old)`; the urgent pair is optional."""

    new: int = 0
    old: int = 0
    urgent: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        values = (self.new, self.old, *(self.urgent or ()))
        if any(not 0 <= v <= MAX_COUNT for v in values):
            raise ValueError("message counts must be from 0 to 2**31-1")

    def __str__(self) -> str:
        text = f"{self.new}/{self.old}"
        if self.urgent is not None:
            text += f" ({self.urgent[0]}/{self.urgent[1]})"
        return text


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """A `message-summary` body (RFC 3842 5.2).

    Attributes:
        waiting: `Messages-Waiting: yes` (new messages wait) or `no`.
        account: the `Message-Account` URI (the mailbox), or None.
        counts: (class, counts) pairs in the order of `CLASSES`, each class at most once
            (`("voice", MessageCounts(2, 8))`).
    """

    waiting: bool
    account: str | None = None
    counts: tuple[tuple[str, MessageCounts], ...] = ()

    def __post_init__(self) -> None:
        names = [name for name, _ in self.counts]
        order = [name for name, _ in CLASSES if name in names]
        if names != order:
            raise ValueError("message classes must be known, distinct and in the order of CLASSES")
        if self.account is not None and (not self.account or _has_control(self.account)):
            raise ValueError("Message-Account must be a non-empty URI without control characters")

    @classmethod
    def voice(cls, new: int, old: int, account: str | None = None) -> MessageSummary:
        """The usual voicemail summary: waiting when there are new messages."""
        return cls(new > 0, account, (("voice", MessageCounts(new, old)),))

    def count(self, name: str) -> MessageCounts | None:
        """The counts of one class (`"voice"`), or None when the body has none."""
        return next((counts for n, counts in self.counts if n == name), None)

    def to_bytes(self) -> bytes:
        lines = [f"Messages-Waiting: {'yes' if self.waiting else 'no'}"]
        if self.account is not None:
            lines.append(f"Message-Account: {self.account}")
        headers = dict(CLASSES)
        lines.extend(f"{headers[name]}: {counts}" for name, counts in self.counts)
        return ("\r\n".join(lines) + "\r\n").encode()

    @classmethod
    def parse(cls, body: bytes) -> MessageSummary:
        """Parse a body; lines end with CRLF or LF; names are case-insensitive.

        Raises:
            ValueError: too large, not UTF-8, without Messages-Waiting, or with a malformed line.
        """
        if len(body) > MAX_BODY:
            raise ValueError("message-summary body too large")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("message-summary body is not UTF-8") from None
        waiting: bool | None = None
        account: str | None = None
        found: dict[str, MessageCounts] = {}
        for line in text.replace("\r\n", "\n").split("\n"):
            if not line.strip():
                break  # the optional message headers follow a blank line
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError("message-summary line without a colon")
            key, value = name.strip().lower(), value.strip()
            if key == "messages-waiting":
                if value.lower() not in ("yes", "no"):
                    raise ValueError("Messages-Waiting must be yes or no")
                waiting = value.lower() == "yes"
            elif key == "message-account":
                if not value or _has_control(value):
                    raise ValueError("bad Message-Account")
                account = value
            elif key in _BY_HEADER:
                found[_BY_HEADER[key]] = _parse_counts(value)
            # other lines (extension headers) are ignored
        if waiting is None:
            raise ValueError("message-summary without Messages-Waiting")
        counts = tuple((name, found[name]) for name, _ in CLASSES if name in found)
        return cls(waiting, account, counts)


def _parse_counts(value: str) -> MessageCounts:
    match = _COUNTS.fullmatch(value)
    if match is None:
        raise ValueError("bad message counts")
    new, old, urgent_new, urgent_old = match.groups()
    urgent = (int(urgent_new), int(urgent_old)) if urgent_new is not None else None
    return MessageCounts(int(new), int(old), urgent)


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)
