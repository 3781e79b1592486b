"""`DatagramIntake`: the one pre-parse entry of UDP datagrams (admission, then overload screening), and the
overload estimate of socket-buffer lag that counts every datagram it drains (issue 14)."""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.sip.admission import Admission, Limit
from pbx.sip.intake import DatagramIntake, new_exchange
from pbx.sip.overload import (
    NORMAL,
    LagMonitor,
    OverloadGuard,
    Prioritize,
    QueueDrop,
    SocketQueueDelay,
    Verdict,
)
from pbx.sip.parser import DEFAULT_LIMITS
from pbx.sip.transport import TransportManager
from tests.sip.test_transport import OPTIONS, FakeReactor, RecordingSink, udp_protocol

FLOOD = b"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5999;branch=z9hG4bKf\r\n\r\n"


def gate(clock: Clock) -> Admission:
    return Admission(
        clock,
        messages=Limit(200.0, 400.0),
        connections=Limit(10.0, 10.0),
        block_after=200.0,
        block_duration=60.0,
    )


class Queued:
    """A socket whose receive queue holds `datagrams` datagrams (Linux SO_MEMINFO's first counter)."""

    def __init__(self) -> None:
        self.datagrams = 0

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        return struct.pack("9I", self.datagrams * 1280, 212992, 0, 0, 0, 0, 0, 0, 0)


class IntakeTests(SynchronousTestCase):
    def test_counts_every_datagram_and_those_the_admission_refuses(self) -> None:
        clock = Clock()
        intake = DatagramIntake(gate(clock))
        admitted = sum(intake.admit("192.0.2.3", FLOOD) for _ in range(1000))
        self.assertEqual((intake.read, intake.refused, admitted), (1000, 600, 400))
        self.assertTrue(intake.admit("192.0.2.1", OPTIONS))  # another source has its own bucket
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_without_admission_everything_goes_on(self) -> None:
        intake = DatagramIntake()
        self.assertTrue(all(intake.admit("192.0.2.3", FLOOD) for _ in range(10)))
        self.assertEqual((intake.read, intake.refused), (10, 0))

    def test_the_screen_is_asked_only_for_what_the_admission_let_through(self) -> None:
        clock = Clock()
        sink = RecordingSink()
        screened: list[tuple[bytes, Any]] = []
        protocol, _, _ = udp_protocol(sink, admission=gate(clock))
        protocol.intake.screen = lambda data, flow: screened.append((data, flow)) or len(screened) % 2 == 0
        for _ in range(500):
            protocol.datagramReceived(OPTIONS, ("192.0.2.1", 5060))
        self.assertEqual(protocol.intake.read, 500)
        self.assertEqual(protocol.intake.refused, 100)  # the burst of 400 went on, the rest refused
        self.assertEqual(len(screened), 400)
        self.assertEqual(len(sink.messages), 200)  # every other one was dealt with by the screen
        self.assertEqual(screened[0][1].remote_address, ("192.0.2.1", 5060))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_one_intake_for_every_udp_listener_of_a_manager(self) -> None:
        reactor = FakeReactor()
        admission = gate(Clock())
        manager = TransportManager(
            reactor, RecordingSink(), limits=DEFAULT_LIMITS, idle_timeout=0, admission=admission
        )
        manager.listen_udp("127.0.0.1", 5060)
        manager.listen_udp("::1", 5060)
        protocols = [protocol for _, protocol, _ in reactor.udp]
        self.assertEqual(len(protocols), 2)
        self.assertTrue(all(p.intake is manager.intake for p in protocols))
        self.assertIs(manager.intake.admission, admission)
        protocols[0].datagramReceived(OPTIONS, ("127.0.0.2", 5060))
        protocols[1].datagramReceived(OPTIONS, ("::2", 5060))
        self.assertEqual(manager.intake.read, 2)


class FloodLagTests(SynchronousTestCase):
    """A flood of 12,000 datagrams/s from one source, refused by the admission, while a phone sends 30 new
    REGISTERs/s, on a loop that falls behind by 40 ms now and then (a CPU-starved PBX): 500 of the flood's
    datagrams wait in the socket at each sample. Drained at about a microsecond each they are no backlog:
    the lag stays normal and the phone's REGISTERs are admitted (the estimate used to divide the queue by
    the rate of parsed messages only, took it for seconds of lag and shed the phone with 503s)."""

    def run_flood(self, read: Any, intake: DatagramIntake, clock: Clock) -> tuple[LagMonitor, list[Verdict]]:
        sock = Queued()
        delay = SocketQueueDelay(clock, lambda: [sock], read, refused=lambda: intake.refused)
        monitor = LagMonitor(clock, interval=0.05, queue_delay=delay)
        guard = OverloadGuard(clock, monitor)
        delay()  # the monitor ran before the flood began
        monitor.start()
        verdicts = []
        for step in range(200):  # 10 s in 50 ms steps
            for _ in range(600):  # 12,000/s
                intake.admit("127.0.0.3", FLOOD)
            if step % 2 == 0:
                for _ in range(3):  # 30/s
                    if intake.admit("127.0.0.1", OPTIONS):
                        verdicts.append(guard.admit(credentials=False))
            sock.datagrams = 500
            clock.advance(0.09 if step % 10 == 0 else 0.05)  # the loop is 40 ms late every half second
        monitor.stop()
        return monitor, verdicts

    def test_a_refused_flood_in_the_socket_is_no_lag(self) -> None:
        clock = Clock()
        intake = DatagramIntake(gate(clock))
        monitor, verdicts = self.run_flood(lambda: intake.read, intake, clock)
        self.assertGreater(intake.refused, 100_000)
        self.assertEqual(monitor.level(), NORMAL)
        self.assertLess(monitor.peak, monitor.high)  # no sample ever reached the high level
        self.assertEqual(verdicts, [Verdict.ADMIT] * 300)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_counting_only_what_goes_on_took_the_flood_for_lag(self) -> None:
        """The estimate before: the same queue over the rate of datagrams let through (at least 500/s)."""
        clock = Clock()
        intake = DatagramIntake(gate(clock))
        monitor, verdicts = self.run_flood(lambda: intake.read - intake.refused, intake, clock)
        self.assertGreater(monitor.lag, 0.2)
        self.assertIn(Verdict.REJECT, verdicts)
        self.assertEqual(clock.getDelayedCalls(), [])


NEW_REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:1000@example.com>;tag=a\r\nTo: <sip:1000@example.com>\r\nCall-ID: c1\r\n"
    b"CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
)


class QueueDropTests(SynchronousTestCase):
    def test_new_exchange_is_a_request_without_credentials_nor_to_tag(self) -> None:
        self.assertTrue(new_exchange(NEW_REGISTER))
        self.assertTrue(new_exchange(NEW_REGISTER.replace(b"To:", b"t:")))
        with_credentials = NEW_REGISTER.replace(
            b"Content-Length", b'Authorization: Digest username="1000"\r\nContent-Length'
        )
        self.assertFalse(new_exchange(with_credentials))
        self.assertFalse(new_exchange(with_credentials.replace(b"Authorization", b"proxy-authorization")))
        self.assertFalse(
            new_exchange(
                NEW_REGISTER.replace(b"To: <sip:1000@example.com>", b"To: <sip:1000@example.com>;tag=b")
            )
        )
        self.assertFalse(
            new_exchange(NEW_REGISTER.replace(b"To: ", b"X-To: "))
        )  # no To line: not judged here
        body = NEW_REGISTER.replace(
            b"Content-Length: 0\r\n\r\n", b"Content-Length: 20\r\n\r\nAuthorization: body"
        )
        self.assertTrue(new_exchange(body))  # the body is not looked at

    def test_while_the_queue_is_long_new_exchanges_are_dropped_before_parsing(self) -> None:
        clock = Clock()
        sink = RecordingSink()
        protocol, _, _ = udp_protocol(sink)
        intake = protocol.intake
        sock = Queued()
        reads = [0]
        delay = SocketQueueDelay(clock, lambda: [sock], lambda: reads[0], min_rate=1000)
        monitor = LagMonitor(clock, interval=0.05, queue_delay=delay)
        monitor.listeners.append(QueueDrop(intake, delay, 0.1))
        monitor.start()
        sock.datagrams = 500  # 0.5 s at 1,000/s, two samples in a row
        clock.pump([0.05, 0.05])
        self.assertTrue(intake.dropping)
        answered = NEW_REGISTER.replace(
            b"Content-Length", b'Authorization: Digest username="1000"\r\nContent-Length'
        )
        for datagram in (NEW_REGISTER, answered, OPTIONS, NEW_REGISTER):
            protocol.datagramReceived(datagram, ("192.0.2.1", 5060))
        self.assertEqual(intake.shed, 2)
        self.assertEqual([m.method for m, _ in sink.messages], ["REGISTER", "OPTIONS"])
        sock.datagrams = 0
        clock.advance(0.05)
        self.assertFalse(intake.dropping)
        protocol.datagramReceived(NEW_REGISTER, ("192.0.2.1", 5060))
        self.assertEqual(len(sink.messages), 3)
        monitor.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


RESPONSE = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKout\r\n"
    b"From: <sip:1000@example.com>;tag=a\r\nTo: <sip:2000@example.com>;tag=b\r\nCall-ID: c2\r\n"
    b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


class PrioritizeTests(SynchronousTestCase):
    """While shedding, new INVITEs and REGISTERs wait for the end of the reactor turn, the sockets are read
    dry: what completes accepted work (a response, an OPTIONS here) is handled before them."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.sink = RecordingSink()
        self.intake = DatagramIntake(None, self.clock)
        self.protocol, self.port, _ = udp_protocol(self.sink, intake=self.intake)
        self.monitor = LagMonitor(self.clock, interval=0.05, high=0.2)
        self.guard = OverloadGuard(self.clock, self.monitor)
        self.port.maxThroughput = 256 * 1024  # type: ignore[attr-defined]
        self.monitor.listeners.append(Prioritize(self.intake, self.guard, lambda: [self.port], 2**20))

    def shed(self) -> None:
        self.monitor.lag = 0.3  # high: the guard sheds
        for listener in self.monitor.listeners:
            listener(self.monitor)

    def offer(self, *datagrams: bytes) -> list[str]:
        for datagram in datagrams:
            self.protocol.datagramReceived(datagram, ("192.0.2.1", 5060))
        return [getattr(m, "method", None) or str(m.status) for m, _ in self.sink.messages]

    def test_new_requests_go_after_the_rest_of_the_turn_while_shedding(self) -> None:
        self.shed()
        self.assertTrue(self.intake.prioritize)
        self.assertEqual(self.port.maxThroughput, 2**20)  # type: ignore[attr-defined]
        invite = NEW_REGISTER.replace(b"REGISTER", b"INVITE")
        self.assertEqual(self.offer(NEW_REGISTER, RESPONSE, invite, OPTIONS), ["200", "OPTIONS"])
        self.assertEqual(self.intake.deferred, 2)
        self.clock.advance(0)  # the end of the turn
        self.assertEqual(
            [getattr(m, "method", None) or str(m.status) for m, _ in self.sink.messages],
            ["200", "OPTIONS", "REGISTER", "INVITE"],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_what_is_refused_at_once_does_not_wait_for_the_end_of_the_turn(self) -> None:
        """`refuse` (the overload screen's refusal from the raw bytes) is asked first for what would wait:
        what it deals with is done at once; the rest waits, in order."""
        asked: list[bytes] = []
        self.intake.refuse = lambda datagram, flow: asked.append(datagram) or datagram.startswith(b"INVITE")
        self.shed()
        invite = NEW_REGISTER.replace(b"REGISTER", b"INVITE")
        self.assertEqual(self.offer(invite, NEW_REGISTER, RESPONSE, OPTIONS), ["200", "OPTIONS"])
        self.assertEqual(asked, [invite, NEW_REGISTER])  # only what would wait
        self.assertEqual(self.intake.deferred, 1)
        self.clock.advance(0)
        self.assertEqual(
            [getattr(m, "method", None) or str(m.status) for m, _ in self.sink.messages],
            ["200", "OPTIONS", "REGISTER"],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_copy_of_a_datagram_that_waits_waits_too(self) -> None:
        """A retransmission read in the same turn as its original (admitted at the end of the turn) must
        go to what becomes of it, not be refused on its own: it waits, unasked; after the turn it is asked."""
        answers = iter([False, True])
        asked: list[bytes] = []
        self.intake.refuse = lambda datagram, flow: asked.append(datagram) or next(answers)
        self.shed()
        self.assertEqual(self.offer(NEW_REGISTER, NEW_REGISTER), [])
        self.assertEqual((asked, self.intake.deferred), ([NEW_REGISTER], 2))
        self.clock.advance(0)
        self.assertEqual(len(self.sink.messages), 2)
        self.offer(NEW_REGISTER)  # a later turn: asked again (and refused at once here)
        self.assertEqual((len(asked), self.intake.deferred), (2, 2))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_back_to_normal_once_nothing_is_shed(self) -> None:
        self.shed()
        self.monitor.start()
        for _ in range(200):  # 10 s at a normal lag: the share grows back to all
            self.clock.advance(0.05)
        self.assertFalse(self.guard.shedding)
        self.assertFalse(self.intake.prioritize)
        self.assertEqual(self.port.maxThroughput, 256 * 1024)  # type: ignore[attr-defined]
        self.assertEqual(self.offer(NEW_REGISTER), ["REGISTER"])  # at once
        self.monitor.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_by_default_the_ports_keep_their_own_read_budget(self) -> None:
        self.monitor.listeners[-1] = Prioritize(self.intake, self.guard, lambda: [self.port])
        self.shed()
        self.assertTrue(self.intake.prioritize)
        self.assertEqual(self.port.maxThroughput, 256 * 1024)  # type: ignore[attr-defined]

    def test_without_a_clock_nothing_waits(self) -> None:
        intake = DatagramIntake()
        intake.prioritize = True
        self.assertFalse(intake.defers(NEW_REGISTER))

    def test_stop_forgets_what_waits(self) -> None:
        self.intake.prioritize = True
        self.assertEqual(self.offer(NEW_REGISTER), [])
        self.intake.stop()
        self.clock.advance(0)
        self.assertEqual(self.sink.messages, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_error_in_a_deferred_datagram_is_logged_and_the_rest_goes_on(self) -> None:
        self.intake.prioritize = True
        handled: list[bytes] = []

        def handle(datagram: bytes, flow: Any) -> None:
            handled.append(datagram)
            if len(handled) == 1:
                raise RuntimeError("boom")

        self.intake.later(handle, b"one", None)
        self.intake.later(handle, b"two", None)
        self.clock.advance(0)
        self.assertEqual(handled, [b"one", b"two"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
