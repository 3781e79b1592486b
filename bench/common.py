"""Shared helpers of the benchmarks in bench/: start a server, drive SIPp at a rate, measure, print a table.

- `ServerProcess` runs a server (optionally pinned to a CPU with `taskset`), collects its output and waits
  for a readiness line; `start_pbx` (`twistd -n pbx`, UDP only, sip_trace off) and `start_bare` build on it.
- `run_sipp_step` holds one rate for N seconds with enough SIPp processes (each bounded by `-m` and
  `-timeout`, `-buff_size 4194304`), samples the server's CPU and RSS with psutil meanwhile, takes the load
  generator's exact CPU from the children's rusage, and reads SIPp's final counts from `-trace_stat` files.
- `markdown_table` prints results.

Everything binds to loopback; every process started here is killed by `ServerProcess.stop` / the step
itself, also on errors and Ctrl-C.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SCENARIOS = BENCH / "scenarios"
HOST = "127.0.0.1"
SIPP_BUFFER = 4194304  # PEERS.md: with SIPp's default 64 KB socket buffer, responses are dropped at SIPp


def executable(name: str) -> str:
    """A console script next to this interpreter (a venv's twistd), else one on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found (next to {sys.executable} or on PATH)")
    return found


def free_port(host: str = HOST, *, udp: bool = True, tcp: bool = True) -> int:
    """A port that is free on `host` for UDP and/or TCP (below 65000)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as first:
            first.bind((host, 0))
            port = first.getsockname()[1]
            if udp and tcp:
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
                        second.bind((host, port))
                except OSError:
                    continue
            if port < 65000:
                return port
    raise RuntimeError("no free port")


def pinned(cmd: Sequence[str], cpu: int | None) -> list[str]:
    """`cmd` run on one CPU core with taskset (taskset execs it: the pid stays the command's)."""
    if cpu is None:
        return list(cmd)
    return [executable("taskset"), "-c", str(cpu), *cmd]


class ServerProcess:
    """A server subprocess whose output is collected line by line."""

    def __init__(
        self, name: str, cmd: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=str(cwd) if cwd else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        )
        self.ps = psutil.Process(self.proc.pid)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                if len(self.lines) > 20000:  # a chatty server must not eat the memory of the benchmark
                    del self.lines[:10000]
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0, count: int = 1) -> None:
        """Wait until `count` output lines match; raise with the output on timeout or exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for line in self.lines if regex.search(line)) < count:
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.output[-3000:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(
                        f"{self.name}: timed out waiting for {pattern!r}:\n{self.output[-3000:]}"
                    )
                self._cond.wait(min(left, 0.5))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._reader.join(5)


def write_pbx_config(directory: Path, port: int, *, host: str = HOST, edge: bool = True) -> Path:
    """A PBX config listening on UDP only, sip_trace off (the benchmark set-up); `edge`: with the raised
    `[edge]` limits (False for a build older than `[edge]`, which refuses the unknown section). With
    PBX_BENCH_POLL_WINDOW=SECONDS in the environment, `[pbx] poll_window` is set to it (builds from session 11
    on; older ones refuse the key)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dialplans" / "default").mkdir(parents=True, exist_ok=True)
    path = directory / "pbx.toml"
    window = os.environ.get("PBX_BENCH_POLL_WINDOW", "")  # pbx.poll_window, e.g. 0.02 (bench/wakeup_bench.py)
    text = (
        f'[pbx]\ndata_dir = "data"\nsip_trace = false\n{f"poll_window = {window}" if window else ""}\n\n'
        f'[[sip.listen]]\ntransport = "udp"\nhost = "{host}"\nport = {port}\n\n'
        f'[tenants.default]\ndomain = "localhost"\naliases = ["{host}"]\n\n'
    )
    if edge:
        # One load generator is one source: the per-source limits before parsing would block it (their
        # behaviour is tested in tests/e2e/test_flood.py and their cost measured by bench/admission_bench.py).
        text += (
            "[edge]\nrate = 1000000\nburst = 1000000\nconnection_rate = 100000\nconnection_burst = 100000\n"
        )
    path.write_text(text)
    return path


def start_pbx(directory: Path, port: int, *, cpu: int | None = 0, gc_report: bool = False) -> ServerProcess:
    """`twistd -n pbx` on UDP `port`, pinned to `cpu`, ready to answer.

    With `gc_report`, twistd runs through bench/twistd_gc.py, which prints `GC pause` lines for collections
    over 20 ms and `GC totals` at exit.
    """
    config = write_pbx_config(directory, port)
    twistd = [sys.executable, str(BENCH / "twistd_gc.py")] if gc_report else [executable("twistd")]
    cmd = [*twistd, "--nodaemon", "--pidfile=", "pbx", "--config", str(config)]
    server = ServerProcess("pbx", pinned(cmd, cpu), cwd=directory)
    try:
        server.wait_for(r"SIP listening on")
    except BaseException:
        server.stop()
        raise
    return server


def start_bare(port: int, *, cpu: int | None = 0) -> ServerProcess:
    """bench/bare_responder.py on UDP `port`, pinned to `cpu`."""
    cmd = [sys.executable, str(BENCH / "bare_responder.py"), "--host", HOST, "--port", str(port)]
    server = ServerProcess("bare", pinned(cmd, cpu))
    try:
        server.wait_for(r"bare responder listening")
    except BaseException:
        server.stop()
        raise
    return server


class ResourceSampler:
    """Samples one process's CPU time and RSS every `interval` seconds in a thread, between start and stop."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self._ps = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.rss_max = 0
        self.rss_end = 0
        self._cpu_start = 0.0
        self._t_start = 0.0
        self.cpu_percent = 0.0  # of one core, averaged from start to stop

    def _cpu(self) -> float:
        times = self._ps.cpu_times()
        return times.user + times.system

    def _sample_rss(self) -> None:
        rss = self._ps.memory_info().rss
        self.rss_max = max(self.rss_max, rss)
        self.rss_end = rss

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._sample_rss()
            except psutil.Error:
                return

    def start(self) -> ResourceSampler:
        self._cpu_start = self._cpu()
        self._t_start = time.monotonic()
        self._sample_rss()
        self._thread.start()
        return self

    def stop(self) -> ResourceSampler:
        self._stop.set()
        self._thread.join(5)
        try:
            elapsed = time.monotonic() - self._t_start
            self.cpu_percent = 100.0 * (self._cpu() - self._cpu_start) / elapsed if elapsed > 0 else 0.0
            self._sample_rss()
        except psutil.Error:
            pass
        return self


@dataclass
class SippStats:
    """SIPp's final cumulative counts (`-trace_stat`), summed over processes."""

    created: int = 0
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    response_ms_weighted: float = 0.0  # sum of (mean response time * successful) per process

    @property
    def response_ms(self) -> float:
        return self.response_ms_weighted / self.successful if self.successful else float("nan")


def _sipp_time_ms(text: str) -> float:
    """SIPp's HH:MM:SS:uuuuuu (or HH:MM:SS) as milliseconds."""
    parts = text.strip().split(":")
    try:
        h, m, s = (int(p) for p in parts[:3])
        micro = int(parts[3]) if len(parts) > 3 else 0
    except ValueError:
        return float("nan")
    return (h * 3600 + m * 60 + s) * 1000.0 + micro / 1000.0


def read_sipp_stat(path: Path) -> SippStats:
    """The last row of a `-trace_stat` CSV file (semicolon separated, cumulative columns "(C)")."""
    stats = SippStats()
    if not path.exists():
        return stats
    lines = [line.rstrip("\n").split(";") for line in path.read_text(errors="replace").splitlines() if line]
    if len(lines) < 2:
        return stats
    row = dict(zip(lines[0], lines[-1], strict=False))

    def number(key: str) -> int:
        try:
            return int(float(row.get(key, "0") or 0))
        except ValueError:
            return 0

    stats.created = number("TotalCallCreated")
    stats.successful = number("SuccessfulCall(C)")
    stats.failed = number("FailedCall(C)")
    stats.retransmissions = number("Retransmissions(C)")
    mean = _sipp_time_ms(row.get("ResponseTime1(C)", ""))
    stats.response_ms_weighted = mean * stats.successful if not math.isnan(mean) else 0.0
    return stats


@dataclass
class StepResult:
    """One rate held for one step against one server."""

    server: str
    rate: int
    seconds: float
    processes: int
    expected: int
    stats: SippStats
    elapsed: float
    server_cpu: float
    server_rss_mb: float
    loadgen_cpu: float
    server_alive: bool
    notes: list[str] = field(default_factory=list)

    @property
    def failure_ratio(self) -> float:
        return 1.0 - self.stats.successful / self.expected if self.expected else 1.0

    @property
    def achieved(self) -> float:
        return self.stats.successful / self.elapsed if self.elapsed > 0 else 0.0

    def held(self, max_failures: float = 0.001, min_pace: float = 0.97) -> bool:
        """Every call was made, < `max_failures` failed, and answers kept pace (>= `min_pace` of the rate).

        Pace is successful calls over the step's wall time (SIPp start to exit): a server that answers
        late, after retransmissions, stretches the step and falls below it.
        """
        return (
            self.server_alive
            and self.stats.created >= self.expected
            and self.failure_ratio < max_failures
            and self.achieved >= self.rate * min_pace
        )


def _wait_rusage(procs: list[subprocess.Popen[bytes]], deadline: float) -> float:
    """Reap the children, returning their total CPU seconds (rusage); kill those still running at deadline."""
    cpu = 0.0
    pending = list(procs)
    tick = threading.Event()
    while pending:
        for proc in list(pending):
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                cpu += usage.ru_utime + usage.ru_stime
                pending.remove(proc)
        if pending and time.monotonic() > deadline:
            for proc in pending:
                proc.kill()
            deadline = float("inf")
        if pending:
            tick.wait(0.05)
    return cpu


def run_sipp_step(
    server: ServerProcess,
    port: int,
    rate: int,
    seconds: float,
    workdir: Path,
    *,
    scenario: Path = SCENARIOS / "options_uac.xml",
    per_process: int = 2000,
    cpu: int | None = 1,
    extra_args: Sequence[str] = (),
) -> StepResult:
    """Hold `rate` calls/s for `seconds` against `server` (UDP on HOST:port) and measure.

    The rate is split over ceil(rate / per_process) SIPp processes, each pinned to `cpu`, bounded with
    `-m` (its share of rate * seconds) and `-timeout` (twice the step plus 10 s). SIPp's output goes to files
    in `workdir`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    processes = max(1, math.ceil(rate / per_process))
    shares = [rate // processes + (1 if i < rate % processes else 0) for i in range(processes)]
    counts = [round(share * seconds) for share in shares]
    limit = int(seconds * 2 + 10)
    procs: list[subprocess.Popen[bytes]] = []
    stat_files: list[Path] = []
    sampler = ResourceSampler(server.pid).start()
    started = time.monotonic()
    try:
        for i, (share, count) in enumerate(zip(shares, counts, strict=True)):
            stat = workdir / f"{server.name}-{rate}-{i}.csv"
            stat.unlink(missing_ok=True)
            stat_files.append(stat)
            cmd = [
                executable("sipp"), f"{HOST}:{port}", "-sf", str(scenario), "-t", "u1",
                "-i", HOST, "-p", str(free_port(tcp=False)), "-mp", str(free_port(tcp=False)),
                "-r", str(share), "-m", str(count), "-timeout", f"{limit}s", "-buff_size", str(SIPP_BUFFER),
                "-trace_stat", "-stf", str(stat), "-fd", "1", "-nostdin", *extra_args,
            ]  # fmt: skip
            log = (workdir / f"{server.name}-{rate}-{i}.out").open("wb")
            procs.append(subprocess.Popen(pinned(cmd, cpu), stdin=subprocess.DEVNULL, stdout=log, stderr=log))
            log.close()
        loadgen_cpu_s = _wait_rusage(procs, started + limit + 5)
    except BaseException:
        for proc in procs:
            if proc.returncode is None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
        raise
    finally:
        elapsed = time.monotonic() - started
        sampler.stop()
    total = SippStats()
    for stat in stat_files:
        one = read_sipp_stat(stat)
        total.created += one.created
        total.successful += one.successful
        total.failed += one.failed
        total.retransmissions += one.retransmissions
        total.response_ms_weighted += one.response_ms_weighted
    return StepResult(
        server=server.name,
        rate=rate,
        seconds=seconds,
        processes=processes,
        expected=sum(counts),
        stats=total,
        elapsed=elapsed,
        server_cpu=sampler.cpu_percent,
        server_rss_mb=sampler.rss_max / 2**20,
        loadgen_cpu=100.0 * loadgen_cpu_s / elapsed if elapsed > 0 else 0.0,
        server_alive=server.alive(),
    )


def source_version() -> str:
    """The commit of the checkout and whether pbx/ has uncommitted changes (read-only git commands)."""
    try:
        head = subprocess.run(
            ["git", "--no-optional-locks", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "diff", "--name-only", "HEAD", "--", "pbx"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted pbx/ changes' if dirty else ''}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table with right-aligned columns except the first."""
    text = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    out.append(
        "|" + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    )
    for row in text:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
