"""The nftables blocklist inside a network namespace of its own (run by `test_nftables_netns.py` as
`unshare --net python -m tests.e2e.nftables_netns --workdir DIR`; it must not run in the host's namespace).

In the new namespace: loopback up; the table `inet pbx` with the sets `blocked4`/`blocked6` (`flags
timeout`) and an input chain dropping their members with a counter (the ruleset of docs/security.md);
`twistd pbx` with `edge.nftables_table = "inet pbx"`; a bounded flood of REGISTERs from 127.0.0.3 until the
PBX blocks it and `nft` shows 127.0.0.3 in `blocked4`. Then 50 datagrams from 127.0.0.3 and 50 from
127.0.0.4 to a plain UDP socket on 127.0.0.1 (not the PBX: nothing of the PBX could drop them there): the
drop rule's counter grows by the first 50, the socket receives only the second 50. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import PbxProcess, write_config

RULESET = """
table inet pbx {
    set blocked4 { type ipv4_addr; flags timeout; }
    set blocked6 { type ipv6_addr; flags timeout; }
    chain input {
        type filter hook input priority 0; policy accept;
        ip saddr @blocked4 counter drop
        ip6 saddr @blocked6 counter drop
    }
}
"""
NFT = "/usr/sbin/nft"
PROBES = 50


def nft(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run([NFT, *args], input=stdin, capture_output=True, text=True, timeout=10, check=True)
    return done.stdout


def dropped_packets() -> int:
    """The packets counted by the IPv4 drop rule."""
    chain = nft("list", "chain", "inet", "pbx", "input")
    found = re.search(r"ip saddr @blocked4 counter packets (\d+)", chain)
    assert found is not None
    return int(found.group(1))


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def received(sock: socket.socket, timeout: float) -> list[str]:
    """The sources of the datagrams `sock` receives until it is quiet for `timeout` seconds."""
    sources = []
    sock.settimeout(timeout)
    try:
        while True:
            _, (host, _) = sock.recvfrom(2048)
            sources.append(host)
    except TimeoutError:
        return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    nft("-f", "-", stdin=RULESET)
    directory = args.workdir / "pbx"
    directory.mkdir(parents=True)
    ports = write_config(directory, ipv6=False, trace=False, extra='\n[edge]\nnftables_table = "inet pbx"\n')
    pbx = PbxProcess(ports["path"])
    result: dict[str, object] = {}
    try:
        pbx.wait_ready(ports["listeners"], timeout=60)
        flood = subprocess.run(
            [sys.executable, "-m", "tests.e2e.flooder", "--source", "127.0.0.3", "--port", str(ports["sip"]),
             "--rate", "2000", "--seconds", "2"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        result["flood"] = json.loads(flood.stdout.strip().splitlines()[-1])
        result["block"] = pbx.wait_for(r"Blocked 127\.0\.0\.3 for \d+ s", timeout=10)[0].split("] ", 1)[-1]
        in_set = wait_until(lambda: "127.0.0.3" in nft("list", "set", "inet", "pbx", "blocked4"), timeout=10)
        result["set"] = nft("list", "set", "inet", "pbx", "blocked4").split()
        result["in_set"] = in_set
        before = dropped_packets()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target:
            target.bind(("127.0.0.1", 0))
            for source in ("127.0.0.3", "127.0.0.4"):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                    sender.bind((source, 0))
                    for n in range(PROBES):
                        sender.sendto(b"OPTIONS probe %d" % n, target.getsockname())
            sources = received(target, 1.0)
        result["dropped"] = dropped_packets() - before
        result["received_from"] = {host: sources.count(host) for host in sorted(set(sources))}
        result["nft_failures"] = re.findall(r"add element inet pbx \S+ .* failed: .*", pbx.output)
    finally:
        pbx.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
