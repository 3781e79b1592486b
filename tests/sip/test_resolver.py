"""Tests for `pbx.sip.resolver` (RFC 3263 server location) and its cache, `pbx.sip.dnscache`.

A fake `IResolver` answers canned NAPTR/SRV/A/AAAA records (with TTLs) and records every query; time is a
`task.Clock`. No socket is opened (the end-to-end test against a real DNS server is
`tests/e2e/test_resolver_dns.py`).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IResolver
from twisted.internet.task import Clock
from twisted.names import client, common, dns, error
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pbx.sip.dnscache import DnsCache, DnsLookupError
from pbx.sip.resolver import (
    ResolutionError,
    SipResolver,
    SrvRecord,
    Target,
    make_resolver,
    order_srv,
)
from pbx.sip.uri import parse_sip_uri

DOMAIN = "example.com"


class FakeResolver(common.ResolverBase):
    """An `IResolver` with canned answers: `records[(name, type)]` is a list of (payload, ttl), an exception
    instance (raised as a failure), or a `Deferred` (returned as is, for tests that fire it themselves)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[tuple[str, int], Any] = {}
        self.soa: dict[str, tuple[dns.Record_SOA, int]] = {}
        self.queries: list[tuple[str, str]] = []
        self.timeouts: list[Any] = []

    def add(self, name: str, payload: Any, ttl: int = 300) -> None:
        self.records.setdefault((name, payload.TYPE), []).append((payload, ttl))

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> Deferred:
        text = name.decode()
        self.queries.append((dns.QUERY_TYPES[type], text))
        self.timeouts.append(timeout)
        answer = self.records.get((text, type))
        if isinstance(answer, Deferred):
            return answer
        if isinstance(answer, Exception):
            return fail(answer)
        authority = []
        if text.endswith(DOMAIN) and DOMAIN in self.soa:
            soa, ttl = self.soa[DOMAIN]
            authority.append(dns.RRHeader(DOMAIN, dns.SOA, dns.IN, ttl, soa))
        if answer is None:
            if any(key[0] == text for key in self.records):
                return succeed(([], authority, []))  # NODATA
            message = dns.Message(rCode=dns.ENAME)
            message.authority = authority
            return fail(error.DNSNameError(message))
        rrs = [dns.RRHeader(text, type, dns.IN, ttl, payload) for payload, ttl in answer]
        return succeed((rrs, authority, []))

    def count(self, rtype: str) -> int:
        return sum(1 for kind, _ in self.queries if kind == rtype)


def naptr(order: int, pref: int, service: str, replacement: str, flags: bytes = b"s") -> dns.Record_NAPTR:
    return dns.Record_NAPTR(order, pref, flags, service.encode(), b"", replacement.encode())


def srv(priority: int, weight: int, port: int, target: str | bytes) -> dns.Record_SRV:
    return dns.Record_SRV(priority, weight, port, target)


def addresses(fake: FakeResolver, name: str, *ips: str, ttl: int = 300) -> None:
    for ip in ips:
        fake.add(name, dns.Record_AAAA(ip) if ":" in ip else dns.Record_A(ip), ttl)


class ResolverTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fake = FakeResolver()
        self.resolver = SipResolver(self.fake, self.clock, rng=random.Random(7))

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def resolve(self, uri: str) -> list[Target]:
        return self.successResultOf(self.resolver.resolve(parse_sip_uri(uri)))

    def failed(self, uri: str) -> ResolutionError:
        return self.failureResultOf(self.resolver.resolve(uri), ResolutionError).value

    def full_zone(self) -> None:
        """NAPTR for UDP, TCP, TLS (plus ones we ignore), SRV for each, A/AAAA for the hosts."""
        self.fake.add(DOMAIN, naptr(20, 10, "SIPS+D2T", "_sips._tcp.example.com"))
        self.fake.add(DOMAIN, naptr(10, 20, "SIP+D2T", "_sip._tcp.example.com"))
        self.fake.add(DOMAIN, naptr(10, 10, "SIP+D2U", "_sip._udp.example.com"))
        self.fake.add(DOMAIN, naptr(5, 10, "SIP+D2S", "_sip._sctp.example.com"))  # not ours
        self.fake.add(DOMAIN, naptr(5, 10, "SIP+D2U", "sip.example.com", flags=b"a"))  # not an SRV pointer
        self.fake.add("_sip._udp.example.com", srv(10, 0, 5070, "udp1.example.com"))
        self.fake.add("_sip._tcp.example.com", srv(10, 0, 5080, "tcp1.example.com"))
        self.fake.add("_sips._tcp.example.com", srv(10, 0, 5091, "tls1.example.com"))
        addresses(self.fake, "udp1.example.com", "192.0.2.1", "2001:db8::1")
        addresses(self.fake, "tcp1.example.com", "192.0.2.2")
        addresses(self.fake, "tls1.example.com", "192.0.2.3")


class NaptrTests(ResolverTestCase):
    def test_fake_provides_iresolver(self) -> None:
        self.assertTrue(verifyObject(IResolver, self.fake))

    def test_naptr_order_then_preference_then_srv_then_addresses(self) -> None:
        """RFC 3263 4.1: NAPTR by (order, preference), each replacement an SRV name, then A before AAAA."""
        self.full_zone()
        self.assertEqual(
            self.resolve("sip:alice@example.com"),
            [
                Target("udp", "192.0.2.1", 5070),
                Target("udp", "2001:db8::1", 5070),
                Target("tcp", "192.0.2.2", 5080),
                Target("tls", "192.0.2.3", 5091, "example.com"),
            ],
        )
        self.assertNotIn(("SRV", "_sip._sctp.example.com"), self.fake.queries)

    def test_sips_uses_only_sips_d2t(self) -> None:
        self.full_zone()
        self.assertEqual(
            self.resolve("sips:alice@example.com"), [Target("tls", "192.0.2.3", 5091, "example.com")]
        )

    def test_unsupported_transports_are_skipped(self) -> None:
        self.full_zone()
        resolver = SipResolver(self.fake, self.clock, transports=("tcp", "tls"))
        targets = self.successResultOf(resolver.resolve("sip:example.com"))
        self.assertEqual([t.transport for t in targets], ["tcp", "tls"])

    def test_ipv6_preferred_when_asked(self) -> None:
        self.full_zone()
        resolver = SipResolver(self.fake, self.clock, families=("ipv6", "ipv4"), transports=("udp",))
        targets = self.successResultOf(resolver.resolve("sip:example.com"))
        self.assertEqual([t.address for t in targets], ["2001:db8::1", "192.0.2.1"])

    def test_naptr_without_usable_srv_falls_back_to_srv_per_transport(self) -> None:
        self.fake.add(DOMAIN, naptr(10, 10, "SIP+D2U", "_sip._udp.nowhere.example.com"))
        self.fake.add("_sip._tcp.example.com", srv(1, 0, 5080, "tcp1.example.com"))
        addresses(self.fake, "tcp1.example.com", "192.0.2.2")
        self.assertEqual(self.resolve("sip:example.com"), [Target("tcp", "192.0.2.2", 5080)])


class SrvTests(ResolverTestCase):
    def test_without_naptr_srv_for_each_transport_in_preference_order(self) -> None:
        self.fake.add("_sips._tcp.example.com", srv(1, 0, 5061, "tls1.example.com"))
        self.fake.add("_sip._tcp.example.com", srv(1, 0, 5060, "tcp1.example.com"))
        addresses(self.fake, "tls1.example.com", "192.0.2.3")
        addresses(self.fake, "tcp1.example.com", "192.0.2.2")
        self.assertEqual(
            self.resolve("sip:example.com"),
            [Target("tcp", "192.0.2.2", 5060), Target("tls", "192.0.2.3", 5061, "example.com")],
        )
        self.assertEqual(self.fake.count("NAPTR"), 1)
        self.assertEqual(self.fake.count("SRV"), 3)

    def test_without_naptr_or_srv_a_records_on_the_default_port(self) -> None:
        addresses(self.fake, DOMAIN, "192.0.2.9", "2001:db8::9")
        self.assertEqual(
            self.resolve("sip:example.com"),
            [Target("udp", "192.0.2.9", 5060), Target("udp", "2001:db8::9", 5060)],
        )
        self.assertEqual(
            self.resolve("sips:example.com"),
            [
                Target("tls", "192.0.2.9", 5061, "example.com"),
                Target("tls", "2001:db8::9", 5061, "example.com"),
            ],
        )

    def test_srv_priority_then_weight(self) -> None:
        self.fake.add("_sip._udp.example.com", srv(20, 0, 5060, "backup.example.com"))
        self.fake.add("_sip._udp.example.com", srv(10, 60, 5060, "a.example.com"))
        self.fake.add("_sip._udp.example.com", srv(10, 40, 5060, "b.example.com"))
        addresses(self.fake, "backup.example.com", "192.0.2.30")
        addresses(self.fake, "a.example.com", "192.0.2.10")
        addresses(self.fake, "b.example.com", "192.0.2.20")
        targets = self.resolve("sip:example.com;transport=udp")
        self.assertEqual(targets[-1], Target("udp", "192.0.2.30", 5060))
        self.assertEqual({t.address for t in targets[:2]}, {"192.0.2.10", "192.0.2.20"})

    def test_order_srv_is_reproducible_with_a_seed_and_follows_the_weights(self) -> None:
        records = [SrvRecord(10, 90, 1, "heavy"), SrvRecord(10, 10, 2, "light"), SrvRecord(5, 0, 3, "first")]
        self.assertEqual(order_srv(records, random.Random(1)), order_srv(records, random.Random(1)))
        rng = random.Random(2)
        firsts = Counter(order_srv(records, rng)[1].target for _ in range(2000))
        self.assertTrue(all(order_srv(records, rng)[0].target == "first" for _ in range(50)))
        self.assertGreater(firsts["heavy"], 1650)  # about 90% of 2000
        self.assertGreater(firsts["light"], 100)

    def test_order_srv_zero_weights_first_and_all_kept(self) -> None:
        records = [SrvRecord(1, 10, 1, "w"), SrvRecord(1, 0, 2, "z")]
        seen = Counter(order_srv(records, random.Random(3))[0].target for _ in range(1))
        self.assertEqual(sorted(r.target for r in order_srv(records, random.Random(3))), ["w", "z"])
        self.assertEqual(sum(seen.values()), 1)

    def test_srv_target_dot_means_no_service(self) -> None:
        self.fake.add("_sip._tcp.example.com", srv(0, 0, 0, b""))
        addresses(self.fake, DOMAIN, "192.0.2.9")
        self.assertEqual(self.resolve("sip:example.com;transport=tcp"), [Target("tcp", "192.0.2.9", 5060)])


class ParameterTests(ResolverTestCase):
    def test_transport_param_skips_naptr(self) -> None:
        self.full_zone()
        self.assertEqual(self.resolve("sip:example.com;transport=TCP"), [Target("tcp", "192.0.2.2", 5080)])
        self.assertEqual(self.fake.count("NAPTR"), 0)
        self.assertEqual(self.fake.queries[0], ("SRV", "_sip._tcp.example.com"))

    def test_transport_param_without_srv_uses_the_default_port(self) -> None:
        addresses(self.fake, DOMAIN, "192.0.2.9")
        self.assertEqual(self.resolve("sip:example.com;transport=tcp"), [Target("tcp", "192.0.2.9", 5060)])
        self.assertEqual(
            self.resolve("sip:example.com;transport=tls"), [Target("tls", "192.0.2.9", 5061, "example.com")]
        )

    def test_sips_with_transport_tcp_is_tls(self) -> None:
        self.full_zone()
        self.assertEqual(
            self.resolve("sips:example.com;transport=tcp"), [Target("tls", "192.0.2.3", 5091, "example.com")]
        )
        self.assertEqual(self.fake.queries[0], ("SRV", "_sips._tcp.example.com"))

    def test_unsupported_transports_are_refused_without_dns(self) -> None:
        for uri in (
            "sips:example.com;transport=udp",
            "sip:example.com;transport=sctp",
            "sip:1.2.3.4;transport=ws",
        ):
            self.assertIn("not supported", self.failed(uri).reason)
        resolver = SipResolver(self.fake, self.clock, transports=("udp",))
        reason = self.failureResultOf(resolver.resolve("sips:example.com"), ResolutionError).value.reason
        self.assertIn("not available", reason)
        self.assertEqual(self.fake.queries, [])

    def test_bad_uri_is_a_resolution_error(self) -> None:
        self.assertIn("Bad SIP URI", self.failed("tel:+123").reason)
        for uri in ("sip:a..b", f"sip:{'a' * 64}.example.com", "sip:x@example.com;maddr=.."):
            self.assertEqual(self.failed(uri).reason, "Bad host name", uri)
        self.assertEqual(self.fake.queries, [])

    def test_explicit_port_skips_naptr_and_srv(self) -> None:
        """RFC 3263 4.2: a port in the URI means A/AAAA only."""
        self.full_zone()
        addresses(self.fake, DOMAIN, "192.0.2.9")
        self.assertEqual(self.resolve("sip:example.com:5099"), [Target("udp", "192.0.2.9", 5099)])
        self.assertEqual(
            self.resolve("sips:example.com:5099"), [Target("tls", "192.0.2.9", 5099, "example.com")]
        )
        self.assertEqual(
            self.resolve("sip:example.com:5099;transport=tcp"), [Target("tcp", "192.0.2.9", 5099)]
        )
        self.assertEqual({kind for kind, _ in self.fake.queries}, {"A", "AAAA"})

    def test_ip_literals_need_no_dns_and_answer_at_once(self) -> None:
        cases = {
            "sip:192.0.2.1": Target("udp", "192.0.2.1", 5060),
            "sip:192.0.2.1:5080;transport=tcp": Target("tcp", "192.0.2.1", 5080),
            "sips:192.0.2.1": Target("tls", "192.0.2.1", 5061, "192.0.2.1"),
            "sip:[2001:db8::1]": Target("udp", "2001:db8::1", 5060),
            "sip:bob@[2001:DB8::1]:5070;transport=tls": Target("tls", "2001:db8::1", 5070, "2001:db8::1"),
            "sip:bob@example.com;maddr=192.0.2.7": Target("udp", "192.0.2.7", 5060),
        }
        for uri, target in cases.items():
            d = self.resolver.resolve(uri)
            self.assertTrue(d.called, uri)
            self.assertEqual(self.successResultOf(d), [target], uri)
        self.assertEqual(self.fake.queries, [])

    def test_default_transport_of_a_client_without_udp_is_tcp(self) -> None:
        resolver = SipResolver(self.fake, self.clock, transports=("tcp",))
        targets = self.successResultOf(resolver.resolve("sip:192.0.2.1"))
        self.assertEqual(targets, [Target("tcp", "192.0.2.1", 5060)])

    def test_maddr_replaces_the_host_but_not_the_tls_name(self) -> None:
        self.fake.add("_sips._tcp.proxy.example.net", srv(1, 0, 5061, "edge.example.net"))
        addresses(self.fake, "edge.example.net", "192.0.2.44")
        self.assertEqual(
            self.resolve("sips:alice@example.com;maddr=proxy.example.net"),
            [Target("tls", "192.0.2.44", 5061, "example.com")],
        )

    def test_cname_in_an_answer_is_skipped(self) -> None:
        answers = [
            dns.RRHeader(DOMAIN, dns.CNAME, dns.IN, 60, dns.Record_CNAME("real.example.com")),
            dns.RRHeader("real.example.com", dns.A, dns.IN, 60, dns.Record_A("192.0.2.5")),
        ]
        self.fake.records[(DOMAIN, dns.A)] = succeed((answers, [], []))
        self.assertEqual(self.resolve("sip:example.com:5060"), [Target("udp", "192.0.2.5", 5060)])


class FailureTests(ResolverTestCase):
    def test_nothing_found_is_a_permanent_error(self) -> None:
        error_ = self.failed("sip:nowhere.example.com")
        self.assertFalse(error_.transient)
        self.assertIn("No SIP server", error_.reason)

    def test_timeout_is_transient_and_not_cached(self) -> None:
        """A timed-out lookup fails the resolution as transient; the next resolution asks again."""
        self.fake.records[(DOMAIN, dns.A)] = error.DNSQueryTimeoutError(1)
        self.fake.records[(DOMAIN, dns.AAAA)] = error.DNSServerError(dns.Message(rCode=dns.ESERVER))
        self.assertTrue(self.failed("sip:example.com:5060").transient)
        del self.fake.records[(DOMAIN, dns.A)], self.fake.records[(DOMAIN, dns.AAAA)]
        addresses(self.fake, DOMAIN, "192.0.2.9")
        self.assertEqual(self.resolve("sip:example.com:5060"), [Target("udp", "192.0.2.9", 5060)])
        self.assertEqual(self.fake.count("A"), 2)
        self.assertEqual(self.fake.count("AAAA"), 2)

    def test_naptr_timeout_still_finds_srv(self) -> None:
        self.full_zone()
        self.fake.records[(DOMAIN, dns.NAPTR)] = error.DNSQueryTimeoutError(1)
        targets = self.resolve("sip:example.com")
        self.assertEqual([t.transport for t in targets], ["udp", "udp", "tcp", "tls"])


class CacheTests(ResolverTestCase):
    def test_answers_are_cached_for_their_smallest_ttl(self) -> None:
        self.full_zone()
        self.fake.records[("udp1.example.com", dns.A)] = [(dns.Record_A("192.0.2.1"), 20)]
        first = self.resolve("sip:example.com")
        queries = len(self.fake.queries)
        self.assertEqual(self.resolve("sip:example.com"), first)
        self.assertEqual(len(self.fake.queries), queries)
        self.clock.advance(19)
        self.resolve("sip:example.com")
        self.assertEqual(len(self.fake.queries), queries)
        self.clock.advance(1)
        self.resolve("sip:example.com")
        self.assertEqual(self.fake.queries[queries:], [("A", "udp1.example.com")])

    def test_negative_answers_cached_for_the_soa_minimum(self) -> None:
        soa = dns.Record_SOA("ns.example.com", "root.example.com", minimum=10)
        self.fake.soa[DOMAIN] = (soa, 600)
        self.failed("sip:nowhere.example.com:5060")
        self.failed("sip:nowhere.example.com:5060")
        self.assertEqual(self.fake.count("A"), 1)
        self.clock.advance(10)
        self.failed("sip:nowhere.example.com:5060")
        self.assertEqual(self.fake.count("A"), 2)

    def test_negative_answers_without_soa_cached_for_the_default(self) -> None:
        cache = DnsCache(self.fake, self.clock, negative_ttl=5)
        self.assertEqual(self.successResultOf(cache.lookup("x.example.com", dns.A)), [])
        self.clock.advance(4.9)
        self.assertEqual(self.successResultOf(cache.lookup("X.Example.com.", dns.A)), [])
        self.assertEqual((cache.queries, cache.hits), (1, 1))
        self.clock.advance(0.1)
        self.successResultOf(cache.lookup("x.example.com", dns.A))
        self.assertEqual(cache.queries, 2)

    def test_transient_failures_are_not_cached(self) -> None:
        cache = DnsCache(self.fake, self.clock)
        for exc in (
            error.DNSQueryTimeoutError(1),
            error.DNSServerError(dns.Message()),
            error.DNSQueryRefusedError(dns.Message()),
        ):
            self.fake.records[("t.example.com", dns.SRV)] = exc
            self.failureResultOf(cache.lookup("t.example.com", dns.SRV), DnsLookupError)
        self.assertEqual((cache.queries, len(cache)), (3, 0))

    def test_timeout_schedule_is_passed_only_when_given(self) -> None:
        self.successResultOf(DnsCache(self.fake, self.clock).lookup("a.example.com", dns.A))
        self.successResultOf(DnsCache(self.fake, self.clock, timeout=[2, 4]).lookup("a.example.com", dns.A))
        self.assertEqual(self.fake.timeouts, [None, (2, 4)])

    def test_zero_ttl_is_not_cached(self) -> None:
        addresses(self.fake, "z.example.com", "192.0.2.1", ttl=0)
        cache = DnsCache(self.fake, self.clock)
        self.successResultOf(cache.lookup("z.example.com", dns.A))
        self.successResultOf(cache.lookup("z.example.com", dns.A))
        self.assertEqual(cache.queries, 2)

    def test_the_table_is_bounded(self) -> None:
        cache = DnsCache(self.fake, self.clock, max_entries=2)
        for index in range(5):
            addresses(self.fake, f"h{index}.example.com", f"192.0.2.{index + 1}")
            self.successResultOf(cache.lookup(f"h{index}.example.com", dns.A))
        self.assertEqual(len(cache), 2)
        self.successResultOf(cache.lookup("h4.example.com", dns.A))
        self.assertEqual(cache.hits, 1)

    def test_concurrent_lookups_share_one_query(self) -> None:
        pending: Deferred = Deferred()
        self.fake.records[("s.example.com", dns.A)] = pending
        cache = DnsCache(self.fake, self.clock)
        first, second = cache.lookup("s.example.com", dns.A), cache.lookup("s.example.com", dns.A)
        self.assertNoResult(first)
        pending.callback(
            ([dns.RRHeader("s.example.com", dns.A, dns.IN, 60, dns.Record_A("192.0.2.1"))], [], [])
        )
        self.assertEqual(self.successResultOf(first), self.successResultOf(second))
        self.assertEqual(cache.queries, 1)

    def test_concurrent_lookups_share_a_failure(self) -> None:
        pending: Deferred = Deferred()
        self.fake.records[("s.example.com", dns.A)] = pending
        cache = DnsCache(self.fake, self.clock)
        first, second = cache.lookup("s.example.com", dns.A), cache.lookup("s.example.com", dns.A)
        pending.errback(error.DNSQueryTimeoutError(1))
        self.failureResultOf(first, DnsLookupError)
        self.failureResultOf(second, DnsLookupError)
        self.assertEqual(len(cache), 0)


class FactoryTests(SynchronousTestCase):
    def test_make_resolver_with_nameservers(self) -> None:
        clock = Clock()
        resolver = make_resolver(clock, [("127.0.0.1", 5353)])
        self.assertIsInstance(resolver, client.Resolver)
        self.assertEqual(resolver.servers, [("127.0.0.1", 5353)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_make_resolver_from_resolv_conf(self) -> None:
        clock = Clock()
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("nameserver 127.0.0.53\n")
        resolver = make_resolver(clock, None, resolv_conf=path)
        self.assertEqual(resolver.dynServers, [("127.0.0.53", 53)])
        resolver._parseCall.cancel()  # it re-reads the file every minute
        self.assertEqual(clock.getDelayedCalls(), [])
