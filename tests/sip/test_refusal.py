"""`pbx.sip.refusal`: a new request's 503 made from its raw bytes, against what the parser and the full path
make of the same bytes (RFC 3261 8.2.6.2: Via in order, From, To with a tag, Call-ID, CSeq; 17.2.3: the
transaction key). Each test runs against both implementations: the pure Python one and the C twin
(`pbx.sip._refusal`), which is skipped when it is not built, unless PBX_REQUIRE_SPEEDUPS=1."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.sip.errors import SipParseError
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.refusal import RawRequest, refusal_py, scan_new_request_py

METHODS = {b"INVITE": "INVITE", b"REGISTER": "REGISTER"}
STATUS = b"SIP/2.0 503 Service Unavailable\r\n"
TAIL = b"Retry-After: 5\r\nServer: pbx\r\nContent-Length: 0\r\n\r\n"


class Implementation(NamedTuple):
    """One implementation of `pbx.sip.refusal`'s two functions."""

    name: str
    scan_new_request: Callable[[bytes, dict[bytes, str]], RawRequest | None]
    refusal: Callable[[RawRequest, bytes, bytes, bytes, bytes], bytes]


PYTHON = Implementation("python", scan_new_request_py, refusal_py)


def speedups() -> ModuleType:
    """The C twin `pbx.sip._refusal`; when it does not import, the test is skipped (no compiler), or fails
    when the environment says it must be there (PBX_REQUIRE_SPEEDUPS=1, as in CI)."""
    try:
        return importlib.import_module("pbx.sip._refusal")
    except ImportError as e:
        if os.environ.get("PBX_REQUIRE_SPEEDUPS") == "1":
            pytest.fail(
                f"PBX_REQUIRE_SPEEDUPS=1 but pbx.sip._refusal does not import ({e}): build it with "
                "`pip install -e .` (needs a C compiler and the Python headers)",
                pytrace=False,
            )
        pytest.skip(f"pbx.sip._refusal is not built ({e}): the C twin is not tested")


@pytest.fixture(scope="module", params=["python", "c"])
def impl(request: pytest.FixtureRequest) -> Implementation:
    """Each implementation in turn."""
    if request.param == "python":
        return PYTHON
    module = speedups()
    return Implementation("c", module.scan_new_request, module.refusal)


def message(method: str = "REGISTER", *lines: str, body: str = "") -> bytes:
    head = [f"{method} sip:example.com SIP/2.0", *lines, f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


def usual(method: str = "REGISTER", *extra: str, via: str = "", to: str = "To: <sip:a@example.com>") -> bytes:
    return message(
        method,
        via or "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKabc;rport",
        "Max-Forwards: 70",
        "From: <sip:a@example.com>;tag=f1",
        to,
        "Call-ID: c1@example.com",
        f"CSeq: 1 {method}",
        *extra,
    )


def same_as_the_full_path(impl: Implementation, data: bytes) -> Response:
    """Scan `data`, check the key against the parser's, and the raw 503 against the full path's."""
    raw = impl.scan_new_request(data, METHODS)
    assert raw is not None
    request = parse_message(data)
    assert isinstance(request, Request)
    via = request.top_via
    assert via is not None
    method, branch, host, port, _rport, credentials = raw[:6]
    assert (branch, host, port, method) == (via.branch, via.host.lower(), via.port, request.method)
    assert credentials == ("Authorization" in request.headers or "Proxy-Authorization" in request.headers)
    answer = parse_message(impl.refusal(raw, data, STATUS, b"t1", TAIL))
    assert isinstance(answer, Response)
    full = request.response(503, to_tag="t1")
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        assert answer.headers.get_all(name) == full.headers.get_all(name), name
    assert answer.status == 503 and answer.headers.get("Retry-After") == "5" and answer.to.tag == "t1"
    return answer


def test_a_usual_register_and_invite(impl: Implementation) -> None:
    same_as_the_full_path(impl, usual())
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
    invite = message(
        "INVITE",
        "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1-inv;rport",
        "From: <sip:a@example.com>;tag=f1",
        "To: <sip:b@example.com>",
        "Call-ID: c2@example.com",
        "CSeq: 1 INVITE",
        "Content-Type: application/sdp",
        body=sdp,
    )
    answer = same_as_the_full_path(impl, invite)
    assert answer.body == b""


def test_several_vias_in_order_even_when_apart(impl: Implementation) -> None:
    answer = same_as_the_full_path(impl, usual("INVITE", "Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKsecond"))
    assert [v.split(";")[0] for v in answer.headers.get_all("Via")] == [
        "SIP/2.0/UDP 192.0.2.1:5070",
        "SIP/2.0/UDP 10.0.0.2",
    ]
    together = usual(
        via="Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa\r\nv: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKb"
    )
    same_as_the_full_path(impl, together)


def test_compact_forms_case_and_credentials(impl: Implementation) -> None:
    data = message(
        "INVITE",
        "v: SIP/2.0/udp Host.Example.COM;BRANCH=z9hG4bKCase;received=192.0.2.9",
        "f: <sip:a@example.com>;tag=f1",
        't: "B" <sip:b@example.com>',
        "i: compact@example.com",
        "cSeQ: 7 INVITE",
        'Proxy-Authorization: Digest username="a"',
    )
    raw = impl.scan_new_request(data, METHODS)
    assert raw is not None and raw[2:6] == ("host.example.com", None, False, True)
    same_as_the_full_path(impl, data)


def test_no_port_no_rport_and_a_to_without_brackets(impl: Implementation) -> None:
    data = usual(via="Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx", to="To: sip:a@example.com")
    raw = impl.scan_new_request(data, METHODS)
    assert raw is not None and raw[3:5] == (None, False)
    assert same_as_the_full_path(impl, data).to.tag == "t1"


@pytest.mark.parametrize(
    "data",
    [
        usual("BYE"),
        usual("OPTIONS"),
        b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        usual(to="To: <sip:a@example.com>;tag=x"),  # in a dialog
        usual(to="To: <sip:stage@example.com>"),  # "tag" in the line: in doubt, not here
        usual(via="Via: SIP/2.0/UDP 192.0.2.1;branch=1234"),  # RFC 2543
        usual(via="Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1"),
        usual(via="Via: SIP/2.0/UDP 192.0.2.1"),  # no branch
        usual(via="Via: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKv6"),
        usual(via="Via: SIP/2.0/UDP 192.0.2.1 ;branch=z9hG4bK1"),
        usual(via="Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2"),
        usual(via="Via: SIP/2.0/UDP 192.0.2.1;maddr=239.1.1.1;branch=z9hG4bK1"),
        usual(via="Via : SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"),
        usual("REGISTER", "Via : SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2"),  # a Via the finds would miss
        usual("REGISTER", "To: <sip:b@example.com>"),  # two To headers
        usual("REGISTER", "Timestamp: 1"),  # a line starting with "t" that is no To: the slow way
        usual(to="To: <sip:a@example.com>\r\n ;tag=folded"),
        usual(via="Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n ;rport"),
        usual().replace(b"From: <sip:a@example.com>;tag=f1", b"From: <sip:a@example.com>\r\n\t;tag=f1"),
        usual().replace(b"Call-ID: c1@example.com\r\n", b""),
        usual().replace(b"\r\n", b"\n"),  # LF only
        b"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n",  # no end of headers
    ],
)
def test_anything_unusual_is_left_to_the_slow_way(impl: Implementation, data: bytes) -> None:
    assert impl.scan_new_request(data, METHODS) is None


_NAMES = {
    "Via": ["Via", "VIA", "via", "v", "V"],
    "From": ["From", "FROM", "f"],
    "To": ["To", "TO", "t"],
    "Call-ID": ["Call-ID", "call-id", "i"],
    "CSeq": ["CSeq", "CSEQ"],
}
_TO_VALUES = ["<sip:b@example.com>", "sip:b@example.com", '"B" <sip:b@example.com>']
_OTHERS = [
    "Max-Forwards: 70",
    "Contact: <sip:a@192.0.2.1:5070;transport=UDP>",
    "Expires: 600",
    "User-Agent: SIPp overload",
    "Subject: to: v: f: call-id",
    "Allow: INVITE, ACK, BYE",
    'Authorization: Digest username="a", realm="example.com"',
    "X-Custom: 1",
]


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["INVITE", "REGISTER"]))
    vias = []
    for i in range(draw(st.integers(1, 3))):
        host = draw(st.sampled_from(["192.0.2.1", "Host.Example.com", "pbx-1.example.org"]))
        port = draw(st.sampled_from(["", ":5070", ":5060", ":65535"]))
        before = draw(st.sampled_from(["", ";received=192.0.2.7", ";ttl=1"]))
        after = draw(st.sampled_from(["", ";rport", ";rport=5070", ";x=y;rport"]))
        branch = draw(st.from_regex(r"z9hG4bK[A-Za-z0-9.\-_+!~%*`']{1,20}", fullmatch=True))
        transport = draw(st.sampled_from(["UDP", "udp"])) if i == 0 else "TCP"
        space = draw(st.sampled_from(["", " ", "  "]))
        name = draw(st.sampled_from(_NAMES["Via"]))
        vias.append(f"{name}:{space}SIP/2.0/{transport} {host}{port}{before};branch={branch}{after}")
    fields = [
        f"{draw(st.sampled_from(_NAMES['From']))}: <sip:a@example.com>;tag={draw(st.integers(0, 999))}",
        f"{draw(st.sampled_from(_NAMES['To']))}: {draw(st.sampled_from(_TO_VALUES))}",
        f"{draw(st.sampled_from(_NAMES['Call-ID']))}: {draw(st.integers(0, 10**9))}@example.com",
        f"{draw(st.sampled_from(_NAMES['CSeq']))}: {draw(st.integers(1, 99))} {method}",
        *draw(st.lists(st.sampled_from(_OTHERS), unique=True, max_size=5)),
    ]
    fields = draw(st.permutations(fields))
    at = draw(st.integers(0, len(fields)))  # Via lines together, anywhere
    if draw(st.booleans()):
        lines = fields[:at] + vias + fields[at:]
    else:  # or apart
        lines = list(fields)
        for i, via in enumerate(vias):
            lines.insert(min(len(lines), at + 2 * i), via)
    return message(method, *lines)


@settings(max_examples=60, deadline=None)
@given(requests())
def test_any_usual_request_is_taken_and_answered_as_the_full_path_would(
    impl: Implementation, data: bytes
) -> None:
    same_as_the_full_path(impl, data)


@settings(max_examples=60, deadline=None)
@given(
    requests(), st.integers(0, 10**6), st.sampled_from([b"\r\n ", b" :", b";tag=1", b"\r\n\t", b"[", b","])
)
def test_a_disturbed_request_is_taken_only_when_right(
    impl: Implementation, data: bytes, where: int, what: bytes
) -> None:
    """Whatever is inserted into the header block, the scan either declines or agrees with the parser."""
    end = data.index(b"\r\n\r\n")
    at = where % end
    changed = data[:at] + what + data[at:]
    if impl.scan_new_request(changed, METHODS) is None:
        return
    try:
        request = parse_message(changed)
        assert isinstance(request, Request)
        if request.top_via is None:
            return
        request.to, request.from_, request.cseq, request.call_id  # noqa: B018
    except (SipParseError, AssertionError):
        return  # the parser refuses it: a 503 for a broken request is no harm
    same_as_the_full_path(impl, changed)
