"""`[media] relay` and `[media] rtpengine` (pbx/config/load_media.py): the relay's name and rtpengine's ng
address, normalized; anything else is a `ConfigError` naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.config import ConfigError, parse_config

from .test_config import BASE, data


def media(**values: object):
    return parse_config(data(media=values), BASE).media


def test_defaults_are_the_builtin_relay() -> None:
    config = media()
    assert (config.relay, config.rtpengine) == ("builtin", "127.0.0.1:2223")


@pytest.mark.parametrize(
    ("given", "stored"),
    [("127.0.0.1:2223", "127.0.0.1:2223"), ("10.0.0.5:22222", "10.0.0.5:22222"), ("[::1]:2223", "[::1]:2223"),
     ("[2001:DB8::0:1]:9", "[2001:db8::1]:9")],
)  # fmt: skip
def test_rtpengine_relay_and_address(given: str, stored: str) -> None:
    config = media(relay="rtpengine", rtpengine=given)
    assert (config.relay, config.rtpengine) == ("rtpengine", stored)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"relay": "kernel"}, "media.relay"),
        ({"relay": 1}, "media.relay"),
        ({"rtpengine": "localhost:2223"}, "media.rtpengine"),
        ({"rtpengine": "127.0.0.1"}, "media.rtpengine"),
        ({"rtpengine": "127.0.0.1:0"}, "media.rtpengine"),
        ({"rtpengine": "127.0.0.1:70000"}, "media.rtpengine"),
        ({"rtpengine": "::1:2223"}, "media.rtpengine"),
        ({"rtpengine": "127.0.0.1:+22"}, "media.rtpengine"),
    ],
)
def test_bad_values_name_the_key(values: dict, key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        media(**values)
    assert info.value.path == key
