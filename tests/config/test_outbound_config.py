"""`[tenants.NAME.outbound]` and the extensions' toll-fraud keys (`pbx.config.load_outbound`), and how the
service turns them into the B2BUA's policy (`pbx.service.outbound`)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from pbx.config import ConfigError, parse_config
from pbx.config.outbound import ExtensionOutbound, OutboundConfig, OutboundLimit
from pbx.service.adapters import directories
from pbx.service.outbound import outbound_policy

from .test_config import BASE, EXT, tenant_with

OUT = "tenants.default.outbound"


def load(extension: dict[str, Any] | None = None, **outbound: Any) -> Any:
    document = tenant_with(extension or {"password": "x"}, outbound=outbound)
    return parse_config(document, BASE)


def test_defaults_without_the_table() -> None:
    tenant = parse_config(tenant_with({"password": "x"}), BASE).tenants[0]
    assert tenant.outbound == OutboundConfig()
    assert tenant.extensions["1000"].may_call_out is False


def test_a_full_table_and_an_extensions_own_settings() -> None:
    config = load(
        {"password": "x", "outbound_classes": ["national", "international"], "max_outbound_calls": 1},
        country="44",
        trunk_prefix="0",
        international_prefix="00",
        classes=["local"],
        emergency=["999", "112"],
        premium=["+449"],
        international=[],
        local=["+4420"],
        trunk_to_trunk=True,
        max_calls=10,
        max_calls_per_hour=100,
        max_minutes_per_hour=600,
        extension_max_calls=2,
        extension_max_calls_per_hour=20,
        extension_max_minutes_per_hour=120,
    )
    tenant = config.tenants[0]
    out = tenant.outbound
    assert (out.country, out.trunk_prefix, out.international_prefix) == ("44", "0", "00")
    assert (out.classes, out.emergency, out.premium, out.international, out.local) == (
        ("local",),
        ("999", "112"),
        ("+449",),
        (),
        ("+4420",),
    )
    assert out.trunk_to_trunk is True
    assert out.limit == OutboundLimit(10, 100, 600)
    assert out.extension_limit == OutboundLimit(2, 20, 120)
    assert out.extensions["1000"] == ExtensionOutbound(
        ("internal", "national", "international"), OutboundLimit(1, 0, 0)
    )
    assert tenant.extensions["1000"].may_call_out is True  # implied by its classes
    (info,) = directories(config)("default").extensions.values()  # type: ignore[union-attr]
    assert info.outbound_classes == ("internal", "national", "international")
    assert outbound_policy(config, Clock()).counting
    assert not outbound_policy(parse_config(tenant_with({"password": "x"}), BASE), Clock()).counting
    policy = outbound_policy(config, Clock()).settings("default")
    assert policy.rules.country == "44" and policy.rules.local == ("+4420",)
    assert policy.extension_limits["1000"].concurrent == 1
    assert policy.extension_limit.minutes_per_hour == 120


@pytest.mark.parametrize(
    ("extension", "outbound", "path", "message"),
    [
        ({}, {"country": "01"}, f"{OUT}.country", "country code"),
        ({}, {"country": 1}, f"{OUT}.country", "country code"),
        ({}, {"classes": ["world"]}, f"{OUT}.classes[0]", "must be one of"),
        ({}, {"classes": ["local", "local"]}, f"{OUT}.classes[1]", "listed twice"),
        ({}, {"emergency": ["9-1-1"]}, f"{OUT}.emergency[0]", "1-15 digits"),
        ({}, {"premium": ["1900"]}, f"{OUT}.premium[0]", "E.164 prefix"),
        ({}, {"max_calls": -1}, f"{OUT}.max_calls", "from 0"),
        ({}, {"max_calls_per_hour": True}, f"{OUT}.max_calls_per_hour", "from 0"),
        ({}, {"trunk_to_trunk": "yes"}, f"{OUT}.trunk_to_trunk", "true or false"),
        ({}, {"nonsense": 1}, f"{OUT}.nonsense", "unknown key"),
        ({"outbound_classes": "national"}, {}, f"{EXT}.outbound_classes", "array"),
        (
            {"outbound_classes": ["national"], "may_call_out": False},
            {},
            f"{EXT}.may_call_out",
            "is false but",
        ),
        ({"max_outbound_calls": 2.5}, {}, f"{EXT}.max_outbound_calls", "integer"),
    ],
)
def test_errors_name_the_key(
    extension: dict[str, Any], outbound: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"password": "x", **extension}, **outbound)
    assert caught.value.path == path
    assert message in str(caught.value)


def test_emergency_only_classes_do_not_imply_calling_out() -> None:
    tenant = load({"password": "x", "outbound_classes": ["emergency"]}).tenants[0]
    assert tenant.extensions["1000"].may_call_out is False
    assert tenant.outbound.extensions["1000"].classes == ("internal", "emergency")
