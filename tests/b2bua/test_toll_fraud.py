"""Toll-fraud controls in the B2BUA (`pbx.b2bua.outbound_policy`), on the fakes of `tests/b2bua/fakes.py`:
outbound classes judged on the number the trunk would get, whatever the template built; 403 without an
INVITE to the carrier and no failover to the next trunk; emergency numbers for everyone; concurrent and hourly
limits per extension and per tenant; calls from trunks routed out again; SIP URI targets with phone numbers;
one log line with who, what and why."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from pbx.b2bua import ExtensionInfo
from pbx.b2bua.outbound_policy import OutboundPolicy, TenantOutbound
from pbx.trunks.limits import Limit
from pbx.trunks.tollfraud import NumberRules

from .fakes import TENANT, CalleePhone, Harness
from .test_trunk_calls import CALLERS, TrunkTestCase, carrier_invite

EXTENSIONS = {
    **CALLERS,
    "1003": ExtensionInfo(
        "1003", name="Carol", may_call_out=True, outbound_classes=("internal", "international")
    ),
}
ANYTHING = "dial trunk:carrier/{{ call.dialed }} trunk:backup/{{ call.dialed }}\nhangup"
"""A careless template: whatever is dialled goes to the trunks (failover)."""


class TollFraudTestCase(TrunkTestCase):
    def setUp(self) -> None:
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def policy(self, h: Harness, **settings: Any) -> OutboundPolicy:
        """Replace the B2BUA's default policy by one with `settings` (a `TenantOutbound`) for the tenant."""
        tenant = TenantOutbound(**settings)
        policy = OutboundPolicy(h.clock, {TENANT: tenant}.get)
        h.b2bua.outbound = policy
        h.b2bua.observers.append(policy)
        return policy

    def refusals(self) -> list[str]:
        return [formatEvent(e) for e in self.logged if "refused (403)" in e.get("log_format", "")]


class ClassTests(TollFraudTestCase):
    def test_international_through_a_careless_template_is_refused_without_failover(self) -> None:
        h = self.build(ANYTHING, extensions=EXTENSIONS)
        phone = h.place_call("011442071234567")  # Alice: may call out, default classes (no international)
        self.assertEqual(h.invites(), [])  # neither carrier nor backup sees an INVITE
        self.assertEqual(phone.txn.statuses, [403])
        self.assertEqual(phone.txn.responses[-1].reason, "Number Not Allowed")
        (line,) = self.refusals()
        self.assertIn("acme/1001 from 192.168.1.10 -> 011442071234567", line)
        self.assertIn("(E.164 +442071234567, class international) via trunk carrier", line)
        self.assertIn("class international not allowed", line)
        self.assertIdle(h)

    def test_premium_and_caribbean_numbers_and_garbage_are_refused(self) -> None:
        for dialed in ("19005551234", "18765551234", "+9791234567", "12*34"):
            h = self.build(ANYTHING, extensions=EXTENSIONS)
            phone = h.place_call(dialed)
            self.assertEqual((h.invites(), phone.txn.statuses), ([], [403]), dialed)
            self.assertIdle(h)

    def test_national_numbers_go_out_and_international_with_the_class(self) -> None:
        h = self.build(ANYTHING, extensions=EXTENSIONS)
        phone = h.place_call("12125551234")
        (sent,) = h.invites()
        self.assertEqual(str(sent.request.uri), "sip:12125551234@carrier.example")
        CalleePhone(h, sent).answer()
        phone.ack()
        self.finish(h, phone)
        h2 = self.build(ANYTHING, extensions=EXTENSIONS)
        h2.place_call("011442071234567", user="1003")  # Carol has international
        self.assertEqual(len(h2.invites()), 1)
        h2.b2bua.stop()
        self.assertEqual(self.refusals(), [])
        self.assertIdle(h)

    def test_carol_without_national_cannot_call_national(self) -> None:
        h = self.build(ANYTHING, extensions=EXTENSIONS)
        phone = h.place_call("12125551234", user="1003")
        self.assertEqual((h.invites(), phone.txn.statuses), ([], [403]))
        self.assertIdle(h)

    def test_emergency_numbers_go_out_for_an_extension_with_no_classes(self) -> None:
        for dialed in ("911", "112", "+1911"):
            h = self.build("dial trunk:carrier/{{ call.dialed }}", extensions=EXTENSIONS)
            self.policy(h, extension_limit=Limit(concurrent=1, calls_per_hour=1))
            h.place_call(dialed, user="1002")  # Bob: may_call_out false
            (sent,) = h.invites()
            self.assertEqual(sent.request.uri.user, dialed)
            h.place_call(dialed, user="1002")  # limits do not apply either
            self.assertEqual(len(h.invites()), 2, dialed)
            h.b2bua.stop()
        self.assertEqual(self.refusals(), [])
        self.assertTrue(any("Emergency call" in e.get("log_format", "") for e in self.logged))

    def test_an_extension_with_no_class_gets_trunk_calls_not_allowed(self) -> None:
        h = self.build(ANYTHING, extensions=EXTENSIONS)
        phone = h.place_call("12125551234", user="1002")
        self.assertEqual(phone.txn.responses[-1].reason, "Trunk Calls Not Allowed")
        self.assertEqual(h.invites(), [])
        self.assertIdle(h)

    def test_a_forward_to_a_trunk_is_judged_as_the_caller(self) -> None:
        forwarding = {
            **EXTENSIONS,
            "1004": ExtensionInfo("1004", forward_all="trunk:carrier/011442071234567"),
        }
        h = self.build(
            "{% if call.dialed in extensions and extensions[call.dialed].forward_all %}"
            "dial {{ extensions[call.dialed].forward_all }}{% else %}hangup 404{% endif %}",
            extensions=forwarding,
        )
        phone = h.place_call("1004")
        self.assertEqual((h.invites(), phone.txn.statuses), ([], [403]))
        self.assertIdle(h)

    def test_tenant_rules_local_and_classes(self) -> None:
        h = self.build(ANYTHING, extensions=EXTENSIONS)
        rules = NumberRules(country="44", local=("+4420",), classes=("local",))
        self.policy(h, rules=rules)
        phone = h.place_call("01611234567")  # Manchester: national, Alice has only local
        self.assertEqual((h.invites(), phone.txn.statuses), ([], [403]))
        h.place_call("02071234567")  # London: local
        self.assertEqual(len(h.invites()), 1)
        h.b2bua.stop()


class LimitTests(TollFraudTestCase):
    def test_concurrent_calls_of_an_extension(self) -> None:
        h = self.build("dial trunk:carrier/{{ call.dialed }}", extensions=EXTENSIONS)
        policy = self.policy(h, extension_limit=Limit(concurrent=1))
        first = h.place_call("12125551234")
        self.assertEqual(len(h.invites()), 1)
        second = h.place_call("12125551235")
        self.assertEqual(second.txn.statuses, [403])
        self.assertEqual(second.txn.responses[-1].reason, "Outbound Call Limit Reached")
        self.assertIn("extension acme/1001: concurrent calls 1 of 1", self.refusals()[0])
        self.assertEqual(len(h.invites()), 1)
        h.place_call("1002", user="1003")  # internal calls are not limited (1002 is not registered)
        CalleePhone(h, h.invites()[0]).answer()
        first.ack()
        self.finish(h, first)
        self.assertEqual(policy.usage("extension acme/1001")[:2], (0, 1))
        third = h.place_call("12125551236")  # free again
        self.assertEqual(len(h.invites()), 2)
        CalleePhone(h, h.invites()[1]).respond(486)
        self.assertEqual(third.txn.statuses[-1], 486)
        self.assertIdle(h)

    def test_calls_per_hour_per_extension_and_tenant_slide(self) -> None:
        h = self.build("dial trunk:carrier/{{ call.dialed }}", extensions=EXTENSIONS)
        self.policy(h, limit=Limit(calls_per_hour=3), extension_limit=Limit(calls_per_hour=2))
        for _ in range(2):
            phone = h.place_call("12125551234")
            CalleePhone(h, h.invites()[-1]).respond(486)
            self.assertEqual(phone.txn.statuses[-1], 486)
        refused = h.place_call("12125551234")
        self.assertEqual(refused.txn.statuses, [403])
        self.assertIn("extension acme/1001: calls per hour 2 of 2", self.refusals()[-1])
        h.place_call("12125551234", user="1003")  # Carol: no national class, refused before any limit
        ok = h.place_call("011442071234567", user="1003")
        CalleePhone(h, h.invites()[-1]).respond(486)
        self.assertEqual(ok.txn.statuses[-1], 486)
        tenant_full = h.place_call("011442071234568", user="1003")
        self.assertEqual(tenant_full.txn.statuses, [403])
        self.assertIn("tenant acme: calls per hour 3 of 3", self.refusals()[-1])
        h.clock.advance(3600)
        again = h.place_call("12125551234")
        self.assertEqual(len(h.invites()), 4)
        CalleePhone(h, h.invites()[-1]).respond(486)
        self.assertEqual(again.txn.statuses[-1], 486)
        self.assertIdle(h)

    def test_minutes_of_an_answered_call_in_progress(self) -> None:
        h = self.build("dial trunk:carrier/{{ call.dialed }}", extensions=EXTENSIONS)
        policy = self.policy(h, extension_limit=Limit(minutes_per_hour=30))
        talking = h.place_call("12125551234")
        CalleePhone(h, h.invites()[0]).answer()
        talking.ack()
        h.clock.advance(29 * 60)
        h.place_call("12125551235")
        self.assertEqual(len(h.invites()), 2)  # 29 of 30 minutes: admitted
        CalleePhone(h, h.invites()[1]).respond(486)
        h.clock.advance(60)
        refused = h.place_call("12125551236")
        self.assertEqual(refused.txn.statuses, [403])
        self.assertIn("minutes per hour 30 of 30", self.refusals()[-1])
        self.finish(h, talking)
        self.assertAlmostEqual(policy.usage("extension acme/1001")[2], 30)
        h.clock.advance(3600)
        self.assertEqual(policy.usage("extension acme/1001"), (0, 0, 0.0))
        self.assertIdle(h)

    def test_a_failover_call_counts_once_and_a_limit_stops_it_at_once(self) -> None:
        h = self.build(ANYTHING, extensions=EXTENSIONS)
        policy = self.policy(h, extension_limit=Limit(concurrent=1, calls_per_hour=1))
        phone = h.place_call("12125551234")
        CalleePhone(h, h.invites()[0]).respond(503)  # the carrier fails: the backup is tried
        self.assertEqual(len(h.invites()), 2)
        self.assertEqual(policy.usage("extension acme/1001")[:2], (1, 1))
        CalleePhone(h, h.invites()[1]).respond(503)
        self.assertEqual(phone.txn.statuses[-1], 480)
        refused = h.place_call("12125551234")
        self.assertEqual((len(h.invites()), refused.txn.statuses), (2, [403]))
        self.assertIdle(h)


class FromTrunkTests(TollFraudTestCase):
    def test_a_trunks_call_may_not_go_out_again_not_even_to_an_emergency_number(self) -> None:
        for target in ("trunk:backup/12125551234", "trunk:backup/911", "sip:+12125551234@gw.example"):
            h = self.build(f"dial {target}")
            txn = carrier_invite(h, "sip:15551230001@198.51.100.1")
            self.assertEqual((txn.statuses, h.invites()), ([403], []), target)
            self.assertIn("acme/trunk carrier from 203.0.113.5", self.refusals()[-1])
            self.assertIn("calls from trunks may not go out again", self.refusals()[-1])
            self.assertIdle(h)

    def test_trunk_to_trunk_when_the_tenant_allows_it(self) -> None:
        h = self.build("dial trunk:backup/{{ call.dialed }}")
        self.policy(h, trunk_to_trunk=True, extension_limit=Limit(concurrent=1))
        txn = carrier_invite(h, "sip:15551230001@198.51.100.1")
        (sent,) = h.invites()
        self.assertEqual(str(sent.request.uri), "sip:15551230001@backup.example")
        second = carrier_invite(h, "sip:15551230000@198.51.100.1", caller="+15550000001")
        self.assertEqual(second.statuses, [403])  # the trunk's own limit (the extension default)
        CalleePhone(h, sent).respond(486)
        self.assertEqual(txn.statuses[-1], 486)
        self.assertIdle(h)


class UriTargetTests(TollFraudTestCase):
    def test_phone_numbers_in_sip_uris_are_judged_like_trunk_numbers(self) -> None:
        h = self.build('dial {{ "sip:" ~ call.dialed ~ "@gw.example" }}\nhangup', extensions=EXTENSIONS)
        phone = h.place_call("011442071234567")
        self.assertEqual((h.invites(), phone.txn.statuses), ([], [403]))
        self.assertIn("via uri", self.refusals()[-1])
        for hidden in ("%2B442071234567", "011442071234567;phone-context=x", "*67011442071234567"):
            phone = h.place_call(hidden)
            self.assertEqual((h.invites(), phone.txn.statuses), ([], [403]), hidden)
        h.place_call("911", user="1002")
        self.assertEqual(len(h.invites()), 1)  # emergency through a gateway: allowed
        h.b2bua.stop()

    def test_names_and_the_tenants_own_domain_are_not_judged(self) -> None:
        h = self.build("dial sip:alice@example.com\nhangup", extensions=EXTENSIONS)
        h.place_call("x", user="1002")
        self.assertEqual(len(h.invites()), 1)
        h.b2bua.stop()
        h2 = self.build("dial sip:12125551234@a.example\nhangup", extensions=EXTENSIONS)
        h2.place_call("x", user="1002")
        self.assertEqual(len(h2.invites()), 1)
        h2.b2bua.stop()
        self.assertEqual(self.refusals(), [])


def test_policy_settings_default() -> None:
    policy = OutboundPolicy(Clock())
    settings = policy.settings("nobody")
    assert settings.rules.country == "1" and not settings.limit
    assert isinstance(TenantOutbound().extension_limits, MappingProxyType)


class UnauthenticatedTests(TollFraudTestCase):
    def test_no_credentials_wrong_credentials_or_no_extension_never_reach_a_trunk(self) -> None:
        h = self.build(ANYTHING, extensions=EXTENSIONS)
        bare = h.caller("12125551234")
        txn = bare.send_invite()  # no Proxy-Authorization
        self.assertEqual(txn.statuses, [407])
        wrong = h.place_call("12125551234", password="guess")
        self.assertNotIn(200, wrong.txn.statuses)
        self.assertIn(wrong.txn.statuses[-1], (403, 407))
        stranger = h.place_call("12125551234", user="9999")  # valid credentials, no extension
        self.assertEqual(stranger.txn.statuses, [403])
        self.assertEqual(h.invites(), [])
        self.assertEqual(h.b2bua.calls, {})
        self.assertIdle(h)


def test_numbers_in_log_lines_are_bounded_and_printable() -> None:
    from pbx.b2bua.outbound_policy import _shown

    assert _shown("1\n2\x1b" + "9" * 60) == "1?2?" + "9" * 36
