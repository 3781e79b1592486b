"""Edge protection settings as a frozen value: `[edge]`, what the PBX checks before it parses a message
(per-source rate limits and blocks, scanner screens; `pbx.sip.admission`, `pbx.sip.screening`).

Like `pbx.config.model` it imports only the standard library. The keys are documented in
``docs/configuration.md`` and the reasoning behind the defaults in ``docs/security.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

SCANNER_USER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",
    "friendly-request",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "iwar",
    "sivus",
    "smap",
    "gulp",
    "vaxsipuseragent",
    "vaxipuseragent",
    "siparmyknife",
    "pplsip",
)
"""How the User-Agents of well-known SIP scanners start (the same list as `pbx.sip.screening`)."""

EDGE_KEYS: tuple[str, ...] = (
    "enabled",
    "rate",
    "burst",
    "block_after",
    "block_duration",
    "connection_rate",
    "connection_burst",
    "trunk_rate",
    "trunk_burst",
    "max_sources",
    "scanner_user_agents",
    "drop_unserved_addresses",
    "nftables_table",
)
"""The keys of the `[edge]` table."""


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """What every message meets before it is parsed.

    Attributes:
        enabled: Whether limits, blocks and screens apply at all (false behind an SBC that does this).
        rate: Messages per second one source address may sustain (UDP datagrams and TCP/TLS messages,
            keep-alives included); 0 for no limit.
        burst: Messages one source may send at once after a quiet spell (the bucket's size).
        block_after: Dropped messages (net of forgiveness at ``rate`` per second) after which a source is
            blocked: a source at up to twice ``rate`` loses only its excess; a flood is blocked.
        block_duration: Seconds a flooding or scanning source stays blocked (everything it sends dropped).
        connection_rate: New TCP/TLS connections per second one source may open; 0 for no limit.
        connection_burst: New connections one source may open at once.
        trunk_rate: ``rate`` for trunks' and trusted peers' addresses (their ``networks``, IP-literal hosts
            and proxies); 0 for no limit.
        trunk_burst: ``burst`` for those addresses.
        max_sources: The most source addresses tracked (and blocked) at once; memory stays bounded when
            addresses are sprayed.
        scanner_user_agents: How the User-Agents of scanners start (case-insensitive); their messages are
            dropped silently and their sources blocked. Empty for none.
        drop_unserved_addresses: Drop requests whose Request-URI host is an IP address that is not a
            tenant's domain or alias (scanners sweep addresses); trusted and trunk addresses excepted.
        nftables_table: ``"FAMILY TABLE"`` (e.g. ``"inet pbx"``) whose sets ``blocked4`` and ``blocked6``
            get each blocked address, with the block's timeout, so the kernel drops it; ``""`` for none.
    """

    enabled: bool = True
    rate: float = 200.0
    burst: float = 400.0
    block_after: float = 400.0
    block_duration: float = 60.0
    connection_rate: float = 10.0
    connection_burst: float = 64.0
    trunk_rate: float = 2000.0
    trunk_burst: float = 4000.0
    max_sources: int = 65536
    scanner_user_agents: tuple[str, ...] = SCANNER_USER_AGENTS
    drop_unserved_addresses: bool = False
    nftables_table: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "scanner_user_agents", tuple(self.scanner_user_agents))
