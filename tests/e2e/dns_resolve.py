"""Run by `tests/e2e/test_resolver_dns.py` in a subprocess (it needs a real reactor).

Starts a `twisted.names` authoritative server for the zone `example.test` on a free loopback UDP port, points
`pbx.sip.resolver.SipResolver` at it through `make_resolver`, resolves a few URIs, and prints one JSON object
on stdout: each URI's targets (or error), the cache's counters, and the number of queries the server saw.
A second resolver points at a loopback port that never answers, to show a timeout is transient.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.names import authority, dns, server

from pbx.sip.resolver import ResolutionError, SipResolver, make_resolver

ZONE = "example.test"


def zone_records() -> dict[str, list[Any]]:
    """NAPTR -> SRV -> A/AAAA for example.test; hosts on 127.0.0.1 and ::1 (record data only)."""
    return {
        ZONE: [
            dns.Record_NAPTR(10, 10, b"S", b"SIP+D2T", b"", b"_sip._tcp.example.test", ttl=60),
            dns.Record_NAPTR(20, 10, b"S", b"SIP+D2U", b"", b"_sip._udp.example.test", ttl=60),
            dns.Record_NAPTR(30, 10, b"S", b"SIPS+D2T", b"", b"_sips._tcp.example.test", ttl=60),
            dns.Record_NAPTR(5, 10, b"S", b"SIP+D2S", b"", b"_sip._sctp.example.test", ttl=60),
            dns.Record_A("127.0.0.1", ttl=60),
        ],
        f"_sip._tcp.{ZONE}": [
            dns.Record_SRV(20, 0, 5082, "backup.example.test", ttl=60),
            dns.Record_SRV(10, 0, 5081, "pbx1.example.test", ttl=60),
        ],
        f"_sip._udp.{ZONE}": [dns.Record_SRV(10, 0, 5071, "pbx1.example.test", ttl=60)],
        f"_sips._tcp.{ZONE}": [dns.Record_SRV(10, 0, 5091, "pbx1.example.test", ttl=60)],
        f"pbx1.{ZONE}": [dns.Record_A("127.0.0.1", ttl=60), dns.Record_AAAA("::1", ttl=60)],
        f"backup.{ZONE}": [dns.Record_A("127.0.0.2", ttl=60)],
        # No NAPTR here: SRV per transport, only TCP is offered.
        f"plain.{ZONE}": [dns.Record_A("127.0.0.3", ttl=60)],
        f"_sip._tcp.plain.{ZONE}": [dns.Record_SRV(0, 0, 5099, "backup.example.test", ttl=60)],
        # No NAPTR, no SRV: A on 5060 over UDP.
        f"bare.{ZONE}": [dns.Record_A("127.0.0.4", ttl=60)],
    }


class MemoryAuthority(authority.FileAuthority):
    """An authority whose zone is a dict (name -> records) instead of a file; counts the queries."""

    queries = 0

    def loadFile(self, filename: Any) -> None:
        soa = dns.Record_SOA(f"ns.{ZONE}", f"root.{ZONE}", serial=1, minimum=30, expire=600, ttl=60)
        self.soa = (ZONE.encode(), soa)
        self.records = {name.encode(): list(records) for name, records in filename.items()}
        self.records[ZONE.encode()].append(soa)

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> Deferred:
        MemoryAuthority.queries += 1
        return super()._lookup(name, cls, type, timeout)


class Silent(DatagramProtocol):
    """A name server that never answers."""

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        pass


def describe(result: Any) -> Any:
    if isinstance(result, ResolutionError):
        return {"error": result.reason, "transient": result.transient}
    return [[t.transport, t.address, t.port, t.server_name] for t in result]


async def run(reactor: Any) -> dict[str, Any]:
    zone = MemoryAuthority(zone_records())
    factory = server.DNSServerFactory(authorities=[zone])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1")
    silent = reactor.listenUDP(0, Silent(), interface="127.0.0.1")
    out: dict[str, Any] = {"results": {}}
    try:
        resolver = SipResolver(
            make_resolver(reactor, [("127.0.0.1", port.getHost().port)]), reactor, rng=random.Random(1)
        )
        for uri in (
            "sip:alice@example.test",
            "sips:alice@example.test",
            "sip:alice@example.test;transport=udp",
            "sip:alice@example.test:5070",
            "sip:plain.example.test",
            "sip:bare.example.test",
            "sip:nowhere.example.test",
            "sip:127.0.0.1:5060",
        ):
            try:
                out["results"][uri] = describe(await resolver.resolve(uri))
            except ResolutionError as e:
                out["results"][uri] = describe(e)
        before = MemoryAuthority.queries
        out["again"] = describe(await resolver.resolve("sip:alice@example.test"))
        out["queries_on_repeat"] = MemoryAuthority.queries - before
        out["cache"] = {"queries": resolver.cache.queries, "hits": resolver.cache.hits}

        dead = SipResolver(
            make_resolver(reactor, [("127.0.0.1", silent.getHost().port)], timeout=(1,)), reactor
        )
        try:
            out["dead"] = describe(await dead.resolve("sip:bob@example.test:5060"))
        except ResolutionError as e:
            out["dead"] = describe(e)
    finally:
        await port.stopListening()
        await silent.stopListening()
    return out


def main(reactor: Any) -> Deferred:
    async def go() -> None:
        print(json.dumps(await run(reactor)))
        sys.stdout.flush()

    return Deferred.fromCoroutine(go())


if __name__ == "__main__":
    task.react(main)
