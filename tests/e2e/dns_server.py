"""A loopback DNS server for end-to-end tests: `python -m tests.e2e.dns_server PORT ZONE_JSON`.

Serves the zone `example.test` (`tests.e2e.dns_resolve.MemoryAuthority`) from a JSON object on stdin-free
arguments: {"name": [["A", "127.0.0.1"], ["SRV", priority, weight, port, "target"], ["NAPTR", order, pref,
"flags", "service", "replacement"]]}, on 127.0.0.1:PORT over UDP, and prints "ready" once it listens. It
runs until killed (the test stops it).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import reactor
from twisted.names import dns, server

from tests.e2e.dns_resolve import MemoryAuthority


def record(spec: list[Any]) -> Any:
    kind, *values = spec
    if kind == "A":
        return dns.Record_A(values[0], ttl=60)
    if kind == "AAAA":
        return dns.Record_AAAA(values[0], ttl=60)
    if kind == "SRV":
        priority, weight, port, target = values
        return dns.Record_SRV(priority, weight, port, target.encode(), ttl=60)
    if kind == "NAPTR":
        order, preference, flags, service, replacement = values
        return dns.Record_NAPTR(
            order, preference, flags.encode(), service.encode(), b"", replacement.encode(), ttl=60
        )
    raise ValueError(f"unknown record type {kind!r}")


def main() -> None:
    port = int(sys.argv[1])
    zone = {name: [record(spec) for spec in specs] for name, specs in json.loads(sys.argv[2]).items()}
    zone.setdefault("example.test", [])
    factory = server.DNSServerFactory(authorities=[MemoryAuthority(zone)])
    reactor.listenUDP(port, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1")  # type: ignore[attr-defined]
    print("ready", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
