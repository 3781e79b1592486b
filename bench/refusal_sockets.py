"""The CPU cost of a refused REGISTER all in: socket read, screen, the 503's `sendto` (issue 14, item 6).

A Twisted reactor reads a UDP socket on loopback into `SipDatagramProtocol` and a `SipStack` whose overload
guard refuses every new exchange (a high lag); a child process sends --count distinct SIPp-like REGISTERs at
--rate per second, from 127.0.0.1:<a free port> (the 503s go back there and are left unread). Printed: this
process's CPU time (user + system) per datagram while they came in, for the refusal (`refuse`: the screen
asked for every datagram; `shedding`: as the PBX while it sheds, new requests refused at once by the intake or
deferred to the end of the reactor turn; `following`: the same with `follow_completions`, the PBX's default,
whose token bucket `quick` does not read) and for the floor (the datagram read and thrown away before the
screen). --code DIR measures another checkout of the project (e.g.
`git archive <commit> | tar -x -C DIR`) with the same sender.

    python bench/refusal_sockets.py                        # about 10 s, both modes
    python bench/refusal_sockets.py --code /tmp/base       # the same for another checkout

Everything binds to loopback; the sender is bounded by --count and killed on exit.
"""

from __future__ import annotations

import argparse
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

SENDER = """
import socket, sys, time
count, rate, port, source = (int(a) for a in sys.argv[1:5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", source))
text = "\\r\\n".join((
    "REGISTER sip:127.0.0.1 SIP/2.0",
    "Via: SIP/2.0/UDP 127.0.0.1:{source};branch=z9hG4bK-9-{n}-0;rport",
    "Max-Forwards: 70",
    "From: <sip:1000@127.0.0.1>;tag=9SIPpTag00{n}",
    "To: <sip:1000@127.0.0.1>",
    "Call-ID: {n}-9@127.0.0.1",
    "CSeq: 1 REGISTER",
    "Contact: <sip:1000@127.0.0.1:{source};transport=UDP>",
    "Expires: 600",
    "User-Agent: SIPp overload",
    "Content-Length: 0",
    "",
    "",
))
data = [text.format(n=n, source=source).encode() for n in range(count)]
start = time.time()
for n, d in enumerate(data):
    s.sendto(d, ("127.0.0.1", port))
    if n % 50 == 0:
        ahead = start + n / rate - time.time()
        if ahead > 0:
            time.sleep(ahead)
"""


def measure(code: Path, mode: str, count: int, rate: int) -> str:
    """Run one measure in a fresh interpreter (importing the project from `code`), return its table row."""
    command = [sys.executable, __file__, "--child", mode, "--code", str(code), "--count", str(count)]
    command += ["--rate", str(rate)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=count / rate + 60)
    return done.stdout.strip()


def child(code: Path, mode: str, count: int, rate: int) -> None:
    """The measuring process: the reactor, the stack, the sender."""
    sys.path.insert(0, str(code))
    from twisted.internet import reactor
    from twisted.internet.task import Clock

    from pbx.sip.intake import DatagramIntake
    from pbx.sip.overload import LagMonitor, OverloadGuard, OverloadPolicy
    from pbx.sip.protocols import SipDatagramProtocol
    from pbx.sip.stack import SipStack

    clock = Clock()  # the stack's time stands still: the lag stays high, every new exchange is refused
    stack = SipStack(clock)
    monitor = LagMonitor(clock, high=0.2, critical=1.0)
    monitor.lag = 0.3
    guard = OverloadGuard(clock, monitor, OverloadPolicy(follow_completions=mode == "following"))
    guard.admit_share = 0.0
    if mode == "following":  # as the PBX's default: admitted as fast as exchanges complete (here never)
        guard.admit_rate = 1e-9
    stack.set_overload(guard)
    shedding = mode in ("shedding", "following")
    intake = DatagramIntake(None, reactor if shedding else None)
    intake.screen = stack.shed_screen.screen if mode != "floor" else (lambda data, flow: True)
    if shedding:  # as the PBX while it sheds: new requests refused at once or deferred
        intake.prioritize = True
        if hasattr(stack.shed_screen, "quick"):  # a checkout before it defers them all
            intake.refuse = stack.shed_screen.quick
    protocol = SipDatagramProtocol(stack, clock=clock, intake=intake)
    port = reactor.listenUDP(0, protocol, interface="127.0.0.1")  # type: ignore[attr-defined]
    port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    answers = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where the 503s go (rport: the source)
    answers.bind(("127.0.0.1", 0))
    source = answers.getsockname()[1]
    answers.close()  # the sender binds it; the 503s queue in its socket unread
    received = [0]
    deliver = protocol.datagramReceived

    def counting(data: bytes, addr: tuple[str, int]) -> None:
        received[0] += 1
        deliver(data, addr)

    protocol.datagramReceived = counting  # type: ignore[method-assign]
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, str(count), str(rate), str(port.getHost().port), str(source)]
    )
    deadline = time.monotonic() + count / rate + 20

    def check() -> None:
        if (sender.poll() is not None and received[0] >= count * 0.99) or time.monotonic() > deadline:
            reactor.stop()  # type: ignore[attr-defined]
        else:
            reactor.callLater(0.2, check)  # type: ignore[attr-defined]

    before = resource.getrusage(resource.RUSAGE_SELF)
    reactor.callLater(0.2, check)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    after = resource.getrusage(resource.RUSAGE_SELF)
    if sender.poll() is None:
        sender.kill()
    got = max(received[0], 1)
    user = (after.ru_utime - before.ru_utime) / got * 1e6
    system = (after.ru_stime - before.ru_stime) / got * 1e6
    print(
        f"| {code.name or code} | {mode} | {received[0]} of {count} | {guard.counters['rejected']} "
        f"| {user + system:.1f} | {user:.1f} | {system:.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=15000, help="datagrams sent (default 15000)")
    parser.add_argument("--rate", type=int, default=5000, help="datagrams per second (default 5000)")
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parent.parent, help="checkout")
    parser.add_argument(
        "--child", choices=("refuse", "shedding", "following", "floor"), help=argparse.SUPPRESS
    )
    parser.add_argument("--modes", default="refuse,shedding,floor", help="modes measured, in order")
    args = parser.parse_args(argv)
    if args.child:
        child(args.code.resolve(), args.child, args.count, args.rate)
        return 0
    print("| checkout | mode | read | refused | us/datagram | user | system |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for mode in args.modes.split(","):
        print(measure(args.code.resolve(), mode, args.count, args.rate), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
