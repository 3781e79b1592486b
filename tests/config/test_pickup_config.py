"""The call pickup keys of an extension (`pbx.config.pickup`): defaults, values, errors naming their key."""

from __future__ import annotations

import pytest

from pbx.config import load_config, parse_config
from tests.config.test_config import BASE, EXT, REPO, error_for, tenant_with


def test_defaults_and_values() -> None:
    config = parse_config(tenant_with({"password": "secret"}), BASE)
    (tenant,) = config.tenants
    extension = tenant.extensions["1000"]
    assert (extension.pickup_groups, extension.directed_pickup) == ((), False)
    document = tenant_with(
        {"password": "s", "pickup_groups": ["sales", "front", "sales"], "directed_pickup": True}
    )
    (tenant,) = parse_config(document, BASE).tenants
    assert tenant.extensions["1000"].pickup_groups == ("sales", "front")
    assert tenant.extensions["1000"].directed_pickup is True


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ({"pickup_groups": "sales"}, "pickup_groups"),
        ({"pickup_groups": ["no spaces"]}, "pickup_groups"),
        ({"pickup_groups": [f"g{i}" for i in range(17)]}, "pickup_groups"),
        ({"directed_pickup": "yes"}, "directed_pickup"),
    ],
)
def test_errors_name_the_key(value: dict, key: str) -> None:
    error = error_for(tenant_with({"password": "s", **value}))
    assert str(error).startswith(f"{EXT}.{key}:"), str(error)


def test_the_demo_config_has_a_pickup_group() -> None:
    (tenant,) = load_config(REPO / "pbx.example.toml").tenants
    assert tenant.extensions["1001"].pickup_groups == tenant.extensions["1002"].pickup_groups == ("front",)
