"""SIP digest authentication for a UAS or proxy (RFC 3261 22.1-22.4, RFC 7616, RFC 8760, RFC 2617 3.2.2.5).

- `NonceSource`: stateless nonces, base64url(timestamp | salt | HMAC-SHA256(secret, timestamp | salt | realm
  [| opaque])), checked as ok, stale (older than the lifetime) or invalid (forged, malformed, other realm).
- `NonceCounter`: a bounded LRU of the nonce-counts accepted per nonce (RFC 7616 3.3 replay protection).
- `SipDigestCredentials` and `HA1Checker`: the `twisted.cred` pieces. The store keeps only H(A1); the checker
  answers an unknown user by hashing against a dummy H(A1), so both cases cost the same and fail the same way.
- `DigestAuthenticator`: what a registrar or B2BUA calls: `challenge()` builds the 401/407 with one challenge
  per algorithm, most preferred first (RFC 8760), and `authenticate()` classifies a request as
  no_credentials, ok, stale or failed.

This module knows nothing of registrars, tenants, users, configuration or brute-force blocking: it is given a
realm, a lookup of stored H(A1) values and the nonce machinery, and reports outcomes for its caller to count.
Wire format and hashes are in `pbx.sip.digest`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameDigestHash
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, implementer

from pbx.sip.digest import (
    HASH_HEX_LENGTH,
    MD5,
    SHA256,
    DigestChallenge,
    DigestCredentials,
    UnsupportedAlgorithm,
    base_algorithm,
    digest_response,
    is_supported_algorithm,
)
from pbx.sip.errors import SipParseError
from pbx.sip.message import Request, Response, new_tag, random_bytes
from pbx.sip.uri import SipURI, parse_uri

# -- nonces --------------------------------------------------------------------------------------------------

_TIMESTAMP = struct.Struct(">q")  # milliseconds of the injected clock
_SALT_BYTES = 8
_MAC_BYTES = 32
_NONCE_BYTES = _TIMESTAMP.size + _SALT_BYTES + _MAC_BYTES


class NonceStatus(StrEnum):
    """What `NonceSource.check` says of a nonce."""

    OK = "ok"
    STALE = "stale"
    INVALID = "invalid"


class NonceSource:
    """Makes and checks stateless nonces bound to a realm (and optionally to an opaque value).

    A nonce is base64url (unpadded) of an 8-byte millisecond timestamp, 8 random bytes (so that two nonces
    made in the same millisecond differ, which the nonce-count needs) and HMAC-SHA256 over those 16 bytes, the
    realm and the optional `bind` text. No state is kept; a restart with the same secret keeps nonces valid.

    Args:
        clock: the only source of time.
        secret: the HMAC key, at least 16 bytes; keep it secret and the same across a cluster.
        lifetime: seconds a nonce stays fresh; older nonces are `stale`.
    """

    __slots__ = ("_clock", "_keyed", "_lifetime", "_secret")

    def __init__(self, clock: IReactorTime, secret: bytes, lifetime: float = 300) -> None:
        if len(secret) < 16:
            raise ValueError("The nonce secret must be at least 16 bytes")
        if lifetime <= 0:
            raise ValueError("The nonce lifetime must be positive")
        self._clock = clock
        self._secret = bytes(secret)
        self._keyed = hmac.new(self._secret, digestmod="sha256")  # keyed once, copied for each MAC
        self._lifetime = lifetime

    def _mac(self, head: bytes, realm: str, bind: str | None) -> bytes:
        realm_bytes = realm.encode("utf-8")
        message = [head, struct.pack(">I", len(realm_bytes)), realm_bytes]
        if bind is not None:
            message.append(bind.encode("utf-8"))
        mac = self._keyed.copy()
        mac.update(b"".join(message))
        return mac.digest()

    def make(self, realm: str, bind: str | None = None) -> str:
        """A fresh nonce for `realm`, optionally bound to `bind` (e.g. the opaque sent with it)."""
        # Floor, never round: a timestamp up to 0.5 ms in the future made fresh nonces look stale.
        head = _TIMESTAMP.pack(math.floor(self._clock.seconds() * 1000)) + random_bytes(_SALT_BYTES)
        return base64.urlsafe_b64encode(head + self._mac(head, realm, bind)).rstrip(b"=").decode("ascii")

    @staticmethod
    def _decode(nonce: str) -> bytes | None:
        if len(nonce) != (_NONCE_BYTES * 4 + 2) // 3 or not nonce.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        return raw if len(raw) == _NONCE_BYTES else None

    def check(self, nonce: str, realm: str, bind: str | None = None) -> NonceStatus:
        """Whether `nonce` was made by us for this realm (and bind), and is younger than the lifetime.

        Returns:
            `OK`; `STALE` when the MAC is right but the nonce is older than the lifetime (or from the future,
            after the clock stepped back); `INVALID` when it is malformed, forged or for another realm/bind.
        """
        raw = self._decode(nonce)
        if raw is None:
            return NonceStatus.INVALID
        head, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(head, realm, bind)):
            return NonceStatus.INVALID
        age = self._clock.seconds() - _TIMESTAMP.unpack_from(head)[0] / 1000
        return NonceStatus.OK if 0 <= age <= self._lifetime else NonceStatus.STALE

    def issued_at(self, nonce: str) -> float | None:
        """The clock time a well-formed nonce claims it was made at (trust it only after `check`)."""
        raw = self._decode(nonce)
        return _TIMESTAMP.unpack_from(raw)[0] / 1000 if raw is not None else None


class CountStatus(StrEnum):
    """What `NonceCounter.check` says of a nonce-count."""

    OK = "ok"
    REPLAY = "replay"
    FORGOTTEN = "forgotten"


class NonceCounter:
    """The nonce-counts accepted per nonce, for replay protection (RFC 7616 3.3, 3.4), in bounded memory.

    Per nonce it keeps the highest nc accepted and a bitmap of the `window` counts below it, so requests that
    overtake each other (a REGISTER and a SUBSCRIBE sent together) are accepted once each, while a count seen
    before, or older than the window, is a replay. At most `max_nonces` nonces are kept, least recently used
    first out. An evicted nonce cannot be told from a new one by its absence, so the counter remembers the
    newest issue time among evicted nonces: an unknown nonce issued at or before that time is `FORGOTTEN`,
    which the authenticator answers with `stale=true` (the client retries with a fresh nonce; never a replay).

    Record only counts of requests whose digest was verified, or anyone could burn a victim's counts.

    Args:
        max_nonces: how many nonces to remember.
        window: how far below the highest count a late count is still accepted.
    """

    __slots__ = ("_entries", "_horizon", "_max", "_window")

    def __init__(self, max_nonces: int = 100_000, window: int = 32) -> None:
        if max_nonces < 1 or window < 0:
            raise ValueError("max_nonces must be positive and window not negative")
        self._max = max_nonces
        self._window = window
        self._entries: OrderedDict[str, _Counts] = OrderedDict()
        self._horizon = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, nonce: str, nc: int, issued_at: float) -> CountStatus:
        """Accept and record `nc` for `nonce`, or say why not.

        Args:
            nonce: the nonce the client used.
            nc: its nonce-count (from 1).
            issued_at: when the nonce was made (`NonceSource.issued_at`).
        """
        if nc < 1:
            return CountStatus.REPLAY
        entry = self._entries.get(nonce)
        if entry is None:
            if issued_at <= self._horizon:
                return CountStatus.FORGOTTEN
            self._entries[nonce] = _Counts(nc, issued_at)
            if len(self._entries) > self._max:
                _, evicted = self._entries.popitem(last=False)
                self._horizon = max(self._horizon, evicted.issued_at)
            return CountStatus.OK
        # Bit k of `seen` stands for the count highest - (k + 1).
        if nc > entry.highest:
            shift = nc - entry.highest
            if shift > self._window:
                entry.seen = 0
            else:
                entry.seen = ((entry.seen << shift) | (1 << (shift - 1))) & ((1 << self._window) - 1)
            entry.highest = nc
        else:
            below = entry.highest - nc
            if below == 0 or below > self._window or entry.seen & (1 << (below - 1)):
                return CountStatus.REPLAY
            entry.seen |= 1 << (below - 1)
        self._entries.move_to_end(nonce)
        return CountStatus.OK


class _Counts:
    """The counts accepted for one nonce."""

    __slots__ = ("highest", "issued_at", "seen")

    def __init__(self, highest: int, issued_at: float) -> None:
        self.highest = highest
        self.seen = 0
        self.issued_at = issued_at


# -- twisted.cred --------------------------------------------------------------------------------------------


class ISipDigestHash(IUsernameDigestHash):
    """An `IUsernameDigestHash` that also names the realm and algorithm its H(A1) must be looked up for."""

    username = Attribute("The username of the credentials (a claim until checked).")
    realm = Attribute("The realm of the credentials.")
    algorithm = Attribute("The base hash the H(A1) must use: 'MD5' or 'SHA-256'.")


@implementer(ISipDigestHash)
class SipDigestCredentials:
    """Digest credentials of one SIP request, checkable against a stored H(A1).

    Args:
        credentials: the parsed Authorization/Proxy-Authorization value.
        method: the request's method.
        body: the request's body (hashed only for qop=auth-int).
    """

    __slots__ = ("algorithm", "body", "credentials", "method", "realm", "username")

    def __init__(self, credentials: DigestCredentials, method: str, body: bytes = b"") -> None:
        self.credentials = credentials
        self.method = method
        self.body = body
        self.username = credentials.username
        self.realm = credentials.realm
        try:
            self.algorithm = base_algorithm(credentials.algorithm)
        except UnsupportedAlgorithm:
            self.algorithm = credentials.algorithm or MD5

    def checkHash(self, digestHash: str | bytes) -> bool:
        """True when the request-digest computed from `digestHash` (the stored H(A1)) equals the response.

        The comparison takes constant time; a missing cnonce/nc or an unsupported algorithm gives False.
        """
        if isinstance(digestHash, bytes):
            digestHash = digestHash.decode("ascii", "replace")
        c = self.credentials
        try:
            expected = digest_response(
                digestHash, self.method, c.uri, c.nonce, c.nc, c.cnonce, c.qop, c.algorithm, self.body
            )
        except ValueError:  # includes UnsupportedAlgorithm
            return False
        return hmac.compare_digest(expected.encode("ascii"), c.response.lower().encode("utf-8"))


HA1Lookup = Callable[[str, str, str], "str | Deferred[str | None] | None"]


@implementer(ICredentialsChecker)
class HA1Checker:
    """Checks `ISipDigestHash` credentials against stored H(A1) values.

    Args:
        lookup: `(username, realm, algorithm) -> H(A1) hex or None`, or a Deferred of that; `algorithm` is the
            base hash ("MD5" or "SHA-256": the -sess variants use the same stored value).

    An unknown user is checked against a dummy H(A1), so it costs the same digest as a wrong password and
    fails with the same `UnauthorizedLogin`. (The lookup's own timing is the store's business.)
    """

    credentialInterfaces = (IUsernameDigestHash,)

    def __init__(self, lookup: HA1Lookup) -> None:
        self._lookup = lookup
        self._dummy = {alg: secrets.token_hex(n // 2) for alg, n in HASH_HEX_LENGTH.items()}

    def verify(self, credentials: IUsernameDigestHash) -> str | Deferred[str | None] | None:
        """The username when the credentials are valid, else None; synchronous when the lookup is (the
        registrar's hot path), a Deferred of the same when the lookup returns one."""
        algorithm = getattr(credentials, "algorithm", None)
        if algorithm not in self._dummy or not ISipDigestHash.providedBy(credentials):
            return None
        stored = self._lookup(credentials.username, credentials.realm, algorithm)
        if isinstance(stored, Deferred):
            return stored.addCallback(self._judge, credentials)
        return self._judge(stored, credentials)

    def _judge(self, stored: str | None, credentials: IUsernameDigestHash) -> str | None:
        known = stored is not None
        ok = credentials.checkHash(stored if known else self._dummy[credentials.algorithm])  # type: ignore[attr-defined]
        return credentials.username if known and ok else None  # type: ignore[attr-defined]

    def requestAvatarId(self, credentials: IUsernameDigestHash) -> Deferred[str]:  # type: ignore[override]
        """A Deferred firing with the username (a str, not Twisted's usual bytes), or failing with
        `UnauthorizedLogin`."""
        try:
            verdict = self.verify(credentials)
        except Exception:
            return fail()
        d: Deferred[str | None] = verdict if isinstance(verdict, Deferred) else succeed(verdict)

        def avatar(username: str | None) -> str:
            if username is None:
                raise UnauthorizedLogin("Invalid credentials")
            return username

        return d.addCallback(avatar)


# -- the authenticator ---------------------------------------------------------------------------------------


class AuthOutcome(StrEnum):
    """The four fates of a request; only `FAILED` counts towards brute-force blocking."""

    NO_CREDENTIALS = "no_credentials"
    OK = "ok"
    STALE = "stale"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of `DigestAuthenticator.authenticate`.

    Attributes:
        outcome: see `AuthOutcome`.
        username: the authenticated username, for `OK` only.
        reason: a short machine-readable cause for logs and metrics: for `FAILED` one of "malformed",
            "wrong_realm", "unsupported_algorithm", "bad_qop", "uri_mismatch", "nonce_invalid",
            "bad_credentials" (unknown user and wrong password alike), "replay"; for `STALE` "nonce_expired"
            or "nonce_forgotten"; empty otherwise.
        credentials: the credentials that were judged, when there were any (their username is only a claim).
    """

    outcome: AuthOutcome
    username: str | None = None
    reason: str = ""
    credentials: DigestCredentials | None = None

    @property
    def failed(self) -> bool:
        return self.outcome is AuthOutcome.FAILED


_NO_CREDENTIALS = AuthResult(AuthOutcome.NO_CREDENTIALS)
_NONCE_SLOT = "NONCE-SLOT-7f3a"  # a token: formatted unquoted-safe, and never in a realm we format


class DigestAuthenticator:
    """Challenges requests and verifies their digest credentials for one or more realms.

    Args:
        nonces: makes and checks nonces.
        counter: nonce-count replay protection.
        lookup: `(username, realm, algorithm) -> stored H(A1) or None` (or a Deferred of it), as for
            `HA1Checker`.
        algorithms: offered in this order of preference (RFC 8760: SHA-256 before MD5); the credentials'
            algorithm must be one of them.
        qop: "auth" (default), "auth-int", or None for RFC 2069 challenges without qop (then nothing protects
            a nonce from replay within its lifetime; avoid).
    """

    def __init__(
        self,
        nonces: NonceSource,
        counter: NonceCounter,
        lookup: HA1Lookup,
        *,
        algorithms: Sequence[str] = (SHA256, MD5),
        qop: str | None = "auth",
    ) -> None:
        if not algorithms or not all(is_supported_algorithm(a) for a in algorithms):
            raise ValueError(f"Unsupported digest algorithms {algorithms!r}")
        if qop not in ("auth", "auth-int", None):
            raise ValueError(f"Unsupported qop {qop!r}")
        self._nonces = nonces
        self._counter = counter
        self.checker = HA1Checker(lookup)
        self._algorithms = tuple(algorithms)
        self._qop = qop
        self._templates: dict[tuple[str, str, bool], tuple[str, str]] = {}

    def challenge(
        self,
        request: Request,
        realm: str,
        *,
        proxy: bool,
        stale: bool = False,
        to_tag: str | None = None,
        algorithms: Sequence[str] | None = None,
    ) -> Response:
        """A 401 with WWW-Authenticate (or with `proxy`, a 407 with Proxy-Authenticate) for `request`.

        One header per algorithm, in order of preference, all with the same fresh nonce (it is bound to
        the realm, not to an algorithm, and its nonce-counts are the same whichever hash the client picks);
        `algorithms` overrides the configured ones for this challenge (clients that cannot bear an unknown
        one). The To tag is `to_tag`, or a new one (RFC 3261 8.2.6.2).
        """
        response = request.response(407 if proxy else 401, to_tag=to_tag or new_tag())
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        nonce = self._nonces.make(realm)
        add = response.headers.add
        for algorithm in self._algorithms if algorithms is None else algorithms:
            before, after = self._template(realm, algorithm, stale)
            add(name, before + nonce + after)
        return response

    def _template(self, realm: str, algorithm: str, stale: bool) -> tuple[str, str]:
        """The challenge text around its nonce, formatted once per (realm, algorithm, stale)."""
        key = (realm, algorithm, stale)
        found = self._templates.get(key)
        if found is None:
            qop = (self._qop,) if self._qop else ()
            text = str(
                DigestChallenge(realm=realm, nonce=_NONCE_SLOT, algorithm=algorithm, qop=qop, stale=stale)
            )
            # Quoted, as it is here, the slot cannot occur inside the (escaped) realm.
            before, _, after = text.partition(f'nonce="{_NONCE_SLOT}"')
            found = (before + 'nonce="', '"' + after)
            if len(self._templates) < 4096:
                self._templates[key] = found
        return found

    def authenticate(self, request: Request, realm: str, *, proxy: bool) -> Deferred[AuthResult]:
        """Judge the request's credentials for `realm`; the Deferred never fails with a verdict.

        Credentials are taken from Authorization (or with `proxy`, Proxy-Authorization). Other schemes are
        ignored; so are Digest credentials for other realms when `proxy` (they belong to other proxies), while
        without `proxy` they are a failure ("wrong_realm"). The Deferred fails only if the lookup does.
        """
        try:
            verdict = self.authenticate_now(request, realm, proxy=proxy)
        except Exception:
            return fail()
        return verdict if isinstance(verdict, Deferred) else succeed(verdict)

    def authenticate_now(
        self, request: Request, realm: str, *, proxy: bool
    ) -> AuthResult | Deferred[AuthResult]:
        """`authenticate` without a Deferred when the H(A1) lookup answers at once (the usual case: the
        hashes are in memory), so a busy registrar pays no Deferred per request; a Deferred otherwise.
        A failing lookup raises (or fails the Deferred)."""
        found, malformed, other_realm = None, False, False
        for value in request.headers.get_all("Proxy-Authorization" if proxy else "Authorization"):
            scheme = value.split(None, 1)[0] if value.strip() else ""
            if scheme.lower() != "digest":
                continue
            try:
                credentials = DigestCredentials.parse(value)
            except SipParseError:
                malformed = True
                continue
            if credentials.realm != realm:
                other_realm = True
            elif found is None or (self._offered(credentials) and not self._offered(found)):
                found = credentials
        if found is None:
            if malformed:
                return _done(AuthOutcome.FAILED, "malformed")
            if other_realm and not proxy:
                return _done(AuthOutcome.FAILED, "wrong_realm")
            return _done(AuthOutcome.NO_CREDENTIALS)
        reason = self._precheck(found, request)
        if reason:
            return _done(AuthOutcome.FAILED, reason, found)
        status = self._nonces.check(found.nonce, realm)
        if status is NonceStatus.INVALID:
            return _done(AuthOutcome.FAILED, "nonce_invalid", found)
        verdict = self.checker.verify(SipDigestCredentials(found, request.method, request.body))
        if isinstance(verdict, Deferred):
            return verdict.addCallback(self._verified, found, status)
        return self._verified(verdict, found, status)

    def _offered(self, c: DigestCredentials) -> bool:
        return (c.algorithm or MD5) in self._algorithms

    def _precheck(self, c: DigestCredentials, request: Request) -> str:
        """Check everything that needs no secret; return the failure reason or ""."""
        if not self._offered(c):
            return "unsupported_algorithm"
        if self._qop is not None:
            if c.qop != self._qop or c.nc is None or c.cnonce is None:
                return "bad_qop"
        elif c.qop not in (None, "auth") or (c.qop is not None and (c.nc is None or c.cnonce is None)):
            return "bad_qop"
        if c.cnonce is None and c.algorithm is not None and c.algorithm.endswith("-sess"):
            return "bad_qop"
        if not _same_uri(c.uri, request):
            return "uri_mismatch"
        return ""

    def _verified(self, username: str | None, c: DigestCredentials, status: NonceStatus) -> AuthResult:
        if username is None:
            return AuthResult(AuthOutcome.FAILED, reason="bad_credentials", credentials=c)
        if status is NonceStatus.STALE:
            return AuthResult(AuthOutcome.STALE, reason="nonce_expired", credentials=c)
        nc = c.nonce_count
        if nc is not None:
            issued = self._nonces.issued_at(c.nonce)
            counted = self._counter.check(c.nonce, nc, issued if issued is not None else float("-inf"))
            if counted is CountStatus.REPLAY:
                return AuthResult(AuthOutcome.FAILED, reason="replay", credentials=c)
            if counted is CountStatus.FORGOTTEN:
                return AuthResult(AuthOutcome.STALE, reason="nonce_forgotten", credentials=c)
        return AuthResult(AuthOutcome.OK, username=username, credentials=c)


def _same_uri(digest_uri: str, request: Request) -> bool:
    """The digest-uri names the Request-URI (RFC 2617 3.2.2.5), compared leniently as deployed stacks do.

    Equal as text, or SIP URIs with the same scheme and host: the user part, port and parameters are not
    compared, because real clients differ there (SIPp always puts `sip:HOST:PORT` of the server into the
    digest-uri, whatever the Request-URI; proxies add parameters). Kamailio and Asterisk do not check the
    digest-uri at all. The digest still covers the uri the client sent, and nonce-counts stop replays.
    """
    request_uri = request.uri
    if digest_uri == str(request_uri):
        return True
    try:
        parsed = parse_uri(digest_uri)
    except SipParseError:
        return False
    if isinstance(parsed, SipURI) and isinstance(request_uri, SipURI):
        return parsed.scheme == request_uri.scheme and parsed.host.lower() == request_uri.host.lower()
    return str(parsed) == str(request_uri)


def _done(outcome: AuthOutcome, reason: str = "", credentials: DigestCredentials | None = None) -> AuthResult:
    if outcome is AuthOutcome.NO_CREDENTIALS:
        return _NO_CREDENTIALS
    return AuthResult(outcome, reason=reason, credentials=credentials)
