"""Message waiting for the PBX (pbx.apps.mwi): digest-authenticated SUBSCRIBE (401 like REGISTER, the
brute-force guard), own mailbox only, message-summary bodies from the counts, NOTIFY on `changed`, the
`[mwi]` config table."""

from __future__ import annotations

from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from pbx.apps.mwi import Mailbox, MessageSummaryPackage, Mwi, MwiAuthorizer
from pbx.config import ConfigError, parse_config
from pbx.registrar import BruteForceGuard, Domain
from pbx.sip.auth import DigestAuthenticator, NonceCounter, NonceSource
from pbx.sip.digest import DigestChallenge, answer_challenge, ha1
from pbx.sip.events.message_summary import MessageSummary
from pbx.sip.interfaces import ITransactionUser
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.subscription import IEventPackage
from pbx.sip.subscription_notifier import Notifier, SubscriptionPolicy
from tests.sip.test_stack import FakeFlow, deliver, make_stack

REALM = "pbx.example.com"
PASSWORDS = {"1000": "pw1000", "1001": "pw1001"}


def lookup(username: str, realm: str, algorithm: str) -> str | None:
    password = PASSWORDS.get(username)
    return ha1(username, realm, password, algorithm) if password and realm == REALM else None


def domains(host: str) -> Domain | None:
    return Domain("acme", REALM) if host == "pbx.example.com" else None


class World:
    def __init__(self) -> None:
        self.stack, self.transports, self.clock = make_stack()
        self.counts = {("acme", "1000"): (2, 5)}
        self.guard = BruteForceGuard(self.clock, max_failures=2)
        auth = DigestAuthenticator(
            NonceSource(self.clock, b"0123456789abcdef0123"), NonceCounter(), lookup, algorithms=("MD5",)
        )
        self.authorizer = MwiAuthorizer(auth, domains, self.guard)
        self.package = MessageSummaryPackage(
            lambda tenant, box: self.counts.get((tenant, box), (0, 0)), {"acme": "pbx.example.com"}.get
        )
        self.notifier = Notifier(self.stack, self.authorizer, [self.package], SubscriptionPolicy())
        self.stack.register("SUBSCRIBE", self.notifier)
        self.mwi = Mwi(self.notifier)
        self.flow = FakeFlow()
        self.branch = 0

    def subscribe(
        self,
        user: str = "1000",
        target: str = "1000",
        password: str | None = None,
        host: str = "pbx.example.com",
    ) -> Response:
        """SUBSCRIBE as `user` to `target`'s mailbox: challenged first, then with credentials."""
        response = self._send(self._request(user, target, host))
        if response.status != 401 or password is None:
            return response
        challenge = DigestChallenge.parse(response.headers.get("WWW-Authenticate") or "")
        request = self._request(user, target, host)
        credentials = answer_challenge(
            challenge, method="SUBSCRIBE", uri=str(request.uri), username=user, password=password
        )
        request.headers.add("Authorization", str(credentials))
        return self._send(request)

    def _request(self, user: str, target: str, host: str) -> Request:
        self.branch += 1
        text = (
            f"SUBSCRIBE sip:{target + '@' if target else ''}{host} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKm{self.branch};rport\r\n"
            f"From: <sip:{user}@{host}>;tag=f{self.branch}\r\nTo: <sip:{target}@{host}>\r\n"
            f"Call-ID: mwi{self.branch}\r\nCSeq: {self.branch} SUBSCRIBE\r\nMax-Forwards: 70\r\n"
            "Contact: <sip:phone@192.0.2.10:5070>\r\nEvent: message-summary\r\n"
            "Accept: application/simple-message-summary\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        )
        request = parse_message(text.encode())
        assert isinstance(request, Request)
        return request

    def _send(self, request: Request) -> Response:
        deliver(self.stack, request.to_bytes(), self.flow)
        response = parse_message(self.flow.sent[-1])
        assert isinstance(response, Response)
        return response

    def notifies(self) -> list[Request]:
        return [r for r in (parse_message(d) for d, *_ in self.transports.sent) if isinstance(r, Request)]

    def answer_all(self) -> None:
        for notify in self.notifies():
            deliver(self.stack, notify.response(200).to_bytes(), self.flow)

    def finish(self) -> None:
        self.mwi.stop()
        self.answer_all()
        self.clock.advance(700)
        assert len(self.stack.dialogs) == 0
        assert self.clock.getDelayedCalls() == []


def test_providers():
    world = World()
    verifyObject(IEventPackage, world.package)
    verifyObject(ITransactionUser, world.notifier)


def test_digest_401_then_200_and_the_first_notify_with_the_counts():
    world = World()
    first = world.subscribe()
    assert first.status == 401 and "WWW-Authenticate" in first.headers
    response = world.subscribe(password="pw1000")
    assert response.status == 200 and response.headers.get("Expires") == "600"
    [notify] = world.notifies()
    assert notify.headers.get("Event") == "message-summary"
    assert notify.headers.get("Content-Type") == "application/simple-message-summary"
    summary = MessageSummary.parse(notify.body)
    assert summary.waiting and summary.account == "sip:1000@pbx.example.com"
    assert summary.count("voice") is not None and str(summary.count("voice")) == "2/5"
    world.finish()


def test_changed_notifies_the_subscribers_of_that_mailbox_only():
    world = World()
    assert world.subscribe(password="pw1000").status == 200
    world.answer_all()
    world.counts[("acme", "1000")] = (0, 7)
    assert world.mwi.changed("acme", "1000") == 1
    assert world.mwi.changed("acme", "1001") == 0
    body = MessageSummary.parse(world.notifies()[-1].body)
    assert not body.waiting and str(body.count("voice")) == "0/7"
    world.finish()


def test_another_mailbox_is_forbidden_and_no_user_part_means_ones_own():
    world = World()
    assert world.subscribe(user="1001", target="1000", password="pw1001").status == 403
    assert world.notifies() == [] and len(world.stack.dialogs) == 0
    assert world.package.resource_for(
        world._request("1001", "", "pbx.example.com"), Mailbox("acme", "1001")
    ) == Mailbox("acme", "1001")
    world.finish()


def test_unknown_domain_403_and_wrong_passwords_feed_the_guard():
    world = World()
    assert world.subscribe(host="elsewhere.example.com").status == 403
    assert world.subscribe(password="wrong").status == 401
    assert world.authorizer.counters["auth_failures"] == 1
    assert world.subscribe(password="wrong").status == 401
    assert world.guard.is_blocked("192.0.2.10")
    world.clock.advance(600)
    world.finish()


def test_mwi_config_table(tmp_path: Path):
    base = {
        "sip": {"listen": [{"transport": "udp", "host": "127.0.0.1", "port": 5060}]},
        "tenants": {"default": {"domain": "localhost"}},
    }
    config = parse_config(
        {**base, "mwi": {"min_expires": 5, "max_expires": 60, "default_expires": 30}}, tmp_path
    )
    assert (config.mwi.min_expires, config.mwi.max_expires, config.mwi.default_expires) == (5, 60, 30)
    assert parse_config(base, tmp_path).mwi.min_expires == 60
    with pytest.raises(ConfigError, match=r"mwi\.max_expires"):
        parse_config({**base, "mwi": {"min_expires": 50, "max_expires": 40}}, tmp_path)
    with pytest.raises(ConfigError, match=r"mwi\.default_expires"):
        parse_config({**base, "mwi": {"max_expires": 100}}, tmp_path)


def test_stateless_challenge_only_for_new_subscribes_without_credentials():
    world = World()
    world.stack.answer_statelessly("SUBSCRIBE", world.authorizer.stateless_challenge)
    request = world._request("1000", "1000", "pbx.example.com")
    assert world._send(request).status == 401
    assert world.authorizer.counters["challenged"] == 1
    assert world.subscribe(password="pw1000").status == 200  # stateless 401, then the stateful 200
    refresh = world._request("1000", "1000", "pbx.example.com")
    refresh.headers.set("To", "<sip:1000@pbx.example.com>;tag=unknown")
    assert world.authorizer.stateless_challenge(refresh, world.flow) is None  # in a dialog: not challenged
    other = world._request("1000", "1000", "elsewhere.example.com")
    assert world.authorizer.stateless_challenge(other, world.flow) is None  # refused statefully (403)
    world.finish()
