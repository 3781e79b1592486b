"""`KeepAlive`: OPTIONS pings over UDP flows, CRLF pings over streams; contacts that stop answering go.

`tick()` is driven directly; ping outcomes are fed through the transaction users the fake stack recorded.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pbx.registrar import KeepAlive, LocationService
from pbx.sip.interfaces import IClientTransactionUser
from pbx.sip.message import Response
from pbx.store import Binding, MemoryLocationStore

from .fakes import FakeStack, FakeStreamFlow, binding

# A Contact behind NAT, never sent to.
PRIVATE_CONTACT = "sip:1001@192.168.1.10:5060"  # data only


class Setup:
    def __init__(
        self, *bindings: Binding, mode: str = "options", max_failures: int = 3, tenant_domain: Any = None
    ) -> None:
        self.clock = Clock()
        self.location = LocationService(self.clock, MemoryLocationStore())
        self.stack = FakeStack()
        self.keepalive = KeepAlive(
            self.clock,
            self.location,
            self.stack,
            mode=mode,
            interval=30,
            max_failures=max_failures,
            from_host="pbx.example",
            tenant_domain=tenant_domain,
        )
        for b in bindings:
            self.location.apply(b.tenant, b.aor, [b], ())

    def tick(self) -> list:
        """One round; returns the OPTIONS sent in it."""
        sent = len(self.stack.sent)
        self.keepalive.tick()
        return self.stack.sent[sent:]

    def answer(self, sent: list, status: int) -> None:
        for request, tu, *_ in sent:
            tu.response_received(object(), Response(status, headers=[("CSeq", request.headers.get("CSeq"))]))

    def time_out(self, sent: list) -> None:
        for _, tu, *_ in sent:
            tu.transaction_timeout(object())


class OptionsOverUdpTests(SynchronousTestCase):
    """UDP bindings get an OPTIONS sent to the flow they registered on, not to their private Contact."""

    def test_options_goes_to_the_flow_source_address_and_port(self) -> None:
        s = Setup(binding(PRIVATE_CONTACT, received="udp:203.0.113.5:62000"))
        ((request, tu, transport, host, port),) = s.tick()
        self.assertEqual((transport, host, port), ("udp", "203.0.113.5", 62000))
        self.assertEqual(request.method, "OPTIONS")
        self.assertEqual(str(request.uri), PRIVATE_CONTACT)
        self.assertEqual(request.headers.get("To"), f"<{PRIVATE_CONTACT}>")
        self.assertTrue(request.headers.get("From").startswith("<sip:keepalive@pbx.example>;tag="))
        self.assertTrue(request.call_id.endswith("@pbx.example"))
        self.assertEqual(request.headers.get("CSeq"), "1 OPTIONS")
        self.assertTrue(verifyObject(IClientTransactionUser, tu))
        self.assertEqual(s.keepalive.counters["pings"], 1)

    def test_a_contact_registered_through_a_proxy_is_pinged_through_its_path(self) -> None:
        path = "<sip:198.51.100.9;lr;received=sip:203.0.113.5:62000>"
        s = Setup(replace(binding(PRIVATE_CONTACT, received="udp:198.51.100.9:5060"), path=path))
        ((request, _, transport, host, port),) = s.tick()
        self.assertEqual((transport, host, port), ("udp", "198.51.100.9", 5060))  # the proxy
        self.assertEqual(request.headers.get_all("Route"), [path])
        self.assertEqual(str(request.uri), PRIVATE_CONTACT)

    def test_ipv6_flow(self) -> None:
        s = Setup(binding(received="udp:[2001:db8::5]:5062"))
        ((_, _, transport, host, port),) = s.tick()
        self.assertEqual((transport, host, port), ("udp", "2001:db8::5", 5062))

    def test_every_binding_is_pinged_each_round(self) -> None:
        s = Setup(
            binding("sip:a@10.0.0.1", received="udp:203.0.113.1:5060"),  # data only
            binding("sip:b@10.0.0.2", aor="1002", received="udp:203.0.113.2:5060"),  # data only
            binding("sip:c@10.0.0.3", tenant="globex", received="udp:203.0.113.3:5060"),
        )
        self.assertEqual(
            sorted(host for *_, host, _ in s.tick()), ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        )
        self.assertEqual(len(s.tick()), 3)

    def test_any_final_response_means_alive(self) -> None:
        for status in (200, 404, 481, 501, 503):
            s = Setup(binding())
            for _ in range(5):
                s.answer(s.tick(), status)
            self.assertEqual(len(s.location), 1, status)
            self.assertEqual(s.keepalive.counters["misses"], 0, status)

    def test_a_provisional_response_is_not_an_answer(self) -> None:
        s = Setup(binding())
        sent = s.tick()
        s.answer(sent, 100)
        s.time_out(sent)
        self.assertEqual(s.keepalive.counters["misses"], 1)

    def test_contact_removed_after_max_failures_timeouts(self) -> None:
        s = Setup(binding())
        removed: list[Binding] = []
        s.location.on_removed(removed.append)
        for n in range(2):
            s.time_out(s.tick())
            self.assertEqual(len(s.location), 1, n)
        s.time_out(s.tick())
        self.assertEqual(len(s.location), 0)
        self.assertEqual([b.contact for b in removed], [PRIVATE_CONTACT])
        self.assertEqual(s.keepalive.counters, {"pings": 3, "misses": 3, "removed": 1})
        self.assertEqual(s.tick(), [])

    def test_transport_errors_are_misses(self) -> None:
        s = Setup(binding(), max_failures=2)
        for _ in range(2):
            for _, tu, *_ in s.tick():
                tu.transport_error(object(), "ICMP port unreachable")
        self.assertEqual(len(s.location), 0)

    def test_an_answer_resets_the_count_of_misses(self) -> None:
        s = Setup(binding())
        s.time_out(s.tick())
        s.time_out(s.tick())
        s.answer(s.tick(), 200)
        s.time_out(s.tick())
        s.time_out(s.tick())
        self.assertEqual(len(s.location), 1)
        s.time_out(s.tick())
        self.assertEqual(len(s.location), 0)

    def test_only_the_silent_contact_is_removed(self) -> None:
        s = Setup(
            binding("sip:silent@10.0.0.1", received="udp:203.0.113.1:5060"),
            binding("sip:alive@10.0.0.2", received="udp:203.0.113.2:5060"),
        )
        for _ in range(3):
            for _, tu, _, host, _ in s.tick():
                if host == "203.0.113.1":
                    tu.transaction_timeout(object())
                else:
                    tu.response_received(object(), Response(200))
        self.assertEqual([b.contact for b in s.location], ["sip:alive@10.0.0.2"])

    def test_one_outcome_per_ping(self) -> None:
        s = Setup(binding(), max_failures=1)
        ((_, tu, *_),) = s.tick()
        tu.response_received(object(), Response(200))
        tu.transaction_timeout(object())  # late and contradictory: ignored
        tu.transport_error(object(), "late")
        self.assertEqual(len(s.location), 1)
        self.assertEqual(s.keepalive.counters["misses"], 0)

    def test_a_refreshed_binding_is_not_removed_by_misses_of_its_old_self(self) -> None:
        s = Setup(binding(expires_at=3600), max_failures=1)
        sent = s.tick()
        fresh = binding(expires_at=7200, cseq=2)
        s.location.apply("acme", "1001", [fresh], ())
        s.time_out(sent)
        self.assertEqual(s.location.lookup("acme", "1001"), [fresh])

    def test_misses_are_forgotten_when_the_binding_goes(self) -> None:
        s = Setup(binding(expires_at=100))
        s.time_out(s.tick())
        s.time_out(s.tick())
        s.clock.advance(100)  # expired: the phone comes back with a new registration
        s.location.apply("acme", "1001", [binding(expires_at=3700)], ())
        s.time_out(s.tick())
        s.time_out(s.tick())
        self.assertEqual(len(s.location), 1)

    def test_a_failing_ping_is_logged_and_the_round_goes_on(self) -> None:
        s = Setup(
            binding("sip:a@10.0.0.1", received="udp:203.0.113.1:5060"),  # data only
            binding("sip:b@10.0.0.2", received="udp:203.0.113.2:5060"),
        )
        s.stack.fail_for.add("203.0.113.1")
        self.assertEqual([host for *_, host, _ in s.tick()], ["203.0.113.2"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class CrlfOverStreamTests(SynchronousTestCase):
    """TCP/TLS bindings get a double-CRLF on their connection; a connection that is gone is a miss."""

    def setup(self, transport: str = "tcp", mode: str = "options") -> tuple[Setup, FakeStreamFlow]:
        s = Setup(binding(received=f"{transport}:203.0.113.9:40000"), mode=mode)
        flow = FakeStreamFlow(transport.upper(), ("203.0.113.9", 40000))
        s.stack.transport.flows[(transport, "203.0.113.9", 40000)] = flow
        return s, flow

    def test_crlf_is_sent_on_the_connection(self) -> None:
        for transport in ("tcp", "tls"):
            for mode in ("options", "crlf"):
                s, flow = self.setup(transport, mode)
                self.assertEqual(s.tick(), [])  # no OPTIONS
                self.assertEqual(flow.sent, [b"\r\n\r\n"])
                self.assertEqual(s.stack.transport.lookups, [(transport, "203.0.113.9", 40000)])
                self.assertEqual(s.keepalive.counters["pings"], 1)

    def test_open_connections_stay(self) -> None:
        s, flow = self.setup()
        for _ in range(5):
            s.tick()
        self.assertEqual(len(flow.sent), 5)
        self.assertEqual(len(s.location), 1)

    def test_closed_connection_removes_the_contact_after_max_failures(self) -> None:
        s, flow = self.setup()
        flow.open = False
        s.tick()
        s.tick()
        self.assertEqual(len(s.location), 1)
        s.tick()
        self.assertEqual(len(s.location), 0)
        self.assertEqual(flow.sent, [])
        self.assertEqual(s.keepalive.counters, {"pings": 3, "misses": 3, "removed": 1})

    def test_missing_connection_is_a_miss(self) -> None:
        s, _ = self.setup()
        s.stack.transport.flows.clear()
        for _ in range(3):
            s.tick()
        self.assertEqual(len(s.location), 0)

    def test_a_reconnected_phone_resets_the_count(self) -> None:
        s, flow = self.setup()
        flow.open = False
        s.tick()
        s.tick()
        flow.open = True
        s.tick()
        flow.open = False
        s.tick()
        s.tick()
        self.assertEqual(len(s.location), 1)


class ModeAndLoopTests(SynchronousTestCase):
    """Modes, and the LoopingCall on the injected clock."""

    def test_crlf_mode_sends_no_options_over_udp(self) -> None:
        s = Setup(binding(), mode="crlf")
        self.assertEqual(s.tick(), [])
        self.assertEqual(s.keepalive.counters["pings"], 0)

    def test_unknown_mode_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            KeepAlive(Clock(), LocationService(Clock(), MemoryLocationStore()), FakeStack(), mode="stun")

    def test_start_pings_every_interval_and_stop_cancels(self) -> None:
        s = Setup(binding(expires_at=10_000))
        s.keepalive.start()
        s.keepalive.start()  # idempotent
        self.assertEqual(s.stack.sent, [])
        s.clock.advance(30)
        self.assertEqual(len(s.stack.sent), 1)
        s.clock.advance(30)
        self.assertEqual(len(s.stack.sent), 2)
        s.keepalive.stop()
        s.location.stop()
        self.assertEqual(s.clock.getDelayedCalls(), [])
        s.clock.advance(300)
        self.assertEqual(len(s.stack.sent), 2)

    def test_none_mode_never_starts(self) -> None:
        s = Setup(binding(expires_at=10_000), mode="none")
        s.keepalive.start()
        s.location.stop()
        self.assertEqual(s.clock.getDelayedCalls(), [])
        s.keepalive.stop()


class OwnedBindingsTests(SynchronousTestCase):
    def test_only_the_bindings_this_node_owns_are_pinged(self) -> None:
        """Nodes sharing a store ping only the phones that registered through them (issue 17)."""
        mine = replace(binding("sip:a@10.0.0.1", received="udp:203.0.113.1:5060"), local="udp:127.0.0.1:5071")
        theirs = replace(
            binding("sip:b@10.0.0.2", aor="1002", received="udp:203.0.113.2:5060"), local="udp:127.0.0.1:5072"
        )  # data only
        s = Setup(mine, theirs)
        s.keepalive._owned = lambda b: b.local == "udp:127.0.0.1:5071"
        self.assertEqual([host for *_, host, _ in s.tick()], ["203.0.113.1"])
        s.keepalive._owned = None  # the default: every binding
        self.assertEqual(len(s.tick()), 2)


class TenantDomainTests(SynchronousTestCase):
    def test_each_tenants_phones_see_their_own_domain(self) -> None:
        """The OPTIONS pings' From and Call-ID name the phone's own tenant's domain, never another's."""
        setup = Setup(
            binding(PRIVATE_CONTACT, received="udp:203.0.113.5:62000"),
            binding("sip:1001@192.168.9.9:5060", received="udp:203.0.113.6:62000", tenant="b"),
            tenant_domain={"acme": "a.example", "b": "b.example"}.get,
        )
        sent = {host: request for request, _tu, _transport, host, _port in setup.tick()}
        self.assertIn("@a.example>", sent["203.0.113.5"].headers.get("From"))
        self.assertTrue(sent["203.0.113.5"].call_id.endswith("@a.example"))
        self.assertIn("@b.example>", sent["203.0.113.6"].headers.get("From"))
        self.assertTrue(sent["203.0.113.6"].call_id.endswith("@b.example"))
        setup.keepalive.stop()
