"""G.711 µ-law <-> A-law conversion of RTP packets between the two legs of a relayed call (ITU-T G.711,
RFC 3551 4.5.14; RFC 3550 5.1 for the header that is kept).

The PBX relays media; when one phone speaks PCMU and the other PCMA (a PCMA carrier and a PCMU phone),
each packet's payload is converted code by code: the 256-entry tables here map a µ-law code to the A-law
code of the same linear value (decode with one law, encode with the other, `pbx.media.g711`), so a packet
costs one `bytes.translate` plus a copy of its header with the payload type rewritten. Nothing is decoded
to linear PCM on the way.

`payload_offset` finds where the payload starts (after the CSRC list and the header extension) and where
the padding begins, so that only audio octets are translated. `PayloadMap` is the per-direction decision
that call control makes from the two legs' negotiated codecs: incoming payload type -> (table or None,
outgoing payload type). `convert_rtp` applies one entry to a packet.

This module knows nothing of SDP, sockets or sessions: payload types and codec names in, bytes out.
"""

from __future__ import annotations

from collections.abc import Mapping

from pbx.media.g711 import ALAW_DECODE, ULAW_DECODE, alaw_encode_sample, ulaw_encode_sample

__all__ = [
    "ALAW_TO_ULAW",
    "CONVERTIBLE",
    "ULAW_TO_ALAW",
    "PayloadMap",
    "convert_rtp",
    "counterpart",
    "payload_offset",
    "table_for",
]

ULAW_TO_ALAW: bytes = bytes(alaw_encode_sample(v) for v in ULAW_DECODE)
"""µ-law code -> the A-law code of its decoded value (`bytes.translate` table)."""
ALAW_TO_ULAW: bytes = bytes(ulaw_encode_sample(v) for v in ALAW_DECODE)
"""A-law code -> the µ-law code of its decoded value (`bytes.translate` table)."""

CONVERTIBLE: Mapping[str, str] = {"pcmu": "pcma", "pcma": "pcmu"}
"""Lower-case encoding name -> the encoding the PBX can convert it to."""

_TABLES = {("pcmu", "pcma"): ULAW_TO_ALAW, ("pcma", "pcmu"): ALAW_TO_ULAW}

PayloadMap = dict[int, tuple[bytes | None, int]]
"""Incoming payload type -> (translate table or None, outgoing payload type), for one direction."""


def counterpart(encoding: str) -> str | None:
    """The encoding (lower case) that `encoding` converts to, or None."""
    return CONVERTIBLE.get(encoding.lower())


def table_for(source: str, target: str) -> bytes | None:
    """The translate table from encoding `source` to `target` (case-insensitive), None when there is none
    (the same encoding needs none either)."""
    return _TABLES.get((source.lower(), target.lower()))


def payload_offset(packet: bytes) -> tuple[int, int] | None:
    """(start, end) of the payload of an RTP packet: after the 12-byte header, the CSRCs and the header
    extension, before the padding (RFC 3550 5.1, 5.3.1). None for a packet too short for what its header
    says."""
    size = len(packet)
    if size < 12:
        return None
    first = packet[0]
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if size < start + 4:
            return None
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    end = size
    if first & 0x20:
        end -= packet[-1]
    if start > end:
        return None
    return start, end


def convert_rtp(packet: bytes, table: bytes | None, payload_type: int) -> bytes | None:
    """`packet` with its payload type set to `payload_type` (marker bit kept) and its payload translated by
    `table` (when given); None when the packet's header is inconsistent (it is not relayed)."""
    if table is None:
        if packet[1] & 0x7F == payload_type:
            return packet
        out = bytearray(packet)
        out[1] = (packet[1] & 0x80) | payload_type
        return bytes(out)
    bounds = payload_offset(packet)
    if bounds is None:
        return None
    start, end = bounds
    out = bytearray(packet)
    out[1] = (packet[1] & 0x80) | payload_type
    out[start:end] = packet[start:end].translate(table)
    return bytes(out)


def payload_map(source: tuple[tuple[int, str], ...], target: tuple[tuple[int, str], ...]) -> PayloadMap:
    """What a packet from a phone speaking `source` becomes for a phone speaking `target`: each side is its
    audio (payload type, lower-case encoding) pairs in preference order. A type whose encoding the target
    has maps to the target's type for it; one the PBX can convert maps to the target's type of the other
    law with a table; the rest are left out (relayed as they are). Identity entries are left out too, so an
    empty map means "nothing to do"."""
    out: PayloadMap = {}
    for pt, encoding in source:
        wanted = next((t for t, e in target if e == encoding), None)
        if wanted is not None:
            if wanted != pt:
                out[pt] = (None, wanted)
            continue
        other = counterpart(encoding)
        wanted = next((t for t, e in target if e == other), None) if other is not None else None
        if wanted is not None:
            out[pt] = (table_for(encoding, other or ""), wanted)
    return out
