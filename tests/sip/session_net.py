"""Test support for INVITE sessions: real `SipStack`s joined by an in-memory UDP network on a `Clock`.

Each `Endpoint` is a stack at one address; what a stack sends is queued and delivered, parsed from bytes, by
`Network.run()` (optionally dropped by a filter); `Network.advance(seconds)` moves the clock from one timer to
the next, delivering what each sends. `Recorder` is a session listener that records every event.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from pbx.sip.interfaces import IFlow
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.session import InviteSession
from pbx.sip.session_events import SessionListener
from pbx.sip.session_uac import UacSession, make_invite
from pbx.sip.session_uas import InviteAcceptor, UasSession
from pbx.sip.stack import SipStack
from pbx.sip.uri import parse_uri

Address = tuple[str, int]
A: Address = ("127.0.0.1", 5060)
B: Address = ("127.0.0.2", 5060)
OFFER = b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\n"
ANSWER = b"v=0\r\no=b 1 1 IN IP4 127.0.0.2\r\n"


@implementer(IFlow)
class Flow:
    transport = "UDP"
    reliable = False
    secure = False

    def __init__(self, net: Network, local: Address, remote: Address) -> None:
        self.net, self.local_address, self.remote_address = net, local, remote

    def send(self, data: bytes) -> None:
        self.net.queue.append((self.local_address, self.remote_address, data))

    def connected(self) -> bool:
        return True


class Endpoint:
    """A SipStack at `address` whose TransportManager is the network."""

    def __init__(self, net: Network, address: Address) -> None:
        self.net, self.address = net, address
        self.stack = SipStack(net.clock)
        self.stack.attach_transport(self)

    def send(self, data: bytes, transport: str, host: str, port: int) -> Any:
        self.net.queue.append((self.address, (host, port), data))
        return succeed(None)

    def local_address(self, transport: str, host: str) -> Address:
        return self.address


class Network:
    def __init__(self) -> None:
        self.clock = Clock()
        self.queue: list[tuple[Address, Address, bytes]] = []
        self.endpoints: dict[Address, Endpoint] = {}
        self.log: list[tuple[float, Address, Address, Request | Response]] = []
        self.drop: Any = None  # drop(message, src, dst) -> bool

    def add(self, address: Address) -> Endpoint:
        endpoint = self.endpoints[address] = Endpoint(self, address)
        return endpoint

    def run(self) -> None:
        for _ in range(10_000):
            if not self.queue:
                return
            src, dst, data = self.queue.pop(0)
            message = parse_message(data)
            self.log.append((self.clock.seconds(), src, dst, message))
            if self.drop is not None and self.drop(message, src, dst):
                continue
            endpoint = self.endpoints.get(dst)
            if endpoint is not None:
                endpoint.stack.message_received(parse_message(data), Flow(self, dst, src))
        raise AssertionError("message loop")

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` ahead, one timer at a time, delivering messages after each."""
        end = self.clock.seconds() + seconds
        self.run()
        for _ in range(100_000):
            calls = [c.getTime() for c in self.clock.getDelayedCalls()]
            due = min(calls, default=end + 1)
            if due > end:
                break
            self.clock.advance(max(0.0, due - self.clock.seconds()))
            self.run()
        self.clock.advance(max(0.0, end - self.clock.seconds()))
        self.run()

    def sent(self, src: Address | None = None, what: str | int | None = None) -> list[Request | Response]:
        """Messages sent (from `src`), optionally only requests of a method or responses with a status."""
        out = []
        for _t, s, _d, m in self.log:
            if src is not None and s != src:
                continue
            if isinstance(what, str) and not (isinstance(m, Request) and m.method == what):
                continue
            if isinstance(what, int) and not (isinstance(m, Response) and m.status == what):
                continue
            out.append(m)
        return out

    def times(self, src: Address, what: str | int) -> list[float]:
        out = []
        for t, s, _d, m in self.log:
            if s != src:
                continue
            if isinstance(what, str) and isinstance(m, Request) and m.method == what:
                out.append(t)
            if isinstance(what, int) and isinstance(m, Response) and m.status == what:
                out.append(t)
        return out


class Recorder(SessionListener):
    """Records every event as (name, detail); answers offers with `answer`, offers `offer` when asked."""

    def __init__(self, answer: bytes = ANSWER, offer: bytes = OFFER) -> None:
        self.events: list[tuple[str, Any]] = []
        self.answer, self.offer = answer, offer
        self.reply_status = 200

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def offer_received(self, session: InviteSession, body: bytes, content_type: str) -> object:
        self.events.append(("offer", body))
        return self.answer

    def offer_requested(self, session: InviteSession) -> object:
        self.events.append(("offer_requested", None))
        return self.offer

    def answer_received(self, session: InviteSession, body: bytes, content_type: str) -> None:
        self.events.append(("answer", body))

    def request_received(self, session: InviteSession, request: Request) -> object:
        self.events.append(("request", request.method))
        return self.reply_status

    def provisional(self, session: InviteSession, response: Response) -> None:
        self.events.append(("provisional", response.status))

    def answered(self, session: InviteSession, response: Response) -> None:
        self.events.append(("answered", response.status))

    def failed(self, session: InviteSession, status: int, response: Response | None) -> None:
        self.events.append(("failed", status))

    def cancelled(self, session: InviteSession) -> None:
        self.events.append(("cancelled", None))

    def confirmed(self, session: InviteSession) -> None:
        self.events.append(("confirmed", None))

    def terminated(self, session: InviteSession, reason: str) -> None:
        self.events.append(("terminated", reason))


class Call:
    """A caller (UacSession at A) and a callee (UasSession at B, made by an InviteAcceptor)."""

    def __init__(self, *, body: bytes = OFFER, seed_a: int = 1, seed_b: int = 2, uas_options: Any = None,
                 uac_options: Any = None, headers: Any = ()) -> None:  # fmt: skip
        self.net = Network()
        self.a = self.net.add(A)
        self.b = self.net.add(B)
        self.caller = Recorder()
        self.callee = Recorder()
        self.uas: UasSession | None = None
        self.acceptor = InviteAcceptor(
            self.b.stack,
            self._on_session,
            lambda: self.callee,
            rng=random.Random(seed_b),
            **(uas_options or {}),
        )
        self.b.stack.register("INVITE", self.acceptor)
        invite = make_invite(
            parse_uri("sip:bob@127.0.0.2:5060"),
            "<sip:alice@127.0.0.1>",
            "<sip:bob@127.0.0.2>",
            self.a.stack.contact_for("udp", "127.0.0.2", "alice"),
            body=body,
            headers=headers,
        )
        self.uac = UacSession(
            self.a.stack, invite, self.caller, rng=random.Random(seed_a), **(uac_options or {})
        )

    def _on_session(self, session: UasSession) -> None:
        self.uas = session

    def establish(self) -> tuple[UacSession, UasSession]:
        self.uac.start()
        self.net.run()
        assert self.uas is not None
        self.uas.provisional(180)
        self.net.run()
        self.uas.answer(ANSWER if self.uac.invite.body else OFFER)
        self.net.run()
        return self.uac, self.uas

    def quiesce(self) -> None:
        """Let every transaction timer run out."""
        self.net.advance(300)
