"""Two real phones through the PBX: baresip 1001 calls baresip 1002 and each hears the other.

Each phone plays its own tone (`aufile` on an 8 kHz mono WAV: 1001 plays 440 Hz, 1002 plays 1000 Hz) and
`sndfile` dumps what it hears (`*-dec.wav`: the decoded audio it received) and what it sends (`*-enc.wav`).
The phones only know the PBX's relay address, so a dump in which the OTHER phone's tone dominates (Goertzel:
far above the phone's own tone and the noise floor) proves media crossed the relay both ways. A hang-up on
one side must end both legs, and the PBX must log the end and write a CDR.

Waits are on events (registration lines, ctrl_tcp events, the dumps reaching a length, log lines), each
with a timeout; nothing sleeps a fixed time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.audio import assert_hears, read_wav
from tests.e2e.baresip import TonePhones
from tests.e2e.test_calls_sipp import CallPbx, launch_pbx

pytestmark = pytest.mark.e2e

CALLER_TONE = 440.0
CALLEE_TONE = 1000.0
HEARD_SECONDS = 2.5  # audio each phone must have heard before the hang-up
WAV_HEADER = 44
BYTES_PER_SECOND = 8000 * 2  # the dumps: 8 kHz, 16-bit mono (G.711 decoded)


def heard_dump(record_dir: Path) -> Path | None:
    """The WAV file of what the phone heard in its (only) call, once sndfile has created it."""
    found = sorted(record_dir.glob("*-dec.wav"))
    return found[-1] if found else None


def wait_heard(record_dir: Path, seconds: float, timeout: float = 20.0) -> Path:
    """Wait until the phone's dump holds `seconds` of received audio (its size grows as audio arrives)."""
    deadline = time.monotonic() + timeout
    size = 0
    for _ in range(int(timeout / 0.05) + 1):
        dump = heard_dump(record_dir)
        size = dump.stat().st_size if dump is not None else 0
        if dump is not None and (size - WAV_HEADER) / BYTES_PER_SECOND >= seconds:
            return dump
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)  # polling the dump's size for an event: enough audio heard
    raise AssertionError(f"{record_dir}: only {size} bytes of heard audio after {timeout} s")


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[CallPbx]:
    started = launch_pbx(tmp_path / "pbx")
    yield started
    started.process.stop()


def test_two_baresip_phones_hear_each_other_through_the_relay(pbx, tmp_path):
    phones = TonePhones(tmp_path, pbx.sip, seconds=30.0)
    try:
        caller = phones.add("1001", CALLER_TONE)
        callee = phones.add("1002", CALLEE_TONE, "answermode=auto")
        phones.wait_registered()
        pbx.wait_for(r"Registered 1001@default at ")
        pbx.wait_for(r"Registered 1002@default at ")
        caller_ctl, callee_ctl = caller.control(), callee.control()

        assert caller_ctl.dial(f"sip:1002@127.0.0.1:{pbx.sip}").get("ok"), caller.output[-3000:]
        caller_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        callee_ctl.wait_event("CALL_ESTABLISHED", timeout=15)

        wait_heard(tmp_path / "heard_by_1001", HEARD_SECONDS)
        wait_heard(tmp_path / "heard_by_1002", HEARD_SECONDS)

        # The callee hangs up: both legs end, the PBX logs it and writes the CDR.
        assert callee_ctl.hangup().get("ok"), callee.output[-3000:]
        callee_ctl.wait_event("CALL_CLOSED", timeout=10)
        caller_ctl.wait_event("CALL_CLOSED", timeout=10)
        call_id = pbx.ended(200, "normal")
        pbx.wait_for(rf"Call {re.escape(call_id)} ended: .*, 1001@default -> 1002 answered by 1002")
        cdr = pbx.wait_cdr(call_id)
        assert (cdr["caller"], cdr["dialed"], cdr["answered_by"]) == ("1001", "1002", "1002"), cdr
        assert cdr["status"] == 200, cdr
        assert (cdr["cause"], cdr["hangup_by"]) == ("normal", "callee"), cdr
        assert cdr["end"] - cdr["answer"] >= HEARD_SECONDS, cdr
    finally:
        phones.stop()  # closes the dumps (their WAV headers get their final length)

    heard_by_caller = read_wav(heard_dump(tmp_path / "heard_by_1001"))
    heard_by_callee = read_wav(heard_dump(tmp_path / "heard_by_1002"))
    for heard in (heard_by_caller, heard_by_callee):
        assert heard.rate == 8000 and heard.seconds >= HEARD_SECONDS, heard.seconds
    assert_hears(heard_by_caller, CALLEE_TONE, CALLER_TONE, label="1001 hears 1002")
    assert_hears(heard_by_callee, CALLER_TONE, CALLEE_TONE, label="1002 hears 1001")
