"""Toll-fraud controls in the B2BUA: every trunk target (and every SIP URI target) is judged where it is
built, after the dialplan chose it, and every outbound call is counted against its caller's and its tenant's
limits (docs/security.md, "Toll fraud").

`OutboundPolicy.check_trunk` runs in `B2BUA._trunk_target` for ``trunk:NAME/NUMBER``: the number as it is
sent is classified (`pbx.trunks.tollfraud`) and must be one of the caller's classes, and the caller and its
tenant must be under their limits (`pbx.trunks.limits`); otherwise the whole call is refused with ``403``
(raised as a `SipError`, so a failover dial never tries the next trunk with it) and one log line says who
(tenant, extension or trunk, source address), what (number, E.164 form, class, trunk) and why (the rule or
limit). Emergency numbers pass every class and every limit, and are not counted.

Who may call out at all:

- an extension (digest, or a trusted peer calling as one): its ``outbound_classes`` (else the tenant's
  default classes when ``may_call_out`` is true, else none), plus ``internal`` and ``emergency``;
- a call that came in on a trunk: nothing (not even emergency numbers: nobody authenticated is calling),
  unless the tenant sets ``trunk_to_trunk``; it then has the tenant's default classes and counts against
  the tenant's limits and its trunk's (the extension default);
- a transferred party (REFER) is routed as the transferor: its `Caller`, so its classes and limits.

``sip:``/``sips:`` targets leave the PBX too (`check_uri`): one in the tenant's own domain is internal; a
call that came in on a trunk may not use one (unless ``trunk_to_trunk``); one whose user part is a phone
number (no letters, after unescaping and without its ``;parameters``: a gateway to the phone network) is
judged and counted exactly like a trunk target with that number;
any other (``sip:alice@example.com``, an Internet call that costs nothing) is allowed to every extension and
not counted.

`OutboundPolicy` is also a call observer (`pbx.b2bua.events`): ``leg_started`` counts the call, ``leg_ended``
ends its concurrent call when no counted leg is left, ``leg_answered`` (the winning leg's 2xx) starts its
minutes, ``call_ended`` stops them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pbx.sip.errors import SipError, SipParseError
from pbx.sip.uri import parse_sip_uri
from pbx.trunks.limits import Limit, OutboundLimits
from pbx.trunks.tollfraud import TRUNK_CLASSES, NumberRules, Verdict, allowed_classes, judge

if TYPE_CHECKING:
    from pbx.b2bua.call import Call
    from pbx.b2bua.leg import OutboundLeg

_LETTERS = re.compile(r"[A-Za-z]")


def _uri_user(uri: str) -> tuple[str, str]:
    """(user without its parameters, unescaped; host in lower case) of a SIP URI; ("", "") when it does not
    parse (its leg then fails on its own)."""
    try:
        parsed = parse_sip_uri(uri)
    except SipParseError:
        return "", ""
    return (parsed.user or "").split(";", 1)[0], parsed.host.lower()


def _shown(text: str) -> str:
    """A caller-controlled number for a log line: 40 characters at most, anything unprintable as '?'."""
    return "".join(c if c.isprintable() else "?" for c in text[:40])


def _is_number(user: str) -> bool:
    """Whether a URI's user part is a phone number to judge: anything without letters (digits, '+', '*',
    '#', separators; what is not a valid number is then refused as one)."""
    return bool(user) and not _LETTERS.search(user)


@dataclass(frozen=True, slots=True)
class TenantOutbound:
    """A tenant's toll-fraud settings.

    Attributes:
        rules: How its numbers are classified, and its default classes.
        limit: The limits of the whole tenant.
        extension_limit: The limits of each extension (and of each trunk's calls routed out again) that
            has none of its own.
        extension_limits: Extensions' own limits, by number.
        trunk_to_trunk: Whether calls that came in on a trunk may go out again (a trunk or a SIP URI).
    """

    rules: NumberRules = field(default_factory=NumberRules)
    limit: Limit = field(default_factory=Limit)
    extension_limit: Limit = field(default_factory=Limit)
    extension_limits: Mapping[str, Limit] = field(default_factory=lambda: MappingProxyType({}))
    trunk_to_trunk: bool = False

    @classmethod
    def from_attributes(cls, outbound: Any) -> TenantOutbound:
        """From any object with the attributes of `pbx.config.outbound.OutboundConfig` (the composition
        root's and the CLI's way in; this layer never imports the config)."""

        def limit(value: Any) -> Limit:
            return Limit(value.calls, value.calls_per_hour, float(value.minutes_per_hour))

        rules = NumberRules(
            country=outbound.country,
            trunk_prefix=outbound.trunk_prefix,
            international_prefix=outbound.international_prefix,
            emergency=outbound.emergency,
            premium=outbound.premium,
            international=outbound.international,
            local=outbound.local,
            classes=outbound.classes,
        )
        own = {n: limit(e.limit) for n, e in outbound.extensions.items() if e.limit is not None}
        return cls(
            rules=rules,
            limit=limit(outbound.limit),
            extension_limit=limit(outbound.extension_limit),
            extension_limits=MappingProxyType(own),
            trunk_to_trunk=outbound.trunk_to_trunk,
        )


DEFAULT = TenantOutbound()


class OutboundPolicy:
    """Judges outbound targets and counts outbound calls (module docstring).

    Args:
        clock: the time source of the hourly windows.
        tenants: tenant name -> its settings; None (or a tenant it does not know): `DEFAULT`, the default
            rules (country code 1) without limits.
        counting: whether any tenant has a limit: only then does the B2BUA make it a call observer (with no
            limit anywhere there is nothing to count, and the calls need not tell it anything).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        tenants: Callable[[str], TenantOutbound | None] | None = None,
        *,
        counting: bool = True,
    ) -> None:
        self._tenants = tenants
        self.counting = counting
        self.limits = OutboundLimits(clock)
        self._legs: dict[Any, set[Any]] = {}  # call -> its counted legs out now

    def settings(self, tenant: str) -> TenantOutbound:
        found = self._tenants(tenant) if self._tenants is not None else None
        return found if found is not None else DEFAULT

    # -- judging targets ---------------------------------------------------------------------------------

    def check_trunk(self, call: Call, trunk: str, number: str) -> Verdict:
        """Judge `number` through `trunk` for `call`'s caller; the verdict when it may go.

        Raises:
            SipError: 403 for a class, a limit or a caller that may not call out (logged).
        """
        return self._check(call, number, f"trunk {trunk}")

    def check_uri(self, call: Call, uri: str, own_domain: str) -> None:
        """Judge a ``sip:`` target (module docstring).

        Raises:
            SipError: 403 when it may not go (logged).
        """
        user, host = _uri_user(uri)
        if host and host == own_domain.lower():
            return  # back into the tenant: internal
        if _is_number(user):
            self._check(call, user, "uri")
            return
        caller = call.caller
        if caller.trunk and not self.settings(caller.tenant).trunk_to_trunk:
            self._refuse(call, user or uri, "", "-", "uri", "calls from trunks may not go out again", "Trunk")

    def _check(self, call: Call, number: str, via: str) -> Verdict:
        caller = call.caller
        settings = self.settings(caller.tenant)
        rules = settings.rules
        if caller.trunk:
            if not settings.trunk_to_trunk:
                self._refuse(call, number, "", "-", via, "calls from trunks may not go out again", "Trunk")
            classes = allowed_classes(rules, rules.classes, True) - {"emergency"}
        else:
            own = getattr(caller, "outbound_classes", ())
            classes = allowed_classes(rules, own, caller.may_call_out)
        verdict = judge(number, rules, classes)
        if verdict.kind == "emergency":
            if caller.trunk:
                self._refuse(call, number, verdict.e164, verdict.kind, via, "emergency from a trunk", "Trunk")
            self._log.info(
                "Emergency call {id}: {tenant}/{extension} -> {number} via {via}",
                id=call.id, tenant=caller.tenant, extension=caller.extension, number=verdict.number, via=via,
            )  # fmt: skip
            return verdict
        if not verdict.allowed:
            reason = "Trunk" if not (classes & TRUNK_CLASSES) else "Number"
            self._refuse(call, number, verdict.e164, verdict.kind, via, verdict.rule, reason)
        breach = self.limits.check(call, self._keys(caller, settings))
        if breach is not None:
            self._refuse(call, number, verdict.e164, verdict.kind, via, str(breach), "Limit")
        self._log.info(
            "Outbound call {id}: {tenant}/{who} -> {number} (class {kind}) via {via}",
            id=call.id, tenant=caller.tenant, who=caller.extension or f"trunk {caller.trunk}",
            number=verdict.number, kind=verdict.kind, via=via,
        )  # fmt: skip
        return verdict

    def _keys(self, caller: Any, settings: TenantOutbound) -> tuple[tuple[str, Limit], ...]:
        tenant = caller.tenant
        if caller.trunk:
            own = (f"trunk {tenant}/{caller.trunk}", settings.extension_limit)
        else:
            limit = settings.extension_limits.get(caller.extension, settings.extension_limit)
            own = (f"extension {tenant}/{caller.extension}", limit)
        return own, (f"tenant {tenant}", settings.limit)

    _REASONS = MappingProxyType(
        {
            "Trunk": "Trunk Calls Not Allowed",
            "Number": "Number Not Allowed",
            "Limit": "Outbound Call Limit Reached",
        }
    )

    def _refuse(self, call: Call, number: str, form: str, kind: str, via: str, why: str, reason: str) -> None:
        caller = call.caller
        flow = getattr(getattr(call, "txn", None), "flow", None)
        address = getattr(flow, "remote_address", None)
        source = str(address[0]) if address else "-"
        who = caller.extension or f"trunk {caller.trunk}"
        self._log.warn(
            "Outbound call {id} refused (403): {tenant}/{who} from {source} -> {number} "
            "(E.164 {e164}, class {kind}) via {via}: {why}",
            id=call.id, tenant=caller.tenant, who=who, source=source, number=_shown(number), e164=form or "-",
            kind=kind, via=via, why=why,
        )  # fmt: skip
        raise SipError(403, self._REASONS[reason])

    # -- counting calls (a call observer) ----------------------------------------------------------------

    def _counted(self, call: Call, leg: OutboundLeg) -> bool:
        """Whether a leg is an outbound call that counts: a trunk's or a phone number's URI target, not an
        emergency number."""
        target = leg.target
        label = target.label
        if target.trunk:
            number = label.partition("/")[2]
        elif label.startswith(("sip:", "sips:")):
            number = _uri_user(label)[0]
            if not _is_number(number):
                return False
        else:
            return False  # a phone of the tenant
        return not self.settings(call.caller.tenant).rules.is_emergency(number)

    def leg_started(self, call: Call, leg: OutboundLeg) -> None:
        if not self._counted(call, leg):
            return
        self._legs.setdefault(call, set()).add(leg)
        caller = call.caller
        self.limits.start(call, [key for key, _ in self._keys(caller, self.settings(caller.tenant))])

    def leg_ended(self, call: Call, leg: OutboundLeg) -> None:
        legs = self._legs.get(call)
        if legs is None or leg not in legs:
            return
        legs.discard(leg)
        if not legs:
            self.limits.stop(call)  # between two failover attempts it holds no concurrent call

    def leg_answered(self, call: Call, leg: OutboundLeg) -> None:
        legs = self._legs.get(call)
        if legs is not None and leg in legs:
            self.limits.answered(call)

    def call_ended(self, call: Call) -> None:
        self._legs.pop(call, None)
        self.limits.forget(call)  # also when its counted legs all ended earlier: drop the owner

    def usage(self, key: str) -> tuple[int, int, float]:
        """(concurrent, calls in the last hour, minutes in the last hour) of a key (``"tenant default"``,
        ``"extension default/1001"``)."""
        return self.limits.usage(key)
