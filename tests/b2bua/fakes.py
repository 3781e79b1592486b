"""Shared fakes for the B2BUA tests: a recording SIP stack, flows and server transactions, a media relay with
deterministic ports, phones that place and answer calls, and a `Harness` that wires a real `B2BUA` to them.

No sockets, no reactor: time is a `task.Clock`. Messages from phones are written as wire text and parsed, so
their headers look like the network's. The harness authenticates callers with a real `DigestAuthenticator`
(the first INVITE gets a 407 that the phone answers with `answer_challenge`) and routes calls with a real
`DialplanEngine` over a directory of small templates each test writes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from pbx.b2bua import B2BUA, Directory, ExtensionInfo
from pbx.dialplan import DialplanEngine
from pbx.media.interfaces import IMediaRelay, IRelayLeg, IRelaySession, LegStats, SessionStats
from pbx.registrar import Domain, LocationService
from pbx.sip.auth import DigestAuthenticator, NonceCounter, NonceSource
from pbx.sip.dialog_router import DialogRouter
from pbx.sip.digest import DigestChallenge, answer_challenge, ha1
from pbx.sip.errors import SipError
from pbx.sip.interfaces import IFlow
from pbx.sip.message import Request, Response, new_branch
from pbx.sip.parser import parse_message
from pbx.sip.sdp import SessionDescription
from pbx.sip.timers import TimerConfig
from pbx.sip.transaction import make_cancel
from pbx.store import Binding, MemoryLocationStore
from pbx.testing import RecordingFlow, RecordingServerTransaction

# -- the tenant ----------------------------------------------------------------------------------------------

DOMAIN = "a.example"
TENANT = "acme"
REALM = "a.example"
PBX_ADDRESS = "198.51.100.1"
PBX_CONTACT = f"<sip:pbx@{PBX_ADDRESS}:5060>"
RELAY_ADDRESS = "198.51.100.9"

PASSWORDS = {
    "1001": "alice-secret",
    "1002": "bob-secret",
    "1003": "carol-secret",
    "1004": "dave-secret",
    "9999": "not-an-extension",  # has credentials, but no extension in the directory
}
"""user -> password in realm `REALM`; the server side stores only H(A1)."""

EXTENSIONS = {
    "1001": ExtensionInfo("1001", name="Alice"),
    "1002": ExtensionInfo("1002", name="Bob"),
    "1003": ExtensionInfo("1003", name="Carol"),
    "1004": ExtensionInfo("1004"),
}
GROUPS = {"sales": ("1002", "1003")}

# Where the phones are: the caller (1001) and the called phones' registered flows.
CALLER_ADDRESS = ("192.168.1.10", 5060)
CALLER_CONTACT = "<sip:1001@192.168.1.10:5060>"
CALLER_SDP_ADDRESS = "192.168.1.10"
CALLER_RTP_PORT = 49170


def ha1_table() -> dict[tuple[str, str, str], str]:
    return {
        (user, REALM, algorithm): ha1(user, REALM, password, algorithm)
        for user, password in PASSWORDS.items()
        for algorithm in ("MD5", "SHA-256")
    }


# -- SDP -----------------------------------------------------------------------------------------------------


def sdp_body(
    address: str = CALLER_SDP_ADDRESS,
    port: int = CALLER_RTP_PORT,
    *,
    formats: Sequence[tuple[str, str]] = (
        ("0", "PCMU/8000"),
        ("8", "PCMA/8000"),
        ("101", "telephone-event/8000"),
    ),
    version: int = 1,
    session_id: str = "2890844526",
    user: str = "phone",
    video_port: int | None = None,
    direction: str = "sendrecv",
) -> bytes:
    """An SDP body as a phone writes it (CRLF line ends)."""
    lines = [
        "v=0",
        f"o={user} {session_id} {version} IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(pt for pt, _ in formats)}",
    ]
    lines += [f"a=rtpmap:{pt} {encoding}" for pt, encoding in formats]
    if any(encoding.startswith("telephone-event") for _, encoding in formats):
        pt = next(pt for pt, encoding in formats if encoding.startswith("telephone-event"))
        lines.append(f"a=fmtp:{pt} 0-16")
    lines.append(f"a={direction}")
    if video_port is not None:
        lines += [f"m=video {video_port} RTP/AVP 96", "a=rtpmap:96 H264/90000"]
    return ("\r\n".join(lines) + "\r\n").encode()


def sdp(body: bytes) -> SessionDescription:
    return SessionDescription.parse(body)


# -- flows and transactions ----------------------------------------------------------------------------------


class FakeFlow(RecordingFlow):
    """A recording flow from the caller's address to the PBX's."""

    def __init__(
        self,
        transport: str = "UDP",
        remote_address: tuple[str, int] = CALLER_ADDRESS,
        local_address: tuple[str, int] = (PBX_ADDRESS, 5060),
    ) -> None:
        super().__init__(transport, remote_address, local_address)


FakeServerTransaction = RecordingServerTransaction


class FakeClientTransaction:
    """What `FakeStack.send_request` returns: the request it was made for."""

    def __init__(self, request: Request) -> None:
        self.request = request


@dataclass
class Sent:
    """One `send_request`/`send_cancel` call of the B2BUA: what, to whom, and where responses go."""

    request: Request
    tu: Any
    transport: str
    host: str
    port: int
    transaction: FakeClientTransaction
    at: float

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def destination(self) -> tuple[str, str, int]:
        return (self.transport, self.host, self.port)


@dataclass
class Stateless:
    """One `send_stateless` call (the ACK of a 2xx)."""

    request: Request
    transport: str
    host: str
    port: int

    @property
    def destination(self) -> tuple[str, str, int]:
        return (self.transport, self.host, self.port)


class FakeStack:
    """The stack API the B2BUA uses, recording every call; requests get a top Via as the real stack adds."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.timers = TimerConfig()
        self.requests: list[Sent] = []
        self.cancels: list[Sent] = []
        self.stateless: list[Stateless] = []
        self.responses: list[tuple[Response, IFlow, float]] = []
        self.contact_lookups: list[tuple[str, str]] = []
        self.dialogs = DialogRouter()  # the real one: the stack's dialog table routes as in SipStack
        self.out_of_service = False

    def add_dialog(self, dialog: Any, usage: Any) -> None:
        self.dialogs.add(dialog, usage)

    def remove_dialog(self, dialog: Any) -> None:
        self.dialogs.remove(dialog)

    def contact_for(self, transport: str, host: str, user: str = "pbx", *, secure: bool = False) -> str:
        self.contact_lookups.append((transport, host))
        return PBX_CONTACT

    @staticmethod
    def _add_via(request: Request, transport: str) -> None:
        via = f"SIP/2.0/{transport.upper()} {PBX_ADDRESS}:5060;branch={new_branch()};rport"
        request.headers.prepend("Via", via)
        if "Max-Forwards" not in request.headers:
            request.headers.add("Max-Forwards", "70")

    def send_request(
        self, request: Request, tu: Any, transport: str, host: str, port: int, *, new_via: bool = True
    ) -> FakeClientTransaction:
        if new_via:
            self._add_via(request, transport)
        transaction = FakeClientTransaction(request)
        sent = Sent(request, tu, transport, host, port, transaction, self.clock.seconds())
        (self.cancels if request.method == "CANCEL" else self.requests).append(sent)
        return transaction

    def send_cancel(
        self, cancel: Request, tu: Any, transport: str, host: str, port: int
    ) -> FakeClientTransaction:
        return self.send_request(cancel, tu, transport, host, port, new_via=False)

    def send_stateless(self, request: Request, transport: str, host: str, port: int) -> Deferred[None]:
        self._add_via(request, transport)
        self.stateless.append(Stateless(request, transport, host, port))
        return succeed(None)

    def send_response(self, response: Response, flow: IFlow) -> None:
        self.responses.append((response, flow, self.clock.seconds()))

    # -- views -------------------------------------------------------------------------------------------

    def sent(self, method: str) -> list[Sent]:
        return [s for s in self.requests if s.method == method]

    @property
    def acks(self) -> list[Stateless]:
        return [s for s in self.stateless if s.request.method == "ACK"]


# -- media relay ---------------------------------------------------------------------------------------------


@implementer(IRelayLeg)
class FakeRelayLeg:
    """A relay leg with a fixed port; `set_remote` calls are recorded."""

    def __init__(self, name: str, local_port: int, local_address: str = RELAY_ADDRESS) -> None:
        self.name = name
        self.local_port = local_port
        self.local_address = local_address
        self.remote: tuple[str, int] | None = None
        self.latched: tuple[str, int] | None = None
        self.set_remote_calls: list[tuple[str, int, int | None]] = []
        self.consumer: Any = None
        self.sent: list[tuple[str, bytes]] = []  # ("rtp" | "rtcp", data)
        self.transform: Any = None  # set_transform's (transcoding, DTMF interworking)
        self.tap: Any = None  # set_tap's (in-call feature codes)

    @property
    def attached(self) -> bool:
        return self.consumer is not None

    def set_remote(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        self.set_remote_calls.append((host, port, rtcp_port))
        self.remote = (host, port)

    def attach(self, consumer: Any) -> None:
        self.consumer = consumer

    def detach(self) -> None:
        self.consumer = None

    def set_transform(self, transform: Any) -> None:
        self.transform = transform

    def set_tap(self, tap: Any) -> None:
        self.tap = tap

    def relay_rtp(self, data: bytes) -> bytes | None:
        """What the relay would pass on to the other phone for `data` from this leg's phone."""
        if self.tap is not None:
            self.tap(data)
        return data if self.transform is None else self.transform(data)

    def send_rtp(self, data: bytes) -> None:
        self.sent.append(("rtp", data))

    def send_rtcp(self, data: bytes) -> None:
        self.sent.append(("rtcp", data))

    def _stats(self) -> LegStats:
        return LegStats(self.name, self.local_port, self.remote, None, None, None, 0, 0, 0, 0, 0, 0, 0, 0, 0)


@implementer(IRelaySession)
class FakeRelaySession:
    """Two legs: "a" on `base`, "b" on `base + 2`."""

    def __init__(self, relay: FakeRelay, call_id: str, base: int) -> None:
        self._relay = relay
        self.call_id = call_id
        self.closed = False
        self.close_calls = 0
        self.legs = {"a": FakeRelayLeg("a", base), "b": FakeRelayLeg("b", base + 2)}

    def leg(self, name: str) -> FakeRelayLeg:
        return self.legs[name]

    def stats(self) -> SessionStats:
        return SessionStats(self.call_id, self.legs["a"]._stats(), self.legs["b"]._stats())

    def close(self) -> Deferred[None]:
        self.close_calls += 1
        self.closed = True
        return succeed(None)


@implementer(IMediaRelay)
class FakeRelay:
    """Sessions with deterministic ports: the n-th session (from 0) has legs on 40000 + 4n and 40002 + 4n."""

    def __init__(self, clock: Any = None) -> None:
        self.created: list[FakeRelaySession] = []
        self.clock = clock  # what MediaBridge paces converted DTMF with (None: no interworking)

    @property
    def sessions(self) -> int:
        return sum(1 for s in self.created if not s.closed)

    def create_session(self, call_id: str) -> FakeRelaySession:
        session = FakeRelaySession(self, call_id, 40000 + 4 * len(self.created))
        self.created.append(session)
        return session

    def close(self) -> Deferred[None]:
        for session in self.created:
            session.close()
        return succeed(None)


# -- messages from phones ------------------------------------------------------------------------------------

_counter = itertools.count(1)


def wire_request(
    method: str,
    uri: str,
    headers: Sequence[tuple[str, str]],
    body: bytes = b"",
    *,
    via_host: str = "192.168.1.10:5060",
    content_type: str = "application/sdp",
) -> Request:
    """A request as a phone sends it, built as wire text and parsed (a body gets `content_type`)."""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {via_host};branch=z9hG4bKph{next(_counter):06d};rport",
        "Max-Forwards: 70",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    request = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(request, Request)
    return request


def error_response(request: Request, error: SipError) -> Response:
    """The response the stack builds for a `SipError` raised by a transaction user."""
    response = request.response(error.status, error.reason, to_tag="stacktag")
    for name, value in error.headers:
        response.headers.add(name, value)
    return response


def deliver(b2bua: B2BUA, txn: FakeServerTransaction) -> Deferred[Any] | None:
    """Hand a request to the B2BUA as the stack does: a `SipError` (raised, or a failure of the returned
    Deferred) becomes its response on `txn`; other failures stay on the Deferred for the test to see."""
    request = txn.request
    try:
        if request.to.tag is not None:  # SipStack.request_received: in a dialog, its usage answers
            try:
                d = b2bua.stack.dialogs.route_request(txn, request)  # type: ignore[attr-defined]
            except LookupError:
                raise SipError(481) from None
        else:
            d = b2bua.request_received(txn, request)
    except SipError as e:
        txn.respond(error_response(txn.request, e))
        return None
    if d is None:
        return None

    def failed(failure: Failure) -> None:
        failure.trap(SipError)
        txn.respond(error_response(txn.request, failure.value))

    return d.addErrback(failed)


class CallerPhone:
    """Extension 1001 (or another user) placing one call: INVITE, 407, INVITE with credentials, then ACK,
    BYE, re-INVITE and CANCEL within that call."""

    def __init__(
        self,
        harness: Harness,
        dialed: str = "1002",
        *,
        user: str = "1001",
        password: str | None = None,
        domain: str = DOMAIN,
        body: bytes | None = None,
        display_name: str | None = "Alice Phone",
        flow: FakeFlow | None = None,
        extra: Sequence[tuple[str, str]] = (),
        content_type: str = "application/sdp",
    ) -> None:
        self.harness = harness
        self.dialed = dialed
        self.user = user
        self.password = PASSWORDS.get(user, "") if password is None else password
        self.domain = domain
        self.body = sdp_body() if body is None else body
        self.display_name = display_name
        self.flow = flow or FakeFlow()
        self.extra = list(extra)
        self.content_type = content_type
        n = next(_counter)
        self.call_id = f"caller-call-{n}@192.168.1.10"
        self.tag = f"callertag{n}"
        self.cseq = 0
        self.txn: FakeServerTransaction | None = None  # the INVITE transaction of the call
        self.deferred: Deferred[Any] | None = None
        self.challenge: Response | None = None
        self.remote_tag: str | None = None
        self.in_dialog: list[FakeServerTransaction] = []

    @property
    def uri(self) -> str:
        return f"sip:{self.dialed}@{self.domain}"

    @property
    def from_value(self) -> str:
        name = f'"{self.display_name}" ' if self.display_name else ""
        return f"{name}<sip:{self.user}@{self.domain}>;tag={self.tag}"

    def invite_request(self, authorization: str | None = None) -> Request:
        self.cseq += 1
        headers = [
            ("From", self.from_value),
            ("To", f"<sip:{self.dialed}@{self.domain}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} INVITE"),
            ("Contact", CALLER_CONTACT),
            ("User-Agent", "TestPhone/1.0"),
            *self.extra,
        ]
        if authorization is not None:
            headers.append(("Proxy-Authorization", authorization))
        return wire_request("INVITE", self.uri, headers, self.body, content_type=self.content_type)

    def send_invite(self, authorization: str | None = None) -> FakeServerTransaction:
        txn = FakeServerTransaction(self.invite_request(authorization), self.flow)
        self.txn = txn
        self.deferred = deliver(self.harness.b2bua, txn)
        return txn

    def credentials(self, challenge_response: Response, *, algorithm: str = "SHA-256", nc: int = 1) -> str:
        challenges = [
            DigestChallenge.parse(v) for v in challenge_response.headers.get_all("Proxy-Authenticate")
        ]
        (challenge,) = [c for c in challenges if c.algorithm == algorithm]
        credentials = answer_challenge(
            challenge, method="INVITE", uri=self.uri, username=self.user, password=self.password, nc=nc
        )
        return str(credentials)

    def call(self) -> FakeServerTransaction:
        """INVITE, answer the 407, INVITE again: the transaction of the authorized INVITE."""
        first = self.send_invite()
        assert first.final is not None and first.final.status == 407, first.responses
        self.challenge = first.final
        return self.send_invite(self.credentials(first.final))

    # -- within the call ---------------------------------------------------------------------------------

    def learn_tag(self) -> str:
        """The PBX's To tag, from the responses to the INVITE."""
        assert self.txn is not None
        tags = {r.to.tag for r in self.txn.responses if r.status > 100}
        assert len(tags) == 1, tags
        tag = tags.pop()
        assert tag is not None
        self.remote_tag = tag
        return tag

    def _dialog_headers(self, method: str, cseq: int) -> list[tuple[str, str]]:
        tag = self.remote_tag or self.learn_tag()
        return [
            ("From", self.from_value),
            ("To", f"<sip:{self.dialed}@{self.domain}>;tag={tag}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]

    def ack(self, body: bytes = b"", *, content_type: str = "application/sdp") -> Request:
        """The ACK of the 2xx to the INVITE, routed by the stack's dialog table."""
        assert self.txn is not None
        headers = self._dialog_headers("ACK", self.cseq)
        ack = wire_request("ACK", PBX_CONTACT[1:-1], headers, body, content_type=content_type)
        self.harness.stack.dialogs.route_ack(ack, self.flow)
        return ack

    def request(self, method: str, body: bytes = b"", *, cseq: int | None = None) -> FakeServerTransaction:
        """A request within the dialog (BYE, re-INVITE, INFO ...), in its own server transaction."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        headers = self._dialog_headers(method, cseq)
        if method in ("INVITE", "UPDATE"):
            headers.append(("Contact", CALLER_CONTACT))
        request = wire_request(method, PBX_CONTACT[1:-1], headers, body)
        txn = FakeServerTransaction(request, self.flow)
        self.in_dialog.append(txn)
        deliver(self.harness.b2bua, txn)
        return txn

    def bye(self) -> FakeServerTransaction:
        return self.request("BYE")

    def cancel(self) -> Request:
        """CANCEL the pending INVITE (the stack has answered the CANCEL 200 and found the transaction)."""
        assert self.txn is not None
        cancel = make_cancel(self.txn.request)
        self.harness.b2bua.cancel_received(cancel, self.txn)
        return cancel


class CalleePhone:
    """A called phone, for one INVITE the B2BUA sent: it answers through the recorded transaction user."""

    def __init__(self, harness: Harness, sent: Sent, *, tag: str | None = None) -> None:
        assert sent.method == "INVITE"
        self.harness = harness
        self.sent = sent
        self.tag = tag or f"callee{next(_counter)}"
        self.contact = f"<{sent.request.uri}>"  # the registered Contact; requests go to the flow instead
        self.flow = FakeFlow(remote_address=(sent.host, sent.port))
        self.cseq = 0

    @property
    def invite(self) -> Request:
        return self.sent.request

    def response(
        self, status: int, body: bytes = b"", *, tag: str | None = None, content_type: str = "application/sdp"
    ) -> Response:
        response = self.invite.response(status, to_tag=(tag or self.tag) if status > 100 else None)
        if 100 < status < 300:
            response.headers.add("Contact", self.contact)
        if body:
            response.headers.add("Content-Type", content_type)
            response.body = body
        return response

    def respond(
        self, status: int, body: bytes = b"", *, tag: str | None = None, content_type: str = "application/sdp"
    ) -> Response:
        """Send a response to the INVITE to its transaction user (the leg)."""
        response = self.response(status, body, tag=tag, content_type=content_type)
        self.sent.tu.response_received(self.sent.transaction, response)
        return response

    def answer(self, body: bytes | None = None) -> Response:
        return self.respond(200, callee_sdp() if body is None else body)

    def request(self, method: str, body: bytes = b"") -> FakeServerTransaction:
        """A request within the dialog the 2xx made, from the callee (BYE, re-INVITE ...)."""
        self.cseq += 1
        invite = self.invite
        headers = [
            ("From", f"{invite.headers.get('To')};tag={self.tag}"),
            ("To", str(invite.headers.get("From"))),
            ("Call-ID", str(invite.call_id)),
            ("CSeq", f"{self.cseq} {method}"),
        ]
        if method in ("INVITE", "UPDATE"):
            headers.append(("Contact", self.contact))
        request = wire_request(
            method, PBX_CONTACT[1:-1], headers, body, via_host=f"{self.sent.host}:{self.sent.port}"
        )
        txn = FakeServerTransaction(request, self.flow)
        deliver(self.harness.b2bua, txn)
        return txn

    def bye(self) -> FakeServerTransaction:
        return self.request("BYE")


def respond_to(sent: Sent, status: int, body: bytes = b"", *, contact: str | None = None) -> Response:
    """Answer a request the B2BUA sent (a relayed re-INVITE, a BYE ...) through its transaction user."""
    response = sent.request.response(status)
    if contact is not None:
        response.headers.add("Contact", contact)
    if body:
        response.headers.add("Content-Type", "application/sdp")
        response.body = body
    sent.tu.response_received(sent.transaction, response)
    return response


def callee_sdp(address: str = "192.168.1.20", port: int = 30000, **kwargs: Any) -> bytes:
    return sdp_body(address, port, user="callee", session_id="77", **kwargs)


# -- the harness ---------------------------------------------------------------------------------------------


@dataclass
class Registration:
    extension: str
    contact: str
    received: str


CONTACTS_1002 = (
    Registration("1002", "sip:1002@192.168.1.20:5062", "udp:127.0.0.1:5062"),
    Registration("1002", "sip:1002@192.168.1.21:5064", "udp:127.0.0.1:5064"),
)


@dataclass
class Harness:
    """A real B2BUA over fakes: build with `Harness.build(dialplan_dir, main=...)`."""

    clock: Clock
    stack: FakeStack
    store: MemoryLocationStore
    location: LocationService
    authenticator: DigestAuthenticator
    relay: FakeRelay
    engine: DialplanEngine
    b2bua: B2BUA
    dialplans: Path
    phones: list[CallerPhone] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        dialplans: Path,
        main: str | None = None,
        *,
        templates: dict[str, str] | None = None,
        codecs: Sequence[str] = ("*",),
        ring_timeout: float = 30.0,
        max_call_duration: float = 14400.0,
        extensions: dict[str, ExtensionInfo] | None = None,
        peers: Any = None,
        **b2bua_options: Any,
    ) -> Harness:
        clock = Clock()
        stack = FakeStack(clock)
        store = MemoryLocationStore()
        location = LocationService(clock, store)
        table = ha1_table()
        authenticator = DigestAuthenticator(
            NonceSource(clock, b"s" * 32), NonceCounter(), lambda u, r, a: table.get((u, r, a))
        )
        relay = FakeRelay(clock)
        engine = DialplanEngine(dialplans)
        directory = Directory(TENANT, DOMAIN, extensions or EXTENSIONS, GROUPS)
        domains = {DOMAIN: Domain(TENANT, REALM)}
        b2bua = B2BUA(
            clock,
            stack,
            location,
            authenticator,
            lambda host: domains.get(host.lower()),
            lambda tenant: directory if tenant == TENANT else None,
            engine,
            relay,
            store,
            peers=peers,
            ring_timeout=ring_timeout,
            max_call_duration=max_call_duration,
            codecs=codecs,
            **b2bua_options,
        )
        harness = cls(clock, stack, store, location, authenticator, relay, engine, b2bua, dialplans)
        if main is not None:
            harness.write("main", main)
        for name, text in (templates or {}).items():
            harness.write(name, text)
        return harness

    def write(self, name: str, text: str) -> None:
        path = self.dialplans / TENANT / f"{name}.j2"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.strip() + "\n")

    def register(self, *registrations: Registration) -> None:
        for i, r in enumerate(registrations):
            binding = Binding(
                tenant=TENANT,
                aor=r.extension,
                contact=r.contact,
                expires_at=self.clock.seconds() + 86400.0,
                q=1.0,
                call_id=f"reg-{r.extension}-{i}",
                cseq=1,
                received=r.received,
                local=f"udp:{PBX_ADDRESS}:5060",
                registered_at=float(-i),  # the first given is the most recent: it is looked up first
            )
            self.location.apply(TENANT, r.extension, [binding], [])

    def register_1002(self, contacts: int = 1) -> None:
        self.register(*CONTACTS_1002[:contacts])

    def caller(self, dialed: str = "1002", **kwargs: Any) -> CallerPhone:
        phone = CallerPhone(self, dialed, **kwargs)
        self.phones.append(phone)
        return phone

    def place_call(self, dialed: str = "1002", **kwargs: Any) -> CallerPhone:
        phone = self.caller(dialed, **kwargs)
        phone.call()
        return phone

    # -- what the B2BUA sent ------------------------------------------------------------------------------

    def invites(self) -> list[Sent]:
        """The INVITEs sent outside a dialog (to the legs), in order."""
        return [s for s in self.stack.sent("INVITE") if s.request.to.tag is None]

    def callees(self) -> list[CalleePhone]:
        return [CalleePhone(self, s) for s in self.invites()]

    def callee(self) -> CalleePhone:
        (one,) = self.callees()
        return one

    def cdrs(self) -> list[Any]:
        return list(self.store.cdr_records)

    def leftover_timers(self) -> list[Any]:
        """The delayed calls left on the clock once the location service's binding expiry is stopped (the
        only timer that is not the B2BUA's); call it at the end of a test."""
        self.location.stop()
        return self.clock.getDelayedCalls()
