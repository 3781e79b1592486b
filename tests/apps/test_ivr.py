"""The dialplan's media applications (`pbx.apps.ivr`) against a fake call and a fake endpoint on a clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from pbx.apps import IvrApps, MediaFormat, media_format
from pbx.dialplan.actions import parse_line
from tests.apps.fakes import FakeCall, FakeEngine, done

HEAD = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def action(text: str) -> Any:
    parsed = parse_line(text)
    assert parsed is not None
    return parsed


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(clock: Clock) -> FakeEngine:
    return FakeEngine(clock)


@pytest.fixture
def apps(engine: FakeEngine, tmp_path: Path) -> IvrApps:
    return IvrApps(engine, tmp_path / "dialplans", tmp_path / "recordings")


def run(apps: IvrApps, call: FakeCall, line: str) -> Deferred[str]:
    registered: dict[str, Any] = {}
    apps.register(registered)
    parsed = action(line)
    return ensureDeferred(registered[parsed.name](call, parsed))


# -- media format ------------------------------------------------------------------------------------------


def test_media_format_takes_the_first_g711_format_and_telephone_event() -> None:
    sdp = (
        HEAD + b"m=video 0 RTP/AVP 96\r\n"
        b"m=audio 4000 RTP/AVP 9 0 8 96\r\na=rtpmap:9 G722/8000\r\na=rtpmap:96 telephone-event/8000\r\n"
    )
    assert media_format(sdp) == MediaFormat("PCMU", 0, 96)


def test_media_format_without_telephone_event_means_in_band() -> None:
    sdp = HEAD + b"m=audio 4000 RTP/AVP 8\r\n"
    assert media_format(sdp) == MediaFormat("PCMA", 8, None)


@pytest.mark.parametrize(
    "sdp",
    [
        b"garbage",
        HEAD + b"m=audio 4000 RTP/AVP 9\r\n",
        HEAD + b"m=audio 0 RTP/AVP 0\r\n",
    ],
)
def test_media_format_refuses_what_the_pbx_cannot_speak(sdp: bytes) -> None:
    with pytest.raises(ValueError):
        media_format(sdp)


# -- answer, progress, play ----------------------------------------------------------------------------------


def test_answer_answers_and_attaches_an_endpoint_in_the_negotiated_format(apps, engine) -> None:
    call = FakeCall()
    assert done(run(apps, call, "answer")) == "answered"
    assert call.sent == [200]
    (endpoint,) = engine.created
    assert (endpoint.codec, endpoint.payload_type, endpoint.telephone_event) == ("PCMA", 8, 101)
    assert call.endpoint is endpoint and call.leg.consumer is endpoint
    assert engine.transports == [call.leg]


def test_play_answers_and_plays_every_prompt_without_barge_in(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "play welcome tone:beep digits:42")
    assert call.sent == [200]
    (endpoint,) = engine.created
    assert endpoint.played == [(["welcome", "tone:beep", "digits:42"], False)]
    endpoint.press("5")  # no barge-in: the digit only goes to the buffer
    assert not d.called
    clock.advance(6)
    assert done(d) == "played"
    assert endpoint.buffer == ["5"]


def test_play_noanswer_is_early_media(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "play please-hold noanswer=yes")
    assert call.sent == [183]
    clock.advance(2)
    assert done(d) == "played"
    d = run(apps, call, "play welcome")  # without noanswer, play answers (as Asterisk's Playback)
    assert call.sent == [183, 200]
    assert len(engine.created) == 1  # the same endpoint goes on after the answer


def test_progress_sends_183_only(apps, engine) -> None:
    call = FakeCall()
    assert done(run(apps, call, "progress")) == "progress"
    assert call.sent == [183]
    assert len(engine.created) == 1


def test_a_missing_prompt_is_skipped_not_fatal(apps, engine) -> None:
    call = FakeCall()
    call.endpoint = None
    d = run(apps, call, "answer")
    engine.created[0].unknown.add("nosuch")
    assert done(run(apps, call, "play nosuch")) == "played"
    assert done(d) == "answered"


def test_no_sdp_means_no_media(apps, engine) -> None:
    call = FakeCall(sdp=None)
    assert done(run(apps, call, "play welcome")) == "failed"
    assert done(run(apps, call, "menu prompt=menu")) == ""
    assert done(run(apps, call, "record x")) == "failed"
    assert engine.created == []


def test_tenant_prompts_override_shipped_ones(apps, engine, tmp_path) -> None:
    own = tmp_path / "dialplans" / "default" / "sounds" / "welcome.wav"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"RIFF")
    call = FakeCall()
    run(apps, call, "play welcome menu")
    assert engine.created[0].played == [([str(own), "menu"], False)]


# -- menu ----------------------------------------------------------------------------------------------------


def test_menu_barge_in_returns_the_digit_at_once(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "menu prompt=welcome&menu")
    (endpoint,) = engine.created
    assert endpoint.played == [(["welcome", "menu"], True)]
    clock.advance(1)
    endpoint.press("1")
    assert done(d) == "1"


def test_menu_forgets_digits_pressed_before_it(apps, engine, clock) -> None:
    call = FakeCall()
    run(apps, call, "answer")
    engine.created[0].press("7")
    d = run(apps, call, "menu prompt=menu timeout=3 retries=0")
    clock.advance(2)
    clock.advance(3)
    assert done(d) == ""


def test_menu_replays_retries_more_times_then_gives_empty_digits(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "menu prompt=menu timeout=3 retries=2")
    endpoint = engine.created[0]
    for played in range(1, 4):
        assert len(endpoint.played) == played
        assert not d.called
        clock.advance(2)  # the prompt
        clock.advance(3)  # the timeout
    assert done(d) == ""
    assert len(endpoint.played) == 3


def test_menu_collects_several_digits_until_hash(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "menu prompt=menu maxdigits=4 timeout=3")
    endpoint = engine.created[0]
    clock.advance(2)
    endpoint.press("1")
    clock.advance(2.5)  # inter-digit time below the timeout
    endpoint.press("0")
    endpoint.press("#")
    assert done(d) == "10"


def test_menu_stops_at_maxdigits(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "menu prompt=menu maxdigits=2")
    endpoint = engine.created[0]
    endpoint.press("4")
    endpoint.press("2")
    assert done(d) == "42"


def test_menu_invalid_choice_plays_invalid_and_asks_again(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "menu prompt=menu choices=1|2|9 retries=2 invalid=sorry")
    endpoint = engine.created[0]
    endpoint.press("5")
    assert endpoint.played[-1] == (["sorry"], True)
    clock.advance(2)  # "sorry" played to the end: the menu prompt again
    assert endpoint.played[-1] == (["menu"], True)
    endpoint.press("9")
    assert done(d) == "9"


def test_menu_key_during_invalid_prompt_is_the_next_entry(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "menu prompt=menu choices=1|2 retries=1")
    endpoint = engine.created[0]
    endpoint.press("7")
    assert endpoint.played[-1] == (["invalid"], True)
    endpoint.press("2")
    assert done(d) == "2"
    assert [p for p, _ in endpoint.played] == [["menu"], ["invalid"]]


def test_menu_invalid_on_the_last_try_is_returned(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "menu prompt=menu choices=1|2 retries=0")
    engine.created[0].press("7")
    assert done(d) == "7"


def test_menu_ends_when_the_caller_hangs_up(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "menu prompt=menu retries=5")
    call.end()
    assert done(d) == ""
    assert engine.created[0].closed


def test_menu_noanswer_collects_in_early_media(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "menu prompt=menu noanswer=yes")
    assert call.sent == [183]
    engine.created[0].press("3")
    assert done(d) == "3"


def test_ivr_answers(apps) -> None:
    call = FakeCall()
    assert done(run(apps, call, "ivr main")) == "answered"
    assert call.sent == [200]


# -- record --------------------------------------------------------------------------------------------------


def test_record_beeps_then_records_until_hash(apps, engine, clock, tmp_path) -> None:
    call = FakeCall()
    d = run(apps, call, "record voicemail/1000/msg1 maxlength=120 silence=5")
    endpoint = engine.created[0]
    assert endpoint.played == [(["tone:beep"], False)]
    endpoint.press("1")  # before the recording: forgotten
    clock.advance(2)
    (rec,) = endpoint.records
    path = tmp_path / "recordings" / "default" / "voicemail" / "1000" / "msg1.wav"
    assert rec == {"path": str(path), "max_seconds": 120.0, "silence_seconds": 5.0}
    assert path.parent.is_dir()
    assert endpoint.buffer == []
    clock.advance(7)
    endpoint.press("#")
    assert done(d) == "digit"


def test_record_without_beep_and_defaults(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "record greeting beep=no")
    endpoint = engine.created[0]
    assert endpoint.played == []
    assert endpoint.records[0]["max_seconds"] == 300.0
    assert endpoint.records[0]["silence_seconds"] == 10.0
    clock.advance(300)
    assert done(d) == "max_length"


def test_record_keeps_what_was_said_when_the_caller_hangs_up(apps, engine, clock) -> None:
    call = FakeCall()
    d = run(apps, call, "record msg beep=no")
    clock.advance(4)
    call.end()
    assert done(d) == "closed"


# -- music on hold -------------------------------------------------------------------------------------------


def test_music_on_hold_in_the_held_phones_codec(engine, tmp_path) -> None:
    from pbx.apps import MusicOnHold
    from tests.apps.fakes import OFFER_ANSWER, FakeLeg

    moh = MusicOnHold(engine, tmp_path / "dialplans")
    leg = FakeLeg()
    endpoint = moh.start("default", leg, OFFER_ANSWER)
    assert endpoint is engine.created[0] and leg.consumer is endpoint
    assert (endpoint.codec, endpoint.payload_type, endpoint.moh) == ("PCMA", 8, True)
    assert endpoint.played == [(["moh"], False)]
    own = tmp_path / "dialplans" / "acme" / "sounds" / "moh.wav"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"RIFF")
    assert moh.start("acme", FakeLeg(), OFFER_ANSWER).played == [([str(own)], False)]
    assert moh.start("default", FakeLeg(), HEAD + b"m=audio 4000 RTP/AVP 9\r\n") is None
    relayed = FakeLeg()
    relayed.last_sent = (0x1234, 77, 160000, 5.0)  # type: ignore[attr-defined]
    assert moh.start("default", relayed, OFFER_ANSWER).continue_from == (0x1234, 77, 160000, 5.0)
    assert endpoint.continue_from is None
