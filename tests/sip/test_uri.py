"""Tests for `pbx.sip.uri`: parsing, serialization and RFC 3261 19.1.4 comparison of sip/sips/tel URIs."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.sip.errors import SipParseError
from pbx.sip.uri import (
    AbsoluteURI,
    SipURI,
    TelURI,
    _parse_uri_careful,
    format_host,
    format_host_port,
    is_plain_sip_uri,
    parse_host_port,
    parse_sip_uri,
    parse_uri,
)
from pbx.testing import absolute_uris, hosts, sip_uris, tel_uris, uris

# -- parsing and serialization -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sips:alice:secretword@atlanta.com:5061;transport=tls",
        "sip:biloxi.com",
        "sip:+12125551212@gw.example.com;user=phone",
        "sip:alice@atlanta.com;maddr=239.255.255.1;ttl=15",
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:proxy.example.com;lr",
        "sip:[::1]:5060",
        "sip:bob@[2001:db8::10]:5070;transport=tcp",
        "sip:alice@192.0.2.4:5080",
        "sip:user;par=u%40example.net@example.com",
        "sip:alice:@atlanta.com",
        "sip:a@h;x=",
    ],
)
def test_round_trip_of_canonical_text(text: str) -> None:
    """Canonically written URIs serialize back to exactly the same text."""
    assert str(parse_uri(text)) == text


def test_components() -> None:
    uri = parse_uri("SIPS:alice:pw@Atlanta.COM:5061;transport=TLS;lr;maddr=10.0.0.1?Subject=hi&x=y")
    assert isinstance(uri, SipURI)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "pw",
        "Atlanta.COM",
        5061,
    )
    assert uri.params == (("transport", "TLS"), ("lr", None), ("maddr", "10.0.0.1"))
    assert uri.headers == (("Subject", "hi"), ("x", "y"))
    assert uri.secure
    assert uri.transport == "tls"
    assert uri.param("TRANSPORT") == "TLS"
    assert uri.param("lr") is None
    assert uri.param("lr", "dflt") == "dflt"
    assert uri.has_param("LR")
    assert not uri.has_param("ttl")
    assert uri.host_port == "Atlanta.COM:5061"
    assert uri.aor == "sips:alice@atlanta.com"


def test_no_user_no_port() -> None:
    uri = parse_sip_uri("sip:registrar.example.com")
    assert uri.user is None and uri.port is None and uri.password is None
    assert uri.transport is None
    assert not uri.secure
    assert uri.aor == "sip:registrar.example.com"


def test_percent_escapes_are_decoded() -> None:
    uri = parse_sip_uri("sip:sip%3Auser%40example.com@example.net;other%2Dparam=value%3Bwith%20escapes")
    assert uri.user == "sip:user@example.com"
    assert uri.params == (("other-param", "value;with escapes"),)
    # Re-escaped on output where the grammar requires it, and stable from then on.
    text = str(uri)
    assert text.startswith("sip:sip%3Auser%40example.com@example.net;other-param=value")
    assert parse_uri(text) == uri
    assert str(parse_uri(text)) == text


def test_escaped_and_unescaped_are_the_same_value() -> None:
    escaped, plain = parse_uri("sip:%61lice@atlanta.com"), parse_uri("sip:alice@atlanta.com")
    assert escaped == plain
    assert hash(escaped) == hash(plain)
    assert str(escaped) == "sip:alice@atlanta.com"


def test_escaped_nul_and_space_in_user() -> None:
    uri = parse_sip_uri("sip:null-%00-null@example.com")
    assert uri.user == "null-\x00-null"
    assert str(uri) == "sip:null-%00-null@example.com"
    assert parse_sip_uri("sip:I%20have%20spaces@example.net").user == "I have spaces"


def test_escaped_uri_header_values() -> None:
    uri = parse_sip_uri("sip:biloxi.com;method=REGISTER?to=sip:bob%40biloxi.com")
    assert uri.headers == (("to", "sip:bob@biloxi.com"),)
    assert str(uri) == "sip:biloxi.com;method=REGISTER?to=sip:bob%40biloxi.com"


def test_user_with_unreserved_marks_and_password() -> None:
    text = (
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
        "@example.com"
    )
    uri = parse_sip_uri(text)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert str(uri) == text


def test_serialization_escapes_reserved_characters() -> None:
    uri = SipURI(
        host="h", user="a@b:c d", password="p@ss:w", params=(("n=x", "v;w y"),), headers=(("a&b", "c=d"),)
    )
    text = str(uri)
    assert text == "sip:a%40b%3Ac%20d:p%40ss%3Aw@h;n%3Dx=v%3Bw%20y?a%26b=c%3Dd"
    assert parse_uri(text) == uri


def test_ipv6_references() -> None:
    uri = parse_sip_uri("sip:[::1]:5060")
    assert uri.host == "::1"
    assert uri.port == 5060
    assert uri.host_port == "[::1]:5060"
    v6 = parse_sip_uri("sip:alice@[2001:DB8::1];transport=udp")
    assert v6.host == "2001:DB8::1"
    assert v6.port is None
    assert v6 == parse_uri("sip:alice@[2001:db8::1];transport=UDP")
    assert v6.aor == "sip:alice@[2001:db8::1]"
    assert str(SipURI(host="2001:db8::2", user="bob", port=5070)) == "sip:bob@[2001:db8::2]:5070"


def test_host_port_helpers() -> None:
    assert parse_host_port("example.com") == ("example.com", None)
    assert parse_host_port("example.com:5061") == ("example.com", 5061)
    assert parse_host_port("192.0.2.1:1") == ("192.0.2.1", 1)
    assert parse_host_port("[2001:db8::1]:65535") == ("2001:db8::1", 65535)
    assert parse_host_port("[::1]") == ("::1", None)
    assert format_host("::1") == "[::1]"
    assert format_host("example.com") == "example.com"
    assert format_host_port("::1", 5060) == "[::1]:5060"
    assert format_host_port("h", None) == "h"


@pytest.mark.parametrize(
    "text",
    ["", ":", "[::1", "[::1]x", "[nope]", "ho st", "h:", "h:0", "h:65536", "h:x", "h:-1", "h:1234567", "h/x"],
)
def test_bad_host_port(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_host_port(text)


# -- tel and other schemes ---------------------------------------------------------------------------------


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;ext=42")
    assert isinstance(uri, TelURI)
    assert uri.scheme == "tel"
    assert uri.number == "+1-201-555-0123"
    assert uri.param("ext") == "42"
    assert uri.param("isub", "none") == "none"
    assert str(uri) == "tel:+1-201-555-0123;ext=42"
    local = parse_uri("TEL:7042;phone-context=example.com")
    assert local == TelURI("7042", (("phone-context", "example.com"),))
    assert str(local) == "tel:7042;phone-context=example.com"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("tel:+1-201-555-0123", "tel:+12015550123"),
        ("tel:+1(201)555.0123;ext=42", "tel:+12015550123;EXT=42"),
        ("tel:7042;phone-context=example.com;ext=1", "tel:7042;ext=1;phone-context=EXAMPLE.com"),
    ],
)
def test_rfc3966_tel_uri_equality(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua == ub
    assert hash(ua) == hash(ub)


def test_tel_uris_that_differ() -> None:
    assert parse_uri("tel:+12015550123") != parse_uri("tel:+12015550124")
    assert parse_uri("tel:7042;phone-context=example.com") != parse_uri("tel:7042;phone-context=example.net")


@pytest.mark.parametrize(
    ("text", "scheme", "rest"),
    [
        ("urn:service:sos", "urn", "service:sos"),
        ("mailto:help@example.com", "mailto", "help@example.com"),
        ("HTTP://example.com/a?b=c", "http", "//example.com/a?b=c"),
        ("im:fred@example.com", "im", "fred@example.com"),
    ],
)
def test_unknown_scheme_is_absolute_uri(text: str, scheme: str, rest: str) -> None:
    uri = parse_uri(text)
    assert uri == AbsoluteURI(scheme, rest)
    assert str(uri) == f"{scheme}:{rest}"


def test_parse_sip_uri_rejects_other_schemes() -> None:
    for text in ("tel:+123", "urn:service:sos"):
        with pytest.raises(SipParseError, match="Not a SIP URI"):
            parse_sip_uri(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice",
        "alice@atlanta.com",
        ":alice",
        "1sip:alice@h",
        "si p:alice@h",
        "sip:",
        "sip:alice@",
        "sip:@atlanta.com",
        "sip:alice@atla nta.com",
        "sip:alice@atlanta.com:0",
        "sip:alice@atlanta.com:65536",
        "sip:alice@atlanta.com:5o60",
        "sip:alice@atlanta.com:",
        "sip:[::1",
        "sip:[zz::1]",
        "sip:[::1]5060",
        "sip:alice@atlanta.com;",
        "sip:alice@atlanta.com;;lr",
        "sip:alice@atlanta.com;=x",
        "sip:alice@atlanta.com?",
        "sip:alice@atlanta.com?subject",
        "sip:alice@atlanta.com?=x",
        "sip:<alice>@atlanta.com",
        'sip:"alice"@atlanta.com',
        "sip:alice@atl\tanta.com",
        "sips:alice@exa_mple.com:99999",
        "tel:",
        "tel:+1;",
        "mailto:",
        "mailto:a b",
        "urn:<x>",
    ],
)
def test_malformed_uris_raise_sip_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


@pytest.mark.parametrize("port", ["\u00b2", "\u0665\u0660\u0666\u0660", "\uff15\uff10\uff16\uff10"])
def test_non_ascii_digits_are_not_a_port(port: str) -> None:
    """str.isdigit() holds for superscripts and other scripts' digits; a port is ASCII digits only."""
    with pytest.raises(SipParseError, match="Bad port"):
        parse_uri(f"sip:alice@atlanta.com:{port}")


# -- RFC 3261 19.1.4 comparison ----------------------------------------------------------------------------

EQUAL = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
    ("sip:bob@biloxi.com;LR", "sip:bob@biloxi.com;lr"),
    ("sip:bob@biloxi.com;maddr=239.255.255.1", "sip:bob@biloxi.com;MADDR=239.255.255.1"),
    ("sip:bob@biloxi.com;user=PHONE", "sip:bob@biloxi.com;user=phone"),
    ("sip:bob@[2001:DB8::1]", "sip:bob@[2001:db8::1]"),
]

NOT_EQUAL = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:alice@atlanta.com", "sip:ALICE@atlanta.com"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice:a@atlanta.com", "sip:alice:A@atlanta.com"),
    ("sip:alice:a@atlanta.com", "sip:alice@atlanta.com"),
    ("sip:atlanta.com", "sip:alice@atlanta.com"),
    ("sip:alice@atlanta.com?subject=a", "sip:alice@atlanta.com?subject=a&priority=urgent"),
    ("sip:alice@atlanta.com;transport=tcp", "sip:alice@atlanta.com;transport=udp"),
    ("sip:alice@atlanta.com:5060", "sip:alice@atlanta.com:5061"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_rfc3261_equal_uris(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua == ub
    assert ub == ua
    assert hash(ua) == hash(ub)
    assert not ua != ub  # noqa: SIM202 (__ne__ must agree with __eq__)


@pytest.mark.parametrize(("a", "b"), NOT_EQUAL)
def test_rfc3261_unequal_uris(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua != ub
    assert ub != ua


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:bob@[::ffff:192.0.2.128]", "sip:bob@[::ffff:c000:280]"),
        ("sip:bob@[::1]:5060", "sip:bob@[0:0:0:0:0:0:0:1]:5060"),
        ("sip:bob@[2001:db8::9:1]", "sip:bob@[2001:db8:0:0:0:0:9:1]"),
    ],
)
def test_rfc5954_ipv6_references_compare_as_addresses(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua == ub
    assert hash(ua) == hash(ub)


@pytest.mark.parametrize("name", ["user", "ttl", "method", "maddr", "transport"])
def test_significant_param_in_one_uri_only(name: str) -> None:
    """user, ttl, method, maddr and transport must match when either URI has them."""
    bare = parse_uri("sip:alice@atlanta.com")
    other = parse_uri(f"sip:alice@atlanta.com;{name}=x")
    assert bare != other
    assert other != bare
    assert other == parse_uri(f"sip:alice@atlanta.com;{name.upper()}=X")


def test_other_param_in_one_uri_only_is_ignored() -> None:
    assert parse_uri("sip:alice@atlanta.com;lr") == parse_uri("sip:alice@atlanta.com")
    assert parse_uri("sip:alice@atlanta.com;ob;x=1") == parse_uri("sip:alice@atlanta.com;y=2")


def test_uri_compared_with_other_types() -> None:
    uri = parse_uri("sip:alice@atlanta.com")
    assert uri != "sip:alice@atlanta.com"
    assert uri != parse_uri("tel:+1234")
    assert uri != AbsoluteURI("sip", "alice@atlanta.com")
    assert uri in {parse_uri("sip:alice@ATLANTA.com;lr"): 1}


# -- immutable value helpers -------------------------------------------------------------------------------


def test_uri_is_immutable_and_edited_by_copy() -> None:
    uri = parse_sip_uri("sip:alice@atlanta.com;transport=udp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        uri.host = "evil.com"  # type: ignore[misc]
    tcp = uri.with_param("Transport", "tcp")
    assert tcp.params == (("Transport", "tcp"),)
    assert uri.params == (("transport", "udp"),)
    assert uri.with_param("lr").params == (("transport", "udp"), ("lr", None))
    assert uri.without_param("TRANSPORT").params == ()
    moved = uri.replace(host="biloxi.com", port=5070)
    assert str(moved) == "sip:alice@biloxi.com:5070;transport=udp"
    assert repr(moved) == "SipURI('sip:alice@biloxi.com:5070;transport=udp')"


# -- properties --------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(uris())
def test_parse_of_str_is_identity(uri: SipURI | TelURI | AbsoluteURI) -> None:
    parsed = parse_uri(str(uri))
    assert parsed == uri
    assert str(parsed) == str(uri)


@settings(max_examples=200, deadline=None)
@given(sip_uris())
def test_sip_uri_round_trip_keeps_every_component(uri: SipURI) -> None:
    parsed = parse_sip_uri(str(uri))
    assert (parsed.scheme, parsed.user, parsed.password, parsed.host, parsed.port) == (
        uri.scheme,
        uri.user,
        uri.password,
        uri.host,
        uri.port,
    )
    assert parsed.params == uri.params
    assert parsed.headers == uri.headers
    assert hash(parsed) == hash(uri)


@settings(max_examples=100, deadline=None)
@given(sip_uris(), st.data())
def test_equality_ignores_host_case(uri: SipURI, data: st.DataObject) -> None:
    changed = uri.replace(host=data.draw(st.sampled_from([uri.host.upper(), uri.host.lower()])))
    assert changed == uri
    assert hash(changed) == hash(uri)


@settings(max_examples=100, deadline=None)
@given(hosts())
def test_every_generated_host_is_a_valid_uri_host(host: str) -> None:
    uri = parse_sip_uri(f"sip:{format_host(host)}")
    assert uri.host == host


@settings(max_examples=50, deadline=None)
@given(tel_uris())
def test_tel_round_trip(uri: TelURI) -> None:
    assert parse_uri(str(uri)) == uri


@settings(max_examples=50, deadline=None)
@given(absolute_uris())
def test_absolute_round_trip(uri: AbsoluteURI) -> None:
    assert parse_uri(str(uri)) == uri


_FUZZ_CHARS = st.characters(exclude_categories=("Cs",))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["", "sip:", "sips:", "tel:", "SIP:a@", "x-y:"]), st.text(_FUZZ_CHARS, max_size=40))
def test_arbitrary_text_parses_or_raises_sip_parse_error(prefix: str, text: str) -> None:
    try:
        uri = parse_uri(prefix + text)
    except SipParseError:
        return
    assert isinstance(uri, SipURI | TelURI | AbsoluteURI)


# -- the fast path of parse_uri ----------------------------------------------------------------------------


def _fields(uri: object) -> tuple[object, ...]:
    """Every component exactly (equality of URIs is looser: it ignores host case, for one)."""
    if isinstance(uri, SipURI):
        return (uri.scheme, uri.user, uri.password, uri.host, uri.port, uri.params, uri.headers)
    return (type(uri), str(uri))


def _outcome(parse: object, text: str) -> object:
    try:
        return _fields(parse(text))  # type: ignore[operator]
    except SipParseError as e:
        return ("error", e.reason)


FAST_PATH_TEXTS = [
    "sip:127.0.0.1:5060",
    "sip:sipp@127.0.0.1:40000;transport=UDP",
    "sips:alice@Atlanta.Example.COM;lr;maddr=10.0.0.1;x=",
    "sip:+15551234567;phone-context=example.com@gw.example.com;user=phone",
    "sip:a.b-c_d!~*'()&=+$,@h",
    "sip:h:0",
    "sip:h:65535",
    "sip:h:65536",
    "sip:h:99999",
    "sip:h:05060",
    "sip:h;;",
    "sip:h;a=b=c",
    "sip:h;=x",
    "sip:@h",
    "sip:a@b@c",
    "sip:a:pw@h",
    "sip:%61lice@h",
    "sip:[::1]:5060",
    "SIP:a@h",
    " sip:a@h",
    "sip:a@h ",
    "sip:a@h?subject=x",
    "sip:a@h;p=%20",
    "sip:a@ex\u00e4mple.com",
    "sip:a@h:\u0665\u0660",
    "sip:",
    "sip:h\n",
]


@pytest.mark.parametrize("text", FAST_PATH_TEXTS)
def test_fast_path_agrees_with_the_careful_parser(text: str) -> None:
    """The regex fast path gives exactly the careful parser's value or error, or leaves the text to it."""
    assert _outcome(parse_uri, text) == _outcome(_parse_uri_careful, text)
    if is_plain_sip_uri(text):
        assert _outcome(_parse_uri_careful, text)[0] != "error"


@settings(max_examples=300, deadline=None)
@given(sip_uris())
def test_fast_path_agrees_on_generated_uris(uri: SipURI) -> None:
    text = str(uri)
    assert _fields(parse_uri(text)) == _fields(_parse_uri_careful(text))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["sip:", "sips:", "sip:a@", "sip:h;", "sip:h:"]), st.text(_FUZZ_CHARS, max_size=30))
def test_fast_path_agrees_on_arbitrary_text(prefix: str, text: str) -> None:
    assert _outcome(parse_uri, prefix + text) == _outcome(_parse_uri_careful, prefix + text)
