"""Where a trunk's requests go: the carrier's URIs and the RFC 3263 targets behind them.

- `registrar_uri`: the REGISTER's Request-URI and the OPTIONS' Request-URI: ``sip:HOST[:PORT]`` with
  ``;transport=X`` when the trunk names one; HOST is `host`, else the first proxy's host.
- `aor`: the registration's address-of-record (From and To): ``sip:USERNAME@HOST``.
- `TrunkLocator`: what `pbx.sip.registration.RegistrationClient` calls `resolver`: `resolve(uri)` gives
  the targets of a request, best first. With `proxies` they are the proxies' targets in the order listed
  (each resolved by RFC 3263 itself, so a name with SRV records gives its own failover list); else the
  carrier's URI resolved by RFC 3263 (NAPTR, SRV, A/AAAA), which `pbx.sip.targets.try_targets` then walks
  on timeouts, transport errors and 503s. An outbound proxy is resolved alone (the client asks for it).

This module knows no config: it reads a `pbx.trunks.settings.TrunkSettings`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from pbx.sip.resolver import ResolutionError, Target
from pbx.sip.uri import SipURI, parse_sip_uri
from pbx.trunks.settings import TrunkSettings

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}

Locate = Callable[[SipURI], "Deferred[list[Target]]"]
"""RFC 3263 server location: a SIP URI -> its targets, best first (`pbx.sip.resolver.SipResolver.resolve`)."""


def split_host_port(text: str) -> tuple[str, int]:
    """("host", port or 0) of a "host[:port]" text as the config normalises it (IPv6 in brackets)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 0
    host, _, port = text.partition(":")
    return host, int(port) if port else 0


def _uri(host: str, port: int, transport: str, user: str = "") -> SipURI:
    bracketed = f"[{host}]" if ":" in host else host
    text = f"sip:{user + '@' if user else ''}{bracketed}{':' + str(port) if port else ''}"
    if transport:
        text += f";transport={transport}"
    return parse_sip_uri(text)


def carrier_host(trunk: TrunkSettings) -> tuple[str, int]:
    """The carrier's (host, port): `host` and `port`, else the first proxy's."""
    if trunk.host:
        return trunk.host, trunk.port
    return split_host_port(trunk.proxies[0])


def registrar_uri(trunk: TrunkSettings) -> SipURI:
    """The Request-URI of the trunk's REGISTER and OPTIONS requests."""
    host, port = carrier_host(trunk)
    return _uri(host, port, trunk.transport)


def aor(trunk: TrunkSettings) -> SipURI:
    """The trunk's address-of-record: the account's user at the carrier's host."""
    host, _ = carrier_host(trunk)
    return _uri(host, 0, "", trunk.username or "pbx")


def outbound_proxy_uri(trunk: TrunkSettings) -> SipURI | None:
    """The outbound proxy as a URI (for the Route header and its lookup), or None."""
    if not trunk.outbound_proxy:
        return None
    host, port = split_host_port(trunk.outbound_proxy)
    return _uri(host, port, trunk.transport)


def literal_targets(uri: SipURI) -> Deferred[list[Target]]:
    """Without DNS: the URI's host must be an IP address (the default transport udp, or the URI's)."""
    try:
        address = str(ipaddress.ip_address(uri.host.strip("[]")))
    except ValueError:
        return fail(ResolutionError(f"no resolver to look up {uri.host[:100]}"))
    transport = (uri.transport or "udp").lower()
    return succeed([Target(transport, address, uri.port or DEFAULT_PORTS.get(transport, 5060))])


class TrunkLocator:
    """The targets of a trunk's requests (see the module docstring).

    Args:
        trunk: the trunk's settings.
        locate: RFC 3263 lookup; None resolves IP addresses only (tests, and installs without DNS).
    """

    def __init__(self, trunk: TrunkSettings, locate: Locate | None = None) -> None:
        self._trunk = trunk
        self._locate: Locate = locate or literal_targets
        self._proxies = [_uri(*split_host_port(proxy), trunk.transport) for proxy in trunk.proxies]

    def resolve(self, uri: Any) -> Deferred[list[Target]]:
        """The targets for a request to `uri`: the proxies' when the trunk lists some (and `uri` is not the
        outbound proxy), else `uri`'s."""
        if not self._proxies or self._trunk.outbound_proxy:
            return self._locate(parse_sip_uri(str(uri)) if not isinstance(uri, SipURI) else uri)
        return Deferred.fromCoroutine(self._all_proxies())

    async def _all_proxies(self) -> list[Target]:
        found: list[Target] = []
        last: Exception | None = None
        for proxy in self._proxies:
            try:
                targets = await self._locate(proxy)
            except ResolutionError as e:
                last = e
                continue
            found.extend(target for target in targets if target not in found)
        if not found:
            raise last or ResolutionError("no proxy could be resolved")
        return found
