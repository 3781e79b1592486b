"""Read the media relay choice of the TOML config: `[media] relay` and `[media] rtpengine`.

Called by `pbx.config.load._Parser.media` (imported lazily from there: no import cycle at start-up); every
problem is a `ConfigError` naming the key. The keys are documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pbx.config.load import ConfigError

if TYPE_CHECKING:
    from pbx.config.load import _Parser

RELAYS = ("builtin", "rtpengine")
"""`[media] relay`: the built-in relay, or rtpengine (for calls bridged from the start)."""

DEFAULT_RTPENGINE = "127.0.0.1:2223"


def relay_choice(parser: _Parser, media: Mapping[str, Any]) -> tuple[str, str]:
    """(`relay`, `rtpengine`) of `[media]`: the relay's name and rtpengine's ng address "IP:port"
    (brackets around an IPv6 address: "[::1]:2223"), normalized."""
    relay = parser._string(media, "relay", "media", "builtin")
    if relay not in RELAYS:
        raise ConfigError("media.relay", f"must be one of {', '.join(RELAYS)}, not {relay!r}")
    raw = parser._string(media, "rtpengine", "media", DEFAULT_RTPENGINE)
    host, port = ng_address(raw)
    return relay, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ng_address(value: str) -> tuple[str, int]:
    """("IP", port) of "IP:port" or "[IPv6]:port".

    Raises:
        ConfigError: not an IP address and a port from 1 to 65535.
    """
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address needs its brackets
    try:
        address = ipaddress.ip_address(host)
        number = int(port) if sep and port.isdigit() else 0
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise ConfigError("media.rtpengine", f"must be IP:port (rtpengine's listen-ng), not {value!r}")
    return str(address), number
