"""Call park with two real phones (docs/features.md): baresip 1001 dials the park code 700 and is parked on
orbit 701 (it hears the orbit, then music); baresip 1002 dials 701 and retrieves it. After the retrieval each
phone hears the other's tone (Goertzel on what each phone dumped): the PBX joined the two calls' media.

Each phone plays its own tone (1001: 440 Hz, 1002: 1000 Hz). Waits are on events (log lines, ctrl_tcp
events, the dumps growing), each with a timeout.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.audio import assert_hears, read_wav
from tests.e2e.baresip import TonePhones
from tests.e2e.harness import REPO
from tests.e2e.test_calls_baresip import BYTES_PER_SECOND, WAV_HEADER, heard_dump, wait_heard
from tests.e2e.test_calls_sipp import launch_pbx

pytestmark = pytest.mark.e2e

PARKED_TONE = 440.0
RETRIEVER_TONE = 1000.0
HEARD_SECONDS = 2.0
DEMO = (REPO / "dialplans" / "default" / "main.j2").read_text()
FEATURES = "[tenants.default.features]\npark_timeout = 120\n\n"


def dumped_seconds(record_dir: Path) -> float:
    dump = heard_dump(record_dir)
    return 0.0 if dump is None else (dump.stat().st_size - WAV_HEADER) / BYTES_PER_SECOND


def wait_more(record_dir: Path, since: float, seconds: float, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while dumped_seconds(record_dir) < since + seconds:
        assert time.monotonic() < deadline, f"{record_dir}: the dump stopped growing"
        time.sleep(0.05)  # polling the dump's size for an event: more audio heard


def test_park_and_retrieve_with_audio_both_ways(tmp_path: Path) -> None:
    pbx = launch_pbx(tmp_path / "pbx", DEMO, FEATURES, keepalive="crlf")
    shutil.copy(
        REPO / "dialplans" / "default" / "park-return.j2", pbx.dialplan_path.parent / "park-return.j2"
    )
    phones = TonePhones(tmp_path, pbx.sip)
    try:
        parked, retriever = phones.add("1001", PARKED_TONE), phones.add("1002", RETRIEVER_TONE)
        phones.wait_registered()
        pbx.wait_for(r"Registered 1001@default at ")
        pbx.wait_for(r"Registered 1002@default at ")
        parked_ctl, retriever_ctl = parked.control(), retriever.control()

        assert parked_ctl.dial(f"sip:700@127.0.0.1:{pbx.sip}").get("ok"), parked.output[-3000:]
        parked_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        pbx.wait_for(r"parked on default/701 by 1001")
        wait_heard(tmp_path / "heard_by_1001", 1.0)  # the announcement

        assert retriever_ctl.dial(f"sip:701@127.0.0.1:{pbx.sip}").get("ok"), retriever.output[-3000:]
        retriever_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        pbx.wait_for(r"retrieved from default/701 by call")
        joined_at = dumped_seconds(tmp_path / "heard_by_1001")
        wait_heard(tmp_path / "heard_by_1002", HEARD_SECONDS + 0.5)
        wait_more(tmp_path / "heard_by_1001", joined_at, HEARD_SECONDS + 0.5)

        assert retriever_ctl.hangup().get("ok"), retriever.output[-3000:]
        retriever_ctl.wait_event("CALL_CLOSED", timeout=10)
        parked_ctl.wait_event("CALL_CLOSED", timeout=10)  # the PBX hung up the parked call too
        pbx.wait_for(r"ended: .*1001@default -> 700")
        pbx.wait_for(r"ended: .*1002@default -> 701")
    finally:
        phones.stop()
        pbx.process.stop()

    heard_by_parked = read_wav(heard_dump(tmp_path / "heard_by_1001"))
    heard_by_retriever = read_wav(heard_dump(tmp_path / "heard_by_1002"))
    # What each phone heard in the last seconds before the hang-up: the other's tone.
    end = heard_by_parked.seconds
    assert_hears(
        heard_by_parked.window(end - HEARD_SECONDS, end - 0.3), RETRIEVER_TONE, PARKED_TONE, label="1001"
    )
    end = heard_by_retriever.seconds
    assert_hears(
        heard_by_retriever.window(end - HEARD_SECONDS, end - 0.3), PARKED_TONE, RETRIEVER_TONE, label="1002"
    )
