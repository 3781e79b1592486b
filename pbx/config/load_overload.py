"""Read the `[overload]` table of the TOML config into `pbx.config.overload.OverloadConfig`.

Called by `pbx.config.load._Parser.config` (imported lazily there, as `load_voicemail` is); every problem
is a `ConfigError` naming the key, unknown keys included. The keys are documented in docs/configuration.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pbx.config.load import ConfigError, _join
from pbx.config.overload import OverloadConfig

if TYPE_CHECKING:
    from pbx.config.load import _Parser


def _rate(table: Mapping[str, Any], key: str, default: float) -> float:
    """A number of requests per second, 0 (no cap) or more."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(_join("overload", key), f"must be a number of at least 0, not {value!r}")
    return float(value)


def _share(
    table: Mapping[str, Any], key: str, default: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    """A share between 0 and 1 (either end excluded when asked)."""
    value = table.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0 if low_open else value >= 0)
        or not (value < 1 if high_open else value <= 1)
    ):
        bounds = f"{'above' if low_open else 'from'} 0 and {'below' if high_open else 'up to'} 1"
        raise ConfigError(_join("overload", key), f"must be a number {bounds}, not {value!r}")
    return float(value)


def overload(parser: _Parser, value: object) -> OverloadConfig:
    """The `[overload]` table."""
    table = parser._table(value, "overload", "overload")
    path = "overload"
    high = parser._seconds(table, "lag_high", path, 0.2, 0.001, 60.0)
    critical = parser._seconds(table, "lag_critical", path, 1.0, 0.001, 60.0)
    if critical < high:
        raise ConfigError(
            "overload.lag_critical", f"must be at least overload.lag_high ({high:g}), not {critical:g}"
        )
    return OverloadConfig(
        enabled=parser._boolean(table, "enabled", path, True),
        lag_interval=parser._seconds(table, "lag_interval", path, 0.05, 0.005, 10.0),
        lag_high=high,
        lag_critical=critical,
        max_pending=parser._integer(table, "max_pending", path, 2000, 0, 10_000_000),
        max_rate=_rate(table, "max_rate", 0.0),
        burst=_rate(table, "burst", 0.0),
        retry_after=parser._integer(table, "retry_after", path, 5, 1, 3600),
        drop_critical=parser._boolean(table, "drop_critical", path, True),
        stateless_cache_size=parser._integer(table, "stateless_cache_size", path, 8192, 1, 10_000_000),
        receive_buffer=parser._integer(table, "receive_buffer", path, 262144, 0, 2**30),
        receive_buffer_level=_level(table),
        follow_completions=parser._boolean(table, "follow_completions", path, True),
        queue_drop=parser._seconds(table, "queue_drop", path, 0.0, 0.0, 60.0),
        finish_critical=parser._boolean(table, "finish_critical", path, False),
        reject_high=parser._boolean(table, "reject_high", path, True),
        receive_buffer_hold=parser._seconds(table, "receive_buffer_hold", path, 0.0, 0.0, 3600.0),
        prioritize=parser._boolean(table, "prioritize", path, True),
        increase=_share(table, "increase", 0.05, low_open=True),
        decrease=_share(table, "decrease", 0.8, low_open=True, high_open=True),
        read_budget=parser._integer(table, "read_budget", path, 0, 0, 2**30),
        lag_attack=_share(table, "lag_attack", 0.25, low_open=True),
        refuse_at_once=parser._boolean(table, "refuse_at_once", path, True),
    )


def _level(table: Mapping[str, Any]) -> str:
    value = table.get("receive_buffer_level", "critical")
    if value not in ("critical", "high"):
        raise ConfigError("overload.receive_buffer_level", f'must be "critical" or "high", not {value!r}')
    return str(value)
