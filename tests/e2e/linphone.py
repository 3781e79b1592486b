"""Drive Debian's linphone (5.1: `linphonec` from `linphone-cli`, the library `liblinphone10`) headless on
loopback.

- `Linphonec` runs the console phone on a config of its own (`write_linphonerc`), with a scratch `HOME` (it
  opens no SIP socket without `$HOME/.local/share/linphone`), fed commands through a FIFO that stays open;
  its debug log (`-l`) is followed line by line so tests wait on `LinphoneRegistrationOk` and the like.
- `LiblinphoneSubscriber` runs `tests/e2e/liblinphone_mwi.py` in a subprocess: the same library driven
  through its C API (ctypes) to subscribe to `message-summary` (RFC 3842), which linphonec 5.1 cannot do
  (no command, no config key; see docs/peers.md). Its stdout says `registered`, `subscribed`,
  `state N` (LinphoneSubscriptionState) and `notify <event> <body as JSON>` for every NOTIFY.

Everything waits on an event with a timeout; nothing sleeps a fixed time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from tests.e2e.baresip import free_udp_range
from tests.e2e.harness import free_port

DRIVER = Path(__file__).with_name("liblinphone_mwi.py")


def linphonec_available() -> bool:
    return shutil.which("linphonec") is not None


def write_linphonerc(
    directory: Path, *, user: str, password: str, pbx_port: int, host: str = "127.0.0.1", expires: int = 600
) -> Path:
    """A linphonerc for extension `user` registering over UDP with the PBX at host:pbx_port; its own free
    SIP and RTP ports, no sound card, a fixed instance id (else every fresh config adds a binding). The
    scratch HOME is `directory/home`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "home" / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
    first, last = free_udp_range(10)
    text = f"""[sip]
sip_port={free_port(host, tcp=False)}
sip_tcp_port=0
sip_tls_port=0
default_proxy=0
[rtp]
audio_rtp_port={first}-{last}
[sound]
playback_dev_id=
ringer_dev_id=
capture_dev_id=
[misc]
uuid={uuid.uuid5(uuid.NAMESPACE_URL, f"pbx-test-{user}")}
[proxy_0]
reg_proxy=<sip:{host}:{pbx_port};transport=udp>
reg_identity="Ext {user}" <sip:{user}@{host}>
reg_expires={expires}
reg_sendregister=1
publish=0
[auth_info_0]
username={user}
userid={user}
passwd={password}
"""
    path = directory / "linphonerc"
    path.write_text(text)
    return path


class _Followed:
    """Lines of a growing text source, collected by a thread; `wait_for` waits on a regex."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._done = False

    def add(self, line: str) -> None:
        with self._cond:
            self.lines.append(line.rstrip("\n"))
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float, what: str) -> list[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [line for line in self.lines if regex.search(line)]
                if hits:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0 or self._done:
                    tail = "\n".join(self.lines[-60:])
                    raise AssertionError(
                        f"{what}: no {pattern!r} ({'ended' if self._done else 'timeout'}):\n{tail}"
                    )
                self._cond.wait(min(left, 0.2))


class Linphonec:
    """`linphonec -c CFG -d 6 -l LOG` reading commands from a FIFO; `log` follows its debug log."""

    def __init__(self, directory: Path, config: Path) -> None:
        self.directory = directory
        self.config = directory / "linphonerc.run"  # it rewrites its config on exit: run on a copy
        shutil.copyfile(config, self.config)
        self.log_path = directory / "linphonec.log"
        self.log_path.write_text("")
        fifo = directory / "in.fifo"
        if not fifo.exists():
            os.mkfifo(fifo)
        env = {**os.environ, "HOME": str(directory / "home")}
        self.proc = subprocess.Popen(
            ["linphonec", "-c", str(self.config), "-d", "6", "-l", str(self.log_path)],
            stdin=os.open(fifo, os.O_RDWR),  # O_RDWR: the open does not block, and stdin never sees EOF
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(directory),
        )
        self._commands = open(fifo, "w", buffering=1)  # noqa: SIM115 - closed in stop()
        self.stdout = _Followed()
        self.log = _Followed()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._follow_log, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.stdout.add(raw.decode("utf-8", "replace"))
        self.stdout.finish()

    def _follow_log(self) -> None:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            pending = ""
            while True:
                chunk = f.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith("\n"):
                        self.log.add(pending)
                        pending = ""
                    continue
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)  # polling a file that grows; the waits above are bounded
        self.log.finish()

    def command(self, line: str) -> None:
        self._commands.write(line + "\n")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout)
        self._commands.close()


class LiblinphoneSubscriber:
    """`python tests/e2e/liblinphone_mwi.py CFG RESOURCE SECONDS`: registers with the config's account, then
    subscribes to message-summary for RESOURCE and reports what happens on stdout (`output`)."""

    def __init__(self, directory: Path, config: Path, resource: str, seconds: float = 30.0) -> None:
        run_config = directory / "liblinphonerc.run"
        shutil.copyfile(config, run_config)
        env = {**os.environ, "HOME": str(directory / "home")}
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER), str(run_config), resource, str(seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(directory),
        )
        self.output = _Followed()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.output.add(raw.decode("utf-8", "replace"))
        self.output.finish()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
