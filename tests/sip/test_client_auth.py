"""Digest on the client side: answering 401/407 (algorithms, qop, stale, refused credentials, several realms,
quoting, userhash, pre-emptive reuse with nonce-counts), RFC 7616 vectors, and the client-only hashes of
`pbx.sip.digest`. The flows (timeouts, INVITE, dialogs) are in test_client.py, whose fakes these use."""

from __future__ import annotations

import hashlib
from typing import Any, cast

import pytest
from twisted.trial.unittest import SynchronousTestCase

from pbx.sip.auth import AuthOutcome, DigestAuthenticator, NonceCounter, NonceSource
from pbx.sip.client import ClientRequest
from pbx.sip.client_auth import Credentials, DigestCache, build_authorization, select_challenges
from pbx.sip.digest import (
    DigestChallenge,
    UnsupportedAlgorithm,
    digest_response,
    ha1,
    is_supported_algorithm,
    userhash,
)
from pbx.sip.message import Request, Response
from tests.sip.test_client import (
    CNONCE,
    PASSWORD,
    REALM,
    SERVER,
    ClientCase,
    challenge,
    expected_response,
    invite,
    register,
)


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

    def test_stored_ha1_names_are_canonical(self) -> None:
        credentials = Credentials("1001", ha1={"sha-256": "AB" * 32, "md5": "CD" * 16})
        self.assertEqual(credentials.ha1_for(REALM, "SHA-256-sess"), "ab" * 32)
        self.assertEqual(credentials.ha1_for(REALM, None), "cd" * 16)
        self.assertIsNone(credentials.ha1_for(REALM, "SHA-512-256"))


def test_client_side_hashing_in_digest() -> None:
    """SHA-512-256 is hashed for clients only: the server side (registrar, B2BUA) still refuses it."""
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
