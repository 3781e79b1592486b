"""CPU per call through the real SipStack and B2BUA, in-process: no sockets, no SIPp, no reactor.

The companion of bench/calls_bench.py (rates held over real UDP with SIPp) for quick, repeatable figures on a
busy machine: CPU time, unlike a rate, stays comparable while other work shares the cores. The PBX is
`tests.b2bua.test_cycles.Pbx`: a `SipStack` with its transaction layer and the B2BUA over fake flows, the
memory location store, a memory relay, a dialplan `dial 1002` (the phones are parsed wire messages: each
call is INVITE [407, ACK, INVITE with SHA-256 credentials], 100, 180, 200, ACK, BYE, 200, with every
transaction run to its end on a Clock). What is timed includes the fake phones' own message building and
parsing (about a third), so compare figures of this script with each other, not with calls_bench.

    python bench/calls_hotpath.py                       # 400 calls x 5 repeats, with and without auth
    python bench/calls_hotpath.py --tree /path/to/other/checkout   # the same on another build
    python bench/calls_hotpath.py --profile 30 --mode noauth        # the top 30 functions (cProfile)

Prints us of CPU per call (best / median of the repeats) and Python function calls per call, with the
garbage collector as the PBX runs it (`gc.freeze()` after set-up, thresholds (50000, 50, 100)).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=("auth", "noauth", "both"), default="both")
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout whose pbx/ is measured")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree))
    sys.path.insert(1, str(REPO))  # this script's tests/ helpers when the tree is older
    from twisted.logger import globalLogBeginner

    import pbx
    from tests.b2bua.test_cycles import TENANT, Pbx

    if not Path(pbx.__file__).resolve().is_relative_to(args.tree.resolve()):
        raise SystemExit(f"pbx was imported from {pbx.__file__}, not from {args.tree}")
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    modes = ("auth", "noauth") if args.mode == "both" else (args.mode,)
    print(f"{args.tree}: {args.calls} calls x {args.repeats} repeats")
    for mode in modes:
        plans = Path(tempfile.mkdtemp())
        (plans / TENANT).mkdir(parents=True)
        (plans / TENANT / "main.j2").write_text("dial 1002 timeout=20\nhangup\n")
        authenticate = mode == "auth"
        server = Pbx(plans, trusted_caller=not authenticate)
        for _ in range(50):  # warm up: memos, caches, the template
            server.call(authenticate=authenticate)
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        took = []
        for _ in range(args.repeats):
            started = time.process_time()
            for _ in range(args.calls):
                server.call(authenticate=authenticate)
            took.append((time.process_time() - started) / args.calls * 1e6)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.calls):
            server.call(authenticate=authenticate)
        profile.disable()
        stats = pstats.Stats(profile)
        calls = stats.total_calls / args.calls  # type: ignore[attr-defined]
        print(
            f"{mode:7} {min(took):7.0f} us/call best, {statistics.median(took):7.0f} median, "
            f"{calls:6.0f} function calls/call"
        )
        if args.profile:
            stats.sort_stats("tottime").print_stats(args.profile)
        gc.unfreeze()


if __name__ == "__main__":
    main()
