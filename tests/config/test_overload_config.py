"""The `[overload]` table: defaults on, every key checked, errors naming the key."""

from __future__ import annotations

import pytest

from pbx.config import parse_config
from pbx.config.overload import OverloadConfig
from tests.config.test_config import BASE, data, error_for


def test_defaults_are_on() -> None:
    config = parse_config(data(), BASE)
    assert config.overload == OverloadConfig()
    assert config.overload.enabled and config.overload.max_rate == 0.0


def test_every_key_read() -> None:
    table = {
        "enabled": False,
        "lag_interval": 0.1,
        "lag_high": 0.3,
        "lag_critical": 2,
        "max_pending": 0,
        "max_rate": 150,
        "burst": 20,
        "retry_after": 10,
        "drop_critical": False,
        "stateless_cache_size": 100,
        "receive_buffer": 65536,
        "receive_buffer_level": "high",
    }
    config = parse_config(data(overload=table), BASE).overload
    assert config == OverloadConfig(
        enabled=False,
        lag_interval=0.1,
        lag_high=0.3,
        lag_critical=2.0,
        max_pending=0,
        max_rate=150.0,
        burst=20.0,
        retry_after=10,
        drop_critical=False,
        stateless_cache_size=100,
        receive_buffer=65536,
        receive_buffer_level="high",
    )


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ({"lag_hihg": 0.2}, "overload.lag_hihg"),
        ({"lag_high": 0}, "overload.lag_high"),
        ({"lag_high": 0.5, "lag_critical": 0.4}, "overload.lag_critical"),
        ({"max_rate": -1}, "overload.max_rate"),
        ({"max_rate": True}, "overload.max_rate"),
        ({"burst": "x"}, "overload.burst"),
        ({"retry_after": 0}, "overload.retry_after"),
        ({"max_pending": 1.5}, "overload.max_pending"),
        ({"enabled": "yes"}, "overload.enabled"),
        ({"stateless_cache_size": 0}, "overload.stateless_cache_size"),
        ({"receive_buffer_level": "normal"}, "overload.receive_buffer_level"),
        ({"receive_buffer_level": 1}, "overload.receive_buffer_level"),
    ],
)
def test_bad_values_name_the_key(table: dict, path: str) -> None:
    assert error_for(data(overload=table)).path == path


def test_the_session_7_knobs_are_read_with_their_defaults() -> None:
    defaults = parse_config(data(), BASE).overload
    assert (defaults.follow_completions, defaults.queue_drop, defaults.finish_critical) == (True, 0.0, False)
    assert (defaults.reject_high, defaults.receive_buffer_hold) == (True, 0.0)
    table = {
        "follow_completions": False,
        "queue_drop": 0.1,
        "finish_critical": True,
        "reject_high": False,
        "receive_buffer_hold": 5,
    }
    config = parse_config(data(overload=table), BASE).overload
    assert (config.follow_completions, config.queue_drop, config.finish_critical) == (False, 0.1, True)
    assert (config.reject_high, config.receive_buffer_hold) == (False, 5.0)
    for key, bad in (("queue_drop", -1), ("reject_high", "no"), ("receive_buffer_hold", "5s")):
        assert f"overload.{key}" in str(error_for(data(overload={key: bad})))


def test_prioritize_and_the_aimd_steps_are_read() -> None:
    defaults = parse_config(data(), BASE).overload
    assert (defaults.prioritize, defaults.increase, defaults.decrease) == (True, 0.05, 0.8)
    assert defaults.lag_attack == 0.25 and defaults.refuse_at_once
    table = {"prioritize": False, "increase": 0.01, "decrease": 0.9, "lag_attack": 1, "refuse_at_once": False}
    config = parse_config(data(overload=table), BASE).overload
    assert (config.prioritize, config.increase, config.decrease) == (False, 0.01, 0.9)
    assert config.lag_attack == 1.0 and not config.refuse_at_once
    bad_values = (
        ("prioritize", 1),
        ("refuse_at_once", "yes"),
        ("increase", 0),
        ("increase", 1.5),
        ("decrease", 1),
        ("decrease", "x"),
        ("lag_attack", 0),
        ("lag_attack", 2),
    )
    for key, bad in bad_values:
        assert f"overload.{key}" in str(error_for(data(overload={key: bad})))
