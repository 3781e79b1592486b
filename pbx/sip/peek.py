"""A raw UDP datagram looked at before the parser, to shed load cheaply (RFC 3261 8.2.6, 17.2.3; RFC 7339).

Under overload even parsing is too dear for the work a server means to refuse: a `503` built after the full
parse costs about as much as the challenge it replaces. `peek_new_request` picks out, from the bytes alone,
what overload control needs of a new INVITE or REGISTER: its method, the top Via's sent-by and branch (the
transaction key of RFC 3261 17.2.3), whether it carries credentials, and the header lines a response copies
(Via, From, To, Call-ID, CSeq: RFC 3261 8.2.6.2). `raw_response` builds a response from them without a
`Message`. Anything unusual (a To tag, folded lines, an RFC 2543 branch, a Via not over UDP, missing
headers) gives None: the request then takes the parser's way, where the same decisions are made. The stack
asks `pbx.sip.refusal` first (fewer calls for the usual shape) and this module for what that declines.

This module knows nothing of transactions, transports or the PBX.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pbx.sip.message import MAGIC_COOKIE

_COPIED = {
    b"via": b"via",
    b"v": b"via",
    b"from": b"from",
    b"f": b"from",
    b"to": b"to",
    b"t": b"to",
    b"call-id": b"call-id",
    b"i": b"call-id",
    b"cseq": b"cseq",
}
_CREDENTIALS = (b"authorization", b"proxy-authorization")
_SENT_BY = re.compile(
    rb"SIP\s*/\s*2\.0\s*/\s*UDP\s+(\[[0-9A-Fa-f:.]+\]|[^\s;:,\[\]]+)(?:\s*:\s*(\d{1,5}))?", re.I
)
_BRANCH = re.compile(rb";\s*branch\s*=\s*([^\s;,]+)", re.I)
_TAG = re.compile(rb";\s*tag\s*=", re.I)
MAGIC = MAGIC_COOKIE.encode()


@dataclass(frozen=True, slots=True)
class PeekedRequest:
    """What a new request's bytes tell without parsing them.

    Attributes:
        method: "INVITE" or "REGISTER" (one of the methods asked for).
        branch, host, port: the top Via's branch and sent-by (host without brackets, as written; port None
            when absent), as `pbx.sip.headers.Via` reads them.
        credentials: whether an Authorization or Proxy-Authorization header is present.
        lines: the header lines a response copies, in order (Via lines first), as received.
    """

    method: str
    branch: str
    host: str
    port: int | None
    credentials: bool
    lines: tuple[bytes, ...]

    @property
    def transaction_key(self) -> tuple[str, str, int | None, str]:
        """RFC 3261 17.2.3's key, as `pbx.sip.transaction_layer.TransactionLayer` builds it."""
        return (self.branch, self.host.lower(), self.port, self.method)


def peek_new_request(datagram: bytes, starts: tuple[bytes, ...]) -> PeekedRequest | None:
    """The new request (no To tag) in `datagram` whose start line begins with one of `starts` (b"INVITE "),
    or None when it is something else or anything is unusual (the parser then decides)."""
    if not datagram.startswith(starts):
        return None
    end = datagram.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = datagram[:end].split(b"\r\n")
    method = head[0][: head[0].find(b" ")]
    vias: list[bytes] = []
    found: dict[bytes, bytes] = {}
    credentials = False
    for line in head[1:]:
        if not line or line[0] in b" \t":
            return None  # folded or empty: the parser's business
        colon = line.find(b":")
        if colon < 0:
            return None
        name = line[:colon].strip().lower()
        kind = _COPIED.get(name)
        if kind == b"via":
            vias.append(line)
        elif kind is not None:
            if kind in found:
                return None  # repeated: the parser decides
            found[kind] = line
        elif name in _CREDENTIALS:
            credentials = True
    if not vias or len(found) != 4 or _TAG.search(found[b"to"]) is not None:
        return None
    top = vias[0][vias[0].find(b":") + 1 :].split(b",", 1)[0]
    sent_by = _SENT_BY.search(top)
    branch = _BRANCH.search(top)
    if sent_by is None or branch is None or not branch.group(1).startswith(MAGIC):
        return None
    host = sent_by.group(1).strip(b"[]").decode("ascii", "replace")
    port = int(sent_by.group(2)) if sent_by.group(2) else None
    lines = (*vias, found[b"from"], found[b"to"], found[b"call-id"], found[b"cseq"])
    return PeekedRequest(
        method.decode("ascii"), branch.group(1).decode("ascii", "replace"), host, port, credentials, lines
    )


def raw_response(request: PeekedRequest, status_line: bytes, to_tag: str, extra: bytes = b"") -> bytes:
    """A response to a peeked request (RFC 3261 8.2.6.2: Via, From, To with `to_tag`, Call-ID and CSeq as
    received; `extra` header lines, each ending in CRLF), with no body."""
    lines = request.lines
    vias = len(lines) - 4
    return b"".join(
        (
            status_line,
            b"\r\n",
            b"\r\n".join(lines[:vias]),
            b"\r\n",
            lines[vias],
            b"\r\n",
            lines[vias + 1],
            b";tag=",
            to_tag.encode(),
            b"\r\n",
            lines[vias + 2],
            b"\r\n",
            lines[vias + 3],
            b"\r\n",
            extra,
            b"Content-Length: 0\r\n\r\n",
        )
    )
