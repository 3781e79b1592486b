"""Trunk calls per second against extension calls: the PBX's CPU per call through a trunk whose carrier
challenges every INVITE, beside the same calls to an extension (target: within 20 %).

Two PBXs run side by side on core 0 (`taskset -c 0`), with the same callers (extensions 4000.., digest auth,
`may_call_out = true`), loaded one after the other at each rate:

- **extension**: `bench/calls_bench.py`'s set-up (its `Bench`): SIPp UAC -> PBX -> SIPp UAS registered as
  extension 4900 + i (`scenarios/call_uac.xml`: INVITE -> 407 -> INVITE with credentials -> 180 -> 200 ->
  ACK -> hold -> BYE).
- **trunk**: the same callers dial `9` + pair + a number; the dialplan sends the call out through trunk `c<i>`
  (`dial trunk:cI/NUMBER`) to a SIPp carrier on that trunk's port (`scenarios/trunk_carrier_uas.xml`): the
  carrier answers every INVITE with 407, the PBX answers with the trunk's credentials, then 180, 200, ACK,
  BYE. So a trunk call costs the PBX one more transaction (the carrier's 407 and its ACK) and a digest
  computed on the client side, besides the caller's own 407.

Per step: PBX CPU per completed call (ms) for each, and trunk / extension. A rate counts when both held it
(`common.StepResult.held`). Every SIPp process runs on core 1; see calls_bench.py for the measurement.

    python bench/trunk_calls_bench.py --rates 50,100 --seconds 20          # ~3 minutes
    python bench/trunk_calls_bench.py --rates 50 --seconds 10 --repeat 1   # a quick look

Everything started is killed on exit.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calls_bench import FIRST_CALLER, PBX_EXTRA, Bench, step_row
from common import ServerProcess, executable, markdown_table
from sip_load import (
    LoadStep,
    held_text,
    password,
    quiet_before_step,
    start_pbx_with,
    stop_on_signals,
    working_tree,
)

NUMBER = "5551234567"
TARGET_RATIO = 1.2
DIALPLAN = """\
{# bench/trunk_calls_bench.py: 9 + pair digit + number goes out through trunk c<pair> #}
{% if call.dialed is match("9[0-9][0-9]{4,15}") and caller.may_call_out %}
dial {{ "trunk:c" ~ call.dialed[1] ~ "/" ~ call.dialed[2:] | e164(country="1") }} timeout=20
hangup
{% else %}
hangup 404
{% endif %}
"""


def callers_toml(numbers: range) -> str:
    """The callers, allowed to call out (`sip_load.extensions_toml` with `may_call_out`)."""
    return "".join(
        f'[tenants.default.extensions.{n}]\nname = "Load {n}"\npassword = "{password(n)}"\n'
        "may_call_out = true\n\n"
        for n in numbers
    )


def trunks_toml(ports: list[int]) -> str:
    """One trunk per carrier port: c0, c1, ... (at most 10: the dialled pair digit)."""
    return "".join(
        f'[tenants.default.trunks.c{i}]\nhost = "127.0.0.1"\nport = {port}\ntransport = "udp"\n'
        f'username = "pbx{i}"\npassword = "carrier-pw"\nrealm = "carrier.bench"\n'
        f'dids = ["+1555000000{i}"]\n\n'
        for i, port in enumerate(ports)
    )


class TrunkBench(Bench):
    """`calls_bench.Bench` with carriers instead of registered callees."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__(args, workdir)
        if self.pairs > 10:
            raise SystemExit("at most 10 UAC/carrier pairs (raise --per-process)")
        self.uas_scenario = "trunk_carrier_uas.xml"

    def dialed(self, pair: int) -> str:
        return f"9{pair}{NUMBER}"

    def start(self, code: Path | None = None) -> ServerProcess:
        dialplan = self.workdir / "trunk-main.j2"
        dialplan.write_text(DIALPLAN)
        extra = callers_toml(self.callers) + trunks_toml(self.uas_ports) + PBX_EXTRA
        self.server = start_pbx_with(self.workdir / "pbx", self.port, extra, cpu=self.cpu, dialplan=dialplan)
        return self.server

    def register_callees(self) -> None:
        """A carrier takes calls without registering."""


class ExtensionBench(Bench):
    """`calls_bench.Bench` with callers that may call out, so both PBXs have the same directory."""

    def start(self, code: Path | None = None) -> ServerProcess:
        extra = callers_toml(self.callers) + callers_toml(range(self.callees[0], self.callees[-1] + 1))
        self.server = start_pbx_with(self.workdir / "pbx", self.port, extra + PBX_EXTRA, cpu=self.cpu)
        return self.server


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--rates", default="50,100", help="comma-separated calls/s (default 50,100)")
    add("--seconds", type=float, default=20.0, help="length of each step (default 20)")
    add("--repeat", type=int, default=2, help="runs per rate and kind (default 2)")
    add("--hold-ms", type=int, default=200, help="ms between the ACK and the BYE (default 200)")
    add("--per-process", type=int, default=100, help="calls/s per UAC (and per UAS) process (default 100)")
    add("--callers", type=int, default=100, help=f"caller extensions {FIRST_CALLER}.. (default 100)")
    add("--server-cpu", type=int, default=0)
    add("--loadgen-cpu", type=int, default=1)
    add("--no-pin", action="store_true")
    add("--max-failures", type=float, default=0.001)
    add("--quiet-wait", type=float, default=60.0, help="wait up to this many s for a quiet machine (60)")
    add("--workdir", type=Path)
    args = parser.parse_args(argv)
    args.rate_list = sorted({int(r) for r in args.rates.split(",") if r.strip()})
    # What calls_bench.Bench reads besides these.
    args.memory_rate, args.extra_extensions, args.no_auth = 0, 0, False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    executable("sipp")
    stop_on_signals()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="trunk-bench-")
        args.workdir = Path(tmp.name)
    print(
        f"# trunk calls benchmark {time.strftime('%Y-%m-%d %H:%M')}: rates {args.rate_list}, "
        f"{args.seconds:g} s steps x {args.repeat}, hold {args.hold_ms} ms, workdir {args.workdir}"
    )
    print(f"# pbx at {working_tree()}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    benches = {
        "extension": ExtensionBench(args, args.workdir / "extension"),
        "trunk": TrunkBench(args, args.workdir / "trunk"),
    }
    results: list[tuple[str, LoadStep]] = []
    servers: list[ServerProcess] = []
    status = 0
    try:
        for kind, bench in benches.items():
            bench.workdir.mkdir(parents=True, exist_ok=True)
            servers.append(bench.start())
            bench.register_callees()
            warm = bench.step(10, 2, args.hold_ms, "warmup")
            if not warm.step.held_but_stale(args.max_failures, min_pace=0.5):
                raise RuntimeError(f"{kind} calls fail at 10/s: {warm}\n{servers[-1].output[-3000:]}")
        print("  kind | " + " | ".join(STEP_HEADERS), flush=True)
        for rate in args.rate_list:
            for _ in range(args.repeat):
                for kind, bench in benches.items():
                    note = quiet_before_step(args.quiet_wait)
                    step = bench.step(rate, args.seconds, args.hold_ms, f"{rate}").step
                    if note:
                        step.notes.append(note)
                    results.append((kind, step))
                    row = step_row(step, args.max_failures)
                    print(f"  {kind} | " + " | ".join(str(c) for c in row), flush=True)
    except KeyboardInterrupt:
        status = 130
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        status = 1
    finally:
        for server in servers:
            server.stop()
        if tmp is not None:
            tmp.cleanup()
    report(args, results)
    return status


STEP_HEADERS = [
    "rate/s", "pairs", "ok", "failed", "stale", "retrans", "achieved/s", "setup ms", "PBX CPU %",
    "PBX RSS MB", "CPU ms/call", "SIPp CPU %", "other load %", "held",
]  # fmt: skip


def report(args: argparse.Namespace, results: list[tuple[str, LoadStep]]) -> None:
    print()
    print(
        markdown_table(
            ["kind", *STEP_HEADERS], [[kind, *step_row(step, args.max_failures)] for kind, step in results]
        )
    )
    rows = []
    for rate in args.rate_list:
        per_kind = {}
        for kind in ("extension", "trunk"):
            steps = [s for k, s in results if k == kind and s.rate == rate]
            held = steps and all(held_text(s, args.max_failures) != "NO" for s in steps)
            cpu = sum(s.server_cpu / 100 for s in steps)
            calls = sum(s.achieved for s in steps)
            per_kind[kind] = (cpu / calls * 1e3 if calls else float("nan"), held)
        (ext_ms, ext_held), (trunk_ms, trunk_held) = per_kind["extension"], per_kind["trunk"]
        ratio = trunk_ms / ext_ms if ext_ms else float("nan")
        verdict = "meets" if ratio <= TARGET_RATIO else "ABOVE"
        rows.append(
            [
                rate, f"{ext_ms:.2f}", "yes" if ext_held else "NO", f"{trunk_ms:.2f}",
                "yes" if trunk_held else "NO", f"{ratio:.2f}", f"{verdict} the <= {TARGET_RATIO:.2f} target",
            ]
        )  # fmt: skip
    print()
    print(
        markdown_table(
            ["rate/s", "extension CPU ms/call", "held", "trunk CPU ms/call", "held", "trunk/extension", ""],
            rows,
        )
    )
    print("\n(CPU ms/call pooled over the repeats of a rate: PBX CPU seconds / calls per second.)")


if __name__ == "__main__":
    sys.exit(main())
