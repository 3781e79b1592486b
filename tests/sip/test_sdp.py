"""Tests for `pbx.sip.sdp` (parsing and writing SDP, RFC 8866, and its accessors) and `pbx.sip.offer_answer`
(offer/answer, RFC 3264).

The corpus under tests/data/sdp holds offers shaped like those of real stacks (baresip, SIPp, Asterisk,
Linphone, a browser) and malformed bodies. The hypothesis strategies at the top build valid descriptions:
`SessionDescription.parse(bytes(x)) == x` holds for each of them.
"""

from __future__ import annotations

import string
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.sip.offer_answer import (
    answer_direction,
    make_answer,
    make_offer,
    names_address,
    negotiate,
    relay_bytes,
    rewrite_for_relay,
)
from pbx.sip.sdp import (
    DIRECTIONS,
    MAX_MEDIA_DESCRIPTIONS,
    MAX_SDP_SIZE,
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SdpError,
    SdpTooLarge,
    SessionDescription,
    telephone_event_types,
)

CORPUS = Path(__file__).parent.parent / "data" / "sdp"
VALID = sorted(p.name for p in CORPUS.glob("*.sdp") if not p.name.startswith("malformed-"))
MALFORMED = {
    "malformed-missing-v.sdp": "missing v= line",
    "malformed-bad-m-line.sdp": "bad m= line: too few fields: 'm=audio RTP/AVP'",
    "malformed-bad-port.sdp": "bad m= line: port out of range: 'm=audio 70000 RTP/AVP 0'",
    "malformed-non-numeric-payload.sdp": "bad m= line: bad payload type 'PCMU'",
    "malformed-missing-t.sdp": "missing t= line",
    "malformed-bad-o-line.sdp": "bad o= line: 'o=- 1 IN IP4 192.0.2.1'",
}
PBX = "203.0.113.1"


def corpus(name: str) -> SessionDescription:
    return SessionDescription.parse((CORPUS / name).read_bytes())


def sdp(text: str) -> SessionDescription:
    """Parse a description written in a test with LF line ends and no indentation."""
    return SessionDescription.parse(text.strip() + "\n")


MINIMAL = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n"

# -- strategies ------------------------------------------------------------------------------------------

# RFC 8866 9: token-char.
_TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`{|}~"
# Any character but surrogates and control characters (CR, LF, NUL, TAB ...).
_TEXT_CHARS = st.characters(exclude_categories=("Cs", "Cc"))
_RTP_PROTOS = ("RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF")
_OTHER_PROTOS = ("udptl", "TCP/MSRP", "UDP/BFCP", "TCP/TLS/BFCP")
_KNOWN_ATTRIBUTES = (
    *DIRECTIONS,
    "rtpmap",
    "fmtp",
    "ptime",
    "rtcp",
    "rtcp-mux",
    "candidate",
    "ice-ufrag",
    "group",
)


# Strategy factories are cached and composites draw from module-level strategies: hypothesis validates each
# new strategy object, which would otherwise dominate the run time.


@cache
def tokens(max_size: int = 10) -> st.SearchStrategy[str]:
    return st.text(_TOKEN_CHARS, min_size=1, max_size=max_size)


@cache
def texts(max_size: int = 20) -> st.SearchStrategy[str]:
    """Line values: no line breaks, no trailing blanks (the parser strips them)."""
    return st.text(_TEXT_CHARS, max_size=max_size).map(lambda s: s.rstrip(" "))


@cache
def addresses() -> st.SearchStrategy[str]:
    return st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        st.sampled_from(["pbx.example.com", "0.0.0.0", "224.2.1.1/127/3"]),
    )


@cache
def connections() -> st.SearchStrategy[Connection]:
    return addresses().map(Connection.for_address) | st.builds(Connection, tokens(4), tokens(4), tokens(20))


@cache
def origins() -> st.SearchStrategy[Origin]:
    return st.builds(
        Origin,
        st.just("-") | tokens(),
        st.integers(0, 2**63).map(str) | tokens(),
        st.integers(0, 2**64),
        st.just("IN"),
        st.sampled_from(["IP4", "IP6"]),
        addresses(),
    )


@cache
def attributes() -> st.SearchStrategy[tuple[tuple[str, str | None], ...]]:
    name = st.sampled_from(_KNOWN_ATTRIBUTES) | tokens()
    return st.lists(st.tuples(name, st.none() | texts()), max_size=6).map(tuple)


@cache
def _lines(kinds: str) -> st.SearchStrategy[tuple[str, ...]]:
    line = st.builds(lambda kind, value: f"{kind}={value}", st.sampled_from(kinds), texts())
    return st.lists(line, max_size=4).map(tuple)


_RTP_FORMATS = st.lists(st.integers(0, 127).map(str), max_size=6).map(tuple)
_OTHER_FORMATS = st.lists(st.sampled_from(["t38", "*", "BFCP"]) | tokens(), max_size=3).map(tuple)
_MEDIA_TYPES = st.sampled_from(["audio", "video", "image", "application"]) | tokens()
_BANDWIDTHS = st.lists(
    st.builds("{}:{}".format, st.sampled_from(["AS", "TIAS", "CT"]), st.integers(0, 10**6)), max_size=2
).map(tuple)
_PORT_COUNTS = st.none() | st.integers(1, 8)
_OPTIONAL_CONNECTIONS = st.none() | connections()
_TIMES = st.lists(
    st.builds("{} {}".format, st.integers(0, 2**40), st.integers(0, 2**40)), min_size=1, max_size=2
).map(tuple)


@st.composite
def _media_description(draw: st.DrawFn) -> MediaDescription:
    rtp = draw(st.booleans())
    return MediaDescription(
        media=draw(_MEDIA_TYPES),
        port=draw(st.integers(0, 65535)),
        port_count=draw(_PORT_COUNTS),
        proto=draw(st.sampled_from(_RTP_PROTOS if rtp else _OTHER_PROTOS)),
        formats=draw(_RTP_FORMATS if rtp else _OTHER_FORMATS),
        connection=draw(_OPTIONAL_CONNECTIONS),
        bandwidths=draw(_BANDWIDTHS),
        attributes=draw(attributes()),
        other=draw(_lines("ikuepzrxy")),
    )


@cache
def media_descriptions() -> st.SearchStrategy[MediaDescription]:
    """Valid m= blocks: RTP ones with payload types, others with tokens; any attributes."""
    return _media_description()


_MEDIA_LISTS = st.lists(media_descriptions(), max_size=3).map(tuple)


@st.composite
def _session_description(draw: st.DrawFn) -> SessionDescription:
    return SessionDescription(
        version=draw(st.integers(0, 2)),
        origin=draw(origins()),
        session_name=draw(texts()),
        connection=draw(_OPTIONAL_CONNECTIONS),
        times=draw(_TIMES),
        attributes=draw(attributes()),
        media=draw(_MEDIA_LISTS),
        other=draw(_lines("iuepbrzkxy")),
    )


@cache
def session_descriptions() -> st.SearchStrategy[SessionDescription]:
    """Valid descriptions: `SessionDescription.parse(bytes(x)) == x` for each."""
    return _session_description()


_BODIES = session_descriptions().map(bytes) | st.sampled_from(
    [(CORPUS / name).read_bytes() for name in VALID]
)
_INSERTED = st.binary(min_size=1, max_size=8) | st.sampled_from([b" ", b"\n", b"=", b":", b"/"])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid body (generated or from the corpus) with a few bytes or lines broken."""
    data = draw(_BODIES)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "line"]))
        if kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 8)) :]
        elif kind == "insert":
            data = data[:at] + draw(_INSERTED) + data[at:]
        elif kind == "replace":
            data = data[:at] + draw(st.binary(min_size=1, max_size=1)) + data[at + 1 :]
        else:
            lines = data.split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            data = b"\n".join(lines)
    return data


# -- corpus ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALID)
def test_corpus_round_trips(name: str) -> None:
    raw = (CORPUS / name).read_bytes()
    parsed = SessionDescription.parse(raw)
    assert SessionDescription.parse(bytes(parsed)) == parsed
    # Every corpus file is written in RFC order; all but SIPp's (LF-only) with CRLF already.
    assert bytes(parsed) == raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.mark.parametrize(("name", "message"), sorted(MALFORMED.items()))
def test_malformed_corpus_is_refused_with_a_clear_message(name: str, message: str) -> None:
    with pytest.raises(SdpError) as error:
        corpus(name)
    assert str(error.value).startswith(message)
    assert isinstance(error.value, ValueError)


def test_baresip_offer() -> None:
    offer = corpus("baresip-offer.sdp")
    assert offer.version == 0
    assert offer.origin == Origin("-", "1385064302", 543212690, "IN", "IP4", "192.168.1.55")
    assert offer.session_name == "-"
    assert offer.connection == Connection("IN", "IP4", "192.168.1.55")
    assert offer.times == ("0 0",)
    assert offer.attribute("tool") == "baresip 3.10.1"
    (audio,) = offer.media
    assert (audio.media, audio.port, audio.port_count, audio.proto) == ("audio", 13480, None, "RTP/AVP")
    assert audio.formats == ("0", "8", "101")
    assert audio.rtpmap == {
        "0": RtpMap("PCMU", 8000),
        "8": RtpMap("PCMA", 8000),
        "101": RtpMap("telephone-event", 8000),
    }
    assert audio.fmtp == {"101": "0-15"}
    assert audio.bandwidths == ("AS:87",)
    assert audio.direction == "sendrecv"
    assert audio.rtcp_mux
    assert audio.rtcp_port == 13481
    assert audio.ptime == 20
    assert audio.maxptime is None
    assert audio.connection is None
    assert offer.connection_for(audio) == offer.connection
    assert not audio.on_hold
    assert not offer.on_hold_for(audio)
    assert audio.attribute_values("ssrc") == ["2890844526 cname:a2c1f0d3-9b5e"]


def test_sipp_offer_with_lf_line_ends() -> None:
    offer = corpus("sipp-offer.sdp")
    assert offer.origin.username == "user1"
    assert offer.media[0].port == 6000
    assert offer.media[0].rtpmap == {"0": RtpMap("PCMU", 8000)}
    assert offer.media[0].direction == "sendrecv"
    assert not offer.media[0].rtcp_mux


def test_asterisk_offer() -> None:
    offer = corpus("asterisk-offer.sdp")
    audio = offer.media[0]
    assert offer.session_name == "Asterisk"
    assert [str(m) for m in audio.rtpmap.values()] == [
        "PCMU/8000",
        "PCMA/8000",
        "GSM/8000",
        "G722/8000",
        "telephone-event/8000",
    ]
    assert (audio.ptime, audio.maxptime, audio.direction) == (20, 150, "sendrecv")


def test_linphone_offer_knows_static_payload_types_without_rtpmap() -> None:
    audio = corpus("linphone-offer.sdp").media[0]
    rtpmap = audio.rtpmap
    assert list(rtpmap) == ["96", "97", "98", "0", "8", "18", "101", "99", "100"]
    assert rtpmap["96"] == RtpMap("opus", 48000, 2)
    assert str(rtpmap["96"]) == "opus/48000/2"
    assert (rtpmap["0"].encoding, rtpmap["8"].encoding, rtpmap["18"].encoding) == ("PCMU", "PCMA", "G729")
    assert audio.fmtp == {"96": "useinbandfec=1", "97": "vbr=on", "98": "vbr=on", "18": "annexb=yes"}
    assert audio.rtcp_port == 7079
    assert audio.ptime is None


def test_audio_and_video_offer() -> None:
    offer = corpus("audio-video-offer.sdp")
    assert offer.other == ("i=A call with video", "b=CT:2048")
    audio, video = offer.media
    assert audio.other == ("i=Voice",)
    assert (video.media, video.port, video.formats) == ("video", 51372, ("96", "97"))
    assert video.rtpmap["96"] == RtpMap("H264", 90000)
    assert video.bandwidths == ("AS:1024",)
    assert offer.connection_for(video) == Connection("IN", "IP4", "198.51.100.7")


def test_ipv6_offer() -> None:
    offer = corpus("ipv6-offer.sdp")
    assert offer.connection == Connection("IN", "IP6", "2001:db8::10")
    assert offer.origin.addr_type == "IP6"
    assert offer.origin.session_version == 28908764872
    assert offer.media[0].rtcp_port == 30001


def test_hold_and_inactive() -> None:
    assert corpus("hold-sendonly.sdp").media[0].direction == "sendonly"
    assert corpus("inactive.sdp").media[0].direction == "inactive"
    held = corpus("hold-old-style.sdp")
    audio = held.media[0]
    assert audio.on_hold
    assert held.on_hold_for(audio)
    assert audio.direction == "sendrecv"  # the old way says nothing about direction
    assert held.connection_for(audio) == Connection("IN", "IP4", "0.0.0.0")


def test_session_level_hold_address_and_direction_apply_to_every_stream() -> None:
    offer = sdp(
        MINIMAL + "c=IN IP4 0.0.0.0\na=sendonly\nm=audio 4000 RTP/AVP 0\nm=audio 4002 RTP/AVP 0\na=inactive"
    )
    first, second = offer.media
    assert not first.on_hold  # its own c= says nothing
    assert offer.on_hold_for(first)
    assert offer.direction == "sendonly"
    assert (first.direction, offer.direction_for(first)) == ("sendrecv", "sendonly")
    assert offer.direction_for(second) == "inactive"
    assert sdp(MINIMAL + "m=audio 4000 RTP/AVP 0").direction_for(first) == "sendrecv"


def test_ice_placeholder_address_is_not_hold() -> None:
    offer = corpus("webrtc-offer.sdp")
    audio = offer.media[0]
    assert audio.connection == Connection("IN", "IP4", "0.0.0.0")
    assert audio.uses_ice
    assert not audio.on_hold
    assert not offer.on_hold_for(audio)
    assert audio.rtcp_port == 9


def test_rejected_stream_in_an_answer() -> None:
    answer = corpus("answer-rejected-video.sdp")
    assert [m.port for m in answer.media] == [40000, 0]
    assert answer.media[1].rtcp_port == 0
    assert answer.media[1].formats == ("96",)


# -- parsing: liberal and strict -------------------------------------------------------------------------


def test_liberal_line_ends_blanks_and_unknown_lines() -> None:
    body = (
        b"\r\nv=0 \r\no=- 1 1 IN  IP4\t192.0.2.1\ns=\n\ny=ssrc 0100000001\r\nt=0 0  \n"
        b"m=audio 4000 RTP/AVP 0 \t\nx=1\n"
    )
    parsed = SessionDescription.parse(body)
    assert parsed.origin.address == "192.0.2.1"
    assert parsed.session_name == ""
    assert parsed.other == ("y=ssrc 0100000001",)
    assert parsed.media[0].formats == ("0",)
    assert parsed.media[0].other == ("x=1",)
    assert bytes(parsed) == (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns= \r\nt=0 0\r\ny=ssrc 0100000001\r\n"
        b"m=audio 4000 RTP/AVP 0\r\nx=1\r\n"
    )


def test_parse_accepts_str() -> None:
    assert SessionDescription.parse(MINIMAL) == SessionDescription.parse(MINIMAL.encode())


def test_lines_are_written_in_rfc_order() -> None:
    body = (
        "v=0\na=recvonly\nk=prompt\nt=0 0\nz=2882844526 -1h\nr=7d 1h 0 25h\nb=CT:128\nc=IN IP4 192.0.2.1\n"
        "p=+1 555 0100\ne=ops@example.com\nu=http://example.com\ni=info\ns=Name\no=- 1 2 IN IP4 192.0.2.1\n"
        "m=audio 4000/2 RTP/AVP 0\na=ptime:30\nk=clear:x\nb=AS:64\nc=IN IP4 192.0.2.2\ni=voice\n"
    )
    assert bytes(SessionDescription.parse(body)).decode().split("\r\n") == [
        "v=0",
        "o=- 1 2 IN IP4 192.0.2.1",
        "s=Name",
        "i=info",
        "u=http://example.com",
        "e=ops@example.com",
        "p=+1 555 0100",
        "c=IN IP4 192.0.2.1",
        "b=CT:128",
        "t=0 0",
        "r=7d 1h 0 25h",
        "z=2882844526 -1h",
        "k=prompt",
        "a=recvonly",
        "m=audio 4000/2 RTP/AVP 0",
        "i=voice",
        "c=IN IP4 192.0.2.2",
        "b=AS:64",
        "k=clear:x",
        "a=ptime:30",
        "",
    ]


def test_attributes_keep_flags_empty_values_and_colons() -> None:
    parsed = sdp(MINIMAL + "a=flag\na=empty:\na=url:http://x:80/y")
    assert parsed.attributes == (("flag", None), ("empty", ""), ("url", "http://x:80/y"))
    assert parsed.has_attribute("FLAG")
    assert parsed.attribute("url") == "http://x:80/y"
    assert parsed.attribute("flag") is None
    assert b"a=empty:\r\n" in bytes(parsed)


def test_media_line_forms() -> None:
    parsed = sdp(
        MINIMAL
        + "m=image 5000 udptl t38\nm=message 7394 TCP/MSRP *\nm=video 0 RTP/AVP\nm=audio 0/2 RTP/AVP 127"
    )
    image, msrp, video, audio = parsed.media
    assert (image.proto, image.formats, image.is_rtp, image.rtpmap) == ("udptl", ("t38",), False, {})
    assert msrp.formats == ("*",)
    assert video.formats == ()
    assert (audio.port, audio.port_count) == (0, 2)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "empty session description"),
        (" \r\n\r\n", "empty session description"),
        ("o=- 1 1 IN IP4 a\nv=0\ns=-\nt=0 0", "v= must be the first line"),
        ("v=zero\no=- 1 1 IN IP4 a\ns=-\nt=0 0", "bad v= line: 'v=zero'"),
        ("v=0\nv=0\no=- 1 1 IN IP4 a\ns=-\nt=0 0", "more than one v= line"),
        ("v=0\no=- 1 1 IN IP4 a\no=- 1 1 IN IP4 a\ns=-\nt=0 0", "more than one o= line"),
        ("v=0\ns=-\nt=0 0", "missing o= line"),
        ("v=0\no=- 1 1 IN IP4 a\nt=0 0", "missing s= line"),
        ("v=0\no=- 1 x IN IP4 a\ns=-\nt=0 0", "bad o= line"),
        (MINIMAL + "c=IN IP4", "bad c= line: 'c=IN IP4'"),
        (MINIMAL + "c=IN IP4 a\nc=IN IP4 b", "more than one c= line"),
        (MINIMAL + "t=0", "bad t= line: 't=0'"),
        (MINIMAL + "t=now 0", "bad t= line"),
        (MINIMAL + "hello", "bad line: 'hello'"),
        (MINIMAL + "1=x", "bad line: '1=x'"),
        (MINIMAL + "a=", "bad a= line: 'a='"),
        (MINIMAL + "a=:x", "bad a= line"),
        (MINIMAL + "m=audio 4000 RTP/AVP 0\nt=0 0", "t= line inside a media description"),
        (MINIMAL + "m=audio 4000 RTP/AVP 0\nc=IN IP4 a\nc=IN IP4 b", "more than one c= line in a media"),
        (MINIMAL + "m=audio -1 RTP/AVP 0", "bad m= line: bad port"),
        (MINIMAL + "m=audio 4000/x RTP/AVP 0", "bad m= line: bad port"),
        (MINIMAL + "m=audio 123456 RTP/AVP 0", "bad m= line: bad port"),
        (MINIMAL + "m=audio 65536 RTP/AVP 0", "bad m= line: port out of range"),
        (MINIMAL + "m=audio 4000 RTP/AVP 128", "bad m= line: bad payload type '128'"),
        (MINIMAL + "m=audio 4000 RTP/AVP 0,8", "bad m= line: bad payload type '0,8'"),
        (MINIMAL + "m=audio 4000 RTP//AVP 0", "bad m= line: bad protocol"),
        (MINIMAL + "m=aud:io 4000 RTP/AVP 0", "bad m= line: bad media type"),
        (MINIMAL + "m=image 4000 udptl t3:8", "bad m= line: bad format 't3:8'"),
        (MINIMAL + "m=audio \uff14\uff10\uff10\uff10 RTP/AVP 0", "bad m= line: bad port"),  # fullwidth,
    ],
)
def test_strict_where_it_matters(body: str, message: str) -> None:
    with pytest.raises(SdpError) as error:
        SessionDescription.parse(body)
    assert str(error.value).startswith(message)


def test_long_lines_are_shortened_in_messages() -> None:
    with pytest.raises(SdpError) as error:
        SessionDescription.parse(MINIMAL + "m=audio x RTP/AVP" + " 0" * 200)
    assert len(str(error.value)) < 120


# -- values and accessors --------------------------------------------------------------------------------


def test_origin_and_connection() -> None:
    origin = Origin.for_address("2001:db8::1", "42", 7)
    assert str(origin) == "pbx 42 7 IN IP6 2001:db8::1"
    assert origin.replace(session_version=8).session_version == 8
    assert Origin("-", "1", 1, address="192.0.2.1").addr_type == "IP4"
    assert str(Connection.for_address("192.0.2.1")) == "IN IP4 192.0.2.1"
    assert Connection(address="224.2.1.1/127/3").host == "224.2.1.1"
    assert Connection.for_address("::").is_hold_address
    assert Connection.for_address("192.0.2.1").replace(address="0.0.0.0").is_hold_address
    with pytest.raises(ValueError, match="address"):
        Connection()
    with pytest.raises(ValueError, match="address"):
        Origin("-", "1", 1)


def test_rtpmap_parse() -> None:
    assert RtpMap.parse("PCMU/8000") == RtpMap("PCMU", 8000, None)
    assert RtpMap.parse(" L16/44100/2 ") == RtpMap("L16", 44100, 2)
    for bad in ("PCMU", "PCMU/", "/8000", "PCMU/8k", "a/1/2/3"):
        with pytest.raises(SdpError, match="bad rtpmap"):
            RtpMap.parse(bad)


def test_accessors_tolerate_odd_attribute_values() -> None:
    audio = sdp(
        MINIMAL
        + "m=audio 4000 RTP/AVP 0 96 97 98\na=rtpmap:96 broken\na=rtpmap:97 opus/48000/2\na=rtpmap:97 x/1\n"
        "a=rtpmap:99 iLBC/8000\na=fmtp:99 mode=30\na=fmtp:97 stereo=1\na=fmtp:97 stereo=0\na=ptime:20.0\n"
        "a=maxptime:soon\na=rtcp:99999\na=rtpmap:0 PCMA/8000"
    ).media[0]
    assert audio.rtpmap == {"0": RtpMap("PCMA", 8000), "97": RtpMap("opus", 48000, 2)}  # 98: unknown
    assert audio.fmtp == {"97": "stereo=1"}
    assert audio.ptime == 20
    assert audio.maxptime is None
    assert audio.rtcp_port == 4001  # a bad a=rtcp is ignored


def test_with_port_connection_and_direction() -> None:
    audio = corpus("asterisk-offer.sdp").media[0]
    assert audio.with_port(0).port == 0
    with pytest.raises(ValueError, match="port out of range"):
        audio.with_port(65536)
    assert audio.with_connection(Connection.for_address("::1")).connection == Connection("IN", "IP6", "::1")
    held = audio.with_direction("sendonly")
    assert held.direction == "sendonly"
    assert [n for n, _ in held.attributes if n in DIRECTIONS] == ["sendonly"]
    assert held.with_direction("sendrecv").attributes[-1] == ("sendrecv", None)
    with pytest.raises(ValueError, match="not a direction"):
        audio.with_direction("hold")


def test_with_formats_drops_the_lines_of_removed_formats() -> None:
    video = (
        corpus("audio-video-offer.sdp")
        .media[1]
        .with_attributes((*corpus("audio-video-offer.sdp").media[1].attributes, ("rtcp-fb", "* ccm fir")))
    )
    only_vp8 = video.with_formats(["97"])
    assert only_vp8.formats == ("97",)
    assert only_vp8.attributes == (
        ("rtpmap", "97 VP8/90000"),
        ("rtcp-fb", "97 nack pli"),
        ("sendrecv", None),
        ("rtcp-fb", "* ccm fir"),
    )
    assert video.with_formats(video.formats) == video


def test_attribute_edits_and_replace() -> None:
    offer = corpus("baresip-offer.sdp")
    audio = offer.media[0].without_attributes("SSRC", "label")
    assert not audio.has_attribute("ssrc")
    assert audio.has_attribute("rtcp-mux")
    assert audio.replace(media="video").media == "video"
    assert offer.with_attributes(()).attributes == ()
    assert offer.with_media([audio]).media == (audio,)
    assert offer.with_connection(None).connection is None
    origin = offer.origin.replace(session_version=1)
    assert offer.with_origin(origin).origin == origin
    assert offer.replace(session_name="x").session_name == "x"


def test_values_are_immutable_and_hashable() -> None:
    offer = corpus("linphone-offer.sdp")
    with pytest.raises(AttributeError):
        offer.version = 1  # type: ignore[misc]
    assert hash(offer) == hash(corpus("linphone-offer.sdp"))
    built = MediaDescription("audio", 4000, formats=["0"], attributes=[["sendrecv", None]])  # type: ignore[arg-type]
    assert built.formats == ("0",)
    assert built.attributes == (("sendrecv", None),)


# -- rewrite_for_relay -----------------------------------------------------------------------------------


def test_rewrite_for_relay_hides_the_far_end() -> None:
    offer = corpus("baresip-offer.sdp")
    out = rewrite_for_relay(offer, PBX, [20000], session_id="77", version=3)
    ours = Connection("IN", "IP4", PBX)
    assert out.origin == Origin("pbx", "77", 3, "IN", "IP4", PBX)
    assert out.connection == ours
    audio = out.media[0]
    assert (audio.port, audio.connection, audio.formats) == (20000, ours, ("0", "8", "101"))
    assert not audio.rtcp_mux
    assert audio.rtcp_port == 20001
    assert audio.fmtp == {"101": "0-15"}
    assert audio.ptime == 20
    assert offer.attributes == (("tool", "baresip 3.10.1"),)
    assert out.attributes == ()  # a=tool names the author's software, like its User-Agent
    assert out.session_name == "-"
    assert b"192.168.1.55" not in bytes(out)
    assert SessionDescription.parse(bytes(out)) == out


def test_rewrite_for_relay_updates_rtcp_and_keeps_the_origin_when_not_told() -> None:
    offer = corpus("linphone-offer.sdp")
    out = rewrite_for_relay(offer, PBX, [20000], origin_username="relay")
    assert out.media[0].attribute("rtcp") == "20001"
    assert out.media[0].attribute_values("rtcp-fb") == ["* trr-int 1000", "* ccm tmmbr"]
    assert (out.origin.username, out.origin.session_id, out.origin.session_version) == ("relay", "3361", 1422)


def test_rewrite_for_relay_ipv6() -> None:
    out = rewrite_for_relay(corpus("asterisk-offer.sdp"), "2001:db8::53", [20000], session_id=1, version=1)
    assert out.origin.addr_type == "IP6"
    assert out.connection == out.media[0].connection == Connection("IN", "IP6", "2001:db8::53")
    back = rewrite_for_relay(corpus("ipv6-offer.sdp"), PBX, [20000], session_id=1, version=2)
    assert back.media[0].attribute("rtcp") == "20001"  # the IPv6 address of a=rtcp is gone
    assert b"2001:db8::10" not in bytes(back)


def test_rewrite_for_relay_keeps_rejected_streams_rejected() -> None:
    answer = corpus("answer-rejected-video.sdp")
    out = rewrite_for_relay(answer, PBX, [20000, 30000], session_id=1, version=1)
    assert [m.port for m in out.media] == [20000, 0]
    assert out.media[1].formats == ("96",)
    assert out.media[1].connection is None
    disabled = sdp(MINIMAL + "m=video 0 RTP/AVP 96\nc=IN IP4 192.0.2.9\na=rtcp:9\na=ice-ufrag:x")
    media = rewrite_for_relay(disabled, PBX, [None]).media[0]
    assert (media.port, media.connection, media.attributes) == (0, Connection.for_address(PBX), ())


def test_rewrite_for_relay_can_reject_a_stream() -> None:
    offer = corpus("audio-video-offer.sdp")
    out = rewrite_for_relay(offer, PBX, [20000, 0], session_id=1, version=1)
    assert [m.port for m in out.media] == [20000, 0]
    assert out.media[1].connection == Connection.for_address(PBX)
    assert offer.media[0].other == ("i=Voice",)
    assert out.media[0].other == ()  # i= lines may name the author: dropped
    assert "198.51.100.7" not in bytes(out).decode()


def test_rewrite_for_relay_drops_what_names_the_author() -> None:
    """Topology hiding beyond c= and o=: attribute values naming an address (a=ssrc cname, a vendor's NAT
    attribute, a session-level a=rtcp), u=/e=/p=/i=/k= and unknown lines go; keys, fingerprints, fmtp, b=
    and directions stay."""
    text = (
        "v=0\no=alice 1 1 IN IP4 10.1.2.3\ns=Polycom VVX 411\ni=desk phone\nu=http://10.1.2.3/\n"
        "e=alice@corp.example\np=+1 555 0100\nc=IN IP4 10.1.2.3\nb=AS:64\nt=0 0\nx=10.1.2.3\n"
        "a=rtcp:5001 IN IP4 10.1.2.3\na=x-nat:192.168.7.7\n"
        "m=audio 5000 RTP/AVP 0 101\ni=line 1\nk=clear:secret\na=rtpmap:0 PCMU/8000\n"
        "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\na=ssrc:1234 cname:alice@fe80::1\n"
        "a=ssrc:1234 msid:10.0.0.9\n"
        "a=fingerprint:sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB\n"
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\n"
        "a=sendrecv\n"
    )
    out = rewrite_for_relay(sdp(text), PBX, [20000], session_id=1, version=1)
    raw = bytes(out).decode()
    for leaked in ("10.1.2.3", "192.168.7.7", "fe80::1", "10.0.0.9", "Polycom", "corp.example", "555 0100"):
        assert leaked not in raw, (leaked, raw)
    assert "s=-\r\n" in raw and "b=AS:64" in raw and "a=sendrecv" in raw and "a=fmtp:101 0-15" in raw
    assert out.media[0].attribute("fingerprint") is not None
    assert out.media[0].attribute("crypto") is not None
    assert out.attribute("rtcp") is None  # session-level: dropped
    assert SessionDescription.parse(bytes(out)) == out


def test_names_address() -> None:
    assert names_address("cname:a@10.0.0.1") and names_address("x 2001:db8::5 y") and names_address("::1")
    assert not names_address("0-16") and not names_address("4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B")
    assert not names_address("v1.2.3") and not names_address("12:30:45")


def test_rewrite_for_relay_leaves_unrelayed_streams_alone() -> None:
    offer = corpus("audio-video-offer.sdp")
    out = rewrite_for_relay(offer, PBX, [20000, None], session_id=1, version=1)
    assert out.media[1] == offer.media[1].with_connection(offer.connection)
    assert out.connection_for(out.media[1]) == Connection("IN", "IP4", "198.51.100.7")


def test_rewrite_for_relay_preserves_hold() -> None:
    sendonly = rewrite_for_relay(corpus("hold-sendonly.sdp"), PBX, [20000], session_id=1, version=2)
    assert sendonly.media[0].direction == "sendonly"
    assert rewrite_for_relay(corpus("inactive.sdp"), PBX, [20000]).media[0].direction == "inactive"
    old_style = rewrite_for_relay(corpus("hold-old-style.sdp"), PBX, [20000], session_id=1, version=2)
    assert old_style.connection == Connection.for_address(PBX)
    assert old_style.media[0].connection == Connection("IN", "IP4", "0.0.0.0")
    assert old_style.media[0].port == 20000
    assert old_style.on_hold_for(old_style.media[0])
    session_hold = sdp(MINIMAL + "c=IN IP4 0.0.0.0\na=sendonly\nm=audio 4000 RTP/AVP 0")
    out = rewrite_for_relay(session_hold, PBX, [20000])
    assert out.on_hold_for(out.media[0])
    assert out.direction_for(out.media[0]) == "sendonly"


def test_rewrite_for_relay_drops_ice_bundle_and_rtcp_mux() -> None:
    out = rewrite_for_relay(corpus("webrtc-offer.sdp"), PBX, [20000], session_id=1, version=1)
    audio = out.media[0]
    names = [n for n, _ in audio.attributes]
    assert not {"candidate", "end-of-candidates", "ice-ufrag", "ice-pwd", "ice-options", "rtcp-mux"} & set(
        names
    )
    assert {"fingerprint", "setup", "mid", "rtpmap", "fmtp", "rtcp-fb"} <= set(names)
    assert audio.attribute("rtcp") == "20001"
    assert audio.connection == Connection.for_address(PBX)  # the ICE placeholder is not hold
    assert out.attributes == (("extmap-allow-mixed", None), ("msid-semantic", " WMS"))
    kept = sdp(MINIMAL + "a=group:LS 1 2\na=group:BUNDLE 1 2\nm=audio 4000 RTP/AVP 0")
    assert rewrite_for_relay(kept, PBX, [2]).attributes == (("group", "LS 1 2"),)


def test_rewrite_for_relay_checks_its_ports() -> None:
    offer = corpus("audio-video-offer.sdp")
    with pytest.raises(ValueError, match="1 ports for 2 m= lines"):
        rewrite_for_relay(offer, PBX, [20000])
    with pytest.raises(ValueError, match="port out of range"):
        rewrite_for_relay(offer, PBX, [20000, 70000])


@given(session_descriptions(), st.data())
def test_rewrite_for_relay_output_round_trips(description: SessionDescription, data: st.DataObject) -> None:
    ports = data.draw(
        st.lists(
            st.none() | st.integers(0, 65534),
            min_size=len(description.media),
            max_size=len(description.media),
        )
    )
    out = rewrite_for_relay(description, PBX, ports, session_id=5, version=9)
    assert SessionDescription.parse(bytes(out)) == out
    assert out.connection == Connection.for_address(PBX)
    for before, after, port in zip(description.media, out.media, ports, strict=True):
        if before.port == 0:
            assert after.port == 0
        elif port is not None:
            assert after.port == port
            assert after.formats == before.formats
            assert description.direction_for(before) == out.direction_for(after)
            assert not after.rtcp_mux and not after.has_attribute("candidate")


# -- negotiate, answer_direction -------------------------------------------------------------------------


def test_negotiate_keeps_the_offers_order_and_telephone_event() -> None:
    offer = corpus("ipv6-offer.sdp").media[0]  # 8 0 101
    answer = negotiate(offer, ["PCMU", "pcma", "telephone-event"], port=40000)
    assert answer is not None
    assert (answer.port, answer.formats, answer.connection) == (40000, ("8", "0", "101"), None)
    assert answer.attributes == (
        ("rtpmap", "8 PCMA/8000"),
        ("rtpmap", "0 PCMU/8000"),
        ("rtpmap", "101 telephone-event/8000"),
        ("fmtp", "101 0-16"),
        ("sendrecv", None),
    )


def test_negotiate_takes_telephone_event_at_the_codecs_clock_rate() -> None:
    offer = corpus("linphone-offer.sdp").media[0]
    answer = negotiate(offer, ["PCMU", "PCMA", "telephone-event"], ptime=20)
    assert answer is not None
    assert answer.formats == ("0", "8", "100")
    assert answer.rtpmap["0"] == RtpMap("PCMU", 8000)  # static: written out anyway
    assert answer.port == offer.port
    assert answer.ptime == 20
    wideband = negotiate(offer, ["opus/48000", "telephone-event"])
    assert wideband is not None
    assert wideband.formats == ("96", "101")
    assert wideband.fmtp == {"96": "useinbandfec=1"}


def test_negotiate_finds_nothing_in_common() -> None:
    offer = corpus("linphone-offer.sdp").media[0]
    assert negotiate(offer, ["G722", "iLBC"]) is None
    assert negotiate(offer, ["telephone-event", "CN"]) is None  # not codecs
    assert negotiate(offer, ["speex/8001"]) is None
    assert negotiate(offer.with_port(0), ["PCMU"]) is None
    assert negotiate(offer.replace(proto="RTP/SAVP"), ["PCMU"]) is None
    assert negotiate(offer.replace(proto="RTP/SAVP"), ["PCMU"], protos=["rtp/savp"]) is not None


def test_negotiate_answers_the_direction() -> None:
    offer = corpus("hold-sendonly.sdp").media[0]
    connection = Connection.for_address(PBX)
    answer = negotiate(offer, ["PCMU"], connection=connection)
    assert answer is not None
    assert (answer.direction, answer.connection) == ("recvonly", connection)
    inactive = negotiate(offer, ["PCMU"], offered_direction="inactive")
    assert inactive is not None and inactive.direction == "inactive"


def test_answer_direction() -> None:
    assert [answer_direction(d) for d in DIRECTIONS] == ["sendrecv", "recvonly", "sendonly", "inactive"]
    assert answer_direction("SendOnly") == "recvonly"
    with pytest.raises(ValueError, match="not a direction"):
        answer_direction("hold")


# -- make_offer, make_answer -----------------------------------------------------------------------------

G711 = [(0, "PCMU", 8000), (8, "PCMA", 8000), (101, "telephone-event", 8000)]


def test_make_offer() -> None:
    offer = make_offer(PBX, 30000, G711, session_id=123, version=1)
    assert bytes(offer) == (
        b"v=0\r\no=pbx 123 1 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\n"
        b"m=audio 30000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    held = make_offer(
        "2001:db8::1", 30000, G711[:1], session_id="9", version=2, direction="sendonly", ptime=None
    )
    assert held.connection == Connection("IN", "IP6", "2001:db8::1")
    assert held.media[0].direction == "sendonly"
    assert held.media[0].ptime is None
    with pytest.raises(ValueError, match="not a direction"):
        make_offer(PBX, 30000, G711, session_id=1, version=1, direction="hold")


def test_make_answer() -> None:
    offer = corpus("audio-video-offer.sdp")
    answer = make_answer(offer, PBX, 40000, ["PCMU", "PCMA", "telephone-event"], session_id=5, version=1)
    assert answer is not None
    assert answer.origin == Origin("pbx", "5", 1, "IN", "IP4", PBX)
    assert answer.connection == Connection.for_address(PBX)
    assert answer.times == offer.times
    audio, video = answer.media
    assert (audio.port, audio.formats, audio.direction, audio.ptime) == (40000, ("0", "101"), "sendrecv", 20)
    assert (video.media, video.port, video.proto, video.formats) == ("video", 0, "RTP/AVP", ("96", "97"))
    assert SessionDescription.parse(bytes(answer)) == answer


def test_make_answer_to_holds() -> None:
    supported = ["PCMU"]
    for name, expected in [
        ("hold-sendonly.sdp", "recvonly"),
        ("hold-old-style.sdp", "recvonly"),
        ("inactive.sdp", "inactive"),
    ]:
        answer = make_answer(corpus(name), PBX, 40000, supported)
        assert answer is not None
        assert answer.media[0].direction == expected, name
        assert answer.origin.session_id == corpus(name).origin.session_id
    session_level = sdp(MINIMAL + "c=IN IP4 0.0.0.0\na=recvonly\nm=audio 4000 RTP/AVP 0")
    answer = make_answer(session_level, PBX, 40000, supported)
    assert answer is not None and answer.media[0].direction == "inactive"


def test_make_answer_accepts_one_audio_stream_or_none() -> None:
    two = sdp(
        MINIMAL
        + "c=IN IP4 192.0.2.1\nm=audio 4000 RTP/AVP 18\nm=audio 4002 RTP/AVP 0 8\nm=audio 4004 RTP/AVP 0"
    )
    answer = make_answer(two, PBX, 40000, ["PCMU", "PCMA"])
    assert answer is not None
    assert [(m.port, m.formats) for m in answer.media] == [(0, ("18",)), (40000, ("0", "8")), (0, ("0",))]
    assert make_answer(corpus("linphone-offer.sdp"), PBX, 40000, ["G722"]) is None
    assert make_answer(sdp(MINIMAL + "m=video 4000 RTP/AVP 0"), PBX, 40000, ["PCMU"]) is None


# -- properties ------------------------------------------------------------------------------------------


@given(session_descriptions())
def test_generated_descriptions_round_trip(description: SessionDescription) -> None:
    body = bytes(description)
    assert body.endswith(b"\r\n")
    assert SessionDescription.parse(body) == description
    assert SessionDescription.parse(body.replace(b"\r\n", b"\n")) == description


@given(media_descriptions())
def test_accessors_never_raise(media: MediaDescription) -> None:
    assert media.direction in DIRECTIONS
    assert 0 <= media.rtcp_port <= 65536
    assert set(media.fmtp) <= set(media.formats)
    assert media.ptime is None or isinstance(media.ptime, int)
    assert media.maxptime is None or isinstance(media.maxptime, int)
    assert isinstance(media.on_hold, bool)
    assert set(media.rtpmap) <= set(media.formats)


def _parse_or_refuse(data: bytes) -> None:
    """Parsing either refuses with SdpError or yields a value that round-trips."""
    try:
        parsed = SessionDescription.parse(data)
    except SdpError:
        return
    assert SessionDescription.parse(bytes(parsed)) == parsed


@given(mutated())
def test_parse_of_mutated_input_raises_only_sdp_error(data: bytes) -> None:
    _parse_or_refuse(data)


@given(
    st.binary(max_size=200)
    | st.text(max_size=200).map(lambda t: ("v=0\n" + t).encode("utf-8", "surrogatepass"))
)
def test_parse_of_arbitrary_input_raises_only_sdp_error(data: bytes) -> None:
    _parse_or_refuse(data)


# -- limits ------------------------------------------------------------------------------------------------

_HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def _with_media(count: int) -> str:
    return _HEAD + "".join(f"m=audio {10000 + 2 * i} RTP/AVP 0\r\n" for i in range(count))


def test_the_most_media_descriptions_allowed_parse() -> None:
    assert len(SessionDescription.parse(_with_media(MAX_MEDIA_DESCRIPTIONS)).media) == MAX_MEDIA_DESCRIPTIONS


@pytest.mark.parametrize("count", [MAX_MEDIA_DESCRIPTIONS + 1, 1000])
def test_too_many_media_descriptions_are_refused_whole(count: int) -> None:
    with pytest.raises(SdpTooLarge, match=f"more than {MAX_MEDIA_DESCRIPTIONS} m= lines"):
        SessionDescription.parse(_with_media(count).encode())


def test_too_many_media_descriptions_with_a_bad_line_after_them_is_still_too_large() -> None:
    text = _with_media(MAX_MEDIA_DESCRIPTIONS + 1) + "m=audio 99999 RTP/AVP 0\r\n"
    with pytest.raises(SdpTooLarge):
        SessionDescription.parse(text)


def test_an_oversized_body_is_refused_before_parsing_and_echoes_nothing() -> None:
    body = (_HEAD + "a=x:" + "secret" * (MAX_SDP_SIZE // 6) + "\r\n").encode()
    with pytest.raises(SdpTooLarge) as caught:
        SessionDescription.parse(body)
    assert "secret" not in str(caught.value)
    assert isinstance(caught.value, SdpError)  # callers that catch SdpError refuse it too


def test_a_body_just_under_the_size_limit_parses() -> None:
    padding = MAX_SDP_SIZE - len(_HEAD) - len("a=x:\r\n")
    body = (_HEAD + "a=x:" + "p" * padding + "\r\n").encode()
    assert len(body) == MAX_SDP_SIZE
    assert SessionDescription.parse(body).attribute("x") == "p" * padding


# -- telephone_event_types: what the full parse says, from the m= and rtpmap lines only ---------------------


def _events_by_parse(body: bytes) -> frozenset[int]:
    return frozenset(
        int(pt)
        for media in SessionDescription.parse(body).media
        for pt, entry in media.rtpmap.items()
        if entry.encoding.lower() == "telephone-event" and pt.isdigit()
    )


_EVENT_BODIES = [
    (CORPUS / name).read_bytes() for name in VALID
] + [  # session-level rtpmap, a type not in the m= line, the first well-formed line wins, case, LF
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"a=rtpmap:96 telephone-event/8000\r\n"
    b"m=audio 4000 RTP/AVP 0 97 98 99 100\r\na=rtpmap:97 TELEPHONE-EVENT/8000\r\n"
    b"a=rtpmap:98 bad\r\na=rtpmap:98 telephone-event/16000\r\na=rtpmap:99 opus/48000/2\r\n"
    b"a=rtpmap:99 telephone-event/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=RTPMAP:100  telephone-event/8000 \r\n"
    b"m=video 4002 RTP/AVP 96 102\r\na=rtpmap:102 telephone-event/8000\r\n",
    b"v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 0 8\n",
]


@pytest.mark.parametrize("body", _EVENT_BODIES)
def test_telephone_event_types_agree_with_the_parse(body: bytes) -> None:
    assert telephone_event_types(body) == _events_by_parse(body)
    assert telephone_event_types(body.decode()) == _events_by_parse(body)


def test_telephone_event_types_of_the_example_above() -> None:
    assert telephone_event_types(_EVENT_BODIES[-2]) == {97, 98, 100, 102}
    assert telephone_event_types(b"x" * (MAX_SDP_SIZE + 1) + b"telephone-event") == frozenset()


@given(mutated())
def test_telephone_event_types_agree_with_the_parse_of_any_body_it_takes(body: bytes) -> None:
    try:
        expected = _events_by_parse(body)
    except SdpError:
        return  # not a body the PBX takes
    assert telephone_event_types(body) == expected


# -- relay_bytes: the plain description's rewrite, written at once -------------------------------------------

_PLAIN_MEDIA_ATTRIBUTES = st.lists(
    st.tuples(st.sampled_from(["rtpmap", "fmtp", "ptime", "maxptime", "sendrecv", "RTPMAP", "inactive"]),
              st.none() | texts() | st.sampled_from(["20", "0 PCMU/8000", "10.0.0.5", "::1", "a::b:1"])),
    max_size=6,
).map(tuple)  # fmt: skip
_NEAR_PLAIN_MEDIA_ATTRIBUTES = _PLAIN_MEDIA_ATTRIBUTES | attributes()


@st.composite
def _near_plain(draw: st.DrawFn) -> SessionDescription:
    """Descriptions shaped like most phones' (plain), with now and then one thing that is not."""
    media = MediaDescription(
        media=draw(st.sampled_from(["audio", "video"])),
        port=draw(st.integers(0, 65535) | st.integers(1024, 65535)),
        port_count=draw(st.none() | st.none() | st.none() | _PORT_COUNTS),
        proto=draw(st.sampled_from(["RTP/AVP", "RTP/SAVP"])),
        formats=draw(_RTP_FORMATS),
        connection=draw(st.none() | st.none() | st.none() | connections()),
        bandwidths=draw(st.just(()) | st.just(()) | _BANDWIDTHS),
        attributes=draw(_PLAIN_MEDIA_ATTRIBUTES | _NEAR_PLAIN_MEDIA_ATTRIBUTES),
        other=draw(st.just(()) | st.just(()) | _lines("ik")),
    )
    session_attributes = st.lists(st.tuples(st.sampled_from(DIRECTIONS), st.none()), max_size=1).map(tuple)
    return SessionDescription(
        version=draw(st.integers(0, 2)),
        origin=draw(origins()),
        session_name=draw(st.just("-") | st.just("-") | texts()),
        connection=draw(connections() | connections() | _OPTIONAL_CONNECTIONS),
        times=draw(_TIMES),
        attributes=draw(session_attributes | session_attributes | attributes()),
        media=(media,) if draw(st.integers(0, 5)) else (media, media),
        other=draw(st.just(()) | st.just(()) | _lines("iuepbrzkxy")),
    )


_SAFE_VALUES = st.text(string.ascii_letters + string.digits + " /-=;", max_size=12).map(
    lambda s: s.strip(" ")
)


@st.composite
def _plain(draw: st.DrawFn) -> SessionDescription:
    """Plain descriptions (`relay_bytes` writes them): what most phones send."""
    attribute = st.tuples(st.sampled_from(["rtpmap", "fmtp", "ptime", "maxptime"]), _SAFE_VALUES) | st.tuples(
        st.sampled_from([*DIRECTIONS, "SendRecv"]), st.none()
    )
    media = MediaDescription(
        media=draw(st.sampled_from(["audio", "video"]) | tokens()),
        port=draw(st.integers(1, 65535)),
        proto=draw(st.sampled_from(_RTP_PROTOS)),
        formats=draw(_RTP_FORMATS),
        attributes=tuple(draw(st.lists(attribute, max_size=6))),
    )
    return SessionDescription(
        version=draw(st.integers(0, 2)),
        origin=draw(origins()),
        session_name="-",
        connection=Connection.for_address(
            draw(st.ip_addresses().map(str).filter(lambda a: a not in ("0.0.0.0", "::")))
        ),
        times=draw(_TIMES),
        attributes=tuple(draw(st.lists(st.tuples(st.sampled_from(DIRECTIONS), st.none()), max_size=1))),
        media=(media,),
    )


_RELAY_ADDRESSES = st.sampled_from([PBX, "127.0.0.1", "2001:db8::1", "::1"])


@given(_plain(), _RELAY_ADDRESSES, st.integers(1, 65535), st.integers(1, 10**9), st.integers(0, 2**40))
def test_relay_bytes_writes_every_plain_description(
    description: SessionDescription, address: str, port: int, session_id: int, version: int
) -> None:
    fast = relay_bytes(description, address, [port], session_id=session_id, version=version)
    assert fast is not None
    assert (
        fast
        == rewrite_for_relay(description, address, [port], session_id=session_id, version=version).to_bytes()
    )


@given(
    _plain() | _near_plain() | session_descriptions(),
    _RELAY_ADDRESSES,
    st.integers(-1, 65536) | st.none(),
    st.none() | st.integers(1, 10**9) | tokens(),
    st.none() | st.integers(0, 2**40),
)
def test_relay_bytes_is_the_rewrite_written_at_once(
    description: SessionDescription, address: str, port: int | None, session_id: object, version: int | None
) -> None:
    """Whenever `relay_bytes` gives bytes, they are those of `rewrite_for_relay` (the full path)."""
    ports = [port] * len(description.media)
    fast = relay_bytes(description, address, ports, session_id=session_id, version=version)  # type: ignore[arg-type]
    if fast is None:
        return
    slow = rewrite_for_relay(description, address, ports, session_id=session_id, version=version)  # type: ignore[arg-type]
    assert fast == slow.to_bytes()
    assert SessionDescription.parse(fast) == slow


def test_relay_bytes_takes_the_plain_bodies_of_real_phones() -> None:
    """SIPp's and the common corpus offers are plain: written at once; a WebRTC offer is not."""
    sipp = SessionDescription.parse(
        b"v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    fast = relay_bytes(sipp, PBX, [20000], session_id=7, version=2)
    assert fast is not None
    assert fast == rewrite_for_relay(sipp, PBX, [20000], session_id=7, version=2).to_bytes()
    assert fast.startswith(b"v=0\r\no=pbx 7 2 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\n")
    assert b"m=audio 20000 RTP/AVP 0 8 101\r\nc=IN IP4 203.0.113.1\r\na=rtpmap:0 PCMU/8000\r\n" in fast
    assert (
        relay_bytes(corpus("webrtc-offer.sdp"), PBX, [20000] * len(corpus("webrtc-offer.sdp").media)) is None
    )
    held = SessionDescription.parse(b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
                                    b"m=audio 6000 RTP/AVP 0\r\n")  # fmt: skip
    assert relay_bytes(held, PBX, [20000]) is None  # old-style hold keeps its c= (rewrite_for_relay)
    assert relay_bytes(sipp, PBX, [70000]) is None  # out of range: rewrite_for_relay raises
    with pytest.raises(ValueError):
        rewrite_for_relay(sipp, PBX, [70000])
