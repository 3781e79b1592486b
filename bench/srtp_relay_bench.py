"""SRTP <-> RTP relay throughput beside the plain relay's, in the same run (RFC 3711, `pbx.media.srtp`).

The harness is `bench/relay_bench.py` (read its docstring: server pinned to core 0, sender and receiver to
core 1, rising call counts, loss < 0.1 %, "disturbed" steps run again). Two servers here:

- `relay`: the PBX's `UdpMediaRelay`, plain RTP both ways (relay_bench's "relay");
- `srtp`: the same relay, each call an SRTP phone (side a) and a plain phone (side b), as in an SRTP
  extension calling a plain one: what side a's phones send is SRTP (AES_CM_128_HMAC_SHA1_80, encrypted by
  the sender, per call its own SSRC and sequence numbers) and the relay decrypts it (`SrtpLeg.unprotect` as
  leg a's transform); what side b's phones send is encrypted for side a (`SrtpLeg.protect` as leg b's
  transform). One libsrtp operation per relayed packet, as in a real SRTP <-> RTP call.

Printed: relay_bench's table for both, then per server the most calls held, and SRTP / plain as the ratio of
calls held and of CPU per packet (target: SRTP >= 60 % of plain).

    python bench/srtp_relay_bench.py                                # 100..500 calls, 20 s steps
    python bench/srtp_relay_bench.py --calls 200,300,400 --seconds 10 --repeat 2
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relay_bench as rb
from common import HOST, REPO, markdown_table, source_version

KEY_A = bytes(range(30))  # the SRTP phones' master key and salt (a bench: one for every call)
KEY_PBX = bytes(range(30, 60))  # the PBX's key towards them
TARGET = 0.60
SENDER_ENV = "PBX_SRTP_BENCH_SENDER"  # set for the srtp steps: the sender encrypts side a's packets


def serve_srtp(calls: int, phones_a: list[int], phones_b: list[int]) -> None:
    """relay_bench's `serve relay`, with each call's side a speaking SRTP."""
    from twisted.internet import reactor

    sys.path.insert(0, str(REPO))
    import resource

    from pbx.media import PortPool, UdpMediaRelay
    from pbx.media.srtp import SrtpLeg, srtp_transform

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8 * calls + 1024)), hard))
    relay = UdpMediaRelay(reactor, PortPool(*rb.RELAY_PORTS), bind_host=HOST, max_packet_size=rb.MAX_PACKET)
    ports, legs, sessions = [], [], []
    for i in range(calls):
        session = relay.create_session(f"bench-{i}")
        a, b = session.leg("a"), session.leg("b")
        a.set_remote(HOST, phones_a[i % len(phones_a)])
        b.set_remote(HOST, phones_b[i % len(phones_b)])
        srtp = SrtpLeg("AES_CM_128_HMAC_SHA1_80", KEY_A, KEY_PBX)
        a.set_transform(srtp_transform(srtp, None))  # SRTP from phone a -> RTP for phone b
        b.set_transform(srtp_transform(None, srtp))  # RTP from phone b -> SRTP for phone a
        legs.append(srtp)
        sessions.append(session)
        ports.append((a.local_port, b.local_port))

    def report() -> None:
        totals: dict[str, int] = {}
        for session in sessions:
            stats = session.stats()
            for leg in (stats.a, stats.b):
                for key in ("packets", "dropped", "invalid", "send_errors"):
                    totals[key] = totals.get(key, 0) + getattr(leg, key)
        totals["srtp_dropped"] = sum(s.stats.rtp_dropped for s in legs)
        print("STATS " + json.dumps(totals), flush=True)

    reactor.addSystemEventTrigger("before", "shutdown", report)
    print("READY " + json.dumps(ports), flush=True)
    reactor.run()


def send_srtp(
    fds_a: list[int], fds_b: list[int], ports: list[tuple[int, int]], start: float, seconds: float
) -> None:
    """relay_bench's sender, with side a's packets SRTP: per call its SSRC and rising sequence numbers,
    encrypted with `KEY_A` just before sending."""
    import pylibsrtp

    policy = pylibsrtp.Policy(key=KEY_A, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    session = pylibsrtp.Session(policy=policy)
    protect = session.protect
    socks_a = [socket.socket(fileno=fd) for fd in fds_a]
    socks_b = [socket.socket(fileno=fd) for fd in fds_b]
    slots: list[list[tuple[int, Any, tuple[str, int], Any, tuple[str, int]]]] = [[] for _ in range(rb.SLOTS)]
    for i, (port_a, port_b) in enumerate(ports):
        sock_a, sock_b = socks_a[i % len(socks_a)], socks_b[i % len(socks_b)]
        slots[i % rb.SLOTS].append((i, sock_a.sendto, (HOST, port_a), sock_b.sendto, (HOST, port_b)))
    slot_length = rb.PERIOD / rb.SLOTS
    total_slots = round(seconds / slot_length)
    payload = b"\xff" * 160
    header = struct.Struct("!BBHII")
    sent = errors = 0
    max_lag = 0.0
    for k in range(total_slots):
        due = start + k * slot_length
        lag = time.time() - due
        if lag < 0:
            time.sleep(-lag)
        else:
            max_lag = max(max_lag, lag)
        seq = k // rb.SLOTS + 1
        for i, send_a, to_a, send_b, to_b in slots[k % rb.SLOTS]:
            try:
                send_a(protect(header.pack(0x80, 0, seq & 0xFFFF, seq * 160, 0x10000 + i) + payload), to_a)
                send_b(rb.PACKET, to_b)
                sent += 2
            except OSError:
                errors += 1
    print(json.dumps({"sent": sent, "errors": errors, "max_lag_ms": round(max_lag * 1000, 1)}), flush=True)


def receive_srtp(fds_a: list[int], fds_b: list[int], until: float) -> None:
    """relay_bench's receiver, counting side a's SRTP packets (172 + the 10-octet tag) as its own."""
    import select

    socks = {fd: socket.socket(fileno=fd) for fd in fds_a + fds_b}
    side_a = set(fds_a)
    poller = select.epoll()
    for fd in socks:
        poller.register(fd, select.EPOLLIN)
    buffer = bytearray(rb.MAX_PACKET)
    sizes = {a: len(rb.PACKET) + (10 if a else 0) for a in (True, False)}
    received = {True: 0, False: 0}
    stray = 0
    for _ in range(10**7):  # bounded: the deadline ends it long before
        left = until - time.time()
        if left <= 0:
            break
        for fd, _ in poller.poll(min(left, 0.1)):
            recv_into, is_a = socks[fd].recv_into, fd in side_a
            size = sizes[is_a]
            while True:
                try:
                    if recv_into(buffer, 0, socket.MSG_DONTWAIT) == size:
                        received[is_a] += 1
                    else:
                        stray += 1
                except BlockingIOError:
                    break
    print(json.dumps({"a": received[True], "b": received[False], "stray": stray}), flush=True)


def summary(steps: list[Any], args: Any) -> str:
    lines, best = [], {}
    for name in args.server_list:
        mine = [s for s in steps if s.server == name]
        held = [
            c for c in args.call_list
            if (runs := [s for s in mine if s.calls == c and s.counts(args.max_loss)])
            and all(s.held(args.max_loss) for s in runs)
        ]  # fmt: skip
        top = max(held, default=0)
        best[name] = top
        top_steps = [s for s in mine if s.calls == top]
        pps = max((s.relayed_pps for s in top_steps), default=0.0)
        lines.append(
            f"{name}: most calls held {top} ({pps:.0f} packets/s relayed at < {args.max_loss:.1%} loss)"
        )
    if best.get("relay") and "srtp" in best:
        ratio = best["srtp"] / best["relay"]
        verdict = "meets" if ratio >= TARGET else "BELOW"
        lines.append(f"srtp / plain = {ratio:.0%} of the calls held ({verdict} the {TARGET:.0%} target)")
    pairs = []
    for calls in args.call_list:
        r = [s for s in steps if s.server == "relay" and s.calls == calls and s.counts(args.max_loss)]
        e = [s for s in steps if s.server == "srtp" and s.calls == calls and s.counts(args.max_loss)]
        if r and e:
            r_us = sum(s.us_per_packet for s in r) / len(r)
            e_us = sum(s.us_per_packet for s in e) / len(e)
            pairs.append(f"{calls}: plain {r_us:.1f} us, srtp {e_us:.1f} us (plain/srtp {r_us / e_us:.0%})")
    if pairs:
        lines.append("CPU per relayed packet: " + "; ".join(pairs))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["serve", "srtp"]:
        serve_srtp(int(argv[2]), json.loads(argv[3]), json.loads(argv[4]))
        return 0
    if argv[:1] == ["send"] and os.environ.get(SENDER_ENV):
        ports = [tuple(p) for p in json.loads(Path(argv[3]).read_text())]
        send_srtp(json.loads(argv[1]), json.loads(argv[2]), ports, float(argv[4]), float(argv[5]))  # type: ignore[arg-type]
        return 0
    if argv[:1] == ["receive"] and os.environ.get(SENDER_ENV):
        receive_srtp(json.loads(argv[1]), json.loads(argv[2]), float(argv[3]))
        return 0
    if argv[:1] in (["serve"], ["send"], ["receive"]):
        return rb.main(argv)
    servers = "relay,srtp"
    if "--servers" in argv:
        servers = argv[argv.index("--servers") + 1]
        del argv[argv.index("--servers") : argv.index("--servers") + 2]
    args = rb.parse_args(argv)
    args.server_list = [s.strip() for s in servers.split(",") if s.strip()]
    rb.__file__ = __file__  # relay_bench's run_step starts `python <this file> serve|send|receive ...`
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if not args.no_pin:
        os.sched_setaffinity(0, {args.loadgen_cpu})
    print(f"# SRTP relay benchmark {time.strftime('%Y-%m-%d %H:%M')}: calls {args.call_list}, "
          f"{args.seconds:g} s steps, x{args.repeat}")  # fmt: skip
    print(f"# pbx at {source_version()}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    print("  " + " | ".join(rb.STEP_HEADERS), flush=True)
    steps: list[Any] = []
    status = 0
    try:
        for calls in args.call_list:
            for _ in range(args.repeat):
                for name in args.server_list:
                    for _attempt in range(1 + args.retries):
                        busy = rb.wait_for_quiet(args.quiet_wait)
                        if busy > 20.0:
                            print(f"  (the box is busy: a core at {busy:.0f} % before this step)", flush=True)
                        if name == "srtp":
                            os.environ[SENDER_ENV] = "1"
                        else:
                            os.environ.pop(SENDER_ENV, None)
                        step = rb.run_step(name, calls, args)
                        steps.append(step)
                        extra = f"  {step.server_stats}" if step.server_stats else ""
                        row = " | ".join(str(c) for c in rb.step_row(step, args.max_loss))
                        print(f"  {row}{extra}", flush=True)
                        if step.counts(args.max_loss):
                            break
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    print()
    print(markdown_table(rb.STEP_HEADERS, [rb.step_row(s, args.max_loss) for s in steps]))
    print()
    print(summary(steps, args))
    return status


if __name__ == "__main__":
    sys.exit(main())
