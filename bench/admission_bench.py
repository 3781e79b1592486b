"""CPU per datagram of the admission (issue 14): a dropped datagram beside a parsed and answered OPTIONS.

In-process, like hotpath_bench.py: a `SipDatagramProtocol` over a real `SipStack` and `TransportManager`
(the real reactor's clock, never run), fed N distinct OPTIONS datagrams through `datagramReceived` with a
fake port, from one source. Measured per datagram (`time.process_time`, best of the repeats):

- `floor`: a protocol whose `datagramReceived` does nothing (the Python floor of the reactor's delivery;
  the real reactor adds its recvfrom, the same for every row),
- `blocked`: from a blocked source (the admission's first check),
- `over limit`: from a source over its rate limit but not blocked (block_after huge: the bucket arithmetic),
- `admitted`: from a source within its limit (admission then parse, transaction, 200),
- `no admission`: the same OPTIONS with admission off (`[edge] enabled = false`).

    python bench/admission_bench.py               # N=20000, 5 repeats
    python bench/admission_bench.py -n 5000 -r 2  # a short run
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hotpath_bench import PEER, FakePort, cleanup, datagram
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

from pbx.sip.admission import Admission, Limit
from pbx.sip.parser import ParserLimits
from pbx.sip.protocols import SipDatagramProtocol
from pbx.sip.stack import SipStack
from pbx.sip.transport import TransportManager


def build(mode: str) -> tuple[Any, FakePort]:
    port = FakePort()
    if mode == "floor":
        floor = DatagramProtocol()
        floor.makeConnection(port)  # type: ignore[arg-type]
        return floor, port
    admission = None
    if mode != "no admission":
        rate = 1e9 if mode == "admitted" else 1.0
        admission = Admission(
            reactor,  # type: ignore[arg-type]
            messages=Limit(rate, rate),
            connections=Limit(10, 20),
            block_after=1e12,
            block_duration=60,
        )
        if mode == "blocked":
            admission.block(PEER[0], 3600, "bench", log=False)
    stack = SipStack(reactor)  # type: ignore[arg-type]
    manager = TransportManager(reactor, stack, limits=ParserLimits(), idle_timeout=0, admission=admission)  # type: ignore[arg-type]
    stack.attach_transport(manager)
    protocol = SipDatagramProtocol(stack, clock=reactor, monitor=manager.monitor, admission=admission)  # type: ignore[arg-type]
    protocol.makeConnection(port)  # type: ignore[arg-type]
    return protocol, port


def run_once(n: int, mode: str) -> float:
    datagrams = [datagram(i) for i in range(n)]
    protocol, port = build(mode)
    receive = protocol.datagramReceived
    gc.collect()
    t0 = time.process_time()
    for data in datagrams:
        receive(data, PEER)
    elapsed = time.process_time() - t0
    answered = mode in ("admitted", "no admission")
    if (answered and port.sent != n) or (not answered and port.sent > 1):  # burst 1: the first goes in
        raise RuntimeError(f"{mode}: {port.sent} answers for {n} requests")
    del protocol, port
    cleanup()
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("-r", "--repeats", type=int, default=5)
    args = parser.parse_args()
    modes = ("floor", "blocked", "over limit", "admitted", "no admission")
    results = {mode: min(run_once(args.n, mode) for _ in range(args.repeats)) for mode in modes}
    print(f"| datagram (N={args.n}, best of {args.repeats}) | CPU us | x floor | % of an answered OPTIONS |")
    print("|---|---:|---:|---:|")
    options = results["no admission"]
    for mode, us in results.items():
        print(f"| {mode} | {us:.2f} | {us / results['floor']:.1f} | {100 * us / options:.1f} % |")


if __name__ == "__main__":
    main()
