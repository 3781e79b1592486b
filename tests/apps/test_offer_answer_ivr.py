"""Offer/answer for the media applications inside a real B2BUA call (RFC 3261 13.2.1, RFC 3264):

- an INVITE without SDP to `answer`, `play`, `menu`, `record` or `ivr` gets a 200 with the PBX's offer
  (relay leg "a", PCMU, PCMA, telephone-event); the endpoint starts once the ACK brings the answer, with the
  codec the caller chose; an ACK without a usable answer ends the call with BYE and no endpoint;
- early media for such a caller: `progress` sends a 183 without SDP (an offer in an unreliable 183 needs
  PRACK) and `play`/`menu noanswer=yes` answer with the offer instead;
- a malformed offer gets 400/488 on every application path, never a 500 or a logged traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.logger import globalLogPublisher

from pbx.sip.sdp import SessionDescription
from tests.b2bua.fakes import RELAY_ADDRESS, CallerPhone, sdp_body

from .test_call_ivr import MENU, PORT_A, Ivr

PCMA_DTMF = (("8", "PCMA/8000"), ("101", "telephone-event/8000"))

APP_PATHS = {
    "answer": "answer\nplay welcome",
    "play": "play welcome",
    "menu": "ivr main",
    "record": "record msg1",
    "early media": "progress\nplay welcome noanswer=yes",
}


@pytest.fixture
def failures() -> list[dict[str, object]]:
    """Every logged failure (a traceback) while the test runs."""
    seen: list[dict[str, object]] = []

    def observer(event: dict[str, object]) -> None:
        if event.get("log_failure") is not None:
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def offer_of(phone: CallerPhone) -> SessionDescription:
    assert phone.txn is not None and phone.txn.final is not None
    assert phone.txn.final.status == 200
    assert phone.txn.final.headers.get("Content-Type") == "application/sdp"
    return SessionDescription.parse(phone.txn.final.body)


def idle(ivr: Ivr) -> None:
    assert ivr.h.b2bua.calls == {}
    assert ivr.h.relay.sessions == 0
    ivr.h.location.stop()
    assert ivr.clock.getDelayedCalls() == []


@pytest.mark.parametrize("path", sorted(APP_PATHS))
def test_late_offer_gets_the_pbx_offer_and_the_ack_answer_starts_the_media(
    tmp_path: Path, path: str, failures: list[dict[str, object]]
) -> None:
    ivr = Ivr(tmp_path, APP_PATHS[path], {"ivr/main": MENU})
    phone = ivr.call(body=b"")
    offer = offer_of(phone)
    (media,) = offer.media
    assert offer.connection_for(media).address == RELAY_ADDRESS  # type: ignore[union-attr]
    assert (media.port, list(media.formats)) == (PORT_A, ["0", "8", "101"])
    assert [str(media.rtpmap[f]) for f in media.formats] == ["PCMU/8000", "PCMA/8000", "telephone-event/8000"]
    assert ivr.engine.created == []  # nothing plays before the answer
    if path == "early media":
        assert phone.txn is not None and phone.txn.statuses == [183, 200]
        assert phone.txn.responses[0].body == b""  # a 183 without SDP
    phone.ack(sdp_body(port=49400, formats=PCMA_DTMF))
    endpoint = ivr.endpoint
    assert (endpoint.codec, endpoint.payload_type, endpoint.telephone_event) == ("PCMA", 8, 101)
    assert ivr.leg("a").remote == ("192.168.1.10", 49400)
    assert ivr.leg("a").consumer is endpoint
    assert endpoint.played  # the application goes on
    phone.bye()
    assert endpoint.closed
    idle(ivr)
    assert failures == []


@pytest.mark.parametrize("path", sorted(APP_PATHS))
def test_late_offer_ack_without_answer_ends_the_call(
    tmp_path: Path, path: str, failures: list[dict[str, object]]
) -> None:
    ivr = Ivr(tmp_path, APP_PATHS[path], {"ivr/main": MENU})
    phone = ivr.call(body=b"")
    offer_of(phone)
    phone.ack()
    assert len(ivr.h.stack.sent("BYE")) == 1
    assert ivr.engine.created == []
    idle(ivr)
    assert failures == []


def test_late_offer_answer_without_g711_ends_the_call(tmp_path: Path) -> None:
    ivr = Ivr(tmp_path, "ivr main", {"ivr/main": MENU})
    phone = ivr.call(body=b"")
    phone.ack(sdp_body(formats=(("18", "G729/8000"),)))
    assert len(ivr.h.stack.sent("BYE")) == 1
    assert ivr.engine.created == []
    idle(ivr)


def test_late_offer_caller_that_never_acks_is_hung_up(tmp_path: Path) -> None:
    ivr = Ivr(tmp_path, "ivr main", {"ivr/main": MENU})
    ivr.call(body=b"")
    ivr.clock.advance(32)  # 64*T1 without an ACK (RFC 3261 13.3.1.4)
    assert len(ivr.h.stack.sent("BYE")) == 1
    assert ivr.engine.created == []
    idle(ivr)


def test_progress_alone_sends_a_183_without_sdp_and_answers_nothing(tmp_path: Path) -> None:
    ivr = Ivr(tmp_path, "progress\nhangup 480")
    phone = ivr.call("800", body=b"")
    assert phone.txn is not None and phone.txn.statuses == [183, 480]
    assert phone.txn.responses[0].body == b""
    assert phone.txn.responses[0].headers.get("Content-Type") is None
    assert ivr.engine.created == []
    idle(ivr)


def test_late_offer_menu_then_dial_offers_the_callee_the_agreed_codec(tmp_path: Path) -> None:
    ivr = Ivr(tmp_path, "ivr main", {"ivr/main": MENU})
    ivr.h.register_1002()
    phone = ivr.call(body=b"")
    phone.ack(sdp_body(formats=PCMA_DTMF))
    ivr.endpoint.press("1")
    ivr.clock.advance(2)  # please-hold
    callee = ivr.h.callee()
    offer = SessionDescription.parse(callee.invite.body)
    assert list(offer.media[0].formats) == ["8", "0", "101"]  # PCMU too: the relay converts
    callee.answer()
    assert phone.txn is not None and phone.txn.statuses == [200]  # one answer only
    assert len(ivr.h.stack.acks) == 1
    assert ivr.endpoint.closed
    phone.bye()
    idle(ivr)


def malformed() -> dict[str, tuple[bytes, str]]:
    good = sdp_body().decode()
    return {
        "port 99999": (good.replace("m=audio 49170", "m=audio 99999").encode(), "application/sdp"),
        "port abc": (good.replace("m=audio 49170", "m=audio abc").encode(), "application/sdp"),
        "not sdp": (b"this is not SDP at all\r\n", "application/sdp"),
        "c= not an address": (
            good.replace("c=IN IP4 192.168.1.10", "c=IN IP4 ???").encode(),
            "application/sdp",
        ),
        "content type": (good.encode(), "text/plain"),
    }


@pytest.mark.parametrize("path", sorted(APP_PATHS))
@pytest.mark.parametrize("offer", sorted(malformed()))
def test_malformed_offer_is_400_or_488_on_every_app_path(
    tmp_path: Path, path: str, offer: str, failures: list[dict[str, object]]
) -> None:
    ivr = Ivr(tmp_path, APP_PATHS[path], {"ivr/main": MENU})
    body, content_type = malformed()[offer]
    phone = ivr.call(body=body, content_type=content_type)
    assert phone.txn is not None and len(phone.txn.statuses) == 1
    assert phone.txn.statuses[0] in (400, 488)
    reason = phone.txn.final.reason  # type: ignore[union-attr]
    assert all(0x20 <= ord(c) < 0x7F for c in reason) and len(reason) <= 80
    assert "99999" not in reason and "abc" not in reason and "???" not in reason
    assert ivr.engine.created == []
    idle(ivr)
    assert failures == []


def test_offer_without_g711_to_the_ivr_is_488_not_500(
    tmp_path: Path, failures: list[dict[str, object]]
) -> None:
    ivr = Ivr(tmp_path, "ivr main", {"ivr/main": MENU})
    phone = ivr.call(body=sdp_body(formats=(("18", "G729/8000"),)))
    assert phone.txn is not None and phone.txn.statuses == [488]
    idle(ivr)
    assert failures == []
