"""Read the `[edge]` table of the TOML config into `pbx.config.edge.EdgeConfig`.

Called by `pbx.config.load._Parser` (imported lazily from there: this module imports that one); every
problem is a `ConfigError` naming the key. The keys are documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pbx.config.edge import SCANNER_USER_AGENTS, EdgeConfig
from pbx.config.load import ConfigError, _join

if TYPE_CHECKING:
    from pbx.config.load import _Parser

_NFT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_NFT_FAMILIES = ("ip", "ip6", "inet", "bridge", "netdev", "arp")
_MAX_RATE = 1_000_000.0


def _rate(table: Mapping[str, Any], key: str, default: float, *, zero: bool) -> float:
    """A rate or a burst: a number from 0 (only where `zero`: no limit) or 1 to a million."""
    value = table.get(key, default)
    low = 0.0 if zero else 1.0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= _MAX_RATE
    ):
        raise ConfigError(
            _join("edge", key), f"must be a number from {low:g} to {_MAX_RATE:g}, not {value!r}"
        )
    return float(value)


def edge(parser: _Parser, value: object) -> EdgeConfig:
    """The `[edge]` table."""
    table = parser._table(value, "edge", "edge")
    path = "edge"
    agents = parser._strings(table, "scanner_user_agents", path, list(SCANNER_USER_AGENTS))
    for index, agent in enumerate(agents):
        if not agent.strip() or len(agent) > 64 or any(ord(c) < 32 for c in agent):
            raise ConfigError(f"edge.scanner_user_agents[{index}]", "must be 1 to 64 printable characters")
    nft = parser._string(table, "nftables_table", path, "").strip()
    if nft:
        parts = nft.split()
        if len(parts) != 2 or parts[0] not in _NFT_FAMILIES or not _NFT_NAME.fullmatch(parts[1]):
            raise ConfigError(
                "edge.nftables_table",
                f"must be 'FAMILY TABLE' (family one of {', '.join(_NFT_FAMILIES)}), like 'inet pbx', "
                f"not {nft!r}",
            )
        nft = " ".join(parts)
    return EdgeConfig(
        enabled=parser._boolean(table, "enabled", path, True),
        rate=_rate(table, "rate", 200.0, zero=True),
        burst=_rate(table, "burst", 400.0, zero=False),
        block_after=_rate(table, "block_after", 400.0, zero=False),
        block_duration=parser._seconds(table, "block_duration", path, 60.0, 1.0, 86400.0),
        connection_rate=_rate(table, "connection_rate", 10.0, zero=True),
        connection_burst=_rate(table, "connection_burst", 64.0, zero=False),
        trunk_rate=_rate(table, "trunk_rate", 2000.0, zero=True),
        trunk_burst=_rate(table, "trunk_burst", 4000.0, zero=False),
        max_sources=parser._integer(table, "max_sources", path, 65536, 64, 10_000_000),
        scanner_user_agents=tuple(agent.strip() for agent in agents),
        drop_unserved_addresses=parser._boolean(table, "drop_unserved_addresses", path, False),
        nftables_table=nft,
    )
