"""Edge protection from `[edge]` and `[security]`: the `Admission` every message meets before it is parsed,
and, optionally, blocked sources pushed into an nftables set so that the kernel drops them.

- Trusted networks (`security.trusted_networks`) and proxies in front (`security.trusted_proxies`, the
  Kamailio every phone's traffic comes through) are exempt from everything;
- trunks' and trusted peers' addresses (trunk `networks`, IP-literal hosts and proxies, tenants' peers'
  `networks`) get their own, higher limits (`edge.trunk_rate`, `edge.trunk_burst`);
- the brute-force guard's blocks (wrong passwords, unknown users alike) go to the admission too, so a
  guessing source is dropped before parsing (`link_guard`).

With `edge.nftables_table = "inet pbx"`, each new block runs `nft add element inet pbx blocked4
{ ADDRESS timeout Ns }` (`blocked6` for IPv6); the table, its two sets (`flags timeout`) and the rule that
drops their addresses are the operator's (docs/security.md has the ruleset).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbx.config import Config
from pbx.sip.admission import Admission, Limit, classes_from
from pbx.sip.screening import RawScreen
from pbx.trunks.targets import split_host_port

_log = Logger(namespace="pbx.edge")

MAX_NFT_IN_FLIGHT = 8
"""`nft` processes running at once; a block past that is left to the PBX's own drop (and counted)."""


def build_admission(config: Config, clock: Any) -> Admission:
    """The admission of `[edge]`, with the trusted and trunk source classes."""
    edge = config.edge
    screen = RawScreen(
        edge.scanner_user_agents,
        served_hosts=[host for tenant in config.tenants for host in tenant.hosts],
        drop_unserved_addresses=edge.drop_unserved_addresses,
    )
    classes = classes_from(
        config.security.trusted_networks + config.security.trusted_proxies,
        [
            (
                "trunks",
                sorted(set(trunk_networks(config))),
                Limit(edge.trunk_rate, edge.trunk_burst),
                Limit(0.0, 0.0),
            )
        ],
    )
    admission = Admission(
        clock,
        messages=Limit(edge.rate, edge.burst),
        connections=Limit(edge.connection_rate, edge.connection_burst),
        block_after=edge.block_after,
        block_duration=edge.block_duration,
        classes=classes,
        screen=screen if screen.active else None,
        max_sources=edge.max_sources,
        enabled=edge.enabled,
    )
    _log.info(
        "Edge protection {state}: {rate:g} messages/s (burst {burst:g}) and {crate:g} connections/s per "
        "source, blocks of {duration:g} s; {trusted} trusted and {trunks} trunk networks",
        state="on" if edge.enabled else "off",
        rate=edge.rate,
        burst=edge.burst,
        crate=edge.connection_rate,
        duration=edge.block_duration,
        trusted=len(config.security.trusted_networks),
        trunks=sum(len(c.networks) for c in classes if c.name == "trunks"),
    )
    return admission


def trunk_networks(config: Config) -> Iterator[str]:
    """The networks carriers and trusted peers send from: trunk `networks`, trunks' IP-literal hosts and
    proxies, tenants' peers' `networks` (host names are not resolved: list their `networks`)."""
    for tenant in config.tenants:
        for peer in tenant.peers:
            yield from peer.networks
        for trunk in tenant.trunks.values():
            yield from trunk.networks
            for target in (trunk.host, *trunk.proxies, trunk.outbound_proxy):
                if target:
                    host = split_host_port(target)[0].strip("[]")
                    if _is_ip(host):
                        yield host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def link_guard(guard: Any, admission: Admission) -> None:
    """Send the brute-force guard's blocks to the admission: the source is then dropped before parsing."""
    guard.observers.append(
        lambda source, duration, reason: admission.block(source, duration, reason, log=False)
    )


class _NftProcess(ProcessProtocol):
    def __init__(self, pusher: NftablesBlocklist, command: str) -> None:
        self._pusher = pusher
        self._command = command
        self._errors = b""

    def errReceived(self, data: bytes) -> None:
        self._errors = (self._errors + data)[-500:]

    def processEnded(self, reason: Failure) -> None:
        self._pusher.in_flight -= 1
        if not isinstance(reason.value, ProcessDone):
            self._pusher.failures += 1
            _log.warn(
                "{command} failed: {error}",
                command=self._command,
                error=self._errors.decode("utf-8", "replace").strip() or reason.getErrorMessage(),
            )


class NftablesBlocklist:
    """A block observer that adds each blocked address to an nftables set with the block's timeout.

    Args:
        reactor: spawns `nft`.
        table: "FAMILY TABLE" holding the sets `blocked4` and `blocked6`.
        executable: the `nft` binary.
    """

    def __init__(self, reactor: IReactorProcess, table: str, executable: str = "/usr/sbin/nft") -> None:
        self._reactor = reactor
        self._table = table.split()
        self._executable = executable
        self.in_flight = 0
        self.pushed = 0
        self.skipped = 0
        self.failures = 0

    def command(self, source: str, duration: float) -> list[str]:
        """The `nft` command line that adds `source` for `duration` seconds."""
        family, table = self._table
        set_name = "blocked6" if ":" in source else "blocked4"
        element = f"{{ {source} timeout {max(1, round(duration))}s }}"
        return [self._executable, "add", "element", family, table, set_name, element]

    def __call__(self, source: str, duration: float, reason: str) -> None:
        if self.in_flight >= MAX_NFT_IN_FLIGHT:
            self.skipped += 1
            return
        argv = self.command(source, duration)
        self.in_flight += 1
        self.pushed += 1
        try:
            self._reactor.spawnProcess(_NftProcess(self, " ".join(argv[1:])), argv[0], argv, env={})
        except Exception:
            self.in_flight -= 1
            self.failures += 1
            _log.failure("Could not run {nft}", nft=argv[0])
