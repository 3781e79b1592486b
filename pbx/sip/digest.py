"""The Digest scheme on the wire, and its hashes (RFC 3261 section 22 and 25.1, RFC 7616, RFC 8760, RFC 2617).

- `DigestChallenge` (a `WWW-Authenticate` / `Proxy-Authenticate` value) and `DigestCredentials` (an
  `Authorization` / `Proxy-Authorization` value): immutable, `parse(text)` and `__str__`, parse errors raise
  `SipParseError`. Auth-params are comma-separated, names case-insensitive, values a token or a quoted-string
  (commas and escaped quotes allowed inside); a parameter given twice is an error (RFC 7616 3.3).
- `ha1` and `digest_response`: RFC 7616 3.4.1/3.4.2 for MD5, MD5-sess, SHA-256 and SHA-256-sess, with
  `qop=auth`, `qop=auth-int` and the RFC 2069 form without qop. On the server side SHA-512-256 is parsed but
  not hashed (`UnsupportedAlgorithm`); RFC 8760 lets a server offer only the algorithms it implements. A
  client must answer what a server offers, so with `client=True` these functions also hash SHA-512-256 and
  SHA-512-256-sess (RFC 7616 3.2), and `userhash` computes the RFC 7616 3.4.4 username hash.
- `answer_challenge`: the simple client side (one challenge, a password); `pbx.sip.client_auth` builds on the
  hashes here for full requests (several challenges, nonce-counts, precomputed H(A1)).

Everything is text in, text out: this module knows no nonces, no clocks, no users and no messages; the policy
(which challenge to send, whether credentials are good) lives in `pbx.sip.auth`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from pbx.sip.errors import SipParseError
from pbx.sip.headers import is_token, quote_string

MD5 = "MD5"
MD5_SESS = "MD5-sess"
SHA256 = "SHA-256"
SHA256_SESS = "SHA-256-sess"
SHA512_256 = "SHA-512-256"
SHA512_256_SESS = "SHA-512-256-sess"

# Canonical spelling of every algorithm we recognise; algorithm names compare case-insensitively.
_ALGORITHMS = {a.lower(): a for a in (MD5, MD5_SESS, SHA256, SHA256_SESS, SHA512_256, SHA512_256_SESS)}
# What the server side challenges with and verifies.
_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {MD5: hashlib.md5, SHA256: hashlib.sha256}


def _sha512_256(data: bytes) -> hashlib._Hash:
    return hashlib.new("sha512_256", data)


# What a client answers: the server's set and SHA-512-256 (RFC 7616 3.2), when OpenSSL provides it.
_CLIENT_HASHES = dict(_HASHES)
if "sha512_256" in hashlib.algorithms_available:  # pragma: no branch  (every OpenSSL since 1.1.1)
    _CLIENT_HASHES[SHA512_256] = _sha512_256

# Hex length of H(...) per base algorithm (for dummy hashes and sanity checks).
HASH_HEX_LENGTH = {MD5: 32, SHA256: 64}

_WS = " \t\r\n"
_FORBIDDEN_IN_VALUES = ("\r", "\n", "\0")
_FORBIDDEN_SEARCH = re.compile("[\r\n\0]").search

Params = tuple[tuple[str, str], ...]


class UnsupportedAlgorithm(ValueError):
    """A digest algorithm (or qop) this implementation does not compute."""


def canonical_algorithm(name: str) -> str:
    """`sha-256` -> `SHA-256`; unknown names are returned as given."""
    return _ALGORITHMS.get(name.lower(), name)


def base_algorithm(algorithm: str | None, *, client: bool = False) -> str:
    """The hash behind an algorithm, without `-sess`: `MD5-sess` -> `MD5`; None (absent) -> `MD5`.

    Args:
        algorithm: the algorithm's name, any case.
        client: also accept SHA-512-256 and SHA-512-256-sess (what a client can answer).

    Raises:
        UnsupportedAlgorithm: for anything but MD5, SHA-256 and their -sess variants (and with `client`,
            SHA-512-256 and SHA-512-256-sess).
    """
    name = canonical_algorithm(algorithm) if algorithm is not None else MD5
    base = name[: -len("-sess")] if name.endswith("-sess") else name
    if base not in (_CLIENT_HASHES if client else _HASHES):
        raise UnsupportedAlgorithm(f"Unsupported digest algorithm {name!r}")
    return base


def is_supported_algorithm(algorithm: str | None, *, client: bool = False) -> bool:
    """True for MD5, MD5-sess, SHA-256, SHA-256-sess and None (MD5); with `client`, SHA-512-256(-sess) too."""
    try:
        base_algorithm(algorithm, client=client)
    except UnsupportedAlgorithm:
        return False
    return True


# -- auth-param lists ----------------------------------------------------------------------------------------


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read the quoted-string starting at `text[pos] == '"'`; return its decoded content and the end."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        ch = text[pos]
        if ch == "\\":
            if pos + 1 >= len(text):
                break
            ch = text[pos + 1]
            pos += 1
        elif ch == '"':
            return "".join(out), pos + 1
        if ch in _FORBIDDEN_IN_VALUES:
            raise SipParseError("Control character in auth-param")
        out.append(ch)
        pos += 1
    raise SipParseError("Unterminated quoted string in auth-param")


_TOKEN_RE = r"[A-Za-z0-9\-.!%*_+`'~]+"
_SCHEME_FAST = re.compile(rf"({_TOKEN_RE})[ \t\r\n]+")
# One auth-param and the comma after it (or the end): what nearly every phone sends, matched in one step.
_PARAM_FAST = re.compile(
    rf'[ \t\r\n,]*({_TOKEN_RE})[ \t\r\n]*=[ \t\r\n]*(?:"([^"\\\r\n\0]*)"|({_TOKEN_RE}))[ \t\r\n]*(?:,|$)'
)


def _parse_fast(text: str) -> tuple[str, list[tuple[str, str]]] | None:
    """The common case (no backslash escapes, well-formed) with regular expressions; None to go slow."""
    head = _SCHEME_FAST.match(text)
    if head is None:
        return None
    pos = head.end()
    end = len(text)
    params: list[tuple[str, str]] = []
    match = _PARAM_FAST.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            return None
        name, quoted, token = m.groups()
        params.append((name.lower(), token if quoted is None else quoted))
        pos = m.end()
    if len({k for k, _ in params}) != len(params):
        return None  # a parameter given twice: the slow parser says which
    return head.group(1), params


def parse_auth_params(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split `Scheme name=value, name="quoted, value"` into the scheme and (lower-case name, value) pairs.

    Empty list elements (`a=1,,b=2`) are skipped as RFC 7230 7 allows. Quoted values are unescaped.

    Raises:
        SipParseError: for a bad scheme, a parameter without `=`, a non-token unquoted value, an unterminated
            quoted string, a missing comma or a parameter given twice.
    """
    text = text.strip(_WS)
    return _parse_fast(text) or _parse_slow(text)


def _parse_slow(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Character by character, with a precise error for whatever is wrong (`text` is stripped)."""
    pos = 0
    while pos < len(text) and text[pos] not in _WS:
        pos += 1
    scheme = text[:pos]
    if not is_token(scheme):
        raise SipParseError("Bad auth scheme")
    params: list[tuple[str, str]] = []
    seen: set[str] = set()
    need_comma = False
    while True:
        pos = _skip_ws(text, pos)
        if pos >= len(text):
            break
        if text[pos] == ",":
            pos, need_comma = pos + 1, False
            continue
        if need_comma:
            raise SipParseError("Missing comma between auth-params")
        start = pos
        while pos < len(text) and text[pos] not in _WS and text[pos] not in '=,"':
            pos += 1
        name = text[start:pos]
        if not is_token(name):
            raise SipParseError("Bad auth-param name")
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] != "=":
            raise SipParseError(f"Auth-param {name!r} without a value")
        pos = _skip_ws(text, pos + 1)
        if pos < len(text) and text[pos] == '"':
            value, pos = _read_quoted(text, pos)
        else:
            start = pos
            while pos < len(text) and text[pos] not in _WS and text[pos] != ",":
                pos += 1
            value = text[start:pos]
            if not is_token(value):
                raise SipParseError(f"Bad value of auth-param {name!r}")
        key = name.lower()
        if key in seen:
            raise SipParseError(f"Auth-param {name!r} given twice")
        seen.add(key)
        params.append((key, value))
        need_comma = True
    return scheme, params


def _digest_params(text: str, what: str) -> dict[str, str]:
    scheme, params = parse_auth_params(text)
    if scheme.lower() != "digest":
        raise SipParseError(f"Not a Digest {what}")
    return dict(params)


def _check_values(obj: object, names: tuple[str, ...]) -> None:
    search = _FORBIDDEN_SEARCH
    for name in names:
        value = getattr(obj, name)
        if value is not None and search(value) is not None:
            raise ValueError(f"{name} must not contain CR, LF or NUL")


def _format_value(value: str) -> str:
    return value if is_token(value) else quote_string(value)


def _extra(params: dict[str, str], known: frozenset[str]) -> Params:
    return tuple((k, v) for k, v in params.items() if k not in known)


# -- challenges ----------------------------------------------------------------------------------------------

_CHALLENGE_KNOWN = frozenset(("realm", "nonce", "algorithm", "qop", "opaque", "stale", "domain"))


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """One Digest challenge (RFC 3261 25.1 `challenge`, RFC 7616 3.3).

    Attributes:
        realm: the protection space, shown to users and part of H(A1).
        nonce: server-chosen, opaque to the client.
        algorithm: canonical spelling (`SHA-256`, `MD5-sess` ...), unknown names as written; None when absent
            (which means MD5).
        qop: the qop-options offered, e.g. `("auth",)`; empty for an RFC 2069 challenge.
        opaque: returned unchanged by the client, or None.
        stale: True when the previous request was refused only because its nonce had expired.
        domain: the space-separated URI list, or None.
        params: other auth-params (lower-case name, unquoted value), e.g. RFC 7616 `charset`, `userhash`.
    """

    realm: str
    nonce: str
    algorithm: str | None = None
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    params: Params = ()

    def __post_init__(self) -> None:
        _check_values(self, ("realm", "nonce", "algorithm", "opaque", "domain"))

    @classmethod
    def parse(cls, text: str) -> DigestChallenge:
        """Parse a `WWW-Authenticate` or `Proxy-Authenticate` value.

        Raises:
            SipParseError: when the text is not a well-formed Digest challenge with realm and nonce.
        """
        params = _digest_params(text, "challenge")
        if "realm" not in params or "nonce" not in params:
            raise SipParseError("Digest challenge without realm or nonce")
        stale_text = params.get("stale", "false").lower()
        if stale_text not in ("true", "false"):
            raise SipParseError("Bad stale parameter")
        qop: tuple[str, ...] = ()
        if "qop" in params:
            qop = tuple(q.strip() for q in params["qop"].split(","))
            if not all(is_token(q) for q in qop):
                raise SipParseError("Bad qop-options")
        algorithm = params.get("algorithm")
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=canonical_algorithm(algorithm) if algorithm is not None else None,
            qop=qop,
            opaque=params.get("opaque"),
            stale=stale_text == "true",
            domain=params.get("domain"),
            params=_extra(params, _CHALLENGE_KNOWN),
        )

    def __str__(self) -> str:
        parts = [f"realm={quote_string(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={quote_string(self.domain)}")
        parts.append(f"nonce={quote_string(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={quote_string(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        if self.algorithm is not None:
            parts.append(f"algorithm={_format_value(self.algorithm)}")
        if self.qop:
            parts.append(f"qop={quote_string(','.join(self.qop))}")
        parts.extend(f"{k}={_format_value(v)}" for k, v in self.params)
        return "Digest " + ", ".join(parts)


# -- credentials ---------------------------------------------------------------------------------------------

_CREDENTIALS_FIELDS = (
    "username",
    "realm",
    "nonce",
    "uri",
    "response",
    "algorithm",
    "cnonce",
    "opaque",
    "qop",
    "nc",
)
_CREDENTIALS_KNOWN = frozenset(_CREDENTIALS_FIELDS)
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """One Digest credentials value (RFC 3261 25.1 `credentials`, RFC 7616 3.4).

    Attributes:
        username, realm, nonce, uri: as sent (unquoted); `uri` is the digest-uri, meant to equal the
            Request-URI.
        response: the request-digest, hex as sent.
        algorithm: canonical spelling, None when absent (MD5).
        cnonce, qop, nc: the client nonce, the message-qop and the nonce-count (8 hex digits, kept as written
            because the client hashed that text); all None in the RFC 2069 form.
        opaque: the challenge's opaque, or None.
        params: other auth-params (lower-case name, unquoted value), e.g. `userhash`.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    params: Params = ()

    def __post_init__(self) -> None:
        _check_values(
            self,
            ("username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "opaque", "qop", "nc"),
        )

    @classmethod
    def parse(cls, text: str) -> DigestCredentials:
        """Parse an `Authorization` or `Proxy-Authorization` value.

        Raises:
            SipParseError: when the text is not well-formed Digest credentials with username, realm, nonce,
                uri and response, or when `nc` is not 8 hex digits.
        """
        params = _digest_params(text, "credentials")
        missing = [p for p in ("username", "realm", "nonce", "uri", "response") if p not in params]
        if missing:
            raise SipParseError(f"Digest credentials without {missing[0]}")
        nc = params.get("nc")
        if nc is not None and (len(nc) != 8 or not _HEX.issuperset(nc)):
            raise SipParseError("Bad nonce-count")
        qop = params.get("qop")
        if qop is not None and not is_token(qop):
            raise SipParseError("Bad message-qop")
        algorithm = params.get("algorithm")
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"],
            algorithm=canonical_algorithm(algorithm) if algorithm is not None else None,
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
            qop=qop,
            nc=nc,
            params=_extra(params, _CREDENTIALS_KNOWN),
        )

    @property
    def nonce_count(self) -> int | None:
        """`nc` as an integer, or None."""
        return int(self.nc, 16) if self.nc is not None else None

    def __str__(self) -> str:
        parts = [
            f"username={quote_string(self.username)}",
            f"realm={quote_string(self.realm)}",
            f"nonce={quote_string(self.nonce)}",
            f"uri={quote_string(self.uri)}",
            f"response={quote_string(self.response)}",
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={_format_value(self.algorithm)}")
        if self.cnonce is not None:
            parts.append(f"cnonce={quote_string(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={quote_string(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={_format_value(self.qop)}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        parts.extend(f"{k}={_format_value(v)}" for k, v in self.params)
        return "Digest " + ", ".join(parts)


# -- hashes --------------------------------------------------------------------------------------------------


def _h(base: str, text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return _CLIENT_HASHES[base](data).hexdigest()


def ha1(
    username: str, realm: str, password: str, algorithm: str | None = MD5, *, client: bool = False
) -> str:
    """H(username:realm:password) in lower-case hex: what a store keeps instead of the password.

    For the -sess algorithms this is the same value as for their base hash (the per-session step needs the
    nonces and happens in `digest_response`), so one stored HA1 per hash function serves both.

    Raises:
        UnsupportedAlgorithm: for algorithms other than MD5, SHA-256 and their -sess variants (with `client`,
            SHA-512-256 and its -sess variant are hashed too).
    """
    return _h(base_algorithm(algorithm, client=client), f"{username}:{realm}:{password}")


def userhash(username: str, realm: str, algorithm: str | None) -> str:
    """H(username:realm): the username a client sends for a challenge with `userhash=true` (RFC 7616 3.4.4).

    Raises:
        UnsupportedAlgorithm: for an algorithm a client cannot hash.
    """
    return _h(base_algorithm(algorithm, client=True), f"{username}:{realm}")


def digest_response(
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str | None,
    cnonce: str | None,
    qop: str | None,
    algorithm: str | None,
    body: bytes = b"",
    *,
    client: bool = False,
) -> str:
    """The request-digest of RFC 7616 3.4.1 (RFC 2617 3.2.2.1, RFC 2069 when `qop` is None), lower-case hex.

    Args:
        ha1: H(username:realm:password) for the algorithm's hash, hex (case-insensitive).
        method: the SIP method of the request.
        uri: the digest-uri as the client sent it.
        nonce, nc, cnonce: as sent; `nc` and `cnonce` are required with a qop and for the -sess algorithms.
        qop: "auth", "auth-int" or None (RFC 2069 form).
        algorithm: MD5 (or None), MD5-sess, SHA-256 or SHA-256-sess.
        body: the message body, hashed into A2 for `auth-int` only.
        client: also hash SHA-512-256 and SHA-512-256-sess (a client answers what the server offers).

    Raises:
        UnsupportedAlgorithm: for another algorithm or qop.
        ValueError: when `nc` or `cnonce` is missing where the formula needs it.
    """
    base = base_algorithm(algorithm, client=client)
    sess = algorithm is not None and algorithm.lower().endswith("-sess")
    ha1 = ha1.lower()
    if sess:
        if cnonce is None:
            raise ValueError("The -sess algorithms need a cnonce")
        ha1 = _h(base, f"{ha1}:{nonce}:{cnonce}")
    if qop is None:
        return _h(base, f"{ha1}:{nonce}:{_h(base, f'{method}:{uri}')}")
    if qop == "auth":
        ha2 = _h(base, f"{method}:{uri}")
    elif qop == "auth-int":
        ha2 = _h(base, f"{method}:{uri}:{_h(base, body)}")
    else:
        raise UnsupportedAlgorithm(f"Unsupported qop {qop!r}")
    if nc is None or cnonce is None:
        raise ValueError("A qop needs nc and cnonce")
    return _h(base, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def answer_challenge(
    challenge: DigestChallenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
    body: bytes = b"",
) -> DigestCredentials:
    """The credentials a client sends in reply to `challenge` (RFC 3261 22.2/22.3, for a UAC or a trunk).

    Picks qop "auth" when offered, else "auth-int", else the RFC 2069 form; a random cnonce unless given.

    Raises:
        UnsupportedAlgorithm: when the challenge's algorithm or its only qop cannot be computed.
    """
    qop = "auth" if "auth" in challenge.qop else "auth-int" if "auth-int" in challenge.qop else None
    if challenge.qop and qop is None:
        raise UnsupportedAlgorithm(f"Unsupported qop-options {challenge.qop!r}")
    sess = challenge.algorithm is not None and challenge.algorithm.endswith("-sess")
    if cnonce is None and (qop is not None or sess):
        cnonce = secrets.token_hex(8)
    nc_text = f"{nc:08x}" if qop is not None else None
    key = ha1(username, challenge.realm, password, challenge.algorithm)
    response = digest_response(
        key, method, uri, challenge.nonce, nc_text, cnonce, qop, challenge.algorithm, body
    )
    return DigestCredentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        cnonce=cnonce,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc_text,
    )
