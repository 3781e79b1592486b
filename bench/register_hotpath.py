"""CPU per authenticated registration on the PBX's REGISTER path, in-process: no sockets, no SIPp.

The companion of bench/register_bench.py (which measures the rate held over real UDP with SIPp) for quick,
repeatable figures on a busy machine: it builds the registrar as `pbx.service.registrar.build_registrar`
does (same
authenticator, guard, policy and tenant lookup) over a `SipStack` on the real reactor's clock (never run),
with an in-memory location store (its Deferreds fire at once; the SQLite thread was under 2 % of the PBX's
time in the SIPp profile), and feeds each registration as SIPp makes it: REGISTER without credentials ->
401, then REGISTER with MD5 credentials for that 401's nonce -> 200, distinct Call-ID per registration,
users cycling over --users. Only the two `datagramReceived` calls are timed (CPU time): the client's digest
and message formatting are not the server's cost.

    python bench/register_hotpath.py                  # 20,000 registrations, 5 repeats
    python bench/register_hotpath.py --profile 30     # also the top 30 functions (cProfile, one repeat)

Prints us per registration (best / median / worst repeat) and function calls per registration.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import os
import pstats
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

from pbx.config import parse_config
from pbx.service.registrar import build_registrar
from pbx.sip.parser import ParserLimits
from pbx.sip.protocols import SipDatagramProtocol
from pbx.sip.stack import SipStack
from pbx.sip.transport import TransportManager
from pbx.store.memory import MemoryLocationStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hotpath_bench import FakePort  # a bench script beside this one

PEER = ("127.0.0.1", 40000)
FIRST_USER = 3000
_NONCE = re.compile(rb'nonce="([^"]+)"')


def build(users: int) -> tuple[SipDatagramProtocol, FakePort, Any]:
    extensions = {str(FIRST_USER + i): {"password": f"pw{FIRST_USER + i}"} for i in range(users)}
    data = {
        "pbx": {"data_dir": tempfile.mkdtemp()},
        "sip": {"listen": [{"transport": "udp", "host": "127.0.0.1", "port": 5060}]},
        "tenants": {"default": {"domain": "localhost", "aliases": ["127.0.0.1"], "extensions": extensions}},
    }
    config = parse_config(data, Path.cwd())
    stack = SipStack(reactor)  # type: ignore[arg-type]
    manager = TransportManager(reactor, stack, limits=ParserLimits(), idle_timeout=0)  # type: ignore[arg-type]
    stack.attach_transport(manager)
    service = build_registrar(config, stack, reactor, store=MemoryLocationStore())
    protocol = SipDatagramProtocol(stack, clock=reactor, monitor=manager.monitor)  # type: ignore[arg-type]
    port = FakePort()
    protocol.makeConnection(port)  # type: ignore[arg-type]
    return protocol, port, service


def register(i: int, user: int, auth: str | None) -> bytes:
    cseq = 2 if auth else 1
    return (
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-1234-{i}-{cseq};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag=1234SIPpTag00{i}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: {i}-1234@127.0.0.1\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@127.0.0.1:40000;transport=UDP>\r\n"
        "Expires: 3600\r\n" + (f"{auth}\r\n" if auth else "") + "User-Agent: SIPp register-bench\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()


def authorization(user: int, nonce: str, realm: str = "localhost") -> str:
    """What SIPp sends: MD5, qop=auth, nc=00000001."""
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    ha1 = md5(f"{user}:{realm}:pw{user}")
    ha2 = md5("REGISTER:sip:127.0.0.1:5060")
    cnonce = "6b8b4567"
    response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
    return (
        f'Authorization: Digest username="{user}",realm="{realm}",cnonce="{cnonce}",nc=00000001,qop=auth,'
        f'uri="sip:127.0.0.1:5060",nonce="{nonce}",response="{response}",algorithm=MD5'
    )


def timed(receive: Any, data: bytes, profiler: cProfile.Profile | None) -> float:
    """CPU seconds the server spent on one datagram (and profile it, with a profiler)."""
    t0 = time.process_time()
    if profiler:
        profiler.enable()
    receive(data, PEER)
    if profiler:
        profiler.disable()
    return time.process_time() - t0


SPLIT = [0.0, 0.0]
"""us per registration of the last `run_once`: the first REGISTER (challenged), the second (authenticated)."""


def run_once(n: int, users: int, profiler: cProfile.Profile | None = None) -> float:
    protocol, port, _registrar = build(users)
    realm = "localhost"
    receive = protocol.datagramReceived
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)  # as pbx.service.process.tune_garbage_collector
    busy = 0.0
    challenges = 0.0
    for i in range(n):
        user = FIRST_USER + i % users
        first = register(i, user, None)
        took = timed(receive, first, profiler)
        busy += took
        challenges += took
        found = _NONCE.search(port.last)
        if port.last[8:11] != b"401" or found is None:
            raise RuntimeError(f"expected a 401, got {port.last[:300]!r}")
        second = register(i, user, authorization(user, found.group(1).decode(), realm))
        busy += timed(receive, second, profiler)
        if port.last[8:11] != b"200":
            raise RuntimeError(f"expected a 200, got {port.last[:600]!r}")
    gc.unfreeze()
    for call in reactor.getDelayedCalls():
        if call.active():
            call.cancel()
    SPLIT[:] = [challenges / n * 1e6, (busy - challenges) / n * 1e6]
    return busy / n * 1e6


def main(argv: list[str] | None = None) -> int:
    # Log as twistd does (a text file observer), into /dev/null: log lines cost what they cost in the PBX.
    sink = open(os.devnull, "w")  # noqa: SIM115 (open for the whole run)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sink)], redirectStandardIO=False)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="registrations per repeat (20000)")
    parser.add_argument("-r", "--repeats", type=int, default=5, help="repeats (5)")
    parser.add_argument("--users", type=int, default=1000, help="distinct users (1000)")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions (cProfile)")
    args = parser.parse_args(argv)
    runs, splits = [], []
    for _ in range(args.repeats):
        runs.append(run_once(args.n, args.users))
        splits.append(tuple(SPLIT))
    print(
        f"us per authenticated registration (2 requests, 2 responses), n={args.n}: "
        f"best {min(runs):.1f}  median {statistics.median(runs):.1f}  worst {max(runs):.1f}"
    )
    challenge, authenticated = splits[runs.index(min(runs))]
    print(
        f"  of which (best repeat): the challenged REGISTER {challenge:.1f},"
        f" the authenticated one {authenticated:.1f}"
    )
    print(f"  -> at most {1e6 / min(runs):,.0f} registrations/s of one core's CPU for the SIP work alone")
    if args.profile:
        profiler = cProfile.Profile()
        run_once(min(args.n, 20_000), args.users, profiler)
        stats = pstats.Stats(profiler)
        calls = stats.total_calls  # type: ignore[attr-defined]
        print(f"function calls per registration: {calls / min(args.n, 20_000):.0f}")
        stats.sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
