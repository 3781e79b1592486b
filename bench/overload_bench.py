"""Goodput against offered load: `twistd pbx` offered 1x, 2x and 5x the rate it holds (issue 14, item 6).

For REGISTER with digest auth (`scenarios/overload_register.xml`: REGISTER -> 401 -> REGISTER -> 200) and for
calls with digest auth (`scenarios/overload_call_uac.xml`: INVITE -> 407 -> ACK -> INVITE -> 180 -> 200 ->
ACK -> hold -> BYE -> 200, answered by SIPp UASs on registered extensions), each multiple of the held rate
is offered for --seconds and these are counted from SIPp's own timers (`-trace_rtt`): exchanges completed
(rtd 1: first request to 200) and exchanges refused early (rtd 2: first request to the PBX's 503), and from
its `-trace_stat` counts the calls that failed otherwise (timeouts, unexpected answers) and its
retransmissions. Goodput is completed exchanges per second of offered load; "on time" counts only those
whose 200 came within 2 s of the first request (the others needed retransmissions), and the verdict compares
that with the held rate (>= 90 % is the goal). Printed per step: the PBX's CPU (% of one core, while the
load is offered), the load generator's CPU (every SIPp process), the share of the exchanges SIPp actually
started (SIPp may fall behind its -r when its core is short), and the mean set-up time of the completed.

The held rate (--register-held, --calls-held) is what the PBX completes in full on this machine: take it
from bench/register_bench.py and bench/calls_bench.py on the same machine, or let the first step (1x) show
it. The PBX runs on core 0 (`taskset -c 0`), SIPp on core 1; above --per-process exchanges/s per SIPp process
the rate is split over several, each registering its own users (REGISTER) or calling its own callee
(calls). --baseline DIR runs the same steps against another checkout of the project (e.g. `git archive
cf14b08 | tar -x -C DIR`: the PBX before overload control) for comparison; --overload-off runs this checkout
with `[overload] enabled = false` (the stateless-answer cache stays on).

    python bench/overload_bench.py --register-held 600 --calls-held 100 --seconds 10   # a short run
    python bench/overload_bench.py --register-held 1500 --calls-held 300 --seconds 20 --baseline /tmp/base

Everything binds to loopback; every process started here is bounded (-m, -timeout) and killed on exit.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HOST,
    REPO,
    SCENARIOS,
    ResourceSampler,
    ServerProcess,
    _wait_rusage,
    free_port,
    markdown_table,
    pinned,
    read_sipp_stat,
    source_version,
)
from sip_load import (
    PySpy,
    drain_udp,
    extensions_toml,
    reserve_port,
    run_sipp_once,
    sipp_command,
    split_rate,
    start_pbx_with,
    stop_on_signals,
    user_row,
    wait_udp_bound,
    write_users_csv,
)

FIRST_USER = 10000  # REGISTER users 10000.. (pwN), split over the SIPp processes, clear of the callers
USERS_PER_PROCESS = 200
FIRST_CALLER = 7000
FIRST_CALLEE = 7900
PBX_EXTRA = (
    '[registrar]\nkeepalive = "none"\n\n'
    '[media]\nrtp_port_min = 10000\nrtp_port_max = 30000\nbind_host = "127.0.0.1"\n\n'
)


@dataclass
class Step:
    """One offered rate held for one step."""

    kind: str
    held: int
    multiple: float
    offered: int
    seconds: float
    started: int = 0  # exchanges SIPp started
    completed: int = 0  # rtd 1
    on_time: int = 0  # rtd 1 within ON_TIME_MS
    shed: int = 0  # rtds 2 and 3 (a 503)
    wasted: int = 0  # rtd 3: a 503 to the second REGISTER (its 401 was sent)
    kernel_drops: int = 0  # datagrams the PBX's UDP socket dropped (receive buffer full), /proc/net/udp
    failed: int = 0  # SIPp's failed calls: timeouts, unexpected answers
    retransmissions: int = 0
    setup_ms: float = float("nan")  # mean of rtd 1
    server_cpu: float = 0.0
    loadgen_cpu: float = 0.0
    elapsed: float = 0.0
    alive: bool = True

    @property
    def goodput(self) -> float:
        return self.completed / self.seconds

    @property
    def on_time_goodput(self) -> float:
        return self.on_time / self.seconds

    @property
    def ratio(self) -> float:
        return self.on_time_goodput / self.held if self.held else float("nan")


ON_TIME_MS = 2000.0
"""A completed exchange counts as on time when its first request was answered 200 within this (ms)."""


def read_rtt(directory: Path) -> tuple[int, int, float, int, int]:
    """(rtd 1 count, rtds 2 and 3 count, rtd 1 mean ms, rtd 1 within ON_TIME_MS, rtd 3 count) from the SIPp
    `-trace_rtt` files in `directory`."""
    counts = {"1": 0, "2": 0, "3": 0}
    on_time = 0
    total_ms = 0.0
    for path in directory.glob("*_rtt.csv"):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            parts = line.strip().split(";")
            if len(parts) < 3 or parts[2] not in counts:
                continue
            counts[parts[2]] += 1
            if parts[2] == "1":
                try:
                    total_ms += float(parts[1])
                    on_time += float(parts[1]) <= ON_TIME_MS
                except ValueError:
                    pass
    mean = total_ms / counts["1"] if counts["1"] else float("nan")
    return counts["1"], counts["2"] + counts["3"], mean, on_time, counts["3"]


def timeline(directory: Path) -> tuple[list[int], list[int]]:
    """Per second of the step (from each SIPp process's first record): the exchanges completed on time and
    the 503s, from the `-trace_rtt` files in `directory` (their first column is the record's time, ms)."""
    on_time: dict[int, int] = {}
    shed: dict[int, int] = {}
    for path in directory.glob("*_rtt.csv"):
        rows = []
        for line in path.read_text(errors="replace").splitlines()[1:]:
            parts = line.strip().split(";")
            try:
                rows.append((float(parts[0]), float(parts[1]), parts[2]))
            except (ValueError, IndexError):
                continue
        if not rows:
            continue
        origin = min(r[0] for r in rows)
        for when, rtt, rtd in rows:
            second = int((when - origin) / 1000)
            if rtd == "1" and rtt <= ON_TIME_MS:
                on_time[second] = on_time.get(second, 0) + 1
            elif rtd in ("2", "3"):
                shed[second] = shed.get(second, 0) + 1
    last = max([*on_time, *shed], default=-1)
    return [on_time.get(i, 0) for i in range(last + 1)], [shed.get(i, 0) for i in range(last + 1)]


def udp_drops(port: int) -> int:
    """Datagrams dropped so far by the IPv4 UDP sockets bound to local `port` (/proc/net/udp's `drops`: a full
    receive buffer); 0 where that file is not there."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    total = 0
    for line in lines:
        fields = line.split()
        if len(fields) >= 13 and int(fields[1].rsplit(":", 1)[1], 16) == port:
            total += int(fields[12])
    return total


class Bench:
    """A PBX (this checkout or --baseline's) and the SIPp processes of its steps."""

    def __init__(self, args: argparse.Namespace, workdir: Path, label: str, code: Path | None, extra: str):
        self.args = args
        self.workdir = workdir / label
        self.label = label
        self.code = code
        self.extra = extra
        self.cpu = None if args.no_pin else 0
        self.loadgen_cpu = None if args.no_pin else 1
        self.port = free_port()
        self.server: ServerProcess | None = None
        self.steps = 0
        self._seen = 0  # PBX output lines already looked at
        biggest = max(args.register_held, args.calls_held) * max(args.multiples)
        self.processes = max(1, math.ceil(biggest / args.per_process))
        self.callees = [FIRST_CALLEE + i for i in range(self.processes)]
        self.uas_ports = [reserve_port(free_port(tcp=False)) for _ in self.callees]

    def start(self) -> None:
        users = range(FIRST_USER, FIRST_USER + USERS_PER_PROCESS * self.processes)
        callers = range(FIRST_CALLER, FIRST_CALLER + 100)
        numbers = [*users, *callers, *self.callees]
        extra = extensions_toml(numbers) + PBX_EXTRA + self.extra
        self.server = start_pbx_with(self.workdir / "pbx", self.port, extra, cpu=self.cpu, code=self.code)
        for callee, port in zip(self.callees, self.uas_ports, strict=True):
            csv = write_users_csv(self.workdir / f"callee-{callee}.csv", [user_row(callee)])
            cmd = sipp_command(
                SCENARIOS / "register_auth.xml", remote=f"{HOST}:{self.port}", local_port=port, count=1,
                limit=20, rate=10, extra=["-inf", str(csv), "-timeout_error"],
            )  # fmt: skip
            log = self.workdir / f"register-{callee}.out"
            if run_sipp_once(cmd, log, cpu=self.loadgen_cpu, timeout=30).returncode != 0:
                raise RuntimeError(f"registering {callee} failed:\n{log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def step(self, kind: str, held: int, multiple: float) -> Step:
        assert self.server is not None
        args = self.args
        self.steps += 1
        offered = max(1, round(held * multiple))
        directory = self.workdir / f"{self.steps:02d}-{kind}-{offered}"
        directory.mkdir(parents=True, exist_ok=True)
        seconds = args.seconds
        hold = args.hold_ms / 1000 if kind == "calls" else 0.0
        limit = seconds + hold + 20  # later than this is not on time anyway
        shares = split_rate(offered, args.per_process)
        uacs: list[list[str]] = []
        uass: list[list[str]] = []
        if kind == "calls":
            drain_udp(self.uas_ports[: len(shares)])
        for i, share in enumerate(shares):
            count = max(1, round(share * seconds))
            stat = directory / f"uac{i}.stat"
            extra = ["-trace_stat", "-stf", str(stat), "-fd", "1", "-trace_rtt", "-rtt_freq", "1"]
            if kind == "register":
                first = FIRST_USER + USERS_PER_PROCESS * i
                rows = [user_row(n) for n in range(first, first + USERS_PER_PROCESS)]
                scenario = SCENARIOS / "overload_register.xml"
            else:
                rows = [user_row(n, self.callees[i]) for n in range(FIRST_CALLER, FIRST_CALLER + 100)]
                scenario = SCENARIOS / "overload_call_uac.xml"
                extra += ["-d", str(args.hold_ms)]
                uas_stat = ["-trace_stat", "-stf", str(directory / f"uas{i}.stat"), "-fd", "1"]
                uas = sipp_command(
                    SCENARIOS / "call_uas.xml", local_port=self.uas_ports[i], count=count * 2 + 20,
                    limit=limit + 10, extra=["-s", str(self.callees[i]), *uas_stat],
                )  # fmt: skip
                uass.append(uas)
            csv = write_users_csv(directory / f"uac{i}.csv", rows)
            uac = sipp_command(
                scenario, remote=f"{HOST}:{self.port}", count=count, limit=limit, rate=share,
                extra=["-inf", str(csv), *extra],
            )  # fmt: skip
            uacs.append(uac)
        result = Step(kind, held, multiple, offered, seconds)
        uas_procs = [self._spawn(cmd, directory, f"uas{i}") for i, cmd in enumerate(uass)]
        uac_procs: list[subprocess.Popen[bytes]] = []
        drops_before = udp_drops(self.port)
        spy = None
        if (
            args.profile is not None
            and self.code is None
            and kind in args.profile_kinds
            and multiple == max(args.multiples)
        ):
            out = args.profile.with_name(f"{args.profile.stem}-{kind}-{multiple:g}x{args.profile.suffix}")
            spy = PySpy(
                self.server.pid, max(1, int(seconds) - 2), out, cpu=self.loadgen_cpu, rate=args.profile_hz
            )
        try:
            wait_udp_bound(self.uas_ports[: len(uass)], uas_procs)
            sampler = ResourceSampler(self.server.pid).start()
            started = time.monotonic()
            uac_procs = [self._spawn(cmd, directory, f"uac{i}") for i, cmd in enumerate(uacs)]
            if args.stall_for > 0 and 0 <= args.stall_at < seconds:
                # A host hiccup on demand: the PBX stopped (SIGSTOP) while the load goes on, then let go.
                time.sleep(args.stall_at)
                os.kill(self.server.pid, signal.SIGSTOP)
                time.sleep(args.stall_for)
                os.kill(self.server.pid, signal.SIGCONT)
                time.sleep(max(0.0, seconds - args.stall_at - args.stall_for))
            else:
                time.sleep(seconds)  # the PBX's CPU while the load is offered, not during the stragglers
            sampler.stop()
            loadgen = _wait_rusage(uac_procs, started + limit + 5)
            if spy is not None:
                print(f"  py-spy: {spy.out}" + ("" if spy.wait() else f" (failed: {spy.log[-500:]})"))
            result.elapsed = time.monotonic() - started
            for proc in uas_procs:
                proc.kill()
            loadgen += _wait_rusage(uas_procs, time.monotonic() + 5)
        finally:
            if spy is not None:
                spy.stop()
            for proc in uac_procs + uas_procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
        for i in range(len(uacs)):
            stats = read_sipp_stat(directory / f"uac{i}.stat")
            result.started += stats.created
            result.failed += stats.failed
            result.retransmissions += stats.retransmissions
        why = failure_kinds(directory)
        if why:
            print(f"  SIPp ({kind} {multiple:g}x): " + ", ".join(f"{k} {v}" for k, v in sorted(why.items())))
        result.completed, result.shed, result.setup_ms, result.on_time, result.wasted = read_rtt(directory)
        result.kernel_drops = udp_drops(self.port) - drops_before
        per_second, shed_per_second = timeline(directory)
        print(f"  on time per s: {per_second}\n  503 per s: {shed_per_second}")
        print(
            f"  {self.label} {kind} {multiple:g}x: late {result.completed - result.on_time}, 503 to a second"
            f" request {result.wasted}, kernel drops {result.kernel_drops}"
        )
        result.server_cpu = sampler.cpu_percent
        result.loadgen_cpu = 100.0 * loadgen / result.elapsed if result.elapsed else 0.0
        result.alive = self.server.alive()
        lines = self.server.lines[self._seen :]
        no_ack = sum("No ACK for the final response" in line for line in lines)
        if no_ack:
            print(f"  PBX: {no_ack} INVITEs ended without an ACK (Timer H; at most 5 logged per 10 s)")
        levels = [line for line in lines if "Overload level" in line]
        self._seen = len(self.server.lines)
        if levels:
            print(f"  PBX: {len(levels)} overload level changes, the last: {levels[-1].split(']', 1)[-1]}")
            changes = []
            for line in levels[:40]:
                words = line.split("Overload level ", 1)[1].split()
                changes.append(f"{line[11:19]} {words[0]} {words[2]}")
            print("  levels: " + ", ".join(changes))
        return result

    def _spawn(self, cmd: list[str], directory: Path, name: str) -> subprocess.Popen[bytes]:
        with (directory / f"{name}.out").open("wb") as log:
            return subprocess.Popen(
                pinned(cmd, self.loadgen_cpu), cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )


def failure_kinds(directory: Path) -> dict[str, int]:
    """Why SIPp's calls failed, and what else it counted, from the last row of each `-trace_stat` file in
    `directory` (UACs and UASs, summed): the nonzero Failed* columns, out-of-call and dead-call messages,
    and the UASs' retransmissions (their 200s, until the ACK came)."""
    found: dict[str, int] = {}
    for path in sorted(directory.glob("*.stat")):
        lines = [line.split(";") for line in path.read_text(errors="replace").splitlines() if line]
        if len(lines) < 2:
            continue
        role = "uas" if path.name.startswith("uas") else "uac"
        for key, value in zip(lines[0], lines[-1], strict=False):
            name = key.removesuffix("(C)")
            wanted = name.startswith("Failed") and name != "FailedCall"
            wanted = wanted or name in ("OutOfCallMsgs", "DeadCallMsgs")
            wanted = wanted or (role == "uas" and name == "Retransmissions")
            if not key.endswith("(C)") or not wanted:
                continue
            try:
                number = int(float(value or 0))
            except ValueError:
                continue
            if number:
                label = f"{role} {name.removeprefix('Failed')}"
                found[label] = found.get(label, 0) + number
    return found


def row(label: str, r: Step) -> list[object]:
    verdict = "yes" if r.ratio >= 0.9 else "NO"
    return [
        label,
        r.kind,
        r.held,
        f"{r.multiple:g}x = {r.offered}/s",
        f"{100 * r.started / (r.offered * r.seconds):.0f} %",
        f"{r.goodput:.0f}/s",
        f"{r.on_time_goodput:.0f}/s",
        f"{100 * r.ratio:.0f} % ({verdict})",
        f"{r.shed / r.seconds:.0f}/s",
        r.failed,
        r.retransmissions,
        f"{r.setup_ms:.0f}",
        f"{r.server_cpu:.0f}",
        f"{r.loadgen_cpu:.0f}",
    ]


HEADERS = [
    "PBX",
    "load",
    "held /s",
    "offered",
    "started",
    "goodput",
    "on time (< 2 s)",
    "of held (>= 90 %)",
    "shed (503)",
    "failed",
    "retrans",
    "set-up ms",
    "PBX CPU %",
    "SIPp CPU %",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--register-held", type=int, default=600, help="REGISTERs/s the PBX holds here (default 600)")
    add("--calls-held", type=int, default=100, help="calls/s the PBX holds here (default 100)")
    add("--multiples", default="1,2,5", help="offered load as multiples of the held rate (default 1,2,5)")
    add("--kinds", default="register,calls", help="register, calls or both (default both)")
    add("--seconds", type=float, default=10.0, help="length of each step (default 10)")
    add("--hold-ms", type=int, default=500, help="ms between a call's ACK and its BYE (default 500)")
    add("--per-process", type=int, default=700, help="exchanges/s per SIPp process (default 700)")
    add("--baseline", type=Path, help="also run the steps against this checkout (the PBX before)")
    add("--overload-off", action="store_true", help="also run with [overload] enabled = false")
    add("--overload-extra", default="", help="TOML lines added to this checkout's [overload] table")
    add("--no-pin", action="store_true", help="do not pin the PBX and SIPp to cores 0 and 1")
    add("--profile", type=Path, help="py-spy (raw) this checkout's PBX in its highest step: FILE-KIND-5x.EXT")
    add("--profile-kinds", default="register", help="the kinds profiled with --profile (default register)")
    add("--profile-hz", type=int, default=200, help="py-spy samples per second (default 200)")
    add(
        "--stall-at",
        type=float,
        default=5.0,
        help="with --stall-for: seconds into each step when the PBX is stopped (default 5)",
    )
    add(
        "--stall-for",
        type=float,
        default=0.0,
        help="stop the PBX (SIGSTOP) this long in each step, as a host hiccup would (default 0: never)",
    )
    add("--workdir", type=Path, help="where configs, CSVs and SIPp files go (default: a temp dir)")
    args = parser.parse_args(argv)
    args.multiples = [float(m) for m in args.multiples.split(",") if m.strip()]
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    args.profile_kinds = [k.strip() for k in args.profile_kinds.split(",") if k.strip()]
    if not args.multiples or set(args.kinds) - {"register", "calls"} or args.seconds <= 0:
        parser.error("bad --multiples, --kinds or --seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="overload-bench-"))
    overload = "[overload]\n" + args.overload_extra.replace("\\n", "\n") + "\n"
    # This checkout's own `pbx` (first on PYTHONPATH), not whatever is installed: run from a copy of another
    # commit, the steps would otherwise measure the installed tree twice.
    setups = [("this", REPO, overload)]
    if args.overload_off:
        setups.append(("overload off", REPO, "[overload]\nenabled = false\n"))
    if args.baseline is not None:
        setups.append(("baseline", args.baseline.resolve(), ""))
    print(f"# overload_bench: {source_version()}, {args.seconds:g} s per step, workdir {workdir}", flush=True)
    rows: list[list[object]] = []
    for label, code, extra in setups:
        bench = Bench(args, workdir, label.replace(" ", "-"), code, extra)
        try:
            bench.start()
            for kind in args.kinds:
                held = args.register_held if kind == "register" else args.calls_held
                for multiple in args.multiples:
                    result = bench.step(kind, held, multiple)
                    rows.append(row(label, result))
                    print(markdown_table(HEADERS, [rows[-1]]).splitlines()[-1], flush=True)
        finally:
            bench.stop()
    print()
    print(markdown_table(HEADERS, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
