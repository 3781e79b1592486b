"""The SDP parser behind `pbx.sip.sdp.SessionDescription.parse`, and the fast constructors of that module's
values (for this parser and `pbx.sip.offer_answer`).

One pass over the lines, with the strictness and limits that `pbx.sip.sdp` documents (`v=` first, exactly one
`o=` and `s=`, at least one `t=`, well-formed `o=`, `c=`, `t=` and `m=` lines, `MAX_MEDIA_DESCRIPTIONS`).
The common tokens (IN IP4/IP6, audio, RTP/AVP, payload types 0..127, `t=0 0`) are checked without regexes,
and values are made by setting their slots directly: a B2BUA parses, rewrites and writes two descriptions per
call.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from pbx.sip.sdp import (
    _MEDIA_RANK,
    _NUMBER,
    _SESSION_RANK,
    _UNKNOWN_RANK,
    DIRECTIONS,
    MAX_MEDIA_DESCRIPTIONS,
    Attributes,
    Connection,
    MediaDescription,
    Origin,
    SdpError,
    SdpTooLarge,
    SessionDescription,
    _show,
)

__all__ = ["parse_description"]

_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_PROTO = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+(/[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)*")
_BLANKS = re.compile(r"[ \t]+")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")  # the line types (RFC 8866 9)


# -- parsing ---------------------------------------------------------------------------------------------


def _fields(value: str) -> list[str]:
    value = value.strip(" \t")
    if "\t" not in value and "  " not in value:
        return value.split(" ") if value else []  # the usual single spaces: no regex
    return _BLANKS.split(value)


def _is_number(text: str) -> bool:
    """`_NUMBER.fullmatch(text)`, without the regex: 1 to 20 ASCII digits."""
    return text.isdigit() and text.isascii() and len(text) <= 20


def _ranked(other: list[str], ranks: dict[str, int]) -> tuple[str, ...]:
    if not other:
        return ()
    return tuple(sorted(other, key=lambda line: ranks.get(line[:1], _UNKNOWN_RANK)))


def parse_description(text: str) -> SessionDescription:
    """The `SessionDescription` of an SDP body: one pass over the lines, session-level lines until the first
    m=, then m= blocks."""
    lines = [line for raw in text.split("\n") if (line := raw.rstrip(" \t\r"))]
    if not lines:
        raise SdpError("empty session description")
    if not lines[0].startswith("v="):
        if any(line.startswith("v=") for line in lines):
            raise SdpError("v= must be the first line")
        raise SdpError("missing v= line")
    version: int | None = None
    origin: Origin | None = None
    session_name: str | None = None
    connection: Connection | None = None
    times: list[str] = []
    session_attributes: list[tuple[str, str | None]] = []
    attributes = session_attributes  # where a= lines go: the m= block's list from the first m= line on
    other: list[str] = []
    media: list[MediaDescription] = []
    # The m= block being read: its head (media, port, port count, proto, formats) and its lines.
    head: tuple[Any, ...] | None = None
    m_connection: Connection | None = None
    m_bandwidths: list[str] = []
    m_other: list[str] = []
    letters, shared = _LETTERS, _SHARED
    for line in lines:
        kind = line[0]
        if line[1:2] != "=" or kind not in letters:
            raise SdpError(f"bad line: {_show(line)}")
        value = line[2:]
        if kind == "a":  # to the session's or the m= block's list
            pair = shared.get(value)
            if pair is None:
                name, colon, rest = value.partition(":")
                if not name:
                    raise SdpError(f"bad a= line: {_show(line)}")
                pair = (name, rest if colon else None)
                if name in _SHARED_ATTRIBUTES:
                    if len(shared) >= _MAX_SHARED:
                        shared.clear()
                    shared[value] = pair
            attributes.append(pair)
        elif kind == "m":
            if head is not None:
                media.append(_media_of(head, m_connection, m_bandwidths, attributes, m_other))
            if len(media) >= MAX_MEDIA_DESCRIPTIONS:
                raise SdpTooLarge(f"more than {MAX_MEDIA_DESCRIPTIONS} m= lines")
            head = _parse_media(value, line)
            m_connection, m_bandwidths, attributes, m_other = None, [], [], []
        elif head is not None:  # inside an m= block
            if kind == "c":
                if m_connection is not None:
                    raise SdpError(f"more than one c= line in a media description: {_show(line)}")
                m_connection = _parse_connection(value, line)
            elif kind == "b":
                m_bandwidths.append(value)
            elif kind in "vost":
                raise SdpError(f"{kind}= line inside a media description: {_show(line)}")
            else:
                m_other.append(line)
        elif kind == "t":
            if value == "0 0":
                times.append(value)
            else:
                parts = _fields(value)
                if len(parts) != 2 or not all(_NUMBER.fullmatch(p) for p in parts):
                    raise SdpError(f"bad t= line: {_show(line)}")
                times.append(" ".join(parts))
        elif kind == "v":
            if version is not None:
                raise SdpError("more than one v= line")
            if value != "0" and not _NUMBER.fullmatch(value.strip(" \t")):
                raise SdpError(f"bad v= line: {_show(line)}")
            version = int(value)
        elif kind == "o":
            if origin is not None:
                raise SdpError("more than one o= line")
            origin = _parse_origin(value, line)
        elif kind == "s":
            if session_name is not None:
                raise SdpError("more than one s= line")
            session_name = value
        elif kind == "c":
            if connection is not None:
                raise SdpError("more than one c= line")
            connection = _parse_connection(value, line)
        else:
            other.append(line)
    if head is not None:
        media.append(_media_of(head, m_connection, m_bandwidths, attributes, m_other))
    if origin is None:
        raise SdpError("missing o= line")
    if session_name is None:
        raise SdpError("missing s= line")
    if not times:
        raise SdpError("missing t= line")
    return _make_session(
        version,  # type: ignore[arg-type]  # set: v= is the first line
        origin,
        session_name,
        connection,
        tuple(times),
        tuple(session_attributes),
        tuple(media),
        _ranked(other, _SESSION_RANK),
    )


# a= lines that every call repeats (codecs, directions) are parsed once and their (name, value) pairs shared
# between descriptions (immutable): less work, and about 100 bytes less per line of a description a call
# keeps. Never lines that are unique to a call (a=rtcp ports, ICE, SRTP keys).
_SHARED_ATTRIBUTES = frozenset(
    {
        "rtpmap",
        "fmtp",
        "ptime",
        "maxptime",
        "rtcp-mux",
        "rtcp-fb",
        "rtcp-rsize",
        "extmap",
        "silenceSupp",
        *DIRECTIONS,
    }
)
_SHARED: dict[str, tuple[str, str | None]] = {}
_MAX_SHARED = 1024


def _media_of(
    head: tuple[Any, ...],
    connection: Connection | None,
    bandwidths: list[str],
    attributes: list[tuple[str, str | None]],
    other: list[str],
) -> MediaDescription:
    media, port, port_count, proto, formats = head
    return _make_media(
        media,
        port,
        port_count,
        proto,
        formats,
        connection,
        tuple(bandwidths),
        tuple(attributes),
        _ranked(other, _MEDIA_RANK),
    )


def _parse_origin(value: str, line: str) -> Origin:
    parts = _fields(value)
    if len(parts) != 6 or not _is_number(parts[2]):
        raise SdpError(f"bad o= line: {_show(line)}")
    username, session_id, version, net_type, addr_type, address = parts
    return _make_origin(username, session_id, int(version), net_type, addr_type, address)


def _parse_connection(value: str, line: str) -> Connection:
    parts = _fields(value)
    if len(parts) != 3:
        raise SdpError(f"bad c= line: {_show(line)}")
    net_type, addr_type, address = parts
    if not (net_type == "IN" and addr_type in _ADDRESS_TYPES) and not (
        _TOKEN.fullmatch(net_type) and _TOKEN.fullmatch(addr_type)
    ):
        raise SdpError(f"bad c= line: {_show(line)}")
    return _make_connection(net_type, addr_type, address)


def _parse_media(value: str, line: str) -> tuple[Any, ...]:
    parts = _fields(value)
    if len(parts) < 3:
        raise SdpError(f"bad m= line: too few fields: {_show(line)}")
    media, port_text, proto, *formats = parts
    if media not in _COMMON_MEDIA and not _TOKEN.fullmatch(media):
        raise SdpError(f"bad m= line: bad media type: {_show(line)}")
    port, slash, count = port_text.partition("/")
    if not _is_port(port) or (slash and not _is_port(count)):
        raise SdpError(f"bad m= line: bad port: {_show(line)}")
    number = int(port)
    if number > 65535:
        raise SdpError(f"bad m= line: port out of range: {_show(line)}")
    rtp = _COMMON_PROTOS.get(proto)
    if rtp is None:
        if not _PROTO.fullmatch(proto):
            raise SdpError(f"bad m= line: bad protocol: {_show(line)}")
        rtp = "RTP/" in proto.upper()
    for fmt in formats:
        if rtp:
            if fmt not in _RTP_PAYLOAD_TYPES:
                raise SdpError(f"bad m= line: bad payload type {fmt!r}: {_show(line)}")
        elif not _TOKEN.fullmatch(fmt):
            raise SdpError(f"bad m= line: bad format {fmt!r}: {_show(line)}")
    return media, number, int(count) if slash else None, proto, tuple(formats)


def _is_port(text: str) -> bool:
    """`_PORT.fullmatch(text)`: 1 to 5 ASCII digits."""
    return text.isdigit() and text.isascii() and len(text) <= 5


_ADDRESS_TYPES = frozenset({"IP4", "IP6"})
_COMMON_MEDIA = frozenset({"audio", "video", "image", "text", "application", "message"})  # all tokens
_COMMON_PROTOS = {  # all match _PROTO; whether they are RTP based ("RTP/" in the upper-cased name)
    proto: "RTP/" in proto.upper()
    for proto in (
        "RTP/AVP",
        "RTP/SAVP",
        "RTP/AVPF",
        "RTP/SAVPF",
        "UDP/TLS/RTP/SAVP",
        "UDP/TLS/RTP/SAVPF",
        "udptl",
        "UDP",
    )
}
# RFC 3551 payload types as an m= line may write them: 1 to 3 digits, at most 127 ("0", "08", "101").
_RTP_PAYLOAD_TYPES = frozenset(
    text for width in (1, 2, 3) for n in range(128) if len(text := str(n).zfill(width)) == width
)


# -- fast construction -------------------------------------------------------------------------------------
# The parser and the offer/answer helpers make values whose fields are already in normal form (tuples, `other`
# ranked, addresses non-empty): they set the slots directly, without the dataclass __init__ and
# __post_init__, which cost three times as much (a B2BUA makes about 16 of these per call).


def _slot_setters(cls: type) -> tuple[Any, ...]:
    return tuple(getattr(cls, f.name).__set__ for f in fields(cls))


_new = object.__new__
_SESSION_SLOTS = _slot_setters(SessionDescription)
_MEDIA_SLOTS = _slot_setters(MediaDescription)
_ORIGIN_SLOTS = _slot_setters(Origin)
_CONNECTION_SLOTS = _slot_setters(Connection)


def _make_session(
    version: int,
    origin: Origin,
    session_name: str,
    connection: Connection | None,
    times: tuple[str, ...],
    attributes: Attributes,
    media: tuple[MediaDescription, ...],
    other: tuple[str, ...],
) -> SessionDescription:
    """A `SessionDescription` of field values in normal form."""
    obj = _new(SessionDescription)
    set_version, set_origin, set_name, set_connection, set_times, set_attributes, set_media, set_other = (
        _SESSION_SLOTS
    )
    set_version(obj, version)
    set_origin(obj, origin)
    set_name(obj, session_name)
    set_connection(obj, connection)
    set_times(obj, times)
    set_attributes(obj, attributes)
    set_media(obj, media)
    set_other(obj, other)
    return obj


def _make_media(
    media: str,
    port: int,
    port_count: int | None,
    proto: str,
    formats: tuple[str, ...],
    connection: Connection | None,
    bandwidths: tuple[str, ...],
    attributes: Attributes,
    other: tuple[str, ...],
) -> MediaDescription:
    """A `MediaDescription` of field values in normal form (`other` ranked)."""
    obj = _new(MediaDescription)
    (
        set_media,
        set_port,
        set_port_count,
        set_proto,
        set_formats,
        set_connection,
        set_bandwidths,
        set_attributes,
        set_other,
    ) = _MEDIA_SLOTS
    set_media(obj, media)
    set_port(obj, port)
    set_port_count(obj, port_count)
    set_proto(obj, proto)
    set_formats(obj, formats)
    set_connection(obj, connection)
    set_bandwidths(obj, bandwidths)
    set_attributes(obj, attributes)
    set_other(obj, other)
    return obj


def _make_origin(
    username: str, session_id: str, session_version: int, net_type: str, addr_type: str, address: str
) -> Origin:
    """An `Origin` with a non-empty address."""
    obj = _new(Origin)
    set_username, set_session_id, set_session_version, set_net_type, set_addr_type, set_address = (
        _ORIGIN_SLOTS
    )
    set_username(obj, username)
    set_session_id(obj, session_id)
    set_session_version(obj, session_version)
    set_net_type(obj, net_type)
    set_addr_type(obj, addr_type)
    set_address(obj, address)
    return obj


def _make_connection(net_type: str, addr_type: str, address: str) -> Connection:
    """A `Connection` with a non-empty address."""
    obj = _new(Connection)
    set_net_type, set_addr_type, set_address = _CONNECTION_SLOTS
    set_net_type(obj, net_type)
    set_addr_type(obj, addr_type)
    set_address(obj, address)
    return obj
