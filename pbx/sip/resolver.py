"""Locating SIP servers (RFC 3263): a SIP URI to an ordered list of (transport, address, port) targets.

Usage::

    resolver = SipResolver(make_resolver(reactor, [("192.0.2.53", 53)]), clock=reactor)
    targets = await resolver.resolve(parse_sip_uri("sip:example.com"))   # list[Target], best first
    outcome = await try_targets(targets, send_to, clock, budget)        # pbx.sip.targets: failover

`SipResolver.resolve` follows RFC 3263 4.1 (transport) and 4.2 (address and port):

- The host is the `maddr` parameter when there is one, else the URI's host (RFC 3263 4).
- An IP literal needs no DNS: the transport is the `transport` parameter or the default (UDP for `sip:`, or
  TCP for a client without UDP; TLS for `sips:`), the port is the URI's or the transport's default (5060,
  5061 for TLS); the Deferred has already fired.
- An explicit port skips NAPTR and SRV: A/AAAA of the host with that port (4.2).
- A `transport` parameter skips NAPTR: SRV for that transport (`_sip._udp`, `_sip._tcp`, `_sips._tcp`), then
  A/AAAA on the transport's default port when there is no SRV record.
- Otherwise NAPTR (4.1): records with flag "S" and service `SIP+D2U`, `SIP+D2T` or `SIPS+D2T` (only
  `SIPS+D2T` for a `sips:` URI), for the transports this client supports, in (order, preference) order; each
  replacement is looked up as SRV. Without usable NAPTR records, SRV for each supported transport in the
  client's preference (`transports`, UDP, TCP, TLS by default; TLS only for `sips:`); without SRV records,
  A/AAAA on port 5060 with UDP (5061 with TLS for `sips:`).
- SRV records are ordered by priority and, within a priority, by the weighted random selection of RFC 2782,
  drawn from an injectable `random.Random`; a target "." means the service is not offered there.
- Addresses of each host come in the order of `families` (IPv4 then IPv6 by default).

A `Target` over TLS carries `server_name`, the identity to check in the server's certificate: the domain of
the URI (RFC 5922 4), never a name learnt from (unauthenticated) NAPTR or SRV answers. A `transport=tls`
parameter on a `sip:` URI (deprecated by RFC 3261 26.2.2, still seen) selects TLS too.

Failures: `resolve` fails with `ResolutionError` when the URI asks for a transport this client does not offer,
or when no target was found; `transient` then says whether a lookup failed for a passing reason (timeout,
SERVFAIL), which a caller may report as `503` rather than `404`/`604`. DNS answers are cached by
`pbx.sip.dnscache.DnsCache` (TTL-respecting, transient failures not cached).

`make_resolver` builds the `twisted.names` client for configured name servers or /etc/resolv.conf; the
composition root passes it in. This module does not consult /etc/hosts, and knows nothing of transactions:
trying the targets in turn is `pbx.sip.targets`.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.names import client, dns

from pbx.sip.dnscache import DEFAULT_DNS_TIMEOUT, DnsCache, DnsLookupError, normalize_name
from pbx.sip.uri import SipURI, parse_sip_uri

TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
# SRV service names per transport (RFC 3263 4.1 and 4.2).
SRV_PREFIXES = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
# NAPTR services per transport (RFC 3263 4.1); SCTP and WebSocket ones are not ours.
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}

_MAX_NAPTR = 16  # records looked at per NAPTR answer
_MAX_SRV = 16  # records looked at per SRV answer
_MAX_TARGETS = 32  # targets returned


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send a request.

    Attributes:
        transport: "udp", "tcp" or "tls".
        address: an IPv4 or IPv6 address (no brackets).
        port: the port.
        server_name: for TLS, the identity to verify in the server's certificate (RFC 5922 4); None otherwise.
    """

    transport: str
    address: str
    port: int
    server_name: str | None = None

    @property
    def reliable(self) -> bool:
        """Whether the transport is a stream (no retransmissions, RFC 3261 17.1.1.2)."""
        return self.transport != "udp"

    @property
    def hop(self) -> Hop:
        """(transport, address, port), carrying `server_name` for the TLS identity check (TLS only)."""
        return Hop(
            self.transport, self.address, self.port, self.server_name if self.transport == "tls" else None
        )


class Hop(tuple[str, str, int]):
    """A next hop as the (transport, address, port) tuple the B2BUA passes around, with the name its TLS
    certificate must show (RFC 5922 4) as an attribute; equal to the plain tuple."""

    server_name: str | None

    def __new__(cls, transport: str, address: str, port: int, server_name: str | None = None) -> Hop:
        hop = super().__new__(cls, (transport, address, port))
        hop.server_name = server_name
        return hop


class ResolutionError(Exception):
    """No target could be found for a URI.

    Attributes:
        reason: a short human-readable reason (safe for a response's reason phrase or a log line).
        transient: True when a DNS lookup failed (timeout, SERVFAIL ...) rather than answered "no such name".
    """

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """The fields of an SRV record that matter here (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


def order_srv(records: Iterable[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """Order SRV records by priority, and within a priority by weighted random selection (RFC 2782).

    Within one priority, records of weight 0 are put first; then repeatedly a number is drawn uniformly in
    [0, sum of the remaining weights] and the first record whose running sum of weights reaches it is taken.
    """
    ordered: list[SrvRecord] = []
    by_priority: dict[int, list[SrvRecord]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    for priority in sorted(by_priority):
        remaining = sorted(by_priority[priority], key=lambda r: r.weight != 0)
        while remaining:
            pick = rng.randint(0, sum(r.weight for r in remaining))
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= pick:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


def _ip_literal(host: str) -> str | None:
    """The address when `host` is an IPv4 or (bracketed or not) IPv6 literal, else None."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _valid_name(name: str) -> bool:
    """Whether `name` (no trailing dot) can be asked: labels of 1-63 characters, 253 in all (RFC 1035)."""
    return 0 < len(name) <= 253 and all(0 < len(label) <= 63 for label in name.split("."))


def _text(value: Any) -> str:
    """A `Name` or `Charstr` of a record as text."""
    raw = getattr(value, "name", None)
    if raw is None:
        raw = getattr(value, "string", value)
    if isinstance(raw, bytes):
        return raw.decode("ascii", "replace")
    return str(raw)


def _address_of(payload: Any) -> str | None:
    if isinstance(payload, dns.Record_A):
        return str(payload.dottedQuad())
    if isinstance(payload, dns.Record_AAAA):
        return socket.inet_ntop(socket.AF_INET6, payload.address)
    return None


@dataclass(slots=True)
class _Resolution:
    """What one `resolve` call learnt on the way."""

    server_name: str
    transient: bool = False
    found: list[Target] = field(default_factory=list)

    def add(self, transport: str, addresses: Iterable[str], port: int) -> None:
        name = self.server_name if transport == "tls" else None
        for address in addresses:
            target = Target(transport, address, port, name)
            if target not in self.found and len(self.found) < _MAX_TARGETS:
                self.found.append(target)


class SipResolver:
    """RFC 3263 server location over an `IResolver`, with a TTL-respecting cache.

    Args:
        resolver: the DNS client (`make_resolver(...)`, or a fake in tests).
        clock: the clock the cache expires on.
        transports: the transports this client can use, in order of preference.
        families: "ipv4" and/or "ipv6", in order of preference.
        rng: random source for the SRV weights (seed one in tests).
        cache_size: bound of the DNS cache.
        dns_timeout: retransmission schedule of each DNS query, in seconds; None for the resolver's
            default (`make_resolver` sets (1, 3, 5): 9 s, inside a 32 s transaction).
    """

    def __init__(
        self,
        resolver: IResolver,
        clock: IReactorTime,
        *,
        transports: Sequence[str] = TRANSPORTS,
        families: Sequence[str] = ("ipv4", "ipv6"),
        rng: random.Random | None = None,
        cache_size: int = 1024,
        dns_timeout: Sequence[int] | None = None,
    ) -> None:
        unknown = set(transports) - set(TRANSPORTS)
        if unknown or not transports:
            raise ValueError(f"transports must be among {TRANSPORTS}, got {list(transports)}")
        bad_families = set(families) - {"ipv4", "ipv6"}
        if bad_families or not families:
            raise ValueError(f"families must be among ('ipv4', 'ipv6'), got {list(families)}")
        self._transports = tuple(transports)
        self._address_types = tuple(dns.A if f == "ipv4" else dns.AAAA for f in families)
        self._rng = rng if rng is not None else random.Random()
        self.cache = DnsCache(resolver, clock, max_entries=cache_size, timeout=dns_timeout)

    def resolve(self, uri: SipURI | str) -> Deferred[list[Target]]:
        """The targets for a request to `uri`, best first (see the module docstring).

        Returns:
            A Deferred firing with a non-empty list of targets (already fired for an IP literal), or failing
            with `ResolutionError`.
        """
        try:
            if isinstance(uri, str):
                uri = parse_sip_uri(uri)
            transport = self._transport_param(uri)
            default = transport or self._default_transport(uri.secure)
        except (ValueError, ResolutionError) as e:
            return fail(e if isinstance(e, ResolutionError) else ResolutionError(f"Bad SIP URI: {e}"))
        host = uri.param("maddr") or uri.host
        state = _Resolution(server_name=normalize_name(uri.host))
        literal = _ip_literal(host)
        if literal is not None:
            state.add(default, [literal], uri.port or DEFAULT_PORTS[default])
            return succeed(state.found)
        if not _valid_name(normalize_name(host)):
            return fail(ResolutionError("Bad host name"))
        return Deferred.fromCoroutine(
            self._resolve_name(normalize_name(host), uri, transport, default, state)
        )

    def _default_transport(self, secure: bool) -> str:
        """TLS for `sips:`; UDP for `sip:` (RFC 3263 4.1), or TCP for a client without UDP."""
        for candidate in ("tls",) if secure else ("udp", "tcp"):
            if candidate in self._transports:
                return candidate
        raise ResolutionError(f"Transport {'tls' if secure else 'udp'} is not available")

    def _transport_param(self, uri: SipURI) -> str | None:
        """The transport a `transport` parameter asks for (RFC 3263 4.1), or None; over TLS for `sips:`."""
        value = uri.transport
        if value is None:
            return None
        if uri.secure and value in ("tcp", "tls"):
            chosen = "tls"
        elif not uri.secure and value in TRANSPORTS:
            chosen = value
        else:
            raise ResolutionError(f"Transport {value[:16]} is not supported for {uri.scheme}: URIs")
        if chosen not in self._transports:
            raise ResolutionError(f"Transport {chosen} is not available")
        return chosen

    async def _resolve_name(
        self, host: str, uri: SipURI, transport: str | None, default: str, state: _Resolution
    ) -> list[Target]:
        if uri.port is not None:  # 4.2: an explicit port means A/AAAA only
            state.add(default, await self._addresses(host, state), uri.port)
        elif transport is not None:
            await self._srv(SRV_PREFIXES[transport] + host, transport, state)
            if not state.found:
                state.add(transport, await self._addresses(host, state), DEFAULT_PORTS[transport])
        else:
            await self._naptr(host, uri.secure, state)
            if not state.found:
                wanted = [t for t in self._transports if t == "tls" or not uri.secure]
                found = await self._gather(self._srv_targets(SRV_PREFIXES[t] + host, state) for t in wanted)
                for chosen, targets in zip(wanted, found, strict=True):
                    for address, port in targets:
                        state.add(chosen, [address], port)
            if not state.found:
                state.add(default, await self._addresses(host, state), DEFAULT_PORTS[default])
        if not state.found:
            if state.transient:
                raise ResolutionError(f"DNS lookup for {host[:64]} failed", transient=True)
            raise ResolutionError(f"No SIP server found for {host[:64]}")
        return state.found

    async def _lookup(self, name: str, rtype: int, state: _Resolution) -> list[Any]:
        """The payloads of the answer, empty on a negative answer or a failure (then noted as transient)."""
        try:
            records = await self.cache.lookup(name, rtype)
        except DnsLookupError:
            state.transient = True
            return []
        return [rr.payload for rr in records]

    async def _gather(self, coroutines: Iterable[Any]) -> list[Any]:
        """Run coroutines concurrently; results in their order."""
        result: list[Any] = await gatherResults([Deferred.fromCoroutine(c) for c in coroutines])
        return result

    async def _naptr(self, host: str, secure: bool, state: _Resolution) -> None:
        records = []
        for payload in (await self._lookup(host, dns.NAPTR, state))[:_MAX_NAPTR]:
            transport = NAPTR_SERVICES.get(_text(payload.service).upper())
            if _text(payload.flags).lower() != "s" or transport is None or transport not in self._transports:
                continue
            if secure and transport != "tls":
                continue
            replacement = normalize_name(_text(payload.replacement))
            if _valid_name(replacement):
                records.append((payload.order, payload.preference, transport, replacement))
        records.sort(key=lambda r: (r[0], r[1]))
        found = await self._gather(self._srv_targets(name, state) for _, _, _, name in records)
        for (_, _, transport, _), targets in zip(records, found, strict=True):
            for address, port in targets:
                state.add(transport, [address], port)

    async def _srv(self, name: str, transport: str, state: _Resolution) -> None:
        for address, port in await self._srv_targets(name, state):
            state.add(transport, [address], port)

    async def _srv_targets(self, name: str, state: _Resolution) -> list[tuple[str, int]]:
        """(address, port) of the SRV records of `name`, in RFC 2782 order."""
        records = []
        for payload in (await self._lookup(name, dns.SRV, state))[:_MAX_SRV]:
            target = normalize_name(_text(payload.target))
            if _valid_name(target) and 0 < payload.port < 65536:
                records.append(SrvRecord(payload.priority, payload.weight, payload.port, target))
        ordered = order_srv(records, self._rng)
        addresses = await self._gather(self._addresses(r.target, state) for r in ordered)
        return [(a, r.port) for r, found in zip(ordered, addresses, strict=True) for a in found]

    async def _addresses(self, host: str, state: _Resolution) -> list[str]:
        """A and AAAA addresses of `host`, in the order of the preferred families."""
        literal = _ip_literal(host)
        if literal is not None:
            return [literal]
        answers = await self._gather(self._lookup(host, rtype, state) for rtype in self._address_types)
        out: list[str] = []
        for payloads in answers:
            for payload in payloads:
                address = _address_of(payload)
                if address is not None and address not in out:
                    out.append(address)
        return out


def make_resolver(
    reactor: Any,
    nameservers: Sequence[tuple[str, int]] | None = None,
    *,
    resolv_conf: str = "/etc/resolv.conf",
    timeout: Sequence[int] = DEFAULT_DNS_TIMEOUT,
) -> IResolver:
    """A `twisted.names.client.Resolver` asking `nameservers`, or those of `resolv_conf` when None or empty.

    Args:
        reactor: provides IReactorTime, IReactorUDP and IReactorTCP (TCP for truncated answers).
        nameservers: (address, port) pairs, tried round-robin.
        resolv_conf: the resolv.conf(5) file read (and re-read each minute) when no server is given.
        timeout: default retransmission schedule of a query, in seconds.
    """
    if nameservers:
        return client.Resolver(servers=list(nameservers), reactor=reactor, timeout=tuple(timeout))
    return client.Resolver(resolv=resolv_conf, reactor=reactor, timeout=tuple(timeout))
