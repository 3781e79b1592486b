"""Leaving a message (`pbx.apps.voicemail.deposit`): a fake call, endpoint and `IMailboxes` on a clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from pbx.apps import IvrApps
from pbx.apps.voicemail.boxes import MailboxFull, StorageUnavailable
from pbx.apps.voicemail.deposit import VoicemailDeposit, greeting_kind
from pbx.dialplan.actions import OPERATOR, RunState, parse_line
from pbx.sip.parser import parse_message
from pbx.store.records import VoicemailMessage
from tests.apps.fakes import FakeCall, FakeEndpoint, FakeEngine, done

GREETING_UNAVAILABLE = ["vm-person-at-extension", "digits:1002", "vm-is-unavailable", "vm-leave-message"]


@dataclass(frozen=True)
class Box:
    number: str
    name: str = ""
    phones: tuple[str, ...] = ()
    email: str = ""
    max_messages: int = 3
    max_message_seconds: float = 60.0


@dataclass
class FakeMailboxes:
    """An `IMailboxes` that keeps what the deposit asked of it."""

    root: Path
    boxes: dict[tuple[str, str], Box] = field(default_factory=dict)
    greetings: dict[tuple[str, str, str], Path] = field(default_factory=dict)
    full: bool = False
    broken: bool = False
    commit_fails: bool = False
    prepared: list[Path] = field(default_factory=list)
    committed: list[dict[str, Any]] = field(default_factory=list)
    discarded: list[Path] = field(default_factory=list)
    callers: list[dict[str, str]] = field(default_factory=list)  # what prepare was told

    def mailbox(self, tenant: str, number: str) -> Box | None:
        return self.boxes.get((tenant, number))

    def counts(self, tenant: str, number: str) -> tuple[int, int]:
        return (len(self.committed), 0)

    def prepare(self, tenant: str, number: str, **caller: str) -> Path:
        self.callers.append(caller)
        if self.full:
            raise MailboxFull(number)
        if self.broken:
            raise StorageUnavailable("read-only file system")
        path = self.root / tenant / number / f"msg{len(self.prepared)}.wav"
        self.prepared.append(path)
        return path

    def commit(self, tenant: str, number: str, audio: Path, **details: Any) -> Deferred[VoicemailMessage]:
        if self.commit_fails:
            return fail(StorageUnavailable("database is locked"))
        self.committed.append({"tenant": tenant, "number": number, "audio": audio, **details})
        return succeed(
            VoicemailMessage(
                tenant=tenant,
                mailbox=number,
                id=audio.stem,
                received_at=details["received_at"],
                duration=details["duration"],
                audio=f"voicemail/{tenant}/{number}/{audio.name}",
            )
        )

    def discard(self, audio: Path) -> None:
        self.discarded.append(audio)

    def greeting(self, tenant: str, number: str, kind: str) -> Path | None:
        return self.greetings.get((tenant, number, kind))


@dataclass(frozen=True)
class Caller:
    tenant: str = "default"
    extension: str | None = "1001"
    name: str = "Alice"


class DepositCall(FakeCall):
    """A fake call with the caller's identity and the dial results (what `Call` has)."""

    def __init__(self) -> None:
        super().__init__()
        self.caller = Caller()
        self.run_state = RunState()


class FailingEndpoint(FakeEndpoint):
    """An endpoint whose recordings the disk refuses (the recorder's writer raised)."""

    def _end_record(self, reason: str, digit: str | None) -> None:
        if self._record is not None:
            d, _, _, _, timer = self._record
            self._record = None
            if timer.active():
                timer.cancel()
            d.errback(PermissionError(13, "Permission denied"))


class Engine(FakeEngine):
    failing = False

    def _create(
        self,
        transport: Any,
        codec: str = "PCMU",
        payload_type: int | None = None,
        telephone_event: int | None = 101,
    ) -> FakeEndpoint:
        kind = FailingEndpoint if self.failing else FakeEndpoint
        endpoint = kind(self.clock, codec, payload_type if payload_type is not None else 0, telephone_event)
        self.created.append(endpoint)
        self.transports.append(transport)
        return endpoint


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


@pytest.fixture
def engine(clock: Clock) -> Engine:
    return Engine(clock)


@pytest.fixture
def boxes(tmp_path: Path) -> FakeMailboxes:
    return FakeMailboxes(tmp_path / "voicemail", {("default", "1002"): Box("1002", "Bob")})


@pytest.fixture
def deposit(engine: Engine, boxes: FakeMailboxes, clock: Clock, tmp_path: Path) -> VoicemailDeposit:
    media = IvrApps(engine, tmp_path / "dialplans", tmp_path / "recordings")
    return VoicemailDeposit(media, boxes, clock, min_message_seconds=2.0, silence_seconds=7.0)


def start(deposit: VoicemailDeposit, call: FakeCall, line: str = "voicemail 1002") -> Deferred[str]:
    apps: dict[str, Any] = {}
    deposit.register(apps)
    action = parse_line(line)
    assert action is not None
    return ensureDeferred(apps["voicemail"](call, action))


def wait(clock: Clock, seconds: float) -> None:
    """Let time pass in steps, so that what a timer starts gets its own timers at the right time."""
    clock.pump([0.5] * int(seconds * 2))


def played(endpoint: FakeEndpoint) -> list[list[str]]:
    return [items for items, _ in endpoint.played]


# -- the greeting ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "result", "kind"),
    [
        (None, None, "unavailable"),
        (None, "busy", "busy"),
        ("auto", "noanswer", "unavailable"),
        ("unavailable", "busy", "unavailable"),
        ("busy", None, "busy"),
    ],
)
def test_greeting_kind(option: str | None, result: str | None, kind: str) -> None:
    assert greeting_kind(option, result) == kind


def test_a_message_is_greeted_beeped_recorded_and_committed(deposit, engine, boxes, clock) -> None:
    call = DepositCall()
    d = start(deposit, call)
    assert call.sent == [200]
    endpoint = engine.created[0]
    assert endpoint.played == [(GREETING_UNAVAILABLE, True)]
    clock.advance(8)  # four items of 2 s
    assert played(endpoint)[-1] == ["tone:beep"]
    clock.advance(2)
    recording_started = clock.seconds()
    assert endpoint.records == [{"path": str(boxes.prepared[0]), "max_seconds": 60.0, "silence_seconds": 7.0}]
    clock.advance(5)
    endpoint.press("#")
    assert boxes.committed == [
        {
            "tenant": "default",
            "number": "1002",
            "audio": boxes.prepared[0],
            "caller_number": "1001",
            "caller_name": "Alice",
            "received_at": recording_started,
            "duration": 5.0,
            "call_id": "call-1",
        }
    ]
    assert boxes.callers == [{"caller_number": "1001", "caller_name": "Alice", "call_id": "call-1"}]
    assert played(endpoint)[-1] == ["vm-message-saved", "goodbye"]
    clock.advance(4)
    assert done(d) == "recorded"
    assert boxes.discarded == []
    assert clock.getDelayedCalls() == []


def test_auto_plays_the_busy_greeting_after_a_busy_dial(deposit, engine) -> None:
    call = DepositCall()
    call.run_state.result = "busy"
    start(deposit, call)
    assert played(engine.created[0])[0] == [
        "vm-person-at-extension",
        "digits:1002",
        "vm-is-busy",
        "vm-leave-message",
    ]
    call.end()


def test_greeting_option_wins_over_the_dial_result(deposit, engine) -> None:
    call = DepositCall()
    call.run_state.result = "busy"
    start(deposit, call, "voicemail 1002 greeting=unavailable")
    assert played(engine.created[0])[0] == GREETING_UNAVAILABLE
    call.end()


def test_the_owners_greeting_and_name_are_played_when_recorded(deposit, engine, boxes, tmp_path) -> None:
    boxes.greetings[("default", "1002", "busy")] = tmp_path / "busy.wav"
    boxes.greetings[("default", "1002", "name")] = tmp_path / "name.wav"
    busy = DepositCall()
    busy.run_state.result = "busy"
    start(deposit, busy)
    assert played(engine.created[0])[0] == [str(tmp_path / "busy.wav")]
    busy.end()
    other = DepositCall()
    start(deposit, other)
    assert played(engine.created[1])[0] == [
        str(tmp_path / "name.wav"),
        "vm-is-unavailable",
        "vm-leave-message",
    ]
    other.end()


def test_a_tenants_own_prompt_overrides_the_shipped_one(deposit, engine, tmp_path) -> None:
    own = tmp_path / "dialplans" / "default" / "sounds" / "vm-is-unavailable.wav"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"RIFF")
    call = DepositCall()
    start(deposit, call)
    assert played(engine.created[0])[0][2] == str(own)
    call.end()


# -- keys during the greeting ------------------------------------------------------------------------------


def test_star_skips_the_greeting(deposit, engine, clock) -> None:
    call = DepositCall()
    start(deposit, call)
    endpoint = engine.created[0]
    clock.advance(1)
    endpoint.press("*")
    assert played(endpoint)[-1] == ["tone:beep"]
    clock.advance(2)
    assert len(endpoint.records) == 1
    call.end()


def test_zero_goes_to_the_operator(deposit, engine, boxes, clock) -> None:
    call = DepositCall()
    d = start(deposit, call, "voicemail 1002 operator=1000")
    clock.advance(1)
    engine.created[0].press("0")
    assert done(d) == OPERATOR
    assert engine.created[0].records == []
    assert boxes.discarded == boxes.prepared and boxes.committed == []
    assert clock.getDelayedCalls() == []


def test_zero_without_an_operator_skips_like_star(deposit, engine, clock) -> None:
    call = DepositCall()
    start(deposit, call)
    clock.advance(1)
    engine.created[0].press("0")
    assert played(engine.created[0])[-1] == ["tone:beep"]
    call.end()


# -- how recordings end ------------------------------------------------------------------------------------


def test_a_message_shorter_than_the_minimum_is_discarded(deposit, engine, boxes, clock) -> None:
    call = DepositCall()
    d = start(deposit, call)
    endpoint = engine.created[0]
    endpoint.press("*")
    clock.advance(2)
    clock.advance(1.5)
    endpoint.press("#")
    assert boxes.committed == [] and boxes.discarded == boxes.prepared
    clock.advance(2)
    assert done(d) == "discarded"
    assert played(endpoint)[-1] == ["goodbye"]


def test_a_caller_hanging_up_after_the_beep_leaves_the_message(deposit, engine, boxes, clock) -> None:
    call = DepositCall()
    d = start(deposit, call)
    wait(clock, 8 + 2)
    wait(clock, 12)
    call.end()  # the call closes the endpoint: the recorder finishes with what was said
    assert done(d) == "recorded"
    assert [(c["duration"], c["call_id"]) for c in boxes.committed] == [(12.0, "call-1")]
    assert engine.created[0].played[-1] == (["tone:beep"], False)  # nothing played to a gone caller
    assert clock.getDelayedCalls() == []


def test_a_caller_hanging_up_during_the_greeting_leaves_nothing(deposit, engine, boxes, clock) -> None:
    call = DepositCall()
    d = start(deposit, call)
    clock.advance(3)
    call.end()
    assert done(d) == "closed"
    assert boxes.committed == [] and boxes.discarded == boxes.prepared
    assert engine.created[0].records == []
    assert clock.getDelayedCalls() == []


def test_the_recording_stops_at_the_boxs_longest_message(deposit, engine, boxes, clock) -> None:
    boxes.boxes[("default", "1002")] = Box("1002", max_message_seconds=30.0)
    call = DepositCall()
    d = start(deposit, call)
    engine.created[0].press("*")
    clock.advance(2)
    clock.advance(30)
    assert [c["duration"] for c in boxes.committed] == [30.0]
    clock.advance(4)
    assert done(d) == "recorded"


# -- full, broken, unknown -----------------------------------------------------------------------------------


def test_a_full_box_says_so_and_records_nothing(deposit, engine, boxes, clock) -> None:
    boxes.full = True
    call = DepositCall()
    d = start(deposit, call)
    endpoint = engine.created[0]
    assert played(endpoint) == [["vm-mailbox-full", "goodbye"]]
    clock.advance(4)
    assert done(d) == "full"
    assert endpoint.records == [] and boxes.prepared == []
    assert clock.getDelayedCalls() == []


def test_unavailable_storage_gets_an_apology_and_one_log_line(deposit, engine, boxes, clock) -> None:
    boxes.broken = True
    call = DepositCall()
    with capturedLogs() as events:
        d = start(deposit, call)
        clock.advance(4)
    assert done(d) == "failed"
    assert played(engine.created[0]) == [["vm-sorry-unavailable", "goodbye"]]
    # Mailboxes.prepare logs the storage problem; the deposit adds the call's line at info level.
    assert [e for e in events if e["log_level"] >= LogLevel.warn] == []
    (line,) = [e for e in events if "storage unavailable" in e.get("log_format", "")]
    assert "read-only file system" in line["error"] and line["id"] == "call-1"
    assert engine.created[0].records == []


def test_a_disk_that_refuses_the_recording_gets_an_apology(deposit, engine, boxes, clock) -> None:
    engine.failing = True
    call = DepositCall()
    with capturedLogs() as events:
        d = start(deposit, call)
        engine.created[0].press("*")
        wait(clock, 2 + 5)
        engine.created[0].press("#")
        clock.advance(4)
    assert done(d) == "failed"
    assert boxes.committed == [] and boxes.discarded == boxes.prepared
    assert played(engine.created[0])[-1] == ["vm-sorry-unavailable", "goodbye"]
    assert len([e for e in events if e["log_level"] >= LogLevel.warn]) == 1
    assert clock.getDelayedCalls() == []


def test_a_disk_failure_after_hangup_is_logged_and_survived(deposit, engine, boxes, clock) -> None:
    engine.failing = True
    call = DepositCall()
    d = start(deposit, call)
    wait(clock, 10 + 5)
    call.end()
    assert done(d) == "failed"
    assert boxes.committed == [] and boxes.discarded == boxes.prepared
    assert clock.getDelayedCalls() == []


def test_an_index_that_cannot_be_written_leaves_no_orphan_audio(deposit, engine, boxes, clock) -> None:
    boxes.commit_fails = True
    call = DepositCall()
    d = start(deposit, call)
    engine.created[0].press("*")
    wait(clock, 2 + 5)
    engine.created[0].press("#")
    clock.advance(4)
    assert done(d) == "failed"
    assert boxes.discarded == boxes.prepared
    assert played(engine.created[0])[-1] == ["vm-sorry-unavailable", "goodbye"]


def test_an_unknown_mailbox_fails_without_answering(deposit, engine, boxes) -> None:
    call = DepositCall()
    assert done(start(deposit, call, "voicemail 1009")) == "failed"
    assert call.sent == [] and engine.created == [] and boxes.prepared == []


def test_early_media_carries_the_greeting_and_the_message_is_answered(deposit, engine, clock) -> None:
    call = DepositCall()
    assert call.early_media()  # `progress` ran before
    media = deposit.media
    assert media.endpoint(call) is not None
    start(deposit, call)
    assert call.sent == [183]
    clock.advance(8)
    assert call.sent == [183, 200]
    assert played(engine.created[0])[-1] == ["tone:beep"]
    call.end()


def test_a_caller_from_a_trunk_is_known_by_its_from_header(deposit, engine, boxes) -> None:
    call = DepositCall()
    call.caller = Caller(extension=None, name="")
    call.invite = parse_message(  # type: ignore[attr-defined]
        b"INVITE sip:1002@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        b'From: "Bob Smith" <sip:+15551234@carrier.example>;tag=1\r\nTo: <sip:1002@pbx>\r\n'
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    start(deposit, call)
    assert boxes.callers == [{"caller_number": "+15551234", "caller_name": "Bob Smith", "call_id": "call-1"}]
    call.end()
