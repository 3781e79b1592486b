"""Relayed media for bench/scaleout_bench.py: SIPp calls that send G.711 RTP both ways through the relay, and
the packets the relay lost.

- `media_scenarios`: copies of the call scenarios whose caller streams a u-law tone for the whole call
  (SIPp's `rtp_stream` action: 20 ms packets of payload type 0 from its `-mp` port, no root needed), with
  `[rtpstream_audio_port]` in its offer; the callee runs with `-rtp_echo` (every RTP packet it receives goes
  back to its sender, the relay). So each call carries 50 packets/s in each direction through the relay:
  caller -> relay -> callee -> relay -> caller, 100 packets/s into the relay's sockets.
- `UdpDrops`: the datagrams the kernel dropped because a socket's receive buffer was full (the `drops`
  column of /proc/net/udp), summed over the sockets of some processes (the PBX workers, rtpengine) and of
  some ports (the callee's echo sockets: the load generator's share), sampled each second in a thread. A
  relay that falls behind loses packets exactly there, but only once a socket's buffer is full: with the
  default 208 KB and 832 bytes of kernel memory per 172-byte packet that is 256 packets, 5 s of a stream.
  So each sample also reads the relay sockets' receive queues (`rx_queue`): the largest one, as
  milliseconds of a 50 packets/s stream (`queue_ms`), says how far behind the relay is (a relay keeping up
  has a packet or two queued at most; one stall of a busy shared box shows in one sample, a relay that
  cannot keep up in several). (Packets that come back to the caller's `-mp` socket
  are not read by SIPp: that socket's drops are not counted.)
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import psutil

PACKETS_PER_SECOND = 50  # G.711, 20 ms packets
SKB_BYTES = 832  # kernel memory a 172-byte RTP datagram takes in a loopback UDP receive queue (measured)
SAMPLE_RATE = 8000


def tone_file(path: Path, seconds: float) -> Path:
    """`seconds` of a 1 kHz tone at -6 dBFS as raw u-law (what SIPp's rtp_stream plays as payload type 0)."""
    from pbx.media.g711 import ulaw_encode_sample

    period = bytes(
        ulaw_encode_sample(round(16384 * math.sin(2 * math.pi * i / 8))) for i in range(8)
    )  # 1 kHz at 8 kHz: 8 samples per period
    samples = int(seconds * SAMPLE_RATE)
    path.write_bytes((period * (samples // len(period) + 1))[:samples])
    return path


def media_scenarios(source: Path, directory: Path, stream: Path) -> Path:
    """Copies of `source`/call_uac.xml (streaming `stream` after its ACK, the offer's port SIPp's stream port)
    and call_uas.xml (PCMU and telephone-event answered, unchanged) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.xml"):
        (directory / path.name).write_text(path.read_text())
    uac = directory / "call_uac.xml"
    text = uac.read_text()
    if text.count("m=audio [media_port] RTP/AVP") != 2 or text.count("  <pause/>\n") != 1:
        raise RuntimeError(f"{uac}: not the expected call_uac.xml")
    text = text.replace("m=audio [media_port] RTP/AVP", "m=audio [rtpstream_audio_port] RTP/AVP")
    action = f'  <nop><action><exec rtp_stream="{stream},1,0"/></action></nop>\n'
    text = text.replace("  <pause/>\n", action + "  <pause/>\n")
    uac.write_text(text)
    return directory


def expected_packets(calls: int, stream_seconds: float) -> int:
    """Packets into the relay's sockets for `calls` calls streaming `stream_seconds` each way."""
    return int(calls * stream_seconds * PACKETS_PER_SECOND * 2)


def _socket_drops() -> dict[int, tuple[int, int, int]]:
    """inode -> (local port, drops, bytes queued to be read) of every IPv4 UDP socket."""
    found: dict[int, tuple[int, int, int]] = {}
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) < 13:
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            queued = int(fields[4].split(":")[1], 16)
            found[int(fields[9])] = (port, int(fields[12]), queued)
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


class UdpDrops:
    """Receive-buffer drops of the UDP sockets of `pids` (and their children) and of `ports`, between
    `start` and `stop`, sampled every `interval` seconds (a socket closed between two samples loses at most
    its last interval's drops)."""

    def __init__(self, pids: list[int], ports: list[int], interval: float = 1.0) -> None:
        self.pids = pids
        self.ports = set(ports)
        self.interval = interval
        self._base: dict[int, int] = {}
        self._seen_relay: dict[int, int] = {}
        self._seen_ports: dict[int, int] = {}
        self.queues: list[int] = []  # bytes: the longest receive queue of a relay socket, per sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _relay_inodes(self) -> set[int]:
        inodes: set[int] = set()
        for pid in self.pids:
            try:
                procs = [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
            except psutil.Error:
                continue
            for one in procs:
                inodes |= _socket_inodes(one)
        return inodes

    def _sample(self, *, base: bool = False) -> None:
        sockets = _socket_drops()
        relay = self._relay_inodes()
        longest = 0
        for inode, (port, drops, queued) in sockets.items():
            if base:
                self._base[inode] = drops
                continue
            grown = drops - self._base.get(inode, 0)
            if inode in relay:
                longest = max(longest, queued)
                self._seen_relay[inode] = max(self._seen_relay.get(inode, 0), grown)
            elif port in self.ports:
                self._seen_ports[inode] = max(self._seen_ports.get(inode, 0), grown)

        if not base:
            self.queues.append(longest)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> UdpDrops:
        self._sample(base=True)
        self._thread.start()
        return self

    def stop(self) -> tuple[int, int]:
        """(drops at the relay's sockets, drops at `ports`) since `start`."""
        self._stop.set()
        self._thread.join(10)
        self._sample()
        return sum(self._seen_relay.values()), sum(self._seen_ports.values())

    def queue_ms(self) -> list[float]:
        """Each sample's longest relay socket queue, as milliseconds of one 50 packets/s stream."""
        return [queued / SKB_BYTES * 1000 / PACKETS_PER_SECOND for queued in self.queues]


def media_rate(calls: int, ramp: float) -> int:
    """Calls/s that put `calls` calls up in `ramp` seconds."""
    return max(1, math.ceil(calls / ramp))
