"""The REGISTER procedure end to end through `Registrar.request_received` (RFC 3261 10.3, issue 3).

Every test drives a real `DigestAuthenticator` (NonceSource on a `task.Clock`, NonceCounter, an H(A1)-only
lookup over two tenants) into a `LocationService` over a `MemoryLocationStore` (or a store whose Deferreds the
test fires). `SipError` failures are answered the way the stack's edge does
(`fakes.answer_errors_like_the_stack`), or asserted with `failureResultOf`. No sockets, no sleeping.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pbx.registrar import BruteForceGuard, RegistrarPolicy, flow_text, parse_flow_text
from pbx.sip.digest import DigestChallenge, DigestCredentials
from pbx.sip.errors import SipError
from pbx.sip.interfaces import IFlow, IServerTransaction, ITransactionUser
from pbx.sip.message import Response
from pbx.sip.origin import network_matcher
from pbx.sip.parser import parse_message
from pbx.sip.stack import SipStack
from pbx.store import ILocationStore, MemoryLocationStore

from .fakes import (
    PASSWORDS,
    FakeFlow,
    FakeServerTransaction,
    FakeStackTransports,
    HA1Lookup,
    Harness,
    Phone,
    SlowLocationStore,
    challenges,
    credentials_for,
    headers_shape,
    register,
    register_bytes,
)

INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'


def contact_values(response: Response) -> list[str]:
    return response.headers.get_all("Contact")


def status(txn: FakeServerTransaction) -> int:
    assert txn.final is not None, "no final response was sent"
    return txn.final.status


class SeamTests(SynchronousTestCase):
    """The registrar and the fakes provide the interfaces they claim."""

    def test_registrar_provides_transaction_user(self) -> None:
        h = Harness()
        self.assertTrue(verifyObject(ITransactionUser, h.registrar))

    def test_fakes_provide_server_transaction_flow_and_store(self) -> None:
        flow = FakeFlow()
        self.assertTrue(verifyObject(IFlow, flow))
        self.assertTrue(verifyObject(IServerTransaction, FakeServerTransaction(register(), flow)))
        self.assertTrue(verifyObject(ILocationStore, SlowLocationStore()))

    def test_cancel_is_ignored(self) -> None:
        h = Harness()
        txn = FakeServerTransaction(register(), FakeFlow())
        self.assertIsNone(h.registrar.cancel_received(register(), txn))
        self.assertEqual(txn.responses, [])


class AddRefreshRemoveTests(SynchronousTestCase):
    """RFC 3261 10.3 steps 6-8: bindings are added, refreshed and removed."""

    def test_first_register_is_challenged_then_registered(self) -> None:
        h = Harness()
        phone = Phone(h)
        first = phone.send()
        self.assertEqual(status(first), 401)
        self.assertEqual(len(h.location), 0)
        phone.challenge, phone.nc = (first.final, first.request), 0
        ok = phone.send_authorized()
        self.assertEqual(status(ok), 200)
        self.assertEqual(contact_values(ok.final), ["<sip:1001@192.168.1.10:5060>;expires=3600"])
        self.assertEqual(ok.final.headers.get("Date"), "Thu, 01 Jan 1970 00:00:00 GMT")
        self.assertIsNotNone(ok.final.to.tag)
        (b,) = h.location.lookup("acme", "1001")
        self.assertEqual((b.contact, b.expires_at, b.cseq), ("sip:1001@192.168.1.10:5060", 3600, 2))
        self.assertEqual(h.registrar.counters["registered"], 1)

    def test_refresh_moves_the_expiry(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register()
        h.clock.advance(1000)
        ok = phone.register()
        self.assertEqual(contact_values(ok.final), ["<sip:1001@192.168.1.10:5060>;expires=3600"])
        (b,) = h.location.lookup("acme", "1001")
        self.assertEqual(b.expires_at, 4600)
        h.clock.advance(3599)
        self.assertEqual(len(h.location), 1)
        h.clock.advance(1)
        self.assertEqual(len(h.location), 0)

    def test_refresh_answers_the_same_challenge_with_the_next_nonce_count(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register()
        self.assertEqual(status(phone.send_authorized()), 200)
        self.assertEqual(phone.nc, 2)

    def test_expires_header_zero_removes_the_binding(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register()
        ok = phone.register(expires=0)
        self.assertEqual(status(ok), 200)
        self.assertEqual(contact_values(ok.final), [])
        self.assertEqual(len(h.location), 0)
        self.assertEqual(h.registrar.counters["unregistered"], 1)

    def test_expires_param_zero_removes_only_that_contact(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register(contacts=["<sip:1001@192.168.1.10>", "<sip:1001@192.168.1.11>"])
        ok = phone.register(contacts=["<sip:1001@192.168.1.10>;expires=0"])
        self.assertEqual(contact_values(ok.final), ["<sip:1001@192.168.1.11>;expires=3600"])
        self.assertEqual([b.contact for b in h.location], ["sip:1001@192.168.1.11"])

    def test_removing_an_unknown_contact_is_harmless(self) -> None:
        h = Harness()
        phone = Phone(h)
        ok = phone.register(expires=0)
        self.assertEqual(status(ok), 200)
        self.assertEqual(len(h.location), 0)

    def test_wildcard_with_expires_zero_removes_every_binding(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register(contacts=["<sip:1001@192.168.1.10>", "<sip:1001@192.168.1.11>"])
        Phone(h, flow=FakeFlow(remote_address=("203.0.113.77", 5060))).register(
            contacts=["<sip:1001@10.9.9.9>"]
        )
        self.assertEqual(len(h.location), 3)
        ok = phone.register(contacts=["*"], expires=0)
        self.assertEqual(status(ok), 200)
        self.assertEqual(contact_values(ok.final), [])
        self.assertEqual(h.location.lookup("acme", "1001"), [])
        self.assertEqual(h.registrar.counters["unregistered"], 3)
        self.assertEqual(h.clock.seconds(), 0)

    def test_wildcard_with_nothing_registered_is_ok(self) -> None:
        h = Harness()
        self.assertEqual(status(Phone(h).register(contacts=["*"], expires=0)), 200)

    def test_wildcard_without_expires_zero_is_400(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register()
        for expires in (None, 60):
            txn = phone.register(contacts=["*"], expires=expires)
            self.assertEqual(status(txn), 400)
        self.assertEqual(len(h.location), 1)

    def test_wildcard_with_another_contact_is_400(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register()
        txn = phone.register(contacts=["*", "<sip:1001@192.168.1.10>"], expires=0)
        self.assertEqual(status(txn), 400)
        self.assertEqual(len(h.location), 1)

    def test_wildcard_removes_only_the_aor_of_its_own_tenant(self) -> None:
        h = Harness()
        Phone(h, "1001", "a.example").register()
        Phone(h, "1002", "a.example").register()
        Phone(h, "1001", "b.example").register()
        Phone(h, "1001", "a.example").register(contacts=["*"], expires=0)
        self.assertEqual(h.location.lookup("acme", "1001"), [])
        self.assertEqual(len(h.location.lookup("acme", "1002")), 1)
        self.assertEqual(len(h.location.lookup("globex", "1001")), 1)

    def test_register_without_contact_is_a_query_that_changes_nothing(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register(contacts=["<sip:1001@192.168.1.10>;q=0.5", "<sip:1001@192.168.1.11>"])
        commits = h.store.commits
        h.clock.advance(10)
        ok = phone.register(contacts=[])
        self.assertEqual(
            contact_values(ok.final),
            ["<sip:1001@192.168.1.11>;expires=3590", "<sip:1001@192.168.1.10>;expires=3590;q=0.5"],
        )
        self.assertEqual(h.store.commits, commits)

    def test_registered_and_unregistered_counters(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register(contacts=["<sip:1001@192.168.1.10>", "<sip:1001@192.168.1.11>"])
        phone.register(contacts=["<sip:1001@192.168.1.10>;expires=0"])
        self.assertEqual(h.registrar.counters["registered"], 2)
        self.assertEqual(h.registrar.counters["unregistered"], 1)


class ExpiryTests(SynchronousTestCase):
    """Expiry comes from the `expires` param, the Expires header or the default, within [min, max]."""

    def expires_of(self, policy: RegistrarPolicy | None = None, **kwargs) -> list[str]:
        h = Harness(policy=policy or RegistrarPolicy())
        ok = Phone(h).register(**kwargs)
        self.assertEqual(status(ok), 200)
        return [v.split(";expires=")[1] for v in contact_values(ok.final)]

    def test_default_expires_without_param_or_header(self) -> None:
        policy = RegistrarPolicy(default_expires=1200)
        self.assertEqual(self.expires_of(policy), ["1200"])

    def test_expires_header_applies_when_the_contact_has_no_param(self) -> None:
        self.assertEqual(self.expires_of(expires=600), ["600"])

    def test_expires_param_wins_over_the_header(self) -> None:
        got = self.expires_of(contacts=["<sip:1001@192.168.1.10>;expires=120"], expires=600)
        self.assertEqual(got, ["120"])

    def test_param_in_range_is_not_refused_for_a_short_header(self) -> None:
        got = self.expires_of(contacts=["<sip:1001@192.168.1.10>;expires=120"], expires=30)
        self.assertEqual(got, ["120"])

    def test_expires_equal_to_the_minimum_is_accepted(self) -> None:
        self.assertEqual(self.expires_of(expires=60), ["60"])

    def test_expires_above_the_configured_maximum_is_shortened(self) -> None:
        policy = RegistrarPolicy(max_expires=1800)
        self.assertEqual(self.expires_of(policy, expires=7200), ["1800"])
        got = self.expires_of(policy, contacts=["<sip:1001@192.168.1.10>;expires=99999999999"])
        self.assertEqual(got, ["1800"])

    def test_expires_below_the_minimum_is_423_with_min_expires(self) -> None:
        h = Harness(policy=RegistrarPolicy(min_expires=120))
        phone = Phone(h)
        phone.register()
        phone.cseq += 1
        request = phone.request(expires=30)
        response, challenged = phone.challenge
        request.headers.add(
            "Authorization",
            credentials_for(response, challenged, "1001", PASSWORDS[("a.example", "1001")], nc=2),
        )
        txn, d = h.send(request, phone.flow)
        error = self.failureResultOf(d, SipError).value
        self.assertEqual(error.status, 423)
        self.assertEqual(error.headers, (("Min-Expires", "120"),))
        self.assertEqual(txn.responses, [])
        (b,) = h.location.lookup("acme", "1001")
        self.assertEqual(b.expires_at, 3600)  # untouched

    def test_423_from_a_contact_param_as_the_stack_answers_it(self) -> None:
        h = Harness()
        txn = Phone(h).register(contacts=["<sip:1001@192.168.1.10>;expires=59"])
        self.assertEqual(status(txn), 423)
        self.assertEqual(txn.final.headers.get("Min-Expires"), "60")
        self.assertEqual(len(h.location), 0)

    def test_423_for_one_contact_applies_nothing(self) -> None:
        h = Harness()
        phone = Phone(h)
        txn = phone.register(contacts=["<sip:1001@192.168.1.10>", "<sip:1001@192.168.1.11>;expires=5"])
        self.assertEqual(status(txn), 423)
        self.assertEqual(len(h.location), 0)
        self.assertEqual(h.store.commits, 0)

    def test_malformed_expires_header_is_400(self) -> None:
        h = Harness()
        for bad in ("soon", "-1", "1.5"):
            self.assertEqual(status(Phone(h).register(expires=bad)), 400)
        self.assertEqual(len(h.location), 0)

    def test_malformed_expires_param_is_400(self) -> None:
        h = Harness()
        txn = Phone(h).register(contacts=["<sip:1001@192.168.1.10>;expires=abc"])
        self.assertEqual(status(txn), 400)

    def test_bindings_expire_on_time(self) -> None:
        h = Harness()
        removed = []
        h.location.on_removed(removed.append)
        Phone(h).register(expires=120)
        h.clock.advance(119.9)
        self.assertEqual(len(h.location.lookup("acme", "1001")), 1)
        h.clock.advance(0.1)
        self.assertEqual(h.location.lookup("acme", "1001"), [])
        self.assertEqual([b.contact for b in removed], ["sip:1001@192.168.1.10:5060"])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_200_lists_every_binding_with_its_remaining_expiry(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register(contacts=["<sip:1001@192.168.1.10>"])
        h.clock.advance(100.5)
        ok = phone.register(contacts=["<sip:1001@192.168.1.11>"], expires=600)
        self.assertEqual(
            contact_values(ok.final),
            ["<sip:1001@192.168.1.11>;expires=600", "<sip:1001@192.168.1.10>;expires=3500"],
        )


class SeveralContactsTests(SynchronousTestCase):
    """Several contacts per AOR, q values, max_contacts and RFC 5626 instances."""

    def test_several_contacts_with_q_values_are_listed_and_ordered(self) -> None:
        h = Harness()
        ok = Phone(h).register(
            contacts=["<sip:1001@192.168.1.10>;q=0.1", "<sip:1001@192.168.1.11>;q=0.9, <sip:1001@10.0.0.3>"]
        )
        self.assertEqual(
            contact_values(ok.final),
            [
                "<sip:1001@10.0.0.3>;expires=3600",
                "<sip:1001@192.168.1.11>;expires=3600;q=0.9",
                "<sip:1001@192.168.1.10>;expires=3600;q=0.1",
            ],
        )
        self.assertEqual([b.q for b in h.location.lookup("acme", "1001")], [1.0, 0.9, 0.1])

    def test_contacts_from_two_phones_coexist(self) -> None:
        h = Harness()
        Phone(h, contact="<sip:1001@192.168.1.10>").register()
        h.clock.advance(5)
        other = FakeFlow(remote_address=("198.51.100.20", 5060))
        ok = Phone(h, contact="<sip:1001@10.1.1.1>", flow=other).register()
        self.assertEqual(len(contact_values(ok.final)), 2)
        # Equal q: the most recent registration first.
        self.assertEqual(h.location.lookup("acme", "1001")[0].contact, "sip:1001@10.1.1.1")

    def test_bad_q_value_is_400(self) -> None:
        h = Harness()
        for q in ("2", "-0.5", "high", "nan"):
            txn = Phone(h).register(contacts=[f"<sip:1001@192.168.1.10>;q={q}"])
            self.assertEqual(status(txn), 400, q)
        self.assertEqual(len(h.location), 0)

    def test_beyond_max_contacts_the_oldest_binding_is_replaced(self) -> None:
        h = Harness(policy=RegistrarPolicy(max_contacts=2))
        removed = []
        h.location.on_removed(removed.append)
        for n in range(3):
            Phone(h, contact=f"<sip:1001@10.0.0.{n}>").register()
            h.clock.advance(10)
        self.assertEqual(sorted(b.contact for b in h.location), ["sip:1001@10.0.0.1", "sip:1001@10.0.0.2"])
        self.assertEqual([b.contact for b in removed], ["sip:1001@10.0.0.0"])

    def test_a_refreshed_binding_is_not_the_oldest(self) -> None:
        h = Harness(policy=RegistrarPolicy(max_contacts=2))
        first = Phone(h, contact="<sip:1001@10.0.0.0>")
        first.register()
        h.clock.advance(10)
        Phone(h, contact="<sip:1001@10.0.0.1>").register()
        h.clock.advance(10)
        first.register()  # refresh: now the most recent
        h.clock.advance(10)
        Phone(h, contact="<sip:1001@10.0.0.2>").register()
        self.assertEqual(sorted(b.contact for b in h.location), ["sip:1001@10.0.0.0", "sip:1001@10.0.0.2"])

    def test_more_contacts_than_max_in_one_request_is_refused(self) -> None:
        h = Harness(policy=RegistrarPolicy(max_contacts=2))
        txn = Phone(h).register(contacts=[f"<sip:1001@10.0.0.{n}>" for n in range(3)])
        self.assertEqual(status(txn), 403)
        self.assertEqual(len(h.location), 0)

    def test_an_instance_re_registering_from_a_new_contact_replaces_its_old_one(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register(contacts=[f"<sip:1001@192.168.1.10>;+sip.instance={INSTANCE};reg-id=1"])
        ok = phone.register(contacts=[f"<sip:1001@192.168.1.99>;+sip.instance={INSTANCE};reg-id=1"])
        (b,) = h.location.lookup("acme", "1001")
        self.assertEqual(b.contact, "sip:1001@192.168.1.99")
        self.assertEqual((b.instance_id, b.reg_id), ("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>", 1))
        self.assertEqual(
            contact_values(ok.final),
            [f"<sip:1001@192.168.1.99>;expires=3600;+sip.instance={INSTANCE};reg-id=1"],
        )

    def test_another_reg_id_of_the_same_instance_is_a_separate_flow(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register(contacts=[f"<sip:1001@192.168.1.10>;+sip.instance={INSTANCE};reg-id=1"])
        phone.register(contacts=[f"<sip:1001@192.168.1.99>;+sip.instance={INSTANCE};reg-id=2"])
        self.assertEqual(len(h.location.lookup("acme", "1001")), 2)

    def test_non_sip_contact_is_400(self) -> None:
        h = Harness()
        self.assertEqual(status(Phone(h).register(contacts=["<tel:+15551234>"])), 400)
        self.assertEqual(status(Phone(h).register(contacts=["<sip:1001@host"])), 400)
        self.assertEqual(len(h.location), 0)


class OrderingTests(SynchronousTestCase):
    """RFC 3261 10.3 step 7: Call-ID/CSeq ordering."""

    def test_same_call_id_with_an_older_cseq_fails_and_changes_nothing(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register()  # CSeq 2 stored
        phone.cseq = 0
        txn = phone.send_authorized(expires=0)  # CSeq 1, same Call-ID
        self.assertEqual(status(txn), 500)
        self.assertEqual(txn.final.headers.get("Retry-After"), "1")
        (b,) = h.location.lookup("acme", "1001")
        self.assertEqual(b.cseq, 2)

    def test_same_call_id_with_the_same_cseq_fails(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register()
        phone.cseq = 1
        self.assertEqual(status(phone.send_authorized(expires=600)), 500)
        self.assertEqual(h.location.lookup("acme", "1001")[0].expires_at, 3600)

    def test_another_call_id_with_a_lower_cseq_updates(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.cseq = 100
        phone.register()
        phone.call_id, phone.cseq = "rebooted@192.168.1.10", 0
        ok = phone.register(expires=600)
        self.assertEqual(status(ok), 200)
        (b,) = h.location.lookup("acme", "1001")
        self.assertEqual((b.call_id, b.cseq, b.expires_at), ("rebooted@192.168.1.10", 2, 600))

    def test_another_call_id_may_remove_the_binding(self) -> None:
        h = Harness()
        Phone(h).register()
        other = Phone(h)
        other.register(expires=0)
        self.assertEqual(len(h.location), 0)

    def test_wildcard_with_an_older_cseq_fails(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register()
        phone.cseq = 0
        self.assertEqual(status(phone.send_authorized(contacts=["*"], expires=0)), 500)
        self.assertEqual(len(h.location), 1)


class TenantTests(SynchronousTestCase):
    """The domain selects the tenant; unserved domains are refused and never registered."""

    def test_domain_selects_the_tenant(self) -> None:
        h = Harness()
        Phone(h, "1001", "b.example").register()
        self.assertEqual([(b.tenant, b.aor) for b in h.location], [("globex", "1001")])

    def test_two_tenants_may_both_have_1001(self) -> None:
        h = Harness()
        acme = Phone(h, "1001", "a.example", contact="<sip:1001@10.0.0.1>")
        globex = Phone(h, "1001", "b.example", contact="<sip:1001@10.0.0.2>")
        self.assertEqual(status(acme.register()), 200)
        self.assertEqual(status(globex.register()), 200)
        self.assertEqual([b.contact for b in h.location.lookup("acme", "1001")], ["sip:1001@10.0.0.1"])
        self.assertEqual([b.contact for b in h.location.lookup("globex", "1001")], ["sip:1001@10.0.0.2"])

    def test_a_tenant_realm_need_not_be_its_domain(self) -> None:
        h = Harness()
        phone = Phone(h, "2001", "i.example")
        first = phone.send()
        self.assertEqual({c.realm for c in challenges(first.final)}, {"Initech PBX"})
        self.assertEqual(status(phone.register()), 200)
        self.assertEqual([(b.tenant, b.aor) for b in h.location], [("initech", "2001")])
        self.assertIn(("2001", "Initech PBX", "SHA-256"), h.lookup.calls)

    def test_one_tenants_password_does_not_open_the_other(self) -> None:
        h = Harness()
        txn = Phone(h, "1001", "b.example", password=PASSWORDS[("a.example", "1001")]).register()
        self.assertEqual(status(txn), 401)
        self.assertEqual(len(h.location), 0)

    def test_unserved_domain_is_403_and_never_registered(self) -> None:
        h = Harness()
        txn = h.handle(register("1001", "c.example"))
        self.assertEqual(status(txn), 403)
        self.assertEqual(len(txn.responses), 1)  # no challenge first
        self.assertEqual(len(h.location), 0)
        self.assertEqual((h.store.commits, h.lookup.calls), (0, []))
        self.assertEqual(h.registrar.counters["challenged"], 0)

    def test_unserved_domain_with_credentials_is_403(self) -> None:
        h = Harness()
        first = Phone(h).send()
        authorization = credentials_for(first.final, first.request, "1001", PASSWORDS[("a.example", "1001")])
        _, d = h.send(register("1001", "c.example", authorization=[authorization]))
        self.assertEqual(self.failureResultOf(d, SipError).value.status, 403)
        self.assertEqual((len(h.location), h.lookup.calls), (0, []))

    def test_aor_in_an_unserved_domain_is_403(self) -> None:
        h = Harness()
        txn = h.handle(register("1001", "a.example", to_domain="c.example"))
        self.assertEqual(status(txn), 403)
        self.assertEqual(len(h.location), 0)

    def test_aor_in_another_tenant_is_403(self) -> None:
        h = Harness()
        txn = h.handle(register("1001", "a.example", to_domain="b.example"))
        self.assertEqual(status(txn), 403)
        self.assertEqual(h.lookup.calls, [])

    def test_request_uri_must_be_sip(self) -> None:
        h = Harness()
        self.assertEqual(status(h.handle(register(request_uri="tel:+15551234"))), 400)

    def test_aor_without_user_is_400(self) -> None:
        h = Harness()
        request = register()
        request.headers.set("To", "<sip:a.example>")
        self.assertEqual(status(h.handle(request)), 400)

    def test_malformed_to_is_400(self) -> None:
        h = Harness()
        request = register()
        request.headers.set("To", '"unterminated <sip:1001@a.example>')
        self.assertEqual(status(h.handle(request)), 400)


class DigestTests(SynchronousTestCase):
    """Digest authentication: 401, SHA-256 and MD5, stale nonces, nonce-count replay, realm per tenant."""

    def test_challenge_offers_sha256_then_md5_in_the_tenants_realm(self) -> None:
        h = Harness()
        for domain in ("a.example", "b.example"):
            txn = Phone(h, "1001", domain).send()
            self.assertEqual(status(txn), 401)
            offered = challenges(txn.final)
            self.assertEqual([c.algorithm for c in offered], ["SHA-256", "MD5"])
            self.assertEqual({c.realm for c in offered}, {domain})
            self.assertEqual({c.qop for c in offered}, {("auth",)})
            self.assertFalse(any(c.stale for c in offered))
            self.assertEqual(offered[0].nonce, offered[1].nonce)  # one nonce, bound to the realm

    def test_sha256_answer_registers(self) -> None:
        h = Harness()
        self.assertEqual(status(Phone(h, algorithm="SHA-256").register()), 200)
        self.assertIn(("1001", "a.example", "SHA-256"), h.lookup.calls)

    def test_md5_answer_registers(self) -> None:
        h = Harness()
        self.assertEqual(status(Phone(h, algorithm="MD5").register()), 200)
        self.assertEqual(h.lookup.calls, [("1001", "a.example", "MD5")])

    def test_md5_only_user_agents_are_offered_md5_alone(self) -> None:
        h = Harness(md5_only_user_agents=["OldPhone"])
        txn = Phone(h, user_agent="oldphone/2.1 firmware").send()
        self.assertEqual([c.algorithm for c in challenges(txn.final)], ["MD5"])
        txn = Phone(h, user_agent="NewPhone/9").send()
        self.assertEqual([c.algorithm for c in challenges(txn.final)], ["SHA-256", "MD5"])

    def test_ha1_only_storage_works(self) -> None:
        lookup = HA1Lookup()
        self.assertFalse(any(p in lookup.table.values() for p in PASSWORDS.values()))
        h = Harness(lookup=lookup)
        self.assertEqual(status(Phone(h, "1001", "b.example").register()), 200)
        self.assertEqual(lookup.calls, [("1001", "b.example", "SHA-256")])

    def test_expired_nonce_gets_stale_true_and_is_not_a_failure(self) -> None:
        guard = BruteForceGuard(Clock(), max_failures=1)
        h = Harness(guard=guard, nonce_lifetime=300)
        phone = Phone(h)
        phone.register()
        h.clock.advance(301)
        txn = phone.send_authorized()
        self.assertEqual(status(txn), 401)
        self.assertEqual([c.stale for c in challenges(txn.final)], [True, True])
        self.assertEqual(h.registrar.counters["auth_failures"], 0)
        self.assertEqual(guard.counters["failures"], 0)
        # The phone answers the fresh challenge and is registered.
        phone.challenge, phone.nc = (txn.final, txn.request), 0
        self.assertEqual(status(phone.send_authorized()), 200)

    def test_expired_nonce_with_a_wrong_password_is_a_failure_not_stale(self) -> None:
        h = Harness()
        phone = Phone(h)
        phone.register()
        h.clock.advance(301)
        txn = phone.send_authorized(password="wrong")
        self.assertEqual([c.stale for c in challenges(txn.final)], [False, False])
        self.assertEqual(h.registrar.counters["auth_failures"], 1)

    def test_nonce_count_replay_is_rejected(self) -> None:
        h = Harness()
        phone = Phone(h)
        ok = phone.register()
        authorization = ok.request.headers.get("Authorization")
        replay = phone.request(authorization=[authorization])
        txn = h.handle(replay, FakeFlow(remote_address=("192.0.2.66", 5060)))
        self.assertEqual(status(txn), 401)
        self.assertEqual(h.registrar.counters["auth_failures"], 1)

    def test_wrong_password_is_challenged_again_and_counted(self) -> None:
        h = Harness()
        txn = Phone(h).register(password="guess")
        self.assertEqual(status(txn), 401)
        self.assertEqual(len(challenges(txn.final)), 2)
        self.assertEqual(
            h.registrar.counters,
            {"registered": 0, "refreshed": 0, "challenged": 2, "auth_failures": 1, "unregistered": 0},
        )
        self.assertEqual(len(h.location), 0)

    def test_credentials_for_another_realm_fail(self) -> None:
        h = Harness()
        first = Phone(h, "1001", "a.example").send()
        authorization = credentials_for(first.final, first.request, "1001", PASSWORDS[("a.example", "1001")])
        txn = h.handle(register("1001", "b.example", authorization=[authorization]))
        self.assertEqual(status(txn), 401)
        self.assertEqual({c.realm for c in challenges(txn.final)}, {"b.example"})
        self.assertEqual(h.registrar.counters["auth_failures"], 1)
        self.assertEqual(len(h.location), 0)

    def test_malformed_credentials_are_a_failure(self) -> None:
        h = Harness()
        txn = h.handle(register(authorization=['Digest username="1001", realm="a.example"']))
        self.assertEqual(status(txn), 401)
        self.assertEqual(h.registrar.counters["auth_failures"], 1)

    def test_credentials_of_another_user_are_403(self) -> None:
        h = Harness()
        phone = Phone(h, "1002", "a.example")
        phone.register()
        response, challenged = phone.challenge
        authorization = credentials_for(response, challenged, "1002", PASSWORDS[("a.example", "1002")], nc=2)
        txn = h.handle(register("1001", "a.example", cseq=9, authorization=[authorization]))
        self.assertEqual(status(txn), 403)
        self.assertEqual(h.location.lookup("acme", "1001"), [])

    def test_answer_challenge_round_trip(self) -> None:
        """The helper's credentials parse back as what a phone sends."""
        h = Harness()
        txn = Phone(h).send()
        text = credentials_for(txn.final, txn.request, "1001", "pw", algorithm="MD5")
        creds = DigestCredentials.parse(text)
        self.assertEqual(
            (creds.username, creds.realm, creds.uri, creds.nc),
            ("1001", "a.example", "sip:a.example", "00000001"),
        )
        self.assertIsInstance(challenges(txn.final)[0], DigestChallenge)


class EnumerationTests(SynchronousTestCase):
    """An unknown user is challenged exactly like a known one: same codes, same headers."""

    def shape(self, response: Response, user: str) -> tuple:
        masked = [
            (n, v.replace(user, "USER")) for n, v in headers_shape(response) if n not in ("Via", "Call-ID")
        ]
        return response.status, response.reason, masked

    def test_first_request_of_an_unknown_user_is_challenged_like_a_known_one(self) -> None:
        h = Harness()
        known = Phone(h, "1001").send()
        unknown = Phone(h, "9999", password="x").send()
        self.assertEqual(self.shape(known.final, "1001")[0], 401)
        self.assertEqual(self.shape(known.final, "1001"), self.shape(unknown.final, "9999"))

    def test_unknown_user_with_credentials_is_refused_like_a_wrong_password(self) -> None:
        h = Harness()
        known = Phone(h, "1001").register(password="guess")
        unknown = Phone(h, "9999", password="guess").register()
        self.assertEqual(self.shape(known.final, "1001")[0], 401)
        self.assertEqual(self.shape(known.final, "1001"), self.shape(unknown.final, "9999"))
        self.assertEqual(h.registrar.counters["auth_failures"], 2)

    def test_unknown_user_costs_the_same_lookup(self) -> None:
        h = Harness()
        Phone(h, "1001").register(password="guess")
        Phone(h, "9999", password="guess").register()
        self.assertEqual(h.lookup.calls, [("1001", "a.example", "SHA-256"), ("9999", "a.example", "SHA-256")])


class BruteForceTests(SynchronousTestCase):
    """The registrar feeds the guard only wrong answers, per source address and per account."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.guard = BruteForceGuard(self.clock, max_failures=3, window=60, block_duration=600)
        self.h = Harness(guard=self.guard, clock=self.clock)
        self.attacker = FakeFlow(remote_address=("192.0.2.66", 5060))

    def test_requests_without_credentials_are_never_failures(self) -> None:
        for _ in range(10):
            self.assertEqual(status(Phone(self.h, flow=self.attacker).send()), 401)
        self.assertEqual(self.guard.counters["failures"], 0)
        self.assertFalse(self.guard.is_blocked("192.0.2.66"))

    def test_wrong_answers_from_one_source_block_it(self) -> None:
        for n in range(3):
            self.assertFalse(self.guard.is_blocked("192.0.2.66"), n)
            Phone(self.h, flow=self.attacker).register(password="guess")
        self.assertTrue(self.guard.is_blocked("192.0.2.66"))
        self.assertEqual(self.guard.counters["blocks"], 1)

    def test_unknown_users_count_like_wrong_passwords(self) -> None:
        for n in range(3):
            Phone(self.h, f"99{n}", password="guess", flow=self.attacker).register()
        self.assertTrue(self.guard.is_blocked("192.0.2.66"))

    def test_phones_at_other_addresses_are_unaffected(self) -> None:
        for _ in range(3):
            Phone(self.h, flow=self.attacker).register(password="guess")
        phone = Phone(self.h, flow=FakeFlow(remote_address=("203.0.113.5", 62000)))
        self.assertEqual(status(phone.register()), 200)
        self.assertFalse(self.guard.is_blocked("203.0.113.5"))
        self.assertEqual(self.guard.blocked_sources, ["192.0.2.66"])

    def test_block_lifts_after_the_block_duration(self) -> None:
        for _ in range(3):
            Phone(self.h, flow=self.attacker).register(password="guess")
        self.clock.advance(599)
        self.assertTrue(self.guard.is_blocked("192.0.2.66"))
        self.clock.advance(1)
        self.assertFalse(self.guard.is_blocked("192.0.2.66"))
        self.assertEqual(self.guard.counters["unblocks"], 1)

    def test_failures_are_recorded_per_account(self) -> None:
        guard = BruteForceGuard(self.clock, max_failures=10, max_account_failures=2)
        h = Harness(guard=guard, clock=self.clock)
        for n in range(3):
            Phone(h, flow=FakeFlow(remote_address=(f"192.0.2.{n}", 5060))).register(password="guess")
        self.assertEqual(guard.blocked_sources, ["192.0.2.2"])
        # Another account of the tenant, and the same extension of the other tenant, are not under attack.
        Phone(h, "1002", flow=FakeFlow(remote_address=("192.0.2.50", 5060))).register(password="guess")
        Phone(h, "1001", "b.example", flow=FakeFlow(remote_address=("192.0.2.51", 5060))).register(
            password="guess"
        )
        self.assertEqual(guard.blocked_sources, ["192.0.2.2"])

    def test_failures_and_blocks_are_logged(self) -> None:
        with capturedLogs() as events:
            for _ in range(3):
                Phone(self.h, flow=self.attacker).register(password="guess")
        failed = [e for e in events if e["log_format"].startswith("Failed {method} authentication")]
        self.assertEqual(
            [(e["user"], e["tenant"], e["source"]) for e in failed], [("1001", "acme", "192.0.2.66")] * 3
        )
        self.assertEqual({e["reason"] for e in failed}, {"bad_credentials"})
        self.assertEqual(len([e for e in events if e["log_format"].startswith("Blocked {source}")]), 1)

    def test_trusted_networks_are_never_blocked(self) -> None:
        guard = BruteForceGuard(self.clock, max_failures=2, trusted=["192.0.2.0/24"])
        h = Harness(guard=guard, clock=self.clock)
        for _ in range(5):
            Phone(h, flow=self.attacker).register(password="guess")
        self.assertFalse(guard.is_blocked("192.0.2.66"))
        self.assertEqual((guard.counters["failures"], guard.counters["blocks"]), (5, 0))


class NatTests(SynchronousTestCase):
    """The binding remembers the flow the REGISTER came in on."""

    def registered(self, flow: FakeFlow, **kwargs):
        h = Harness()
        Phone(h, flow=flow).register(**kwargs)
        (b,) = list(h.location)
        return b

    def test_udp_binding_remembers_source_address_and_port(self) -> None:
        b = self.registered(FakeFlow("UDP", ("203.0.113.5", 62000), ("198.51.100.1", 5060)))
        self.assertEqual(b.contact, "sip:1001@192.168.1.10:5060")  # the private address as sent
        self.assertEqual((b.received, b.local), ("udp:203.0.113.5:62000", "udp:198.51.100.1:5060"))
        self.assertEqual(parse_flow_text(b.received), ("udp", "203.0.113.5", 62000))

    def test_tcp_and_tls_bindings_remember_their_connection(self) -> None:
        self.assertEqual(
            self.registered(FakeFlow("TCP", ("203.0.113.5", 40001))).received, "tcp:203.0.113.5:40001"
        )
        self.assertEqual(
            self.registered(FakeFlow("TLS", ("203.0.113.5", 40002))).received, "tls:203.0.113.5:40002"
        )

    def test_ipv6_flow(self) -> None:
        b = self.registered(FakeFlow("UDP", ("2001:db8::5", 5062), ("2001:db8::1", 5060)))
        self.assertEqual((b.received, b.local), ("udp:[2001:db8::5]:5062", "udp:[2001:db8::1]:5060"))
        self.assertEqual(parse_flow_text(b.received), ("udp", "2001:db8::5", 5062))

    def test_flow_text_round_trips(self) -> None:
        for transport, host, port in [
            ("UDP", "203.0.113.5", 5060),
            ("TLS", "::1", 5061),
            ("tcp", "pbx.example", 1),
        ]:
            self.assertEqual(
                parse_flow_text(flow_text(transport, (host, port))), (transport.lower(), host, port)
            )

    def test_binding_records_user_agent_path_and_instance(self) -> None:
        b = self.registered(
            FakeFlow(),
            contacts=[f"<sip:1001@192.168.1.10>;+sip.instance={INSTANCE};reg-id=1"],
            extra=[("Path", "<sip:edge1.example;lr>"), ("Path", "<sip:edge2.example;lr>")],
        )
        self.assertEqual(b.user_agent, "TestPhone/1.0")
        self.assertEqual(b.path, "<sip:edge1.example;lr>,<sip:edge2.example;lr>")
        self.assertEqual(b.reg_id, 1)

    def test_path_is_echoed_when_the_proxy_supports_it(self) -> None:
        """RFC 3327 5.3: the 200 carries the Path stored, when the REGISTER's Supported names path."""
        h = Harness()
        path = [("Path", "<sip:edge1.example;lr>"), ("Supported", "outbound, path")]
        ok = Phone(h).register(extra=path).final
        assert ok is not None
        self.assertEqual((ok.status, ok.headers.get_all("Path")), (200, ["<sip:edge1.example;lr>"]))
        plain = Phone(h, user="1002").register(extra=[("Path", "<sip:edge1.example;lr>")]).final
        assert plain is not None
        self.assertEqual((plain.status, plain.headers.get_all("Path")), (200, []))

    def test_behind_a_trusted_proxy_failures_count_against_the_phone(self) -> None:
        """Through a trusted proxy the guard blocks the address in the Via below the proxy's, not it."""
        clock = Clock()
        guard = BruteForceGuard(clock, max_failures=2, trusted=["127.0.0.2"])
        h = Harness(guard=guard, clock=clock)
        h.registrar.is_trusted_proxy = network_matcher(["127.0.0.2"])
        proxy = FakeFlow("UDP", ("127.0.0.2", 5060))
        below = [("Via", "SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bKphone;received=198.51.100.3")]
        for _ in range(3):
            Phone(h, flow=proxy).register(password="guess", extra=below)
        self.assertTrue(guard.is_blocked("198.51.100.3"))
        self.assertFalse(guard.is_blocked("127.0.0.2"))


class DurabilityTests(SynchronousTestCase):
    """The 200 is sent only once the store's Deferred has fired."""

    def test_200_waits_for_the_store(self) -> None:
        store = SlowLocationStore()
        h = Harness(store=store)
        phone = Phone(h)
        first = phone.send()
        request = phone.request(
            authorization=[
                credentials_for(first.final, first.request, "1001", PASSWORDS[("a.example", "1001")])
            ]
        )
        txn, d = h.send(request, phone.flow)
        self.assertNoResult(d)
        self.assertEqual(txn.responses, [])
        self.assertEqual(len(store.pending), 1)
        store.commit_all()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(status(txn), 200)
        self.assertEqual(len(self.successResultOf(store.load(0))), 1)

    def test_unregister_waits_for_the_store_too(self) -> None:
        store = SlowLocationStore()
        h = Harness(store=store)
        phone = Phone(h)
        phone.register()
        store.commit_all()
        txn = phone.register(contacts=["*"], expires=0)
        self.assertEqual(txn.responses, [])
        store.commit_all()
        self.assertEqual(status(txn), 200)
        self.assertEqual(self.successResultOf(store.load(0)), [])

    def test_a_failing_store_gets_no_200(self) -> None:
        store = SlowLocationStore()
        h = Harness(store=store)
        phone = Phone(h)
        first = phone.send()
        request = phone.request(
            authorization=[
                credentials_for(first.final, first.request, "1001", PASSWORDS[("a.example", "1001")])
            ]
        )
        txn, d = h.send(request, phone.flow)
        self.assertEqual(len(h.location.lookup("acme", "1001")), 1)  # visible while the store commits
        store.fail_all(OSError("disk full"))
        self.failureResultOf(d, OSError)
        self.assertEqual(txn.responses, [])
        self.assertEqual(len(h.location), 0)  # what was never acknowledged is not routed to either
        self.flushLoggedErrors(OSError)


def test_the_stack_answers_the_registrars_errors() -> None:
    clock = Clock()
    stack = SipStack(clock)
    stack.attach_transport(FakeStackTransports())
    h = Harness(clock=clock, store=MemoryLocationStore())
    stack.register("REGISTER", h.registrar)
    flow = FakeFlow()
    stack.message_received(parse_message(register_bytes("1001", "c.example")), flow)
    gc.collect()  # a dropped failed Deferred logs now, not inside a later test
    responses = [parse_message(data) for data in flow.sent]
    assert [r.status for r in responses] == [403]


class StatelessChallengeTests(SynchronousTestCase):
    """RFC 3261 8.2.7: the 401 to a REGISTER without credentials is sent without a transaction."""

    def test_first_register_is_challenged_statelessly_then_registered_statefully(self) -> None:
        h = Harness()
        self.assertEqual(status(Phone(h).register()), 200)
        self.assertEqual(h.stateless_answers, 1)

    def test_stateless_and_stateful_challenges_look_alike_for_known_and_unknown_users(self) -> None:
        def shape(txn: Any) -> tuple[object, ...]:
            final = txn.final
            offered = challenges(final)
            return (
                final.status,
                final.reason,
                [name for name, _ in final.headers],
                [(c.realm, c.algorithm, c.qop, c.stale, len(c.nonce)) for c in offered],
            )

        shapes = set()
        for stateless in (True, False):
            h = Harness(stateless=stateless)
            for user in ("1001", "9999"):
                phone = Phone(h, user, password="x")
                shapes.add(repr(shape(phone.send())))
        self.assertEqual(len(shapes), 1, shapes)

    def test_requests_with_credentials_or_for_other_domains_go_the_stateful_way(self) -> None:
        h = Harness()
        with_credentials = Phone(h).request(authorization=['Digest username="1001"'])
        self.assertIsNone(h.registrar.stateless_challenge(with_credentials, FakeFlow()))
        self.assertIsNone(
            h.registrar.stateless_challenge(
                Phone(h, domain="nowhere.example", password="x").request(), FakeFlow()
            )
        )
        self.assertEqual(status(Phone(h, domain="nowhere.example", password="x").send()), 403)
