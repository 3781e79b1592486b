"""INVITE sessions end to end: `pbx.sip.session_uas` on a real reactor and UDP socket against SIPp as UAC.

`session_uas_driver.py` runs a real `SipStack` + `TransportManager` on a free loopback port and answers with
`InviteAcceptor`/`UasSession`. SIPp (`scenarios/session_uac_timer.xml`) calls it with a session timer,
withholds its ACK so the 200 must be retransmitted (RFC 3261 13.3.1.4), checks Session-Expires and
Require: timer in the 200 (RFC 4028 9), answers the driver's re-INVITE refresh, and hangs up with BYE.
Waits are on process exits and output lines, each with a timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.harness import PbxProcess, free_port, run_sipp

HERE = Path(__file__).parent
pytestmark = pytest.mark.e2e


class DriverProcess(PbxProcess):
    """The session driver in a subprocess, its stdout collected line by line (PbxProcess's waiting)."""

    def __init__(self, port: int, limit: float) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        cmd = [sys.executable, str(HERE / "session_uas_driver.py"), str(port), str(limit)]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


def _received_2xx_times(message_log: str) -> list[datetime]:
    """When SIPp received each 200 OK to the INVITE (CSeq 1), from its `-trace_msg` file."""
    times = []
    for block in message_log.split("-" * 47)[1:]:
        stamp, _, rest = block.partition("\n")
        if "message received" in rest and "SIP/2.0 200 OK" in rest and re.search(r"CSeq: 1 INVITE", rest):
            times.append(datetime.strptime(stamp.strip()[:26], "%Y-%m-%d %H:%M:%S.%f"))
    return times


def test_uas_session_against_sipp(tmp_path: Path) -> None:
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not installed")
    port = free_port(tcp=False)
    driver = DriverProcess(port, limit=30)
    try:
        driver.wait_for(r"^READY$", timeout=30)
        messages, errors = tmp_path / "messages.log", tmp_path / "errors.log"
        sipp_port, media_port = free_port(tcp=False), free_port(tcp=False)
        result = run_sipp(
            [
                f"127.0.0.1:{port}",
                "-sf", str(HERE / "scenarios" / "session_uac_timer.xml"),
                "-i", "127.0.0.1", "-p", str(sipp_port), "-mp", str(media_port),
                "-m", "1", "-timeout", "20s", "-timeout_error",
                "-trace_msg", "-message_file", str(messages),
                "-trace_err", "-error_file", str(errors),
            ],
            timeout=40,
        )  # fmt: skip
        error_text = errors.read_text() if errors.exists() else ""
        assert result.returncode == 0, f"SIPp failed:\n{error_text}\n{driver.output}"
        driver.wait_for(r"^TERMINATED bye received$", timeout=10)
        assert driver.proc.wait(15) == 0, driver.output
        lines = driver.lines
        assert lines[:4] == ["READY", "INVITE", "CONFIRMED", "REINVITE 200"], driver.output
        # SIPp held its ACK back 1.2 s: the 200 came at 0 and again at T1 (0.5 s), RFC 3261 13.3.1.4.
        times = _received_2xx_times(messages.read_text())
        assert len(times) >= 2, messages.read_text()[-3000:]
        gap = (times[1] - times[0]).total_seconds()
        assert 0.35 <= gap <= 0.9, gap
    finally:
        driver.stop()
