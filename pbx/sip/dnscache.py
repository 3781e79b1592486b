"""A TTL-respecting DNS cache in front of an `IResolver`, for the RFC 3263 resolver (`pbx.sip.resolver`).

Answers are kept for the smallest TTL of their records (RFC 1035 3.2.1), capped at `max_ttl`. A negative
answer (NXDOMAIN, or NOERROR with no record of the asked type) is kept for the SOA's negative TTL,
min(SOA TTL, SOA MINIMUM) (RFC 2308 5), or `negative_ttl` when the answer carried no SOA, capped at
`max_negative_ttl`.
Transient failures (timeouts, SERVFAIL, REFUSED, a malformed answer ...) are never cached: a cache remembers
the outcome of an attempt only when the attempt succeeded, and the next lookup asks again.

Expiry is read from the injected clock when an entry is looked up, so the cache schedules no timers. The table
is bounded (least recently used entries go first). Concurrent lookups of the same name and type share one
query. Names compare case-insensitively, without a trailing dot.

This module knows nothing of SIP: it maps (name, type) to the matching answer records.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.logger import Logger
from twisted.names import dns, error
from twisted.python.failure import Failure

# IResolver method for each record type this cache serves.
_METHODS = {
    dns.NAPTR: "lookupNamingAuthorityPointer",
    dns.SRV: "lookupService",
    dns.A: "lookupAddress",
    dns.AAAA: "lookupIPV6Address",
}

# Retransmission schedule of each query (seconds): 9 s in all, well inside a 32 s SIP transaction.
DEFAULT_DNS_TIMEOUT = (1, 3, 5)


class DnsLookupError(Exception):
    """A lookup failed for a transient reason (timeout, SERVFAIL, REFUSED ...); it was not cached."""


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float
    records: tuple[dns.RRHeader, ...]


def normalize_name(name: str) -> str:
    """A DNS name as a cache key: lower case, no trailing dot."""
    return name.rstrip(".").lower()


def _negative_ttl(authority: Sequence[Any], default: float) -> float:
    """RFC 2308 5: the negative TTL is min(SOA TTL, SOA MINIMUM) of the SOA in the authority section."""
    for rr in authority:
        if getattr(rr, "type", None) == dns.SOA:
            return float(min(rr.ttl, rr.payload.minimum))
    return default


def _is_negative(reason: BaseException) -> bool:
    """Whether an error says the name does not exist (an answer), as opposed to a failed attempt."""
    if isinstance(reason, error.DNSNameError | error.AuthoritativeDomainError):
        return True
    # A bare DomainError is what resolver chains and authorities give for "not here".
    return type(reason) is error.DomainError


class DnsCache:
    """Answers `(name, record type)` from a cache, asking an `IResolver` on a miss.

    Args:
        resolver: where to ask (a `twisted.names.client.Resolver`, or a fake in tests).
        clock: the clock entries expire on.
        max_entries: bound of the table; the least recently used entry is dropped beyond it.
        max_ttl: longest time any answer is kept, whatever its TTL.
        negative_ttl: how long a negative answer without an SOA is kept.
        max_negative_ttl: longest time a negative answer is kept.
        timeout: retransmission schedule passed to each query; None for the resolver's own default.
    """

    _log = Logger()

    def __init__(
        self,
        resolver: IResolver,
        clock: IReactorTime,
        *,
        max_entries: int = 1024,
        max_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        max_negative_ttl: float = 300.0,
        timeout: Sequence[int] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._resolver = resolver
        self._clock = clock
        self._max_entries = max_entries
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._max_negative_ttl = max_negative_ttl
        self._timeout = tuple(timeout) if timeout is not None else None
        self._entries: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._pending: dict[tuple[str, int], list[Deferred[list[dns.RRHeader]]]] = {}
        self.queries = 0  # lookups that went to the resolver
        self.hits = 0  # lookups answered from the table

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, name: str, rtype: int) -> Deferred[list[dns.RRHeader]]:
        """The answer records of type `rtype` for `name` (CNAMEs followed by the server are skipped).

        Returns:
            A Deferred firing with the records (an empty list for a negative answer), or failing with
            `DnsLookupError` when the attempt failed for a transient reason.
        """
        method = _METHODS.get(rtype)
        if method is None:
            return fail(ValueError(f"unsupported record type {rtype}"))
        key = (normalize_name(name), rtype)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires > self._clock.seconds():
                self._entries.move_to_end(key)
                self.hits += 1
                return succeed(list(entry.records))
            del self._entries[key]
        waiting = self._pending.get(key)
        if waiting is not None:
            shared: Deferred[list[dns.RRHeader]] = Deferred()
            waiting.append(shared)
            return shared
        self._pending[key] = []
        self.queries += 1
        try:
            lookup = getattr(self._resolver, method)
            d = lookup(key[0]) if self._timeout is None else lookup(key[0], timeout=self._timeout)
        except Exception:
            d = fail()
        d.addCallbacks(self._answered, self._failed, callbackArgs=(key,), errbackArgs=(key,))
        d.addBoth(self._release, key)
        return d

    def _answered(self, result: tuple[Sequence[Any], Sequence[Any], Sequence[Any]], key: tuple[str, int]):
        answers, authority, _additional = result
        records = tuple(rr for rr in answers if getattr(rr, "type", None) == key[1])
        if records:
            ttl = min(float(rr.ttl) for rr in records)
            self._store(key, records, min(ttl, self._max_ttl))
        else:
            self._store(key, (), min(_negative_ttl(authority, self._negative_ttl), self._max_negative_ttl))
        return list(records)

    def _failed(self, reason: Failure, key: tuple[str, int]) -> list[dns.RRHeader]:
        exc = reason.value
        if isinstance(exc, BaseException) and _is_negative(exc):
            authority: Sequence[Any] = ()
            message = exc.args[0] if exc.args else None
            if isinstance(message, dns.Message):
                authority = message.authority
            ttl = min(_negative_ttl(authority, self._negative_ttl), self._max_negative_ttl)
            self._store(key, (), ttl)
            return []
        self._log.debug(
            "DNS {type} lookup of {name} failed: {why}",
            type=dns.QUERY_TYPES.get(key[1]),
            name=key[0],
            why=exc,
        )
        raise DnsLookupError(f"{dns.QUERY_TYPES.get(key[1], key[1])} lookup of {key[0]} failed: {exc!r}")

    def _release(self, result: Any, key: tuple[str, int]) -> Any:
        for waiter in self._pending.pop(key, ()):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(list(result))
        return result

    def _store(self, key: tuple[str, int], records: tuple[dns.RRHeader, ...], ttl: float) -> None:
        if ttl <= 0:
            return
        self._entries[key] = _Entry(self._clock.seconds() + ttl, records)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
