"""Message waiting indication for the PBX's phones: the `message-summary` event package (RFC 3842) on the SIP
library's notifier (RFC 6665).

- `MwiAuthorizer` is the notifier's `authorize`: the Request-URI's domain selects the tenant (`403` for a
  domain not served); the subscriber proves who it is with digest authentication exactly as a REGISTER does
  (RFC 3261 22.3: the notifier is a UAS, so `401` with WWW-Authenticate, not a proxy's `407`): no
  credentials or a stale nonce get a challenge and do not count as failures, a wrong answer counts for the
  brute-force guard and gets the same challenge as an unknown user would.
- `MessageSummaryPackage` is the `IEventPackage`. A phone subscribes to what its lamp shows: the resource
  `Mailbox(tenant, extension)` (the Request-URI's user is its own extension, or absent), whose body is
  `counts(tenant, extension) -> (new, old)` (voicemail sums the boxes whose `phones` include the extension:
  its own box and any shared one). The user may also name a box the extension is a phone of
  (`boxes_of(tenant, extension)`): the resource is then `SharedBox(tenant, box)` with that box's
  `box_counts`. Any other box is `403`; the tenant is always the subscriber's (its digest domain), so
  subscriptions never cross tenants.
- `Mwi` ties them to a `Notifier`: `changed(tenant, box)` sends the new counts to every subscriber of the box
  and of each of its phones (`phones_of(tenant, box)`).

It knows nothing of how messages are stored; `pbx.service.mwi` builds it from the config and the voicemail
boxes. Unsolicited NOTIFYs to phones that do not subscribe are `pbx.apps.mwi_unsolicited`.
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
Names = Callable[[str, str], tuple[str, ...]]


def no_messages(tenant: str, mailbox: str) -> tuple[int, int]:
    """(new, old) for every mailbox until voicemail keeps messages."""
    return (0, 0)


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A tenant's mailbox: the resource of a `message-summary` subscription (and the subscriber's identity:
    an extension subscribes to its own mailbox)."""

    tenant: str
    number: str


@dataclass(frozen=True, slots=True)
class SharedBox:
    """One voicemail box a phone subscribed to by its number (`sip:8000@domain`), when the phone's extension
    is among the box's phones: the resource shows that box's counts only."""

    tenant: str
    number: str


def no_boxes(tenant: str, name: str) -> tuple[str, ...]:
    """No shared boxes (and no phones of a box besides the same-numbered extension)."""
    return ()


@implementer(IEventPackage)
class MessageSummaryPackage:
    """The `message-summary` package (RFC 3842) over the PBX's mailboxes.

    Args:
        counts: `counts(tenant, extension) -> (new, old)`: what an extension's phone shows.
        tenant_domain: the domain of a tenant, for the Message-Account URI (None: no Message-Account).
        boxes_of: `boxes_of(tenant, extension)`: the boxes whose phones include the extension (it may
            subscribe to each by number).
        box_counts: `box_counts(tenant, box) -> (new, old)` of one box.
    """

    name = EVENT
    content_type = CONTENT_TYPE

    def __init__(
        self,
        counts: Counts = no_messages,
        tenant_domain: Callable[[str], str | None] = lambda _: None,
        boxes_of: Names = no_boxes,
        box_counts: Counts = no_messages,
    ):
        self._counts = counts
        self._tenant_domain = tenant_domain
        self._boxes_of = boxes_of
        self._box_counts = box_counts

    def resource_for(self, request: Request, identity: Any) -> Hashable:
        """The subscriber's own view, or a box it is a phone of; another one is `403`."""
        assert isinstance(identity, Mailbox)
        uri = request.uri
        user = uri.user if isinstance(uri, SipURI) else None
        if not user or user == identity.number:
            return identity
        if user in self._boxes_of(identity.tenant, identity.number):
            return SharedBox(identity.tenant, user)
        raise SipError(403, "Forbidden: not your mailbox")

    def body(self, resource: Hashable) -> bytes:
        assert isinstance(resource, Mailbox | SharedBox)
        counts = self._counts if isinstance(resource, Mailbox) else self._box_counts
        new, old = counts(resource.tenant, resource.number)
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
        phones_of: `phones_of(tenant, box)`: the extensions whose phones show the box (None: the extension of
            the box's number only).
    """

    def __init__(self, notifier: Notifier, phones_of: Names | None = None) -> None:
        self.notifier = notifier
        self._phones_of = phones_of

    def changed(self, tenant: str, mailbox: str) -> int:
        """A box's counts changed: NOTIFY the subscribers of the box and of each of its phones; returns how
        many NOTIFYs that makes."""
        if self._phones_of is None:
            return self.notifier.notify(EVENT, Mailbox(tenant, mailbox))
        sent = self.notifier.notify(EVENT, SharedBox(tenant, mailbox))
        for phone in self._phones_of(tenant, mailbox):
            sent += self.notifier.notify(EVENT, Mailbox(tenant, phone))
        return sent

    def subscribed(self, tenant: str, extension: str) -> bool:
        """Whether the extension's phone has a live subscription to its own view."""
        return bool(self.notifier.subscriptions(EVENT, Mailbox(tenant, extension)))

    def stop(self) -> None:
        """Shutting down: end every subscription (`deactivated`: phones subscribe again later)."""
        self.notifier.stop()
