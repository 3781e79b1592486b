"""Read `[tenants.NAME.features]` of the TOML config into `pbx.config.features.FeaturesConfig`.

Called by `pbx.config.load._Parser.tenant` (imported lazily there: this module imports that one); every
problem is a `ConfigError` naming the key. The keys are documented in ``docs/features.md``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pbx.config.features import FeaturesConfig
from pbx.config.load import ConfigError, _join

if TYPE_CHECKING:
    from pbx.config.load import _Parser

_NUMBER = re.compile(r"[0-9]{1,16}")
_RANGE = re.compile(r"([0-9]{1,16})-([0-9]{1,16})")
MAX_ORBITS = 1000


def _orbits(text: str, path: str) -> tuple[str, ...]:
    """``"701-709"`` or ``"701,702,800-805"``: the orbits, in order, without duplicates."""
    orbits: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        found = _RANGE.fullmatch(part)
        if found is not None:
            low, high = found.group(1), found.group(2)
            if len(low) != len(high) or int(low) > int(high) or int(high) - int(low) >= MAX_ORBITS:
                raise ConfigError(path, f"bad range {part!r} (like 701-709: same length, low to high)")
            orbits += [str(n).zfill(len(low)) for n in range(int(low), int(high) + 1)]
        elif _NUMBER.fullmatch(part):
            orbits.append(part)
        else:
            raise ConfigError(path, f"must be numbers and ranges like '701-709', not {part!r}")
    if not orbits or len(orbits) > MAX_ORBITS or len(set(orbits)) != len(orbits):
        raise ConfigError(path, f"must name 1 to {MAX_ORBITS} distinct orbits")
    return tuple(orbits)


def features(parser: _Parser, value: object, path: str, extensions: object) -> FeaturesConfig:
    """The `[tenants.NAME.features]` table (absent: the defaults)."""
    table = parser._table(value, path, "tenants.<tenant>.features")
    default = FeaturesConfig()
    orbits = default.park_orbits
    if "park_orbits" in table:
        orbits = _orbits(parser._string(table, "park_orbits", path, ""), _join(path, "park_orbits"))
    numbers = extensions if isinstance(extensions, dict) else {}
    for orbit in orbits:
        if orbit in numbers:
            raise ConfigError(_join(path, "park_orbits"), f"{orbit} is also an extension")
    watchable = parser._strings(table, "blf_watchable", path, [])
    for index, number in enumerate(watchable):
        if not _NUMBER.fullmatch(number):
            raise ConfigError(f"{_join(path, 'blf_watchable')}[{index}]", "must be an extension or orbit")
    return FeaturesConfig(
        park_orbits=orbits,
        park_timeout=parser._seconds(table, "park_timeout", path, default.park_timeout, 5.0, 3600.0),
        park_announce=parser._boolean(table, "park_announce", path, default.park_announce),
        blf_watchable=tuple(watchable),
    )
