"""Concurrent IVR playbacks: how many prompts one core paces with packets sent within 5 ms of schedule.

For rising counts of concurrent playbacks (default 100, 200, 300, 400, 600, 800), each held --seconds (15),
the bench starts two processes on loopback:

- the PBX side, pinned to core 0 (`taskset -c 0`): the real Twisted reactor, one `MediaEngine` (one shared
  `MediaClock`, --phases slots per 20 ms), and N `MediaEndpoint`s, each on its own UDP port pair
  (`UdpRtpTransport` from a `PortPool`), each playing the shipped "menu" prompt (6.6 s) again and again
  through `play()` (PCMU, 20 ms packets). Endpoints start spread over the first second, like calls
  arriving. After a 2 s warm-up it records, for every packet, how late it was sent versus its absolute
  deadline (the `on_sent` hook: reactor time at the send minus the deadline), and its own CPU (rusage);
- a receiver pinned to core 1: one UDP socket that all endpoints send to; it checks every stream (SSRC) for
  loss and computes the RFC 3550 interarrival jitter per stream, as a cross-check from the far side.

Printed per step: packets/s sent, send lateness p50/p99/p99.9/max (ms), share of packets later than 5 ms,
the pacer's resyncs, the PBX process's CPU (% of one core) and what other processes used of its core
meanwhile (a shared box: lateness there is not ours), receiver loss and mean/max RFC 3550 jitter. The PBX
side uses the GC settings of pbx/tap.py (`gc.freeze()` after set-up, threshold 50,000; `--gc default` not).
A step is "ok" when p99 lateness <= 5 ms and loss < 0.1 %. Target: >= 300 playbacks ok.

Run by hand under the shared benchmark lock (about 20 s per step):

    flock /tmp/bench.lock python bench/ivr_bench.py
    flock /tmp/bench.lock python bench/ivr_bench.py --counts 300,600 --seconds 10 --phases 1

Everything binds to 127.0.0.1; both processes bound themselves (the PBX side stops after its step, the
receiver at a deadline) and are killed at the end of each step, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = "127.0.0.1"
WARMUP = 2.0
BIN_MS = 0.05  # lateness histogram resolution
BINS = 4000  # up to 200 ms


def percentile(hist: list[int], overflow: int, q: float) -> float:
    total = sum(hist) + overflow
    if not total:
        return 0.0
    rank = q * total
    seen = 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return (i + 1) * BIN_MS
    return BINS * BIN_MS


def _core_busy(core: int) -> float:
    """Seconds core `core` was busy (all processes) since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{core} "):
                ticks = [int(v) for v in line.split()[1:]]
                idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
                return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    return 0.0


def run_pbx(args: argparse.Namespace) -> None:
    """The PBX side: N endpoints playing prompts to the receiver; prints one JSON line of results."""
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    sys.path.insert(0, str(REPO))
    from pbx.media.endpoint import MediaEngine
    from pbx.media.ports import PortPool
    from pbx.media.udp import UdpRtpTransport

    engine = MediaEngine(reactor, REPO / "sounds" / "en", phases=args.phases)  # type: ignore[arg-type]
    engine.prompts.preload()
    pool = PortPool(args.port_base, args.port_base + 4 * args.count + 100)
    hist = [0] * BINS
    state = {"overflow": 0, "max": 0.0, "measuring": False, "packets": 0}

    def on_sent(late: float) -> None:
        if not state["measuring"]:
            return
        ms = late * 1000.0
        state["packets"] += 1
        if ms > state["max"]:
            state["max"] = ms
        i = int(ms / BIN_MS) if ms > 0 else 0
        if i < BINS:
            hist[i] += 1
        else:
            state["overflow"] += 1

    endpoints = []
    transports = []

    def start(i: int) -> None:
        transport = UdpRtpTransport.open(reactor, pool, HOST)  # type: ignore[arg-type]
        transport.set_remote(HOST, args.receiver_port)
        endpoint = engine.create_endpoint(transport)
        endpoint.on_sent = on_sent
        transport.consumer = endpoint
        transports.append(transport)
        endpoints.append(endpoint)

        def again(_: object) -> None:
            if not endpoint.closed:
                endpoint.play(["menu"]).addCallback(again)

        again(None)

    rng = random.Random(1)
    for i in range(args.count):
        reactor.callLater(rng.uniform(0.0, 1.0), start, i)  # type: ignore[attr-defined]
    usage: dict[str, float] = {}

    def begin() -> None:
        if args.gc == "pbx":  # what pbx/tap.py does at start-up: old objects out of sight, rare young GCs
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 100)
        state["measuring"] = True
        ru = resource.getrusage(resource.RUSAGE_SELF)
        usage["cpu0"] = ru.ru_utime + ru.ru_stime
        usage["t0"] = time.monotonic()
        usage["resyncs0"] = engine.pacer.resyncs
        usage["core0"] = _core_busy(0)

    def end() -> None:
        state["measuring"] = False
        ru = resource.getrusage(resource.RUSAGE_SELF)
        busy = _core_busy(0) - usage["core0"]
        wall = time.monotonic() - usage["t0"]
        cpu = ru.ru_utime + ru.ru_stime - usage["cpu0"]
        late_5 = sum(hist[int(5.0 / BIN_MS) :]) + state["overflow"]
        result = {
            "count": len(endpoints),
            "packets": state["packets"],
            "pps": state["packets"] / wall,
            "p50": percentile(hist, state["overflow"], 0.50),
            "p99": percentile(hist, state["overflow"], 0.99),
            "p999": percentile(hist, state["overflow"], 0.999),
            "max": state["max"],
            "late5": late_5 / max(1, state["packets"]),
            "resyncs": engine.pacer.resyncs - usage["resyncs0"],
            "cpu": 100.0 * cpu / wall,
            "rss_mb": ru.ru_maxrss / 1024.0,
            "others": max(0.0, 100.0 * (busy - cpu) / wall),
        }
        print(json.dumps(result), flush=True)
        engine.close()
        for t in transports:
            t.close()
        reactor.callLater(0.2, reactor.stop)  # type: ignore[attr-defined]

    reactor.callLater(1.0 + WARMUP, begin)  # type: ignore[attr-defined]
    reactor.callLater(1.0 + WARMUP + args.seconds, end)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


def run_receiver(args: argparse.Namespace) -> None:
    """One socket; per SSRC: packets, loss (sequence gaps) and RFC 3550 jitter; JSON on stdout at the end."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((HOST, args.receiver_port))
    sock.setblocking(False)
    print("ready", flush=True)
    header = struct.Struct("!HII")
    streams: dict[int, list[float]] = {}  # ssrc -> [received, first_ext, max_ext, cycles, transit, jitter]
    deadline = time.monotonic() + args.seconds
    measure_from = time.monotonic() + 1.0 + WARMUP
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    recv = sock.recv
    while time.monotonic() < deadline:
        if not poller.poll(0.2):
            continue
        while True:
            try:
                data = recv(2048)
            except BlockingIOError:
                break
            now = time.monotonic()
            if now < measure_from or len(data) < 12:
                continue
            seq, ts, ssrc = header.unpack_from(data, 2)
            s = streams.get(ssrc)
            arrival = now * 8000.0
            if s is None:
                streams[ssrc] = [1, seq, seq, 0, arrival - ts, 0.0]
                continue
            s[0] += 1
            if seq < s[2] % 65536 and s[2] % 65536 - seq > 30000:
                s[3] += 65536
            ext = s[3] + seq
            if ext > s[2]:
                s[2] = ext
            transit = arrival - ts
            d = abs(transit - s[4])
            if d < 8000 * 10:  # skip the jump between two playbacks' talkspurts
                s[5] += (d - s[5]) / 16.0
            s[4] = transit
    received = sum(int(s[0]) for s in streams.values())
    expected = sum(int(s[2] - s[1] + 1) for s in streams.values())
    jitters = [s[5] / 8.0 for s in streams.values()]  # ms
    print(
        json.dumps(
            {
                "streams": len(streams),
                "received": received,
                "lost": max(0, expected - received),
                "loss": max(0, expected - received) / max(1, expected),
                "jitter_mean": sum(jitters) / max(1, len(jitters)),
                "jitter_max": max(jitters, default=0.0),
            }
        ),
        flush=True,
    )


def pinned(core: int, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core), *command]
    return command


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def step(count: int, args: argparse.Namespace) -> dict[str, float]:
    receiver_port = free_udp_port()
    me = [sys.executable, str(Path(__file__).resolve())]
    total = 1.0 + WARMUP + args.seconds
    receiver = subprocess.Popen(
        pinned(
            1,
            [*me, "--role", "receiver", "--receiver-port", str(receiver_port), "--seconds", str(total + 1.5)],
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    pbx = None
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("receiver did not start")
        pbx = subprocess.Popen(
            pinned(
                0,
                [
                    *me,
                    "--role",
                    "pbx",
                    "--count",
                    str(count),
                    "--seconds",
                    str(args.seconds),
                    "--phases",
                    str(args.phases),
                    "--receiver-port",
                    str(receiver_port),
                    "--port-base",
                    str(args.port_base),
                    "--gc",
                    args.gc,
                ],
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = pbx.communicate(timeout=total + 60)
        result = json.loads(out.strip().splitlines()[-1])
        rout, _ = receiver.communicate(timeout=total + 30)
        result.update(json.loads(rout.strip().splitlines()[-1]))
        return dict(result)
    finally:
        for proc in (pbx, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["bench", "pbx", "receiver"], default="bench")
    parser.add_argument("--counts", default="100,200,300,400,600,800")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--phases", type=int, default=10)
    parser.add_argument("--receiver-port", type=int, default=0)
    parser.add_argument("--port-base", type=int, default=24000)
    parser.add_argument("--gc", choices=["pbx", "default"], default="pbx", help="GC settings of the PBX side")
    args = parser.parse_args()
    if args.role == "pbx":
        run_pbx(args)
        return
    if args.role == "receiver":
        run_receiver(args)
        return
    rows = []
    print(f"IVR playback bench: {args.seconds:g} s per step, pacer phases {args.phases}", flush=True)
    for count in (int(c) for c in args.counts.split(",")):
        r = step(count, args)
        ok = r["p99"] <= 5.0 and r["loss"] < 0.001 and r["count"] == count
        r["ok"] = ok
        rows.append(r)
        print(
            f"  {count}: p99 {r['p99']:.2f} ms, max {r['max']:.1f} ms, CPU {r['cpu']:.0f} % "
            f"(others on the core {r['others']:.0f} %), "
            f"loss {100 * r['loss']:.3f} % -> {'ok' if ok else 'NOT ok'}",
            flush=True,
        )
    print()
    print(
        "| playbacks | packets/s | late p50 ms | p99 ms | p99.9 ms | max ms | > 5 ms | resyncs "
        "| PBX CPU % | others on its core % | RSS MB | rx loss % | rx jitter mean/max ms | ok |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['count']} | {r['pps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} "
            f"| {r['max']:.1f} | {100 * r['late5']:.2f} % | {r['resyncs']} | {r['cpu']:.0f} "
            f"| {r['others']:.0f} "
            f"| {r['rss_mb']:.0f} | {100 * r['loss']:.3f} | {r['jitter_mean']:.2f} / {r['jitter_max']:.2f} "
            f"| {'yes' if r['ok'] else 'no'} |"
        )
    held = [r["count"] for r in rows if r["ok"]]
    print(f"\nMost concurrent playbacks with p99 lateness <= 5 ms and loss < 0.1 %: {max(held, default=0)}")


if __name__ == "__main__":
    main()
