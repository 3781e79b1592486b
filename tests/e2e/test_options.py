"""OPTIONS answered 200 by `twistd pbx` to real peers: SIPp over UDP and TCP, openssl s_client over TLS."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from tests.e2e.harness import (
    executable,
    free_port,
    ipv6_loopback,
    options_request,
    run_sipp,
    udp_exchange,
)

SCENARIOS = Path(__file__).parent / "scenarios"
pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_options(pbx, tmp_path, transport):
    process, ports = pbx
    result = run_sipp(
        [
            f"127.0.0.1:{ports['sip']}",
            "-sf", str(SCENARIOS / "options_uac.xml"),
            "-t", transport,
            "-i", "127.0.0.1",
            "-p", str(free_port()),
            "-m", "20",
            "-r", "10",
            "-timeout", "30s",
            "-timeout_error",
            "-trace_err",
            "-error_file", str(tmp_path / "sipp_err.log"),
        ],
        cwd=tmp_path,
    )  # fmt: skip
    err = (tmp_path / "sipp_err.log").read_text() if (tmp_path / "sipp_err.log").exists() else ""
    assert result.returncode == 0, f"{result.stdout[-3000:]!r}\n{err[-3000:]}\n{process.output[-3000:]}"
    # --sip-trace is on in the test config: both directions are logged with the peer.
    process.wait_for(r"<-- UDP|<-- TCP")
    process.wait_for(r"--> UDP|--> TCP")


def test_tls_options_with_openssl_s_client(pbx):
    process, ports = pbx
    cert = ports["dir"] / "data" / "tls" / "dev-cert.pem"
    assert cert.exists(), "no development certificate generated"
    client = subprocess.Popen(
        [
            executable("openssl"), "s_client", "-connect", f"127.0.0.1:{ports['tls']}",
            "-CAfile", str(cert), "-verify_return_error", "-verify_hostname", "localhost",
            "-quiet", "-ign_eof",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    found = threading.Event()
    lines: list[bytes] = []

    def read() -> None:
        assert client.stdout is not None
        for line in client.stdout:
            lines.append(line)
            if line.startswith(b"SIP/2.0 200"):
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert client.stdin is not None
        client.stdin.write(options_request("127.0.0.1", ports["tls"], "TLS", 5061, "z9hG4bKtls1"))
        client.stdin.flush()
        assert found.wait(20), f"no 200 over TLS: {b''.join(lines)!r}\n{process.output[-3000:]}"
    finally:
        client.kill()
        client.wait(10)


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_udp_options(pbx):
    _, ports = pbx
    reply = udp_exchange("::1", ports["sip"], options_request("::1", ports["sip"], "UDP", 5999, "z9hG4bKv6"))
    assert reply is not None and reply.startswith(b"SIP/2.0 200"), reply


def test_rport_and_received_are_stamped(pbx):
    _, ports = pbx
    reply = udp_exchange(
        "127.0.0.1", ports["sip"], options_request("127.0.0.1", ports["sip"], "UDP", 1, "z9hG4bKrport")
    )
    assert reply is not None
    via = next(line for line in reply.split(b"\r\n") if line.startswith(b"Via:"))
    # RFC 3581 4: received is added even when it equals sent-by, and rport carries the source port.
    assert b"received=127.0.0.1" in via and b"rport=" in via and b"rport=1;" not in via, via
