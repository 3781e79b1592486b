"""The trunks' state written to the store (issue 17): every node's view of every trunk, for the others.

Call routing reads the trunks' live state in memory (`TrunksService.states`, no I/O per call). This service
listens to that state and writes each change to the store (`pbx.store.trunk_state`), one row per (tenant,
trunk, node), so that with a shared PostgreSQL store `pbx trunks status` shows the trunks of every node.
At start it writes every trunk's state once; a write that fails is logged once per trunk and retried with
the next change. The node's name is the host name and its first SIP port (`node_name`): the workers of
`--workers` differ by their ports.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from pbx.config import Config
from pbx.store.trunk_state import ITrunkStateStore, TrunkStatus
from pbx.trunks.state import TrunkState, TrunkStates

_log = Logger(namespace="pbx.trunks")


def node_name(config: Config, hostname: str | None = None) -> str:
    """`HOST:PORT`: this machine's name and the PBX's first SIP port."""
    listeners = config.sip.listeners
    port = listeners[0].port if listeners else 0
    return f"{hostname or socket.gethostname()}:{port}"


def status_of(state: TrunkState, node: str, now: float) -> TrunkStatus:
    """The row of `state` as `node` sees it at `now`."""
    return TrunkStatus(
        tenant=state.tenant, trunk=state.trunk, node=node, state=state.state, registration=state.registration,
        code=state.code, reason=state.reason, expires_at=state.expires_at, reachable=state.reachable,
        ping_code=state.ping_code, contact=state.contact, updated_at=now,
    )  # fmt: skip


class TrunkStoreService(service.Service):
    """Writes the trunks' state (`states`) to `store` at start and on every change that a row shows."""

    name = "trunk_store"

    def __init__(self, states: TrunkStates, store: Any, node: str, clock: Any) -> None:
        self.states = states
        self.store = store
        self.node = node
        self.clock = clock
        self._written: dict[tuple[str, str], TrunkStatus] = {}
        self._failing: set[tuple[str, str]] = set()
        states.on_change(self._changed)

    def startService(self) -> None:
        super().startService()
        for state in self.states:
            self._write(state)

    def _changed(self, state: TrunkState) -> None:
        if self.running:
            self._write(state)

    def _write(self, state: TrunkState) -> None:
        key = (state.tenant, state.trunk)
        row = status_of(state, self.node, self.clock.seconds())
        last = self._written.get(key)
        if last is not None and dataclasses.replace(last, updated_at=row.updated_at) == row:
            return  # nothing a row shows changed (a refresh timer moved)
        self._written[key] = row
        saved = self.store.save_trunk_status(row)
        saved.addCallbacks(lambda _: self._failing.discard(key), lambda failure: self._failed(key, failure))

    def _failed(self, key: tuple[str, str], failure: Any) -> None:
        self._written.pop(key, None)  # written again with the next change
        if key not in self._failing:
            self._failing.add(key)
            _log.warn(
                "Trunk {tenant}/{trunk}: its state could not be written to the store: {error}",
                tenant=key[0],
                trunk=key[1],
                error=failure.getErrorMessage(),
            )


def build_trunk_store(
    config: Config, states: TrunkStates, store: Any, clock: Any
) -> TrunkStoreService | None:
    """The writer of `states` to `store`; None without trunks or when the store keeps no trunk state."""
    if not len(states) or not ITrunkStateStore.providedBy(store):
        return None
    return TrunkStoreService(states, store, node_name(config), clock)
