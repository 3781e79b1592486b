"""Parsing SIP messages from bytes, and framing them on stream transports (RFC 3261 7, 18.3, 25).

- `parse_message` turns one datagram (or one framed stream message) into a `Request` or `Response`.
  Header lines may be folded; names are case-insensitive with compact forms; leading CRLFs are ignored.
  On a datagram a body longer than Content-Length is truncated and a shorter one is an error.
- `StreamFramer` cuts a TCP/TLS byte stream into messages by Content-Length and reports CRLF keep-alives
  (RFC 5626 3.5.1) so that the transport can answer a double-CRLF ping with a single CRLF pong.
- `ParserLimits` bounds message size, header count and line length; exceeding them is a parse error.

Structural errors raise `SipParseError`; when the start line was a request line, the error carries the
partially parsed request so that a `400` can be routed. Header values are parsed later, on access
(`pbx.sip.validate` checks the mandatory ones). This module knows nothing of sockets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pbx.sip.errors import SipParseError
from pbx.sip.headers import TOKEN_CHARS, canonical_name, is_token
from pbx.sip.message import Headers, Request, Response
from pbx.sip.uri import AbsoluteURI, parse_decimal, parse_uri


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Bounds on what the parser accepts.

    Attributes:
        max_message_size: bytes of one message, headers and body.
        max_headers: header fields in one message.
        max_line_length: characters in one (unfolded) header line or the start line.
    """

    max_message_size: int = 65535
    max_headers: int = 256
    max_line_length: int = 8192


DEFAULT_LIMITS = ParserLimits()
_MAX_LENGTH = 999_999_999  # a Content-Length beyond any message size we accept
_FOLD = re.compile(rb"\r?\n[ \t]+")


def _split_head(data: bytes) -> tuple[bytes, bytes | None]:
    """Split at the blank line; the body is None when there is no blank line at all."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :]
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end], data[end + 2 :]
    return data, None


def parse_message(
    data: bytes, limits: ParserLimits = DEFAULT_LIMITS, *, stream: bool = False
) -> Request | Response:
    """Parse one SIP message.

    Args:
        data: the datagram, or one message as framed by `StreamFramer`.
        limits: size bounds.
        stream: True for a message framed on TCP/TLS (the body is exactly Content-Length long).

    Raises:
        SipParseError: the message is malformed; `.request` is set when a 400 can be routed.
    """
    if len(data) > limits.max_message_size:
        raise SipParseError("Message Too Large", status=513)
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    body: bytes | None
    end = data.find(b"\r\n\r\n")
    if end >= 0:  # `_split_head` inlined for the common case
        head_bytes, body = data[:end], data[end + 4 :]
    else:
        head_bytes, body = _split_head(data)
    head = head_bytes.decode("utf-8", "surrogateescape")
    error: str | None = None
    fast = _parse_plain_head(head, limits)
    if fast is not None:
        start, headers, length_text = fast
    else:
        lines = head.split("\n")
        start = lines[0].rstrip("\r")
        headers = Headers()
        try:
            _parse_header_lines(lines, headers, limits)
        except SipParseError as e:
            error = e.reason
        length_text = headers.get("Content-Length")
    if len(start) > limits.max_line_length:
        raise SipParseError("Start line too long")

    message: Request | Response
    if start.startswith("SIP/") or start[:4].upper() == "SIP/":
        message = _parse_status_line(start, headers)
        if error is not None:
            raise SipParseError(error)
    else:
        message = _parse_request_line(start, headers)
        if error is not None:
            raise SipParseError(error, message)

    if body is None:
        body = b""
    if length_text is not None:
        length: int | None
        if len(length_text) < 10 and length_text.isdigit() and length_text.isascii():  # the common shape
            length = int(length_text)
        else:  # blanks or leading zeros (`0000`, RFC 4475 3.1.1.11)
            length = parse_decimal(length_text.strip(), _MAX_LENGTH)
        if length is None:
            raise SipParseError("Bad Content-Length", message if isinstance(message, Request) else None)
        if length > len(body):
            raise SipParseError(
                "Content-Length larger than body", message if isinstance(message, Request) else None
            )
        if length < len(body):
            body = body[:length]
    elif stream:
        body = b""
    message.body = body
    return message


_FIELD_NAMES: dict[str, tuple[str, str]] = {}  # name as written before the colon -> (lower key, canonical)


def _field_name(raw: str) -> tuple[str, str] | None:
    """(lower key, canonical name) for a header name as written (trailing blanks allowed), None if invalid."""
    found = _FIELD_NAMES.get(raw)
    if found is None:
        name = raw.rstrip(" \t")
        if not is_token(name):
            return None
        cname = canonical_name(name)
        found = (cname.lower(), cname)
        if len(_FIELD_NAMES) < 4096:  # bounded: a peer may invent names
            _FIELD_NAMES[raw] = found
    return found


_LINE_FIELDS: dict[str, tuple[str, str, str]] = {}
"""Header line as written -> its field (lower key, canonical name, stripped value), for the headers in
`_STABLE_FIELDS`: lines a peer writes the same in message after message (`Max-Forwards: 70`,
`Content-Type: application/sdp`, its Contact...), so most of a head's lines need no splitting, name look-up or
stripping, and every message holding such a field shares one tuple. Bounded: cleared when full."""
_LINE_FIELDS_MAX = 4096
_STABLE_FIELDS = frozenset(
    (
        "accept",
        "allow",
        "allow-events",
        "contact",
        "content-disposition",
        "content-length",
        "content-type",
        "event",
        "expires",
        "max-forwards",
        "min-se",
        "record-route",
        "require",
        "route",
        "server",
        "session-expires",
        "subject",
        "supported",
        "user-agent",
    )
)
"""Lower-case names of the headers whose lines `_LINE_FIELDS` keeps: not those unique to a message or dialog
(Via, Call-ID, From, To, CSeq, credentials), which would only churn it."""


def _parse_plain_head(head: str, limits: ParserLimits) -> tuple[str, Headers, str | None] | None:
    """The start line, headers and first Content-Length value of a head in the common shape, or None to take
    the careful path.

    The common shape: every line ends in CRLF, no folded line, no more headers than allowed, every line a
    valid `name: value`. Whatever is not in that shape (or is wrong) goes to `_parse_header_lines`, which
    gives the same result or the precise error. A folded line needs no search of its own: it starts with a
    blank, and no header name does (`_field_name` refuses it; `_LINE_FIELDS` only holds lines it accepted).
    """
    breaks = head.count("\n")
    if breaks > limits.max_headers or head.count("\r") != breaks:
        return None
    lines = head.split("\r\n")
    if len(lines) != breaks + 1:  # a LF without its CR (so also a CR without its LF)
        return None
    if len(head) > limits.max_line_length and max(map(len, lines)) > limits.max_line_length:
        return None
    fields: list[tuple[str, str, str]] = []
    append = fields.append
    known = _FIELD_NAMES
    memo = _LINE_FIELDS
    length: str | None = None
    for line in lines[1:]:
        field = memo.get(line)
        if field is None:
            name, colon, value = line.partition(":")
            names = known.get(name)
            if names is None or not colon:
                if not colon:
                    return None
                names = _field_name(name)
                if names is None:
                    return None
            key = names[0]
            field = (key, names[1], value.strip())
            if key in _STABLE_FIELDS:
                if len(memo) >= _LINE_FIELDS_MAX:
                    memo.clear()
                memo[line] = field
        if length is None and field[0] == "content-length":
            length = field[2]
        append(field)
    return lines[0], Headers._from_fields(fields), length


def _parse_header_lines(lines: list[str], headers: Headers, limits: ParserLimits) -> None:
    name: str | None = None
    value = ""
    count = 0
    for raw in lines[1:]:
        line = raw[:-1] if raw.endswith("\r") else raw
        if "\r" in line:
            raise SipParseError("Bare CR in header line")
        if line[:1] in (" ", "\t"):
            if name is None:
                raise SipParseError("Continuation line without a header")
            folded = line.strip()
            value = f"{value} {folded}" if value else folded
            if len(value) > limits.max_line_length:
                raise SipParseError("Header line too long")
            continue
        if name is not None:
            headers.add(name, value)
        if not line:
            name = None
            continue
        if len(line) > limits.max_line_length:
            raise SipParseError("Header line too long")
        count += 1
        if count > limits.max_headers:
            raise SipParseError("Too many headers")
        raw_name, colon, raw_value = line.partition(":")
        raw_name = raw_name.rstrip(" \t")
        if not colon or not is_token(raw_name):
            raise SipParseError("Malformed header line")
        name = canonical_name(raw_name)
        value = raw_value.strip()
    if name is not None:
        headers.add(name, value)


def _parse_request_line(start: str, headers: Headers) -> Request:
    """Request-Line = Method SP Request-URI SP SIP-Version (RFC 3261 7.1, 25.1): exactly one SP each.

    A line that is a SIP request line but for its blanks (several, tabs, blanks inside the URI or at the
    end: RFC 4475 3.1.2.8-3.1.2.10) or its URI (3.1.2.7) still yields a request on the error, so that the
    stack can answer `400` when the Via is readable. A line that does not even name a method and a SIP
    version yields none.
    """
    parts = start.split(" ")
    if len(parts) != 3 or not parts[1] or not parts[0]:
        words = start.split()
        request = None
        if len(words) >= 2 and is_token(words[0]) and words[-1].upper().startswith("SIP/"):
            uri_text = start.strip()[len(words[0]) :].strip()[: -len(words[-1])].strip()
            request = Request(words[0], AbsoluteURI("invalid", uri_text), headers)
        raise SipParseError("Malformed request line", request)
    method, uri_text, version = parts
    if not TOKEN_CHARS.issuperset(method):  # `is_token` inlined (the method is not empty)
        raise SipParseError("Bad method")
    if version != "SIP/2.0" and not version.upper().startswith("SIP/"):
        raise SipParseError("Malformed request line")
    try:
        uri = parse_uri(uri_text)
    except SipParseError as e:
        request = Request(method, AbsoluteURI("invalid", uri_text), headers)
        raise SipParseError(f"Bad Request-URI: {e.reason}", request) from None
    request = Request(method, uri, headers)
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        raise SipParseError("Version Not Supported", request, status=505)
    return request


def _parse_status_line(start: str, headers: Headers) -> Response:
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    if (
        version.upper() != "SIP/2.0"
        or len(code) != 3
        or not (code.isascii() and code.isdigit())
        or not 100 <= int(code) <= 699
    ):
        raise SipParseError("Malformed status line")
    return Response(int(code), reason, headers)


class StreamFramer:
    """Cut a TCP/TLS byte stream into SIP messages by Content-Length (RFC 3261 18.3).

    `feed` returns complete items: `bytes` messages, or the marker `StreamFramer.PING` for a double-CRLF
    keep-alive (RFC 5626 3.5.1). A framing error (no usable Content-Length, a message over the limit)
    raises `SipParseError`; the stream is then unusable and the connection should be closed.
    """

    PING = b"\r\n\r\n"

    def __init__(self, limits: ParserLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        buf = self._buffer
        while buf:
            # Keep-alives and stray CRLFs between messages.
            if buf[0] in (13, 10):
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    out.append(self.PING)
                    continue
                if buf in (b"\r", b"\r\n", b"\r\n\r"):
                    break  # wait: this may become a ping
                del buf[: 2 if buf.startswith(b"\r\n") else 1]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._limits.max_message_size:
                    raise SipParseError("Message Too Large", status=513)
                break
            length = self._content_length(bytes(buf[:end]))
            total = end + 4 + length
            if total > self._limits.max_message_size:
                raise SipParseError("Message Too Large", status=513)
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    @staticmethod
    def _content_length(head: bytes) -> int:
        head = _FOLD.sub(b" ", head)  # unfold first: a continuation line is never a header of its own
        for line in head.split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() in (b"content-length", b"l"):
                length = parse_decimal(value.strip().decode("ascii", "replace"), _MAX_LENGTH)
                if length is None:
                    raise SipParseError("Bad Content-Length")
                return length
        return 0  # RFC 3261 requires it on streams; treat a missing one as an empty body.
