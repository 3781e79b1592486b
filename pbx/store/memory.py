"""An in-memory `ILocationStore` (and `ICdrStore`, `IVoicemailStore`): the provider for tests, and for
installs that want no durability.

It keeps the bindings in a dict and answers with already-fired Deferreds. It knows nothing of files or
threads; everything it holds is lost with the process.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from pbx.store.admin import IAdminStore
from pbx.store.interfaces import ICdrStore, IFeatureStore, ILocationStore, IVoicemailStore, StoreClosedError
from pbx.store.memory_admin import MemoryAdminStore
from pbx.store.records import (
    Binding,
    BindingChange,
    Cdr,
    DeleteAor,
    DeleteBinding,
    ExtensionFeatures,
    PutBinding,
    VoicemailMessage,
    check_changes,
)
from pbx.store.trunk_lease import ITrunkLeaseStore, MemoryTrunkLeaseStore
from pbx.store.trunk_state import ITrunkStateStore, MemoryTrunkStateStore


@implementer(
    ILocationStore, ICdrStore, IVoicemailStore, IFeatureStore, IAdminStore, ITrunkStateStore, ITrunkLeaseStore
)
class MemoryLocationStore(MemoryAdminStore, MemoryTrunkStateStore, MemoryTrunkLeaseStore):
    """Bindings in dicts keyed by (tenant, aor), then contact; CDRs and the voicemail index in a list and
    dicts; every Deferred has fired when returned.

    Attributes:
        commits: How many `apply`/`purge_expired` calls have been applied (the SQLite store's counter of
            transactions has the same name).
    """

    def __init__(self) -> None:
        self._aors: dict[tuple[str, str], dict[str, Binding]] = {}
        self._closed = False
        self.commits = 0
        self.cdr_records: list[Cdr] = []
        self.voicemail: dict[tuple[str, str, str], VoicemailMessage] = {}
        self.pins: dict[tuple[str, str], str] = {}
        self.features: dict[tuple[str, str], ExtensionFeatures] = {}

    # IFeatureStore

    def all_features(self) -> Deferred[list[ExtensionFeatures]]:
        """See `IFeatureStore.all_features`."""
        if self._closed:
            return fail(StoreClosedError("the store is closed"))
        return succeed([self.features[key] for key in sorted(self.features)])

    def save_features(self, features: ExtensionFeatures) -> Deferred[None]:
        """See `IFeatureStore.save_features`."""
        if self._closed:
            return fail(StoreClosedError("the store is closed"))
        self.features[features.key] = features
        return succeed(None)

    # IVoicemailStore

    def add_message(self, message: VoicemailMessage) -> Deferred[None]:
        """See `IVoicemailStore.add_message`."""
        if self._closed:
            return fail(StoreClosedError("the store is closed"))
        self.voicemail[(message.tenant, message.mailbox, message.id)] = message
        return succeed(None)

    def messages(self, tenant: str, mailbox: str) -> Deferred[list[VoicemailMessage]]:
        """See `IVoicemailStore.messages`."""
        if self._closed:
            return fail(StoreClosedError("the store is closed"))
        found = [m for m in self.voicemail.values() if (m.tenant, m.mailbox) == (tenant, mailbox)]
        return succeed(sorted(found, key=lambda m: (m.received_at, m.id)))

    def all_messages(self) -> Deferred[list[VoicemailMessage]]:
        """See `IVoicemailStore.all_messages`."""
        if self._closed:
            return fail(StoreClosedError("the store is closed"))
        return succeed(
            sorted(self.voicemail.values(), key=lambda m: (m.tenant, m.mailbox, m.received_at, m.id))
        )

    def update_message(self, message: VoicemailMessage) -> Deferred[None]:
        """See `IVoicemailStore.update_message`."""
        if self._closed:
            return fail(StoreClosedError("the store is closed"))
        key = (message.tenant, message.mailbox, message.id)
        if key in self.voicemail:
            self.voicemail[key] = message
        return succeed(None)

    def delete_message(self, tenant: str, mailbox: str, id: str) -> Deferred[None]:
        """See `IVoicemailStore.delete_message`."""
        if self._closed:
            return fail(StoreClosedError("the store is closed"))
        self.voicemail.pop((tenant, mailbox, id), None)
        return succeed(None)

    def pin_hash(self, tenant: str, mailbox: str) -> Deferred[str | None]:
        """See `IVoicemailStore.pin_hash`."""
        if self._closed:
            return fail(StoreClosedError("the store is closed"))
        return succeed(self.pins.get((tenant, mailbox)))

    def set_pin_hash(self, tenant: str, mailbox: str, pin_hash: str) -> Deferred[None]:
        """See `IVoicemailStore.set_pin_hash`."""
        if self._closed:
            return fail(StoreClosedError("the store is closed"))
        self.pins[(tenant, mailbox)] = pin_hash
        return succeed(None)

    def write_cdr(self, cdr: Cdr) -> Deferred[None]:
        """See `ICdrStore.write_cdr`."""
        if self._closed:
            return fail(StoreClosedError("the store is closed"))
        self.cdr_records.append(cdr)
        return succeed(None)

    def cdrs(self, limit: int) -> Deferred[list[Cdr]]:
        """See `ICdrStore.cdrs`."""
        return succeed(list(reversed(self.cdr_records))[:limit])

    def apply(self, changes: Sequence[BindingChange]) -> Deferred[None]:
        """See `ILocationStore.apply`."""
        if self._closed:
            return fail(StoreClosedError("the location store is closed"))
        try:
            batch = check_changes(changes)
        except TypeError as e:
            return fail(e)
        for change in batch:
            if isinstance(change, PutBinding):
                b = change.binding
                self._aors.setdefault((b.tenant, b.aor), {})[b.contact] = b
            elif isinstance(change, DeleteBinding):
                contacts = self._aors.get((change.tenant, change.aor))
                if contacts is not None:
                    contacts.pop(change.contact, None)
                    if not contacts:
                        del self._aors[(change.tenant, change.aor)]
            elif isinstance(change, DeleteAor):
                self._aors.pop((change.tenant, change.aor), None)
        self.commits += 1
        return succeed(None)

    def load(self, now: float) -> Deferred[list[Binding]]:
        """See `ILocationStore.load`."""
        if self._closed:
            return fail(StoreClosedError("the location store is closed"))
        live = [b for contacts in self._aors.values() for b in contacts.values() if not b.is_expired(now)]
        live.sort(key=lambda b: b.key)
        return succeed(live)

    def purge_expired(self, now: float) -> Deferred[int]:
        """See `ILocationStore.purge_expired`."""
        if self._closed:
            return fail(StoreClosedError("the location store is closed"))
        purged = 0
        for aor in list(self._aors):
            contacts = self._aors[aor]
            doomed = [contact for contact, b in contacts.items() if b.is_expired(now)]
            for contact in doomed:
                del contacts[contact]
            purged += len(doomed)
            if not contacts:
                del self._aors[aor]
        self.commits += 1
        return succeed(purged)

    def close(self) -> Deferred[None]:
        """See `ILocationStore.close`."""
        self._closed = True
        return succeed(None)
