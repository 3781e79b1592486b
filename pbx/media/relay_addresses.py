"""Where the media relay may send: SDP addresses turned into socket destinations (RFC 8866 5.7, RFC 3264 8.4
for the hold address, RFC 4291 2.5.5.2 for IPv4-mapped IPv6 addresses on a dual-stack socket).

`AddressRules` is shared by `pbx.media.relay.UdpMediaRelay` and its in-memory twin: host names are refused
(resolve them first), multicast and broadcast are refused, `0.0.0.0`/`::` and port 0 mean "send nothing",
and an IPv4 address becomes `::ffff:a.b.c.d` on a socket bound to `::`. Answers are cached per host text.
This module knows nothing of sockets or SIP.
"""

from __future__ import annotations

import ipaddress

__all__ = ["Address", "AddressRules"]

Address = tuple[str, int]


class AddressRules:
    """Turns SDP addresses into destinations the relay's sockets can send to."""

    def __init__(self, bind_host: str) -> None:
        bind = ipaddress.ip_address(bind_host)
        self.ipv6 = bind.version == 6
        self.dual_stack = self.ipv6 and bind.is_unspecified  # "::" also reaches IPv4 (IPv4-mapped)
        self._hosts: dict[str, str | None] = {}  # host as SDP wrote it -> where to send (None: nowhere)

    def destination(self, host: str, port: int) -> Address | None:
        if not 0 <= port <= 65535:
            raise ValueError(f"bad media port {port}")
        target = self._hosts.get(host)
        if target is None and host not in self._hosts:
            target = self._target(host)  # raises ValueError for what we cannot send to (not remembered)
            if len(self._hosts) >= 4096:
                self._hosts.clear()
            self._hosts[host] = target
        if target is None or port == 0:
            return None  # c=0.0.0.0 (RFC 2543 hold) or a rejected stream: send nothing
        return target, port

    def _target(self, host: str) -> str | None:
        """The address to send to for an SDP host, None for a hold address. Raises ValueError."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"media address {host!r} is not an IP address (resolve it first)") from None
        if ip.is_unspecified:
            return None
        if ip.is_multicast or (ip.version == 4 and int(ip) == 0xFFFFFFFF):
            raise ValueError(f"media address {host} is not unicast")
        v4 = ip if ip.version == 4 else ip.ipv4_mapped
        if v4 is not None:
            if not self.ipv6:
                return str(v4)
            if self.dual_stack:
                return f"::ffff:{v4}"  # the form recvfrom() reports on a dual-stack socket
            raise ValueError(f"the relay is bound to IPv6 only and cannot reach {host}")
        if not self.ipv6:
            raise ValueError(f"the relay is bound to IPv4 and cannot reach {host}")
        return str(ip)
