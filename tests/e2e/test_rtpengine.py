"""The PBX with `[media] relay = "rtpengine"`: Debian's rtpengine (userspace forwarding, no kernel module)
relays the media of a phone-to-phone call, and the PBX's own media (IVR, voicemail) keeps the built-in relay.

rtpengine runs as a subprocess of the test (`--table=-1`, its own ng port and RTP port range on 127.0.0.1).
Two baresip phones call each other through the PBX, each playing its own tone and dumping what it hears
(as in `test_calls_baresip`): each must hear the other's tone, the SDP each got must point at rtpengine's
ports, and rtpengine's `query` must show the call with packets relayed. A call nobody answers goes on to the
dialplan's own media (a beep played by the PBX) and the caller hears it through the built-in relay.

Waits are on events (log lines, ctrl_tcp events, dump sizes) with timeouts; nothing sleeps a fixed time.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pbx.media.bencode import decode, encode
from tests.e2e.audio import assert_hears, read_wav
from tests.e2e.baresip import Account, Baresip, write_tone_wav
from tests.e2e.harness import PbxProcess, free_port, write_config
from tests.e2e.test_calls_baresip import heard_dump, wait_heard
from tests.e2e.test_calls_sipp import DEMO_DIALPLAN, CallPbx, rtp_range

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists("/usr/bin/rtpengine"), reason="rtpengine-daemon not installed"),
]

CALLER_TONE = 440.0
CALLEE_TONE = 1000.0
BEEP = 1000.0
HEARD_SECONDS = 2.0

# 600: ring 1002 for 2 s, then the PBX answers and beeps (the path to voicemail, without its prompts).
DIALPLAN = (
    '{% if call.dialed == "600" %}\ndial 1002 timeout=2\nanswer\nplay tone:beep silence:100 tone:beep '
    "silence:100 tone:beep silence:100 tone:beep silence:100 tone:beep silence:100 tone:beep\nhangup\n"
    "{% else %}\n" + DEMO_DIALPLAN + "\n{% endif %}\n"
)


@dataclass
class Rtpengine:
    process: subprocess.Popen[bytes]
    ng: int
    ports: tuple[int, int]
    log: Path

    def request(self, command: dict[str, Any], timeout: float = 3.0) -> dict[bytes, Any]:
        """One ng request, answered by cookie (retransmitted every 0.5 s until `timeout`)."""
        cookie = os.urandom(6).hex().encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                s.sendto(cookie + b" " + encode(command), ("127.0.0.1", self.ng))
                try:
                    data = s.recv(65536)
                except TimeoutError:
                    continue
                got, _, body = data.partition(b" ")
                if got == cookie:
                    answer = decode(body)
                    assert isinstance(answer, dict)
                    return answer
        raise AssertionError(f"no answer from rtpengine to {command}")

    def calls(self) -> list[bytes]:
        return list(self.request({"command": "list"}).get(b"calls", []))


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)  # polling a condition with a deadline
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def rtpengine(tmp_path: Path) -> Iterator[Rtpengine]:
    ng = free_port(udp=True, tcp=False)
    low, high = rtp_range(40)
    log = tmp_path / "rtpengine.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                "/usr/bin/rtpengine", "--table=-1", "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{ng}",
                "--foreground", "--log-stderr", f"--port-min={low}", f"--port-max={high}", "--num-threads=1",
                "--delete-delay=0", "--log-level=6", f"--pidfile={tmp_path / 'rtpengine.pid'}",
            ],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    engine = Rtpengine(process, ng, (low, high), log)
    try:
        assert engine.request({"command": "ping"}, timeout=10.0)[b"result"] == b"pong", log.read_text()
        yield engine
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def pbx(tmp_path: Path, rtpengine: Rtpengine) -> Iterator[CallPbx]:
    directory = tmp_path / "pbx"
    directory.mkdir()
    low, high = rtp_range()
    media = (
        f"[media]\nrtp_port_min = {low}\nrtp_port_max = {high}\n"
        f'relay = "rtpengine"\nrtpengine = "127.0.0.1:{rtpengine.ng}"\n\n'
    )
    ports = write_config(directory, ipv6=False, extra=media + '[registrar]\nkeepalive = "crlf"\n\n')
    started = CallPbx(PbxProcess(ports["path"]), ports, directory, (low, high))
    started.write_dialplan(DIALPLAN)
    try:
        started.process.wait_ready(ports["listeners"])
        started.wait_for(r"Media: bridged calls on rtpengine at 127\.0\.0\.1:")
    except BaseException:
        started.process.stop()
        raise
    yield started
    started.process.stop()
    output = started.process.output
    assert "Traceback" not in output and "Unhandled" not in output, output[-3000:]
    assert "rtpengine update failed" not in output and "rtpengine delete failed" not in output, output[-3000:]


def _media_port(sdp: str) -> int:
    match = re.search(r"m=audio (\d+) ", sdp)
    assert match is not None, sdp
    return int(match.group(1))


def test_phones_talk_through_rtpengine_and_the_ivr_keeps_the_builtin_relay(pbx, rtpengine, tmp_path):
    phones: list[Baresip] = []

    def phone(user: str, tone: float, *params: str) -> Baresip:
        account = Account(user, f"pass{user}", "127.0.0.1", pbx.sip, params=params)
        started = Baresip(
            tmp_path / f"baresip_{user}",
            [account],
            audio_source=write_tone_wav(tmp_path / f"tone_{user}.wav", tone, seconds=60.0),
            record_dir=tmp_path / f"heard_by_{user}",
            ctrl=True,
        )
        phones.append(started)
        return started

    try:
        caller = phone("1001", CALLER_TONE)
        callee = phone("1002", CALLEE_TONE)
        for p in phones:
            p.wait_registered(timeout=15)
        pbx.wait_for(r"Registered 1001@default at ")
        pbx.wait_for(r"Registered 1002@default at ")
        caller_ctl, callee_ctl = caller.control(), callee.control()

        # 1. Phone to phone: the media goes through rtpengine.
        assert caller_ctl.dial(f"sip:1002@127.0.0.1:{pbx.sip}").get("ok"), caller.output[-3000:]
        callee_ctl.wait_event("CALL_INCOMING", timeout=15)
        assert callee_ctl.command("accept").get("ok"), callee.output[-3000:]
        caller_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        callee_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        wait_heard(tmp_path / "heard_by_1001", HEARD_SECONDS)
        wait_heard(tmp_path / "heard_by_1002", HEARD_SECONDS)

        calls = rtpengine.calls()
        assert len(calls) == 1, calls
        answer = rtpengine.request({"command": "query", "call-id": calls[0]})
        tags = answer[b"tags"]
        low, high = rtpengine.ports
        for tag in (b"a", b"b"):
            rtp = tags[tag][b"medias"][0][b"streams"][0]
            assert low <= rtp[b"local port"] <= high, rtp
            assert rtp[b"stats"][b"packets"] > 50, (tag, rtp)  # > 1 s of 20 ms packets from each phone
        assert answer[b"totals"][b"RTP"][b"packets"] > 100, answer[b"totals"]

        assert callee_ctl.hangup().get("ok"), callee.output[-3000:]
        callee_ctl.wait_event("CALL_CLOSED", timeout=10)
        caller_ctl.wait_event("CALL_CLOSED", timeout=10)
        call_id = pbx.ended(200, "normal")
        pbx.wait_for(rf"Call {re.escape(call_id)} ended: .*answered by 1002")
        wait_until(lambda: rtpengine.calls() == [], 10.0, "the PBX's delete")
        deletes = re.findall(r"Received command 'delete'", rtpengine.log.read_text())
        assert len(deletes) == 1, rtpengine.log.read_text()[-3000:]

        # 2. Nobody answers 1002: the PBX answers and beeps, through its own relay (not rtpengine).
        for p in phones:
            p.stop()  # fresh dumps for the second call
        phones.clear()
        caller = phone("1001", CALLER_TONE)
        callee = phone("1002", CALLEE_TONE)  # rings, never answers
        for p in phones:
            p.wait_registered(timeout=15)
        caller_ctl, callee_ctl = caller.control(), callee.control()
        assert caller_ctl.dial(f"sip:600@127.0.0.1:{pbx.sip}").get("ok"), caller.output[-3000:]
        callee_ctl.wait_event("CALL_INCOMING", timeout=15)
        caller_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        wait_heard(tmp_path / "heard_by_1001", 2.5)
        assert rtpengine.calls() == []  # the unanswered dial's call was deleted on rtpengine
        caller_ctl.wait_event("CALL_CLOSED", timeout=15)  # the dialplan's hangup after the beeps
        pbx.ended(200)
    finally:
        for p in phones:
            p.stop()

    heard = read_wav(heard_dump(tmp_path / "heard_by_1001"))
    assert_hears(heard, BEEP, CALLER_TONE, label="1001 hears the PBX's beeps", min_ratio=20.0)
    low, high = pbx.rtp
    deletes = re.findall(r"Received command 'delete'", rtpengine.log.read_text())
    assert len(deletes) == 2, rtpengine.log.read_text()[-3000:]
