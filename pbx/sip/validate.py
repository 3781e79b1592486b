"""Checks a UAS makes on a new request before any application sees it (RFC 3261 8.2, 16.3, 20).

`check_request` reads every mandatory header of the request in full before anything answers it, so that
a malformed value is refused here and never passes only because nobody happened to read it (RFC 4475
3.1.2, 3.3.8, 3.3.9): Via (every value), From, To, Call-ID, CSeq, Max-Forwards and, for the requests whose
Contact is used (INVITE, REGISTER, SUBSCRIBE ...), each Contact value; each of the single-valued ones
exactly once, and at most one Content-Length. The top Via and
the CSeq are parsed once and remembered by the message's headers (`Headers.parsed`); From, To and Contact
in the common shape are checked without building values.

It raises `SipError` with the status and a reason phrase that says what was wrong: `400` for missing,
repeated or malformed mandatory headers, a CSeq whose method is not the request's and a Request-URI with
headers (RFC 3261 19.1.1 table 1, RFC 4475 3.1.2.11), `416` for a Request-URI scheme other than
sip/sips/tel, `483` when Max-Forwards is 0 (OPTIONS excepted: we are its final recipient, RFC 3261 11 and
16.3), `420` with `Unsupported` for option tags in Require that we do not support (never for ACK or
CANCEL, 8.2.2.3). Methods are checked by the stack, which knows its handlers. This module knows nothing of
transports or transactions.
"""

from __future__ import annotations

from collections.abc import Set

from pbx.sip.errors import SipError, SipParseError
from pbx.sip.headers import CSeq, NameAddress, Via
from pbx.sip.message import Request
from pbx.sip.uri import AbsoluteURI, SipURI, parse_decimal

# Requests whose Contact we use: a dialog's remote target or a binding (RFC 3261 8.1.1.8, 10.2.1; RFC 6665,
# 3515, 3311). Elsewhere (OPTIONS, MESSAGE ...) a Contact is informative and read only by whoever uses it.
_CONTACT_METHODS = frozenset(("INVITE", "REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "UPDATE", "PRACK"))
# Headers a request carries at most once (RFC 3261 7.3.1: only list headers may repeat).
_SINGLE = frozenset(("to", "from", "call-id", "cseq", "max-forwards", "content-length"))
# callid = word [ "@" word ]; word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" /
# "~" / "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )  (RFC 3261 25.1)
_CALL_ID_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~()<>:\\\"/[]?{}@"
)

# Bound once: the keys of `Headers.parsed`'s cache, as `Message.top_via` and `Message.cseq` use them.
_VIA_PARSE, _CSEQ_PARSE = Via.parse, CSeq.parse


def check_request(request: Request, supported: Set[str] = frozenset()) -> None:
    """Raise `SipError` if the request must be refused before reaching a transaction user.

    Args:
        request: the parsed request.
        supported: option tags (RFC 3261 19.2) we support, lower-case.
    """
    headers = request.headers
    singles, repeated = headers.first_values(_SINGLE)  # one pass for the single-valued headers
    if repeated is not None:
        raise SipError(400, f"Multiple {repeated} headers")
    try:
        via = headers.parsed("Via", _VIA_PARSE)  # cached: later users of the top Via do not parse it again
        if via is None:
            raise SipError(400, "Missing Via header")
        for other in headers.values_after_first("via"):
            Via.parse(other)
    except SipParseError as e:
        raise SipError(400, f"Bad Via header: {e.reason}") from None
    for name, key in (("From", "from"), ("To", "to")):  # checked, not built: an OPTIONS never looks inside
        text = singles.get(key)
        if text is None:
            raise SipError(400, f"Missing {name} header")
        try:
            NameAddress.check(text)
        except SipParseError as e:
            raise SipError(400, f"Bad {name} header: {e.reason}") from None
    call_id = singles.get("call-id")
    if not call_id:
        raise SipError(400, "Missing Call-ID header")
    local, at, host = call_id.partition("@")
    if not _CALL_ID_CHARS.issuperset(call_id) or not local or (at and (not host or "@" in host)):
        raise SipError(400, "Bad Call-ID header")
    try:
        cseq = headers.parsed("CSeq", _CSEQ_PARSE)
    except SipParseError as e:
        raise SipError(400, f"Bad CSeq header: {e.reason}") from None
    if cseq is None:
        raise SipError(400, "Missing CSeq header")
    if cseq.method != request.method:
        raise SipError(400, "CSeq method does not match request method")
    max_forwards = singles.get("max-forwards")
    if max_forwards is not None:
        hops: int | None
        if len(max_forwards) < 4 and max_forwards.isdigit() and max_forwards.isascii():  # the common shape
            hops = int(max_forwards)
        else:  # blanks or leading zeros (`0068`, RFC 4475 3.1.1.1)
            hops = parse_decimal(max_forwards.strip(), 255)
        if hops is None or hops > 255:
            raise SipError(400, "Bad Max-Forwards header")
        if hops == 0 and request.method not in ("OPTIONS", "ACK"):
            raise SipError(483)
    if request.method in _CONTACT_METHODS:
        for text in headers.get_all("Contact"):
            try:
                NameAddress.check(text)
            except SipParseError as e:
                raise SipError(400, f"Bad Contact header: {e.reason}") from None
    uri = request.uri
    if isinstance(uri, AbsoluteURI):
        raise SipError(416, f"Unsupported URI Scheme: {uri.scheme}")
    if type(uri) is SipURI and uri.headers:
        raise SipError(400, "Request-URI with headers")
    if request.method not in ("ACK", "CANCEL"):
        required = [tag for tag in headers.get_all("Require") if tag.lower() not in supported]
        if required:
            raise SipError(420, None, [("Unsupported", ", ".join(required))])
