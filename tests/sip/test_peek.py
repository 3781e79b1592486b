"""`pbx.sip.peek`: a new INVITE or REGISTER recognised from its bytes, and a response built from them."""

from __future__ import annotations

import pytest

from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.peek import peek_new_request, raw_response

STARTS = (b"INVITE ", b"REGISTER ")


def request(
    method: str = "REGISTER", *extra: str, to: str = "To: <sip:a@example.com>", via: str = ""
) -> bytes:
    via = via or "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKabc;rport"
    lines = [
        f"{method} sip:example.com SIP/2.0",
        via,
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKinner",
        "Max-Forwards: 70",
        "From: <sip:a@example.com>;tag=f1",
        to,
        "Call-ID: c1@example.com",
        f"CSeq: 1 {method}",
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_new_register_is_seen_as_the_parser_sees_it() -> None:
    data = request()
    peeked = peek_new_request(data, STARTS)
    assert peeked is not None
    parsed = parse_message(data)
    assert isinstance(parsed, Request)
    via = parsed.top_via
    assert via is not None
    assert (peeked.method, peeked.branch, peeked.host, peeked.port) == (
        "REGISTER",
        via.branch,
        via.host,
        via.port,
    )
    assert peeked.transaction_key == ("z9hG4bKabc", "192.0.2.1", 5070, "REGISTER")
    assert not peeked.credentials


def test_the_response_built_from_the_bytes_parses_and_copies_what_rfc_3261_says() -> None:
    peeked = peek_new_request(request("INVITE", "Proxy-Authorization: Digest x=1"), STARTS)
    assert peeked is not None and peeked.credentials
    data = raw_response(peeked, b"SIP/2.0 503 Service Unavailable", "t1", b"Retry-After: 5\r\n")
    response = parse_message(data)
    assert isinstance(response, Response)
    assert response.status == 503 and response.headers.get("Retry-After") == "5"
    assert response.headers.get_all("Via") == [
        "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKabc;rport",
        "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKinner",
    ]
    assert response.to.tag == "t1" and response.from_.tag == "f1"
    assert (response.call_id, str(response.cseq)) == ("c1@example.com", "1 INVITE")


@pytest.mark.parametrize(
    "variant",
    [
        {"via": "v: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKv6", "key": ("2001:db8::1", 5070)},
        {"via": "VIA: sip/2.0/udp Host.Example.COM ; BRANCH = z9hG4bKh", "key": ("host.example.com", None)},
    ],
)
def test_compact_forms_ipv6_and_case(variant: dict) -> None:
    data = request(via=variant["via"], to="t: <sip:a@example.com>")
    peeked = peek_new_request(data, STARTS)
    assert peeked is not None
    parsed = parse_message(data)
    via = parsed.top_via  # type: ignore[union-attr]
    assert peeked.transaction_key[1:3] == variant["key"] == (via.host.lower(), via.port)


@pytest.mark.parametrize(
    "data",
    [
        request("BYE"),
        request("OPTIONS"),
        b"SIP/2.0 200 OK\r\n\r\n",
        request(to="To: <sip:a@example.com>;tag=x"),  # in a dialog
        request(to="To: <sip:a@example.com> ; TAG = x"),
        request(via="Via: SIP/2.0/UDP 192.0.2.1;branch=1234"),  # RFC 2543
        request(via="Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1"),
        request(via="Via: SIP/2.0/UDP 192.0.2.1"),  # no branch
        request("REGISTER", "To: <sip:b@example.com>"),  # two To headers
        request("REGISTER", " folded"),
        request("REGISTER", "NoColon"),
        b"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n",  # no end of headers
        request().replace(b"Call-ID: c1@example.com\r\n", b""),
    ],
)
def test_anything_unusual_is_left_to_the_parser(data: bytes) -> None:
    assert peek_new_request(data, STARTS) is None
