"""Raw-byte screens for messages from the internet, run before the parser (scanner resistance).

- A **scanner's User-Agent** (RFC 3261 20.41, 25.1: `server-val` products): sipvicious (`svmap`, `svwar`,
  `svcrack`) says `friendly-scanner`, other tools name themselves too. A message whose `User-Agent` value
  starts with one of the configured names (case-insensitive; the first product is the tool's name) is
  dropped silently, and its source may be blocked: answering anything (even a `403`) tells a scanner a SIP
  server lives here. A prefix test (`bytes.startswith` with a tuple) rather than a search for substrings
  keeps the check at about a tenth of the parser's cost.
- A **request to a bare IP address the PBX does not serve** (optional): scanners sweep address ranges with
  `OPTIONS sip:100@192.0.2.7`; phones and carriers address a served domain, or an address configured as a
  domain alias. The Request-URI's host is read from the request line (RFC 3261 7.1, 19.1.1) and, when it is
  an IPv4 or IPv6 literal that is not served, the request is dropped (not its source blocked).

Both work on bytes with one compiled expression or a few `find`s; nothing is parsed into objects, so a
screen costs little beside the parser it saves. This module knows nothing of transports or of the PBX.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
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
"""How the User-Agents of well-known SIP scanners and war-dialers start (not admin tools such as sipsak)."""

_MAX_REQUEST_LINE = 2048
_USER_AGENT = re.compile(rb"\nuser-agent[ \t]*:[ \t]*([^\r\n]{1,64})", re.IGNORECASE)
_IPV4 = re.compile(rb"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a screen rejected a message.

    Attributes:
        reason: for the log line of a block.
        block: whether the source should be blocked, not only the message dropped.
    """

    reason: str
    block: bool


SCANNER = Verdict("scanner User-Agent", block=True)
UNSERVED_ADDRESS = Verdict("request to an IP address that is not a served domain", block=False)


class RawScreen:
    """Checks the raw bytes of a message.

    Args:
        user_agents: how User-Agents start (case-insensitive) whose messages are dropped and their sources
            blocked; empty for none.
        served_hosts: with `drop_unserved_addresses`: the hosts the PBX serves (domains and aliases; only
            its IP literals matter).
        drop_unserved_addresses: drop requests whose Request-URI host is an IP literal not in
            `served_hosts`.
    """

    __slots__ = ("_addresses", "_agents", "_drop_unserved")

    def __init__(
        self,
        user_agents: Iterable[str] = SCANNER_USER_AGENTS,
        *,
        served_hosts: Iterable[str] = (),
        drop_unserved_addresses: bool = False,
    ) -> None:
        self._agents = tuple(agent.strip().lower().encode("utf-8") for agent in user_agents if agent.strip())
        self._drop_unserved = drop_unserved_addresses
        self._addresses = frozenset(
            address for address in (_address_key(host) for host in served_hosts) if address is not None
        )

    @property
    def active(self) -> bool:
        """Whether any check is configured (an inactive screen need not be asked)."""
        return bool(self._agents) or self._drop_unserved

    def check(self, data: bytes) -> Verdict | None:
        """The reason to drop `data`, or None to let it through."""
        if self._agents:
            found = _USER_AGENT.search(data)
            if found is not None and found.group(1).lower().startswith(self._agents):
                return SCANNER
        if self._drop_unserved:
            host = request_host(data)
            if host is not None:
                key = _address_key(host.decode("ascii", "replace"))
                if key is not None and key not in self._addresses:
                    return UNSERVED_ADDRESS
        return None


def request_host(data: bytes) -> bytes | None:
    """The host of a request's Request-URI, as written (IPv6 in brackets), read from its first line; None for
    a response or a line that does not look like a SIP request line."""
    if data[:4] == b"SIP/":
        return None
    end = data.find(b"\n", 0, _MAX_REQUEST_LINE)
    line = data[: end if end >= 0 else _MAX_REQUEST_LINE]
    first = line.find(b" ")
    second = line.find(b" ", first + 1)
    if first <= 0 or second < 0:
        return None
    uri = line[first + 1 : second]
    colon = uri.find(b":")
    if colon < 0:
        return None
    rest = uri[colon + 1 :]
    at = rest.find(b"@")
    hostport = rest[at + 1 :]
    for stop in (b";", b"?", b">"):
        cut = hostport.find(stop)
        if cut >= 0:
            hostport = hostport[:cut]
    if hostport[:1] == b"[":
        close = hostport.find(b"]")
        return hostport[: close + 1] if close > 0 else None
    return hostport.split(b":", 1)[0]


def _address_key(host: str) -> str | None:
    """An IP literal in one spelling (IPv6 compressed, no brackets); None for a name."""
    text = host.strip().strip("[]")
    if _IPV4.fullmatch(text.encode("ascii", "replace")) is None and ":" not in text:
        return None
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return None
