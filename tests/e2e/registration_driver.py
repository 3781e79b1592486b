"""A `pbx.sip.registration.RegistrationClient` on a real reactor, SipStack and TransportManager, registering
with a SIP registrar (SIPp in tests/e2e/test_registration_sipp.py). Run as
`python -m tests.e2e.registration_driver --port P --server-port S [--server-port S2] [--transport tcp]
[--refreshes N] [--stop-on-failure]`; each --server-port is a target on 127.0.0.1, tried in that order.

Prints one JSON line per state change (`{"state": ..., "code": ..., "expires": ..., "target": port, "at":
seconds since start}`). After `--refreshes` successful refreshes (the first 200 not counted), or at the first
failure with `--stop-on-failure`, it calls `stop()` and, when
that has finished, prints the transport counters and `{"step": "stopped", "delayed_calls": N}` with the
number of client timers left, then exits 0. Exits 2 when the run takes longer than `--timeout` seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted.internet import reactor as _reactor

from pbx.sip.client_auth import Credentials
from pbx.sip.parser import ParserLimits
from pbx.sip.registration import FAILED, REGISTERED, STOPPED, RegistrationClient, RegistrationStatus
from pbx.sip.resolver import Target
from pbx.sip.stack import SipStack
from pbx.sip.transport import TransportManager

reactor: Any = _reactor


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-port", type=int, action="append", required=True)
    parser.add_argument("--transport", default="udp", choices=("udp", "tcp"))
    parser.add_argument("--user", default="1001")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--expires", type=int, default=60)
    parser.add_argument("--refreshes", type=int, default=1)
    parser.add_argument("--stop-on-failure", action="store_true")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    stack = SipStack(reactor)
    transports = TransportManager(reactor, stack, limits=ParserLimits(), idle_timeout=0)
    stack.attach_transport(transports)
    transports.listen_udp("127.0.0.1", args.port)
    if args.transport == "tcp":
        transports.listen_tcp("127.0.0.1", args.port)
    started = reactor.seconds()
    outcome = {"code": 0}
    registered = {"count": 0}

    def credentials(realm: str) -> Credentials | None:
        return Credentials(args.user, args.password) if realm == "sipp.test" else None

    def on_state(status: RegistrationStatus) -> None:
        line = {
            "state": status.state,
            "code": status.code,
            "reason": status.reason,
            "expires": status.expires,
            "target": status.target[2] if status.target else None,
            "at": round(reactor.seconds() - started, 3),
        }
        print(json.dumps(line), flush=True)
        if status.state == REGISTERED:
            registered["count"] += 1
            if registered["count"] > args.refreshes:
                reactor.callLater(0, stop)
        elif status.state == FAILED and args.stop_on_failure:
            reactor.callLater(0, stop)

    client = RegistrationClient(
        stack,
        reactor,
        aor=f"sip:{args.user}@sipp.test",
        registrar="sip:sipp.test",
        credentials=credentials,
        expires=args.expires,
        resolver=[Target(args.transport, "127.0.0.1", port) for port in args.server_port],
        on_state=on_state,
        retry_base=60,
    )

    def stop() -> None:
        if client.status.state == STOPPED:
            return
        client.stop().addBoth(stopped)

    def stopped(_result: object) -> None:
        if guard.active():
            guard.cancel()
        print(json.dumps({"step": "counters", **transports.counters.as_dict()}), flush=True)
        timers = [
            call
            for call in reactor.getDelayedCalls()
            if call.active() and getattr(call.func, "__self__", None) is client
        ]
        print(json.dumps({"step": "stopped", "delayed_calls": len(timers)}), flush=True)
        reactor.callLater(0, reactor.stop)

    def give_up() -> None:
        print(json.dumps({"step": "timeout"}), flush=True)
        outcome["code"] = 2
        reactor.stop()

    guard = reactor.callLater(args.timeout, give_up)
    reactor.callWhenRunning(client.start)
    reactor.run()
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
