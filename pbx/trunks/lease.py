"""One registering node per trunk (issue 17): the lease on each trunk's registration, in the shared store.

With several PBX nodes on one store, each registering trunk would otherwise be registered by every node (one
binding per node at the carrier). `TrunkLeases` makes one node the trunk's registrant:

- every `renew` seconds (a third of the lease by default) each node tries to take or renew the trunk's lease
  (`take_trunk_lease`: a conditional write, see `pbx.store.trunk_lease`) for `ttl` seconds;
- the node that holds it registers the trunk (`TrunkRegistrations.take`); the others stand by
  (`TrunkRegistrations.standby`: no REGISTER of theirs, their own binding removed if they had one, the trunk
  shown as `standby` with the holder's name). Standing by, a node still sends calls out on the trunk: it has
  the credentials and answers the carrier's challenges itself;
- a holder that dies stops renewing: once its lease has expired the next node to try takes it (within `ttl`
  + `renew` seconds of the last renewal). A holder that stops or drains (`give_up`) releases its leases and
  unregisters, so another node takes them at its next try;
- a holder that cannot reach the store stops registering before its lease can lapse (when the next renewal
  could come too late), since another node may then take it: two bindings for a moment are better avoided
  than a gap, but a holder that cannot renew must assume it lost.

Times for the leases are the clock's seconds (the reactor's: the wall clock, epoch seconds); the nodes' clocks
must agree to well within `ttl`. This module knows the store by a Protocol and the registrations by theirs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

DEFAULT_TTL = 30.0
"""Seconds a lease lasts unless renewed."""


class LeaseStore(Protocol):
    """What `TrunkLeases` needs of the store (`pbx.store.trunk_lease.ITrunkLeaseStore`)."""

    def take_trunk_lease(
        self, tenant: str, trunk: str, node: str, now: float, until: float
    ) -> Deferred[Any]: ...

    def release_trunk_lease(self, tenant: str, trunk: str, node: str) -> Deferred[None]: ...


class LeasedRegistrations(Protocol):
    """What `TrunkLeases` needs of the registrations (`pbx.trunks.registration.TrunkRegistrations`)."""

    leased: set[tuple[str, str]]

    def take(self, tenant: str, trunk: str, holder: str) -> None: ...

    def standby(self, tenant: str, trunk: str, holder: str | None) -> Deferred[None]: ...


class TrunkLeases:
    """The leases of `trunks` ((tenant, trunk) keys of registering trunks) for this `node`.

    Args:
        store: where the leases are (`LeaseStore`).
        clock: the clock of the timers and of the leases' times.
        registrations: told to register or stand by; `leased` gets every key here (so that its `start`
            leaves these trunks to the leases).
        trunks: the registering trunks' (tenant, trunk) keys.
        node: this node's name (`pbx.service.trunk_store.node_name`).
        ttl: seconds a lease lasts; `renew`: seconds between tries (default `ttl` / 3).
    """

    _log = Logger(namespace="pbx.trunks")

    def __init__(
        self,
        store: LeaseStore,
        clock: IReactorTime,
        registrations: LeasedRegistrations,
        trunks: Iterable[tuple[str, str]],
        node: str,
        *,
        ttl: float = DEFAULT_TTL,
        renew: float | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.registrations = registrations
        self.keys = list(trunks)
        self.node = node
        self.ttl = ttl
        self.renew = renew if renew is not None else ttl / 3
        self.held: dict[tuple[str, str], float] = {}
        """The trunks whose lease this node holds, and until when (as far as it knows)."""
        self.holders: dict[tuple[str, str], str | None] = {}
        """Who holds each trunk's lease as last seen (None: not known yet, or the store failed)."""
        self._timers: dict[tuple[str, str], IDelayedCall] = {}
        self._failing: set[tuple[str, str]] = set()
        self._running = False
        registrations.leased.update(self.keys)

    def start(self) -> None:
        """Try every trunk's lease now, then every `renew` seconds."""
        self._running = True
        for key in self.keys:
            self._try(key)

    def give_up(self) -> Deferred[None]:
        """Stop trying; unregister the trunks this node holds and release their leases (for a stop or a
        drain: another node takes them at its next try). Fires when done (errors are logged)."""
        self._running = False
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        held, self.held = list(self.held), {}
        steps: list[Deferred[Any]] = []
        for tenant, trunk in held:
            self.holders[(tenant, trunk)] = None
            # Released first, not after the unregister's answer: the store may close meanwhile (a stop).
            steps.append(self._release(tenant, trunk))
            steps.append(self.registrations.standby(tenant, trunk, None))
        done: Deferred[Any] = gatherResults(steps, consumeErrors=True)
        finished: Deferred[None] = Deferred()
        done.addBoth(lambda _: finished.callback(None))
        return finished

    # -- internals ---------------------------------------------------------------------------------------

    def _release(self, tenant: str, trunk: str) -> Deferred[None]:
        released = self.store.release_trunk_lease(tenant, trunk, self.node)
        released.addErrback(
            lambda failure: self._log.warn(
                "Trunk {tenant}/{trunk}: its registration lease could not be released: {error}",
                tenant=tenant,
                trunk=trunk,
                error=failure.getErrorMessage(),
            )
        )
        return released

    def _try(self, key: tuple[str, str]) -> None:
        self._timers.pop(key, None)
        if not self._running:
            return
        now = self.clock.seconds()
        taking = self.store.take_trunk_lease(key[0], key[1], self.node, now, now + self.ttl)
        taking.addCallbacks(lambda lease: self._taken(key, now, lease), lambda f: self._failed(key, now, f))
        taking.addErrback(lambda f: self._log.failure("Trunk lease handling failed", f))
        taking.addBoth(lambda _: self._schedule(key))

    def _schedule(self, key: tuple[str, str]) -> None:
        if self._running and key not in self._timers:
            self._timers[key] = self.clock.callLater(self.renew, self._try, key)

    def _taken(self, key: tuple[str, str], asked_at: float, lease: Any) -> None:
        if not self._running:
            return
        if key in self._failing:
            self._failing.discard(key)
            self._log.info(
                "Trunk {tenant}/{trunk}: the registration lease is readable again",
                tenant=key[0],
                trunk=key[1],
            )
        holder: str = lease.node
        previous = self.holders.get(key, "")
        self.holders[key] = holder
        if holder == self.node:
            self.held[key] = asked_at + self.ttl  # counted from the asking: never later than the store's
            if previous != holder:
                self._log.info("Trunk {tenant}/{trunk}: this node registers it", tenant=key[0], trunk=key[1])
            self.registrations.take(key[0], key[1], holder)
            return
        if self.held.pop(key, None) is not None:
            self._log.warn(
                "Trunk {tenant}/{trunk}: node {holder} took its registration over",
                tenant=key[0],
                trunk=key[1],
                holder=holder,
            )
        if previous != holder:
            self.registrations.standby(key[0], key[1], holder)

    def _failed(self, key: tuple[str, str], asked_at: float, failure: Failure) -> None:
        if key not in self._failing:
            self._failing.add(key)
            self._log.warn(
                "Trunk {tenant}/{trunk}: the registration lease could not be taken or renewed: {error}",
                tenant=key[0],
                trunk=key[1],
                error=failure.getErrorMessage(),
            )
        until = self.held.get(key)
        if until is not None and self.clock.seconds() + self.renew >= until:
            # The next try might come after the lease lapsed: another node may register the trunk by then.
            del self.held[key]
            self.holders[key] = None
            self.registrations.standby(key[0], key[1], None)
