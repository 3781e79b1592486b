"""Concurrent G.711 calls relayed by rtpengine (userspace forwarding) versus the PBX's built-in relay.

The media path of `[media] relay = "rtpengine"` against `"builtin"`, with `bench/relay_bench.py`'s load
generator and method (read its docstring and bench/RELAY.md): each call is two phones sending 172-byte RTP
packets every 20 ms, a sender and a receiver process pinned to core 1, the relay pinned to core 0, loss and
the relay's CPU (% of one core, psutil) per step.

- `builtin`: relay_bench's `relay` server: `UdpMediaRelay` as the B2BUA uses it, in a Python process.
- `rtpengine`: Debian's rtpengine daemon (`--table=-1`: userspace, no kernel module; one worker thread,
  `--num-threads=1`, so both relays get one core), its calls set up over the ng protocol exactly as
  `pbx.media.rtpengine.RtpengineSession` does (offer and answer with synthetic SDP and the flag "port
  latching", then the phones' addresses, then `query` for the ports). The CPU figure is rtpengine's.

Signalling is not measured (SIPp call rates with each relay: bench/calls_bench.py against a PBX configured
with the relay you want). Run by hand, not in CI (about 25 s per step and relay):

    python bench/rtpengine_bench.py --calls 100,300,500 --seconds 10
    python bench/rtpengine_bench.py --calls 50 --seconds 3          # a smoke run, about 15 s

Everything runs on 127.0.0.1; rtpengine and every load process are stopped at the end of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import relay_bench as rb
from common import HOST, ServerProcess, free_port, markdown_table, pinned, source_version

from pbx.media.bencode import decode, encode
from pbx.media.rtpengine import _FLAGS, synthetic_sdp

RTPENGINE = "/usr/bin/rtpengine"
RTPENGINE_PORTS = (10000, 19999)  # below relay_bench's built-in relay range and the ephemeral range


class NgSocket:
    """A blocking ng client for the bench driver (retransmits every 0.5 s, 5 s at most)."""

    def __init__(self, port: int) -> None:
        self.address = (HOST, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.5)

    def request(self, command: dict[str, Any]) -> dict[bytes, Any]:
        cookie = os.urandom(6).hex().encode()
        data = cookie + b" " + encode(command)
        for _ in range(10):
            self.sock.sendto(data, self.address)
            try:
                while True:
                    got, _, body = self.sock.recv(65536).partition(b" ")
                    if got == cookie:
                        answer = decode(body)
                        if answer.get(b"result") not in (b"ok", b"pong"):
                            raise RuntimeError(f"rtpengine: {answer}")
                        return answer
            except TimeoutError:
                continue
        raise RuntimeError(f"no answer from rtpengine to {command.get('command')}")


class RtpengineServer:
    """rtpengine with `calls` calls towards the phones, in the shape of relay_bench's `ServerProcess`."""

    def __init__(self, cmd: list[str]) -> None:
        calls, phones_a, phones_b = int(cmd[-3]), json.loads(cmd[-2]), json.loads(cmd[-1])
        core = int(cmd[2]) if len(cmd) > 2 and cmd[1] == "-c" else None
        port = free_port(udp=True, tcp=False)
        self._dir = tempfile.TemporaryDirectory(prefix="rtpengine-bench-")
        args = [
            RTPENGINE, "--config-file=none",
                "--table=-1", f"--interface={HOST}", f"--listen-ng={HOST}:{port}", "--foreground",
            "--log-stderr", "--log-level=4", f"--port-min={RTPENGINE_PORTS[0]}",
            f"--port-max={RTPENGINE_PORTS[1]}", "--num-threads=1", "--delete-delay=0",
            f"--pidfile={self._dir.name}/pid",
        ]  # fmt: skip
        self._server = ServerProcess("rtpengine", pinned(args, core))
        self.ng = NgSocket(port)
        self.ng.request({"command": "ping"})
        self.call_ids: list[str] = []
        ports = []
        for i in range(calls):
            call_id = f"bench-{i}-{os.urandom(3).hex()}"
            self.call_ids.append(call_id)
            a = (HOST, phones_a[i % len(phones_a)])
            b = (HOST, phones_b[i % len(phones_b)])
            tags = {"call-id": call_id, "from-tag": "a", "flags": _FLAGS, "ICE": "remove"}
            for version, (ra, rb_) in enumerate(((None, None), (a, b)), 1):
                self.ng.request({"command": "offer", "sdp": synthetic_sdp(ra, version), **tags})
                self.ng.request(
                    {"command": "answer", "sdp": synthetic_sdp(rb_, version), "to-tag": "b", **tags}
                )
            answer = self.ng.request({"command": "query", "call-id": call_id})
            legs = [answer[b"tags"][t][b"medias"][0][b"streams"][0][b"local port"] for t in (b"a", b"b")]
            ports.append(tuple(legs))
        self.lines = ["READY " + json.dumps(ports)]
        self.proc = self._server.proc

    @property
    def pid(self) -> int:
        return self._server.pid

    def wait_for(self, pattern: str, timeout: float = 60.0) -> list[str]:
        return [line for line in self.lines if re.search(pattern, line)]

    def stop(self) -> None:
        packets = 0
        try:
            for call_id in self.call_ids:  # rtpengine's own count of what it relayed, then the delete
                answer = self.ng.request({"command": "query", "call-id": call_id})
                packets += int(answer.get(b"totals", {}).get(b"RTP", {}).get(b"packets", 0))
                self.ng.request({"command": "delete", "call-id": call_id})
        except RuntimeError as e:
            print(f"  (delete failed: {e})", file=sys.stderr)
        self.lines.append("STATS " + json.dumps({"packets": packets}))
        self._server.stop()
        self.ng.sock.close()
        self._dir.cleanup()


def server_process(kind: str, cmd: list[str], **kwargs: Any) -> Any:
    if "rtpengine" in cmd:
        return RtpengineServer(cmd)
    return ServerProcess(kind, cmd, **kwargs)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="100,300,500", help="comma-separated call counts")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="length of each step (default 10, max 60)"
    )
    parser.add_argument("--relays", default="builtin,rtpengine", help="which relays, in this order")
    parser.add_argument("--max-loss", type=float, default=0.001, help="loss ratio allowed (default 0.001)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--loadgen-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    args.call_list = [int(c) for c in args.calls.split(",") if c]
    args.relay_list = [r for r in args.relays.split(",") if r]
    if set(args.relay_list) - {"builtin", "rtpengine"} or not 0 < args.seconds <= 60:
        parser.error("--relays takes builtin,rtpengine; --seconds from 0 to 60")
    if any(not 0 < c <= 2000 for c in args.call_list):
        parser.error("--calls from 1 to 2000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if "rtpengine" in args.relay_list and not os.path.exists(RTPENGINE):
        print("rtpengine is not installed (apt install rtpengine-daemon)", file=sys.stderr)
        return 2
    rb.ServerProcess = server_process  # type: ignore[misc,assignment]  # rtpengine as relay_bench's server
    version = subprocess.run([RTPENGINE, "--version"], capture_output=True, text=True)
    began = time.strftime("%Y-%m-%d %H:%M")
    print(f"# rtpengine vs built-in relay {began}: calls {args.call_list}, {args.seconds:g} s steps")
    print(f"# pbx at {source_version()}; rtpengine {(version.stdout + version.stderr).strip()}")
    rows = []
    for calls in args.call_list:
        for name in args.relay_list:
            step = rb.run_step("relay" if name == "builtin" else "rtpengine", calls, args)
            step.server = name
            row = rb.step_row(step, args.max_loss)
            rows.append(row)
            print("  " + " | ".join(str(c) for c in row) + f"  {step.server_stats}", flush=True)
    print()
    print(markdown_table(rb.STEP_HEADERS, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
