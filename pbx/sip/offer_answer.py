"""SDP offer/answer (RFC 3264) over the `pbx.sip.sdp` model: answering as an endpoint, offering, relaying.

The B2BUA puts its media relay between the two ends with `rewrite_for_relay` (topology hiding); the PBX as an
endpoint (IVR, voicemail) answers with `make_answer` (one audio stream, by `negotiate` on each offered m=
line) and offers with `make_offer`. `answer_direction` maps an offered direction to the answering one.

Codec selection keeps the offer's order (RFC 3264 6.1); telephone-event and CN are not codecs: an answer
needs one other common format, and takes them only at the clock rate of a kept codec.

Like `pbx.sip.sdp`, this module knows nothing of SIP messages, RTP, ICE or SRTP. `pbx.sip.sdp` re-exports
its public names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from pbx.sip.sdp import (
    DIRECTIONS,
    Attributes,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    _first_word,
)
from pbx.sip.sdp_parser import _make_media, _make_origin, _make_session

__all__ = ["answer_direction", "make_answer", "make_offer", "negotiate", "relay_bytes", "rewrite_for_relay"]

_ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}

# Dropped by `rewrite_for_relay`: the relay speaks plain RTP with RTCP on port + 1, no ICE, no BUNDLE.
_RELAY_DROPPED = frozenset(
    {
        "rtcp-mux",
        "rtcp-mux-only",
        "candidate",
        "remote-candidates",
        "end-of-candidates",
        "ice-ufrag",
        "ice-pwd",
        "ice-options",
        "ice-lite",
        "ice-mismatch",
        "ice-pacing",
        "tool",  # the author's software, like its User-Agent (RFC 8866 6.3)
    }
)

# Session-level lines kept by `rewrite_for_relay` (bandwidth, repeat times, time zones); i=, u=, e=, p=, k=
# and unknown types may name the author, its hosts or addresses (RFC 8866 5.4-5.6, 5.12) and are dropped,
# as is every media-level line of `MediaDescription.other` (i=, k=, unknown types).
_SESSION_KEPT = frozenset("brz")

_IPV4 = re.compile(r"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9])")
_IPV6_CANDIDATE = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")


def names_address(value: str) -> bool:
    """Whether an attribute value names an IPv4 or IPv6 address (a=ssrc cname:user@10.0.0.5, a vendor's
    a=x-nat:192.168.1.2): such values would carry the author's topology past the relay."""
    if "." in value and _IPV4.search(value) is not None:
        return True
    if value.count(":") < 2:
        return False
    for candidate in _IPV6_CANDIDATE.findall(value):
        try:
            ipaddress.IPv6Address(candidate.strip(":.") if candidate.count(":") > 7 else candidate)
        except ValueError:
            continue
        return True
    return False


# Not codecs: an answer needs at least one other common format.
_AUXILIARY = frozenset({"telephone-event", "cn"})


def answer_direction(offered: str) -> str:
    """The direction that answers `offered` (RFC 3264 6.1): sendonly <-> recvonly, the others unchanged."""
    try:
        return _ANSWER_DIRECTION[offered.lower()]
    except KeyError:
        raise ValueError(f"not a direction: {offered!r}") from None


_DROP = "drop"
# Attributes whose values are never addresses (keys, fingerprints and formats look like IPv6 at times).
_RELAY_KEPT_VALUES = frozenset({"crypto", "fingerprint", "rtpmap", "fmtp", "rtcp"})


def _relay_attributes(attributes: Attributes, rtcp: str | None = None) -> Attributes:
    """`attributes` without rtcp-mux, ICE and BUNDLE; `a=rtcp` gets the value `rtcp` (`_DROP`: dropped;
    None: kept as it is). The same tuple when nothing changes."""
    out: list[tuple[str, str | None]] = []
    changed = False
    for attribute in attributes:
        name, value = attribute
        lname = name.lower()
        if (
            lname in _RELAY_DROPPED
            or (lname == "group" and _first_word(value or "")[0].upper() == "BUNDLE")
            or (lname == "rtcp" and rtcp is None)  # a session-level a=rtcp (not allowed there)
            or (value is not None and lname not in _RELAY_KEPT_VALUES and names_address(value))
        ):
            changed = True
        elif lname == "rtcp" and rtcp is not None:
            changed = True
            if rtcp is not _DROP:
                out.append((name, rtcp))
        else:
            out.append(attribute)
    return tuple(out) if changed else attributes


def rewrite_for_relay(
    sdp: SessionDescription,
    address: str,
    ports: Sequence[int | None],
    *,
    origin_username: str = "pbx",
    session_id: str | int | None = None,
    version: int | None = None,
) -> SessionDescription:
    """Put a media relay at `address` between the description's author and its receiver (topology hiding).

    For each m= line i (`ports` has one entry per m= line):

    - port 0 in `sdp` (a rejected or disabled stream) stays port 0, whatever `ports[i]`; its `c=`, if any,
      becomes ours.
    - `ports[i]` an int: the port becomes `ports[i]` (0 rejects the stream), the line's `c=` becomes ours
      (`IN IP4`/`IN IP6` by the form of `address`), except on old-style hold, where the `c=0.0.0.0` that
      applied is kept at media level so the hold reaches the other side; `a=rtcp` becomes `ports[i] + 1`.
    - `ports[i]` None: the line is left as it is and not hidden; if it used the session's `c=`, that is
      copied onto it, since the session's `c=` changes.

    Everywhere, `a=rtcp-mux`, ICE (`a=candidate`, `a=ice-*` ...) and `a=group:BUNDLE` are dropped: the relay
    speaks plain RTP on its port with RTCP on port + 1, whatever the ends negotiate between them. Direction
    attributes, codecs, fmtp, SRTP keys and other attributes pass unchanged, except what would show the
    author past the relay (topology hiding): an attribute whose value names an IP address
    (`names_address`), `a=tool`, the session lines i=, u=, e=, p=, k= and unknown ones, media-level
    i=/k=/unknown lines; the session name becomes "-". The session's `c=` becomes ours
    and the origin ours: `origin_username` at `address` with `session_id` and `version` (the originals when
    None). A B2BUA keeps one session id per leg and increments the version with each description it sends on
    that leg (RFC 3264 8).

    Raises:
        ValueError: `ports` does not have one entry per m= line, or a port is out of range.
    """
    if len(ports) != len(sdp.media):
        raise ValueError(f"{len(ports)} ports for {len(sdp.media)} m= lines")
    ours = Connection.for_address(address)
    media: list[MediaDescription] = []
    for m, port in zip(sdp.media, ports, strict=True):
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        if m.port == 0:
            attributes = _relay_attributes(m.attributes, _DROP)
            connection = ours if m.connection is not None else None
            port, port_count = 0, m.port_count
        elif port is None:
            media.append(m if m.connection is not None else m.with_connection(sdp.connection))
            continue  # not hidden (the caller asked for it)
        else:
            attributes = _relay_attributes(m.attributes, str(port + 1) if port else _DROP)
            connection = sdp.connection_for(m) if sdp.on_hold_for(m) else ours
            port_count = None
        media.append(
            _make_media(
                m.media, port, port_count, m.proto, m.formats, connection, m.bandwidths, attributes, ()
            )
        )
    origin = _make_origin(
        origin_username,
        sdp.origin.session_id if session_id is None else str(session_id),
        sdp.origin.session_version if version is None else version,
        "IN",
        ours.addr_type,
        address,
    )
    other = sdp.other
    if other:
        other = tuple(line for line in other if line[:1] in _SESSION_KEPT)
    return _make_session(
        sdp.version, origin, "-", ours, sdp.times, _relay_attributes(sdp.attributes), tuple(media), other
    )


_PLAIN_ATTRIBUTES = frozenset({"rtpmap", "fmtp", "ptime", "maxptime", *DIRECTIONS})
"""The media-level attributes of a plain description (`relay_bytes`): none that `rewrite_for_relay` drops or
changes (rtcp, ICE, BUNDLE ...), given that a ptime or maxptime value never names an address."""
_DIRECTION_NAMES = frozenset(DIRECTIONS)


def relay_bytes(
    sdp: SessionDescription,
    address: str,
    ports: Sequence[int | None],
    *,
    origin_username: str = "pbx",
    session_id: str | int | None = None,
    version: int | None = None,
) -> bytes | None:
    """`rewrite_for_relay(sdp, address, ports, ...).to_bytes()`, written straight from `sdp` when it is plain,
    else None (then `rewrite_for_relay` is the way). Most phones' descriptions are: the rewritten description
    is then the original with our origin, our `c=` (session and media level) and the relay's port, and
    building it as objects first cost more than the rest of the relaying of a body.

    Plain: the session name `-`, no session lines but v=, o=, s=, c=, t= and direction attributes, a session
    `c=` that is not a hold address, one m= line with a port, no `port/count`, no media-level `c=`, `b=` or
    other lines, and only rtpmap, fmtp, ptime, maxptime and direction attributes (a ptime or maxptime value
    that names an address, which `rewrite_for_relay` drops, is not plain); `ports` one port in range.
    """
    media = sdp.media
    if sdp.other or sdp.session_name != "-" or len(media) != 1 or len(ports) != 1:
        return None
    m, port = media[0], ports[0]
    connection = sdp.connection
    if (
        port is None
        or not 0 < port <= 65535
        or not m.port
        or m.port_count is not None
        or m.connection is not None
        or m.other
        or m.bandwidths
        or connection is None
        or connection.is_hold_address
    ):
        return None
    lines: list[str] = []
    for name, value in sdp.attributes:
        if value is not None or name.lower() not in _DIRECTION_NAMES:
            return None
        lines.append(f"a={name}")
    session_attributes = lines
    lines = []
    for name, value in m.attributes:
        lname = name.lower()
        if lname not in _PLAIN_ATTRIBUTES:
            return None
        if value is None:
            lines.append(f"a={name}")
            continue
        if lname not in _RELAY_KEPT_VALUES and names_address(value):
            return None
        lines.append(f"a={name}:{value}")
    addr_type = "IP6" if ":" in address else "IP4"  # as `Connection.for_address`
    ours = f"c=IN {addr_type} {address}"
    origin = sdp.origin
    formats = " ".join(m.formats)
    out = [
        f"v={sdp.version}",
        f"o={origin_username} {origin.session_id if session_id is None else session_id} "
        f"{origin.session_version if version is None else version} IN {addr_type} {address}",
        "s=-",
        ours,
        *[f"t={time}" for time in sdp.times],
        *session_attributes,
        f"m={m.media} {port} {m.proto} {formats}" if formats else f"m={m.media} {port} {m.proto}",
        ours,
        *lines,
        "",
    ]
    return "\r\n".join(out).encode("utf-8", "surrogateescape")


def relay_body(
    sdp: SessionDescription,
    address: str,
    ports: Sequence[int | None],
    *,
    origin_username: str = "pbx",
    session_id: str | int | None = None,
    version: int | None = None,
) -> bytes:
    """The body `rewrite_for_relay` makes, as bytes: written at once for a plain description (`relay_bytes`),
    through the rewritten description otherwise."""
    plain = relay_bytes(
        sdp, address, ports, origin_username=origin_username, session_id=session_id, version=version
    )
    if plain is not None:
        return plain
    rewritten = rewrite_for_relay(
        sdp, address, ports, origin_username=origin_username, session_id=session_id, version=version
    )
    return rewritten.to_bytes()


def _wanted(supported: Sequence[str]) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    for entry in supported:
        name, _, rate = entry.partition("/")
        out.append((name.lower(), int(rate.split("/")[0]) if rate else None))
    return out


def negotiate(
    offer: MediaDescription,
    supported: Sequence[str],
    *,
    port: int | None = None,
    connection: Connection | None = None,
    ptime: int | None = None,
    offered_direction: str | None = None,
    protos: Sequence[str] = ("RTP/AVP",),
) -> MediaDescription | None:
    """Answer one offered stream as an endpoint supporting `supported` encodings (RFC 3264 6.1).

    Args:
        offer: the offered m= block.
        supported: encoding names ("PCMU", "PCMA", "telephone-event"), optionally with a clock rate
            ("G722/8000"); matched case-insensitively.
        port: the answer's port (the offer's when None).
        connection: the answer's media-level `c=` (None: the session's).
        ptime: an `a=ptime` for the answer, none when None.
        offered_direction: the direction that applies to the offer when it differs from the block's own
            attribute (session-level attribute, old-style hold); see `SessionDescription.direction_for`.
        protos: transport protocols accepted (plain RTP/AVP: no SRTP, no feedback).

    Returns:
        The answer's m= block: the offered formats whose encoding is supported, in the offer's order, with
        their rtpmap and fmtp lines; telephone-event and CN only at the clock rate of a kept codec; then
        `a=ptime` and the answering direction. None when the stream is disabled (port 0), uses another
        protocol, or has no supported codec besides telephone-event/CN (the caller rejects it, or answers
        488 when no stream is left).
    """
    if offer.port == 0 or offer.proto.upper() not in {p.upper() for p in protos}:
        return None
    wanted = _wanted(supported)
    rtpmap = offer.rtpmap

    def supported_format(fmt: str) -> bool:
        found = rtpmap.get(fmt)
        return found is not None and any(
            found.encoding.lower() == name and rate in (None, found.clock_rate) for name, rate in wanted
        )

    candidates = [f for f in offer.formats if supported_format(f)]
    codec_rates = {rtpmap[f].clock_rate for f in candidates if rtpmap[f].encoding.lower() not in _AUXILIARY}
    if not codec_rates:
        return None
    formats = [
        f
        for f in dict.fromkeys(candidates)
        if rtpmap[f].encoding.lower() not in _AUXILIARY or rtpmap[f].clock_rate in codec_rates
    ]
    fmtp = offer.fmtp
    attributes: list[tuple[str, str | None]] = [("rtpmap", f"{f} {rtpmap[f]}") for f in formats]
    attributes += [("fmtp", f"{f} {fmtp[f]}") for f in formats if f in fmtp]
    if ptime is not None:
        attributes.append(("ptime", str(ptime)))
    attributes.append((answer_direction(offered_direction or offer.direction), None))
    return MediaDescription(
        media=offer.media,
        port=offer.port if port is None else port,
        proto=offer.proto,
        formats=tuple(formats),
        connection=connection,
        attributes=tuple(attributes),
    )


def make_offer(
    address: str,
    port: int,
    codecs: Sequence[tuple[int, str, int]],
    *,
    session_id: str | int,
    version: int,
    direction: str = "sendrecv",
    ptime: int | None = 20,
    origin_username: str = "pbx",
    session_name: str = "-",
) -> SessionDescription:
    """An offer of one RTP/AVP audio stream at `address`:`port` with `codecs` as (payload type, encoding,
    clock rate), in order of preference. telephone-event gets `a=fmtp:<pt> 0-16`."""
    if direction not in DIRECTIONS:
        raise ValueError(f"not a direction: {direction!r}")
    attributes: list[tuple[str, str | None]] = [
        ("rtpmap", f"{pt} {name}/{rate}") for pt, name, rate in codecs
    ]
    attributes += [("fmtp", f"{pt} 0-16") for pt, name, _ in codecs if name.lower() == "telephone-event"]
    if ptime is not None:
        attributes.append(("ptime", str(ptime)))
    attributes.append((direction, None))
    media = MediaDescription(
        media="audio",
        port=port,
        proto="RTP/AVP",
        formats=tuple(str(pt) for pt, _, _ in codecs),
        attributes=tuple(attributes),
    )
    return SessionDescription(
        origin=Origin.for_address(address, str(session_id), version, origin_username),
        session_name=session_name,
        connection=Connection.for_address(address),
        media=(media,),
    )


def _sends_only(direction: str) -> str:
    """The offerer's direction once it has asked, by `c=0.0.0.0`, to receive nothing."""
    return {"sendrecv": "sendonly", "recvonly": "inactive"}.get(direction, direction)


def make_answer(
    offer: SessionDescription,
    address: str,
    port: int,
    supported: Sequence[str],
    *,
    session_id: str | int | None = None,
    version: int = 0,
    ptime: int | None = 20,
    origin_username: str = "pbx",
) -> SessionDescription | None:
    """The answer of an endpoint with one audio stream at `address`:`port` (RFC 3264 6).

    The first offered audio stream that `negotiate` accepts gets `port`; every other m= line is rejected
    with port 0 (same media, protocol and formats), so the answer has the offer's m= lines in the offer's
    order. The answer's `t=` equals the offer's. `session_id` defaults to the offer's; pass a larger
    `version` for each later answer in the same session.

    Returns:
        The answer, or None when no audio stream can be accepted (answer 488).
    """
    answered: list[MediaDescription] = []
    accepted = False
    for m in offer.media:
        answer: MediaDescription | None = None
        if not accepted and m.media.lower() == "audio":
            offered = offer.direction_for(m)
            if offer.on_hold_for(m):
                offered = _sends_only(offered)
            answer = negotiate(m, supported, port=port, ptime=ptime, offered_direction=offered)
        if answer is None:
            answer = MediaDescription(media=m.media, port=0, proto=m.proto, formats=m.formats)
        else:
            accepted = True
        answered.append(answer)
    if not accepted:
        return None
    return SessionDescription(
        origin=Origin.for_address(
            address,
            offer.origin.session_id if session_id is None else str(session_id),
            version,
            origin_username,
        ),
        session_name="-",
        connection=Connection.for_address(address),
        times=offer.times,
        media=tuple(answered),
    )
