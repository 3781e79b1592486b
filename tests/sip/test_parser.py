"""Tests for `pbx.sip.parser`: the torture corpus, datagram parsing, limits, stream framing and fuzzing.

The corpus under tests/data/torture/ holds our own messages modelled on the cases of RFC 4475: valid but odd
messages at the top, invalid ones in invalid/ with their expected outcome in `INVALID` below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbx.sip import parser as parser_module
from pbx.sip.errors import SipParseError
from pbx.sip.headers import NameAddress
from pbx.sip.message import Headers, Request, Response
from pbx.sip.parser import (
    DEFAULT_LIMITS,
    ParserLimits,
    StreamFramer,
    _parse_header_lines,
    _parse_plain_head,
    parse_message,
)
from pbx.sip.uri import AbsoluteURI, SipURI, TelURI, parse_uri
from pbx.testing import requests, responses

TORTURE = Path(__file__).resolve().parents[1] / "data" / "torture"
VALID_FILES = sorted(TORTURE.glob("*.sip"))
INVALID_FILES = sorted((TORTURE / "invalid").glob("*.sip"))

SDP_PREFIX = b"v=0\r\no=pbx "


def load(name: str) -> bytes:
    return (TORTURE / name).read_bytes()


def parse_file(name: str, **kwargs: bool) -> Request | Response:
    return parse_message(load(name), **kwargs)


def parse_request(data: bytes, limits: ParserLimits = DEFAULT_LIMITS, *, stream: bool = False) -> Request:
    message = parse_message(data, limits, stream=stream)
    assert isinstance(message, Request)
    return message


def parse_error(data: bytes, limits: ParserLimits = DEFAULT_LIMITS, *, stream: bool = False) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data, limits, stream=stream)
    return info.value


def crlf(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


OPTIONS_HEAD = (
    "OPTIONS sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKopt1",
    "Max-Forwards: 70",
    "From: <sip:alice@atlanta.example.com>;tag=1928301774",
    "To: <sip:bob@biloxi.example.com>",
    "Call-ID: a84b4c76e66710",
    "CSeq: 63104 OPTIONS",
)


def options(*extra: str, body: bytes = b"", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return crlf(*OPTIONS_HEAD, *extra, f"Content-Length: {size}", body=body)


# -- the corpus --------------------------------------------------------------------------------------------


def test_corpus_size_and_line_ends() -> None:
    assert 15 <= len(VALID_FILES) <= 30
    assert len(INVALID_FILES) >= 8
    for path in VALID_FILES + INVALID_FILES:
        data = path.read_bytes()
        head = data.split(b"\r\n\r\n", 1)[0]
        if path.name == "bare-lf.sip":
            assert b"\r" not in data
        elif path.name != "garbage.sip":
            assert b"\n" not in head.replace(b"\r\n", b""), f"{path.name} has a bare LF in its head"


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.name)
def test_valid_corpus_message_parses_fully(path: Path) -> None:
    message = parse_message(path.read_bytes())
    # Every mandatory header parses (RFC 3261 8.1.1).
    assert message.call_id
    message.cseq  # noqa: B018
    message.from_  # noqa: B018
    message.to  # noqa: B018
    assert message.vias
    assert message.top_via == message.vias[0]
    message.contacts  # noqa: B018
    if isinstance(message, Request):
        assert message.cseq.method == message.method
    # And the message survives serialization.
    again = parse_message(bytes(message))
    assert type(again) is type(message)
    assert again.start_line() == message.start_line()
    assert [(n, v) for n, v in again.headers if n != "Content-Length"] == [
        (n, v) for n, v in message.headers if n != "Content-Length"
    ]
    assert again.body == message.body
    assert bytes(parse_message(bytes(again))) == bytes(again)


def check_folded(m: Request | Response) -> None:
    assert m.headers.get("Subject") == "a subject that spans three lines"
    assert [(v.transport, v.host, v.port) for v in m.vias] == [
        ("UDP", "gw1.example.org", 5060),
        ("TCP", "edge.example.org", None),
    ]
    assert m.from_.display_name == "George"
    assert m.from_.tag == "g7"
    assert m.to.uri == parse_uri("sip:ringo@example.net")
    assert (m.cseq.number, m.cseq.method) == (314159, "INVITE")
    assert m.body.startswith(SDP_PREFIX)
    assert len(m.body) == int(m.headers.get("Content-Length") or "")


def check_compact(m: Request | Response) -> None:
    names = [name for name, _ in m.headers]
    assert names == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Supported",
        "Subject",
        "Content-Encoding",
        "Event",
        "Allow-Events",
        "Refer-To",
        "Referred-By",
        "Session-Expires",
        "Identity",
        "Content-Type",
        "Content-Length",
    ]
    assert m.from_.display_name == "Yoko"
    assert m.to == NameAddress(uri=parse_uri("sip:paul@example.net"))
    assert m.contacts[0].param("expires") == "60"
    assert m.headers.get_all("k") == ["timer", "100rel"]
    assert m.headers.get_all("Allow-Events") == ["dialog", "message-summary"]
    assert m.headers.get("x") == "1800;refresher=uac"
    assert m.body.startswith(SDP_PREFIX)


def check_whitespace(m: Request | Response) -> None:
    via = m.vias[0]
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "host1.example.com",
        5060,
        "z9hG4bKspace",
    )
    assert via.wants_rport
    assert m.to.uri == parse_uri("sip:user@example.com")
    assert (m.from_.display_name, m.from_.tag) == ("Caller", "1928301774")
    assert m.call_id == "spaces-a84b4c76e66710"
    assert (m.cseq.number, m.cseq.method) == (63104, "OPTIONS")
    assert m.headers.get("Max-Forwards") == "70"
    assert m.headers.get_all("Accept") == ["application/sdp", "application/pidf+xml"]
    assert m.body == b""


def check_escaped_uri(m: Request | Response) -> None:
    assert isinstance(m, Request)
    assert isinstance(m.uri, SipURI)
    assert m.uri.user == "sip:user@example.com"
    assert m.uri.params == (("other-param", "value;with escapes"),)
    assert m.to.uri == parse_uri("sip:alice@atlanta.example.com;transport=tcp")
    assert isinstance(m.from_.uri, SipURI) and m.from_.uri.user == "I have spaces"
    contact = m.contacts[0].uri
    assert isinstance(contact, SipURI)
    assert contact.user == "caller"
    assert contact.params == (("lr", None), ("name", "value%41"))


def check_escaped_null(m: Request | Response) -> None:
    assert isinstance(m.to.uri, SipURI) and m.to.uri.user == "null-\x00-null"
    assert m.from_.uri == m.to.uri
    assert [c.uri.user for c in m.contacts] == ["\x00", "\x00\x00"]  # type: ignore[union-attr]
    assert m.headers.get("Content-Length") == "0"


def check_ipv6(m: Request | Response) -> None:
    assert isinstance(m, Request) and isinstance(m.uri, SipURI)
    assert (m.uri.host, m.uri.port) == ("2001:db8::10", 5070)
    first, second = m.vias
    assert (first.host, first.port, first.received, first.rport) == ("2001:db8::9", 5060, "2001:db8::9", 5061)
    assert (second.host, second.port, second.transport, second.reliable) == ("::1", None, "TCP", True)
    assert m.from_.uri == parse_uri("sip:alice@[2001:DB8::9]")
    assert m.contacts[0].uri == parse_uri("sip:alice@[2001:db8::9]:5060;transport=UDP")
    route = NameAddress.parse(m.headers.get("Record-Route") or "")
    assert isinstance(route.uri, SipURI) and route.uri.host == "2001:db8::1" and route.uri.has_param("lr")


def check_unknown_headers(m: Request | Response) -> None:
    assert m.headers.get("X-Weird_Header.v1!") == "value with: colons; semicolons, commas"
    assert m.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert m.headers.get("P-Empty") == ""
    assert m.body == b"hello"


def check_multi_value(m: Request | Response) -> None:
    assert [v.branch for v in m.vias] == ["z9hG4bKmv3", "z9hG4bKmv2", "z9hG4bKmv1"]
    assert m.headers.get_all("Route") == [
        "<sip:r1.example.com;lr>",
        "<sip:r2.example.com;lr>",
        "<sip:r3.example.com;lr>",
    ]
    assert m.to.display_name == "Carol, C."
    assert [(c.display_name, c.param("q")) for c in m.contacts] == [(None, "0.7"), ("Dave, mobile", "0.1")]
    assert m.contacts[0].param("expires") == "3600"
    assert m.headers.get_all("Supported") == ["timer", "100rel", "replaces"]
    auth = m.headers.get_all("Authorization")
    assert len(auth) == 1 and 'nonce="ab,c"' in auth[0] and auth[0].endswith('"')


def check_display_names(m: Request | Response) -> None:
    assert m.from_.display_name == 'Doe, John "JD" <boss>'
    assert m.from_.tag == "d1"
    assert m.to.display_name == "Jane   Q.  Doe"
    assert m.contacts[0].display_name == "semi;colon, comma \\ backslash"
    reply_to = NameAddress.parse(m.headers.get("Reply-To") or "")
    assert reply_to.display_name == "caller"


def check_long_values(m: Request | Response) -> None:
    assert len(m.vias) == 30
    assert m.vias[29].host == "hop29.example.com"
    assert m.cseq.number == 2**31 - 1
    assert len(m.headers.get("X-Long") or "") == 5000
    assert len(m.to.display_name or "") == 500
    assert m.from_.tag == "t" * 300
    assert isinstance(m, Request) and isinstance(m.uri, SipURI) and m.uri.user == "u" * 200


def check_leading_crlf(m: Request | Response) -> None:
    assert isinstance(m, Request) and m.method == "OPTIONS"
    assert m.call_id == "leading-crlf"


def check_bare_lf(m: Request | Response) -> None:
    assert m.headers.get("Subject") == "folded with a bare LF"
    assert m.cseq.number == 5
    assert m.body == b"ping"


def check_method_token(m: Request | Response) -> None:
    method = "!interesting-Method0123456789_*+`.%~"
    assert isinstance(m, Request) and m.method == method
    assert m.cseq.method == method
    assert m.headers.get("Max-Forwards") == "255"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.from_.param("fromParam''~+*_!.-%") == '"работающий"'
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "大停電"
    assert isinstance(m.uri, SipURI) and m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"


def check_lowercase_version(m: Request | Response) -> None:
    assert m.start_line() == "OPTIONS sip:user@example.com SIP/2.0"
    assert (m.vias[0].protocol, m.vias[0].transport) == ("SIP/2.0", "UDP")


def check_no_reason(m: Request | Response) -> None:
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (100, "")
    assert m.provisional


def check_utf8_reason(m: Request | Response) -> None:
    assert isinstance(m, Response) and m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert m.body.startswith(SDP_PREFIX)
    assert m.to.tag == "2229"


def check_register_instance(m: Request | Response) -> None:
    (contact,) = m.contacts
    assert contact.param("+sip.instance") == '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128;x=y>"'
    assert (contact.param("reg-id"), contact.param("expires"), contact.param("q")) == ("1", "3600", "0.5")
    assert isinstance(contact.uri, SipURI) and contact.uri.has_param("ob") and contact.uri.transport == "tcp"
    assert m.vias[0].has_param("alias")
    assert m.headers.get_all("Supported") == ["path", "outbound", "gruu"]


def check_register_wildcard(m: Request | Response) -> None:
    (contact,) = m.contacts
    assert contact.wildcard
    assert m.headers.get("Expires") == "0"


def check_tel(m: Request | Response) -> None:
    assert isinstance(m, Request)
    assert m.uri == TelURI("+1-201-555-0123", (("ext", "42"),))
    assert m.from_.uri == TelURI("7042", (("phone-context", "example.com"),))
    assert m.from_.tag == "t1"
    assert m.to.uri == m.uri


def check_unknown_scheme(m: Request | Response) -> None:
    assert isinstance(m, Request)
    assert m.uri == AbsoluteURI("urn", "service:sos")
    assert m.to.uri == AbsoluteURI("mailto", "help@example.com")


def check_truncated(m: Request | Response) -> None:
    assert m.body == b"hello"


def check_no_content_length(m: Request | Response) -> None:
    assert m.body == b"the body runs to the end of the datagram"
    assert "Content-Length" not in m.headers


def check_semicolon_user(m: Request | Response) -> None:
    assert isinstance(m, Request) and isinstance(m.uri, SipURI)
    assert (m.uri.user, m.uri.host, m.uri.params) == ("user;par=u@example.net", "example.com", ())
    assert isinstance(m.from_.uri, SipURI) and m.from_.uri.user == "user;par=x"
    assert m.to.tag == "addrspec"
    assert m.to.uri == SipURI(host="example.com", user="user")


def check_uri_headers(m: Request | Response) -> None:
    assert isinstance(m, Response) and (m.status, m.reason) == (302, "Moved Temporarily")
    (contact,) = m.contacts
    assert isinstance(contact.uri, SipURI)
    assert contact.uri.headers == (("Subject", "call me"), ("Priority", "urgent"))
    assert contact.param("expires") == "60"


CHECKS: dict[str, Callable[[Request | Response], None]] = {
    "folded.sip": check_folded,
    "compact.sip": check_compact,
    "whitespace.sip": check_whitespace,
    "escaped-uri.sip": check_escaped_uri,
    "escaped-null.sip": check_escaped_null,
    "ipv6.sip": check_ipv6,
    "unknown-headers.sip": check_unknown_headers,
    "multi-value.sip": check_multi_value,
    "display-names.sip": check_display_names,
    "long-values.sip": check_long_values,
    "leading-crlf.sip": check_leading_crlf,
    "bare-lf.sip": check_bare_lf,
    "method-token.sip": check_method_token,
    "sip-lowercase-version.sip": check_lowercase_version,
    "response-noreason.sip": check_no_reason,
    "response-utf8-reason.sip": check_utf8_reason,
    "register-instance.sip": check_register_instance,
    "register-wildcard.sip": check_register_wildcard,
    "tel-uri.sip": check_tel,
    "unknown-scheme.sip": check_unknown_scheme,
    "udp-body-truncated.sip": check_truncated,
    "no-content-length.sip": check_no_content_length,
    "semicolon-user.sip": check_semicolon_user,
    "uri-headers.sip": check_uri_headers,
}


def test_every_valid_file_has_specific_checks() -> None:
    assert sorted(CHECKS) == [p.name for p in VALID_FILES]


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_valid_corpus_details(name: str) -> None:
    CHECKS[name](parse_file(name))


class Outcome(NamedTuple):
    """What an invalid corpus message must do.

    stage: "parse" when parse_message must fail, else the accessor that must raise (the parser is lazy).
    reason: a substring of SipParseError.reason.
    request: for parse failures, whether the partially parsed request is attached.
    """

    stage: str
    reason: str
    request: bool = False
    status: int = 400


INVALID = {
    "bad-start-line.sip": Outcome("parse", "Malformed request line", request=True),
    "garbage.sip": Outcome("parse", "Malformed request line"),
    "bad-status-line.sip": Outcome("parse", "Malformed status line"),
    "missing-colon.sip": Outcome("parse", "Malformed header line", request=True),
    "continuation-first.sip": Outcome("parse", "Continuation line without a header", request=True),
    "content-length-too-large.sip": Outcome("parse", "Content-Length larger than body", request=True),
    "content-length-non-numeric.sip": Outcome("parse", "Bad Content-Length", request=True),
    "content-length-negative.sip": Outcome("parse", "Bad Content-Length", request=True),
    "bad-request-uri.sip": Outcome("parse", "Bad Request-URI", request=True),
    "version-7.sip": Outcome("parse", "Version Not Supported", request=True, status=505),
    "bad-cseq-number.sip": Outcome("cseq", "Bad CSeq number"),
    "bad-cseq-method.sip": Outcome("cseq", "Bad CSeq"),
    "bad-via.sip": Outcome("vias", "Bad Via sent-protocol"),
    "bad-via-port.sip": Outcome("vias", "Bad port"),
    "unterminated-quote.sip": Outcome("from_", "Unterminated display name"),
    "unterminated-uri.sip": Outcome("to", "Unterminated <URI>"),
}


def test_every_invalid_file_has_an_outcome() -> None:
    assert sorted(INVALID) == [p.name for p in INVALID_FILES]


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_corpus(name: str) -> None:
    outcome = INVALID[name]
    data = load(f"invalid/{name}")
    if outcome.stage != "parse":
        message = parse_message(data)
        with pytest.raises(SipParseError) as info:
            getattr(message, outcome.stage)
        assert outcome.reason in info.value.reason
        return
    error = parse_error(data)
    assert outcome.reason in error.reason
    assert error.status == outcome.status
    assert str(error) == error.reason
    if not outcome.request:
        assert error.request is None
        return
    assert isinstance(error.request, Request)
    assert error.request.method in ("INVITE", "MESSAGE", "OPTIONS")
    if name != "continuation-first.sip":
        # Everything a 400 needs to be routed back (RFC 3261 8.2.6) was parsed.
        assert error.request.top_via is not None and error.request.top_via.branch == "z9hG4bKbad"
        assert error.request.call_id == "invalid-1"


def test_bad_request_uri_keeps_the_text() -> None:
    error = parse_error(load("invalid/bad-request-uri.sip"))
    assert error.request is not None
    assert error.request.uri == AbsoluteURI("invalid", "sip:b@[2001:db8::1")


# -- datagram parsing --------------------------------------------------------------------------------------


def test_simple_request() -> None:
    message = parse_request(options())
    assert message.method == "OPTIONS"
    assert message.uri == parse_uri("sip:bob@biloxi.example.com")
    assert [name for name, _ in message.headers][-1] == "Content-Length"
    assert message.body == b""


def test_response() -> None:
    data = crlf(
        "SIP/2.0 180 Ringing Now",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
        "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710",
        "CSeq: 314159 INVITE",
        "Content-Length: 0",
    )
    message = parse_message(data)
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (180, "Ringing Now")
    assert message.to.tag == "a6c85cf"
    assert message.cseq.method == "INVITE"


@pytest.mark.parametrize("status", ["100", "199", "200", "302", "486", "699"])
def test_status_codes(status: str) -> None:
    message = parse_message(crlf(f"SIP/2.0 {status} X"))
    assert isinstance(message, Response) and message.status == int(status)


@pytest.mark.parametrize(
    "line",
    [
        "SIP/2.0 099 Low",
        "SIP/2.0 700 High",
        "SIP/2.0 20 OK",
        "SIP/2.0 2000 OK",
        "SIP/2.0 abc OK",
        "SIP/3.0 200 OK",
        "SIP/2.0",
    ],
)
def test_bad_status_lines(line: str) -> None:
    error = parse_error(crlf(line, "Call-ID: x"))
    assert error.reason == "Malformed status line"
    assert error.request is None


def test_header_error_in_a_response_attaches_nothing() -> None:
    error = parse_error(crlf("SIP/2.0 200 OK", "Call-ID x"))
    assert error.reason == "Malformed header line"
    assert error.request is None


def test_folded_lines() -> None:
    data = crlf(
        *OPTIONS_HEAD[:2],
        "Subject: I know you're there,",
        "         pick up the phone",
        "\tand talk to me!",
        "X-Empty-Start:",
        "  value",
        "Content-Length: 0",
    )
    message = parse_request(data)
    assert message.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert (message.headers.get("X-Empty-Start") or "").strip() == "value"


def test_folded_value_after_empty_first_line_has_no_leading_space() -> None:
    message = parse_request(crlf(*OPTIONS_HEAD[:2], "Call-ID:", " a84b4c76e66710@h", "Content-Length: 0"))
    assert message.call_id == "a84b4c76e66710@h"


def test_lone_cr_inside_a_header_line_is_rejected() -> None:
    smuggled = "Subject: hi\rVia: SIP/2.0/UDP evil.example.com;branch=z9hG4bKx"
    data = crlf(*OPTIONS_HEAD, smuggled, "Content-Length: 0")
    try:
        message = parse_message(data)
    except SipParseError:
        return
    assert b"\rVia" not in bytes(message)


def test_compact_forms() -> None:
    data = crlf(
        "INVITE sip:bob@biloxi.example.com SIP/2.0",
        "v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK1",
        "f: <sip:alice@atlanta.example.com>;tag=1",
        "t: <sip:bob@biloxi.example.com>",
        "i: abc",
        "CSeq: 1 INVITE",
        "m: <sip:alice@192.0.2.1>",
        "c: text/plain",
        "l: 2",
        body=b"hi",
    )
    message = parse_request(data)
    assert message.top_via is not None and message.top_via.branch == "z9hG4bK1"
    assert (message.call_id, message.from_.tag, message.body) == ("abc", "1", b"hi")
    assert message.headers.get("Content-Type") == "text/plain"
    assert len(message.contacts) == 1


def test_header_names_are_case_insensitive_and_may_have_space_before_the_colon() -> None:
    message = parse_request(
        crlf("OPTIONS sip:a@b SIP/2.0", "CALL-ID  : x", "cseq\t: 1 OPTIONS", "content-length:0")
    )
    assert message.call_id == "x"
    assert message.cseq.number == 1
    assert message.headers.get("Content-Length") == "0"


def test_leading_crlfs_are_ignored() -> None:
    message = parse_request(b"\r\n\r\n\n" + options())
    assert message.method == "OPTIONS"


def test_bare_lf_line_ends_are_tolerated() -> None:
    data = options(body=b"hello").replace(b"\r\n", b"\n")
    message = parse_request(data)
    assert message.call_id == "a84b4c76e66710"
    assert message.body == b"hello"


def test_datagram_body_is_truncated_to_content_length() -> None:
    message = parse_request(options(body=b"hello", length=3))
    assert message.body == b"hel"
    assert parse_request(options(body=b"hello", length=0)).body == b""


def test_datagram_without_content_length_keeps_the_whole_body() -> None:
    data = crlf(*OPTIONS_HEAD, body=b"body\r\n\r\nmore")
    assert parse_request(data).body == b"body\r\n\r\nmore"
    assert parse_request(data, stream=True).body == b""


def test_message_without_blank_line() -> None:
    data = "\r\n".join(OPTIONS_HEAD).encode()
    message = parse_request(data)
    assert message.cseq.number == 63104
    assert message.body == b""
    with pytest.raises(SipParseError, match="Content-Length larger than body"):
        parse_message(data + b"\r\nContent-Length: 4")


def test_content_length_larger_than_body_attaches_the_request() -> None:
    error = parse_error(options(body=b"abc", length=4))
    assert error.reason == "Content-Length larger than body"
    assert error.status == 400
    assert isinstance(error.request, Request)
    assert error.request.call_id == "a84b4c76e66710"
    assert error.request.top_via is not None


@pytest.mark.parametrize("value", ["abc", "-1", "+1", "1.5", "0x10", "", "1 2", "1234567890"])
def test_bad_content_length(value: str) -> None:
    error = parse_error(crlf(*OPTIONS_HEAD, f"Content-Length: {value}"))
    assert error.reason == "Bad Content-Length"
    assert error.request is not None
    response_error = parse_error(crlf("SIP/2.0 200 OK", f"l: {value}"))
    assert response_error.reason == "Bad Content-Length"
    assert response_error.request is None


def test_garbage_has_no_request() -> None:
    for data in (b"", b"\r\n", b"hello", b"\x00\xff\xfe", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        error = parse_error(data)
        assert error.request is None
        assert error.status == 400


@pytest.mark.parametrize(
    ("line", "answerable"),
    [
        # A SIP request line but for its blanks: a 400 can be routed (RFC 4475 3.1.2.8-3.1.2.10).
        ("OPTIONS  sip:a@b SIP/2.0", True),
        ("OPTIONS sip:a@b  SIP/2.0", True),
        ("OPTIONS sip:a@b SIP/2.0 ", True),
        ("OPTIONS sip:a@b SIP/2.0  ", True),
        (" OPTIONS sip:a@b SIP/2.0", True),
        ("OPTIONS sip:a@b; lr SIP/2.0", True),
        ("OPTIONS\tsip:a@b\tSIP/2.0", True),
        # Not a SIP request line: no method or no SIP version.
        ("OPTIONS sip:a@b", False),
        ("OPT:IONS sip:a@b SIP/2.0", False),
        ("OPTIONS sip:a@b HTTP/1.1", False),
        ("OPTIONS sip:a@b 2.0", False),
    ],
)
def test_malformed_request_lines(line: str, answerable: bool) -> None:
    error = parse_error(crlf(line, *OPTIONS_HEAD[1:]))
    assert error.reason == "Malformed request line" or error.reason == "Bad method"
    assert (error.request is not None) is answerable
    if error.request is not None:
        assert error.request.method == "OPTIONS"
        assert error.request.top_via is not None
    assert error.status == 400


@pytest.mark.parametrize("version", ["SIP/2.0", "sip/2.0", "Sip/2.0", "SIP/2.0".lower().upper()])
def test_request_version_is_case_insensitive(version: str) -> None:
    message = parse_request(crlf(f"OPTIONS sip:a@b {version}", *OPTIONS_HEAD[1:]))
    assert message.start_line() == "OPTIONS sip:a@b SIP/2.0"


@pytest.mark.parametrize("version", ["SIP/7.0", "SIP/1.0", "sip/3.0", "SIP/2.00", "SIP/"])
def test_other_versions_are_505_with_the_request(version: str) -> None:
    error = parse_error(crlf(f"INVITE sip:a@b {version}", *OPTIONS_HEAD[1:]))
    assert error.status == 505
    assert error.reason == "Version Not Supported"
    assert isinstance(error.request, Request)
    assert error.request.method == "INVITE"
    assert error.request.call_id == "a84b4c76e66710"


def test_response_version_is_case_insensitive() -> None:
    message = parse_message(crlf("sip/2.0 200 OK", "Call-ID: x"))
    assert isinstance(message, Response) and message.status == 200


def test_bad_header_line_attaches_the_headers_parsed_so_far() -> None:
    error = parse_error(crlf(*OPTIONS_HEAD, "this line has no colon", "Contact: <sip:a@b>"))
    assert error.reason == "Malformed header line"
    assert isinstance(error.request, Request)
    assert error.request.cseq.number == 63104
    assert "Contact" not in error.request.headers


@pytest.mark.parametrize("line", ["no colon here", ": empty name", "bad name: x", "na/me: x", "n@me: x"])
def test_malformed_header_lines(line: str) -> None:
    error = parse_error(crlf("OPTIONS sip:a@b SIP/2.0", line))
    assert error.reason == "Malformed header line"
    assert error.request is not None


def test_bad_request_uri_attaches_the_request() -> None:
    error = parse_error(crlf("OPTIONS sip:a@b:0 SIP/2.0", *OPTIONS_HEAD[1:]))
    assert error.reason.startswith("Bad Request-URI")
    assert error.request is not None
    assert error.request.uri == AbsoluteURI("invalid", "sip:a@b:0")
    assert error.request.call_id == "a84b4c76e66710"


def test_headers_are_not_parsed_eagerly() -> None:
    """Malformed header values only fail when accessed (RFC 3261 does not require eager parsing)."""
    message = parse_request(crlf("OPTIONS sip:a@b SIP/2.0", "CSeq: lots", "Via: nonsense", "To: <"))
    for accessor in ("cseq", "vias", "to"):
        with pytest.raises(SipParseError):
            getattr(message, accessor)


# str.isdigit() is true for superscripts (int() then fails) and for other scripts' digits (int() succeeds).
NON_ASCII_DIGITS = ["\u00b2", "\u0661", "\uff11", "1\u00b2"]


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
def test_non_ascii_content_length_is_a_parse_error(digits: str) -> None:
    error = parse_error(crlf(*OPTIONS_HEAD, f"Content-Length: {digits}", body=b"xx"))
    assert error.reason == "Bad Content-Length"
    assert error.request is not None


@pytest.mark.parametrize("code", ["\u00b2\u00b2\u00b2", "\u0662\u0660\u0660", "2\uff10\uff10"])
def test_non_ascii_status_code_is_a_parse_error(code: str) -> None:
    assert parse_error(f"SIP/2.0 {code} OK\r\n\r\n".encode()).reason == "Malformed status line"


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
def test_non_ascii_port_in_request_uri_is_a_parse_error(digits: str) -> None:
    error = parse_error(crlf(f"OPTIONS sip:a@b:{digits} SIP/2.0", *OPTIONS_HEAD[1:]))
    assert error.reason.startswith("Bad Request-URI")
    assert error.request is not None


def test_uri_with_raw_non_utf8_bytes_is_rejected_or_serializable() -> None:
    data = b"OPTIONS sip:\xff@h SIP/2.0\r\nContact: <sip:a@h;x=\xfe>\r\nContent-Length: 0\r\n\r\n"
    try:
        message = parse_request(data)
    except SipParseError:
        return
    repr(message)
    str(message.contacts[0])
    assert parse_message(bytes(message)).start_line() == message.start_line()


# -- limits ------------------------------------------------------------------------------------------------


def test_message_too_large_is_513() -> None:
    big = options(body=b"x" * (DEFAULT_LIMITS.max_message_size + 1))
    error = parse_error(big)
    assert error.status == 513
    small_limits = ParserLimits(max_message_size=len(options()))
    assert parse_request(options(), small_limits).method == "OPTIONS"
    assert parse_error(options(body=b"x"), small_limits).status == 513


def test_too_many_headers() -> None:
    limits = ParserLimits(max_headers=len(OPTIONS_HEAD))  # the start line does not count
    assert parse_request(options(), limits).call_id
    error = parse_error(options("X-One-More: 1"), limits)
    assert error.reason == "Too many headers"
    assert error.request is not None
    assert parse_request(crlf(*OPTIONS_HEAD, " folded lines", " do not count"), ParserLimits(max_headers=6))


def test_header_line_too_long() -> None:
    limits = ParserLimits(max_line_length=60)
    assert parse_request(options("X-Ok: " + "a" * 54), limits)
    error = parse_error(options("X-Long: " + "a" * 53), limits)
    assert error.reason == "Header line too long"
    assert error.request is not None


def test_folded_header_line_too_long() -> None:
    limits = ParserLimits(max_line_length=60)
    error = parse_error(options("X-Folded: " + "a" * 40, " " + "b" * 40), limits)
    assert error.reason == "Header line too long"


def test_start_line_too_long() -> None:
    limits = ParserLimits(max_line_length=60)
    line = "OPTIONS sip:" + "u" * 60 + "@b SIP/2.0"
    error = parse_error(crlf(line, *OPTIONS_HEAD[1:]), limits)
    assert error.reason == "Start line too long"


def test_default_limits() -> None:
    assert ParserLimits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_message_size == 65535
    assert DEFAULT_LIMITS.max_headers >= 64
    assert DEFAULT_LIMITS.max_line_length >= 1024
    assert parse_file("long-values.sip").vias  # 30 Via lines and a 5000 character value fit


# -- StreamFramer ------------------------------------------------------------------------------------------

M1 = options()
M2 = crlf(
    "MESSAGE sip:bob@biloxi.example.com SIP/2.0",
    *OPTIONS_HEAD[1:-1],
    "CSeq: 2 MESSAGE",
    "Content-Type: text/plain",
    "Content-Length: 13",
    body=b"a\r\n\r\nb\r\n\r\nc\r\n",
)
M3 = crlf("SIP/2.0 200 OK", "Via: SIP/2.0/TCP h;branch=z9hG4bK1", "l: 3", body=b"xyz")
STREAM = M1 + b"\r\n\r\n" + M2 + b"\r\n" + M3 + b"\r\n\r\n\r\n\r\n" + M1
EXPECTED = [M1, StreamFramer.PING, M2, M3, StreamFramer.PING, StreamFramer.PING, M1]


def feed_all(chunks: list[bytes], framer: StreamFramer | None = None) -> list[bytes]:
    framer = framer or StreamFramer()
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


def test_pipelined_messages_in_one_chunk() -> None:
    framer = StreamFramer()
    assert framer.feed(STREAM) == EXPECTED
    assert framer.buffered == 0
    assert [parse_message(m, stream=True).body for m in (M1, M2, M3)] == [
        b"",
        b"a\r\n\r\nb\r\n\r\nc\r\n",
        b"xyz",
    ]


def test_split_at_every_byte_boundary() -> None:
    for i in range(len(STREAM) + 1):
        assert feed_all([STREAM[:i], STREAM[i:]]) == EXPECTED, i


def test_fed_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(STREAM)):
        out.extend(framer.feed(STREAM[i : i + 1]))
    assert out == EXPECTED
    assert framer.buffered == 0


def test_fed_in_chunks_of_every_size() -> None:
    for size in range(2, 64):
        assert feed_all([STREAM[i : i + size] for i in range(0, len(STREAM), size)]) == EXPECTED, size


def test_partial_message_waits() -> None:
    framer = StreamFramer()
    assert framer.feed(M2[:-1]) == []
    assert framer.buffered == len(M2) - 1
    assert framer.feed(M2[-1:]) == [M2]
    assert framer.buffered == 0


def test_ping_and_lone_crlfs() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [StreamFramer.PING]
    assert StreamFramer.PING == b"\r\n\r\n"
    assert framer.feed(b"\r\n") == []  # a lone CRLF (a pong) may still become a ping
    assert framer.feed(M1) == [M1]
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n\r") == []
    assert framer.feed(b"\n") == [StreamFramer.PING]
    assert framer.feed(b"\n" + M1) == [M1]  # stray LF skipped
    assert framer.buffered == 0


def test_message_without_content_length_has_an_empty_body() -> None:
    data = crlf("OPTIONS sip:a@b SIP/2.0", "Call-ID: x")
    assert StreamFramer().feed(data + M1) == [data, M1]


@pytest.mark.parametrize(
    "header", ["Content-Length: 3", "content-length:3", "CONTENT-LENGTH : 3", "l: 3", "L:3"]
)
def test_content_length_spellings(header: str) -> None:
    message = crlf("MESSAGE sip:a@b SIP/2.0", "Call-ID: x", header, body=b"abc")
    assert StreamFramer().feed(message + M1) == [message, M1]


@pytest.mark.parametrize("value", ["abc", "-1", "1.0", "", "99999999999"])
def test_bad_content_length_breaks_the_stream(value: str) -> None:
    with pytest.raises(SipParseError, match="Bad Content-Length"):
        StreamFramer().feed(crlf("MESSAGE sip:a@b SIP/2.0", f"Content-Length: {value}"))


def test_oversized_head_without_end_is_rejected() -> None:
    framer = StreamFramer(ParserLimits(max_message_size=100))
    assert framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 12) == []
    with pytest.raises(SipParseError) as info:
        framer.feed(b"X: y\r\n" * 2)
    assert info.value.status == 513


def test_oversized_content_length_is_rejected_before_the_body_arrives() -> None:
    framer = StreamFramer(ParserLimits(max_message_size=1000))
    with pytest.raises(SipParseError) as info:
        framer.feed(crlf("MESSAGE sip:a@b SIP/2.0", "Content-Length: 1000"))
    assert info.value.status == 513


def test_message_exactly_at_the_limit() -> None:
    framer = StreamFramer(ParserLimits(max_message_size=len(M2)))
    assert framer.feed(M2) == [M2]


def test_framer_unfolds_content_length() -> None:
    message = crlf("MESSAGE sip:a@b SIP/2.0", "Call-ID: x", "Content-Length:", " 3", body=b"abc")
    assert parse_message(message, stream=True).body == b"abc"  # the parser agrees this is valid
    assert StreamFramer().feed(message) == [message]


def test_framer_ignores_continuation_lines_that_look_like_content_length() -> None:
    message = crlf("MESSAGE sip:a@b SIP/2.0", "Subject: hello", " l: 3", "Content-Length: 0")
    assert parse_message(message, stream=True).headers.get("Subject") == "hello l: 3"
    assert StreamFramer().feed(message + M1) == [message, M1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(requests(), responses(), st.just(None)), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
)
def test_framer_property(messages: list[Request | Response | None], cuts: list[int]) -> None:
    """Any sequence of generated messages and pings, cut anywhere, frames back to the same items."""
    items = [StreamFramer.PING if m is None else bytes(m) for m in messages]
    stream = b"".join(items)
    bounds = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *bounds], [*bounds, len(stream)], strict=True)]
    assert feed_all(chunks) == items
    for item, message in zip(items, messages, strict=True):
        if message is not None:
            parsed = parse_message(item, stream=True)
            assert parsed.start_line() == message.start_line()
            assert parsed.body == message.body


# -- fuzzing -----------------------------------------------------------------------------------------------


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def exercise(data: bytes) -> None:
    """Parse as a datagram and as a framed message, touch every typed accessor, frame it on a stream.

    Anything but SipParseError escaping from here is a bug.
    """
    for stream in (False, True):
        try:
            message = parse_message(data, stream=stream)
        except SipParseError as e:
            assert e.status in (400, 505, 513)
            assert e.request is None or isinstance(e.request, Request)
            continue
        for accessor in ("cseq", "from_", "to", "vias", "top_via", "contacts"):
            try:
                getattr(message, accessor)
            except SipParseError:
                pass
        repr(message)
        bytes(message)
    try:
        StreamFramer().feed(data)
    except SipParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    exercise(data)


SEEDS = [p.read_bytes() for p in VALID_FILES if p.stat().st_size < 2000] + [M1, M2, M3]
SPLICES = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b'"',
    b"\\",
    b"<",
    b">",
    b"[",
    b"]",
    b"@",
    b"%",
    b"=",
    b"/",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    b"SIP/2.0",
    b"sip:",
    b"\r\n ",
    b"\r\n\r\n",
    b"Content-Length: 99999\r\n",
    b"l: 3\r\n",
    b"Via: SIP/2.0/UDP [::1\r\n",
    b"CSeq: 2147483648 X\r\n",
]


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        position = draw(st.integers(min_value=0, max_value=len(data)))
        operation = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        if operation == "truncate":
            del data[position:]
            continue
        piece = draw(st.sampled_from(SPLICES) | st.binary(min_size=1, max_size=3))
        if operation == "insert":
            data[position:position] = piece
        elif operation == "delete":
            del data[position : position + draw(st.integers(min_value=1, max_value=8))]
        else:
            data[position : position + len(piece)] = piece
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(mutated_messages())
def test_mutated_messages_raise_only_sip_parse_error(data: bytes) -> None:
    exercise(data)


@settings(max_examples=50, deadline=None)
@given(st.one_of(requests(), responses()), st.data())
def test_mutated_generated_messages_raise_only_sip_parse_error(
    message: Request | Response, data: st.DataObject
) -> None:
    raw = bytearray(bytes(message))
    position = data.draw(st.integers(min_value=0, max_value=len(raw)))
    raw[position:position] = data.draw(st.sampled_from(SPLICES))
    exercise(bytes(raw))


# -- the fast path for plain heads -------------------------------------------------------------------------


def _careful_head(data: bytes) -> tuple[str, list[tuple[str, str]], str | None]:
    """Start line, fields and error as the careful line parser gives them (what parse_message did before)."""
    head_bytes = data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0]
    lines = head_bytes.decode("utf-8", "surrogateescape").split("\n")
    headers = Headers()
    try:
        _parse_header_lines(lines, headers, DEFAULT_LIMITS)
    except SipParseError as e:
        return lines[0].rstrip("\r"), list(headers), e.reason
    return lines[0].rstrip("\r"), list(headers), None


def _plain_head(data: bytes) -> tuple[str, list[tuple[str, str]], None] | None:
    head_bytes = data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0]
    fast = _parse_plain_head(head_bytes.decode("utf-8", "surrogateescape"), DEFAULT_LIMITS)
    return None if fast is None else (fast[0], list(fast[1]), None)


@pytest.mark.parametrize("path", VALID_FILES + INVALID_FILES, ids=lambda p: p.name)
def test_plain_head_path_agrees_with_the_line_parser(path: Path) -> None:
    """The fast path gives exactly the careful parser's start line and fields, or leaves the head to it."""
    data = path.read_bytes()
    fast = _plain_head(data)
    if fast is not None:
        assert fast == _careful_head(data)
        head = data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
        found = _parse_plain_head(head, DEFAULT_LIMITS)
        assert found is not None
        assert found[2] == found[1].get("Content-Length")  # the first Content-Length, as written


@pytest.mark.parametrize(
    "data",
    [
        options(),
        options("X-Blank:", "Subject:   spaced   "),
        options("Via : SIP/2.0/UDP h;branch=z9hG4bK2"),
        options("Bad Name: x"),
        options("NoColon"),
        options("Folded: a", " b"),
        options("Max-Forwards: 70", " 1"),
        options("Max-Forwards: 70", "\tMax-Forwards: 70"),
        options("Max-Forwards: 70\nContent-Type: a/b"),
        options("Bare\rCR: x"),
        options("Max-Forwards: 70\r"),
        crlf("OPTIONS sip:h SIP/2.0"),
        crlf(*OPTIONS_HEAD, *(f"X-{i}: {i}" for i in range(300))),
    ],
)
def test_plain_head_path_on_edge_cases(data: bytes) -> None:
    fast = _plain_head(data)
    if fast is not None:
        assert fast == _careful_head(data)
    message = parse_message(data) if _careful_head(data)[2] is None else None
    if message is not None:
        assert list(message.headers) == _careful_head(data)[1]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(requests(), responses()))
def test_plain_head_path_takes_generated_messages(message: Request | Response) -> None:
    data = bytes(message)
    fast = _plain_head(data)
    assert fast is not None  # what we write is in the plain shape
    assert fast == _careful_head(data)


def test_plain_head_memo_shares_stable_lines_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines of headers written the same in every message (Max-Forwards, Content-Type, ...) are remembered as
    their fields, shared by the messages holding them; per-message ones (Via, Call-ID, CSeq) are not; the
    memo is cleared when full."""
    monkeypatch.setattr(parser_module, "_LINE_FIELDS", {})
    monkeypatch.setattr(parser_module, "_LINE_FIELDS_MAX", 4)
    first = parse_message(options("Subject: s", "Content-Type: a/b"))
    second = parse_message(options("Subject: s", "Content-Type: a/b"))
    assert list(first.headers) == list(second.headers)
    shared = [a for a, b in zip(first.headers._fields, second.headers._fields, strict=True) if a is b]
    assert [key for key, _, _ in shared] == ["max-forwards", "subject", "content-type", "content-length"]
    memo = parser_module._LINE_FIELDS
    assert "Max-Forwards: 70" in memo and "Content-Type: a/b" in memo
    assert not any(line.startswith(("Via", "Call-ID", "CSeq", "From", "To")) for line in memo)
    for n in range(10):
        assert parse_message(options(f"Subject: {n}")).headers.get("Subject") == str(n)
        assert len(memo) <= 4
