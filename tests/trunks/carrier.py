"""Test support for trunks: in-memory carriers (a registrar that challenges, answers OPTIONS, or goes away)
reached by a real `SipStack` on a `Clock` through `CarrierNet`, a fake transport manager.

What the stack sends is queued; `CarrierNet.run()` hands each request to the carrier at its address and feeds
the answers (parsed from bytes) back to the stack. `advance(net, clock, seconds)` moves the clock timer by
timer, running the network after each step. A carrier checks every digest it gets (`bad_auth` counts the
wrong ones) and records every request (`requests`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from pbx.sip.digest import DigestCredentials, digest_response, ha1
from pbx.sip.headers import NameAddress
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message

PBX_ADDRESS = ("127.0.0.1", 5070)


class ServerFlow:
    transport = "UDP"
    reliable = False
    secure = False
    local_address = PBX_ADDRESS
    remote_address = ("192.0.2.20", 5060)

    def send(self, data: bytes) -> None:  # pragma: no cover
        raise AssertionError("nothing is sent on the server's flow")

    def connected(self) -> bool:
        return True


@dataclass
class Carrier:
    """A carrier's registrar at one address.

    Attributes:
        username, password, realm: the account it accepts.
        mode: "ok" (challenge, then accept), "drop" (never answer), "503", "403" (refuse everything),
            "unreachable" (sending to it fails at the transport).
        granted: the expiry granted in a 200 (on our Contact), None: what was asked for.
        min_expires: answer 423 with this Min-Expires to REGISTERs asking for less.
        proxy_auth: challenge with 407 / Proxy-Authenticate instead of 401.
        algorithm: the challenge's algorithm.
        options: how OPTIONS are answered: a status, or None to drop them.
    """

    username: str = "1555"
    password: str = "secret"
    realm: str = "carrier.test"
    mode: str = "ok"
    granted: int | None = None
    min_expires: int = 0
    proxy_auth: bool = False
    algorithm: str = "MD5"
    options: int | None = 200
    requests: list[Request] = field(default_factory=list)
    bad_auth: int = 0
    _nonces: Any = field(default_factory=lambda: itertools.count(1))

    def registers(self) -> list[Request]:
        return [r for r in self.requests if r.method == "REGISTER"]

    def answer(self, request: Request) -> Response | None:
        self.requests.append(request)
        if self.mode in ("drop", "unreachable"):
            return None
        if request.method == "OPTIONS":
            return request.response(self.options, to_tag="opt") if self.options is not None else None
        if self.mode == "503":
            return request.response(503, to_tag="c")
        if self.mode == "403":
            return request.response(403, to_tag="c")
        header = "Proxy-Authorization" if self.proxy_auth else "Authorization"
        given = request.headers.get(header)
        if given is None:
            return self._challenge(request)
        credentials = DigestCredentials.parse(given)
        key = ha1(self.username, self.realm, self.password, self.algorithm)
        expected = digest_response(
            key,
            request.method,
            credentials.uri,
            credentials.nonce,
            credentials.nc,
            credentials.cnonce,
            credentials.qop,
            credentials.algorithm,
        )
        if credentials.response != expected or credentials.username != self.username:
            self.bad_auth += 1
            return request.response(403, to_tag="c")
        asked = int(request.headers.get("Expires") or 3600)
        if asked and asked < self.min_expires:
            response = request.response(423, to_tag="c")
            response.headers.add("Min-Expires", str(self.min_expires))
            return response
        response = request.response(200, to_tag="c")
        if asked:
            contact = NameAddress.parse(request.headers.get("Contact") or "")
            granted = self.granted if self.granted is not None else asked
            response.headers.add("Contact", str(contact.with_param("expires", str(granted))))
        return response

    def _challenge(self, request: Request) -> Response:
        status, name = (407, "Proxy-Authenticate") if self.proxy_auth else (401, "WWW-Authenticate")
        response = request.response(status, to_tag="c")
        nonce = f"nonce{next(self._nonces)}"
        response.headers.add(
            name, f'Digest realm="{self.realm}", nonce="{nonce}", qop="auth", algorithm={self.algorithm}'
        )
        return response


class CarrierNet:
    """The stack's transport manager: requests go to the `carriers` by (host, port); others vanish."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.carriers: dict[tuple[str, int], Carrier] = {}
        self.queue: list[tuple[Carrier, bytes]] = []
        self.sent: list[tuple[str, str, int, bytes]] = []

    def add(self, host: str, port: int = 5060, **settings: Any) -> Carrier:
        carrier = Carrier(**settings)
        self.carriers[(host, port)] = carrier
        return carrier

    def send(self, data: bytes, transport: str, host: str, port: int) -> Deferred[None]:
        self.sent.append((transport, host, port, data))
        carrier = self.carriers.get((host, port))
        if carrier is not None and carrier.mode == "unreachable":
            carrier.requests.append(_request(data))
            return fail(OSError("connection refused"))
        if carrier is not None:
            self.queue.append((carrier, data))
        return succeed(None)

    def local_address(self, transport: str, host: str) -> tuple[str, int]:
        return PBX_ADDRESS

    def run(self) -> None:
        """Deliver every queued request and its answer (answers may make new requests: bounded)."""
        for _ in range(100_000):
            if not self.queue:
                return
            carrier, data = self.queue.pop(0)
            response = carrier.answer(_request(data))
            if response is not None:
                self.stack.message_received(parse_message(response.to_bytes()), ServerFlow())
        raise AssertionError("the network never went quiet")


def _request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def advance(net: CarrierNet, clock: Clock, seconds: float) -> None:
    """Move `clock` forward by `seconds`, from one timer to the next, running the network after each."""
    net.run()
    end = clock.seconds() + seconds
    for _ in range(1_000_000):
        pending = [call.getTime() for call in clock.getDelayedCalls() if call.getTime() <= end]
        if not pending:
            break
        clock.advance(max(0.0, min(pending) - clock.seconds()))
        net.run()
    clock.advance(max(0.0, end - clock.seconds()))
    net.run()
