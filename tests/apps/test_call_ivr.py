"""The IVR applications inside a real B2BUA call (tests/b2bua/fakes.py harness, `FakeEngine` endpoints):
answering with the PBX's media, menus re-rendering their template, SIP INFO digits, putting the caller
through without a second answer, early media, music on hold, and the endpoint's end with the call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pbx.apps import IvrApps, MusicOnHold
from pbx.sip.message import Request
from pbx.sip.parser import parse_message
from pbx.sip.sdp import SessionDescription
from tests.apps.fakes import FakeEndpoint, FakeEngine
from tests.b2bua.fakes import (
    PBX_CONTACT,
    CallerPhone,
    FakeServerTransaction,
    Harness,
    callee_sdp,
    deliver,
    respond_to,
    sdp_body,
)

PORT_A, PORT_B = 40000, 40002

MENU = """
{% if digits is none %}
menu prompt=welcome&menu choices=1|2 retries=1
{% elif digits == "1" %}
play please-hold
dial 1002 timeout=20
play sorry
{% else %}
play goodbye
{% endif %}
"""


def audio(body: bytes) -> tuple[int, list[str], str]:
    description = SessionDescription.parse(body)
    media = description.media[0]
    return media.port, list(media.formats), description.direction_for(media)


class Ivr:
    def __init__(self, tmp_path: Path, main: str, templates: dict[str, str] | None = None) -> None:
        self.h = Harness.build(tmp_path / "dialplans", main, templates=templates)
        self.engine = FakeEngine(self.h.clock)
        IvrApps(self.engine, tmp_path / "dialplans", tmp_path / "recordings").register(self.h.b2bua.apps)
        self.h.b2bua.hold_music = MusicOnHold(self.engine, tmp_path / "dialplans")
        self.clock: Clock = self.h.clock

    def call(self, dialed: str = "500", **kwargs: Any) -> CallerPhone:
        return self.h.place_call(dialed, **kwargs)

    @property
    def endpoint(self) -> FakeEndpoint:
        return self.engine.created[0]

    def leg(self, name: str) -> Any:
        return self.h.relay.created[0].leg(name)


@pytest.fixture
def ivr(tmp_path: Path) -> Ivr:
    started = Ivr(tmp_path, "ivr main", {"ivr/main": MENU})
    started.h.register_1002()
    return started


def send_info(phone: CallerPhone, body: bytes, content_type: str) -> FakeServerTransaction:
    """An INFO in the caller's dialog with a body of `content_type`."""
    phone.cseq += 1
    headers = [*phone._dialog_headers("INFO", phone.cseq), ("Content-Type", content_type)]
    lines = [
        f"INFO {PBX_CONTACT[1:-1]} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKinfo{phone.cseq};rport",
        "Max-Forwards: 70",
        *(f"{name}: {value}" for name, value in headers),
        f"Content-Length: {len(body)}",
    ]
    request = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(request, Request)
    txn = FakeServerTransaction(request, phone.flow)
    deliver(phone.harness.b2bua, txn)
    return txn


def test_ivr_answers_with_the_relay_leg_a_and_attaches_an_endpoint(ivr: Ivr) -> None:
    phone = ivr.call()
    assert phone.txn is not None and phone.txn.statuses == [200]
    answer = phone.txn.final
    assert answer is not None
    port, formats, _ = audio(answer.body)
    assert port == PORT_A and formats == ["0", "101"]
    endpoint = ivr.endpoint
    assert (endpoint.codec, endpoint.payload_type, endpoint.telephone_event) == ("PCMU", 0, 101)
    assert ivr.leg("a").consumer is endpoint
    assert endpoint.played == [(["welcome", "menu"], True)]


def test_menu_digit_rerenders_and_dial_bridges_without_a_second_answer(ivr: Ivr) -> None:
    phone = ivr.call()
    phone.ack()
    ivr.endpoint.press("1")  # RFC 4733 or in-band, as the endpoint hears it
    assert ivr.endpoint.played[-1] == (["please-hold"], False)
    ivr.clock.advance(2)
    callee = ivr.h.callee()
    assert ivr.endpoint.played[-1] == (["tone:ringback:20"], False)  # the caller hears it ring
    port, formats, _ = audio(callee.invite.body)
    # What the caller was answered with, and the other G.711 law (the relay converts if the callee takes it).
    assert port == PORT_B and formats == ["0", "8", "101"]
    callee.respond(180)
    callee.answer()
    assert phone.txn is not None and phone.txn.statuses == [200]  # one answer only, no re-INVITE
    assert ivr.endpoint.closed and not ivr.leg("a").attached
    call = ivr.h.b2bua.calls[phone.call_id]
    assert call.b is not None and call.endpoint is None
    phone.bye()
    assert ivr.h.b2bua.calls == {}


def test_sip_info_digit_reaches_the_endpoint_and_is_answered_200(ivr: Ivr) -> None:
    phone = ivr.call()
    phone.ack()
    txn = send_info(phone, b"Signal=1\r\nDuration=160\r\n", "application/dtmf-relay")
    assert txn.statuses == [200]
    assert ivr.endpoint.played[-1] == (["please-hold"], False)


def test_sip_info_application_dtmf_too_and_other_info_is_answered(ivr: Ivr) -> None:
    phone = ivr.call()
    phone.ack()
    assert send_info(phone, b"x", "application/x-unknown").statuses == [200]
    assert ivr.endpoint.played[-1] == (["welcome", "menu"], True)
    assert send_info(phone, b"2", "application/dtmf").statuses == [200]
    assert ivr.endpoint.played[-1] == (["goodbye"], False)


def test_no_key_after_the_retries_rerenders_with_empty_digits(ivr: Ivr) -> None:
    phone = ivr.call()
    phone.ack()
    for _ in range(2):
        ivr.clock.advance(4)  # the two prompts
        ivr.clock.advance(5)  # the timeout
    assert ivr.endpoint.played[-1] == (["goodbye"], False)
    ivr.clock.advance(2)
    assert ivr.h.b2bua.calls == {}  # the actions ran out: BYE
    assert [s.method for s in ivr.h.stack.sent("BYE")] == ["BYE"]
    assert ivr.endpoint.closed


def test_caller_hangs_up_in_the_menu(ivr: Ivr) -> None:
    phone = ivr.call()
    phone.ack()
    assert phone.bye().statuses == [200]
    assert ivr.endpoint.closed and not ivr.leg("a").attached
    assert ivr.h.b2bua.calls == {}
    ivr.h.location.stop()
    assert ivr.h.clock.getDelayedCalls() == []


def test_early_media_then_rejection(tmp_path: Path) -> None:
    ivr = Ivr(tmp_path, "progress\nplay closed noanswer=yes\nhangup 480")
    phone = ivr.call("800")
    assert phone.txn is not None and phone.txn.statuses == [183]
    early = phone.txn.responses[-1]
    assert early.headers.get("Content-Type") == "application/sdp"
    assert audio(early.body)[0] == PORT_A
    assert ivr.endpoint.played == [(["closed"], False)]
    ivr.clock.advance(2)
    assert phone.txn.statuses == [183, 480]
    assert ivr.endpoint.closed


def test_early_media_then_a_dial_answers_with_the_same_sdp(tmp_path: Path) -> None:
    ivr = Ivr(tmp_path, "progress\nplay tone:ringback noanswer=yes\ndial 1002")
    ivr.h.register_1002()
    phone = ivr.call("800")
    ivr.clock.advance(2)
    callee = ivr.h.callee()
    callee.answer()
    assert phone.txn is not None and phone.txn.statuses == [183, 200]
    assert phone.txn.responses[-1].body == phone.txn.responses[0].body
    assert ivr.endpoint.closed and not ivr.leg("a").attached


def test_held_callee_hears_music_until_resumed(tmp_path: Path) -> None:
    ivr = Ivr(tmp_path, "dial 1002")
    ivr.h.register_1002()
    phone = ivr.call("1002")
    callee = ivr.h.callee()
    callee.answer(callee_sdp(formats=(("8", "PCMA/8000"), ("101", "telephone-event/8000"))))
    phone.ack()
    phone.request("INVITE", sdp_body(direction="sendonly", version=2))
    (hold,) = [s for s in ivr.h.stack.sent("INVITE") if s.request.to.tag is not None]
    respond_to(hold, 200, callee_sdp(direction="recvonly", formats=(("8", "PCMA/8000"),)))
    (moh,) = ivr.engine.created
    assert moh.moh and ivr.leg("b").consumer is moh
    assert (moh.codec, moh.payload_type) == ("PCMA", 8)
    phone.ack()
    phone.request("INVITE", sdp_body(direction="sendrecv", version=3))
    resume = [s for s in ivr.h.stack.sent("INVITE") if s.request.to.tag is not None][-1]
    respond_to(resume, 200, callee_sdp(formats=(("8", "PCMA/8000"),)))
    assert moh.closed and not ivr.leg("b").attached
    phone.bye()
    assert ivr.h.b2bua.calls == {}


def test_caller_reinvite_in_the_ivr_is_answered_with_the_same_sdp(ivr: Ivr) -> None:
    phone = ivr.call()
    phone.ack()
    assert phone.txn is not None and phone.txn.final is not None
    answer = phone.txn.final.body
    txn = phone.request("INVITE", sdp_body(port=49180, version=2))
    assert txn.statuses == [200]
    assert txn.final is not None and txn.final.body == answer
    assert ivr.leg("a").remote == ("192.168.1.10", 49180)
    phone.ack()
    assert ivr.endpoint.played[-1] == (["welcome", "menu"], True)  # the menu goes on
    phone.bye()
    assert ivr.h.b2bua.calls == {}


def test_unanswered_dial_from_the_ivr_goes_on_with_the_pbx_media(ivr: Ivr) -> None:
    phone = ivr.call()
    phone.ack()
    ivr.endpoint.press("1")
    ivr.clock.advance(2)  # please-hold
    callee = ivr.h.callee()
    callee.respond(486)
    assert not ivr.endpoint.closed and ivr.leg("a").consumer is ivr.endpoint
    assert ivr.endpoint.played[-1] == (["sorry"], False)  # the next action, on the same endpoint
    assert phone.txn is not None and phone.txn.statuses == [200]
    ivr.clock.advance(2)
    assert ivr.h.b2bua.calls == {}  # the actions ran out: BYE
    assert ivr.endpoint.closed


def test_caller_cancels_during_early_media(tmp_path: Path) -> None:
    ivr = Ivr(tmp_path, "progress\nplay tone:ringback:30 noanswer=yes\nhangup 480")
    phone = ivr.call("800")
    phone.cancel()
    assert phone.txn is not None and phone.txn.statuses == [183, 487]
    assert ivr.endpoint.closed and not ivr.leg("a").attached
    assert ivr.h.b2bua.calls == {}
