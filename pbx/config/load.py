"""Read a TOML file into a validated, frozen `Config`.

Every problem is reported as a `ConfigError` that names the offending key by its path
(``sip.listen[1].port: must be an integer from 1 to 65535``), so that ``twistd`` can refuse to start with a
message that points at the line to fix. Keys that the schema does not know are errors as well: a typo never
passes silently. Unknown keys are reported before anything else in the same table, so a misspelt key is
named rather than the default it failed to override.

Relative paths resolve against the config file's directory. Of the files named, only the TLS material is
checked for existence here; the data directory is created by the PBX on first start, and dialplans are the
dialplan loader's business. The schema is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pbx.config.admin import ADMIN_KEYS
from pbx.config.edge import EDGE_KEYS
from pbx.config.features import FEATURES_KEYS
from pbx.config.model import (
    ALL_CODECS,
    AUTH_ALGORITHMS,
    CODECS,
    DEFAULT_CODECS,
    DEFAULT_PORTS,
    KEEPALIVE_MODES,
    MD5_ONLY_USER_AGENTS,
    TRANSPORTS,
    CallsConfig,
    Config,
    Extension,
    ListenerConfig,
    MediaConfig,
    MwiConfig,
    OutboundCredentials,
    RegistrarConfig,
    SecurityConfig,
    SipConfig,
    Tenant,
    TlsConfig,
    TrustedPeer,
    normalize_host,
)
from pbx.config.observe import LOG_KEYS, METRICS_KEYS, TRACE_KEYS
from pbx.config.outbound import EXTENSION_OUTBOUND_KEYS, OUTBOUND_KEYS
from pbx.config.overload import OVERLOAD_KEYS
from pbx.config.pickup import PICKUP_KEYS, pickup_settings
from pbx.config.srtp import srtp_mode, srtp_over_plain
from pbx.config.store import STORE_KEYS
from pbx.config.trunks import TRUNK_KEYS
from pbx.config.voicemail import MAILBOX_KEYS, SMTP_KEYS, VOICEMAIL_KEYS

SCHEMA_KEYS: Mapping[str, tuple[str, ...]] = {
    "": (
        "pbx",
        "sip",
        "tls",
        "tenants",
        "registrar",
        "security",
        "media",
        "calls",
        "mwi",
        "voicemail",
        "smtp",
        "store",
        "metrics",
        "trace",
        "log",
        "admin",
        "overload",
        "edge",
    ),
    "pbx": ("data_dir", "dialplan_dir", "sip_trace", "poll_window"),
    "sip": (
        "user_agent",
        "idle_timeout",
        "max_message_size",
        "t1",
        "t2",
        "t4",
        "max_connections",
        "max_connections_per_address",
        "tls_handshake_timeout",
        "first_message_timeout",
        "nameservers",
        "listen",
    ),
    "sip.listen[]": ("transport", "host", "port", "advertise", "require_client_certificate"),
    "tls": ("certificate", "private_key", "ca_certificates", "min_version", "ciphers"),
    "tenants.<tenant>": (
        "domain",
        "aliases",
        "realm",
        "extensions",
        "groups",
        "peers",
        "credentials",
        "mailboxes",
        "trunks",
        "outbound",
        "features",
    ),
    "tenants.<tenant>.trunks.<trunk>": TRUNK_KEYS,
    "tenants.<tenant>.outbound": OUTBOUND_KEYS,
    "tenants.<tenant>.peers[]": ("name", "networks", "extension"),
    "tenants.<tenant>.credentials[]": ("realm", "username", "password"),
    "tenants.<tenant>.extensions.<number>": (
        "name",
        "password",
        "ha1_md5",
        "ha1_sha256",
        "forward_all",
        "forward_busy",
        "forward_noanswer",
        "ring_timeout",
        "may_call_out",
        "srtp",
        "allow_srtp_over_plain",
        *EXTENSION_OUTBOUND_KEYS,
        *PICKUP_KEYS,
    ),
    "registrar": (
        "min_expires",
        "max_expires",
        "default_expires",
        "max_contacts",
        "keepalive",
        "keepalive_interval",
        "keepalive_failures",
    ),
    "security": (
        "max_auth_failures",
        "failure_window",
        "block_duration",
        "max_account_failures",
        "nonce_lifetime",
        "auth_algorithms",
        "trusted_networks",
        "md5_only_user_agents",
        "trusted_proxies",
    ),
    "media": ("rtp_port_min", "rtp_port_max", "bind_host", "advertise", "relay", "rtpengine"),
    "calls": ("ring_timeout", "max_call_duration", "codecs", "drain_timeout"),
    "mwi": ("min_expires", "max_expires", "default_expires"),
    "voicemail": VOICEMAIL_KEYS,
    "smtp": SMTP_KEYS,
    "store": STORE_KEYS,
    "admin": ADMIN_KEYS,
    "overload": OVERLOAD_KEYS,
    "tenants.<tenant>.mailboxes.<number>": MAILBOX_KEYS,
    "metrics": METRICS_KEYS,
    "trace": TRACE_KEYS,
    "log": LOG_KEYS,
    "tenants.<tenant>.features": FEATURES_KEYS,
    "edge": EDGE_KEYS,
}
"""The keys each table accepts, by the table's path as written in ``docs/configuration.md``."""

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TENANT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,62}")
_USER_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$)(?:{_LABEL}\.)*{_LABEL}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BLANK = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+")
"""An SDP token (RFC 4566 §9), the syntax of an encoding name."""
_MAX_TARGET = 128
MAX_POLL_WINDOW = 0.05
"""The longest `pbx.poll_window` (seconds): a longer nap would delay SIP messages by more than an RTP packet's
20 ms twice over."""


class ConfigError(Exception):
    """A configuration problem, named by the path of the key that causes it.

    Attributes:
        path: The key's path, e.g. ``sip.listen[1].port``; ``""`` for problems with the file as a whole.
        message: What is wrong, e.g. ``must be an integer from 1 to 65535``.
        file: The config file, when known.
    """

    def __init__(self, path: str, message: str, file: Path | None = None) -> None:
        super().__init__(path, message, file)
        self.path = path
        self.message = message
        self.file = file

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file.

    Args:
        path: The config file; relative paths inside it resolve against its directory.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The file cannot be read, is no valid TOML, or does not match the schema. A TOML syntax
            error has the path ``""`` and names the file and line in its message.
    """
    source = Path(path).expanduser().absolute()
    try:
        raw = source.read_bytes()
    except OSError as e:
        raise ConfigError("", f"cannot read {source}: {e.strerror or e}", source) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError("", f"{source}: not UTF-8 text (byte {e.start})", source) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{source}: invalid TOML: {e}", source) from None
    return parse_config(data, source.parent, source)


def parse_config(data: Mapping[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Validate parsed TOML (a dict as `tomllib` returns it) into a `Config`.

    Args:
        data: The parsed document.
        base_dir: The directory relative paths resolve against.
        source: The file the data came from, recorded in the `Config` and in every `ConfigError`.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The data does not match the schema.
    """
    base_dir = Path(base_dir).expanduser().absolute()
    try:
        return _Parser(base_dir).config(data, source)
    except ConfigError as e:
        e.file = source
        raise


def _srtp_settings(table: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The `srtp` and `allow_srtp_over_plain` keys of an extension's or trunk's table (`pbx.config.srtp`)."""
    try:
        return {
            "srtp": srtp_mode(dict(table), path),
            "allow_srtp_over_plain": srtp_over_plain(dict(table), path),
        }
    except ValueError as e:
        raise ConfigError(*e.args) from None


def _pickup_settings(table: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The call pickup keys of an extension's table (`pbx.config.pickup`)."""
    try:
        return pickup_settings(dict(table), path)
    except ValueError as e:
        raise ConfigError(*e.args) from None


def _join(path: str, key: str) -> str:
    """Append a key to a path, quoting it as TOML would when it is no bare key."""
    if not _BARE_KEY.fullmatch(key):
        key = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    """Name the TOML type of a value, for messages."""
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}
    if isinstance(value, dict):
        return "a table"
    return names.get(type(value), type(value).__name__)


class _Parser:
    """One validation run; each method checks one table and returns its frozen value."""

    def __init__(self, base_dir: Path) -> None:
        self._base_dir = base_dir

    # -- helpers ---------------------------------------------------------------------------------------

    def _table(self, value: object, path: str, section: str) -> Mapping[str, Any]:
        """Check that ``value`` is a table holding only keys of ``section`` in `SCHEMA_KEYS`."""
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a table, not {_kind(value)}")
        allowed = SCHEMA_KEYS[section]
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(_join(path, key), "unknown key" + suffix)
        return value

    def _string(self, table: Mapping[str, Any], key: str, path: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(_join(path, key), f"must be a string, not {_kind(value)}")
        return value

    def _text(self, table: Mapping[str, Any], key: str, path: str, default: str, *, empty: bool) -> str:
        """A string without control characters (it ends up in SIP headers); empty only if allowed."""
        value = self._string(table, key, path, default)
        if not value and not empty:
            raise ConfigError(_join(path, key), "must not be empty")
        if _CONTROL.search(value):
            raise ConfigError(_join(path, key), "must not contain control characters")
        return value

    def _boolean(self, table: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(_join(path, key), f"must be true or false, not {_kind(value)}")
        return value

    def _positive(self, table: Mapping[str, Any], key: str, path: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(_join(path, key), f"must be a number of seconds greater than 0, not {value!r}")
        if value <= 0:
            raise ConfigError(_join(path, key), f"must be a number of seconds greater than 0, not {value!r}")
        return float(value)

    def _seconds(
        self,
        table: Mapping[str, Any],
        key: str,
        path: str,
        default: float,
        low: float,
        high: float | None = None,
    ) -> float:
        """A number of seconds from ``low`` to ``high`` (unbounded when None), as a float."""
        value = table.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < low
            or (high is not None and value > high)
        ):
            bounds = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"
            raise ConfigError(_join(path, key), f"must be a number of seconds {bounds}, not {value!r}")
        return float(value)

    def _strings(self, table: Mapping[str, Any], key: str, path: str, default: list[str]) -> list[str]:
        """An array of strings; the error for a wrong element names its index."""
        value = table.get(key, default)
        if not isinstance(value, list):
            raise ConfigError(_join(path, key), f"must be an array of strings, not {_kind(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{_join(path, key)}[{index}]", f"must be a string, not {_kind(item)}")
        return value

    def _integer(
        self, table: Mapping[str, Any], key: str, path: str, default: int, low: int, high: int
    ) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(_join(path, key), f"must be an integer from {low} to {high}, not {value!r}")
        return value

    def _path(self, table: Mapping[str, Any], key: str, path: str, default: str) -> Path | None:
        """A path resolved against the base directory; None for ``""``."""
        value = self._string(table, key, path, default)
        if not value:
            return None
        if "\x00" in value:
            raise ConfigError(_join(path, key), "must not contain NUL characters")
        return self._base_dir / Path(value).expanduser()

    def _host(self, value: object, path: str, *, ip_only: bool = False) -> str:
        """A host name or IP literal (brackets allowed around IPv6), normalized."""
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, not {_kind(value)}")
        host = normalize_host(value)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return host
        if ip_only:
            raise ConfigError(path, f"must be an IPv4 or IPv6 address, not {value!r}")
        if not _HOST_NAME.fullmatch(host) or host.rsplit(".", 1)[-1].isdigit():
            raise ConfigError(path, f"must be a host name or an IP address, not {value!r}")
        return host

    def _target(self, table: Mapping[str, Any], key: str, path: str, number: str) -> str:
        """A call forwarding target: ``""``, an extension number or a dial string; not ``number`` itself."""
        value = self._string(table, key, path, "")
        if _BLANK.search(value):
            raise ConfigError(_join(path, key), "must not contain whitespace or control characters")
        if len(value) > _MAX_TARGET:
            raise ConfigError(_join(path, key), f"must be at most {_MAX_TARGET} characters, not {len(value)}")
        if value == number:
            raise ConfigError(_join(path, key), "must not forward the extension to itself")
        return value

    # -- sections --------------------------------------------------------------------------------------

    def config(self, data: Mapping[str, Any], source: Path | None) -> Config:
        root = self._table(data, "", "")
        pbx = self._table(root.get("pbx", {}), "pbx", "pbx")
        sip_trace = self._boolean(pbx, "sip_trace", "pbx", False)
        poll_window = self._seconds(pbx, "poll_window", "pbx", 0.0, 0.0, MAX_POLL_WINDOW)
        data_dir = self._path(pbx, "data_dir", "pbx", "data")
        dialplan_dir = self._path(pbx, "dialplan_dir", "pbx", "dialplans")
        if data_dir is None:
            raise ConfigError("pbx.data_dir", "must not be empty")
        if dialplan_dir is None:
            raise ConfigError("pbx.dialplan_dir", "must not be empty")
        from pbx.config import load_store, load_voicemail  # import this module

        tenants = self.tenants(root.get("tenants"))
        smtp = load_voicemail.smtp(self, root.get("smtp", {}))
        load_voicemail.check_email(tenants, smtp)
        from pbx.config import (
            load_edge,  # imports this module
            load_observe,  # imports this module
        )
        from pbx.config.load_admin import admin as load_admin  # imports this module
        from pbx.config.load_tls import check_mutual_tls  # imports this module

        sip, tls = self.sip(root.get("sip", {})), self.tls(root.get("tls", {}))
        check_mutual_tls(sip, tls)
        from pbx.config.load_overload import overload  # imports this module

        return Config(
            source=source,
            base_dir=self._base_dir,
            data_dir=data_dir,
            dialplan_dir=dialplan_dir,
            sip_trace=sip_trace,
            sip=sip,
            tls=tls,
            tenants=tenants,
            registrar=self.registrar(root.get("registrar", {})),
            security=self.security(root.get("security", {})),
            media=self.media(root.get("media", {})),
            calls=self.calls(root.get("calls", {})),
            mwi=self.mwi(root.get("mwi", {})),
            voicemail=load_voicemail.voicemail(self, root.get("voicemail", {})),
            smtp=smtp,
            store=load_store.store(self, root.get("store", {})),
            **load_observe.sections(self, root),
            admin=load_admin(self, root.get("admin", {})),
            overload=overload(self, root.get("overload", {})),
            edge=load_edge.edge(self, root.get("edge", {})),
            poll_window=poll_window,
        )

    def sip(self, value: object) -> SipConfig:
        sip = self._table(value, "sip", "sip")
        t1 = self._positive(sip, "t1", "sip", 0.5)
        t2 = self._positive(sip, "t2", "sip", 4.0)
        if t2 < t1:
            raise ConfigError("sip.t2", f"must be at least sip.t1 ({t1:g}), not {t2:g}")
        return SipConfig(
            listeners=self.listeners(sip.get("listen")),
            user_agent=self._text(sip, "user_agent", "sip", "pbx", empty=False),
            idle_timeout=self._positive(sip, "idle_timeout", "sip", 600.0),
            max_message_size=self._integer(sip, "max_message_size", "sip", 65535, 1024, 1048576),
            t1=t1,
            t2=t2,
            t4=self._positive(sip, "t4", "sip", 5.0),
            max_connections=self._integer(sip, "max_connections", "sip", 4096, 1, 1_000_000),
            max_connections_per_address=self._integer(
                sip, "max_connections_per_address", "sip", 64, 1, 1_000_000
            ),
            tls_handshake_timeout=self._positive(sip, "tls_handshake_timeout", "sip", 10.0),
            first_message_timeout=self._seconds(sip, "first_message_timeout", "sip", 30.0, 0.0),
            nameservers=self.nameservers(sip),
        )

    def nameservers(self, sip: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
        """`sip.nameservers`: "ADDRESS" or "ADDRESS:PORT" ("[V6]:PORT"), each an IP address."""
        servers: list[tuple[str, int]] = []
        for index, raw in enumerate(self._strings(sip, "nameservers", "sip", [])):
            path = f"sip.nameservers[{index}]"
            text = raw.strip()
            host, port_text = text, "53"
            if text.startswith("["):
                host, _, rest = text[1:].partition("]")
                port_text = rest[1:] if rest.startswith(":") else ("53" if not rest else "x")
            elif text.count(":") == 1:
                host, _, port_text = text.partition(":")
            try:
                address = ipaddress.ip_address(host)
                port = int(port_text)
            except ValueError:
                raise ConfigError(path, f"must be an IP address with an optional port, not {raw!r}") from None
            if not 0 < port < 65536:
                raise ConfigError(path, f"port must be from 1 to 65535, not {port}")
            servers.append((address.compressed, port))
        return tuple(servers)

    def listeners(self, value: object) -> tuple[ListenerConfig, ...]:
        if value is None or value == []:
            raise ConfigError("sip.listen", "at least one listener is required ([[sip.listen]])")
        if not isinstance(value, list):
            raise ConfigError(
                "sip.listen", f"must be an array of tables ([[sip.listen]]), not {_kind(value)}"
            )
        listeners: list[ListenerConfig] = []
        sockets: dict[tuple[str, str, int], str] = {}
        for index, item in enumerate(value):
            path = f"sip.listen[{index}]"
            listener = self.listener(item, path)
            # TCP and TLS listeners both take a TCP socket, so they cannot share an address.
            kind = "udp" if listener.transport == "udp" else "tcp"
            key = (kind, listener.host, listener.port)
            if key in sockets:
                raise ConfigError(path, f"binds the same {kind.upper()} socket as {sockets[key]}")
            sockets[key] = path
            listeners.append(listener)
        return tuple(listeners)

    def listener(self, value: object, path: str) -> ListenerConfig:
        listen = self._table(value, path, "sip.listen[]")
        transport = self._string(listen, "transport", path, "udp").lower()
        if transport not in TRANSPORTS:
            raise ConfigError(
                _join(path, "transport"),
                f"must be one of {', '.join(TRANSPORTS)}, not {listen['transport']!r}",
            )
        advertise = listen.get("advertise")
        from pbx.config.load_tls import listener_client_certificate  # imports this module

        return ListenerConfig(
            transport=transport,
            host=self._host(listen.get("host", "127.0.0.1"), _join(path, "host"), ip_only=True),
            port=self._integer(listen, "port", path, DEFAULT_PORTS[transport], 1, 65535),
            advertise=None if advertise is None else self._host(advertise, _join(path, "advertise")),
            require_client_certificate=listener_client_certificate(self, listen, path, transport),
        )

    def tls(self, value: object) -> TlsConfig:
        tls = self._table(value, "tls", "tls")
        certificate = self._path(tls, "certificate", "tls", "")
        private_key = self._path(tls, "private_key", "tls", "")
        if certificate is not None and private_key is None:
            raise ConfigError("tls.private_key", "is required when tls.certificate is set")
        if private_key is not None and certificate is None:
            raise ConfigError("tls.certificate", "is required when tls.private_key is set")
        ca_certificates = self._path(tls, "ca_certificates", "tls", "")
        for key, file in (
            ("certificate", certificate),
            ("private_key", private_key),
            ("ca_certificates", ca_certificates),
        ):
            if file is not None and not file.is_file():
                raise ConfigError(f"tls.{key}", f"no such file: {file}")
        from pbx.config.load_tls import tls_policy  # imports this module

        return TlsConfig(
            certificate=certificate,
            private_key=private_key,
            ca_certificates=ca_certificates,
            **tls_policy(self, tls),
        )

    def tenants(self, value: object) -> tuple[Tenant, ...]:
        if value is None or value == {}:
            raise ConfigError("tenants", "at least one tenant is required ([tenants.NAME])")
        if not isinstance(value, dict):
            raise ConfigError("tenants", f"must be a table of tenants, not {_kind(value)}")
        tenants: list[Tenant] = []
        owners: dict[str, str] = {}
        for name, item in value.items():
            path = _join("tenants", name)
            if not _TENANT_NAME.fullmatch(name):
                raise ConfigError(path, "a tenant name must be 1-63 letters, digits, '.', '_' or '-'")
            tenant = self.tenant(name, item, path)
            keys = [_join(path, "domain")] + [f"{path}.aliases[{i}]" for i in range(len(tenant.aliases))]
            for key, host in zip(keys, tenant.hosts, strict=True):
                if host in owners:
                    raise ConfigError(key, f"{host!r} is already used by {owners[host]}")
                owners[host] = key
            # A realm names the tenant whose passwords answer it (H(A1) is per realm): two tenants sharing
            # one would let one tenant's password answer for the other's extension of the same number.
            realm_key = "realm\0" + tenant.realm
            if realm_key in owners:
                raise ConfigError(
                    _join(path, "realm"), f"{tenant.realm!r} is already the realm of {owners[realm_key]}"
                )
            owners[realm_key] = _join(path, "realm")
            tenants.append(tenant)
        return tuple(tenants)

    def tenant(self, name: str, value: object, path: str) -> Tenant:
        table = self._table(value, path, "tenants.<tenant>")
        if "domain" not in table:
            raise ConfigError(_join(path, "domain"), "is required")
        domain = self._host(table["domain"], _join(path, "domain"))
        raw_aliases = table.get("aliases", [])
        if not isinstance(raw_aliases, list):
            raise ConfigError(
                _join(path, "aliases"), f"must be an array of strings, not {_kind(raw_aliases)}"
            )
        aliases = tuple(self._host(alias, f"{path}.aliases[{i}]") for i, alias in enumerate(raw_aliases))
        realm = self._text(table, "realm", path, domain, empty=False)
        if '"' in realm or "\\" in realm:
            raise ConfigError(_join(path, "realm"), "must not contain '\"' or '\\'")
        raw_extensions = table.get("extensions", {})
        if not isinstance(raw_extensions, dict):
            raise ConfigError(_join(path, "extensions"), f"must be a table, not {_kind(raw_extensions)}")
        extensions = {
            number: self.extension(number, item, _join(_join(path, "extensions"), number))
            for number, item in raw_extensions.items()
        }
        groups = self.groups(table.get("groups", {}), _join(path, "groups"), name, extensions)
        peers = self.peers(table.get("peers", []), _join(path, "peers"), extensions)
        credentials = self.credentials(table.get("credentials", []), _join(path, "credentials"))
        from pbx.config.load_voicemail import mailboxes  # imports this module

        boxes = mailboxes(self, table.get("mailboxes", {}), _join(path, "mailboxes"), extensions)
        from pbx.config.load_trunks import parse_trunks  # it imports this module: imported when used

        trunks = parse_trunks(self, table.get("trunks", {}), _join(path, "trunks"))
        from pbx.config.load_outbound import parse_outbound  # imports this module

        outbound = parse_outbound(
            table.get("outbound", {}), _join(path, "outbound"), extensions, raw_extensions
        )
        from pbx.config.load_features import features  # it imports this module: imported when used

        phone_features = features(self, table.get("features", {}), _join(path, "features"), extensions)
        return Tenant(
            name=name,
            domain=domain,
            aliases=aliases,
            realm=realm,
            extensions=extensions,
            groups=groups,
            peers=peers,
            credentials=credentials,
            mailboxes=boxes,
            trunks=trunks,
            outbound=outbound,
            features=phone_features,
        )

    def credentials(self, value: object, path: str) -> tuple[OutboundCredentials, ...]:
        """`[[tenants.NAME.credentials]]`: what the PBX answers a SIP URI target's 401/407 with, by realm."""
        if not isinstance(value, list):
            raise ConfigError(path, f"must be an array of tables ([[{path}]]), not {_kind(value)}")
        found: list[OutboundCredentials] = []
        realms: dict[str, str] = {}
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            table = self._table(item, item_path, "tenants.<tenant>.credentials[]")
            for key in ("realm", "username", "password"):
                if key not in table:
                    raise ConfigError(_join(item_path, key), "is required")
            realm = self._text(table, "realm", item_path, "", empty=False)
            if realm in realms:
                raise ConfigError(_join(item_path, "realm"), f"{realm!r} is already used by {realms[realm]}")
            realms[realm] = item_path
            username = self._text(table, "username", item_path, "", empty=False)
            if any(c in username for c in '"\\\r\n'):
                raise ConfigError(
                    _join(item_path, "username"), "must not contain quotes, backslashes or line breaks"
                )
            password = self._text(table, "password", item_path, "", empty=False)
            found.append(OutboundCredentials(realm=realm, username=username, password=password))
        return tuple(found)

    def peers(self, value: object, path: str, extensions: Mapping[str, Extension]) -> tuple[TrustedPeer, ...]:
        if not isinstance(value, list):
            raise ConfigError(path, f"must be an array of tables ([[{path}]]), not {_kind(value)}")
        peers: list[TrustedPeer] = []
        names: dict[str, str] = {}
        owners: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
        for index, item in enumerate(value):
            peer_path = f"{path}[{index}]"
            table = self._table(item, peer_path, "tenants.<tenant>.peers[]")
            for key in ("name", "networks", "extension"):
                if key not in table:
                    raise ConfigError(_join(peer_path, key), "is required")
            name = self._string(table, "name", peer_path, "")
            if not _TENANT_NAME.fullmatch(name):
                raise ConfigError(
                    _join(peer_path, "name"), "a peer name must be 1-63 letters, digits, '.', '_' or '-'"
                )
            if name in names:
                raise ConfigError(_join(peer_path, "name"), f"{name!r} is already used by {names[name]}")
            names[name] = peer_path
            raw_networks = self._strings(table, "networks", peer_path, [])
            if not raw_networks:
                raise ConfigError(_join(peer_path, "networks"), "must list at least one network")
            networks: list[str] = []
            for position, raw in enumerate(raw_networks):
                key = f"{_join(peer_path, 'networks')}[{position}]"
                try:
                    network = ipaddress.ip_network(raw.strip(), strict=False)
                except ValueError:
                    raise ConfigError(
                        key, f"must be an IP network in CIDR notation (like '192.0.2.10/32'), not {raw!r}"
                    ) from None
                for other, owner in owners:
                    if network.version == other.version and network.overlaps(other):
                        raise ConfigError(key, f"{network.compressed} overlaps {owner} ({other.compressed})")
                owners.append((network, key))
                networks.append(network.compressed)
            extension = self._string(table, "extension", peer_path, "")
            if extension not in extensions:
                raise ConfigError(
                    _join(peer_path, "extension"), f"must be an extension of this tenant, not {extension!r}"
                )
            peers.append(TrustedPeer(name=name, networks=tuple(networks), extension=extension))
        return tuple(peers)

    def groups(
        self, value: object, path: str, tenant: str, extensions: Mapping[str, Extension]
    ) -> dict[str, tuple[str, ...]]:
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a table, not {_kind(value)}")
        groups: dict[str, tuple[str, ...]] = {}
        for name in value:
            group_path = _join(path, name)
            if not _TENANT_NAME.fullmatch(name):
                raise ConfigError(group_path, "a group name must be 1-63 letters, digits, '.', '_' or '-'")
            numbers = self._strings(value, name, path, [])
            if not numbers:
                raise ConfigError(group_path, "must list at least one extension number")
            members: list[str] = []
            for index, number in enumerate(numbers):
                if number not in extensions:
                    raise ConfigError(
                        f"{group_path}[{index}]", f"tenant {tenant} has no extension {number!r}"
                    )
                if number in members:
                    raise ConfigError(f"{group_path}[{index}]", f"{number} is listed twice")
                members.append(number)
            groups[name] = tuple(members)
        return groups

    def extension(self, number: str, value: object, path: str) -> Extension:
        from pbx.config.load_outbound import may_call_out_default  # imports this module

        if not _USER_PART.fullmatch(number):
            raise ConfigError(path, "an extension number must be 1-64 letters, digits, '.', '_' or '-'")
        table = self._table(value, path, "tenants.<tenant>.extensions.<number>")
        password = table.get("password")
        if password is not None and (not isinstance(password, str) or not password):
            raise ConfigError(_join(path, "password"), "must be a non-empty string")
        digests: dict[str, str | None] = {}
        for key, length in (("ha1_md5", 32), ("ha1_sha256", 64)):
            digest = table.get(key)
            if digest is None:
                digests[key] = None
                continue
            if not isinstance(digest, str) or len(digest) != length or not _HEX.fullmatch(digest):
                raise ConfigError(_join(path, key), f"must be {length} hexadecimal digits")
            if password is not None:
                raise ConfigError(_join(path, key), "conflicts with password: give one or the other")
            digests[key] = digest.lower()
        if password is None and not any(digests.values()):
            raise ConfigError(_join(path, "password"), "is required unless ha1_md5 or ha1_sha256 is given")
        return Extension(
            number=number,
            name=self._text(table, "name", path, "", empty=True),
            password=password,
            ha1_md5=digests["ha1_md5"],
            ha1_sha256=digests["ha1_sha256"],
            forward_all=self._target(table, "forward_all", path, number),
            forward_busy=self._target(table, "forward_busy", path, number),
            forward_noanswer=self._target(table, "forward_noanswer", path, number),
            ring_timeout=self._seconds(table, "ring_timeout", path, 0.0, 0),
            may_call_out=self._boolean(table, "may_call_out", path, may_call_out_default(table)),
            **_srtp_settings(table, path),
            **_pickup_settings(table, path),
        )

    def registrar(self, value: object) -> RegistrarConfig:
        registrar = self._table(value, "registrar", "registrar")
        min_expires = self._integer(registrar, "min_expires", "registrar", 60, 1, 86400)
        max_expires = self._integer(registrar, "max_expires", "registrar", 3600, 1, 604800)
        if max_expires < min_expires:
            raise ConfigError(
                "registrar.max_expires",
                f"must be at least registrar.min_expires ({min_expires}), not {max_expires}",
            )
        default_expires = self._integer(registrar, "default_expires", "registrar", 3600, 1, 604800)
        if not min_expires <= default_expires <= max_expires:
            raise ConfigError(
                "registrar.default_expires",
                "must be from registrar.min_expires to registrar.max_expires "
                f"({min_expires} to {max_expires}), not {default_expires}",
            )
        keepalive = self._string(registrar, "keepalive", "registrar", "options").lower()
        if keepalive not in KEEPALIVE_MODES:
            raise ConfigError(
                "registrar.keepalive",
                f"must be one of {', '.join(KEEPALIVE_MODES)}, not {registrar['keepalive']!r}",
            )
        return RegistrarConfig(
            min_expires=min_expires,
            max_expires=max_expires,
            default_expires=default_expires,
            max_contacts=self._integer(registrar, "max_contacts", "registrar", 10, 1, 100),
            keepalive=keepalive,
            keepalive_interval=self._seconds(registrar, "keepalive_interval", "registrar", 30.0, 5),
            keepalive_failures=self._integer(registrar, "keepalive_failures", "registrar", 3, 1, 20),
        )

    def security(self, value: object) -> SecurityConfig:
        security = self._table(value, "security", "security")
        path = "security.auth_algorithms"
        raw_algorithms = self._strings(security, "auth_algorithms", "security", list(AUTH_ALGORITHMS))
        if not raw_algorithms:
            raise ConfigError(path, f"must name at least one of {', '.join(AUTH_ALGORITHMS)}")
        spellings = {name.upper(): name for name in AUTH_ALGORITHMS}
        algorithms: list[str] = []
        for index, raw in enumerate(raw_algorithms):
            algorithm = spellings.get(raw.strip().upper())
            if algorithm is None:
                raise ConfigError(
                    f"{path}[{index}]", f"must be one of {', '.join(AUTH_ALGORITHMS)}, not {raw!r}"
                )
            if algorithm in algorithms:
                raise ConfigError(f"{path}[{index}]", f"{algorithm} is listed twice")
            algorithms.append(algorithm)
        networks = self._networks(security, "trusted_networks")
        proxies = self._networks(security, "trusted_proxies")
        return SecurityConfig(
            max_auth_failures=self._integer(security, "max_auth_failures", "security", 5, 1, 1000),
            failure_window=self._positive(security, "failure_window", "security", 60.0),
            block_duration=self._positive(security, "block_duration", "security", 600.0),
            max_account_failures=self._integer(security, "max_account_failures", "security", 20, 1, 100000),
            nonce_lifetime=self._seconds(security, "nonce_lifetime", "security", 300.0, 10, 86400),
            auth_algorithms=tuple(algorithms),
            trusted_networks=tuple(networks),
            trusted_proxies=tuple(proxies),
            md5_only_user_agents=tuple(
                agent.strip()
                for agent in self._strings(
                    security, "md5_only_user_agents", "security", list(MD5_ONLY_USER_AGENTS)
                )
                if agent.strip()
            ),
        )

    def media(self, value: object) -> MediaConfig:
        media = self._table(value, "media", "media")
        rtp_port_min = self._integer(media, "rtp_port_min", "media", 10000, 1024, 65534)
        if rtp_port_min % 2:
            raise ConfigError(
                "media.rtp_port_min", f"must be even (RTP takes the even port of a pair), not {rtp_port_min}"
            )
        lowest = rtp_port_min + 3
        rtp_port_max = media.get("rtp_port_max", 20000)
        if (
            isinstance(rtp_port_max, bool)
            or not isinstance(rtp_port_max, int)
            or not lowest <= rtp_port_max <= 65535
        ):
            raise ConfigError(
                "media.rtp_port_max",
                f"must be an integer from media.rtp_port_min + 3 ({lowest}, at least 4 ports) to 65535, "
                f"not {rtp_port_max!r}",
            )
        bind_host = self._host(media.get("bind_host", "127.0.0.1"), "media.bind_host", ip_only=True)
        advertise = media.get("advertise", "")
        if advertise != "":
            advertise = self._host(advertise, "media.advertise", ip_only=True)
            if ipaddress.ip_address(advertise).is_unspecified:
                raise ConfigError("media.advertise", f"must not be a wildcard address, not {advertise!r}")
        elif ipaddress.ip_address(bind_host).is_unspecified:
            raise ConfigError(
                "media.advertise",
                f"is required when media.bind_host is a wildcard address ({bind_host!r}): "
                "the address peers send RTP to",
            )
        from pbx.config.load_media import relay_choice  # imports this module

        relay, rtpengine = relay_choice(self, media)
        return MediaConfig(
            rtp_port_min=rtp_port_min, rtp_port_max=rtp_port_max, bind_host=bind_host, advertise=advertise,
            relay=relay, rtpengine=rtpengine,
        )  # fmt: skip

    def calls(self, value: object) -> CallsConfig:
        calls = self._table(value, "calls", "calls")
        path = "calls.codecs"
        raw_codecs = self._strings(calls, "codecs", "calls", list(DEFAULT_CODECS))
        if not raw_codecs:
            raise ConfigError(path, f"must name at least one codec, or be [{ALL_CODECS!r}] for every codec")
        spellings = {name.casefold(): name for name in CODECS}
        codecs: list[str] = []
        for index, raw in enumerate(raw_codecs):
            text = raw.strip()
            if text == ALL_CODECS and len(raw_codecs) > 1:
                raise ConfigError(f"{path}[{index}]", f"{ALL_CODECS!r} must be the only entry")
            if not _TOKEN.fullmatch(text):
                raise ConfigError(
                    f"{path}[{index}]", f"must be an encoding name like 'PCMU' or 'opus', not {raw!r}"
                )
            codec = spellings.get(text.casefold(), text)
            if any(codec.casefold() == seen.casefold() for seen in codecs):
                raise ConfigError(f"{path}[{index}]", f"{codec} is listed twice")
            codecs.append(codec)
        return CallsConfig(
            ring_timeout=self._positive(calls, "ring_timeout", "calls", 30.0),
            max_call_duration=self._positive(calls, "max_call_duration", "calls", 14400.0),
            codecs=tuple(codecs),
            drain_timeout=self._seconds(calls, "drain_timeout", "calls", 0.0, 0.0, 86400.0),
        )

    def _networks(self, security: Mapping[str, Any], key: str) -> list[str]:
        """`security.KEY`: IP networks in CIDR notation (a bare address is a /32 or /128)."""
        networks: list[str] = []
        for index, raw in enumerate(self._strings(security, key, "security", [])):
            try:
                network = ipaddress.ip_network(raw.strip(), strict=False)
            except ValueError:
                raise ConfigError(
                    f"security.{key}[{index}]",
                    f"must be an IP network in CIDR notation (like '192.0.2.0/24'), not {raw!r}",
                ) from None
            networks.append(network.compressed)
        return networks

    def mwi(self, value: object) -> MwiConfig:
        mwi = self._table(value, "mwi", "mwi")
        min_expires = self._integer(mwi, "min_expires", "mwi", 60, 1, 86400)
        max_expires = self._integer(mwi, "max_expires", "mwi", 3600, 1, 604800)
        if max_expires < min_expires:
            raise ConfigError(
                "mwi.max_expires", f"must be at least mwi.min_expires ({min_expires}), not {max_expires}"
            )
        default_expires = self._integer(mwi, "default_expires", "mwi", 3600, 1, 604800)
        if not min_expires <= default_expires <= max_expires:
            raise ConfigError(
                "mwi.default_expires",
                f"must be from mwi.min_expires to mwi.max_expires ({min_expires} to {max_expires}), "
                f"not {default_expires}",
            )
        return MwiConfig(min_expires=min_expires, max_expires=max_expires, default_expires=default_expires)
