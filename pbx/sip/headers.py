"""Header names and the structured header values of RFC 3261 (sections 7.3, 20 and 25).

- Header names (`pbx.sip.header_names`, re-exported): case-insensitive, compact forms
  (`i m f t v l c k s e o u r b x y`) expanded to their canonical spelling.
- `split_header_values`: comma-separated values split outside quotes and `<>`.
- Immutable values with `parse` and `__str__`: `NameAddress` (From, To, Contact, Route, Record-Route),
  `Via`, `CSeq`.

This module knows nothing of messages as a whole, nor of transports.
"""

from __future__ import annotations

import re
from dataclasses import FrozenInstanceError
from typing import Any, NoReturn

from pbx.sip.errors import SipParseError
from pbx.sip.header_names import COMMA_LIST_HEADERS as COMMA_LIST_HEADERS
from pbx.sip.header_names import COMPACT_FORMS as COMPACT_FORMS
from pbx.sip.header_names import canonical_name as canonical_name
from pbx.sip.uri import (
    SIP_URI_FAST_PATTERN,
    URI,
    Params,
    SipURI,
    find_param,
    format_host_port,
    parse_decimal,
    parse_host_port,
    parse_uri,
    plain_params,
    set_param,
)

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
TOKEN_CHARS = _TOKEN_CHARS
"""The characters of a token (RFC 3261 25.1): `is_token(t)` is `t and TOKEN_CHARS.issuperset(t)`."""


def is_token(text: str) -> bool:
    return bool(text) and _TOKEN_CHARS.issuperset(text)


def _is_display_word(word: str) -> bool:
    """A word of an unquoted display name: a token, allowing non-ASCII characters (UTF8-NONASCII)."""
    return is_token(word) or (not word.isascii() and _TOKEN_CHARS.issuperset(c for c in word if c.isascii()))


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header value, never inside a quoted string or `<...>`; strip each part."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    parts: list[str] = []
    start = 0
    in_quotes = in_angle = escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def _split_semicolons(text: str) -> list[str]:
    """Split on `;` outside quoted strings."""
    if '"' not in text:
        return text.split(";")
    parts, start, in_quotes, escaped = [], 0, False, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif in_quotes and ch == "\\":
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == ";" and not in_quotes:
            parts.append(text[start:i])
            start = i + 1
    if in_quotes:
        raise SipParseError("Unterminated quoted string")
    parts.append(text[start:])
    return parts


def parse_header_params(text: str) -> Params:
    """Parse header parameters `;a=b;c;d="x;y"` (text starts after the first `;`)."""
    out: list[tuple[str, str | None]] = []
    for part in _split_semicolons(text):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not is_token(name):
            raise SipParseError("Bad header parameter")
        value = value.strip()
        if eq and not value:
            raise SipParseError("Empty header parameter value")
        out.append((name, value if eq else None))
    return tuple(out)


def format_header_params(params: Params) -> str:
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params])


def quote_string(text: str) -> str:
    """A quoted-string (RFC 3261 25.1) for display names and digest parameters.

    CR, LF and other control characters cannot be carried by a quoted-pair: they become spaces, so a value
    from outside (a caller's display name) can never start a new header line.
    """
    if text.isprintable() and '"' not in text and "\\" not in text:  # the common case: nothing to change
        return f'"{text}"'
    cleaned = text.translate(_CONTROL_TO_SPACE)
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


_CONTROL_TO_SPACE = {c: " " for c in (*range(0, 9), *range(10, 32), 127)}


def unquote_string(text: str) -> str:
    """Remove the quotes and backslash escapes of a quoted-string; text without quotes is returned as is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    inner, out, i = text[1:-1], [], 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\" and i + 1 < len(inner):
            i += 1
            ch = inner[i]
        out.append(ch)
        i += 1
    return "".join(out)


_HEADER_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_HEADER_VALUE = r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+"
# The common shape of a name-addr: an optional quoted display name without escapes, `<URI>`, plain parameters
# without blanks. Anything else takes the careful path of `NameAddress.parse`, which gives the same value.
_NAME_ADDR_FAST = re.compile(
    rf'(?:"([^"\\\r\n]*)" *)?<([^<>"\s]+)>((?:;{_HEADER_TOKEN}(?:={_HEADER_VALUE})?)*)'
)
# The same with the URI in the shape `parse_uri` reads fast (`uri.SIP_URI_FAST_PATTERN`): such a name-addr
# parses without error when its port (group 6) is in range. Groups: 1 display name, 2 URI, 3-7 the URI's
# parts, 8 header parameters.
_NAME_ADDR_PLAIN = re.compile(
    rf'(?:"([^"\\\r\n]*)" *)?<({SIP_URI_FAST_PATTERN})>((?:;{_HEADER_TOKEN}(?:={_HEADER_VALUE})?)*)'
)


def _refuse_assignment(self: object, name: str, value: object) -> NoReturn:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_deletion(self: object, name: str) -> NoReturn:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _fields_of(value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, name) for name in value.__slots__)


def _equal_fields(self: object, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _fields_of(self) == _fields_of(other)


def _hash_fields(self: object) -> int:
    return hash(_fields_of(self))


def _repr_fields(self: Any) -> str:
    fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
    return f"{type(self).__name__}({fields})"


def _reduce_fields(self: object) -> tuple[object, ...]:
    return (type(self), _fields_of(self))


def _same(self: Any, *memo: object) -> Any:
    return self


# Immutable values with `__slots__` (`Via`, `NameAddress`, `CSeq`): an assignment raises
# `FrozenInstanceError` as on a frozen dataclass; equality, hash and repr by the fields. An instance is built
# as its mutable twin (same slots, same base, a plain `__init__`) whose class is then switched: a constructor
# at the cost of plain attribute stores, several times cheaper than a frozen dataclass's `object.__setattr__`
# per field (tens of values per call on a busy PBX). Twin and value both derive from `object` directly: a
# `__class__` switch needs the same base and slots.
class _NameAddressFields:
    """The mutable twin of `NameAddress` (same slots): built, then switched to `NameAddress`."""

    __slots__ = ("uri", "display_name", "params", "wildcard")  # noqa: RUF023 (field order)

    def __init__(self, uri: URI, display_name: str | None, params: Params, wildcard: bool) -> None:
        self.uri = uri
        self.display_name = display_name
        self.params = params
        self.wildcard = wildcard


def _name_address(uri: URI, display_name: str | None = None, params: Params = ()) -> NameAddress:
    value = _NameAddressFields(uri, display_name, params, False)
    value.__class__ = NameAddress  # type: ignore[assignment]
    return value  # type: ignore[return-value]


class NameAddress:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route, Record-Route, Refer-To.

    Immutable; equal and hashed by its fields.

    Attributes:
        uri: the address.
        display_name: decoded display name or None.
        params: header parameters (`tag`, `expires`, `q` ...), values as written (quoted strings kept quoted).
        wildcard: True for the `Contact: *` form (then `uri` is a placeholder).
    """

    __slots__ = ("uri", "display_name", "params", "wildcard")  # noqa: RUF023 (field order)
    uri: URI
    display_name: str | None
    params: Params
    wildcard: bool

    def __new__(
        cls, uri: URI, display_name: str | None = None, params: Params = (), wildcard: bool = False
    ) -> NameAddress:
        value = _NameAddressFields(uri, display_name, params, wildcard)
        value.__class__ = cls  # type: ignore[assignment]
        return value  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not NameAddress:
            return NotImplemented
        return (
            self.uri == other.uri
            and self.display_name == other.display_name
            and self.params == other.params
            and self.wildcard == other.wildcard
        )

    __hash__ = _hash_fields
    __setattr__, __delattr__ = _refuse_assignment, _refuse_deletion
    __repr__, __reduce__, __copy__, __deepcopy__ = _repr_fields, _reduce_fields, _same, _same

    @staticmethod
    def parse(text: str) -> NameAddress:
        """The name-addr or addr-spec `text` (a static method: `NameAddress.parse` is one object, the key of
        `Headers.parsed`'s cache)."""
        fast = _NAME_ADDR_FAST.fullmatch(text)
        if fast is not None:
            display, uri_text, param_text = fast.groups()
            return _name_address(parse_uri(uri_text), display, plain_params(param_text))
        return NameAddress._parse_careful(text)

    @classmethod
    def check(cls, text: str) -> None:
        """Raise `SipParseError` exactly when `parse(text)` would, building nothing for the common shape."""
        fast = _NAME_ADDR_PLAIN.fullmatch(text)
        if fast is None or ((port := fast.group(6)) is not None and not 0 < int(port) < 65536):
            cls.parse(text)

    @classmethod
    def tag_of(cls, text: str) -> str | None:
        """`parse(text).tag`, building nothing for the common shape (raises as `parse` does)."""
        fast = _NAME_ADDR_PLAIN.fullmatch(text)
        if fast is None or ((port := fast.group(6)) is not None and not 0 < int(port) < 65536):
            return cls.parse(text).tag
        found, value = find_param(plain_params(fast.group(8)), "tag")
        return value if found else None

    @classmethod
    def _parse_careful(cls, text: str) -> NameAddress:
        """`parse` for any shape: quoted-pairs, token display names, addr-spec, blanks, quoted values."""
        text = text.strip()
        if text == "*":
            return cls(uri=SipURI(host="*"), wildcard=True)
        display: str | None = None
        if text.startswith('"'):
            end, escaped = 1, False
            while end < len(text):
                ch = text[end]
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    break
                end += 1
            else:
                raise SipParseError("Unterminated display name")
            display = unquote_string(text[: end + 1])
            text = text[end + 1 :].lstrip()
            if not text.startswith("<"):
                raise SipParseError("Display name without <URI>")
        lt = text.find("<")
        semi = text.find(";")
        if lt >= 0 and (semi < 0 or lt < semi or display is not None):
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError("Unterminated <URI>")
            if display is None:
                token_name = text[:lt].strip()
                # display-name = *(token LWS) / quoted-string: "Bell, Alexander" needs quotes (RFC 4475
                # 3.1.2.15). Tolerated: non-ASCII letters unquoted (`Jörg <sip:...>`), which some phones send
                # and which separate nothing.
                if token_name and not all(_is_display_word(word) for word in token_name.split()):
                    raise SipParseError("Display name needs quotes")
                display = token_name or None
            uri_text, rest = text[lt + 1 : gt], text[gt + 1 :].strip()
            if (
                uri_text[:1].isspace() or uri_text[-1:].isspace()
            ):  # RAQUOT/LAQUOT: no LWS inside (4475 3.1.2.14)
                raise SipParseError("Blank inside <URI>")
        else:
            # addr-spec: parameters after the URI belong to the header, not the URI (RFC 3261 20.10).
            uri_text, _, rest = text.partition(";")
            if "?" in uri_text or "," in uri_text:  # RFC 3261 20: such a URI MUST be in <> (4475 3.1.2.13)
                raise SipParseError("URI with ? or , not in <>")
            rest = ";" + rest if rest or text.endswith(";") else ""
        if rest and not rest.startswith(";"):
            raise SipParseError("Junk after URI")
        params = parse_header_params(rest[1:]) if rest else ()
        return cls(uri=parse_uri(uri_text), display_name=display, params=params)

    def param(self, name: str, default: str | None = None) -> str | None:
        found, value = find_param(self.params, name)
        return value if found and value is not None else default

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name)[0]

    def with_param(self, name: str, value: str | None = None) -> NameAddress:
        return NameAddress(self.uri, self.display_name, set_param(self.params, name, value), self.wildcard)

    def without_param(self, name: str) -> NameAddress:
        lname = name.lower()
        params = tuple(p for p in self.params if p[0].lower() != lname)
        return NameAddress(self.uri, self.display_name, params, self.wildcard)

    def replace(self, **changes: Any) -> NameAddress:
        """A copy with the named fields changed (as `dataclasses.replace`)."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        unknown = changes.keys() - fields.keys()
        if unknown:
            raise TypeError(f"NameAddress has no field {sorted(unknown)[0]!r}")
        fields.update(changes)
        return NameAddress(**fields)

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        name = f"{quote_string(self.display_name)} " if self.display_name is not None else ""
        return f"{name}<{self.uri}>{format_header_params(self.params)}"


def _bad_port(port: str | None) -> int | None:
    """None for an absent port; a port out of range is an error."""
    if port is None:
        return None
    raise SipParseError("Bad port")


# sent-protocol with optional whitespace around the slashes, then LWS, then sent-by and params.
_COLON_SPACE = re.compile(r"\s*:\s*(?=\d+$)")
_TOKEN_RE = r"[A-Za-z0-9\-.!%*_+`'~]+"
_VIA_FAST = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9\-.]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
    rf"((?:;{_TOKEN_RE}(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*)$"
)
_VIA_PROTOCOL = re.compile(r"\s*([^\s/]+)\s*/\s*([^\s/]+)\s*/\s*([^\s/]+)\s+(\S.*)$", re.DOTALL)


class _ViaFields:
    """The mutable twin of `Via` (same slots): built, then switched to `Via`."""

    __slots__ = ("transport", "host", "port", "params", "protocol")  # noqa: RUF023 (field order)

    def __init__(self, transport: str, host: str, port: int | None, params: Params, protocol: str) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params
        self.protocol = protocol


class Via:
    """One Via value (RFC 3261 20.42, RFC 3581 rport). Immutable; equal and hashed by its fields.

    Attributes:
        transport: upper-case transport ("UDP", "TCP", "TLS" ...).
        host: sent-by host (IPv6 without brackets); port: sent-by port or None.
        params: in order; `rport` may be a flag (value None) or carry the port.
    """

    __slots__ = ("transport", "host", "port", "params", "protocol")  # noqa: RUF023 (field order)
    transport: str
    host: str
    port: int | None
    params: Params
    protocol: str
    __setattr__, __delattr__, __eq__, __hash__ = (
        _refuse_assignment,
        _refuse_deletion,
        _equal_fields,
        _hash_fields,
    )
    __repr__, __reduce__, __copy__, __deepcopy__ = _repr_fields, _reduce_fields, _same, _same

    def __new__(
        cls,
        transport: str,
        host: str,
        port: int | None = None,
        params: Params = (),
        protocol: str = "SIP/2.0",
    ) -> Via:
        value = _ViaFields(transport, host, port, params, protocol)
        value.__class__ = cls  # type: ignore[assignment]
        return value  # type: ignore[return-value]

    @staticmethod
    def parse(text: str) -> Via:
        """One Via value (a static method: `Via.parse` is one object, the key of `Headers.parsed`'s cache)."""
        fast = _VIA_FAST.match(text)
        if fast is not None:  # the common, well-formed shape: one regex, no further checks needed
            transport, host, port, param_text = fast.groups()
            value = _ViaFields(
                transport if transport == "UDP" or transport == "TCP" else transport.upper(),
                host[1:-1] if host[0] == "[" else host,
                int(port) if port is not None and 0 < int(port) < 65536 else _bad_port(port),
                plain_params(param_text) if param_text else (),
                "SIP/2.0",
            )
            value.__class__ = Via  # type: ignore[assignment]
            return value  # type: ignore[return-value]
        match = _VIA_PROTOCOL.match(text)
        if match is None or not all(is_token(match.group(i)) for i in (1, 2, 3)):
            raise SipParseError("Bad Via sent-protocol")
        pieces = [match.group(1), match.group(2), match.group(3)]
        rest = match.group(4)
        sent_by, semi, param_text = rest.partition(";")
        host, port = parse_host_port(_COLON_SPACE.sub(":", sent_by.strip()))
        params = parse_header_params(param_text) if semi else ()
        return Via(
            transport=pieces[2].upper(),
            host=host,
            port=port,
            params=params,
            protocol=f"{pieces[0].upper()}/{pieces[1]}",
        )

    @classmethod
    def parse_lenient(cls, text: str) -> Via | None:
        """The sent-protocol, sent-by and well-formed parameters of a Via that `parse` refuses, or None.

        Only to route a `400` back for a request whose top Via is malformed but readable (RFC 4475 3.1.2.1:
        `SIP/2.0/UDP 192.0.2.15;;,;,,`); never a substitute for `parse` on a request that is accepted.
        """
        match = _VIA_PROTOCOL.match(text)
        if match is None or not all(is_token(match.group(i)) for i in (1, 2, 3)):
            return None
        sent_by, _, param_text = match.group(4).partition(";")
        try:
            host, port = parse_host_port(_COLON_SPACE.sub(":", sent_by.strip()))
        except SipParseError:
            return None
        params: list[tuple[str, str | None]] = []
        for part in param_text.split(";") if param_text else ():
            try:
                params.extend(parse_header_params(part))
            except SipParseError:
                continue
        return cls(
            match.group(3).upper(), host, port, tuple(params), f"{match.group(1).upper()}/{match.group(2)}"
        )

    def param(self, name: str, default: str | None = None) -> str | None:
        found, value = find_param(self.params, name)
        return value if found and value is not None else default

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name)[0]

    def with_param(self, name: str, value: str | None = None) -> Via:
        return Via(self.transport, self.host, self.port, set_param(self.params, name, value), self.protocol)

    def stamped(self, text: str, host: str, port: int) -> tuple[str, Via | None] | None:
        """This Via, written as `text`, as a server stamps it for a request from host:port.

        RFC 3261 18.2.1: `received=host` when the sent-by host differs; RFC 3581 4: when the client asked
        for `rport`, `rport=port` (and `received`, even when equal). Returns None when nothing changes, else
        the new text and, when known without parsing it again, its parsed value (`Via.parse(new text)`).
        A Via in the common shape keeps its text as written: `rport` gets its value in place and `received`
        is appended. Any other (a Via already carrying `received`, a valued `rport`, unusual spacing) is
        rewritten from its parsed form. A `received` that is not the source address (written by the client,
        RFC 5118 4.5) is replaced even when the sent-by host is the source: responses go to the source.
        """
        has_received, stale, rport, rports = False, False, None, 0
        for key, value in self.params:
            lkey = key.lower()
            if lkey == "rport":
                rport, rports = (key, value), rports + 1
            elif lkey == "received":
                has_received, stale = True, value != host
        if self.host == host and rport is None and not stale:
            return None
        plain_rport = rport is None or (rports == 1 and rport[1] is None)
        if not has_received and plain_rport and _VIA_FAST.match(text) is not None:
            params = list(self.params)
            if rport is not None:
                params[params.index(rport)] = (rport[0], str(port))
            params.append(("received", host))
            semi = text.find(";")
            head = text if semi < 0 else text[:semi]
            new_params = tuple(params)
            stamped = _ViaFields(self.transport, self.host, self.port, new_params, self.protocol)
            stamped.__class__ = Via  # type: ignore[assignment]
            if rport is None:  # the text as written, `received` appended
                return f"{text};received={host}", stamped  # type: ignore[return-value]
            return head + format_header_params(new_params), stamped  # type: ignore[return-value]
        changed = self
        if self.host != host or stale:  # a `received` the client wrote itself is replaced by the source
            changed = changed.with_param("received", host)
        if rport is not None:
            changed = changed.with_param("rport", str(port))
            if changed.received is None:
                changed = changed.with_param("received", host)
        return (str(changed), None) if changed is not self else None

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def maddr(self) -> str | None:
        return self.param("maddr")

    @property
    def rport(self) -> int | None:
        """The port in `rport=N` (set by a server), or None when absent or a bare flag."""
        value = self.param("rport")
        return int(value) if value and (value.isascii() and value.isdigit()) else None

    @property
    def wants_rport(self) -> bool:
        """True when the client asked for symmetric response routing (RFC 3581: a bare `rport`)."""
        return self.has_param("rport")

    @property
    def reliable(self) -> bool:
        return self.transport not in ("UDP", "DTLS")

    @property
    def sent_by(self) -> str:
        return format_host_port(self.host, self.port)

    def __str__(self) -> str:
        host = self.host
        if ":" in host:  # `sent_by` inlined
            host = f"[{host}]"
        if self.port is not None:
            host = f"{host}:{self.port}"
        return f"{self.protocol}/{self.transport} {host}{format_header_params(self.params)}"


MAX_CSEQ = 2**31 - 1


class _CSeqFields:
    """The mutable twin of `CSeq` (same slots): built, then switched to `CSeq`."""

    __slots__ = ("number", "method")  # noqa: RUF023 (field order)

    def __init__(self, number: int, method: str) -> None:
        self.number = number
        self.method = method


class CSeq:
    """The CSeq header (RFC 3261 20.16): a number below 2**31 and a method. Immutable; equal and hashed by
    its fields."""

    __slots__ = ("number", "method")  # noqa: RUF023 (field order)
    number: int
    method: str
    __setattr__, __delattr__, __eq__, __hash__ = (
        _refuse_assignment,
        _refuse_deletion,
        _equal_fields,
        _hash_fields,
    )
    __repr__, __reduce__, __copy__, __deepcopy__ = _repr_fields, _reduce_fields, _same, _same

    def __new__(cls, number: int, method: str) -> CSeq:
        value = _CSeqFields(number, method)
        value.__class__ = cls  # type: ignore[assignment]
        return value  # type: ignore[return-value]

    @staticmethod
    def parse(text: str) -> CSeq:
        """A CSeq value (a static method: `CSeq.parse` is one object, the key of `Headers.parsed`'s cache)."""
        parts = text.split()
        if len(parts) != 2:
            raise SipParseError("Bad CSeq header")
        number_text, method = parts
        number: int | None
        if len(number_text) < 10 and number_text.isdigit() and number_text.isascii():  # the common shape
            number = int(number_text)
        else:  # leading zeros are legal: `0009` (RFC 4475 3.1.1.1)
            number = parse_decimal(number_text, MAX_CSEQ)
        if number is None:
            raise SipParseError("Bad CSeq number")
        if not is_token(method):
            raise SipParseError("Bad CSeq method")
        return CSeq(number, method)

    def __str__(self) -> str:
        return f"{self.number} {self.method}"
