"""Run `twistd -n pbx` as a subprocess on loopback, with free ports, and drive real peers against it.

Everything waits on events (a log line, a process exit) with a timeout; nothing sleeps a fixed time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def executable(name: str) -> str:
    """A console script of this environment (the venv's twistd), else one on PATH."""
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(name)
    return found


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


_HANDED_OUT: set[int] = set()  # ports this test process gave out already: never twice (the kernel may)


PORT_BLOCKS = range(14000, 20000, 1000)
"""Where each pytest-xdist worker picks its listening ports first (`free_port`): one block of 1,000 per
worker (gw0 the first; 250 picks each, see `free_port`), below the kernel's ephemeral range (32768-60999 by
default) and above the PBX's RTP ports in use in short tests (the default range starts at 10000 and hands
pairs out from its start); tests/e2e's own RTP ranges (`rtp_range`) are taken from 20000-32000."""


def _port_block() -> range:
    """This test process's block of ports (`PORT_BLOCKS`), or none for a worker beyond them.

    A port picked from the ephemeral range (a bind to port 0, then closed) may be handed by the kernel to
    another process's socket (SIPp, a client, another worker's connection) before the PBX binds it, which
    then fails with "Address already in use" (seen once in CI, session 13). Below that range only explicit
    binds land, and no two workers share a block."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    if index >= len(PORT_BLOCKS):
        return range(0)
    start = PORT_BLOCKS[index]
    return range(start, start + PORT_BLOCKS.step)


def free_port(host: str = "127.0.0.1", *, udp: bool = True, tcp: bool = True) -> int:
    """A port free for both UDP and TCP on `host` (the PBX listens on both with one number), and not
    given out before by this function in this process (two picks in a row may otherwise get the same
    number once the first probe socket is closed: a TLS listener on the TCP listener's port).

    Taken from this worker's block (`_port_block`); from the ephemeral range only once the block is used up,
    or for a worker without one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Every fourth port: the three after one handed out stay free for what callers put beside it (RTCP,
    # SIPp's media ports from -mp: audio and video RTP/RTCP), as with ports picked at random.
    for port in _port_block()[::4]:
        if port not in _HANDED_OUT and _bindable(family, host, port, udp=udp):
            _HANDED_OUT.add(port)
            return port
    for _ in range(200):
        with socket.socket(family, socket.SOCK_STREAM) as t:
            t.bind((host, 0))
            port = t.getsockname()[1]
        if port in _HANDED_OUT or port >= 65000 or not _bindable(family, host, port, udp=udp):
            continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port")


def _bindable(family: int, host: str, port: int, *, udp: bool) -> bool:
    """Whether `port` can be bound on `host` now, for TCP and (with `udp`) UDP."""
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    for kind in kinds:
        try:
            with socket.socket(family, kind) as probe:
                probe.bind((host, port))
        except OSError:
            return False
    return True


def demo_extensions() -> str:
    return "".join(
        f'[tenants.default.extensions.{n}]\nname = "Ext {n}"\npassword = "pass{n}"\n\n'
        for n in range(1000, 1004)
    )


def write_config(
    directory: Path, *, ipv6: bool | None = None, extra: str = "", trace: bool = True, pbx: str = ""
) -> dict:
    """Write a config with free ports for UDP+TCP and TLS on 127.0.0.1 (and ::1 when available); `pbx`: more
    lines of the `[pbx]` table (`extra` comes after the other tables).

    Returns the ports: {"sip": N, "tls": M, "path": Path}.
    """
    if ipv6 is None:
        ipv6 = ipv6_loopback()
    sip_port = free_port()
    tls_port = free_port(udp=False)
    hosts = ["127.0.0.1"] + (["::1"] if ipv6 else [])
    listeners = []
    for host in hosts:
        for transport, port in (("udp", sip_port), ("tcp", sip_port), ("tls", tls_port)):
            listeners.append(f'[[sip.listen]]\ntransport = "{transport}"\nhost = "{host}"\nport = {port}\n')
    text = (
        f'[pbx]\ndata_dir = "data"\nsip_trace = {"true" if trace else "false"}\n{pbx}\n'
        + "\n".join(listeners)
        + '\n[tenants.default]\ndomain = "localhost"\naliases = ["127.0.0.1", "::1"]\n\n'
        + demo_extensions()
        + extra
    )
    path = directory / "pbx.toml"
    path.write_text(text)
    (directory / "dialplans" / "default").mkdir(parents=True, exist_ok=True)
    return {"sip": sip_port, "tls": tls_port, "path": path, "listeners": len(listeners), "dir": directory}


class PbxProcess:
    """`twistd -n pbx --config FILE` in a subprocess, its output collected line by line."""

    def __init__(
        self, config: Path, args: Sequence[str] = (), preexec_fn: Callable[[], None] | None = None
    ) -> None:
        self.config = config
        self.lines: list[str] = []
        self._cond = threading.Condition()
        cmd = [executable("twistd"), "--nodaemon", "--pidfile=", "pbx", "--config", str(config), *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(config.parent),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=preexec_fn,  # e.g. a low RLIMIT_NOFILE (tests/e2e/test_connection_limits.py)
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0, count: int = 1) -> list[str]:
        """Wait until `count` output lines match the regex; raise with the output on timeout or exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [line for line in self.lines if regex.search(line)]
                if len(hits) >= count:
                    return hits
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"twistd exited ({self.proc.returncode}) before {pattern!r}:\n{self.output}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.output[-5000:]}")
                self._cond.wait(min(left, 0.5))

    def wait_ready(self, listeners: int, timeout: float = 30.0) -> None:
        """Wait for the PBX's ready line, logged once every listener is open (all `listeners` of them)."""
        (line,) = self.wait_for(r"PBX ready: ", timeout)
        sockets = line.split("SIP on ", 1)[1].split(";", 1)[0].split(", ")
        assert len(sockets) >= listeners, line

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._reader.join(timeout)
        return self.proc.returncode

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)


def run_sipp(
    args: Sequence[str], timeout: float = 60.0, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run SIPp bounded in time; never reads stdin."""
    cmd = [executable("sipp"), "-nostdin", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout, check=False)


def options_request(
    host: str, port: int, transport: str, local_port: int, branch: str = "z9hG4bKtest1"
) -> bytes:
    h = f"[{host}]" if ":" in host else host
    return (
        f"OPTIONS sip:{h}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {h}:{local_port};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@{h}>;tag=probe1\r\n"
        f"To: <sip:{h}:{port}>\r\n"
        f"Call-ID: probe-{branch}@{h}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def udp_exchange(host: str, port: int, data: bytes, timeout: float = 5.0) -> bytes | None:
    """Send one datagram and return the first reply (None on timeout)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (host, port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def run_pbx_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run the `pbx` console script (offline tools) bounded in time, output as text."""
    cmd = [executable("pbx"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass(frozen=True)
class Registration:
    """One row of `pbx registrations`."""

    tenant: str
    extension: str
    expires: float  # seconds left
    via: str  # the flow, e.g. "udp:127.0.0.1:5062"
    contact: str
    user_agent: str


def registrations(config: Path, timeout: float = 30.0) -> list[Registration]:
    """The bindings `pbx registrations CONFIG` lists now (it reads the PBX's database, running or not)."""
    result = run_pbx_cli("registrations", str(config), timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"pbx registrations failed ({result.returncode}): {result.stderr}")
    lines = result.stdout.splitlines()
    if not lines or not re.fullmatch(r"\d+ registration\(s\)", lines[-1]):
        raise AssertionError(f"unexpected `pbx registrations` output:\n{result.stdout}")
    rows = []
    for line in lines[1:-1]:
        tenant, extension, expires, via, contact, *rest = line.split(None, 5)
        rows.append(
            Registration(tenant, extension, float(expires.rstrip("s")), via, contact, rest[0] if rest else "")
        )
    if len(rows) != int(lines[-1].split()[0]):
        raise AssertionError(f"row count does not match the total:\n{result.stdout}")
    return rows
