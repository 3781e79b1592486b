"""OPTIONS throughput of `twistd pbx` against a bare Twisted UDP responder, on this machine.

SIPp sends OPTIONS over UDP at rising rates, each held for --seconds, first against `twistd -n pbx` (UDP-only
config, sip_trace off) and then against bench/bare_responder.py, each server pinned to one core with
`taskset -c 0` and SIPp to the other (`taskset -c 1`). A call is one OPTIONS transaction answered 200. A rate
is held when every call was made, fewer than 0.1 % failed, and the answers kept pace: successful calls over
the step's wall time reach 97 % of the rate (late answers stretch the step). For each server
the ramp stops at the first rate that is not held. Printed: per step, the server's CPU (psutil, % of one
core, over the step), its peak RSS, the load generator's CPU (rusage of the SIPp processes), SIPp's
retransmissions and mean response time; then the highest rate held by each and the ratio PBX/bare
(target: PBX >= 60 % of bare).

Run by hand, not in CI (it takes several minutes):

    python bench/options_bench.py                       # default rates, 20 s steps
    python bench/options_bench.py --rates 1000,2000 --seconds 10 --servers pbx

Every step ends by itself (SIPp -m and -timeout); everything started is killed on exit.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ServerProcess,
    StepResult,
    free_port,
    markdown_table,
    run_sipp_step,
    source_version,
    start_bare,
    start_pbx,
)

DEFAULT_RATES = "500,1000,2000,3000,4000,6000,8000,10000,12000,14000,16000,18000,20000"
TARGET = 0.60  # PBX / bare


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="OPTIONS/s held by `twistd pbx` versus a bare Twisted UDP responder (SIPp on loopback).",
        epilog="Results are printed as markdown tables; see bench/README.md.",
    )
    parser.add_argument(
        "--rates", default=DEFAULT_RATES, help=f"comma-separated calls/s (default {DEFAULT_RATES})"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each step (default 20)")
    parser.add_argument("--servers", default="pbx,bare", help="which servers, in order (default pbx,bare)")
    parser.add_argument(
        "--per-process", type=int, default=2000, help="calls/s per SIPp process; more processes above (2000)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per step; a rate must hold in each (1)")
    parser.add_argument(
        "--keep-going", type=int, default=0, help="steps to try after the first one not held (default 0)"
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the server (default 0)")
    parser.add_argument("--loadgen-cpu", type=int, default=1, help="core for SIPp (default 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    parser.add_argument(
        "--gc-report",
        action="store_true",
        help="run twistd through bench/twistd_gc.py and print the garbage collector's pauses over 20 ms",
    )
    parser.add_argument("--max-failures", type=float, default=0.001, help="failure ratio allowed (0.001)")
    parser.add_argument(
        "--workdir", type=Path, help="where configs, SIPp stats and logs go (default: a tmp dir)"
    )
    args = parser.parse_args(argv)
    args.rate_list = sorted({int(r) for r in args.rates.split(",") if r.strip()})
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.server_list) - {"pbx", "bare"}
    if unknown or not args.rate_list or args.seconds <= 0:
        parser.error(f"bad --servers {sorted(unknown)} or --rates/--seconds")
    return args


def start(name: str, workdir: Path, port: int, cpu: int | None, gc_report: bool = False) -> ServerProcess:
    if name == "pbx":
        return start_pbx(workdir / "pbx", port, cpu=cpu, gc_report=gc_report)
    return start_bare(port, cpu=cpu)


STEP_HEADERS = [
    "server", "rate/s", "SIPp", "ok", "failed", "retrans", "achieved/s", "resp ms", "server CPU %",
    "server RSS MB", "SIPp CPU %", "held",
]  # fmt: skip


def step_row(r: StepResult, held: bool) -> list[object]:
    return [
        r.server, r.rate, r.processes, r.stats.successful, r.expected - r.stats.successful,
        r.stats.retransmissions,
        f"{r.achieved:.0f}", f"{r.stats.response_ms:.1f}", f"{r.server_cpu:.0f}", f"{r.server_rss_mb:.0f}",
        f"{r.loadgen_cpu:.0f}", "yes" if held else "NO" + ("" if r.server_alive else " (died)"),
    ]  # fmt: skip


def ramp(name: str, args: argparse.Namespace, workdir: Path) -> tuple[list[StepResult], StepResult | None]:
    """All steps against one server; returns them and the highest held step."""
    server_cpu = None if args.no_pin else args.server_cpu
    loadgen_cpu = None if args.no_pin else args.loadgen_cpu
    port = free_port()
    server = start(name, workdir, port, server_cpu, args.gc_report)
    steps: list[StepResult] = []
    best: StepResult | None = None
    misses = 0
    try:
        # Warm-up and sanity check: a low rate must work before the ramp means anything.
        warm = run_sipp_step(server, port, 200, 2, workdir / "sipp", cpu=loadgen_cpu)
        if not warm.held(args.max_failures, min_pace=0.5):
            raise RuntimeError(f"{name} fails at 200/s: {warm}\n{server.output[-3000:]}")
        for rate in args.rate_list:
            results = []
            for _ in range(args.repeat):
                result = run_sipp_step(
                    server,
                    port,
                    rate,
                    args.seconds,
                    workdir / "sipp",
                    per_process=args.per_process,
                    cpu=loadgen_cpu,
                )
                results.append(result)
                held = result.held(args.max_failures)
                print("  " + " | ".join(str(c) for c in step_row(result, held)), flush=True)
                if not held or not server.alive():
                    break
            held_all = all(r.held(args.max_failures) for r in results) and len(results) == args.repeat
            steps.extend(results)
            if held_all:
                best = max(results, key=lambda r: r.server_cpu)  # report the costlier run
            else:
                misses += 1
                if misses > args.keep_going or not server.alive():
                    break
    finally:
        server.stop()
        if args.gc_report and name == "pbx":
            pauses = [line for line in server.lines if "GC pause" in line]
            totals = [line for line in server.lines if "GC totals" in line]
            print(f"  # pbx: {len(pauses)} GC pauses over 20 ms", flush=True)
            for line in pauses[-5:] + totals:
                print(f"  # {line.split('] ', 1)[-1]}", flush=True)
    return steps, best


def summary(bests: dict[str, StepResult | None], steps: dict[str, list[StepResult]]) -> str:
    rows = []
    for name, best in bests.items():
        if best is None:
            rows.append([name, 0, "-", "-", "-", "-", "-"])
            continue
        us = best.server_cpu / 100 / best.achieved * 1e6 if best.achieved else float("nan")
        top = steps[name][-1].rate == best.rate
        rows.append(
            [
                name, f"{best.rate}{'+' if top else ''}", f"{best.achieved:.0f}", f"{best.server_cpu:.0f}",
                f"{us:.0f}", f"{best.server_rss_mb:.0f}", f"{best.loadgen_cpu:.0f}",
            ]
        )  # fmt: skip
    return markdown_table(
        [
            "server",
            "highest rate held /s",
            "achieved /s",
            "server CPU %",
            "CPU us/request",
            "RSS MB",
            "SIPp CPU %",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="options-bench-")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    began = time.strftime("%Y-%m-%d %H:%M")
    print(
        f"# OPTIONS benchmark {began}: rates {args.rate_list}, {args.seconds:g} s steps,",
        f"workdir {args.workdir}",
    )
    print(f"# pbx at {source_version()}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    print("  " + " | ".join(STEP_HEADERS), flush=True)
    steps: dict[str, list[StepResult]] = {}
    bests: dict[str, StepResult | None] = {}
    status = 0
    try:
        for name in args.server_list:
            steps[name], bests[name] = ramp(name, args, args.workdir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    except RuntimeError as e:  # a server that does not start or fails the warm-up
        print(f"error: {e}", file=sys.stderr)
        status = 1
    finally:
        if tmp is not None:
            tmp.cleanup()
    all_steps = [r for name in steps for r in steps[name]]
    print()
    print(markdown_table(STEP_HEADERS, [step_row(r, r.held(args.max_failures)) for r in all_steps]))
    print()
    print(summary(bests, steps))
    print("\n(+: the highest rate tried; the server may hold more.)")
    pbx, bare = bests.get("pbx"), bests.get("bare")
    if "pbx" in bests and "bare" in bests and bare is not None:
        ratio = (pbx.rate if pbx else 0) / bare.rate
        verdict = "meets" if ratio >= TARGET else "BELOW"
        print(f"\nPBX / bare = {ratio:.0%} of the highest rate held ({verdict} the {TARGET:.0%} target).")
        if steps["bare"] and steps["bare"][-1].rate == bare.rate:
            print("bare held every rate tried: the ratio is an upper bound (try higher --rates).")
        if pbx is not None and pbx.achieved and bare.achieved:
            pbx_us = pbx.server_cpu / 100 / pbx.achieved * 1e6
            bare_us = bare.server_cpu / 100 / bare.achieved * 1e6
            print(
                f"CPU per request: PBX {pbx_us:.0f} us, bare {bare_us:.0f} us",
                f"(bare/PBX = {bare_us / pbx_us:.0%}).",
            )
    return status


if __name__ == "__main__":
    sys.exit(main())
