"""Config to objects: the plain values and lookups the layers below take from a validated `Config`.

Each function reads one part of the config and returns what a constructor wants (a lookup callable, a
directory, credentials): the registrar, the B2BUA and the notifier never see the config itself.
"""

from __future__ import annotations

import ipaddress
import os
import resource
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from pbx.b2bua import Directory, ExtensionInfo, PeerLookup, TrustedPeer
from pbx.config import Config, ConfigError, Tenant
from pbx.registrar import Domain
from pbx.service.outbound import outbound_classes
from pbx.sip.client_auth import Credentials
from pbx.sip.digest import ha1
from pbx.sip.resolver import SipResolver, make_resolver
from pbx.trunks.routing import TrunkRouting
from pbx.trunks.settings import ITrunkStates

_log = Logger(namespace="pbx")

PEER_MEMO_MAX = 4096
"""The most (tenant, source address) answers `peer_lookup` remembers."""


def nonce_secret(data_dir: Path) -> bytes:
    """The nonce key, kept in the data directory so that nonces stay valid across restarts."""
    path = data_dir / "nonce.key"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        os.replace(tmp, path)
    secret = path.read_bytes()
    if len(secret) < 16:
        raise ConfigError("pbx.data_dir", f"{path} is damaged: delete it to make a new one")
    return secret


def ha1_lookup(config: Config) -> Callable[[str, str, str], str | None]:
    """H(A1) by (username, realm, algorithm) from the tenants' extensions; computed once per password."""
    by_realm: dict[str, Tenant] = {}
    for tenant in config.tenants:
        by_realm.setdefault(tenant.realm, tenant)
    cache: dict[tuple[str, str, str], str | None] = {}

    def lookup(username: str, realm: str, algorithm: str) -> str | None:
        key = (username, realm, algorithm)
        if key in cache:
            return cache[key]
        tenant = by_realm.get(realm)
        extension = tenant.extensions.get(username) if tenant is not None else None
        value: str | None = None
        if extension is not None:
            if extension.password is not None:
                value = ha1(username, realm, extension.password, algorithm)
            elif algorithm == "MD5":
                value = extension.ha1_md5
            elif algorithm == "SHA-256":
                value = extension.ha1_sha256
        if len(cache) < 100_000:
            cache[key] = value
        return value

    return lookup


def domain_lookup(config: Config) -> Callable[[str], Domain | None]:
    """The tenant of a request's host (registrar and B2BUA), remembered per host text: every REGISTER and
    INVITE asks, and normalising an address costs more than the rest of the lookup."""
    cache: dict[str, Domain | None] = {}

    def lookup(host: str) -> Domain | None:
        try:
            return cache[host]
        except KeyError:
            pass
        tenant = config.tenant_for_domain(host)
        domain = Domain(tenant.name, tenant.realm) if tenant is not None else None
        if len(cache) >= 1024:  # hosts come from the network: bound what they can make us keep
            cache.clear()
        cache[host] = domain
        return domain

    return lookup


def directories(config: Config) -> Callable[[str], Directory | None]:
    """Each tenant's directory for the dialplan and the B2BUA."""
    by_name = {
        tenant.name: Directory(
            tenant=tenant.name,
            domain=tenant.domain,
            extensions={
                number: ExtensionInfo(
                    number=number,
                    name=e.name,
                    forward_all=e.forward_all,
                    forward_busy=e.forward_busy,
                    forward_noanswer=e.forward_noanswer,
                    ring_timeout=e.ring_timeout,
                    may_call_out=e.may_call_out,
                    srtp=e.srtp,
                    allow_srtp_over_plain=e.allow_srtp_over_plain,
                    outbound_classes=outbound_classes(tenant, number),
                    pickup_groups=e.pickup_groups,
                    directed_pickup=e.directed_pickup,
                )
                for number, e in tenant.extensions.items()
            },
            groups=dict(tenant.groups),
        )
        for tenant in config.tenants
    }
    return by_name.get


def peer_lookup(config: Config) -> PeerLookup | None:
    """The trusted peers of each tenant by source address (`[[tenants.NAME.peers]]`); None when no tenant
    has any, so every INVITE is challenged."""
    by_tenant = {
        tenant.name: [
            (ipaddress.ip_network(network), TrustedPeer(peer.name, peer.extension))
            for peer in tenant.peers
            for network in peer.networks
        ]
        for tenant in config.tenants
        if tenant.peers
    }
    if not by_tenant:
        return None

    memo: dict[tuple[str, str], TrustedPeer | None] = {}

    def lookup(tenant: str, host: str) -> TrustedPeer | None:
        # Asked twice per INVITE (the stateless challenge, then the call): the answer for a (tenant, source)
        # never changes for this config, so it is remembered in a bounded memo (a flood of sources clears it).
        key = (tenant, host)
        try:
            return memo[key]
        except KeyError:
            pass
        peer = find(tenant, host)
        if len(memo) >= PEER_MEMO_MAX:
            memo.clear()
        memo[key] = peer
        return peer

    def find(tenant: str, host: str) -> TrustedPeer | None:
        networks = by_tenant.get(tenant)
        if not networks:
            return None
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket reports IPv4 sources as ::ffff:a.b.c.d
        for network, peer in networks:
            if address in network:
                return peer
        return None

    return lookup


def sip_locator(config: Config, the_reactor: Any) -> SipResolver:
    """RFC 3263 server location for SIP URI targets, asking `sip.nameservers` (or the system's resolvers)."""
    transports = sorted({listener.transport for listener in config.sip.listeners})
    families = ["ipv4"] + (["ipv6"] if any(":" in listener.host for listener in config.sip.listeners) else [])
    dns = make_resolver(the_reactor, list(config.sip.nameservers))
    return SipResolver(dns, the_reactor, transports=transports, families=families)


def outbound_credentials(config: Config) -> Callable[[str, str], Credentials | None]:
    """(tenant, realm) -> the credentials of `[[tenants.NAME.credentials]]` for that realm."""
    table = {
        (tenant.name, entry.realm): Credentials(entry.username, entry.password)
        for tenant in config.tenants
        for entry in tenant.credentials
    }
    return lambda tenant, realm: table.get((tenant, realm))


def trunk_routing(config: Config, states: ITrunkStates | None = None) -> TrunkRouting:
    """Every tenant's trunks for call routing (`dial trunk:...`, inbound DIDs), with their live state
    (`pbx.service.trunks`); without one, a trunk is up while enabled."""
    return TrunkRouting({tenant.name: tuple(tenant.trunks.values()) for tenant in config.tenants}, states)


def connection_limits(config: Config) -> dict[str, Any]:
    """The `TransportManager` arguments that bound TCP/TLS connections (`[sip]` max_connections...)."""
    sip = config.sip
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and sip.max_connections > soft // 2:
        _log.warn(
            "sip.max_connections ({cap}) is more than half the open files limit ({soft}): connections may "
            "use up the descriptors calls need",
            cap=sip.max_connections,
            soft=soft,
        )
    return {
        "max_connections": sip.max_connections,
        "max_connections_per_address": sip.max_connections_per_address,
        "handshake_timeout": sip.tls_handshake_timeout,
        "first_message_timeout": sip.first_message_timeout,
    }
