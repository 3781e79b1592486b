"""Client requests (`pbx.sip.client`): a real SipStack on a Clock, with a transport recording what is sent.

Timeouts, transport errors, other methods, INVITE (the ACK of a 407, provisional responses, forked 2xx,
CANCEL) and requests in a dialog (CSeq advanced in the dialog). The digest answers themselves are checked in
test_client_auth.py, which shares the fakes defined here."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pbx.sip.client import ClientRequest, _Attempt, dialog_cseq, send_authenticated
from pbx.sip.client_auth import (
    Credentials,
)
from pbx.sip.dialog import Dialog
from pbx.sip.digest import DigestCredentials, digest_response, ha1
from pbx.sip.interfaces import IClientTransactionUser, IFlow
from pbx.sip.message import Request
from pbx.sip.parser import parse_message
from pbx.sip.stack import SipStack
from pbx.sip.transaction import IGNORE_OUTCOME
from pbx.sip.uri import parse_uri

SERVER = ("udp", "192.0.2.20", 5060)
REALM = "pbx.example.com"
PASSWORD = "secret"
CNONCE = "0a4f113b"


@implementer(IFlow)
class ServerFlow:
    transport = "UDP"
    reliable = False
    secure = False
    local_address = ("127.0.0.1", 5060)
    remote_address = ("192.0.2.20", 5060)

    def send(self, data: bytes) -> None:  # pragma: no cover  (responses come in, nothing goes out here)
        raise AssertionError("nothing is sent on the server's flow")

    def connected(self) -> bool:
        return True


class RecordingTransports:
    """A TransportManager that records every datagram; `failing` makes sends fail (a transport error)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, str, int]] = []
        self.failing = False

    def send(self, data: bytes, transport: str, host: str, port: int) -> Deferred[None]:
        if self.failing:
            return fail(OSError("network unreachable"))
        self.sent.append((data, transport, host, port))
        return succeed(None)

    def local_address(self, transport: str, host: str) -> tuple[str, int]:
        return ("127.0.0.1", 5070)


def user(realm: str) -> Credentials | None:
    return Credentials("1001", PASSWORD) if realm in (REALM, "proxy.example.net") else None


def register() -> Request:
    message = parse_message(
        b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:1001@pbx.example.com>;tag=reg1\r\n"
        b"To: <sip:1001@pbx.example.com>\r\n"
        b"Call-ID: reg-call-1@client\r\n"
        b"CSeq: 1 REGISTER\r\n"
        b"Contact: <sip:1001@127.0.0.1:5070>\r\n"
        b"Expires: 600\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(message, Request)
    return message


def invite(sdp: bytes = b"v=0\r\n") -> Request:
    message = parse_message(
        b"INVITE sip:15551234@carrier.example.net SIP/2.0\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:pbx@pbx.example.com>;tag=inv1\r\n"
        b"To: <sip:15551234@carrier.example.net>\r\n"
        b"Call-ID: call-1@pbx\r\n"
        b"CSeq: 10 INVITE\r\n"
        b"Contact: <sip:pbx@127.0.0.1:5070>\r\n"
        b"Content-Type: application/sdp\r\n"
        b"Content-Length: " + str(len(sdp)).encode() + b"\r\n\r\n" + sdp
    )
    assert isinstance(message, Request)
    return message


def challenge(realm: str = REALM, nonce: str = "n1", **params: str) -> str:
    extra = "".join(f", {k}={v}" for k, v in params.items())
    return f'Digest realm="{realm}", nonce="{nonce}", qop="auth"{extra}'


class ClientCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stack = SipStack(self.clock)
        self.transports = RecordingTransports()
        self.stack.attach_transport(self.transports)
        self.provisional: list[int] = []

    def tearDown(self) -> None:
        self.assertEqual(self.stack.counters["errors"], 0)

    def client(self, request: Request, **options: Any) -> ClientRequest:
        options.setdefault("cnonce", lambda: CNONCE)
        options.setdefault("on_provisional", lambda r: self.provisional.append(r.status))
        return ClientRequest(self.stack, request, SERVER, user, **options)

    def sent(self) -> list[Request]:
        out = []
        for data, *_ in self.transports.sent:
            message = parse_message(data)
            assert isinstance(message, Request)
            out.append(message)
        return out

    def last(self) -> Request:
        return self.sent()[-1]

    def reply(
        self, status: int, *headers: tuple[str, str], to_tag: str = "srv1", request: Request | None = None
    ):
        request = request or [r for r in self.sent() if r.method not in ("ACK", "CANCEL")][-1]
        response = request.response(status, to_tag=to_tag)
        for name, value in headers:
            response.headers.add(name, value)
        parsed = parse_message(response.to_bytes())
        self.stack.message_received(parsed, ServerFlow())

    def finish(self, seconds: float = 64) -> None:
        self.clock.pump([0.5] * int(seconds * 2))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def authorization(self, request: Request, header: str = "Authorization") -> list[DigestCredentials]:
        return [DigestCredentials.parse(v) for v in request.headers.get_all(header)]


def expected_response(c: DigestCredentials, method: str, password: str = PASSWORD, body: bytes = b"") -> str:
    key = ha1("1001", c.realm, password, c.algorithm, client=True)
    return digest_response(key, method, c.uri, c.nonce, c.nc, c.cnonce, c.qop, c.algorithm, body, client=True)


class ClientFlowTests(ClientCase):
    def test_timeout_gives_a_synthesized_408(self) -> None:
        client = self.client(register())
        d = client.start()
        self.assertNoResult(d)
        self.clock.pump([0.5] * 64)
        response = self.successResultOf(d)
        self.assertEqual((response.status, client.local_failure), (408, "timeout"))
        self.assertEqual(response.call_id, "reg-call-1@client")
        self.finish()

    def test_timeout_of_the_retry(self) -> None:
        d = self.client(register()).start()
        self.reply(401, ("WWW-Authenticate", challenge()))
        self.clock.pump([0.5] * 70)
        self.assertEqual(self.successResultOf(d).status, 408)
        self.finish()

    def test_transport_error_gives_a_synthesized_503(self) -> None:
        self.transports.failing = True
        client = self.client(register())
        response = self.successResultOf(client.start())
        self.assertEqual(response.status, 503)
        self.assertIn("network unreachable", client.local_failure or "")
        self.finish()

    def test_bounded_attempts_against_a_server_inventing_realms(self) -> None:
        client = self.client(register(), max_attempts=3)
        d = client.start()
        lookup_any = {f"r{i}" for i in range(10)}
        client._lookup = lambda realm: Credentials("1001", PASSWORD) if realm in lookup_any else None
        for i in range(3):
            self.reply(401, ("WWW-Authenticate", challenge(realm=f"r{i}")))
        self.assertEqual(self.successResultOf(d).status, 401)
        self.assertEqual(client.attempts, 3)
        self.finish()

    def test_send_authenticated(self) -> None:
        d = send_authenticated(self.stack, register(), SERVER, user, cnonce=lambda: CNONCE)
        self.reply(401, ("WWW-Authenticate", challenge()))
        self.reply(200)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.finish()

    def test_other_out_of_dialog_methods(self) -> None:
        for method in ("OPTIONS", "SUBSCRIBE", "MESSAGE"):
            request = register()
            request.method = method
            request.headers.set("CSeq", f"1 {method}")
            request.body = b"hi" if method == "MESSAGE" else b""
            d = self.client(request).start()
            self.reply(401, ("WWW-Authenticate", challenge(nonce=method)))
            retry = self.last()
            [c] = self.authorization(retry)
            self.assertEqual((retry.method, retry.cseq.method, retry.body), (method, method, request.body))
            self.assertEqual(c.response, expected_response(c, method))
            self.reply(202 if method == "SUBSCRIBE" else 200)
            self.assertLess(self.successResultOf(d).status, 300)
        self.finish()

    def test_the_caller_request_is_not_changed(self) -> None:
        request = register()
        before = request.to_bytes()
        d = self.client(request).start()
        self.reply(401, ("WWW-Authenticate", challenge()))
        self.reply(200)
        self.successResultOf(d)
        self.assertEqual(request.to_bytes(), before)
        self.finish()

    def test_attempt_provides_the_interface(self) -> None:
        verifyObject(IClientTransactionUser, _Attempt(self.client(register()), 1))
        verifyObject(IClientTransactionUser, IGNORE_OUTCOME)


class InviteTests(ClientCase):
    def test_407_then_200_and_the_407_is_acked(self) -> None:
        client = self.client(invite())
        d = client.start()
        first = self.last()
        self.reply(100)
        self.reply(407, ("Proxy-Authenticate", challenge(realm="proxy.example.net")), to_tag="t407")
        ack, retry = self.sent()[1:]
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(ack.top_via.branch, first.top_via.branch)
        self.assertEqual((ack.cseq.number, ack.cseq.method), (10, "ACK"))
        self.assertEqual(ack.to.tag, "t407")
        self.assertEqual(retry.method, "INVITE")
        self.assertEqual((retry.cseq.number, retry.call_id, retry.from_.tag), (11, "call-1@pbx", "inv1"))
        self.assertIsNone(retry.to.tag)
        self.assertEqual(retry.body, b"v=0\r\n")
        [p] = self.authorization(retry, "Proxy-Authorization")
        self.assertEqual(p.uri, "sip:15551234@carrier.example.net")
        self.reply(180)
        self.reply(200, to_tag="callee")
        self.assertEqual(self.successResultOf(d).status, 200)
        self.assertEqual(self.provisional, [100, 180])
        self.assertIs(client.transaction.request, client.request)
        self.assertEqual(client.request.cseq.number, 11)  # what the dialog and the ACK of the 2xx use
        # A retransmitted 407 is ACKed again by the finished first transaction, and not retried.
        self.reply(
            407, ("Proxy-Authenticate", challenge(realm="proxy.example.net")), to_tag="t407", request=first
        )
        self.assertEqual(len([r for r in self.sent() if r.method == "INVITE"]), 2)
        self.finish()

    def test_forked_2xx_after_the_outcome_go_to_on_extra_final(self) -> None:
        extra: list[str | None] = []
        d = self.client(invite(), on_extra_final=lambda r: extra.append(r.to.tag)).start()
        self.reply(200, to_tag="a")
        self.reply(200, to_tag="b")
        self.assertEqual(self.successResultOf(d).to.tag, "a")
        self.assertEqual(extra, ["b"])
        self.finish()

    def test_cancel_after_a_provisional(self) -> None:
        client = self.client(invite())
        d = client.start()
        client.cancel()  # nothing heard yet: the CANCEL waits for a 1xx (RFC 3261 9.1)
        self.assertEqual([r.method for r in self.sent()], ["INVITE"])
        self.reply(180)
        cancel = self.last()
        self.assertEqual((cancel.method, cancel.top_via.branch), ("CANCEL", self.sent()[0].top_via.branch))
        self.reply(200, request=cancel)
        self.reply(487)
        self.assertEqual(self.successResultOf(d).status, 487)
        self.finish()

    def test_a_challenge_after_cancel_is_not_retried(self) -> None:
        client = self.client(invite())
        d = client.start()
        client.cancel()
        self.reply(407, ("Proxy-Authenticate", challenge(realm="proxy.example.net")))
        self.assertEqual(self.successResultOf(d).status, 407)
        self.assertEqual([r.method for r in self.sent()], ["INVITE", "ACK"])
        self.finish()

    def test_cancelling_the_deferred_cancels_the_invite(self) -> None:
        client = self.client(invite())
        d = client.start()
        self.reply(180)
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(self.last().method, "CANCEL")
        self.reply(487, request=self.sent()[0])
        self.finish()

    def test_invite_timeout(self) -> None:
        client = self.client(invite())
        d = client.start()
        self.clock.pump([0.5] * 66)
        self.assertEqual((self.successResultOf(d).status, client.local_failure), (408, "timeout"))
        self.finish()


class InDialogTests(ClientCase):
    def dialog(self) -> Dialog:
        request = invite()
        request.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx")
        ok = request.response(200, to_tag="callee")
        ok.headers.add("Contact", "<sip:carrier@192.0.2.20:5060>")
        return Dialog.create_uac(request, ok)

    def test_bye_challenged_with_401_then_200(self) -> None:
        dialog = self.dialog()
        bye = dialog.create_request("BYE")
        self.assertEqual(dialog.local_cseq, 11)
        d = self.client(bye, next_cseq=dialog_cseq(dialog)).start()
        self.reply(401, ("WWW-Authenticate", challenge()), to_tag="callee")
        retry = self.last()
        self.assertEqual(
            (retry.method, retry.cseq.number, retry.to.tag, retry.call_id),
            ("BYE", 12, "callee", "call-1@pbx"),
        )
        self.assertEqual(retry.uri, parse_uri("sip:carrier@192.0.2.20:5060"))
        self.assertEqual(dialog.local_cseq, 12)  # the dialog's next request counts on from the retry
        [c] = self.authorization(retry)
        self.assertEqual(c.response, expected_response(c, "BYE"))
        self.reply(200, to_tag="callee")
        self.assertEqual(self.successResultOf(d).status, 200)
        self.assertEqual(dialog.create_request("INFO").cseq.number, 13)
        self.finish()

    def test_reinvite_challenged_with_407(self) -> None:
        dialog = self.dialog()
        reinvite = dialog.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
        d = self.client(reinvite, next_cseq=dialog_cseq(dialog)).start()
        self.reply(407, ("Proxy-Authenticate", challenge(realm="proxy.example.net")), to_tag="callee")
        ack, retry = self.sent()[1:]
        self.assertEqual((ack.method, ack.cseq.number), ("ACK", 11))
        self.assertEqual((retry.method, retry.cseq.number, retry.to.tag), ("INVITE", 12, "callee"))
        self.reply(200, to_tag="callee")
        self.assertEqual(self.successResultOf(d).status, 200)
        self.finish()
