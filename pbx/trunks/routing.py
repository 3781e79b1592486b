"""The trunks as call routing sees them: which trunk a name means, whether it may carry a call now, and
whether an inbound INVITE is a trunk's (and for which of its numbers).

`TrunkRouting` is built once from every tenant's trunks (plain `TrunkSettings` values) and the trunks' live
state (`ITrunkStates`: registration and OPTIONS pings, kept elsewhere):

- `trunk`, `is_up`: a trunk that is disabled, down, or at its ``max_calls`` fails its outbound calls fast
  (the B2BUA answers 503 for that target and fails over to the next).
- `acquire` / `release`: the concurrent calls per trunk, held by an owner (an outbound leg, an inbound call).
- `inbound`: an INVITE is a trunk's when its source address is in one of the trunk's ``networks`` (carriers
  that authenticate by address), or when it is addressed to the Contact user the PBX registered for the
  trunk (RFC 3261 10.2.1: the carrier sends calls to the registered Contact; that user is the trunk's
  ``contact_user``, else its ``username``, as `pbx.trunks.registration` registers it, and `ITrunkStates`
  says whether it is registered now). Nothing else makes a call a trunk's: from anywhere else it is an
  ordinary INVITE, challenged like any other.
- `called_number` and `has_did`: the number called (the DID), from the Request-URI or from To per trunk
  (``did_source``), checked against the trunk's ``dids``: an unknown DID is refused (404), never routed.

It knows nothing of calls or the config.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from pbx.sip.errors import SipParseError
from pbx.sip.message import Request
from pbx.sip.uri import SipURI
from pbx.trunks.settings import ITrunkStates, TrunkSettings

MEMO_MAX = 4096
"""The most source addresses whose trunk `inbound` remembers."""


@dataclass(frozen=True, slots=True)
class InboundTrunk:
    """The trunk an inbound INVITE came from."""

    tenant: str
    trunk: TrunkSettings


class EnabledTrunks:
    """The states of trunks that neither register nor ping: up while enabled, no registered Contact."""

    def __init__(self, enabled: Mapping[tuple[str, str], bool]) -> None:
        self._enabled = enabled

    def is_up(self, tenant: str, trunk: str) -> bool:
        return self._enabled.get((tenant, trunk), False)

    def contact_user(self, tenant: str, trunk: str) -> str | None:
        return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket reports IPv4 sources as ::ffff:a.b.c.d
    return address


def _did_key(number: str) -> str:
    """A DID compared without a leading '+' (carriers differ in sending it)."""
    return number[1:] if number.startswith("+") else number


class TrunkRouting:
    """Every tenant's trunks for call routing (module docstring).

    Args:
        trunks: tenant name -> that tenant's trunks.
        states: the trunks' live state; None: a trunk is up while enabled and has no registered Contact.
    """

    def __init__(
        self, trunks: Mapping[str, Iterable[TrunkSettings]], states: ITrunkStates | None = None
    ) -> None:
        self._trunks = {tenant: {t.name: t for t in items} for tenant, items in trunks.items()}
        self._states: ITrunkStates = states or EnabledTrunks(
            {
                (tenant, name): t.enabled
                for tenant, by_name in self._trunks.items()
                for name, t in by_name.items()
            }
        )
        self._networks = [
            (ipaddress.ip_network(network, strict=False), InboundTrunk(tenant, trunk))
            for tenant, by_name in self._trunks.items()
            for trunk in by_name.values()
            if trunk.enabled
            for network in trunk.networks
        ]
        # Registering trunks by the Contact user they register (`contact_user`, else `username`), so an
        # INVITE asks the states about the few trunks it can be for, not about every trunk.
        self._by_contact: dict[str, list[InboundTrunk]] = {}
        for tenant, by_name in self._trunks.items():
            for trunk in by_name.values():
                if trunk.enabled and trunk.register:
                    user = trunk.contact_user or trunk.username
                    self._by_contact.setdefault(user, []).append(InboundTrunk(tenant, trunk))
        self._dids = {
            (tenant, trunk.name): frozenset(_did_key(d) for d in trunk.dids)
            for tenant, by_name in self._trunks.items()
            for trunk in by_name.values()
        }
        self._memo: dict[str, tuple[InboundTrunk, ...]] = {}
        self._in_use: dict[tuple[str, str], int] = {}
        self._held: dict[Hashable, tuple[str, str]] = {}

    @property
    def empty(self) -> bool:
        """No tenant has a trunk (no INVITE can be a trunk's)."""
        return not any(self._trunks.values())

    def trunk(self, tenant: str, name: str) -> TrunkSettings | None:
        """A tenant's trunk by name, or None."""
        by_name = self._trunks.get(tenant)
        return by_name.get(name) if by_name is not None else None

    def is_up(self, tenant: str, name: str) -> bool:
        """Whether the trunk may carry a new call: enabled and up (`ITrunkStates.is_up`)."""
        trunk = self.trunk(tenant, name)
        return trunk is not None and trunk.enabled and self._states.is_up(tenant, name)

    # -- concurrent calls --------------------------------------------------------------------------------

    def in_use(self, tenant: str, name: str) -> int:
        """The calls the trunk carries now."""
        return self._in_use.get((tenant, name), 0)

    def acquire(self, owner: Hashable, tenant: str, name: str) -> bool:
        """Count one call on the trunk for `owner` (a leg or a call); False when the trunk is at its
        ``max_calls`` (nothing is counted then). An owner holds at most one call."""
        if owner in self._held:
            return True
        trunk = self.trunk(tenant, name)
        key = (tenant, name)
        count = self._in_use.get(key, 0)
        if trunk is None or (trunk.max_calls and count >= trunk.max_calls):
            return False
        self._in_use[key] = count + 1
        self._held[owner] = key
        return True

    def release(self, owner: Hashable) -> None:
        """Forget the call `owner` holds, if any (idempotent)."""
        key = self._held.pop(owner, None)
        if key is not None:
            count = self._in_use.get(key, 1) - 1
            if count > 0:
                self._in_use[key] = count
            else:
                self._in_use.pop(key, None)

    # -- inbound -----------------------------------------------------------------------------------------

    def inbound(self, source: str, request_user: str | None) -> InboundTrunk | None:
        """The trunk whose call an INVITE from `source` to `request_user` (the Request-URI's user) is:
        by source network first, then by the Contact user the PBX registered; None for every other INVITE."""
        for found in self._candidates(source, request_user):
            return found
        return None

    def inbound_call(self, source: str, request: Request) -> InboundTrunk | None:
        """`inbound` for an INVITE; when it could be the call of several trunks (tenants sharing a carrier:
        overlapping networks, or the same registered Contact user), the first whose DIDs hold the called
        number, so a DID of one tenant never lands in another (where it would be unknown)."""
        uri = request.uri
        first: InboundTrunk | None = None
        for found in self._candidates(source, uri.user if isinstance(uri, SipURI) else None):
            if first is None:
                first = found
            if self.has_did(found.tenant, found.trunk, self.called_number(found.trunk, request)):
                return found
        return first

    def _candidates(self, source: str, request_user: str | None) -> Iterator[InboundTrunk]:
        if self._networks:
            try:
                found = self._memo[source]
            except KeyError:
                found = self._by_network(source)
                if len(self._memo) >= MEMO_MAX:
                    self._memo.clear()
                self._memo[source] = found
            yield from found
        if request_user and self._by_contact:
            for candidate in self._by_contact.get(request_user, ()):
                if self._states.contact_user(candidate.tenant, candidate.trunk.name) == request_user:
                    yield candidate

    def _by_network(self, source: str) -> tuple[InboundTrunk, ...]:
        address = _address(source)
        if address is None:
            return ()
        return tuple(
            found
            for network, found in self._networks
            if address.version == network.version and address in network
        )

    @staticmethod
    def called_number(trunk: TrunkSettings, request: Request) -> str:
        """The DID of an inbound call: the user of the Request-URI, or of To (``did_source``); "" when
        there is none."""
        uri = request.uri
        if trunk.did_source == "to":
            try:
                uri = request.to.uri
            except SipParseError:
                return ""
        return (uri.user or "") if isinstance(uri, SipURI) else ""

    def has_did(self, tenant: str, trunk: TrunkSettings, number: str) -> bool:
        """Whether `number` is one of the trunk's DIDs (a leading '+' on either side is ignored)."""
        return bool(number) and _did_key(number) in self._dids.get((tenant, trunk.name), frozenset())
