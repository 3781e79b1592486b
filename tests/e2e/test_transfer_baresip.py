"""Blind transfer between real phones: baresip 1001 calls baresip 1002, then transfers it (its `transfer`
command: a REFER) to baresip 1003; 1002 and 1003 then hear each other through the PBX's relay.

Each phone plays its own tone (1001: 440 Hz, 1002: 1000 Hz, 1003: 1500 Hz) and `sndfile` dumps what it hears.
1002's call goes on across the transfer (the PBX re-INVITEs it onto the new call's relay leg), so the part of
its dump after the transfer must hold 1003's tone; 1003's dump must hold 1002's. 1001 leaves (the PBX sends
it NOTIFY 200 then BYE), and the CDRs show the new call routed as 1001 (`1001 -> 1003`).

Transfer by keys: the same with 1001 pressing `## 1003 #` (RFC 4733 telephone-events, baresip's `sndcode`)
instead of its transfer command (the demo dialplan's `dial ... transfer=##`).

Waits are on events (registrations, ctrl_tcp events, dumps reaching a length, log lines) with timeouts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.audio import assert_hears, read_wav
from tests.e2e.baresip import Account, Baresip, write_tone_wav
from tests.e2e.test_calls_baresip import BYTES_PER_SECOND, WAV_HEADER, heard_dump, wait_heard
from tests.e2e.test_calls_sipp import CallPbx, launch_pbx
from tests.e2e.test_offer_answer_sipp import assert_no_traceback

pytestmark = pytest.mark.e2e

TONES = {"1001": 440.0, "1002": 1000.0, "1003": 1500.0}
HEARD_SECONDS = 2.0


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[CallPbx]:
    started = launch_pbx(tmp_path / "pbx")
    yield started
    started.process.stop()


def dump_seconds(record_dir: Path) -> float:
    dump = heard_dump(record_dir)
    return 0.0 if dump is None else max(0.0, (dump.stat().st_size - WAV_HEADER) / BYTES_PER_SECOND)


def wait_more_heard(record_dir: Path, start: float, seconds: float, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while dump_seconds(record_dir) < start + seconds:
        if time.monotonic() > deadline:
            raise AssertionError(f"{record_dir}: no {seconds} s heard after {start:.1f} s")
        time.sleep(0.05)  # polling the dump's size for an event: enough audio heard


def test_baresip_blind_transfer_connects_the_other_two(pbx, tmp_path):
    phones: dict[str, Baresip] = {}

    def phone(user: str, *params: str) -> Baresip:
        account = Account(user, f"pass{user}", "127.0.0.1", pbx.sip, params=params)
        phones[user] = Baresip(
            tmp_path / f"baresip_{user}",
            [account],
            audio_source=write_tone_wav(tmp_path / f"tone_{user}.wav", TONES[user], seconds=40.0),
            record_dir=tmp_path / f"heard_by_{user}",
            ctrl=True,
        )
        return phones[user]

    try:
        phone("1001")
        phone("1002", "answermode=auto")
        phone("1003", "answermode=auto")
        for user, p in phones.items():
            p.wait_registered(timeout=15)
            pbx.wait_for(rf"Registered {user}@default at ")
        alice, bob, carol = (phones[u].control() for u in ("1001", "1002", "1003"))

        assert alice.dial(f"sip:1002@127.0.0.1:{pbx.sip}").get("ok"), phones["1001"].output[-3000:]
        alice.wait_event("CALL_ESTABLISHED", timeout=15)
        bob.wait_event("CALL_ESTABLISHED", timeout=15)
        wait_heard(tmp_path / "heard_by_1002", 1.0)
        before = dump_seconds(tmp_path / "heard_by_1002")

        reply = alice.command("transfer", f"sip:1003@127.0.0.1:{pbx.sip}")
        assert reply.get("ok"), (reply, phones["1001"].output[-3000:])
        carol.wait_event("CALL_ESTABLISHED", timeout=15)
        alice.wait_event("CALL_CLOSED", timeout=15)  # the transferor leaves
        pbx.wait_for(r"transfers to 1003 \(blind\)")
        wait_heard(tmp_path / "heard_by_1003", HEARD_SECONDS)
        wait_more_heard(tmp_path / "heard_by_1002", before, HEARD_SECONDS + 1.5)

        assert carol.hangup().get("ok")
        bob.wait_event("CALL_CLOSED", timeout=10)
        pbx.wait_for(r"Call \S+ ended: .*1001@default -> 1003 answered by 1003")
        pbx.wait_for(r"Call \S+ ended: transferred .*1001@default -> 1002")
    finally:
        for p in phones.values():
            p.stop()

    heard_by_bob = read_wav(heard_dump(tmp_path / "heard_by_1002"))
    heard_by_carol = read_wav(heard_dump(tmp_path / "heard_by_1003"))
    # 1002 heard 1001 before the transfer and 1003 after it (skipping the switch-over: music, ringback).
    assert_hears(heard_by_bob.window(0.2, before), TONES["1001"], TONES["1002"], label="1002 hears 1001")
    after = heard_by_bob.window(heard_by_bob.seconds - HEARD_SECONDS, heard_by_bob.seconds)
    assert_hears(after, TONES["1003"], TONES["1002"], label="1002 hears 1003 after the transfer")
    assert_hears(heard_by_carol.window(0.5), TONES["1002"], TONES["1003"], label="1003 hears 1002")
    assert_no_traceback(pbx)


def test_baresip_transfers_by_keys_sent_as_rfc4733_events(pbx, tmp_path):
    phones: dict[str, Baresip] = {}
    try:
        for user in ("1001", "1002", "1003"):
            params = () if user == "1001" else ("answermode=auto",)
            account = Account(user, f"pass{user}", "127.0.0.1", pbx.sip, params=params)
            phones[user] = Baresip(
                tmp_path / f"baresip_{user}",
                [account],
                audio_source=write_tone_wav(tmp_path / f"tone_{user}.wav", TONES[user], seconds=40.0),
                record_dir=tmp_path / f"heard_by_{user}",
                ctrl=True,
            )
        for user, p in phones.items():
            p.wait_registered(timeout=15)
            pbx.wait_for(rf"Registered {user}@default at ")
        alice, bob, carol = (phones[u].control() for u in ("1001", "1002", "1003"))

        assert alice.dial(f"sip:1002@127.0.0.1:{pbx.sip}").get("ok"), phones["1001"].output[-3000:]
        alice.wait_event("CALL_ESTABLISHED", timeout=15)
        bob.wait_event("CALL_ESTABLISHED", timeout=15)
        wait_heard(tmp_path / "heard_by_1002", 0.5)
        for count, key in enumerate("##1003#", start=1):
            assert alice.send_dtmf(key).get("ok"), phones["1001"].output[-3000:]
            phones["1001"].wait_for(r"send DTMF digit end: ", count=count)  # one key after the other
        pbx.wait_for(r"1001 transfers to 1003 \(keys\)")
        assert "INFO sip:" not in pbx.process.output  # the keys came as RFC 4733 events on the relay
        carol.wait_event("CALL_ESTABLISHED", timeout=15)
        alice.wait_event("CALL_CLOSED", timeout=15)  # the party who keyed leaves
        wait_heard(tmp_path / "heard_by_1003", HEARD_SECONDS)
        assert carol.hangup().get("ok")
        bob.wait_event("CALL_CLOSED", timeout=10)
        pbx.wait_for(r"Call \S+ ended: .*1001@default -> 1003 answered by 1003")
    finally:
        for p in phones.values():
            p.stop()

    heard_by_carol = read_wav(heard_dump(tmp_path / "heard_by_1003"))
    assert_hears(heard_by_carol.window(0.5), TONES["1002"], TONES["1003"], label="1003 hears 1002")
    assert_no_traceback(pbx)
