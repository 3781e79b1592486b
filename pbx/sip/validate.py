"""Checks a UAS makes on a new request before any application sees it (RFC 3261 8.2, 16.3, 20).

`check_request` raises `SipError` with the status and a reason phrase that says what was wrong:
`400` for missing or malformed mandatory headers and a CSeq whose method is not the request's,
`416` for a Request-URI scheme other than sip/sips/tel, `483` when Max-Forwards is 0 (OPTIONS excepted: we
are its final recipient, RFC 3261 11 and 16.3), `420` with `Unsupported` for option tags in Require that we
do not support (never for ACK or CANCEL, 8.2.2.3). Methods are checked by the stack, which knows its handlers.
This module knows nothing of transports or transactions.
"""

from __future__ import annotations

from collections.abc import Set

from pbx.sip.errors import SipError, SipParseError
from pbx.sip.headers import CSeq, NameAddress, Via
from pbx.sip.message import Request
from pbx.sip.uri import AbsoluteURI


def check_request(request: Request, supported: Set[str] = frozenset()) -> None:
    """Raise `SipError` if the request must be refused before reaching a transaction user.

    Args:
        request: the parsed request.
        supported: option tags (RFC 3261 19.2) we support, lower-case.
    """
    headers = request.headers
    try:
        via = headers.parsed("Via", Via.parse)  # cached: later users of the top Via do not parse it again
    except SipParseError as e:
        raise SipError(400, f"Bad Via header: {e.reason}") from None
    if via is None:
        raise SipError(400, "Missing Via header")
    for name in ("From", "To"):  # checked, not built: an OPTIONS or a CANCEL never looks inside
        text = headers.get(name)
        if text is None:
            raise SipError(400, f"Missing {name} header")
        try:
            NameAddress.check(text)
        except SipParseError as e:
            raise SipError(400, f"Bad {name} header: {e.reason}") from None
    call_id = headers.get("Call-ID")
    if not call_id or " " in call_id or "\t" in call_id:
        raise SipError(400, "Missing Call-ID header" if not call_id else "Bad Call-ID header")
    try:
        cseq = headers.parsed("CSeq", CSeq.parse)
    except SipParseError as e:
        raise SipError(400, f"Bad CSeq header: {e.reason}") from None
    if cseq is None:
        raise SipError(400, "Missing CSeq header")
    if cseq.method != request.method:
        raise SipError(400, "CSeq method does not match request method")
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None:
        value = max_forwards.strip()
        if not (value.isascii() and value.isdigit()) or len(value) > 3 or int(value) > 255:
            raise SipError(400, "Bad Max-Forwards header")
        if int(value) == 0 and request.method not in ("OPTIONS", "ACK"):
            raise SipError(483)
    if isinstance(request.uri, AbsoluteURI):
        raise SipError(416, f"Unsupported URI Scheme: {request.uri.scheme}")
    if request.method not in ("ACK", "CANCEL"):
        required = [tag for tag in headers.get_all("Require") if tag.lower() not in supported]
        if required:
            raise SipError(420, None, [("Unsupported", ", ".join(required))])
