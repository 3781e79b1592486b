"""How the PBX challenges its phones, in one place for every request it authenticates (RFC 3261 22, RFC 8760).

The registrar (REGISTER, `401`), the B2BUA (INVITE, `407`) and the message-waiting notifier (SUBSCRIBE,
`401`) all challenge the same way:

- which algorithms are offered: the authenticator's (SHA-256 before MD5), except MD5 alone for clients whose
  User-Agent names one of `md5_only_user_agents` (baresip 1.0 gives up when any challenge is SHA-256);
- a wrong answer (`AuthOutcome.FAILED`) is logged once, with the claimed user, the tenant, the source and the
  reason, and counted by the brute-force guard for the source and the account; a stale nonce or missing
  credentials never count;
- a stale nonce is challenged again with `stale=true` (RFC 7616 3.3).

It knows nothing of REGISTER or INVITE semantics: its callers decide what to authenticate and when.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from twisted.logger import Logger

from pbx.registrar.guard import BruteForceGuard
from pbx.sip.auth import AuthOutcome, AuthResult, DigestAuthenticator
from pbx.sip.errors import SipParseError
from pbx.sip.message import Request, Response
from pbx.sip.uri import SipURI

if TYPE_CHECKING:
    from pbx.registrar.registrar import Domain


class ChallengePolicy:
    """Challenges and failed authentications, the same for every method.

    Args:
        authenticator: makes challenges and checks credentials.
        guard: the brute-force guard told of wrong answers, or None.
        md5_only_user_agents: User-Agent substrings of clients challenged with MD5 only.
    """

    _log = Logger()

    __slots__ = ("_guard", "_md5_only", "authenticator")

    def __init__(
        self,
        authenticator: DigestAuthenticator,
        guard: BruteForceGuard | None = None,
        md5_only_user_agents: Sequence[str] = (),
    ) -> None:
        self.authenticator = authenticator
        self._guard = guard
        self._md5_only = tuple(agent.lower() for agent in md5_only_user_agents)

    def algorithms_for(self, request: Request) -> tuple[str, ...] | None:
        """The algorithms to offer this client: ("MD5",) for MD5-only user agents, else None (all)."""
        if not self._md5_only:
            return None
        user_agent = (request.headers.get("User-Agent") or "").lower()
        return ("MD5",) if any(agent in user_agent for agent in self._md5_only) else None

    @staticmethod
    def unauthenticated_domain(
        request: Request, domains: Callable[[str], Domain | None], *, proxy: bool
    ) -> Domain | None:
        """The served domain of a new request (no To tag) that carries no credentials (no Authorization, or
        with `proxy` no Proxy-Authorization): one that may be challenged statelessly (RFC 3261 8.2.7, a
        flood of them then costs no state). None for anything else, which goes the stateful way (requests
        in a dialog, with credentials, with a To that does not parse, to a domain not served)."""
        if ("Proxy-Authorization" if proxy else "Authorization") in request.headers:
            return None
        try:
            if request.to.tag is not None:
                return None
        except SipParseError:
            return None
        uri = request.uri
        return domains(uri.host) if isinstance(uri, SipURI) else None

    def challenge(self, request: Request, realm: str, *, proxy: bool, stale: bool = False) -> Response:
        """A 401 (or, with `proxy`, a 407) challenging `request` for `realm`."""
        return self.authenticator.challenge(
            request, realm, proxy=proxy, stale=stale, algorithms=self.algorithms_for(request)
        )

    def refused(
        self, request: Request, result: AuthResult, *, realm: str, tenant: str, source: str, proxy: bool
    ) -> Response:
        """The answer to a request whose authentication did not succeed: a wrong answer is logged and
        counted by the guard; the response is a fresh challenge (`stale=true` for an expired nonce)."""
        if result.outcome is AuthOutcome.FAILED:
            claimed = result.credentials.username if result.credentials is not None else "?"
            self._log.warn(
                "Failed {method} authentication for {user}@{tenant} from {source} ({reason})",
                method=request.method,
                user=claimed,
                tenant=tenant,
                source=source,
                reason=result.reason,
            )
            if self._guard is not None:
                self._guard.failure(source, f"{tenant}/{claimed}")
        stale = result.outcome is AuthOutcome.STALE
        return self.challenge(request, realm, proxy=proxy, stale=stale)
