"""SDP session descriptions (RFC 8866, formerly RFC 4566): the model, its parser and its writer.

Descriptions are immutable values: `SessionDescription.parse` reads a body, `to_bytes()` (or `bytes()`)
writes it back with CRLF lines in the order of RFC 8866 5 (v o s i u e p c b t r z k a, then each m= block
as m i c b k a), and `parse(bytes(x)) == x` for every value. Change them with the `with_*`/`replace`
methods. The parser is liberal where real stacks differ (LF-only line ends, trailing blanks, blank lines,
`s=` left empty, lines in the wrong order, unknown line types, which are kept verbatim in `other`) and strict
where a wrong guess would misroute media: `v=` first, exactly one `o=` and `s=`, at least one `t=`, and
well-formed `o=`, `c=`, `t=` and `m=` lines (ports 0..65535, RTP payload types 0..127). It is bounded:
a body over `MAX_SDP_SIZE` bytes or with more than `MAX_MEDIA_DESCRIPTIONS` m= lines is refused whole
(`SdpTooLarge`, an `SdpError`) before anything of it is used.

Values built by hand are trusted, not validated: keep CR, LF and spaces out of tokens. Repeat times (`r=`)
are kept in `other` and written after all `t=` lines, so with several `t=` lines they lose which one they
belonged to (SIP uses a single `t=0 0`).

The offer/answer helpers (RFC 3264: `negotiate`, `make_offer`, `make_answer`, `answer_direction`,
`rewrite_for_relay`) live in `pbx.sip.offer_answer`, which builds on this module; the parser itself in
`pbx.sip.sdp_parser`.

This module knows nothing of SIP messages, RTP, ICE, SRTP or multicast: attribute values other than rtpmap,
fmtp, rtcp, ptime and the direction are opaque text.
It imports no other module of the project at load time (`pbx.sip.sdp_parser` when first parsing).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, Self


def replace(obj: Any, /, **changes: Any) -> Any:
    """`dataclasses.replace` for this module's dataclasses, without looking their fields up every time (a
    B2BUA rewrites two descriptions per call)."""
    cls = type(obj)
    names = _INIT_FIELDS.get(cls)
    if names is None:
        names = _INIT_FIELDS[cls] = tuple(f.name for f in fields(cls) if f.init)
    for name in names:
        if name not in changes:
            changes[name] = getattr(obj, name)
    return cls(**changes)


_INIT_FIELDS: dict[type, tuple[str, ...]] = {}

__all__ = [
    "DIRECTIONS",
    "STATIC_PAYLOAD_TYPES",
    "Attributes",
    "Connection",
    "MediaDescription",
    "Origin",
    "MAX_MEDIA_DESCRIPTIONS",
    "MAX_SDP_SIZE",
    "RtpMap",
    "SdpError",
    "SdpTooLarge",
    "SessionDescription",
]

Attributes = tuple[tuple[str, str | None], ...]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# RFC 3264 8.4: the old way to put a stream on hold ("::" is its IPv6 reading by some stacks).
_HOLD_ADDRESSES = ("0.0.0.0", "::")

_PORT = re.compile(r"[0-9]{1,5}")
_NUMBER = re.compile(r"[0-9]{1,20}")

# Where lines kept in `other` are written: session lines of rank < 4 before c=, rank 4 (b=) after it, the
# rest after t=; in a media block, i= before c= and everything else after b=.
_SESSION_RANK = {"i": 0, "u": 1, "e": 2, "p": 3, "b": 4, "r": 5, "z": 6, "k": 7}
_MEDIA_RANK = {"i": 0, "k": 7}
_UNKNOWN_RANK = 8


MAX_SDP_SIZE = 32768
"""The largest body `SessionDescription.parse` reads, in bytes (a WebRTC offer with ICE candidates is a few
kilobytes; a SIP message over UDP is at most 65,535)."""

MAX_MEDIA_DESCRIPTIONS = 64
"""The most m= lines `SessionDescription.parse` accepts: a description with thousands of them is refused
whole, never half-parsed or forwarded."""


class SdpError(ValueError):
    """A body that is not a well-formed session description; the message says which line is wrong."""


class SdpTooLarge(SdpError):
    """A body over `MAX_SDP_SIZE` bytes or with more than `MAX_MEDIA_DESCRIPTIONS` m= lines (the message
    echoes none of it)."""


@dataclass(frozen=True, slots=True)
class RtpMap:
    """An RTP payload format (`a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`, RFC 8866 6.6)."""

    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, text: str) -> RtpMap:
        """Parse `PCMU/8000` or `opus/48000/2`."""
        parts = text.strip().split("/")
        if not 2 <= len(parts) <= 3 or not parts[0] or not all(_NUMBER.fullmatch(p) for p in parts[1:]):
            raise SdpError(f"bad rtpmap: {_show(text)}")
        return cls(parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None)

    def __str__(self) -> str:
        channels = "" if self.channels is None else f"/{self.channels}"
        return f"{self.encoding}/{self.clock_rate}{channels}"


# RFC 3551 6: payload types that need no a=rtpmap.
STATIC_PAYLOAD_TYPES: dict[str, RtpMap] = {
    "0": RtpMap("PCMU", 8000),
    "3": RtpMap("GSM", 8000),
    "4": RtpMap("G723", 8000),
    "5": RtpMap("DVI4", 8000),
    "6": RtpMap("DVI4", 16000),
    "7": RtpMap("LPC", 8000),
    "8": RtpMap("PCMA", 8000),
    "9": RtpMap("G722", 8000),
    "10": RtpMap("L16", 44100, 2),
    "11": RtpMap("L16", 44100),
    "12": RtpMap("QCELP", 8000),
    "13": RtpMap("CN", 8000),
    "14": RtpMap("MPA", 90000),
    "15": RtpMap("G728", 8000),
    "16": RtpMap("DVI4", 11025),
    "17": RtpMap("DVI4", 22050),
    "18": RtpMap("G729", 8000),
    "25": RtpMap("CelB", 90000),
    "26": RtpMap("JPEG", 90000),
    "28": RtpMap("nv", 90000),
    "31": RtpMap("H261", 90000),
    "32": RtpMap("MPV", 90000),
    "33": RtpMap("MP2T", 90000),
    "34": RtpMap("H263", 90000),
}


_RTPMAPS: dict[str, RtpMap | None] = {}  # rtpmap text -> its value (None: malformed), bounded
_MAX_RTPMAPS = 512


def _rtpmap(text: str) -> RtpMap | None:
    """`RtpMap.parse(text)`, None when malformed; the few encodings phones use are parsed once."""
    try:
        return _RTPMAPS[text]
    except KeyError:
        pass
    try:
        found: RtpMap | None = RtpMap.parse(text)
    except SdpError:
        found = None
    if len(_RTPMAPS) >= _MAX_RTPMAPS:
        _RTPMAPS.clear()
    _RTPMAPS[text] = found
    return found


def _address_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


@dataclass(frozen=True, slots=True)
class Origin:
    """The `o=` line (RFC 8866 5.2): who made the description, and which version of it this is.

    `session_version` must grow with each new description a party sends in a session (RFC 3264 8).
    `address` is required (its default only keeps the field order of the wire).
    """

    username: str
    session_id: str
    session_version: int
    net_type: str = "IN"
    addr_type: str = "IP4"
    address: str = ""

    def __post_init__(self) -> None:
        if not self.address:
            raise ValueError("Origin needs an address")

    @classmethod
    def for_address(
        cls, address: str, session_id: str, session_version: int, username: str = "pbx"
    ) -> Origin:
        """An `IN IP4` or `IN IP6` origin, by the form of `address`."""
        return cls(username, session_id, session_version, "IN", _address_type(address), address)

    def replace(self, **changes: Any) -> Origin:
        return replace(self, **changes)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.net_type} {self.addr_type} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """A `c=` line (RFC 8866 5.7). A multicast `/ttl/count` suffix stays part of `address`.

    `address` is required (its default only keeps the field order of the wire).
    """

    net_type: str = "IN"
    addr_type: str = "IP4"
    address: str = ""

    def __post_init__(self) -> None:
        if not self.address:
            raise ValueError("Connection needs an address")

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """`IN IP4 <address>` or `IN IP6 <address>`, by the form of `address`."""
        return cls("IN", _address_type(address), address)

    @property
    def host(self) -> str:
        """The address without a multicast `/ttl` or `/count` suffix."""
        return self.address.split("/", 1)[0]

    @property
    def is_hold_address(self) -> bool:
        """True for `0.0.0.0` (or `::`): the RFC 2543 way of putting a stream on hold."""
        return self.host in _HOLD_ADDRESSES

    def replace(self, **changes: Any) -> Connection:
        return replace(self, **changes)

    def __str__(self) -> str:
        return f"{self.net_type} {self.addr_type} {self.address}"


def _has(attributes: Attributes, name: str) -> bool:
    lname = name.lower()
    return any(n.lower() == lname for n, _ in attributes)


def _values(attributes: Attributes, name: str) -> list[str]:
    lname = name.lower()
    return [v for n, v in attributes if n.lower() == lname and v is not None]


def _first_value(attributes: Attributes, name: str) -> str | None:
    lname = name.lower()
    for n, v in attributes:
        if v is not None and n.lower() == lname:
            return v
    return None


def _without(attributes: Attributes, names: Iterable[str]) -> Attributes:
    lnames = {n.lower() for n in names}
    return tuple(a for a in attributes if a[0].lower() not in lnames)


def _direction_of(attributes: Attributes) -> str | None:
    for name, _ in attributes:
        if name.lower() in DIRECTIONS:
            return name.lower()
    return None


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if _NUMBER.fullmatch(text):
        return int(text)
    try:
        return round(float(text))  # "20.0" from a few stacks
    except (ValueError, OverflowError):
        return None


def _first_word(value: str) -> tuple[str, str]:
    first, _, rest = value.strip().partition(" ")
    return first, rest.strip()


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One `m=` block (RFC 8866 5.14) with its `c=`, `b=` and `a=` lines.

    Attributes:
        media: "audio", "video", "image" ...
        port: the transport port, 0 for a disabled (rejected) stream.
        port_count: the `/<number of ports>` suffix, None when absent.
        proto: "RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "udptl" ...
        formats: payload types (strings, "0", "101") for RTP protocols, opaque tokens otherwise.
        connection: this block's own `c=` line, None to use the session's (see
            `SessionDescription.connection_for`).
        bandwidths: `b=` values ("AS:64") in order.
        attributes: `a=` lines as (name, value), value None for a flag such as `sendrecv`.
        other: any other lines (`i=`, `k=`, unknown types) verbatim, with their `x=` prefix.
    """

    media: str
    port: int
    port_count: int | None = None
    proto: str = "RTP/AVP"
    formats: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[str, ...] = ()
    attributes: Attributes = ()
    other: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(self.formats))
        object.__setattr__(self, "bandwidths", tuple(self.bandwidths))
        object.__setattr__(self, "attributes", tuple(map(tuple, self.attributes)))  # pairs, as tuples
        if self.other:
            ranked = sorted(self.other, key=lambda line: _MEDIA_RANK.get(line[:1], _UNKNOWN_RANK))
            object.__setattr__(self, "other", tuple(ranked))
        else:
            object.__setattr__(self, "other", ())

    # -- attributes -------------------------------------------------------------------------------------

    def has_attribute(self, name: str) -> bool:
        """Whether an `a=<name>` line is present (names compare case-insensitively)."""
        return _has(self.attributes, name)

    def attribute(self, name: str) -> str | None:
        """The value of the first `a=<name>:<value>` line, or None."""
        return _first_value(self.attributes, name)

    def attribute_values(self, name: str) -> list[str]:
        """The values of every `a=<name>:<value>` line, in order."""
        return _values(self.attributes, name)

    @property
    def is_rtp(self) -> bool:
        """Whether the protocol is RTP based (RTP/AVP, RTP/SAVPF, UDP/TLS/RTP/SAVPF ...)."""
        return "RTP/" in self.proto.upper()

    @property
    def rtpmap(self) -> dict[str, RtpMap]:
        """The payload formats of this stream's formats, keyed by payload type, in the m= line's order.

        `a=rtpmap` lines win; RFC 3551 static payload types (0 PCMU, 8 PCMA, 9 G722, 18 G729 ...) are known
        without one. Formats with neither, and malformed rtpmap lines, are left out.
        """
        declared: dict[str, RtpMap] = {}
        for name, value in self.attributes:
            if value is not None and name.lower() == "rtpmap":
                pt, rest = _first_word(value)
                if pt not in declared:
                    rtpmap = _rtpmap(rest)
                    if rtpmap is not None:
                        declared[pt] = rtpmap
        static = STATIC_PAYLOAD_TYPES if self.is_rtp else {}
        out: dict[str, RtpMap] = {}
        for fmt in self.formats:
            found = declared.get(fmt) or static.get(fmt)
            if found is not None:
                out.setdefault(fmt, found)
        return out

    @property
    def fmtp(self) -> dict[str, str]:
        """`a=fmtp` parameters by format (the first line for a format wins), for formats of the m= line."""
        out: dict[str, str] = {}
        for value in _values(self.attributes, "fmtp"):
            fmt, params = _first_word(value)
            if fmt in self.formats:
                out.setdefault(fmt, params)
        return out

    @property
    def direction(self) -> str:
        """This block's direction attribute ("sendrecv" when it has none; see also
        `SessionDescription.direction_for`, which falls back to the session's)."""
        return _direction_of(self.attributes) or "sendrecv"

    @property
    def uses_ice(self) -> bool:
        """Whether this block carries ICE attributes (`a=candidate`, `a=ice-ufrag`)."""
        return self.has_attribute("candidate") or self.has_attribute("ice-ufrag")

    @property
    def on_hold(self) -> bool:
        """Whether this block's own `c=` is `0.0.0.0` (old-style hold, RFC 3264 8.4); see `direction` too.

        With ICE, `c=IN IP4 0.0.0.0` is only a placeholder (RFC 8839 4.2.1), not hold.
        """
        return self.connection is not None and self.connection.is_hold_address and not self.uses_ice

    @property
    def rtcp_port(self) -> int:
        """The `a=rtcp` port (RFC 3605), else port + 1 (0 for a disabled stream). rtcp-mux is not applied."""
        if self.port == 0:
            return 0
        value = self.attribute("rtcp")
        if value is not None:
            port = _first_word(value)[0]
            if _PORT.fullmatch(port) and 0 < int(port) <= 65535:
                return int(port)
        return self.port + 1

    @property
    def rtcp_mux(self) -> bool:
        """Whether `a=rtcp-mux` (RFC 5761) is present."""
        return self.has_attribute("rtcp-mux")

    @property
    def ptime(self) -> int | None:
        """`a=ptime` in milliseconds, None when absent or unreadable."""
        return _int_or_none(self.attribute("ptime"))

    @property
    def maxptime(self) -> int | None:
        """`a=maxptime` in milliseconds, None when absent or unreadable."""
        return _int_or_none(self.attribute("maxptime"))

    # -- changes ----------------------------------------------------------------------------------------

    def replace(self, **changes: Any) -> MediaDescription:
        return replace(self, **changes)

    def with_port(self, port: int) -> MediaDescription:
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        return replace(self, port=port)

    def with_connection(self, connection: Connection | None) -> MediaDescription:
        return replace(self, connection=connection)

    def with_direction(self, direction: str) -> MediaDescription:
        """Replace any direction attribute by `direction` (appended last)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"not a direction: {direction!r}")
        return replace(self, attributes=(*_without(self.attributes, DIRECTIONS), (direction, None)))

    def with_formats(self, formats: Iterable[str]) -> MediaDescription:
        """Set the formats; rtpmap, fmtp and rtcp-fb lines of formats no longer listed are dropped."""
        formats = tuple(formats)
        removed = set(self.formats) - set(formats)

        def kept(attribute: tuple[str, str | None]) -> bool:
            name, value = attribute
            if name.lower() in ("rtpmap", "fmtp", "rtcp-fb") and value is not None:
                return _first_word(value)[0] not in removed
            return True

        return replace(self, formats=formats, attributes=tuple(filter(kept, self.attributes)))

    def with_attributes(self, attributes: Iterable[tuple[str, str | None]]) -> MediaDescription:
        return replace(self, attributes=tuple(attributes))

    def without_attributes(self, *names: str) -> MediaDescription:
        """Drop every `a=` line with one of these names (case-insensitively)."""
        return replace(self, attributes=_without(self.attributes, names))

    # -- wire -------------------------------------------------------------------------------------------

    def _write(self, lines: list[str]) -> None:
        """Append this block's lines to `lines`."""
        count = "" if self.port_count is None else f"/{self.port_count}"
        formats = " ".join(self.formats)
        lines.append(
            f"m={self.media} {self.port}{count} {self.proto} {formats}"
            if formats
            else f"m={self.media} {self.port}{count} {self.proto}"
        )
        other = self.other
        if other:
            lines += [line for line in other if _MEDIA_RANK.get(line[:1], _UNKNOWN_RANK) < 4]
        connection = self.connection
        if connection is not None:
            lines.append(f"c={connection.net_type} {connection.addr_type} {connection.address}")
        for bandwidth in self.bandwidths:
            lines.append(f"b={bandwidth}")
        if other:
            lines += [line for line in other if _MEDIA_RANK.get(line[:1], _UNKNOWN_RANK) >= 4]
        for name, value in self.attributes:
            lines.append(f"a={name}" if value is None else f"a={name}:{value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDescription:
    """A whole SDP body (RFC 8866 5). Fields are keyword-only.

    Attributes:
        version: the `v=` number (0).
        origin: the `o=` line.
        session_name: the `s=` text; written as `s= ` when empty (RFC 8866 5.3).
        connection: the session-level `c=` line, the default for every m= block without its own.
        times: `t=` values ("0 0") in order.
        attributes: session-level `a=` lines as (name, value).
        media: the m= blocks in order (their order matters in offer/answer, RFC 3264 6).
        other: any other session-level lines (`i=`, `u=`, `e=`, `p=`, `b=`, `r=`, `z=`, `k=`, unknown types)
            verbatim with their `x=` prefix; kept in RFC order (stable within a type).
    """

    version: int = 0
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    times: tuple[str, ...] = ("0 0",)
    attributes: Attributes = ()
    media: tuple[MediaDescription, ...] = ()
    other: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "times", tuple(self.times))
        object.__setattr__(self, "attributes", tuple(map(tuple, self.attributes)))  # pairs, as tuples
        object.__setattr__(self, "media", tuple(self.media))
        if self.other:
            ranked = sorted(self.other, key=lambda line: _SESSION_RANK.get(line[:1], _UNKNOWN_RANK))
            object.__setattr__(self, "other", tuple(ranked))
        else:
            object.__setattr__(self, "other", ())

    @classmethod
    def parse(cls, data: bytes | str) -> Self:
        """Parse an SDP body (UTF-8; undecodable bytes survive a round trip).

        Raises:
            SdpTooLarge: the body is over `MAX_SDP_SIZE` bytes or has more than `MAX_MEDIA_DESCRIPTIONS`
                m= lines.
            SdpError: the body is not a session description; the message names the offending line.
        """
        if len(data) > MAX_SDP_SIZE:
            raise SdpTooLarge(f"session description over {MAX_SDP_SIZE} bytes")
        text = bytes(data).decode("utf-8", "surrogateescape") if not isinstance(data, str) else data
        sdp = (_parse_text or _parser())(text)
        if cls is not SessionDescription:  # a subclass: through its own constructor
            return cls(**{f.name: getattr(sdp, f.name) for f in fields(sdp)})
        return sdp  # type: ignore[return-value]

    @property
    def direction(self) -> str | None:
        """The session-level direction attribute, None when there is none."""
        return _direction_of(self.attributes)

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """The connection that applies to `media`: its own `c=`, else the session's."""
        return media.connection if media.connection is not None else self.connection

    def direction_for(self, media: MediaDescription) -> str:
        """The direction that applies to `media`: its own attribute, else the session's, else sendrecv."""
        return _direction_of(media.attributes) or self.direction or "sendrecv"

    def on_hold_for(self, media: MediaDescription) -> bool:
        """Whether the connection that applies to `media` is `0.0.0.0` (old-style hold, RFC 3264 8.4).

        Not when ICE is in use (session or media level), where `0.0.0.0` is only a placeholder.
        """
        connection = self.connection_for(media)
        if connection is None or not connection.is_hold_address:
            return False
        return not (media.uses_ice or self.has_attribute("ice-ufrag"))

    def has_attribute(self, name: str) -> bool:
        return _has(self.attributes, name)

    def attribute(self, name: str) -> str | None:
        return _first_value(self.attributes, name)

    def replace(self, **changes: Any) -> SessionDescription:
        return replace(self, **changes)

    def with_media(self, media: Iterable[MediaDescription]) -> SessionDescription:
        return replace(self, media=tuple(media))

    def with_origin(self, origin: Origin) -> SessionDescription:
        return replace(self, origin=origin)

    def with_connection(self, connection: Connection | None) -> SessionDescription:
        return replace(self, connection=connection)

    def with_attributes(self, attributes: Iterable[tuple[str, str | None]]) -> SessionDescription:
        return replace(self, attributes=tuple(attributes))

    def to_bytes(self) -> bytes:
        """The body: CRLF-terminated lines in RFC 8866 order."""
        o, other, connection = self.origin, self.other, self.connection
        lines = [
            f"v={self.version}",
            f"o={o.username} {o.session_id} {o.session_version} {o.net_type} {o.addr_type} {o.address}",
            f"s={self.session_name or ' '}",
        ]
        rank = [_SESSION_RANK.get(line[:1], _UNKNOWN_RANK) for line in other] if other else []
        if other:
            lines += [line for line, r in zip(other, rank, strict=True) if r < 4]
        if connection is not None:
            lines.append(f"c={connection.net_type} {connection.addr_type} {connection.address}")
        if other:
            lines += [line for line, r in zip(other, rank, strict=True) if r == 4]
        for time in self.times:
            lines.append(f"t={time}")
        if other:
            lines += [line for line, r in zip(other, rank, strict=True) if r > 4]
        for name, value in self.attributes:
            lines.append(f"a={name}" if value is None else f"a={name}:{value}")
        for media in self.media:
            media._write(lines)
        lines.append("")  # the last line's CRLF
        return "\r\n".join(lines).encode("utf-8", "surrogateescape")

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def telephone_event_types(data: bytes | str) -> frozenset[int]:
    """The payload types that an SDP body's m= blocks map to telephone-event (RFC 4733), as
    `SessionDescription.parse(data)` then each `media.rtpmap` would give them, without building the
    description: for a body the PBX took already (its offer/answer parsed and checked it), this reads only
    its m= and a=rtpmap lines and does not check the others. Empty for a body naming no telephone-event or
    over `MAX_SDP_SIZE` bytes (which `parse` refuses)."""
    if len(data) > MAX_SDP_SIZE:
        return frozenset()
    body = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    if b"telephone-event" not in body.lower():
        return frozenset()
    found: set[int] = set()
    formats: list[str] | None = None  # the m= block being read: its formats
    declared: dict[str, RtpMap] = {}  # and its rtpmap lines (the first well-formed one for a type wins)
    lines = _RTPMAP_LINES
    for m_line, rtpmap_line in _EVENT_LINES.findall(body):
        if rtpmap_line:
            if formats is not None:
                known = lines.get(rtpmap_line)
                if known is None:  # the few rtpmap lines phones send, each read once (bounded)
                    pt, rest = _first_word(rtpmap_line.decode("utf-8", "surrogateescape"))
                    known = (pt, _rtpmap(rest))
                    if len(lines) >= _MAX_RTPMAPS:
                        lines.clear()
                    lines[rtpmap_line] = known
                pt, rtpmap = known
                if rtpmap is not None and pt not in declared:
                    declared[pt] = rtpmap
            continue
        if formats is not None:
            _add_events(found, formats, declared)
        formats, declared = m_line.decode("utf-8", "surrogateescape").split()[3:], {}
    if formats is not None:
        _add_events(found, formats, declared)
    return frozenset(found)


_EVENT_LINES = re.compile(rb"^(?:m=(.*)|a=(?i:rtpmap):(.*))$", re.MULTILINE)  # m= and a=rtpmap: lines
_RTPMAP_LINES: dict[bytes, tuple[str, RtpMap | None]] = {}  # a=rtpmap: value -> (type, its map or None)


def _add_events(found: set[int], formats: list[str], declared: dict[str, RtpMap]) -> None:
    for fmt in formats:
        rtpmap = declared.get(fmt)
        if rtpmap is not None and rtpmap.encoding.lower() == "telephone-event" and fmt.isdigit():
            found.add(int(fmt))


_parse_text: Callable[[str], SessionDescription] | None = None  # pbx.sip.sdp_parser.parse_description


def _parser() -> Callable[[str], SessionDescription]:
    """The parser, imported on first use (it builds on this module's classes)."""
    global _parse_text
    if _parse_text is None:
        from pbx.sip.sdp_parser import parse_description

        _parse_text = parse_description
    return _parse_text


def _show(line: str) -> str:
    return repr(line if len(line) <= 80 else line[:77] + "...")
