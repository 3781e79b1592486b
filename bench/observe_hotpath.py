"""CPU per call of metrics and call traces, in-process (the companion of bench/calls_hotpath.py).

Two parts, each on `tests.b2bua.test_cycles.Pbx` (a real SipStack, transaction layer and B2BUA over fakes;
every call is INVITE [407, ACK, INVITE with credentials], 100, 180, 200, ACK, BYE, 200):

1. the call observers: µs of CPU per call with no observer, then with the metrics' `CallMetrics` and the
   `CallTracer` in `b2bua.observers` (the tracer summarises the caller's and the leg's INVITE, records the
   actions, renders and the end, keeps the last 100 calls);
2. the transport trace hook: the bytes of every message of one call (sent and received) are captured, then
   fed again and again to the hook the PBX installs (`SipMessageCounter` + `CallTracer.sip_message`, chained
   by `pbx.service.metrics.chain`) with the call being traced, then with no traced call; µs per call.

The sum of (1)'s difference and (2) is what metrics and tracing cost a call, against (1)'s baseline.

    python bench/observe_hotpath.py                 # 400 calls x 5 repeats, both parts
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def per_call(server: Any, calls: int, repeats: int, authenticate: bool) -> list[float]:
    took = []
    for _ in range(repeats):
        server.register_callee()
        started = time.process_time()
        for _ in range(calls):
            server.call(authenticate=authenticate)
        took.append((time.process_time() - started) / calls * 1e6)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--noauth", action="store_true", help="a trusted caller (no 407)")
    args = parser.parse_args()
    from twisted.logger import globalLogBeginner

    from pbx.admin.metrics import MetricsRegistry
    from pbx.b2bua.trace import CallTrace, CallTracer
    from pbx.service.metrics import chain
    from tests.b2bua.test_cycles import TENANT, Pbx

    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    authenticate = not args.noauth
    plans = Path(tempfile.mkdtemp())
    (plans / TENANT).mkdir(parents=True)
    (plans / TENANT / "main.j2").write_text("dial 1002 timeout=20\nhangup\n")
    server = Pbx(plans, trusted_caller=not authenticate)
    for _ in range(50):
        server.call(authenticate=authenticate)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)

    results: dict[str, list[float]] = {}
    metrics = MetricsRegistry([TENANT])
    tracer = CallTracer(server.clock, keep=100, keep_failed=100)
    for label, observers in (("none", []), ("observed", [metrics.calls, tracer]), ("none again", [])):
        server.b2bua.observers.replace(observers)
        for _ in range(20):
            server.call(authenticate=authenticate)
        results[label] = per_call(server, args.calls, args.repeats, authenticate)
    base = statistics.median(results["none"] + results["none again"])
    observed = statistics.median(results["observed"])
    print(f"{args.calls} calls x {args.repeats} repeats, {'auth' if authenticate else 'noauth'}")
    for label, took in results.items():
        print(f"  observers {label:11} {min(took):7.1f} us/call best, {statistics.median(took):7.1f} median")
    print(f"  observers cost: {observed - base:+.1f} us/call ({(observed - base) / base * 100:+.1f} %)")

    # 2. The trace hook on the bytes of one call's messages.
    captured: list[tuple[str, bytes]] = []
    server.b2bua.observers.replace([])
    sends = server.transports.send, server.caller_flow.send, server.from_caller, server.from_callee

    def out_callee(data: bytes, *rest: Any) -> Any:
        captured.append(("send", data))
        return sends[0](data, *rest)

    def out_caller(data: bytes) -> None:
        captured.append(("send", data))
        sends[1](data)

    def in_caller(request: Any) -> None:
        captured.append(("recv", request.to_bytes()))
        sends[2](request)

    server.transports.send, server.caller_flow.send, server.from_caller = out_callee, out_caller, in_caller
    server.call(authenticate=authenticate)
    server.transports.send, server.caller_flow.send, server.from_caller = sends[:3]
    counter = metrics.sip_counter
    hook = chain([counter, tracer.sip_message])
    assert hook is not None
    flow = server.caller_flow
    call_ids = {line.split(b":", 1)[1].strip() for _, data in captured for line in data.split(b"\r\n")
                if line.lower().startswith(b"call-id:")}  # fmt: skip
    for call_id in call_ids:  # the call and its leg traced (a big cap: the hook's cost, not the cap's)
        trace = CallTrace(call_id.decode(), 0.0, max_events=10**9, max_bytes=10**12)
        tracer._sip[call_id.decode()] = (trace, "caller")
    for label in ("traced", "untraced"):
        if label == "untraced":
            tracer._sip.clear()
            tracer._sip["someone-else"] = (CallTrace("x", 0.0), "caller")
        took = []
        for _ in range(args.repeats):
            started = time.process_time()
            for _ in range(args.calls):
                for direction, data in captured:
                    hook(direction, "UDP", flow, data)
            took.append((time.process_time() - started) / args.calls * 1e6)
            for trace, _ in tracer._sip.values():
                trace.events.clear()
        hook_cost = statistics.median(took)
        print(
            f"  trace hook, {label:8}: {hook_cost:6.1f} us/call for {len(captured)} messages "
            f"({hook_cost / len(captured):.2f} us/message); with the observers: "
            f"{(observed - base + hook_cost) / base * 100:+.1f} % of a call's CPU"
        )
    gc.unfreeze()


if __name__ == "__main__":
    main()
