"""Calls per second through `twistd pbx` (the B2BUA): SIPp UAC -> PBX -> SIPp UAS, with digest auth or not.

Set-up: a PBX (UDP only, sip_trace off, keep-alives off, RTP ports 10000-30000) on core 0 (`taskset -c 0`)
with caller extensions 4000.. (--callers, password `pwN`) and one callee extension per UAS process (4900 +
i), the shipped dialplan (dialplans/default/main.j2: an extension dialled rings for 20 s). Each UAS process
first registers its extension from its own UDP port (`scenarios/register_auth.xml`, one SIPp run, Expires
3600) and is then started on that same port (`scenarios/call_uas.xml`: a SIPp client scenario cannot receive
new INVITEs). UAC process i (`scenarios/call_uac.xml`) calls extension 4900 + i: INVITE -> 407 -> ACK ->
INVITE with credentials -> 180 -> 200 -> ACK -> hold (--hold-ms, SIPp's -d) -> BYE -> 200, SDP offered and
answered, no RTP. Every SIPp process runs on core 1, bounded with -m, -timeout and -buff_size 4194304; the
rate is split over ceil(rate / --per-process) UAC/UAS pairs.

--no-auth: the callers are a trusted peer instead (`[[tenants.default.peers]]`, network 127.0.0.1/32,
calling as extension 4000: docs/configuration.md), so the PBX sends no 407, and the UACs run
`scenarios/call_uac_noauth.xml` (INVITE -> 180 -> 200 -> ACK -> hold -> BYE -> 200). Target >= 500 calls/s
without auth, >= 300 calls/s with it. The callees still register with digest auth in both modes.

Steps: a warm-up at 10 calls/s, then (unless --memory-rate 0) a memory step on the still fresh PBX: calls
at --memory-rate held --memory-hold seconds, so that about rate x hold calls are up at once; printed: (peak
RSS - RSS before) / peak concurrent calls (SIPp's CurrentCall summed over the UACs); this includes the
transactions of the last 32 s (Timer J) that the PBX keeps for those calls. Then the rates (--rates), each
held --seconds; a rate is held when every call was made, fewer than 0.1 % failed and completed calls over
the step's wall time less the hold reach 97 % of the rate (`common.StepResult.held`). Calls that failed on a
407 with stale=true (credentials for a nonce issued a moment before: a PBX bug, see
RESULTS-registrar-calls.md) are counted apart ("stale"); the ramp goes on while a rate is held with those
excused (yes*), and both the strict and the excused highest rates are printed. Printed per step: server CPU
(% of one core) and peak RSS, the load generator's CPU (every SIPp process, UAS included), set-up time (first
INVITE to 200), CPU per call. --profile FILE: one more step at the highest rate held with py-spy recording
the PBX for 15 s; its hot spots are printed.

"other load %" is how busy the server's core was with anything but the server during the step (another
benchmark or test run on the machine: such a step is not comparable; --quiet-wait waits for a quiet machine
before each step, but cannot stop others from starting during one).

    python bench/calls_bench.py                                   # everything: ~6-8 minutes
    python bench/calls_bench.py --rates 50,100 --seconds 10 --memory-rate 0     # a quick look

Everything started is killed on exit.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HOST,
    SCENARIOS,
    ServerProcess,
    executable,
    free_port,
    markdown_table,
)
from sip_load import (
    GroupResult,
    LoadStep,
    Profile,
    PySpy,
    SippRole,
    drain_udp,
    extensions_toml,
    held_text,
    highest_held,
    print_profile,
    quiet_before_step,
    reserve_port,
    run_sipp_group,
    run_sipp_once,
    sipp_command,
    split_rate,
    start_pbx_with,
    stop_on_signals,
    summarise_raw,
    user_row,
    working_tree,
    write_users_csv,
)

DEFAULT_RATES = "50,100,125,150,200,300,400,500"
FIRST_CALLER = 4000
FIRST_CALLEE = 4900
TARGET_AUTH = 300
TARGET_NO_AUTH = 500
PEER_EXTRA = (
    f'[[tenants.default.peers]]\nname = "sipp"\nnetworks = ["{HOST}/32"]\nextension = "{FIRST_CALLER}"\n\n'
)
PBX_EXTRA = (
    '[registrar]\nkeepalive = "none"\n\n'
    '[media]\nrtp_port_min = 10000\nrtp_port_max = 30000\nbind_host = "127.0.0.1"\n\n'
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Authenticated calls/s through `twistd pbx`: SIPp UAC -> PBX -> SIPp UAS on loopback.",
        epilog="Results are printed as markdown tables; see bench/RESULTS-registrar-calls.md.",
    )
    add = parser.add_argument
    add("--rates", default=DEFAULT_RATES, help=f"comma-separated calls/s (default {DEFAULT_RATES})")
    add("--seconds", type=float, default=30.0, help="length of each step (default 30)")
    add("--hold-ms", type=int, default=200, help="ms between the ACK and the BYE (default 200)")
    add(
        "--no-auth",
        action="store_true",
        help="callers are a trusted peer (by source address): no 407, scenarios/call_uac_noauth.xml",
    )
    add("--per-process", type=int, default=100, help="calls/s per UAC (and per UAS) process (default 100)")
    add("--callers", type=int, default=100, help=f"caller extensions {FIRST_CALLER}.. (default 100)")
    add(
        "--extra-extensions",
        type=int,
        default=0,
        help="more (idle) extensions in the tenant, 5000..; the dialplan context lists every one (default 0)",
    )
    add("--memory-rate", type=int, default=50, help="calls/s of the memory step; 0 skips it (default 50)")
    add("--memory-hold", type=float, default=30.0, help="seconds each call of the memory step is held (30)")
    add("--repeat", type=int, default=1, help="runs per step; a rate must hold in each (default 1)")
    add("--keep-going", type=int, default=0, help="steps to try after the first one not held (default 0)")
    add("--server-cpu", type=int, default=0, help="core for the PBX (default 0)")
    add("--loadgen-cpu", type=int, default=1, help="core for SIPp (default 1)")
    add("--no-pin", action="store_true", help="do not pin processes with taskset")
    add("--max-failures", type=float, default=0.001, help="failure ratio allowed (default 0.001)")
    add(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each step wait up to this many s until no core is over 25 %% busy; 0: never (120)",
    )
    add("--profile", type=Path, help="after the ramp, py-spy the PBX (raw format) into this file")
    add("--profile-rate", type=int, help="rate of the profiled step (default: the highest the PBX held)")
    add("--profile-seconds", type=int, default=15, help="seconds py-spy records (default 15)")
    add("--profile-hz", type=int, default=100, help="py-spy samples per second (default 100)")
    add("--profile-gil", action="store_true", help="py-spy --gil: only the thread holding the GIL")
    add("--workdir", type=Path, help="where configs, CSVs, SIPp stats and logs go (default: a tmp dir)")
    args = parser.parse_args(argv)
    args.rate_list = sorted({int(r) for r in args.rates.split(",") if r.strip()})
    if not args.rate_list or args.seconds <= 0 or args.callers < 1 or args.per_process < 1:
        parser.error("bad --rates, --seconds, --callers or --per-process")
    return args


class Bench:
    """The PBX, its registered UAS ports and the SIPp roles of each step."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.cpu = None if args.no_pin else args.server_cpu
        self.loadgen_cpu = None if args.no_pin else args.loadgen_cpu
        rates = [*args.rate_list, args.memory_rate, 10]
        self.pairs = max(len(split_rate(r, args.per_process)) for r in rates if r > 0)
        self.callers = range(FIRST_CALLER, FIRST_CALLER + args.callers)
        self.callees = [FIRST_CALLEE + i for i in range(self.pairs)]
        self.uas_ports = [reserve_port(free_port(tcp=False)) for _ in self.callees]
        self.port = free_port()
        self.server: ServerProcess | None = None
        self.steps_run = 0
        self.uas_scenario = "call_uas.xml"  # bench/trunk_calls_bench.py: a carrier instead

    def dialed(self, pair: int) -> str:
        """What the callers of UAC/UAS pair `pair` dial: the pair's callee extension."""
        return str(self.callees[pair])

    def start(self, code: Path | None = None) -> ServerProcess:
        """The PBX; with `code`, that checkout's pbx package and dialplan (`sip_load.start_pbx_with`)."""
        numbers = [*self.callers, *self.callees, *range(5000, 5000 + self.args.extra_extensions)]
        extra = extensions_toml(numbers) + PBX_EXTRA + (PEER_EXTRA if self.args.no_auth else "")
        self.server = start_pbx_with(self.workdir / "pbx", self.port, extra, cpu=self.cpu, code=code)
        return self.server

    def register_callees(self) -> None:
        """One REGISTER run per UAS port (Expires 3600): the PBX routes calls for 4900 + i there."""
        for callee, port in zip(self.callees, self.uas_ports, strict=True):
            csv = write_users_csv(self.workdir / f"callee-{callee}.csv", [user_row(callee)])
            cmd = sipp_command(
                SCENARIOS / "register_auth.xml", remote=f"{HOST}:{self.port}", local_port=port, count=1,
                limit=20, rate=10, extra=["-inf", str(csv), "-timeout_error"],
            )  # fmt: skip
            log = self.workdir / f"register-{callee}.out"
            result = run_sipp_once(cmd, log, cpu=self.loadgen_cpu, timeout=30)
            if result.returncode != 0:
                raise RuntimeError(
                    f"registering {callee} from port {port} failed:\n{log.read_text()[-2000:]}"
                )

    def step(self, rate: int, seconds: float, hold_ms: int, label: str) -> GroupResult:
        assert self.server is not None
        self.steps_run += 1
        directory = self.workdir / "sipp" / f"{self.steps_run:02d}-{label}"
        directory.mkdir(parents=True, exist_ok=True)
        limit = seconds * 2 + hold_ms / 1000 + 15
        clients: list[SippRole] = []
        servers: list[SippRole] = []
        shares = split_rate(rate, self.args.per_process)
        waited, swallowed = drain_udp(self.uas_ports[: len(shares)])
        if swallowed:
            print(f"  (drained {swallowed} leftover datagrams in {waited:.0f} s)", flush=True)
        for i, share in enumerate(shares):
            count = max(1, round(share * seconds))
            callee, uas_port = self.callees[i], self.uas_ports[i]
            csv = write_users_csv(
                directory / f"uac{i}.csv", (user_row(c, self.dialed(i)) for c in self.callers)
            )
            uac_stat, uac_err = directory / f"uac{i}.stat", directory / f"uac{i}.err"
            uas_stat, uas_err = directory / f"uas{i}.stat", directory / f"uas{i}.err"
            uac_extra = ["-inf", str(csv), "-d", str(hold_ms), "-trace_stat", "-stf", str(uac_stat)]
            uac_extra += ["-fd", "1", "-trace_err", "-error_file", str(uac_err)]
            uas_extra = ["-s", str(callee), "-trace_stat", "-stf", str(uas_stat), "-fd", "1"]
            uas_extra += ["-trace_err", "-error_file", str(uas_err)]
            scenario = "call_uac_noauth.xml" if self.args.no_auth else "call_uac.xml"
            uac = sipp_command(
                SCENARIOS / scenario, remote=f"{HOST}:{self.port}", count=count, limit=limit,
                rate=share, extra=uac_extra,
            )  # fmt: skip
            # The UAS ends when the UAC has: a stray request (a BYE retransmission) counts as a call at SIPp,
            # so its -m has room to spare and run_sipp_group stops it `grace` s after the UACs.
            uas = sipp_command(
                SCENARIOS / self.uas_scenario, local_port=uas_port, count=count + count // 10 + 20,
                limit=limit + 10, extra=uas_extra,
            )  # fmt: skip
            clients.append(SippRole(f"uac{i}", uac, count, uac_stat, errors=uac_err))
            servers.append(SippRole(f"uas{i}", uas, count, uas_stat, uas_port))
        result = run_sipp_group(
            self.server, rate, seconds, directory, clients, servers, cpu=self.loadgen_cpu,
            server_core=self.cpu, limit=limit, grace=3.0,
        )  # fmt: skip
        # A call completes a hold after it was set up: the pace of completed calls is measured over the
        # step's wall time less the hold (never less than the step itself).
        result.step.elapsed = max(seconds, result.step.elapsed - hold_ms / 1000)
        return result


def max_concurrent(directory: Path) -> int:
    """The peak of SIPp's CurrentCall, summed over the UAC stat files of a step (per-second dumps)."""
    total = 0
    for path in sorted(directory.glob("uac*.stat")):
        lines = [line.split(";") for line in path.read_text(errors="replace").splitlines() if line]
        if len(lines) < 2 or "CurrentCall" not in lines[0]:
            continue
        column = lines[0].index("CurrentCall")
        total += max(int(row[column]) for row in lines[1:] if len(row) > column and row[column].isdigit())
    return total


STEP_HEADERS = [
    "rate/s", "pairs", "ok", "failed", "stale", "retrans", "achieved/s", "setup ms", "PBX CPU %",
    "PBX RSS MB", "CPU ms/call", "SIPp CPU %", "other load %", "held",
]  # fmt: skip


def cpu_ms(r: LoadStep) -> float:
    """PBX CPU per completed call, milliseconds."""
    return r.server_cpu / 100 / r.achieved * 1e3 if r.achieved else float("nan")


def step_row(r: LoadStep, max_failures: float) -> list[object]:
    return [
        r.rate, r.processes, r.stats.successful, r.expected - r.stats.successful, r.stale,
        r.stats.retransmissions, f"{r.achieved:.0f}", f"{r.stats.response_ms:.1f}", f"{r.server_cpu:.0f}",
        f"{r.server_rss_mb:.0f}", f"{cpu_ms(r):.2f}", f"{r.loadgen_cpu:.0f}", f"{r.other_load:.0f}",
        held_text(r, max_failures),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    executable("sipp")  # fail early with a clear message
    stop_on_signals()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="calls-bench-")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, args.workdir)
    print(
        f"# calls benchmark {time.strftime('%Y-%m-%d %H:%M')},",
        "WITHOUT auth (trusted peer):" if args.no_auth else "with digest auth:",
        f"rates {args.rate_list}, {args.seconds:g} s",
        f"steps, hold {args.hold_ms} ms, {args.callers} callers, {args.extra_extensions} extra extensions,",
        f"up to {bench.pairs} UAC/UAS pairs, workdir {args.workdir}",
    )
    print(f"# pbx at {working_tree()}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    steps: list[LoadStep] = []
    profile: Profile | None = None
    memory: tuple[GroupResult, int, float] | None = None
    idle_rss = 0.0
    status = 0
    try:
        server = bench.start()
        try:
            bench.register_callees()
            warm = bench.step(10, 2, args.hold_ms, "warmup")
            if not warm.step.held_but_stale(args.max_failures, min_pace=0.5):
                raise RuntimeError(f"calls fail at 10/s: {warm}\n{server.output[-3000:]}")
            idle_rss = server.ps.memory_info().rss / 2**20
            if args.memory_rate > 0:
                print(f"# memory step: {args.memory_rate} calls/s held {args.memory_hold:g} s", flush=True)
                quiet_before_step(args.quiet_wait)
                before = server.ps.memory_info().rss / 2**20
                hold = int(args.memory_hold * 1000)
                result = bench.step(args.memory_rate, args.memory_hold, hold, "memory")
                peak = max_concurrent(bench.workdir / "sipp" / f"{bench.steps_run:02d}-memory")
                memory = (result, peak, before)
                row = step_row(result.step, args.max_failures)
                row[10] = "-"  # CPU per call: the step's CPU covers set-up and hold, not comparable
                print("  memory: " + " | ".join(str(c) for c in row), flush=True)
            print("  " + " | ".join(STEP_HEADERS), flush=True)
            ramp(bench, server, args, steps)
            if args.profile is not None and server.alive():
                profile = profile_step(bench, server, args, steps)
        finally:
            server.stop()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        status = 1
    finally:
        if tmp is not None:
            tmp.cleanup()
    report(args, steps, memory, idle_rss, profile)
    return status


_GC_PAUSE = re.compile(r"GC pause: generation (\d+), (\d+) ms")


def gc_pauses(server: ServerProcess) -> list[tuple[int, int]]:
    """(generation, ms) of each collector pass of 50 ms or more the PBX logged (PBX_GC_LOG=1 in the
    environment: `pbx.service.process.tune_garbage_collector`); empty without it."""
    found = (_GC_PAUSE.search(line) for line in server.output.splitlines())
    return [(int(m.group(1)), int(m.group(2))) for m in found if m]


def print_gc_pauses(server: ServerProcess, seen: list[int]) -> None:
    """The collector passes of >= 50 ms logged since the last call (`seen[0]`: how many were seen)."""
    pauses = gc_pauses(server)
    new, seen[0] = pauses[seen[0] :], len(pauses)
    if new:
        text = ", ".join(f"gen{g} {ms} ms" for g, ms in new)
        print(f"  (GC passes >= 50 ms in the step: {text})", flush=True)


def ramp(bench: Bench, server: ServerProcess, args: argparse.Namespace, steps: list[LoadStep]) -> None:
    """The rates in order, appended to `steps`; goes on while a rate is held with stale failures excused."""
    misses = 0
    seen = [len(gc_pauses(server))]
    for rate in args.rate_list:
        results = []
        for _ in range(args.repeat):
            note = quiet_before_step(args.quiet_wait)
            result = bench.step(rate, args.seconds, args.hold_ms, str(rate)).step
            if note:
                result.notes.append(note)
                print(f"  ({note})", flush=True)
            results.append(result)
            steps.append(result)
            print("  " + " | ".join(str(c) for c in step_row(result, args.max_failures)), flush=True)
            print_gc_pauses(server, seen)
            if not result.held_but_stale(args.max_failures) or not server.alive():
                break
        if len(results) < args.repeat or not all(r.held_but_stale(args.max_failures) for r in results):
            misses += 1
            if misses > args.keep_going or not server.alive():
                return


def profile_step(
    bench: Bench, server: ServerProcess, args: argparse.Namespace, steps: list[LoadStep]
) -> Profile | None:
    """One more step at --profile-rate (default: the highest held) with py-spy recording the PBX for
    --profile-seconds (15) at --profile-hz (100)."""
    assert args.profile is not None
    best = highest_held(steps, args.repeat, args.max_failures, excuse_stale=True)
    rate = args.profile_rate or (best.rate if best else args.rate_list[0])
    args.profile.parent.mkdir(parents=True, exist_ok=True)
    quiet_before_step(args.quiet_wait)
    seconds = getattr(args, "profile_seconds", 15)
    spy = PySpy(
        server.pid, seconds, args.profile, cpu=bench.loadgen_cpu, rate=getattr(args, "profile_hz", 100),
        gil=getattr(args, "profile_gil", False),
    )  # fmt: skip
    try:
        result = bench.step(rate, max(args.seconds, seconds + 5.0), args.hold_ms, f"profile-{rate}").step
        ok = spy.wait()
    finally:
        spy.stop()
    print("  profiled: " + " | ".join(str(c) for c in step_row(result, args.max_failures)), flush=True)
    if not ok:
        print(f"py-spy wrote no profile:\n{spy.log[-2000:]}", file=sys.stderr)
        return None
    return summarise_raw(args.profile)


def report(
    args: argparse.Namespace,
    steps: list[LoadStep],
    memory: tuple[GroupResult, int, float] | None,
    idle_rss: float,
    profile: Profile | None = None,
) -> None:
    print()
    print(markdown_table(STEP_HEADERS, [step_row(r, args.max_failures) for r in steps]))
    print()
    rows = []
    for excuse in (False, True):
        rule = "stale excused" if excuse else "strict"
        best = highest_held(steps, args.repeat, args.max_failures, excuse_stale=excuse)
        if best is None:
            rows.append([rule, "0", "-", "-", "-", "-", "-", f"{idle_rss:.0f}", "-"])
            continue
        ms = cpu_ms(best)
        top = steps[-1].rate == best.rate and held_text(steps[-1], args.max_failures) != "NO"
        rows.append(
            [
                rule, f"{best.rate}{'+' if top else ''}", f"{best.achieved:.0f}", f"{best.server_cpu:.0f}",
                f"{ms:.2f}", f"{1000 / ms:.0f}" if ms else "-", f"{best.server_rss_mb:.0f}",
                f"{idle_rss:.0f}", f"{best.loadgen_cpu:.0f}",
            ]
        )  # fmt: skip
    print(
        markdown_table(
            ["rule", "highest rate held /s", "achieved /s", "PBX CPU %", "CPU ms/call",
             "calls per core-second", "PBX RSS MB", "RSS idle MB", "SIPp CPU %"],
            rows,
        )
    )  # fmt: skip
    print("\n(+: the highest rate tried; the PBX may hold more.)")
    stale = sum(r.stale for r in steps)
    if stale:
        print(
            f"stale: {stale} calls failed on a 407 with stale=true to credentials for a nonce issued moments",
            "before (see RESULTS-registrar-calls.md); yes* = held once those are excused.",
        )
    target, kind = (
        (TARGET_NO_AUTH, "unauthenticated (trusted peer)") if args.no_auth else (TARGET_AUTH, "authenticated")
    )
    for excuse in (False, True):
        best = highest_held(steps, args.repeat, args.max_failures, excuse_stale=excuse)
        held = best.rate if best else 0
        verdict = "meets" if held >= target else "BELOW"
        rule = "stale excused" if excuse else "strict"
        print(f"[{rule}] PBX: {held} {kind} calls/s held ({verdict} the >= {target}/s target).")
    if memory is not None:
        result, peak, before = memory
        grown = result.step.server_rss_mb - before
        per_call = grown * 2**20 / peak if peak else float("nan")
        print()
        print(
            markdown_table(
                ["calls/s", "hold s", "ok", "failed", "peak concurrent calls", "RSS before MB", "RSS peak MB",
                 "KiB per call"],
                [[result.step.rate, f"{args.memory_hold:g}", result.step.stats.successful,
                  result.step.expected - result.step.stats.successful, peak, f"{before:.0f}",
                  f"{result.step.server_rss_mb:.0f}", f"{per_call / 1024:.1f}"]],
            )
        )  # fmt: skip
    if profile is not None:
        print_profile(profile, args.profile)


if __name__ == "__main__":
    sys.exit(main())
