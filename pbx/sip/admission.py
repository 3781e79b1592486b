"""Admission before parsing: per-source token buckets, blocks and raw-byte screens (Kamailio's `pike` idea).

Every datagram and every framed stream message is offered to `Admission.admit(host, data)` before the
parser sees it; every accepted TCP/TLS connection to `Admission.admit_connection(host)`. A source (an IP
address as the socket reports it) has a token bucket for messages and one for new connections, each with a
`rate` (tokens per second) and a `burst` (bucket size):

- a message or connection that finds its bucket empty is dropped and counted;
- a source whose drops keep coming is blocked: every drop adds a strike, strikes drain at the bucket's
  `rate`, and a source with more than `block_after` strikes is blocked for `block_duration` seconds. So a
  source sending at up to twice its rate only loses its excess; one sending at more (a flood) is blocked
  within `(burst + block_after) / (sending rate - rate)` seconds. Everything a blocked source sends is
  dropped at the cost of one dictionary look-up, and a block is logged once, when it starts (never per
  message); its end is counted and logged at debug level;
- others can block a source too (`block`): the brute-force guard after wrong passwords, or the screen below;
- sources in an exempt class (trusted networks) are never limited, screened nor blocked; other classes
  (trunks' networks) have their own limits.

A screen (`RawScreen`: a scanner's User-Agent, a request to a bare IP address the PBX does not serve) runs on
the raw bytes of messages from non-exempt sources; a message it rejects is dropped silently and, for a
scanner, its source is blocked.

Memory is bounded: at most `max_sources` buckets of each kind and blocked sources (a source spraying
addresses cannot grow the tables): every `sweep_interval` seconds (checked on the hot path; no timer is
left behind) buckets that have refilled and expired blocks are forgotten, and a full table first sweeps,
then forgets its oldest entries (a forgotten bucket is a full one; a forgotten block is counted).

Time comes from the injected clock. This module knows nothing of SIP beyond the raw screens (RFC 3261 7.1,
20.41, 25.1), of transports or of the PBX: the caller gives it source addresses and bytes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pbx.sip.screening import RawScreen

_log = Logger(namespace="pbx.sip.admission")

DEFAULT_MAX_SOURCES = 65536
"""Buckets (and blocked sources) kept at most, per kind."""
DEFAULT_SWEEP_INTERVAL = 10.0
"""Seconds between sweeps of refilled buckets and expired blocks."""

BlockObserver = Callable[[str, float, str], object]
"""Told of each new block: (source, seconds, reason)."""


@dataclass(frozen=True, slots=True)
class Limit:
    """A token bucket's shape.

    Attributes:
        rate: tokens added per second (messages or connections a source may sustain); 0: no limit.
        burst: the bucket's size (how many may come at once after a quiet spell); at least 1.
    """

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate must not be negative, not {self.rate!r}")
        if self.rate and self.burst < 1:
            raise ValueError(f"burst must be at least 1, not {self.burst!r}")


UNLIMITED = Limit(0.0, 0.0)


@dataclass(frozen=True, slots=True)
class SourceClass:
    """Sources with their own treatment.

    Attributes:
        name: for logs and counters ("trusted", "trunks").
        networks: CIDR strings of the class.
        messages: its message limit (`UNLIMITED` for none).
        connections: its connection limit.
        exempt: never limited, screened nor blocked (limits ignored).
    """

    name: str
    networks: tuple[str, ...]
    messages: Limit = UNLIMITED
    connections: Limit = UNLIMITED
    exempt: bool = False
    _parsed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "networks", tuple(self.networks))
        object.__setattr__(
            self, "_parsed", tuple(ipaddress.ip_network(n, strict=False) for n in self.networks)
        )

    def contains(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether `address` is in one of the class's networks."""
        return any(address in network for network in self._parsed)


class _Bucket:
    """One source's bucket: tokens, when last updated, strikes (drops not yet forgiven), since when it has
    had strikes, and its shape."""

    __slots__ = ("burst", "over_since", "rate", "screened", "stamp", "strikes", "tokens")

    def __init__(self, limit: Limit, now: float, screened: bool) -> None:
        self.rate = limit.rate
        self.burst = limit.burst
        self.tokens = limit.burst
        self.stamp = now
        self.strikes = 0.0
        self.over_since = now
        self.screened = screened


class Admission:
    """Per-source rate limits, blocks and screens, asked before anything is parsed.

    Args:
        clock: time source.
        messages: the message limit of sources in no class.
        connections: the new-connection limit of sources in no class.
        block_after: strikes (drops not yet forgiven at the bucket's rate) past which a source is blocked.
        block_duration: seconds a block for flooding lasts.
        classes: source classes, the first whose networks hold a source applies.
        screen: raw-byte checks for messages of screened sources, or None.
        max_sources: the most buckets of each kind, and blocked sources, kept.
        sweep_interval: seconds between sweeps.
        enabled: False admits everything and blocks nothing (`block` included), for a PBX behind an SBC.

    Attributes:
        observers: told of each new block (`BlockObserver`), e.g. to push it into an nftables set.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        messages: Limit,
        connections: Limit,
        block_after: float,
        block_duration: float,
        classes: Sequence[SourceClass] = (),
        screen: RawScreen | None = None,
        max_sources: int = DEFAULT_MAX_SOURCES,
        sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
        enabled: bool = True,
    ) -> None:
        if max_sources < 8:
            raise ValueError("max_sources must be at least 8")
        self._clock = clock
        self._messages = messages
        self._connections = connections
        self._block_after = block_after
        self._block_duration = block_duration
        self._classes = tuple(classes)
        self._screen = screen
        self._max_sources = max_sources
        self._sweep_interval = sweep_interval
        self.enabled = enabled
        self._buckets: dict[str, _Bucket] = {}
        self._connection_buckets: dict[str, _Bucket] = {}
        self._blocked: dict[str, float] = {}  # source -> end of its block (insertion order ~ end order)
        self._exempt_sources: dict[str, bool] = {}  # classification memo for `block` (bounded)
        self._next_sweep = clock.seconds() + sweep_interval
        self.observers: list[BlockObserver] = []
        # Counters (attributes, not a dict: they are bumped on the hot path); `counters` gives a dict.
        self.dropped_rate = 0
        self.dropped_blocked = 0
        self.dropped_screened = 0
        self.connections_refused = 0
        self.blocks = 0
        self.unblocks = 0
        self.evicted_sources = 0
        self.evicted_blocks = 0

    # -- the hot path --------------------------------------------------------------------------------------

    def admit(self, host: str, data: bytes) -> bool:
        """Whether a message (`data`, raw) from source address `host` may go on to the parser."""
        if not self.enabled:
            return True
        now = self._clock.seconds()
        if now >= self._next_sweep:
            self.sweep()
        blocked = self._blocked
        if blocked:
            until = blocked.get(host)
            if until is not None:
                if now < until:
                    self.dropped_blocked += 1
                    return False
                self._unblock(host)
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._new_bucket(self._buckets, host, now, connections=False)
        rate = bucket.rate
        if not rate:  # exempt, or a class without a limit
            return self._screened(host, data) if bucket.screened else True
        elapsed = now - bucket.stamp
        tokens = bucket.tokens
        if elapsed > 0.0:
            bucket.stamp = now
            tokens += elapsed * rate
            if tokens > bucket.burst:
                tokens = bucket.burst
            if bucket.strikes:
                strikes = bucket.strikes - elapsed * rate
                bucket.strikes = strikes if strikes > 0.0 else 0.0
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            if bucket.screened:
                return self._screened(host, data)
            return True
        bucket.tokens = tokens
        self.dropped_rate += 1
        if not bucket.strikes:
            bucket.over_since = now
        bucket.strikes += 1.0
        if bucket.strikes > self._block_after:
            over = now - bucket.over_since
            self._block(host, now, self._block_duration, f"more than {rate:g} messages/s for {over:.2f} s")
        return False

    def admit_connection(self, host: str) -> bool:
        """Whether a new TCP/TLS connection from `host` may be accepted."""
        if not self.enabled:
            return True
        now = self._clock.seconds()
        if now >= self._next_sweep:
            self.sweep()
        until = self._blocked.get(host)
        if until is not None:
            if now < until:
                self.connections_refused += 1
                return False
            self._unblock(host)
        bucket = self._connection_buckets.get(host)
        if bucket is None:
            bucket = self._new_bucket(self._connection_buckets, host, now, connections=True)
        rate = bucket.rate
        if not rate:
            return True
        elapsed = now - bucket.stamp
        if elapsed > 0.0:
            bucket.stamp = now
            bucket.tokens = min(bucket.burst, bucket.tokens + elapsed * rate)
            if bucket.strikes:
                bucket.strikes = max(0.0, bucket.strikes - elapsed * rate)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        self.connections_refused += 1
        if not bucket.strikes:
            bucket.over_since = now
        bucket.strikes += 1.0
        if bucket.strikes > bucket.burst:
            over = now - bucket.over_since
            self._block(
                host, now, self._block_duration, f"more than {rate:g} new connections/s for {over:.2f} s"
            )
        return False

    def _screened(self, host: str, data: bytes) -> bool:
        assert self._screen is not None
        verdict = self._screen.check(data)
        if verdict is None:
            return True
        self.dropped_screened += 1
        if verdict.block:
            self._block(host, self._clock.seconds(), self._block_duration, verdict.reason)
        return False

    # -- blocks --------------------------------------------------------------------------------------------

    def is_blocked(self, host: str) -> bool:
        """Whether `host` is blocked now (nothing is counted)."""
        until = self._blocked.get(host)
        return until is not None and self._clock.seconds() < until

    @property
    def blocked_sources(self) -> list[str]:
        """The sources blocked now, sorted."""
        now = self._clock.seconds()
        return sorted(host for host, until in self._blocked.items() if until > now)

    def block(self, host: str, duration: float, reason: str, *, log: bool = True) -> bool:
        """Block `host` for `duration` seconds (unless exempt, or blocked for longer already); True if it
        is blocked now. `log` False: the caller has logged the block already (the brute-force guard)."""
        if not self.enabled or self._is_exempt(host):
            return False
        now = self._clock.seconds()
        self._block(host, now, duration, reason, log=log)
        return self._blocked.get(host, 0.0) > now

    def _block(self, host: str, now: float, duration: float, reason: str, *, log: bool = True) -> None:
        until = now + duration
        current = self._blocked.get(host)
        if current is not None and current >= until:
            return
        blocked = self._blocked
        if current is None and len(blocked) >= self._max_sources:
            self._sweep_blocks(now)
            while len(blocked) >= self._max_sources:
                del blocked[next(iter(blocked))]  # the oldest block (soonest to end)
                self.evicted_blocks += 1
        if current is not None:
            del blocked[host]  # re-inserted at the end: the table stays roughly in order of ending
        blocked[host] = until
        self._buckets.pop(host, None)  # the block does the limiting now; a fresh bucket after it
        self._connection_buckets.pop(host, None)
        if current is None or current <= now:
            self.blocks += 1
            if log:
                _log.warn(
                    "Blocked {source} for {duration:g} s: {reason}",
                    source=host,
                    duration=duration,
                    reason=reason,
                )
            for observer in self.observers:
                try:
                    observer(host, duration, reason)
                except Exception:
                    _log.failure("A block observer failed for {source}", source=host)

    def _unblock(self, host: str) -> None:
        del self._blocked[host]
        self.unblocks += 1
        _log.debug("Unblocked {source} (block expired)", source=host)

    # -- bookkeeping ---------------------------------------------------------------------------------------

    def _classify(self, host: str) -> SourceClass | None:
        if not self._classes:
            return None
        try:
            address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return None
        for source_class in self._classes:
            if source_class.contains(address):
                return source_class
        return None

    def _is_exempt(self, host: str) -> bool:
        exempt = self._exempt_sources.get(host)
        if exempt is None:
            source_class = self._classify(host)
            exempt = source_class is not None and source_class.exempt
            if len(self._exempt_sources) >= self._max_sources:
                self._exempt_sources.clear()
            self._exempt_sources[host] = exempt
        return exempt

    def _new_bucket(self, table: dict[str, _Bucket], host: str, now: float, *, connections: bool) -> _Bucket:
        source_class = self._classify(host)
        if source_class is None:
            limit, screened = (self._connections if connections else self._messages), self._screen is not None
        elif source_class.exempt:
            limit, screened = UNLIMITED, False
        else:
            limit = source_class.connections if connections else source_class.messages
            screened = self._screen is not None
        if len(table) >= self._max_sources:
            self._sweep_buckets(table, now)
            if len(table) >= self._max_sources:
                # Everything is active (addresses sprayed): forget the oldest eighth (a full bucket each).
                drop = max(1, self._max_sources // 8)
                for key in [k for _, k in zip(range(drop), table, strict=False)]:
                    del table[key]
                self.evicted_sources += drop
        bucket = table[host] = _Bucket(limit, now, screened)
        return bucket

    def sweep(self) -> None:
        """Forget refilled buckets and expired blocks (called on the hot path every `sweep_interval`)."""
        now = self._clock.seconds()
        self._next_sweep = now + self._sweep_interval
        self._sweep_buckets(self._buckets, now)
        self._sweep_buckets(self._connection_buckets, now)
        self._sweep_blocks(now)

    @staticmethod
    def _sweep_buckets(table: dict[str, _Bucket], now: float) -> None:
        idle = [host for host, b in table.items() if _refilled(b, now)]
        for host in idle:
            del table[host]

    def _sweep_blocks(self, now: float) -> None:
        expired = [host for host, until in self._blocked.items() if until <= now]
        for host in expired:
            self._unblock(host)

    @property
    def counters(self) -> dict[str, int]:
        """Running totals, and the gauges `sources` (buckets kept) and `blocked` (blocks kept)."""
        return {
            "dropped_rate": self.dropped_rate,
            "dropped_blocked": self.dropped_blocked,
            "dropped_screened": self.dropped_screened,
            "connections_refused": self.connections_refused,
            "blocks": self.blocks,
            "unblocks": self.unblocks,
            "evicted_sources": self.evicted_sources,
            "evicted_blocks": self.evicted_blocks,
            "sources": len(self._buckets) + len(self._connection_buckets),
            "blocked": len(self._blocked),
        }


def _refilled(bucket: _Bucket, now: float) -> bool:
    """Whether a bucket is as good as a new one now (full, no strikes): it may be forgotten."""
    if not bucket.rate:
        return True
    refill = (now - bucket.stamp) * bucket.rate
    return bucket.tokens + refill >= bucket.burst and bucket.strikes <= refill


def classes_from(
    trusted: Iterable[str], limited: Iterable[tuple[str, Iterable[str], Limit, Limit]] = ()
) -> list[SourceClass]:
    """Source classes: `trusted` networks exempt, then each (name, networks, messages, connections)."""
    found = []
    trusted = tuple(trusted)
    if trusted:
        found.append(SourceClass("trusted", trusted, exempt=True))
    for name, networks, messages, connections in limited:
        networks = tuple(networks)
        if networks:
            found.append(SourceClass(name, networks, messages, connections))
    return found
