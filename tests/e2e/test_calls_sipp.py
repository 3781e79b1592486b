"""Calls through the B2BUA shown with SIPp: UAC -> `twistd pbx` -> UAS on loopback, one scenario per test.

Every test starts its own PBX (free SIP ports, its own RTP port range, a dialplan written for the test),
registers the callee's SIPp port(s) with `register_auth.xml`, starts the UAS(es) bounded by `-timeout` and
waits until they listen, then runs the caller. SIPp's exit code is the verdict (0: every call went as the
scenario says); the PBX's log and its CDR table say what the PBX thought. Failures show SIPp's
`-trace_err` errors, its last messages and the PBX log tail.

Nothing sleeps a fixed time: waits are on a process exit, a log line or a bound socket, each with a timeout
(the only pauses are SIPp's own `<pause>` inside scenarios).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, PbxProcess, executable, free_port, write_config

SCENARIOS = Path(__file__).parent / "scenarios"
DEMO_DIALPLAN = (REPO / "dialplans" / "default" / "main.j2").read_text()
pytestmark = pytest.mark.e2e

# -- the PBX -------------------------------------------------------------------------------------------------


def _udp_run_free(first: int, count: int) -> bool:
    sockets: list[socket.socket] = []
    try:
        for port in range(first, first + count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(s)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in sockets:
            s.close()


def rtp_range(count: int = 40) -> tuple[int, int]:
    """An even-aligned run of `count` UDP ports free now, for [media] rtp_port_min/max.

    Taken below the kernel's ephemeral range (32768-60999), so that the ports SIPp and the tests get from
    the kernel (`free_port`) can never fall into a range the PBX's relay binds later.
    """
    rng = random.Random()
    for _ in range(200):
        low = rng.randrange(20000, 32000 - count) & ~1
        if _udp_run_free(low, count):
            return low, low + count - 1
    raise RuntimeError("no free RTP port range")


def sipp_media_port() -> int:
    """An even port with the next three free: SIPp binds audio RTP/RTCP and video RTP/RTCP from -mp."""
    for _ in range(200):
        port = free_port(udp=True, tcp=False) & ~1
        if _udp_run_free(port, 4):
            return port
    raise RuntimeError("no free SIPp media ports")


@dataclass
class CallPbx:
    """A running `twistd pbx` for call tests: its log, ports, dialplan and CDRs."""

    process: PbxProcess
    ports: dict
    directory: Path
    rtp: tuple[int, int]

    @property
    def sip(self) -> int:
        return self.ports["sip"]

    @property
    def dialplan_path(self) -> Path:
        return self.directory / "dialplans" / "default" / "main.j2"

    def write_dialplan(self, text: str) -> None:
        """Replace main.j2 and move its mtime on (the engine recompiles on a new mtime, size or inode)."""
        path = self.dialplan_path
        before = path.stat().st_mtime_ns if path.exists() else 0
        path.write_text(text)
        mtime = max(before + 2_000_000_000, path.stat().st_mtime_ns)
        os.utime(path, ns=(mtime, mtime))

    def tail(self, chars: int = 6000) -> str:
        return self.process.output[-chars:]

    def wait_for(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list[str]:
        return self.process.wait_for(pattern, timeout, count)

    def cdrs(self) -> list[dict]:
        """Every row of the cdrs table, oldest first (read-only: the PBX owns the database)."""
        path = self.directory / "data" / "pbx.sqlite3"
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute("SELECT * FROM cdrs ORDER BY id")]
        finally:
            connection.close()

    def wait_cdr(self, call_id: str, timeout: float = 10.0) -> dict:
        """The CDR of `call_id` once written (it is written after the "ended" log line, asynchronously)."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):
            rows = [row for row in self.cdrs() if row["call_id"] == call_id]
            if rows:
                return rows[-1]
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling the database for an event: the row
        raise AssertionError(f"no CDR for {call_id}: {self.cdrs()}\n{self.tail()}")

    def wait_cdrs(self, count: int, timeout: float = 10.0) -> list[dict]:
        """Every CDR once there are at least `count` (written asynchronously, up to 0.1 s after a call's
        end, when the CDRs of that time share one commit: `SqliteLocationStore(cdr_delay=...)`)."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):
            rows = self.cdrs()
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)  # polling the database for an event: the rows
        return self.cdrs()

    def ended(self, status: int, cause: str = r"\w+", timeout: float = 10.0) -> str:
        """Wait for `Call ID ended: CAUSE (status N, ...)`; return the call id."""
        line = self.wait_for(rf"Call (\S+) ended: {cause} \(status {status},", timeout)[-1]
        match = re.search(r"Call (\S+) ended: ", line)
        assert match is not None
        return match.group(1)


def launch_pbx(
    directory: Path,
    dialplan: str = DEMO_DIALPLAN,
    extra: str = "",
    keepalive: str = "options",
    pbx_keys: str = "",
) -> CallPbx:
    """Start `twistd pbx` in `directory` and wait until it listens; the caller stops it.

    Demo extensions 1000-1003 (password passNNNN), its own RTP port range, `dialplan` as
    dialplans/default/main.j2, `keepalive` as [registrar] keepalive ("crlf": no OPTIONS pings to UDP
    contacts, which a SIPp scenario would take for an unexpected message), `pbx_keys` more lines of `[pbx]`.
    """
    for attempt in range(3):
        directory.mkdir(parents=True)
        low, high = rtp_range()
        media = f"[media]\nrtp_port_min = {low}\nrtp_port_max = {high}\n\n"
        registrar = f'[registrar]\nkeepalive = "{keepalive}"\n\n'
        ports = write_config(directory, ipv6=False, extra=media + registrar + extra, pbx=pbx_keys)
        pbx = CallPbx(PbxProcess(ports["path"]), ports, directory, (low, high))
        pbx.write_dialplan(dialplan)  # before the start: the first call finds it
        try:
            pbx.process.wait_ready(ports["listeners"])
            pbx.wait_for(r"Location service loaded \d+ bindings")
        except BaseException:
            pbx.process.stop()
            # A port found free was taken before the PBX bound it (another test's client socket, in the
            # same ephemeral range): start again with other ports, in a clean directory.
            if attempt < 2 and "Address already in use" in pbx.process.output:
                shutil.rmtree(directory)
                continue
            raise
        return pbx
    raise AssertionError("unreachable")


StartPbx = Callable[..., CallPbx]


@pytest.fixture
def start_pbx(tmp_path: Path) -> Iterator[StartPbx]:
    """`launch_pbx` in the test's directory, without OPTIONS pings; each PBX is stopped at the end."""
    started: list[CallPbx] = []

    def start(dialplan: str = DEMO_DIALPLAN, extra: str = "", pbx_keys: str = "") -> CallPbx:
        directory = tmp_path / f"pbx{len(started)}"
        pbx = launch_pbx(directory, dialplan, extra, keepalive="crlf", pbx_keys=pbx_keys)
        started.append(pbx)
        return pbx

    yield start
    for pbx in started:
        pbx.process.stop()


# -- SIPp ----------------------------------------------------------------------------------------------------


def udp_bound(port: int, host_hex: str = "0100007F") -> bool:
    """Whether some socket is bound to 127.0.0.1:`port` (or the wildcard) for UDP, from /proc/net/udp."""
    wanted = {f"{host_hex}:{port:04X}", f"00000000:{port:04X}"}
    with open("/proc/net/udp") as table:
        return any(line.split()[1] in wanted for line in table.readlines()[1:])


def sip_messages(path: Path) -> list[tuple[str, str]]:
    """The messages of a SIPp `-message_file`: ("sent" | "received", text with CRLF line ends)."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        text = f.read()  # keep the messages' CRLFs (SIPp's own lines end in LF)
    out = []
    for chunk in re.split(r"^-{20,} .*\n", text, flags=re.MULTILINE):
        head, _, message = chunk.partition("\n")
        if "message" not in head:
            continue
        direction = "sent" if " sent " in head else "received"
        out.append((direction, message.lstrip("\n").rstrip("\n")))
    return out


def header(message: str, name: str) -> list[str]:
    """The values of header `name` in a message (folded lines kept as received)."""
    head = message.split("\r\n\r\n", 1)[0]
    values = []
    for line in re.split(r"\r\n(?![ \t])", head)[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            values.append(value.strip())
    return values


def body(message: str) -> str:
    return message.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in message else ""


@dataclass
class Sipp:
    """One SIPp process in the background (a UAS, or a UAC we wait for), its files in `directory`.

    Every run is bounded: `-m` calls, `-timeout` seconds (`-timeout_error` makes a hang a failure).
    """

    name: str
    scenario: Path
    args: Sequence[str]
    directory: Path
    port: int = 0
    timeout: float = 20.0
    calls: int = 1
    ip: str = "127.0.0.1"
    proc: subprocess.Popen = field(init=False)
    started_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.error_file = self.directory / f"{self.name}_errors.log"
        self.message_file = self.directory / f"{self.name}_messages.log"
        self.out_file = self.directory / f"{self.name}_stdout.log"
        cmd = [
            executable("sipp"), "-nostdin",
            "-sf", str(self.scenario),
            "-i", self.ip, "-p", str(self.port), "-mp", str(sipp_media_port()),
            "-m", str(self.calls),
            "-timeout", f"{self.timeout:g}s", "-timeout_error",
            "-trace_err", "-error_file", str(self.error_file),
            "-trace_msg", "-message_file", str(self.message_file),
            *self.args,
        ]  # fmt: skip
        self.started_at = time.monotonic()
        with open(self.out_file, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_listening(self, timeout: float = 10.0) -> Sipp:
        """Wait until SIPp has bound its SIP port (a UAS must listen before the call is placed)."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 1):
            if udp_bound(self.port):
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before listening\n{self}")
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)  # polling /proc/net/udp for an event: the bind
        raise AssertionError(f"{self.name} is not listening on {self.port} after {timeout} s\n{self}")

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit (at most -timeout plus a margin); kill on overrun, which fails the test."""
        try:
            return self.proc.wait(timeout if timeout is not None else self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit in time\n{self}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def messages(self, direction: str | None = None) -> list[str]:
        return [m for d, m in sip_messages(self.message_file) if direction in (None, d)]

    def requests(self, method: str) -> list[str]:
        """The requests of `method` this SIPp received."""
        return [m for m in self.messages("received") if m.startswith(f"{method} ")]

    def responses(self, status: int) -> list[str]:
        """The responses with `status` this SIPp received."""
        return [m for m in self.messages("received") if m.startswith(f"SIP/2.0 {status} ")]

    def __str__(self) -> str:
        errors = self.error_file.read_text(errors="replace") if self.error_file.exists() else ""
        out = self.out_file.read_text(errors="replace") if self.out_file.exists() else ""
        last = "\n---\n".join(self.messages()[-4:])
        return (
            f"== {self.name} (exit {self.proc.poll()}) errors:\n{errors[-3000:]}\n"
            f"== {self.name} stdout tail:\n{out[-1500:]}\n== {self.name} last messages:\n{last[-4000:]}"
        )


@dataclass
class SippSet:
    """The SIPp processes of one test, killed at its end whatever happened."""

    directory: Path
    running: list[Sipp] = field(default_factory=list)

    def users_csv(self, rows: Sequence[Sequence[str]], name: str) -> Path:
        """A SEQUENTIAL -inf file; each row is extension; password; the whole [authentication] keyword; ..."""
        lines = [
            ";".join((ext, pw, f"[authentication username={ext} password={pw}]", *rest))
            for ext, pw, *rest in rows
        ]
        path = self.directory / f"{name}.csv"
        path.write_text("SEQUENTIAL\n" + "\n".join(lines) + "\n")
        return path

    def start(self, name: str, scenario: str | Path, args: Sequence[str] = (), **kwargs) -> Sipp:
        path = scenario if isinstance(scenario, Path) else SCENARIOS / scenario
        sipp = Sipp(name, path, args, self.directory, **kwargs)
        self.running.append(sipp)
        return sipp

    def register(self, pbx: CallPbx, extension: str, port: int | None = None) -> int:
        """Register `extension` with a contact at 127.0.0.1:`port` (default: a free one); return the port."""
        csv = self.users_csv([(extension, f"pass{extension}")], f"reg_{extension}_{len(self.running)}")
        sipp = self.start(
            f"register_{extension}_{len(self.running)}", "register_auth.xml",
            [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], port=port or 0, timeout=10,
        )  # fmt: skip
        self.check(pbx, sipp)
        pbx.wait_for(rf"Registered {extension}@default at sip:{extension}@127\.0\.0\.1:{sipp.port}\b")
        return sipp.port

    def uas(self, name: str, scenario: str, extension: str, port: int, args: Sequence[str] = ()) -> Sipp:
        """A callee on the registered `port`, listening before this returns."""
        return self.start(name, scenario, ["-s", extension, *args], port=port, timeout=30).wait_listening()

    def uac(
        self,
        pbx: CallPbx,
        scenario: str | Path,
        dialed: str,
        caller: str = "1001",
        name: str = "uac",
        extra_fields: Sequence[str] = (),
        ip: str = "127.0.0.1",
    ) -> Sipp:
        """Place one call from `caller` to `dialed` and wait for the caller's SIPp to finish."""
        csv = self.users_csv([(caller, f"pass{caller}", dialed, *extra_fields)], f"{name}_users")
        sipp = self.start(name, scenario, [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=20, ip=ip)
        sipp.wait()
        return sipp

    def check(self, pbx: CallPbx, *sipps: Sipp) -> None:
        """Assert every SIPp exited 0 (waiting for each); show the failures and the PBX log tail."""
        failed = [s for s in sipps if s.wait() != 0]
        if failed:
            details = "\n".join(str(s) for s in failed)
            raise AssertionError(
                f"SIPp failed: {[s.name for s in failed]}\n{details}\n== PBX log tail:\n{pbx.tail()}"
            )

    def stop(self) -> None:
        for sipp in self.running:
            sipp.kill()


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[SippSet]:
    directory = tmp_path / "sipp"
    directory.mkdir()
    group = SippSet(directory)
    yield group
    group.stop()


def queued(sock: socket.socket) -> bytes:
    """The first datagram queued on `sock` now, b"" if none; never waits.

    On loopback a datagram is queued at the receiver when `sendto` returns, so anything the PBX sent before
    a response the caller has already received is here.
    """
    sock.setblocking(False)
    try:
        return sock.recv(65535)
    except BlockingIOError:
        return b""


def sdp_port(message: str) -> int:
    match = re.search(r"^m=audio (\d+) ", body(message), flags=re.MULTILINE)
    assert match is not None, message
    return int(match.group(1))


# -- 1. a normal call ----------------------------------------------------------------------------------------


def test_normal_call(start_pbx, sipp):
    """INVITE/407/INVITE/180/200/ACK/BYE through the demo dialplan; the callee sees only the PBX."""
    pbx = start_pbx()
    port = sipp.register(pbx, "1002")
    uas = sipp.uas("uas", "call_uas.xml", "1002", port)
    uac = sipp.uac(pbx, "call_uac.xml", "1002")
    sipp.check(pbx, uac, uas)

    call_id = pbx.ended(200, "normal")
    pbx.wait_for(rf"Call {re.escape(call_id)} ended: .*, 1001@default -> 1002 answered by 1002")
    cdr = pbx.wait_cdr(call_id)
    assert (cdr["caller"], cdr["dialed"], cdr["answered_by"]) == ("1001", "1002", "1002"), cdr
    assert (cdr["status"], cdr["cause"], cdr["hangup_by"]) == (200, "normal", "caller"), cdr
    assert cdr["answer"] is not None and cdr["start"] <= cdr["answer"] <= cdr["end"], cdr

    # Topology hiding: the callee's INVITE carries the PBX's Call-ID, Via and relay address, not the caller's.
    (invite,) = uas.requests("INVITE")
    assert call_id not in invite and f":{uac.port}" not in invite, invite
    assert pbx.rtp[0] <= sdp_port(invite) <= pbx.rtp[1], invite
    assert len(uac.responses(180)) >= 1, "the callee's 180 was not relayed to the caller"
    answer = uac.responses(200)[0]
    assert pbx.rtp[0] <= sdp_port(answer) <= pbx.rtp[1], answer
    assert f":{uas.port}" not in answer, answer


def test_calls_with_a_poll_window(start_pbx, sipp):
    """`[pbx] poll_window`: with the event loop napping up to 20 ms between wake-ups while busy, 20 calls at
    20/s (INVITE/407/INVITE/180/200/ACK/BYE each; ~4 up at once, within the test's 40 RTP ports) and the
    callee's registration go as the scenarios say; SIPp's retransmission timer (500 ms) is far above the
    window. Every call ends normally with its CDR."""
    pbx = start_pbx(pbx_keys="poll_window = 0.02")
    pbx.wait_for(r"Busy event loop: at least 20 ms between wake-ups")
    port = sipp.register(pbx, "1002")
    uas = sipp.start("uas", "call_uas.xml", ["-s", "1002"], port=port, timeout=30, calls=20).wait_listening()
    csv = sipp.users_csv([("1001", "pass1001", "1002")], "uac_users")
    uac = sipp.start("uac", "call_uac.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(csv), "-r", "20"], calls=20)
    sipp.check(pbx, uac, uas)
    cdrs = pbx.wait_cdrs(20)
    assert [(c["status"], c["cause"]) for c in cdrs] == [(200, "normal")] * 20, cdrs


# -- 2. failures: busy, no answer, caller CANCEL -------------------------------------------------------------


def test_busy_callee_gives_486(start_pbx, sipp):
    pbx = start_pbx()
    port = sipp.register(pbx, "1002")
    uas = sipp.uas("uas", "call_uas_busy.xml", "1002", port)
    uac = sipp.uac(pbx, "call_uac_busy.xml", "1002")
    sipp.check(pbx, uac, uas)
    call_id = pbx.ended(486)
    cdr = pbx.wait_cdr(call_id)
    assert (cdr["status"], cdr["answered_by"], cdr["answer"]) == (486, "", None), cdr
    assert cdr["legs"].endswith("=486"), cdr


RING_TIMEOUT = 3


def test_no_answer_gives_480_and_cancels_the_callee(start_pbx, sipp):
    pbx = start_pbx(f"dial {{{{ call.dialed }}}} timeout={RING_TIMEOUT}\nhangup\n")
    port = sipp.register(pbx, "1002")
    uas = sipp.uas("uas", "call_uas_noanswer.xml", "1002", port)
    uac = sipp.uac(pbx, "call_uac_noanswer.xml", "1002")
    sipp.check(pbx, uac, uas)
    assert RING_TIMEOUT - 0.5 < uac.elapsed < RING_TIMEOUT + 5, f"480 after {uac.elapsed:.1f} s"
    assert len(uas.requests("CANCEL")) == 1, uas
    call_id = pbx.ended(480)
    cdr = pbx.wait_cdr(call_id)
    assert (cdr["status"], cdr["answer"]) == (480, None), cdr
    # The leg's own final (487) may arrive after the CDR is written: only its contact is checked here.
    assert cdr["legs"].startswith(f"1002@sip:1002@127.0.0.1:{port};"), cdr


def test_caller_cancel_reaches_the_callee(start_pbx, sipp):
    pbx = start_pbx()
    port = sipp.register(pbx, "1002")
    uas = sipp.uas("uas", "call_uas_noanswer.xml", "1002", port)
    uac = sipp.uac(pbx, "call_uac_cancel.xml", "1002")
    sipp.check(pbx, uac, uas)
    assert len(uas.requests("CANCEL")) == 1, uas
    call_id = pbx.ended(487, "cancelled")
    cdr = pbx.wait_cdr(call_id)
    assert (cdr["status"], cdr["hangup_by"], cdr["answer"]) == (487, "caller", None), cdr


# -- 3. forking to two contacts of one extension -------------------------------------------------------------


def test_fork_one_answers_the_other_is_cancelled(start_pbx, sipp):
    pbx = start_pbx()
    answering, ringing = sipp.register(pbx, "1002"), sipp.register(pbx, "1002")
    # The answering phone rings 500 ms first (-d: its <pause/>), so both forks are ringing when it answers.
    uas_a = sipp.uas("uas_answers", "call_uas.xml", "1002", answering, ["-d", "500"])
    uas_r = sipp.uas("uas_rings", "call_uas_noanswer.xml", "1002", ringing)
    uac = sipp.uac(pbx, "call_uac.xml", "1002")
    sipp.check(pbx, uac, uas_a, uas_r)
    assert len(uas_r.requests("CANCEL")) == 1, uas_r
    call_id = pbx.ended(200, "normal")
    cdr = pbx.wait_cdr(call_id)
    legs = dict(item.rsplit("=", 1) for item in cdr["legs"].split(","))
    assert sorted(legs.values()) == ["200", "487"], cdr
    assert any(f":{answering}" in contact and status == "200" for contact, status in legs.items()), cdr


def test_fork_busy_and_answer_is_answered(start_pbx, sipp):
    pbx = start_pbx()
    busy, answering = sipp.register(pbx, "1002"), sipp.register(pbx, "1002")
    uas_b = sipp.uas("uas_busy", "call_uas_busy.xml", "1002", busy)
    uas_a = sipp.uas("uas_answers", "call_uas.xml", "1002", answering, ["-d", "500"])
    uac = sipp.uac(pbx, "call_uac.xml", "1002")
    sipp.check(pbx, uac, uas_b, uas_a)
    call_id = pbx.ended(200, "normal")
    cdr = pbx.wait_cdr(call_id)
    legs = dict(item.rsplit("=", 1) for item in cdr["legs"].split(","))
    assert sorted(legs.values()) == ["200", "486"], cdr


# -- 4. re-INVITE: hold --------------------------------------------------------------------------------------


def test_reinvite_hold_is_relayed_with_the_relay_address(start_pbx, sipp):
    pbx = start_pbx()
    port = sipp.register(pbx, "1002")
    uas = sipp.uas("uas", "call_uas_reinvite.xml", "1002", port)
    uac = sipp.uac(pbx, "call_uac_hold.xml", "1002")
    sipp.check(pbx, uac, uas)
    pbx.ended(200, "normal")

    first, hold = uas.requests("INVITE")
    assert "a=sendonly" in body(hold), hold
    assert re.search(r"^c=IN IP4 127\.0\.0\.1\r?$", body(hold), flags=re.MULTILINE), hold
    assert sdp_port(hold) == sdp_port(first), "the relay port towards the callee changed on hold"
    assert pbx.rtp[0] <= sdp_port(hold) <= pbx.rtp[1], hold
    uac_sdp = [m for m in uac.messages("sent") if m.startswith("INVITE ")][-1]
    assert f"m=audio {sdp_port(uac_sdp)} " not in body(hold), "the caller's media port leaked to the callee"

    held = [m for m in uac.responses(200) if header(m, "CSeq") == ["3 INVITE"]]
    assert len(held) >= 1 and "a=recvonly" in body(held[0]), uac
    assert pbx.rtp[0] <= sdp_port(held[0]) <= pbx.rtp[1], held[0]
    uas_hold_answer = [m for m in uas.messages("sent") if "a=recvonly" in body(m)][-1]
    assert f"m=audio {sdp_port(uas_hold_answer)} " not in body(held[0]), "the callee's media port leaked"


# -- 5. malformed SDP ----------------------------------------------------------------------------------------


def test_malformed_sdp_gives_400_and_no_leg(start_pbx, sipp):
    pbx = start_pbx()
    port = sipp.register(pbx, "1002")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee:
        callee.bind(("127.0.0.1", port))  # 1002's registered contact: any INVITE would land here
        uac = sipp.uac(pbx, "call_uac_bad_sdp.xml", "1002")
        leaked = queued(callee)  # a leg's INVITE would have gone out before the 400
    assert not leaked, f"1002 got a request: {leaked!r}"
    sipp.check(pbx, uac)
    (rejected,) = uac.responses(400)
    assert "SDP" in rejected.split("\r\n", 1)[0], rejected
    call_id = pbx.ended(400)
    cdr = pbx.wait_cdr(call_id)
    assert (cdr["legs"], cdr["answer"]) == ("", None), cdr


# -- 6. a dialplan edit while the PBX runs -------------------------------------------------------------------

ROUTE_2000 = """{{% if call.dialed == "2000" %}}
dial {target} timeout=10
{{% endif %}}
hangup
"""


def test_dialplan_edit_routes_the_next_call(start_pbx, sipp):
    pbx = start_pbx(ROUTE_2000.format(target="1002"))
    port_1002, port_1003 = sipp.register(pbx, "1002"), sipp.register(pbx, "1003")

    first = sipp.uas("uas_1002", "call_uas.xml", "1002", port_1002)
    uac = sipp.uac(pbx, "call_uac.xml", "2000", name="uac1")
    sipp.check(pbx, uac, first)
    pbx.wait_for(r"Call \S+ ended: normal \(status 200, .*, 1001@default -> 2000 answered by 1002")

    pbx.write_dialplan(ROUTE_2000.format(target="1003"))
    second = sipp.uas("uas_1003", "call_uas.xml", "1003", port_1003)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as old_callee:
        old_callee.bind(("127.0.0.1", port_1002))  # 1002 is still registered here
        uac = sipp.uac(pbx, "call_uac.xml", "2000", name="uac2")
        stale = queued(old_callee)
    assert not stale, f"the second call still went to 1002: {stale!r}\n{pbx.tail()}"
    sipp.check(pbx, uac, second)
    pbx.wait_for(r"Call \S+ ended: normal \(status 200, .*, 1001@default -> 2000 answered by 1003")
    pbx.wait_for(r"Call \S+ ended: normal \(status 200,", count=2)


# -- 7. a hostile display name -------------------------------------------------------------------------------

HOSTILE_DIALPLAN = """set shown={{ call.display_name }}
dial {{ call.dialed }} timeout=10 callerid={{ call.display_name }}
hangup
"""

# (the From display name as written on the wire, what the callee must see). In the folded case the
# continuation line starts with [field4] (a tab): SIPp strips the leading blanks of scenario lines.
HOSTILE_NAMES = {
    "quotes": (r'"x\" hangup=\"1"', 'x" hangup="1'),
    "semicolon": (r'"\"; dial 1003"', '"; dial 1003'),
    "folded line": ('"1003\n[field4]dial 1003"', "1003 dial 1003"),
    "escaped tab": ('"1003\\\thangup 404"', "1003 hangup 404"),
    "template": (
        '"{{ 7*7 }} {% if true %}dial 1003{% endif %}"',
        "{{ 7*7 }} {% if true %}dial 1003{% endif %}",
    ),
    "token": ("hangup", "hangup"),
}


def unquote(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted[1:-1])


@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_hostile_display_name_does_not_change_routing(start_pbx, sipp, tmp_path, case):
    wire, shown = HOSTILE_NAMES[case]
    pbx = start_pbx(HOSTILE_DIALPLAN)
    port_1002, port_1003 = sipp.register(pbx, "1002"), sipp.register(pbx, "1003")
    scenario = tmp_path / "call_uac_hostile.xml"
    scenario.write_text((SCENARIOS / "call_uac.xml").read_text().replace('"Caller [field0]"', wire))

    uas = sipp.uas("uas", "call_uas.xml", "1002", port_1002)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", port_1003))
        uac = sipp.uac(pbx, scenario, "1002", extra_fields=("\t", "end"))
        stray = queued(other)
    assert not stray, f"1003 got a request: {stray!r}\n{pbx.tail()}"
    sipp.check(pbx, uac, uas)
    pbx.wait_for(r"Call \S+ ended: normal \(status 200, .*, 1001@default -> 1002 answered by 1002")
    assert "Dialplan error" not in pbx.process.output

    (invite,) = uas.requests("INVITE")
    (from_,) = header(invite, "From")
    match = re.fullmatch(r'("(?:[^"\\\r\n\t]|\\.)*") <sip:1001@localhost>;tag=[\w.-]+', from_)
    assert match is not None, f"unexpected From at the callee: {from_!r}"
    assert " ".join(unquote(match.group(1)).split()) == shown, from_


# -- 8. a trusted peer: authenticated by its source address --------------------------------------------------

PEER_CONFIG = """
[[tenants.default.peers]]
name = "gw"
networks = ["127.0.0.2/32"]
extension = "1003"
"""


def test_trusted_peer_calls_without_a_challenge_others_are_challenged(start_pbx, sipp):
    """An INVITE from 127.0.0.2 (the peer) gets no 407 and calls as 1003; one from 127.0.0.1 is challenged."""
    pbx = start_pbx(extra=PEER_CONFIG)
    port = sipp.register(pbx, "1002")

    uas = sipp.uas("uas_peer", "call_uas.xml", "1002", port)
    uac = sipp.uac(pbx, "call_uac_peer.xml", "1002", caller="5555", name="peer", ip="127.0.0.2")
    sipp.check(pbx, uac, uas)
    assert uac.responses(407) == [], uac
    call_id = pbx.ended(200, "normal")
    pbx.wait_for(rf"Call {re.escape(call_id)} ended: .*, 1003@default \(peer gw\) -> 1002 answered by 1002")
    cdr = pbx.wait_cdr(call_id)
    assert (cdr["caller"], cdr["dialed"], cdr["answered_by"]) == ("1003", "1002", "1002"), cdr

    # Anyone else, even with the peer's From user, is challenged (and a phone with credentials still calls).
    refused = sipp.uac(pbx, "call_uac_peer.xml", "1002", caller="1003", name="not_peer")
    assert refused.wait() != 0 and len(refused.responses(407)) == 1, refused
    uas = sipp.uas("uas_phone", "call_uas.xml", "1002", port)
    uac = sipp.uac(pbx, "call_uac.xml", "1002", name="phone")
    sipp.check(pbx, uac, uas)
    assert len(uac.responses(407)) == 1, uac
    pbx.wait_for(r"Call \S+ ended: normal \(status 200, .*, 1001@default -> 1002 answered by 1002")
