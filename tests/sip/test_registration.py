"""The registration client (`pbx.sip.registration`): a real SipStack on a Clock with a recording transport.

Digest (401 and 407, pre-emptive on refresh), refresh timing, the granted expiry, 423, failures with back-off
and Retry-After, timeouts, failover between targets, the outbound proxy, and the unregister on stop."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.sip.client_auth import Credentials
from pbx.sip.digest import DigestCredentials
from pbx.sip.message import Request
from pbx.sip.parser import parse_message
from pbx.sip.registration import (
    FAILED,
    REGISTERED,
    REGISTERING,
    STOPPED,
    UNREGISTERED,
    RegistrationClient,
    RegistrationStatus,
    refresh_delay,
)
from pbx.sip.resolver import ResolutionError, Target
from pbx.sip.stack import SipStack
from tests.sip.test_client import RecordingTransports, ServerFlow, expected_response

REALM = "carrier.example.net"
A = Target("udp", "192.0.2.10", 5060)
B = Target("udp", "192.0.2.11", 5060)
CONTACT = "<sip:1001@127.0.0.1:5070>"


def credentials(realm: str) -> Credentials | None:
    return Credentials("1001", "secret") if realm == REALM else None


def challenge(nonce: str = "n1", algorithm: str = "MD5") -> str:
    return f'Digest realm="{REALM}", nonce="{nonce}", qop="auth", algorithm={algorithm}'


class FixedRandom:
    """An rng whose `random()` is fixed: 0.0 means no jitter."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


class FakeResolver:
    """A SipResolver stand-in: answers from a list (or fails), recording the URIs asked."""

    def __init__(self, targets: list[Target] | Exception) -> None:
        self.targets = targets
        self.asked: list[str] = []

    def resolve(self, uri: Any) -> Deferred[list[Target]]:
        self.asked.append(str(uri))
        if isinstance(self.targets, Exception):
            return fail(self.targets)
        return succeed(list(self.targets))


class RegistrationCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stack = SipStack(self.clock)
        self.transports = RecordingTransports()
        self.stack.attach_transport(self.transports)
        self.states: list[RegistrationStatus] = []

    def tearDown(self) -> None:
        self.assertEqual(self.stack.counters["errors"], 0)

    def client(self, **options: Any) -> RegistrationClient:
        options.setdefault("aor", f"sip:1001@{REALM}")
        options.setdefault("registrar", f"sip:{REALM}")
        options.setdefault("resolver", [A])
        options.setdefault("rng", FixedRandom())
        return RegistrationClient(
            self.stack, self.clock, credentials=credentials, on_state=self.states.append, **options
        )

    def sent(self) -> list[tuple[Request, tuple[str, str, int]]]:
        out = []
        for data, transport, host, port in self.transports.sent:
            message = parse_message(data)
            assert isinstance(message, Request)
            out.append((message, (transport, host, port)))
        return out

    def requests(self) -> list[Request]:
        return [request for request, _ in self.sent()]

    def last(self) -> Request:
        return self.requests()[-1]

    def reply(self, status: int, *headers: tuple[str, str], contact_expires: int | None = None) -> None:
        """Answer the last REGISTER; a 2xx lists its Contact (with `contact_expires` when given)."""
        request = self.last()
        response = request.response(status, to_tag="reg")
        if 200 <= status < 300:
            for value in request.headers.get_all("Contact"):
                if contact_expires is not None:
                    value = value.split(";expires=")[0] + f";expires={contact_expires}"
                response.headers.add("Contact", value)
        for name, value in headers:
            response.headers.add(name, value)
        self.stack.message_received(parse_message(response.to_bytes()), ServerFlow())

    def register(self, client: RegistrationClient, granted: int = 3600) -> None:
        """Start `client` through a 401 to a 200 granting `granted` seconds."""
        client.start()
        self.reply(401, ("WWW-Authenticate", challenge()))
        self.reply(200, contact_expires=granted)
        self.assertEqual(client.status.state, REGISTERED)

    def stop(self, client: RegistrationClient) -> None:
        """Stop, answer the unregister, and check that no timer is left."""
        done = client.stop()
        self.assertNoResult(done)
        self.assertEqual(self.last().headers.get("Expires"), "0")
        self.reply(200)
        self.successResultOf(done)
        self.finish()

    def finish_after_stop(self, client: RegistrationClient) -> None:
        """Stop, answer an unregister if one was sent, and check that no timer is left."""
        done = client.stop()
        if self.requests() and self.last().headers.get("Expires") == "0":
            self.reply(200)
        self.successResultOf(done)
        self.finish()

    def finish(self) -> None:
        self.clock.pump([0.5] * 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def authorization(self, request: Request) -> DigestCredentials:
        [value] = request.headers.get_all("Authorization")
        return DigestCredentials.parse(value)


class RegisterTests(RegistrationCase):
    def test_401_then_200(self) -> None:
        """The first REGISTER has no credentials; the retry answers the challenge with the next CSeq."""
        client = self.client()
        client.start()
        self.assertEqual(client.status.state, REGISTERING)
        first = self.last()
        self.assertEqual(str(first.uri), f"sip:{REALM}")
        self.assertEqual(first.headers.get("To"), f"<sip:1001@{REALM}>")
        self.assertEqual(first.contacts[0].param("expires"), "3600")
        self.assertEqual(first.headers.get("Expires"), "3600")
        self.assertEqual(first.headers.get("Contact"), f"{CONTACT};expires=3600")
        self.assertNotIn("Authorization", first.headers)
        self.reply(401, ("WWW-Authenticate", challenge()))
        second = self.last()
        self.assertEqual((second.call_id, second.from_.tag), (first.call_id, first.from_.tag))
        self.assertEqual([first.cseq.number, second.cseq.number], [1, 2])
        c = self.authorization(second)
        self.assertEqual((c.realm, c.nc, c.uri), (REALM, "00000001", f"sip:{REALM}"))
        self.assertEqual(c.response, expected_response(c, "REGISTER"))
        self.reply(200, contact_expires=3600)
        status = client.status
        self.assertEqual((status.state, status.code, status.expires), (REGISTERED, 200, 3600))
        self.assertEqual((status.expires_at, status.refresh_at), (3600, 3240))
        self.assertEqual(status.target, ("udp", "192.0.2.10", 5060))
        self.assertEqual([s.state for s in self.states], [REGISTERING, REGISTERED])
        self.stop(client)

    def test_407_and_sha256(self) -> None:
        client = self.client()
        client.start()
        value = f'Digest realm="{REALM}", nonce="p1", qop="auth", algorithm=SHA-256'
        self.reply(407, ("Proxy-Authenticate", value))
        [proxy] = self.last().headers.get_all("Proxy-Authorization")
        c = DigestCredentials.parse(proxy)
        self.assertEqual((c.algorithm, c.nc), ("SHA-256", "00000001"))
        self.assertEqual(c.response, expected_response(c, "REGISTER"))
        self.reply(200)
        self.assertEqual(client.status.state, REGISTERED)
        self.stop(client)

    def test_contact_from_the_stack(self) -> None:
        client = self.client(contact_user="trunk1")
        client.start()
        self.assertEqual(self.last().headers.get("Contact"), "<sip:trunk1@127.0.0.1:5070>;expires=3600")
        self.reply(200)
        self.stop(client)

    def test_refused_credentials_fail(self) -> None:
        client = self.client()
        client.start()
        self.reply(401, ("WWW-Authenticate", challenge()))
        self.reply(401, ("WWW-Authenticate", challenge("n2")))
        self.assertEqual((client.status.state, client.status.code), (FAILED, 401))
        self.finish_after_stop(client)


class RefreshTests(RegistrationCase):
    def test_refresh_timing_and_preemptive_digest(self) -> None:
        """Granted 120 s: refreshed after 108 s (90 %), answering the nonce again with nc 2, CSeq 3."""
        client = self.client(expires=120)
        self.register(client, granted=120)
        self.assertEqual(client.status.refresh_at, 108)
        self.clock.advance(107.9)
        self.assertEqual(len(self.requests()), 2)
        self.clock.advance(0.1)
        refresh = self.last()
        self.assertEqual(refresh.cseq.number, 3)
        c = self.authorization(refresh)
        self.assertEqual((c.nonce, c.nc), ("n1", "00000002"))
        self.assertEqual(c.response, expected_response(c, "REGISTER"))
        self.reply(200, contact_expires=120)
        self.assertEqual(len(self.requests()), 3)
        self.assertEqual((client.status.state, client.status.expires_at), (REGISTERED, 228))
        self.assertEqual([s.state for s in self.states], [REGISTERING, REGISTERED, REGISTERING, REGISTERED])
        self.stop(client)
        self.assertEqual(self.authorization(self.requests()[-1]).nc, "00000003")

    def test_refresh_rule(self) -> None:
        self.assertEqual(refresh_delay(3600), 3240)
        self.assertEqual(refresh_delay(40), 35)
        self.assertEqual(refresh_delay(4), 2)
        self.assertEqual(refresh_delay(2), 1)

    def test_short_expiry_refreshed_at_half(self) -> None:
        client = self.client(expires=2)
        self.register(client, granted=2)
        self.assertEqual(client.status.refresh_at, 1)
        self.clock.advance(1)
        self.assertEqual(self.last().cseq.number, 3)
        self.reply(200, contact_expires=2)
        self.stop(client)

    def test_granted_expiry_shorter_than_requested(self) -> None:
        """Our Contact's expires in the 200 wins over other Contacts and over the Expires header."""
        client = self.client()
        client.start()
        request = self.last()
        response = request.response(200, to_tag="reg")
        response.headers.add("Contact", "<sip:other@192.0.2.99>;expires=10")
        response.headers.add("Contact", f"{CONTACT};expires=600")
        response.headers.add("Expires", "900")
        self.stack.message_received(parse_message(response.to_bytes()), ServerFlow())
        self.assertEqual((client.status.expires, client.status.refresh_at), (600, 540))
        self.stop(client)

    def test_granted_from_the_expires_header(self) -> None:
        client = self.client()
        client.start()
        request = self.last()
        response = request.response(200, to_tag="reg")
        response.headers.add("Expires", "300")
        self.stack.message_received(parse_message(response.to_bytes()), ServerFlow())
        self.assertEqual(client.status.expires, 300)
        self.stop(client)

    def test_granted_as_requested_when_the_200_says_nothing(self) -> None:
        client = self.client(expires=1800)
        client.start()
        response = self.last().response(200, to_tag="reg")
        response.headers.add("Contact", "not a contact <<")
        self.stack.message_received(parse_message(response.to_bytes()), ServerFlow())
        self.assertEqual(client.status.expires, 1800)
        self.stop(client)

    def test_interval_too_brief(self) -> None:
        """423 with Min-Expires: the REGISTER goes again at once asking for that much (RFC 3261 10.2.8)."""
        client = self.client(expires=60)
        client.start()
        self.reply(423, ("Min-Expires", "300"))
        retry = self.last()
        self.assertEqual((retry.cseq.number, retry.headers.get("Expires")), (2, "300"))
        self.assertEqual(retry.contacts[0].param("expires"), "300")
        self.reply(200)
        self.assertEqual((client.status.state, client.status.expires), (REGISTERED, 300))
        self.stop(client)

    def test_423_without_a_larger_minimum_fails(self) -> None:
        client = self.client(expires=600)
        client.start()
        self.reply(423, ("Min-Expires", "60"))
        self.assertEqual((client.status.state, client.status.code), (FAILED, 423))
        self.assertEqual(len(self.requests()), 1)
        self.finish_after_stop(client)


class FailureTests(RegistrationCase):
    def test_403_fails_and_backs_off(self) -> None:
        """403: failed with its code; retries after 30 s, then 60 s; a success resets the back-off."""
        client = self.client()
        client.start()
        self.reply(403)
        status = client.status
        self.assertEqual(
            (status.state, status.code, status.reason, status.retry_at), (FAILED, 403, "Forbidden", 30)
        )
        self.clock.advance(30)
        self.assertEqual(client.status.state, REGISTERING)
        self.assertEqual(self.last().cseq.number, 2)
        self.reply(403)
        self.assertEqual(client.status.retry_at, 30 + 60)
        self.clock.advance(60)
        self.reply(200)
        self.assertEqual(client.status.state, REGISTERED)
        self.assertEqual(len({r.call_id for r in self.requests()}), 1)
        self.stop(client)

    def test_back_off_is_capped_and_jittered(self) -> None:
        client = self.client(rng=FixedRandom(0.5), retry_base=30, retry_max=100, jitter=0.2)
        client.start()
        delays = []
        for _ in range(4):
            self.reply(500)
            delays.append(client.status.retry_at - self.clock.seconds())  # type: ignore[operator]
            self.clock.advance(delays[-1])
        self.assertEqual([round(d, 6) for d in delays], [27, 54, 90, 90])
        client.stop()
        self.reply(200)
        self.finish()

    def test_timeout(self) -> None:
        """No answer: after 64*T1 the attempt fails with 408 "timeout"."""
        client = self.client()
        client.start()
        self.clock.pump([0.5] * 64)
        status = client.status
        self.assertEqual((status.state, status.code, status.reason), (FAILED, 408, "timeout"))
        self.assertEqual(status.retry_at, 32 + 30)
        done = client.stop()
        self.assertEqual(self.last().headers.get("Expires"), "3600")  # nothing was bound: no unregister
        self.assertEqual(client.status.state, STOPPED)
        self.successResultOf(done)
        self.finish()

    def test_transport_error(self) -> None:
        self.transports.failing = True
        client = self.client()
        client.start()
        status = client.status
        self.assertEqual((status.state, status.code), (FAILED, 503))
        self.assertIn("network unreachable", status.reason or "")
        self.successResultOf(client.stop())
        self.finish()

    def test_retry_after_on_503(self) -> None:
        client = self.client()
        client.start()
        self.reply(503, ("Retry-After", "120 (maintenance);duration=60"))
        self.assertEqual((client.status.code, client.status.retry_at), (503, 120))
        self.clock.advance(119)
        self.assertEqual(len(self.requests()), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.requests()), 2)
        self.reply(200)
        self.stop(client)

    def test_retry_after_ignored_on_403(self) -> None:
        client = self.client()
        client.start()
        self.reply(403, ("Retry-After", "5"))
        self.assertEqual(client.status.retry_at, 30)
        self.successResultOf(client.stop())
        self.finish()

    def test_resolution_failure(self) -> None:
        resolver = FakeResolver(ResolutionError("no SRV", transient=True))
        client = self.client(resolver=resolver)
        client.start()
        self.assertEqual((client.status.state, client.status.code), (FAILED, 503))
        self.assertEqual(resolver.asked, [f"sip:{REALM}"])
        self.assertEqual(self.requests(), [])
        self.successResultOf(client.stop())
        self.finish()

    def test_no_resolver_needs_an_ip_literal(self) -> None:
        client = self.client(resolver=None)
        client.start()
        self.assertEqual((client.status.state, client.status.code), (FAILED, 404))
        self.successResultOf(client.stop())
        literal = self.client(resolver=None, registrar="sip:192.0.2.30:5080;transport=tcp")
        literal.start()
        self.assertEqual(self.sent()[-1][1], ("tcp", "192.0.2.30", 5080))
        self.reply(200)
        self.stop(literal)


class FailoverTests(RegistrationCase):
    def test_failover_after_a_timeout_then_sticky(self) -> None:
        """A times out, B accepts; the refresh goes to B (first) with B's nonce, and to A never again."""
        client = self.client(resolver=FakeResolver([A, B]), expires=600)
        client.start()
        self.assertEqual(self.sent()[-1][1], ("udp", A.address, A.port))
        self.clock.pump([0.5] * 64)
        self.assertEqual(self.sent()[-1][1], ("udp", B.address, B.port))
        self.assertEqual(client.status.state, REGISTERING)
        self.reply(401, ("WWW-Authenticate", challenge("nb")))
        self.reply(200, contact_expires=600)
        self.assertEqual(client.status.target, ("udp", B.address, B.port))
        cseqs = [r.cseq.number for r in self.requests()]
        self.assertEqual(list(dict.fromkeys(cseqs)), [1, 2, 3])  # A's retransmissions, then B with 2 and 3
        self.clock.advance(540)
        request, destination = self.sent()[-1]
        self.assertEqual(destination, ("udp", B.address, B.port))
        self.assertEqual(
            (self.authorization(request).nonce, self.authorization(request).nc), ("nb", "00000002")
        )
        self.reply(200)
        done = client.stop()
        self.assertEqual(self.sent()[-1][1], ("udp", B.address, B.port))
        self.reply(200)
        self.successResultOf(done)
        self.finish()

    def test_failover_on_503_and_back_to_the_list_when_the_sticky_target_fails(self) -> None:
        client = self.client(resolver=FakeResolver([A, B]))
        client.start()
        self.reply(503)
        self.assertEqual(self.sent()[-1][1][1], B.address)
        self.reply(200, contact_expires=100)
        self.clock.advance(90)
        self.assertEqual(self.sent()[-1][1][1], B.address)  # sticky
        self.reply(503)
        self.assertEqual(self.sent()[-1][1][1], A.address)  # then the others
        self.reply(200, contact_expires=100)
        self.assertEqual(client.status.target, ("udp", A.address, A.port))
        self.stop(client)

    def test_all_targets_fail(self) -> None:
        client = self.client(resolver=[A, B])
        client.start()
        self.reply(503)
        self.reply(503, ("Retry-After", "60"))
        self.assertEqual((client.status.state, client.status.code, client.status.retry_at), (FAILED, 503, 60))
        self.assertEqual(client.status.target, ("udp", B.address, B.port))
        self.successResultOf(client.stop())
        self.finish()

    def test_outbound_proxy(self) -> None:
        """The proxy is looked up and put in a Route; the Request-URI stays the registrar."""
        resolver = FakeResolver([B])
        client = self.client(resolver=resolver, outbound_proxy="sip:proxy.example.net")
        client.start()
        self.assertEqual(resolver.asked, ["sip:proxy.example.net"])
        request = self.last()
        self.assertEqual(request.headers.get("Route"), "<sip:proxy.example.net;lr>")
        self.assertEqual(str(request.uri), f"sip:{REALM}")
        self.reply(200)
        self.stop(client)


class StopTests(RegistrationCase):
    def test_stop_before_start(self) -> None:
        client = self.client()
        self.assertEqual(client.status.state, UNREGISTERED)
        self.successResultOf(client.stop())
        self.assertEqual(self.requests(), [])
        self.assertEqual([s.state for s in self.states], [STOPPED])
        self.assertRaises(RuntimeError, client.start)
        self.finish()

    def test_unregister(self) -> None:
        client = self.client()
        self.register(client)
        done = client.stop()
        unregister = self.last()
        self.assertEqual(unregister.cseq.number, 3)
        self.assertEqual(unregister.headers.get("Contact"), f"{CONTACT};expires=0")
        self.assertEqual(unregister.headers.get("Expires"), "0")
        self.assertEqual(self.authorization(unregister).nc, "00000002")
        self.assertIs(client.stop(), done)
        self.reply(200)
        self.successResultOf(done)
        self.assertEqual((client.status.state, client.status.code), (STOPPED, 200))
        self.finish()

    def test_unregister_challenged_again(self) -> None:
        client = self.client()
        self.register(client)
        done = client.stop()
        self.reply(401, ("WWW-Authenticate", challenge("n9")))
        self.assertEqual(self.authorization(self.last()).nonce, "n9")
        self.assertEqual(self.last().cseq.number, 4)
        self.reply(200)
        self.successResultOf(done)
        self.finish()

    def test_stop_is_bounded(self) -> None:
        client = self.client(stop_timeout=5)
        self.register(client)
        done = client.stop()
        self.clock.advance(4.9)
        self.assertNoResult(done)
        self.clock.advance(0.1)
        self.successResultOf(done)
        self.assertEqual(client.status.state, STOPPED)
        self.finish()

    def test_stop_while_registering(self) -> None:
        """A REGISTER in flight may be accepted: stop unregisters there too, and cancels the attempt."""
        client = self.client()
        client.start()
        done = client.stop()
        self.assertEqual([r.headers.get("Expires") for r in self.requests()], ["3600", "0"])
        self.reply(200)
        self.successResultOf(done)
        self.assertEqual(client.status.state, STOPPED)
        self.finish()

    def test_stop_while_failed_after_a_binding(self) -> None:
        client = self.client()
        self.register(client, granted=100)
        self.clock.advance(90)
        self.reply(403)
        self.assertEqual(client.status.state, FAILED)
        done = client.stop()
        self.assertEqual(self.last().headers.get("Expires"), "0")
        self.reply(200)
        self.successResultOf(done)
        self.finish()

    def test_stop_from_the_on_state_callback(self) -> None:
        """stop() called while `registering` is reported: no REGISTER goes out, no timer is left."""
        stopped: list[Deferred[None]] = []

        def on_state(status: RegistrationStatus) -> None:
            if status.state == REGISTERING:
                stopped.append(client.stop())

        client = RegistrationClient(
            self.stack, self.clock, aor="sip:1001@192.0.2.10", credentials=credentials, on_state=on_state
        )
        client.start()
        self.successResultOf(stopped[0])
        self.assertEqual((client.status.state, self.requests()), (STOPPED, []))
        self.finish()

    def test_on_state_errors_are_contained(self) -> None:
        def broken(status: RegistrationStatus) -> None:
            raise RuntimeError("boom")

        client = RegistrationClient(
            self.stack, self.clock, aor="sip:1001@192.0.2.10", credentials=credentials, on_state=broken
        )
        client.start()
        self.reply(200)
        self.assertEqual(client.status.state, REGISTERED)
        self.stop(client)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 4)  # registering, registered, stopped x2
