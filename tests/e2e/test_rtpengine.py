"""The PBX with `[media] relay = "rtpengine"`: Debian's rtpengine (userspace forwarding, no kernel module)
relays the media of a phone-to-phone call, and the PBX's own media (voicemail here) keeps the built-in relay.

rtpengine runs as a subprocess of the test (`--table=-1`, its own ng port and RTP port range on 127.0.0.1).
Two baresip phones call each other through the PBX, each playing its own tone and dumping what it hears
(as in `test_calls_baresip`): each must hear the other's tone, rtpengine's `query` must show both parties
on its ports with packets relayed, and the PBX's hang-up must delete the call there. A call nobody answers
goes on to 1002's voicemail: the rtpengine call is deleted, the caller hears the greeting and leaves a
message holding its tone, all through the built-in relay.

Waits are on events (log lines, ctrl_tcp events, dump sizes) with timeouts; nothing sleeps a fixed time.
"""

from __future__ import annotations

import os
import re
import shutil
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
from tests.e2e.baresip import TonePhones
from tests.e2e.harness import PbxProcess, free_port, write_config
from tests.e2e.test_calls_baresip import BYTES_PER_SECOND, WAV_HEADER, heard_dump, wait_heard
from tests.e2e.test_calls_sipp import DEMO_DIALPLAN, CallPbx, rtp_range

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists("/usr/bin/rtpengine"), reason="rtpengine-daemon not installed"),
]

CALLER_TONE = 440.0
CALLEE_TONE = 1000.0
HEARD_SECONDS = 2.0

# 600: ring 1002 for 2 s, then its voicemail (the demo's path for an unanswered call, shorter).
DIALPLAN = (
    '{% if call.dialed == "600" %}\ndial 1002 timeout=2\nvoicemail 1002\nhangup\n'
    "{% else %}\n" + DEMO_DIALPLAN + "\n{% endif %}\n"
)
MAILBOX = """
[voicemail]
min_message_seconds = 1
silence_seconds = 10

[tenants.default.mailboxes.1002]
pin = "4321"
max_message_seconds = 20
"""


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
            while time.monotonic() < deadline and self.process.poll() is None:
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
        raise AssertionError(f"no answer from rtpengine to {command} (exit code {self.process.poll()})")

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


def _start_rtpengine(tmp_path: Path, attempt: int) -> Rtpengine:
    ng = free_port(udp=True, tcp=False)
    low, high = rtp_range(40)
    log = tmp_path / f"rtpengine-{attempt}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                "/usr/bin/rtpengine", "--config-file=none",
                "--table=-1", "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{ng}",
                "--foreground", "--log-stderr", f"--port-min={low}", f"--port-max={high}", "--num-threads=1",
                "--delete-delay=0", "--log-level=6", f"--pidfile={tmp_path / f'rtpengine-{attempt}.pid'}",
            ],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Rtpengine(process, ng, (low, high), log)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def rtpengine(tmp_path: Path) -> Iterator[Rtpengine]:
    """rtpengine on a free ng port, answering ping.

    The ng port comes from the kernel's ephemeral range and is free when picked, but another worker's
    process may bind it before rtpengine does (CI runs 4 workers): rtpengine then exits at once (255).
    Such an early exit is retried on fresh ports, up to three times; a failure shows rtpengine's log.
    """
    logs = []
    for attempt in range(3):
        engine = _start_rtpengine(tmp_path, attempt)
        try:
            answer = engine.request({"command": "ping"}, timeout=10.0)
        except AssertionError:
            _stop(engine.process)
            logs.append(f"exit {engine.process.returncode}: {engine.log.read_text(errors='replace')[-2000:]}")
            if engine.process.returncode in (None, -15):  # it was running and did not answer: no retry
                break
            continue
        try:
            assert answer[b"result"] == b"pong", engine.log.read_text()
            yield engine
        finally:
            _stop(engine.process)
        return
    raise AssertionError("rtpengine did not start:\n" + "\n".join(logs))


@pytest.fixture
def pbx(tmp_path: Path, rtpengine: Rtpengine) -> Iterator[CallPbx]:
    directory = tmp_path / "pbx"
    directory.mkdir()
    low, high = rtp_range()
    media = (
        f"[media]\nrtp_port_min = {low}\nrtp_port_max = {high}\n"
        f'relay = "rtpengine"\nrtpengine = "127.0.0.1:{rtpengine.ng}"\n\n'
    )
    ports = write_config(directory, ipv6=False, extra=media + '[registrar]\nkeepalive = "crlf"\n\n' + MAILBOX)
    started = CallPbx(PbxProcess(ports["path"]), ports, directory, (low, high))
    started.write_dialplan(DIALPLAN)
    try:
        started.process.wait_ready(ports["listeners"])
        started.wait_for(r"Media: rtpengine at 127\.0\.0\.1:\d+ answers")
    except BaseException:
        started.process.stop()
        raise
    yield started
    started.process.stop()
    output = started.process.output
    assert "Traceback" not in output and "Unhandled" not in output, output[-3000:]
    assert "rtpengine update failed" not in output and "rtpengine delete failed" not in output, output[-3000:]


def sent_seconds(record_dir: Path) -> float:
    """Seconds of audio the phone has sent in its call so far (its `*-enc.wav` dump)."""
    found = sorted(record_dir.glob("*-enc.wav"))
    return (found[-1].stat().st_size - WAV_HEADER) / BYTES_PER_SECOND if found else 0.0


def test_phones_talk_through_rtpengine_and_the_ivr_keeps_the_builtin_relay(pbx, rtpengine, tmp_path):
    phones = TonePhones(tmp_path, pbx.sip)
    try:
        caller = phones.add("1001", CALLER_TONE)
        callee = phones.add("1002", CALLEE_TONE)
        phones.wait_registered()
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
        phones.stop()  # closes the dumps (their WAV headers get their final length); fresh ones for call 2
        heard_by_caller = read_wav(heard_dump(tmp_path / "heard_by_1001"))
        heard_by_callee = read_wav(heard_dump(tmp_path / "heard_by_1002"))
        assert_hears(heard_by_caller, CALLEE_TONE, CALLER_TONE, label="1001 hears 1002 through rtpengine")
        assert_hears(heard_by_callee, CALLER_TONE, CALLEE_TONE, label="1002 hears 1001 through rtpengine")
        shutil.rmtree(tmp_path / "heard_by_1001")
        shutil.rmtree(tmp_path / "heard_by_1002")

        # 2. Nobody answers 1002: its voicemail (the PBX's own media) takes the call, on the built-in relay.
        caller = phones.add("1001", CALLER_TONE)
        callee = phones.add("1002", CALLEE_TONE)  # rings, never answers
        phones.wait_registered()
        caller_ctl, callee_ctl = caller.control(), callee.control()
        assert caller_ctl.dial(f"sip:600@127.0.0.1:{pbx.sip}").get("ok"), caller.output[-3000:]
        callee_ctl.wait_event("CALL_INCOMING", timeout=15)
        caller_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        assert rtpengine.calls() == []  # the unanswered dial's call was deleted on rtpengine
        pbx.wait_for(r"voicemail default/1002: recording", timeout=30)  # after the greeting and the beep
        wait_heard(tmp_path / "heard_by_1001", 1.0)  # the greeting (the PBX sends nothing while it records)
        sent = sent_seconds(tmp_path / "heard_by_1001")
        wait_until(lambda: sent_seconds(tmp_path / "heard_by_1001") > sent + 2.5, 10.0, "2.5 s more sent")
        assert caller_ctl.hangup().get("ok"), caller.output[-3000:]
        (line,) = pbx.wait_for(r"voicemail default/1002: message \S+ saved \((\d+\.\d) s, closed\)")
    finally:
        phones.stop()

    (message,) = sorted((pbx.directory / "data" / "voicemail" / "default" / "1002").glob("*.wav"))
    recorded = read_wav(message)
    assert recorded.seconds >= 1.5, (recorded.seconds, line)
    assert_hears(recorded, CALLER_TONE, CALLEE_TONE, label="the message holds 1001's tone")
    deletes = re.findall(r"Received command 'delete'", rtpengine.log.read_text())
    assert len(deletes) == 2, rtpengine.log.read_text()[-3000:]
