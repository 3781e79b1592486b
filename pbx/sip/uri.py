"""SIP, SIPS and tel URIs (RFC 3261 sections 19.1 and 25.1, RFC 3966).

URIs are immutable values: parse with `parse_uri`, change with `replace`/`with_param`, serialize with `str()`.
Percent-escapes are decoded on parse and re-applied on output, so `"sip:%61lice@h"` and `"sip:alice@h"` are
the same value. Equality follows RFC 3261 19.1.4: the user part and password compare case-sensitively,
everything else (host, parameter names and values, header names and values) case-insensitively, and the
`user`, `ttl`, `method`, `maddr` and `transport` parameters must match when either side has them.

This module knows nothing of name-addr (`pbx.sip.headers`) or of messages.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote

from pbx.sip.errors import SipParseError

# Characters allowed unescaped (RFC 3261 25.1), besides alphanumerics.
_MARK = "-_.!~*'()"
_USER_SAFE = _MARK + "&=+$,;?/"
_PASSWORD_SAFE = _MARK + "&=+$,"
_PARAM_SAFE = _MARK + "[]/:&+$"
_HEADER_SAFE = _MARK + "[]/?:+$"
_HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
# Parameters that must match when present in either URI (RFC 3261 19.1.4).
_SIGNIFICANT_PARAMS = ("user", "ttl", "method", "maddr", "transport")

Params = tuple[tuple[str, str | None], ...]


def _quote(text: str, safe: str) -> str:
    """Percent-escape for output; bytes that were not UTF-8 on the wire are escaped too."""
    return quote(text, safe=safe, errors="surrogateescape")


def _unquote(text: str) -> str:
    return unquote(text, errors="surrogateescape")


def find_param(params: Params, name: str) -> tuple[bool, str | None]:
    lname = name.lower()
    for key, value in params:
        if key == name or key.lower() == lname:
            return True, value
    return False, None


def set_param(params: Params, name: str, value: str | None) -> Params:
    lname = name.lower()
    kept = tuple(p for p in params if p[0].lower() != lname)
    return (*kept, (name, value))


def _parse_params(text: str, what: str) -> Params:
    """Parse `;a=b;c` (without the leading `;`) into ((a, b), (c, None))."""
    out: list[tuple[str, str | None]] = []
    for part in text.split(";"):
        if not part:
            raise SipParseError(f"Empty {what} parameter")
        name, eq, value = part.partition("=")
        name = _unquote(name.strip())
        if not name:
            raise SipParseError(f"Bad {what} parameter")
        out.append((name, _unquote(value.strip()) if eq else None))
    return tuple(out)


def _format_params(params: Params) -> str:
    out = []
    for name, value in params:
        out.append(f";{_quote(name, _PARAM_SAFE)}")
        if value is not None:
            out.append(f"={_quote(value, _PARAM_SAFE)}")
    return "".join(out)


def parse_decimal(text: str, limit: int) -> int | None:
    """A decimal number as SIP writes it (`1*DIGIT`, RFC 3261 25.1), or None when it is not one or exceeds
    `limit`. Leading zeros are legal (`CSeq: 0009`, `Max-Forwards: 0068`, RFC 4475 3.1.1.1) and any number
    of them is read without building a big integer."""
    if not (text.isascii() and text.isdigit()):
        return None
    if text[0] == "0":
        text = text.lstrip("0") or "0"
    if len(text) > len(str(limit)):
        return None
    value = int(text)
    return value if value <= limit else None


def _ipv6_address(text: str) -> str | None:
    """`text` as written when it is an IPv6 address, else None.

    RFC 5118 4.10: RFC 3261's ABNF let an IPv4-suffixed address be written with three colons
    (`2001:db8:::192.0.2.1`); that form is tolerated and read as the two-colon address, which is returned.
    """
    try:
        ipaddress.IPv6Address(text)
        return text
    except ValueError:
        pass
    if ":::" in text and "." in text:
        fixed = text.replace(":::", "::", 1)
        try:
            ipaddress.IPv6Address(fixed)
            return fixed
        except ValueError:
            pass
    return None


def parse_host_port(text: str) -> tuple[str, int | None]:
    """Parse `host[:port]` where host is a name, an IPv4 address or a bracketed IPv6 reference.

    Returns the host without brackets and the port (None when absent).
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("Unterminated IPv6 reference")
        address, rest = _ipv6_address(text[1:end]), text[end + 1 :]
        if address is None:
            raise SipParseError("Bad IPv6 address")
        host = address
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
        if not host or not _HOSTNAME_CHARS.issuperset(host):
            raise SipParseError("Bad host")
    if not rest:
        return host, None
    port = parse_decimal(rest[1:], 65535) if rest.startswith(":") else None
    if not port:
        raise SipParseError("Bad port")
    return host, port


def format_host(host: str) -> str:
    """Bracket an IPv6 literal for use in a URI or header."""
    return f"[{host}]" if ":" in host else host


def format_host_port(host: str, port: int | None) -> str:
    return format_host(host) if port is None else f"{format_host(host)}:{port}"


def _host_key(host: str) -> object:
    """Hosts compare case-insensitively; IPv6 literals by address (RFC 5954 4: `::1` == `0:0:0:0:0:0:0:1`)."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            pass
    return host.lower()


@dataclass(frozen=True, slots=True, eq=False)
class SipURI:
    """A `sip:` or `sips:` URI.

    Attributes:
        scheme: "sip" or "sips" (lower case).
        user: the decoded user part, or None.
        host: host name or address, IPv6 without brackets.
        port: explicit port or None.
        password: decoded password or None (deprecated by RFC 3261, still parsed).
        params: URI parameters in order, decoded; value None for a bare flag like `lr`.
        headers: URI headers (`?a=b&c=d`) in order, decoded.
    """

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    password: str | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = field(default=())
    # `str(self)`, rendered once: a URI is written into every message that carries it (Request-URI, Contact,
    # Route ...), and percent-escaping each part cost several microseconds each time.
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    def param(self, name: str, default: str | None = None) -> str | None:
        """Value of a parameter (names compare case-insensitively); `default` when absent or valueless."""
        found, value = find_param(self.params, name)
        return value if found and value is not None else default

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name)[0]

    def with_param(self, name: str, value: str | None = None) -> SipURI:
        return replace(self, params=set_param(self.params, name, value))

    def without_param(self, name: str) -> SipURI:
        lname = name.lower()
        return replace(self, params=tuple(p for p in self.params if p[0].lower() != lname))

    def replace(self, **changes: object) -> SipURI:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def transport(self) -> str | None:
        """The `transport` parameter lower-cased, or None."""
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def host_port(self) -> str:
        return format_host_port(self.host, self.port)

    @property
    def aor(self) -> str:
        """The address-of-record form `scheme:user@host` (lower-cased host, no port, params or headers)."""
        user = f"{_quote(self.user, _USER_SAFE)}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{format_host(self.host.lower())}"

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._render()
            object.__setattr__(self, "_text", text)
        return text

    def _render(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(_quote(self.user, _USER_SAFE))
            if self.password is not None:
                parts.append(":" + _quote(self.password, _PASSWORD_SAFE))
            parts.append("@")
        parts.append(format_host_port(self.host, self.port))
        if self.params:
            parts.append(_format_params(self.params))
        if self.headers:
            parts.append(
                "?"
                + "&".join(f"{_quote(k, _HEADER_SAFE)}={_quote(v, _HEADER_SAFE)}" for k, v in self.headers)
            )
        return "".join(parts)

    def __repr__(self) -> str:
        return f"SipURI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipURI):
            return NotImplemented
        if (
            self.scheme != other.scheme
            or self.user != other.user
            or self.password != other.password
            or _host_key(self.host) != _host_key(other.host)
            or self.port != other.port
        ):
            return False
        mine = {k.lower(): (v.lower() if v is not None else None) for k, v in self.params}
        theirs = {k.lower(): (v.lower() if v is not None else None) for k, v in other.params}
        for name in _SIGNIFICANT_PARAMS:
            if (name in mine or name in theirs) and mine.get(name, "\0") != theirs.get(name, "\0"):
                return False
        for name in mine.keys() & theirs.keys():
            if mine[name] != theirs[name]:
                return False
        return sorted((k.lower(), v.lower()) for k, v in self.headers) == sorted(
            (k.lower(), v.lower()) for k, v in other.headers
        )

    def __hash__(self) -> int:
        return hash((self.scheme, self.user, _host_key(self.host), self.port))


_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")


@dataclass(frozen=True, slots=True, eq=False)
class TelURI:
    """A `tel:` URI (RFC 3966): a global (`+...`) or local number with parameters.

    Equality (RFC 3966 4): visual separators `-.()` in the number are ignored, hex digits compare
    case-insensitively, parameters compare without regard to order or the case of names and values.
    """

    number: str
    params: Params = ()

    @property
    def scheme(self) -> str:
        return "tel"

    def param(self, name: str, default: str | None = None) -> str | None:
        found, value = find_param(self.params, name)
        return value if found and value is not None else default

    def __str__(self) -> str:
        return f"tel:{self.number}{_format_params(self.params)}"

    def _key(self) -> tuple[str, frozenset[tuple[str, str | None]]]:
        number = self.number.translate(_VISUAL_SEPARATORS).lower()
        params = frozenset((k.lower(), v.lower() if v is not None else None) for k, v in self.params)
        return number, params

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelURI):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True, slots=True)
class AbsoluteURI:
    """Any other URI scheme (`mailto:`, `urn:` ...), kept verbatim so a `416` can name it."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


URI = SipURI | TelURI | AbsoluteURI


# The common shape of a SIP URI: lower-case scheme, an optional plain user part, a host name or IPv4 address,
# an optional port, plain parameters; no escapes, password, IPv6 reference or headers. Such text parses to the
# same value as the careful path below would give; anything else (or a port out of range) takes that path.
_PARAM_CHARS = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]"
SIP_URI_FAST_PATTERN = (
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,]+)@)?([A-Za-z0-9\-._]+)(?::([0-9]{1,5}))?"
    rf"((?:;{_PARAM_CHARS}+(?:={_PARAM_CHARS}*)?)*)"
)
"""That shape as a pattern with 5 groups (scheme, user, host, port, parameters), for headers to embed."""
_SIP_URI_FAST = re.compile(SIP_URI_FAST_PATTERN)


_PARSED: dict[str, URI] = {}  # text -> URI (immutable values): the same URIs come back with every refresh


def parse_uri(text: str) -> URI:
    """Parse a URI; `sip`/`sips`/`tel` strictly, other schemes as `AbsoluteURI`.

    URIs are immutable, so the last few thousand parsed are remembered by their text: a registrar or a
    proxy sees the same Request-URIs, To and Contact URIs again with every refresh.

    Raises:
        SipParseError: when the text is not a URI or a sip/sips/tel URI is malformed.
    """
    found = _PARSED.get(text)
    if found is not None:
        return found
    uri: URI | None = None
    fast = _SIP_URI_FAST.fullmatch(text)
    if fast is not None:
        scheme, user, host, port_text, param_text = fast.groups()
        port = int(port_text) if port_text is not None else None
        if port is None or 0 < port < 65536:
            uri = SipURI(host=host, user=user, port=port, scheme=scheme, params=plain_params(param_text))
    if uri is None:
        uri = _parse_uri_careful(text)
    if len(_PARSED) >= 4096:  # texts come from the network: bound what they can make us keep
        _PARSED.clear()
    _PARSED[text] = uri
    return uri


def is_plain_sip_uri(text: str) -> bool:
    """Whether `text` is a SIP URI in the shape `parse_uri` reads fast (it then parses without error)."""
    fast = _SIP_URI_FAST.fullmatch(text)
    return fast is not None and (fast.group(4) is None or 0 < int(fast.group(4)) < 65536)


def plain_params(text: str) -> Params:
    """`;a=b;c` (empty text: none) as ((a, b), (c, None)), for text a fast-path regex has vetted: every
    parameter a name with an optional `=value`, no escapes, blanks or quotes."""
    if not text:
        return ()
    params = []
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        params.append((name, value if eq else None))
    return tuple(params)


def _parse_uri_careful(text: str) -> URI:
    """`parse_uri` for any shape: escapes, passwords, IPv6, headers, tel and other schemes, and errors."""
    scheme, colon, rest = text.strip().partition(":")
    lscheme = scheme.lower()
    if not colon or not scheme[:1].isalpha() or not all(c.isalnum() or c in "+-." for c in scheme):
        raise SipParseError("Bad URI")
    if lscheme in ("sip", "sips"):
        return _parse_sip_uri(lscheme, rest)
    if lscheme == "tel":
        number, semi, params_text = rest.partition(";")
        if not number:
            raise SipParseError("Bad tel URI")
        return TelURI(_unquote(number), _parse_params(params_text, "URI") if semi else ())
    if not rest or any(c in rest for c in ' \t\r\n<>"'):
        raise SipParseError("Bad URI")
    return AbsoluteURI(lscheme, rest)


def parse_sip_uri(text: str) -> SipURI:
    """Parse a URI that must be sip: or sips:."""
    uri = parse_uri(text)
    if not isinstance(uri, SipURI):
        raise SipParseError("Not a SIP URI")
    return uri


def _parse_sip_uri(scheme: str, rest: str) -> SipURI:
    if any(c in rest for c in ' \t\r\n<>"'):
        raise SipParseError("Bad character in SIP URI")
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user_text, colon, password_text = userinfo.partition(":")
        if not user_text:
            raise SipParseError("Empty user part in SIP URI")
        user = _unquote(user_text)
        password = _unquote(password_text) if colon else None
    rest, qmark, header_text = rest.partition("?")
    hostport, semi, param_text = rest.partition(";")
    host, port = parse_host_port(hostport)
    params = _parse_params(param_text, "URI") if semi else ()
    headers: list[tuple[str, str]] = []
    if qmark:
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise SipParseError("Bad URI header")
            headers.append((_unquote(name), _unquote(value)))
    return SipURI(
        host=host,
        user=user,
        port=port,
        scheme=scheme,
        password=password,
        params=params,
        headers=tuple(headers),
    )
