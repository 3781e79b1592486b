"""The `srtp` and `allow_srtp_over_plain` keys of extensions and trunks (`pbx.config.srtp`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pbx.config import ConfigError, parse_config

BASE = Path("/etc/pbx")


def document(extension: dict[str, Any], trunk: dict[str, Any]) -> dict[str, Any]:
    return {
        "sip": {"listen": [{"transport": "udp", "host": "127.0.0.1"}]},
        "tenants": {
            "default": {
                "domain": "localhost",
                "extensions": {"1000": {"password": "secret", **extension}},
                "trunks": {"carrier": {"host": "sip.carrier.example", **trunk}},
            }
        },
    }


def test_defaults_optional_and_not_over_plain() -> None:
    tenant = parse_config(document({}, {}), BASE).tenants[0]
    extension, trunk = tenant.extensions["1000"], tenant.trunks["carrier"]
    assert (extension.srtp, extension.allow_srtp_over_plain) == ("optional", False)
    assert (trunk.srtp, trunk.allow_srtp_over_plain) == ("optional", False)


def test_values_read() -> None:
    tenant = parse_config(
        document(
            {"srtp": "Mandatory", "allow_srtp_over_plain": True},
            {"srtp": "off", "allow_srtp_over_plain": True},
        ),
        BASE,
    ).tenants[0]
    assert (tenant.extensions["1000"].srtp, tenant.extensions["1000"].allow_srtp_over_plain) == (
        "mandatory",
        True,
    )
    assert (tenant.trunks["carrier"].srtp, tenant.trunks["carrier"].allow_srtp_over_plain) == ("off", True)


@pytest.mark.parametrize(
    ("extension", "trunk", "where", "reason"),
    [
        ({"srtp": "always"}, {}, "extensions.1000.srtp", "must be one of off, optional, mandatory"),
        ({"srtp": 1}, {}, "extensions.1000.srtp", "must be one of"),
        ({}, {"srtp": "yes"}, "trunks.carrier.srtp", "must be one of"),
        ({"allow_srtp_over_plain": "yes"}, {}, "extensions.1000.allow_srtp_over_plain", "true or false"),
        ({}, {"allow_srtp_over_plain": 1}, "trunks.carrier.allow_srtp_over_plain", "true or false"),
    ],
)
def test_errors_name_the_key(
    extension: dict[str, Any], trunk: dict[str, Any], where: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(document(extension, trunk), BASE)
    assert where in str(info.value) and reason in str(info.value)
