"""The C twin of `pbx.sip.refusal` (`pbx.sip._refusal`) against the Python functions: for every datagram and
methods table the same scan (None, or the equal tuple of the same types), and for every scan the same 503.

The inputs are arbitrary bytes, a soup of the pieces the scan looks for, and the usual requests of
test_refusal.py built and then mutated (bytes inserted, deleted, replaced; case flipped; line ends removed,
doubled or halved; lines moved, doubled, folded; truncated; long lines; NUL and 8-bit bytes). The generators
take a `random.Random`, so tests/sip/fuzz_refusal.py runs the same ones a million times (under
AddressSanitizer) and the property tests here draw them from hypothesis. The C side is skipped when the
module is not built, unless PBX_REQUIRE_SPEEDUPS=1 (then it fails)."""

from __future__ import annotations

import random
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.sip import refusal as refusal_module

from .test_refusal import METHODS, PYTHON, STATUS, TAIL, speedups, usual

# Deterministic in CI (the same examples every run); tests/sip/fuzz_refusal.py is the random search.
FEW = settings(max_examples=100, derandomize=True, deadline=None)
MANY = settings(max_examples=120, derandomize=True, deadline=None)

METHOD_NAMES = [
    b"INVITE",
    b"REGISTER",
    b"BYE",
    b"OPTIONS",
    b"SUBSCRIBE",
    b"invite",
    b"INV",
    b"INVITEX",
    b"M" * 19,  # the longest method the scan looks at (its space at offset 19)
    b"M" * 20,
    b"\xffX",
    b"A\x00B",
    b"\r\nINVITE",
    b"",  # never looked up: a datagram starting with a space is no request
    b"A B",  # never found: the method ends at the first space
]


def methods_table(rng: random.Random) -> dict[bytes, str]:
    """Usually the PBX's table; else a few of METHOD_NAMES (possibly none), each to some str."""
    if rng.random() < 0.7:
        return METHODS
    names = rng.sample(METHOD_NAMES, rng.randint(0, 4))
    return {name: rng.choice([name.decode("latin-1"), "", "INVITE", "é"]) for name in names}


# --- The usual request, built from parts that vary -------------------------------------------------------

_WS = ["", "", "", " ", "\t", "  ", " \t "]
_VIA_NAMES = ["Via:", "Via:", "v:", "VIA:", "via:", "V:", "vIa:", "Via :", "Via\t:", "Vi:", "Via;"]
_TO_NAMES = ["To:", "To:", "t:", "TO:", "T:", "to :", "Tox:"]
_FROM_NAMES = ["From:", "From:", "f:", "FROM:", "F:", "From :"]
_CALL_ID_NAMES = ["Call-ID:", "Call-ID:", "i:", "call-id:", "I:", "Call-Id :"]
_CSEQ_NAMES = ["CSeq:", "CSeq:", "CSEQ:", "cseq:", "CSeq :"]
_PROTOCOLS = ["SIP/2.0/UDP"] * 6 + [
    "sip/2.0/udp",
    "SIP/2.0/TCP",
    "SIP/2.0 /UDP",
    "SIP/2.0/UDPX",
    "SIP/2.1/UDP",
]
_HOSTS = [
    "192.0.2.1",
    "Host.Example.COM",
    "pbx-1.example.org",
    "[2001:db8::1]",
    "[::1]",
    "",
    "h_x",
    "a..b",
    "-",
    "h\xe9",
    "h\x00",
    "x" * 300,
]
_BRANCHES = [
    "z9hG4bK",
    "",
    "Z9HG4BKabc",
    "z9hg4bkabc",
    'z9hG4bKa"b',
    "z9hG4bKa@b",
    "z9hG4bKa/b",
    "z9hG4bKa b",
    "z9hG4bKa\tb",
    "z9hG4bK\xff",
    "z9hG4bK\x00",
    "z9hG4bKa=b",
    "z9hG4bKa\x0bb",  # \v and \f end a param value as \s does in the Python module's pattern
    "z9hG4bKa\x0c",
    "z9hG4bKa\x1c",
    "z9hG4bKa,b",
    "z9hG4bKa:b",
    "1234",
    "z9hG4b",
]
_TOKEN = "abcXYZ019-.!%*_+`'~"
_PARAMS = [
    "rport",
    "rport=5060",
    "rport=",
    "RPORT",
    "maddr=239.1.1.1",
    "MADDR=x",
    "maddrx",
    "received=192.0.2.9",
    "ttl=1",
    "x",
    "x=",
    "=y",
    "",
    "branchx=1",
    "branck=z9hG4bKq",  # six letters, not "branch"
    "branchx=z9hG4bKq",
    "branc=z9hG4bKq",
    "branch-id=z9hG4bKq",
    "xbranch=z9hG4bKq",
    'a"b=c',
    "x=a=b",
    "x=\x0b",
    "x=\x1f\x85\xa0",
    "rportx",
    "authorization",
]


def odd(rng: random.Random, usual: str, odd: list[str], chance: float = 0.1) -> str:
    """`usual`, or now and then one of `odd`."""
    return rng.choice(odd) if rng.random() < chance else usual


def _port(rng: random.Random) -> str:
    if rng.random() < 0.9:
        return rng.choice(["", ":5060", ":5070", ":1", ":65535"])
    return ":" + "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 7)))


def _branch(rng: random.Random) -> str:
    if rng.random() < 0.85:
        return "z9hG4bK" + "".join(rng.choice(_TOKEN) for _ in range(rng.randint(0, 12)))
    return rng.choice(_BRANCHES)


def via_value(rng: random.Random, top: bool = True) -> str:
    """A Via value: a usual one with params in any order, or one with something odd about it."""
    params = [
        odd(rng, "branch", ["BRANCH", "Branch", "branch ", " branch", "branc"]) + "=" + _branch(rng)
        for _ in range(rng.choice([1] * 8 + [0, 2, 3]))
    ]
    params += rng.sample(["rport", "received=192.0.2.9", "ttl=1", "x", "rport=5060"], rng.randint(0, 2))
    if rng.random() < 0.15:
        params.append(rng.choice(_PARAMS))
    rng.shuffle(params)
    separators = [odd(rng, ";", [" ;", "; ", "\t;", ",", ";;"], 0.05) for _ in params]
    value = (
        odd(rng, rng.choice(["", " "]), _WS)
        + (odd(rng, "SIP/2.0/UDP", _PROTOCOLS) if top else rng.choice(["SIP/2.0/UDP", "SIP/2.0/TCP"]))
        + odd(rng, " ", ["  ", "\t", ""], 0.05)
        + odd(rng, rng.choice(_HOSTS[:3]), _HOSTS)
        + _port(rng)
        + "".join(separator + param for separator, param in zip(separators, params, strict=True))
        + odd(rng, "", _WS)
    )
    if rng.random() < 0.03:
        value += ", SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2"
    if rng.random() < 0.02:
        value += " (comment)"
    return value


_TO_VALUES = [
    "<sip:b@example.com>",
    "sip:b@example.com",
    '"B" <sip:b@example.com>',
    "<sip:b@example.com>;tag=x",
    "<sip:stage@example.com>",
    "sip:b@example.com;TAG=1",
    '"Tag" <sip:b@example.com>',
    "",
    "<sip:b@example.com>\r\n ;tag=folded",
    "<sip:b@example.com>;tag",  # "tag" right at the line's end
    "sip:b@example.com;x=TAG",
]
_OTHERS = [
    "Max-Forwards: 70",
    "Contact: <sip:a@192.0.2.1:5070;transport=UDP>",
    "Expires: 600",
    "Subject: to: v: f: call-id",
    'Authorization: Digest username="a", realm="example.com"',
    'Proxy-Authorization: Digest username="a"',
    "X-Note: AUTHORIZATION",
    "Supported: timer",
    "Content-Type: application/sdp",
    "X-Tab:\tv",
    "X-Empty:",
]
_ODD_OTHERS = [
    "Timestamp: 1",
    "Vary: x",
    "Accept: */*\r\n\t*/x",
    "To",
    "v",
    "Via",
    "t:",
    "X-Long: " + "y" * 3000,
]
_BODIES = [
    "",
    "",
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
    "\r\n\r\n",
]


def usual_request(rng: random.Random) -> bytes:
    """A new request as test_refusal.py's `usual` makes it, its parts each varied now and then."""

    def name(names: list[str]) -> str:
        return (
            names[0]
            if rng.random() < 0.8
            else rng.choice(names[:3])
            if rng.random() < 0.7
            else rng.choice(names)
        )

    method = odd(rng, rng.choice(["INVITE", "REGISTER"]), ["BYE", "M" * 19, "invite", "M" * 20], 0.05)
    vias = [name(_VIA_NAMES) + via_value(rng, top=i == 0) for i in range(rng.choice([1, 1, 1, 2, 3]))]
    if rng.random() < 0.05:  # every line starting with "v" counts as a Via line
        vias.insert(rng.randint(0, len(vias)), rng.choice(["Vary: x", "v", "Via", "v:"]))
    to_value = odd(rng, rng.choice(_TO_VALUES[:3]), _TO_VALUES)
    fields = [
        name(_FROM_NAMES) + odd(rng, " ", _WS) + "<sip:a@example.com>;tag=f1",
        name(_TO_NAMES) + odd(rng, " ", _WS) + to_value + odd(rng, "", _WS),
        name(_CALL_ID_NAMES) + odd(rng, " ", _WS) + "c1@example.com",
        name(_CSEQ_NAMES) + odd(rng, " ", _WS) + f"1 {method}",
        *rng.sample(_OTHERS, rng.randint(0, 4)),
    ]
    if rng.random() < 0.05:
        fields.append(rng.choice(_ODD_OTHERS))
    if rng.random() < 0.05:
        del fields[rng.randrange(4)]
    if rng.random() < 0.05:
        fields.append(rng.choice(fields))
    rng.shuffle(fields)
    at = rng.randint(0, len(fields))
    if rng.random() < 0.6:  # Via lines together, anywhere
        lines = fields[:at] + vias + fields[at:]
    else:  # or apart
        lines = list(fields)
        for i, via in enumerate(vias):
            lines.insert(min(len(lines), at + rng.randint(1, 3) * i), via)
    body = odd(rng, rng.choice(_BODIES[:3]), _BODIES)
    head = [f"{method} sip:example.com SIP/2.0", *lines, f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode("latin-1")


# --- Mutations -------------------------------------------------------------------------------------------

SOUP = [
    b"\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\r",
    b"\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"=",
    b"Via:",
    b"v:",
    b"\r\nv",
    b"\r\nt",
    b"To:",
    b"t:",
    b"From:",
    b"f:",
    b"Call-ID:",
    b"i:",
    b"CSeq:",
    b"tag",
    b"SIP/2.0/UDP ",
    b";branch=",
    b"z9hG4bK",
    b";rport",
    b";maddr",
    b"authorization",
    b"[",
    b"]",
    b"5060",
    b"\x00",
    b"\x0b",
    b"\x0c",
    b"\x80",
    b"\xff",
    b"INVITE ",
    b"REGISTER ",
]


def _flip_case(data: bytes, start: int, end: int) -> bytes:
    return data[:start] + data[start:end].swapcase() + data[end:]


def _lines_op(rng: random.Random, data: bytes) -> bytes:
    """Move, double or drop a header line (the request line and the body stay)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data
    first, *lines = data[:end].split(b"\r\n")
    if not lines:
        return data
    op = rng.randrange(4)
    i = rng.randrange(len(lines))
    if op == 0:
        lines.insert(rng.randint(0, len(lines)), lines.pop(i))
    elif op == 1:
        lines.insert(rng.randint(0, len(lines)), lines[i])
    elif op == 2:
        del lines[i]
    else:
        rng.shuffle(lines)
    return b"\r\n".join([first, *lines]) + data[end:]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """`data` with one to four random changes."""
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
        n = len(data)
        at = rng.randint(0, n)
        op = rng.randrange(12)
        if op == 0:
            data = data[:at] + rng.choice(SOUP) + data[at:]
        elif op == 1:
            data = data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 4))) + data[at:]
        elif op == 2:
            data = data[:at] + data[at + rng.randint(1, 8) :]
        elif op == 3 and n:
            at = min(at, n - 1)
            data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
        elif op == 4:
            data = _flip_case(data, at, at + rng.randint(1, 40))
        elif op == 5:  # a line end removed, halved or doubled
            i = data.find(b"\r\n", at)
            if i < 0:
                i = data.find(b"\r\n")
            if i >= 0:
                data = data[:i] + rng.choice([b"", b"\r", b"\n", b"\r\n\r\n", b"\n\r"]) + data[i + 2 :]
        elif op == 6:  # a folded line
            data = data[:at] + rng.choice([b"\r\n ", b"\r\n\t", b"\r\n  "]) + data[at:]
        elif op == 7:
            data = data[:at]
        elif op == 8:
            data = _lines_op(rng, data)
        elif op == 9:  # a very long line, or a long run inside one
            run = rng.choice([b"a", b" ", b"\t", b"v", b"\x00", b"\xff", b"1", b";x"]) * rng.choice(
                [300, 65536]
            )
            if rng.random() < 0.5:
                line = data.find(b"\r\n", at)
                at = line + 2 if line >= 0 else at
                run = b"X-Long: " + run + b"\r\n"
            data = data[:at] + run + data[at:]
        elif op == 10:
            data = data[:at] + b" " * rng.randint(1, 3) + data[at:]
        else:
            data = data[:at] + b"\t" + data[at:]
    return data


def soup(rng: random.Random) -> bytes:
    """A method and a space, then pieces of what the scan looks for, in any order."""
    start = rng.choice([b"INVITE ", b"REGISTER ", b"INVITE ", b"BYE ", b"", b"INVITE", b" "])
    return start + b"".join(rng.choice([*SOUP, b"a", b"b", b"0"]) for _ in range(rng.randint(0, 60)))


def any_input(
    rng: random.Random, usual: Callable[[random.Random], bytes] = usual_request
) -> tuple[bytes, dict[bytes, str]]:
    """One input for the scan: a `usual` request, often mutated; some soup; now and then arbitrary bytes."""
    kind = rng.random()
    if kind < 0.15:
        data = usual(rng)
    elif kind < 0.8:
        data = mutate(rng, usual(rng))
    elif kind < 0.95:
        data = soup(rng)
    else:
        data = rng.randbytes(rng.randint(0, 200))
    return data, methods_table(rng)


# --- The comparison --------------------------------------------------------------------------------------


def shape(value: object) -> object:
    """The types in `value`, nested like it (so True and 1, or a list and a tuple, differ)."""
    if type(value) is tuple:
        return ("tuple", [shape(item) for item in value])
    return type(value).__name__


def outcome(function: Any, *args: object) -> tuple[str, object]:
    try:
        return "returned", function(*args)
    except Exception as e:  # the Python functions never raise on bytes; if one does, the C must alike
        return "raised", type(e).__name__


_ANSWERS = [
    (STATUS, b"t1", TAIL),
    (b"", b"", b""),
    (b"SIP/2.0 503 Service Unavailable\r\n", b"x" * 70000, b"\r\n"),
    (STATUS, b"a\x00\xffb", b"Retry-After: 7\r\n\r\n"),
]


def agree(c: ModuleType, data: bytes, methods: dict[bytes, str]) -> object:
    """Assert that C and Python scan `data` alike and, when it is taken, make the same 503s."""
    expected = outcome(PYTHON.scan_new_request, data, methods)
    got = outcome(c.scan_new_request, data, methods)
    assert got == expected, (data, methods)
    assert shape(got[1]) == shape(expected[1]), (data, methods)
    raw = expected[1]
    if expected[0] == "returned" and raw is not None:
        for status, tag, tail in _ANSWERS:
            answer = outcome(PYTHON.refusal, raw, data, status, tag, tail)
            assert outcome(c.refusal, raw, data, status, tag, tail) == answer, (data, status, tag, tail)
            assert outcome(c.refusal, got[1], data, status, tag, tail) == answer, (data, status, tag, tail)
    return raw


@pytest.fixture(scope="module")
def c() -> ModuleType:
    return speedups()


def test_the_public_functions_are_the_c_ones_when_built(c: ModuleType) -> None:
    assert getattr(refusal_module, "SPEEDUPS", None) is c
    assert refusal_module.scan_new_request is c.scan_new_request
    assert refusal_module.refusal is c.refusal


def test_a_usual_request_and_the_edges(c: ModuleType) -> None:
    assert agree(c, usual(), METHODS) is not None
    for data in [
        b"",
        b" ",
        b"INVITE",
        b"INVITE ",
        b"INVITE \r\n\r\n",
        b"\r\n\r\n",
        usual()[:-1],
    ]:
        assert agree(c, data, METHODS) is None
    assert agree(c, usual() + b"\0\xff", METHODS) is not None
    for cut in range(len(usual())):
        agree(c, usual()[:cut], METHODS)


def test_every_method_name_and_table(c: ModuleType) -> None:
    """The method is the datagram's first word up to a space in its first 20 bytes, looked up as it is."""
    for name in METHOD_NAMES:
        data = usual().replace(b"REGISTER", name)
        for methods in [METHODS, {name: "X"}, {**METHODS, name: name.decode("latin-1")}, {}]:
            agree(c, data, methods)
            agree(c, b" " + data, methods)


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP h;branchx=z9hG4bK1",
        "SIP/2.0/UDP h;branc=z9hG4bK1",
        "SIP/2.0/UDP h;branck=z9hG4bK1",
        "SIP/2.0/UDP h;xranch=z9hG4bK1;branch=z9hG4bK2",
        "SIP/2.0/UDP h;xbranch=z9hG4bK1",
        "SIP/2.0/UDP h;branch=z9hG4bK1;branch=z9hG4bK2",
        "SIP/2.0/UDP h;branch=z9hG4bK1@;branch=z9hG4bK2",
        "SIP/2.0/UDP h;branch=;branch=z9hG4bK2",
        "SIP/2.0/UDP h;branch=z9hG4bK1\x0b",
        "SIP/2.0/UDP h;branch=z9hG4bK1\x0c;rport",
        "SIP/2.0/UDP h;branch=z9hG4bK1\x1c",
        "SIP/2.0/UDP h;branch=z9hG4bK1=2",
        "SIP/2.0/UDP h;x=a,b;branch=z9hG4bK1",
        "SIP/2.0/UDP h:;branch=z9hG4bK1",
        "SIP/2.0/UDP h:12345;branch=z9hG4bK1",
        "SIP/2.0/UDP h:123456;branch=z9hG4bK1",
        "SIP/2.0/UDP h:00000;branch=z9hG4bK1",
        "SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1",
        "\t SIP/2.0/UDP h;branch=z9hG4bK1 \t",
        "SIP/2.0/UDP h;branch=z9hG4bK1;MADDR=x",
        "SIP/2.0/UDP h;branch=z9hG4bK1;maddr",
        "SIP/2.0/UDP h;branch=z9hG4bK1;RPORT",
        "SIP/2.0/UDP h;rportx;branch=z9hG4bK1",
        "SIP/2.0/UDP h;BRANCH=z9hG4bK1",
        "SIP/2.0/UDP h;branch=Z9hG4bK1",
        "SIP/2.0/UDP h;branch=z9hG4bK",
    ],
)
def test_top_via_edges(c: ModuleType, via: str) -> None:
    data = usual(via="Via: " + via)
    agree(c, data, METHODS)
    agree(c, data.replace(b"Via: ", b"v:"), METHODS)


@FEW
@given(data=st.binary(max_size=300), methods=st.randoms(use_true_random=False).map(methods_table))
def test_arbitrary_bytes(c: ModuleType, data: bytes, methods: dict[bytes, str]) -> None:
    agree(c, data, methods)


@FEW
@given(
    method=st.sampled_from(METHOD_NAMES),
    rest=st.lists(st.sampled_from(SOUP), max_size=60).map(b"".join),
    methods=st.randoms(use_true_random=False).map(methods_table),
)
def test_a_soup_of_what_the_scan_looks_for(
    c: ModuleType, method: bytes, rest: bytes, methods: dict[bytes, str]
) -> None:
    agree(c, method + b" " + rest, methods)


@MANY
@given(rng=st.randoms(use_true_random=False))
def test_usual_requests_varied(c: ModuleType, rng: random.Random) -> None:
    agree(c, usual_request(rng), METHODS)


@MANY
@given(rng=st.randoms(use_true_random=False))
def test_usual_requests_mutated(c: ModuleType, rng: random.Random) -> None:
    agree(c, mutate(rng, usual_request(rng)), methods_table(rng))


def test_many_seeded_inputs(c: ModuleType) -> None:
    """Five thousand inputs of every kind from a fixed seed."""
    rng = random.Random(12)
    for _ in range(5000):
        agree(c, *any_input(rng))


def test_refusal_given_what_no_scan_makes_does_not_crash(c: ModuleType) -> None:
    """Outside the contract (a raw no scan made) the C may raise or answer, but reads nothing outside."""
    data = usual()
    raw = agree(c, data, METHODS)
    assert isinstance(raw, tuple)
    n = len(data)
    for span in [(0, n + 1), (-1, 2), (5, 4), (n, n), (0, 2**63), (2**70, 0), (1.5, 2), [0, 1], (0,), None]:
        for at in (6, 7, 8, 9, 10):
            changed = list(raw)
            changed[at] = (span,) if at == 6 else span
            outcome(c.refusal, tuple(changed), data, STATUS, b"t1", TAIL)
    for odd_raw in [raw[:10], (*raw, 1), list(raw), None, (*raw[:6], (), *raw[7:])]:
        outcome(c.refusal, odd_raw, data, STATUS, b"t1", TAIL)
    outcome(c.refusal, raw, bytearray(data), STATUS, b"t1", TAIL)
    outcome(c.refusal, raw, data[:10], STATUS, b"t1", TAIL)
    outcome(c.scan_new_request, bytearray(data), METHODS)
    outcome(c.scan_new_request, data, list(METHODS.items()))
