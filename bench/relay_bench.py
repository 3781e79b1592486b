"""Concurrent G.711 calls relayed by `pbx.media.relay.UdpMediaRelay` versus a bare Twisted UDP relay.

Each call is two phones sending 172-byte RTP packets (12-byte header + 160 bytes of G.711) every 20 ms to
their leg of the relay, which sends them on to the other phone: 50 packets/s per direction, 100 packets/s
relayed per call. For rising call counts (default 100, 200, 300, 400, 500), each held --seconds (20), the
bench starts

- a relay server process pinned to core 0 (`taskset -c 0`): either the PBX's relay (`UdpMediaRelay` with a
  `PortPool`, one session per call, both legs' SDP addresses set, RTP + RTCP sockets per leg, validation and
  latching) or the bare relay (one socket pair per call, no validation, no latching, no counters);
- a sender and a receiver process pinned to core 1, sharing the phones' sockets (each phone socket serves
  many calls: the relay still has its own sockets per leg). The sender spreads the calls over the 20 ms
  period (1 ms slots) and catches up when late, so the packet count is exact; the receiver counts what comes
  back until one second after the last packet was sent.

Printed per step: packets/s offered and relayed, loss %, the relay process's CPU (% of one core, psutil over
the sending period) and peak RSS, CPU microseconds per relayed packet, the load generator's CPU (rusage of
sender + receiver over the step and the drain), how late the sender ran at worst, the packets' transit
time sender -> relay -> receiver (p50/p99/p99.9: the payload carries its send time; with `--poll-window` the
servers nap between busy wake-ups as `[pbx] poll_window` makes the PBX do, which delays RTP by up to the
window), and the CPU that other processes on the box used meanwhile (a shared box: a step with a high
figure there is not a clean one; before each step the bench waits up to --quiet-wait seconds for every core
to be below 20 % busy, and a step that fails while others used more than 15 % of a core is marked
"disturbed", run again (--retries) and not counted). Then, per server, the most calls held (loss <
--max-loss, 0.1 %, in every run that counts) and the ratio PBX relay / bare (target: >= 400 calls and >= 80 %
of bare). The relay server's own counters (packets, dropped, invalid, foreign, relatched, send_errors) are
printed beside its rows as a cross-check.

Run by hand, not in CI (about 25 s per step and server):

    python bench/relay_bench.py                              # 100..500 calls, 20 s steps, both servers
    python bench/relay_bench.py --calls 400,600 --seconds 10 --servers relay --repeat 2

Everything runs on 127.0.0.1; every process started here is stopped at the end of its step (also on errors
and Ctrl-C), and each one bounds itself (the sender by its step, the receiver by a deadline).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
from common import HOST, REPO, ResourceSampler, ServerProcess, markdown_table, pinned, source_version
from twisted.internet.protocol import DatagramProtocol

DEFAULT_CALLS = "100,200,300,400,500"
PERIOD = 0.020  # G.711 at 20 ms packetization
SLOTS = 20  # the sender spreads calls over 1 ms slots of the period
PACKET = struct.pack("!BBHII", 0x80, 0, 1, 160, 0x5EED) + b"\xff" * 160  # 172 bytes
PHONE_SOCKETS = 8  # per side; call i uses phone socket i % 8 of each side
SOCKET_BUFFER = 4 * 2**20
DRAIN = 1.0  # seconds the receiver keeps counting after the last packet was sent
TARGET_CALLS = 400
TARGET_RATIO = 0.80
DISTURBED = 15.0  # % of a core used by other processes during a step that makes it "disturbed"
RELAY_PORTS = (20000, 29999)  # below Linux's ephemeral range (32768-60999)
MAX_PACKET = 2048  # both servers read with the same buffer size
DELAY_BINS = 1000  # the receiver's histogram of transit times: 0.1 ms bins up to 100 ms


# --------------------------------------------------------------------------------------------------------
# The servers (run as `relay_bench.py serve relay|bare ...`, pinned to one core)


def serve(kind: str, calls: int, phones_a: list[int], phones_b: list[int]) -> None:
    """Open `calls` relayed calls towards the phones, print READY with the ports, run until SIGTERM."""
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8 * calls + 1024)), hard))
    warnings_only = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [warnings_only])], redirectStandardIO=False
    )
    ports: list[tuple[int, int]] = []
    if kind == "relay":
        sys.path.insert(0, str(REPO))
        from pbx.media import PortPool, UdpMediaRelay

        relay = UdpMediaRelay(reactor, PortPool(*RELAY_PORTS), bind_host=HOST, max_packet_size=MAX_PACKET)
        sessions = []
        for i in range(calls):
            session = relay.create_session(f"bench-{i}")
            a, b = session.leg("a"), session.leg("b")
            a.set_remote(HOST, phones_a[i % len(phones_a)])
            b.set_remote(HOST, phones_b[i % len(phones_b)])
            sessions.append(session)
            ports.append((a.local_port, b.local_port))

        def report() -> None:
            totals: dict[str, int] = {}
            for session in sessions:
                stats = session.stats()
                for leg in (stats.a, stats.b):
                    for key in ("packets", "dropped", "invalid", "foreign", "relatched", "send_errors"):
                        totals[key] = totals.get(key, 0) + getattr(leg, key)
            print("STATS " + json.dumps(totals), flush=True)

        reactor.addSystemEventTrigger("before", "shutdown", report)
    else:
        for i in range(calls):
            a = BareRelay((HOST, phones_b[i % len(phones_b)]))
            b = BareRelay((HOST, phones_a[i % len(phones_a)]))
            port_a = reactor.listenUDP(0, a, interface=HOST, maxPacketSize=MAX_PACKET)
            port_b = reactor.listenUDP(0, b, interface=HOST, maxPacketSize=MAX_PACKET)
            a.out, b.out = port_b, port_a
            ports.append((port_a.getHost().port, port_b.getHost().port))
    window = float(os.environ.get("RELAY_POLL_WINDOW") or 0)
    if window > 0:  # --poll-window: the PBX's `[pbx] poll_window` (pbx/service/wakeups.py)
        sys.path.insert(0, str(REPO))
        from pbx.service.wakeups import nap_between_polls

        nap_between_polls(reactor, window)
    print("READY " + json.dumps(ports), flush=True)
    reactor.run()


class BareRelay(DatagramProtocol):
    """The floor: forward every datagram out of the other socket of the pair to a fixed address."""

    noisy = False

    def __init__(self, dest: tuple[str, int]) -> None:
        self.dest = dest
        self.out: Any = None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.out.write(datagram, self.dest)


# --------------------------------------------------------------------------------------------------------
# The load generator (run as `relay_bench.py send|receive ...` with the phone sockets inherited)


def send(
    fds_a: list[int], fds_b: list[int], ports: list[tuple[int, int]], start: float, seconds: float
) -> None:
    """Send each call's packets both ways every 20 ms from `start` for `seconds`; print what was sent."""
    socks_a = [socket.socket(fileno=fd) for fd in fds_a]
    socks_b = [socket.socket(fileno=fd) for fd in fds_b]
    slots: list[list[tuple[Any, tuple[str, int], Any, tuple[str, int]]]] = [[] for _ in range(SLOTS)]
    for i, (port_a, port_b) in enumerate(ports):
        sock_a, sock_b = socks_a[i % len(socks_a)], socks_b[i % len(socks_b)]
        slots[i % SLOTS].append((sock_a.sendto, (HOST, port_a), sock_b.sendto, (HOST, port_b)))
    slot_length = PERIOD / SLOTS
    total_slots = round(seconds / slot_length)
    sent = errors = 0
    max_lag = 0.0
    head, tail = PACKET[:12], PACKET[20:]
    for k in range(total_slots):
        due = start + k * slot_length
        lag = time.time() - due
        if lag < 0:
            time.sleep(-lag)
        else:
            max_lag = max(max_lag, lag)
        packet = head + struct.pack("!d", time.time()) + tail  # the payload carries when it was sent
        for send_a, to_a, send_b, to_b in slots[k % SLOTS]:
            try:
                send_a(packet, to_a)
                send_b(packet, to_b)
                sent += 2
            except OSError:
                errors += 1
    print(json.dumps({"sent": sent, "errors": errors, "max_lag_ms": round(max_lag * 1000, 1)}), flush=True)


def receive(fds_a: list[int], fds_b: list[int], until: float) -> None:
    """Count the datagrams arriving at the phones until `until` (epoch seconds); print the counts."""
    socks = {fd: socket.socket(fileno=fd) for fd in fds_a + fds_b}
    side_a = set(fds_a)
    poller = select.epoll()
    for fd in socks:
        poller.register(fd, select.EPOLLIN)
    buffer = bytearray(MAX_PACKET)
    size = len(PACKET)
    received_a = received_b = stray = 0
    dontwait = socket.MSG_DONTWAIT
    delays = [0] * (DELAY_BINS + 1)  # transit time sender -> relay -> here, in 0.1 ms bins
    stamp = struct.Struct("!d").unpack_from
    clock = time.time
    while True:
        left = until - time.time()
        if left <= 0:
            break
        for fd, _ in poller.poll(min(left, 0.1)):
            recv_into = socks[fd].recv_into
            n = 0
            while True:
                try:
                    if recv_into(buffer, 0, dontwait) == size:
                        n += 1
                        delays[min(DELAY_BINS, max(0, int((clock() - stamp(buffer, 12)[0]) * 1e4)))] += 1
                    else:
                        stray += 1  # not ours (another test on the box sending to a recycled port)
                except BlockingIOError:
                    break
            if fd in side_a:
                received_a += n
            else:
                received_b += n
    print(json.dumps({"a": received_a, "b": received_b, "stray": stray, "delays": delays}), flush=True)


# --------------------------------------------------------------------------------------------------------
# The driver


@dataclass
class Step:
    server: str
    calls: int
    seconds: float
    sent: int
    received: int
    stray: int
    send_errors: int
    max_lag_ms: float
    server_cpu: float
    server_rss_mb: float
    loadgen_cpu: float
    others_cpu: float
    server_stats: dict[str, int]
    delays: list[int] = field(default_factory=list)  # the receiver's histogram (DELAY_BINS)

    def transit_ms(self, share: float) -> float:
        """The transit time (sender -> relay -> receiver) below which `share` of the packets arrived, ms."""
        total = sum(self.delays)
        if not total:
            return float("nan")
        seen = 0
        for i, n in enumerate(self.delays):
            seen += n
            if seen >= share * total:
                return i / 10
        return DELAY_BINS / 10

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.sent if self.sent else 1.0

    @property
    def relayed_pps(self) -> float:
        return self.received / self.seconds

    @property
    def offered_pps(self) -> float:
        return self.sent / self.seconds

    @property
    def us_per_packet(self) -> float:
        return self.server_cpu / 100 / self.relayed_pps * 1e6 if self.received else float("nan")

    @property
    def disturbed(self) -> bool:
        return self.others_cpu > DISTURBED

    def held(self, max_loss: float) -> bool:
        expected = round(self.calls * 2 * self.seconds / PERIOD)
        return self.sent >= expected and self.send_errors == 0 and self.loss < max_loss

    def counts(self, max_loss: float) -> bool:
        """Whether the run counts: a failed run while other jobs took the CPU says nothing of the relay."""
        return self.held(max_loss) or not self.disturbed


def phone_sockets() -> tuple[list[socket.socket], list[socket.socket]]:
    def one() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.bind((HOST, 0))
        return sock

    return [one() for _ in range(PHONE_SOCKETS)], [one() for _ in range(PHONE_SOCKETS)]


def _cpu_of_others(exclude: set[int]) -> dict[int, float]:
    """CPU seconds so far of every process but `exclude` (other people's jobs on a shared box)."""
    seconds = {}
    for proc in psutil.process_iter():
        if proc.pid in exclude:
            continue
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


def wait_for_quiet(limit: float, busy: float = 20.0) -> float:
    """Wait (at most `limit` seconds) until no core is more than `busy` % busy; return the last max %."""
    deadline = time.monotonic() + limit
    while True:
        worst = max(psutil.cpu_percent(interval=1.0, percpu=True))
        if worst <= busy or time.monotonic() >= deadline:
            return worst


def _wait_rusage(procs: list[subprocess.Popen[bytes]], timeout: float) -> float:
    """Reap the children (killing them at the deadline); return their CPU seconds (rusage)."""
    cpu = 0.0
    deadline = time.monotonic() + timeout
    for proc in procs:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                cpu += usage.ru_utime + usage.ru_stime
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.05)
    return cpu


def run_step(kind: str, calls: int, args: argparse.Namespace) -> Step:
    server_cpu_core = None if args.no_pin else args.server_cpu
    loadgen_core = None if args.no_pin else args.loadgen_cpu
    socks_a, socks_b = phone_sockets()
    me = [sys.executable, str(Path(__file__).resolve())]
    ports_a = [s.getsockname()[1] for s in socks_a]
    ports_b = [s.getsockname()[1] for s in socks_b]
    cmd = [*me, "serve", kind, str(calls), json.dumps(ports_a), json.dumps(ports_b)]
    window = {"RELAY_POLL_WINDOW": str(args.poll_window)} if args.poll_window > 0 else {}
    server = ServerProcess(kind, pinned(cmd, server_cpu_core), env=window)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server.wait_for(r"^READY ", timeout=60)
        ready = next(line for line in server.lines if line.startswith("READY "))
        ports = json.loads(ready[len("READY ") :])
        fds_a = [s.fileno() for s in socks_a]
        fds_b = [s.fileno() for s in socks_b]
        fds = json.dumps(fds_a), json.dumps(fds_b)
        start = time.time() + 1.0
        until = start + args.seconds + DRAIN
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(ports, f)
            ports_file = f.name
        outputs: list[Any] = []
        for role_args in (
            ["receive", *fds, repr(until)],
            ["send", *fds, ports_file, repr(start), repr(args.seconds)],
        ):
            out = tempfile.TemporaryFile()  # noqa: SIM115 (read and closed below)
            outputs.append(out)
            procs.append(
                subprocess.Popen(
                    pinned([*me, *role_args], loadgen_core),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    pass_fds=[*fds_a, *fds_b],
                )
            )
        time.sleep(max(0.0, start - time.time()))
        ours = {os.getpid(), server.pid, *(proc.pid for proc in procs)}
        others_before = _cpu_of_others(ours)
        sampler = ResourceSampler(server.pid).start()
        began = time.monotonic()
        loadgen_cpu_s = _wait_rusage(procs[1:], args.seconds + 30)  # the sender
        sampler.stop()
        others_after = _cpu_of_others(ours)
        others_s = sum(t - others_before.get(pid, 0.0) for pid, t in others_after.items())
        others_cpu = 100.0 * others_s / (time.monotonic() - began)
        loadgen_cpu_s += _wait_rusage(procs[:1], DRAIN + 30)  # the receiver
        os.unlink(ports_file)
        results = []
        for out in outputs:
            out.seek(0)
            results.append(json.loads(out.read().decode().strip().splitlines()[-1]))
            out.close()
        received, sent = results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        server.stop()
        for sock in socks_a + socks_b:
            sock.close()
    stats_lines = [line for line in server.lines if line.startswith("STATS ")]
    return Step(
        server=kind,
        calls=calls,
        seconds=args.seconds,
        sent=sent["sent"],
        received=received["a"] + received["b"],
        stray=received["stray"],
        send_errors=sent["errors"],
        max_lag_ms=sent["max_lag_ms"],
        server_cpu=sampler.cpu_percent,
        server_rss_mb=sampler.rss_max / 2**20,
        loadgen_cpu=100.0 * loadgen_cpu_s / (args.seconds + DRAIN),
        others_cpu=others_cpu,
        server_stats=json.loads(stats_lines[-1][len("STATS ") :]) if stats_lines else {},
        delays=received.get("delays", []),
    )


STEP_HEADERS = [
    "server", "calls", "offered pps", "relayed pps", "loss %", "relay CPU %", "us/packet", "RSS MB",
    "loadgen CPU %", "sender lag ms", "others CPU %", "transit p50/p99/p99.9 ms", "held",
]  # fmt: skip


def step_row(step: Step, max_loss: float) -> list[object]:
    return [
        step.server, step.calls, f"{step.offered_pps:.0f}", f"{step.relayed_pps:.0f}",
        f"{step.loss * 100:.3f}",
        f"{step.server_cpu:.0f}", f"{step.us_per_packet:.1f}", f"{step.server_rss_mb:.0f}",
        f"{step.loadgen_cpu:.0f}", f"{step.max_lag_ms:.1f}", f"{step.others_cpu:.0f}",
        "/".join(f"{step.transit_ms(q):.1f}" for q in (0.5, 0.99, 0.999)),
        "yes" if step.held(max_loss) else "NO (disturbed)" if step.disturbed else "NO",
    ]  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Concurrent G.711 calls relayed by the PBX's UdpMediaRelay versus a bare Twisted UDP "
        "relay (loopback; relay on one core, load generator on the other).",
        epilog="Results are printed as markdown tables; see bench/RELAY.md.",
    )
    parser.add_argument(
        "--calls", default=DEFAULT_CALLS, help=f"comma-separated call counts ({DEFAULT_CALLS})"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each step (default 20)")
    parser.add_argument("--servers", default="relay,bare", help="which servers, in this order (relay,bare)")
    parser.add_argument(
        "--poll-window",
        type=float,
        default=0.0,
        help="the servers nap up to this many s between busy wake-ups (pbx.poll_window; default 0: never)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per step and server (default 1)")
    parser.add_argument("--max-loss", type=float, default=0.001, help="loss ratio allowed (default 0.001)")
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the relay (default 0)")
    parser.add_argument("--loadgen-cpu", type=int, default=1, help="core for sender + receiver (default 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help=f"runs again a step that failed while other processes used > {DISTURBED:g} %% of a core (2)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="before each step, wait up to this many seconds for no core to be > 20%% busy (default 300)",
    )
    args = parser.parse_args(argv)
    args.call_list = sorted({int(c) for c in args.calls.split(",") if c.strip()})
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    if set(args.server_list) - {"relay", "bare"} or not args.call_list or args.seconds <= 0:
        parser.error("bad --servers, --calls or --seconds")
    return args


def summary(steps: list[Step], args: argparse.Namespace) -> str:
    lines = []
    best: dict[str, Step | None] = {}
    for name in args.server_list:
        mine = [s for s in steps if s.server == name]
        held_counts = [
            c for c in args.call_list
            if (runs := [s for s in mine if s.calls == c and s.counts(args.max_loss)])
            and all(s.held(args.max_loss) for s in runs)
        ]  # fmt: skip
        top = max(held_counts, default=0)
        best[name] = max((s for s in mine if s.calls == top), key=lambda s: s.server_cpu, default=None)
        tried_top = top == max(args.call_list)
        lines.append(f"{name}: most calls held {top}{'+ (highest tried)' if tried_top else ''}")
    relay, bare = best.get("relay"), best.get("bare")
    if relay is not None and bare is not None:
        ratio = relay.calls / bare.calls
        lines.append(
            f"relay / bare = {ratio:.0%} of the calls held ({'meets' if ratio >= TARGET_RATIO else 'BELOW'} "
            f"the {TARGET_RATIO:.0%} target); relay {'meets' if relay.calls >= TARGET_CALLS else 'is BELOW'} "
            f"the {TARGET_CALLS}-call target"
        )
    pairs = []
    for calls in args.call_list:
        r = [s for s in steps if s.server == "relay" and s.calls == calls and s.counts(args.max_loss)]
        b = [s for s in steps if s.server == "bare" and s.calls == calls and s.counts(args.max_loss)]
        if r and b:
            r_us = sum(s.us_per_packet for s in r) / len(r)
            b_us = sum(s.us_per_packet for s in b) / len(b)
            pairs.append(f"{calls}: relay {r_us:.1f} us, bare {b_us:.1f} us (bare/relay {b_us / r_us:.0%})")
    if pairs:
        lines.append("CPU per relayed packet: " + "; ".join(pairs))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve(argv[1], int(argv[2]), json.loads(argv[3]), json.loads(argv[4]))
        return 0
    if argv[:1] == ["send"]:
        ports = [tuple(p) for p in json.loads(Path(argv[3]).read_text())]
        send(json.loads(argv[1]), json.loads(argv[2]), ports, float(argv[4]), float(argv[5]))
        return 0
    if argv[:1] == ["receive"]:
        receive(json.loads(argv[1]), json.loads(argv[2]), float(argv[3]))
        return 0
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if not args.no_pin:
        os.sched_setaffinity(0, {args.loadgen_cpu})  # keep this driver off the relay's core
    began = time.strftime("%Y-%m-%d %H:%M")
    print(f"# relay benchmark {began}: calls {args.call_list}, {args.seconds:g} s steps, x{args.repeat}")
    print(f"# pbx at {source_version()}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    print("  " + " | ".join(STEP_HEADERS), flush=True)
    steps: list[Step] = []
    status = 0
    try:
        for calls in args.call_list:
            for _ in range(args.repeat):
                for name in args.server_list:
                    for _attempt in range(1 + args.retries):
                        busy = wait_for_quiet(args.quiet_wait)
                        if busy > 20.0:
                            print(f"  (the box is busy: a core at {busy:.0f} % before this step)", flush=True)
                        step = run_step(name, calls, args)
                        steps.append(step)
                        extra = f"  {step.server_stats}" if step.server_stats else ""
                        extra += f"  stray datagrams: {step.stray}" if step.stray else ""
                        row = " | ".join(str(c) for c in step_row(step, args.max_loss))
                        print(f"  {row}{extra}", flush=True)
                        if step.counts(args.max_loss):
                            break
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    print()
    print(markdown_table(STEP_HEADERS, [step_row(s, args.max_loss) for s in steps]))
    print()
    print(summary(steps, args))
    return status


if __name__ == "__main__":
    sys.exit(main())
