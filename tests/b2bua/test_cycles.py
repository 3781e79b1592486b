"""Finished calls leave nothing in reference cycles: complete calls through the real `SipStack` and `B2BUA`
(transactions, their timers on a `Clock`, dialogs, the stateless 407) are freed by reference counting alone.

Under load every object left in a cycle waits for the cyclic collector, and a collector pass over many of
them is a pause long enough for phones to retransmit (bench/RESULTS-registrar-calls.md section 2). So each
test runs calls with the collector disabled and `gc.DEBUG_SAVEALL`, then counts what a collection finds:
every unreachable object, cycle members and whatever hangs off them. A small constant is tolerated (a first
use of a code path may build a cache); the count must not grow with the number of calls.
"""

from __future__ import annotations

import collections
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua import B2BUA, Directory, TrustedPeer
from pbx.dialplan import DialplanEngine
from pbx.registrar import BruteForceGuard, Domain, LocationService
from pbx.sip.auth import DigestAuthenticator, NonceCounter, NonceSource
from pbx.sip.digest import DigestChallenge, answer_challenge
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.stack import SipStack
from pbx.store import MemoryLocationStore

from .fakes import (
    CALLER_CONTACT,
    DOMAIN,
    EXTENSIONS,
    GROUPS,
    PASSWORDS,
    PBX_ADDRESS,
    PBX_CONTACT,
    REALM,
    TENANT,
    FakeFlow,
    FakeRelay,
    Harness,
    callee_sdp,
    ha1_table,
    sdp_body,
    wire_request,
)

CALLS = 40
TOLERATED = 10
"""Unreachable objects allowed after `CALLS` calls, whatever their number: none per call."""

LOG_HISTORY = 1000
"""More log events than Twisted keeps before logging begins (200, `LogBeginner`)."""

CALLEE_ADDRESS = ("127.0.0.1", 5062)  # where fakes.CONTACTS_1002[0] is registered from


class Transports:
    """The stack's transport manager: what the PBX sends to the callee (the caller gets it on its flow)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes, transport: str, host: str, port: int) -> Deferred[None]:
        self.sent.append(data)
        return succeed(None)

    def local_address(self, transport: str, host: str) -> tuple[str, int]:
        return (PBX_ADDRESS, 5060)


class Pbx:
    """A real stack, transaction layer and B2BUA over fakes; phones speak to it in parsed wire messages."""

    def __init__(self, dialplans: Path, *, trusted_caller: bool) -> None:
        self.clock = clock = Clock()
        self.stack = stack = SipStack(clock)
        self.transports = Transports()
        stack.attach_transport(self.transports)
        store = MemoryLocationStore()
        self.store = store
        location = LocationService(clock, store)
        table = ha1_table()
        authenticator = DigestAuthenticator(
            NonceSource(clock, b"s" * 32), NonceCounter(), lambda u, r, a: table.get((u, r, a))
        )
        guard = BruteForceGuard(clock)
        stack.set_source_filter(guard.is_blocked)
        directory = Directory(TENANT, DOMAIN, EXTENSIONS, GROUPS)
        domains = {DOMAIN: Domain(TENANT, REALM)}
        gateway = TrustedPeer("gateway", "1001")
        self.b2bua = b2bua = B2BUA(
            clock,
            stack,
            location,
            authenticator,
            lambda host: domains.get(host.lower()),
            lambda tenant: directory if tenant == TENANT else None,
            DialplanEngine(dialplans),
            FakeRelay(),
            store,
            guard,
            peers=(lambda tenant, host: gateway) if trusted_caller else None,
            host=DOMAIN,
        )
        for method in ("INVITE", "BYE", "UPDATE", "INFO"):
            stack.register(method, b2bua)
        stack.answer_statelessly("INVITE", b2bua.stateless_challenge)
        registering = Harness(clock, None, store, location, authenticator, None, None, b2bua, dialplans)  # type: ignore[arg-type]
        registering.register_1002()
        self.register_callee = registering.register_1002  # again before a day of calls has passed
        self.caller_flow = FakeFlow()
        self.callee_flow = FakeFlow(remote_address=CALLEE_ADDRESS)
        self.calls = 0

    def to_caller(self) -> list[Response]:
        out = [parse_message(data) for data in self.caller_flow.sent]
        self.caller_flow.sent.clear()
        assert all(isinstance(r, Response) for r in out), out
        return out  # type: ignore[return-value]

    def to_callee(self, method: str) -> Request:
        out = [parse_message(data) for data in self.transports.sent]
        self.transports.sent.clear()
        (request,) = [m for m in out if isinstance(m, Request) and m.method == method]
        return request

    def from_callee(self, request: Request, status: int, body: bytes = b"") -> None:
        response = request.response(status, to_tag=f"callee{self.calls}" if status > 100 else None)
        if 100 < status < 300:
            response.headers.add("Contact", "<sip:1002@192.168.1.20:5062>")
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        self.stack.message_received(parse_message(response.to_bytes()), self.callee_flow)

    def from_caller(self, request: Request) -> None:
        self.stack.message_received(request, self.caller_flow)

    def call(self, *, authenticate: bool, callee_status: int = 200) -> None:
        """One call from 1001 to 1002 to its end (BYE from the caller when answered), then 64 s on the clock
        so that every transaction of it terminates (Timers D, H, I, J, K)."""
        self.calls += 1
        uri = f"sip:1002@{DOMAIN}"
        from_ = ("From", f"<sip:1001@{DOMAIN}>;tag=caller{self.calls}")
        call_id = ("Call-ID", f"cycles-{self.calls}@192.168.1.10")

        def invite(cseq: int, authorization: str | None = None) -> Request:
            headers = [from_, ("To", f"<{uri}>"), call_id, ("CSeq", f"{cseq} INVITE")]
            headers.append(("Contact", CALLER_CONTACT))
            if authorization is not None:
                headers.append(("Proxy-Authorization", authorization))
            return wire_request("INVITE", uri, headers, sdp_body())

        cseq = 1
        first = invite(cseq)
        self.from_caller(first)
        if authenticate:
            (challenge,) = self.to_caller()
            assert challenge.status == 407, challenge.status
            ack = wire_request(
                "ACK", uri, [from_, ("To", f"<{uri}>;tag={challenge.to.tag}"), call_id, ("CSeq", "1 ACK")]
            )
            ack.headers.replace_first("Via", str(first.headers.get("Via")))
            self.from_caller(ack)
            (sha256,) = [
                c
                for c in map(DigestChallenge.parse, challenge.headers.get_all("Proxy-Authenticate"))
                if c.algorithm == "SHA-256"
            ]
            credentials = answer_challenge(
                sha256, method="INVITE", uri=uri, username="1001", password=PASSWORDS["1001"], nc=1
            )
            cseq = 2
            first = invite(cseq, str(credentials))
            self.from_caller(first)
        outbound = self.to_callee("INVITE")
        self.from_callee(outbound, 100)
        self.from_callee(outbound, 180)
        self.from_callee(outbound, callee_status, callee_sdp() if callee_status == 200 else b"")
        final = self.to_caller()[-1]
        if callee_status != 200:
            assert final.status == 486, final.status
            self.to_callee("ACK")  # the transaction's ACK of the 486
            ack = wire_request(
                "ACK", uri, [from_, ("To", f"<{uri}>;tag={final.to.tag}"), call_id, ("CSeq", f"{cseq} ACK")]
            )
            ack.headers.replace_first("Via", str(first.headers.get("Via")))
            self.from_caller(ack)
            self.clock.pump([1.0] * 70)
            return
        assert final.status == 200, final.status
        self.to_callee("ACK")
        dialog = [from_, ("To", f"<{uri}>;tag={final.to.tag}"), call_id]
        self.from_caller(wire_request("ACK", PBX_CONTACT[1:-1], [*dialog, ("CSeq", f"{cseq} ACK")]))
        self.clock.advance(1)
        self.from_caller(wire_request("BYE", PBX_CONTACT[1:-1], [*dialog, ("CSeq", f"{cseq + 1} BYE")]))
        assert [r.status for r in self.to_caller()] == [200]
        self.from_callee(self.to_callee("BYE"), 200)
        self.clock.pump([1.0] * 70)


def garbage_of(run: Callable[[], object]) -> list[Any]:
    """Every object that only a cyclic collection would free after `run()`."""
    enabled = gc.isenabled()
    flush = Logger(namespace="tests.b2bua.cycles")
    for _ in range(LOG_HISTORY):  # push earlier tests' log events (and the objects they name) out of
        flush.debug("flush")  # Twisted's start-up history: else they are freed during `run()`
    for _ in range(5):  # what earlier tests left, finalizers included (a finalizer may free more)
        if not gc.collect():
            break
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run()
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


def describe(garbage: list[Any]) -> str:
    names = collections.Counter(getattr(o, "__qualname__", None) or type(o).__qualname__ for o in garbage)
    return ", ".join(f"{name} x{n}" for name, n in names.most_common(12))


class CallCycleTests(SynchronousTestCase):
    def pbx(self, *, trusted_caller: bool = False) -> Pbx:
        path = Path(self.mktemp())
        (path / TENANT).mkdir(parents=True)
        (path / TENANT / "main.j2").write_text("dial 1002 timeout=20\nhangup\n")
        return Pbx(path, trusted_caller=trusted_caller)

    def assertNoCycles(self, pbx: Pbx, **call: Any) -> None:
        for _ in range(3):  # warm up: templates compiled, caches filled
            pbx.call(**call)

        def calls() -> None:
            for _ in range(CALLS):
                pbx.call(**call)

        garbage = garbage_of(calls)
        self.assertLessEqual(len(garbage), TOLERATED, describe(garbage))
        self.assertEqual(len(pbx.stack.transactions), 0)  # every transaction of those calls ended
        self.assertEqual(pbx.b2bua.calls, {})

    def test_answered_calls_with_digest_auth(self) -> None:
        pbx = self.pbx()
        self.assertNoCycles(pbx, authenticate=True)
        self.assertEqual(pbx.b2bua.counters["answered"], 3 + CALLS)

    def test_answered_calls_from_a_trusted_peer(self) -> None:
        self.assertNoCycles(self.pbx(trusted_caller=True), authenticate=False)

    def test_busy_calls(self) -> None:
        self.assertNoCycles(self.pbx(), authenticate=True, callee_status=486)

    def test_the_check_sees_a_cycle(self) -> None:
        """The measure itself: one cycle per call is found."""

        def cycles() -> None:
            for _ in range(CALLS):
                holder: list[Any] = []
                holder.append(holder)

        self.assertEqual(len(garbage_of(cycles)), CALLS)


class TuneGarbageCollectorTests(SynchronousTestCase):
    """`pbx.service.process.tune_garbage_collector`: the production thresholds, or a benchmark's
    PBX_GC_THRESHOLDS."""

    def tune(self, environ: dict[str, str]) -> tuple[int, ...]:
        from pbx.service.process import tune_garbage_collector

        before, callbacks = gc.get_threshold(), list(gc.callbacks)
        self.addCleanup(gc.set_threshold, *before)
        self.addCleanup(gc.unfreeze)
        self.addCleanup(gc.callbacks.__setitem__, slice(None), callbacks)
        thresholds = tune_garbage_collector(environ)
        self.assertEqual(gc.get_threshold(), thresholds)
        return thresholds

    def test_production_thresholds(self) -> None:
        from pbx.service.process import GC_THRESHOLDS

        self.assertEqual(self.tune({}), GC_THRESHOLDS)

    def test_benchmark_override_and_pause_log(self) -> None:
        callbacks = len(gc.callbacks)
        self.assertEqual(self.tune({"PBX_GC_THRESHOLDS": "20000,5,100", "PBX_GC_LOG": "1"}), (20000, 5, 100))
        self.assertEqual(len(gc.callbacks), callbacks + 1)  # the pause logger

    def test_a_bad_override_is_ignored(self) -> None:
        from pbx.service.process import GC_THRESHOLDS

        for bad in ("1,2", "a,b,c", "1,2,-3"):
            self.assertEqual(self.tune({"PBX_GC_THRESHOLDS": bad}), GC_THRESHOLDS)
