"""Helpers of bench/register_bench.py and bench/calls_bench.py that bench/common.py does not have.

- `write_users_csv`, `extensions_toml`: SIPp injection files (`N;pw;[authentication ...]`, PEERS.md) and the
  matching `[tenants.default.extensions.N]` tables (password `pwN`).
- `start_pbx_with`: `twistd -n pbx` on common.py's benchmark config (UDP only, sip_trace off) plus extra TOML
  (extensions, keep-alives off, an RTP port range), pinned to a core, ready once it listens and has loaded
  its registrations.
- `sipp_command`, `run_sipp_once`: one bounded SIPp run (a registration before a UAS starts, for example).
- `run_sipp_group`: one step with several kinds of SIPp processes at once (UAS processes first, then the
  UACs that drive the rate), measured like `common.run_sipp_step`: the server's CPU and peak RSS (psutil),
  the load generator's exact CPU (rusage of every SIPp child, UAS included), SIPp's final counts of the UACs.
- `PySpy` and `summarise_raw`: record a profile of a running server with py-spy and list its hot spots by
  self and total time.

Everything binds to loopback and every process started here is bounded (`-m`, `-timeout`) and reaped or
killed before the function returns, also on errors and Ctrl-C.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from common import (
    HOST,
    REPO,
    SIPP_BUFFER,
    ResourceSampler,
    ServerProcess,
    SippStats,
    StepResult,
    _wait_rusage,
    executable,
    free_port,
    markdown_table,
    pinned,
    read_sipp_stat,
    source_version,
    write_pbx_config,
)

DIALPLAN = REPO / "dialplans" / "default" / "main.j2"

# -- users and configuration ---------------------------------------------------------------------------------


def password(number: int | str) -> str:
    return f"pw{number}"


def extensions_toml(numbers: Iterable[int], tenant: str = "default") -> str:
    """`[tenants.TENANT.extensions.N]` tables with password `pwN`."""
    return "".join(
        f'[tenants.{tenant}.extensions.{n}]\nname = "Load {n}"\npassword = "{password(n)}"\n\n'
        for n in numbers
    )


def user_row(number: int | str, *extra: object) -> str:
    """A SIPp CSV line `N;pwN;[authentication username=N password=pwN]` (PEERS.md: the keyword is a field)."""
    pw = password(number)
    return ";".join([str(number), pw, f"[authentication username={number} password={pw}]", *map(str, extra)])


def write_users_csv(path: Path, rows: Iterable[str]) -> Path:
    """A SEQUENTIAL SIPp injection file of `rows` (see `user_row`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
    return path


def start_pbx_with(
    directory: Path,
    port: int,
    extra: str,
    *,
    cpu: int | None = 0,
    dialplan: Path | None = DIALPLAN,
    timeout: float = 120.0,
    code: Path | None = None,
) -> ServerProcess:
    """`twistd -n pbx` on UDP `port` with common.py's benchmark config plus `extra` TOML, pinned to `cpu`.

    The tenant's dialplan is a copy of `dialplan` (default: the shipped dialplans/default/main.j2, from `code`
    when given).

    With `code` (a checkout of the project, e.g. a `git worktree` of an older commit), that tree comes first
    on PYTHONPATH, so `twistd pbx` runs its `pbx` package rather than the installed one; the server prints
    where `pbx` was imported from (`PBX_CODE_LINE`) and start-up fails unless it is inside `code`.

    Ready when it listens and its location service has loaded (so a REGISTER is answered at once).
    """
    # A tree older than `[edge]` (e.g. compare_bench's base 008c440) refuses the section.
    config = write_pbx_config(
        directory, port, edge=code is None or (code / "pbx" / "config" / "edge.py").exists()
    )
    if code is not None and dialplan == DIALPLAN:
        dialplan = code / DIALPLAN.relative_to(REPO)
    if dialplan is not None:
        shutil.copyfile(dialplan, directory / "dialplans" / "default" / "main.j2")
    with config.open("a") as f:
        f.write("\n" + extra)
    args = ["--nodaemon", "--pidfile=", "pbx", "--config", str(config)]
    env = None
    if code is None:
        cmd = [executable("twistd"), *args]
    else:
        cmd = [sys.executable, "-c", _TWISTD_SHOWING_CODE, *args]
        env = {
            "PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        }
    server = ServerProcess("pbx", pinned(cmd, cpu), cwd=directory, env=env)
    try:
        if code is not None:
            server.wait_for(PBX_CODE_LINE, timeout)
            loaded = pbx_code(server)
            if loaded is None or not loaded.is_relative_to(code.resolve()):
                raise RuntimeError(f"twistd loaded pbx from {loaded}, not from {code}")
        server.wait_for(r"SIP listening on", timeout)
        server.wait_for(r"Location service loaded \d+ bindings", timeout)
    except BaseException:
        server.stop()
        raise
    return server


# `twistd` that first says where the `pbx` package comes from (start_pbx_with(code=...)).
_TWISTD_SHOWING_CODE = (
    "import sys, pbx; print('pbx code from', pbx.__file__, flush=True); "
    "from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
)
PBX_CODE_LINE = r"^pbx code from (\S+)$"


def pbx_code(server: ServerProcess) -> Path | None:
    """The directory of the `pbx` package a server started with `start_pbx_with(code=...)` imported."""
    for line in server.output.splitlines():
        found = re.match(PBX_CODE_LINE, line)
        if found:
            return Path(found.group(1)).resolve().parent
    return None


def stop_on_signals() -> None:
    """SIGTERM and SIGINT (even when a shell started us with SIGINT ignored) raise KeyboardInterrupt, so that
    the `finally` blocks stop every server and SIPp process this benchmark started."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def wait_quiet(max_wait: float, busy_percent: float = 25.0, quiet_seconds: int = 3) -> float:
    """Wait (at most `max_wait` s) until every core has been below `busy_percent` for `quiet_seconds` s in a
    row: other benchmarks or test runs on the machine would distort the figures. Returns the time waited."""
    started = time.monotonic()
    quiet = 0
    while quiet < quiet_seconds and time.monotonic() - started < max_wait:
        per_core = psutil.cpu_percent(interval=1.0, percpu=True)
        quiet = quiet + 1 if max(per_core) < busy_percent else 0
    return time.monotonic() - started


def quiet_before_step(max_wait: float) -> str:
    """`wait_quiet` before a step; a note for the output ("" when the machine was quiet at once)."""
    if max_wait <= 0:
        return ""
    waited = wait_quiet(max_wait)
    if waited >= max_wait:
        return f"machine still busy after {max_wait:.0f} s"
    return f"waited {waited:.0f} s for a quiet machine" if waited > 4.5 else ""


def working_tree() -> str:
    """`common.source_version()` plus a fingerprint of the uncommitted pbx/ changes (read-only git commands):
    other engineers change the working tree between runs, and figures belong to the code they measured."""
    version = source_version()
    try:
        diff = subprocess.run(
            ["git", "--no-optional-locks", "diff", "HEAD", "--", "pbx"],
            cwd=REPO,
            capture_output=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return version
    if not diff:
        return version
    lines = diff.count(b"\n")
    return f"{version} (diff {hashlib.sha1(diff).hexdigest()[:10]}, {lines} lines)"


# -- SIPp ----------------------------------------------------------------------------------------------------


_RESERVED: set[int] = set()


def reserve_port(port: int) -> int:
    """Keep `port` out of what `sipp_ports` hands out (a UAS port chosen beforehand)."""
    _RESERVED.add(port)
    return port


def sipp_ports(local_port: int | None = None) -> tuple[int, int]:
    """A SIPp signalling port (unless given) and a media port N such that N and N + 2 are free as well.

    SIPp binds its -mp port and that port + 2 (audio and video); two SIPp processes started at the same time
    with ports from `common.free_port` can collide there ("Unable to bind main socket, errno = 98"). Ports
    handed out here are never handed out again by this process.
    """
    for _ in range(500):
        port = local_port if local_port is not None else free_port(tcp=False)
        media = free_port(tcp=False)
        wanted = {port, media, media + 2}
        if len(wanted) < 3 or media + 2 > 65000 or (wanted - {local_port}) & _RESERVED:
            continue
        if udp_port_taken(media + 2):
            continue
        _RESERVED.update(wanted)
        return port, media
    raise RuntimeError("no free ports for SIPp")


def sipp_command(
    scenario: Path,
    *,
    local_port: int | None = None,
    count: int,
    limit: float,
    remote: str | None = None,
    rate: float | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """A bounded SIPp command line on loopback: `-m count`, `-timeout limit`, its own ports (`sipp_ports`), a
    4 MB socket buffer."""
    local_port, media_port = sipp_ports(local_port)
    cmd = [executable("sipp")]
    if remote is not None:
        cmd.append(remote)
    cmd += [
        "-sf", str(scenario), "-t", "u1", "-i", HOST, "-p", str(local_port), "-mp", str(media_port),
        "-m", str(count), "-timeout", f"{math.ceil(limit)}s", "-buff_size", str(SIPP_BUFFER), "-nostdin",
    ]  # fmt: skip
    if rate is not None:
        cmd += ["-r", str(rate)]
    return cmd + list(extra)


def run_sipp_once(
    cmd: Sequence[str], log: Path, *, cpu: int | None = 1, timeout: float = 60.0
) -> subprocess.CompletedProcess[bytes]:
    """Run one SIPp command to its end (killed after `timeout` s); its output goes to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(pinned(cmd, cpu), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        except BaseException:
            proc.kill()
            proc.wait(10)
            raise
    return subprocess.CompletedProcess(list(cmd), proc.returncode, b"", b"")


def udp_port_taken(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def wait_udp_bound(
    ports: Iterable[int], procs: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0
) -> None:
    """Wait until something listens on each UDP port (the SIPp UAS processes have started)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while not udp_port_taken(port):
            dead = [p.args for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"SIPp exited before binding its port: {dead}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing bound UDP port {port} within {timeout} s")
            time.sleep(0.02)


def drain_udp(ports: Sequence[int], quiet: float = 2.0, max_wait: float = 45.0) -> tuple[float, int]:
    """Bind the (free) UDP `ports` and swallow whatever arrives until `quiet` s pass without a datagram.

    Between two call steps the PBX may still retransmit INVITEs or BYEs of calls left over from an overloaded
    step towards the UAS ports; a new UAS would take them for new calls (and stop early at its -m).
    Unanswered, they end within Timer B/F (32 s). Returns (seconds waited, datagrams swallowed).
    """
    started = time.monotonic()
    socks = []
    try:
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.bind((HOST, port))
            sock.setblocking(False)
        swallowed = 0
        last = time.monotonic()
        while time.monotonic() - last < quiet and time.monotonic() - started < max_wait:
            got = False
            for sock in socks:
                try:
                    while sock.recv(65535):
                        swallowed += 1
                        got = True
                except BlockingIOError:
                    pass
            if got:
                last = time.monotonic()
            time.sleep(0.05)
    finally:
        for sock in socks:
            sock.close()
    return time.monotonic() - started, swallowed


@dataclass
class SippRole:
    """One SIPp process of a step: its command, the calls it must complete and its stat file."""

    name: str
    cmd: list[str]
    count: int
    stat: Path
    port: int = 0  # the local port (for a UAS: waited on before the UACs start)
    errors: Path | None = None  # its -error_file (-trace_err), read for stale-nonce failures


@dataclass
class LoadStep(StepResult):
    """`common.StepResult` plus the failed calls whose last answer was a 401/407 with `stale=true`."""

    stale: int = 0
    other_load: float = float("nan")  # % of the server's core busy with other processes during the step

    def held_but_stale(self, max_failures: float = 0.001, min_pace: float = 0.97) -> bool:
        """`held`, counting the stale-nonce failures as successes (see RESULTS-registrar-calls.md)."""
        failures = 1.0 - (self.stats.successful + self.stale) / self.expected if self.expected else 1.0
        return (
            self.server_alive
            and self.stats.created >= self.expected
            and failures < max_failures
            and self.achieved >= self.rate * min_pace
        )


def held_text(r: LoadStep, max_failures: float) -> str:
    """yes: held; yes*: held once the stale-nonce failures are excused; NO: not held."""
    if r.held(max_failures):
        return "yes"
    if r.held_but_stale(max_failures):
        return "yes*"
    return "NO" + ("" if r.server_alive else " (died)")


def highest_held(
    steps: Sequence[LoadStep], repeat: int, max_failures: float, *, excuse_stale: bool
) -> LoadStep | None:
    """The highest rate whose every run (at least `repeat`) was held, its costlier run; None if none was."""
    by_rate: dict[int, list[LoadStep]] = {}
    for step in steps:
        by_rate.setdefault(step.rate, []).append(step)
    best = None
    for rate in sorted(by_rate):
        runs = by_rate[rate]
        ok = [r.held_but_stale(max_failures) if excuse_stale else r.held(max_failures) for r in runs]
        if len(runs) >= repeat and all(ok):
            best = max(runs, key=lambda r: r.server_cpu)
    return best


def count_stale(path: Path) -> int:
    """Calls SIPp aborted on a 401/407 challenge with stale=true (from a -trace_err file)."""
    if not path.exists():
        return 0
    events = path.read_text(errors="replace").split("Aborting call on unexpected message")[1:]
    return sum(1 for event in events if "stale=true" in event.split("Dead call", 1)[0])


@dataclass
class GroupResult:
    """A step of `run_sipp_group`: the UACs' result (common.StepResult) and the UASs' counts."""

    step: LoadStep
    uas: SippStats = field(default_factory=SippStats)
    rss_start_mb: float = 0.0


def _sum_stats(paths: Iterable[Path]) -> SippStats:
    total = SippStats()
    for path in paths:
        one = read_sipp_stat(path)
        total.created += one.created
        total.successful += one.successful
        total.failed += one.failed
        total.retransmissions += one.retransmissions
        total.response_ms_weighted += one.response_ms_weighted
    return total


class CoreLoad:
    """How busy one core was between `start` and `stop` (% of the core, from /proc/stat via psutil)."""

    def __init__(self, core: int | None) -> None:
        self.core = core
        self._start: tuple[float, float] | None = None

    def _sample(self) -> tuple[float, float] | None:
        if self.core is None:
            return None
        times = psutil.cpu_times(percpu=True)[self.core]
        idle = times.idle + getattr(times, "iowait", 0.0)
        return sum(times) - idle, sum(times)

    def start(self) -> CoreLoad:
        self._start = self._sample()
        return self

    def busy_percent(self) -> float:
        end = self._sample()
        if self._start is None or end is None or end[1] <= self._start[1]:
            return float("nan")
        return 100.0 * (end[0] - self._start[0]) / (end[1] - self._start[1])


def run_sipp_group(
    server: ServerProcess,
    rate: int,
    seconds: float,
    workdir: Path,
    clients: Sequence[SippRole],
    servers: Sequence[SippRole] = (),
    *,
    cpu: int | None = 1,
    server_core: int | None = None,
    limit: float,
    grace: float = 10.0,
) -> GroupResult:
    """Run the UAS processes (`servers`), wait until they listen, then the UACs (`clients`), and measure.

    Every process is bounded by its own `-m` and `-timeout`; the UACs are reaped (killed after `limit` + 5 s),
    then the UASs get `grace` seconds to finish their last calls before they are killed. The step's result
    counts the UACs' calls; the load generator's CPU is every SIPp process's (UAS included) over the UACs'
    wall time. With `server_core`, `LoadStep.other_load` is how busy that core was with anything but the
    server (other benchmarks, test runs): a step with much of it is not comparable.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    uas_procs: list[subprocess.Popen[bytes]] = []
    uac_procs: list[subprocess.Popen[bytes]] = []

    def spawn(role: SippRole) -> subprocess.Popen[bytes]:
        role.stat.unlink(missing_ok=True)
        log = (workdir / f"{role.name}.out").open("wb")
        try:
            return subprocess.Popen(pinned(role.cmd, cpu), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()

    loadgen_cpu_s = 0.0
    sampler: ResourceSampler | None = None
    started = elapsed = 0.0
    try:
        for role in servers:
            uas_procs.append(spawn(role))
        wait_udp_bound([role.port for role in servers], uas_procs)
        sampler = ResourceSampler(server.pid).start()
        core = CoreLoad(server_core).start()
        rss_start = sampler.rss_max
        started = time.monotonic()
        for role in clients:
            uac_procs.append(spawn(role))
        loadgen_cpu_s += _wait_rusage(uac_procs, started + limit + 5)
        elapsed = time.monotonic() - started
        sampler.stop()
        core_busy = core.busy_percent()
        loadgen_cpu_s += _wait_rusage(uas_procs, time.monotonic() + grace)
    except BaseException:
        for proc in uac_procs + uas_procs:
            if proc.returncode is None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
        if sampler is not None:
            sampler.stop()
        raise
    step = LoadStep(
        server=server.name,
        rate=rate,
        seconds=seconds,
        processes=len(clients),
        expected=sum(role.count for role in clients),
        stats=_sum_stats(role.stat for role in clients),
        elapsed=elapsed,
        server_cpu=sampler.cpu_percent,
        server_rss_mb=sampler.rss_max / 2**20,
        loadgen_cpu=100.0 * loadgen_cpu_s / elapsed if elapsed > 0 else 0.0,
        server_alive=server.alive(),
        stale=sum(count_stale(role.errors) for role in clients if role.errors is not None),
        other_load=max(0.0, core_busy - sampler.cpu_percent),
    )
    return GroupResult(step, _sum_stats(role.stat for role in servers), rss_start / 2**20)


def split_rate(rate: int, per_process: int) -> list[int]:
    """`rate` split evenly over ceil(rate / per_process) processes."""
    n = max(1, math.ceil(rate / per_process))
    return [rate // n + (1 if i < rate % n else 0) for i in range(n)]


# -- py-spy --------------------------------------------------------------------------------------------------


class PySpy:
    """`py-spy record --pid N -d S -f raw -o FILE` in the background (pinned to `cpu`); `wait` reaps it."""

    def __init__(
        self, pid: int, seconds: int, out: Path, *, cpu: int | None = 1, rate: int = 100, gil: bool = False
    ) -> None:
        """`gil`: sample only the thread holding the GIL (py-spy --gil): Python's CPU, not threads waiting
        in a system call (the SQLite worker in fsync) nor idle ones."""
        self.out = out
        self.seconds = seconds
        cmd = [
            executable("py-spy"), "record", "--pid", str(pid), "-d", str(seconds), "-r", str(rate),
            "-f", "raw", "-o", str(out), *(["--gil"] if gil else []),
        ]  # fmt: skip
        self._log = out.with_name(out.name + ".py-spy.log")
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(pinned(cmd, cpu), stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def wait(self, timeout: float | None = None) -> bool:
        """Reap py-spy (killed if still running after `timeout`); whether it wrote its profile."""
        try:
            self.proc.wait(self.seconds + 30 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.out.exists() and self.out.stat().st_size > 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def log(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""


@dataclass
class Profile:
    """py-spy samples per function: `samples` busy ones (all threads), `idle` ones left out."""

    samples: int
    idle: int
    self_time: Counter[str]
    total_time: Counter[str]
    threads: Counter[str] = field(default_factory=Counter)
    by_file: Counter[str] = field(default_factory=Counter)  # samples with a frame of that file (inclusive)


# Frames every busy sample of the reactor passes through (twistd, the reactor loop, its logging context):
# left out of the "total time" table, where they would only say 100 %.
_SCAFFOLD = (
    "<module> (twistd", "<module> (<string>", "run (scripts/twistd.py", "run (application/app.py", "runApp (",
    "ApplicationRunner.",
    "UnixApplicationRunner.", "runReactorWithLogging (", "ReactorBase.run (", "ReactorBase.mainLoop (",
    "EPollReactor.doPoll (", "callWithLogger (", "callWithContext (", "ThreadedContextTracker.",
    "ContextTracker.", "_PollLikeMixin._doReadOrWrite (", "Thread._bootstrap", "Thread.run (",
    "ThreadWorker.__init__.<locals>.work (", "react (", "_runReactor (",
)  # fmt: skip


def _frame_name(frame: str) -> str:
    """py-spy's `function (path/to/file.py:LINE)` as `function (dir/file.py)`: one entry per function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0] if where else ""
    short = "/".join(Path(path).parts[-2:]) if path else ""
    return f"{name} ({short})" if short else name


def _is_idle(frames: list[str]) -> bool:
    """A thread waiting: the reactor in epoll_wait, a thread-pool worker waiting for work, the SQLite store's
    worker in its SimpleQueue.get (C code: its loop is the leaf frame)."""
    leaf = frames[-1]
    return leaf.startswith(("EPollReactor.doPoll (", "_Worker._loop (store/sqlite.py)")) or any(
        f.startswith("Queue.get (") for f in frames
    )


def summarise_raw(path: Path) -> Profile:
    """Self and total samples per function from py-spy's raw (collapsed stack) output, idle waits left out."""
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    samples = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [_frame_name(f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if _is_idle(frames):
            idle += count
            continue
        samples += count
        threads["worker threads" if frames[0].startswith("Thread._bootstrap") else "reactor thread"] += count
        self_time[frames[-1]] += count
        useful = {name for name in frames if not name.startswith(_SCAFFOLD)}
        for name in useful:
            total_time[name] += count
        for where in {name.rpartition(" (")[2].rstrip(")") for name in useful}:
            by_file[where] += count
    return Profile(samples, idle, self_time, total_time, threads, by_file)


# Areas of the PBX's work, each found by a substring of a frame anywhere on a sample's stack (inclusive: a
# sample may count for several areas). Frames are py-spy's `function (path/file.py:LINE)`.
AREAS: dict[str, tuple[str, ...]] = {
    "logging (Logger.emit, log.msg, the file observer)": (
        "Logger.emit (", "LogPublisher.__call__ (", "LogPublisher.msg (",
    ),
    "digest auth (pbx/sip/auth.py, digest.py)": ("pbx/sip/auth.py", "pbx/sip/digest.py"),
    "parsing (parser.py, headers.py, uri.py)": ("pbx/sip/parser.py", "pbx/sip/headers.py", "pbx/sip/uri.py"),
    "after the SQLite commit (store callbacks: 200, log)": ("SqliteLocationStore._committed (",),
    "SQLite worker thread": ("_transact (",),
    "responding (ServerTransaction.respond)": ("_ServerTransaction.respond (",),
    "UDP sendto (Port.write)": ("Port.write (",),
    "random tokens (secrets.token_*)": ("token_bytes (", "token_hex ("),
    "tenant lookup (adapters.domain_lookup)": ("domain_lookup.",),
    "dialplan (B2BUA.render)": ("B2BUA.render (",),
    "dialplan context (B2BUA.context_for)": ("B2BUA.context_for (",),
    "media relay (pbx/media/relay.py)": ("pbx/media/relay.py",),
    "RTP sockets opened/closed (listenUDP, stopListening)": (
        "listenUDP (", "stopListening (", "connectionLost (twisted/internet/udp.py",
    ),
    "SDP (pbx/sip/sdp.py)": ("pbx/sip/sdp.py",),
    "CDR (write_cdr)": ("write_cdr (",),
}  # fmt: skip


def area_table(path: Path) -> tuple[int, list[list[object]]]:
    """Busy samples and rows (area, samples, % of busy) of a py-spy raw file, by `AREAS`, largest first."""
    counts: Counter[str] = Counter()
    busy = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [f for f in stack.split(";") if f]
        if not frames or _is_idle([_frame_name(f) for f in frames]):
            continue
        busy += count
        for area, needles in AREAS.items():
            if any(needle in frame for frame in frames for needle in needles):
                counts[area] += count
    return busy, [[area, n, f"{100 * n / (busy or 1):.1f}"] for area, n in counts.most_common()]


def profile_tables(
    profile: Profile, top: int = 15, top_total: int = 30
) -> tuple[list[list[object]], list[list[object]], list[list[object]]]:
    """Rows (name, samples, %) of the hot spots by self time, by total time and by source file (inclusive)."""

    def rows(counter: Counter[str], n_rows: int) -> list[list[object]]:
        n = profile.samples or 1
        return [[name, count, f"{100 * count / n:.1f}"] for name, count in counter.most_common(n_rows)]

    return rows(profile.self_time, top), rows(profile.total_time, top_total), rows(profile.by_file, top_total)


def print_profile(profile: Profile, path: Path) -> None:
    """The profile tables a benchmark prints after its ramp: by self time, total time, file and area."""
    by_self, by_total, by_file = profile_tables(profile)
    threads = ", ".join(f"{k} {v}" for k, v in profile.threads.items())
    print(
        f"\nProfile of the PBX (py-spy, {path}): {profile.samples} busy samples ({threads});",
        f"{profile.idle} idle ones (epoll_wait, idle thread pool) left out. By self time:",
    )
    print(markdown_table(["function", "samples", "% of busy"], by_self))
    print("\nBy total time (the function and everything it calls; the reactor's own loop left out):")
    print(markdown_table(["function", "samples", "% of busy"], by_total))
    print("\nBy source file (samples with any frame of the file on the stack):")
    print(markdown_table(["file", "samples", "% of busy"], by_file))
    busy, areas = area_table(path)
    print(f"\nBy area (sip_load.AREAS; inclusive, so they overlap; {busy} busy samples):")
    print(markdown_table(["area", "samples", "% of busy"], areas))
