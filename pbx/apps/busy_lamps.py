"""Busy lamps: the RFC 4235 `dialog` event package over the PBX's calls and park orbits.

Phones SUBSCRIBE to `Event: dialog` for `sip:1002@domain` (an extension) or `sip:701@domain` (a park
orbit) on the notifier MWI runs (RFC 6665; `pbx.service.features` adds the package), authenticated by digest
like every SUBSCRIBE there (`pbx.apps.mwi.MwiAuthorizer`: the identity is the subscriber's own tenant and
extension). `DialogPackage.resource_for` keeps subscriptions inside the subscriber's tenant and asks
`watchable(tenant, watcher, number)` whether the tenant lets it watch that number (404 for no such
extension or orbit, 403 for one it may not watch).

`BusyLamps` is a call observer (`pbx.b2bua.events`): it turns what the B2BUA tells it into the dialogs of
each watched resource and NOTIFYs the resource's subscribers at every change, with the full state
(`pbx.sip.events.dialog_info`; the version counts each subscription's NOTIFYs):

- a call from an extension: a dialog `trying` (direction initiator) for the caller, `confirmed` once
  answered (by a callee or by the PBX itself: voicemail, IVR, park);
- each extension a call rings (`leg_started` with the leg's extension): a dialog `early` (direction
  recipient) with the caller's identity in `<remote>` (phones show who is calling), `confirmed` when that
  extension answers, gone when its legs end unanswered;
- a parked call (`parked`/`unparked`, emitted by `pbx.apps.park`): a `confirmed` dialog on its orbit with
  the parked party in `<remote>`;
- when a resource's last dialog ends, its state shows that dialog `terminated` (the idle lamp) until the
  next one starts.

It knows nothing of SIP transactions: the notifier sends; calls are read through their documented
attributes (`caller`, `tenant`, `id`, `winner`, `callee_extension`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from twisted.logger import Logger
from zope.interface import implementer

from pbx.sip.errors import SipError
from pbx.sip.events.dialog_info import CONTENT_TYPE, EVENT, DialogEntry, DialogInfo
from pbx.sip.message import Request
from pbx.sip.subscription import IEventPackage
from pbx.sip.uri import SipURI

__all__ = ["BusyLamps", "DialogPackage", "Watched"]

Watchable = Callable[[str, str, str], int | None]
"""(tenant, watcher extension, number) -> None when it may watch the number, else 403 or 404."""


class Watched(NamedTuple):
    """A resource busy lamps watch: an extension or a park orbit of a tenant (a tuple: every call's events
    use it as a key several times, and a tuple hashes and compares in C)."""

    tenant: str
    number: str


_MAX_URIS = 4096


def _with_state(entry: DialogEntry, state: str) -> DialogEntry:
    """`entry` in another state (`dataclasses.replace` without its field lookups: twice per call)."""
    return DialogEntry(
        entry.id,
        state,
        entry.direction,
        entry.call_id,
        entry.remote_identity,
        entry.remote_display,
        entry.local_identity,
    )


class BusyLamps:
    """The dialogs of every watched resource, kept from the B2BUA's call events.

    Args:
        notifier: has `notify(package, resource)` (the SUBSCRIBE notifier).
        tenant_domain: a tenant's SIP domain (for the URIs in the documents), or None.
    """

    _log = Logger()

    def __init__(self, notifier: Any, tenant_domain: Callable[[str], str | None]) -> None:
        self._notifier = notifier
        self._domain = tenant_domain
        self._dialogs: dict[Watched, dict[str, DialogEntry]] = {}
        self._ringing: dict[tuple[Watched, str], int] = {}  # (resource, call id) -> legs still ringing
        self._ended: dict[Watched, DialogEntry] = {}  # the last dialog that ended, shown terminated
        # Call-ID -> the resources it shows on (a tuple: one or two, kept for each call's length).
        self._by_call: dict[str, tuple[Watched, ...]] = {}
        self._uris: dict[tuple[str, str], str] = {}  # (number, domain) -> URI: one string for all calls

    # -- what the package asks ----------------------------------------------------------------------------

    def uri(self, tenant: str, number: str) -> str:
        domain = self._domain(tenant) or tenant
        found = self._uris.get((number, domain))
        if found is None:
            if len(self._uris) >= _MAX_URIS:
                self._uris.clear()
            found = self._uris[(number, domain)] = f"sip:{number}@{domain}"
        return found

    def document(self, resource: Watched, version: int) -> DialogInfo:
        """The full state of a resource as the subscriber's `version`-th document."""
        dialogs = tuple(self._dialogs.get(resource, {}).values())
        if not dialogs and resource in self._ended:
            dialogs = (self._ended[resource],)
        return DialogInfo(self.uri(resource.tenant, resource.number), version, dialogs)

    def state(self, tenant: str, number: str) -> tuple[str, ...]:
        """The states of a resource's live dialogs (empty: idle), for tests and the console."""
        return tuple(d.state for d in self._dialogs.get(Watched(tenant, number), {}).values())

    # -- changes ---------------------------------------------------------------------------------------

    def _set(self, resource: Watched, key: str, entry: DialogEntry) -> None:
        dialogs = self._dialogs.setdefault(resource, {})
        if dialogs.get(key) == entry:
            return
        dialogs[key] = entry
        known = self._by_call.get(key, ())
        if resource not in known:
            self._by_call[key] = (*known, resource)
        self._notifier.notify(EVENT, resource)

    def _end(self, resource: Watched, key: str) -> None:
        dialogs = self._dialogs.get(resource)
        entry = dialogs.pop(key, None) if dialogs else None
        if entry is None:
            return
        if not dialogs:
            del self._dialogs[resource]
        resources = self._by_call.get(key)
        if resources is not None:
            left = tuple(r for r in resources if r != resource)
            if left:
                self._by_call[key] = left
            else:
                del self._by_call[key]
        self._ended[resource] = _with_state(entry, "terminated")
        self._notifier.notify(EVENT, resource)

    def _caller_identity(self, call: Any) -> tuple[str, str]:
        caller = call.caller
        who = caller.extension or caller.number or "anonymous"
        display = caller.name or ""
        if not display:
            try:
                display = call.invite.from_.display_name or ""
            except Exception:
                display = ""
        return self.uri(caller.tenant, who), display

    # -- call observer (pbx.b2bua.events) ------------------------------------------------------------------

    def call_started(self, call: Any) -> None:
        extension = call.caller.extension
        if not extension:
            return
        resource = Watched(call.tenant, extension)
        entry = DialogEntry(
            id=call.id,
            state="trying",
            direction="initiator",
            call_id=call.id,
            remote_identity=self.uri(call.tenant, call.dialed) if call.dialed else "",
            local_identity=self.uri(call.tenant, extension),
        )
        self._set(resource, call.id, entry)

    def leg_started(self, call: Any, leg: Any) -> None:
        extension = getattr(leg, "extension", "")
        if not extension or call.ended:
            return
        resource = Watched(call.tenant, extension)
        key = (resource, call.id)
        self._ringing[key] = self._ringing.get(key, 0) + 1
        if call.id in self._dialogs.get(resource, {}):
            return
        identity, display = self._caller_identity(call)
        entry = DialogEntry(
            id=call.id,
            state="early",
            direction="recipient",
            call_id=call.id,
            remote_identity=identity,
            remote_display=display,
            local_identity=self.uri(call.tenant, extension),
        )
        self._set(resource, call.id, entry)

    def leg_ended(self, call: Any, leg: Any) -> None:
        extension = getattr(leg, "extension", "")
        if not extension:
            return
        resource = Watched(call.tenant, extension)
        key = (resource, call.id)
        left = self._ringing.get(key, 0) - 1
        if left > 0:
            self._ringing[key] = left
            return
        self._ringing.pop(key, None)
        entry = self._dialogs.get(resource, {}).get(call.id)
        if entry is not None and entry.state == "early":
            self._end(resource, call.id)

    def call_answered(self, call: Any) -> None:
        for resource in self._by_call.get(call.id, ()):
            entry = self._dialogs[resource][call.id]
            answered_here = resource.number in (call.caller.extension, call.callee_extension)
            if answered_here and entry.state != "confirmed":
                self._set(resource, call.id, _with_state(entry, "confirmed"))

    def call_ended(self, call: Any) -> None:
        for resource in self._by_call.get(call.id, ()):
            self._ringing.pop((resource, call.id), None)
            self._end(resource, call.id)

    # -- call park (pbx.apps.park emits these) -------------------------------------------------------------

    def parked(self, call: Any, tenant: str, orbit: str) -> None:
        """A call waits on an orbit: the orbit's lamp is in use, showing the parked party."""
        identity, display = self._caller_identity(call)
        resource = Watched(tenant, orbit)
        entry = DialogEntry(
            id=f"park-{call.id}",
            state="confirmed",
            direction="recipient",
            call_id=call.id,
            remote_identity=identity,
            remote_display=display,
            local_identity=self.uri(tenant, orbit),
        )
        self._set(resource, entry.id, entry)

    def unparked(self, call: Any, tenant: str, orbit: str) -> None:
        """The orbit is free again (retrieved, timed out, or the parked party hung up)."""
        self._end(Watched(tenant, orbit), f"park-{call.id}")


@implementer(IEventPackage)
class DialogPackage:
    """The `dialog` event package (RFC 4235) for the notifier.

    Args:
        lamps: the dialogs of the watched resources.
        watchable: `watchable(tenant, watcher, number)`: None when the watcher may, else 403 or 404.
    """

    name = EVENT
    content_type = CONTENT_TYPE

    def __init__(self, lamps: BusyLamps, watchable: Watchable) -> None:
        self._lamps = lamps
        self._watchable = watchable

    def resource_for(self, request: Request, identity: Any) -> Hashable:
        """The watched extension or orbit of the subscriber's own tenant (the Request-URI's user)."""
        uri = request.uri
        number = uri.user if isinstance(uri, SipURI) else None
        tenant = getattr(identity, "tenant", "")
        watcher = getattr(identity, "number", "")
        if not number or not tenant:
            raise SipError(404, "No Such Resource")
        refused = self._watchable(tenant, watcher, number)
        if refused == 403:
            raise SipError(403, "Forbidden: not watchable")
        if refused is not None:
            raise SipError(404, "No Such Resource")
        return Watched(tenant, number)

    def body(self, resource: Hashable) -> bytes:
        """The state as a first document (the notifier numbers each subscription's: `versioned_body`)."""
        return self.versioned_body(resource, 0)

    def versioned_body(self, resource: Hashable, version: int) -> bytes:
        """The full state of `resource` as the `version`-th document of one subscription (RFC 4235 4.1.1)."""
        assert isinstance(resource, Watched)
        return self._lamps.document(resource, version).to_bytes()
