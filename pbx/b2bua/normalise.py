"""What may cross from one leg of a call to the other: topology hiding and normalisation (RFC 7092 3.1.3,
RFC 3261 16.6 for what a proxy would copy and a B2BUA does not, RFC 3325 and RFC 3323 for identity).

The B2BUA builds every message of a leg itself (Via, Call-ID, tags, CSeq, Contact, User-Agent/Server and the
SDP are the PBX's own: `pbx.b2bua.leg`, `pbx.b2bua.media`), so a header crosses only when it is named here:

- `CROSSING`: the allow-list of headers of an in-dialog request (INFO, NOTIFY ...) passed to the other side,
  each bounded by `bounded` (`MAX_REPEATS` values of at most `MAX_HEADER_LENGTH` characters). Everything
  else never crosses: Via, Record-Route, Route, Contact, Call-ID, tags, User-Agent, Server, Warning, Reason,
  Allow-Events, the identity headers, and any header not named.
- `IDENTITY_HEADERS` (`P-Asserted-Identity`, `P-Preferred-Identity`, `Remote-Party-ID`, `Diversion`,
  `History-Info`): never copied from a phone, nor from a trunk that is not trusted with identity. For a
  trunk with ``trust_identity``, `asserted_identity` takes the caller's number and name from its
  P-Asserted-Identity (else Remote-Party-ID) and `trusted_headers` rebuilds what the phone is told: a
  P-Asserted-Identity of the tenant's domain and the carrier's Diversion and History-Info entries, bounded.
- `reason_phrase`: the reason phrase of a response passed across (a callee's 180, a failure of a request
  passed on): kept when short and plain, else the status's standard phrase (a reason may name hosts,
  addresses or software: "Forwarded by 10.1.2.3").
- `display_name`: a display name from the other side, bounded to `MAX_DISPLAY_NAME` printable characters.
- `crossing_body`: the body of a request or response passed across outside offer/answer; an SDP body there
  is dropped (SDP crosses only through the media bridge, rewritten).

It knows nothing of calls or dialogs: values in, values out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pbx.sip.errors import SipParseError
from pbx.sip.headers import NameAddress, quote_string
from pbx.sip.message import REASON_PHRASES, Headers
from pbx.sip.uri import SipURI

CROSSING: tuple[str, ...] = ("Content-Disposition", "Event", "Subscription-State")
"""The headers of an in-dialog request that are passed to the other side (with its body and Content-Type)."""

IDENTITY_HEADERS: tuple[str, ...] = (
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Remote-Party-ID",
    "Diversion",
    "History-Info",
)
"""Headers that assert who called or who forwarded (RFC 3325, draft-ietf-sip-privacy-04, RFC 5806, RFC 7044):
taken only from a trunk trusted with identity."""

MAX_REPEATS = 4
"""The most values of one header passed across."""
MAX_HEADER_LENGTH = 256
"""The longest header value passed across (longer ones are dropped, not cut: a cut value may not parse)."""
MAX_DISPLAY_NAME = 64
"""The longest display name passed across."""
MAX_REASON = 64
"""The longest reason phrase passed across."""

CALLING_NUMBER = re.compile(r"\+?[0-9*]{1,32}|[A-Za-z0-9._-]{1,32}")
"""A calling number the PBX passes on; anything else is "anonymous"."""

_PRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\uffff]")
_ADDRESS_LIKE = re.compile(
    r"\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:|@|sips?:", re.IGNORECASE
)


def bounded(
    values: Iterable[str], *, repeats: int = MAX_REPEATS, length: int = MAX_HEADER_LENGTH
) -> list[str]:
    """The first `repeats` values no longer than `length` characters (over-long ones are dropped)."""
    out: list[str] = []
    for value in values:
        if len(value) > length:
            continue
        out.append(value)
        if len(out) >= repeats:
            break
    return out


def crossing_headers(headers: Headers) -> list[tuple[str, str]]:
    """The headers of an in-dialog request passed to the other side: `CROSSING` only, `bounded`."""
    return [(name, value) for name in CROSSING for value in bounded(headers.get_all(name))]


def crossing_body(content_type: str | None, body: bytes) -> bytes:
    """The body of an in-dialog request or response passed across outside offer/answer (INFO, NOTIFY and
    their answers): as it is, except a session description, which only ever crosses rewritten by the media
    bridge (it would carry the author's addresses)."""
    if body and content_type and content_type.split(";", 1)[0].strip().lower() == "application/sdp":
        return b""
    return body


def display_name(text: str | None, limit: int = MAX_DISPLAY_NAME) -> str:
    """A display name passed across: control characters dropped, at most `limit` characters, trimmed."""
    if not text:
        return ""
    return _PRINTABLE.sub("", text)[:limit].strip()


def reason_phrase(status: int, reason: str | None) -> str | None:
    """The reason phrase for a response passed across: `reason` when it is short printable ASCII that names
    no host, address or URI; else the standard phrase of `status` (None lets the message choose it)."""
    if not reason:
        return None
    if (
        len(reason) <= MAX_REASON
        and reason.isascii()
        and reason.isprintable()
        and _ADDRESS_LIKE.search(reason) is None
    ):
        return reason
    return REASON_PHRASES.get(status)


def _identity_of(value: str) -> tuple[str, str] | None:
    """(number, name) of one P-Asserted-Identity or Remote-Party-ID value, or None when it names none."""
    try:
        address = NameAddress.parse(value)
    except (SipParseError, ValueError):
        return None
    uri = address.uri
    if isinstance(uri, SipURI):
        number = uri.user or ""
    else:  # tel:+15551234567 (RFC 3966)
        text = str(uri)
        number = text[4:].split(";", 1)[0] if text.lower().startswith("tel:") else ""
    if not CALLING_NUMBER.fullmatch(number):
        return None
    return number, display_name(address.display_name)


def asserted_identity(headers: Headers) -> tuple[str, str] | None:
    """(number, name) a trusted trunk asserts: its first usable P-Asserted-Identity, else Remote-Party-ID;
    None when it asserts none."""
    for name in ("P-Asserted-Identity", "Remote-Party-ID"):
        for value in bounded(headers.get_all(name)):
            # A header may hold several entries (a sip: and a tel: URI): the first one that names a number.
            for entry in _split_entries(value):
                found = _identity_of(entry)
                if found is not None:
                    return found
    return None


def trusted_headers(headers: Headers, number: str, name: str, domain: str) -> tuple[tuple[str, str], ...]:
    """The identity headers a phone gets on a call from a trunk trusted with identity: P-Asserted-Identity
    rebuilt in the tenant's `domain` (when a number is known) and the carrier's Diversion and History-Info
    entries, `bounded`."""
    out: list[tuple[str, str]] = []
    if number and number != "anonymous":
        identity = f"<sip:{number}@{domain}>"
        if name:
            identity = f"{quote_string(name)} {identity}"
        out.append(("P-Asserted-Identity", identity))
    for header in ("Diversion", "History-Info"):
        out.extend((header, value) for value in bounded(headers.get_all(header)))
    return tuple(out)


def _split_entries(value: str) -> Sequence[str]:
    """The comma-separated entries of a header value, commas inside <...> or quotes kept."""
    entries: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, char in enumerate(value):
        if char == '"' and (i == 0 or value[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth = max(0, depth - 1)
        elif char == "," and not quoted and depth == 0:
            entries.append(value[start:i].strip())
            start = i + 1
    entries.append(value[start:].strip())
    return [entry for entry in entries if entry]
