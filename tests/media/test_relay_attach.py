"""Tests for attaching the PBX itself to a relayed leg (`IRelayLeg.attach`/`detach`/`send_rtp`/`send_rtcp`):
on the fake UDP reactor of `test_relay`, on the in-memory relay, and once over real loopback sockets."""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from pbx.media import MemoryMediaRelay, PortPool, UdpMediaRelay
from pbx.media.interfaces import IRelayLeg, IRtpTransport
from pbx.media.relay import SWITCH_AFTER
from tests.media.test_relay import NAT_A, PHONE_A, PHONE_B, RTCP_RR, Phone, RelayTestCase, rtp

Address = tuple[str, int]


class Consumer:
    """Records what an attached leg hands over."""

    def __init__(self) -> None:
        self.rtp: list[tuple[bytes, Address]] = []
        self.rtcp: list[tuple[bytes, Address]] = []

    def rtp_received(self, data: bytes, addr: Address) -> None:
        self.rtp.append((data, addr))

    def rtcp_received(self, data: bytes, addr: Address) -> None:
        self.rtcp.append((data, addr))


class Broken(Consumer):
    def rtp_received(self, data: bytes, addr: Address) -> None:
        raise RuntimeError("boom")


class AttachTests(RelayTestCase):
    def test_legs_are_rtp_transports_for_media_endpoints(self) -> None:
        for relay in [self.relay, MemoryMediaRelay()]:
            leg = relay.create_session("call-x").leg("a")
            verifyObject(IRelayLeg, leg)
            verifyObject(IRtpTransport, leg)

    def test_an_attached_legs_phone_talks_to_the_consumer_not_the_other_phone(self) -> None:
        session = self.session()
        consumer = Consumer()
        session.leg("a").attach(consumer)
        self.assertTrue(session.leg("a").attached)
        self.reactor.deliver(10000, rtp(1), NAT_A)
        self.reactor.deliver(10001, RTCP_RR, ("192.0.2.10", 4001))
        self.assertEqual(self.reactor.take(), [])
        self.assertEqual(consumer.rtp, [(rtp(1), NAT_A)])
        self.assertEqual(consumer.rtcp, [(RTCP_RR, ("192.0.2.10", 4001))])
        self.assertEqual(session.leg("a").latched, NAT_A)  # latching goes on
        stats = session.stats()
        self.assertEqual((stats.a.packets, stats.a.rtcp_packets, stats.a.dropped), (1, 1, 0))

    def test_the_other_legs_packets_are_withheld_from_the_attached_phone(self) -> None:
        session = self.session()
        session.leg("a").attach(Consumer())
        self.reactor.deliver(10002, rtp(1), PHONE_B)
        self.reactor.deliver(10003, RTCP_RR, ("198.51.100.20", 5001))
        self.assertEqual(self.reactor.take(), [])
        stats = session.stats()
        self.assertEqual((stats.b.dropped, stats.b.packets, stats.b.latched), (2, 0, PHONE_B))

    def test_the_latch_moving_while_attached_does_not_reopen_the_other_direction(self) -> None:
        session = self.session()
        session.leg("a").attach(Consumer())
        self.reactor.deliver(10000, rtp(1), NAT_A)
        self.reactor.deliver(10000, rtp(2), PHONE_A)  # the SDP address takes the latch over
        self.reactor.deliver(10002, rtp(3), PHONE_B)
        self.assertEqual(self.reactor.take(), [])
        self.assertEqual(session.leg("a").latched, PHONE_A)

    def test_invalid_and_foreign_packets_never_reach_the_consumer(self) -> None:
        session = self.session()
        consumer = Consumer()
        session.leg("a").attach(consumer)
        self.reactor.deliver(10000, rtp(1), NAT_A)
        self.reactor.deliver(10000, b"hello world!", NAT_A)
        for _ in range(SWITCH_AFTER - 1):
            self.reactor.deliver(10000, rtp(9), ("192.0.2.66", 7777))
        self.assertEqual(consumer.rtp, [(rtp(1), NAT_A)])
        stats = session.stats()
        self.assertEqual((stats.a.invalid, stats.a.foreign), (1, SWITCH_AFTER - 1))

    def test_send_goes_from_the_legs_own_sockets_to_its_phone(self) -> None:
        """To the SDP address before the first packet, to the latched one after; RTCP likewise."""
        session = self.session()
        leg = session.leg("a")
        leg.attach(Consumer())
        leg.send_rtp(rtp(1))
        leg.send_rtcp(RTCP_RR)
        self.reactor.deliver(10000, rtp(2), NAT_A)
        leg.send_rtp(rtp(3))
        self.assertEqual(
            self.reactor.take(),
            [(10000, rtp(1), PHONE_A), (10001, RTCP_RR, ("192.0.2.10", 4001)), (10000, rtp(3), NAT_A)],
        )
        self.assertEqual((leg.sent, leg.unsent), (3, 0))

    def test_send_works_unattached_too(self) -> None:
        session = self.session()
        session.leg("b").send_rtp(rtp(1))
        self.assertEqual(self.reactor.take(), [(10002, rtp(1), PHONE_B)])

    def test_send_without_an_address_or_after_close_is_dropped_and_counted(self) -> None:
        session = self.session(a=None)
        leg = session.leg("a")
        leg.send_rtp(rtp(1))
        leg.send_rtcp(RTCP_RR)
        session.close()
        session.leg("b").send_rtp(rtp(2))
        self.assertEqual(self.reactor.take(), [])
        self.assertEqual((leg.sent, leg.unsent, session.leg("b").unsent), (0, 2, 1))

    def test_send_errors_are_counted_not_raised(self) -> None:
        session = self.session()
        self.reactor.ports[10000].fail_with = OSError(1, "Operation not permitted")
        session.leg("a").send_rtp(rtp(1))
        self.assertEqual((session.stats().a.send_errors, session.leg("a").sent), (1, 0))

    def test_detach_relays_both_ways_again(self) -> None:
        session = self.session()
        consumer = Consumer()
        leg = session.leg("a")
        leg.attach(consumer)
        self.reactor.deliver(10000, rtp(1), NAT_A)
        leg.detach()
        leg.detach()  # idempotent
        self.assertFalse(leg.attached)
        self.reactor.deliver(10000, rtp(2), NAT_A)
        self.reactor.deliver(10002, rtp(3), PHONE_B)
        self.assertEqual(self.reactor.take(), [(10002, rtp(2), PHONE_B), (10000, rtp(3), NAT_A)])
        self.assertEqual(consumer.rtp, [(rtp(1), NAT_A)])

    def test_both_legs_attached_independently(self) -> None:
        session = self.session()
        on_a, on_b = Consumer(), Consumer()
        session.leg("a").attach(on_a)
        session.leg("b").attach(on_b)
        self.reactor.deliver(10000, rtp(1), PHONE_A)
        self.reactor.deliver(10002, rtp(2), PHONE_B)
        self.assertEqual((on_a.rtp, on_b.rtp), ([(rtp(1), PHONE_A)], [(rtp(2), PHONE_B)]))
        session.leg("b").detach()  # music on hold to a goes on; b's phone hears nothing of a's yet
        self.reactor.deliver(10000, rtp(3), PHONE_A)
        self.reactor.deliver(10002, rtp(4), PHONE_B)
        self.assertEqual(self.reactor.take(), [])
        self.assertEqual(on_a.rtp[-1], (rtp(3), PHONE_A))
        session.leg("b").send_rtp(rtp(5))  # e.g. a ringback or an announcement to b
        self.assertEqual(self.reactor.take(), [(10002, rtp(5), PHONE_B)])
        self.assertEqual(session.stats().b.dropped, 1)  # b -> a withheld: a is attached

    def test_attaching_again_replaces_the_consumer(self) -> None:
        session = self.session()
        first, second = Consumer(), Consumer()
        session.leg("a").attach(first)
        session.leg("a").attach(second)
        self.reactor.deliver(10000, rtp(1), PHONE_A)
        self.assertEqual((first.rtp, second.rtp), ([], [(rtp(1), PHONE_A)]))

    def test_consumer_errors_are_logged_not_raised(self) -> None:
        session = self.session()
        session.leg("a").attach(Broken())
        self.reactor.deliver(10000, rtp(1), PHONE_A)
        self.reactor.deliver(10000, rtp(2), PHONE_A)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # logged once per channel

    def test_close_detaches_and_attach_after_close_does_nothing(self) -> None:
        session = self.session()
        leg = session.leg("a")
        leg.attach(Consumer())
        session.close()
        self.assertFalse(leg.attached)
        leg.attach(Consumer())
        self.assertFalse(leg.attached)
        self.assertEqual((self.pool.in_use, self.reactor.ports), (0, {}))


class MemoryAttachTests(SynchronousTestCase):
    def test_memory_legs_record_what_is_sent_and_deliver_what_tests_inject(self) -> None:
        relay = MemoryMediaRelay()
        session = relay.create_session("call-1")
        leg = session.leg("a")
        consumer = Consumer()
        self.assertFalse(leg.receive_rtp(rtp(1), PHONE_A))  # not attached: nothing happens
        leg.send_rtp(rtp(1))  # no address yet
        leg.set_remote(*PHONE_A)
        leg.attach(consumer)
        self.assertTrue(leg.attached)
        leg.send_rtp(rtp(2))
        leg.send_rtcp(RTCP_RR)
        self.assertTrue(leg.receive_rtp(rtp(3)))
        self.assertTrue(leg.receive_rtcp(RTCP_RR))
        self.assertEqual((leg.sent_rtp, leg.sent_rtcp, leg.unsent), ([rtp(2)], [RTCP_RR], 1))
        self.assertEqual(consumer.rtp, [(rtp(3), PHONE_A)])
        self.assertEqual(consumer.rtcp, [(RTCP_RR, ("192.0.2.10", 4001))])
        leg.detach()
        self.assertFalse(leg.attached)
        leg.attach(consumer)
        session.close()
        self.assertFalse(leg.attached)
        leg.send_rtp(rtp(4))
        self.assertEqual(leg.unsent, 2)


class LoopbackAttachTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.relay = UdpMediaRelay(reactor, PortPool(43000, 43999))
        self.addCleanup(self.relay.close)

    def phone(self) -> tuple[Phone, int]:
        phone = Phone()
        port = reactor.listenUDP(0, phone, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return phone, port.getHost().port

    @inlineCallbacks
    def test_the_pbx_speaks_and_listens_on_a_real_leg(self) -> Any:
        session = self.relay.create_session("loop-attach")
        a = session.leg("a")
        phone_a, phone_a_port = self.phone()
        a.set_remote("127.0.0.1", phone_a_port)
        heard: list[tuple[bytes, Address]] = []

        class Listener(Consumer):
            def rtp_received(self, data: bytes, addr: Address) -> None:
                heard.append((data, addr))
                a.send_rtp(rtp(100))  # answer every packet: an echo test

        a.attach(Listener())
        phone_a.send(rtp(1), a.local_port)
        data, source = yield phone_a.received.get()
        self.assertEqual((data, source), (rtp(100), ("127.0.0.1", a.local_port)))
        self.assertEqual(heard, [(rtp(1), ("127.0.0.1", phone_a_port))])


def rtp_ids(data: bytes) -> tuple[int, int, int]:
    """(sequence number, timestamp, SSRC) of an RTP packet."""
    return struct.unpack_from("!HII", data, 2)


class ContinuityTests(RelayTestCase):
    """What a phone receives stays one RTP stream across the PBX speaking to it (music on hold, IVR)."""

    def test_last_sent_is_the_last_packet_relayed_to_the_phone(self) -> None:
        session = self.session()
        a = session.leg("a")
        self.assertIsNone(a.last_sent)
        self.reactor.advance(7)
        self.reactor.deliver(10002, rtp(42, ssrc=0xB0B), PHONE_B)
        self.assertEqual(a.last_sent, (0xB0B, 42, 42 * 160, 7.0))
        self.assertIsNone(session.leg("b").last_sent)

    def test_while_attached_last_sent_is_the_pbxs_own_stream(self) -> None:
        session = self.session()
        a = session.leg("a")
        self.reactor.deliver(10002, rtp(42, ssrc=0xB0B), PHONE_B)
        a.attach(Consumer())
        self.assertEqual(a.last_sent[:3], (0xB0B, 42, 42 * 160))  # nothing of ours yet
        a.send_rtp(rtp(900, ssrc=0xAAA))
        self.assertEqual(a.last_sent[:3], (0xAAA, 900, 900 * 160))

    def test_after_detach_the_other_phone_continues_the_pbxs_stream(self) -> None:
        session = self.session()
        a = session.leg("a")
        a.attach(Consumer())
        a.send_rtp(rtp(900, ssrc=0xAAA))
        self.reactor.take()
        a.detach()
        self.assertEqual(a.last_sent[:3], (0xAAA, 900, 900 * 160))
        for seq in (5, 6, 8):  # 7 was lost on the way: the gap stays a gap
            self.reactor.deliver(10002, rtp(seq, b"\x01" * 160, ssrc=0xB0B), PHONE_B)
        sent = self.reactor.take()
        self.assertEqual([(port, to) for port, _, to in sent], [(10000, PHONE_A)] * 3)
        ts0 = 900 * 160 + 160
        self.assertEqual(
            [rtp_ids(data) for _, data, _ in sent],
            [(901, ts0, 0xAAA), (902, ts0 + 160, 0xAAA), (904, ts0 + 480, 0xAAA)],
        )
        self.assertEqual([data[12:] for _, data, _ in sent], [b"\x01" * 160] * 3)  # payload untouched
        self.assertEqual(a.last_sent[:3], (0xAAA, 904, ts0 + 480))
        # The other phone's stream changes (a re-INVITE, a new SSRC): still continuous.
        self.reactor.deliver(10002, rtp(60000, ssrc=0xC0C), PHONE_B)
        ((_, data, _),) = self.reactor.take()
        self.assertEqual(rtp_ids(data), (905, ts0 + 640, 0xAAA))
        # The other direction is not rewritten.
        self.reactor.deliver(10000, rtp(3, ssrc=0xAAA0), PHONE_A)
        ((_, data, _),) = self.reactor.take()
        self.assertEqual(data, rtp(3, ssrc=0xAAA0))

    def test_a_leg_that_never_spoke_keeps_the_raw_hot_path(self) -> None:
        session = self.session()
        a, b = session.leg("a"), session.leg("b")
        a.attach(Consumer())
        a.detach()  # the PBX listened but sent nothing
        self.reactor.deliver(10002, rtp(5, ssrc=0xB0B), PHONE_B)
        self.assertEqual(self.reactor.take(), [(10000, rtp(5, ssrc=0xB0B), PHONE_A)])
        for leg in (a, b):
            self.assertNotIn("datagramReceived", leg._rtp.__dict__)

    def test_a_reused_socket_forgets_the_continuation(self) -> None:
        relay = UdpMediaRelay(self.reactor, PortPool(10000, 10099), bind_host="10.0.0.1", keep_open=4)
        session = relay.create_session("c1")
        session.leg("a").set_remote(*PHONE_A)
        session.leg("a").attach(Consumer())
        session.leg("a").send_rtp(rtp(900, ssrc=0xAAA))
        session.leg("a").detach()
        self.successResultOf(session.close())
        self.reactor.advance(10)
        again = relay.create_session("c2")
        again.leg("a").set_remote(*PHONE_A)
        again.leg("b").set_remote(*PHONE_B)
        self.reactor.take()
        self.reactor.deliver(again.leg("b").local_port, rtp(5, ssrc=0xB0B), PHONE_B)
        ((_, data, _),) = self.reactor.take()
        self.assertEqual(data, rtp(5, ssrc=0xB0B))
        self.assertIsNone(relay.create_session("c3").leg("a").last_sent)

    def test_memory_legs_report_their_last_rtp(self) -> None:
        leg = MemoryMediaRelay().create_session("c").leg("a")
        leg.set_remote(*PHONE_A)
        self.assertIsNone(leg.last_sent)
        leg.send_rtp(rtp(9, ssrc=0xAAA))
        self.assertEqual(leg.last_sent, (0xAAA, 9, 9 * 160, 0.0))
