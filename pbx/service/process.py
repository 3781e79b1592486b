"""The process itself: open-files limits and the garbage collector's tuning."""

from __future__ import annotations

import gc
import os
import resource
import time
from collections.abc import Callable, Mapping

from twisted.logger import Logger

_log = Logger(namespace="pbx")


def raise_file_limit(wanted: int = 65536) -> int:
    """Raise the soft limit of open files towards the hard one (each relayed call holds four sockets); returns
    the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as e:
            _log.warn(
                "Could not raise the open files limit from {soft} to {target}: {e}",
                soft=soft,
                target=target,
                e=e,
            )
    return soft


def raise_file_limit_to_hard() -> int:
    """Raise the soft limit of open files to the hard one at start, and log both: every TCP/TLS connection,
    relayed call, prompt and template read needs descriptors, and running out fails calls (issue 10).
    Returns the soft limit in force."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = raise_file_limit(hard if hard != resource.RLIM_INFINITY else 1 << 20)
    _log.info(
        "Open files limit: {soft} (hard limit {hard}, was {before})", soft=soft, hard=hard, before=before
    )
    return soft


def parked_legs(pairs: int) -> int:
    """How many closed relay legs keep their sockets open for reuse (`UdpMediaRelay(keep_open=...)`).

    About a second of legs at 1,000 calls/s, bounded by the RTP range (a quarter of its pairs) and by the
    open files limit (a quarter of it: each parked leg holds two sockets; calls and SIP need the rest).
    """
    limit = raise_file_limit()
    return max(0, min(2048, pairs // 4, (limit - 256) // 8))


GC_THRESHOLDS = (50_000, 50, 100)
"""`gc.set_threshold` of a running PBX (see `tune_garbage_collector`)."""


def tune_garbage_collector(environ: Mapping[str, str] = os.environ) -> tuple[int, ...]:
    """Fewer, cheaper garbage collections: the objects made while starting live for the whole run, so they
    are moved out of the collector's sight (`gc.freeze`), and young-generation collections, which a SIP load
    triggers thousands of times a second, are made rarer. Reference counting still frees almost everything.

    For benchmarks: PBX_GC_THRESHOLDS="50000,5,100" replaces `GC_THRESHOLDS`, and PBX_GC_LOG=1 logs every
    collector pass of 50 ms or more (its generation and length). Returns the thresholds set."""
    thresholds: tuple[int, ...] = GC_THRESHOLDS
    wanted = environ.get("PBX_GC_THRESHOLDS", "")
    if wanted:
        try:
            parsed = tuple(int(v) for v in wanted.split(","))
        except ValueError:
            parsed = ()
        if len(parsed) == 3 and min(parsed) >= 0:
            thresholds = parsed
        else:
            _log.warn("PBX_GC_THRESHOLDS={wanted!r} ignored: three integers wanted", wanted=wanted)
    if environ.get("PBX_GC_LOG"):
        gc.callbacks.append(_gc_pause_logger())
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return thresholds


def _gc_pause_logger() -> Callable[[str, dict[str, int]], None]:
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took >= 0.05:
            _log.info(
                "GC pause: generation {generation}, {ms:.0f} ms, {collected} collected",
                generation=info["generation"],
                ms=took * 1000,
                collected=info["collected"],
            )

    return on_gc
