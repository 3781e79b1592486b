"""MWI fan-out: NOTIFYs per CPU-second to 1,000 subscribed phones when messages arrive, in-process.

The PBX side is the real thing: `SipStack` with its transaction layer, the `Notifier` with the
`message-summary` package and `Mwi` over real `Mailboxes` (memory store, WAVs in a temp directory), wired as
`pbx.service.mwi` wires them. The network is fake (no sockets, no SIPp, a heap clock): the phones are fake
flows, their SUBSCRIBEs and 200s are wire bytes parsed by the stack; authorization is skipped (the subscriber
is named by its From), since the digest exchange is the registrar's cost and happens once per subscription.

Two shapes, each `--repeats` times:

- `shared`: one box whose `phones` are all N extensions (a company-wide general box); one new message ->
  N NOTIFYs;
- `own`: N boxes, one per extension; one new message in each -> N NOTIFYs.

Timed separately, CPU (`time.process_time`): (1) the commits of the new messages, which count them, tell
the watchers and build and send every NOTIFY through a client transaction; (2) the phones' 200s being
received and matched to those transactions. What is not timed: the WAVs being written, the phones building
their answers, the clock running the transactions to their end.

    python bench/mwi_fanout.py                    # 1,000 phones x 5 repeats, both shapes
    python bench/mwi_fanout.py --phones 5000 --profile 25

Prints us of CPU per NOTIFY (send, answer, total; best of the repeats) and NOTIFYs per CPU-second, with the
garbage collector as the PBX runs it (`gc.freeze()` after set-up, thresholds (50000, 50, 100)).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import itertools
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TENANT = "default"
DOMAIN = "pbx.example.com"
NOW = 1_765_000_000.0


class HeapClock:
    """An `IReactorTime` for many timers: a heap like the reactor's (twisted's test `Clock` sorts its list on
    every `callLater`, which would dominate the figures with thousands of transactions and subscriptions)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        from twisted.internet.base import DelayedCall

        call = DelayedCall(self.now + delay, f, args, kw, lambda _: None, self._reset, seconds=self.seconds)
        heapq.heappush(self._heap, (call.time, next(self._order), call))
        return call

    def _reset(self, call: Any) -> None:
        heapq.heappush(self._heap, (call.time, next(self._order), call))

    def getDelayedCalls(self) -> list[Any]:
        return list({id(c): c for _, _, c in self._heap if c.active()}.values())

    def advance(self, amount: float) -> None:
        self.now += amount
        while self._heap and self._heap[0][0] <= self.now:
            due, _, call = heapq.heappop(self._heap)
            if call.active() and call.time == due:
                call.called = 1
                call.func(*call.args, **call.kw)


class World:
    """The MWI part of the PBX over fake flows, with `phones` subscribed phones (extensions 10000...)."""

    def __init__(self, phones: int, shape: str, data_dir: Path) -> None:
        from pbx.apps.mwi import Mailbox, MessageSummaryPackage, Mwi
        from pbx.apps.voicemail.mailboxes import Mailboxes
        from pbx.config import Mailbox as BoxSettings
        from pbx.sip.stack import SipStack
        from pbx.sip.subscription_notifier import Notifier, SubscriptionPolicy
        from pbx.store import MemoryLocationStore
        from tests.sip.test_stack import FakeFlow, FakeTransports

        self.extensions = [str(10000 + i) for i in range(phones)]
        if shape == "shared":
            boxes = {"9000": BoxSettings(number="9000", pin="9000", phones=tuple(self.extensions))}
        else:
            boxes = {n: BoxSettings(number=n, pin="1234", phones=(n,)) for n in self.extensions}
        self.boxes_by_number = boxes
        self.clock = HeapClock()
        self.stack = SipStack(self.clock)
        self.transports = FakeTransports()
        self.stack.attach_transport(self.transports)
        self.clock.advance(NOW)
        self.mailboxes = Mailboxes(MemoryLocationStore(), data_dir, {TENANT: boxes}, clock=self.clock)
        self.mailboxes.recover()
        package = MessageSummaryPackage(
            self.mailboxes.phone_counts,
            {TENANT: DOMAIN}.get,
            self.mailboxes.boxes_of_phone,
            self.mailboxes.counts,
        )

        def authorize(request: Any, transaction: Any) -> Mailbox:
            return Mailbox(TENANT, request.from_.uri.user)

        policy = SubscriptionPolicy(max_expires=86400, default_expires=86400, max_subscriptions=phones + 10)
        self.notifier = Notifier(self.stack, authorize, [package], policy)
        self.stack.register("SUBSCRIBE", self.notifier)

        def phones_of(tenant: str, number: str) -> tuple[str, ...]:
            box = self.mailboxes.mailbox(tenant, number)
            return box.phones if box is not None else ()

        self.mwi = Mwi(self.notifier, phones_of)
        self.mailboxes.watchers.append(self.mwi.changed)
        self.flows = {n: FakeFlow(remote=("192.0.2.10", 20000 + i)) for i, n in enumerate(self.extensions)}
        self.by_port = {flow.remote_address[1]: flow for flow in self.flows.values()}
        for extension in self.extensions:
            self._subscribe(extension)
        self.answer()
        self.clock.advance(40)  # the NOTIFY transactions end (Timer K)

    def _subscribe(self, extension: str) -> None:
        from tests.sip.test_stack import deliver

        text = (
            f"SUBSCRIBE sip:{extension}@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:{self.flows[extension].remote_address[1]}"
            f";branch=z9hG4bKs{extension};rport\r\n"
            f"From: <sip:{extension}@{DOMAIN}>;tag=p{extension}\r\nTo: <sip:{extension}@{DOMAIN}>\r\n"
            f"Call-ID: mwi-{extension}@192.0.2.10\r\nCSeq: 1 SUBSCRIBE\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:{extension}@192.0.2.10:{self.flows[extension].remote_address[1]}>\r\n"
            "Event: message-summary\r\nAccept: application/simple-message-summary\r\nExpires: 86400\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        deliver(self.stack, text.encode(), self.flows[extension])

    def answers(self) -> list[tuple[bytes, Any]]:
        """The phones' 200s to every NOTIFY sent so far (built untimed), and the flow each comes from."""
        from pbx.sip.parser import parse_message

        built = []
        for data, _transport, _host, port in self.transports.sent:
            notify = parse_message(data)
            built.append((notify.response(200).to_bytes(), self.by_port[port]))  # type: ignore[union-attr]
        self.transports.sent.clear()
        return built

    def answer(self, answers: list[tuple[bytes, Any]] | None = None) -> None:
        from tests.sip.test_stack import deliver

        for data, flow in self.answers() if answers is None else answers:
            deliver(self.stack, data, flow)

    def prepared(self) -> list[tuple[str, Path]]:
        """One recorded message per box to commit: (box, WAV path), written untimed."""
        from pbx.media.wav import write_pcm_atomic

        found = []
        for number in self.boxes_by_number:
            path = self.mailboxes.prepare(TENANT, number)
            write_pcm_atomic(path, b"\0\0" * 800)
            found.append((number, path))
        return found

    def commit(self, prepared: list[tuple[str, Path]]) -> None:
        for number, path in prepared:
            self.mailboxes.commit(
                TENANT,
                number,
                path,
                caller_number="1000",
                caller_name="",
                received_at=NOW,
                duration=0.1,
                call_id="bench",
            )


def run(shape: str, phones: int, repeats: int, profile: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="pbx-mwi-bench-"))
    try:
        world = World(phones, shape, data_dir)
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        sends: list[float] = []
        answers: list[float] = []
        profiler = cProfile.Profile() if profile else None
        for _ in range(repeats):
            prepared = world.prepared()
            if profiler is not None:
                profiler.enable()
            started = time.process_time()
            world.commit(prepared)
            sent = time.process_time() - started
            if profiler is not None:
                profiler.disable()
            count = len(world.transports.sent)
            replies = world.answers()
            started = time.process_time()
            world.answer(replies)
            answered = time.process_time() - started
            world.clock.advance(40)
            if count != phones:
                raise SystemExit(f"{shape}: {count} NOTIFYs for {phones} phones")
            sends.append(sent / count * 1e6)
            answers.append(answered / count * 1e6)
        best_send, best_answer = min(sends), min(answers)
        total = best_send + best_answer
        send_median, answer_median = statistics.median(sends), statistics.median(answers)
        print(
            f"{shape:6} {phones:6} phones  send {best_send:6.1f} us/NOTIFY (median {send_median:6.1f})"
            f"  200 {best_answer:6.1f} us (median {answer_median:6.1f})  total {total:6.1f} us"
            f"  = {1e6 / total:8.0f} NOTIFYs per CPU-second"
        )
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(profile)
        assert world.clock.getDelayedCalls() != [] or phones == 0  # the subscriptions' expiry timers
        gc.unfreeze()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shape", choices=("shared", "own", "both"), default="both")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    print(f"Python {sys.version.split()[0]}: {args.phones} subscribed phones x {args.repeats} repeats")
    for shape in ("shared", "own") if args.shape == "both" else (args.shape,):
        run(shape, args.phones, args.repeats, args.profile)


if __name__ == "__main__":
    main()
