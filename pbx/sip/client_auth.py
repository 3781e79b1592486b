"""Digest authentication on the client side (RFC 3261 22.2-22.3, RFC 7616 3.4, RFC 8760, RFC 2617 3.2.2).

- `Credentials`: a username with a password or precomputed H(A1) values (one per hash function); a
  `CredentialLookup` gives them per realm (`credentials(realm) -> Credentials | None`), never a global.
- `select_challenges`: the Digest challenges of a 401/407 we can answer, the strongest algorithm per
  (header, realm): RFC 8760 2.4 lets a server offer several, most preferred first, and the client picks.
- `DigestCache`: what a client remembers between requests: per (header, realm) the last challenge answered
  and its nonce-count, so later requests (a REGISTER refresh) can answer it pre-emptively, with the count
  going up for every request that reuses a nonce (RFC 7616 3.4).
- `build_authorization`: the `Authorization` / `Proxy-Authorization` value for one request: qop `auth`
  preferred to `auth-int` (RFC 7616 3.4.2), the RFC 2069 form when no qop is offered, `-sess` algorithms,
  `userhash` (RFC 7616 3.4.4), the opaque echoed.

Wire format and hashes are `pbx.sip.digest`'s (shared with the server side). This module knows no
transactions, transports or stacks: `pbx.sip.client` sends requests and retries them with what is built here.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pbx.sip.digest import (
    MD5,
    MD5_SESS,
    SHA256,
    SHA256_SESS,
    SHA512_256,
    SHA512_256_SESS,
    DigestChallenge,
    DigestCredentials,
    UnsupportedAlgorithm,
    base_algorithm,
    canonical_algorithm,
    digest_response,
    ha1,
    is_supported_algorithm,
    userhash,
)
from pbx.sip.errors import SipParseError
from pbx.sip.message import Request, Response

WWW_AUTHENTICATE = "WWW-Authenticate"
PROXY_AUTHENTICATE = "Proxy-Authenticate"

# Strongest first (RFC 8760 3: SHA-512-256 and SHA-256 before MD5); a -sess variant ranks after its base.
_STRENGTH = {name: rank for rank, name in enumerate((SHA512_256, SHA512_256_SESS, SHA256, SHA256_SESS))}
_STRENGTH.update({MD5: 4, MD5_SESS: 5})
_MAX_NC = 0xFFFFFFFF

RealmKey = tuple[bool, str]
"""(proxy, realm): `proxy` is True for Proxy-Authenticate/Proxy-Authorization."""


def random_cnonce() -> str:
    """A fresh client nonce: 128 random bits in hex (a token, so it needs no escaping)."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a client authenticates with in one realm.

    Attributes:
        username: the user name (sent as is, or hashed with `userhash`).
        password: the password, or None when only H(A1) values are known.
        ha1: precomputed H(username:realm:password) in hex, per hash function (`"MD5"`, `"SHA-256"`,
            `"SHA-512-256"`); it serves the `-sess` variants too. Used before the password.
    """

    username: str
    password: str | None = None
    ha1: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.password is None and not self.ha1:
            raise ValueError("Credentials need a password or an H(A1)")
        # `sha-256` and `SHA-256` name one hash; hex compares in lower case.
        canonical = {canonical_algorithm(name): value.lower() for name, value in self.ha1.items()}
        object.__setattr__(self, "ha1", canonical)

    def ha1_for(self, realm: str, algorithm: str | None) -> str | None:
        """H(A1) for `algorithm` in `realm`, or None when neither a stored hash nor the password gives it.

        Raises:
            UnsupportedAlgorithm: for an algorithm a client cannot hash.
        """
        base = base_algorithm(algorithm, client=True)
        stored = self.ha1.get(base)
        if stored is not None:
            return stored
        if self.password is None:
            return None
        return ha1(self.username, realm, self.password, algorithm, client=True)


CredentialLookup = Callable[[str], "Credentials | None"]
"""realm -> the credentials to answer its challenges with, or None (then that realm is not answered)."""


def _answerable(challenge: DigestChallenge) -> bool:
    if not is_supported_algorithm(challenge.algorithm, client=True):
        return False
    return not challenge.qop or "auth" in challenge.qop or "auth-int" in challenge.qop


def _strength(challenge: DigestChallenge) -> int:
    return _STRENGTH.get(challenge.algorithm or MD5, len(_STRENGTH))


def select_challenges(response: Response) -> dict[RealmKey, DigestChallenge]:
    """The challenges of `response` we can compute, one per (proxy, realm): the strongest algorithm.

    Both header kinds are read whatever the status: a forking proxy may aggregate 401s and 407s into one
    response (RFC 3261 22.3, 16.7). Other schemes, malformed challenges and those with an algorithm or qop we
    cannot compute are skipped; between equally strong offers the first wins (the server's preference).
    """
    chosen: dict[RealmKey, DigestChallenge] = {}
    for proxy, name in ((True, PROXY_AUTHENTICATE), (False, WWW_AUTHENTICATE)):
        for value in response.headers.get_all(name):
            scheme = value.split(None, 1)[0] if value.strip() else ""
            if scheme.lower() != "digest":
                continue
            try:
                challenge = DigestChallenge.parse(value)
            except SipParseError:
                continue
            if not _answerable(challenge):
                continue
            key = (proxy, challenge.realm)
            best = chosen.get(key)
            if best is None or _strength(challenge) < _strength(best):
                chosen[key] = challenge
    return chosen


class DigestCache:
    """Challenges a client answered, with their nonce-counts, for pre-emptive reuse (RFC 7616 3.4, 3.5).

    Keep one per server (per trunk, per registration): a nonce means something only to the server that made
    it. Bounded: at most `max_realms` (proxy, realm) entries, least recently used first out. Remember only
    what worked or may work: `forget` a realm whose credentials were refused.
    """

    __slots__ = ("_entries", "_max")

    def __init__(self, max_realms: int = 8) -> None:
        if max_realms < 1:
            raise ValueError("max_realms must be positive")
        self._max = max_realms
        self._entries: OrderedDict[RealmKey, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def challenges(self) -> list[tuple[RealmKey, DigestChallenge]]:
        """The remembered challenges, least recently used first."""
        return [(key, entry.challenge) for key, entry in self._entries.items()]

    def next_nc(self, key: RealmKey, challenge: DigestChallenge) -> int:
        """Count one more request answering `challenge`: 1 for a nonce not seen before, else the last + 1.

        Remembers `challenge` as the one to reuse for `key`. A count that would pass 8 hex digits starts the
        nonce over at 1 (the server then asks for a fresh nonce).
        """
        entry = self._entries.get(key)
        if entry is not None and entry.challenge.nonce == challenge.nonce and entry.nc < _MAX_NC:
            entry.challenge = challenge
            entry.nc += 1
        else:
            entry = self._entries[key] = _Entry(challenge)
        self._entries.move_to_end(key)
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return entry.nc

    def forget(self, key: RealmKey) -> None:
        """Drop what is remembered for `key` (its credentials were refused)."""
        self._entries.pop(key, None)


class _Entry:
    __slots__ = ("challenge", "nc")

    def __init__(self, challenge: DigestChallenge) -> None:
        self.challenge = challenge
        self.nc = 1


def build_authorization(
    challenge: DigestChallenge,
    credentials: Credentials,
    request: Request,
    *,
    nc: int,
    cnonce: str,
) -> DigestCredentials:
    """The credentials answering `challenge` for `request` (RFC 7616 3.4, RFC 3261 22.2).

    The digest-uri is the Request-URI; qop `auth` is chosen when offered, else `auth-int` (the body hashed),
    else the RFC 2069 form (no qop, nc or cnonce, unless a -sess algorithm needs the cnonce). With
    `userhash=true` in the challenge the username is sent hashed (RFC 7616 3.4.4).

    Raises:
        UnsupportedAlgorithm: when the algorithm or qop cannot be computed, or no H(A1) is available.
        ValueError: when a value cannot be carried in a header (CR, LF or NUL in the username).
    """
    qop = "auth" if "auth" in challenge.qop else "auth-int" if "auth-int" in challenge.qop else None
    if challenge.qop and qop is None:
        raise UnsupportedAlgorithm(f"Unsupported qop-options {challenge.qop!r}")
    algorithm = challenge.algorithm
    sess = algorithm is not None and algorithm.endswith("-sess")
    key = credentials.ha1_for(challenge.realm, algorithm)
    if key is None:
        raise UnsupportedAlgorithm(f"No H(A1) for {algorithm or MD5}")
    uri = str(request.uri)
    nc_text = f"{nc:08x}" if qop is not None else None
    client_nonce = cnonce if qop is not None or sess else None
    response = digest_response(
        key,
        request.method,
        uri,
        challenge.nonce,
        nc_text,
        client_nonce,
        qop,
        algorithm,
        request.body,
        client=True,
    )
    username = credentials.username
    params: tuple[tuple[str, str], ...] = ()
    if dict(challenge.params).get("userhash", "").lower() == "true":
        username = userhash(username, challenge.realm, algorithm)
        params = (("userhash", "true"),)
    return DigestCredentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=algorithm,
        cnonce=client_nonce,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc_text,
        params=params,
    )


def authorization_header(proxy: bool) -> str:
    """`Proxy-Authorization` for a Proxy-Authenticate challenge, else `Authorization` (RFC 3261 22.3)."""
    return "Proxy-Authorization" if proxy else "Authorization"
