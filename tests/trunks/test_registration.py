"""`pbx.trunks.registration.TrunkRegistrations`: a real SipStack on a Clock registering to in-memory carriers.

Digest (401 and 407, MD5 and SHA-256), the Contact, refresh timing, 423, back-off after failures and
timeouts, failover across proxies, OPTIONS up/down, the unregister at stop, disabled trunks, log lines; every
test ends with no delayed call left."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from pbx.config import Trunk
from pbx.sip.digest import DigestCredentials
from pbx.sip.resolver import ResolutionError, Target
from pbx.sip.stack import SipStack
from pbx.trunks.registration import TrunkRegistrations, trunk_credentials
from pbx.trunks.state import TrunkStates
from tests.trunks.carrier import CarrierNet, advance

A = "192.0.2.10"
B = "192.0.2.11"


class FixedRandom(random.Random):
    def random(self) -> float:
        return 0.0  # no jitter


def trunk(**settings: Any) -> Trunk:
    values: dict[str, Any] = {
        "name": "carrier",
        "host": A,
        "username": "1555",
        "password": "secret",
        "register": True,
        "register_expires": 600,
    }
    values.update(settings)
    return Trunk(**values)


class TrunkCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stack = SipStack(self.clock)
        self.net = CarrierNet(self.stack)
        self.stack.attach_transport(self.net)
        self.states = TrunkStates(self.clock)
        self.events: list[dict[str, Any]] = []
        self.patch(TrunkStates, "_log", Logger(namespace="pbx.trunks", observer=self.events.append))
        self.registrations: TrunkRegistrations | None = None

    def start(self, *trunks: Trunk, tenant: str = "default", **options: Any) -> TrunkRegistrations:
        options.setdefault("rng", FixedRandom())
        self.registrations = TrunkRegistrations(
            self.stack, self.clock, self.states, [(tenant, t) for t in trunks], **options
        )
        self.registrations.start()
        self.net.run()
        return self.registrations

    def advance(self, seconds: float) -> None:
        advance(self.net, self.clock, seconds)

    def stop(self) -> None:
        assert self.registrations is not None
        done = self.registrations.stop()
        self.advance(10)
        self.successResultOf(done)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def lines(self) -> list[str]:
        return [event["log_format"].format(**event) for event in self.events]

    def state(self, name: str = "carrier") -> Any:
        return self.states.get("default", name)


class RegistrationTests(TrunkCase):
    def test_registers_through_a_401_with_the_contact_user(self) -> None:
        carrier = self.net.add(A)
        self.start(trunk(contact_user="pbxtrunk"))
        first, second = carrier.registers()
        self.assertNotIn("Authorization", first.headers)
        credentials = DigestCredentials.parse(second.headers.get("Authorization") or "")
        self.assertEqual((credentials.username, credentials.realm), ("1555", "carrier.test"))
        self.assertEqual(carrier.bad_auth, 0)
        self.assertEqual(str(second.uri), f"sip:{A}")
        self.assertEqual(second.headers.get("To"), f"<sip:1555@{A}>")
        self.assertEqual(second.headers.get("Contact"), "<sip:pbxtrunk@127.0.0.1:5070>;expires=600")
        state = self.state()
        self.assertEqual((state.registration, state.code, state.up), ("registered", 200, True))
        self.assertEqual(state.contact, "<sip:pbxtrunk@127.0.0.1:5070>")
        self.assertEqual(state.target, f"udp {A}:5060")
        self.assertEqual(self.states.contact_user("default", "carrier"), "pbxtrunk")
        self.assertTrue(self.states.is_up("default", "carrier"))
        self.assertEqual(
            self.lines()[-1],
            "Trunk default/carrier: registered (200 OK); "
            f"Contact <sip:pbxtrunk@127.0.0.1:5070> at udp {A}:5060",
        )
        self.stop()
        last = carrier.registers()[-1]
        self.assertEqual(last.headers.get("Expires"), "0")
        self.assertEqual(self.state().registration, "unregistered")

    def test_407_with_sha256_and_the_auth_username(self) -> None:
        carrier = self.net.add(A, proxy_auth=True, algorithm="SHA-256", username="auth-1555")
        self.start(trunk(auth_username="auth-1555"))
        self.assertEqual(self.state().registration, "registered")
        header = carrier.registers()[1].headers.get("Proxy-Authorization") or ""
        self.assertEqual(DigestCredentials.parse(header).algorithm, "SHA-256")
        self.assertEqual(carrier.registers()[1].headers.get("From", "").split(";")[0], f"<sip:1555@{A}>")
        self.stop()

    def test_credentials_answer_only_the_configured_realm(self) -> None:
        lookup = trunk_credentials(trunk(realm="carrier.test"))
        self.assertIsNotNone(lookup("carrier.test"))
        self.assertIsNone(lookup("elsewhere"))
        self.assertIsNotNone(trunk_credentials(trunk())("anything"))
        carrier = self.net.add(A)
        self.start(trunk(realm="other.realm"))
        self.assertEqual((self.state().registration, self.state().code), ("failed", 401))
        self.assertEqual(len(carrier.registers()), 1)
        self.assertFalse(self.states.is_up("default", "carrier"))
        self.stop()

    def test_refresh_before_expiry_without_a_log_line(self) -> None:
        carrier = self.net.add(A, granted=300)
        self.start(trunk())
        lines = len(self.lines())
        self.assertEqual(self.state().refresh_at, 270.0)  # 90 % of 300 s
        self.advance(269)
        self.assertEqual(len(carrier.registers()), 2)
        self.advance(1)
        self.assertEqual(len(carrier.registers()), 3)
        refresh = carrier.registers()[2]
        self.assertIn("Authorization", refresh.headers)  # the last challenge answered pre-emptively
        self.assertEqual(self.state().registration, "registered")
        self.assertEqual(self.state().expires_at, 570.0)
        self.assertEqual(len(self.lines()), lines)  # a refresh changes nothing worth a line
        self.stop()

    def test_423_raises_the_expiry(self) -> None:
        carrier = self.net.add(A, min_expires=1800)
        self.start(trunk(register_expires=600))
        self.assertEqual([r.headers.get("Expires") for r in carrier.registers()], ["600", "600", "1800"])
        self.assertEqual(self.state().registration, "registered")
        self.stop()

    def test_backoff_on_timeouts_then_recovery(self) -> None:
        carrier = self.net.add(A, mode="drop")
        self.start(trunk())
        self.assertEqual(self.state().registration, "registering")
        self.assertTrue(self.states.is_up("default", "carrier"))  # not failed yet
        self.advance(32)  # Timer F: 64*T1
        state = self.state()
        self.assertEqual((state.registration, state.code, state.reason), ("failed", 408, "timeout"))
        self.assertEqual(state.retry_at, 32 + 30)
        self.assertFalse(self.states.is_up("default", "carrier"))
        self.assertEqual(self.lines()[-1], "Trunk default/carrier: failed (408 timeout); next try in 30 s")
        retries = []
        for _ in range(3):
            self.advance(self.state().retry_at - self.clock.seconds())
            self.assertIsNone(self.state().retry_at)  # the retry is under way: still failed
            self.advance(32)
            retries.append(self.state().retry_at - self.clock.seconds())
        self.assertEqual(retries, [60, 120, 240])
        self.assertEqual(len([line for line in self.lines() if "failed" in line]), 1)  # one line per change
        carrier.mode = "ok"
        self.advance(self.state().retry_at - self.clock.seconds())
        self.assertEqual(self.state().registration, "registered")
        self.assertTrue(self.states.is_up("default", "carrier"))
        self.stop()

    def test_a_refused_refresh_brings_the_trunk_down(self) -> None:
        carrier = self.net.add(A, granted=100)
        self.start(trunk())
        carrier.mode = "403"
        self.advance(95)
        self.assertEqual((self.state().registration, self.state().code), ("failed", 403))
        self.assertFalse(self.states.is_up("default", "carrier"))
        self.stop()

    def test_transport_error_is_a_503_failure(self) -> None:
        self.net.add(A, mode="unreachable")
        self.start(trunk())
        self.assertEqual((self.state().registration, self.state().code), ("failed", 503))
        self.stop()

    def test_failover_across_proxies(self) -> None:
        first = self.net.add(A, mode="503")
        second = self.net.add(B, 5080)
        self.start(trunk(host="", proxies=(A, f"{B}:5080")))
        self.assertEqual(len(first.registers()), 1)
        self.assertEqual(self.state().target, f"udp {B}:5080")
        self.assertEqual(str(second.registers()[0].uri), f"sip:{A}")  # the carrier's domain: the first proxy
        self.stop()
        self.assertEqual(len(first.registers()), 1)  # refresh and unregister stick to the second

    def test_failover_after_a_timeout_to_the_next_srv_target(self) -> None:
        self.net.add(A, mode="drop")
        second = self.net.add(B)
        asked: list[str] = []

        def locate(uri: Any) -> Any:
            from twisted.internet.defer import succeed

            asked.append(str(uri))
            return succeed([Target("udp", A, 5060), Target("udp", B, 5060)])

        self.start(trunk(host="carrier.example", transport="udp"), locate=locate)
        self.advance(40)
        self.assertEqual(asked, ["sip:carrier.example;transport=udp"])
        self.assertEqual(self.state().registration, "registered")
        self.assertEqual(len(second.registers()), 2)
        self.stop()

    def test_dns_failure(self) -> None:
        from twisted.internet.defer import fail

        self.start(trunk(host="carrier.example"), locate=lambda uri: fail(ResolutionError("no such name")))
        self.assertEqual((self.state().registration, self.state().code), ("failed", 404))
        self.stop()

    def test_stop_is_bounded_when_the_carrier_is_gone(self) -> None:
        carrier = self.net.add(A)
        self.start(trunk())
        carrier.mode = "drop"
        done = self.registrations.stop() if self.registrations else None
        assert done is not None
        self.advance(4.9)
        self.assertNoResult(done)
        self.advance(0.2)
        self.successResultOf(done)
        self.advance(60)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class OptionsTests(TrunkCase):
    def test_pings_mark_the_trunk_up_and_down(self) -> None:
        carrier = self.net.add(A, options=200)
        self.start(trunk(register=False, options_interval=30))
        self.assertEqual(self.state().reachable, True)
        self.assertEqual(self.states.contact_user("default", "carrier"), None)
        ping = next(r for r in carrier.requests if r.method == "OPTIONS")
        self.assertEqual((str(ping.uri), ping.headers.get("To")), (f"sip:{A}", f"<sip:{A}>"))
        carrier.options = None  # goes quiet
        self.advance(30 + 32)
        self.assertEqual((self.state().reachable, self.state().ping_code), (False, 408))
        self.assertFalse(self.states.is_up("default", "carrier"))
        self.assertEqual(self.state().state, "down")
        self.assertEqual(self.lines()[-1], "Trunk default/carrier: down, OPTIONS unanswered (408)")
        carrier.options = 404  # any answer means it is there
        self.advance(30)
        self.assertTrue(self.states.is_up("default", "carrier"))
        carrier.options = 503
        self.advance(30)
        self.assertFalse(self.states.is_up("default", "carrier"))
        self.stop()

    def test_pings_and_registration_together(self) -> None:
        carrier = self.net.add(A, options=None)
        self.start(trunk(options_interval=10))
        self.assertEqual(self.state().registration, "registered")
        self.advance(32)
        self.assertFalse(self.states.is_up("default", "carrier"))
        self.assertEqual(self.state().state, "down")
        carrier.options = 200
        self.advance(10)
        self.assertTrue(self.states.is_up("default", "carrier"))
        self.stop()
        self.assertEqual(self.state().reachable, True)


class TrunkSetTests(TrunkCase):
    def test_disabled_and_plain_trunks(self) -> None:
        self.start(
            trunk(name="off", enabled=False, options_interval=30),
            trunk(name="ip", register=False),
        )
        self.assertEqual(self.net.sent, [])
        self.assertFalse(self.states.is_up("default", "off"))
        self.assertEqual(self.state("off").state, "disabled")
        self.assertIsNone(self.states.contact_user("default", "off"))
        self.assertTrue(self.states.is_up("default", "ip"))
        self.assertEqual(self.state("ip").state, "up")
        self.assertFalse(self.states.is_up("default", "unknown"))
        self.assertFalse(self.states.is_up("other", "ip"))
        self.stop()

    def test_passwords_are_never_logged(self) -> None:
        self.net.add(A, mode="403")
        self.start(trunk(password="hunter2-secret"))
        self.stop()
        self.assertTrue(self.lines())
        self.assertFalse([line for line in self.lines() if "hunter2" in line])
        self.assertNotIn("hunter2", repr(list(self.states)))

    def test_many_trunks_refresh_together(self) -> None:
        for index in range(50):
            self.net.add(f"192.0.2.{100 + index}", granted=120)
        trunks = [trunk(name=f"t{i}", host=f"192.0.2.{100 + i}", contact_user=f"c{i}") for i in range(50)]
        self.start(*trunks)
        self.assertEqual({s.registration for s in self.states}, {"registered"})
        self.advance(600)
        for carrier in self.net.carriers.values():
            self.assertEqual(len(carrier.registers()), 2 + 5)  # 401, 200, then a refresh every 108 s
            self.assertEqual(carrier.bad_auth, 0)
        self.stop()
