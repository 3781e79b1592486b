"""The toll-fraud settings of a tenant (`[tenants.NAME.outbound]`) and of its extensions (their
``outbound_classes`` and ``max_outbound_*`` keys): frozen values, read by `pbx.config.load_outbound`.

The meaning of every key is in docs/configuration.md and docs/security.md ("Toll fraud"); the B2BUA gets them
as plain values (`pbx.service.outbound`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

OUTBOUND_CLASSES = ("internal", "local", "national", "international", "premium", "emergency")
"""The outbound classes (as `pbx.trunks.tollfraud.CLASSES`; the config layer imports nothing above it)."""

CALLING_CLASSES = frozenset({"local", "national", "international", "premium"})
"""The classes that go through a trunk at a cost: one of them makes ``may_call_out`` true by default."""

OUTBOUND_KEYS = (
    "country",
    "trunk_prefix",
    "international_prefix",
    "classes",
    "emergency",
    "premium",
    "international",
    "local",
    "trunk_to_trunk",
    "max_calls",
    "max_calls_per_hour",
    "max_minutes_per_hour",
    "extension_max_calls",
    "extension_max_calls_per_hour",
    "extension_max_minutes_per_hour",
)
"""The keys of `[tenants.NAME.outbound]`."""

EXTENSION_OUTBOUND_KEYS = (
    "outbound_classes",
    "max_outbound_calls",
    "max_outbound_calls_per_hour",
    "max_outbound_minutes_per_hour",
)
"""The toll-fraud keys of `[tenants.NAME.extensions.NUMBER]`."""


@dataclass(frozen=True, slots=True)
class OutboundLimit:
    """Limits of outbound calls; 0 for none.

    Attributes:
        calls: Concurrent outbound calls.
        calls_per_hour: New outbound calls in any 60 minutes.
        minutes_per_hour: Minutes of answered outbound calls in any 60 minutes (calls in progress count).
    """

    calls: int = 0
    calls_per_hour: int = 0
    minutes_per_hour: int = 0


@dataclass(frozen=True, slots=True)
class ExtensionOutbound:
    """An extension's own toll-fraud settings.

    Attributes:
        classes: Its outbound classes; () when it names none (the tenant's ``classes`` if it may call out).
        limit: Its limits; None for the tenant's ``extension_max_*``.
    """

    classes: tuple[str, ...] = ()
    limit: OutboundLimit | None = None


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    """A tenant's toll-fraud settings (docs/configuration.md, `[tenants.NAME.outbound]`).

    Attributes:
        country: The tenant's country code.
        trunk_prefix: The national trunk prefix; None for the country's default ("" for 1, else "0").
        international_prefix: The international call prefix; "" for the country's default.
        classes: The classes of extensions that may call out and name none.
        emergency: Emergency numbers; None for the defaults (112, 911, 999 and the country's).
        premium: E.164 prefixes of premium numbers; None for the defaults.
        international: E.164 prefixes in the tenant's own country code that count as international; None
            for the defaults (the Caribbean area codes for country 1).
        local: E.164 prefixes of local numbers.
        trunk_to_trunk: Whether a call that came in on a trunk may go out again.
        limit: The whole tenant's limits.
        extension_limit: Each extension's limits unless it has its own.
        extensions: Extensions' own settings, by number (only those that have some).
    """

    country: str = "1"
    trunk_prefix: str | None = None
    international_prefix: str = ""
    classes: tuple[str, ...] = ("internal", "local", "national", "emergency")
    emergency: tuple[str, ...] | None = None
    premium: tuple[str, ...] | None = None
    international: tuple[str, ...] | None = None
    local: tuple[str, ...] = ()
    trunk_to_trunk: bool = False
    limit: OutboundLimit = field(default_factory=OutboundLimit)
    extension_limit: OutboundLimit = field(default_factory=OutboundLimit)
    extensions: Mapping[str, ExtensionOutbound] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.extensions, MappingProxyType):
            object.__setattr__(self, "extensions", MappingProxyType(dict(self.extensions)))
