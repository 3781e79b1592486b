"""Config to objects for the toll-fraud controls: each tenant's `[tenants.NAME.outbound]` and its extensions'
outbound keys as the B2BUA's `OutboundPolicy` (plain `NumberRules` and `Limit` values; docs/security.md,
"Toll fraud"). The extensions' own classes travel in the directory (`ExtensionInfo.outbound_classes`,
`pbx.service.adapters.directories`), so a call carries them on its `Caller`.
"""

from __future__ import annotations

from types import MappingProxyType

from twisted.internet.interfaces import IReactorTime

from pbx.b2bua.outbound_policy import OutboundPolicy, TenantOutbound
from pbx.config import Config, Tenant
from pbx.config.outbound import OutboundLimit
from pbx.trunks.limits import Limit
from pbx.trunks.tollfraud import NumberRules


def _limit(limit: OutboundLimit) -> Limit:
    return Limit(limit.calls, limit.calls_per_hour, float(limit.minutes_per_hour))


def tenant_outbound(tenant: Tenant) -> TenantOutbound:
    """One tenant's settings as the B2BUA takes them."""
    out = tenant.outbound
    rules = NumberRules(
        country=out.country,
        trunk_prefix=out.trunk_prefix,
        international_prefix=out.international_prefix,
        emergency=out.emergency,
        premium=out.premium,
        international=out.international,
        local=out.local,
        classes=out.classes,
    )
    own = {number: _limit(e.limit) for number, e in out.extensions.items() if e.limit is not None}
    return TenantOutbound(
        rules=rules,
        limit=_limit(out.limit),
        extension_limit=_limit(out.extension_limit),
        extension_limits=MappingProxyType(own),
        trunk_to_trunk=out.trunk_to_trunk,
    )


def outbound_policy(config: Config, clock: IReactorTime) -> OutboundPolicy:
    """The toll-fraud policy of every tenant."""
    by_name = {tenant.name: tenant_outbound(tenant) for tenant in config.tenants}
    counting = any(t.limit or t.extension_limit or any(t.extension_limits.values()) for t in by_name.values())
    return OutboundPolicy(clock, by_name.get, counting=counting)


def outbound_classes(tenant: Tenant, number: str) -> tuple[str, ...]:
    """An extension's own outbound classes, () when it names none."""
    own = tenant.outbound.extensions.get(number)
    return own.classes if own is not None else ()
