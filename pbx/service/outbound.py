"""Config to objects for the toll-fraud controls: each tenant's `[tenants.NAME.outbound]` and its extensions'
outbound keys as the B2BUA's `OutboundPolicy` (plain `NumberRules` and `Limit` values; docs/security.md,
"Toll fraud"). The extensions' own classes travel in the directory (`ExtensionInfo.outbound_classes`,
`pbx.service.adapters.directories`), so a call carries them on its `Caller`.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from pbx.b2bua.outbound_policy import OutboundPolicy, TenantOutbound
from pbx.config import Config, Tenant


def tenant_outbound(tenant: Tenant) -> TenantOutbound:
    """One tenant's settings as the B2BUA takes them."""
    return TenantOutbound.from_attributes(tenant.outbound)


def outbound_policy(config: Config, clock: IReactorTime) -> OutboundPolicy:
    """The toll-fraud policy of every tenant."""
    by_name = {tenant.name: tenant_outbound(tenant) for tenant in config.tenants}
    counting = any(t.limit or t.extension_limit or any(t.extension_limits.values()) for t in by_name.values())
    return OutboundPolicy(clock, by_name.get, counting=counting)


def outbound_classes(tenant: Tenant, number: str) -> tuple[str, ...]:
    """An extension's own outbound classes, () when it names none."""
    own = tenant.outbound.extensions.get(number)
    return own.classes if own is not None else ()
