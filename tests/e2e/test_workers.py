"""`twistd -n pbx --workers 2` (issue 17 item 3) end to end, on the tests' PostgreSQL and with SIPp.

One command starts a supervisor and two worker processes: worker I listens on the configured SIP port + I
and both answer OPTIONS; the supervisor writes the dispatcher list for Kamailio; a phone registered through
worker 0 is called through worker 1 (the shared store); a worker killed with `kill -9` is started again by
the supervisor; `SIGTERM` to the supervisor stops every worker (each drains) and then the supervisor.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import pytest

from tests.e2e.harness import PbxProcess, demo_extensions, free_port, options_request, udp_exchange
from tests.e2e.test_calls_sipp import DEMO_DIALPLAN, CallPbx, rtp_range, sipp  # noqa: F401 - fixture
from tests.store import postgres_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(postgres_server.unavailable() is not None, reason=postgres_server.unavailable() or ""),
]


def two_free_ports() -> int:
    """A port P with P and P + 1 free for UDP on the loopback."""
    for _ in range(100):
        port = free_port(tcp=False)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two free ports in a row")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_pids(process: PbxProcess) -> dict[int, int]:
    pids: dict[int, int] = {}
    for line in process.lines:
        match = re.search(r"PBX worker (\d+) started \(pid (\d+)\)", line)
        if match:
            pids[int(match.group(1))] = int(match.group(2))
    return pids


def write_config(tmp_path, base: int, low: int, high: int):
    """The workers' config: one UDP listener on `base`, the tests' PostgreSQL, the demo extensions."""
    (tmp_path / "dialplans" / "default").mkdir(parents=True)
    (tmp_path / "dialplans" / "default" / "main.j2").write_text(DEMO_DIALPLAN)
    config = tmp_path / "pbx.toml"
    config.write_text(
        '[pbx]\ndata_dir = "data"\n\n'
        f'[[sip.listen]]\ntransport = "udp"\nhost = "127.0.0.1"\nport = {base}\n\n'
        f'[store]\nurl = "{postgres_server.server().url()}"\n\n'
        f"[media]\nrtp_port_min = {low}\nrtp_port_max = {high}\n\n"
        '[registrar]\nkeepalive = "crlf"\n\n[calls]\ndrain_timeout = 10\n\n'
        '[tenants.default]\ndomain = "localhost"\naliases = ["127.0.0.1"]\n\n' + demo_extensions()
    )
    return config


def test_two_workers_share_registrations_restart_and_stop_together(sipp, tmp_path):  # noqa: F811
    base = two_free_ports()
    low, high = rtp_range(80)
    process = PbxProcess(write_config(tmp_path, base, low, high), ["--workers", "2"])
    try:
        process.wait_for(r"PBX ready: SIP on udp 127\.0\.0\.1:\d+; .*\(worker \d of 2\)", timeout=60, count=2)
        for index in (0, 1):
            process.wait_for(rf"PBX ready: SIP on udp 127\.0\.0\.1:{base + index}; .*\(worker {index} of 2\)")
        listed = (tmp_path / "data" / "dispatcher.list").read_text().splitlines()
        assert listed[1:] == [f"1 sip:127.0.0.1:{base}", f"1 sip:127.0.0.1:{base + 1}"]

        for index, port in enumerate((base, base + 1)):
            answer = udp_exchange(
                "127.0.0.1", port, options_request("127.0.0.1", port, "UDP", 9, f"z9hG4bKw{index}")
            )
            assert answer is not None and answer.startswith(b"SIP/2.0 200 "), answer

        rtp = (low, high)
        worker0 = CallPbx(process, {"sip": base}, tmp_path, rtp)
        worker1 = CallPbx(process, {"sip": base + 1}, tmp_path, rtp)
        port = sipp.register(worker0, "1002")
        process.wait_for(r"Registrations of 1002@default changed on another node: 1 contact\(s\)")
        uas = sipp.uas("uas", "call_uas.xml", "1002", port)
        uac = sipp.uac(worker1, "call_uac.xml", "1002")
        sipp.check(worker1, uac, uas)
        worker1.ended(200, "normal")

        # A worker that dies is started again (and logged); the other keeps running.
        pids = worker_pids(process)
        os.kill(pids[1], signal.SIGKILL)
        process.wait_for(
            rf"PBX worker 1 \(pid {pids[1]}\) exited after \d+ s: signal 9; restarting it in 1 s"
        )
        process.wait_for(rf"PBX ready: SIP on udp 127\.0\.0\.1:{base + 1}; .*\(worker 1 of 2\)", count=2)
        answer = udp_exchange(
            "127.0.0.1", base + 1, options_request("127.0.0.1", base + 1, "UDP", 9, "z9hG4bKw9")
        )
        assert answer is not None and answer.startswith(b"SIP/2.0 200 "), answer
        pids = worker_pids(process)
        assert alive(pids[0]) and alive(pids[1])
    finally:
        code = process.stop(signal.SIGTERM, timeout=40)
    assert code == -signal.SIGTERM, process.output[-4000:]  # twistd ends by the signal it was stopped with
    assert not alive(pids[0]) and not alive(pids[1])
    assert len(process.wait_for(r"PBX worker \d \(pid \d+\) stopped: signal 15", count=2)) == 2
    assert "PBX supervisor: every worker has stopped" in process.output
    assert "Traceback" not in process.output


def test_workers_stop_when_their_supervisor_is_killed(tmp_path):
    """`kill -9` of the supervisor leaves no orphan: each worker sees its parent gone and stops."""
    low, high = rtp_range(40)
    process = PbxProcess(write_config(tmp_path, two_free_ports(), low, high), ["--workers", "2"])
    try:
        process.wait_for(r"PBX ready: .*\(worker \d of 2\)", timeout=60, count=2)
        pids = worker_pids(process)
        os.kill(process.proc.pid, signal.SIGKILL)
        process.wait_for(rf"PBX supervisor \(pid {process.proc.pid}\) is gone: this worker stops", count=2)
        for pid in pids.values():
            deadline = time.monotonic() + 20
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # polling for an event: the worker's exit (not our child: no wait())
            assert not alive(pid), process.output[-3000:]
    finally:
        process.stop(signal.SIGKILL)
        for pid in worker_pids(process).values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
