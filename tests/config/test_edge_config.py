"""`[edge]` (issue 14): defaults, validation naming the key, and the library's scanner list kept in step."""

from __future__ import annotations

from typing import Any

import pytest

from pbx.config import ConfigError, parse_config
from pbx.config.edge import SCANNER_USER_AGENTS, EdgeConfig
from pbx.sip.screening import SCANNER_USER_AGENTS as LIBRARY_SCANNERS
from tests.config.test_config import BASE, data, error_for


def edge(**values: Any) -> EdgeConfig:
    return parse_config(data(edge=values), BASE).edge


def test_defaults_are_on_and_generous() -> None:
    config = parse_config(data(), BASE).edge
    assert config == EdgeConfig()
    assert config.enabled
    assert (config.rate, config.burst, config.block_after, config.block_duration) == (200, 400, 400, 60)
    assert "friendly-scanner" in config.scanner_user_agents
    assert not config.drop_unserved_addresses
    assert config.nftables_table == ""


def test_the_config_and_library_scanner_lists_agree() -> None:
    assert SCANNER_USER_AGENTS == LIBRARY_SCANNERS
    assert not any("sipsak" in agent for agent in SCANNER_USER_AGENTS)  # an admin's tool, not a scanner


def test_values_are_read() -> None:
    config = edge(
        rate=0,
        burst=10,
        block_duration=5,
        scanner_user_agents=[" Evil "],
        drop_unserved_addresses=True,
        nftables_table="inet   pbx",
        enabled=False,
    )
    assert (config.rate, config.burst, config.block_duration) == (0.0, 10.0, 5.0)
    assert config.scanner_user_agents == ("Evil",)
    assert config.drop_unserved_addresses and not config.enabled
    assert config.nftables_table == "inet pbx"
    assert edge(scanner_user_agents=[]).scanner_user_agents == ()


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"rate": -1}, "edge.rate"),
        ({"burst": 0}, "edge.burst"),
        ({"burst": True}, "edge.burst"),
        ({"block_after": float("nan")}, "edge.block_after"),
        ({"block_duration": 0}, "edge.block_duration"),
        ({"max_sources": 10}, "edge.max_sources"),
        ({"scanner_user_agents": ["ok", ""]}, "edge.scanner_user_agents[1]"),
        ({"scanner_user_agents": "friendly-scanner"}, "edge.scanner_user_agents"),
        ({"nftables_table": "pbx"}, "edge.nftables_table"),
        ({"nftables_table": "inet pbx; flush ruleset"}, "edge.nftables_table"),
        ({"nftables_table": "nope pbx"}, "edge.nftables_table"),
        ({"rate_limit": 5}, "edge.rate_limit"),
    ],
)
def test_errors_name_the_key(values: dict[str, Any], path: str) -> None:
    assert isinstance(error_for(data(edge=values)), ConfigError)
    assert error_for(data(edge=values)).path == path
