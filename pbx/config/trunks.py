"""SIP trunks as frozen values: `[tenants.NAME.trunks.TRUNK]`, a carrier the PBX registers to, sends
calls out through and takes calls (for its DIDs) from.

Like `pbx.config.model` it imports only the standard library; the password is left out of every ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DTMF_MODES: tuple[str, ...] = ("rfc4733", "info", "inband")
"""How key presses travel on a trunk: RFC 4733 telephone-events, SIP INFO, or tones in the audio."""
DID_SOURCES: tuple[str, ...] = ("request-uri", "to")
"""Where a trunk's inbound calls carry the called number (carriers differ)."""
TRUNK_TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "tls", "")
"""A trunk's transport; "" lets RFC 3263 choose."""
TRUNK_KEYS: tuple[str, ...] = (
    "srtp",
    "allow_srtp_over_plain",
    "host",
    "port",
    "proxies",
    "transport",
    "outbound_proxy",
    "username",
    "auth_username",
    "password",
    "realm",
    "register",
    "contact_user",
    "register_expires",
    "retry_interval",
    "options_interval",
    "codecs",
    "dtmf",
    "caller_id",
    "caller_id_name",
    "send_pai",
    "dids",
    "did_source",
    "networks",
    "max_calls",
    "enabled",
    "tls_certificate",
    "tls_private_key",
    "trust_identity",
)
"""The keys of a `[tenants.NAME.trunks.TRUNK]` table: every field of `Trunk` but its name."""


@dataclass(frozen=True, slots=True)
class Trunk:
    """A carrier's SIP trunk.

    Attributes:
        name: The trunk's name (letters, digits, '.', '_', '-'), unique in its tenant;
            `dial trunk:NAME/NUMBER` names it.
        host: The carrier's host name or address, resolved by RFC 3263 (NAPTR, SRV, A/AAAA); also the
            domain of the From/To/Request-URI of calls and registrations. Required unless `proxies` is set.
        port: The carrier's port; 0 lets RFC 3263 choose (SRV, else 5060/5061).
        proxies: An explicit list of "host[:port]" tried in order instead of resolving `host`.
        transport: "udp", "tcp", "tls", or "" to let RFC 3263 choose.
        outbound_proxy: "host[:port]" every request is sent to (a Route), or "".
        username: The account's user: the user of the REGISTER's To/From (calls present the caller ID in
            From: docs/trunks.md).
        auth_username: The digest user name when it differs from `username` ("" means `username`).
        password: The digest password; never logged.
        realm: The realm the credentials answer ("" answers any realm this trunk challenges with).
        register: Whether the PBX registers to the carrier.
        contact_user: The user part of the Contact the PBX registers ("" means `username`); inbound calls
            to this Contact are the trunk's.
        register_expires: The registration interval asked for, in seconds.
        retry_interval: Seconds before the first new attempt after a failed registration; each further
            failure doubles it, up to 600 s.
        options_interval: Seconds between OPTIONS pings that mark the trunk up or down (0: no pings).
        codecs: The codecs offered to the carrier, in order of preference.
        dtmf: One of `DTMF_MODES`: how the carrier wants key presses.
        caller_id: The number presented on every outbound call ("" presents the caller's own number as the
            dialplan built it).
        caller_id_name: The name presented with it ("" for the caller's name).
        send_pai: Whether outbound calls carry P-Asserted-Identity (RFC 3325) with the presented number.
        dids: The numbers the carrier delivers on this trunk, as they arrive (digits, optional "+").
        did_source: One of `DID_SOURCES`.
        networks: Source networks (CIDR) the carrier calls from; an inbound call from elsewhere is not the
            trunk's unless it is addressed to the registered Contact.
        max_calls: The most concurrent calls on the trunk (0: no limit).
        enabled: A disabled trunk neither registers nor carries calls.
        tls_certificate: Over TLS, the client certificate (PEM) presented to the carrier (mutual TLS), or
            None.
        tls_private_key: Its private key (PEM); None exactly when `tls_certificate` is None.
        srtp: One of `pbx.config.srtp.SRTP_MODES` (see `pbx.config.model.Extension.srtp`).
        allow_srtp_over_plain: Whether SRTP keys may be exchanged over plain UDP/TCP signalling.
        trust_identity: Whether the carrier is trusted with identity (RFC 3325 trust domain): its inbound
            calls' P-Asserted-Identity (else Remote-Party-ID) names the caller, and that identity with its
            Diversion and History-Info reaches the phones. False: those headers are dropped.
    """

    name: str
    host: str = ""
    port: int = 0
    proxies: tuple[str, ...] = ()
    transport: str = ""
    outbound_proxy: str = ""
    username: str = ""
    auth_username: str = ""
    password: str = field(default="", repr=False)
    realm: str = ""
    register: bool = False
    contact_user: str = ""
    register_expires: int = 3600
    retry_interval: float = 30.0
    options_interval: float = 0.0
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "telephone-event")
    dtmf: str = "rfc4733"
    caller_id: str = ""
    caller_id_name: str = ""
    send_pai: bool = True
    dids: tuple[str, ...] = ()
    did_source: str = "request-uri"
    networks: tuple[str, ...] = ()
    max_calls: int = 0
    enabled: bool = True
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    srtp: str = "optional"
    allow_srtp_over_plain: bool = False
    trust_identity: bool = False

    def __post_init__(self) -> None:
        for name in ("proxies", "codecs", "dids", "networks"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def registered_user(self) -> str:
        """The user part of the Contact the PBX registers: `contact_user`, else `username`."""
        return self.contact_user or self.username

    @property
    def auth_user(self) -> str:
        """The digest user name: `auth_username`, else `username`."""
        return self.auth_username or self.username
