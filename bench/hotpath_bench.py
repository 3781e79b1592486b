"""CPU per request on the PBX's OPTIONS hot path, in-process: no sockets, no SIPp, repeatable on a busy box.

Builds a `SipStack` on the REAL reactor's clock (not `task.Clock`, whose callLater is O(n)) with the reactor
never running, then feeds it N OPTIONS datagrams as SIPp sends them (unique branch, Call-ID and From tag) the
way a UDP socket would: through `SipDatagramProtocol.datagramReceived` with a fake port that records the
answers. So each request pays for the flow, the parse, validation, the transaction, the response and its
serialization, and every transaction stays alive for Timer J as on a real server (the reactor does not run,
so none expires during a run). Measured per repeat (CPU time, `time.process_time`):

- us/request with the cyclic GC on (default thresholds, as `twistd` runs today), off, and on after
  `gc.freeze()` with threshold (50000, 50, 100) (what the lead plans for pbx/tap.py), with the time spent in
  the collector (`gc.callbacks`);
- function calls per request (cProfile's total_calls / N, GC off);
- what a live transaction costs: objects tracked by the GC and bytes (tracemalloc) per request still held;
- reference cycles: objects per request that only the cyclic GC frees (GC off while feeding).

    python bench/hotpath_bench.py                 # N=20000, 5 repeats
    python bench/hotpath_bench.py -n 50000 -r 3 --profile 25   # also print the top 25 functions

Each mode prints the best, median and worst repeat (on a shared machine the best is the steadiest figure);
each repeat builds a fresh stack and cancels its delayed calls after.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import time
import tracemalloc
from typing import Any

from twisted.internet import reactor

from pbx.sip.protocols import SipDatagramProtocol
from pbx.sip.stack import SipStack
from pbx.sip.transport import TransportManager

PEER = ("127.0.0.1", 40000)
LOCAL = ("127.0.0.1", 5060)


def datagram(i: int) -> bytes:
    """An OPTIONS exactly as bench/scenarios/options_uac.xml makes SIPp send it, unique per i."""
    return (
        "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-1234-{i}-0;rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:sipp@127.0.0.1:40000>;tag=1234SIPpTag00{i}\r\n"
        "To: <sip:127.0.0.1:5060>\r\n"
        f"Call-ID: {i}-1234@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Contact: <sip:sipp@127.0.0.1:40000;transport=UDP>\r\n"
        "Accept: application/sdp\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()


class FakePort:
    """The listening UDP port as the protocol sees it: `write(data, addr)` and `getHost()`."""

    def __init__(self) -> None:
        self.sent = 0
        self.last = b""

    def write(self, data: bytes, addr: Any) -> None:
        self.sent += 1
        self.last = data

    def getHost(self) -> Any:
        from twisted.internet.address import IPv4Address

        return IPv4Address("UDP", *LOCAL)


def build() -> tuple[SipDatagramProtocol, FakePort, SipStack]:
    from pbx.sip.parser import ParserLimits

    stack = SipStack(reactor)  # type: ignore[arg-type]
    manager = TransportManager(reactor, stack, limits=ParserLimits(), idle_timeout=0)  # type: ignore[arg-type]
    stack.attach_transport(manager)
    protocol = SipDatagramProtocol(stack, clock=reactor, monitor=manager.monitor)  # type: ignore[arg-type]
    port = FakePort()
    protocol.makeConnection(port)  # type: ignore[arg-type]
    return protocol, port, stack


def cleanup() -> None:
    for call in reactor.getDelayedCalls():
        if call.active():
            call.cancel()
    gc.collect()


def run_once(n: int, mode: str) -> dict[str, float]:
    """Feed n requests; return CPU us/request and GC seconds."""
    datagrams = [datagram(i) for i in range(n)]
    protocol, port, _stack = build()
    gc.collect()
    gc_time = [0.0]
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.process_time())
        elif started:
            gc_time[0] += time.process_time() - started.pop()

    old_threshold = gc.get_threshold()
    if mode == "off":
        gc.disable()
    elif mode == "frozen":
        gc.freeze()
        gc.set_threshold(50000, 50, 100)
    gc.callbacks.append(on_gc)
    receive = protocol.datagramReceived
    try:
        t0 = time.process_time()
        for data in datagrams:
            receive(data, PEER)
        elapsed = time.process_time() - t0
    finally:
        gc.callbacks.remove(on_gc)
        gc.enable()
        gc.set_threshold(*old_threshold)
        if mode == "frozen":
            gc.unfreeze()
    if port.sent != n:
        raise RuntimeError(f"{port.sent} answers for {n} requests; last: {port.last[:200]!r}")
    del protocol, port, _stack, datagrams
    cleanup()
    return {"us": elapsed / n * 1e6, "gc_us": gc_time[0] / n * 1e6}


def calls_per_request(n: int, top: int) -> float:
    datagrams = [datagram(i) for i in range(n)]
    protocol, _port, _stack = build()
    receive = protocol.datagramReceived
    profile = cProfile.Profile()
    gc.disable()
    try:
        profile.enable()
        for data in datagrams:
            receive(data, PEER)
        profile.disable()
    finally:
        gc.enable()
    stats = pstats.Stats(profile)
    if top:
        stats.sort_stats("tottime").print_stats(top)
    total = stats.total_calls  # type: ignore[attr-defined]
    del protocol, _port, _stack, datagrams
    cleanup()
    return float(total) / n


def retained(n: int) -> tuple[float, float]:
    """(GC-tracked objects, bytes) still held per request after n requests (live transactions)."""
    datagrams = [datagram(i) for i in range(n)]
    protocol, _port, _stack = build()
    receive = protocol.datagramReceived
    receive(datagrams[0], PEER)
    gc.collect()
    objects_before = len(gc.get_objects())
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for data in datagrams[1:]:
        receive(data, PEER)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    objects = (len(gc.get_objects()) - objects_before) / (n - 1)
    size = sum(s.size_diff for s in after.compare_to(before, "filename")) / (n - 1)
    del protocol, _port, _stack, datagrams
    cleanup()
    return objects, size


def cyclic_garbage(n: int) -> float:
    """Objects per request that only the cyclic GC could free (reference cycles), GC off meanwhile."""
    datagrams = [datagram(i) for i in range(n)]
    protocol, _port, _stack = build()
    receive = protocol.datagramReceived
    gc.collect()
    gc.disable()
    try:
        for data in datagrams:
            receive(data, PEER)
        found = gc.collect()
    finally:
        gc.enable()
    del protocol, _port, _stack, datagrams
    cleanup()
    return found / n


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="requests per repeat (20000)")
    parser.add_argument("-r", "--repeat", type=int, default=5, help="repeats per mode (5)")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions by own time")
    parser.add_argument("--modes", default="on,off,frozen", help="GC modes: on,off,frozen")
    args = parser.parse_args(argv)
    run_once(2000, "off")  # warm-up: imports, caches
    print(f"# hot path: {args.n} OPTIONS per repeat, {args.repeat} repeats, Python {sys.version.split()[0]}")
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        runs = [run_once(args.n, mode) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["us"])
        worst = max(r["us"] for r in runs)
        print(
            f"GC {mode:6}: best {best['us']:6.1f} us/request (GC {best['gc_us']:5.1f} us), median"
            f" {median(runs, 'us'):6.1f} (GC {median(runs, 'gc_us'):5.1f}), worst {worst:6.1f}",
            flush=True,
        )
    calls = calls_per_request(min(args.n, 20000), args.profile)
    print(f"function calls/request: {calls:.1f}")
    objects, size = retained(min(args.n, 20000))
    print(f"held per live transaction: {objects:.1f} GC-tracked objects, {size:.0f} bytes")
    print(f"cyclic garbage per request: {cyclic_garbage(min(args.n, 5000)):.1f} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
