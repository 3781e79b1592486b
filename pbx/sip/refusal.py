"""The cheapest refusal of a new request: a `503` from its raw bytes (RFC 3261 8.2.6.2, 21.5.4; RFC 7339).

Offered five times what it holds, a server refuses four new requests for each one it admits; each refusal
must then cost a small part of an admitted exchange, or refusing is what fills the core (and the queue then
outlasts the clients' retransmission timer: RFC 3261 17.1.1.2, T1). `pbx.sip.peek` goes over every header
line in Python; this module looks only for what a refusal needs, with `bytes.find` over the lower-cased
header block (the same offsets as the received bytes: `bytes.lower` changes ASCII letters only):

- `scan_new_request`: the method, the top Via's branch, sent-by and `rport`, and the Via and To lines, of a
  new request (no To tag, no credentials) in the common shape: CRLF line ends, `Name:` written with no
  space before the colon (long or compact form), the top Via `SIP/2.0/UDP host[:port];...;branch=z9hG4bK...`
  with one value on its line, none of the copied lines folded.
- `refusal`: the `503` with a To tag and a preformatted tail (Retry-After, Server, Content-Length), copying
  Via (all, in order), From, To, Call-ID and CSeq as received.

Anything else gives None and the request goes the way it went before (`pbx.sip.peek`, then the parser),
where the same decisions are made more slowly; so the shortcuts here only have to be right for what they
accept. This module knows nothing of transactions, transports or the PBX: `pbx.sip.stack.SipStack` asks it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType

from pbx.sip.message import MAGIC_COOKIE

_MAGIC = MAGIC_COOKIE.encode()
_FOLD = (32, 9)  # SP, HTAB: a line starting with one continues the previous (RFC 3261 7.3.1)
_TOKEN = rb"[A-Za-z0-9\-.!%*_+`'~]"  # RFC 3261 25.1 token characters
_TOP_VIA = re.compile(
    rb"[ \t]*SIP/2\.0/UDP ([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?(?:;" + _TOKEN + rb"+(?:=[^;,\s]*)?)*?"
    rb";branch=(" + _TOKEN + rb"+)(?:;" + _TOKEN + rb"+(?:=[^;,\s]*)?)*[ \t]*\Z",
    re.IGNORECASE,
)
"""The top Via's value (up to its CRLF): sent-by host (no IPv6 reference), port, branch."""


Span = tuple[int, int]
RawRequest = tuple[str, str, str, "int | None", bool, bool, tuple[Span, ...], Span, Span, Span, Span]
"""What `scan_new_request` found (a plain tuple: it is made for every datagram while shedding):
`(method, branch, host, port, rport, credentials, vias, to, from, call_id, cseq)`.

- method: the request's method ("INVITE").
- branch, host, port: the top Via's branch (as written, with the magic cookie z9hG4bK), sent-by host
  (lower-cased) and port (None when absent): with the method, RFC 3261 17.2.3's key as
  `pbx.sip.transaction_layer.TransactionLayer` builds it.
- rport: whether the top Via asks for `rport` (RFC 3581: the answer goes back to the source).
- credentials: whether it may carry credentials (see `scan_new_request`).
- vias: (start, end) of each Via line in `data`, CRLF included, in order.
- to: (start, end) of the To line, without its CRLF.
- from, call_id, cseq: (start, end) of those lines, CRLF included.
"""


def scan_new_request_py(data: bytes, methods: dict[bytes, str]) -> RawRequest | None:
    """The new request (no To tag) in `data` whose method is one of `methods` (b"INVITE" -> "INVITE"), in
    the common shape this module handles; else None.

    `credentials` is True when "authorization" appears anywhere in the header block (an Authorization or
    Proxy-Authorization header, or the word elsewhere: in doubt, the request is taken for the finishing half
    of an exchange, which overload control refuses last)."""
    space = data.find(b" ", 0, 20)
    method = methods.get(data[:space]) if space > 0 else None
    if method is None:
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    low = data[: end + 2].lower()
    find = low.find
    # To, From, Call-ID, CSeq: present (long or compact form), not folded; To without a tag (the word
    # anywhere in the line counts: in doubt, not here).
    to = find(b"\r\nto:")
    if to < 0:
        to = find(b"\r\nt:")
    from_ = find(b"\r\nfrom:")
    if from_ < 0:
        from_ = find(b"\r\nf:")
    call_id = find(b"\r\ncall-id:")
    if call_id < 0:
        call_id = find(b"\r\ni:")
    cseq = find(b"\r\ncseq:")
    if to < 0 or from_ < 0 or call_id < 0 or cseq < 0 or low.count(b"\r\nt") != 1:
        return None  # one line starting with "t" (To, or t:): a second To is the parser's business
    to_end = find(b"\r\n", to + 2)
    from_end = find(b"\r\n", from_ + 2) + 2
    call_id_end = find(b"\r\n", call_id + 2) + 2
    cseq_end = find(b"\r\n", cseq + 2) + 2
    if (
        find(b"tag", to, to_end) >= 0
        or data[to_end + 2] in _FOLD
        or data[from_end] in _FOLD
        or data[call_id_end] in _FOLD
        or data[cseq_end] in _FOLD
    ):
        return None
    # Via lines: every line starting with "v" must be one ("Via:" or "v:"), else the parser's business.
    count = low.count(b"\r\nv")
    if count == 0:
        return None
    vias: list[Span] = []
    at = top = 0
    for _ in range(count):
        start = find(b"\r\nv", at)
        if low.startswith(b"ia:", start + 3):
            value = start + 6
        elif low[start + 3] == 58:  # ":"
            value = start + 4
        else:
            return None
        at = find(b"\r\n", value)
        if data[at + 2] in _FOLD:
            return None
        if not vias:
            top = value
        vias.append((start + 2, at + 2))
    line_end = vias[0][1] - 2
    # The top Via: "SIP/2.0/UDP host[:port];params", one value, a branch with the magic cookie, no maddr.
    match = _TOP_VIA.match(data, top, line_end)
    if match is None or find(b";maddr", top, line_end) >= 0:
        return None
    host, port, branch = match.groups()
    if not branch.startswith(_MAGIC):
        return None
    return (
        method,
        branch.decode(),
        host.lower().decode(),
        int(port) if port is not None else None,
        find(b";rport", top, line_end) >= 0,
        find(b"authorization") >= 0,
        tuple(vias),
        (to + 2, to_end),
        (from_ + 2, from_end),
        (call_id + 2, call_id_end),
        (cseq + 2, cseq_end),
    )


def refusal_py(raw: RawRequest, data: bytes, status_line: bytes, to_tag: bytes, tail: bytes) -> bytes:
    """The response to the request `raw` was scanned from (`data`): `status_line` (with its CRLF), Via,
    From, To with `;tag=to_tag`, Call-ID and CSeq as received (RFC 3261 8.2.6.2), then `tail` (further
    header lines and the blank line: "Retry-After: 5\\r\\n...Content-Length: 0\\r\\n\\r\\n")."""
    vias = raw[6]
    first, last = vias[0][0], vias[-1][1]
    if len(vias) == 1 or last - first == sum(end - start for start, end in vias):
        via_lines = data[first:last]  # contiguous (as usual): one slice
    else:
        via_lines = b"".join([data[start:end] for start, end in vias])
    to, from_, call_id, cseq = raw[7:]
    return b"".join(
        (
            status_line,
            via_lines,
            data[from_[0] : from_[1]],
            data[to[0] : to[1]],
            b";tag=",
            to_tag,
            b"\r\n",
            data[call_id[0] : call_id[1]],
            data[cseq[0] : cseq[1]],
            tail,
        )
    )


SPEEDUPS: ModuleType | None
"""`pbx.sip._refusal` (pbx/sip/_refusal.c, an optional extension: built by `pip install` where a C compiler
and Python's headers are found), or None: the C twins of the two functions above, one call each instead of ~35
C calls and a dozen allocations (issue 14: half the CPU of a refusal all in). The Python functions are the
reference; tests/sip/test_refusal_speedups.py checks that the C ones give the same for any bytes."""

scan_new_request: Callable[[bytes, dict[bytes, str]], RawRequest | None]
refusal: Callable[[RawRequest, bytes, bytes, bytes, bytes], bytes]
try:
    from pbx.sip import _refusal
except ImportError:  # not built: the Python functions
    SPEEDUPS = None
    scan_new_request, refusal = scan_new_request_py, refusal_py
else:
    SPEEDUPS = _refusal
    scan_new_request, refusal = _refusal.scan_new_request, _refusal.refusal
