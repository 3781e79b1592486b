"""CPU per call through the real SipStack and B2BUA, in-process: no sockets, no SIPp, no reactor.

The companion of bench/calls_bench.py (rates held over real UDP with SIPp) for quick, repeatable figures on a
busy machine: CPU time, unlike a rate, stays comparable while other work shares the cores. The PBX is
`tests.b2bua.test_cycles.Pbx`: a `SipStack` with its transaction layer and the B2BUA over fake flows, the
memory location store, a memory relay, a dialplan `dial 1002` (the phones are parsed wire messages: each
call is INVITE [407, ACK, INVITE with SHA-256 credentials], 100, 180, 200, ACK, BYE, 200, with every
transaction run to its end on a Clock). What is timed includes the fake phones' own message building and
parsing (about a third), so compare figures of this script with each other, not with calls_bench.

    python bench/calls_hotpath.py                       # 400 calls x 5 repeats, with and without auth
    python bench/calls_hotpath.py --tree /path/to/other/checkout   # the same on another build
    python bench/calls_hotpath.py --profile 30 --mode noauth        # the top 30 functions (cProfile)
    python bench/calls_hotpath.py --hold 500 --mode noauth          # memory per concurrent call

Prints us of CPU per call (best / median of the repeats) and Python function calls per call, with the
garbage collector as the PBX runs it (`gc.freeze()` after set-up, thresholds (50000, 50, 100)).

With ``--hold N`` it measures memory instead: N calls are answered and ACKed and left up (64 s on the clock
then ends their INVITE transactions, as in a real PBX), and it prints the bytes tracemalloc counts per held
call (what is still allocated, minus what was before), with the top allocation sites (``--top``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=("auth", "noauth", "both"), default="both")
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout whose pbx/ is measured")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions")
    parser.add_argument("--hold", type=int, default=0, metavar="N", help="measure N answered calls held up")
    parser.add_argument("--top", type=int, default=15, help="with --hold: the top allocation sites shown")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="without the layers a default PBX adds (metrics, call traces, busy lamps, transfer=##): "
        "what this script measured before them, and what older trees can run",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree))
    sys.path.insert(1, str(REPO))  # this script's tests/ helpers when the tree is older
    from twisted.logger import globalLogBeginner

    import pbx
    from tests.b2bua.test_cycles import TENANT, Pbx

    if not Path(pbx.__file__).resolve().is_relative_to(args.tree.resolve()):
        raise SystemExit(f"pbx was imported from {pbx.__file__}, not from {args.tree}")
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    modes = ("auth", "noauth") if args.mode == "both" else (args.mode,)
    print(f"{args.tree}: {args.calls} calls x {args.repeats} repeats")
    for mode in modes:
        plans = Path(tempfile.mkdtemp())
        (plans / TENANT).mkdir(parents=True)
        transfer = "" if args.plain else " transfer=##"  # the shipped dialplan's dial watches for keys
        (plans / TENANT / "main.j2").write_text(f"dial 1002 timeout=20{transfer}\nhangup\n")
        authenticate = mode == "auth"
        server = Pbx(plans, trusted_caller=not authenticate)
        if not args.plain:
            add_layers(server, TENANT, received=bool(args.hold))
        if args.hold:
            hold(server, args.hold, authenticate, args.top)
            continue
        for _ in range(50):  # warm up: memos, caches, the template
            server.call(authenticate=authenticate)
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        took = []
        for _ in range(args.repeats):
            refresh = getattr(server, "register_callee", None)  # absent from older trees' harness
            if refresh is not None:
                refresh()  # each call moves the clock ~70 s: keep 1002's binding alive
            started = time.process_time()
            for _ in range(args.calls):
                server.call(authenticate=authenticate)
            took.append((time.process_time() - started) / args.calls * 1e6)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.calls):
            server.call(authenticate=authenticate)
        profile.disable()
        stats = pstats.Stats(profile)
        calls = stats.total_calls / args.calls  # type: ignore[attr-defined]
        print(
            f"{mode:7} {min(took):7.0f} us/call best, {statistics.median(took):7.0f} median, "
            f"{calls:6.0f} function calls/call"
        )
        if args.profile:
            stats.sort_stats("tottime").print_stats(args.profile)
        gc.unfreeze()


def add_layers(server: Any, tenant: str, *, received: bool = False) -> None:
    """What `pbx.service` adds to every call with the default config: the metrics' and the call tracer's
    observers and SIP trace hooks (`build_observability`), the busy lamps (`build_features`, no watcher).
    The hooks see what the PBX sends (the harness hands the stack parsed messages: received ones are not
    traced here, so the real PBX pays about twice the hooks' cost shown; with `received` (``--hold``) they
    are, as their bytes re-serialised, so that a held call's trace is as long as the real PBX's). Not here:
    `[edge]` admission and `[overload]` screening, which act on datagrams before parsing."""
    from pbx.admin.metrics import MetricsRegistry
    from pbx.apps.busy_lamps import BusyLamps
    from pbx.b2bua.trace import CallTracer
    from pbx.config.observe import TraceConfig

    class _Notifier:
        def notify(self, *_: object) -> None:
            pass

    b2bua = server.b2bua
    metrics = MetricsRegistry([tenant])
    metrics.attach(b2bua=b2bua, stack=server.stack)
    b2bua.observers.append(metrics.calls)
    trace = TraceConfig()
    tracer = CallTracer(
        server.clock,
        keep=trace.calls,
        keep_failed=trace.failed_calls,
        max_events=trace.max_events,
        max_bytes=trace.max_bytes,
        body_bytes=trace.body_bytes,
    )
    b2bua.observers.append(tracer)
    metrics.attach(tracer=tracer)
    b2bua.observers.append(BusyLamps(_Notifier(), lambda t: None))
    hooks = (metrics.sip_counter, tracer.sip_message)

    def traced(send: Any, flow_of: Any) -> Any:
        def send_traced(data: bytes, *rest: Any) -> Any:
            flow = flow_of()
            for hook in hooks:
                hook("send", "UDP", flow, data)
            return send(data, *rest)

        return send_traced

    caller = server.caller_flow
    caller.send = traced(caller.send, lambda: caller)
    server.transports.send = traced(server.transports.send, lambda: server.callee_flow)
    if received:
        stack = server.stack
        message_received = stack.message_received

        def received_traced(message: Any, flow: Any) -> None:
            data = message.to_bytes()
            for hook in hooks:
                hook("recv", "UDP", flow, data)
            message_received(message, flow)

        stack.message_received = received_traced


def hold(server: Any, count: int, authenticate: bool, top: int) -> None:
    """Answer ``count`` calls and keep them up; print tracemalloc's bytes per call and its top sites."""
    from pbx.sip.digest import DigestChallenge, answer_challenge
    from pbx.sip.message import Request
    from tests.b2bua.fakes import CALLER_CONTACT, DOMAIN, PASSWORDS, PBX_CONTACT, callee_sdp, wire_request

    def answered_call() -> None:
        server.calls += 1
        n = server.calls
        uri = f"sip:1002@{DOMAIN}"
        from_ = ("From", f"<sip:1001@{DOMAIN}>;tag=caller{n}")
        call_id = ("Call-ID", f"hold-{n}@192.168.1.10")

        def invite(cseq: int, authorization: str | None = None) -> Request:
            headers = [from_, ("To", f"<{uri}>"), call_id, ("CSeq", f"{cseq} INVITE")]
            headers.append(("Contact", CALLER_CONTACT))
            if authorization is not None:
                headers.append(("Proxy-Authorization", authorization))
            return wire_request("INVITE", uri, headers, sdp_body())

        cseq = 1
        first = invite(cseq)
        server.from_caller(first)
        if authenticate:
            (challenge,) = server.to_caller()
            ack = wire_request(
                "ACK", uri, [from_, ("To", f"<{uri}>;tag={challenge.to.tag}"), call_id, ("CSeq", "1 ACK")]
            )
            ack.headers.replace_first("Via", str(first.headers.get("Via")))
            server.from_caller(ack)
            (sha256,) = [
                c
                for c in map(DigestChallenge.parse, challenge.headers.get_all("Proxy-Authenticate"))
                if c.algorithm == "SHA-256"
            ]
            credentials = answer_challenge(
                sha256, method="INVITE", uri=uri, username="1001", password=PASSWORDS["1001"], nc=1
            )
            cseq = 2
            server.from_caller(invite(cseq, str(credentials)))
        outbound = server.to_callee("INVITE")
        server.from_callee(outbound, 180)
        server.from_callee(outbound, 200, callee_sdp())
        final = server.to_caller()[-1]
        assert final.status == 200, final.status
        server.to_callee("ACK")
        dialog = [from_, ("To", f"<{uri}>;tag={final.to.tag}"), call_id]
        server.from_caller(wire_request("ACK", PBX_CONTACT[1:-1], [*dialog, ("CSeq", f"{cseq} ACK")]))

    from tests.b2bua.fakes import sdp_body

    for _ in range(20):  # warm up: memos, caches, the template (these calls stay up too)
        answered_call()
    server.clock.pump([1.0] * 70)
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    for i in range(count):
        answered_call()
        if i % 50 == 49:
            server.clock.advance(1)
    server.clock.pump([1.0] * 70)  # the INVITE transactions end (Timers H, I, ...): the calls stay up
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = len(server.b2bua.calls)
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"held {held} calls: {total / count:7.0f} bytes per call (tracemalloc)")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / count:7.0f} B/call {stat.count_diff / count:5.1f} blocks  {frame}")


if __name__ == "__main__":
    main()
