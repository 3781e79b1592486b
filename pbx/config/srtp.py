"""The `srtp` setting of extensions and trunks (RFC 3711 media with SDES keys, RFC 4568): its values and
their checking, kept out of `pbx.config.load` (the loaders call `srtp_mode` with a line each).

- ``"off"``: plain RTP only: an `RTP/SAVP` offer from the phone is answered `488`, and the PBX offers
  `RTP/AVP`.
- ``"optional"`` (the default, what Asterisk and FreeSWITCH users expect: nothing changes for plain phones):
  the PBX accepts an SRTP offer when the signalling is TLS (the keys then travel encrypted), and offers plain
  `RTP/AVP` itself.
- ``"mandatory"``: SRTP only: the PBX offers `RTP/SAVP` with `a=crypto` and refuses (`488`) plain offers.

Keys in an offer that arrived over plain UDP or TCP are refused unless `allow_srtp_over_plain` (per extension
or trunk, default false): anyone on the path could read them.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SRTP_MODE", "SRTP_KEYS", "SRTP_MODES", "srtp_mode", "srtp_over_plain"]

SRTP_MODES: tuple[str, ...] = ("off", "optional", "mandatory")
"""The values of `srtp`."""

DEFAULT_SRTP_MODE = "optional"

SRTP_KEYS: tuple[str, ...] = ("srtp", "allow_srtp_over_plain")
"""The keys this module reads in an extension's or trunk's table."""


def srtp_mode(table: object, path: str) -> str:
    """The `srtp` value of an extension's or trunk's table (lower case; default `DEFAULT_SRTP_MODE`).

    Raises:
        ValueError: (path of the key, reason) as its two arguments, for the caller's ConfigError.
    """
    value = table.get("srtp", DEFAULT_SRTP_MODE) if isinstance(table, dict) else DEFAULT_SRTP_MODE
    if not isinstance(value, str) or value.strip().lower() not in SRTP_MODES:
        raise ValueError(f"{path}.srtp", f"must be one of {', '.join(SRTP_MODES)}, not {value!r}")
    return value.strip().lower()


def srtp_over_plain(table: object, path: str) -> bool:
    """The `allow_srtp_over_plain` value of an extension's or trunk's table (default false).

    Raises:
        ValueError: (path of the key, reason), as `srtp_mode`.
    """
    value = table.get("allow_srtp_over_plain", False) if isinstance(table, dict) else False
    if not isinstance(value, bool):
        raise ValueError(f"{path}.allow_srtp_over_plain", "must be true or false")
    return value
