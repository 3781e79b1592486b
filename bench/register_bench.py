"""Authenticated registrations per second held by `twistd pbx`, against a bare Twisted UDP responder; memory
per binding.

The rate ramp: SIPp (`scenarios/register_auth.xml`) registers 1,000 distinct users (extensions 3000..3999,
password `pwN`, from a SEQUENTIAL CSV `N;pwN;[authentication username=N password=pwN]`, PEERS.md) over UDP at
rising rates, each held for --seconds: one call = one registration = REGISTER -> 401 (MD5 challenge first, the
default order) -> REGISTER with credentials -> 200, with `Expires: 3600`. Keep-alives are off in the PBX
config (they would ping every SIPp port). The server runs on core 0 (`taskset -c 0`), SIPp on core 1; above
--per-process registrations/s (500: 2,000 messages/s; --bare-per-process 1000 against bare) the rate is split
over several SIPp processes, each with `-buff_size 4194304`, `-m` (its share of rate x seconds) and
`-timeout`, and each registering its own share of the users (a phone registers from one address; with one CSV
for all, each user would collect a binding per SIPp process). A rate is held when every registration was made,
fewer than 0.1 % failed and successful registrations over the step's wall time reach 97 % of the rate
(`common.StepResult.held`, the rule of options_bench.py). Failed registrations whose last answer was a 401
with stale=true (credentials for a nonce issued a moment before: a PBX bug, see RESULTS-registrar-calls.md)
are counted apart ("stale"); the ramp goes on while a rate is held with those excused, and both the strict and
the excused highest rates are printed.

"other load %" is how busy the server's core was with anything but the server during the step (another
benchmark or test run on the machine: such a step is not comparable; --quiet-wait waits for a quiet machine
before each step, but cannot stop others from starting during one).

The floor: bench/bare_responder.py answers every request with a canned 200 and cannot challenge, so it runs
`scenarios/register_bare.xml`: the same two exchanges per registration with messages of the same size
(REGISTER -> 200, REGISTER with a fixed Authorization header -> 200), from the same CSV, at --bare-rates.
The ratio PBX/bare is of the highest registration rates held.

Memory per binding (--bindings N, default 100,000; 0 skips it):
- `inprocess` (default): a fresh Python process on core 0 builds a `LocationService` over an SQLite store
  (`SqliteLocationStore`, as `twistd pbx` does) and inserts N `Binding`s (distinct strings of the sizes a
  SIPp REGISTER produces) through `LocationService.apply`, waiting for each batch to be durable; printed:
  (RSS after - RSS before) / N, both after `gc.collect()`.
- `sipp`: a PBX with N extensions; one SIPp registers each once at --bindings-rate; RSS of the idle PBX
  before, and after the last registration plus 40 s (Timer J: the server transactions are gone). This
  includes what the PBX keeps per registered user beyond the binding (H(A1) cache, nonce counts).
Target: < 2 KiB per binding.

Profile (--profile FILE): after the ramp, one more step at --profile-rate (default: the highest rate the PBX
held) with `py-spy record --pid N -d 15 -f raw -o FILE` on core 1; the hot functions by self and total time
are printed.

    python bench/register_bench.py                                  # everything: ~10-15 minutes
    python bench/register_bench.py --rates 250,500 --seconds 10 --servers pbx --bindings 0   # a quick look

Targets: >= 3,000 authenticated registrations/s; < 2 KiB per binding. Everything started is killed on exit.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import subprocess
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
    pinned,
    read_sipp_stat,
    start_bare,
)
from sip_load import (
    LoadStep,
    Profile,
    PySpy,
    SippRole,
    extensions_toml,
    held_text,
    highest_held,
    print_profile,
    quiet_before_step,
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

DEFAULT_RATES = "250,500,750,1000,1500,2000,3000"
DEFAULT_BARE_RATES = "500,1000,2000,3000,4000,6000,8000"
FIRST_USER = 3000
TARGET_RATE = 3000
TARGET_BINDING_BYTES = 2048
PBX_EXTRA = '[registrar]\nkeepalive = "none"\n'


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Authenticated REGISTERs/s held by `twistd pbx` versus a bare Twisted UDP responder "
        "(SIPp on loopback), and memory per binding.",
        epilog="Results are printed as markdown tables; see bench/RESULTS-registrar-calls.md.",
    )
    add = parser.add_argument
    add("--rates", default=DEFAULT_RATES, help=f"registrations/s against the PBX (default {DEFAULT_RATES})")
    add("--bare-rates", default=DEFAULT_BARE_RATES, help=f"against bare (default {DEFAULT_BARE_RATES})")
    add("--seconds", type=float, default=20.0, help="length of each step (default 20)")
    add("--servers", default="pbx,bare", help="which servers, in order (default pbx,bare)")
    add("--users", type=int, default=1000, help=f"distinct users, extensions {FIRST_USER}.. (default 1000)")
    add("--per-process", type=int, default=500, help="registrations/s per SIPp process, PBX (default 500)")
    add("--bare-per-process", type=int, default=1000, help="the same against bare (default 1000)")
    add("--repeat", type=int, default=1, help="runs per step; a rate must hold in each (default 1)")
    add("--keep-going", type=int, default=0, help="steps to try after the first one not held (default 0)")
    add("--server-cpu", type=int, default=0, help="core for the server (default 0)")
    add("--loadgen-cpu", type=int, default=1, help="core for SIPp and py-spy (default 1)")
    add("--no-pin", action="store_true", help="do not pin processes with taskset")
    add("--max-failures", type=float, default=0.001, help="failure ratio allowed (default 0.001)")
    add("--bindings", type=int, default=100_000, help="bindings for the memory measure; 0 skips (100000)")
    add("--bindings-mode", choices=("inprocess", "sipp"), default="inprocess", help="(default inprocess)")
    add("--bindings-rate", type=int, default=500, help="registrations/s in --bindings-mode sipp (500)")
    add("--profile", type=Path, help="record a py-spy profile (raw format) of the PBX into this file")
    add("--profile-rate", type=int, help="rate of the profiled step (default: the highest the PBX held)")
    add(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each step wait up to this many s until no core is over 25 %% busy; 0: never (120)",
    )
    add("--workdir", type=Path, help="where configs, CSVs, SIPp stats and logs go (default: a tmp dir)")
    add("--bindings-child", type=int, help=argparse.SUPPRESS)  # internal: the in-process measure
    args = parser.parse_args(argv)
    args.rate_list = sorted({int(r) for r in args.rates.split(",") if r.strip()})
    args.bare_rate_list = sorted({int(r) for r in args.bare_rates.split(",") if r.strip()})
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.server_list) - {"pbx", "bare"}
    if unknown or not args.rate_list or not args.bare_rate_list or args.seconds <= 0 or args.users < 1:
        parser.error(f"bad --servers {sorted(unknown)} or --rates/--bare-rates/--seconds/--users")
    return args


# -- the rate ramp -------------------------------------------------------------------------------------------

STEP_HEADERS = [
    "server", "rate/s", "SIPp", "ok", "failed", "stale", "retrans", "achieved/s", "resp ms", "server CPU %",
    "server RSS MB", "SIPp CPU %", "other load %", "held",
]  # fmt: skip


def step_row(r: LoadStep, max_failures: float) -> list[object]:
    return [
        r.server, r.rate, r.processes, r.stats.successful, r.expected - r.stats.successful, r.stale,
        r.stats.retransmissions, f"{r.achieved:.0f}", f"{r.stats.response_ms:.1f}", f"{r.server_cpu:.0f}",
        f"{r.server_rss_mb:.0f}", f"{r.loadgen_cpu:.0f}", f"{r.other_load:.0f}", held_text(r, max_failures),
    ]  # fmt: skip


def start(name: str, workdir: Path, port: int, cpu: int | None, users: range) -> ServerProcess:
    if name == "pbx":
        return start_pbx_with(workdir / "pbx", port, extensions_toml(users) + PBX_EXTRA, cpu=cpu)
    return start_bare(port, cpu=cpu)


_STEPS = itertools.count(1)


def one_step(
    server: ServerProcess,
    port: int,
    rate: int,
    args: argparse.Namespace,
    csv: Path,
    workdir: Path,
    *,
    seconds: float | None = None,
) -> LoadStep:
    """Hold `rate` registrations/s for `seconds` (default --seconds) against `server` and measure.

    Measured like `common.run_sipp_step`, but SIPp's ports come from `sip_load.sipp_ports` and each step's
    files go to a directory of its own.
    """
    scenario = SCENARIOS / ("register_auth.xml" if server.name == "pbx" else "register_bare.xml")
    seconds = args.seconds if seconds is None else seconds
    directory = workdir / "sipp" / f"{next(_STEPS):02d}-{server.name}-{rate}"
    limit = seconds * 2 + 10
    clients = []
    per_process = args.per_process if server.name == "pbx" else args.bare_per_process
    shares = split_rate(rate, per_process)
    # Each SIPp process registers its own share of the users, as a phone always registers from the same
    # address: with one CSV for all, every user would collect a binding per SIPp process.
    rows = [line for line in csv.read_text().splitlines()[1:] if line.strip()]
    for i, share in enumerate(shares):
        count = max(1, round(share * seconds))
        stat = directory / f"sipp{i}.stat"
        errors = directory / f"sipp{i}.err"
        part = write_users_csv(directory / f"users{i}.csv", rows[i :: len(shares)])
        extra = ["-inf", str(part), "-trace_stat", "-stf", str(stat), "-fd", "1"]
        extra += ["-trace_err", "-error_file", str(errors)]
        cmd = sipp_command(
            scenario, remote=f"{HOST}:{port}", count=count, limit=limit, rate=share, extra=extra
        )
        clients.append(SippRole(f"sipp{i}", cmd, count, stat, errors=errors))
    loadgen_cpu = None if args.no_pin else args.loadgen_cpu
    server_core = None if args.no_pin else args.server_cpu
    return run_sipp_group(
        server, rate, seconds, directory, clients, cpu=loadgen_cpu, server_core=server_core, limit=limit
    ).step


def ramp(
    name: str, args: argparse.Namespace, workdir: Path, csv: Path, users: range
) -> tuple[list[LoadStep], dict[str, object]]:
    """All steps against one server (and the profile, for the PBX); the steps and extras.

    The ramp goes on while a rate is held with the stale-nonce failures excused (`LoadStep.held_but_stale`):
    they come from a bug, not from load; `summary` reports the highest rate held both ways.
    """
    port = free_port()
    server = start(name, workdir, port, None if args.no_pin else args.server_cpu, users)
    steps: list[LoadStep] = []
    extras: dict[str, object] = {}
    misses = 0
    try:
        warm = one_step(server, port, 100, args, csv, workdir, seconds=2)
        if not warm.held_but_stale(args.max_failures, min_pace=0.5):
            raise RuntimeError(f"{name} fails at 100/s: {warm}\n{server.output[-3000:]}")
        extras["idle_rss_mb"] = server.ps.memory_info().rss / 2**20
        for rate in args.rate_list if name == "pbx" else args.bare_rate_list:
            results = []
            for _ in range(args.repeat):
                note = quiet_before_step(args.quiet_wait)
                result = one_step(server, port, rate, args, csv, workdir)
                if note:
                    result.notes.append(note)
                    print(f"  ({note})", flush=True)
                results.append(result)
                print("  " + " | ".join(str(c) for c in step_row(result, args.max_failures)), flush=True)
                if not result.held_but_stale(args.max_failures) or not server.alive():
                    break
            steps.extend(results)
            if len(results) < args.repeat or not all(r.held_but_stale(args.max_failures) for r in results):
                misses += 1
                if misses > args.keep_going or not server.alive():
                    break
        if name == "pbx" and args.profile is not None and server.alive():
            best = highest_held(steps, args.repeat, args.max_failures, excuse_stale=True)
            rate = args.profile_rate or (best.rate if best else args.rate_list[0])
            extras["profile"] = profile_step(server, port, rate, args, csv, workdir)
    finally:
        server.stop()
    return steps, extras


def profile_step(
    server: ServerProcess, port: int, rate: int, args: argparse.Namespace, csv: Path, workdir: Path
) -> dict[str, object]:
    """One more step at `rate` with py-spy recording the PBX for 15 s of it."""
    assert args.profile is not None
    args.profile.parent.mkdir(parents=True, exist_ok=True)
    seconds = max(args.seconds, 20.0)
    spy = PySpy(server.pid, 15, args.profile, cpu=None if args.no_pin else args.loadgen_cpu)
    try:
        result = one_step(server, port, rate, args, csv, workdir, seconds=seconds)
        ok = spy.wait()
    finally:
        spy.stop()
    print(f"  profiled step: {' | '.join(str(c) for c in step_row(result, args.max_failures))}")
    if not ok:
        print(f"py-spy wrote no profile:\n{spy.log[-2000:]}", file=sys.stderr)
        return {"step": result}
    return {"step": result, "profile": summarise_raw(args.profile)}


def summary(steps: dict[str, list[LoadStep]], args: argparse.Namespace) -> str:
    """Per server, the highest rate held strictly and with the stale-nonce failures excused."""
    rows = []
    for name, runs in steps.items():
        for excuse in (False, True):
            best = highest_held(runs, args.repeat, args.max_failures, excuse_stale=excuse)
            rule = "stale excused" if excuse else "strict"
            if best is None:
                rows.append([name, rule, 0, "-", "-", "-", "-", "-"])
                continue
            us = best.server_cpu / 100 / best.achieved * 1e6 if best.achieved else float("nan")
            top = runs[-1].rate == best.rate and held_text(runs[-1], args.max_failures) != "NO"
            rows.append(
                [
                    name, rule, f"{best.rate}{'+' if top else ''}", f"{best.achieved:.0f}",
                    f"{best.server_cpu:.0f}", f"{us:.0f}", f"{best.server_rss_mb:.0f}",
                    f"{best.loadgen_cpu:.0f}",
                ]
            )  # fmt: skip
    return markdown_table(
        ["server", "rule", "highest rate held /s", "achieved /s", "server CPU %", "CPU us/registration",
         "RSS MB", "SIPp CPU %"],
        rows,
    )  # fmt: skip


# -- memory per binding --------------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bindings_child(n: int, directory: Path, out: Path) -> None:
    """In this (fresh) process: N bindings into a LocationService over SQLite; RSS before and after, as JSON
    into `out`. Exits the process (twisted's `task.react`)."""
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred, gatherResults

    from pbx.registrar import LocationService
    from pbx.store import Binding, SqliteLocationStore

    async def run(reactor: object) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        db = directory / "bindings.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        store = SqliteLocationStore(db, reactor)  # type: ignore[arg-type]
        location = LocationService(reactor, store)  # type: ignore[arg-type]
        await location.load()
        # Warm the store's worker (SQLite page cache, prepared statements) with one binding first.
        tenant, local = "default", f"udp:{HOST}:5060"
        now = reactor.seconds()  # type: ignore[attr-defined]

        def binding(i: int) -> Binding:
            aor = str(100000 + i)
            port = 20000 + i % 40000
            return Binding(
                tenant=tenant,
                aor=aor,
                contact=f"sip:{aor}@{HOST}:{port};transport=udp",
                expires_at=now + 3600 + i % 600,
                call_id=f"{i + 1}-{4000 + i % 60000}@{HOST}",
                cseq=2,
                received=f"udp:{HOST}:{port}",
                local=local[:],
                user_agent="".join(["SIPp ", "register-bench"]),
                registered_at=now,
            )

        warm = binding(-1)
        await location.apply(tenant, warm.aor, [warm], ())
        gc.collect()
        before = _rss()
        t0 = time.monotonic()
        for first in range(0, n, 1000):
            batch = [binding(i) for i in range(first, min(n, first + 1000))]
            await gatherResults([location.apply(tenant, b.aor, [b], ()) for b in batch])
        elapsed = time.monotonic() - t0
        gc.collect()
        after = _rss()
        result = {
            "bindings": len(location) - 1, "rss_before_mb": before / 2**20, "rss_after_mb": after / 2**20,
            "bytes_per_binding": (after - before) / n, "seconds": elapsed, "commits": store.commits,
        }  # fmt: skip
        location.stop()
        await store.close()
        out.write_text(json.dumps(result))

    task.react(lambda reactor: ensureDeferred(run(reactor)))  # exits the process (sys.exit)


def measure_bindings_inprocess(n: int, workdir: Path, cpu: int | None) -> dict[str, float]:
    out = workdir / "bindings.json"
    out.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--bindings-child",
        str(n),
        "--workdir",
        str(workdir),
    ]
    proc = subprocess.run(pinned(cmd, cpu), capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"in-process binding measure failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def measure_bindings_sipp(n: int, rate: int, workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    """N users registered once each by SIPp into a PBX with N extensions; the PBX's RSS growth per binding."""
    first = 100000
    users = range(first, first + n)
    directory = workdir / "bindings-sipp"
    csv = write_users_csv(directory / "users.csv", (user_row(u) for u in users))
    port = free_port()
    cpu = None if args.no_pin else args.server_cpu
    server = start_pbx_with(directory / "pbx", port, extensions_toml(users) + PBX_EXTRA, cpu=cpu, timeout=600)
    try:
        time.sleep(5)  # let start-up settle (gc.freeze runs when the reactor starts)
        before = server.ps.memory_info().rss
        stat = directory / "sipp-stat.csv"
        limit = n / rate * 2 + 60
        extra = ["-inf", str(csv), "-trace_stat", "-stf", str(stat), "-fd", "5"]
        cmd = sipp_command(
            SCENARIOS / "register_auth.xml", remote=f"{HOST}:{port}", count=n, limit=limit, rate=rate,
            extra=extra,
        )  # fmt: skip
        t0 = time.monotonic()
        run_sipp_once(
            cmd, directory / "sipp.out", cpu=None if args.no_pin else args.loadgen_cpu, timeout=limit + 10
        )
        elapsed = time.monotonic() - t0
        stats = read_sipp_stat(stat)
        peak = server.ps.memory_info().rss
        time.sleep(40)  # Timer J (32 s): the REGISTER server transactions are released
        after = server.ps.memory_info().rss
    finally:
        server.stop()
    return {
        "bindings": stats.successful, "failed": stats.failed, "rss_before_mb": before / 2**20,
        "rss_peak_mb": peak / 2**20, "rss_after_mb": after / 2**20,
        "bytes_per_binding": (after - before) / max(1, stats.successful), "seconds": elapsed,
    }  # fmt: skip


def bindings_table(mode: str, m: dict[str, float]) -> str:
    per = m["bytes_per_binding"]
    verdict = "meets" if per < TARGET_BINDING_BYTES else "ABOVE"
    return markdown_table(
        ["mode", "bindings", "RSS before MB", "RSS after MB", "bytes/binding", "target < 2048", "seconds"],
        [[mode, int(m["bindings"]), f"{m['rss_before_mb']:.1f}", f"{m['rss_after_mb']:.1f}", f"{per:.0f}",
          verdict, f"{m['seconds']:.0f}"]],
    )  # fmt: skip


# -- main ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.bindings_child is not None:
        assert args.workdir is not None
        bindings_child(args.bindings_child, args.workdir / "bindings", args.workdir / "bindings.json")
        return 1  # not reached: task.react exits
    executable("sipp")  # fail early with a clear message
    stop_on_signals()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="register-bench-")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    users = range(FIRST_USER, FIRST_USER + args.users)
    csv = write_users_csv(args.workdir / "users.csv", (user_row(u) for u in users))
    print(
        f"# REGISTER benchmark {time.strftime('%Y-%m-%d %H:%M')}: pbx rates {args.rate_list}, bare rates",
        f"{args.bare_rate_list}, {args.seconds:g} s steps, {args.users} users, workdir {args.workdir}",
    )
    print(f"# pbx at {working_tree()}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    print("  " + " | ".join(STEP_HEADERS), flush=True)
    steps: dict[str, list[LoadStep]] = {}
    extras: dict[str, dict[str, object]] = {}
    binding_result: dict[str, float] | None = None
    status = 0
    try:
        for name in args.server_list:
            steps[name], extras[name] = ramp(name, args, args.workdir, csv, users)
        if args.bindings > 0:
            print(f"# memory per binding: {args.bindings} bindings, {args.bindings_mode}", flush=True)
            if args.bindings_mode == "inprocess":
                cpu = None if args.no_pin else args.server_cpu
                binding_result = measure_bindings_inprocess(args.bindings, args.workdir, cpu)
            else:
                binding_result = measure_bindings_sipp(args.bindings, args.bindings_rate, args.workdir, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        status = 1
    finally:
        if tmp is not None:
            tmp.cleanup()
    report(args, steps, extras, binding_result)
    return status


def report(
    args: argparse.Namespace,
    steps: dict[str, list[LoadStep]],
    extras: dict[str, dict[str, object]],
    binding_result: dict[str, float] | None,
) -> None:
    all_steps = [r for name in steps for r in steps[name]]
    print()
    print(markdown_table(STEP_HEADERS, [step_row(r, args.max_failures) for r in all_steps]))
    print()
    print(summary(steps, args))
    print(
        "\n(+: the highest rate tried; the server may hold more. One registration = REGISTER, 401, REGISTER,"
    )
    print("200 for the PBX; REGISTER, 200, REGISTER, 200 for bare.)")
    for name, extra in extras.items():
        if "idle_rss_mb" in extra:
            print(f"{name}: RSS after the warm-up {extra['idle_rss_mb']:.0f} MB")
    stale = sum(r.stale for runs in steps.values() for r in runs)
    if stale:
        print(
            f"stale: {stale} registrations failed on a 401 with stale=true to credentials for a nonce issued",
            "moments before (see RESULTS-registrar-calls.md); yes* = held once those are excused.",
        )
    for excuse in (False, True):
        pbx = highest_held(steps.get("pbx", []), args.repeat, args.max_failures, excuse_stale=excuse)
        bare = highest_held(steps.get("bare", []), args.repeat, args.max_failures, excuse_stale=excuse)
        rule = "stale excused" if excuse else "strict"
        if "pbx" in steps:
            held = pbx.rate if pbx else 0
            verdict = "meets" if held >= TARGET_RATE else "BELOW"
            print(f"\n[{rule}] PBX: {held} authenticated registrations/s held", end=" ")
            print(f"({verdict} the >= {TARGET_RATE}/s target).")
        if "pbx" in steps and bare is not None:
            print(
                f"[{rule}] PBX / bare = {(pbx.rate if pbx else 0) / bare.rate:.0%} of the highest rate held."
            )
            if steps["bare"][-1].rate == bare.rate:
                print("bare held every rate tried: the ratio is an upper bound (try higher --bare-rates).")
            if pbx is not None and pbx.achieved and bare.achieved:
                pbx_us = pbx.server_cpu / 100 / pbx.achieved * 1e6
                bare_us = bare.server_cpu / 100 / bare.achieved * 1e6
                print(f"[{rule}] CPU per registration: PBX {pbx_us:.0f} us, bare {bare_us:.0f} us", end="")
                print(f" ({pbx_us / bare_us:.0f}x).")
    profiled = extras.get("pbx", {}).get("profile")
    if isinstance(profiled, dict) and isinstance(profiled.get("profile"), Profile):
        profile: Profile = profiled["profile"]
        print_profile(profile, args.profile)
    if binding_result is not None:
        print()
        print(bindings_table(args.bindings_mode, binding_result))
        if "rss_peak_mb" in binding_result:
            print(f"(PBX RSS right after the last registration: {binding_result['rss_peak_mb']:.1f} MB)")


if __name__ == "__main__":
    sys.exit(main())
