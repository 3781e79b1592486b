"""SIP requests and responses (RFC 3261 section 7) and their header container.

Messages are mutable builders (a B2BUA copies and edits them); the structured values inside (URIs, Via,
NameAddress, CSeq) are immutable. Headers are kept as written and parsed lazily on access, so a message that
is only matched and relayed never parses most of its headers. Serialization always writes a correct
Content-Length.

This module knows nothing of how messages travel: no transports, no transactions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

from pbx.sip.errors import SipParseError
from pbx.sip.headers import COMMA_LIST_HEADERS, CSeq, NameAddress, Via, canonical_name, split_header_values
from pbx.sip.uri import URI

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

MAGIC_COOKIE = "z9hG4bK"
T = TypeVar("T")


class _RandomPool:
    """Bytes from the operating system's CSPRNG, read 4 KiB at a time: tags, branches and nonce salts are
    needed several times per request, and one `getrandom` call per value was a visible share of a busy
    registrar's time. A forked child starts with a fresh pool (never the parent's bytes)."""

    __slots__ = ("pool", "used")

    def __init__(self) -> None:
        self.pool = b""
        self.used = 0

    def take(self, n: int) -> bytes:
        used = self.used
        end = used + n
        if end > len(self.pool):
            self.pool = os.urandom(max(4096, n))
            used, end = 0, n
        self.used = end
        return self.pool[used:end]

    def forget(self) -> None:
        self.pool, self.used = b"", 0


_random_pool = _RandomPool()
os.register_at_fork(after_in_child=_random_pool.forget)
random_bytes = _random_pool.take


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 96 random bits."""
    return MAGIC_COOKIE + random_bytes(12).hex()


def new_tag() -> str:
    """A To/From tag: 48 random bits (RFC 3261 19.3 asks for at least 32, cryptographically random)."""
    return random_bytes(6).hex()


def new_call_id(host: str) -> str:
    return f"{random_bytes(12).hex()}@{host}"


_NAMES: dict[str, tuple[str, str]] = {}  # name as written -> (lower key, canonical name); memoized


def _name(name: str) -> tuple[str, str]:
    """(lower key, canonical name) for a header name as written: one dict lookup on the hot path."""
    found = _NAMES.get(name)
    if found is None:
        cname = canonical_name(name)
        found = (cname.lower(), cname)
        if len(_NAMES) < 4096:  # bounded: a peer may invent names
            _NAMES[name] = found
    return found


_RESPONSE_COPIED = ("via", "from", "to", "call-id", "cseq")  # RFC 3261 8.2.6.2
# Bound once: the keys of `Headers.parsed`'s cache (equal to `Via.parse` etc. as other callers write them).
_VIA_PARSE, _CSEQ_PARSE, _NAME_ADDRESS_PARSE = Via.parse, CSeq.parse, NameAddress.parse


_RANKS: dict[tuple[str, ...], dict[str, int]] = {}  # `Headers.subset`: keys -> each key's position in them


class Headers:
    """An ordered, case-insensitive multi-map of header fields, as they appear on the wire.

    Names are canonicalized (`v` -> `Via`). For list headers (Via, Contact, Route ...), `get_all` splits
    comma-separated values; for the others a field value is one value. `parsed` caches the parsed form of a
    header until that header changes, so the hot path parses the top Via or the CSeq once per message;
    `subset` carries the cache of the headers it copies (a response's Via is parsed once, for its request).
    """

    # `_packed` is set only while `pack` holds the fields as one string (`_fields` then unset: the first read
    # of it unpacks them, through `__getattr__`, which an ordinary read never reaches).
    __slots__ = ("_cache", "_fields", "_packed")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str, str]] = []  # (lower key, canonical name, value)
        # lower key -> (parse, parse(first value)) for the first parser asked about that header, and
        # (lower key, parse) -> (parse, value) for any other (rare): a pair costs far less memory than a
        # dict per header, in every message a transaction or dialog keeps. The values are immutable.
        self._cache: dict[object, tuple[object, object]] | None = None
        for name, value in fields:
            self.add(name, value)

    @classmethod
    def _from_fields(cls, fields: list[tuple[str, str, str]]) -> Headers:
        """Headers owning `fields`, already (lower key, canonical name, value) triples (for the parser)."""
        new = cls.__new__(cls)
        new._fields = fields
        new._cache = None
        return new

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._fields:
            yield name, value

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: str) -> bool:
        key = (_NAMES.get(name) or _name(name))[0]
        for field in self._fields:  # noqa: SIM110 (a loop: cheaper than any() over a generator)
            if field[0] == key:
                return True
        return False

    def first_repeated(self, keys: frozenset[str]) -> str | None:
        """The canonical name of the first header among `keys` (lower-case names) written in more than one
        field, or None: one pass, for the single-valued headers a request must carry once (RFC 3261 7.3)."""
        seen: tuple[str, ...] = ()
        for key, name, _ in self._fields:
            if key in keys:
                if key in seen:
                    return name
                seen += (key,)
        return None

    def first_values(self, keys: frozenset[str]) -> tuple[dict[str, str], str | None]:
        """The first field value of each header among `keys` (lower-case names of single-valued headers) and
        the canonical name of the first of them written in more than one field (or None): one pass, for
        the headers a request must carry once (RFC 3261 7.3). A value is as `get` gives it for such
        headers."""
        found: dict[str, str] = {}
        repeated: str | None = None
        for key, name, value in self._fields:
            if key in keys:
                if key not in found:
                    found[key] = value
                elif repeated is None:
                    repeated = name
        return found, repeated

    def values_after_first(self, key: str) -> list[str]:
        """Every value of a list header but the first (`get_all(name)[1:]`; `key` is its lower-case canonical
        name), splitting only what has commas: none, at no cost, for the one plain Via of most requests."""
        out: list[str] = []
        first = True
        for fkey, _, value in self._fields:
            if fkey != key:
                continue
            if first and "," not in value and value.strip():
                first = False
                continue
            values = split_header_values(value)
            if first and values:
                first = False
                values = values[1:]
            out += values
        return out

    def copy(self) -> Headers:
        new = Headers()
        new._fields = list(self._fields)
        return new

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header (the first list element for list headers), or `default`."""
        key = (_NAMES.get(name) or _name(name))[0]
        if key in COMMA_LIST_HEADERS:
            for fkey, _, value in self._fields:
                if fkey == key:
                    if "," in value or not value.strip():
                        values = split_header_values(value)
                        if values:
                            return values[0]
                        continue
                    return value.strip()
            return default
        for fkey, _, value in self._fields:
            if fkey == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of a header in order, list headers split at their commas."""
        key = (_NAMES.get(name) or _name(name))[0]
        if key in COMMA_LIST_HEADERS:
            out: list[str] = []
            for fkey, _, value in self._fields:
                if fkey == key:
                    out.extend(split_header_values(value))
            return out
        return [value for fkey, _, value in self._fields if fkey == key]

    def parsed(self, name: str, parse: Callable[[str], T]) -> T | None:
        """`parse(first value)`, cached until this header changes; None when the header is absent.

        A parse error is raised every time (not cached)."""
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        key = (_NAMES.get(name) or _name(name))[0]
        entry = cache.get(key)
        slot: object = key
        if entry is not None:
            if entry[0] is parse or entry[0] == parse:
                return entry[1]  # type: ignore[return-value]
            slot = (key, parse)  # another parser of the same header
            entry = cache.get(slot)
            if entry is not None:
                return entry[1]  # type: ignore[return-value]
        if key in COMMA_LIST_HEADERS:
            value = self.get(name)
        else:  # `get` inlined: the first field's value
            value = None
            for field in self._fields:
                if field[0] == key:
                    value = field[2]
                    break
        result = parse(value) if value is not None else None
        cache[slot] = (parse, result)
        return result

    def forget_parsed(self) -> None:
        """Drop what `parsed` cached (for a message kept long after it was handled: a call's INVITE); the
        headers are parsed again if asked."""
        self._cache = None

    def pack(self) -> None:
        """Keep the fields as one string, and nothing parsed, until they are read again: for a message kept
        long after it was handled (a call's INVITEs, for the call's length), where one string costs about a
        third of the list of field tuples. Any read unpacks them first (the same fields, in order), so a
        packed `Headers` behaves as before. Fields with a line break in a name or value (which the parser
        never makes) are left as they are."""
        fields = self._fields
        if not fields:
            return
        # Name and value on lines of their own; the lower-case key is the canonical name's (`_name`).
        text = "\n".join([f"{cname}\n{value}" for _, cname, value in fields])
        if text.count("\n") != 2 * len(fields) - 1:
            return
        self._cache = None
        self._packed = text
        del self._fields

    if not TYPE_CHECKING:  # an unset `_fields` only: no other attribute appears to exist for mypy

        def __getattr__(self, name: str) -> object:
            if name != "_fields":
                raise AttributeError(name)
            parts = self._packed.split("\n")  # an AttributeError if not packed either: from __new__
            names = _NAMES
            fields = []
            for i in range(0, len(parts), 2):
                cname = parts[i]
                fields.append(((names.get(cname) or _name(cname))[0], cname, parts[i + 1]))
            self._fields = fields
            del self._packed
            return fields

    def _changed(self, key: str) -> None:
        """Forget what `parsed` cached for the header with lower-case name `key`."""
        cache = self._cache
        if cache and cache.pop(key, None) is not None and len(cache) > 0:
            for other in [k for k in cache if type(k) is tuple and k[0] == key]:
                del cache[other]

    def add(self, name: str, value: str) -> None:
        """Append a field at the end."""
        names = _NAMES.get(name) or _name(name)
        cache = self._cache
        if cache and names[0] in cache:
            self._changed(names[0])
        self._fields.append((names[0], names[1], value))

    def extend(self, fields: Iterable[tuple[str, str]]) -> None:
        """Append fields (name, value) at the end, in order."""
        for name, value in fields:
            self.add(name, value)

    def prepend(self, name: str, value: str) -> None:
        """Insert a field before the first field of the same name (or at the top): for Via, Record-Route."""
        key, cname = _name(name)
        self._changed(key)
        for i, field in enumerate(self._fields):
            if field[0] == key:
                self._fields.insert(i, (key, cname, value))
                return
        self._fields.insert(0, (key, cname, value))

    def set(self, name: str, value: str) -> None:
        """Replace every field of this name by one, at the place of the first."""
        key, cname = _name(name)
        self._changed(key)
        fields = self._fields
        for i, field in enumerate(fields):
            if field[0] == key:
                fields[i] = (key, cname, value)
                for later in fields[i + 1 :]:
                    if later[0] == key:  # more fields of this name: keep only the first
                        self._fields = [f for j, f in enumerate(fields) if j <= i or f[0] != key]
                        break
                return
        fields.append((key, cname, value))

    def remove(self, name: str) -> None:
        key = _name(name)[0]
        self._changed(key)
        self._fields = [f for f in self._fields if f[0] != key]

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of a list header (e.g. the top Via or Route)."""
        key = _name(name)[0]
        for i, (fkey, cname, value) in enumerate(self._fields):
            if fkey != key:
                continue
            values = split_header_values(value) if key in COMMA_LIST_HEADERS else [value]
            if not values:
                continue
            self._changed(key)
            if len(values) == 1:
                del self._fields[i]
            else:
                self._fields[i] = (fkey, cname, ", ".join(values[1:]))
            return values[0]
        return None

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value of a list header in place (the top Via after stamping `received`)."""
        key, cname = _name(name)
        for i, (fkey, _, old) in enumerate(self._fields):
            if fkey != key:
                continue
            if "," in old and key in COMMA_LIST_HEADERS:
                values = split_header_values(old)
                values[0] = value
                value = ", ".join(values)
            self._fields[i] = (key, cname, value)
            self._changed(key)
            return
        self.add(name, value)

    def remember_parsed(self, name: str, parse: Callable[[str], T], value: T) -> None:
        """Tell the cache of `parsed` that `parse` of the first value of `name` is `value`.

        For a caller that has just written that value and knows its parsed form (the stack stamping
        `received` on the top Via); a wrong `value` is the caller's bug."""
        key = _name(name)[0]
        self._changed(key)
        if self._cache is None:
            self._cache = {}
        self._cache[key] = (parse, value)

    def subset(self, keys: tuple[str, ...]) -> Headers:
        """A new Headers with the fields whose lower-case names are in `keys`, grouped in that order.

        What `parsed` cached for those headers is carried over (the values are immutable)."""
        new = Headers()
        rank = _RANKS.get(keys)
        if rank is None:
            if len(_RANKS) >= 64:  # callers pass constant tuples: a handful
                _RANKS.clear()
            rank = _RANKS[keys] = {key: i for i, key in enumerate(keys)}
        # One pass (not one per key); then grouped in `keys` order, which is already their order in most
        # messages (Via, From, To, Call-ID, CSeq): sorted (stably) only when it is not.
        picked = [f for f in self._fields if f[0] in rank]
        last = -1
        for field in picked:
            position = rank[field[0]]
            if position < last:
                picked.sort(key=lambda f: rank[f[0]])
                break
            last = position
        new._fields = picked
        cache = self._cache
        if cache:
            new._cache = {k: v for k, v in cache.items() if (k[0] if type(k) is tuple else k) in rank}
        return new

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


class Message:
    """What requests and responses share: headers, body and typed accessors for the common headers."""

    __slots__ = ("body", "headers")

    def __init__(self, headers: Headers | Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body

    # Typed accessors; each parses on access and raises SipParseError when the header is malformed.
    @property
    def call_id(self) -> str | None:
        return self.headers.get("Call-ID")

    @property
    def cseq(self) -> CSeq:
        cache = self.headers._cache  # a hit in `parsed`'s cache without its call (several per message)
        entry = cache.get("cseq") if cache is not None else None
        if entry is not None and entry[0] is _CSEQ_PARSE:
            cseq = entry[1]
        else:
            cseq = self.headers.parsed("CSeq", _CSEQ_PARSE)
        if cseq is None:
            raise SipParseError("Missing CSeq header")
        return cseq  # type: ignore[return-value]

    @property
    def from_(self) -> NameAddress:
        return self._name_address("From", "from")

    @property
    def to(self) -> NameAddress:
        return self._name_address("To", "to")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via | None:
        cache = self.headers._cache  # a hit in `parsed`'s cache without its call (several per message)
        entry = cache.get("via") if cache is not None else None
        if entry is not None and entry[0] is _VIA_PARSE:
            return entry[1]  # type: ignore[return-value]
        return self.headers.parsed("Via", _VIA_PARSE)

    @property
    def contacts(self) -> list[NameAddress]:
        return [NameAddress.parse(v) for v in self.headers.get_all("Contact")]

    def _name_address(self, name: str, key: str) -> NameAddress:
        cache = self.headers._cache  # a hit in `parsed`'s cache without its call
        entry = cache.get(key) if cache is not None else None
        if entry is not None and entry[0] is _NAME_ADDRESS_PARSE:
            value = entry[1]
        else:
            value = self.headers.parsed(name, _NAME_ADDRESS_PARSE)
        if value is None:
            raise SipParseError(f"Missing {name} header")
        return value  # type: ignore[return-value]

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize with CRLF line ends and a Content-Length that matches the body."""
        lines = [self.start_line()]
        lines += [f"{name}: {value}" for key, name, value in self.headers._fields if key != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}\r\n\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    __bytes__ = to_bytes


class Request(Message):
    """A SIP request.

    Attributes:
        method: the method token as received (methods are case-sensitive, RFC 3261 7.1).
        uri: the parsed Request-URI.
    """

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: URI,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        self.headers = (
            headers if isinstance(headers, Headers) else Headers(headers)
        )  # Message.__init__ inlined
        self.body = body
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def copy(self) -> Request:
        return Request(self.method, self.uri, self.headers.copy(), self.body)

    def response(self, status: int, reason: str | None = None, to_tag: str | None = None) -> Response:
        """A response to this request per RFC 3261 8.2.6.2: Via, From, To, Call-ID and CSeq copied.

        A To tag is added when given and the To header has none (not for 100 Trying).
        """
        headers = self.headers.subset(_RESPONSE_COPIED)
        if to_tag is not None and status != 100:
            to = self.headers.get("To")
            if to is not None:
                cache = self.headers._cache  # the To already parsed (`self.to`) tells without a regex
                entry = cache.get("to") if cache else None
                if entry is not None and entry[0] is _NAME_ADDRESS_PARSE and entry[1] is not None:
                    has_tag = entry[1].tag is not None  # type: ignore[attr-defined]
                else:
                    has_tag = self._to_has_tag(to)
                if not has_tag:
                    headers.set("To", f"{to};tag={to_tag}")  # appended to the text as received
        return Response(status, reason, headers)

    def _to_has_tag(self, to: str) -> bool:
        """Whether the To header (`to`, its text) carries a tag; a malformed To counts as having none."""
        try:
            return NameAddress.tag_of(to) is not None
        except (SipParseError, ValueError):
            return False

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id!r}>"


class Response(Message):
    """A SIP response; `reason` defaults to the standard phrase of the status code."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        self.headers = (
            headers if isinstance(headers, Headers) else Headers(headers)
        )  # Message.__init__ inlined
        self.body = body
        self.status = status
        self.reason = reason if reason is not None else REASON_PHRASES.get(status, "Unknown")

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers.copy(), self.body)

    @property
    def provisional(self) -> bool:
        return self.status < 200

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.call_id!r}>"
