"""Tests for `pbx.media.relay`: forwarding, latching, validation and port hygiene on a fake UDP reactor, then
forwarding both ways, latching, RTCP on N + 1, garbage and socket hygiene over real loopback sockets."""

from __future__ import annotations

import errno
import os
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from pbx.media import (
    IMediaRelay,
    IRelayLeg,
    IRelaySession,
    MemoryMediaRelay,
    PortPool,
    PortsExhausted,
    SessionStats,
    UdpMediaRelay,
)
from pbx.media.relay import QUIET_SECONDS, SWITCH_AFTER


def rtp(seq: int = 1, payload: bytes = b"\xff" * 160, ssrc: int = 0x1234) -> bytes:
    """A G.711 u-law RTP packet (RFC 3550 5.1; 172 bytes with the default payload)."""
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, ssrc) + payload


RTCP_RR = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)  # an empty receiver report (RFC 3550 6.4.2)
PHONE_A = ("192.0.2.10", 4000)  # what A's SDP says
PHONE_B = ("198.51.100.20", 5000)
NAT_A = ("203.0.113.7", 61000)  # where A's packets really come from


class FakeUdpPort:
    """A listening UDP port of `FakeUdpReactor`: records what is written through it."""

    def __init__(self, reactor: FakeUdpReactor, port: int, protocol: Any, interface: str) -> None:
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.address = IPv4Address("UDP", interface, port)
        self.fail_with: Exception | None = None

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.reactor.sent.append((self.port, data, addr))

    def getHost(self) -> IPv4Address:
        return self.address

    def stopListening(self) -> Deferred[None] | None:
        del self.reactor.ports[self.port]
        if self.reactor.slow_close:
            d: Deferred[None] = Deferred()
            self.reactor.closing.append(d)
            return d
        return None


class FakeUdpReactor(Clock):
    """A clock with `listenUDP` over fake ports; `busy` ports fail to bind, as do ports already open."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: dict[int, FakeUdpPort] = {}
        self.busy: set[int] = set()
        self.sent: list[tuple[int, bytes, tuple[str, int]]] = []  # (from our port, data, to)
        self.slow_close = False  # stopListening returns Deferreds kept in `closing`
        self.closing: list[Deferred[None]] = []
        self.no_descriptors_after: int | None = None  # that many more binds succeed, then EMFILE
        self.binds = 0

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> Any:
        self.binds += 1
        if self.no_descriptors_after is not None:
            if self.no_descriptors_after <= 0:
                raise CannotListenError(interface, port, OSError(errno.EMFILE, "Too many open files"))
            self.no_descriptors_after -= 1
        if port in self.busy or port in self.ports:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        fake = FakeUdpPort(self, port, protocol, interface)
        self.ports[port] = fake
        protocol.makeConnection(fake)
        return fake

    def deliver(self, port: int, data: bytes, source: tuple[str, int]) -> None:
        """A datagram from `source` arrives on our `port`."""
        self.ports[port].protocol.datagramReceived(data, source)

    def take(self) -> list[tuple[int, bytes, tuple[str, int]]]:
        sent, self.sent = self.sent, []
        return sent


class RelayTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeUdpReactor()
        self.pool = PortPool(10000, 10099)
        self.relay = UdpMediaRelay(self.reactor, self.pool, bind_host="10.0.0.1")

    def session(self, a: tuple[str, int] | None = PHONE_A, b: tuple[str, int] | None = PHONE_B) -> Any:
        session = self.relay.create_session("call-1")
        if a is not None:
            session.leg("a").set_remote(*a)
        if b is not None:
            session.leg("b").set_remote(*b)
        return session


class InterfaceTests(SynchronousTestCase):
    def test_providers(self) -> None:
        """Both relays provide IMediaRelay, their sessions IRelaySession, their legs IRelayLeg."""
        relays = [UdpMediaRelay(FakeUdpReactor(), PortPool(10000, 10099)), MemoryMediaRelay()]
        for relay in relays:
            with self.subTest(relay=type(relay).__name__):
                verifyObject(IMediaRelay, relay)
                session = relay.create_session("call-1")
                verifyObject(IRelaySession, session)
                for name in ("a", "b"):
                    verifyObject(IRelayLeg, session.leg(name))
                    self.assertEqual(session.leg(name).name, name)
                self.assertRaises(KeyError, session.leg, "c")
                self.assertIsInstance(session.stats(), SessionStats)
                self.assertEqual(relay.sessions, 1)
                self.successResultOf(session.close())
                self.assertEqual(relay.sessions, 0)

    def test_memory_relay_records_and_gives_ports_back(self) -> None:
        relay = MemoryMediaRelay(PortPool(40000, 40003), local_address="192.0.2.1")
        session = relay.create_session("c")
        self.assertRaises(PortsExhausted, relay.create_session, "d")
        self.assertEqual(relay.pool.in_use, 2)
        leg = session.leg("b")
        self.assertEqual((leg.local_address, leg.local_port), ("192.0.2.1", 40002))
        leg.set_remote("198.51.100.20", 5000)
        self.assertEqual((leg.remote, leg.rtcp_remote), (("198.51.100.20", 5000), ("198.51.100.20", 5001)))
        self.assertEqual(session.stats().b.remote, ("198.51.100.20", 5000))
        self.assertRaises(ValueError, leg.set_remote, "phone.example.com", 5000)
        self.successResultOf(relay.close())
        self.assertEqual((relay.sessions, relay.pool.in_use, len(relay.created)), (0, 0, 1))


class ForwardingTests(RelayTestCase):
    def test_a_session_opens_rtp_and_rtcp_sockets_for_both_legs(self) -> None:
        session = self.session(None, None)
        a, b = session.leg("a"), session.leg("b")
        self.assertEqual((a.local_port, b.local_port), (10000, 10002))
        self.assertEqual(sorted(self.reactor.ports), [10000, 10001, 10002, 10003])
        self.assertEqual({a.local_address, b.local_address}, {"10.0.0.1"})
        self.assertEqual((self.pool.in_use, self.relay.sessions), (2, 1))

    def test_rtp_is_relayed_both_ways_from_the_other_legs_socket(self) -> None:
        session = self.session()
        self.reactor.deliver(10000, rtp(1), PHONE_A)
        self.reactor.deliver(10002, rtp(2, b"x" * 20), PHONE_B)
        self.assertEqual(self.reactor.take(), [(10002, rtp(1), PHONE_B), (10000, rtp(2, b"x" * 20), PHONE_A)])
        stats = session.stats()
        self.assertEqual((stats.call_id, stats.a.packets, stats.a.bytes), ("call-1", 1, 172))
        self.assertEqual((stats.b.packets, stats.b.bytes), (1, 32))
        self.assertEqual((stats.a.latched, stats.b.latched), (PHONE_A, PHONE_B))
        self.assertEqual((stats.a.remote, stats.a.rtcp_remote), (PHONE_A, ("192.0.2.10", 4001)))

    def test_rtcp_goes_over_the_next_port_to_the_sdp_rtcp_port(self) -> None:
        """RTCP on N + 1; a=rtcp (RFC 3605) is honoured, else the RTP port + 1."""
        session = self.session(b=None)
        session.leg("b").set_remote("198.51.100.20", 5000, rtcp_port=5999)
        self.reactor.deliver(10001, RTCP_RR, ("192.0.2.10", 4001))
        self.reactor.deliver(10003, RTCP_RR, ("198.51.100.20", 5999))
        self.assertEqual(
            self.reactor.take(),
            [(10003, RTCP_RR, ("198.51.100.20", 5999)), (10001, RTCP_RR, ("192.0.2.10", 4001))],
        )
        stats = session.stats()
        self.assertEqual((stats.a.rtcp_packets, stats.a.rtcp_bytes, stats.a.packets), (1, 8, 0))
        self.assertEqual(stats.b.rtcp_latched, ("198.51.100.20", 5999))
        self.assertIsNone(stats.b.latched)

    def test_garbage_is_counted_and_never_relayed(self) -> None:
        session = self.session()
        stun = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + b"0123456789ab"
        for junk in [b"", b"hello world!", rtp()[:11], b"\x40" + rtp()[1:], b"\x00" * 172, stun]:
            self.reactor.deliver(10000, junk, PHONE_A)
        self.reactor.deliver(10001, RTCP_RR[:4], PHONE_A)  # shorter than any RTCP report
        self.reactor.deliver(10001, b"\xc0" + RTCP_RR[1:], PHONE_A)  # version 3
        self.assertEqual(self.reactor.take(), [])
        stats = session.stats()
        self.assertEqual((stats.a.invalid, stats.a.packets, stats.a.latched), (8, 0, None))

    def test_packets_are_dropped_until_the_other_leg_is_known(self) -> None:
        """Before b has an SDP address or has sent anything, a's packets are dropped, but a latches."""
        session = self.session(a=None, b=None)
        self.reactor.deliver(10000, rtp(1), NAT_A)
        self.assertEqual(self.reactor.take(), [])
        self.assertEqual((session.stats().a.dropped, session.leg("a").latched), (1, NAT_A))
        self.reactor.deliver(10002, rtp(2), PHONE_B)  # b learns from b's first packet; a is known by now
        self.reactor.deliver(10000, rtp(3), NAT_A)
        self.assertEqual(self.reactor.take(), [(10000, rtp(2), NAT_A), (10002, rtp(3), PHONE_B)])

    def test_hold_address_and_rejected_stream_send_nothing(self) -> None:
        session = self.session()
        for host, port in [("0.0.0.0", 5000), ("198.51.100.20", 0)]:
            with self.subTest(host=host, port=port):
                session.leg("b").set_remote(host, port)
                self.reactor.deliver(10000, rtp(), PHONE_A)
                self.assertEqual(self.reactor.take(), [])
                self.assertIsNone(session.leg("b").remote)

    def test_send_errors_are_counted_not_raised(self) -> None:
        session = self.session()
        self.reactor.ports[10002].fail_with = OSError(1, "Operation not permitted")
        self.reactor.deliver(10000, rtp(1), PHONE_A)
        self.reactor.deliver(10000, rtp(2), PHONE_A)
        self.assertEqual(session.stats().a.send_errors, 2)
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class LatchingTests(RelayTestCase):
    def test_latches_to_the_real_source_not_the_sdp_address(self) -> None:
        """Behind NAT the SDP says 192.0.2.10:4000 but packets come from 203.0.113.7:61000: send there."""
        session = self.session()
        self.reactor.deliver(10002, rtp(1), PHONE_B)
        self.assertEqual(self.reactor.take(), [(10000, rtp(1), PHONE_A)])  # before A's first packet: SDP
        self.reactor.deliver(10000, rtp(2), NAT_A)
        self.reactor.deliver(10002, rtp(3), PHONE_B)
        self.assertEqual(self.reactor.take(), [(10002, rtp(2), PHONE_B), (10000, rtp(3), NAT_A)])
        self.assertEqual((session.leg("a").latched, session.leg("a").remote), (NAT_A, PHONE_A))

    def test_stray_packets_do_not_steal_the_latch(self) -> None:
        """A new source sending fewer than SWITCH_AFTER in a row, between the latched stream's packets."""
        session = self.session()
        stray = ("192.0.2.66", 7777)
        self.reactor.deliver(10000, rtp(1), NAT_A)
        for seq in range(2, 40, 3):
            for _ in range(SWITCH_AFTER - 1):
                self.reactor.deliver(10000, rtp(999), stray)
            self.reactor.deliver(10000, rtp(seq), NAT_A)
            self.reactor.advance(0.02)
        self.reactor.deliver(10002, rtp(5), PHONE_B)
        sent = self.reactor.take()
        self.assertNotIn(rtp(999), [data for _, data, _ in sent])
        self.assertEqual(sent[-1], (10000, rtp(5), NAT_A))
        stats = session.stats()
        self.assertEqual((stats.a.latched, stats.a.relatched, stats.a.packets), (NAT_A, 0, 14))
        self.assertEqual(stats.a.foreign, 13 * (SWITCH_AFTER - 1))

    def test_a_new_source_takes_over_after_enough_packets_in_a_row(self) -> None:
        """NAT rebinding: the phone's stream continues from a new port; the latch follows within 3 packets."""
        session = self.session()
        moved = ("203.0.113.7", 61234)
        self.reactor.deliver(10000, rtp(1), NAT_A)
        for seq in range(2, 2 + SWITCH_AFTER):
            self.reactor.deliver(10000, rtp(seq), moved)
        self.reactor.deliver(10000, rtp(9), NAT_A)  # a late packet of the old binding: now foreign
        self.reactor.deliver(10002, rtp(10), PHONE_B)
        self.assertEqual(
            self.reactor.take(),
            [(10002, rtp(1), PHONE_B), (10002, rtp(1 + SWITCH_AFTER), PHONE_B), (10000, rtp(10), moved)],
        )
        stats = session.stats()
        self.assertEqual((stats.a.latched, stats.a.relatched, stats.a.foreign), (moved, 1, SWITCH_AFTER))

    def test_a_new_source_takes_over_when_the_latched_one_went_quiet(self) -> None:
        """Sparse packets (RTCP every few seconds) move the latch once the old source has been silent."""
        session = self.session()
        moved = ("203.0.113.99", 4001)
        self.reactor.deliver(10001, RTCP_RR, NAT_A)
        self.reactor.advance(5)
        self.reactor.deliver(10001, RTCP_RR, moved)  # first sight of the new source: just noted
        self.reactor.advance(QUIET_SECONDS / 2)
        self.reactor.deliver(10001, RTCP_RR, NAT_A)  # the old source is alive
        self.reactor.advance(QUIET_SECONDS)
        self.reactor.deliver(10001, RTCP_RR, moved)
        self.assertEqual(session.stats().a.rtcp_latched, NAT_A)
        self.reactor.advance(QUIET_SECONDS)
        self.reactor.deliver(10001, RTCP_RR, moved)  # silent for QUIET_SECONDS since it was last heard
        stats = session.stats()
        self.assertEqual((stats.a.rtcp_latched, stats.a.relatched, stats.a.rtcp_packets), (moved, 1, 3))
        self.assertEqual(session.leg("a").latched, None)  # RTP latches on its own

    def test_the_sdp_address_takes_the_latch_at_once(self) -> None:
        session = self.session()
        self.reactor.deliver(10000, rtp(1), NAT_A)
        self.reactor.deliver(10000, rtp(2), PHONE_A)
        self.assertEqual((session.leg("a").latched, session.stats().a.relatched), (PHONE_A, 1))

    def test_a_new_sdp_address_forgets_the_latch_the_same_one_keeps_it(self) -> None:
        session = self.session()
        self.reactor.deliver(10000, rtp(1), NAT_A)
        session.leg("a").set_remote(*PHONE_A)  # a session refresh
        self.assertEqual(session.leg("a").latched, NAT_A)
        session.leg("a").set_remote("192.0.2.11", 4100)  # a re-INVITE moved the media
        self.assertIsNone(session.leg("a").latched)
        self.reactor.take()
        self.reactor.deliver(10002, rtp(2), PHONE_B)
        self.assertEqual(self.reactor.take(), [(10000, rtp(2), ("192.0.2.11", 4100))])
        self.reactor.deliver(10000, rtp(3), ("203.0.113.8", 9000))  # the first packet latches again
        self.assertEqual(session.leg("a").latched, ("203.0.113.8", 9000))


class AddressTests(SynchronousTestCase):
    def test_set_remote_refuses_what_it_cannot_send_to(self) -> None:
        session = UdpMediaRelay(FakeUdpReactor(), PortPool(10000, 10099)).create_session("c")
        leg = session.leg("a")
        for host, port in [
            ("phone.example.com", 4000),
            ("224.0.0.1", 4000),
            ("255.255.255.255", 4000),
            ("2001:db8::1", 4000),
            ("192.0.2.1", 70000),
            ("192.0.2.1", -1),
        ]:
            with self.subTest(host=host, port=port):
                self.assertRaises(ValueError, leg.set_remote, host, port)
        leg.set_remote("::ffff:192.0.2.1", 4000)
        self.assertEqual(leg.remote, ("192.0.2.1", 4000))

    def test_dual_stack_relay_sends_to_ipv4_mapped_addresses(self) -> None:
        reactor = FakeUdpReactor()
        relay = UdpMediaRelay(reactor, PortPool(10000, 10099), bind_host="::", advertise="2001:db8::5")
        session = relay.create_session("c")
        self.assertEqual(session.leg("a").local_address, "2001:db8::5")
        session.leg("a").set_remote("192.0.2.1", 4000)
        session.leg("b").set_remote("2001:DB8::0:7", 5000)
        self.assertEqual(session.leg("a").remote, ("::ffff:192.0.2.1", 4000))
        self.assertEqual(session.leg("b").remote, ("2001:db8::7", 5000))
        reactor.deliver(10002, rtp(), ("2001:db8::7", 5000))
        self.assertEqual(reactor.take(), [(10000, rtp(), ("::ffff:192.0.2.1", 4000))])

    def test_ipv6_only_relay_refuses_ipv4(self) -> None:
        relay = UdpMediaRelay(FakeUdpReactor(), PortPool(10000, 10099), bind_host="::1")
        self.assertRaises(ValueError, relay.create_session("c").leg("a").set_remote, "192.0.2.1", 4000)

    def test_a_wildcard_bind_needs_an_address_to_advertise(self) -> None:
        reactor, pool = FakeUdpReactor(), PortPool(10000, 10099)
        self.assertRaises(ValueError, UdpMediaRelay, reactor, pool, bind_host="0.0.0.0")
        self.assertRaises(ValueError, UdpMediaRelay, reactor, pool, advertise="pbx.example.com")
        relay = UdpMediaRelay(reactor, pool, bind_host="0.0.0.0", advertise="192.0.2.1")
        self.assertEqual(relay.create_session("c").leg("b").local_address, "192.0.2.1")


class PortHygieneTests(RelayTestCase):
    def assertNothingLeaked(self) -> None:
        self.assertEqual((self.pool.in_use, self.pool.available), (0, self.pool.capacity))
        self.assertEqual(self.reactor.ports, {})
        self.assertEqual(self.relay.sessions, 0)

    def test_ports_that_do_not_bind_are_skipped(self) -> None:
        """A busy RTP port, then a free RTP port whose RTCP port is busy: the legs get the next pairs."""
        self.reactor.busy |= {10000, 10003}
        session = self.relay.create_session("c")
        self.assertEqual((session.leg("a").local_port, session.leg("b").local_port), (10004, 10006))
        self.assertEqual(sorted(self.reactor.ports), [10004, 10005, 10006, 10007])
        self.assertEqual(self.pool.in_use, 2)
        self.reactor.busy.clear()
        self.successResultOf(session.close())
        self.assertNothingLeaked()

    def test_no_bindable_pair_is_ports_exhausted_and_leaks_nothing(self) -> None:
        self.reactor.busy |= set(range(10001, 10100, 2))  # every RTCP port
        self.assertRaises(PortsExhausted, self.relay.create_session, "c")
        self.assertNothingLeaked()

    def test_no_descriptors_is_ports_exhausted_at_once_and_not_remembered(self) -> None:
        """EMFILE is not a busy port: the other 49 pairs are not tried, and nothing is kept; on the RTP or
        the RTCP socket. Once descriptors are back, calls get their ports again."""
        for allowed in (0, 1, 2, 3):  # fail on leg a's RTP, its RTCP, leg b's RTP, its RTCP
            with self.subTest(allowed=allowed):
                self.reactor.no_descriptors_after, self.reactor.binds = allowed, 0
                with self.assertRaisesRegex(PortsExhausted, "Too many open files"):
                    self.relay.create_session("c")
                self.assertEqual(self.reactor.binds, allowed + 1)
                self.assertNothingLeaked()
        self.reactor.no_descriptors_after = None
        self.successResultOf(self.relay.create_session("c").close())
        self.assertNothingLeaked()

    def test_exhaustion_on_the_second_leg_gives_the_first_back(self) -> None:
        pool = PortPool(10000, 10005)  # three pairs: one session, then half of one
        relay = UdpMediaRelay(self.reactor, pool)
        relay.create_session("c1")
        self.assertRaises(PortsExhausted, relay.create_session, "c2")
        self.assertEqual((pool.in_use, relay.sessions), (2, 1))
        self.assertEqual(sorted(self.reactor.ports), [10000, 10001, 10002, 10003])
        self.successResultOf(relay.close())
        self.assertEqual((pool.in_use, self.reactor.ports), (0, {}))

    def test_close_stops_relaying_and_is_idempotent(self) -> None:
        session = self.session()
        self.reactor.deliver(10000, rtp(1), PHONE_A)
        closing = self.reactor.ports[10000]
        self.successResultOf(session.close())
        self.successResultOf(session.close())
        self.assertTrue(session.closed)
        closing.protocol.datagramReceived(rtp(2), PHONE_A)  # a datagram already read when the port stopped
        closing.protocol.datagramReceived(rtp(3), NAT_A)
        self.assertEqual(self.reactor.take(), [(10002, rtp(1), PHONE_B)])
        self.assertNothingLeaked()

    def test_ports_go_back_to_the_pool_only_once_the_sockets_are_closed(self) -> None:
        self.reactor.slow_close = True
        session = self.session()
        closed = session.close()
        self.assertNoResult(closed)
        self.assertEqual((self.relay.sessions, self.pool.in_use, self.reactor.ports), (0, 2, {}))
        for d in self.reactor.closing:
            d.callback(None)
        self.successResultOf(closed)
        self.assertNothingLeaked()

    def test_relay_close_closes_every_session(self) -> None:
        for n in range(5):
            self.relay.create_session(f"c{n}")
        self.successResultOf(self.relay.close())
        self.assertNothingLeaked()
        self.assertRaises(RuntimeError, self.relay.create_session, "late")

    def test_ten_thousand_sessions_leave_nothing_behind(self) -> None:
        """Sessions opened and closed in waves (up to 40 at a time, with some traffic) leak no port."""
        pool = self.pool = PortPool(20000, 20999)
        relay = self.relay = UdpMediaRelay(self.reactor, pool)
        opened = 0
        while opened < 10_000:
            wave = [relay.create_session(f"call-{opened + i}") for i in range(40)]
            opened += len(wave)
            self.assertEqual((relay.sessions, pool.in_use, len(self.reactor.ports)), (40, 80, 160))
            for session in wave[::7]:
                a, b = session.leg("a"), session.leg("b")
                b.set_remote(*PHONE_B)
                self.reactor.deliver(a.local_port, rtp(), NAT_A)
                self.reactor.deliver(a.local_port + 1, RTCP_RR, NAT_A)
            for session in wave:
                self.successResultOf(session.close())
            self.reactor.take()
        self.assertNothingLeaked()


def open_sockets() -> set[str]:
    """The inodes ("socket:[N]") of this process's open sockets (Linux)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor of the listing itself, closed by now
            continue
        if link.startswith("socket:"):
            found.add(link)
    return found


class Phone(DatagramProtocol):
    """A UDP endpoint on loopback that queues what it receives."""

    noisy = False

    def __init__(self) -> None:
        self.received: DeferredQueue[tuple[bytes, tuple[str, int]]] = DeferredQueue()

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.received.put((datagram, addr))

    def send(self, data: bytes, port: int) -> None:
        self.transport.write(data, ("127.0.0.1", port))


class LoopbackTests(TestCase):
    """Real sockets on 127.0.0.1; the relay and every phone are closed before each test ends."""

    timeout = 20

    def setUp(self) -> None:
        self.pool = PortPool(42000, 42999)
        self.relay = UdpMediaRelay(reactor, self.pool)
        self.addCleanup(self.relay.close)

    def phone(self) -> tuple[Phone, int]:
        phone = Phone()
        port = reactor.listenUDP(0, phone, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return phone, port.getHost().port

    @inlineCallbacks
    def test_rtp_both_ways_latched_to_a_source_other_than_the_sdp(self) -> Any:
        """A's SDP names a decoy port; A really sends from another one, and B's audio follows A's packets."""
        session = self.relay.create_session("loop-1")
        a, b = session.leg("a"), session.leg("b")
        decoy, decoy_port = self.phone()
        phone_a, phone_a_port = self.phone()
        phone_b, phone_b_port = self.phone()
        a.set_remote("127.0.0.1", decoy_port)
        b.set_remote("127.0.0.1", phone_b_port)
        phone_a.send(rtp(1), a.local_port)
        data, source = yield phone_b.received.get()
        self.assertEqual((data, source), (rtp(1), ("127.0.0.1", b.local_port)))
        phone_b.send(rtp(2), b.local_port)
        data, source = yield phone_a.received.get()
        self.assertEqual((data, source), (rtp(2), ("127.0.0.1", a.local_port)))
        self.assertEqual(a.latched, ("127.0.0.1", phone_a_port))
        self.assertEqual(len(decoy.received.pending), 0)
        stats = session.stats()
        self.assertEqual((stats.a.packets, stats.b.packets, stats.a.dropped, stats.b.dropped), (1, 1, 0, 0))

    @inlineCallbacks
    def test_rtcp_is_relayed_on_the_next_port(self) -> Any:
        session = self.relay.create_session("loop-2")
        a, b = session.leg("a"), session.leg("b")
        phone_a, phone_a_port = self.phone()
        rtcp_b, rtcp_b_port = self.phone()
        a.set_remote("127.0.0.1", phone_a_port)
        b.set_remote("127.0.0.1", 9, rtcp_port=rtcp_b_port)  # RTP to the discard port: never used here
        phone_a.send(RTCP_RR, a.local_port + 1)
        data, source = yield rtcp_b.received.get()
        self.assertEqual((data, source), (RTCP_RR, ("127.0.0.1", b.local_port + 1)))
        self.assertEqual(session.stats().a.rtcp_packets, 1)

    @inlineCallbacks
    def test_garbage_is_not_relayed(self) -> Any:
        """Loopback keeps a socket pair's order: had the garbage been relayed, it would arrive first."""
        session = self.relay.create_session("loop-3")
        a, b = session.leg("a"), session.leg("b")
        phone_a, _ = self.phone()
        phone_b, phone_b_port = self.phone()
        b.set_remote("127.0.0.1", phone_b_port)
        phone_a.send(b"GET / HTTP/1.0\r\n\r\n", a.local_port)
        phone_a.send(b"\x00\x01\x00\x00" + b"\x00" * 16, a.local_port)
        phone_a.send(rtp(7), a.local_port)
        data, _ = yield phone_b.received.get()
        self.assertEqual(data, rtp(7))
        self.assertEqual(session.stats().a.invalid, 2)

    @inlineCallbacks
    def test_closed_sessions_close_their_sockets(self) -> Any:
        """Waves of sessions on real sockets: open sockets and the pool come back to where they were."""
        if not os.path.isdir("/proc/self/fd"):
            self.skipTest("needs /proc/self/fd")
        for _ in range(5):
            before = open_sockets()
            sessions = [self.relay.create_session(f"wave-{n}") for n in range(50)]
            # Sockets of other tests may open or close meanwhile (a connection still closing): tolerated,
            # as long as the relay's 200 are among the new ones and all 200 are gone after the close.
            new = open_sockets() - before
            self.assertGreaterEqual(len(new), 200)
            for session in sessions:
                yield session.close()
            self.assertLessEqual(len(new & open_sockets()), len(new) - 200)
        self.assertEqual((self.pool.in_use, self.relay.sessions), (0, 0))
