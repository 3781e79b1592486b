"""The registrar (RFC 3261 10.3): REGISTER with digest authentication into the location service.

For each REGISTER, in order:
1. The Request-URI's domain selects the tenant; a domain we do not serve is refused (`403`), never
   registered. The To URI (the address-of-record) must be in the same tenant.
2. Digest authentication (`401`, SHA-256 and MD5 challenges): no credentials or a stale nonce get a
   (stale=true) challenge and never count as failures; a wrong answer counts for the brute-force guard and
   gets the same challenge as an unknown user would (no user enumeration). The authenticated user must be the
   address-of-record's user (`403` otherwise).
3. Contacts: `*` with `Expires: 0` removes every binding; otherwise each Contact's expiry comes from its
   `expires` parameter, the Expires header or the default; `423` with Min-Expires below the minimum, longer
   ones shortened to the maximum; Call-ID/CSeq ordering per step 7 (an older CSeq for the same Call-ID fails
   the request); RFC 5626 `+sip.instance`/`reg-id` replace the instance's previous Contact; beyond
   `max_contacts` the oldest bindings are replaced.
4. The binding remembers the flow the REGISTER came in on (transport, source address and port), so that
   requests to the phone go back through its NAT binding, not to a private Contact address.
5. The `200` listing every current binding with its remaining expiry is sent only once the change is durable.

This module knows nothing of transports or of how bindings are stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pbx.registrar.challenge import ChallengePolicy
from pbx.registrar.guard import BruteForceGuard
from pbx.registrar.location import LocationService
from pbx.sip.auth import AuthOutcome, AuthResult, DigestAuthenticator
from pbx.sip.errors import SipError, SipParseError
from pbx.sip.headers import NameAddress, unquote_string
from pbx.sip.interfaces import IFlow, IServerTransaction, ITransactionUser
from pbx.sip.message import Request, Response, new_tag
from pbx.sip.origin import request_origin
from pbx.sip.uri import SipURI, format_host_port
from pbx.store import Binding


@dataclass(frozen=True, slots=True)
class Domain:
    """What a SIP domain maps to: its tenant and the digest realm."""

    tenant: str
    realm: str


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    """Expiry bounds and contact limits (seconds)."""

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 10


def flow_text(transport: str, address: tuple[Any, ...]) -> str:
    """`udp:203.0.113.5:5062` / `tcp:[::1]:5060`: how a binding records a flow."""
    return f"{transport.lower()}:{format_host_port(address[0], address[1])}"


def parse_flow_text(text: str) -> tuple[str, str, int]:
    """Inverse of `flow_text`: (transport, host, port)."""
    transport, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    return transport, host.strip("[]"), int(port)


@implementer(ITransactionUser)
class Registrar:
    """The REGISTER transaction user.

    Args:
        clock: time source (wall-clock epoch seconds with the real reactor).
        location: the location service.
        authenticator: digest authentication.
        domains: maps a request's host to its `Domain`, or None when not served.
        guard: the brute-force guard, or None.
        policy: expiry bounds and limits.
        md5_only_user_agents: User-Agent substrings of clients challenged with MD5 only.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        location: LocationService,
        authenticator: DigestAuthenticator,
        domains: Callable[[str], Domain | None],
        guard: BruteForceGuard | None = None,
        policy: RegistrarPolicy = RegistrarPolicy(),
        md5_only_user_agents: Sequence[str] = (),
    ) -> None:
        self._clock = clock
        self._location = location
        self._auth = authenticator
        self._domains = domains
        self._date_second, self._date_text = -1, ""
        self._policy = policy
        self._challenges = ChallengePolicy(authenticator, guard, md5_only_user_agents)
        # Addresses of proxies in front of the PBX (Kamailio): a request through one is counted against
        # the address in the Via below the proxy's (`pbx.sip.origin`); set by the composition root.
        self.is_trusted_proxy: Callable[[str], bool] | None = None
        self.counters = {
            "registered": 0,
            "refreshed": 0,
            "challenged": 0,
            "auth_failures": 0,
            "unregistered": 0,
        }

    def stateless_challenge(self, request: Request, flow: IFlow) -> Response | None:
        """The 401 for a REGISTER without credentials, answered without a transaction (RFC 3261 8.2.7:
        a flood of unauthenticated REGISTERs then costs no state; `SipStack.answer_statelessly`). Requests
        with an Authorization header (and refused ones) go the stateful way: None."""
        if "Authorization" in request.headers:
            return None
        try:
            domain, _ = self._tenant_of(request)
        except SipError:
            return None  # refused statefully, with the reason
        self.counters["challenged"] += 1
        return self._challenges.challenge(request, domain.realm, proxy=False)

    def _tenant_of(self, request: Request) -> tuple[Domain, str]:
        """The tenant (by the Request-URI's domain) and the address-of-record's user, or a SipError."""
        uri = request.uri
        if not isinstance(uri, SipURI):
            raise SipError(400, "REGISTER Request-URI must be a SIP URI")
        domain = self._domains(uri.host)
        if domain is None:
            raise SipError(403, "Domain Not Served")
        try:
            aor_uri = request.to.uri
        except SipParseError as e:
            raise SipError(400, f"Bad To header: {e.reason}") from None
        if not isinstance(aor_uri, SipURI) or not aor_uri.user:
            raise SipError(400, "To must be a SIP address-of-record with a user")
        if self._domains(aor_uri.host) != domain:
            raise SipError(403, "Domain Not Served")
        return domain, aor_uri.user

    # ITransactionUser
    def request_received(self, transaction: IServerTransaction, request: object) -> Deferred[None] | None:
        """Handle a REGISTER: synchronous up to the store's commit (a Deferred then), so that a challenge
        or a refused request costs no Deferred; `SipError`s become responses in the stack."""
        assert isinstance(request, Request)
        domain, user = self._tenant_of(request)
        result = self._auth.authenticate_now(request, domain.realm, proxy=False)
        if isinstance(result, Deferred):
            return result.addCallback(self._authenticated, transaction, request, domain, user)
        return self._authenticated(result, transaction, request, domain, user)

    def cancel_received(self, cancel: object, invite: IServerTransaction) -> None:
        """Not used: REGISTER is not INVITE."""

    # -- the REGISTER procedure --------------------------------------------------------------------------

    def _authenticated(
        self, result: AuthResult, txn: IServerTransaction, request: Request, domain: Domain, user: str
    ) -> Deferred[None] | None:
        if result.outcome is not AuthOutcome.OK:
            self._challenge(txn, request, domain, result.outcome, result)
            return None
        if result.username != user:
            raise SipError(403, "Forbidden: credentials do not match the address-of-record")
        contacts = self._contacts(request)
        if not contacts:  # a query: the current bindings
            txn.respond(self._ok(request, domain.tenant, user))
            return None
        return self._update(txn, request, domain.tenant, user, contacts)

    def _challenge(
        self, txn: IServerTransaction, request: Request, domain: Domain, outcome: AuthOutcome, result: Any
    ) -> None:
        self.counters["challenged"] += 1
        if outcome is AuthOutcome.FAILED:
            self.counters["auth_failures"] += 1
        source = request_origin(request, txn.flow.remote_address[0], self.is_trusted_proxy)
        txn.respond(
            self._challenges.refused(
                request, result, realm=domain.realm, tenant=domain.tenant, source=source, proxy=False
            )
        )

    def _contacts(self, request: Request) -> list[NameAddress]:
        try:
            return request.contacts
        except SipParseError as e:
            raise SipError(400, f"Bad Contact header: {e.reason}") from None

    def _header_expires(self, request: Request) -> int | None:
        value = request.headers.get("Expires")
        if value is None:
            return None
        value = value.strip()
        if not (value.isascii() and value.isdigit()):
            raise SipError(400, "Bad Expires header")
        return int(value)

    def _update(
        self, txn: IServerTransaction, request: Request, tenant: str, user: str, contacts: list[NameAddress]
    ) -> Deferred[None]:
        """Change the bindings; once the change is durable, count and log it, then answer 200 (one callback
        on the store's Deferred)."""
        policy = self._policy
        call_id = request.call_id or ""
        cseq = request.cseq.number
        header_expires = self._header_expires(request)
        existing = self._location.contacts(tenant, user)
        now = self._clock.seconds()

        if any(c.wildcard for c in contacts):
            if len(contacts) != 1 or header_expires != 0:
                raise SipError(400, "Contact: * needs Expires: 0 and no other Contact")
            for binding in existing.values():
                self._check_order(binding, call_id, cseq)

            def unregistered(_: None) -> None:
                self.counters["unregistered"] += len(existing)
                self._log.info("Unregistered all contacts of {user}@{tenant}", user=user, tenant=tenant)
                txn.respond(self._ok(request, tenant, user))

            return self._location.apply(tenant, user, (), list(existing)).addCallback(unregistered)

        flow = txn.flow
        received = flow_text(flow.transport, flow.remote_address)
        local = flow_text(flow.transport, flow.local_address)
        user_agent = request.headers.get("User-Agent") or ""
        path = ",".join(request.headers.get_all("Path"))
        puts: dict[str, Binding] = {}
        deletes: set[str] = set()
        for contact in contacts:
            if not isinstance(contact.uri, SipURI):
                raise SipError(400, "Contact must be a SIP URI")
            expires = self._expires(contact, header_expires)
            key = str(contact.uri)
            instance = contact.param("+sip.instance")
            instance_id = unquote_string(instance) if instance else None
            reg_id_text = contact.param("reg-id")
            reg_id = (
                int(reg_id_text) if reg_id_text and reg_id_text.isascii() and reg_id_text.isdigit() else None
            )
            old = existing.get(key)
            if old is None and instance_id is not None:
                old = next(
                    (b for b in existing.values() if b.instance_id == instance_id and b.reg_id == reg_id),
                    None,
                )
            if old is not None:
                self._check_order(old, call_id, cseq)
                if old.contact != key or expires == 0:
                    deletes.add(old.contact)
            if expires == 0:
                continue
            q = _q_value(contact.param("q"))
            puts[key] = Binding(
                tenant=tenant,
                aor=user,
                contact=key,
                expires_at=now + expires,
                q=q,
                call_id=call_id,
                cseq=cseq,
                received=received,
                local=local,
                instance_id=instance_id,
                reg_id=reg_id,
                user_agent=user_agent,
                path=path,
                registered_at=now,
            )
            deletes.discard(key)
        # Beyond max_contacts, the oldest bindings make room (phones that changed address leave stale ones).
        kept = {k: b for k, b in existing.items() if k not in deletes and k not in puts}
        overflow = len(kept) + len(puts) - policy.max_contacts
        if overflow > 0:
            for binding in sorted(kept.values(), key=lambda b: b.registered_at)[:overflow]:
                deletes.add(binding.contact)
        if len(puts) > policy.max_contacts:
            raise SipError(403, f"Too many contacts (at most {policy.max_contacts})")
        return self._location.apply(tenant, user, list(puts.values()), sorted(deletes)).addCallback(
            self._applied, txn, request, tenant, user, puts, deletes, existing, received, user_agent, now
        )

    def _applied(
        self,
        _: None,
        txn: IServerTransaction,
        request: Request,
        tenant: str,
        user: str,
        puts: dict[str, Binding],
        deletes: set[str],
        existing: dict[str, Binding],
        received: str,
        user_agent: str,
        now: float,
    ) -> None:
        """Count and log a change once it is durable, then answer the REGISTER."""
        self.counters["registered"] += len(puts)
        removed = sorted(deletes - puts.keys())
        self.counters["unregistered"] += len(removed)
        for gone in removed:
            self._log.info("Unregistered {user}@{tenant} at {c}", user=user, tenant=tenant, c=gone)
        for binding in puts.values():
            # A refresh from where the phone already was is the normal case: counted, not logged, as
            # Asterisk and Kamailio do (a line per refresh is most of a busy registrar's log and CPU).
            before = existing.get(binding.contact)
            if before is not None and before.received == received and before.user_agent == user_agent:
                self.counters["refreshed"] += 1
                continue
            self._log.info(
                "Registered {user}@{tenant} at {contact} via {received} for {expires:.0f} s ({ua})",
                user=user,
                tenant=tenant,
                contact=binding.contact,
                received=received,
                expires=binding.expires_at - now,
                ua=user_agent,
            )
        txn.respond(self._ok(request, tenant, user))

    def _expires(self, contact: NameAddress, header_expires: int | None) -> int:
        policy = self._policy
        value = contact.param("expires")
        if value is not None:
            if not (value.isascii() and value.isdigit()):
                raise SipError(400, "Bad Contact expires parameter")
            expires = int(value)
        elif header_expires is not None:
            expires = header_expires
        else:
            expires = policy.default_expires
        if 0 < expires < policy.min_expires:
            raise SipError(423, None, [("Min-Expires", str(policy.min_expires))])
        return min(expires, policy.max_expires)

    @staticmethod
    def _check_order(binding: Binding, call_id: str, cseq: int) -> None:
        """RFC 3261 10.3 step 7: the same Call-ID with an older or equal CSeq aborts the request."""
        if binding.call_id == call_id and binding.cseq >= cseq:
            raise SipError(500, "Out-of-order REGISTER", [("Retry-After", "1")])

    def _ok(self, request: Request, tenant: str, user: str) -> Response:
        response = request.response(200, to_tag=new_tag())
        now = self._clock.seconds()
        for binding in self._location.lookup(tenant, user):
            remaining = max(0, math.ceil(binding.expires_at - now))
            value = f"<{binding.contact}>;expires={remaining}"
            if binding.q != 1.0:
                value += f";q={binding.q:g}"
            if binding.instance_id is not None:
                value += f';+sip.instance="{binding.instance_id}"'
            if binding.reg_id is not None:
                value += f";reg-id={binding.reg_id}"
            response.headers.add("Contact", value)
        response.headers.add("Date", self._date(now))
        supported = ",".join(request.headers.get_all("Supported")).lower()
        if "path" in (option.strip() for option in supported.split(",")):  # RFC 3327 5.3: echo the Path
            for path in request.headers.get_all("Path"):
                response.headers.add("Path", path)
        return response

    def _date(self, now: float) -> str:
        """The Date header value (RFC 3261 20.17: phones without a clock set theirs from it), per second."""
        second = int(now)
        if second != self._date_second:
            self._date_second, self._date_text = second, formatdate(second, usegmt=True)
        return self._date_text


def _q_value(text: str | None) -> float:
    if text is None:
        return 1.0
    try:
        q = float(text)
    except ValueError:
        raise SipError(400, "Bad q value") from None
    if not 0.0 <= q <= 1.0 or math.isnan(q):
        raise SipError(400, "Bad q value")
    return q
