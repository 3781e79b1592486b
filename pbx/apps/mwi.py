"""Message waiting indication for the PBX's phones: the `message-summary` event package (RFC 3842) on the SIP
library's notifier (RFC 6665).

- `MwiAuthorizer` is the notifier's `authorize`: the Request-URI's domain selects the tenant (`403` for a
  domain not served); the subscriber proves who it is with digest authentication exactly as a REGISTER does
  (RFC 3261 22.3: the notifier is a UAS, so `401` with WWW-Authenticate, not a proxy's `407`): no
  credentials or a stale nonce get a challenge and do not count as failures, a wrong answer counts for the
  brute-force guard and gets the same challenge as an unknown user would.
- `MessageSummaryPackage` is the `IEventPackage`: the resource is the tenant's mailbox of the subscriber's
  own extension (the Request-URI's user may name it, or be absent; any other mailbox is `403`), its body
  the counts from `counts(tenant, mailbox) -> (new, old)` (no messages until voicemail provides them).
- `Mwi` ties them to a `Notifier`: `changed(tenant, mailbox)` sends the new counts to every subscriber.

It knows nothing of how messages are stored; `pbx/tap.py` builds it from the config.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from pbx.registrar import BruteForceGuard, ChallengePolicy, Domain
from pbx.sip.auth import AuthOutcome, AuthResult, DigestAuthenticator
from pbx.sip.errors import SipError
from pbx.sip.events.message_summary import CONTENT_TYPE, EVENT, MessageSummary
from pbx.sip.interfaces import IFlow, IServerTransaction
from pbx.sip.message import Request, Response
from pbx.sip.subscription import IEventPackage
from pbx.sip.subscription_notifier import Notifier
from pbx.sip.uri import SipURI

Counts = Callable[[str, str], tuple[int, int]]


def no_messages(tenant: str, mailbox: str) -> tuple[int, int]:
    """(new, old) for every mailbox until voicemail keeps messages."""
    return (0, 0)


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A tenant's mailbox: the resource of a `message-summary` subscription (and the subscriber's identity:
    an extension subscribes to its own mailbox)."""

    tenant: str
    number: str


@implementer(IEventPackage)
class MessageSummaryPackage:
    """The `message-summary` package (RFC 3842) over the PBX's mailboxes.

    Args:
        counts: `counts(tenant, mailbox) -> (new, old)`.
        tenant_domain: the domain of a tenant, for the Message-Account URI (None: no Message-Account).
    """

    name = EVENT
    content_type = CONTENT_TYPE

    def __init__(
        self, counts: Counts = no_messages, tenant_domain: Callable[[str], str | None] = lambda _: None
    ):
        self._counts = counts
        self._tenant_domain = tenant_domain

    def resource_for(self, request: Request, identity: Any) -> Hashable:
        """The subscriber's own mailbox; another one is `403`."""
        assert isinstance(identity, Mailbox)
        uri = request.uri
        user = uri.user if isinstance(uri, SipURI) else None
        if user and user != identity.number:
            raise SipError(403, "Forbidden: not your mailbox")
        return identity

    def body(self, resource: Hashable) -> bytes:
        assert isinstance(resource, Mailbox)
        new, old = self._counts(resource.tenant, resource.number)
        domain = self._tenant_domain(resource.tenant)
        account = f"sip:{resource.number}@{domain}" if domain else None
        return MessageSummary.voice(new, old, account).to_bytes()


class MwiAuthorizer:
    """Digest authentication of SUBSCRIBEs (`401`, the registrar's rules), for `Notifier(authorize=...)`.

    Args:
        authenticator: the PBX's digest authenticator (shared with the registrar and the B2BUA).
        domains: the `Domain` (tenant, realm) of a request's host, or None when not served.
        guard: the brute-force guard, or None.
        md5_only_user_agents: User-Agent substrings of clients challenged with MD5 only.
    """

    _log = Logger()

    def __init__(
        self,
        authenticator: DigestAuthenticator,
        domains: Callable[[str], Domain | None],
        guard: BruteForceGuard | None = None,
        md5_only_user_agents: Sequence[str] = (),
    ) -> None:
        self._auth = authenticator
        self._domains = domains
        self._challenges = ChallengePolicy(authenticator, guard, md5_only_user_agents)
        self.counters = {"challenged": 0, "auth_failures": 0}

    def stateless_challenge(self, request: Request, flow: IFlow) -> Response | None:
        """The 401 for a new SUBSCRIBE without credentials, answered without a transaction (RFC 3261 8.2.7,
        as the registrar does: `SipStack.answer_statelessly`); refreshes inside a dialog (To tag), requests
        with Authorization and refused ones go the stateful way (None)."""
        domain = self._challenges.unauthenticated_domain(request, self._domains, proxy=False)
        if domain is None:
            return None
        self.counters["challenged"] += 1
        return self._challenges.challenge(request, domain.realm, proxy=False)

    def __call__(self, request: Request, transaction: IServerTransaction) -> Any:
        uri = request.uri
        if not isinstance(uri, SipURI):
            raise SipError(416)
        domain = self._domains(uri.host)
        if domain is None:
            raise SipError(403, "Domain Not Served")
        result = self._auth.authenticate_now(request, domain.realm, proxy=False)
        if isinstance(result, Deferred):
            return result.addCallback(self._judged, request, transaction, domain)
        return self._judged(result, request, transaction, domain)

    def _judged(
        self, result: AuthResult, request: Request, transaction: IServerTransaction, domain: Domain
    ) -> Mailbox | None:
        if result.outcome is AuthOutcome.OK and result.username is not None:
            return Mailbox(domain.tenant, result.username)
        self.counters["challenged"] += 1
        if result.outcome is AuthOutcome.FAILED:
            self.counters["auth_failures"] += 1
        source = transaction.flow.remote_address[0]
        transaction.respond(
            self._challenges.refused(
                request, result, realm=domain.realm, tenant=domain.tenant, source=source, proxy=False
            )
        )
        return None


class Mwi:
    """Message waiting indication: the notifier with the `message-summary` package.

    Args:
        notifier: the SUBSCRIBE transaction user, serving `package`.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def changed(self, tenant: str, mailbox: str) -> int:
        """A mailbox's counts changed: NOTIFY its subscribers; returns how many there are."""
        return self.notifier.notify(EVENT, Mailbox(tenant, mailbox))

    def stop(self) -> None:
        """Shutting down: end every subscription (`deactivated`: phones subscribe again later)."""
        self.notifier.stop()
