"""Registrations held for many trunks refreshing at once: the PBX as a client (issue 12).

`twistd pbx` is configured with N trunks (default 1,000), all registering to one carrier on loopback at the
same moment; the carrier (this script with `--carrier`, a plain-socket responder in its own process)
challenges each binding's first REGISTER with a 401 (MD5, qop=auth), checks every digest, grants `--granted`
seconds (20 by default), *aligned*: each grant runs to a common deadline (a multiple of 20 s after the
carrier started), so every binding lapses at the same moment and the PBX refreshes all of them 5 s before it,
in the same second (the widest burst is reported; `--unaligned` grants a plain 20 s). The carrier keeps
the time each binding lapses: a refresh arriving after its binding lapsed, or a binding found lapsed, is a
*missed refresh*. The run:

1. start the carrier and the PBX; wait until all N bindings are held (the first burst: N challenges, N 200s);
2. hold for `--cycles` refresh bursts, sampling the PBX's CPU (from /proc via psutil): CPU per refresh is the
   PBX's CPU in that window divided by the refreshes the carrier counted in it; the idle CPU of the same PBX
   with no trunk is measured first (`--idle-seconds`), for reference;
3. read `pbx trunks status` (every trunk must show `registered`);
4. stop the PBX (SIGTERM): every trunk unregisters (Expires: 0); the time to the last one is reported.

    .venv/bin/python bench/trunk_register_bench.py [--trunks 1000] [--granted 20] [--cycles 4]

Prints a markdown table; every process is on loopback and is ended by this script (also on errors).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HOST,
    ServerProcess,
    executable,
    free_port,
    markdown_table,
    source_version,
    write_pbx_config,
)

REALM = "bench.carrier"
_AUTH_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


# -- the carrier -----------------------------------------------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class Carrier:
    """A registrar on a plain UDP socket: 401, digest check, 200 with the granted expiry; counts it all."""

    def __init__(self, port: int, granted: int, aligned: bool = True) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind((HOST, port))
        self.granted = granted
        self.aligned = aligned
        self.epoch = time.monotonic()
        self.refresh_times: list[float] = []
        self.until: dict[str, float] = {}  # Call-ID -> when the binding lapses
        self.cseq: dict[str, str] = {}  # Call-ID -> the last CSeq seen (a retransmission repeats it)
        self.counts = dict.fromkeys(
            (
                "registers",
                "retransmissions",
                "challenges",
                "first",
                "refreshes",
                "missed",
                "unregisters",
                "bad_auth",
            ),
            0,
        )
        self.lock = threading.Lock()

    def serve(self) -> None:
        while True:
            data, addr = self.sock.recvfrom(65535)
            if data.startswith(b"SIP/2.0") or not data.strip():
                continue
            reply = self.answer(data.decode("utf-8", "replace"))
            if reply:
                self.sock.sendto(reply.encode(), addr)

    def answer(self, text: str) -> str:
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        copied = "".join(f"Via: {v}\r\n" for v in headers.get("via", []))
        for name in ("From", "To", "Call-ID", "CSeq"):
            value = headers.get(name.lower(), [""])[0]
            copied += f"{name}: {value}{';tag=carrier' if name == 'To' else ''}\r\n"
        if not head[0].startswith("REGISTER "):
            return f"SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n"
        call_id = headers.get("call-id", [""])[0]
        expires = int(headers.get("expires", ["3600"])[0])
        now = time.monotonic()
        with self.lock:
            self.counts["registers"] += 1
            cseq = headers.get("cseq", [""])[0]
            retransmitted = self.cseq.get(call_id) == cseq
            if retransmitted:
                self.counts["retransmissions"] += 1
            self.cseq[call_id] = cseq
            authorization = headers.get("authorization")
            if not authorization:
                self.counts["challenges"] += 1
                return (
                    f'SIP/2.0 401 Unauthorized\r\n{copied}WWW-Authenticate: Digest realm="{REALM}", '
                    f'nonce="{_md5(call_id)[:16]}", qop="auth", algorithm=MD5\r\nContent-Length: 0\r\n\r\n'
                )
            params = {m[0]: m[1] or m[2] for m in _AUTH_PARAM.findall(authorization[0].split(None, 1)[1])}
            user = params.get("username", "")
            ha1 = _md5(f"{user}:{REALM}:pw-{user}")
            ha2 = _md5(f"REGISTER:{params.get('uri')}")
            expected = _md5(
                f"{ha1}:{params.get('nonce')}:{params.get('nc')}:{params.get('cnonce')}:auth:{ha2}"
            )
            if params.get("response") != expected:
                self.counts["bad_auth"] += 1
                return f"SIP/2.0 403 Forbidden\r\n{copied}Content-Length: 0\r\n\r\n"
            if expires == 0:
                self.counts["unregisters"] += 1
                self.until.pop(call_id, None)
                return f"SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n"
            grant = self.granted
            previous = self.until.get(call_id)
            if previous is None:
                self.counts["first"] += 1
            elif retransmitted:
                pass  # the request just answered, again: its answer was late or lost
            else:
                self.counts["refreshes"] += 1
                if now > previous:
                    self.counts["missed"] += 1
                self.refresh_times.append(now)
            grant = self.grant(now)
            self.until[call_id] = now + grant
        contact = headers.get("contact", [""])[0].split(";expires=")[0]
        return f"SIP/2.0 200 OK\r\n{copied}Contact: {contact};expires={grant}\r\nContent-Length: 0\r\n\r\n"

    def grant(self, now: float) -> int:
        """The expiry granted now: `granted`, or (aligned) the whole seconds to the next common deadline
        (a multiple of `granted` after the start, at least half of it away), so that every binding, whenever
        it was made, lapses at the same moment and is refreshed 5 s before it: all at once."""
        if not self.aligned:
            return self.granted
        periods = int((now - self.epoch) / self.granted) + 1
        deadline = self.epoch + periods * self.granted
        if deadline - now < self.granted / 2:
            deadline += self.granted
        return int(deadline - now)

    def burst_widths(self) -> list[float]:
        """The spread (first to last) of each burst of refreshes (bursts: refreshes less than 3 s apart)."""
        widths: list[float] = []
        start = last = None
        for at in self.refresh_times:
            if last is None or at - last > 3:
                if start is not None and last is not None:
                    widths.append(last - start)
                start = at
            last = at
        if start is not None and last is not None:
            widths.append(last - start)
        return widths

    def report(self) -> dict[str, int]:
        now = time.monotonic()
        with self.lock:
            lapsed = sum(1 for until in self.until.values() if until < now)
            widths = self.burst_widths()
        return {
            **self.counts,
            "held": len(self.until) - lapsed,
            "lapsed": lapsed,
            "bursts": len(widths),
            "widest_ms": int(1000 * max(widths, default=0.0)),
        }


def run_carrier(port: int, granted: int, aligned: bool) -> None:
    """`--carrier`: serve, and print the counts as a JSON line every half second."""
    carrier = Carrier(port, granted, aligned)
    threading.Thread(target=carrier.serve, daemon=True).start()
    print(f"carrier listening on {HOST} port {port}", flush=True)
    for _ in range(24 * 3600 * 2):  # bounded: a day
        time.sleep(0.5)  # a reporting period, not a wait for an event
        print(json.dumps(carrier.report()), flush=True)


# -- the benchmark ---------------------------------------------------------------------------------------


def last_counts(carrier: ServerProcess) -> dict[str, int]:
    for line in reversed(carrier.lines):
        if line.startswith("{"):
            return dict(json.loads(line))
    return {}


def wait_counts(carrier: ServerProcess, key: str, value: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = last_counts(carrier)
        if counts.get(key, 0) >= value:
            return counts
        time.sleep(0.25)  # the carrier reports every 0.5 s
    raise RuntimeError(f"carrier: {key} did not reach {value} in {timeout} s: {last_counts(carrier)}")


def trunks_toml(count: int, carrier_port: int) -> str:
    return "".join(
        f'\n[tenants.default.trunks.t{i}]\nhost = "{HOST}"\nport = {carrier_port}\ntransport = "udp"\n'
        f'username = "u{i}"\npassword = "pw-u{i}"\nregister = true\nregister_expires = 600\n'
        for i in range(count)
    )


def cpu_seconds(server: ServerProcess) -> float:
    times = server.ps.cpu_times()
    return float(times.user + times.system)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trunks", type=int, default=1000)
    parser.add_argument("--granted", type=int, default=20, help="expiry the carrier grants, seconds")
    parser.add_argument("--cycles", type=int, default=4, help="refresh periods measured")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--unaligned", action="store_true", help="grant a plain --granted, not aligned")
    parser.add_argument("--carrier", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.carrier:
        run_carrier(args.carrier, args.granted, not args.unaligned)
        return 0
    period = float(args.granted)
    if args.unaligned:
        period = max(min(args.granted - 5, 0.9 * args.granted), args.granted / 2)
    with tempfile.TemporaryDirectory(prefix="trunk-bench-") as tmp:
        directory = Path(tmp)
        carrier_port = free_port(tcp=False)
        carrier = ServerProcess(
            "carrier",
            [sys.executable, __file__, "--carrier", str(carrier_port), "--granted", str(args.granted)]
            + (["--unaligned"] if args.unaligned else []),
        )
        pbx = None
        try:
            carrier.wait_for("carrier listening")
            config = write_pbx_config(directory, free_port())
            twistd = [executable("twistd"), "--nodaemon", "--pidfile=", "pbx", "--config", str(config)]
            # the PBX with no trunk first: its idle CPU
            pbx = ServerProcess("pbx-idle", twistd, cwd=directory)
            pbx.wait_for("PBX ready")
            start = cpu_seconds(pbx)
            time.sleep(args.idle_seconds)  # measuring an idle process over a fixed window
            idle = (cpu_seconds(pbx) - start) / args.idle_seconds
            pbx.stop()
            config.write_text(config.read_text() + trunks_toml(args.trunks, carrier_port))
            started = time.monotonic()
            pbx = ServerProcess("pbx", twistd, cwd=directory)
            pbx.wait_for("PBX ready", timeout=120)
            counts = wait_counts(carrier, "first", args.trunks, timeout=120)
            all_held = time.monotonic() - started
            # the first refresh burst comes `period` s after the first 200s; measure whole bursts after it
            wait_counts(carrier, "refreshes", args.trunks, timeout=period + 60)
            before = last_counts(carrier)
            cpu_before, carrier_before = cpu_seconds(pbx), cpu_seconds(carrier)
            t0 = time.monotonic()
            target = before["refreshes"] + args.cycles * args.trunks
            wait_counts(carrier, "refreshes", target, timeout=args.cycles * period + 60)
            cpu = cpu_seconds(pbx) - cpu_before
            carrier_cpu = cpu_seconds(carrier) - carrier_before
            elapsed = time.monotonic() - t0
            time.sleep(1.0)  # let the last burst's stragglers arrive before reading the counts
            after = last_counts(carrier)
            refreshes = after["refreshes"] - before["refreshes"]
            status = subprocess.run(
                [executable("pbx"), "trunks", "status", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            registered = sum(1 for line in status.stdout.splitlines() if " registered " in line)
            stop_at = time.monotonic()
            pbx.stop(timeout=60)
            stopped = time.monotonic() - stop_at
            final = wait_counts(carrier, "unregisters", args.trunks, timeout=10)
        finally:
            if pbx is not None:
                pbx.stop()
            carrier.stop()
    rows = [
        ["trunks", args.trunks],
        [
            "granted expiry / refresh period (s)",
            f"{args.granted}{'' if args.unaligned else ' aligned'} / {period:g}",
        ],
        ["all bindings held after PBX start (s)", f"{all_held:.1f}"],
        ["REGISTERs for the first bindings (challenge + answer)", f"{counts['registers']}"],
        ["of which retransmissions (T1 = 500 ms)", f"{counts['retransmissions']}"],
        [f"refreshes in {elapsed:.0f} s ({args.cycles} bursts)", refreshes],
        ["REGISTER retransmissions in the window", after["retransmissions"] - before["retransmissions"]],
        [
            "refresh bursts so far, widest (first to last refresh, ms)",
            f"{after['bursts']}, {after['widest_ms']}",
        ],
        ["missed refreshes / lapsed bindings", f"{after['missed']} / {after['lapsed']}"],
        ["bad digests", after["bad_auth"]],
        ["PBX CPU in the window (s)", f"{cpu:.2f}"],
        ["PBX CPU per refresh (ms)", f"{1000 * cpu / max(1, refreshes):.2f}"],
        [
            "PBX CPU per refresh less the idle CPU (ms)",
            f"{1000 * (cpu - idle * elapsed) / max(1, refreshes):.2f}",
        ],
        ["PBX idle CPU without trunks (% of a core)", f"{100 * idle:.2f}"],
        ["PBX CPU with the trunks, averaged (% of a core)", f"{100 * cpu / elapsed:.2f}"],
        ["carrier (load generator) CPU in the window (s)", f"{carrier_cpu:.2f}"],
        ["`pbx trunks status`: registered", f"{registered} / {args.trunks}"],
        ["shutdown with unregisters (s), unregisters answered", f"{stopped:.1f}, {final['unregisters']}"],
    ]
    print(f"trunk registration benchmark, {source_version()}")
    print(markdown_table(["measure", "value"], rows))
    ok = (
        after["missed"] == 0 and after["lapsed"] == 0 and registered == args.trunks and after["bad_auth"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
