"""Errors of the SIP library.

`SipParseError` is raised by the parsers (RFC 3261 section 25 grammar, section 18.3 framing); `SipError` is
raised by code under a transaction user and turned into a final response at exactly one edge (the stack).
This module knows nothing of transports or transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pbx.sip.message import Request

MAX_REASON = 80


def safe_reason(text: str) -> str:
    """A reason phrase (RFC 3261 25.1 `Reason-Phrase`) fit to send: printable ASCII, at most `MAX_REASON`.

    Errors quote parts of what a peer sent ("Unsupported URI Scheme: xyz"); whatever is not printable ASCII
    becomes `?` and the phrase is cut, so no response echoes a peer's bytes verbatim.
    """
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 3] + "..."
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if " " <= c <= "~" else "?" for c in text)


class SipParseError(ValueError):
    """Input that is not a well-formed SIP message or header.

    Attributes:
        reason: a short phrase fit for a `400` reason phrase ("Bad CSeq header"), sanitised by `safe_reason`.
        request: the partially parsed request when the start line was a request line and the headers could be
            split, so that a `400` can still be routed back; None otherwise.
        status: the response status for the request (400, or 505 for another SIP version, 513 when too large).
    """

    def __init__(self, reason: str, request: Request | None = None, status: int = 400) -> None:
        reason = safe_reason(reason)
        super().__init__(reason)
        self.reason = reason
        self.request = request
        self.status = status


class SipError(Exception):
    """A request that must be answered with a final response other than 2xx.

    Raised by transaction users; the stack turns it into the response.
    """

    def __init__(
        self, status: int, reason: str | None = None, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        if reason is not None:
            reason = safe_reason(reason)
        super().__init__(f"{status} {reason or ''}".strip())
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)
