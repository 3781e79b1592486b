"""Our messages for the cases of RFC 4475 and RFC 5118 (tests/data/torture/), with the outcome each RFC asks
of a proxy/UAS.

`CASES` lists them in RFC order from `rfc-expected.toml` (which documents the files and the outcomes);
`outcome` runs one through the parser and `check_request` the way the stack does (`SipStack.undecodable`
and `_request_received`) and names what happens. Shared by the unit test (tests/sip/test_torture_rfc.py)
and the end-to-end test against a live `twistd pbx` (tests/e2e/test_torture.py).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pbx.sip.errors import SipError, SipParseError
from pbx.sip.headers import Via
from pbx.sip.message import Request
from pbx.sip.parser import parse_message
from pbx.sip.validate import check_request

TORTURE = Path(__file__).resolve().parents[1] / "data" / "torture"
VALID = "valid"
RESPONSE = "response"
DROP = "drop"


@dataclass(frozen=True)
class Case:
    """One message: `rfc` ("rfc4475"/"rfc5118"), the case name, section, title and expected outcome."""

    rfc: str
    name: str
    section: str
    title: str
    expect: str | int

    @property
    def id(self) -> str:
        return f"{self.rfc}-{self.section}-{self.name}"

    @property
    def path(self) -> Path:
        return TORTURE / self.rfc / f"{self.name}.dat"

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def _load() -> list[Case]:
    table = tomllib.loads((TORTURE / "rfc-expected.toml").read_text())
    return [
        Case(rfc, name, entry["section"], entry["title"], entry["expect"])
        for rfc, entries in table.items()
        for name, entry in entries.items()
    ]


CASES = _load()


def _routable(request: Request) -> bool:
    """A 400 can go back: the top Via parses, or reads leniently (`SipStack._read_via_leniently`)."""
    try:
        return request.top_via is not None
    except SipParseError:
        text = request.headers.get("Via")
        return text is not None and Via.parse_lenient(text) is not None


def outcome(data: bytes) -> str | int:
    """What the stack does with `data` as a datagram: VALID, RESPONSE, DROP or the status it answers."""
    try:
        message = parse_message(data)
    except SipParseError as e:
        request = e.request
        if request is None or request.method == "ACK":
            return DROP
        return e.status if _routable(request) else DROP
    if not isinstance(message, Request):
        return RESPONSE
    if not _routable(message):
        return DROP
    try:
        message.top_via  # noqa: B018
    except SipParseError:
        return 400  # readable enough to answer, never to accept
    try:
        check_request(message, frozenset())
    except SipError as e:
        return e.status
    return VALID
