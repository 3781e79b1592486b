"""Read a tenant's `[tenants.NAME.trunks.TRUNK]` tables into `pbx.config.trunks.Trunk` values.

Called by `pbx.config.load` for each tenant (``trunks = parse_trunks(parser, table, path)``); every problem is
a `ConfigError` naming the key, as everywhere in the config:

- the trunk's name: 1-63 letters, digits, '.', '_' or '-' (``dial trunk:NAME/NUMBER`` names it);
- `host` (a host name or IP address, resolved by RFC 3263) or `proxies` ("host[:port]", tried in order) is
  required; `outbound_proxy` is "host[:port]" or "";
- `transport` is "udp", "tcp", "tls" or "" (RFC 3263 chooses), in any case;
- `register = true` needs `username` and `password`; user names and realms never hold quotes, backslashes,
  whitespace or control characters (they go into SIP headers);
- `dids` are digits with an optional leading "+", unique across the tenant's trunks;
- `networks` are CIDR networks, stored normalised (``192.0.2.7/24`` -> ``192.0.2.0/24``);
- `codecs` are spelt as `[calls] codecs` are (canonical spelling of the known names, no duplicates);
- `dtmf` is one of `DTMF_MODES`, `did_source` one of `DID_SOURCES`; `max_calls` >= 0;
- an unknown key is an error naming it (with a "did you mean" when one is close).

This module imports `pbx.config.load` (its `ConfigError` and parser helpers); `load` imports this one when it
parses a tenant, so neither needs the other at import time.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from pbx.config.load import _CONTROL, _TENANT_NAME, _TOKEN, ConfigError, _join, _kind, _srtp_settings
from pbx.config.model import CODECS, normalize_host
from pbx.config.trunks import DID_SOURCES, DTMF_MODES, TRUNK_TRANSPORTS, Trunk

SECTION = "tenants.<tenant>.trunks.<trunk>"
"""The trunk table's path in `pbx.config.load.SCHEMA_KEYS` (its keys are `pbx.config.trunks.TRUNK_KEYS`)."""

_SIP_USER = re.compile(r"[A-Za-z0-9_.!~*'()&=+$,-]{1,128}")
"""A SIP user part without escapes (RFC 3261 25.1 unreserved and user-unreserved, less ';?/')."""
_DID = re.compile(r"\+?[0-9]{1,32}")
_CALLER_ID = re.compile(r"\+?[0-9]{1,32}")
_NAME_FORBIDDEN = re.compile(r'["\\<>]')
_HOST_PORT = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>[0-9]{1,5}))?")
_MAX_DIDS = 10_000


def parse_trunks(parser: Any, value: object, path: str) -> dict[str, Trunk]:
    """The trunks of one tenant, by name, in the order written.

    Args:
        parser: the `pbx.config.load._Parser` of this run (its typed getters: `_table`, `_string`, ...).
        value: the tenant's ``trunks`` table ({} when absent).
        path: its path, ``tenants.NAME.trunks``.

    Raises:
        ConfigError: naming the first key that is wrong.
    """
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a table of trunks, not {_kind(value)}")
    trunks: dict[str, Trunk] = {}
    dids: dict[str, str] = {}
    contacts: dict[str, str] = {}
    for name, item in value.items():
        trunk_path = _join(path, name)
        if not _TENANT_NAME.fullmatch(name):
            raise ConfigError(trunk_path, "a trunk name must be 1-63 letters, digits, '.', '_' or '-'")
        trunk = _trunk(parser, name, item, trunk_path)
        for index, did in enumerate(trunk.dids):
            if did in dids:
                raise ConfigError(
                    f"{_join(trunk_path, 'dids')}[{index}]", f"{did} is already delivered by {dids[did]}"
                )
            dids[did] = trunk_path
        if trunk.register and trunk.enabled:
            user = trunk.registered_user
            if user in contacts:
                key = "contact_user" if trunk.contact_user else "username"
                raise ConfigError(
                    _join(trunk_path, key),
                    f"the registered Contact user {user!r} is already used by {contacts[user]}: "
                    "set contact_user to tell their inbound calls apart",
                )
            contacts[user] = trunk_path
        trunks[name] = trunk
    return trunks


def _trunk(parser: Any, name: str, value: object, path: str) -> Trunk:
    table: Mapping[str, Any] = parser._table(value, path, SECTION)
    host = ""
    if "host" in table:
        host = parser._host(table["host"], _join(path, "host"))
    port = parser._integer(table, "port", path, 0, 0, 65535)
    proxies = tuple(
        _host_port(parser, raw, f"{_join(path, 'proxies')}[{index}]")
        for index, raw in enumerate(parser._strings(table, "proxies", path, []))
    )
    if not host and not proxies:
        raise ConfigError(_join(path, "host"), "is required unless proxies are listed")
    transport = parser._string(table, "transport", path, "").strip().lower()
    if transport not in TRUNK_TRANSPORTS:
        raise ConfigError(
            _join(path, "transport"), f'must be one of udp, tcp, tls or "", not {table["transport"]!r}'
        )
    outbound_proxy = parser._string(table, "outbound_proxy", path, "")
    if outbound_proxy:
        outbound_proxy = _host_port(parser, outbound_proxy, _join(path, "outbound_proxy"))
    username = _user(parser, table, "username", path)
    auth_username = _credential_text(parser, table, "auth_username", path)
    password = parser._text(table, "password", path, "", empty=True)
    realm = _credential_text(parser, table, "realm", path)
    register = parser._boolean(table, "register", path, False)
    if register:
        for key, given in (("username", username), ("password", password)):
            if not given:
                raise ConfigError(_join(path, key), "is required when register is true")
    contact_user = _user(parser, table, "contact_user", path)
    register_expires = parser._integer(table, "register_expires", path, 3600, 10, 604800)
    retry_interval = parser._seconds(table, "retry_interval", path, 30.0, 1, 600)
    options_interval = parser._seconds(table, "options_interval", path, 0.0, 0, 3600)
    if 0 < options_interval < 5:
        raise ConfigError(
            _join(path, "options_interval"),
            f"must be 0 (no pings) or from 5 to 3600 seconds, not {table['options_interval']!r}",
        )
    caller_id = parser._string(table, "caller_id", path, "")
    if caller_id and not _CALLER_ID.fullmatch(caller_id):
        raise ConfigError(
            _join(path, "caller_id"), f"must be digits with an optional leading '+', not {caller_id!r}"
        )
    caller_id_name = parser._text(table, "caller_id_name", path, "", empty=True)
    if _NAME_FORBIDDEN.search(caller_id_name):
        raise ConfigError(_join(path, "caller_id_name"), "must not contain '\"', '\\', '<' or '>'")
    dtmf = parser._string(table, "dtmf", path, "rfc4733").strip().lower()
    if dtmf not in DTMF_MODES:
        raise ConfigError(
            _join(path, "dtmf"), f"must be one of {', '.join(DTMF_MODES)}, not {table['dtmf']!r}"
        )
    did_source = parser._string(table, "did_source", path, "request-uri").strip().lower()
    if did_source not in DID_SOURCES:
        raise ConfigError(
            _join(path, "did_source"),
            f"must be one of {', '.join(DID_SOURCES)}, not {table['did_source']!r}",
        )
    from pbx.config.load_tls import trunk_certificate  # imports pbx.config.load

    certificate = trunk_certificate(parser, table, path)
    return Trunk(
        tls_certificate=certificate["tls_certificate"],
        tls_private_key=certificate["tls_private_key"],
        name=name,
        host=host,
        port=port,
        proxies=proxies,
        transport=transport,
        outbound_proxy=outbound_proxy,
        username=username,
        auth_username=auth_username,
        password=password,
        realm=realm,
        register=register,
        contact_user=contact_user,
        register_expires=register_expires,
        retry_interval=retry_interval,
        options_interval=options_interval,
        codecs=_codecs(parser, table, path),
        dtmf=dtmf,
        caller_id=caller_id,
        caller_id_name=caller_id_name,
        send_pai=parser._boolean(table, "send_pai", path, True),
        trust_identity=parser._boolean(table, "trust_identity", path, False),
        dids=_dids(parser, table, path),
        did_source=did_source,
        networks=_networks(parser, table, path),
        max_calls=parser._integer(table, "max_calls", path, 0, 0, 1_000_000),
        enabled=parser._boolean(table, "enabled", path, True),
        **_srtp_settings(table, path),
    )


def _host_port(parser: Any, raw: object, path: str) -> str:
    """ "host[:port]" (IPv6 in brackets when a port follows), normalised: ``[2001:db8::1]:5080``."""
    if not isinstance(raw, str):
        raise ConfigError(path, f"must be a string, not {_kind(raw)}")
    text = raw.strip()
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address, no port
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        raise ConfigError(path, f"must be host[:port] (IPv6 in brackets), not {raw!r}")
    host = parser._host(match["v6"] or match["host"], path)
    port = match["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ConfigError(path, f"the port must be from 1 to 65535, not {port}")
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{int(port)}" if port is not None else shown


def _user(parser: Any, table: Mapping[str, Any], key: str, path: str) -> str:
    """A SIP user part ("" when absent): it goes into From, To and Contact URIs."""
    value: str = parser._string(table, key, path, "")
    if value and not _SIP_USER.fullmatch(value):
        raise ConfigError(
            _join(path, key),
            "must be 1-128 letters, digits or the characters _.!~*'()&=+$,- (a SIP user part)",
        )
    return value


def _credential_text(parser: Any, table: Mapping[str, Any], key: str, path: str) -> str:
    """A digest user name or realm ("" when absent): quoted in the Authorization header."""
    value: str = parser._string(table, key, path, "")
    if _CONTROL.search(value) or any(c in value for c in '"\\'):
        raise ConfigError(_join(path, key), "must not contain quotes, backslashes or control characters")
    return value


def _codecs(parser: Any, table: Mapping[str, Any], path: str) -> tuple[str, ...]:
    """The codecs in order, spelt as `[calls] codecs` are (known names in their canonical spelling)."""
    key = _join(path, "codecs")
    raw_codecs: list[str] = parser._strings(table, "codecs", path, ["PCMU", "PCMA", "telephone-event"])
    if not raw_codecs:
        raise ConfigError(key, "must name at least one codec")
    spellings = {codec.casefold(): codec for codec in CODECS}
    codecs: list[str] = []
    for index, raw in enumerate(raw_codecs):
        text = raw.strip()
        if not _TOKEN.fullmatch(text):
            raise ConfigError(
                f"{key}[{index}]", f"must be an encoding name like 'PCMU' or 'opus', not {raw!r}"
            )
        codec = spellings.get(text.casefold(), text)
        if any(codec.casefold() == seen.casefold() for seen in codecs):
            raise ConfigError(f"{key}[{index}]", f"{codec} is listed twice")
        codecs.append(codec)
    if all(codec.casefold() == "telephone-event" for codec in codecs):
        raise ConfigError(key, "must name at least one audio codec besides telephone-event")
    return tuple(codecs)


def _dids(parser: Any, table: Mapping[str, Any], path: str) -> tuple[str, ...]:
    key = _join(path, "dids")
    raw_dids: list[str] = parser._strings(table, "dids", path, [])
    if len(raw_dids) > _MAX_DIDS:
        raise ConfigError(key, f"must list at most {_MAX_DIDS} numbers, not {len(raw_dids)}")
    dids: list[str] = []
    for index, raw in enumerate(raw_dids):
        did = raw.strip()
        if not _DID.fullmatch(did):
            raise ConfigError(f"{key}[{index}]", f"must be digits with an optional leading '+', not {raw!r}")
        if did in dids:
            raise ConfigError(f"{key}[{index}]", f"{did} is listed twice")
        dids.append(did)
    return tuple(dids)


def _networks(parser: Any, table: Mapping[str, Any], path: str) -> tuple[str, ...]:
    key = _join(path, "networks")
    networks: list[str] = []
    for index, raw in enumerate(parser._strings(table, "networks", path, [])):
        try:
            network = ipaddress.ip_network(normalize_host(raw.split("/", 1)[0]) + _suffix(raw), strict=False)
        except ValueError:
            raise ConfigError(
                f"{key}[{index}]",
                f"must be an IP network in CIDR notation (like '192.0.2.0/24'), not {raw!r}",
            ) from None
        if network.compressed not in networks:
            networks.append(network.compressed)
    return tuple(networks)


def _suffix(raw: str) -> str:
    """The "/prefix" of a CIDR text, or "" (a single address)."""
    return "/" + raw.split("/", 1)[1].strip() if "/" in raw else ""
