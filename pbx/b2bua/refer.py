"""What a REFER asks and how its progress is told: Refer-To, Replaces, Refer-Sub and the sipfrag NOTIFYs
(RFC 3515, RFC 3891, RFC 3892, RFC 4488, RFC 5589).

- `parse_refer` reads an in-dialog REFER: exactly one `Refer-To` with a SIP URI (its user part is what the
  transferred party is routed to, as if the transferor had dialed it), an optional `Replaces` URI header
  (an attended transfer: the dialog it names is replaced), `Refer-Sub: false` (RFC 4488: no implicit
  subscription, hence no NOTIFY) and `Referred-By` (RFC 3892, kept for the logs only: the PBX knows the
  transferor from the dialog the REFER came in). Bad input is a `SipError` 400 with a fixed reason.
- `parse_replaces` reads a `Replaces` value (`call-id;to-tag=..;from-tag=..[;early-only]`).
- `Referral` is the notifier side of the implicit `refer` subscription (RFC 3515 2.4.4, RFC 6665): NOTIFYs
  in the transferor's INVITE dialog with `Event: refer` and a `message/sipfrag` body holding the status line
  of the transfer (100 Trying, 180 Ringing, 200 OK or the failure), at most one in flight at a time (a
  newer state waits for the answer to the previous one and replaces any state still waiting), the last one
  with `Subscription-State: terminated;reason=noresource`.

This module knows nothing of calls: it reads requests and sends NOTIFYs through an `InviteSession`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from pbx.sip.errors import SipError, SipParseError
from pbx.sip.headers import NameAddress, parse_header_params
from pbx.sip.message import Request
from pbx.sip.uri import SipURI

REFER_EXPIRES = 60
"""Seconds the implicit subscription is said to last (RFC 3515 2.4.4: the notifier chooses)."""

_TARGET = re.compile(r"[0-9A-Za-z*#+._-]{1,64}")
"""What may be routed as a transfer target: a dialable number or extension (never a dialplan action)."""

REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
}


@dataclass(frozen=True, slots=True)
class Replaces:
    """A `Replaces` value (RFC 3891 6.1): the dialog to replace, and whether only an early one may be."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    def matches(self, call_id: str, local_tag: str, remote_tag: str) -> bool:
        """Whether it names the dialog (`call_id`, our tag, the peer's tag). Phones disagree on whose tag is
        `to-tag` (RFC 3891 3: the receiver's): both orders are accepted, the Call-ID must match."""
        if call_id != self.call_id:
            return False
        tags = {self.to_tag, self.from_tag}
        return tags == {local_tag, remote_tag}


@dataclass(frozen=True, slots=True)
class Refer:
    """What a REFER asks for.

    Attributes:
        target: the user part of the Refer-To URI (the number the transferred party is routed to).
        replaces: the dialog the Refer-To's `Replaces` names (attended transfer), or None (blind).
        subscribe: False when the transferor asked for no NOTIFYs (`Refer-Sub: false`, RFC 4488).
        referred_by: the Referred-By header as sent ("" if none), for the logs.
    """

    target: str
    replaces: Replaces | None
    subscribe: bool
    referred_by: str = ""


def parse_replaces(value: str) -> Replaces:
    """A `Replaces` header value.

    Raises:
        SipError: 400 when it is malformed or lacks a tag.
    """
    call_id, _, rest = value.strip().partition(";")
    call_id = call_id.strip()
    if not call_id or len(call_id) > 256:
        raise SipError(400, "Bad Replaces")
    try:
        params = parse_header_params(rest) if rest else ()
    except SipParseError:
        raise SipError(400, "Bad Replaces") from None
    found = {name.lower(): value for name, value in params}
    to_tag, from_tag = found.get("to-tag"), found.get("from-tag")
    if not to_tag or not from_tag:
        raise SipError(400, "Bad Replaces")
    return Replaces(call_id, to_tag, from_tag, "early-only" in found)


def parse_refer(request: Request) -> Refer:
    """The REFER's target, Replaces, Refer-Sub and Referred-By (module docstring).

    Raises:
        SipError: 400 for no or several Refer-To, a URI that is not SIP or has no dialable user part, a bad
            Replaces or Refer-Sub.
    """
    values = request.headers.get_all("Refer-To")
    if len(values) != 1:
        raise SipError(400, "A REFER needs exactly one Refer-To")
    try:
        refer_to = NameAddress.parse(values[0])
    except SipParseError:
        raise SipError(400, "Bad Refer-To") from None
    uri = refer_to.uri
    if not isinstance(uri, SipURI) or not uri.user or not _TARGET.fullmatch(uri.user):
        raise SipError(400, "Bad Refer-To target")
    replaces = None
    for name, value in uri.headers:
        if name.lower() == "replaces":
            replaces = parse_replaces(value)
    sub = (request.headers.get("Refer-Sub") or "true").strip().lower()
    if sub not in ("true", "false"):
        raise SipError(400, "Bad Refer-Sub")
    referred_by = (request.headers.get("Referred-By") or "")[:200]
    return Refer(uri.user, replaces, sub == "true", referred_by)


def sipfrag(status: int) -> bytes:
    """The `message/sipfrag` body of a NOTIFY: the status line of the transfer's outcome."""
    return f"SIP/2.0 {status} {REASONS.get(status, 'Unknown')}\r\n".encode()


class Referral:
    """The implicit subscription of one accepted REFER (module docstring).

    Args:
        session: the transferor's INVITE session (the REFER's dialog).
        subscribe: False for `Refer-Sub: false`: nothing is sent.
        on_final: called once the final NOTIFY is answered (or could not be sent, or at once when there is
            no subscription), with the final status.
    """

    __slots__ = ("_busy", "_final", "_on_final", "_session", "_waiting", "subscribe")

    _log = Logger()

    def __init__(self, session: Any, subscribe: bool, on_final: Callable[[int], object]) -> None:
        self._session = session
        self.subscribe = subscribe
        self._on_final = on_final
        self._busy = False
        self._waiting: int | None = None
        self._final: int | None = None

    @property
    def done(self) -> bool:
        """The final state (200 or a failure) was reported."""
        return self._final is not None

    def progress(self, status: int) -> None:
        """The transfer reached `status` (100, 180, 183: provisional; 200 and above: its outcome, once)."""
        if self._final is not None:
            return
        if status >= 200:
            self._final = status
        if not self.subscribe:
            if status >= 200:
                self._on_final(status)
            return
        if self._busy:
            self._waiting = status
            return
        self._send(status)

    def _send(self, status: int) -> None:
        final = status >= 200
        state = "terminated;reason=noresource" if final else f"active;expires={REFER_EXPIRES}"
        headers = [("Event", "refer"), ("Subscription-State", state)]
        try:
            sent = self._session.request("NOTIFY", sipfrag(status), "message/sipfrag;version=2.0", headers)
        except ValueError:
            sent = None
        if sent is None:
            if final:
                self._on_final(status)
            return
        self._busy = True
        sent.addErrback(lambda f: None)  # a NOTIFY the transferor refuses changes nothing of the transfer
        sent.addBoth(self._answered, status)

    def _answered(self, _: object, status: int) -> None:
        self._busy = False
        if status >= 200:
            self._on_final(status)
            return
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self._send(waiting)
