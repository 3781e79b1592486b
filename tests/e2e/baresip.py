"""Drive a headless baresip (1.0, Debian `baresip-core`) as a real softphone on loopback.

`Baresip` writes `config`, `accounts` and `contacts` into a directory of its own (the facts in PEERS.md),
starts `baresip -f DIR` as a subprocess, and collects its output line by line so tests wait on log lines
(`wait_for`). With `ctrl=True` it loads `ctrl_tcp` and `BaresipControl` talks to it: netstring-framed JSON
commands (`dial`, `hangup`, `accept`, `sndcode`, ...) and the events (`CALL_RINGING`, `CALL_ESTABLISHED`,
`CALL_CLOSED`, ...) that arrive on the same socket.

Audio: no sound card. The source is `aufile` on an 8 kHz mono WAV (`write_tone_wav`; the built-in sine source
only does 48 kHz), the player is `aubridge,nil`; with `record_dir` the `sndfile` module dumps what the phone
sends and hears as WAV files there.

`stop()` sends SIGTERM: baresip unregisters its accounts (REGISTER with expiry 0) and exits; it is killed if
it has not exited in time. Everything waits with a timeout; nothing sleeps a fixed time.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e import harness
from tests.e2e.harness import executable, free_port

MODULE_PATH = "/usr/lib/baresip/modules"


def write_tone_wav(
    path: Path, frequency: float = 440.0, seconds: float = 10.0, rate: int = 8000, amplitude: float = 0.3
) -> Path:
    """Write a mono 16-bit WAV with a sine tone (0 Hz: silence) and return its path."""
    frames = int(seconds * rate)
    scale = amplitude * 32767
    samples = (
        struct.pack("<h", int(scale * math.sin(2 * math.pi * frequency * n / rate))) for n in range(frames)
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(samples))
    return path


def free_udp_range(count: int, host: str = "127.0.0.1", attempts: int = 50) -> tuple[int, int]:
    """`count` consecutive UDP ports free on `host` now (for `rtp_ports`): (first, last)."""
    for _ in range(attempts):
        first = free_port(host, tcp=False)
        if first + count > 65000:
            continue
        sockets: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return first, first + count - 1
    raise RuntimeError(f"no run of {count} free UDP ports")


def _port_pair() -> int:
    """A port P free for UDP and TCP whose P + 1 is free for TCP too: baresip's `sip_listen` binds TLS on
    the next port, and a parallel test given that one makes baresip exit with "Address already in use"."""
    for _ in range(100):
        port = free_port()
        if port + 1 in harness._HANDED_OUT:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        harness._HANDED_OUT.add(port + 1)
        return port
    raise RuntimeError("no free pair of ports")


@dataclass(frozen=True)
class Account:
    """One baresip account registering with a registrar (the PBX).

    `params` are further account parameters without the leading `;` (e.g. `answermode=auto`,
    `mediaenc=srtp`).
    """

    user: str
    password: str
    host: str
    port: int
    transport: str = "udp"
    regint: int = 600
    params: Sequence[str] = ()

    def line(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        extra = "".join(f";{p}" for p in self.params)
        return (
            f"<sip:{self.user}@{host}:{self.port};transport={self.transport}>"
            f";auth_pass={self.password};regint={self.regint}{extra}"
        )

    @property
    def aor(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}"


class BaresipControl:
    """A ctrl_tcp client: netstring-framed JSON commands, responses and events on one TCP connection."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.settimeout(None)
        self._responses: queue.Queue[dict[str, Any]] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._tokens = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                while True:
                    length, colon, rest = buffer.partition(b":")
                    if not colon or not length.isdigit():
                        break
                    n = int(length)
                    if len(rest) < n + 1:
                        break
                    payload, buffer = rest[:n], rest[n + 1 :]
                    self._dispatch(json.loads(payload))
        except OSError:
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("response"):
            self._responses.put(message)
        else:
            with self._cond:
                self.events.append(message)
                self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 10.0) -> dict[str, Any]:
        """Send a command and return its response (`{"response": true, "ok": ..., "data": ...}`)."""
        self._tokens += 1
        token = f"t{self._tokens}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(b"%d:%s," % (len(body), body))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no response to ctrl_tcp command {command!r} {params!r}")
            try:
                response = self._responses.get(timeout=left)
            except queue.Empty:
                continue
            if response.get("token") in (token, None):
                return response

    def wait_event(self, event_type: str, timeout: float = 10.0, count: int = 1) -> list[dict[str, Any]]:
        """Wait until `count` events of `event_type` (e.g. "CALL_ESTABLISHED") arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [e for e in self.events if e.get("type") == event_type]
                if len(hits) >= count:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise AssertionError(f"no {event_type} event; events so far: {self.events}")
                self._cond.wait(min(left, 0.5))

    def dial(self, uri: str) -> dict[str, Any]:
        return self.command("dial", uri)

    def accept(self) -> dict[str, Any]:
        return self.command("accept")

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def send_dtmf(self, digit: str) -> dict[str, Any]:
        return self.command("sndcode", digit)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._reader.join(5)


class Baresip:
    """A headless baresip in its own config directory, its output collected line by line.

    Args:
        directory: where `config`, `accounts` and `contacts` are written (created if needed).
        accounts: the accounts to register.
        contacts: lines for the `contacts` file (e.g. `"Bob" <sip:1002@127.0.0.1:5060>`).
        audio_source: an 8 kHz mono WAV to send; by default a generated 440 Hz tone.
        record_dir: with it, `sndfile` dumps the call audio as WAV files there.
        ctrl: load `ctrl_tcp` on a free port (`control()` connects to it).
        sip_trace: run with `-s` (every SIP message in the output).
        extra_config: more `config` lines.
        start: start the process now.
    """

    def __init__(
        self,
        directory: Path,
        accounts: Sequence[Account],
        *,
        contacts: Sequence[str] = (),
        audio_source: Path | None = None,
        record_dir: Path | None = None,
        ctrl: bool = False,
        sip_trace: bool = False,
        extra_config: Sequence[str] = (),
        start: bool = True,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.accounts = list(accounts)
        self.sip_port = _port_pair()  # baresip listens for TLS on sip_port + 1 too
        self.ctrl_port = free_port(udp=False) if ctrl else None
        self.rtp_ports = free_udp_range(10)
        self.audio_source = audio_source or write_tone_wav(directory / "tone.wav")
        self.record_dir = record_dir
        self.sip_trace = sip_trace
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._control: BaresipControl | None = None
        self._write_files(contacts, extra_config)
        if start:
            self.start()

    def _write_files(self, contacts: Sequence[str], extra_config: Sequence[str]) -> None:
        modules = ["g711.so", "aufile.so", "aubridge.so"]
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
            modules.append("sndfile.so")
        apps = ["account.so", "contact.so", "menu.so"] + (["ctrl_tcp.so"] if self.ctrl_port else [])
        lines = [
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            "net_interface 127.0.0.1",
            f"rtp_ports {self.rtp_ports[0]}-{self.rtp_ports[1]}",
            f"module_path {MODULE_PATH}",
            *(f"module {m}" for m in modules),
            *(f"module_app {m}" for m in apps),
            f"audio_source aufile,{self.audio_source}",
            "audio_player aubridge,nil",
            "audio_alert aubridge,nil",
            "call_local_timeout 120",
        ]
        if self.ctrl_port:
            lines.append(f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}")
        if self.record_dir is not None:
            lines.append(f"snd_path {self.record_dir}")
        lines.extend(extra_config)
        (self.directory / "config").write_text("\n".join(lines) + "\n")
        (self.directory / "accounts").write_text("".join(a.line() + "\n" for a in self.accounts))
        (self.directory / "contacts").write_text("".join(c + "\n" for c in contacts))

    # -- the process -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("baresip already started")
        cmd = [executable("baresip"), "-f", str(self.directory)] + (["-s"] if self.sip_trace else [])
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(self.directory),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(self.directory)},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(self, pattern: str, timeout: float = 15.0, count: int = 1) -> list[str]:
        """Wait until `count` output lines match the regex; raise with the output on timeout or exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [line for line in self.lines if regex.search(line)]
                if len(hits) >= count:
                    return hits
                exited = self.proc is None or (
                    self.proc.poll() is not None and not (self._reader and self._reader.is_alive())
                )
                if exited:
                    code = self.proc.returncode if self.proc else None
                    raise AssertionError(f"baresip exited ({code}) before {pattern!r}:\n{self.output}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {pattern!r} from baresip:\n{self.output}")
                self._cond.wait(min(left, 0.5))

    def wait_registered(self, account: Account | None = None, timeout: float = 15.0) -> str:
        """Wait for baresip's `USER@HOST: {0/UDP/v4} 200 OK (...) [1 binding]` line; return it."""
        aor = (account or self.accounts[0]).aor
        return self.wait_for(rf"{re.escape(aor)}: .*200 OK", timeout)[0]

    def control(self, timeout: float = 10.0) -> BaresipControl:
        """The ctrl_tcp client (connected on first use; ctrl_tcp is up once baresip says it is ready)."""
        if self.ctrl_port is None:
            raise RuntimeError("baresip started without ctrl=True")
        if self._control is None:
            self.wait_for(r"baresip is ready", timeout)
            self._control = BaresipControl("127.0.0.1", self.ctrl_port, timeout)
        return self._control

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (baresip unregisters, then exits); SIGKILL if it is still running after `timeout`."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return self.proc.returncode

    def __enter__(self) -> Baresip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TonePhones:
    """Baresip phones that each send a tone of their own and dump what they hear, stopped together.

    The set-up every audio test shares: phone USER registers to `host:port` as USER with password `passUSER`,
    sends `tone_USER.wav` (a sine of `tone` Hz, `seconds` long) and dumps what it hears into `heard_by_USER`
    (`heard(USER)`), all under `directory`. Use it as a context manager, or call `stop()` in a `finally:`:
    stopping closes the dumps, whose WAV headers get their final length only then.
    """

    def __init__(self, directory: Path, port: int, *, host: str = "127.0.0.1", seconds: float = 60.0) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self.seconds = seconds
        self.phones: list[Baresip] = []

    def add(
        self,
        user: str,
        tone: float,
        *params: str,
        port: int | None = None,
        transport: str = "udp",
        sip_trace: bool = False,
        extra_config: Sequence[str] = (),
    ) -> Baresip:
        """Start phone `user` (account parameters `params`, e.g. `answermode=auto`) with a control socket."""
        account = Account(
            user, f"pass{user}", self.host, port or self.port, transport=transport, params=params
        )
        phone = Baresip(
            self.directory / f"baresip_{user}",
            [account],
            audio_source=write_tone_wav(self.directory / f"tone_{user}.wav", tone, seconds=self.seconds),
            record_dir=self.heard(user),
            ctrl=True,
            sip_trace=sip_trace,
            extra_config=extra_config,
        )
        self.phones.append(phone)
        return phone

    def heard(self, user: str) -> Path:
        """The directory where phone `user` dumps what it sends and hears."""
        return self.directory / f"heard_by_{user}"

    def wait_registered(self, timeout: float = 15.0) -> None:
        for phone in self.phones:
            phone.wait_registered(timeout=timeout)

    def stop(self) -> None:
        """Stop every phone (closing the dumps) and forget them: `add` starts fresh ones."""
        for phone in self.phones:
            phone.stop()
        self.phones.clear()

    def __iter__(self) -> Iterator[Baresip]:
        return iter(self.phones)

    def __enter__(self) -> TonePhones:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
