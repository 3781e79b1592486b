"""The IVR as a real phone hears it (baresip): the auto-attendant speaks, a key puts the call through, music
on hold, early media.

Each phone plays its own tone (`aufile`: the caller 440 Hz, 1001 1000 Hz) and dumps what it hears
(`sndfile`, `*-dec.wav`). The dumps grow in real time while a call is up, so their size when something
happens (a key sent, the callee answering, hold, resume) marks that moment in the recording; the analysis
then looks at windows between the marks: speech (energy spread over the speech band, no test tone
dominating) where the PBX spoke, the callee's 1000 Hz once the call was put through, music (energy, not the
caller's tone) while held.

Waits are on events (log lines, ctrl_tcp events, the dumps reaching a length) with timeouts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.audio import Audio, assert_hears, read_wav, tone_report
from tests.e2e.baresip import Account, Baresip, BaresipControl, write_tone_wav
from tests.e2e.harness import REPO
from tests.e2e.test_calls_sipp import CallPbx, launch_pbx

pytestmark = pytest.mark.e2e

CALLER_TONE = 440.0
CALLEE_TONE = 1000.0
WAV_HEADER = 44
BYTES_PER_SECOND = 8000 * 2
DEMO_MAIN = (REPO / "dialplans" / "default" / "main.j2").read_text()
IVR_TEMPLATE = (REPO / "dialplans" / "default" / "ivr" / "main.j2").read_text()


def heard_dump(record_dir: Path) -> Path | None:
    found = sorted(record_dir.glob("*-dec.wav"))
    return found[-1] if found else None


def heard_seconds(record_dir: Path) -> float:
    """Seconds of audio the phone has heard so far in its (only) call."""
    dump = heard_dump(record_dir)
    return max(0.0, (dump.stat().st_size - WAV_HEADER) / BYTES_PER_SECOND) if dump is not None else 0.0


def wait_heard(record_dir: Path, seconds: float, timeout: float = 30.0) -> float:
    """Wait until the phone has heard `seconds` of audio; return how much it has."""
    deadline = time.monotonic() + timeout
    while True:
        heard = heard_seconds(record_dir)
        if heard >= seconds:
            return heard
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{record_dir}: only {heard:.2f} s heard after {timeout} s (wanted {seconds})"
            )
        time.sleep(0.05)  # polling the dump's size for an event: enough audio heard


def assert_speech(audio: Audio, label: str) -> None:
    """Energy (not silence), and not one of the test tones: the PBX's spoken prompt."""
    report = tone_report(audio, (CALLER_TONE, CALLEE_TONE), probes=(300.0, 500.0, 700.0, 1300.0, 2000.0))
    assert report.rms > 0.01, f"{label}: silence: {report}"
    strongest = max(report.levels.values())
    assert report.levels[CALLEE_TONE] < strongest or report.rms > 0.05, f"{label}: a test tone: {report}"
    assert report.levels[CALLER_TONE] < 0.5 * report.rms**2, f"{label}: the caller's own tone: {report}"


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[CallPbx]:
    started = launch_pbx(tmp_path / "pbx", DEMO_MAIN)
    path = started.directory / "dialplans" / "default" / "ivr" / "main.j2"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(IVR_TEMPLATE)
    yield started
    started.process.stop()


class Phones:
    def __init__(self, pbx: CallPbx, tmp_path: Path) -> None:
        self.pbx = pbx
        self.tmp_path = tmp_path
        self.started: list[Baresip] = []

    def start(self, user: str, tone: float, *params: str) -> tuple[Baresip, BaresipControl, Path]:
        account = Account(user, f"pass{user}", "127.0.0.1", self.pbx.sip, params=params)
        record_dir = self.tmp_path / f"heard_by_{user}"
        phone = Baresip(
            self.tmp_path / f"baresip_{user}",
            [account],
            audio_source=write_tone_wav(self.tmp_path / f"tone_{user}.wav", tone, seconds=60.0),
            record_dir=record_dir,
            ctrl=True,
        )
        self.started.append(phone)
        phone.wait_registered(timeout=15)
        self.pbx.wait_for(rf"Registered {user}@default at ")
        return phone, phone.control(), record_dir

    def stop(self) -> None:
        for phone in self.started:
            phone.stop()


@pytest.fixture
def phones(pbx: CallPbx, tmp_path: Path) -> Iterator[Phones]:
    group = Phones(pbx, tmp_path)
    yield group
    group.stop()


def test_auto_attendant_speaks_and_key_1_reaches_1001(pbx, phones):
    _, callee_ctl, _ = phones.start("1001", CALLEE_TONE, "answermode=auto")
    caller, caller_ctl, heard = phones.start("1003", CALLER_TONE)

    assert caller_ctl.dial(f"sip:500@127.0.0.1:{pbx.sip}").get("ok"), caller.output[-3000:]
    caller_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
    pressed_at = wait_heard(heard, 2.5)  # the welcome prompt
    assert caller_ctl.send_dtmf("1").get("ok"), caller.output[-3000:]  # RFC 4733 (telephone-event)
    callee_ctl.wait_event("CALL_ESTABLISHED", timeout=20)
    bridged_at = heard_seconds(heard)
    wait_heard(heard, bridged_at + 3.0)
    assert caller_ctl.hangup().get("ok")
    callee_ctl.wait_event("CALL_CLOSED", timeout=10)
    pbx.wait_for(r"Call \S+ ended: .*1003@default -> 500 answered by 1001")
    phones.stop()

    dump = heard_dump(heard)
    assert dump is not None
    audio = read_wav(dump)
    assert_speech(audio.window(0.2, pressed_at), "before the key")
    assert_hears(audio.window(bridged_at + 0.5, bridged_at + 3.0), CALLEE_TONE, CALLER_TONE, label="after 1")


def test_held_callee_hears_music_on_hold(pbx, phones):
    _, callee_ctl, heard = phones.start("1001", CALLEE_TONE, "answermode=auto")
    caller, caller_ctl, _ = phones.start("1003", CALLER_TONE)

    assert caller_ctl.dial(f"sip:1001@127.0.0.1:{pbx.sip}").get("ok"), caller.output[-3000:]
    callee_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
    held_at = wait_heard(heard, 2.0)
    assert caller_ctl.command("hold").get("ok"), caller.output[-3000:]
    pbx.wait_for(r"Call \S+: music on hold for 1001", timeout=10)
    wait_heard(heard, held_at + 3.0)
    resumed_at = heard_seconds(heard)
    assert caller_ctl.command("resume").get("ok"), caller.output[-3000:]
    pbx.wait_for(r"Call \S+: music on hold for 1001 ends", timeout=10)
    wait_heard(heard, resumed_at + 3.0)
    assert caller_ctl.hangup().get("ok")
    callee_ctl.wait_event("CALL_CLOSED", timeout=10)
    phones.stop()

    dump = heard_dump(heard)
    assert dump is not None
    audio = read_wav(dump)
    assert_hears(audio.window(0.5, held_at), CALLER_TONE, CALLEE_TONE, label="before hold")
    music = audio.window(held_at + 1.0, resumed_at)
    report = tone_report(music, (CALLER_TONE, CALLEE_TONE))
    assert report.rms > 0.01, f"silence while held: {report}"
    assert report.levels[CALLER_TONE] < 0.1 * report.rms**2, f"the caller is heard while held: {report}"
    assert_hears(audio.window(resumed_at + 1.5), CALLER_TONE, CALLEE_TONE, label="after resume")


def test_early_media_is_heard_before_the_rejection(pbx, phones):
    caller, caller_ctl, heard = phones.start("1003", CALLER_TONE)
    pbx.write_dialplan(
        "progress\nplay tone:ringback:3 noanswer=yes\nplay please-hold noanswer=yes\nhangup 480\n"
    )
    assert caller_ctl.dial(f"sip:800@127.0.0.1:{pbx.sip}").get("ok"), caller.output[-3000:]
    caller_ctl.wait_event("CALL_CLOSED", timeout=20)
    assert not [e for e in caller_ctl.events if e.get("type") == "CALL_ESTABLISHED"]
    pbx.ended(480)
    phones.stop()
    dump = heard_dump(heard)
    assert dump is not None, "nothing heard in early media"
    audio = read_wav(dump)
    report = tone_report(audio.window(0.3, 2.5), (425.0, 440.0, 480.0))
    assert report.rms > 0.01, f"silence in early media: {report}"
