"""One registering node per trunk as a service (issue 17): `pbx.trunks.lease.TrunkLeases` on the store.

Built only with a PostgreSQL `[store]` (several nodes) and `[store] trunk_lease` > 0, for the trunks that
register. Started, it tries every such trunk's lease (the holder registers, the others stand by); on a drain
(`before_drain`) or a stop it gives the trunks up: unregisters those it holds and releases their leases, so
another node registers them at its next try (within a third of `trunk_lease`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, succeed

from pbx.config import Config
from pbx.service.trunk_store import node_name
from pbx.store.trunk_lease import ITrunkLeaseStore
from pbx.trunks.lease import TrunkLeases


class TrunkLeaseService(service.Service):
    """Starts the leases; gives them up on a drain or a stop."""

    name = "trunk_leases"

    def __init__(self, leases: TrunkLeases) -> None:
        self.leases = leases
        self._given_up: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self.leases.start()

    def give_up(self) -> Deferred[None]:
        if self._given_up is None:
            self._given_up = self.leases.give_up()
        return self._given_up

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.give_up() if self._given_up is None else succeed(None)

    def before_drain(self, drain: Callable[[], Deferred[Any]]) -> Callable[[], Deferred[Any]]:
        """`drain` preceded by giving the trunks up (not waited for: the calls drain meanwhile)."""

        def drain_after_giving_up() -> Deferred[Any]:
            self.give_up()
            return drain()

        return drain_after_giving_up


def build_trunk_leases(config: Config, trunks: Any, store: Any, clock: Any) -> TrunkLeaseService | None:
    """The leases of the registering trunks of `trunks` (a `TrunksService`), or None: no PostgreSQL store,
    `trunk_lease` 0, no registering trunk, or a store without leases."""
    keys = list(trunks.registrations.clients)
    ttl = config.store.trunk_lease
    if not config.store.postgresql or ttl <= 0 or not keys or not ITrunkLeaseStore.providedBy(store):
        return None
    leases = TrunkLeases(store, clock, trunks.registrations, keys, node_name(config), ttl=ttl)
    return TrunkLeaseService(leases)
