"""RFC 4475 and RFC 5118, every case: the parser and `check_request` do what each RFC asks.

Our messages for the cases (written after the RFCs' descriptions) and their expected outcomes are in
tests/data/torture/rfc4475/, rfc5118/ and rfc-expected.toml (see tests/sip/torture_corpus.py);
tests/e2e/test_torture.py sends the same ones to a live `twistd pbx`.
"""

from __future__ import annotations

import pytest

from pbx.sip.errors import MAX_REASON, SipError, SipParseError, safe_reason
from pbx.sip.headers import NameAddress, Via
from pbx.sip.message import Headers, Request, Response
from pbx.sip.parser import StreamFramer, parse_message
from pbx.sip.uri import AbsoluteURI, SipURI
from pbx.sip.validate import check_request
from tests.sip.test_stack import FakeFlow, deliver, make_stack
from tests.sip.torture_corpus import CASES, VALID, Case, outcome

BY_NAME = {case.name: case for case in CASES}


def request(name: str) -> Request:
    message = parse_message(BY_NAME[name].data)
    assert isinstance(message, Request)
    return message


def test_every_message_of_both_rfcs_is_in_the_corpus() -> None:
    rfc4475 = [c for c in CASES if c.rfc == "rfc4475"]
    rfc5118 = [c for c in CASES if c.rfc == "rfc5118"]
    assert len(rfc4475) == 50  # a message for each of the 49 cases of section 3, and our `test` (no version)
    assert len(rfc5118) == 12
    for case in CASES:
        assert case.path.is_file(), case.path
    assert {p.stem for p in (CASES[0].path.parent).glob("*.dat")} == {c.name for c in rfc4475}
    assert {p.stem for p in (CASES[-1].path.parent).glob("*.dat")} == {c.name for c in rfc5118}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rfc_message_outcome(case: Case) -> None:
    assert outcome(case.data) == case.expect


@pytest.mark.parametrize("case", [c for c in CASES if c.expect == VALID], ids=lambda c: c.id)
def test_valid_rfc_request_parses_fully(case: Case) -> None:
    """Every mandatory header of an accepted request reads without error, and the message round-trips."""
    message = parse_message(case.data)
    assert isinstance(message, Request)
    assert message.cseq.method == message.method
    message.from_  # noqa: B018
    message.to  # noqa: B018
    assert message.vias
    message.contacts  # noqa: B018
    again = parse_message(bytes(message))
    assert isinstance(again, Request)
    assert again.start_line() == message.start_line()
    assert again.body == message.body
    check_request(again)


def test_leading_zeros_are_read() -> None:
    """RFC 4475 3.1.1.1 (our wsinv): `MaX-fOrWaRdS: 0042`, a folded `cseq: 0031 INVITE`, folded, spaced
    and compact headers, quoted-pairs in a display name."""
    wsinv = request("wsinv")
    assert (wsinv.cseq.number, wsinv.cseq.method) == (31, "INVITE")
    assert wsinv.headers.get("Max-Forwards") == "0042"
    assert [v.host for v in wsinv.vias] == ["desk.example.net", "relay1.example.net", "203.0.113.40"]
    assert wsinv.from_.tag == "4kz81m"
    assert wsinv.from_.display_name == 'Oskar "Otter" \\ Lind'
    assert wsinv.to.tag == "7c2f0a91x"
    assert wsinv.call_id == "tortuous-ws.61c0a2@desk.example.net"
    assert len(wsinv.body) == 135


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("CSeq", "0000000000000000000001 OPTIONS"),
        ("Max-Forwards", "00000000000000000070"),
        ("Content-Length", "0000000000000000000000"),
    ],
)
def test_any_number_of_leading_zeros(header: str, value: str) -> None:
    lines = [
        "OPTIONS sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:05060;branch=z9hG4bKzeros",
        "From: <sip:a@example.com>;tag=1",
        "To: <sip:bob@example.com>",
        "Call-ID: zeros",
    ]
    defaults = {"CSeq": "1 OPTIONS", "Max-Forwards": "70", "Content-Length": "0"}
    defaults[header] = value
    lines += [f"{name}: {text}" for name, text in defaults.items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    message = parse_message(data)
    assert isinstance(message, Request)
    check_request(message)
    assert message.top_via is not None and message.top_via.port == 5060
    assert StreamFramer().feed(data) == [data]


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("CSeq", "2147483648 OPTIONS"),
        ("Max-Forwards", "256"),
        ("Max-Forwards", "0000256"),
        ("CSeq", "-1 OPTIONS"),
    ],
)
def test_numbers_out_of_range_are_refused(header: str, value: str) -> None:
    message = request("zeromf")
    message.headers.set(header, value)
    with pytest.raises(SipError) as info:
        check_request(message)
    assert info.value.status == 400


def test_ipv6_references() -> None:
    """RFC 5118 4.3, 4.4, 4.5, 4.7 and 4.10 (our messages)."""
    ambiguous = request("port-ambiguous").uri
    assert isinstance(ambiguous, SipURI)
    assert (ambiguous.host, ambiguous.port) == ("2001:db8:aa::20:5080", None)
    unambiguous = request("port-unambiguous").uri
    assert isinstance(unambiguous, SipURI)
    assert (unambiguous.host, unambiguous.port) == ("2001:db8:aa::20", 5080)
    assert request("via-received-param-with-delim").vias[0].received == "[2001:db8:aa::20:99]"
    assert request("via-received-param-no-delim").vias[0].received == "2001:db8:aa::20:99"
    three = request("ipv6-bug-abnf-3-colons")
    two = request("ipv6-correct-abnf-2-colons")
    assert isinstance(three.uri, SipURI) and three.uri.host == "2001:db8:aa::198.51.100.9"
    assert three.uri == two.uri
    assert three.to.uri == two.to.uri
    assert [v.host for v in request("mult-ip-in-header").vias] == [
        "2001:db8:aa::20:7",
        "198.51.100.9",
        "2001:db8:aa::31:2",
    ]


def test_malformed_request_lines_keep_a_routable_request() -> None:
    """RFC 4475 3.1.2.7-3.1.2.10: a 400 goes back, so the error must carry the request."""
    for name in ("ltgtruri", "lwsruri", "lwsstart", "trws"):
        with pytest.raises(SipParseError) as info:
            parse_message(BY_NAME[name].data)
        assert info.value.request is not None, name
        assert info.value.request.method in ("INVITE", "OPTIONS")
        assert info.value.request.top_via is not None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("badaspec", "Bad To header: Blank inside <URI>"),
        ("baddn", "Bad From header: Display name needs quotes"),
        ("regbadct", "Bad Contact header: URI with ? or , not in <>"),
        ("escruri", "Request-URI with headers"),
        ("mcl01", "Multiple Content-Length headers"),
        ("multi01", "Multiple CSeq headers"),
        ("insuf", "Missing From header"),
        ("scalar02", "Bad CSeq header: Bad CSeq number"),
        ("badinv01", "Bad Via header: Bad header parameter"),
    ],
)
def test_lazily_read_values_are_validated(name: str, reason: str) -> None:
    with pytest.raises(SipError) as info:
        check_request(request(name))
    assert (info.value.status, info.value.reason) == (400, reason)


@pytest.mark.parametrize(
    "text",
    ["a" * 500, "caf\u00e9 \x00\r\n\x7f", "\udcff\udcfe", "Unsupported URI Scheme: " + "x" * 300],
)
def test_reason_phrases_are_bounded_and_printable(text: str) -> None:
    for reason in (safe_reason(text), SipError(400, text).reason, SipParseError(text).reason):
        assert reason is not None
        assert len(reason) <= MAX_REASON
        assert reason.isascii() and reason.isprintable()
        assert Response(400, reason).start_line().encode("ascii")


def test_unknown_scheme_reason_is_sanitised() -> None:
    message = request("unkscm")
    message.uri = AbsoluteURI("x" * 200 + "\u00e9", "rest")
    with pytest.raises(SipError) as info:
        check_request(message)
    assert info.value.status == 416
    assert info.value.reason is not None and len(info.value.reason) <= MAX_REASON
    assert info.value.reason.isascii()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rfc_message_through_the_stack(case: Case) -> None:
    """The same outcome from a `SipStack` fed the datagram (no transaction users: INVITE and REGISTER get
    405, unknown methods 501, OPTIONS 200); every response is sent somewhere, and no timer is left over."""
    stack, transports, clock = make_stack()
    flow = FakeFlow(remote=("192.0.2.200", 5060))
    deliver(stack, case.data, flow)
    sent = flow.sent + [data for data, _, _, _ in transports.sent]
    statuses = [r.status for r in (parse_message(d) for d in sent) if isinstance(r, Response)]
    assert len(statuses) == len(sent)
    finals = [s for s in statuses if s >= 200]
    if case.expect == VALID:
        assert len(finals) == 1 and finals[0] not in (400, 416, 420, 505, 513), statuses
    elif isinstance(case.expect, int):
        assert finals == [case.expect]
    else:
        assert sent == []
    assert stack.counters["errors"] == 0
    clock.advance(64)
    clock.advance(64)
    assert clock.getDelayedCalls() == []


def test_malformed_top_via_is_answered_where_it_can_be_read() -> None:
    """RFC 4475 3.1.2.1: the 400 for `Via: SIP/2.0/UDP uac7.example.test;;,;,,` goes to the source address."""
    stack, transports, _ = make_stack()
    flow = FakeFlow(remote=("192.0.2.99", 5060))
    deliver(stack, BY_NAME["badinv01"].data, flow)
    [data] = flow.sent
    response = parse_message(data)
    assert isinstance(response, Response)
    assert (response.status, response.reason) == (400, "Bad Via header: Bad header parameter")
    assert response.headers.get("Via") == "SIP/2.0/UDP uac7.example.test;received=192.0.2.99"
    assert transports.sent == []


def test_headers_first_repeated_and_values_after_first() -> None:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"),
            ("To", "<sip:b@x>"),
            ("v", "SIP/2.0/UDP b, SIP/2.0/TCP c"),
            ("t", "<sip:c@x>"),
        ]
    )
    assert headers.first_repeated(frozenset(("to", "from"))) == "To"
    assert headers.first_repeated(frozenset(("from", "call-id"))) is None
    assert headers.values_after_first("via") == ["SIP/2.0/UDP b", "SIP/2.0/TCP c"]
    assert headers.values_after_first("via") == headers.get_all("Via")[1:]
    assert Headers([("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b")]).values_after_first("via") == ["SIP/2.0/UDP b"]
    assert Headers([("Via", "SIP/2.0/UDP a")]).values_after_first("via") == []


def test_client_written_received_is_replaced_by_the_source() -> None:
    """RFC 5118 4.5: a Via whose sent-by is the source but carries another `received` is answered there."""
    text = "SIP/2.0/UDP 127.0.0.1:5062;received=2001:db8::9:255;branch=z9hG4bKas3"
    via = Via.parse(text)
    stamped = via.stamped(text, "127.0.0.1", 5062)
    assert stamped is not None
    assert Via.parse(stamped[0]).received == "127.0.0.1"
    same = "SIP/2.0/UDP 127.0.0.1:5062;received=127.0.0.1;branch=z9hG4bKas3"
    assert Via.parse(same).stamped(same, "127.0.0.1", 5062) is None


def test_lenient_via_reads_only_what_parses() -> None:
    assert Via.parse_lenient("SIP/2.0/UDP 192.0.2.15;;") == Via("UDP", "192.0.2.15")
    lenient = Via.parse_lenient("SIP/2.0/UDP 192.0.2.15:5070;;rport;=x;branch=z9hG4bK1")
    assert lenient == Via("UDP", "192.0.2.15", 5070, (("rport", None), ("branch", "z9hG4bK1")))
    for text in ("garbage", "SIP/2.0/UDP", "SIP/2.0/UDP bad host;x", "SIP/2.0/UDP [::zz]"):
        assert Via.parse_lenient(text) is None, text


@pytest.mark.parametrize(
    ("text", "display"),
    [
        ("caller<sip:c@x>", "caller"),
        ("J\u00f6rg M\u00fcller <sip:j@x>", "J\u00f6rg M\u00fcller"),
        ("a b  c <sip:a@x>", "a b  c"),
    ],
)
def test_unquoted_display_names(text: str, display: str) -> None:
    assert NameAddress.parse(text).display_name == display
    NameAddress.check(text)


@pytest.mark.parametrize(
    "text", ["Bell, Alexander <sip:a@x>", "a;b <sip:a@x>", "J\u00f6rg, M <sip:j@x>", "a@b <sip:a@x>"]
)
def test_display_names_that_need_quotes(text: str) -> None:
    with pytest.raises(SipParseError):
        NameAddress.check(text)
