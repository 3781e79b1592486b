"""Issue 9 in one run: the new build against an older commit and sippy's B2BUA, on the same workload.

This machine's speed drifts by up to 2x from day to day, so issue 9's targets are ratios taken in one run:

- calls per CPU-second of the new build >= 1.5x the base commit's and >= 3x sippy's `b2bua_simple`;
- CPU per authenticated REGISTER <= 8x the bare responder's (`bare_responder.py`);
- < 20 KiB per concurrent call.

Builds: `new` is this checkout as it is (or --new REV); `base` (--base REV, default 008c440, the commit before
the issue 9 work) is checked out with `git worktree add --detach` into a temporary directory (removed at the
end) and run by the same venv with that tree first on PYTHONPATH (`sip_load.start_pbx_with(code=...)`: the
server prints where `pbx` was imported from and start-up fails unless it is the tree asked for; the dialplan
comes from that tree too). sippy (`pip install sippy`, a bench dependency only) runs its
`b2bua_simple -f -l HOST -p PORT -n HOST:UAS_PORT`: every INVITE is forwarded to one fixed next hop, the
SIPp UAS; it has no digest auth and no registrar, and its log goes nowhere (SIPLOG_BEND=none), as the PBX
runs with sip_trace off.

Calls (`calls_bench.Bench`: SIPp UAC -> server -> SIPp UAS, SDP, no RTP, hold --hold-ms): for each mode
(--modes: `auth`, INVITE -> 407 -> INVITE with credentials, and `noauth`, a trusted peer without 407; sippy
only `noauth`) and each server, a fresh server on core 0 (taskset), SIPp on core 1, one UAC/UAS pair (the
whole rate in one SIPp process each, since sippy has a single next hop): a warm-up at 10 calls/s, then for the
first mode of each server a memory step (calls at --memory-rate held --memory-hold s: (peak RSS - RSS before)
/ peak concurrent calls, SIPp's CurrentCall), then each of --rates for --seconds. Per step the server's CPU
seconds (psutil, user + system, every thread, from before the first SIPp starts until the last has ended) and
the calls completed give **calls per CPU-second**; a mode's figure pools its rate steps (calls / CPU s).

REGISTER (`register_bench.one_step`, 1,000 users): new, base and bare, each fresh, at --register-rate for
--register-seconds after a 2 s warm-up; CPU us per registration (REGISTER, 401, REGISTER, 200 for the PBX;
the same two exchanges answered 200 by bare).

--profile DIR: after its rate steps, one more step of the new build at --profile-rate in each mode with py-spy
recording for --profile-seconds at --profile-hz (DIR/new-auth.raw, DIR/new-noauth.raw); the hot spots are
printed and appended.

The tables go to stdout and, when every step ran, are appended to bench/RESULTS-issue9.md (--results) with
the date, both commits and sippy's version. The run holds an exclusive flock on --lock (default
/tmp/bench.lock, the lock `flock /tmp/bench.lock ...` takes) so that two benchmark runs never overlap.

    python bench/compare_bench.py                                  # everything: about 12 minutes
    python bench/compare_bench.py --rates 150 --seconds 10 --servers new,sippy --modes noauth --no-register

Everything started is stopped on exit, the temporary worktree removed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import calls_bench
import register_bench
from common import BENCH, HOST, REPO, ServerProcess, executable, free_port, markdown_table, pinned, start_bare
from sip_load import (
    LoadStep,
    Profile,
    extensions_toml,
    held_text,
    pbx_code,
    print_profile,
    profile_tables,
    quiet_before_step,
    start_pbx_with,
    stop_on_signals,
    udp_port_taken,
    user_row,
    working_tree,
    write_users_csv,
)

DEFAULT_BASE = "008c440"
RESULTS = BENCH / "RESULTS-issue9.md"
TARGET_VS_BASE = 1.5
TARGET_VS_SIPPY = 3.0
TARGET_REGISTER_VS_BARE = 8.0
TARGET_KIB_PER_CALL = 20.0
MODES = ("auth", "noauth")
SERVERS = ("new", "base", "sippy")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Issue 9's ratios in one run: new build vs --base commit vs sippy b2bua_simple (calls), "
        "new vs base vs bare responder (REGISTER).",
        epilog=f"Appends its tables to {RESULTS.relative_to(REPO)}.",
    )
    add = parser.add_argument
    add(
        "--base",
        default=DEFAULT_BASE,
        help=f"commit of the base build (default {DEFAULT_BASE}), or a directory holding its tree (named "
        "after its commit: git archive REV | tar -x -C DIR/REV)",
    )
    add("--new", help="commit of the new build, checked out like --base (default: this checkout as it is)")
    add("--rates", default="150,250", help="calls/s of the call steps (default 150,250)")
    add("--seconds", type=float, default=20.0, help="length of each call step (default 20)")
    add("--hold-ms", type=int, default=200, help="ms between a call's ACK and its BYE (default 200)")
    add("--modes", default=",".join(MODES), help="auth and/or noauth (default auth,noauth; sippy: noauth)")
    add("--servers", default=",".join(SERVERS), help="of new, base, sippy (default all, in that order)")
    add("--callers", type=int, default=100, help="caller extensions (default 100)")
    add("--memory-rate", type=int, default=50, help="calls/s of the memory step; 0 skips it (default 50)")
    add("--memory-hold", type=float, default=20.0, help="s each call of the memory step is held (default 20)")
    add("--register-rate", type=int, default=1000, help="registrations/s of the REGISTER step (1000)")
    add("--register-seconds", type=float, default=20.0, help="length of the REGISTER step (default 20)")
    add("--no-register", action="store_true", help="skip the REGISTER comparison")
    add("--profile", type=Path, help="directory: py-spy the new build at --profile-rate in each mode")
    add("--profile-rate", type=int, default=200, help="calls/s of the profiled steps (default 200)")
    add("--profile-seconds", type=int, default=20, help="seconds py-spy records per profile (default 20)")
    add("--profile-hz", type=int, default=200, help="py-spy samples per second (default 200)")
    add("--server-cpu", type=int, default=0, help="core for the servers (default 0)")
    add("--loadgen-cpu", type=int, default=1, help="core for SIPp and py-spy (default 1)")
    add("--no-pin", action="store_true", help="do not pin processes with taskset")
    add(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each step wait up to this many s until no core is over 25 %% busy; 0: never (30)",
    )
    add("--note", default="", help="a remark written under the table (the machine's state, say)")
    add("--results", type=Path, default=RESULTS, help="markdown file the tables are appended to")
    add("--no-append", action="store_true", help="print only; do not append to --results")
    add("--lock", type=Path, default=Path("/tmp/bench.lock"), help="flock held during the run")
    add("--workdir", type=Path, help="configs, CSVs, SIPp stats and logs (default: a tmp dir)")
    args = parser.parse_args(argv)
    args.rate_list = sorted({int(r) for r in args.rates.split(",") if r.strip()})
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    if (
        not args.rate_list
        or set(args.mode_list) - set(MODES)
        or set(args.server_list) - set(SERVERS)
        or args.seconds <= 0
    ):
        parser.error("bad --rates, --modes, --servers or --seconds")
    return args


# -- builds --------------------------------------------------------------------------------------------------


@dataclass
class Build:
    """A checkout of the PBX: `code` is the tree whose pbx package twistd runs."""

    label: str
    commit: str
    code: Path


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()


@contextlib.contextmanager
def checkout(label: str, rev: str | None) -> Iterator[Build]:
    """`rev` checked out (detached) into a temporary directory with `git worktree add`, removed on exit;
    None: this checkout as it is."""
    if rev is None:
        yield Build(label, working_tree(), REPO)
        return
    if Path(rev).is_dir():  # a tree made beforehand (`git archive REV | tar -x -C DIR`): named after DIR
        yield Build(label, Path(rev).name, Path(rev).resolve())
        return
    commit = git("rev-parse", "--short", f"{rev}^{{commit}}")
    parent = Path(tempfile.mkdtemp(prefix=f"compare-{label}-"))
    tree = parent / commit
    git("worktree", "add", "--detach", str(tree), commit)
    try:
        yield Build(label, commit, tree)
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, timeout=120, check=False
        )
        subprocess.run(["rm", "-rf", str(parent)], timeout=120, check=False)


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """An exclusive flock(2) on `lock`, the one `flock FILE command` takes: one benchmark run at a time."""
    with lock.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"# waiting for {lock} (another benchmark is running)", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cpu_seconds(server: ServerProcess) -> float:
    """User + system CPU seconds of the server process so far (every thread)."""
    times = server.ps.cpu_times()
    return times.user + times.system


# -- calls ---------------------------------------------------------------------------------------------------


class SippyBench(calls_bench.Bench):
    """calls_bench's workload with sippy's b2bua_simple in the middle: it forwards every INVITE to one next
    hop, so there is one UAS (one pair) and nothing to register."""

    def start(self, code: Path | None = None) -> ServerProcess:
        if self.pairs != 1:
            raise RuntimeError("sippy forwards to one next hop: every rate must fit one UAC/UAS pair")
        cmd = [executable("b2bua_simple"), "-f", "-l", HOST, "-p", str(self.port), "-n"]
        cmd.append(f"{HOST}:{self.uas_ports[0]}")
        server = ServerProcess("sippy", pinned(cmd, self.cpu), env={"SIPLOG_BEND": "none"})
        deadline = time.monotonic() + 30
        while not udp_port_taken(self.port):
            if not server.alive() or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"b2bua_simple did not bind UDP {self.port}:\n{server.output[-3000:]}")
            time.sleep(0.05)
        self.server = server
        return server

    def register_callees(self) -> None:
        """Nothing: sippy has no registrar."""


@dataclass
class CallFigures:
    """One call step against one server."""

    server: str
    mode: str
    step: LoadStep
    cpu_s: float

    @property
    def per_cpu_second(self) -> float:
        return self.step.stats.successful / self.cpu_s if self.cpu_s > 0 else float("nan")


@dataclass
class MemoryFigures:
    server: str
    mode: str
    rate: int
    hold: float
    ok: int
    concurrent: int
    rss_before_mb: float
    rss_peak_mb: float

    @property
    def kib_per_call(self) -> float:
        grown = (self.rss_peak_mb - self.rss_before_mb) * 1024
        return grown / self.concurrent if self.concurrent else float("nan")


def bench_args(args: argparse.Namespace, no_auth: bool) -> argparse.Namespace:
    """What calls_bench.Bench and calls_bench.profile_step read, with every rate in one UAC/UAS pair."""
    rates = [*args.rate_list, args.memory_rate, args.profile_rate, 10]
    return argparse.Namespace(
        rate_list=args.rate_list, memory_rate=args.memory_rate, per_process=max(rates), callers=args.callers,
        extra_extensions=0, no_pin=args.no_pin, server_cpu=args.server_cpu, loadgen_cpu=args.loadgen_cpu,
        no_auth=no_auth, quiet_wait=args.quiet_wait, seconds=args.seconds, hold_ms=args.hold_ms,
        max_failures=0.001, repeat=1, profile=None, profile_rate=args.profile_rate,
        profile_seconds=args.profile_seconds, profile_hz=args.profile_hz,
    )  # fmt: skip


def call_run(
    name: str, build: Build | None, mode: str, args: argparse.Namespace, memory: bool
) -> tuple[list[CallFigures], MemoryFigures | None, Profile | None]:
    """A fresh server (`build`'s PBX, or sippy), its warm-up, memory step (if `memory`), rates, profile."""
    bargs = bench_args(args, no_auth=mode == "noauth")
    workdir = args.workdir / f"calls-{name}-{mode}"
    bench = SippyBench(bargs, workdir) if build is None else calls_bench.Bench(bargs, workdir)
    server = bench.start(code=None if build is None else build.code)
    if build is not None:
        print(f"# {name} ({mode}): pbx code from {pbx_code(server)}", flush=True)
    figures: list[CallFigures] = []
    mem: MemoryFigures | None = None
    profile: Profile | None = None
    try:
        bench.register_callees()
        warm = bench.step(10, 2, args.hold_ms, "warmup")
        if not warm.step.held_but_stale(bargs.max_failures, min_pace=0.5):
            raise RuntimeError(f"{name} {mode}: calls fail at 10/s: {warm}\n{server.output[-3000:]}")
        if memory and args.memory_rate > 0:
            quiet_before_step(args.quiet_wait)
            before = server.ps.memory_info().rss / 2**20
            hold = int(args.memory_hold * 1000)
            result = bench.step(args.memory_rate, args.memory_hold, hold, "memory")
            peak = calls_bench.max_concurrent(bench.workdir / "sipp" / f"{bench.steps_run:02d}-memory")
            mem = MemoryFigures(
                name, mode, args.memory_rate, args.memory_hold, result.step.stats.successful, peak, before,
                result.step.server_rss_mb,
            )  # fmt: skip
            print(f"  {name} {mode} memory: {peak} concurrent, {mem.kib_per_call:.1f} KiB/call", flush=True)
        for rate in args.rate_list:
            note = quiet_before_step(args.quiet_wait)
            start = cpu_seconds(server)
            step = bench.step(rate, args.seconds, args.hold_ms, str(rate)).step
            one = CallFigures(name, mode, step, cpu_seconds(server) - start)
            if note:
                step.notes.append(note)
            figures.append(one)
            print("  " + " | ".join(map(str, call_row(one))), flush=True)
            if not server.alive():
                raise RuntimeError(f"{name} died:\n{server.output[-3000:]}")
        if args.profile is not None and name == "new":
            bargs.profile = args.profile / f"new-{mode}.raw"
            profile = calls_bench.profile_step(bench, server, bargs, [f.step for f in figures])
    finally:
        server.stop()
    return figures, mem, profile


CALL_HEADERS = [
    "server", "mode", "rate/s", "ok", "failed", "achieved/s", "setup ms", "CPU s", "CPU ms/call",
    "calls per CPU-second", "other load %", "held",
]  # fmt: skip


def call_row(f: CallFigures) -> list[object]:
    s = f.step
    ms = 1000 * f.cpu_s / s.stats.successful if s.stats.successful else float("nan")
    return [
        f.server, f.mode, s.rate, s.stats.successful, s.expected - s.stats.successful, f"{s.achieved:.0f}",
        f"{s.stats.response_ms:.1f}", f"{f.cpu_s:.2f}", f"{ms:.2f}", f"{f.per_cpu_second:.0f}",
        f"{s.other_load:.0f}", held_text(s, 0.001),
    ]  # fmt: skip


def pooled(figures: list[CallFigures], server: str, mode: str) -> float:
    """Calls per CPU-second over every rate step of `server` in `mode` (nan if none)."""
    mine = [f for f in figures if f.server == server and f.mode == mode]
    cpu = sum(f.cpu_s for f in mine)
    return sum(f.step.stats.successful for f in mine) / cpu if cpu > 0 else float("nan")


# -- REGISTER ------------------------------------------------------------------------------------------------


@dataclass
class RegisterFigures:
    server: str
    step: LoadStep
    cpu_s: float

    @property
    def us_per_registration(self) -> float:
        ok = self.step.stats.successful
        return 1e6 * self.cpu_s / ok if ok else float("nan")


def register_run(name: str, build: Build | None, args: argparse.Namespace) -> RegisterFigures:
    """A fresh server (`build`'s PBX, or bare), a 2 s warm-up, then --register-rate for --register-seconds."""
    workdir = args.workdir / f"register-{name}"
    users = range(register_bench.FIRST_USER, register_bench.FIRST_USER + 1000)
    csv = write_users_csv(workdir / "users.csv", (user_row(u) for u in users))
    cpu = None if args.no_pin else args.server_cpu
    port = free_port()
    if build is None:
        server = start_bare(port, cpu=cpu)
    else:
        extra = extensions_toml(users) + register_bench.PBX_EXTRA
        server = start_pbx_with(workdir / "pbx", port, extra, cpu=cpu, code=build.code)
    rargs = argparse.Namespace(
        per_process=500, bare_per_process=1000, seconds=args.register_seconds, no_pin=args.no_pin,
        loadgen_cpu=args.loadgen_cpu, server_cpu=args.server_cpu,
    )  # fmt: skip
    try:
        warm = register_bench.one_step(server, port, 100, rargs, csv, workdir, seconds=2)
        if not warm.held_but_stale(0.001, min_pace=0.5):
            raise RuntimeError(f"{name}: registrations fail at 100/s: {warm}\n{server.output[-3000:]}")
        quiet_before_step(args.quiet_wait)
        start = cpu_seconds(server)
        step = register_bench.one_step(server, port, args.register_rate, rargs, csv, workdir)
        result = RegisterFigures(name, step, cpu_seconds(server) - start)
    finally:
        server.stop()
    print("  " + " | ".join(map(str, register_row(result, None))), flush=True)
    return result


def register_row(r: RegisterFigures, bare: RegisterFigures | None) -> list[object]:
    s = r.step
    ratio = r.us_per_registration / bare.us_per_registration if bare else float("nan")
    return [
        r.server, s.rate, s.stats.successful, s.expected - s.stats.successful, f"{s.achieved:.0f}",
        f"{r.cpu_s:.2f}", f"{r.us_per_registration:.0f}", f"{ratio:.1f}x", f"{s.other_load:.0f}",
        held_text(s, 0.001),
    ]  # fmt: skip


# -- report --------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def ratio_rows(
    figures: list[CallFigures],
    memory: list[MemoryFigures],
    registers: dict[str, RegisterFigures],
    modes: list[str],
) -> list[list[object]]:
    """(measure, value, target, verdict) rows of issue 9's targets."""
    rows: list[list[object]] = []
    sippy = pooled(figures, "sippy", "noauth")
    for mode in modes:
        new, base = pooled(figures, "new", mode), pooled(figures, "base", mode)
        if new == new and base == base:
            r = new / base
            rows.append([f"calls per CPU-second, {mode}: new / base", f"{r:.2f}", f">= {TARGET_VS_BASE}",
                         verdict(r >= TARGET_VS_BASE)])  # fmt: skip
        if new == new and sippy == sippy:
            r = new / sippy
            rows.append([f"calls per CPU-second: new {mode} / sippy (no auth)", f"{r:.2f}",
                         f">= {TARGET_VS_SIPPY}", verdict(r >= TARGET_VS_SIPPY)])  # fmt: skip
        if base == base and sippy == sippy:
            rows.append(
                [f"calls per CPU-second: base {mode} / sippy (no auth)", f"{base / sippy:.2f}", "", ""]
            )
    bare = registers.get("bare")
    for name in ("new", "base"):
        if bare is not None and name in registers:
            r = registers[name].us_per_registration / bare.us_per_registration
            rows.append([f"CPU per authenticated REGISTER: {name} / bare", f"{r:.1f}",
                         f"<= {TARGET_REGISTER_VS_BARE}", verdict(r <= TARGET_REGISTER_VS_BARE)])  # fmt: skip
    for m in memory:
        kib = m.kib_per_call
        target = (
            ["", ""]
            if m.server == "sippy"
            else [f"< {TARGET_KIB_PER_CALL:g}", verdict(kib < TARGET_KIB_PER_CALL)]
        )
        rows.append([f"KiB per concurrent call, {m.server} ({m.mode})", f"{kib:.1f}", *target])
    return rows


def where(build: Build) -> str:
    return f"{build.commit} ({'this checkout' if build.code == REPO else 'a git worktree'})"


def report(
    args: argparse.Namespace,
    builds: dict[str, Build],
    figures: list[CallFigures],
    memory: list[MemoryFigures],
    registers: dict[str, RegisterFigures],
    profiles: dict[str, Profile],
    started: str,
) -> str:
    out: list[str] = []
    try:
        sippy_version = metadata.version("sippy")
    except metadata.PackageNotFoundError:
        sippy_version = "not installed"
    out.append(f"## {started} UTC: new {builds['new'].commit} vs base {builds['base'].commit}\n")
    command = " ".join(sys.argv[1:]).replace(args.note, "...") if args.note else " ".join(sys.argv[1:])
    out.append(
        f"`python bench/compare_bench.py {command}` on {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}, sippy {sippy_version}. Builds: **new** = {where(builds['new'])}, "
        f"**base** = {where(builds['base'])}. Servers on core {args.server_cpu}, SIPp on core "
        f"{args.loadgen_cpu}; calls held {args.hold_ms} ms, {args.seconds:g} s steps, one UAC/UAS pair."
    )
    if args.note:
        out.append(f"\n{args.note}")
    if figures:
        out.append("\n### Calls\n")
        out.append(markdown_table(CALL_HEADERS, [call_row(f) for f in figures]))
        rows = []
        for mode in args.mode_list:
            for name in ("new", "base", "sippy"):
                value = pooled(figures, name, mode)
                if value == value:
                    rows.append([name, mode, f"{value:.0f}", f"{1000 / value:.2f}"])
        out.append("\nPooled over the rate steps:\n")
        out.append(markdown_table(["server", "mode", "calls per CPU-second", "CPU ms/call"], rows))
    if memory:
        out.append("\n### Memory per concurrent call\n")
        out.append(
            markdown_table(
                ["server", "mode", "calls/s", "hold s", "ok", "peak concurrent", "RSS before MB",
                 "RSS peak MB", "KiB per call"],
                [[m.server, m.mode, m.rate, f"{m.hold:g}", m.ok, m.concurrent, f"{m.rss_before_mb:.0f}",
                  f"{m.rss_peak_mb:.0f}", f"{m.kib_per_call:.1f}"] for m in memory],
            )
        )  # fmt: skip
    if registers:
        out.append("\n### REGISTER with digest auth (bare: the same exchanges answered 200)\n")
        bare = registers.get("bare")
        out.append(
            markdown_table(
                ["server", "rate/s", "ok", "failed", "achieved/s", "CPU s", "CPU us/registration", "x bare",
                 "other load %", "held"],
                [register_row(r, bare) for r in registers.values()],
            )
        )  # fmt: skip
    out.append("\n### Issue 9 targets (ratios within this run)\n")
    out.append(
        markdown_table(
            ["measure", "value", "target", "verdict"],
            ratio_rows(figures, memory, registers, args.mode_list),
        )
    )
    for mode, profile in profiles.items():
        by_self, by_total, _ = profile_tables(profile, top=15, top_total=15)
        out.append(
            f"\n### Profile of new, {mode}, {args.profile_rate} calls/s ({profile.samples} busy samples)\n"
        )
        out.append("By self time:\n")
        out.append(markdown_table(["function", "samples", "% of busy"], by_self))
        out.append("\nBy total time:\n")
        out.append(markdown_table(["function", "samples", "% of busy"], by_total))
    return "\n".join(out) + "\n"


def append_results(path: Path, text: str) -> None:
    if not path.exists():
        path.write_text(
            "# Issue 9: the new call path against the commit before it and sippy, in one run\n\n"
            "Appended by `bench/compare_bench.py` (its docstring says how each figure is measured). Only\n"
            "the ratios within one run are comparable: the machine's speed drifts from day to day.\n\n"
        )
    with path.open("a") as f:
        f.write(text + "\n")


# -- main ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    executable("sipp")  # fail early with a clear message
    if "sippy" in args.server_list:
        executable("b2bua_simple")
    if args.profile is not None:
        executable("py-spy")
        args.profile.mkdir(parents=True, exist_ok=True)
    stop_on_signals()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="compare-bench-")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    figures: list[CallFigures] = []
    memory: list[MemoryFigures] = []
    registers: dict[str, RegisterFigures] = {}
    profiles: dict[str, Profile] = {}
    builds: dict[str, Build] = {}
    status = 0
    try:
        with exclusive(args.lock), checkout("new", args.new) as new, checkout("base", args.base) as base:
            builds.update(new=new, base=base)
            print(
                f"# compare_bench {started} UTC: new {new.commit} at {new.code},",
                f"base {base.commit} at {base.code}",
            )
            print("  " + " | ".join(CALL_HEADERS), flush=True)
            measured: set[str] = set()
            for mode in args.mode_list:
                for name in args.server_list:
                    if name == "sippy" and mode != "noauth":
                        continue
                    build = builds.get(name)
                    got, mem, profile = call_run(name, build, mode, args, memory=name not in measured)
                    measured.add(name)
                    figures.extend(got)
                    memory.extend([mem] if mem else [])
                    if profile is not None:
                        profiles[mode] = profile
                        print_profile(profile, args.profile / f"new-{mode}.raw")
            if not args.no_register:
                for name in ("new", "base", "bare"):
                    registers[name] = register_run(name, builds.get(name), args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        status = 1
    finally:
        if tmp is not None:
            tmp.cleanup()
    if "base" not in builds:
        return status or 1
    text = report(args, builds, figures, memory, registers, profiles, started)
    print()
    print(text)
    if not args.no_append and status == 0:
        append_results(args.results, text)
        print(f"(appended to {args.results})")
    return status


if __name__ == "__main__":
    sys.exit(main())
