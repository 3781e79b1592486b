"""The PBX configuration as frozen values.

These dataclasses are what `pbx.config.load` produces from a TOML file: every value is already validated and
normalized (transports and domains lower-cased, IP literals in compressed form without brackets), and every
path is absolute. Only the composition root (`pbx/tap.py`) reads them; it hands plain values to the layers
above.

This module knows nothing of TOML, of files or of the rest of the PBX; it imports only the standard library.
Secrets (passwords and H(A1) digests) are left out of every ``repr`` so that a logged config leaks nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from pbx.config.admin import AdminConfig
from pbx.config.edge import EdgeConfig
from pbx.config.features import FeaturesConfig
from pbx.config.observe import LogConfig, MetricsConfig, TraceConfig
from pbx.config.outbound import OutboundConfig
from pbx.config.overload import OverloadConfig
from pbx.config.store import StoreConfig
from pbx.config.trunks import Trunk
from pbx.config.voicemail import Mailbox, SmtpConfig, VoicemailConfig

TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "tls")
"""The transports a listener may use, lower-case."""

DEFAULT_PORTS: Mapping[str, int] = MappingProxyType({"udp": 5060, "tcp": 5060, "tls": 5061})
"""The port a listener binds when none is configured (RFC 3261 §19.1.2)."""

KEEPALIVE_MODES: tuple[str, ...] = ("options", "crlf", "none")
"""How the registrar keeps registered contacts' NAT bindings open, lower-case (see `RegistrarConfig`)."""

AUTH_ALGORITHMS: tuple[str, ...] = ("MD5", "SHA-256")
"""The digest algorithms the PBX can challenge with, spelt as in the WWW-Authenticate header (RFC 7616), in
the default order: MD5 first, because many phones read only the first challenge and know only MD5."""
MD5_ONLY_USER_AGENTS: tuple[str, ...] = ("baresip",)
"""User-Agent substrings of clients that fail on any challenge with an algorithm they do not know (libre-based
baresip 1.x answers a response carrying a SHA-256 challenge with "Function not implemented")."""

CODECS: tuple[str, ...] = (
    "PCMU",
    "PCMA",
    "G722",
    "G7221",
    "G723",
    "G726-16",
    "G726-24",
    "G726-32",
    "G726-40",
    "G728",
    "G729",
    "G729D",
    "G729E",
    "GSM",
    "GSM-EFR",
    "iLBC",
    "L8",
    "L16",
    "AMR",
    "AMR-WB",
    "EVS",
    "SILK",
    "speex",
    "opus",
    "CN",
    "red",
    "telephone-event",
)
"""The RTP encoding names (as in an SDP ``a=rtpmap`` line) the config knows, in their canonical spelling; a
codec list written in any case is stored in this spelling. Other names are allowed, kept as written."""
DEFAULT_CODECS: tuple[str, ...] = ("PCMU", "PCMA", "telephone-event")
"""The codecs the B2BUA lets through by default: G.711 and DTMF events (RFC 4733)."""
ALL_CODECS = "*"
"""The codec list entry that, alone, lets every codec through."""


def normalize_host(host: str) -> str:
    """Bring a host name or IP literal into the form the config stores and compares.

    Host names are lower-cased and lose a trailing dot; IP literals lose their brackets and are written in
    compressed form, so ``[0:0:0:0:0:0:0:1]`` and ``::1`` compare equal.

    Args:
        host: A host name, an IPv4 literal or an IPv6 literal with or without brackets.

    Returns:
        The normalized host; the input stripped and lower-cased when it is no IP literal.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text.lower().removesuffix(".")


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One socket the SIP stack listens on.

    Attributes:
        transport: ``"udp"``, ``"tcp"`` or ``"tls"``.
        host: The IPv4 or IPv6 address to bind, without brackets.
        port: The port to bind, 1 to 65535.
        advertise: The host to put in Via and Contact instead of ``host`` (a public name or address), or None.
        require_client_certificate: TLS only: refuse clients without a certificate signed by
            ``[tls] ca_certificates`` (mutual TLS).
    """

    transport: str
    host: str
    port: int
    advertise: str | None = None
    require_client_certificate: bool = False

    @property
    def advertised_host(self) -> str:
        """The host that peers should use to reach this listener: ``advertise`` if set, else ``host``."""
        return self.advertise if self.advertise is not None else self.host

    @property
    def reliable(self) -> bool:
        """Whether the transport is reliable (TCP or TLS), which zeroes some RFC 3261 timers."""
        return self.transport != "udp"


@dataclass(frozen=True, slots=True)
class SipConfig:
    """SIP stack settings.

    Attributes:
        listeners: The sockets to listen on; never empty.
        user_agent: The product token sent in Server and User-Agent headers.
        idle_timeout: Seconds an idle TCP or TLS connection is kept open.
        max_message_size: The largest SIP message accepted, in bytes.
        t1: RFC 3261 T1, the round-trip time estimate, in seconds.
        t2: RFC 3261 T2, the longest retransmit interval for non-INVITE requests, in seconds.
        t4: RFC 3261 T4, the longest time a message stays in the network, in seconds.
        max_connections: TCP and TLS connections open at once; further incoming ones are refused.
        max_connections_per_address: Incoming TCP and TLS connections open at once from one IP address.
        tls_handshake_timeout: Seconds a TLS connection may take to complete its handshake.
        first_message_timeout: Seconds an incoming TCP or TLS connection may take to send its first SIP
            message (keep-alives do not count); 0 for no limit.
    """

    listeners: tuple[ListenerConfig, ...]
    user_agent: str = "pbx"
    idle_timeout: float = 600.0
    max_message_size: int = 65535
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    max_connections: int = 4096
    max_connections_per_address: int = 64
    tls_handshake_timeout: float = 10.0
    first_message_timeout: float = 30.0
    nameservers: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS material, as absolute paths.

    Attributes:
        certificate: The PEM certificate (chain) of the PBX, or None to generate a self-signed development
            certificate in the data directory on first start.
        private_key: The PEM private key for ``certificate``; None exactly when ``certificate`` is None.
        ca_certificates: A PEM bundle of CAs to verify peers with, or None for the system's default store.
        min_version: The oldest TLS version accepted and offered: ``"1.2"`` or ``"1.3"``.
        ciphers: An OpenSSL cipher string for TLS 1.2, or ``""`` for the AEAD-only default.
    """

    certificate: Path | None = None
    private_key: Path | None = None
    ca_certificates: Path | None = None
    min_version: str = "1.2"
    ciphers: str = ""


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    """SIP registrar settings (RFC 3261 §10, RFC 5626 keep-alives).

    Attributes:
        min_expires: The shortest registration accepted, in seconds; a REGISTER asking for less (but more
            than 0) is answered 423 Interval Too Brief.
        max_expires: The longest registration granted, in seconds; longer requests are shortened to it.
        default_expires: The registration time used when the phone asks for none, in seconds; from
            ``min_expires`` to ``max_expires``.
        max_contacts: The most contacts one address of record may have; beyond it the oldest is replaced.
        keepalive: ``"options"`` (OPTIONS pings to UDP contacts, CRLF pings on TCP and TLS flows),
            ``"crlf"`` (CRLF pings on TCP and TLS flows only) or ``"none"``.
        keepalive_interval: Seconds between keep-alive pings to one contact.
        keepalive_failures: Missed pings in a row after which the contact is removed.
    """

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 10
    keepalive: str = "options"
    keepalive_interval: float = 30.0
    keepalive_failures: int = 3


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Digest authentication and brute-force guard settings.

    Attributes:
        max_auth_failures: Wrong digest responses from one source address within ``failure_window`` after
            which the source is blocked.
        failure_window: The sliding window failures are counted in, in seconds.
        block_duration: How long a blocked source is silently dropped, in seconds.
        max_account_failures: Wrong responses for one account, from any sources, within ``failure_window``;
            past it, each source that fails again for that account is blocked at once.
        nonce_lifetime: How long a digest nonce stays valid, in seconds.
        auth_algorithms: The digest algorithms to challenge with, in the order of the challenges; each
            ``"SHA-256"`` or ``"MD5"``, never empty, no duplicates.
        trusted_networks: Networks in CIDR notation (normalized, e.g. ``"192.0.2.0/24"``) whose sources
            are never blocked.
        md5_only_user_agents: User-Agent substrings (case-insensitive) of clients that get only an MD5
            challenge; the choice depends on the User-Agent alone, never on the user, so it reveals nothing.
        trusted_proxies: Networks (normalized CIDR) of proxies in front of the PBX (Kamailio): never
            blocked themselves; a request through one is counted against the address in the Via below.
    """

    max_auth_failures: int = 5
    failure_window: float = 60.0
    block_duration: float = 600.0
    max_account_failures: int = 20
    nonce_lifetime: float = 300.0
    auth_algorithms: tuple[str, ...] = AUTH_ALGORITHMS
    trusted_networks: tuple[str, ...] = ()
    md5_only_user_agents: tuple[str, ...] = MD5_ONLY_USER_AGENTS
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "md5_only_user_agents", tuple(self.md5_only_user_agents))
        object.__setattr__(self, "auth_algorithms", tuple(self.auth_algorithms))
        object.__setattr__(self, "trusted_networks", tuple(self.trusted_networks))


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """RTP media relay settings.

    Attributes:
        rtp_port_min: The lowest UDP port the relay allocates RTP sockets from; even, 1024 to 65534.
        rtp_port_max: The highest such port; at least ``rtp_port_min + 3`` (two RTP/RTCP pairs), at most
            65535.
        bind_host: The IPv4 or IPv6 address the relay binds its RTP sockets to, without brackets; may be a
            wildcard (``"0.0.0.0"``, ``"::"``).
        advertise: The IP address the PBX writes into SDP ``c=`` lines, or ``""`` for ``bind_host``; never
            a wildcard, and never ``""`` when ``bind_host`` is a wildcard.
        relay: ``"builtin"`` or ``"rtpengine"``: who relays the media of calls bridged from the start
            (calls the PBX answers itself always use the built-in relay).
        rtpengine: rtpengine's ng control address, ``"IP:port"`` (``"[IPv6]:port"``).
    """

    rtp_port_min: int = 10000
    rtp_port_max: int = 20000
    bind_host: str = "127.0.0.1"
    advertise: str = ""
    relay: str = "builtin"
    rtpengine: str = "127.0.0.1:2223"

    @property
    def advertised_host(self) -> str:
        """The address peers send RTP to: ``advertise`` if set, else ``bind_host``."""
        return self.advertise or self.bind_host


@dataclass(frozen=True, slots=True)
class MwiConfig:
    """Message waiting indication: subscriptions to ``message-summary`` (RFC 3842, RFC 6665).

    Attributes:
        min_expires: The shortest subscription accepted, in seconds; a SUBSCRIBE asking for less (but more
            than 0) is answered 423 Interval Too Brief.
        max_expires: The longest subscription granted, in seconds; longer requests are shortened to it.
        default_expires: The duration when the SUBSCRIBE asks for none; from ``min_expires`` to
            ``max_expires``.
    """

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600


@dataclass(frozen=True, slots=True)
class CallsConfig:
    """B2BUA call settings.

    Attributes:
        ring_timeout: Seconds a dial rings before it counts as unanswered, unless the extension sets its own.
        max_call_duration: Seconds after which an answered call is hung up.
        codecs: The RTP encoding names the B2BUA lets through, never empty, without duplicates; known names
            in the spelling of `CODECS`, others as written. ``("*",)`` lets every codec through. SDP
            compares encoding names case-insensitively, so use `allows_codec` rather than ``in``.
    """

    ring_timeout: float = 30.0
    max_call_duration: float = 14400.0
    codecs: tuple[str, ...] = DEFAULT_CODECS
    drain_timeout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "codecs", tuple(self.codecs))

    def allows_codec(self, encoding: str) -> bool:
        """Whether the B2BUA lets a codec through.

        Args:
            encoding: An encoding name from an SDP ``a=rtpmap`` line (``"pcmu"``, ``"opus"``), any case,
                without clock rate.

        Returns:
            True if ``codecs`` is ``("*",)`` or names ``encoding``, compared case-insensitively.
        """
        if self.codecs == (ALL_CODECS,):
            return True
        folded = encoding.casefold()
        return any(codec.casefold() == folded for codec in self.codecs)


@dataclass(frozen=True, slots=True)
class Extension:
    """A SIP account of a tenant; its number is the digest user name.

    At least one of ``password``, ``ha1_md5`` and ``ha1_sha256`` is set. The digests are
    H(A1) = H(number ":" realm ":" password) in lower-case hex (RFC 7616 §3.4.2), so they are tied to the
    tenant's realm.

    Attributes:
        number: The extension number, also the user part of its address of record.
        name: The display name, possibly empty.
        password: The plain password, or None when only digests are configured.
        ha1_md5: The MD5 H(A1) as 32 hex digits, or None.
        ha1_sha256: The SHA-256 H(A1) as 64 hex digits, or None.
        forward_all: Where every call to the extension goes instead: an extension number of the tenant or
            any dial string (``"trunk:carrier/15551234"``); ``""`` for no forwarding. Never the extension's
            own number, never whitespace or control characters, at most 128 characters; the same holds for
            the other ``forward_*`` targets.
        forward_busy: Where a call goes when the extension is busy, or ``""``.
        forward_noanswer: Where a call goes when the extension does not answer in time, or ``""``.
        ring_timeout: Seconds the extension rings before a call counts as unanswered; 0 means
            `CallsConfig.ring_timeout`.
        may_call_out: Whether the extension may place calls through trunks.
        srtp: One of `pbx.config.srtp.SRTP_MODES`: "off", "optional" (accept SRTP offers over TLS, offer
            plain RTP) or "mandatory" (SRTP only).
        allow_srtp_over_plain: Whether SRTP keys offered over plain UDP/TCP signalling are accepted (they
            travel in clear there).
        pickup_groups: The call pickup groups of the extension (`pbx.config.pickup`).
        directed_pickup: Whether it may pick up a call ringing at any extension (`pickup EXTENSION`).
    """

    number: str
    name: str = ""
    password: str | None = field(default=None, repr=False)
    ha1_md5: str | None = field(default=None, repr=False)
    ha1_sha256: str | None = field(default=None, repr=False)
    forward_all: str = ""
    forward_busy: str = ""
    forward_noanswer: str = ""
    ring_timeout: float = 0.0
    may_call_out: bool = False
    srtp: str = "optional"
    allow_srtp_over_plain: bool = False
    pickup_groups: tuple[str, ...] = ()  # pbx.config.pickup
    directed_pickup: bool = False


@dataclass(frozen=True, slots=True)
class OutboundCredentials:
    """Credentials the PBX answers a 401/407 with when a SIP URI target challenges it (per realm).

    Attributes:
        realm: the realm of the challenge.
        username: the user name to answer with.
        password: the password (never logged).
    """

    realm: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class TrustedPeer:
    """A SIP peer authenticated by its source address instead of digest (a gateway, an application server):
    its INVITEs get no 407 and run the dialplan as one of the tenant's extensions.

    What Asterisk does with an IP-matched endpoint, FreeSWITCH with an ACL on a gateway and Kamailio with
    its permissions module. A source address can be spoofed over UDP: list single hosts or small networks
    the peer alone uses, and no network that phones register from (their calls would count as the peer's).

    Attributes:
        name: The peer's name (letters, digits, '.', '_', '-'; unique in its tenant), for logs.
        networks: The source networks in CIDR notation, normalized (``"192.0.2.10/32"``); never empty, no
            overlap with another peer's networks in the same tenant.
        extension: The extension of the tenant the peer calls as: the dialplan's ``caller`` and the CDR's
            caller (its name and ``may_call_out`` apply).
    """

    name: str
    networks: tuple[str, ...]
    extension: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "networks", tuple(self.networks))


@dataclass(frozen=True, slots=True)
class Tenant:
    """A customer of the PBX, selected by its SIP domain.

    Attributes:
        name: The tenant's name (the TOML table name), also the name of its dialplan directory.
        domain: The tenant's SIP domain, normalized with `normalize_host`.
        aliases: Further hosts that select this tenant, normalized.
        realm: The digest authentication realm.
        extensions: The tenant's extensions by number, read-only.
        groups: The tenant's ring groups, read-only: group name to the numbers of its member extensions
            (never empty, each an extension of this tenant, no duplicates), in the configured order.
        peers: The peers whose INVITEs for this tenant are authenticated by source address; none by
            default (every INVITE is challenged).
        credentials: What the PBX answers a challenge from a SIP URI target with, per realm.
        mailboxes: The tenant's voicemail boxes by number, read-only.
        trunks: The tenant's SIP trunks by name, read-only, in the configured order.
        outbound: Its toll-fraud settings: outbound classes, number rules and limits.
        features: Call park orbits and busy-lamp rules (`[tenants.NAME.features]`, docs/features.md).
    """

    name: str
    domain: str
    aliases: tuple[str, ...] = ()
    realm: str = ""
    extensions: Mapping[str, Extension] = field(default_factory=dict, hash=False)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    peers: tuple[TrustedPeer, ...] = ()
    credentials: tuple[OutboundCredentials, ...] = ()
    mailboxes: Mapping[str, Mailbox] = field(default_factory=dict, hash=False)
    trunks: Mapping[str, Trunk] = field(default_factory=dict, hash=False)
    outbound: OutboundConfig = field(default_factory=OutboundConfig, hash=False)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "peers", tuple(self.peers))
        for name in ("mailboxes", "trunks"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))
        if not self.realm:
            object.__setattr__(self, "realm", self.domain)
        object.__setattr__(self, "aliases", tuple(self.aliases))
        if not isinstance(self.extensions, MappingProxyType):
            object.__setattr__(self, "extensions", MappingProxyType(dict(self.extensions)))
        if not isinstance(self.groups, MappingProxyType):
            groups = {name: tuple(members) for name, members in self.groups.items()}
            object.__setattr__(self, "groups", MappingProxyType(groups))

    @property
    def hosts(self) -> tuple[str, ...]:
        """The domain followed by the aliases: every host that selects this tenant."""
        return (self.domain, *self.aliases)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated PBX configuration.

    Attributes:
        source: The TOML file it was read from, or None when built from a dict.
        base_dir: The directory relative paths were resolved against (the config file's directory).
        data_dir: Where the PBX keeps its state (SQLite, the generated TLS certificate, voicemail).
        dialplan_dir: The directory holding one dialplan directory per tenant.
        sip_trace: Whether every SIP message sent and received is logged.
        sip: SIP stack settings.
        tls: TLS material.
        tenants: The tenants, in file order; never empty, with distinct names and hosts.
        registrar: SIP registrar settings.
        security: Authentication and brute-force guard settings.
        media: RTP media relay settings.
        calls: B2BUA call settings.
        mwi: Message waiting indication settings.
        voicemail: Voicemail recording and access settings.
        smtp: The SMTP server for voicemail e-mail.
        metrics, trace, log: Prometheus metrics, per-call traces, log format and levels
            (`pbx.config.observe`).
        admin: The operator's console (`[admin]`), off unless `listen` is set.
        overload: Overload control (`pbx.config.overload`).
        edge: Checks before parsing: per-source rate limits, blocks, scanner screens.
        poll_window: While the event loop is busy, the shortest time (seconds) between two of its
            wake-ups: it naps what is left before polling again, so one wake-up reads a batch of
            datagrams (`pbx.service.wakeups`); 0: never naps.
    """

    source: Path | None
    base_dir: Path
    data_dir: Path
    dialplan_dir: Path
    sip_trace: bool
    sip: SipConfig
    tls: TlsConfig
    tenants: tuple[Tenant, ...]
    registrar: RegistrarConfig = field(default_factory=RegistrarConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    mwi: MwiConfig = field(default_factory=MwiConfig)
    voicemail: VoicemailConfig = field(default_factory=VoicemailConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)
    log: LogConfig = field(default_factory=LogConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    overload: OverloadConfig = field(default_factory=OverloadConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    poll_window: float = 0.0
    _by_host: Mapping[str, Tenant] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tenants", tuple(self.tenants))
        by_host: dict[str, Tenant] = {}
        for tenant in self.tenants:
            for host in tenant.hosts:
                by_host.setdefault(normalize_host(host), tenant)
        object.__setattr__(self, "_by_host", MappingProxyType(by_host))

    def tenant_for_domain(self, host: str) -> Tenant | None:
        """Find the tenant a request addressed to ``host`` belongs to.

        Args:
            host: The host of a SIP URI (a name, an IPv4 literal, or an IPv6 literal with or without
                brackets), without port; compared case-insensitively with each tenant's domain and aliases.

        Returns:
            The tenant whose domain or one of whose aliases is ``host``, or None.
        """
        return self._by_host.get(normalize_host(host))

    def tenant(self, name: str) -> Tenant | None:
        """Find a tenant by its name.

        Args:
            name: The tenant's name, as in ``[tenants.NAME]``.

        Returns:
            The tenant, or None if there is none of that name.
        """
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        return None
