"""Codecs and DTMF between the two legs of a bridged call: what the B2BUA offers the other side and what it
answers, so that the relay can convert where the phones differ (RFC 3264 5, 6.1; RFC 4733 7; RFC 3551 6).

The B2BUA passes one side's offer on to the other side (`pbx.b2bua.media.MediaBridge`). Three changes make
two different phones meet, and they leave an offer that already has what they add as it was:

- `augment_offer`: an offer with PCMU but not PCMA (or the reverse) gets the other law added right after
  it, so a PCMA-only carrier can answer a PCMU-only phone (the relay converts, `pbx.media.transcode`); an
  offer without telephone-event/8000 gets it (payload type 101, or the first free dynamic type), so a phone
  that sends DTMF by SIP INFO or in band can still reach an IVR that wants RFC 4733 events.
- `answer_for`: the other side's answer turned back into the offerer's terms: each accepted codec becomes the
  offerer's payload type for it, or for the other G.711 law when the offerer only had that one; the
  offerer's telephone-event stays in the answer whether or not the answerer took it (the PBX converts); no
  codec left is a 488. An answer that needs none of this is returned unchanged.
- `restrict_offer_to`: an offer cut down to (and ordered by) a callee's codec list, e.g. a trunk's, with the
  other law added where only it makes a codec of the list reachable; nothing left is a 488.

`leg_formats` reads what one side negotiated for `pbx.media.dtmf_interwork`. Pure functions over
`pbx.sip.sdp` values; nothing here knows about dialogs or sockets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pbx.media.dtmf_interwork import LegFormats
from pbx.media.transcode import counterpart
from pbx.sip.errors import SipError
from pbx.sip.sdp import MediaDescription, RtpMap

__all__ = ["answer_for", "augment_offer", "leg_formats", "no_common_codec", "restrict_offer_to"]

TELEPHONE_EVENT = "telephone-event"
_AUXILIARY = frozenset({TELEPHONE_EVENT, "cn"})
_G711 = {"pcmu": ("0", "PCMU/8000"), "pcma": ("8", "PCMA/8000")}
_FORMAT_LINES = frozenset({"rtpmap", "fmtp"})


def no_common_codec() -> SipError:
    """The 488 for legs that share no codec the PBX can bridge (RFC 3261 21.4.26, Warning 305)."""
    return SipError(488, "No Common Codec", [("Warning", '305 pbx "Incompatible media format"')])


def _same_encoding(one: RtpMap, other: RtpMap) -> bool:
    return one.encoding.lower() == other.encoding.lower()


def _find(rtpmap: dict[str, RtpMap], encoding: str, rate: int = 8000) -> str | None:
    """The first payload type of `encoding` (lower case) at `rate`."""
    for pt, entry in rtpmap.items():
        if entry.encoding.lower() == encoding and entry.clock_rate == rate:
            return pt
    return None


def _format_lines(media: MediaDescription, pt: str) -> list[tuple[str, str | None]]:
    """`media`'s rtpmap and fmtp lines of payload type `pt`."""
    return [
        (name, value)
        for name, value in media.attributes
        if name.lower() in _FORMAT_LINES and value is not None and value.split(" ", 1)[0] == pt
    ]


def _with_format_lines(
    media: MediaDescription, formats: Sequence[str], lines: Iterable[tuple[str, str | None]]
) -> MediaDescription:
    """`media` with `formats` and its rtpmap/fmtp lines replaced by `lines`, where the first stood."""
    attributes = list(media.attributes)
    at = next((i for i, (name, _) in enumerate(attributes) if name.lower() in _FORMAT_LINES), 0)
    kept = [a for a in attributes[:at] if a[0].lower() not in _FORMAT_LINES]
    rest = [a for a in attributes[at:] if a[0].lower() not in _FORMAT_LINES]
    return media.replace(formats=tuple(formats), attributes=(*kept, *lines, *rest))


def _free_dynamic(formats: Sequence[str]) -> str | None:
    taken = set(formats)
    for pt in ("101", *map(str, range(96, 128))):
        if pt not in taken:
            return pt
    return None


def augment_offer(
    media: MediaDescription, allowed: frozenset[str] | None, rtpmap: dict[str, RtpMap] | None = None
) -> MediaDescription:
    """`media` (an offered audio stream) with the other G.711 law after the one it has, and with
    telephone-event/8000 when it has none (module docstring). `allowed`: the lower-case encodings the PBX
    lets through (None: all); `rtpmap`: `media.rtpmap` when the caller has it. The same object when nothing
    is added."""
    if rtpmap is None:
        rtpmap = media.rtpmap
    names = {entry.encoding.lower() for entry in rtpmap.values()}
    if {"pcmu", "pcma", TELEPHONE_EVENT} <= names or not names & _G711.keys():
        return media  # what most phones offer (or nothing the PBX converts): no work at all
    formats = list(media.formats)
    added: list[tuple[str, str | None]] = []
    for have, want in (("pcmu", "pcma"), ("pcma", "pcmu")):
        have_pt = _find(rtpmap, have)
        pt, text = _G711[want]
        if have_pt is None or want in names or pt in formats or (allowed is not None and want not in allowed):
            continue
        formats.insert(formats.index(have_pt) + 1, pt)
        names.add(want)
        added.append(("rtpmap", f"{pt} {text}"))
    allows_events = allowed is None or TELEPHONE_EVENT in allowed
    if _find(rtpmap, TELEPHONE_EVENT) is None and allows_events:
        event = _free_dynamic(formats)
        if event is not None:
            formats.append(event)
            added += [("rtpmap", f"{event} telephone-event/8000"), ("fmtp", f"{event} 0-16")]
    if not added:
        return media
    lines = [a for a in media.attributes if a[0].lower() in _FORMAT_LINES and a[1] is not None]
    return _with_format_lines(media, formats, [*lines, *added])


def restrict_offer_to(media: MediaDescription, codecs: Sequence[str]) -> MediaDescription:
    """`media` (an offered audio stream) with only the codecs of `codecs` (encoding names, in the order
    wanted), each one offered or reachable from an offered one by conversion (PCMU <-> PCMA), then
    telephone-event. Raises the 488 of `no_common_codec` when none is left."""
    rtpmap = media.rtpmap
    formats: list[str] = []
    lines: list[tuple[str, str | None]] = []
    for codec in codecs:
        name = codec.lower()
        if name in _AUXILIARY:
            continue
        pt = next((p for p, e in rtpmap.items() if e.encoding.lower() == name), None)
        if pt is not None:
            if pt not in formats:
                formats.append(pt)
                lines += _format_lines(media, pt)
            continue
        other = counterpart(name)
        if other is not None and _find(rtpmap, other) is not None and _G711[name][0] not in formats:
            pt, text = _G711[name]
            formats.append(pt)
            lines.append(("rtpmap", f"{pt} {text}"))
    if not formats:
        raise no_common_codec()
    event = _find(rtpmap, TELEPHONE_EVENT)
    if event is None:
        event = _free_dynamic(formats)
        if event is not None:
            lines += [("rtpmap", f"{event} telephone-event/8000"), ("fmtp", f"{event} 0-16")]
    else:
        lines += _format_lines(media, event)
    if event is not None:
        formats.append(event)
    return _with_format_lines(media, formats, lines)


def leg_formats(
    media: MediaDescription, info: bool = False, rtpmap: dict[str, RtpMap] | None = None
) -> LegFormats:
    """What a stream's formats say about its phone: audio codecs in order, telephone-event/8000.
    `rtpmap`: `media.rtpmap` when the caller has it already."""
    audio: list[tuple[int, str]] = []
    event: int | None = None
    for pt, entry in (rtpmap if rtpmap is not None else media.rtpmap).items():
        if not pt.isdigit():
            continue
        name = entry.encoding.lower()
        if name == TELEPHONE_EVENT:
            if event is None and entry.clock_rate == 8000:
                event = int(pt)
        elif name != "cn":
            audio.append((int(pt), name))
    return LegFormats(tuple(audio), event, info)


def answer_for(
    offer: MediaDescription, answer: MediaDescription, offered: dict[str, RtpMap] | None = None
) -> tuple[MediaDescription, LegFormats, LegFormats]:
    """The answer to give the offerer for `answer` (the other side's answer to our version of `offer`),
    with the formats of the offerer and of the answerer (module docstring). `offered`: `offer.rtpmap`
    when the caller has it.

    Raises:
        SipError: 488 (`no_common_codec`) when the answer accepts no codec the offerer can be given.
    """
    if offered is None:
        offered = offer.rtpmap
    answered = answer.rtpmap
    formats: list[str] = []
    for pt in answer.formats:
        entry = answered.get(pt)
        if entry is None:
            if pt in offer.formats and pt not in formats:
                formats.append(pt)
            continue
        name = entry.encoding.lower()
        if name == TELEPHONE_EVENT:
            continue
        match = _find(offered, name, entry.clock_rate)
        if match is None and name != "cn":
            other = counterpart(name)
            match = _find(offered, other) if other is not None else None
        if match is not None and match not in formats:
            formats.append(match)
    answerer = leg_formats(answer, rtpmap=answered)
    if not any(pt in offered and offered[pt].encoding.lower() not in _AUXILIARY for pt in formats):
        raise no_common_codec()
    event = _find(offered, TELEPHONE_EVENT)
    if event is not None:
        formats.append(event)
    if formats == list(answer.formats):
        return answer, answerer, answerer  # in the offerer's terms already: the same formats both ways
    lines: list[tuple[str, str | None]] = []
    for pt in formats:
        theirs, ours = answered.get(pt), offered.get(pt)
        same = theirs is not None and ours is not None and theirs.encoding.lower() == ours.encoding.lower()
        lines += _format_lines(answer if same else offer, pt)
    media = _with_format_lines(answer, formats, lines)
    return media, leg_formats(media), answerer
