"""`[tenants.NAME.features]`: call park orbits and timeout, busy-lamp rules (pbx.config.load_features)."""

from __future__ import annotations

from typing import Any

import pytest

from pbx.config import ConfigError, parse_config
from pbx.config.features import FeaturesConfig
from tests.config.test_config import BASE, tenant_with


def features_of(**table: Any) -> FeaturesConfig:
    config = parse_config(tenant_with({"password": "secret"}, features=table), BASE)
    return config.tenants[0].features


def test_defaults() -> None:
    features = parse_config(tenant_with({"password": "secret"}), BASE).tenants[0].features
    assert features.park_orbits == tuple(str(n) for n in range(701, 710))
    assert (features.park_timeout, features.park_announce, features.blf_watchable) == (45.0, True, ())


def test_orbits_ranges_and_lists() -> None:
    assert features_of(park_orbits="801-803, 900").park_orbits == ("801", "802", "803", "900")
    assert features_of(park_orbits="07-09").park_orbits == ("07", "08", "09")


@pytest.mark.parametrize(
    ("table", "path", "message"),
    [
        ({"park_orbits": "709-701"}, "park_orbits", "bad range"),
        ({"park_orbits": "701,701"}, "park_orbits", "distinct"),
        ({"park_orbits": "70x"}, "park_orbits", "numbers and ranges"),
        ({"park_orbits": "1000"}, "park_orbits", "also an extension"),
        ({"park_timeout": 1}, "park_timeout", "from 5 to 3600"),
        ({"blf_watchable": ["10 00"]}, "blf_watchable[0]", "extension or orbit"),
        ({"park_lots": 3}, "park_lots", "unknown key"),
    ],
)
def test_errors_name_the_key(table: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(tenant_with({"password": "secret"}, features=table), BASE)
    assert f"tenants.default.features.{path}" in str(info.value)
    assert message in str(info.value)
