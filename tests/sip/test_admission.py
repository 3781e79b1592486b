"""Admission before parsing (`pbx.sip.admission`): buckets, blocks, expiry, classes, screens, bounded
tables."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from pbx.sip.admission import UNLIMITED, Admission, Limit, SourceClass, classes_from
from pbx.sip.screening import RawScreen

REGISTER = (
    b"REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:1000@localhost>;tag=1\r\nTo: <sip:1000@localhost>\r\nCall-ID: a\r\nCSeq: 1 REGISTER\r\n"
    b"User-Agent: Yealink SIP-T46S\r\nContent-Length: 0\r\n\r\n"
)
SCANNER = REGISTER.replace(b"Yealink SIP-T46S", b"friendly-scanner")


def make(clock: Clock, **kwargs: object) -> Admission:
    options: dict[str, object] = {
        "messages": Limit(10.0, 20.0),
        "connections": Limit(2.0, 4.0),
        "block_after": 20.0,
        "block_duration": 60.0,
    }
    options.update(kwargs)
    return Admission(clock, **options)  # type: ignore[arg-type]


def offer(admission: Admission, host: str, count: int, data: bytes = REGISTER) -> int:
    """How many of `count` messages from `host` were admitted."""
    return sum(admission.admit(host, data) for _ in range(count))


class LogCapture:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        if event.get("log_namespace") == "pbx.sip.admission":
            self.events.append(event)

    def lines(self, level: LogLevel = LogLevel.warn) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if e["log_level"] == level]


class BucketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.log = LogCapture()
        globalLogPublisher.addObserver(self.log)
        self.addCleanup(globalLogPublisher.removeObserver, self.log)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_burst_then_rate(self) -> None:
        """A quiet source may send `burst` at once, then `rate` per second."""
        admission = make(self.clock)
        self.assertEqual(offer(admission, "192.0.2.1", 25), 20)
        self.assertEqual(admission.dropped_rate, 5)
        self.clock.advance(0.5)  # 5 tokens
        self.assertEqual(offer(admission, "192.0.2.1", 8), 5)
        self.assertFalse(admission.is_blocked("192.0.2.1"))

    def test_sources_are_independent(self) -> None:
        admission = make(self.clock)
        offer(admission, "192.0.2.1", 100)
        self.assertEqual(offer(admission, "192.0.2.2", 20), 20)

    def test_twice_the_rate_is_only_trimmed(self) -> None:
        """A source at twice its rate loses its excess but is never blocked (strikes drain at the rate)."""
        admission = make(self.clock)
        admitted = 0
        for _ in range(600):  # 60 s at 20/s
            admitted += offer(admission, "192.0.2.1", 2)
            self.clock.advance(0.1)
        self.assertFalse(admission.is_blocked("192.0.2.1"))
        self.assertEqual(admission.blocks, 0)
        self.assertTrue(9.5 <= admitted / 60 <= 10.5, admitted)

    def test_flood_is_blocked_and_logged_once(self) -> None:
        admission = make(self.clock)
        seen: list[tuple[str, float, str]] = []
        admission.observers.append(lambda *a: seen.append(a))
        self.assertEqual(offer(admission, "192.0.2.1", 41), 20)  # burst 20, then 21 strikes > 20
        self.assertTrue(admission.is_blocked("192.0.2.1"))
        self.assertEqual(offer(admission, "192.0.2.1", 1000), 0)
        self.assertEqual(admission.dropped_blocked, 1000)
        self.assertEqual(admission.blocks, 1)
        self.assertEqual(seen, [("192.0.2.1", 60.0, "more than 10 messages/s for 0.00 s")])
        self.assertEqual(self.log.lines(), ["Blocked 192.0.2.1 for 60 s: more than 10 messages/s for 0.00 s"])
        self.assertEqual(admission.blocked_sources, ["192.0.2.1"])

    def test_the_block_says_how_long_the_source_was_over(self) -> None:
        admission = make(self.clock)
        for _ in range(100):  # 50/s: empty after 0.5 s, then strikes grow by 40 - 10 per second
            offer(admission, "192.0.2.1", 5)
            self.clock.advance(0.1)
            if admission.is_blocked("192.0.2.1"):
                break
        self.assertEqual(admission.blocks, 1)
        (line,) = self.log.lines()
        self.assertTrue(line.startswith("Blocked 192.0.2.1 for 60 s: more than 10 messages/s for 0.6"), line)

    def test_block_expires(self) -> None:
        admission = make(self.clock)
        offer(admission, "192.0.2.1", 41)
        self.clock.advance(59.9)
        self.assertFalse(admission.admit("192.0.2.1", REGISTER))
        self.clock.advance(0.1)
        self.assertFalse(admission.is_blocked("192.0.2.1"))
        self.assertEqual(offer(admission, "192.0.2.1", 20), 20)  # a full bucket after the block
        self.assertEqual(admission.unblocks, 1)
        self.assertEqual(admission.blocked_sources, [])

    def test_external_block_is_dropped_before_anything(self) -> None:
        """The brute-force guard blocks through `block`; a longer block is kept, a shorter one ignored."""
        admission = make(self.clock)
        self.assertTrue(admission.block("192.0.2.5", 600.0, "5 failed authentications"))
        self.assertFalse(admission.admit("192.0.2.5", REGISTER))
        self.assertFalse(admission.admit_connection("192.0.2.5"))
        admission.block("192.0.2.5", 10.0, "again")
        admission.block("192.0.2.6", 10.0, "logged by the guard", log=False)
        self.assertEqual(self.log.lines(), ["Blocked 192.0.2.5 for 600 s: 5 failed authentications"])
        self.clock.advance(300)
        self.assertTrue(admission.is_blocked("192.0.2.5"))
        self.assertEqual(admission.blocks, 2)

    def test_disabled_admits_everything(self) -> None:
        admission = make(self.clock, enabled=False)
        self.assertEqual(offer(admission, "192.0.2.1", 1000, SCANNER), 1000)
        self.assertFalse(admission.block("192.0.2.1", 60, "x"))
        self.assertTrue(admission.admit_connection("192.0.2.1"))

    def test_clock_going_back_refunds_nothing(self) -> None:
        admission = make(self.clock)
        offer(admission, "192.0.2.1", 20)
        admission.admit("192.0.2.1", REGISTER)
        self.clock.rightNow -= 5.0
        self.assertFalse(admission.admit("192.0.2.1", REGISTER))


class ConnectionTests(SynchronousTestCase):
    def test_connection_rate_and_block(self) -> None:
        clock = Clock()
        admission = make(clock)
        self.assertEqual(sum(admission.admit_connection("192.0.2.1") for _ in range(6)), 4)
        self.assertEqual(admission.connections_refused, 2)
        clock.advance(1.0)
        self.assertEqual(sum(admission.admit_connection("192.0.2.1") for _ in range(3)), 2)
        for _ in range(10):
            admission.admit_connection("192.0.2.1")
        self.assertTrue(admission.is_blocked("192.0.2.1"))
        self.assertEqual(admission.blocks, 1)
        self.assertFalse(admission.admit("192.0.2.1", REGISTER))
        self.assertTrue(admission.admit_connection("192.0.2.2"))
        self.assertEqual(clock.getDelayedCalls(), [])


class ClassTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        classes = classes_from(
            ["10.0.0.0/8"], [("trunks", ["198.51.100.0/24", "2001:db8::/32"], Limit(1000, 2000), UNLIMITED)]
        )
        self.admission = make(self.clock, classes=classes, screen=RawScreen())

    def test_trusted_are_exempt_from_everything(self) -> None:
        admission = self.admission
        self.assertEqual(offer(admission, "10.1.2.3", 5000, SCANNER), 5000)
        self.assertFalse(admission.block("10.1.2.3", 60, "guard"))
        self.assertFalse(admission.is_blocked("10.1.2.3"))
        self.assertEqual(sum(admission.admit_connection("10.1.2.3") for _ in range(100)), 100)

    def test_trunks_have_their_own_limits(self) -> None:
        admission = self.admission
        self.assertEqual(offer(admission, "198.51.100.7", 2010), 2000)
        self.assertFalse(admission.is_blocked("198.51.100.7"))
        self.assertEqual(offer(admission, "2001:db8::7", 2000), 2000)
        self.assertEqual(sum(admission.admit_connection("198.51.100.7") for _ in range(100)), 100)
        self.assertEqual(offer(admission, "192.0.2.1", 30), 20)  # others: the default

    def test_trunks_are_still_screened(self) -> None:
        self.assertFalse(self.admission.admit("198.51.100.7", SCANNER))
        self.assertTrue(self.admission.is_blocked("198.51.100.7"))

    def test_unlimited_class_is_screened(self) -> None:
        admission = make(self.clock, classes=[SourceClass("open", ("203.0.113.0/24",))], screen=RawScreen())
        self.assertEqual(offer(admission, "203.0.113.1", 100), 100)
        self.assertFalse(admission.admit("203.0.113.1", SCANNER))


class ScreenTests(SynchronousTestCase):
    def test_scanner_is_dropped_and_blocked_at_once(self) -> None:
        clock = Clock()
        admission = make(clock, screen=RawScreen())
        self.assertFalse(admission.admit("192.0.2.1", SCANNER))
        self.assertEqual(admission.dropped_screened, 1)
        self.assertTrue(admission.is_blocked("192.0.2.1"))
        self.assertFalse(admission.admit("192.0.2.1", REGISTER))
        self.assertTrue(admission.admit("192.0.2.2", REGISTER))

    def test_unserved_address_dropped_without_a_block(self) -> None:
        screen = RawScreen(served_hosts=["localhost", "192.0.2.80"], drop_unserved_addresses=True)
        admission = make(Clock(), screen=screen)
        probe = REGISTER.replace(b"sip:localhost SIP", b"sip:100@192.0.2.99 SIP")
        self.assertFalse(admission.admit("192.0.2.1", probe))
        self.assertFalse(admission.is_blocked("192.0.2.1"))
        self.assertTrue(admission.admit("192.0.2.1", REGISTER))
        self.assertTrue(admission.admit("192.0.2.1", probe.replace(b"192.0.2.99", b"192.0.2.80")))


class BoundedTablesTests(SynchronousTestCase):
    def test_spraying_sources_stays_bounded(self) -> None:
        """A million one-message sources keep at most `max_sources` buckets; quiet ones are swept."""
        clock = Clock()
        admission = make(clock, max_sources=1000, sweep_interval=10.0)
        for i in range(20_000):
            self.assertTrue(admission.admit(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", REGISTER))
            self.assertLessEqual(admission.counters["sources"], 1000)
        self.assertGreater(admission.evicted_sources, 0)
        clock.advance(11.0)
        admission.admit("192.0.2.1", REGISTER)  # the sweep runs on the hot path
        self.assertEqual(admission.counters["sources"], 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_blocked_table_is_bounded_and_swept(self) -> None:
        clock = Clock()
        admission = make(clock, max_sources=100)
        for i in range(250):
            admission.block(f"192.0.2.{i}" if i < 250 else "x", 60.0, "test")
            self.assertLessEqual(admission.counters["blocked"], 100)
        self.assertEqual(admission.evicted_blocks, 150)
        self.assertTrue(admission.is_blocked("192.0.2.249"))
        self.assertFalse(admission.is_blocked("192.0.2.0"))  # the oldest were forgotten
        clock.advance(61.0)
        admission.sweep()
        self.assertEqual(admission.counters["blocked"], 0)
        self.assertEqual(admission.unblocks, 100)

    def test_busy_sources_are_kept_by_the_sweep(self) -> None:
        clock = Clock()
        admission = make(clock, sweep_interval=1.0)
        offer(admission, "192.0.2.1", 15)
        clock.advance(1.0)
        admission.admit("192.0.2.2", REGISTER)  # sweeps: 192.0.2.1 has 15 tokens of 20: kept
        self.assertEqual(admission.counters["sources"], 2)


class LimitTests(SynchronousTestCase):
    def test_invalid_limits(self) -> None:
        self.assertRaises(ValueError, Limit, -1.0, 1.0)
        self.assertRaises(ValueError, Limit, 1.0, 0.5)
        self.assertRaises(ValueError, make, Clock(), max_sources=2)
