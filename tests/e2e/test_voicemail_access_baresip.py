"""Mailbox access as a real phone hears it (baresip): 1002 dials *97, types its PIN (RFC 4733), hears the
counts and its message, deletes it with 7 and leaves with * (the PBX hangs up). The phone subscribes to its
message-waiting indication (`mwi.so`): the NOTIFYs say 1 new, then 0 new 1 old once the message was heard
to its end, then 0/0 once it is deleted.

The box holds one message, a 2 s 440 Hz tone from 1001 put there before the PBX starts (the recovery adopts
it, as in `test_voicemail_access_sipp.py`). The phone sends its own 1000 Hz tone and dumps what it hears
(`sndfile`); the dump grows in real time, so its length when the PIN was typed marks that moment. The
analysis finds speech right after the PIN (the counts) and, later, the message's 440 Hz tone. Waits are on
events (log lines, ctrl_tcp events, the dump reaching a length) with timeouts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.audio import read_wav
from tests.e2e.baresip import Account, Baresip, write_tone_wav
from tests.e2e.test_ivr_baresip import heard_dump, heard_seconds, wait_heard
from tests.e2e.test_voicemail_access_sipp import MESSAGE_ID, PIN, vm_pbx  # noqa: F401 (fixture)
from tests.e2e.voicemail_phones import PHONE_TONE, assert_counts_then_message, enter_pin, notified

pytestmark = pytest.mark.e2e


@pytest.fixture
def phone_1002(tmp_path: Path) -> Iterator[tuple[Path, list[Baresip]]]:
    started: list[Baresip] = []
    yield tmp_path, started
    for phone in started:
        phone.stop()


def test_star_97_pin_hears_the_message_and_7_deletes_it(vm_pbx, phone_1002):  # noqa: F811
    pbx, audio = vm_pbx(seed=True)
    assert audio is not None
    tmp_path, started = phone_1002
    heard = tmp_path / "heard_by_1002"
    phone = Baresip(
        tmp_path / "baresip_1002",
        [Account("1002", "pass1002", "127.0.0.1", pbx.sip)],
        audio_source=write_tone_wav(tmp_path / "tone_1002.wav", PHONE_TONE, seconds=90.0),
        record_dir=heard,
        ctrl=True,
        extra_config=["module_app mwi.so"],
    )
    started.append(phone)
    phone.wait_registered(timeout=15)
    # baresip's mwi.so subscribes to message-summary: its light is on (1 new, 0 old)
    pbx.wait_for(r"Voice-Message: 1/0\b", timeout=15)
    control = phone.control()

    assert control.dial(f"sip:*97@127.0.0.1:{pbx.sip}").get("ok"), phone.output[-3000:]
    control.wait_event("CALL_ESTABLISHED", timeout=15)
    wait_heard(heard, 1.0)  # "Please enter your PIN ...": typing may start during it
    pin_done = enter_pin(phone, control, heard, PIN)
    pbx.wait_for(r"mailbox default/1002 opened from 127\.0\.0\.1", timeout=10)
    pbx.wait_for(r"mailbox default/1002 has 1 new and 0 old messages")
    # the counts (about 4.6 s), the envelope (about 10 s), the message (2 s), then the message menu
    wait_heard(heard, pin_done + 19.0, timeout=40)
    assert control.send_dtmf("7").get("ok")
    pbx.wait_for(rf"message {MESSAGE_ID} of default/1002 deleted", timeout=15)
    assert control.send_dtmf("*").get("ok")  # at the main menu: goodbye, the PBX hangs up
    control.wait_event("CALL_CLOSED", timeout=30)
    # heard to its end: old (the light goes off); deleted: gone
    pbx.wait_for(r"Voice-Message: 0/1\b")
    pbx.wait_for(r"Voice-Message: 0/0\b")
    bodies = notified(pbx.process.output)
    assert bodies[0] == ("yes", "1/0") and ("no", "0/1") in bodies and bodies[-1] == ("no", "0/0"), bodies
    phone.stop()
    assert not audio.exists()

    dump = heard_dump(heard)
    assert dump is not None
    assert_counts_then_message(read_wav(dump), pin_done, heard_seconds(heard))
