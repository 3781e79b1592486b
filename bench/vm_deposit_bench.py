"""Concurrent voicemail deposits: how many recordings one PBX core keeps whole (no gap in any saved WAV).

For rising counts of callers (default 100, 200, 300, 400), each step starts a fresh `twistd -n pbx` pinned
to core 0 with a trusted SIPp peer (no 407), ten mailboxes 7000-7009 (10,000 messages each, a 0.2 s
recorded greeting so callers reach the beep at once) and the dialplan `voicemail {{ call.dialed }}`.
SIPp, pinned to core 1, places the calls at --rate per second (default 40); each caller waits 1.5 s (the
greeting and the beep), sends --seconds (default 20) of a 440 Hz tone as G.711 u-law RTP from a pcap
(`play_pcap_audio`, so root is needed), and hangs up 0.5 s after the tone: with 40 calls/s and 20 s, up
to 300 recordings run at once for about 12 s. Then every saved WAV is checked against what was sent:

- the tone's extent (first to last loud 20 ms frame) must be the samples sent, within one frame (20 ms);
- no 20 ms frame inside it may be silent (a lost or misplaced packet leaves silence: a gap);
- every call must have left exactly one message (an index row; the log says "message ... saved").

Printed per step: calls placed and completed, messages saved, WAVs with a gap, the worst shortfall of
samples (sent minus saved), the PBX's CPU (% of one core) and RSS, SIPp's CPU, and "ok" when every call
left a whole message. Target: 300 concurrent recordings ok.

Run by hand under the shared benchmark lock (about a minute per step):

    flock /tmp/bench.lock python bench/vm_deposit_bench.py
    flock /tmp/bench.lock python bench/vm_deposit_bench.py --counts 300 --seconds 20 --rate 40

Everything binds to 127.0.0.1; SIPp is bounded by -m, -l and -timeout; the PBX and SIPp are killed at the
end of each step, also on errors and Ctrl-C. The step's directory is deleted unless --keep.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import wave
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HOST,
    SIPP_BUFFER,
    ResourceSampler,
    ServerProcess,
    executable,
    free_port,
    markdown_table,
    pinned,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RATE = 8000
FRAME = 160
BOXES = [str(7000 + i) for i in range(10)]
LEAD = 3.0  # the caller's wait for the answer, the greeting (0.2 s) and the beep (0.5 s), with a margin
TAIL = 1.0  # from the end of the tone to the caller's BYE
GAP_SAMPLES = 16  # 2 ms of exact zeros inside the tone is a gap
LOUD = 2000  # RMS of a frame that holds the tone (the tone's RMS is about 11,600)

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="voicemail-deposit-bench">
  <send retrans="500"><![CDATA[
INVITE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-inv1;rport
Max-Forwards: 70
From: "Bench caller" <sip:1001@[remote_ip]>;tag=[pid]SIPpTag[call_number]
To: <sip:[field0]@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:1001@[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=uac 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000

]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: "Bench caller" <sip:1001@[remote_ip]>;tag=[pid]SIPpTag[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Content-Length: 0

]]></send>
  <pause milliseconds="{lead_ms}"/>
  <nop><action><exec play_pcap_audio="tone.pcap"/></action></nop>
  <pause milliseconds="{hold_ms}"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: "Bench caller" <sip:1001@[remote_ip]>;tag=[pid]SIPpTag[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 2 BYE
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""


# -- the audio ---------------------------------------------------------------------------------------------


def ulaw(sample: int) -> int:
    """G.711 u-law of one 16-bit sample (the bench stays independent of pbx.media)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(32635, abs(sample)) + 132
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def tone_pcap(path: Path, seconds: float) -> int:
    """A pcap of 20 ms u-law RTP packets of a 440 Hz tone for SIPp's play_pcap_audio; the samples sent."""
    count = int(seconds * RATE) // FRAME * FRAME
    table = bytes(ulaw(int(0.5 * 32767 * math.sin(2 * math.pi * 440 * i / RATE))) for i in range(RATE))
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for index in range(count // FRAME):
        start = index * FRAME % RATE
        payload = (table + table)[start : start + FRAME]
        rtp = struct.pack("!BBHII", 0x80, 0x80 if index == 0 else 0, index & 0xFFFF, index * FRAME, 0xBE4C)
        udp = struct.pack("!HHHH", 40000, 40002, 8 + len(rtp) + len(payload), 0) + rtp + payload
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            index & 0xFFFF,
            0,
            64,
            17,
            0,
            b"\x7f\0\0\1",
            b"\x7f\0\0\1",
        )
        checksum = sum(struct.unpack("!10H", ip))
        while checksum >> 16:
            checksum = (checksum & 0xFFFF) + (checksum >> 16)
        ip = ip[:10] + struct.pack("!H", ~checksum & 0xFFFF) + ip[12:]
        frame = b"\0\0\0\0\0\2" + b"\0\0\0\0\0\1" + b"\x08\x00" + ip + udp
        micros = index * 20_000
        out.append(struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return count


def frame_rms(samples: array, start: int) -> float:
    chunk = samples[start : start + FRAME]
    return math.sqrt(sum(x * x for x in chunk) / max(1, len(chunk)))


def check_wav(path: Path) -> tuple[int, int, bool]:
    """(gaps, samples of the tone saved, cut at the start) of one message.

    The tone's extent runs from its first to its last sample above a quarter of its amplitude (found from
    the first and last loud 20 ms frame). A gap is a run of at least 2 ms of exact zeros inside it: what the
    recorder leaves where a packet never came (the tone, decoded from u-law, is never zero for that long).
    The tone is cut at the start when it begins in the file's first 40 ms (the beep came after the caller
    had started: its wait was too short for a PBX that was slow to answer). (The file ends with the last
    packet recorded, so a tone cut at the end by the BYE shows as a shortfall.)
    """
    with wave.open(str(path)) as w:
        raw = w.readframes(w.getnframes())
    samples = array("h", raw)
    if sys.byteorder == "big":
        samples.byteswap()
    frames = len(samples) // FRAME
    loud = [frame_rms(samples, i * FRAME) >= LOUD for i in range(frames)]
    if not any(loud):
        return 0, 0, False
    first = loud.index(True)
    last = frames - 1 - loud[::-1].index(True)
    lo_start = max(0, (first - 1) * FRAME)  # the frame before may hold the tone's first samples
    lo = next(i for i in range(lo_start, (first + 1) * FRAME) if abs(samples[i]) > 4000)
    hi_end = min(len(samples), (last + 2) * FRAME)
    hi = next(i for i in range(hi_end - 1, last * FRAME - 1, -1) if abs(samples[i]) > 4000)
    gaps, zeros, at = 0, b"\0\0" * GAP_SAMPLES, 2 * lo
    while (found := raw.find(zeros, at, 2 * hi)) >= 0:
        gaps += 1
        at = found + len(zeros)
        while at < 2 * hi and raw[at : at + 2] == b"\0\0":
            at += 2
    return gaps, hi - lo + 1, lo < 2 * FRAME


# -- one step ----------------------------------------------------------------------------------------------


def write_setup(directory: Path, sip_port: int, rtp: tuple[int, int]) -> Path:
    config = directory / "pbx.toml"
    boxes = "".join(f'[tenants.default.mailboxes.{b}]\npin = "{b}"\nmax_messages = 10000\n\n' for b in BOXES)
    config.write_text(
        '[pbx]\ndata_dir = "data"\nsip_trace = false\n\n'
        f'[[sip.listen]]\ntransport = "udp"\nhost = "{HOST}"\nport = {sip_port}\n\n'
        f"[media]\nrtp_port_min = {rtp[0]}\nrtp_port_max = {rtp[1]}\n\n"
        "[voicemail]\nmin_message_seconds = 1\nsilence_seconds = 10\n\n"
        f'[tenants.default]\ndomain = "localhost"\naliases = ["{HOST}"]\n\n'
        '[tenants.default.extensions.1001]\nname = "Bench"\npassword = "bench-secret"\n\n'
        f'[[tenants.default.peers]]\nname = "sipp"\nnetworks = ["{HOST}/32"]\nextension = "1001"\n\n' + boxes
    )
    dialplan = directory / "dialplans" / "default"
    dialplan.mkdir(parents=True)
    (dialplan / "main.j2").write_text("voicemail {{ call.dialed }} greeting=unavailable\n")
    silence = b"\0\0" * int(0.2 * RATE)
    for box in BOXES:
        greetings = directory / "data" / "voicemail" / "default" / box / "greetings"
        greetings.mkdir(parents=True)
        with wave.open(str(greetings / "unavailable.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(silence)
    return config


def cpu_pressure() -> float:
    """The machine's CPU pressure over the last 60 s (PSI "some" avg60, %: the share of time some runnable
    task waited for a CPU); 0 where the kernel does not report it. Above ~20 % the box is shared too much
    for these figures to mean anything."""
    try:
        with open("/proc/pressure/cpu") as f:
            first = f.readline().split()
    except OSError:
        return 0.0
    return float(dict(item.split("=") for item in first[1:])["avg60"])


def max_concurrent(spans: list[tuple[float, float]]) -> int:
    """The most recordings under way at once, from (start, end) of each."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


def message_rows(directory: Path) -> list[tuple[str, float, float]]:
    path = directory / "data" / "pbx.sqlite3"
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return list(connection.execute("SELECT audio, received_at, duration FROM voicemail_messages"))
    finally:
        connection.close()


def step(count: int, args: argparse.Namespace) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix=f"vm-bench-{count}-"))
    sip_port = free_port(udp=True, tcp=False)
    rtp = (args.rtp_base, args.rtp_base + 4 * count + 200)
    config = write_setup(directory, sip_port, rtp)
    sent = tone_pcap(directory / "tone.pcap", args.seconds)
    (directory / "scenario.xml").write_text(
        SCENARIO.replace("{lead_ms}", str(int(LEAD * 1000))).replace(
            "{hold_ms}", str(int((sent / RATE + TAIL) * 1000))
        )
    )
    (directory / "boxes.csv").write_text("SEQUENTIAL\n" + "\n".join(BOXES) + "\n")
    cmd = [executable("twistd"), "--nodaemon", "--pidfile=", "pbx", "--config", str(config)]
    pbx = ServerProcess("pbx", pinned(cmd, None if args.pbx_cpu < 0 else args.pbx_cpu), cwd=directory)
    sipp: subprocess.Popen[bytes] | None = None
    try:
        pbx.wait_for(r"PBX ready", timeout=60)
        sampler = ResourceSampler(pbx.pid).start()
        call_seconds = LEAD + sent / RATE + TAIL
        limit = count / args.rate + call_seconds + 60
        sipp_cmd = [
            executable("sipp"), f"{HOST}:{sip_port}", "-sf", str(directory / "scenario.xml"),
            "-inf", str(directory / "boxes.csv"), "-i", HOST, "-p", str(free_port(udp=True, tcp=False)),
            "-mp", str(args.sipp_media_port), "-m", str(count), "-l", str(count), "-r", str(args.rate),
            "-buff_size", str(SIPP_BUFFER), "-nostdin", "-timeout", f"{int(limit)}s", "-timeout_error",
            "-trace_err", "-error_file", str(directory / "sipp_errors.log"),
        ]  # fmt: skip
        started = time.monotonic()
        before = os.times()
        sipp = subprocess.Popen(
            pinned(sipp_cmd, None if args.sipp_cpu < 0 else args.sipp_cpu),
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        status = sipp.wait(limit + 30)
        after = os.times()
        wall = time.monotonic() - started
        sipp_cpu = (
            100.0
            * (
                (after.children_user - before.children_user)
                + (after.children_system - before.children_system)
            )
            / wall
        )
        try:  # the last messages are committed just after the last BYE
            pbx.wait_for(r"message \S+ saved", timeout=30, count=count)
        except RuntimeError:
            pass  # fewer messages than calls: the table shows it
        sampler.stop()
        rows = message_rows(directory)
        gaps = short = worst = cut_start = 0
        for audio, _, _ in rows:
            g, saved, early = check_wav(directory / "data" / audio)
            gaps += g > 0
            cut_start += early
            if early:
                continue  # the samples sent before the beep were never to be recorded
            shortfall = sent - saved
            if abs(shortfall) > FRAME:
                short += 1
            worst = max(worst, shortfall, key=abs)
        return {
            "count": count,
            "sipp_status": status,
            "messages": len(rows),
            "gap_wavs": gaps,
            "short_wavs": short,
            "cut_start": cut_start,
            "worst_shortfall": worst,
            "sent": sent,
            "pbx_cpu": sampler.cpu_percent,
            "rss_mb": sampler.rss_max / 2**20,
            "sipp_cpu": sipp_cpu,
            "wall": wall,
            "pressure": cpu_pressure(),
            "concurrent": max_concurrent([(at, at + seconds) for _, at, seconds in rows]),
            "ok": status == 0 and len(rows) == count and gaps == 0 and short == 0,
        }
    finally:
        if sipp is not None and sipp.poll() is None:
            sipp.kill()
            sipp.wait()
        pbx.stop()
        if args.keep:
            (directory / "pbx.log").write_text(pbx.output)
            print(f"  (kept {directory})", flush=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="100,200,300,400")
    parser.add_argument("--seconds", type=float, default=20.0, help="tone length each caller sends")
    parser.add_argument("--rate", type=float, default=40.0, help="calls per second")
    parser.add_argument("--rtp-base", type=int, default=21000)
    parser.add_argument("--sipp-media-port", type=int, default=33000)
    parser.add_argument("--keep", action="store_true", help="keep each step's directory")
    parser.add_argument("--pbx-cpu", type=int, default=0, help="the core the PBX is pinned to (-1: none)")
    parser.add_argument("--sipp-cpu", type=int, default=1, help="the core SIPp is pinned to (-1: none)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("SIPp's play_pcap_audio needs root")
    print(
        f"Voicemail deposit bench: {args.seconds:g} s of tone per caller, {args.rate:g} calls/s", flush=True
    )
    rows = []
    for count in (int(c) for c in args.counts.split(",")):
        r = step(count, args)
        rows.append(r)
        print(
            f"  {count}: {r['messages']} messages ({r['concurrent']} at once), {r['gap_wavs']} with a gap, "
            f"{r['short_wavs']} short, {r['cut_start']} cut at the start "
            f"(worst {r['worst_shortfall']} samples), PBX CPU {r['pbx_cpu']:.0f} %, SIPp CPU "
            f"{r['sipp_cpu']:.0f} % -> {'ok' if r['ok'] else 'NOT ok'}",
            flush=True,
        )
    print()
    headers = [
        "callers", "most concurrent recordings", "messages saved", "WAVs with a gap", "WAVs short > 20 ms",
        "worst shortfall (samples)", "tone cut at the start", "PBX CPU % of one core", "PBX RSS MB",
        "SIPp CPU %", "SIPp exit", "CPU pressure avg60 %", "ok",
    ]  # fmt: skip
    table = [
        [
            r["count"],
            r["concurrent"],
            r["messages"],
            r["gap_wavs"],
            r["short_wavs"],
            r["worst_shortfall"],
            r["cut_start"],
            f"{r['pbx_cpu']:.0f}",
            f"{r['rss_mb']:.0f}",
            f"{r['sipp_cpu']:.0f}",
            r["sipp_status"],
            f"{r['pressure']:.0f}",
            "yes" if r["ok"] else "no",
        ]
        for r in rows
    ]
    print(markdown_table(headers, table))
    held = [r["concurrent"] for r in rows if r["ok"]]
    print(f"\nMost concurrent recordings with every message whole: {max(held, default=0)}")


if __name__ == "__main__":
    main()
