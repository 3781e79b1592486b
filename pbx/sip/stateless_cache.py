"""The answers a stateless UAS gave, kept for the retransmissions of their requests (RFC 3261 8.2.7, 17.2.2).

A request answered without a transaction (the challenge to a request without credentials, a `503` that sheds
load) is retransmitted over UDP until its answer arrives (Timers A and E). Answering each retransmission
afresh redoes the work and, worse, gives a different answer (a new nonce, a new To tag): a client that has
already moved on to the next request takes the late, different answer for an unexpected response and gives up
its transaction. This cache gives the retransmission the very bytes the first copy got, like a completed
server transaction would (RFC 3261 17.2.2), without keeping a transaction or redoing the work.

Entries are keyed by the request's transaction key (RFC 3261 17.2.3: top Via branch, sent-by and method) and
its source address; they live `lifetime` seconds (64*T1, the time a client may retransmit: Timers B/F) and
there are at most `max_entries` of them (the oldest go first). Expiry is checked on access and when adding: no
timer is kept.

This module knows nothing of parsing, transports or the stack: `pbx.sip.stack.SipStack` fills and asks it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IReactorTime

Key = tuple[Any, ...]


class StatelessCache:
    """A bounded, time-limited map from a request's transaction key to the answer it got.

    Args:
        clock: the reactor's time.
        lifetime: seconds an answer is kept (64*T1 = 32 s by default).
        max_entries: answers kept at most; the oldest are forgotten first.

    Attributes:
        hits, misses, evicted, expired: running totals.
    """

    __slots__ = (
        "_clock",
        "_entries",
        "_purge_at",
        "evicted",
        "expired",
        "hits",
        "lifetime",
        "max_entries",
        "misses",
    )

    def __init__(self, clock: IReactorTime, *, lifetime: float = 32.0, max_entries: int = 8192) -> None:
        if lifetime <= 0 or max_entries < 1:
            raise ValueError("need lifetime > 0 and max_entries >= 1")
        self._clock = clock
        self.lifetime = lifetime
        self.max_entries = max_entries
        # key -> (expiry time, answer); insertion order is expiry order (one lifetime for all entries).
        self._entries: OrderedDict[Key, tuple[float, Any]] = OrderedDict()
        self.hits = self.misses = self.evicted = self.expired = 0
        self._purge_at = 0.0  # no entry expires before this (the oldest's expiry at the last purge, or less)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> Any:
        """The answer kept for `key`, or None (never kept, expired or evicted)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry[0] <= self._clock.seconds():
            del self._entries[key]
            self.expired += 1
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def discard(self, key: Key) -> None:
        """Forget the answer kept for `key`, if any (its request will not be retransmitted again)."""
        self._entries.pop(key, None)

    def put(self, key: Key, answer: Any) -> None:
        """Keep `answer` for `key` for `lifetime` seconds (replacing an earlier one)."""
        entries = self._entries
        now = self._clock.seconds()
        if now >= self._purge_at:
            self._purge(now)
        if entries.pop(key, None) is None and len(entries) >= self.max_entries:
            entries.popitem(last=False)
            self.evicted += 1
        entries[key] = (now + self.lifetime, answer)

    def _purge(self, now: float, budget: int = 8) -> None:
        """Forget up to `budget` expired entries from the old end (bounded work per `put`)."""
        entries = self._entries
        for _ in range(budget):
            if not entries:
                self._purge_at = now + self.lifetime  # what is put from now on expires no sooner
                return
            key, (expires, _) = next(iter(entries.items()))
            if expires > now:
                self._purge_at = expires
                return
            del entries[key]
            self.expired += 1

    def clear(self) -> None:
        self._entries.clear()
