"""Tests for `pbx.sip.headers`: names and compact forms, list splitting, NameAddress, Via and CSeq."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.sip.errors import SipParseError
from pbx.sip.headers import (
    MAX_CSEQ,
    CSeq,
    NameAddress,
    Via,
    canonical_name,
    format_header_params,
    is_token,
    parse_header_params,
    quote_string,
    split_header_values,
    unquote_string,
)
from pbx.sip.uri import AbsoluteURI, SipURI, TelURI, parse_uri
from pbx.testing import TOKEN_ALPHABET, cseqs, name_addresses, tokens, vias

# -- names -------------------------------------------------------------------------------------------------

# RFC 3261 7.3.3 and 20, RFC 3265 (o, u), RFC 3515 (r), RFC 3892 (b), RFC 4028 (x), RFC 4474 (y).
COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "y": "Identity",
}


@pytest.mark.parametrize(("short", "long"), sorted(COMPACT.items()))
def test_compact_forms(short: str, long: str) -> None:
    assert canonical_name(short) == long
    assert canonical_name(short.upper()) == long
    assert canonical_name(long.lower()) == long


def test_there_are_sixteen_compact_forms() -> None:
    assert len(COMPACT) == 16
    single = {chr(c) for c in range(ord("a"), ord("z") + 1)}
    assert {n for n in single if canonical_name(n) != n} == set(COMPACT)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("call-id", "Call-ID"),
        ("CALL-ID", "Call-ID"),
        ("cseq", "CSeq"),
        ("CSEQ", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("max-forwards", "Max-Forwards"),
        ("content-LENGTH", "Content-Length"),
        ("mime-version", "MIME-Version"),
        ("rack", "RAck"),
        ("rseq", "RSeq"),
        ("record-route", "Record-Route"),
        ("p-asserted-identity", "P-Asserted-Identity"),
        ("X-Custom", "X-Custom"),
        ("x-custom", "x-custom"),
        ("NewFangledHeader", "NewFangledHeader"),
        ("z", "z"),
    ],
)
def test_canonical_names(raw: str, canonical: str) -> None:
    assert canonical_name(raw) == canonical


def test_is_token() -> None:
    assert is_token("INVITE")
    assert is_token(TOKEN_ALPHABET)
    assert is_token("!interesting-Method0123456789_*+`.%~")
    for bad in ("", "a b", "a:b", "a/b", "a;b", "a,b", 'a"b', "a@b", "a(b)", "ä", "a\tb", "a=b"):
        assert not is_token(bad), bad


# -- splitting lists ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a", ["a"]),
        ("  a  ", ["a"]),
        ("", []),
        ("   ", []),
        ("a,b", ["a", "b"]),
        ("a , b ,c", ["a", "b", "c"]),
        (" , a,, ,b, ", ["a", "b"]),
        ('"Doe, John" <sip:jd@example.com>, <sip:x@y>', ['"Doe, John" <sip:jd@example.com>', "<sip:x@y>"]),
        ('"a \\", b" <sip:a@b>, c', ['"a \\", b" <sip:a@b>', "c"]),
        ('"back\\\\", x', ['"back\\\\"', "x"]),
        ("<sip:a@b;x=1,2>, <sip:c@d>", ["<sip:a@b;x=1,2>", "<sip:c@d>"]),
        ("<sip:a@b>;q=0.5, <sip:c@d>;q=1", ["<sip:a@b>;q=0.5", "<sip:c@d>;q=1"]),
        ('sip:a@b;+sip.instance="<urn:x,y>", sip:c@d', ['sip:a@b;+sip.instance="<urn:x,y>"', "sip:c@d"]),
        (
            "SIP/2.0/UDP a;branch=z9hG4bK1,SIP/2.0/TCP b:5061;branch=z9hG4bK2",
            ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/TCP b:5061;branch=z9hG4bK2"],
        ),
    ],
)
def test_split_header_values(value: str, parts: list[str]) -> None:
    assert split_header_values(value) == parts


@settings(max_examples=100, deadline=None)
@given(st.lists(name_addresses(), min_size=1, max_size=4))
def test_split_joined_name_addresses(values: list[NameAddress]) -> None:
    texts = [str(v) for v in values]
    assert split_header_values(", ".join(texts)) == texts
    assert split_header_values(",".join(texts)) == texts


# -- quoted strings and parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plain", "quoted"),
    [
        ("Alice", '"Alice"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("Doe, John; <x>", '"Doe, John; <x>"'),
    ],
)
def test_quote_string(plain: str, quoted: str) -> None:
    assert quote_string(plain) == quoted
    assert unquote_string(quoted) == plain


def test_unquote_leaves_tokens_alone() -> None:
    assert unquote_string("token") == "token"
    assert unquote_string('"') == '"'
    assert unquote_string('"\\a\\b"') == "ab"


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs"))))
def test_quote_unquote_round_trip(text: str) -> None:
    assert unquote_string(quote_string(text)) == text


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ("tag=abc", (("tag", "abc"),)),
        ("lr", (("lr", None),)),
        (" tag = abc ; lr ", (("tag", "abc"), ("lr", None))),
        ('x="a;b";y=1', (("x", '"a;b"'), ("y", "1"))),
        ('x="a\\";b";y', (("x", '"a\\";b"'), ("y", None))),
        ("received=2001:db8::1;rport=5060", (("received", "2001:db8::1"), ("rport", "5060"))),
        ("Q=0.5;EXPIRES=60", (("Q", "0.5"), ("EXPIRES", "60"))),
    ],
)
def test_parse_header_params(text: str, params: tuple) -> None:
    assert parse_header_params(text) == params


@pytest.mark.parametrize("text", ["", "a;", ";a", "a;;b", "=x", "a b=c", "tag=", 'x="open', "a:b=c"])
def test_bad_header_params(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_header_params(text)


def test_format_header_params() -> None:
    assert format_header_params((("tag", "x"), ("lr", None), ("q", "0.5"))) == ";tag=x;lr;q=0.5"
    assert format_header_params(()) == ""


# -- NameAddress -------------------------------------------------------------------------------------------


def test_name_addr_with_quoted_display_name() -> None:
    na = NameAddress.parse('"Doe, John \\"JD\\"" <sip:jd@example.com>;tag=1928301774')
    assert na.display_name == 'Doe, John "JD"'
    assert na.uri == parse_uri("sip:jd@example.com")
    assert na.params == (("tag", "1928301774"),)
    assert na.tag == "1928301774"
    assert str(na) == '"Doe, John \\"JD\\"" <sip:jd@example.com>;tag=1928301774'


def test_display_name_with_angle_brackets_and_semicolons() -> None:
    na = NameAddress.parse('"<boss>; a,b" <sip:b@example.com>')
    assert na.display_name == "<boss>; a,b"
    assert na.uri == parse_uri("sip:b@example.com")


def test_token_display_name() -> None:
    na = NameAddress.parse("Jane   Q.  Doe <sip:jq@example.com>")
    assert na.display_name == "Jane   Q.  Doe"
    assert str(na) == '"Jane   Q.  Doe" <sip:jq@example.com>'
    assert NameAddress.parse("caller<sip:caller@example.com>").display_name == "caller"


def test_bare_name_addr() -> None:
    na = NameAddress.parse("  <sip:bob@biloxi.com;transport=tcp>  ")
    assert na.display_name is None
    assert na.params == ()
    assert na.tag is None
    assert na.uri.param("transport") == "tcp"  # type: ignore[union-attr]
    assert str(na) == "<sip:bob@biloxi.com;transport=tcp>"


def test_name_addr_uri_params_stay_in_the_uri() -> None:
    na = NameAddress.parse("<sip:bob@biloxi.com;lr;transport=udp>;tag=9")
    assert isinstance(na.uri, SipURI)
    assert na.uri.params == (("lr", None), ("transport", "udp"))
    assert na.params == (("tag", "9"),)


def test_addr_spec_params_belong_to_the_header() -> None:
    """RFC 3261 20.10: without <>, the parameters after the URI are header parameters."""
    na = NameAddress.parse("sip:bob@biloxi.com;tag=a48s;transport=tcp")
    assert na.uri == SipURI(host="biloxi.com", user="bob")
    assert isinstance(na.uri, SipURI) and na.uri.params == ()
    assert na.params == (("tag", "a48s"), ("transport", "tcp"))
    assert str(na) == "<sip:bob@biloxi.com>;tag=a48s;transport=tcp"


def test_addr_spec_without_params() -> None:
    na = NameAddress.parse("sip:carol@chicago.com")
    assert na == NameAddress(uri=parse_uri("sip:carol@chicago.com"))
    assert NameAddress.parse("tel:+1-201-555-0123").uri == TelURI("+1-201-555-0123")


def test_name_addr_with_other_uri_schemes() -> None:
    assert NameAddress.parse("<tel:7042;phone-context=example.com>;tag=t").uri == TelURI(
        "7042", (("phone-context", "example.com"),)
    )
    assert NameAddress.parse("<mailto:help@example.com>").uri == AbsoluteURI("mailto", "help@example.com")


def test_contact_wildcard() -> None:
    star = NameAddress.parse(" * ")
    assert star.wildcard
    assert str(star) == "*"
    assert star == NameAddress.parse("*")
    assert not NameAddress.parse("<sip:a@b>").wildcard


def test_contact_expires_and_q() -> None:
    na = NameAddress.parse("<sip:1001@192.0.2.20:5060>;expires=3600;q=0.7")
    assert na.param("expires") == "3600"
    assert na.param("Q") == "0.7"
    assert na.param("missing", "d") == "d"
    assert na.has_param("EXPIRES")
    assert NameAddress.parse("<sip:a@b>;tag").params == (("tag", None),)  # a bare flag is fine


def test_contact_instance_id_with_semicolon() -> None:
    text = '<sip:1001@192.0.2.20;ob>;+sip.instance="<urn:uuid:f81d4fae-7dec;x=y>";reg-id=1;expires=60'
    na = NameAddress.parse(text)
    assert na.param("+sip.instance") == '"<urn:uuid:f81d4fae-7dec;x=y>"'
    assert unquote_string(na.param("+sip.instance") or "") == "<urn:uuid:f81d4fae-7dec;x=y>"
    assert na.param("reg-id") == "1"
    assert na.param("expires") == "60"
    assert str(na) == text


def test_addr_spec_with_quoted_param_containing_angle_bracket() -> None:
    """A '<' inside a quoted header parameter of an addr-spec does not start a name-addr."""
    na = NameAddress.parse('sip:1001@192.0.2.20;+sip.instance="<urn:uuid:f81d4fae>";expires=60')
    assert na.uri == parse_uri("sip:1001@192.0.2.20")
    assert na.display_name is None
    assert na.param("+sip.instance") == '"<urn:uuid:f81d4fae>"'
    assert na.param("expires") == "60"


def test_name_addr_with_quoted_param_containing_semicolon_and_angle_bracket() -> None:
    na = NameAddress.parse('Bob <sip:b@example.com>;x=";<y>"')
    assert na.display_name == "Bob"
    assert na.uri == parse_uri("sip:b@example.com")
    assert na.params == (("x", '";<y>"'),)


def test_empty_display_name_round_trips() -> None:
    na = NameAddress.parse('"" <sip:anonymous@anonymous.invalid>;tag=1')
    assert na.display_name == ""
    assert str(na) == '"" <sip:anonymous@anonymous.invalid>;tag=1'
    assert NameAddress.parse(str(na)) == na


def test_display_name_cannot_inject_header_lines() -> None:
    evil = "Mallory\r\nVia: SIP/2.0/UDP evil;branch=z9hG4bKx"
    na = NameAddress(uri=parse_uri("sip:a@b"), display_name=evil)
    try:
        text = str(na)
    except ValueError:
        return  # refusing is fine
    assert "\r" not in text
    assert "\n" not in text


def test_name_address_helpers_return_new_values() -> None:
    na = NameAddress.parse("<sip:a@b>;tag=1;x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        na.display_name = "Mallory"  # type: ignore[misc]
    retagged = na.with_param("TAG", "2")
    assert retagged.params == (("x", None), ("TAG", "2"))
    assert retagged.tag == "2"
    assert na.tag == "1"
    assert na.without_param("Tag").params == (("x", None),)
    assert str(na.replace(display_name="Bob")) == '"Bob" <sip:a@b>;tag=1;x'


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('"Alice <sip:a@b>', "Unterminated display name"),
        ('"Alice\\" <sip:a@b>', "Unterminated display name"),
        ('"Alice" sip:a@b', "Display name without <URI>"),
        ("<sip:a@b", "Unterminated <URI>"),
        ("<sip:a@b> junk", "Junk after URI"),
        ("<sip:a@b>;", "Bad header parameter"),
        ("<sip:a@b>;tag=", "Empty header parameter value"),
        ("<sip:a@b>;ta g=1", "Bad header parameter"),
        ('<sip:a@b>;x="open', "Unterminated quoted string"),
        ("sip:a@b;", "Bad header parameter"),
        ("<>", None),
        ("<sip:>", None),
        ("", None),
        ("Alice", None),
        ("<not a uri>", None),
    ],
)
def test_bad_name_addresses(text: str, reason: str | None) -> None:
    with pytest.raises(SipParseError) as info:
        NameAddress.parse(text)
    if reason is not None:
        assert reason in info.value.reason


# -- Via ---------------------------------------------------------------------------------------------------


def test_via_basic() -> None:
    via = Via.parse("SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.1")
    assert via.protocol == "SIP/2.0"
    assert via.transport == "UDP"
    assert (via.host, via.port) == ("pc33.atlanta.com", 5066)
    assert via.sent_by == "pc33.atlanta.com:5066"
    assert via.branch == "z9hG4bK776asdhds"
    assert via.received == "192.0.2.1"
    assert via.maddr is None
    assert not via.reliable
    assert not via.wants_rport
    assert via.rport is None
    assert str(via) == "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.1"


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP first.example.com:4000;ttl=16;maddr=224.2.0.1;branch=z9hG4bKa7c6a8dlze.1",
        "SIP / 2.0 / UDP first.example.com:4000;ttl=16 ;maddr=224.2.0.1 ;branch=z9hG4bKa7c6a8dlze.1",
        "  sip/2.0\t/\tudp   first.example.com:4000 ; ttl = 16 ; maddr = 224.2.0.1 ;"
        " branch = z9hG4bKa7c6a8dlze.1 ",
    ],
)
def test_via_whitespace_around_slashes_and_params(text: str) -> None:
    via = Via.parse(text)
    assert via.transport == "UDP"
    assert via.protocol == "SIP/2.0"
    assert (via.host, via.port) == ("first.example.com", 4000)
    assert via.param("ttl") == "16"
    assert via.maddr == "224.2.0.1"
    assert via.branch == "z9hG4bKa7c6a8dlze.1"
    assert str(via) == "SIP/2.0/UDP first.example.com:4000;ttl=16;maddr=224.2.0.1;branch=z9hG4bKa7c6a8dlze.1"


@pytest.mark.parametrize("sent_by", ["first.example.com : 4000", "first.example.com:\t4000", "[::1] :4000"])
def test_via_whitespace_around_port_colon(sent_by: str) -> None:
    """sent-by = host [COLON port] where COLON = SWS ":" SWS."""
    via = Via.parse(f"SIP/2.0/UDP {sent_by};branch=z9hG4bK1")
    assert via.port == 4000
    assert via.host in ("first.example.com", "::1")


def test_via_ipv6_sent_by() -> None:
    via = Via.parse("SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bKv6;received=2001:db8::9")
    assert via.host == "2001:db8::9"
    assert via.port == 5061
    assert via.sent_by == "[2001:db8::9]:5061"
    assert via.received == "2001:db8::9"
    assert via.reliable
    assert str(via) == "SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bKv6;received=2001:db8::9"
    assert Via.parse("SIP/2.0/UDP [::1];branch=z9hG4bK1").sent_by == "[::1]"


def test_via_rport_flag_and_value() -> None:
    flag = Via.parse("SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1")
    assert flag.wants_rport
    assert flag.rport is None
    assert flag.param("rport") is None
    filled = flag.with_param("rport", "49152").with_param("received", "203.0.113.9")
    assert filled.rport == 49152
    assert filled.received == "203.0.113.9"
    assert str(filled) == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=49152;received=203.0.113.9"
    assert Via.parse("SIP/2.0/UDP h;branch=z9hG4bK1;rport=5062").rport == 5062
    assert not Via.parse("SIP/2.0/UDP h;branch=z9hG4bK1").wants_rport


@pytest.mark.parametrize(
    ("transport", "reliable"), [("udp", False), ("TCP", True), ("tls", True), ("SCTP", True), ("WSS", True)]
)
def test_via_transport_is_upper_case(transport: str, reliable: bool) -> None:
    via = Via.parse(f"SIP/2.0/{transport} h")
    assert via.transport == transport.upper()
    assert via.reliable is reliable
    assert via.branch is None
    assert via.params == ()


def test_via_is_immutable() -> None:
    via = Via.parse("SIP/2.0/UDP h;branch=z9hG4bK1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        via.host = "evil"  # type: ignore[misc]
    assert via.with_param("branch", "z9hG4bK2").branch == "z9hG4bK2"
    assert via.branch == "z9hG4bK1"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0",
        "SIP/2.0 host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP ",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host:0",
        "SIP/2.0/UDP host:port",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP ho st",
        "SIP/2.0/UDP host;",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;=x",
        "SIP/2.0/U:P host",
        "SIP/2.0/UDP/X host",
        "SIP//UDP host",
        "SIP/2.0/UDP a, SIP/2.0/UDP b",
        'SIP/2.0/UDP host;x="open',
    ],
)
def test_bad_via(text: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(text)


# -- CSeq --------------------------------------------------------------------------------------------------


def test_cseq() -> None:
    assert CSeq.parse("314159 INVITE") == CSeq(314159, "INVITE")
    assert CSeq.parse("  1   REGISTER  ") == CSeq(1, "REGISTER")
    assert CSeq.parse("0 ACK") == CSeq(0, "ACK")
    assert str(CSeq(7, "BYE")) == "7 BYE"
    assert CSeq.parse("1 invite").method == "invite"  # methods are case-sensitive: kept as written


def test_cseq_bounds() -> None:
    assert MAX_CSEQ == 2**31 - 1
    assert CSeq.parse("2147483647 INVITE").number == 2**31 - 1
    with pytest.raises(SipParseError, match="Bad CSeq number"):
        CSeq.parse("2147483648 INVITE")
    with pytest.raises(SipParseError, match="Bad CSeq number"):
        CSeq.parse("99999999999 INVITE")


@pytest.mark.parametrize(
    "text",
    ["", "INVITE", "1", "1 ", "-1 INVITE", "+1 INVITE", "1.0 INVITE", "x INVITE", "1 IN VITE", "1 IN/VITE"],
)
def test_bad_cseq(text: str) -> None:
    with pytest.raises(SipParseError):
        CSeq.parse(text)


def test_cseq_tab_separator() -> None:
    """CSeq = 1*DIGIT LWS Method, and LWS may be a tab."""
    assert CSeq.parse("1\tINVITE") == CSeq(1, "INVITE")
    assert CSeq.parse(" 2 \t  BYE\t") == CSeq(2, "BYE")


@pytest.mark.parametrize("digits", ["\u00b2", "\u0661", "\uff11", "1\u00b2"])
def test_cseq_non_ascii_digits_are_a_parse_error(digits: str) -> None:
    """str.isdigit() is true for superscripts (int() fails) and other scripts' digits (int() succeeds)."""
    with pytest.raises(SipParseError, match="Bad CSeq number"):
        CSeq.parse(f"{digits} INVITE")


def test_rport_with_non_ascii_digits_is_not_a_port() -> None:
    assert Via.parse("SIP/2.0/UDP h;rport=\u00b2").rport is None
    assert Via.parse("SIP/2.0/UDP h;rport=\u0661").rport is None


# -- properties --------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(name_addresses())
def test_name_address_round_trip(value: NameAddress) -> None:
    assert NameAddress.parse(str(value)) == value


@settings(max_examples=200, deadline=None)
@given(vias())
def test_via_round_trip(value: Via) -> None:
    parsed = Via.parse(str(value))
    assert parsed == value
    assert parsed.branch == value.branch
    assert str(parsed) == str(value)


@settings(max_examples=100, deadline=None)
@given(cseqs())
def test_cseq_round_trip(value: CSeq) -> None:
    assert CSeq.parse(str(value)) == value
    assert 0 <= value.number <= MAX_CSEQ


@settings(max_examples=50, deadline=None)
@given(tokens(), st.integers(min_value=2**31, max_value=10**10 - 1))
def test_cseq_numbers_at_or_above_two_to_the_31_are_rejected(method: str, number: int) -> None:
    with pytest.raises(SipParseError):
        CSeq.parse(f"{number} {method}")


_FUZZ_CHARS = st.characters(exclude_categories=("Cs",))


@settings(max_examples=200, deadline=None)
@given(st.text(_FUZZ_CHARS, max_size=40))
def test_header_parsers_raise_only_sip_parse_error(text: str) -> None:
    for parse in (NameAddress.parse, Via.parse, CSeq.parse, parse_header_params):
        try:
            parse(text)
        except SipParseError:
            pass


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["<sip:a@b>", '"x" <sip:a@b>', "SIP/2.0/UDP h", "1 "]), st.text(_FUZZ_CHARS, max_size=30)
)
def test_header_parsers_raise_only_sip_parse_error_on_plausible_prefixes(prefix: str, text: str) -> None:
    for parse in (NameAddress.parse, Via.parse, CSeq.parse):
        try:
            parse(prefix + text)
        except SipParseError:
            pass


# -- fast paths: the same values and errors as the careful parsers -----------------------------------------


def _exact(value: NameAddress) -> tuple[object, ...]:
    uri = value.uri
    uri_fields = (
        (uri.scheme, uri.user, uri.password, uri.host, uri.port, uri.params, uri.headers)
        if isinstance(uri, SipURI)
        else (type(uri), str(uri))
    )
    return (uri_fields, value.display_name, value.params, value.wildcard)


def _name_address_outcome(parse: object, text: str) -> object:
    try:
        return _exact(parse(text))  # type: ignore[operator]
    except SipParseError as e:
        return ("error", e.reason)


NAME_ADDRESS_TEXTS = [
    "<sip:sipp@127.0.0.1:40000>;tag=1234SIPpTag001",
    '"Alice" <sip:1001@pbx.example.com>;tag=a1;x',
    '"" <sip:a@h>',
    '"A \\"B\\"" <sip:a@h>',
    '"A"<sip:a@h>',
    '"A"\t<sip:a@h>',
    "Alice <sip:a@h>",
    "<sip:a@h> ;tag=x",
    "<sip:a@h>;tag=",
    "<sip:a@h>;tag=x;;",
    "<sip:a@h>;tag=a=b",
    "<sip:a@h:99999>",
    "<sip:a@h>junk",
    "<sip:a@[::1]>;tag=x",
    "<tel:+1555>;tag=x",
    "<mailto:a@h>",
    "<sip:a@h;lr>;q=0.5;expires=60;+sip.instance=x",
    "sip:a@h;tag=x",
    " <sip:a@h>",
    "*",
    "<>",
    "",
]


@pytest.mark.parametrize("text", NAME_ADDRESS_TEXTS)
def test_name_address_fast_path_agrees_with_the_careful_parser(text: str) -> None:
    careful = _name_address_outcome(NameAddress._parse_careful, text)
    assert _name_address_outcome(NameAddress.parse, text) == careful
    try:
        NameAddress.check(text)
        checked: object = "ok"
    except SipParseError as e:
        checked = ("error", e.reason)
    assert checked == ("ok" if careful[0] != "error" else careful)
    if careful[0] != "error":
        assert NameAddress.tag_of(text) == NameAddress._parse_careful(text).tag


@settings(max_examples=200, deadline=None)
@given(name_addresses())
def test_name_address_fast_path_agrees_on_generated_values(value: NameAddress) -> None:
    text = str(value)
    assert _exact(NameAddress.parse(text)) == _exact(NameAddress._parse_careful(text))
    NameAddress.check(text)
    assert NameAddress.tag_of(text) == value.tag


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["<sip:a@b>", '"x" <sip:a@b>', "<sip:", "<"]), st.text(_FUZZ_CHARS, max_size=30))
def test_name_address_fast_path_agrees_on_arbitrary_text(prefix: str, text: str) -> None:
    text = prefix + text
    careful = _name_address_outcome(NameAddress._parse_careful, text)
    assert _name_address_outcome(NameAddress.parse, text) == careful
    try:
        NameAddress.check(text)
    except SipParseError:
        assert careful[0] == "error"
    else:
        assert careful[0] != "error"


STAMP_CASES = [
    # (Via text, source host, source port, expected text or None when unchanged)
    (
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport",
        "203.0.113.9",
        49152,
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=49152;received=203.0.113.9",
    ),
    (  # RFC 3581 4: received even when it equals sent-by
        "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1",
        "10.0.0.1",
        5060,
        "SIP/2.0/UDP 10.0.0.1:5060;rport=5060;branch=z9hG4bK1;received=10.0.0.1",
    ),
    (
        "SIP/2.0/UDP pc.example.com;branch=z9hG4bK1",
        "192.0.2.4",
        5060,
        "SIP/2.0/UDP pc.example.com;branch=z9hG4bK1;received=192.0.2.4",
    ),
    ("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1", "10.0.0.1", 5060, None),
    ("SIP/2.0/UDP 10.0.0.1", "2001:db8::1", 5060, "SIP/2.0/UDP 10.0.0.1;received=2001:db8::1"),
    (  # forms the fast path leaves to the structured one: an old received, a valued rport, blanks
        "SIP/2.0/UDP 10.0.0.1;received=1.2.3.4;rport",
        "203.0.113.9",
        7,
        "SIP/2.0/UDP 10.0.0.1;received=203.0.113.9;rport=7",
    ),
    (
        "SIP/2.0/UDP 10.0.0.1;rport=1;branch=z9hG4bK1",
        "10.0.0.1",
        40000,
        "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;rport=40000;received=10.0.0.1",
    ),
    (
        "SIP / 2.0 / UDP 10.0.0.1 ; rport ; branch=z9hG4bK1",
        "10.0.0.1",
        40000,
        "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;rport=40000;received=10.0.0.1",
    ),
    (
        "SIP/2.0/UDP 10.0.0.1;rport;rport;branch=z9hG4bK1",
        "10.0.0.1",
        40000,
        "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;rport=40000;received=10.0.0.1",
    ),
]


@pytest.mark.parametrize(("text", "host", "port", "expected"), STAMP_CASES)
def test_via_stamped(text: str, host: str, port: int, expected: str | None) -> None:
    via = Via.parse(text)
    stamped = via.stamped(text, host, port)
    if expected is None:
        assert stamped is None
        return
    assert stamped is not None
    new_text, value = stamped
    assert new_text == expected
    reparsed = Via.parse(new_text)
    if value is not None:  # when given, it is exactly what parsing the new text gives
        assert value == reparsed
        assert value.params == reparsed.params
    assert reparsed.received == host
    if via.wants_rport:
        assert reparsed.rport == port


@settings(max_examples=200, deadline=None)
@given(vias(), st.sampled_from(["10.0.0.1", "2001:db8::7"]), st.integers(1, 65535))
def test_via_stamped_value_is_the_parse_of_its_text(via: Via, host: str, port: int) -> None:
    text = str(via)
    stamped = via.stamped(text, host, port)
    if stamped is None:
        assert via.host == host and not via.wants_rport
        return
    new_text, value = stamped
    reparsed = Via.parse(new_text)
    if value is not None:
        assert (value, value.params) == (reparsed, reparsed.params)
    assert reparsed.received == host
    assert reparsed.branch == via.branch


@pytest.mark.parametrize(
    "text",
    [
        "<sip:1001@pbx.example.com>;tag=abc",
        '"Bob" <sip:bob@10.0.0.1:5060;transport=udp>;tag=1;expires=60',
        "<sip:bob@10.0.0.1:65535>",
        "<sip:bob@10.0.0.1:65536>;tag=x",  # port out of range: parse refuses
        "<sip:bob@10.0.0.1:0>",
        "<sips:h>;TAG=Up",
        "<sip:%61lice@h>;tag=2",  # escapes: the careful path
        "<tel:+15551234>;tag=3",
        "sip:bob@h;tag=4",  # addr-spec
        "Bob <sip:bob@h>;tag=5",
        '"Bell, Alexander" <sip:a@h>',
        "<sip:a@h>;tag",
        "<sip:a@h> junk",
        "<mailto:a@h>",
        "<sip:[::1]:5060>;tag=6",
    ],
)
def test_name_address_check_and_tag_of_agree_with_parse(text: str) -> None:
    try:
        expected: object = NameAddress.parse(text).tag
    except SipParseError:
        expected = SipParseError
    for probe in (NameAddress.check, NameAddress.tag_of):
        try:
            result = probe(text)
        except SipParseError:
            assert expected is SipParseError, (probe, text)
            continue
        assert expected is not SipParseError, (probe, text)
        if probe is NameAddress.tag_of:
            assert result == expected


@given(st.text(max_size=40))
@settings(max_examples=300)
def test_quote_string_fast_path_agrees_with_the_escaping_one(text: str) -> None:
    controls = {c: " " for c in (*range(0, 9), *range(10, 32), 127)}
    cleaned = text.translate(controls)
    assert quote_string(text) == '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'
