"""Voicemail as real phones (baresip) use it, shared by the voicemail end-to-end tests.

- `leave_message`: baresip 1001, sending a 440 Hz tone all along, calls a box's extension (not registered),
  presses `*` (RFC 4733) a moment into the greeting, talks a few seconds once the recording started and hangs
  up; the PBX's "saved" log line comes back.
- `enter_pin`: a phone in a `*97` call types its PIN one key at a time, as a thumb would.
- `wait_tone_heard` and `assert_counts_then_message`: what the phone heard (baresip's `sndfile` dump, which
  grows in real time): speech right after the PIN (the counts), later the message's 440 Hz.
- `notified`: the message-summary bodies (RFC 3842) of the NOTIFYs in the PBX's SIP trace, in order.

Waits are on events (log lines, ctrl_tcp events, a dump reaching a length) with timeouts; the dumps are
polled for their size, never slept on.
"""

from __future__ import annotations

import array
import re
import sys
import time
from pathlib import Path

from tests.e2e.audio import Audio, assert_hears, tone_report
from tests.e2e.baresip import Account, Baresip, BaresipControl, write_tone_wav
from tests.e2e.test_calls_sipp import CallPbx
from tests.e2e.test_ivr_baresip import BYTES_PER_SECOND, WAV_HEADER, heard_dump, heard_seconds, wait_heard

MESSAGE_TONE = 440.0  # what callers say in a message
PHONE_TONE = 1000.0  # what the mailbox owner's phone sends meanwhile
NOTIFIED = re.compile(r"Messages-Waiting: (yes|no)\s+(?:Message-Account: \S+\s+)?Voice-Message: (\d+/\d+)")


def notified(output: str) -> list[tuple[str, str]]:
    """(Messages-Waiting, Voice-Message) of every message-summary body in `output` (a SIP trace)."""
    return NOTIFIED.findall(output)


# -- leaving a message -------------------------------------------------------------------------------------


def sent_seconds(record_dir: Path) -> float:
    """Seconds of audio the phone has sent so far in its call (sndfile's `*-enc.wav` dump grows with it)."""
    found = sorted(record_dir.glob("*-enc.wav"))
    return max(0.0, (found[-1].stat().st_size - WAV_HEADER) / BYTES_PER_SECOND) if found else 0.0


def wait_sent(record_dir: Path, seconds: float, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while sent_seconds(record_dir) < seconds:
        if time.monotonic() > deadline:
            raise AssertionError(f"{record_dir}: {sent_seconds(record_dir):.2f} s sent, wanted {seconds}")
        time.sleep(0.05)  # polling the dump's size for an event: enough audio sent


def leave_message(
    pbx: CallPbx, directory: Path, *, caller: str = "1001", box: str = "1002", talk: float = 3.0
) -> str:
    """baresip `caller` (its own directory under `directory`) leaves `talk` seconds of 440 Hz in `box`'s
    mailbox, skipping the greeting with `*`; returns the PBX's "message ID saved (N s, closed)" line."""
    directory.mkdir(parents=True, exist_ok=True)
    heard = directory / f"heard_by_{caller}"
    saved = rf"voicemail default/{box}: message \S+ saved \(\d+\.\d s, closed\)"
    before = len(re.findall(saved, pbx.process.output))
    phone = Baresip(
        directory / f"baresip_{caller}",
        [Account(caller, f"pass{caller}", "127.0.0.1", pbx.sip)],
        audio_source=write_tone_wav(directory / f"tone_{caller}.wav", MESSAGE_TONE, seconds=60.0),
        record_dir=heard,
        ctrl=True,
    )
    try:
        phone.wait_registered(timeout=15)
        control = phone.control()
        assert control.dial(f"sip:{box}@127.0.0.1:{pbx.sip}").get("ok"), phone.output[-3000:]
        control.wait_event("CALL_ESTABLISHED", timeout=15)
        wait_heard(heard, 1.0)  # the greeting has begun
        assert control.send_dtmf("*").get("ok"), phone.output[-3000:]
        pbx.wait_for(rf"voicemail default/{box}: recording", timeout=10, count=before + 1)
        wait_sent(heard, sent_seconds(heard) + talk)  # the PBX sends nothing while it records
        assert control.hangup().get("ok"), phone.output[-3000:]
        control.wait_event("CALL_CLOSED", timeout=10)
        return pbx.wait_for(saved, count=before + 1)[-1]
    finally:
        phone.stop()


# -- listening -----------------------------------------------------------------------------------------------


def enter_pin(phone: Baresip, control: BaresipControl, heard: Path, pin: str) -> float:
    """Type `pin` and `#` by RFC 4733, one key after the other's end; return the seconds heard by then."""
    already = len([line for line in phone.lines if "send DTMF digit end: " in line])
    for count, key in enumerate(pin + "#", start=already + 1):
        assert control.send_dtmf(key).get("ok"), phone.output[-3000:]
        # one key at a time, as a thumb would (the PBX is silent while it waits for digits: no dump clock)
        phone.wait_for(r"send DTMF digit end: ", count=count)
    return heard_seconds(heard)


def dump_window(record_dir: Path, start: float, end: float) -> Audio:
    """The audio heard from `start` to `end` seconds, read from the raw samples of the growing dump (its
    header's length is written only when the call ends)."""
    dump = heard_dump(record_dir)
    if dump is None:
        return Audio(8000, [])
    with open(dump, "rb") as f:
        f.seek(WAV_HEADER + 2 * int(start * 8000))
        raw = f.read(2 * int((end - start) * 8000))
    pcm = array.array("h")
    pcm.frombytes(raw[: len(raw) - len(raw) % 2])
    if sys.byteorder == "big":
        pcm.byteswap()
    return Audio(8000, [s / 32768.0 for s in pcm])


def is_tone(audio: Audio, tone: float = MESSAGE_TONE, other: float = PHONE_TONE) -> bool:
    report = tone_report(audio, (tone, other))
    return report.levels[tone] > 1e-4 and report.ratio(tone, other) > 100


def wait_tone_heard(
    record_dir: Path, since: float, seconds: float = 1.0, step: float = 0.5, timeout: float = 40.0
) -> float:
    """Wait until the phone has heard `seconds` of the message's tone (windows of `step` in a row) after
    `since`; return where that tone began."""
    deadline = time.monotonic() + timeout
    start, run = since, 0
    while run * step < seconds:
        if heard_seconds(record_dir) >= start + step:
            run = run + 1 if is_tone(dump_window(record_dir, start, start + step)) else 0
            start += step
            continue
        if time.monotonic() > deadline:
            raise AssertionError(f"{record_dir}: no {MESSAGE_TONE:g} Hz heard after {since:.1f} s")
        time.sleep(0.05)  # polling the dump's size for an event: more audio heard
    return start - run * step


def tone_windows(recording: Audio, start: float, end: float, step: float = 0.5) -> list[float]:
    """The start of every `step` window from `start` to `end` where the message's tone dominates."""
    found = []
    while start + step <= min(end, recording.seconds):
        if is_tone(recording.window(start, start + step)):
            found.append(start)
        start += step
    return found


def assert_counts_then_message(recording: Audio, pin_done: float, end: float, envelope: float = 8.0) -> None:
    """Speech right after the PIN (the counts, not the message), then, after the counts and the envelope
    (`envelope` seconds at least), the message's 440 Hz (three windows of 0.5 s at least)."""
    counts = tone_report(recording.window(pin_done + 0.3, pin_done + 4.0), (MESSAGE_TONE, PHONE_TONE))
    assert counts.rms > 0.01, f"silence after the PIN: {counts}"
    assert counts.levels[MESSAGE_TONE] < 0.5 * counts.rms**2, f"the message instead of the counts: {counts}"
    windows = tone_windows(recording, pin_done, end)
    assert len(windows) >= 3, f"the message's {MESSAGE_TONE:g} Hz was not heard: {windows}"
    first = windows[0]
    assert first > pin_done + envelope, f"the message came before its envelope ({first - pin_done:.1f} s)"
    assert_hears(recording.window(first, first + 1.5), MESSAGE_TONE, PHONE_TONE, label="the message")
