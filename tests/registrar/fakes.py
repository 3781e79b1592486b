"""Shared fakes for the registrar tests: flows, server transactions, REGISTER builders, a digest-answering
phone, slow stores and a recording stack for keep-alive. No sockets, no reactor: time is a `task.Clock`."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from pbx.registrar import Domain, LocationService, Registrar, RegistrarPolicy
from pbx.sip.auth import DigestAuthenticator, NonceCounter, NonceSource
from pbx.sip.digest import DigestChallenge, answer_challenge, ha1
from pbx.sip.errors import SipError
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.store import Binding, BindingChange, ILocationStore, MemoryLocationStore
from pbx.testing import RecordingFlow, RecordingServerTransaction

# -- tenants ----------------------------------------------------------------------------------------------

DOMAINS = {
    "a.example": Domain(tenant="acme", realm="a.example"),
    "b.example": Domain(tenant="globex", realm="b.example"),
    "i.example": Domain(tenant="initech", realm="Initech PBX"),
}
"""Three tenants; two have an extension 1001 (with different passwords); one has a realm of its own."""

PASSWORDS = {
    ("a.example", "1001"): "acme-1001-secret",
    ("a.example", "1002"): "acme-1002-secret",
    ("b.example", "1001"): "globex-1001-secret",
    ("Initech PBX", "2001"): "initech-2001-secret",
}
"""(realm, user) -> password, for the phones; the server side stores only H(A1) (see `ha1_lookup`)."""

SECRET = b"x" * 32


def domains(host: str) -> Domain | None:
    return DOMAINS.get(host.lower())


def ha1_table(passwords: dict[tuple[str, str], str] = PASSWORDS) -> dict[tuple[str, str, str], str]:
    """What a store keeps: H(A1) per (user, realm, base algorithm), never a password."""
    return {
        (user, realm, algorithm): ha1(user, realm, password, algorithm)
        for (realm, user), password in passwords.items()
        for algorithm in ("MD5", "SHA-256")
    }


class HA1Lookup:
    """`(username, realm, algorithm) -> H(A1) or None` over a dict, recording every call."""

    def __init__(self, table: dict[tuple[str, str, str], str] | None = None) -> None:
        self.table = ha1_table() if table is None else table
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, username: str, realm: str, algorithm: str) -> str | None:
        self.calls.append((username, realm, algorithm))
        return self.table.get((username, realm, algorithm))


# -- flows and server transactions ------------------------------------------------------------------------


FakeFlow = RecordingFlow
FakeServerTransaction = RecordingServerTransaction


def error_response(request: Request, error: SipError) -> Response:
    """The response the stack builds for a `SipError` (as `SipStack._error_response` does)."""
    response = request.response(error.status, error.reason, to_tag="stacktag")
    for name, value in error.headers:
        response.headers.add(name, value)
    return response


def answer_errors_like_the_stack(txn: FakeServerTransaction, d: Deferred[Any]) -> Deferred[Any]:
    """Turn a `SipError` failure of a transaction user's Deferred into its response on `txn`, the way the
    stack's edge does; other failures pass through for the test to see."""

    def failed(failure: Failure) -> None:
        failure.trap(SipError)
        txn.respond(error_response(txn.request, failure.value))

    return d.addErrback(failed)


# -- REGISTER requests ------------------------------------------------------------------------------------

_branches = itertools.count(1)


def register_bytes(
    user: str = "1001",
    domain: str = "a.example",
    *,
    contacts: Sequence[str] = ("<sip:1001@192.168.1.10:5060>",),
    expires: int | str | None = None,
    call_id: str = "reg-1@192.168.1.10",
    cseq: int = 1,
    user_agent: str | None = "TestPhone/1.0",
    to_domain: str | None = None,
    request_uri: str | None = None,
    authorization: Sequence[str] = (),
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The wire bytes of a REGISTER, as a phone at 192.168.1.10 would send it."""
    lines = [
        f"REGISTER {request_uri or f'sip:{domain}'} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK{next(_branches):08d};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{domain}>;tag=from{cseq}",
        f"To: <sip:{user}@{to_domain or domain}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    lines.extend(f"Contact: {contact}" for contact in contacts)
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if user_agent is not None:
        lines.append(f"User-Agent: {user_agent}")
    lines.extend(f"Authorization: {value}" for value in authorization)
    lines.extend(f"{name}: {value}" for name, value in extra)
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def register(*args: Any, **kwargs: Any) -> Request:
    """A REGISTER as a parsed `Request` (built as bytes and parsed, so headers look like the wire)."""
    request = parse_message(register_bytes(*args, **kwargs))
    assert isinstance(request, Request)
    return request


def challenges(response: Response) -> list[DigestChallenge]:
    """The Digest challenges of a 401, in order."""
    return [DigestChallenge.parse(v) for v in response.headers.get_all("WWW-Authenticate")]


def credentials_for(
    response: Response,
    request: Request,
    user: str,
    password: str,
    *,
    algorithm: str = "SHA-256",
    nc: int = 1,
) -> str:
    """The Authorization value answering the `algorithm` challenge of a 401 to `request`."""
    (challenge,) = [c for c in challenges(response) if c.algorithm == algorithm]
    return str(
        answer_challenge(
            challenge, method="REGISTER", uri=str(request.uri), username=user, password=password, nc=nc
        )
    )


# -- a registrar under test -------------------------------------------------------------------------------


@implementer(ILocationStore)
class SlowLocationStore:
    """A MemoryLocationStore whose `apply` returns Deferreds that fire only when the test says so."""

    def __init__(self) -> None:
        self.inner = MemoryLocationStore()
        self.pending: list[tuple[Deferred[None], Sequence[BindingChange]]] = []

    def apply(self, changes: Sequence[BindingChange]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.pending.append((d, list(changes)))
        return d

    def commit_all(self) -> None:
        pending, self.pending = self.pending, []
        for d, changes in pending:
            self.inner.apply(changes)
            d.callback(None)

    def fail_all(self, error: Exception) -> None:
        pending, self.pending = self.pending, []
        for d, _ in pending:
            d.errback(error)

    def load(self, now: float) -> Deferred[list[Binding]]:
        return self.inner.load(now)

    def purge_expired(self, now: float) -> Deferred[int]:
        return self.inner.purge_expired(now)

    def close(self) -> Deferred[None]:
        return succeed(None)


class Harness:
    """A Registrar on a Clock, a store, the location service and a real DigestAuthenticator."""

    def __init__(
        self,
        *,
        store: ILocationStore | None = None,
        guard: Any = None,
        policy: RegistrarPolicy | None = None,
        md5_only_user_agents: Sequence[str] = (),
        lookup: HA1Lookup | None = None,
        clock: Clock | None = None,
        nonce_lifetime: float = 300,
        stateless: bool = True,
    ) -> None:
        self.stateless = stateless
        self.stateless_answers = 0
        self.clock = clock or Clock()
        self.store = store if store is not None else MemoryLocationStore()
        self.location = LocationService(self.clock, self.store)
        self.lookup = lookup or HA1Lookup()
        self.nonces = NonceSource(self.clock, SECRET, lifetime=nonce_lifetime)
        self.authenticator = DigestAuthenticator(self.nonces, NonceCounter(), self.lookup)
        self.registrar = Registrar(
            self.clock,
            self.location,
            self.authenticator,
            domains,
            guard=guard,
            policy=policy or RegistrarPolicy(),
            md5_only_user_agents=md5_only_user_agents,
        )

    def send(self, request: Request, flow: FakeFlow | None = None) -> tuple[FakeServerTransaction, Deferred]:
        """Hand `request` to the registrar in a fake server transaction; the raw Deferred is returned."""
        txn = FakeServerTransaction(request, flow or FakeFlow())
        if self.stateless:  # as the stack does (SipStack.answer_statelessly): the challenge comes first
            response = self.registrar.stateless_challenge(request, txn.flow)
            if response is not None:
                txn.respond(response)
                self.stateless_answers += 1
                return txn, succeed(None)
        # The registrar answers synchronously when it can, raises SipError, or returns a Deferred.
        return txn, maybeDeferred(self.registrar.request_received, txn, request)

    def handle(self, request: Request, flow: FakeFlow | None = None) -> FakeServerTransaction:
        """Like `send`, with `SipError` failures answered as the stack would."""
        txn, d = self.send(request, flow)
        answer_errors_like_the_stack(txn, d)
        return txn


class Phone:
    """A SIP phone registering an extension: counts CSeq, keeps its Call-ID and answers challenges."""

    _ids = itertools.count(1)

    def __init__(
        self,
        harness: Harness,
        user: str = "1001",
        domain: str = "a.example",
        password: str | None = None,
        *,
        flow: FakeFlow | None = None,
        contact: str | None = None,
        user_agent: str | None = "TestPhone/1.0",
        algorithm: str = "SHA-256",
    ) -> None:
        self.harness = harness
        self.user = user
        self.domain = domain
        realm = DOMAINS[domain].realm if domain in DOMAINS else domain
        self.password = password if password is not None else PASSWORDS[(realm, user)]
        self.flow = flow or FakeFlow()
        self.contact = contact or f"<sip:{user}@192.168.1.10:5060>"
        self.user_agent = user_agent
        self.algorithm = algorithm
        self.call_id = f"phone{next(self._ids)}@192.168.1.10"
        self.cseq = 0
        self.challenge: tuple[Response, Request] | None = None
        self.nc = 0

    def request(self, *, contacts: Sequence[str] | None = None, **kwargs: Any) -> Request:
        self.cseq += 1
        kwargs.setdefault("call_id", self.call_id)
        kwargs.setdefault("user_agent", self.user_agent)
        return register(
            self.user,
            self.domain,
            contacts=[self.contact] if contacts is None else contacts,
            cseq=self.cseq,
            **kwargs,
        )

    def send(self, **kwargs: Any) -> FakeServerTransaction:
        """Send one REGISTER (no credentials unless given) and return its transaction."""
        return self.harness.handle(self.request(**kwargs), self.flow)

    def register(self, *, password: str | None = None, **kwargs: Any) -> FakeServerTransaction:
        """REGISTER, answer the 401 once, and return the transaction of the authorized request."""
        first = self.send(**kwargs)
        assert first.final is not None and first.final.status == 401, first.final
        self.challenge = (first.final, first.request)
        self.nc = 0
        return self.send_authorized(password=password, **kwargs)

    def send_authorized(self, *, password: str | None = None, **kwargs: Any) -> FakeServerTransaction:
        """A REGISTER answering the last challenge again (next nonce-count), as a refresh does."""
        assert self.challenge is not None
        response, challenged = self.challenge
        self.nc += 1
        authorization = credentials_for(
            response,
            challenged,
            self.user,
            self.password if password is None else password,
            algorithm=self.algorithm,
            nc=self.nc,
        )
        return self.send(authorization=[authorization], **kwargs)


def headers_shape(response: Response) -> list[tuple[str, str]]:
    """The header fields of a response with nonces and tags masked, for comparing two answers."""
    out = []
    for name, value in response.headers:
        value = re.sub(r'nonce="[^"]*"', 'nonce="*"', value)
        if name in ("To", "From"):
            value = re.sub(r";tag=[^;>]*$", ";tag=*", value)
        out.append((name, value))
    return out


class FakeStackTransports:
    """What `SipStack.attach_transport` needs: sends succeed, one local address."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, str, int]] = []

    def send(self, data: bytes, transport: str, host: str, port: int) -> Deferred[None]:
        self.sent.append((data, transport, host, port))
        return succeed(None)

    def local_address(self, transport: str, host: str) -> tuple[str, int]:
        return ("198.51.100.1", 5060)


# -- keep-alive -------------------------------------------------------------------------------------------


class FakeStreamFlow(FakeFlow):
    """A TCP/TLS connection as the transport manager hands it out."""

    def __init__(self, transport: str = "TCP", remote_address: tuple[str, int] = ("203.0.113.9", 40000)):
        super().__init__(transport, remote_address)


class FakeTransportManager:
    """`flow_for(transport, host, port)` over a dict of open connections."""

    def __init__(self) -> None:
        self.flows: dict[tuple[str, str, int], FakeFlow] = {}
        self.lookups: list[tuple[str, str, int]] = []

    def flow_for(self, transport: str, host: str, port: int) -> FakeFlow | None:
        self.lookups.append((transport, host, port))
        return self.flows.get((transport, host, port))


class FakeStack:
    """Records `send_request(request, tu, transport, host, port)` calls; `transport.flow_for` gives flows."""

    def __init__(self) -> None:
        self.transport = FakeTransportManager()
        self.sent: list[tuple[Request, Any, str, str, int]] = []
        self.fail_for: set[str] = set()

    def send_request(self, request: Request, tu: Any, transport: str, host: str, port: int) -> object:
        if host in self.fail_for:
            raise OSError(f"cannot send to {host}")
        self.sent.append((request, tu, transport, host, port))
        return object()


def binding(
    contact: str = "sip:1001@192.168.1.10:5060",
    *,
    tenant: str = "acme",
    aor: str = "1001",
    expires_at: float = 3600.0,
    q: float = 1.0,
    registered_at: float = 0.0,
    received: str = "udp:203.0.113.5:62000",
    call_id: str = "c1@phone",
    cseq: int = 1,
) -> Binding:
    """A Binding with sensible defaults, for location and keep-alive tests."""
    return Binding(
        tenant=tenant,
        aor=aor,
        contact=contact,
        expires_at=expires_at,
        q=q,
        call_id=call_id,
        cseq=cseq,
        received=received,
        local="udp:198.51.100.1:5060",
        registered_at=registered_at,
    )
