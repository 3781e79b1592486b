"""Calls/s through `twistd pbx` with and without a Prometheus scraper (issue 16: a cut of less than 5 %).

The set-up of bench/calls_bench.py (SIPp UAC -> PBX -> SIPp UAS on loopback, digest auth unless --no-auth,
the shipped dialplan, the PBX and SIPp pinned to their cores), with `[metrics] listen` on a free loopback port
and call traces on (`[trace] calls`, default 100; `--trace-calls 0` turns them off). At each rate (--rates)
the steps alternate (--repeat times): no scraper, then a scraper thread that GETs `/metrics` and
`/api/v1/traces` every --interval seconds (1 s) for the whole step. Printed per step: calls/s achieved, PBX
CPU per call, scrapes made and their mean time; then, per rate, the cut the scraper made to calls/s and the
CPU it added per call (medians over the repeats).

A short run (a minute or two, what a shared machine allows):

    python bench/metrics_bench.py --rates 100 --seconds 10 --repeat 2

The lead's long run: `--rates 100,200,300 --seconds 30 --repeat 3` on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calls_bench import STEP_HEADERS, Bench, cpu_ms, step_row
from common import executable, free_port, markdown_table
from sip_load import LoadStep, quiet_before_step, stop_on_signals, working_tree


class Scraper:
    """A thread that GETs the metrics and the trace list every `interval` seconds until stopped."""

    def __init__(self, port: int, interval: float) -> None:
        self.urls = [f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{port}/api/v1/traces?limit=100"]
        self.interval = interval
        self.times: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.times) < 100_000:
            began = time.monotonic()
            for url in self.urls:
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        response.read()
                except OSError:
                    self.errors += 1
            self.times.append(time.monotonic() - began)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))


class MetricsBench(Bench):
    """calls_bench's Bench with the metrics listener and the call traces configured."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__(args, workdir)
        self.metrics_port = free_port(udp=False)

    def start(self, code: Path | None = None):  # type: ignore[no-untyped-def]
        import calls_bench
        from calls_bench import PBX_EXTRA

        calls = self.args.trace_calls
        extra = f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n\n'
        extra += f"[trace]\ncalls = {calls}\nfailed_calls = {calls}\n\n"
        calls_bench.PBX_EXTRA = PBX_EXTRA + extra  # read by Bench.start
        try:
            return super().start(code)
        finally:
            calls_bench.PBX_EXTRA = PBX_EXTRA


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--rates", default="100", help="comma-separated calls/s (default 100)")
    add("--seconds", type=float, default=10.0, help="length of each step (default 10)")
    add("--repeat", type=int, default=2, help="pairs of steps (without, with the scraper) per rate (2)")
    add("--interval", type=float, default=1.0, help="seconds between scrapes (default 1)")
    add("--trace-calls", type=int, default=100, help="[trace] calls and failed_calls (default 100; 0: off)")
    add("--hold-ms", type=int, default=200)
    add("--no-auth", action="store_true")
    add("--per-process", type=int, default=100)
    add("--callers", type=int, default=100)
    add("--server-cpu", type=int, default=0)
    add("--loadgen-cpu", type=int, default=1)
    add("--no-pin", action="store_true")
    add("--max-failures", type=float, default=0.001)
    add("--quiet-wait", type=float, default=0.0, help="wait for a quiet machine before each step (s; 0)")
    add("--workdir", type=Path)
    args = parser.parse_args(argv)
    args.rate_list = sorted({int(r) for r in args.rates.split(",") if r.strip()})
    args.extra_extensions = 0
    args.memory_rate = 0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    executable("sipp")
    stop_on_signals()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="metrics-bench-")
        args.workdir = Path(tmp.name)
    bench = MetricsBench(args, args.workdir)
    print(
        f"# metrics benchmark {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{'no auth' if args.no_auth else 'digest auth'}, rates {args.rate_list}, {args.seconds:g} s steps "
        f"x {args.repeat}, scrape every {args.interval:g} s, [trace] calls = {args.trace_calls}; "
        f"pbx at {working_tree()}"
    )
    rows: list[list[object]] = []
    summary: list[list[object]] = []
    try:
        server = bench.start()
        try:
            bench.register_callees()
            bench.step(10, 2, args.hold_ms, "warmup")
            for rate in args.rate_list:
                plain: list[LoadStep] = []
                scraped: list[LoadStep] = []
                scrape_ms: list[float] = []
                for _ in range(args.repeat):
                    for with_scraper in (False, True):
                        quiet_before_step(args.quiet_wait)
                        label = f"{rate}-{'scraped' if with_scraper else 'plain'}"
                        if with_scraper:
                            with Scraper(bench.metrics_port, args.interval) as scraper:
                                result = bench.step(rate, args.seconds, args.hold_ms, label).step
                            scrape_ms += [t * 1000 for t in scraper.times]
                            note = f"{len(scraper.times)} scrapes, {scraper.errors} errors"
                        else:
                            result = bench.step(rate, args.seconds, args.hold_ms, label).step
                            note = "-"
                        (scraped if with_scraper else plain).append(result)
                        row = [*step_row(result, args.max_failures), "yes" if with_scraper else "no", note]
                        rows.append(row)
                        print("  " + " | ".join(str(c) for c in row), flush=True)
                a = statistics.median(r.achieved for r in plain)
                b = statistics.median(r.achieved for r in scraped)
                ca = statistics.median(cpu_ms(r) for r in plain)
                cb = statistics.median(cpu_ms(r) for r in scraped)
                summary.append(
                    [
                        rate, f"{a:.1f}", f"{b:.1f}", f"{(b - a) / a * 100:+.1f} %" if a else "-",
                        f"{ca:.2f}", f"{cb:.2f}", f"{(cb - ca) / ca * 100:+.1f} %" if ca else "-",
                        f"{statistics.mean(scrape_ms):.1f}" if scrape_ms else "-",
                    ]
                )  # fmt: skip
        finally:
            server.stop()
    finally:
        if tmp is not None:
            tmp.cleanup()
    print()
    print(markdown_table([*STEP_HEADERS, "scraper", "scrapes"], rows))
    print()
    print(
        markdown_table(
            ["rate/s", "calls/s plain", "calls/s scraped", "cut", "CPU ms/call plain", "CPU ms/call scraped",
             "CPU added", "scrape ms (mean)"],
            summary,
        )
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
