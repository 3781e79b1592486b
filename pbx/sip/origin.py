"""Where a request really comes from when it came through a trusted proxy (Kamailio in front of the PBX).

A request relayed by a proxy arrives from the proxy's address; the address that sent it to the proxy is in
the Via the proxy found on top (the second Via now): its `received` parameter when the proxy added one
(RFC 3261 18.2.1: the sent-by differed from the packet's source, e.g. behind NAT), else its sent-by host.
Only for proxies the operator trusts: anyone else could write any Via. The brute-force guard counts
failures against that address, so one attacker behind the proxy cannot get the proxy itself blocked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from pbx.sip.errors import SipParseError
from pbx.sip.message import Request


def network_matcher(networks: Iterable[str]) -> Callable[[str], bool]:
    """host -> whether it is in one of `networks` (CIDR or single addresses); invalid hosts are not."""
    parsed = [ipaddress.ip_network(n, strict=False) for n in networks]
    if not parsed:
        return lambda host: False
    cache: dict[str, bool] = {}

    def matches(host: str) -> bool:
        known = cache.get(host)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            result = False
        else:
            result = any(address in network for network in parsed)
        if len(cache) < 4096:
            cache[host] = result
        return result

    return matches


def request_origin(request: Request, source: str, is_trusted_proxy: Callable[[str], bool] | None) -> str:
    """The address `request` comes from: `source` (the packet's), or behind a trusted proxy the address in
    the Via below the proxy's."""
    if is_trusted_proxy is None or not is_trusted_proxy(source):
        return source
    try:
        vias = request.vias
    except SipParseError:
        return source
    if len(vias) < 2:
        return source  # the proxy's own request (an OPTIONS health check)
    below = vias[1]
    return below.received or below.host or source
