"""Keep serving under a flood: one source sends unauthenticated REGISTERs at 5,000 / 10,000 / 20,000 a second
while SIPp on 127.0.0.1 registers and calls (issue 14, item 1 "measure it" and item 7).

Each row is one `twistd pbx` (the default `[edge]` and `[overload]`, as a user runs it: 200 messages/s per
source, burst 400) offered, for --seconds, a flood from 127.0.0.3 (`tests/e2e/flooder.py`, a paced
`sendto` loop in its own process) while SIPp registers 1000/1001/1003 (30/s) and 1001 calls 1002 (5/s),
as in `tests/e2e/test_flood.py`. Printed per row: the flood rate asked and reached, the PBX's CPU (% of one
core, over the flood), the legitimate source's success rates and mean response times (SIPp's timers:
REGISTER to its 200, INVITE to its 200), and the time from the flood's first datagram to the block's log line
(what the PBX logged reached us: an upper bound). A row with no flood (0/s) is the reference.

    python bench/flood_bench.py                       # 0, 5,000, 10,000, 20,000/s for 10 s each
    python bench/flood_bench.py --rates 20000 --seconds 5

Everything binds to loopback; every process is bounded (SIPp -m/-timeout, the flooder's rate * seconds) and
stopped at the end of its row. Nothing is pinned (the PBX, SIPp and the flooder share the machine's cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import ResourceSampler, markdown_table, source_version  # noqa: E402

from tests.e2e import test_flood  # noqa: E402
from tests.e2e.test_calls_sipp import SippSet  # noqa: E402
from tests.e2e.test_flood import Legitimate, flood_result, flooder, launch_pbx  # noqa: E402

HEADERS = [
    "flood /s (asked)",
    "flood /s (sent)",
    "PBX CPU %",
    "REGISTER ok",
    "REGISTER ms",
    "calls ok",
    "call set-up ms",
    "blocked after s",
]


def run(directory: Path, rate: float, seconds: float) -> list[object]:
    """One PBX, one flood at `rate` for `seconds` (none at 0) beside the legitimate SIPp traffic."""
    pbx = launch_pbx(directory / "pbx")
    group = SippSet(directory / "sipp")
    group.directory.mkdir(parents=True)
    try:
        legitimate = Legitimate(pbx, group)
        seen: list[float] = []
        if rate:
            block = r"Blocked 127\.0\.0\.3 for \d+ s"
            watcher = threading.Thread(
                target=lambda: seen.append(pbx.wait_for(block, timeout=seconds) and time.time()), daemon=True
            )
            watcher.start()
        sampler = ResourceSampler(pbx.process.proc.pid).start()
        flood = flooder("register", "127.0.0.3", pbx.sip, rate, seconds) if rate else None
        registers, calls = legitimate.start()
        time.sleep(seconds)
        sampler.stop()
        results = legitimate.finish(registers, calls)
        sent = flood_result(flood, seconds + 30) if flood is not None else {"rate": 0.0, "started": 0.0}
        blocked = f"{seen[0] - sent['started']:.2f}" if seen else ("-" if not rate else "not blocked")
        (reg_ok, reg_failed, reg_ms), (call_ok, call_failed, call_ms) = results["REGISTER"], results["call"]
        return [
            f"{rate:,.0f}",
            f"{sent['rate']:,.0f}",
            f"{sampler.cpu_percent:.0f}",
            f"{reg_ok}/{reg_ok + reg_failed}",
            f"{reg_ms:.0f}",
            f"{call_ok}/{call_ok + call_failed}",
            f"{call_ms:.0f}",
            blocked,
        ]
    finally:
        group.stop()
        pbx.process.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", default="0,5000,10000,20000", help="flood rates a second (default: the table)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="flood length (default 10, max 30)")
    parser.add_argument("--workdir", type=Path, help="where the PBX and SIPp files go (default: a temp dir)")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    seconds = min(30.0, max(1.0, args.seconds))
    test_flood.FLOOD_SECONDS = seconds  # the legitimate traffic keeps its own counts (10 s of it)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flood-bench-"))
    print(f"# flood_bench: {source_version()}, {seconds:g} s per flood, workdir {workdir}", flush=True)
    rows = []
    for n, rate in enumerate(rates):
        rows.append(run(workdir / f"{n:02d}-{rate:.0f}", rate, seconds))
        print(markdown_table(HEADERS, [rows[-1]]).splitlines()[-1], flush=True)
    print()
    print(markdown_table(HEADERS, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
