"""Read a tenant's `[tenants.NAME.outbound]` table and its extensions' toll-fraud keys into
`pbx.config.outbound.OutboundConfig` (docs/configuration.md; docs/security.md, "Toll fraud").

Called by `pbx.config.load` for each tenant; every problem is a `ConfigError` naming the key:

- ``country``: 1-3 digits, not starting with 0; ``trunk_prefix`` and ``international_prefix``: digits;
- ``classes`` and an extension's ``outbound_classes``: names from `OUTBOUND_CLASSES`, no duplicates;
- ``emergency``: short numbers (digits, at most 15); ``premium``, ``international``, ``local``: E.164
  prefixes (``+`` and 1-15 digits);
- limits: integers from 0 (no limit) to 1,000,000;
- an extension whose ``outbound_classes`` name a class that goes through a trunk at a cost (local, national,
  international, premium) may call out by default; ``may_call_out = false`` beside such classes is a
  contradiction and an error.

This module imports `pbx.config.load` (its `ConfigError` and helpers); `load` imports this one when it parses
a tenant, so neither needs the other at import time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pbx.config.load import ConfigError, _join, _kind
from pbx.config.outbound import (
    CALLING_CLASSES,
    OUTBOUND_CLASSES,
    OUTBOUND_KEYS,
    ExtensionOutbound,
    OutboundConfig,
    OutboundLimit,
)

_COUNTRY = re.compile(r"[1-9][0-9]{0,2}")
_DIGITS = re.compile(r"[0-9]{0,6}")
_SHORT = re.compile(r"[0-9]{1,15}")
_PREFIX = re.compile(r"\+[0-9]{1,15}")
MAX_LIMIT = 1_000_000


def _strings(
    table: Mapping[str, Any], key: str, path: str, pattern: re.Pattern[str], what: str
) -> tuple[str, ...]:
    value = table[key]
    if not isinstance(value, list):
        raise ConfigError(_join(path, key), f"must be an array of strings, not {_kind(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise ConfigError(f"{_join(path, key)}[{index}]", f"must be {what}, not {item!r}")
    return tuple(dict.fromkeys(value))


def _classes(table: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = table[key]
    if not isinstance(value, list):
        raise ConfigError(_join(path, key), f"must be an array of class names, not {_kind(value)}")
    for index, item in enumerate(value):
        if item not in OUTBOUND_CLASSES:
            known = ", ".join(OUTBOUND_CLASSES)
            raise ConfigError(f"{_join(path, key)}[{index}]", f"must be one of {known}, not {item!r}")
        if value.index(item) != index:
            raise ConfigError(f"{_join(path, key)}[{index}]", f"{item!r} is listed twice")
    return tuple(value)


def _limit(table: Mapping[str, Any], key: str, path: str) -> int:
    value = table.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise ConfigError(
            _join(path, key), f"must be an integer from 0 (no limit) to {MAX_LIMIT}, not {value!r}"
        )
    return value


def _text(table: Mapping[str, Any], key: str, path: str, pattern: re.Pattern[str], what: str) -> str:
    value = table[key]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(_join(path, key), f"must be {what}, not {value!r}")
    return value


def may_call_out_default(table: Mapping[str, Any]) -> bool:
    """An extension's ``may_call_out`` when it does not say: whether its ``outbound_classes`` name a class
    that goes through a trunk (a malformed list is reported by `parse_outbound`)."""
    classes = table.get("outbound_classes")
    return isinstance(classes, list) and any(c in CALLING_CLASSES for c in classes if isinstance(c, str))


def parse_outbound(value: object, path: str, extensions: Mapping[str, object], raw: object) -> OutboundConfig:
    """The tenant's `[tenants.NAME.outbound]` table (`value`, ``{}`` when absent) and the toll-fraud keys of
    its extensions (`raw`: the tenant's raw ``extensions`` table; `extensions`: the parsed ones)."""
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a table, not {_kind(value)}")
    for key in value:
        if key not in OUTBOUND_KEYS:
            raise ConfigError(_join(path, key), "unknown key")
    found: dict[str, Any] = {}
    if "country" in value:
        found["country"] = _text(
            value, "country", path, _COUNTRY, "a country code (1-3 digits, no leading 0)"
        )
    if "trunk_prefix" in value:
        found["trunk_prefix"] = _text(value, "trunk_prefix", path, _DIGITS, "up to 6 digits")
    if "international_prefix" in value:
        found["international_prefix"] = _text(value, "international_prefix", path, _DIGITS, "up to 6 digits")
    if "classes" in value:
        found["classes"] = _classes(value, "classes", path)
    if "emergency" in value:
        found["emergency"] = _strings(value, "emergency", path, _SHORT, "a number of 1-15 digits")
    for key in ("premium", "international", "local"):
        if key in value:
            found[key] = _strings(value, key, path, _PREFIX, "an E.164 prefix ('+' and 1-15 digits)")
    if "trunk_to_trunk" in value:
        if not isinstance(value["trunk_to_trunk"], bool):
            raise ConfigError(_join(path, "trunk_to_trunk"), "must be true or false")
        found["trunk_to_trunk"] = value["trunk_to_trunk"]
    found["limit"] = OutboundLimit(
        _limit(value, "max_calls", path),
        _limit(value, "max_calls_per_hour", path),
        _limit(value, "max_minutes_per_hour", path),
    )
    found["extension_limit"] = OutboundLimit(
        _limit(value, "extension_max_calls", path),
        _limit(value, "extension_max_calls_per_hour", path),
        _limit(value, "extension_max_minutes_per_hour", path),
    )
    found["extensions"] = _extensions(raw, path.rsplit(".", 1)[0], extensions)
    return OutboundConfig(**found)


def _extensions(
    raw: object, tenant_path: str, extensions: Mapping[str, object]
) -> dict[str, ExtensionOutbound]:
    own: dict[str, ExtensionOutbound] = {}
    if not isinstance(raw, dict):
        return own
    for number, table in raw.items():
        if number not in extensions or not isinstance(table, dict):
            continue
        path = _join(_join(tenant_path, "extensions"), number)
        classes: tuple[str, ...] = ()
        if "outbound_classes" in table:
            classes = _classes(table, "outbound_classes", path)
            if table.get("may_call_out") is False and CALLING_CLASSES.intersection(classes):
                raise ConfigError(
                    _join(path, "may_call_out"),
                    "is false but outbound_classes names classes that go through trunks",
                )
            classes = tuple(dict.fromkeys(("internal", *classes)))  # never empty once written
        keys = ("max_outbound_calls", "max_outbound_calls_per_hour", "max_outbound_minutes_per_hour")
        limit = None
        if any(key in table for key in keys):
            limit = OutboundLimit(*(_limit(table, key, path) for key in keys))
        if classes or limit is not None:
            own[number] = ExtensionOutbound(classes, limit)
    return own
