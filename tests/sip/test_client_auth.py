"""Client requests answering digest challenges: a real SipStack on a Clock, a transport recording bytes."""

from __future__ import annotations

import hashlib
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pbx.sip.auth import AuthOutcome, DigestAuthenticator, NonceCounter, NonceSource
from pbx.sip.client import _IGNORE, ClientRequest, _Attempt, dialog_cseq, send_authenticated
from pbx.sip.client_auth import (
    Credentials,
    DigestCache,
    build_authorization,
    select_challenges,
)
from pbx.sip.dialog import Dialog
from pbx.sip.digest import DigestChallenge, DigestCredentials, digest_response, ha1
from pbx.sip.interfaces import IClientTransactionUser, IFlow
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.stack import SipStack
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


class RegisterTests(ClientCase):
    def test_401_then_200(self) -> None:
        """REGISTER, 401, REGISTER with Authorization (same Call-ID, From tag, To; CSeq 2; new branch)."""
        client = self.client(register())
        d = client.start()
        first = self.last()
        self.assertNotIn("Authorization", first.headers)
        self.reply(401, ("WWW-Authenticate", challenge(opaque='"op aque"')))
        second = self.last()
        self.assertEqual(len(self.sent()), 2)
        self.assertEqual(second.call_id, first.call_id)
        self.assertEqual(second.from_.tag, "reg1")
        self.assertIsNone(second.to.tag)  # never the 401's To tag outside a dialog
        self.assertEqual((second.cseq.number, second.cseq.method), (2, "REGISTER"))
        self.assertNotEqual(second.top_via.branch, first.top_via.branch)
        self.assertEqual(len(second.vias), 1)
        [c] = self.authorization(second)
        self.assertEqual((c.username, c.realm, c.nonce, c.uri), ("1001", REALM, "n1", "sip:pbx.example.com"))
        self.assertEqual(
            (c.qop, c.nc, c.cnonce, c.opaque, c.algorithm), ("auth", "00000001", CNONCE, "op aque", None)
        )
        self.assertEqual(c.response, expected_response(c, "REGISTER"))
        self.assertNoResult(d)
        self.reply(200)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.assertEqual((client.attempts, client.local_failure), (2, None))
        self.assertIs(client.request.cseq.number, 2)
        self.finish()

    def test_our_server_accepts_what_the_client_answers(self) -> None:
        """Round trip with our own authenticator: SHA-256 and MD5 offered, SHA-256 chosen and accepted."""
        nonces = NonceSource(self.clock, b"k" * 32)
        server = DigestAuthenticator(
            nonces,
            NonceCounter(),
            lambda username, realm, algorithm: ha1(username, realm, PASSWORD, algorithm),
        )
        d = self.client(register()).start()
        challenge_response = server.challenge(self.last(), REALM, proxy=False)
        self.reply(
            401, *[("WWW-Authenticate", v) for v in challenge_response.headers.get_all("WWW-Authenticate")]
        )
        [c] = self.authorization(self.last())
        self.assertEqual(c.algorithm, "SHA-256")
        verdict = server.authenticate_now(self.last(), REALM, proxy=False)
        self.assertEqual(cast(Any, verdict).outcome, AuthOutcome.OK)
        self.reply(200)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.finish()

    def test_stale_is_retried_once_with_the_new_nonce(self) -> None:
        d = self.client(register()).start()
        self.reply(401, ("WWW-Authenticate", challenge(nonce="n1")))
        self.reply(401, ("WWW-Authenticate", challenge(nonce="n2", stale="true")))
        [c] = self.authorization(self.last())
        self.assertEqual((c.nonce, c.nc, self.last().cseq.number), ("n2", "00000001", 3))
        self.assertEqual(c.response, expected_response(c, "REGISTER"))
        self.reply(200)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.finish()

    def test_a_second_stale_challenge_ends_it(self) -> None:
        d = self.client(register()).start()
        self.reply(401, ("WWW-Authenticate", challenge(nonce="n1")))
        self.reply(401, ("WWW-Authenticate", challenge(nonce="n2", stale="true")))
        self.reply(401, ("WWW-Authenticate", challenge(nonce="n3", stale="true")))
        self.assertEqual(self.successResultOf(d).status, 401)
        self.assertEqual(len(self.sent()), 3)
        self.finish()

    def test_wrong_password_the_second_challenge_is_final(self) -> None:
        cache = DigestCache()
        client = self.client(register(), cache=cache)
        d = client.start()
        self.reply(401, ("WWW-Authenticate", challenge(nonce="n1")))
        self.reply(401, ("WWW-Authenticate", challenge(nonce="n2")))
        response = self.successResultOf(d)
        self.assertEqual(response.status, 401)
        self.assertEqual(client.attempts, 2)
        self.assertEqual(len(cache), 0)  # refused credentials are not offered again
        self.finish()

    def test_no_credentials_for_the_realm(self) -> None:
        d = self.client(register()).start()
        self.reply(401, ("WWW-Authenticate", challenge(realm="elsewhere")))
        self.assertEqual(self.successResultOf(d).status, 401)
        self.assertEqual(len(self.sent()), 1)
        self.finish()

    def test_unsupported_challenges_are_not_answered(self) -> None:
        d = self.client(register()).start()
        self.reply(
            401,
            ("WWW-Authenticate", 'Basic realm="x"'),
            ("WWW-Authenticate", challenge(algorithm="AKAv1-MD5")),
            ("WWW-Authenticate", f'Digest realm="{REALM}", nonce="x", qop="auth-conf"'),
            ("WWW-Authenticate", "Digest garbage"),
        )
        self.assertEqual(self.successResultOf(d).status, 401)
        self.assertEqual(len(self.sent()), 1)
        self.finish()

    def test_a_failing_lookup_counts_as_no_credentials(self) -> None:
        def broken(realm: str) -> Credentials | None:
            raise RuntimeError("store down")

        d = ClientRequest(self.stack, register(), SERVER, broken).start()
        self.reply(401, ("WWW-Authenticate", challenge()))
        self.assertEqual(self.successResultOf(d).status, 401)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.finish()

    def test_sha256_preferred_over_md5_whatever_the_order(self) -> None:
        d = self.client(register()).start()
        self.reply(
            401,
            ("WWW-Authenticate", challenge(nonce="m", algorithm="MD5")),
            ("WWW-Authenticate", challenge(nonce="s", algorithm="SHA-256")),
        )
        [c] = self.authorization(self.last())
        self.assertEqual((c.algorithm, c.nonce), ("SHA-256", "s"))
        self.assertEqual(len(c.response), 64)
        self.assertEqual(c.response, expected_response(c, "REGISTER"))
        self.reply(200)
        self.successResultOf(d)
        self.finish()

    def test_sha512_256_and_its_sess_variant(self) -> None:
        for algorithm in ("SHA-512-256", "SHA-512-256-sess"):
            self.transports.sent.clear()
            d = self.client(register()).start()
            self.reply(
                401,
                ("WWW-Authenticate", challenge(nonce="m", algorithm="MD5")),
                ("WWW-Authenticate", challenge(nonce="n", algorithm="SHA-256")),
                ("WWW-Authenticate", challenge(nonce="x", algorithm=algorithm)),
            )
            [c] = self.authorization(self.last())
            self.assertEqual(c.algorithm, algorithm)

            def h(text: str) -> str:
                return hashlib.new("sha512_256", text.encode()).hexdigest()

            a1 = h(f"1001:{REALM}:{PASSWORD}")
            if algorithm.endswith("-sess"):
                a1 = h(f"{a1}:x:{CNONCE}")
            want = h(f"{a1}:x:00000001:{CNONCE}:auth:{h('REGISTER:sip:pbx.example.com')}")
            self.assertEqual(c.response, want)
            self.reply(200)
            self.successResultOf(d)
        self.finish()

    def test_no_qop_legacy_challenge(self) -> None:
        d = self.client(register()).start()
        self.reply(401, ("WWW-Authenticate", f'Digest realm="{REALM}", nonce="old", algorithm=MD5'))
        [c] = self.authorization(self.last())
        self.assertEqual((c.qop, c.nc, c.cnonce), (None, None, None))
        self.assertEqual(c.response, expected_response(c, "REGISTER"))
        self.reply(200)
        self.successResultOf(d)
        self.finish()

    def test_auth_preferred_to_auth_int_and_auth_int_hashes_the_body(self) -> None:
        d = self.client(register()).start()
        self.reply(401, ("WWW-Authenticate", f'Digest realm="{REALM}", nonce="n", qop="auth-int,auth"'))
        [c] = self.authorization(self.last())
        self.assertEqual(c.qop, "auth")
        self.reply(200)
        self.successResultOf(d)
        request = invite(b"v=0 body")
        d = self.client(request).start()
        self.reply(401, ("WWW-Authenticate", f'Digest realm="{REALM}", nonce="n", qop="auth-int"'))
        [c] = self.authorization(self.last())
        self.assertEqual(c.qop, "auth-int")
        self.assertEqual(c.response, expected_response(c, "INVITE", body=b"v=0 body"))
        self.reply(200)
        self.successResultOf(d)
        self.finish()

    def test_cache_reuses_the_challenge_with_the_next_nonce_count(self) -> None:
        """A REGISTER refresh answers the last challenge pre-emptively: same nonce, nc 2, no round trip."""
        cache = DigestCache()
        d = self.client(register(), cache=cache).start()
        self.reply(401, ("WWW-Authenticate", challenge(nonce="n1")))
        self.reply(200)
        self.successResultOf(d)
        refresh = register()
        refresh.headers.set("CSeq", "3 REGISTER")
        d = self.client(refresh, cache=cache).start()
        [c] = self.authorization(self.last())
        self.assertEqual((c.nonce, c.nc, self.last().cseq.number), ("n1", "00000002", 3))
        self.assertEqual(c.response, expected_response(c, "REGISTER"))
        # The server forgot the nonce and challenges without stale: a fresh challenge, not a refusal.
        self.reply(401, ("WWW-Authenticate", challenge(nonce="n9")))
        [c] = self.authorization(self.last())
        self.assertEqual((c.nonce, c.nc), ("n9", "00000001"))
        self.reply(200)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.finish()

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


class ChallengeTests(ClientCase):
    def test_proxy_and_server_challenges_in_one_response(self) -> None:
        d = self.client(invite()).start()
        self.reply(
            407,
            ("Proxy-Authenticate", challenge(realm="proxy.example.net", nonce="p1")),
            ("WWW-Authenticate", challenge(realm=REALM, nonce="s1")),
        )
        retry = self.last()
        names = [name for name, _ in retry.headers if name.endswith("Authorization")]
        self.assertEqual(names, ["Authorization", "Proxy-Authorization"])  # SIPp 3.6 needs this order
        [p] = self.authorization(retry, "Proxy-Authorization")
        [s] = self.authorization(retry, "Authorization")
        self.assertEqual((p.realm, p.nonce, s.realm, s.nonce), ("proxy.example.net", "p1", REALM, "s1"))
        self.assertEqual(p.response, expected_response(p, "INVITE", body=b"v=0\r\n"))
        self.reply(200)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.finish()

    def test_proxy_then_server_sequentially(self) -> None:
        """407 from the proxy, then 401 from the server: the third INVITE carries both, proxy nc counting."""
        d = self.client(invite()).start()
        self.reply(407, ("Proxy-Authenticate", challenge(realm="proxy.example.net", nonce="p1")))
        self.reply(401, ("WWW-Authenticate", challenge(realm=REALM, nonce="s1")))
        third = self.last()
        self.assertEqual(third.cseq.number, 12)
        [p] = self.authorization(third, "Proxy-Authorization")
        [s] = self.authorization(third, "Authorization")
        self.assertEqual((p.nonce, p.nc, s.nonce, s.nc), ("p1", "00000002", "s1", "00000001"))
        self.reply(200)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.finish()

    def test_values_are_quoted_and_escaped(self) -> None:
        realm = 'we "quote", \\ and comma'
        lookup = {realm: Credentials('al"ice', PASSWORD)}
        d = ClientRequest(self.stack, register(), SERVER, lookup.get).start()
        escaped = realm.replace("\\", "\\\\").replace('"', '\\"')
        self.reply(401, ("WWW-Authenticate", f'Digest realm="{escaped}", nonce="a\\"b", qop="auth"'))
        [c] = self.authorization(self.last())
        self.assertEqual((c.realm, c.username, c.nonce), (realm, 'al"ice', 'a"b'))
        self.reply(200)
        self.successResultOf(d)
        self.finish()

    def test_header_injection_in_a_username_is_refused(self) -> None:
        lookup = {REALM: Credentials("evil\r\nX-Injected: 1", PASSWORD)}
        d = ClientRequest(self.stack, register(), SERVER, lookup.get).start()
        self.reply(401, ("WWW-Authenticate", challenge()))
        # The retry goes out without credentials, is challenged again and that answer is final.
        self.assertNotIn(b"X-Injected", self.transports.sent[-1][0])
        self.reply(401, ("WWW-Authenticate", challenge(nonce="n2")))
        self.assertEqual(self.successResultOf(d).status, 401)
        self.finish()

    def test_precomputed_ha1_and_userhash(self) -> None:
        key = ha1("1001", REALM, PASSWORD, "SHA-256")
        lookup = {REALM: Credentials("1001", ha1={"SHA-256": key})}
        d = ClientRequest(self.stack, register(), SERVER, lookup.get, cnonce=lambda: CNONCE).start()
        self.reply(401, ("WWW-Authenticate", challenge(algorithm="SHA-256", userhash="true")))
        [c] = self.authorization(self.last())
        self.assertEqual(c.username, hashlib.sha256(f"1001:{REALM}".encode()).hexdigest())
        self.assertEqual(c.params, (("userhash", "true"),))
        self.assertEqual(c.response, expected_response(c, "REGISTER"))
        self.reply(200)
        self.successResultOf(d)
        self.finish()

    def test_ha1_only_credentials_cannot_answer_another_algorithm(self) -> None:
        lookup = {REALM: Credentials("1001", ha1={"MD5": "00" * 16})}
        d = ClientRequest(self.stack, register(), SERVER, lookup.get).start()
        self.reply(401, ("WWW-Authenticate", challenge(algorithm="SHA-256")))
        self.reply(401, ("WWW-Authenticate", challenge(algorithm="SHA-256", nonce="n2")))
        self.assertEqual(self.successResultOf(d).status, 401)
        self.finish()

    def test_select_challenges_picks_per_realm(self) -> None:
        response = Response(
            401,
            headers=[
                ("WWW-Authenticate", challenge(realm="a", algorithm="MD5")),
                ("WWW-Authenticate", challenge(realm="a", algorithm="SHA-256-sess")),
                ("WWW-Authenticate", challenge(realm="a", algorithm="SHA-256")),
                ("WWW-Authenticate", challenge(realm="b")),
                ("Proxy-Authenticate", challenge(realm="a", algorithm="MD5-sess")),
            ],
        )
        chosen = select_challenges(response)
        self.assertEqual(
            {key: c.algorithm for key, c in chosen.items()},
            {(False, "a"): "SHA-256", (False, "b"): None, (True, "a"): "MD5-sess"},
        )

    def test_credentials_need_a_secret(self) -> None:
        self.assertRaises(ValueError, Credentials, "1001")

    def test_attempt_provides_the_interface(self) -> None:
        verifyObject(IClientTransactionUser, _Attempt(self.client(register()), 1))
        verifyObject(IClientTransactionUser, _IGNORE)

    def test_stored_ha1_names_are_canonical(self) -> None:
        credentials = Credentials("1001", ha1={"sha-256": "AB" * 32, "md5": "CD" * 16})
        self.assertEqual(credentials.ha1_for(REALM, "SHA-256-sess"), "ab" * 32)
        self.assertEqual(credentials.ha1_for(REALM, None), "cd" * 16)
        self.assertIsNone(credentials.ha1_for(REALM, "SHA-512-256"))


def test_client_side_hashing_in_digest() -> None:
    """SHA-512-256 is hashed for clients only: the server side (registrar, B2BUA) still refuses it."""
    import pytest

    from pbx.sip.digest import UnsupportedAlgorithm, is_supported_algorithm, userhash

    with pytest.raises(UnsupportedAlgorithm):
        ha1("a", "r", "p", "SHA-512-256")
    assert not is_supported_algorithm("SHA-512-256")
    assert is_supported_algorithm("sha-512-256-SESS", client=True)
    assert not is_supported_algorithm("AKAv1-MD5", client=True)
    want = hashlib.new("sha512_256", b"a:r:p").hexdigest()
    assert ha1("a", "r", "p", "SHA-512-256", client=True) == want
    assert ha1("a", "r", "p", "SHA-512-256-sess", client=True) == want
    assert userhash("a", "r", "SHA-512-256") == hashlib.new("sha512_256", b"a:r").hexdigest()
    assert userhash("a", "r", None) == hashlib.md5(b"a:r").hexdigest()
    with pytest.raises(UnsupportedAlgorithm):
        digest_response(want, "GET", "/", "n", "00000001", "c", "auth", "SHA-512-256")


class Rfc7616VectorTests(SynchronousTestCase):
    """RFC 7616 3.9.1: Mufasa / "Circle of Life", qop auth, nc 00000001 (MD5 and SHA-256 responses)."""

    NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    RESPONSES = {
        "MD5": "8ca523f5e9506fed4657c9700eebdbec",
        "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
    }

    def test_known_vectors_and_nonce_counting(self) -> None:
        class Get:  # the RFC's example is HTTP: method GET, request-target /dir/index.html
            method, uri, body = "GET", "/dir/index.html", b""

        for algorithm, want in self.RESPONSES.items():
            text = (
                f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
                f'nonce="{self.NONCE}", opaque="{self.OPAQUE}"'
            )
            offered = DigestChallenge.parse(text)
            cache = DigestCache()
            key = (False, offered.realm)
            credentials = Credentials("Mufasa", "Circle of Life")
            request = cast(Request, Get())
            answer = build_authorization(
                offered, credentials, request, nc=cache.next_nc(key, offered), cnonce=self.CNONCE
            )
            self.assertEqual(
                (answer.response, answer.nc, answer.qop, answer.opaque),
                (want, "00000001", "auth", self.OPAQUE),
            )
            again = build_authorization(
                offered, credentials, request, nc=cache.next_nc(key, offered), cnonce=self.CNONCE
            )
            self.assertEqual(again.nc, "00000002")
            self.assertNotEqual(again.response, want)

    def test_cache_is_bounded(self) -> None:
        cache = DigestCache(max_realms=2)
        for realm in "abc":
            cache.next_nc((False, realm), DigestChallenge(realm=realm, nonce="n"))
        self.assertEqual([key for key, _ in cache.challenges()], [(False, "b"), (False, "c")])


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
