"""Scale-out on one box (issue 17, "Show it"): calls/s held and relayed calls up at once for 1, 2 and 4 PBX
processes behind Kamailio, with the built-in relay and with rtpengine, beside one PBX without Kamailio.

Set-up per configuration (all on 127.0.0.1, nothing pinned: the PBX processes, Kamailio, PostgreSQL,
rtpengine and SIPp share the machine's cores, and each one's CPU is measured):

- PostgreSQL (tests/store/postgres_server.py: a temporary cluster, fsync off), a fresh schema per
  configuration, as `[store] url`;
- the PBX: `twistd -n pbx --workers N` (N = 1 is a plain PBX), calls_bench's extensions and benchmark
  config (`[edge]` limits raised for one load generator, keep-alives off), `[security] trusted_proxies =
  ["127.0.0.1"]` behind Kamailio, `[media] relay = "rtpengine"` for the rtpengine rows;
- `[overload] enabled = false` unless --overload (see its help);
- Kamailio 5.6 with the shipped deploy/kamailio/kamailio.cfg (`-m 512 -M 32`, 4 children), its dispatcher
  list the supervisor's `data_dir/dispatcher.list`; or none for the `direct` row (SIPp talks to the PBX);
- rtpengine (Debian rtpengine-daemon, userspace `--table=-1`, --rtpengine-threads threads: 2) for the
  rtpengine rows.

The load is bench/calls_bench.py's (`calls_bench.Bench`): callee extensions register from their SIPp UAS ports
(through Kamailio when it is there: Path), SIPp UACs call them with digest auth (INVITE, 407, ACK, INVITE,
180, 200, ACK, hold, BYE), SDP offered and answered. Steps: a warm-up at 10 calls/s, then the rates of --rates
without RTP, each held --seconds, up to the first one not held (every call made, < 0.1 % failed, pace >= 97 %,
stale-nonce failures excused as in calls_bench); then the **relayed-media steps**: for each count N of
--media-calls, N calls put up at up to --media-max-rate calls/s (in --media-ramp seconds at least) and held
until all have been up --media-plateau seconds, each caller streaming G.711 (a u-law tone, 20 ms packets,
SIPp's `rtp_stream`) for the whole call and each callee echoing it back (`-rtp_echo`), so 100 packets/s per
call go through the relay (bench/media_load.py); up to the first N not held: more than --media-max-failures of
the calls failed, or more than --max-loss of the packets were dropped at the relay's sockets (receive buffer
full: the kernel's per-socket `drops` of the PBX workers' or rtpengine's UDP sockets) or at the callees' echo
sockets (the load generator's share, counted in the same budget), or a relay socket's receive queue grew past
--max-queue-ms of one stream in two samples or more, 1 s apart (the relay fell behind: a socket drops only
after ~5 s of backlog). Printed per step: the CPU of the PBX processes (all workers), Kamailio (all its
processes), PostgreSQL, rtpengine and SIPp, as % of one core over the step, the PBX's CPU per call (rate
steps) or per second of relayed call (media steps: signalling included). --concurrent-rate N adds the earlier
concurrency step without RTP.

    python bench/scaleout_bench.py                                  # every row: ~15 minutes
    python bench/scaleout_bench.py --configs k1,k1-rtpengine --rates 50 --seconds 2 --media-calls 20,40 \
        --media-ramp 2 --media-plateau 2                            # smoke: ~1 minute

Everything started is stopped at the end (Ctrl-C too).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import calls_bench
import media_load
from common import HOST, SCENARIOS, ServerProcess, executable, free_port, markdown_table, write_pbx_config
from sip_load import (
    DIALPLAN,
    GroupResult,
    LoadStep,
    extensions_toml,
    held_text,
    stop_on_signals,
    working_tree,
)

from tests.e2e.kamailio import kamailio_binary, modules_dir
from tests.store import postgres_server

KAMAILIO_CFG = calls_bench.SCENARIOS.parents[1] / "deploy" / "kamailio" / "kamailio.cfg"
RTPENGINE = "/usr/bin/rtpengine"
RTPENGINE_PORTS = (20000, 29999)
"""rtpengine's ports: below the kernel's ephemeral range (32768-60999), where `free_port` finds SIPp's and the
PBX's ports (an rtpengine socket on a SIPp port number would take its datagrams), and above the PBX's own
range, which rtpengine rows narrow to 10000-19999 (`PBX_RTP_IN_RTPENGINE_ROWS`)."""
PBX_RTP_IN_RTPENGINE_ROWS = "rtp_port_max = 19999"
STREAM_MARGIN = 0.3  # the tone a media step's caller streams is this much shorter than its call
CONFIGS = {
    "direct": (1, False, "builtin"),
    "k1": (1, True, "builtin"),
    "k2": (2, True, "builtin"),
    "k4": (4, True, "builtin"),
    "k1-rtpengine": (1, True, "rtpengine"),
    "k2-rtpengine": (2, True, "rtpengine"),
    "k4-rtpengine": (4, True, "rtpengine"),
}
DEFAULT_RATES = "100,150,200,250,300,350,400"
DEFAULT_MEDIA_CALLS = "150,300,500,800,1200"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--configs", default=",".join(CONFIGS), help=f"which rows, of {', '.join(CONFIGS)}")
    add("--rates", default=DEFAULT_RATES, help=f"calls/s steps, up to the first not held ({DEFAULT_RATES})")
    add("--seconds", type=float, default=8.0, help="length of each rate step (default 8, at most 60)")
    add("--hold-ms", type=int, default=200, help="ms between ACK and BYE in the rate steps (200)")
    add(
        "--concurrent-rate",
        type=int,
        default=0,
        help="calls/s of a concurrency step without RTP (the old one); 0 skips it (0)",
    )
    add("--concurrent-seconds", type=float, default=12.0, help="its length (12)")
    add("--concurrent-hold", type=float, default=12.0, help="seconds each of its calls is held (12)")
    add("--per-process", type=int, default=100, help="calls/s per SIPp UAC/UAS pair (100)")
    add(
        "--media-calls",
        default=DEFAULT_MEDIA_CALLS,
        help=f"relayed calls up at once with RTP both ways, up to the first step not held; '' skips "
        f"({DEFAULT_MEDIA_CALLS})",
    )
    add("--media-ramp", type=float, default=4.0, help="least seconds to put a media step's calls up (4)")
    add(
        "--media-max-rate",
        type=int,
        default=80,
        help="calls/s at most while they are put up (80: below what the front holds without media, so that "
        "the media is the limit); the ramp lengthens for more calls",
    )
    add("--media-plateau", type=float, default=4.0, help="seconds they are all up, streaming (4)")
    add("--media-per-pair", type=int, default=300, help="calls up at once per SIPp UAC/UAS pair (300)")
    add("--max-loss", type=float, default=0.01, help="packets the relay may lose in a media step (0.01)")
    add(
        "--max-queue-ms",
        type=float,
        default=250.0,
        help="a relay socket's receive queue (ms of one stream) a media step may pass in one sample (1 s "
        "apart) but not in two (250)",
    )
    add("--media-max-failures", type=float, default=0.005, help="calls a media step may fail (0.005)")
    add("--rtpengine-threads", type=int, default=2, help="rtpengine's --num-threads (2: one per core)")
    add("--max-failures", type=float, default=0.001)
    add(
        "--overload",
        action="store_true",
        help="keep [overload] control on (default off: on a shared 2-core box a 0.2 s stall of the event "
        "loop makes it shed a step's calls with 503, which measures the box, not the capacity)",
    )
    add("--workdir", type=Path, help="configs, SIPp files and logs (default: a temporary directory)")
    args = parser.parse_args(argv)
    args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
    args.rate_list = sorted({int(r) for r in args.rates.split(",") if r.strip()})
    if not set(args.config_list) <= set(CONFIGS) or not args.rate_list or not 0 < args.seconds <= 60:
        parser.error("bad --configs, --rates or --seconds")
    if args.concurrent_seconds > 60 or args.concurrent_hold > 60:
        parser.error("--concurrent-seconds and --concurrent-hold: at most 60")
    args.media_list = sorted({int(c) for c in args.media_calls.split(",") if c.strip() and int(c) > 0})
    if not 0 < args.media_ramp <= 30 or not 0 < args.media_plateau <= 30 or len(args.media_list) > 12:
        parser.error("--media-ramp and --media-plateau: (0, 30] s; --media-calls: at most 12 steps")
    if args.media_max_rate < 1 or max(args.media_list, default=0) / args.media_max_rate > 60:
        parser.error("--media-max-rate: at least 1, and the most --media-calls up within 60 s")
    return args


class TreeCpu:
    """CPU seconds used by some processes and all their descendants between `start` and `stop`."""

    def __init__(self, pids: list[int]) -> None:
        self.roots = [psutil.Process(pid) for pid in pids]
        self._start: dict[tuple[int, float], float] = {}

    def _times(self) -> dict[tuple[int, float], float]:
        found: dict[tuple[int, float], float] = {}
        for root in self.roots:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in procs:
                try:
                    times = proc.cpu_times()
                    found[(proc.pid, proc.create_time())] = times.user + times.system
                except psutil.Error:
                    pass
        return found

    def start(self) -> TreeCpu:
        self._start = self._times()
        return self

    def stop(self) -> float:
        return sum(cpu - self._start.get(key, 0.0) for key, cpu in self._times().items())


class Kamailio:
    """The shipped kamailio.cfg in the foreground, dispatching to the nodes of `dispatcher`."""

    def __init__(self, directory: Path, dispatcher: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port(tcp=False)
        self.ctl = directory / "kamailio_ctl"
        cmd = [
            kamailio_binary(), "-f", str(KAMAILIO_CFG), "-DD", "-E", "-L", modules_dir(),
            "-Y", str(directory), "-P", str(directory / "kamailio.pid"), "-m", "512", "-M", "32",
            "-A", f"LISTEN=udp:{HOST}:{self.port}", "-A", f'DISPATCHER_LIST="{dispatcher}"',
            "-A", "PING_INTERVAL=2", "-A", f'CTL_SOCKET="unix:{self.ctl}"',
        ]  # fmt: skip
        self.server = ServerProcess("kamailio", cmd, cwd=directory)
        deadline = time.monotonic() + 20
        while not self.ctl.exists():  # the control socket appears once every process is up
            if time.monotonic() > deadline or not self.server.alive():
                self.server.stop()
                raise RuntimeError(f"kamailio did not start:\n{self.server.output[-3000:]}")
            time.sleep(0.05)


def front_scenarios(directory: Path) -> Path:
    """bench/scenarios with call_uac.xml's ACK and BYE carrying the route set (`[routes]`: the Record-Route of
    Kamailio, which relays in-dialog requests only by their Route), and call_uas.xml's 180 and 200 the
    INVITE's Record-Route, for calls_bench.Bench behind the front."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in calls_bench.SCENARIOS.glob("*.xml"):
        shutil.copyfile(path, directory / path.name)
    text = (calls_bench.SCENARIOS / "call_uac.xml").read_text()
    for method in ("ACK", "BYE"):
        line = f"{method} [next_url] SIP/2.0\n"
        if text.count(line) != 1:
            raise RuntimeError(f"bench/scenarios/call_uac.xml: no single {line!r}")
        text = text.replace(line, line + "[routes]\n")
    (directory / "call_uac.xml").write_text(text)
    # The callee's 180 and 200 carry the INVITE's Record-Route (RFC 3261 12.1.1), so the PBX sends its ACK
    # and BYE through Kamailio; without it the ACK never reaches the UAS, which retransmits its 200.
    text = (calls_bench.SCENARIOS / "call_uas.xml").read_text()
    for status in ("180 Ringing", "200 OK"):
        head = f"SIP/2.0 {status}\n"
        at = text.index(head)
        cseq = text.index("[last_CSeq:]\n", at) + len("[last_CSeq:]\n")
        text = text[:cseq] + "[last_Record-Route:]\n" + text[cseq:]
    (directory / "call_uas.xml").write_text(text)
    return directory


def start_rtpengine(directory: Path, threads: int = 1) -> tuple[ServerProcess, int]:
    port = free_port(tcp=False)
    cmd = [
        RTPENGINE, "--config-file=none",
                "--table=-1", f"--interface={HOST}", f"--listen-ng={HOST}:{port}", "--foreground",
        "--log-stderr", "--log-level=4", f"--port-min={RTPENGINE_PORTS[0]}",
        f"--port-max={RTPENGINE_PORTS[1]}", f"--num-threads={threads}", "--delete-delay=0",
        f"--pidfile={directory / 'rtpengine.pid'}",
    ]  # fmt: skip
    return ServerProcess("rtpengine", cmd, cwd=directory), port


class MediaBench(calls_bench.Bench):
    """calls_bench.Bench whose steps, while `media` is set, stream RTP: the UAC scenario of
    media_load.media_scenarios, UASs with `-rtp_echo`, both with `-mi 127.0.0.1`; their echo ports go
    into `echo_ports` (watched by media_load.UdpDrops)."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__(args, workdir)
        self.media: Path | None = None  # the media scenarios' directory during a media step
        self.echo_ports: set[int] = set()

    def step(self, rate: int, seconds: float, hold_ms: int, label: str) -> GroupResult:
        if self.media is None:
            return super().step(rate, seconds, hold_ms, label)
        plain, scenarios, command = calls_bench.SCENARIOS, self.media, calls_bench.sipp_command

        def with_media(scenario: Path, **kwargs: Any) -> list[str]:
            cmd = command(scenario, **kwargs)
            if scenario.name == self.uas_scenario:
                self.echo_ports.add(int(cmd[cmd.index("-mp") + 1]))
                return [*cmd, "-rtp_echo", "-mi", HOST]
            return [*cmd, "-mi", HOST]

        calls_bench.SCENARIOS, calls_bench.sipp_command = scenarios, with_media
        try:
            return super().step(rate, seconds, hold_ms, label)
        finally:
            calls_bench.SCENARIOS, calls_bench.sipp_command = plain, command


@dataclass
class Row:
    """One step of one configuration."""

    config: str
    workers: int
    front: bool
    relay: str
    label: str
    result: LoadStep
    wall: float
    cpu: dict[str, float]
    peak: int = 0
    notes: list[str] = field(default_factory=list)
    target: int = 0  # a media step: the calls meant to be up at once
    packets: int = 0  # a media step: packets meant to reach the relay's sockets
    relay_drops: int = 0
    echo_drops: int = 0  # at the SIPp callees' echo sockets: the load generator's share
    queue_ms: float = 0.0  # the longest relay socket queue seen, in ms of one stream (media_load.UdpDrops)
    queue_over: int = 0  # samples (1 s apart) in which it was over max_queue_ms
    call_seconds: float = 0.0
    max_failures: float = 0.005
    max_loss: float = 0.01

    @property
    def media(self) -> bool:
        return self.label.startswith("media-")

    def loss(self, drops: int) -> str:
        return f"{100 * drops / self.packets:.2f}" if self.media and self.packets else "-"

    def percent(self, name: str) -> str:
        if name not in self.cpu or self.wall <= 0:
            return "-"
        value = 100 * self.cpu[name] / self.wall
        return f"{value:.1f}" if value < 10 else f"{value:.0f}"

    def verdict(self, max_failures: float) -> str:
        """`held_text` for a rate step; for the concurrency step: every call made and answered (its pace
        over a step as long as its hold is not a measure of anything)."""
        r = self.result
        if self.media:
            ok = r.server_alive and r.stats.created >= r.expected and r.failure_ratio < self.max_failures
            lost = (self.relay_drops + self.echo_drops) / self.packets if self.packets else 1.0
            return "yes" if ok and lost < self.max_loss and self.queue_over < 2 else "NO"
        if self.label != "concurrent":
            return held_text(r, max_failures)
        ok = r.server_alive and r.stats.created >= r.expected and r.failure_ratio < max_failures
        return "yes" if ok else "NO"

    def per_call_second(self, name: str) -> str:
        """A media step: CPU milliseconds of `name` per second of a relayed call."""
        if not self.media or not self.call_seconds or name not in self.cpu:
            return "-"
        return f"{1000 * self.cpu[name] / self.call_seconds:.2f}"

    def pbx_ms(self, name: str = "pbx") -> str:
        """CPU milliseconds of `name` per completed call."""
        ok = self.result.stats.successful
        return f"{1000 * self.cpu[name] / ok:.2f}" if ok and name in self.cpu else "-"


def run_config(name: str, args: argparse.Namespace, workdir: Path, rows: list[Row]) -> None:
    """Start one configuration, run its steps into `rows`, stop it."""
    workers, front, relay = CONFIGS[name]
    directory = workdir / name
    started: list[ServerProcess] = []
    try:
        extra = '[store]\nurl = "' + postgres_server.server().url() + '"\n\n'
        rtpengine_port = 0
        if relay == "rtpengine":
            engine, rtpengine_port = start_rtpengine(directory.parent, args.rtpengine_threads)
            started.append(engine)
        media_pairs = max((math.ceil(c / args.media_per_pair) for c in args.media_list), default=1)
        ns = argparse.Namespace(
            rate_list=args.rate_list, memory_rate=max(args.concurrent_rate, args.per_process * media_pairs),
            per_process=args.per_process,
            callers=100, extra_extensions=0, no_pin=True, server_cpu=0, loadgen_cpu=1, no_auth=False,
        )  # fmt: skip
        # Bench reads its scenarios from calls_bench.SCENARIOS: behind the front, the copy with [routes].
        calls_bench.SCENARIOS = front_scenarios(directory / "scenarios") if front else SCENARIOS
        bench = MediaBench(ns, directory)
        numbers = [*bench.callers, *bench.callees]
        media = calls_bench.PBX_EXTRA
        if relay == "rtpengine":
            media = media.replace(
                "[media]\n", f'[media]\nrelay = "rtpengine"\nrtpengine = "{HOST}:{rtpengine_port}"\n'
            )
            media = media.replace("rtp_port_max = 30000", PBX_RTP_IN_RTPENGINE_ROWS)
        extra += extensions_toml(numbers) + media
        if front:
            extra += '[security]\ntrusted_proxies = ["127.0.0.1"]\n\n'
        if not args.overload:
            extra += "[overload]\nenabled = false\n\n"
        config = write_pbx_config(directory, bench.port)
        shutil.copyfile(DIALPLAN, directory / "dialplans" / "default" / "main.j2")
        with config.open("a") as f:
            f.write("\n" + extra)
        cmd = [executable("twistd"), "--nodaemon", "--pidfile=", "pbx", "--config", str(config)]
        pbx = ServerProcess("pbx", [*cmd, "--workers", str(workers)], cwd=directory)
        started.append(pbx)
        pbx.wait_for(r"PBX ready: ", timeout=120, count=workers)
        bench.server = pbx
        trees = {"pbx": [pbx.pid], "postgresql": [postgres_server.server().process.pid]}
        if relay == "rtpengine":
            trees["rtpengine"] = [started[0].pid]
        if front:
            dispatcher = directory / "data" / "dispatcher.list"
            if workers == 1:
                dispatcher.write_text(f"1 sip:{HOST}:{bench.port}\n")
            kamailio = Kamailio(directory / "kamailio", dispatcher)
            started.append(kamailio.server)
            trees["kamailio"] = [kamailio.server.pid]
            bench.port = kamailio.port  # SIPp registers and calls through the front
        bench.register_callees()
        warm = bench.step(10, 2, args.hold_ms, "warmup")
        if not warm.step.held_but_stale(args.max_failures, min_pace=0.5):
            raise RuntimeError(f"{name}: calls fail at 10/s: {warm}\n{pbx.output[-3000:]}")

        relay_pids = [started[0].pid] if relay == "rtpengine" else [pbx.pid]

        def step(rate: int, seconds: float, hold_ms: int, label: str, target: int = 0) -> Row:
            meters = {key: TreeCpu(pids).start() for key, pids in trees.items()}
            drops = media_load.UdpDrops(relay_pids, []) if target else None
            if drops is not None:
                bench.echo_ports = drops.ports  # the UASs' echo ports, as the step starts them
                drops.start()
            begun = time.monotonic()
            try:
                result = bench.step(rate, seconds, hold_ms, label)
            finally:
                relay_drops, echo_drops = drops.stop() if drops is not None else (0, 0)
            wall = time.monotonic() - begun
            cpu = {key: meter.stop() for key, meter in meters.items()}
            cpu["sipp"] = result.step.loadgen_cpu / 100 * result.step.elapsed
            wall = max(wall, 1e-9)
            row = Row(name, workers, front, relay, label, result.step, wall, cpu)
            if target:
                stream = hold_ms / 1000 - STREAM_MARGIN
                row.target, row.relay_drops, row.echo_drops = target, relay_drops, echo_drops
                row.packets = media_load.expected_packets(result.step.stats.successful, stream)
                row.call_seconds = result.step.stats.successful * stream
                row.max_failures, row.max_loss = args.media_max_failures, args.max_loss
                queues = drops.queue_ms() if drops is not None else []
                row.queue_ms = max(queues, default=0.0)
                row.queue_over = sum(1 for q in queues if q > args.max_queue_ms)
            rows.append(row)
            if target:
                row.peak = calls_bench.max_concurrent(directory / "sipp" / f"{bench.steps_run:02d}-{label}")
            print("  " + " | ".join(str(c) for c in step_cells(row, args.max_failures)), flush=True)
            return row

        for rate in args.rate_list:
            row = step(rate, args.seconds, args.hold_ms, f"rate-{rate}")
            if not row.result.held_but_stale(args.max_failures):
                break
        if args.concurrent_rate > 0:
            hold = int(args.concurrent_hold * 1000)
            row = step(args.concurrent_rate, args.concurrent_seconds, hold, "concurrent")
            row.peak = calls_bench.max_concurrent(directory / "sipp" / f"{bench.steps_run:02d}-concurrent")
        per_process = bench.args.per_process
        plain = calls_bench.SCENARIOS
        for calls in args.media_list:
            if not pbx.alive():
                break
            ramp = max(args.media_ramp, calls / args.media_max_rate)
            hold = ramp + args.media_plateau
            stream = media_load.tone_file(directory / f"tone-{calls}.ulaw", hold - STREAM_MARGIN)
            bench.media = media_load.media_scenarios(plain, directory / f"media-scenarios-{calls}", stream)
            rate = media_load.media_rate(calls, ramp)
            pairs = min(bench.pairs, math.ceil(calls / args.media_per_pair))
            bench.args.per_process = math.ceil(rate / pairs)
            row = step(rate, ramp, int(hold * 1000), f"media-{calls}", target=calls)
            bench.args.per_process = per_process
            if row.verdict(args.max_failures) != "yes":
                break
        bench.media = None
        if not pbx.alive():
            raise RuntimeError(f"{name}: the PBX died:\n{pbx.output[-3000:]}")
    finally:
        for server in reversed(started):
            server.stop(timeout=30)
            (directory / f"{server.name}.log").write_text(server.output)


STEP_HEADERS = [
    "config", "PBX procs", "step", "rate/s", "ok", "failed", "achieved/s", "setup ms", "PBX CPU %",
    "Kamailio CPU %", "PostgreSQL CPU %", "rtpengine CPU %", "SIPp CPU %", "PBX CPU ms/call", "peak calls up",
    "relay loss %", "echo loss %", "worst queue ms (samples over)", "PBX ms/call-s", "rtpengine ms/call-s",
    "held",
]  # fmt: skip


def step_cells(row: Row, max_failures: float) -> list[object]:
    r = row.result
    return [
        row.config, row.workers, row.label, r.rate, r.stats.successful, r.expected - r.stats.successful,
        f"{r.achieved:.0f}", f"{r.stats.response_ms:.1f}", row.percent("pbx"), row.percent("kamailio"),
        row.percent("postgresql"), row.percent("rtpengine"), row.percent("sipp"),
        "-" if row.media else row.pbx_ms(), row.peak or "-", row.loss(row.relay_drops),
        row.loss(row.echo_drops), f"{row.queue_ms:.0f} ({row.queue_over})" if row.media else "-",
        row.per_call_second("pbx"),
        row.per_call_second("rtpengine"), row.verdict(max_failures),
    ]  # fmt: skip


SUMMARY_HEADERS = [
    "config", "front", "relay", "PBX procs", "calls/s held", "per PBX process", "PBX CPU ms/call",
    "Kamailio CPU ms/call", "relayed calls held", "first not held", "PBX CPU %", "rtpengine CPU %",
    "Kamailio CPU %", "SIPp CPU %", "relay loss %", "worst queue ms", "PBX ms/call-s", "rtpengine ms/call-s",
]  # fmt: skip


def summary(rows: list[Row], args: argparse.Namespace) -> list[list[object]]:
    """Per configuration: the highest rate held (no media) and the most relayed calls held up at once;
    the CPU columns are those of that media step."""
    table = []
    for name in args.config_list:
        mine = [r for r in rows if r.config == name]
        if not mine:
            continue
        first = mine[0]
        held = [r for r in mine if r.label.startswith("rate-") and r.result.held_but_stale(args.max_failures)]
        best = max(held, key=lambda r: r.result.rate) if held else None
        cells: list[object] = ["none", "-", "-", "-"]
        if best is not None:
            cells = [
                best.result.rate, f"{best.result.rate / first.workers:.0f}", best.pbx_ms(),
                best.pbx_ms("kamailio"),
            ]  # fmt: skip
        media = [r for r in mine if r.media]
        kept = [r for r in media if r.verdict(args.max_failures) == "yes"]
        missed = next((r.target for r in media if r.verdict(args.max_failures) != "yes"), None)
        top = max(kept, key=lambda r: r.target) if kept else None
        if top is None:
            cells += ["none" if media else "-", missed or "-", *["-"] * 8]
        else:
            cells += [
                top.target, missed or f"(>{top.target})", top.percent("pbx"), top.percent("rtpengine"),
                top.percent("kamailio"), top.percent("sipp"), top.loss(top.relay_drops),
                f"{top.queue_ms:.0f}", top.per_call_second("pbx"), top.per_call_second("rtpengine"),
            ]  # fmt: skip
        front = "Kamailio" if first.front else "none"
        table.append([name, front, first.relay, first.workers, *cells])
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    executable("sipp")
    if postgres_server.unavailable() is not None:
        print(f"error: {postgres_server.unavailable()}", file=sys.stderr)
        return 1
    stop_on_signals()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="scaleout-bench-")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([kamailio_binary(), "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"# scale-out benchmark {time.strftime('%Y-%m-%d %H:%M')} UTC; configs {args.config_list}")
    print(f"# rates {args.rate_list} x {args.seconds:g} s (hold {args.hold_ms} ms)")
    hold = f"held {args.concurrent_hold:g} s"
    print(f"# concurrency {args.concurrent_rate}/s x {args.concurrent_seconds:g} s {hold}")
    media = f"up in >= {args.media_ramp:g} s at <= {args.media_max_rate}/s, all up {args.media_plateau:g} s"
    print(f"# relayed calls with RTP both ways {args.media_list} ({media}); max loss {args.max_loss:g}")
    print(f"# pbx at {working_tree()}; {version}; overload control {'on' if args.overload else 'off'}")
    print(f"# {os.cpu_count()} CPUs, nothing pinned; workdir {args.workdir}")
    print("  " + " | ".join(STEP_HEADERS), flush=True)
    rows: list[Row] = []
    status = 0
    try:
        for name in args.config_list:
            try:
                run_config(name, args, args.workdir, rows)
            except RuntimeError as e:
                print(f"error in {name}: {e}", file=sys.stderr)
                status = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    finally:
        postgres_server.server().stop()
        if tmp is not None:
            tmp.cleanup()
    print("\n## Every step\n")
    print(markdown_table(STEP_HEADERS, [step_cells(r, args.max_failures) for r in rows]))
    print("\n## Summary: the highest rate and the most relayed calls held per configuration\n")
    print(markdown_table(SUMMARY_HEADERS, summary(rows, args)))
    return status


if __name__ == "__main__":
    sys.exit(main())
