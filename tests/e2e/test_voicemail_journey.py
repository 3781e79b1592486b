"""Issue 11's journey with real phones (baresip), on the demo dialplan, twice on one data directory.

1. baresip 1001 calls 1002, which is not registered: the demo dialplan sends the call to mailbox 1002. The
   phone sends a 440 Hz tone all along, skips the greeting with `*` and talks 3 s: the saved WAV holds the
   tone (Goertzel).
2. 1002 registers with baresip's `mwi` module, which subscribes to message-summary: the NOTIFY says
   `Messages-Waiting: yes`, `Voice-Message: 1/0` (the phone's ctrl_tcp `MWI_NOTIFY` event and the PBX's SIP
   trace both show it).
3. 1002 dials `*97`, types its PIN by RFC 4733, hears the counts and, after the envelope, the message (the
   test analyses what the phone heard: speech right after the PIN, then 440 Hz), and presses `7` while the
   message plays: the NOTIFY says `Messages-Waiting: no`, `Voice-Message: 0/0`; the WAV and its row are gone.
4. Once more with a `kill -9` of the PBX between leaving the message and hearing it: 1001 leaves a second
   message, the PBX is killed and started again on the same config and data directory; the message is still
   there, a new 1002 phone subscribes and is told it waits, hears it and deletes it.

(A `kill -9` during the recording is `test_voicemail_deposit.py`'s.) Waits are on events with timeouts.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.audio import assert_hears, read_wav
from tests.e2e.baresip import Account, Baresip, write_tone_wav
from tests.e2e.harness import PbxProcess
from tests.e2e.test_calls_sipp import CallPbx
from tests.e2e.test_ivr_baresip import heard_dump, heard_seconds, wait_heard
from tests.e2e.test_voicemail_deposit import box_dir, pbxs, rows, start, wavs  # noqa: F401 (fixture)
from tests.e2e.voicemail_phones import (
    MESSAGE_TONE,
    PHONE_TONE,
    assert_counts_then_message,
    enter_pin,
    leave_message,
    notified,
    wait_tone_heard,
)

pytestmark = pytest.mark.e2e

PIN = "4321"  # test_voicemail_deposit.MAILBOXES


def told(phone: Baresip, waiting: str, counts: str, timeout: float = 15.0) -> str:
    """Wait until the phone's `mwi` module reports (ctrl_tcp `MWI_NOTIFY`) a message-summary body with
    `Messages-Waiting: waiting` and `Voice-Message: counts`; return that body."""
    wanted = re.compile(rf"Messages-Waiting: {waiting}\s+(.*\s+)?Voice-Message: {re.escape(counts)}\b")
    deadline = time.monotonic() + timeout
    for count in range(1, 20):  # a handful of NOTIFYs at most in a call
        events = phone.control().wait_event("MWI_NOTIFY", max(0.1, deadline - time.monotonic()), count)
        body = str(events[-1].get("param", ""))
        if wanted.search(body):
            return body
    raise AssertionError(f"no MWI_NOTIFY {waiting} {counts}: {phone.control().events}")


def told_or_explain(phone: Baresip, waiting: str, counts: str, pbx: CallPbx, timeout: float = 15.0) -> str:
    """`told`, and when it fails, what the phone and the PBX said of the subscription."""
    try:
        return told(phone, waiting, counts, timeout)
    except AssertionError as e:
        pbx_lines = [
            line
            for line in pbx.process.output.splitlines()
            if re.search(
                r"SUBSCRIBE|NOTIFY|message-summary|Subscription|Messages-Waiting|CSeq|SIP/2.0 \d", line
            )
        ]
        raise AssertionError(
            f"{e}\n--- baresip ---\n{phone.output[-6000:]}\n--- PBX ---\n" + "\n".join(pbx_lines[-120:])
        ) from None


def hear_and_delete(pbx: CallPbx, directory: Path, message: str) -> None:
    """Steps 2 and 3 for 1002's box holding one new message, `message` (its ID)."""
    directory.mkdir(parents=True, exist_ok=True)
    heard = directory / "heard_by_1002"
    phone = Baresip(
        directory / "baresip_1002",
        [Account("1002", "pass1002", "127.0.0.1", pbx.sip)],
        audio_source=write_tone_wav(directory / "tone_1002.wav", PHONE_TONE, seconds=90.0),
        record_dir=heard,
        ctrl=True,
        sip_trace=True,
        extra_config=["module_app mwi.so"],
    )
    try:
        # Listen for events before the phone registers: its mwi module subscribes right after, and an
        # initial NOTIFY that comes before the control connection is never reported on it.
        control = phone.control()
        phone.wait_registered(timeout=15)
        # 2. the light is on: the phone was told, and the PBX's trace shows what it sent
        told_or_explain(phone, "yes", "1/0", pbx)
        pbx.wait_for(r"Voice-Message: 1/0\b", timeout=5)
        assert notified(pbx.process.output)[-1] == ("yes", "1/0"), notified(pbx.process.output)

        # 3. *97, the PIN, the counts, the envelope, the message; 7 while it plays
        assert control.dial(f"sip:*97@127.0.0.1:{pbx.sip}").get("ok"), phone.output[-3000:]
        control.wait_event("CALL_ESTABLISHED", timeout=15)
        wait_heard(heard, 1.0)  # "Please enter your PIN ...": typing may start during it
        pin_done = enter_pin(phone, control, heard, PIN)
        pbx.wait_for(r"mailbox default/1002 opened from 127\.0\.0\.1", timeout=10)
        pbx.wait_for(r"mailbox default/1002 has 1 new and 0 old messages")
        tone_at = wait_tone_heard(heard, pin_done, seconds=1.5)
        assert control.send_dtmf("7").get("ok"), phone.output[-3000:]
        pbx.wait_for(rf"message {re.escape(message)} of default/1002 deleted", timeout=15)
        # the light goes off (after a NOTIFY 0/1 first should the message have played to its end)
        told_or_explain(phone, "no", "0/0", pbx)
        pbx.wait_for(r"Voice-Message: 0/0\b", timeout=5)
        assert notified(pbx.process.output)[-1] == ("no", "0/0"), notified(pbx.process.output)
        end = heard_seconds(heard)
        assert control.hangup().get("ok"), phone.output[-3000:]
        control.wait_event("CALL_CLOSED", timeout=10)
    finally:
        phone.stop()
    dump = heard_dump(heard)
    assert dump is not None
    recording = read_wav(dump)
    assert_counts_then_message(recording, pin_done, end)
    assert tone_at > pin_done + 8.0, (tone_at, pin_done)
    assert wavs(box_dir(pbx)) == [] and rows(pbx) == []


def saved_message(pbx: CallPbx, line: str) -> str:
    """Check the saved message of `line` (its WAV holds the tone, its row is new, from "Ext 1001" <1001>);
    return its ID."""
    match = re.search(r"message (\S+) saved", line)
    assert match is not None, line
    (wav,) = wavs(box_dir(pbx))
    assert wav.stem == match.group(1), (wav, line)
    message = read_wav(wav)
    assert 2.0 <= message.seconds <= 8.0, message.seconds
    assert_hears(message, MESSAGE_TONE, PHONE_TONE, label="the message")
    (row,) = rows(pbx)
    assert (row["id"], row["caller_number"], row["caller_name"], row["folder"]) == (
        wav.stem,
        "1001",
        "Ext 1001",
        "new",
    ), row
    return wav.stem


def test_leave_light_hear_delete_then_again_across_kill_9(pbxs, tmp_path):  # noqa: F811
    pbx = start(tmp_path)
    pbxs.append(pbx)
    # 1-3 on one PBX
    first = saved_message(pbx, leave_message(pbx, tmp_path / "first"))
    hear_and_delete(pbx, tmp_path / "first", first)

    # 4. a second message, kill -9, the same config and data directory again
    second = saved_message(pbx, leave_message(pbx, tmp_path / "second"))
    pbx.process.kill9()
    restarted = CallPbx(PbxProcess(pbx.ports["path"]), pbx.ports, pbx.directory, pbx.rtp)
    pbxs.append(restarted)
    restarted.process.wait_ready(pbx.ports["listeners"])
    restarted.wait_for(r"Voicemail: 1 messages in 1 boxes \(0 recovered\)")
    assert saved_message(restarted, f"message {second} saved") == second
    hear_and_delete(restarted, tmp_path / "second", second)
