"""Brute-force blocking inside the PBX: count wrong digest responses, block the sources that send them.

Rules (issue: "not log-scraping"):
- Only a *wrong* answer to a challenge is a failure. A first request without credentials, or a stale nonce,
  is the normal way every phone starts, and never counts (fail2ban filters that count 401s ban real phones).
- `max_failures` failures from one source address within `window` seconds block that source for
  `block_duration` seconds: everything it sends is silently dropped (the stack asks `is_blocked`).
- An account attacked from many addresses: once it has had `max_account_failures` failures within the window,
  any source that fails again for it is blocked at once.
- Sources in `trusted` networks are never blocked; phones at other addresses are never affected.
- Blocks and unblocks are logged and counted. Memory is bounded (oldest entries evicted).
- `observers` are told of each new block (source, seconds, reason): the PBX hands it to its admission
  (`pbx.sip.admission`), which then drops the source's messages before they are parsed.

Time comes from the injected clock. This module knows nothing of SIP messages.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

_MAX_TRACKED = 100_000


class BruteForceGuard:
    """Counts authentication failures per source and per account, and blocks sources.

    Args:
        clock: time source.
        max_failures: failures from one source within `window` that block it.
        window: seconds over which failures are counted.
        block_duration: seconds a block lasts.
        max_account_failures: failures for one account within `window` after which every further failing
            source for that account is blocked at its first failure.
        trusted: networks (CIDR strings) never blocked.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_failures: int = 5,
        window: float = 60.0,
        block_duration: float = 600.0,
        max_account_failures: int = 20,
        trusted: Iterable[str] = (),
    ) -> None:
        self._clock = clock
        self._max_failures = max_failures
        self._window = window
        self._block_duration = block_duration
        self._max_account_failures = max_account_failures
        self._trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted)
        self._source_failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._account_failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._blocked: dict[str, float] = {}  # source -> unblock time
        self.counters = {"failures": 0, "blocks": 0, "unblocks": 0, "dropped": 0}
        self.observers: list[Callable[[str, float, str], object]] = []

    def is_blocked(self, source: str) -> bool:
        """Whether messages from `source` must be dropped now (counts each drop)."""
        until = self._blocked.get(source)
        if until is None:
            return False
        if self._clock.seconds() >= until:
            del self._blocked[source]
            self.counters["unblocks"] += 1
            self._log.info("Unblocked {source} (block expired)", source=source)
            return False
        self.counters["dropped"] += 1
        return True

    @property
    def blocked_sources(self) -> list[str]:
        now = self._clock.seconds()
        return sorted(s for s, until in self._blocked.items() if until > now)

    def failure(self, source: str, account: str) -> bool:
        """Record a wrong digest response from `source` for `account`; True if the source is now blocked."""
        self.counters["failures"] += 1
        now = self._clock.seconds()
        if self._blocked.get(source, 0.0) > now:
            return True  # still blocked (a request that was in flight when the block began)
        source_count = self._record(self._source_failures, source, now, self._max_failures)
        account_count = self._record(self._account_failures, account, now, self._max_account_failures)
        if self._is_trusted(source):
            return False
        if source_count >= self._max_failures:
            reason = f"{source_count} failed authentications in {self._window:g} s"
        elif account_count > self._max_account_failures:
            reason = f"account {account} under attack ({account_count} failures in {self._window:g} s)"
        else:
            return False
        self._block(source, now, reason)
        return True

    def _record(self, table: OrderedDict[str, deque[float]], key: str, now: float, keep: int) -> int:
        times = table.get(key)
        if times is None:
            times = table[key] = deque(maxlen=max(keep + 1, 2))
            if len(table) > _MAX_TRACKED:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        times.append(now)
        while times and times[0] <= now - self._window:
            times.popleft()
        return len(times)

    def _block(self, source: str, now: float, reason: str) -> None:
        if source in self._blocked and self._blocked[source] > now:
            return
        self._blocked[source] = now + self._block_duration
        self._source_failures.pop(source, None)
        self.counters["blocks"] += 1
        self._log.warn(
            "Blocked {source} for {duration:g} s: {reason}",
            source=source,
            duration=self._block_duration,
            reason=reason,
        )
        for observer in self.observers:
            try:
                observer(source, self._block_duration, reason)
            except Exception:
                self._log.failure("A block observer failed for {source}", source=source)
        if len(self._blocked) > _MAX_TRACKED:
            expired = [s for s, until in self._blocked.items() if until <= now]
            for s in expired:
                del self._blocked[s]

    def _is_trusted(self, source: str) -> bool:
        if not self._trusted:
            return False
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)
