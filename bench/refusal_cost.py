"""The CPU cost of refusing a new request under overload, in-process (issue 14, item 6): no sockets.

A `SipStack` with an `OverloadGuard` at a high lag (it refuses every new exchange), fed through the real UDP
entry (`SipDatagramProtocol.datagramReceived`, a transport whose write does nothing). Per request, the best
of --repeat runs over --count distinct datagrams (each one fresh, as on the wire):

- a new REGISTER (SIPp's, about 330 bytes) refused from its raw bytes (`pbx.sip.refusal`),
- the same when that scan is skipped (`pbx.sip.peek`'s way, the path before `pbx.sip.refusal`),
- the same refused after the full parse (the guard's verdict on a parsed request),
- a retransmission of a refused one (the same 503 again, found by its bytes: `SipStack.refused`),
- and the parts: `scan_new_request`, `peek_new_request`, `parse_message`.

    python bench/refusal_cost.py                  # about 10 s
    python bench/refusal_cost.py --count 5000     # quicker

What the socket read and the `sendto` of the answer add is not here (a `sendto` on loopback is about 3-4 us
on the shared benchmark machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

import pbx.sip.shedding as shedding_module
from pbx.sip.admission import Admission, Limit
from pbx.sip.intake import DatagramIntake
from pbx.sip.overload import LagMonitor, OverloadGuard, OverloadPolicy
from pbx.sip.parser import parse_message
from pbx.sip.peek import peek_new_request
from pbx.sip.protocols import SipDatagramProtocol
from pbx.sip.stack import SipStack

REGISTER = (
    "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-{n}-0;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:{user}@127.0.0.1>;tag=4242SIPpTag00{n}\r\n"
    "To: <sip:{user}@127.0.0.1>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:{user}@127.0.0.1:5070;transport=UDP>\r\n"
    "Expires: 600\r\n"
    "User-Agent: SIPp overload\r\n"
    "Content-Length: 0\r\n\r\n"
)
ADDRESS = ("127.0.0.1", 5070)


class _Transport:
    """A UDP port that sends nothing."""

    def write(self, data: bytes, addr: object) -> None:
        pass

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", 5060)


class _Sink:
    """The stack behind the protocol, refusing whatever the guard refuses."""

    def __init__(self, prioritize: bool = False, following: bool = False) -> None:
        clock = self.clock = Clock()
        self.stack = SipStack(clock)
        monitor = LagMonitor(clock, high=0.2, critical=1.0)
        monitor.lag = 0.3  # high: every new exchange refused
        self.guard = OverloadGuard(clock, monitor, OverloadPolicy(follow_completions=following))
        self.guard.admit_share = 0.0
        if following:  # the PBX's default: as fast as exchanges complete (here: never)
            self.guard.admit_rate = 1e-9
        self.stack.set_overload(self.guard)
        if prioritize:  # as the PBX while it sheds: the [edge] admission, new requests at the end of the turn
            limit = Limit(1e6, 1e6)
            admission = Admission(clock, messages=limit, connections=limit, block_after=1e6, block_duration=1)
            self.intake = DatagramIntake(admission, clock)
            self.intake.prioritize = True
            if hasattr(self.stack.shed_screen, "quick"):  # as pbx.service.overload (a checkout before: no)
                self.intake.refuse = self.stack.shed_screen.quick
        else:
            self.intake = DatagramIntake(None)
        self.intake.screen = self.stack.shed_screen.screen  # as pbx.service.overload
        self.protocol = SipDatagramProtocol(self.stack, clock=clock, intake=self.intake)
        self.protocol.transport = _Transport()
        self.protocol.startProtocol()


def best(
    repeat: int, count: int, run: Callable[[], object], before: Callable[[], object] = lambda: None
) -> float:
    """The best time of `repeat` runs, in microseconds per item."""
    times = []
    for _ in range(repeat):
        before()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000, help="distinct datagrams per run (default 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, the best counts (default 3)")
    args = parser.parse_args(argv)
    count, repeat = args.count, args.repeat
    datagrams = [REGISTER.format(n=n, user=1000 + n % 500).encode() for n in range(count)]
    sink = _Sink()
    stack = sink.stack
    for cache in (stack.stateless_cache, stack.by_bytes):
        cache.max_entries = max(cache.max_entries, count)

    def forget() -> None:
        stack.stateless_cache.clear()
        stack.by_bytes.clear()

    receive = sink.protocol.datagramReceived

    def offer() -> None:
        for data in datagrams:
            receive(data, ADDRESS)

    rows: list[tuple[str, float]] = []
    rows.append(
        (
            "new REGISTER refused from its raw bytes (`pbx.sip.refusal`)",
            best(repeat, count, offer, forget),
        )
    )
    rows.append(("its retransmission (the same 503, found by its bytes)", best(repeat, count, offer)))
    deferring = _Sink(prioritize=True)
    deferring.stack.by_bytes.max_entries = count
    deferred = deferring.protocol.datagramReceived

    def offer_deferred() -> None:
        for data in datagrams:
            deferred(data, ADDRESS)
        deferring.clock.advance(0)  # the end of the turn

    rows.append(
        (
            "the same as the PBX while it sheds (`[edge]` admission, deferred to the end of the turn)",
            best(repeat, count, offer_deferred, deferring.stack.by_bytes.clear),
        )
    )
    following = _Sink(prioritize=True, following=True)
    following.stack.by_bytes.max_entries = count
    followed = following.protocol.datagramReceived

    def offer_following() -> None:
        for data in datagrams:
            followed(data, ADDRESS)
        following.clock.advance(0)

    rows.append(
        (
            "the same with `follow_completions` (the PBX's default)",
            best(repeat, count, offer_following, following.stack.by_bytes.clear),
        )
    )
    scan = shedding_module.scan_new_request
    shedding_module.scan_new_request = lambda data, methods: None  # type: ignore[assignment]
    try:
        rows.append(
            ("new REGISTER refused the peeked way (`pbx.sip.peek`)", best(repeat, count, offer, forget))
        )
    finally:
        shedding_module.scan_new_request = scan
    sink.intake.screen = None
    sink.guard.policy = OverloadPolicy()
    rows.append(("new REGISTER parsed, then refused", best(repeat, count, offer, forget)))
    methods = sink.guard.start_methods
    rows.append(
        ("of which `scan_new_request`", best(repeat, count, lambda: [scan(d, methods) for d in datagrams]))
    )
    starts = sink.guard.starts
    rows.append(
        (
            "of which `peek_new_request`",
            best(repeat, count, lambda: [peek_new_request(d, starts) for d in datagrams]),
        )
    )
    rows.append(
        ("of which `parse_message`", best(repeat, count, lambda: [parse_message(d) for d in datagrams]))
    )
    assert sink.guard.counters["rejected"] > 0 and sink.guard.counters["admitted"] == 0
    print("| path (per request) | us |\n|---|---:|")
    for label, micros in rows:
        print(f"| {label} | {micros:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
