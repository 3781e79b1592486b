"""`twistd` with a report of the garbage collector's pauses (for `options_bench.py --gc-report`).

    python bench/twistd_gc.py --nodaemon --pidfile= pbx --config pbx.toml

Every collection longer than 20 ms is printed as a `GC pause` line and the totals are printed at exit, so a
benchmark can tell retransmissions caused by collector pauses from those caused by a lack of CPU. The PBX's
own GC settings (`pbx.service.process.tune_garbage_collector`: `gc.freeze()` after start-up, a higher
threshold) apply
as in production; nothing of pbx/ is changed.
"""

from __future__ import annotations

import atexit
import gc
import sys
import time

_started = [0.0]
_totals = {"collections": 0, "seconds": 0.0, "longest": 0.0}


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    took = time.perf_counter() - _started[0]
    _totals["collections"] += 1
    _totals["seconds"] += took
    _totals["longest"] = max(_totals["longest"], took)
    if took > 0.02:
        print(f"GC pause: generation {info['generation']}, {took * 1000:.0f} ms", flush=True)


def _report() -> None:
    print(
        f"GC totals: {_totals['collections']} collections, {_totals['seconds']:.2f} s,"
        f" longest {_totals['longest'] * 1000:.0f} ms",
        flush=True,
    )


def main() -> None:
    gc.callbacks.append(_on_gc)
    atexit.register(_report)
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
