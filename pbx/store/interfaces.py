"""The storage seams of the PBX: the durable location service behind the registrar (RFC 3261 10.3).

A registrar keeps its bindings in memory and writes every change through an `ILocationStore` before it answers
`200 OK`, so a restarted (or `kill -9`ed) PBX rebuilds the same location service with `load`. Providers:
`pbx.store.memory.MemoryLocationStore` (tests, and no durability) and `pbx.store.sqlite.SqliteLocationStore`
(the embedded default); a shared database can provide the same interface later.

This module knows the contract only: nothing of SQL, threads, SIP messages or registration policy.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Interface

from pbx.store.records import Binding, BindingChange, Cdr, ExtensionFeatures, VoicemailMessage


class StoreError(Exception):
    """A store could not do what was asked (besides errors of the underlying database, which pass through)."""


class StoreClosedError(StoreError):
    """The store was closed: `close()` has been called."""


class ILocationStore(Interface):
    """Durable storage of registrar bindings, keyed by (tenant, aor, contact).

    Every method returns a Deferred that fires on the reactor thread. Operations take effect in the order they
    were called: a `load` called after an `apply` sees that apply's changes.
    """

    def apply(changes: Sequence[BindingChange]) -> Deferred[None]:
        """Apply a batch of changes atomically and durably.

        `PutBinding` inserts or replaces (same key), `DeleteBinding` removes one binding and `DeleteAor` every
        binding of an address-of-record; deleting what is absent is not an error. Changes apply in order.

        Args:
            changes: The batch; may be empty.

        Returns:
            A Deferred that fires with None only once the whole batch is durable (it survives the process
            being killed), or fails, with none of the batch applied. A batch that is not a sequence of
            `BindingChange` fails with `TypeError`; a closed store fails with `StoreClosedError`.
        """

    def load(now: float) -> Deferred[list[Binding]]:
        """Every binding not expired at `now`, sorted by (tenant, aor, contact).

        Args:
            now: Wall-clock epoch seconds; bindings with `expires_at <= now` are left out.

        Returns:
            A Deferred firing with the bindings (used at start-up to rebuild the registrar's index).
        """

    def purge_expired(now: float) -> Deferred[int]:
        """Delete every binding with `expires_at <= now`, durably.

        Args:
            now: Wall-clock epoch seconds.

        Returns:
            A Deferred firing with the number of bindings deleted.
        """

    def close() -> Deferred[None]:
        """Finish what was already asked, then release the store's resources.

        Returns:
            A Deferred firing once every earlier call has completed and the store is closed. Calls made after
            `close` fail with `StoreClosedError`; calling `close` again is harmless.
        """


class ICdrStore(Interface):
    """Where call detail records go."""

    def write_cdr(cdr: Cdr) -> Deferred[None]:
        """Store a CDR durably; the Deferred fires once it is committed."""

    def cdrs(limit: int) -> Deferred[list[Cdr]]:
        """The most recent CDRs, newest first, at most `limit`."""


class IVoicemailStore(Interface):
    """The index of voicemail messages and the PINs owners changed, per (tenant, mailbox).

    The audio is not in the store: the caller writes the WAV durably first and adds the index entry after, so
    an entry never names missing audio. Every method returns a Deferred that fires on the reactor thread once
    the change is durable; operations take effect in the order they were called.
    """

    def add_message(message: VoicemailMessage) -> Deferred[None]:
        """Add a message's entry (replacing one with the same tenant, mailbox and id)."""

    def messages(tenant: str, mailbox: str) -> Deferred[list[VoicemailMessage]]:
        """The box's messages, oldest first (new and old)."""

    def all_messages() -> Deferred[list[VoicemailMessage]]:
        """Every message of every box (start-up: counts for MWI, orphan checks, mails to retry)."""

    def update_message(message: VoicemailMessage) -> Deferred[None]:
        """Store a changed entry (its folder or `emailed`), found by tenant, mailbox and id;
        absent is no error."""

    def delete_message(tenant: str, mailbox: str, id: str) -> Deferred[None]:
        """Remove an entry; absent is no error (the caller removes the WAV after)."""

    def pin_hash(tenant: str, mailbox: str) -> Deferred[str | None]:
        """The hash of the PIN the owner set by phone, or None when the config's PIN applies."""

    def set_pin_hash(tenant: str, mailbox: str, pin_hash: str) -> Deferred[None]:
        """Store the hash of a PIN the owner set (the PIN itself is never stored)."""


class IFeatureStore(Interface):
    """What extensions' owners set by phone with feature codes (do-not-disturb, call forwarding), per
    (tenant, extension): read once at start-up, written on every change. Every method returns a Deferred
    that fires on the reactor thread once durable; operations take effect in the order they were called."""

    def all_features() -> Deferred[list[ExtensionFeatures]]:
        """Every extension's settings, sorted by (tenant, extension)."""

    def save_features(features: ExtensionFeatures) -> Deferred[None]:
        """Store an extension's settings (replacing its earlier ones)."""
