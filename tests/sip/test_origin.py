"""Where a request comes from behind a trusted proxy (`pbx.sip.origin`)."""

from __future__ import annotations

from pbx.sip.message import Request
from pbx.sip.origin import network_matcher, request_origin
from pbx.sip.parser import parse_message


def request(*vias: str) -> Request:
    lines = [
        "REGISTER sip:a.example SIP/2.0",
        *(f"Via: {via}" for via in vias),
        "From: <sip:1001@a.example>;tag=1",
        "To: <sip:1001@a.example>",
        "Call-ID: c1",
        "CSeq: 1 REGISTER",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def test_network_matcher() -> None:
    matches = network_matcher(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])
    assert matches("10.1.2.3") and matches("192.0.2.7") and matches("[2001:db8::1]")
    assert not matches("192.0.2.8") and not matches("11.0.0.1") and not matches("proxy.example")
    assert not network_matcher([])("10.0.0.1")


def test_behind_a_trusted_proxy_the_via_below_tells_the_origin() -> None:
    proxy = network_matcher(["127.0.0.2"])
    through = request(
        "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKp",
        "SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKa;received=198.51.100.9",
    )
    assert request_origin(through, "127.0.0.2", proxy) == "198.51.100.9"  # received: the phone was NATed
    plain = request("SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKp", "SIP/2.0/TCP 203.0.113.4:5060;branch=z9hG4bKa")
    assert request_origin(plain, "127.0.0.2", proxy) == "203.0.113.4"


def test_anyone_else_is_judged_by_the_packets_source() -> None:
    proxy = network_matcher(["127.0.0.2"])
    forged = request("SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKp", "SIP/2.0/UDP 203.0.113.4;branch=z9hG4bKa")
    assert request_origin(forged, "127.0.0.9", proxy) == "127.0.0.9"  # not a trusted proxy
    assert request_origin(forged, "127.0.0.9", None) == "127.0.0.9"
    own = request("SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKp")  # the proxy's own request (health check)
    assert request_origin(own, "127.0.0.2", proxy) == "127.0.0.2"
