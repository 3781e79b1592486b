"""Event-loop wake-ups and CPU per call / per REGISTER of `twistd pbx` at a fixed rate, `pbx.poll_window` A/B.

Issue 9 (session 11): how much of the real PBX's CPU per call is the cost of waking per message, and what
does `[pbx] poll_window` (pbx/service/wakeups.py) save? Steps at one rate alternate A B B A A B ... between
the PBX without a window (A) and with `--window` (B), a fresh PBX at each change (calls_bench's or
register_bench's set-up: PBX on core 0, SIPp on core 1; `PBX_BENCH_POLL_WINDOW` passes the window to
`common.write_pbx_config`). Each step is measured by `perf stat` on the PBX (task-clock, context switches,
epoll_wait, recvfrom, sendto, clock_nanosleep, futex, write, pwrite64: per call or registration) besides
the bench's own CPU per item, SIPp's response time, the other load and the steal time of core 0 (a VM) and
the kernel's share of the PBX's CPU. `--work bare` measures the bare responder alone (no window).

    python bench/wakeup_bench.py --work calls --rate 50 --steps 6 --window 0.02
    python bench/wakeup_bench.py --work register --rate 300 --steps 6 --window 0.005
    python bench/wakeup_bench.py --work bare --rate 400 --steps 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import calls_bench
import register_bench
from common import ServerProcess, free_port
from sip_load import quiet_before_step, user_row, write_users_csv

EVENTS = [
    "task-clock", "context-switches", "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_sendto", "syscalls:sys_enter_clock_nanosleep", "syscalls:sys_enter_futex",
    "syscalls:sys_enter_write", "syscalls:sys_enter_pwrite64", "raw_syscalls:sys_enter",
]  # fmt: skip
SHORT = {
    "task-clock": "task_us", "context-switches": "cs", "syscalls:sys_enter_epoll_wait": "epoll",
    "syscalls:sys_enter_recvfrom": "recv", "syscalls:sys_enter_sendto": "send",
    "syscalls:sys_enter_clock_nanosleep": "nanosleep", "syscalls:sys_enter_futex": "futex",
    "syscalls:sys_enter_write": "write", "syscalls:sys_enter_pwrite64": "pwrite",
    "raw_syscalls:sys_enter": "sys",
}  # fmt: skip


def cpu0_times() -> list[int]:
    """user nice system idle iowait irq softirq steal of cpu0 (/proc/stat, ticks)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu0 "):
            return [int(v) for v in line.split()[1:9]]
    return [0] * 8


def perf_stat(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    cmd = ["perf", "stat", "-x", ",", "-o", str(out), "-e", ",".join(EVENTS), "-p", str(pid), "--", "sleep"]
    return subprocess.Popen([*cmd, f"{seconds:g}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_perf(out: Path) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in out.read_text().splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2] in SHORT:
            try:
                counts[SHORT[parts[2]]] = float(parts[0])
            except ValueError:
                pass
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", choices=("calls", "calls-noauth", "register", "bare"), default="calls")
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--steps", type=int, default=6, help="steps, alternating A B B A ... (default 6)")
    parser.add_argument("--window", type=float, default=0.02, help="pbx.poll_window of B, s (default 0.02)")
    parser.add_argument("--quiet-wait", type=float, default=5.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="wakeup-bench-"))
    work = Work(args, workdir)
    states = ["A", "B", "B", "A"] * (args.steps // 4 + 1)
    if args.work == "bare":
        states = ["-"] * args.steps
    rows = []
    state = ""
    try:
        for i in range(args.steps):
            if states[i] != state:
                state = states[i]
                work.start(args.window if state == "B" else 0.0)
            rows.append(work.measured_step(i, state))
            print(
                " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items())
            )
    finally:
        work.stop()
    item = "registration" if work.calls is None else "call"
    print(
        f"\n# median per {item} ({args.work} at {args.rate}/s, {args.seconds:g} s steps;",
        f"B: window {args.window:g} s)",
    )
    keys = [k for k in rows[0] if k not in ("step", "state", "ok", "failed")]
    for st in sorted({r["state"] for r in rows}):
        sel = [r for r in rows if r["state"] == st]
        print(f"{st:2}", " ".join(f"{k}={statistics.median(r[k] for r in sel):.2f}" for k in keys))
    print("(cpu_us: the bench's measure of the server's CPU per item; task_us: perf's task-clock per item)")
    return 0


class Work:
    """The server under test and its load: calls (calls_bench) or registrations (register_bench)."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.server: ServerProcess | None = None
        self.calls: calls_bench.Bench | None = None
        if args.work.startswith("calls"):
            self.cargs = calls_bench.parse_args(
                ["--rates", str(args.rate), "--seconds", str(args.seconds), "--memory-rate", "0"]
                + (["--no-auth"] if args.work == "calls-noauth" else [])
            )
            self.calls = calls_bench.Bench(self.cargs, workdir)
        else:
            self.rargs = register_bench.parse_args(
                ["--rates", str(args.rate), "--seconds", str(args.seconds)]
            )
            self.port = free_port()
            self.users = range(register_bench.FIRST_USER, register_bench.FIRST_USER + self.rargs.users)
            self.csv = write_users_csv(workdir / "users.csv", (user_row(u) for u in self.users))

    def start(self, window: float) -> None:
        """A fresh server with `pbx.poll_window = window` (none when 0), warmed up."""
        self.stop()
        os.environ["PBX_BENCH_POLL_WINDOW"] = f"{window:g}" if window > 0 else ""
        if self.calls is not None:
            self.server = self.calls.start()
            self.calls.register_callees()
            self.calls.step(10, 2, self.cargs.hold_ms, "warmup")
        else:
            name = "bare" if self.args.work == "bare" else "pbx"
            self.server = register_bench.start(
                name, self.workdir, self.port, self.rargs.server_cpu, self.users
            )
            register_bench.one_step(
                self.server, self.port, 200, self.rargs, self.csv, self.workdir, seconds=3
            )

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def measured_step(self, i: int, state: str) -> dict[str, object]:
        args, server = self.args, self.server
        assert server is not None
        quiet_before_step(args.quiet_wait)
        out = self.workdir / f"perf-{i}.csv"
        spy = perf_stat(server.pid, args.seconds - 2, out)
        before, times0 = cpu0_times(), server.ps.cpu_times()
        if self.calls is not None:
            step = self.calls.step(args.rate, args.seconds, self.cargs.hold_ms, f"{i}-{state}").step
        else:
            step = register_bench.one_step(server, self.port, args.rate, self.rargs, self.csv, self.workdir)
        after, times1 = cpu0_times(), server.ps.cpu_times()
        spy.wait(timeout=30)
        delta = [b - a for a, b in zip(before, after, strict=True)]
        user, system = times1.user - times0.user, times1.system - times0.system
        per = (args.seconds - 2) * step.achieved  # items in perf's window (about)
        row: dict[str, object] = {
            "step": i, "state": state, "ok": step.stats.successful,
            "failed": step.expected - step.stats.successful,
            "cpu_us": step.server_cpu / 100 / step.achieved * 1e6 if step.achieved else float("nan"),
            "resp_ms": step.stats.response_ms, "other%": step.other_load,
            "steal0%": 100 * delta[7] / max(1, sum(delta)), "sys%": 100 * system / max(1e-9, user + system),
        }  # fmt: skip
        row.update({k: (v * 1000 if k == "task_us" else v) / per for k, v in read_perf(out).items()})
        return row


if __name__ == "__main__":
    sys.exit(main())
