"""Hypothesis strategies for the SIP message layer (RFC 3261 sections 7, 19.1, 20 and 25), and the recording
fakes of a flow and a server transaction that the transaction users' tests share.

Every strategy produces valid `pbx.sip` values: `parse(str(x)) == x` holds for each of them, and generated
requests and responses survive `parse_message(bytes(m))`. Tests of other packages use them to build messages
without writing wire text by hand.

This module imports hypothesis (it is only used by tests) but never the reactor; it knows nothing of
transports, transactions or the PBX.
"""

from __future__ import annotations

import ipaddress
import string
from functools import cache

from hypothesis import strategies as st
from zope.interface import implementer

from pbx.sip.headers import CSeq, NameAddress, Via, quote_string
from pbx.sip.interfaces import IFlow, IServerTransaction
from pbx.sip.message import MAGIC_COOKIE, Headers, Request, Response
from pbx.sip.uri import AbsoluteURI, SipURI, TelURI

__all__ = [
    "TOKEN_ALPHABET",
    "RecordingFlow",
    "RecordingServerTransaction",
    "absolute_uris",
    "call_ids",
    "cseqs",
    "header_texts",
    "hosts",
    "ipv4_addresses",
    "ipv6_addresses",
    "methods",
    "name_addresses",
    "requests",
    "responses",
    "sip_uris",
    "tel_uris",
    "tokens",
    "uris",
    "vias",
]

# RFC 3261 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-.!%*_+`'~"
_ALNUM = string.ascii_letters + string.digits

KNOWN_METHODS = (
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
)

# Any character but surrogates and control characters (CR, LF, NUL, NEL ...): what may appear in a decoded
# header value or URI component.
_PRINTABLE = st.characters(exclude_categories=("Cs", "Cc"))

# Strategy factories are cached: hypothesis validates each new strategy object, and the composite strategies
# below draw from these thousands of times.


@cache
def tokens(min_size: int = 1, max_size: int = 16) -> st.SearchStrategy[str]:
    """RFC 3261 tokens (header names, methods, parameter names)."""
    return st.text(alphabet=TOKEN_ALPHABET, min_size=min_size, max_size=max_size)


@cache
def methods() -> st.SearchStrategy[str]:
    """Request methods: the usual ones, and arbitrary extension tokens."""
    return st.sampled_from(KNOWN_METHODS) | tokens()


def _label(text: str) -> str:
    return f"a{text}0" if text[:1] == "-" or text[-1:] == "-" else text or "x"


@cache
def domain_names() -> st.SearchStrategy[str]:
    """Host names such as `pbx.example.com` or `Atlanta-1.COM` (case is kept; URIs ignore it)."""
    labels = st.text(_ALNUM + "-", max_size=8).map(_label)
    return st.lists(labels, min_size=1, max_size=4).map(".".join)


@cache
def ipv4_addresses() -> st.SearchStrategy[str]:
    return st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))


@cache
def ipv6_addresses() -> st.SearchStrategy[str]:
    """IPv6 addresses without brackets, compressed as `ipaddress` writes them (`::1`, `2001:db8::5`)."""
    small = st.integers(0, 2**16)  # runs of zero groups, so that `::` compression shows up
    return st.one_of(small, st.integers(0, 2**128 - 1), small.map(lambda n: n | 0x20010DB8 << 96)).map(
        lambda n: str(ipaddress.IPv6Address(n))
    )


@cache
def hosts() -> st.SearchStrategy[str]:
    """Host names, IPv4 addresses and IPv6 addresses (without brackets, as `SipURI.host` holds them)."""
    return st.one_of(domain_names(), ipv4_addresses(), ipv6_addresses())


@cache
def ports() -> st.SearchStrategy[int | None]:
    return st.none() | st.sampled_from((5060, 5061)) | st.integers(min_value=1, max_value=65535)


@cache
def _uri_texts(min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    """Decoded URI component text: anything printable; the URI escapes what needs escaping."""
    return st.text(_PRINTABLE, min_size=min_size, max_size=max_size)


@cache
def _uri_params() -> st.SearchStrategy[tuple[tuple[str, str | None], ...]]:
    known = st.one_of(
        st.tuples(st.just("transport"), st.sampled_from(("udp", "tcp", "tls", "TCP", "ws", "sctp"))),
        st.tuples(st.just("user"), st.sampled_from(("phone", "ip", "dialstring"))),
        st.tuples(st.just("lr"), st.none()),
        st.tuples(st.just("maddr"), hosts()),
        st.tuples(st.just("ttl"), st.integers(0, 255).map(str)),
        st.tuples(st.just("method"), methods()),
        st.tuples(st.just("ob"), st.none()),
    )
    generic = st.tuples(_uri_texts(min_size=1), st.none() | _uri_texts())
    return st.lists(known | generic, max_size=4, unique_by=lambda p: p[0].lower()).map(tuple)


def _sip_uri(
    scheme: str,
    userinfo: tuple[str, str | None] | None,
    host: str,
    port: int | None,
    params: tuple[tuple[str, str | None], ...],
    headers: list[tuple[str, str]],
) -> SipURI:
    user, password = userinfo if userinfo is not None else (None, None)
    return SipURI(host, user, port, scheme, password, params, tuple(headers))


@cache
def sip_uris(schemes: tuple[str, ...] = ("sip", "sips")) -> st.SearchStrategy[SipURI]:
    """`sip:`/`sips:` URIs with any user, password, host, port, parameters and headers."""
    return st.builds(
        _sip_uri,
        st.sampled_from(schemes),
        st.none() | st.tuples(_uri_texts(min_size=1), st.none() | _uri_texts()),
        hosts(),
        ports(),
        _uri_params(),
        st.lists(st.tuples(_uri_texts(min_size=1), _uri_texts()), max_size=2),
    )


def _tel_uri(sign: str, digits: str, last: str, params: list[tuple[str, str | None]], context: str) -> TelURI:
    number = sign + digits + last
    if not sign:
        params = [("phone-context", context), *params]
    return TelURI(number, tuple(params))


@cache
def tel_uris() -> st.SearchStrategy[TelURI]:
    """`tel:` URIs (RFC 3966): global numbers with visual separators, or local numbers with a context."""
    param_values = st.none() | st.text(alphabet=_ALNUM + "-.+", min_size=1, max_size=10)
    params = st.lists(
        st.tuples(st.text(alphabet=_ALNUM + "-", min_size=1, max_size=10), param_values), max_size=2
    )
    return st.builds(
        _tel_uri,
        st.sampled_from(("+", "")),
        st.text(alphabet="0123456789-.()", max_size=12),
        st.sampled_from("0123456789"),
        params,
        domain_names(),
    )


@cache
def absolute_uris() -> st.SearchStrategy[AbsoluteURI]:
    """URIs of other schemes (`urn:`, `mailto:`, `http:`), kept verbatim."""
    rest = st.text(alphabet=_ALNUM + "-._~:/?#[]@!$&'()*+,;=%", min_size=1, max_size=20)
    return st.builds(AbsoluteURI, st.sampled_from(("urn", "mailto", "http", "im", "pres")), rest)


@cache
def uris() -> st.SearchStrategy[SipURI | TelURI | AbsoluteURI]:
    """Any URI a SIP message may carry."""
    return st.one_of(sip_uris(), tel_uris(), absolute_uris())


@cache
def _generic_header_param() -> st.SearchStrategy[tuple[str, str | None]]:
    """A generic-param: token name, value token / host / quoted-string / none."""
    quoted = st.text(_PRINTABLE, max_size=12).map(quote_string)
    return st.tuples(tokens(), st.none() | tokens() | hosts() | quoted)


def _without(name: str, params: list[tuple[str, str | None]]) -> tuple[tuple[str, str | None], ...]:
    return tuple(p for p in params if p[0].lower() != name)


@cache
def _contact_params() -> st.SearchStrategy[tuple[tuple[str, str | None], ...]]:
    special = st.one_of(
        st.tuples(st.just("expires"), st.integers(0, 2**32 - 1).map(str)),
        st.tuples(st.just("q"), st.sampled_from(("0", "0.5", "0.75", "1", "1.0"))),
        st.tuples(st.just("+sip.instance"), st.uuids().map(lambda u: f'"<urn:uuid:{u}>"')),
        st.tuples(st.just("reg-id"), st.integers(1, 9).map(str)),
    )
    return st.lists(special | _generic_header_param(), max_size=4).map(lambda ps: _without("tag", ps))


def _name_address(
    uri: SipURI | TelURI | AbsoluteURI,
    display: str | None,
    params: tuple[tuple[str, str | None], ...],
    tag: str | None,
) -> NameAddress:
    if tag is not None:
        params = (*params, ("tag", tag))
    return NameAddress(uri=uri, display_name=display, params=params)


@cache
def name_addresses(tag: bool | None = None) -> st.SearchStrategy[NameAddress]:
    """name-addr values (From, To, Contact, Route ...) with an optional quoted display name and parameters.

    Args:
        tag: True to always add a `tag` parameter, False never, None sometimes.
    """
    tags = {True: tokens(), False: st.none(), None: st.none() | tokens()}[tag]
    return st.builds(
        _name_address,
        st.one_of(sip_uris(), sip_uris(), tel_uris(), absolute_uris()),
        st.none() | st.text(_PRINTABLE, max_size=16),
        _contact_params(),
        tags,
    )


def _via(transport: str, host: str, port: int | None, branch: str, params: tuple) -> Via:
    return Via(transport=transport, host=host, port=port, params=(("branch", MAGIC_COOKIE + branch), *params))


@cache
def vias() -> st.SearchStrategy[Via]:
    """Via values with a magic-cookie branch, sometimes rport (flag or port), received, maddr, ttl."""
    special = st.one_of(
        st.tuples(st.just("rport"), st.none() | st.integers(1, 65535).map(str)),
        st.tuples(st.just("received"), st.one_of(ipv4_addresses(), ipv6_addresses())),
        st.tuples(st.just("maddr"), hosts()),
        st.tuples(st.just("ttl"), st.integers(0, 255).map(str)),
        st.tuples(st.just("alias"), st.none()),
    )
    params = st.lists(special | _generic_header_param(), max_size=4).map(lambda ps: _without("branch", ps))
    return st.builds(
        _via,
        st.sampled_from(("UDP", "TCP", "TLS", "SCTP", "WS", "WSS")) | tokens().map(str.upper),
        hosts(),
        ports(),
        tokens(max_size=24),
        params,
    )


@cache
def cseqs(method: str | None = None) -> st.SearchStrategy[CSeq]:
    """CSeq values: numbers below 2**31 (RFC 3261 8.1.1.5) and the given or any method."""
    return st.builds(
        CSeq,
        st.integers(min_value=0, max_value=2**31 - 1),
        st.just(method) if method is not None else methods(),
    )


@cache
def call_ids() -> st.SearchStrategy[str]:
    """Call-ID values: `word` or `word@word` (RFC 3261 25.1, here restricted to tokens and hosts)."""
    return st.tuples(tokens(max_size=24), st.none() | domain_names()).map(
        lambda t: t[0] if t[1] is None else f"{t[0]}@{t[1]}"
    )


@cache
def header_texts(max_size: int = 40) -> st.SearchStrategy[str]:
    """Free header values as a parser hands them back: printable, no surrounding whitespace."""
    return st.text(_PRINTABLE, max_size=max_size).map(str.strip)


@cache
def _extension_headers() -> st.SearchStrategy[list[tuple[str, str]]]:
    # An "X-" prefix keeps them clear of compact forms (`l` would become Content-Length).
    return st.lists(st.tuples(tokens(max_size=12).map(lambda t: "X-" + t), header_texts()), max_size=3)


@cache
def _via_fields() -> st.SearchStrategy[list[tuple[str, str]]]:
    """One to three Via values, on one comma-separated line or on lines of their own."""

    def fields(values: list[Via], one_line: bool) -> list[tuple[str, str]]:
        texts = [str(v) for v in values]
        return [("Via", ", ".join(texts))] if one_line else [("Via", t) for t in texts]

    return st.builds(fields, st.lists(vias(), min_size=1, max_size=3), st.booleans())


@st.composite
def _common_headers(draw: st.DrawFn, method: str, response: bool) -> list[tuple[str, str]]:
    fields = [
        *draw(_via_fields()),
        ("From", str(draw(name_addresses(tag=True)))),
        ("To", str(draw(name_addresses(tag=True if response else None)))),
        ("Call-ID", draw(call_ids())),
        ("CSeq", str(draw(cseqs(method)))),
    ]
    if not response:
        fields.append(("Max-Forwards", str(draw(st.integers(0, 255)))))
    contacts = draw(st.lists(name_addresses(tag=False), max_size=2))
    if contacts:
        fields.append(("Contact", ", ".join(str(c) for c in contacts)))
    fields.extend(draw(_extension_headers()))
    return fields


@st.composite
def requests(draw: st.DrawFn, method: str | None = None) -> Request:
    """Requests with Via (one to three, on one line or several), From with tag, To, Call-ID, CSeq,
    Max-Forwards, sometimes Contact, extension headers and a body."""
    method = method if method is not None else draw(methods())
    uri = draw(st.one_of(sip_uris(), sip_uris(), tel_uris()))
    headers = Headers(draw(_common_headers(method, response=False)))
    return Request(method, uri, headers, draw(st.binary(max_size=200)))


@st.composite
def responses(draw: st.DrawFn, method: str | None = None) -> Response:
    """Responses 100-699 with a standard or arbitrary reason phrase, To with tag, and a body."""
    method = method if method is not None else draw(methods())
    status = draw(st.integers(min_value=100, max_value=699))
    reason = draw(st.none() | st.text(_PRINTABLE, max_size=30))
    headers = Headers(draw(_common_headers(method, response=True)))
    return Response(status, reason, headers, draw(st.binary(max_size=200)))


# -- recording fakes ---------------------------------------------------------------------------------------


@implementer(IFlow)
class RecordingFlow:
    """An IFlow that records what is sent on it; `open` says whether a stream is still connected."""

    def __init__(
        self,
        transport: str = "UDP",
        remote_address: tuple[str, int] = ("203.0.113.5", 62000),
        local_address: tuple[str, int] = ("198.51.100.1", 5060),
    ) -> None:
        self.transport = transport
        self.reliable = transport != "UDP"
        self.secure = transport == "TLS"
        self.remote_address = remote_address
        self.local_address = local_address
        self.sent: list[bytes] = []
        self.open = True

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def connected(self) -> bool:
        return self.open


@implementer(IServerTransaction)
class RecordingServerTransaction:
    """An IServerTransaction recording the responses its transaction user sends."""

    def __init__(self, request: Request, flow: IFlow) -> None:
        self.request = request
        self.flow = flow
        self.responses: list[Response] = []

    def respond(self, response: object) -> None:
        assert isinstance(response, Response)
        self.responses.append(response)

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    @property
    def final(self) -> Response | None:
        """The last final (>= 200) response sent, if any."""
        finals = [r for r in self.responses if r.status >= 200]
        return finals[-1] if finals else None
