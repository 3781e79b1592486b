"""The IVR as a real phone hears it (baresip): the auto-attendant speaks, a key puts the call through, music
on hold, early media.

Each phone plays its own tone (`aufile`: the caller 440 Hz, 1001 1000 Hz) and dumps what it hears
(`sndfile`, `*-dec.wav`). The dumps grow in real time while a call is up, so their size when something
happens (a key sent, the callee answering, hold, resume) marks that moment in the recording; the analysis
then looks at windows between the marks: speech (energy spread over the speech band, no test tone
dominating) where the PBX spoke, the callee's 1000 Hz once the call was put through.

Music on hold is heard by a SIPp phone whose SDP sends its audio to a socket of the test: baresip 1.0, once
put on hold (it answers a=recvonly), decodes nothing more, with or without music (its dump stays frozen while
the PBX sends it 50 packets/s continuing the stream), so it cannot be the held phone here.

Waits are on events (log lines, ctrl_tcp events, the dumps reaching a length) with timeouts.
"""

from __future__ import annotations

import array
import itertools
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx.media.g711 import ulaw_decode
from tests.e2e.audio import Audio, assert_hears, read_wav, tone_report
from tests.e2e.baresip import Account, Baresip, BaresipControl, write_tone_wav
from tests.e2e.harness import REPO, free_port
from tests.e2e.test_calls_sipp import CallPbx, launch_pbx, sipp  # noqa: F401 (fixture)

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


class RtpListener:
    """A UDP socket that a SIPp phone's SDP points the PBX's audio to: it keeps every RTP packet with its
    arrival time, so a test hears what that phone would (G.711 u-law decoded)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port(tcp=False)))
        self.port = self.sock.getsockname()[1]
        self.packets: list[tuple[float, int, int, int, int, bytes]] = []  # time, pt, seq, ts, ssrc, payload
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except OSError:
                return
            if len(data) < 12:
                continue
            pt = data[1] & 0x7F
            seq, ts, ssrc = struct.unpack("!HII", data[2:12])
            with self._cond:
                self.packets.append((time.monotonic(), pt, seq, ts, ssrc, data[12:]))
                self._cond.notify_all()

    def wait_packets(self, count: int, since: float, timeout: float = 20.0) -> None:
        """Wait until `count` audio packets arrived after `since` (time.monotonic())."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for p in self.packets if p[0] >= since and p[1] == 0) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"only {len(self.packets)} RTP packets in all after {timeout} s")
                self._cond.wait(min(left, 0.5))

    def between(self, start: float, end: float) -> list[tuple[float, int, int, int, int, bytes]]:
        with self._cond:
            return [p for p in self.packets if start <= p[0] < end and p[1] == 0]

    def audio(self, start: float, end: float) -> Audio:
        pcm = ulaw_decode(b"".join(p[5] for p in self.between(start, end)))
        samples = array.array("h")
        samples.frombytes(pcm)
        return Audio(8000, [x / 32768.0 for x in samples])

    def close(self) -> None:
        self.sock.close()
        self._thread.join(5)


def test_held_phone_hears_music_on_hold(pbx, phones, sipp):  # noqa: F811
    """baresip 1003 calls 1001 (a SIPp phone whose audio goes to the test's socket), holds and resumes: the
    held phone hears the caller's tone, then music continuing the same RTP stream, then the tone again."""
    listener = RtpListener()
    try:
        port = sipp.register(pbx, "1001")
        uas = sipp.uas("held_1001", "ivr_uas_hold.xml", "1001", port, ["-key", "rtpport", str(listener.port)])
        _, caller_ctl, _ = phones.start("1003", CALLER_TONE)
        start = time.monotonic()
        assert caller_ctl.dial(f"sip:1001@127.0.0.1:{pbx.sip}").get("ok")
        caller_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        listener.wait_packets(100, start)  # 2 s of the caller's tone
        held = time.monotonic()
        assert caller_ctl.command("hold").get("ok")
        pbx.wait_for(r"Call \S+: music on hold for 1001", timeout=10)
        music = time.monotonic()
        listener.wait_packets(150, music)
        resumed = time.monotonic()
        assert caller_ctl.command("resume").get("ok")
        pbx.wait_for(r"Call \S+: music on hold for 1001 ends", timeout=10)
        after = time.monotonic()
        listener.wait_packets(100, after)
        assert caller_ctl.hangup().get("ok")
        sipp.check(pbx, uas)
        end = time.monotonic()
    finally:
        listener.close()

    assert_hears(listener.audio(start, held), CALLER_TONE, CALLEE_TONE, label="before hold")
    report = tone_report(listener.audio(music + 0.5, resumed), (CALLER_TONE, CALLEE_TONE))
    assert report.rms > 0.02, f"silence while held: {report}"
    assert report.levels[CALLER_TONE] < 0.1 * report.rms**2, f"the caller heard while held: {report}"
    assert_hears(listener.audio(after + 0.5, end), CALLER_TONE, CALLEE_TONE, label="after resume")
    # One RTP stream for the phone throughout: the music continues the caller's SSRC and sequence numbers.
    packets = listener.between(start, end)
    assert len({p[4] for p in packets}) == 1, {p[4] for p in packets}
    gaps = [(b[2] - a[2]) & 0xFFFF for a, b in itertools.pairwise(packets)]
    assert all(1 <= g <= 50 for g in gaps), sorted(set(gaps))


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
