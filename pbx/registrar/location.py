"""The location service (RFC 3261 10.3): who is registered where, in memory, made durable by a store.

Lookups are served from an in-memory index (tenant, aor) -> {contact: Binding}; every change is applied to
the index at once and handed to an `ILocationStore`, whose Deferred fires when the change is durable (the
registrar answers `200` only then). Bindings expire on the injected clock: one timer, armed for the earliest
expiry (a heap with lazy deletion), however many bindings there are. At start-up `load` rebuilds the index
from the store, so every unexpired binding is routable again after a crash.

This module knows nothing of SIP messages or authentication: the registrar decides, this remembers.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbx.store import Binding, BindingChange, DeleteAor, DeleteBinding, ILocationStore, PutBinding

Key = tuple[str, str]  # (tenant, aor)


class LocationService:
    """In-memory bindings, durable through a store, expiring on the clock.

    Args:
        clock: time source; `clock.seconds()` is wall-clock epoch time with the real reactor.
        store: where changes are made durable.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, store: ILocationStore) -> None:
        self._clock = clock
        self._store = store
        self._index: dict[Key, dict[str, Binding]] = {}
        self._heap: list[tuple[float, str, str, str]] = []
        self._timer: IDelayedCall | None = None
        self._timer_at = 0.0
        self._count = 0
        self._listeners: list[Callable[[Binding], None]] = []
        self._added: list[Callable[[Binding], None]] = []

    def __len__(self) -> int:
        return self._count

    def on_removed(self, listener: Callable[[Binding], None]) -> None:
        """Call `listener(binding)` whenever a binding expires or is removed."""
        self._listeners.append(listener)

    def on_added(self, listener: Callable[[Binding], None]) -> None:
        """Call `listener(binding)` once a new contact's binding is durable (not for refreshes)."""
        self._added.append(listener)

    # -- reading -----------------------------------------------------------------------------------------

    def lookup(self, tenant: str, aor: str) -> list[Binding]:
        """The unexpired bindings of an address-of-record, most preferred first (q, then most recent)."""
        bindings = self._index.get((tenant, aor))
        if not bindings:
            return []
        now = self._clock.seconds()
        live = [b for b in bindings.values() if b.expires_at > now]
        live.sort(key=lambda b: (-b.q, -b.registered_at))
        return live

    def contacts(self, tenant: str, aor: str) -> dict[str, Binding]:
        """The bindings of an address-of-record keyed by contact (a copy; expired ones may linger briefly)."""
        return dict(self._index.get((tenant, aor), {}))

    def __iter__(self) -> Iterator[Binding]:
        for bindings in list(self._index.values()):
            yield from list(bindings.values())

    # -- changing ----------------------------------------------------------------------------------------

    def apply(self, tenant: str, aor: str, puts: Sequence[Binding], deletes: Iterable[str]) -> Deferred[None]:
        """Put and delete bindings of one address-of-record; the Deferred fires when durable.

        The change is visible at once (lookups see it while the store commits). If the store fails, it is
        undone in memory as far as nothing changed those contacts since, and the Deferred fails: what was
        never acknowledged is not routed to either."""
        changes: list[BindingChange] = []
        bindings = self._index.setdefault((tenant, aor), {})
        undo: list[tuple[str, Binding | None, Binding | None]] = []  # (contact, before, after)
        for contact in deletes:
            old = bindings.pop(contact, None)
            if old is not None:
                self._count -= 1
                self._notify(old)
                undo.append((contact, old, None))
            changes.append(DeleteBinding(tenant, aor, contact))
        added: list[Binding] = []
        for binding in puts:
            before = bindings.get(binding.contact)
            if before is None:
                self._count += 1
                added.append(binding)
            bindings[binding.contact] = binding
            self._schedule(binding)
            changes.append(PutBinding(binding))
            undo.append((binding.contact, before, binding))
        if not bindings:
            del self._index[(tenant, aor)]
        d = self._store.apply(changes)
        if undo:
            d.addErrback(self._undo, tenant, aor, undo)
        if added and self._added:
            d.addCallback(self._tell_added, added)
        return d

    def _tell_added(self, result: None, added: list[Binding]) -> None:
        for binding in added:
            for listener in self._added:
                try:
                    listener(binding)
                except Exception:
                    self._log.failure("Error in a binding-added listener")
        return result

    def _undo(
        self, failure: Failure, tenant: str, aor: str, undo: list[tuple[str, Binding | None, Binding | None]]
    ) -> Failure:
        """Put back what a failed store change replaced, where that change is still the current state."""
        bindings = self._index.setdefault((tenant, aor), {})
        for contact, before, after in reversed(undo):
            if bindings.get(contact) is not after:
                continue  # changed again since: the newer change stands
            if after is not None:
                del bindings[contact]
                self._count -= 1
            if before is not None:
                bindings[contact] = before
                self._count += 1
                self._schedule(before)
        if not bindings:
            del self._index[(tenant, aor)]
        self._log.warn(
            "Could not store the registration of {aor}@{tenant}; undone in memory: {error}",
            aor=aor,
            tenant=tenant,
            error=failure.getErrorMessage(),
        )
        return failure

    def remove_aor(self, tenant: str, aor: str) -> Deferred[None]:
        for binding in self._index.pop((tenant, aor), {}).values():
            self._count -= 1
            self._notify(binding)
        return self._store.apply([DeleteAor(tenant, aor)])

    def remove(self, binding: Binding) -> Deferred[None]:
        """Remove one binding if it is still the current one for its contact (keep-alive failure)."""
        current = self._index.get((binding.tenant, binding.aor), {}).get(binding.contact)
        if current is not binding:
            return succeed(None)
        return self.apply(binding.tenant, binding.aor, (), (binding.contact,))

    def load(self) -> Deferred[int]:
        """Rebuild the index from the store (bindings added meanwhile win); fires with the count loaded."""

        def loaded(bindings: list[Binding]) -> int:
            n = 0
            for binding in bindings:
                slot = self._index.setdefault((binding.tenant, binding.aor), {})
                if binding.contact not in slot:
                    slot[binding.contact] = binding
                    self._count += 1
                    self._schedule(binding)
                    n += 1
            self._log.info("Location service loaded {n} bindings", n=n)
            return n

        return self._store.load(self._clock.seconds()).addCallback(loaded)

    def replace(self, tenant: str, aor: str, stored: Sequence[Binding]) -> None:
        """Make the bindings of an address-of-record what the store holds now, without writing it back: the
        view of a registration another PBX process sharing the store took, changed or removed (a store's
        change feed, `pbx.store.postgres.BindingFeed`). Removed contacts are told to `on_removed` listeners,
        new ones to `on_added`."""
        now = self._clock.seconds()
        current = self._index.get((tenant, aor), {})
        fresh = {b.contact: b for b in stored if b.expires_at > now}
        for contact, old in list(current.items()):
            if contact not in fresh:
                del current[contact]
                self._count -= 1
                self._notify(old)
        added = []
        for contact, binding in fresh.items():
            before = current.get(contact)
            if before == binding:
                continue
            if before is None:
                self._count += 1
                added.append(binding)
            current[contact] = binding
            self._schedule(binding)
        if current:
            self._index[(tenant, aor)] = current
        else:
            self._index.pop((tenant, aor), None)
        if added and self._added:
            self._tell_added(None, added)

    def purge_store(self) -> Deferred[int]:
        """Delete expired rows from the store (housekeeping; memory expires on its own)."""
        return self._store.purge_expired(self._clock.seconds())

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- expiry ------------------------------------------------------------------------------------------

    def _schedule(self, binding: Binding) -> None:
        heapq.heappush(self._heap, (binding.expires_at, binding.tenant, binding.aor, binding.contact))
        if len(self._heap) > 2 * self._count + 64:
            self._compact()
        if self._timer is None or binding.expires_at < self._timer_at:
            self._arm()

    def _compact(self) -> None:
        """Drop heap entries of refreshed or removed bindings (lazy deletion would keep one per refresh)."""
        live = []
        for entry in self._heap:
            bindings = self._index.get((entry[1], entry[2]))
            binding = bindings.get(entry[3]) if bindings else None
            if binding is not None and binding.expires_at == entry[0]:
                live.append(entry)
        heapq.heapify(live)
        self._heap = live

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._heap:
            return
        self._timer_at = self._heap[0][0]
        delay = max(0.0, self._timer_at - self._clock.seconds())
        self._timer = self._clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires_at, tenant, aor, contact = heapq.heappop(heap)
            bindings = self._index.get((tenant, aor))
            binding = bindings.get(contact) if bindings else None
            if binding is None or binding.expires_at != expires_at:
                continue  # refreshed or removed since: a stale heap entry
            del bindings[contact]  # type: ignore[union-attr]
            self._count -= 1
            if not bindings:
                del self._index[(tenant, aor)]
            self._log.info(
                "Binding expired: {aor}@{tenant} {contact}", aor=aor, tenant=tenant, contact=contact
            )
            self._notify(binding)
        self._arm()

    def _notify(self, binding: Binding) -> None:
        for listener in self._listeners:
            try:
                listener(binding)
            except Exception:
                self._log.failure("Error in a binding-removed listener")
