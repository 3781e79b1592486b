"""What an outbound call through a trunk looks like on the wire: its Request-URI and next hops, the caller ID
it presents, the credentials it answers the carrier's challenges with, and the codecs it offers.

- `request_uri`: ``sip:NUMBER@HOST[:PORT][;transport=T]`` (RFC 3261 19.1.1); `next_hops` are the URIs located
  by RFC 3263 in order: the outbound proxy (also a loose ``Route``, RFC 3261 16.12), else the trunk's
  explicit proxies, else none (the Request-URI itself is located).
- `presentation` + `identity_headers`: the From of the call, ``P-Asserted-Identity`` (RFC 3325 9.1) when the
  trunk sends it, and for a withheld number an anonymous From and ``Privacy: id`` (RFC 3323 4.1.1.3, RFC 3325
  9.3). The carrier is trusted with the real identity in PAI and asked not to pass it on.
- `trunk_credentials`: the trunk's digest credentials as a `CredentialLookup` (RFC 3261 22.2).
- `offer_for_trunk`: the caller's (relayed) offer cut down to the trunk's codecs in the trunk's order
  (RFC 3264 5: the offerer's order is its preference); None when no codec is common. This is the seam for
  transcoding: a codec the PBX can convert to (G.711 mu-law <-> A-law) may be added here later.

It knows nothing of calls, dialogs or the config: `settings.TrunkSettings` is what it needs of a trunk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pbx.sip.client_auth import CredentialLookup, Credentials
from pbx.sip.headers import quote_string
from pbx.sip.sdp import SdpError, SessionDescription
from pbx.trunks.settings import TrunkSettings

PHONE_NUMBER = re.compile(r"\+?[0-9]{1,32}")
"""A number a trunk may present or dial: digits with an optional leading '+'."""

ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>'
"""The From of a call whose number is withheld (RFC 3323 4.1.1.3)."""

_AUXILIARY = frozenset({"telephone-event", "cn"})


@dataclass(frozen=True, slots=True)
class Presentation:
    """The caller ID one trunk call presents.

    Attributes:
        number: The number (From user and P-Asserted-Identity), digits with an optional '+'; "" for none.
        name: The display name, "" for none.
        withheld: The caller asked for privacy: From is anonymous and ``Privacy: id`` is sent.
    """

    number: str
    name: str = ""
    withheld: bool = False


def trunk_domain(trunk: TrunkSettings) -> str:
    """The domain of the trunk's URIs: its host, else the host of its first proxy."""
    if trunk.host:
        return trunk.host
    first = trunk.proxies[0] if trunk.proxies else ""
    if first.startswith("["):
        return first[: first.find("]") + 1]
    return first.rsplit(":", 1)[0] if first.count(":") == 1 else first


def _transport_param(trunk: TrunkSettings) -> str:
    return f";transport={trunk.transport}" if trunk.transport else ""


def request_uri(trunk: TrunkSettings, number: str) -> str:
    """The Request-URI (and To) of a call to `number` through `trunk`."""
    port = f":{trunk.port}" if trunk.port and trunk.host else ""
    user = number.replace("#", "%23")  # '#' is not allowed unescaped in a user part (RFC 3261 25.1)
    return f"sip:{user}@{trunk_domain(trunk)}{port}{_transport_param(trunk)}"


def next_hops(trunk: TrunkSettings) -> tuple[str, ...]:
    """The URIs whose RFC 3263 targets take the INVITE, in order; () to locate the Request-URI."""
    if trunk.outbound_proxy:
        return (f"sip:{trunk.outbound_proxy}{_transport_param(trunk)}",)
    return tuple(f"sip:{proxy}{_transport_param(trunk)}" for proxy in trunk.proxies)


def route_headers(trunk: TrunkSettings) -> tuple[tuple[str, str], ...]:
    """A loose Route through the outbound proxy (RFC 3261 16.12), or none."""
    if not trunk.outbound_proxy:
        return ()
    return (("Route", f"<sip:{trunk.outbound_proxy}{_transport_param(trunk)};lr>"),)


def presentation(
    trunk: TrunkSettings,
    *,
    callerid: str | None,
    callername: str | None,
    extension: str,
    name: str,
    withheld: bool,
) -> Presentation:
    """Who a call through `trunk` says it is from.

    The number: the trunk's ``caller_id``, else the dial's ``callerid=`` when it is a phone number, else the
    caller's extension number. The name: the trunk's ``caller_id_name``, else ``callername=``, else a
    ``callerid=`` that is not a number (the display name, as on calls to phones), else the caller's name.
    """
    numeric = callerid is not None and PHONE_NUMBER.fullmatch(callerid) is not None
    number = trunk.caller_id or (callerid if numeric and callerid else "") or extension
    if callername is None and callerid is not None and not numeric:
        callername = callerid
    shown = trunk.caller_id_name or (callername if callername is not None else name)
    return Presentation(number, shown, withheld)


def identity_headers(trunk: TrunkSettings, who: Presentation) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The From value (without its tag) and the identity headers of a call presenting `who`."""
    domain = trunk_domain(trunk)
    user = who.number or "anonymous"
    identity = f"<sip:{user}@{domain}>"
    if who.name:
        identity = f"{quote_string(who.name)} {identity}"
    headers: list[tuple[str, str]] = []
    if trunk.send_pai and who.number:
        headers.append(("P-Asserted-Identity", identity))
    if who.withheld:
        headers.append(("Privacy", "id"))
        return ANONYMOUS_FROM, tuple(headers)
    return identity, tuple(headers)


def trunk_credentials(trunk: TrunkSettings) -> CredentialLookup | None:
    """The trunk's credentials for the realms it answers (its ``realm``, or any when ""); None without a
    password (a challenge then fails the call)."""
    if not trunk.password or not trunk.auth_user:
        return None
    credentials = Credentials(trunk.auth_user, trunk.password)
    realm = trunk.realm
    return lambda asked: credentials if not realm or asked == realm else None


def offer_for_trunk(body: bytes, codecs: Sequence[str]) -> bytes | None:
    """The offer `body` with its first active audio stream cut down to `codecs` (encoding names, any case),
    in the order of `codecs`; `body` unchanged when `codecs` is empty or holds "*".

    Returns:
        The new offer, or None when no codec (other than telephone-event and CN) of `codecs` is offered.
    """
    if not codecs or "*" in codecs:
        return body
    try:
        sdp = SessionDescription.parse(body)
    except SdpError:
        return None
    wanted = [c.lower() for c in codecs]
    media = list(sdp.media)
    for i, m in enumerate(media):
        if m.media.lower() != "audio" or not m.port:
            continue
        rtpmap = m.rtpmap
        names = {f: rtpmap[f].encoding.lower() for f in m.formats if f in rtpmap}
        kept = [f for codec in wanted for f in m.formats if names.get(f) == codec]
        if not any(names[f] not in _AUXILIARY for f in kept):
            return None
        if tuple(kept) == m.formats:
            return body  # already the trunk's codecs in its order: nothing to rewrite
        media[i] = m.with_formats(kept)
        return sdp.with_media(tuple(media)).to_bytes()
    return None
