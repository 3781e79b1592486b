"""Tests for `pbx.sip.message`: the header container, typed accessors, responses and serialization."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.sip.errors import SipParseError
from pbx.sip.headers import CSeq, NameAddress, Via
from pbx.sip.message import (
    MAGIC_COOKIE,
    REASON_PHRASES,
    Headers,
    Request,
    Response,
    new_branch,
    new_call_id,
    new_tag,
)
from pbx.sip.parser import parse_message
from pbx.sip.uri import parse_uri
from pbx.testing import requests, responses

# -- Headers -----------------------------------------------------------------------------------------------


def test_get_is_case_insensitive_and_knows_compact_forms() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("call-id", "abc"), ("X-Thing", "1")])
    assert headers.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert headers.get("VIA") == headers.get("v") == headers.get("V")
    assert headers.get("Call-ID") == headers.get("i") == "abc"
    assert headers.get("x-thing") == "1"
    assert headers.get("Missing") is None
    assert headers.get("Missing", "dflt") == "dflt"
    assert "CALL-ID" in headers
    assert "i" in headers
    assert "To" not in headers
    assert list(headers) == [("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("Call-ID", "abc"), ("X-Thing", "1")]
    assert len(headers) == 3


def test_get_all_splits_list_headers_across_lines_and_commas() -> None:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP p3;branch=z9hG4bK3, SIP/2.0/UDP p2;branch=z9hG4bK2"),
            ("To", "<sip:b@example.com>"),
            ("v", "SIP/2.0/UDP p1;branch=z9hG4bK1"),
            ("Route", '<sip:r1;lr>, "Edge, west" <sip:r2;lr>'),
            ("route", "<sip:r3;lr>"),
        ]
    )
    assert headers.get_all("Via") == [
        "SIP/2.0/UDP p3;branch=z9hG4bK3",
        "SIP/2.0/UDP p2;branch=z9hG4bK2",
        "SIP/2.0/UDP p1;branch=z9hG4bK1",
    ]
    assert headers.get("Via") == "SIP/2.0/UDP p3;branch=z9hG4bK3"
    assert headers.get_all("ROUTE") == ["<sip:r1;lr>", '"Edge, west" <sip:r2;lr>', "<sip:r3;lr>"]
    assert headers.get_all("Record-Route") == []


def test_non_list_headers_are_not_split_at_commas() -> None:
    auth = 'Digest username="bob", realm="biloxi.com", nonce="dcd98b,7102dd2f0e", uri="sip:b@example.com"'
    headers = Headers(
        [
            ("Authorization", auth),
            ("Subject", "lunch, dinner"),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("From", '"Doe, John" <sip:jd@example.com>;tag=1'),
            ("User-Agent", "pbx/1.0 (linux, x86)"),
            ("X-Unknown", "a, b"),
        ]
    )
    assert headers.get("Authorization") == auth
    assert headers.get_all("Authorization") == [auth]
    assert headers.get_all("Subject") == ["lunch, dinner"]
    assert headers.get("Date") == "Sat, 13 Nov 2010 23:29:00 GMT"
    assert headers.get("From") == '"Doe, John" <sip:jd@example.com>;tag=1'
    assert headers.get_all("user-agent") == ["pbx/1.0 (linux, x86)"]
    assert headers.get_all("X-Unknown") == ["a, b"]


def test_get_skips_empty_list_fields() -> None:
    headers = Headers([("Supported", ""), ("Supported", "timer, 100rel")])
    assert headers.get("Supported") == "timer"
    assert headers.get_all("Supported") == ["timer", "100rel"]
    assert Headers([("Supported", " ")]).get("Supported", "none") == "none"


def test_non_list_header_repeated_on_several_lines() -> None:
    headers = Headers([("Subject", "a, b"), ("Subject", "c")])
    assert headers.get("Subject") == "a, b"
    assert headers.get_all("Subject") == ["a, b", "c"]


def test_add_keeps_order_and_canonicalizes_names() -> None:
    headers = Headers()
    headers.add("m", "<sip:a@b>")
    headers.add("CSEQ", "1 INVITE")
    headers.add("x-custom", "y")
    assert list(headers) == [("Contact", "<sip:a@b>"), ("CSeq", "1 INVITE"), ("x-custom", "y")]


def test_prepend_goes_before_the_first_of_its_name() -> None:
    headers = Headers([("To", "t"), ("Via", "v2"), ("Via", "v1"), ("From", "f")])
    headers.prepend("v", "v3")
    headers.prepend("Record-Route", "<sip:rr;lr>")
    assert list(headers) == [
        ("Record-Route", "<sip:rr;lr>"),
        ("To", "t"),
        ("Via", "v3"),
        ("Via", "v2"),
        ("Via", "v1"),
        ("From", "f"),
    ]
    assert headers.get("Via") == "v3"


def test_set_replaces_every_field_at_the_place_of_the_first() -> None:
    headers = Headers([("X-A", "1"), ("Contact", "<sip:x>"), ("X-B", "2"), ("m", "<sip:y>"), ("X-C", "3")])
    headers.set("CONTACT", "<sip:z>")
    assert list(headers) == [("X-A", "1"), ("Contact", "<sip:z>"), ("X-B", "2"), ("X-C", "3")]
    headers.set("Expires", "60")
    assert list(headers)[-1] == ("Expires", "60")


def test_remove() -> None:
    headers = Headers([("Route", "<sip:a>"), ("To", "t"), ("route", "<sip:b>")])
    headers.remove("ROUTE")
    assert list(headers) == [("To", "t")]
    headers.remove("Not-There")
    assert list(headers) == [("To", "t")]


def test_pop_first_takes_the_top_value_of_a_list_header() -> None:
    headers = Headers(
        [("To", "t"), ("Route", "<sip:r1;lr>, <sip:r2;lr>"), ("Route", "<sip:r3;lr>"), ("Subject", "a, b")]
    )
    assert headers.pop_first("route") == "<sip:r1;lr>"
    assert list(headers) == [
        ("To", "t"),
        ("Route", "<sip:r2;lr>"),
        ("Route", "<sip:r3;lr>"),
        ("Subject", "a, b"),
    ]
    assert headers.pop_first("Route") == "<sip:r2;lr>"
    assert headers.pop_first("Route") == "<sip:r3;lr>"
    assert headers.pop_first("Route") is None
    assert headers.pop_first("Subject") == "a, b"  # not a list header: the whole field
    assert list(headers) == [("To", "t")]


def test_pop_first_skips_empty_fields() -> None:
    headers = Headers([("Via", ""), ("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b")])
    assert headers.pop_first("Via") == "SIP/2.0/UDP a"
    assert headers.get_all("Via") == ["SIP/2.0/UDP b"]


def test_copy_is_independent() -> None:
    headers = Headers([("To", "t")])
    copy = headers.copy()
    copy.add("From", "f")
    copy.set("To", "u")
    assert list(headers) == [("To", "t")]
    assert list(copy) == [("To", "u"), ("From", "f")]
    assert repr(headers) == "Headers([('To', 't')])"


# -- typed accessors ---------------------------------------------------------------------------------------


def invite() -> Request:
    return Request(
        "INVITE",
        parse_uri("sip:bob@biloxi.example.com"),
        [
            ("Via", "SIP/2.0/UDP proxy.atlanta.example.com;branch=z9hG4bK2d4790.1"),
            ("Via", "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1"),
            ("Max-Forwards", "69"),
            ("To", "Bob <sip:bob@biloxi.example.com>"),
            ("From", '"Alice, A." <sip:alice@atlanta.example.com>;tag=1928301774'),
            ("Call-ID", "a84b4c76e66710@pc33.atlanta.example.com"),
            ("CSeq", "314159 INVITE"),
            ("Contact", "<sip:alice@pc33.atlanta.example.com>, <sip:alice@192.0.2.1>;q=0.1"),
            ("Record-Route", "<sip:proxy.atlanta.example.com;lr>"),
            ("Content-Type", "application/sdp"),
        ],
        b"v=0\r\n",
    )


def test_parsed_is_cached_until_that_header_changes() -> None:
    calls: list[str] = []

    def parse(text: str) -> str:
        calls.append(text)
        return text.upper()

    headers = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("To", "<sip:b@h>"), ("CSeq", "1 X")])
    assert headers.parsed("Via", parse) == "SIP/2.0/UDP A;BRANCH=Z9HG4BK1"
    assert headers.parsed("v", parse) == "SIP/2.0/UDP A;BRANCH=Z9HG4BK1"  # compact form: same header
    assert headers.parsed("To", parse) == "<SIP:B@H>"
    assert headers.parsed("X-Absent", parse) is None
    assert len(calls) == 2  # the absent header is not parsed at all
    headers.add("Server", "pbx")  # another header: nothing forgotten
    headers.replace_first("To", "<sip:c@h>;tag=1")
    assert headers.parsed("Via", parse) == "SIP/2.0/UDP A;BRANCH=Z9HG4BK1"
    assert headers.parsed("To", parse) == "<SIP:C@H>;TAG=1"
    assert len(calls) == 3
    headers.add("X-Absent", "now here")
    assert headers.parsed("X-Absent", parse) == "NOW HERE"
    for change in (
        lambda h: h.prepend("Via", "SIP/2.0/TCP b"),
        lambda h: h.set("Via", "SIP/2.0/TLS c"),
        lambda h: h.pop_first("Via"),
        lambda h: h.remove("Via"),
    ):
        before = headers.get("Via")
        change(headers)
        after = headers.get("Via")
        assert headers.parsed("Via", parse) == (after.upper() if after is not None else None), before


def test_forget_parsed_drops_the_cache_and_parses_again_when_asked() -> None:
    calls: list[str] = []

    def parse(text: str) -> str:
        calls.append(text)
        return text.upper()

    headers = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("CSeq", "1 INVITE")])
    assert headers.parsed("CSeq", parse) == "1 INVITE"
    headers.forget_parsed()
    assert headers.parsed("CSeq", parse) == "1 INVITE"
    assert calls == ["1 INVITE", "1 INVITE"]
    headers.forget_parsed()  # twice, or with nothing cached: nothing to do
    headers.forget_parsed()
    assert headers.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"


def test_packed_headers_unpack_on_any_read_with_the_same_fields() -> None:
    wire = (
        b"INVITE sip:1002@example.com SIP/2.0\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP b\r\n"
        b"f: <sip:1001@example.com>;tag=1\r\nTo: <sip:1002@example.com>\r\ni: c1@x\r\nCSeq: 1 INVITE\r\n"
        b"x-Odd-Name: a: b:c\r\nSubject:\r\nl: 0\r\n\r\n"
    )
    request = parse_message(wire)
    assert isinstance(request, Request)
    before = list(request.headers)
    assert request.cseq.number == 1  # something parsed: dropped by pack
    request.headers.pack()
    request.headers.pack()  # twice: nothing more to do
    assert hasattr(request.headers, "_packed")  # (reading `_fields` would unpack)
    assert request.cseq.number == 1
    assert list(request.headers) == before
    assert request.to_bytes() == parse_message(request.to_bytes()).to_bytes()  # type: ignore[union-attr]
    for change in (
        lambda h: h.add("Via", "SIP/2.0/TCP c"),
        lambda h: h.remove("Via"),
        lambda h: h.set("Subject", "s"),
        lambda h: h.get_all("Via"),
        lambda h: len(h),
    ):
        headers = Headers(before)
        expected = Headers(before)
        headers.pack()
        assert change(headers) == change(expected)
        assert list(headers) == list(expected)


def test_headers_that_would_not_unpack_the_same_stay_unpacked() -> None:
    headers = Headers([("Subject", "a\nb")])
    headers.pack()
    assert not hasattr(headers, "_packed")
    assert headers.get("Subject") == "a\nb"
    empty = Headers()
    empty.pack()
    assert list(empty) == []


def test_parse_errors_are_not_cached() -> None:
    headers = Headers([("CSeq", "x")])
    for _ in range(2):
        with pytest.raises(SipParseError):
            headers.parsed("CSeq", CSeq.parse)
    headers.set("CSeq", "2 OPTIONS")
    assert headers.parsed("CSeq", CSeq.parse) == CSeq(2, "OPTIONS")


def test_remember_parsed_and_subset_carry_parsed_values() -> None:
    request = parse_message(
        b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    assert isinstance(request, Request)
    stamped = Via.parse("SIP/2.0/UDP a;branch=z9hG4bK1;received=192.0.2.1")
    request.headers.replace_first("Via", str(stamped))
    request.headers.remember_parsed("Via", Via.parse, stamped)
    assert request.top_via is stamped
    cseq = request.cseq
    response = request.response(200, to_tag="t")
    assert response.top_via is stamped  # parsed once, for the request
    assert response.cseq is cseq
    assert response.to.tag == "t" and request.to.tag is None  # To changed in the response only
    response.headers.replace_first("Via", "SIP/2.0/UDP other;branch=z9hG4bK2")
    assert response.top_via is not None and response.top_via.host == "other"
    assert request.top_via is stamped


def test_extend_appends_in_order() -> None:
    headers = Headers([("Via", "SIP/2.0/UDP a")])
    headers.extend([("Allow", "OPTIONS"), ("Accept", "application/sdp")])
    assert list(headers) == [("Via", "SIP/2.0/UDP a"), ("Allow", "OPTIONS"), ("Accept", "application/sdp")]


def test_typed_accessors() -> None:
    request = invite()
    assert request.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert request.cseq == CSeq(314159, "INVITE")
    assert request.from_.tag == "1928301774"
    assert request.from_.display_name == "Alice, A."
    assert request.to.display_name == "Bob"
    assert request.to.tag is None
    assert [v.branch for v in request.vias] == ["z9hG4bK2d4790.1", "z9hG4bK776asdhds"]
    top = request.top_via
    assert top is not None and top.host == "proxy.atlanta.example.com"
    assert [c.param("q") for c in request.contacts] == [None, "0.1"]


def test_missing_headers() -> None:
    request = Request("OPTIONS", parse_uri("sip:a@b"))
    assert request.call_id is None
    assert request.top_via is None
    assert request.vias == []
    assert request.contacts == []
    with pytest.raises(SipParseError, match="Missing CSeq"):
        request.cseq  # noqa: B018
    with pytest.raises(SipParseError, match="Missing From"):
        request.from_  # noqa: B018
    with pytest.raises(SipParseError, match="Missing To"):
        request.to  # noqa: B018


def test_malformed_headers_raise_on_access() -> None:
    request = Request(
        "OPTIONS",
        parse_uri("sip:a@b"),
        [
            ("CSeq", "x OPTIONS"),
            ("Via", "SIP/2.0 nowhere"),
            ("From", '"open <sip:a@b>'),
            ("Contact", "<sip:a@b"),
        ],
    )
    for accessor in ("cseq", "vias", "top_via", "from_", "contacts"):
        with pytest.raises(SipParseError):
            getattr(request, accessor)


# -- responses built from requests -------------------------------------------------------------------------


def test_response_copies_the_dialog_and_transaction_headers() -> None:
    request = invite()
    response = request.response(180, to_tag="a6c85cf")
    assert response.status == 180
    assert response.reason == "Ringing"
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert [name for name, _ in response.headers] == ["Via", "Via", "From", "To", "Call-ID", "CSeq"]
    assert response.headers.get("From") == request.headers.get("From")
    assert response.to.tag == "a6c85cf"
    assert response.to.display_name == "Bob"
    assert response.to.uri == request.to.uri
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    assert response.body == b""
    for absent in ("Contact", "Record-Route", "Max-Forwards", "Content-Type"):
        assert absent not in response.headers


def test_response_keeps_comma_joined_vias_in_order() -> None:
    request = invite()
    request.headers.set("Via", "SIP/2.0/TCP p3;branch=z9hG4bK3, SIP/2.0/UDP p2;branch=z9hG4bK2")
    request.headers.add("Via", "SIP/2.0/UDP p1;branch=z9hG4bK1")
    response = request.response(200, to_tag="x")
    assert [v.branch for v in response.vias] == ["z9hG4bK3", "z9hG4bK2", "z9hG4bK1"]


def test_response_does_not_tag_100_trying() -> None:
    response = invite().response(100, to_tag="abc")
    assert response.to.tag is None
    assert response.reason == "Trying"
    assert response.provisional


def test_response_without_to_tag_argument_leaves_to_alone() -> None:
    request = invite()
    response = request.response(486)
    assert response.headers.get("To") == request.headers.get("To")
    assert not response.provisional


def test_response_keeps_an_existing_to_tag() -> None:
    request = invite()
    request.headers.set("To", "<sip:bob@biloxi.example.com>;tag=existing")
    response = request.response(200, to_tag="new")
    assert response.to.tag == "existing"
    assert response.headers.get_all("To") == ["<sip:bob@biloxi.example.com>;tag=existing"]


def test_response_adds_the_tag_once() -> None:
    request = invite()
    request.headers.set("t", "sip:bob@biloxi.example.com")  # addr-spec, compact name
    response = request.response(200, to_tag="t1")
    assert len(response.headers.get_all("To")) == 1
    assert response.to.params == (("tag", "t1"),)
    again = Request(
        "BYE", parse_uri("sip:a@b"), [("To", str(response.headers.get("To"))), ("CSeq", "2 BYE")]
    ).response(200, to_tag="t2")
    assert again.to.params == (("tag", "t1"),)


def test_response_to_a_request_with_a_malformed_to() -> None:
    """check_request answers a bad To with SipError(400); building that 400 must not fail in turn."""
    request = invite()
    request.headers.set("To", "<sip:bob@biloxi.example.com")
    response = request.response(400, "Bad To header", to_tag="x")
    assert response.status == 400
    assert response.headers.get("To") is not None
    assert response.call_id == request.call_id


def test_response_reason_phrases() -> None:
    request = invite()
    assert request.response(404).reason == "Not Found"
    assert request.response(404, "No Such User").reason == "No Such User"
    assert request.response(499).reason == "Unknown"
    assert Response(200).reason == "OK"
    assert Response(200, "").reason == ""
    for status in (100, 180, 183, 200, 400, 401, 407, 481, 486, 487, 488, 500, 503, 505, 513, 603):
        assert status in REASON_PHRASES


def test_response_headers_are_independent_of_the_request() -> None:
    request = invite()
    response = request.response(200, to_tag="x")
    response.headers.remove("Via")
    response.headers.add("Contact", "<sip:bob@192.0.2.4>")
    assert len(request.headers.get_all("Via")) == 2
    assert request.headers.get_all("Contact") == invite().headers.get_all("Contact")


def test_copy_of_request_and_response() -> None:
    request = invite()
    copy = request.copy()
    copy.headers.prepend("Via", "SIP/2.0/UDP b2bua;branch=z9hG4bKnew")
    copy.method = "CANCEL"
    assert len(request.vias) == 2
    assert request.method == "INVITE"
    assert copy.uri == request.uri and copy.body == request.body
    response = request.response(200, to_tag="x")
    rcopy = response.copy()
    rcopy.headers.remove("To")
    assert "To" in response.headers
    assert (rcopy.status, rcopy.reason) == (200, "OK")


# -- serialization -----------------------------------------------------------------------------------------


def test_to_bytes_writes_crlf_and_a_correct_content_length() -> None:
    request = invite()
    request.headers.add("Content-Length", "9999")
    request.headers.add("l", "7")
    data = bytes(request)
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == b"v=0\r\n"
    lines = head.split(b"\r\n")
    assert lines[0] == b"INVITE sip:bob@biloxi.example.com SIP/2.0"
    assert lines[-1] == b"Content-Length: 5"
    assert sum(1 for line in lines if line.lower().startswith(b"content-length")) == 1
    assert b"\n" not in head.replace(b"\r\n", b"")
    assert request.to_bytes() == data


def test_to_bytes_of_response_without_body() -> None:
    response = Response(404, headers=[("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("Content-Length", "12")])
    assert (
        bytes(response)
        == b"SIP/2.0 404 Not Found\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
    )


def test_to_bytes_keeps_header_order_and_canonical_names() -> None:
    request = Request(
        "MESSAGE", parse_uri("sip:a@b"), [("x-z", "1"), ("v", "SIP/2.0/UDP h"), ("i", "c")], b"\xff"
    )
    assert bytes(request) == (
        b"MESSAGE sip:a@b SIP/2.0\r\nx-z: 1\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\n"
        b"Content-Length: 1\r\n\r\n\xff"
    )


def test_to_bytes_encodes_utf8() -> None:
    response = Response(200, "Très bien", [("Subject", "大停電")])
    assert bytes(response).startswith("SIP/2.0 200 Très bien\r\nSubject: 大停電\r\n".encode())


def test_repr() -> None:
    assert (
        repr(invite())
        == "<Request INVITE sip:bob@biloxi.example.com call-id='a84b4c76e66710@pc33.atlanta.example.com'>"
    )
    assert repr(Response(503)) == "<Response 503 Service Unavailable call-id=None>"


# -- identifiers -------------------------------------------------------------------------------------------


def test_new_identifiers() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(re.fullmatch(MAGIC_COOKIE + "[0-9a-f]{24}", b) for b in branches)
    tags = {new_tag() for _ in range(100)}
    assert len(tags) == 100
    assert all(re.fullmatch("[0-9a-f]{12}", t) for t in tags)
    call_id = new_call_id("pbx.example.com")
    assert re.fullmatch("[0-9a-f]{24}@pbx.example.com", call_id)
    assert new_call_id("h") != new_call_id("h")


# -- properties --------------------------------------------------------------------------------------------


def _without_content_length(fields: Headers) -> list[tuple[str, str]]:
    return [(n, v) for n, v in fields if n != "Content-Length"]


@settings(max_examples=100, deadline=None)
@given(requests())
def test_request_bytes_round_trip(request: Request) -> None:
    parsed = parse_message(bytes(request))
    assert isinstance(parsed, Request)
    assert parsed.start_line() == request.start_line()
    assert parsed.method == request.method
    assert parsed.uri == request.uri
    assert _without_content_length(parsed.headers) == list(request.headers)
    assert parsed.headers.get("Content-Length") == str(len(request.body))
    assert parsed.body == request.body
    assert bytes(parsed) == bytes(request)


@settings(max_examples=100, deadline=None)
@given(responses())
def test_response_bytes_round_trip(response: Response) -> None:
    parsed = parse_message(bytes(response), stream=True)
    assert isinstance(parsed, Response)
    assert parsed.start_line() == response.start_line()
    assert (parsed.status, parsed.reason) == (response.status, response.reason)
    assert _without_content_length(parsed.headers) == list(response.headers)
    assert parsed.body == response.body
    assert bytes(parsed) == bytes(response)


@settings(max_examples=50, deadline=None)
@given(requests())
def test_generated_requests_are_well_formed(request: Request) -> None:
    """The strategies build what they promise: every typed accessor parses."""
    assert request.cseq.method == request.method
    assert request.from_.tag is not None
    assert isinstance(request.to, NameAddress)
    assert all(isinstance(v, Via) and v.branch and v.branch.startswith(MAGIC_COOKIE) for v in request.vias)
    assert request.call_id
    assert len(request.contacts) <= 2


@settings(max_examples=50, deadline=None)
@given(requests())
def test_response_to_generated_request(request: Request) -> None:
    response = request.response(200, to_tag="srv1")
    assert [str(v) for v in response.vias] == [str(v) for v in request.vias]
    assert response.from_ == request.from_
    assert response.to.uri == request.to.uri
    assert response.to.tag == (request.to.tag or "srv1")
    assert response.cseq == request.cseq
    assert response.call_id == request.call_id
    reparsed = parse_message(bytes(response))
    assert isinstance(reparsed, Response)
    assert reparsed.to == response.to


def test_first_values_gives_first_values_and_the_first_repeated_name() -> None:
    headers = Headers([("To", "<sip:a@b>"), ("f", "<sip:c@d>;tag=1"), ("Via", "x"), ("t", "<sip:e@f>")])
    found, repeated = headers.first_values(frozenset(("to", "from", "call-id")))
    assert found == {"to": "<sip:a@b>", "from": "<sip:c@d>;tag=1"}
    assert repeated == "To"
    assert headers.first_values(frozenset(("via",))) == ({"via": "x"}, None)


def test_parsed_keeps_two_parsers_of_one_header_apart_and_forgets_both() -> None:
    headers = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("CSeq", "1 X")])
    assert headers.parsed("Via", str.upper) == "SIP/2.0/UDP A;BRANCH=Z9HG4BK1"
    assert headers.parsed("Via", str.lower) == "sip/2.0/udp a;branch=z9hg4bk1"
    assert headers.parsed("Via", str.upper) == "SIP/2.0/UDP A;BRANCH=Z9HG4BK1"
    copied = headers.subset(("via",))
    assert copied.parsed("Via", len) == len("SIP/2.0/UDP a;branch=z9hG4bK1")
    assert copied.parsed("Via", str.lower) == "sip/2.0/udp a;branch=z9hg4bk1"
    headers.replace_first("Via", "SIP/2.0/TCP b")
    assert headers.parsed("Via", str.lower) == "sip/2.0/tcp b"
    assert headers.parsed("Via", str.upper) == "SIP/2.0/TCP B"
    headers.remember_parsed("Via", str.upper, "REMEMBERED")
    assert headers.parsed("Via", str.upper) == "REMEMBERED"
    assert headers.parsed("Via", str.lower) == "sip/2.0/tcp b"
    assert headers.parsed("CSeq", str.lower) == "1 x"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Via", "From", "To", "Call-ID", "CSeq", "Contact", "v", "Route"]), st.text()
        ),
        max_size=16,
    ),
    st.sampled_from([("via", "from", "to", "call-id", "cseq"), ("cseq", "via"), ("route",), ()]),
)
def test_subset_groups_fields_in_the_order_of_the_keys(fields: list[tuple[str, str]], keys: tuple) -> None:
    """Each key's fields in their order, the keys in the order given (the one-pass grouping is the same as a
    pass per key)."""
    headers = Headers(fields)
    every = list(headers)
    expected = [(name, value) for key in keys for name, value in every if name.lower() == key]
    assert list(headers.subset(keys)) == expected
