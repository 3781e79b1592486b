"""The phone features' settings of a tenant (`[tenants.NAME.features]`, docs/features.md): the call park
orbits and timeout, and what its phones may watch with busy lamps (RFC 4235 `dialog` subscriptions).

Plain frozen values; `pbx.config.load_features` reads them from the TOML file.
"""

from __future__ import annotations

from dataclasses import dataclass

FEATURES_KEYS: tuple[str, ...] = ("park_orbits", "park_timeout", "park_announce", "blf_watchable")
"""The keys of `[tenants.NAME.features]`."""


@dataclass(frozen=True, slots=True)
class FeaturesConfig:
    """A tenant's phone features.

    Attributes:
        park_orbits: The orbits calls are parked on, in the order they are taken ("701" .. "709" by default);
            dialing one retrieves its call (routed by the dialplan: `unpark NUMBER`).
        park_timeout: Seconds a call stays parked before it rings its parker again.
        park_announce: Whether the orbit is spoken to the parked call before its music (the parker hears it
            when a transfer put the call there: with a blind transfer, the parker has left).
        blf_watchable: What the tenant's phones may watch with busy lamps: extension numbers and orbits;
            empty (the default): every extension and orbit of the tenant.
    """

    park_orbits: tuple[str, ...] = tuple(str(n) for n in range(701, 710))
    park_timeout: float = 45.0
    park_announce: bool = True
    blf_watchable: tuple[str, ...] = ()
