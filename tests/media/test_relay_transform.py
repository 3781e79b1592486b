"""Tests for the relay's transform hook (`IRelayLeg.set_transform`), on the fake UDP reactor of `test_relay`:
what a transform returns is relayed, None drops, RTCP is not transformed by it (SRTCP has its own hook,
`set_rtcp_transform`), and attaching, detaching, the continuing rewrite and reuse keep their meaning."""

from __future__ import annotations

from pbx.media import UdpMediaRelay
from pbx.media.relay_channel import _Channel
from tests.media.test_relay import PHONE_A, PHONE_B, RTCP_RR, RelayTestCase, rtp
from tests.media.test_relay_attach import Consumer


def upper_payload(packet: bytes) -> bytes:
    return packet[:12] + b"\x01" * (len(packet) - 12)


class TransformTests(RelayTestCase):
    def test_what_the_transform_returns_is_relayed_and_none_drops(self) -> None:
        session = self.session()
        seen: list[bytes] = []

        def transform(packet: bytes) -> bytes | None:
            seen.append(packet)
            return None if packet[3] == 2 else upper_payload(packet)

        session.leg("a").set_transform(transform)
        self.reactor.deliver(10000, rtp(1), PHONE_A)
        self.reactor.deliver(10000, rtp(2), PHONE_A)
        self.assertEqual(seen, [rtp(1), rtp(2)])
        self.assertEqual(self.reactor.take(), [(10002, upper_payload(rtp(1)), PHONE_B)])
        self.assertEqual(session.stats().a.packets, 1)
        self.reactor.deliver(10001, RTCP_RR, ("192.0.2.10", 4001))  # RTCP is not transformed
        self.assertEqual(self.reactor.take(), [(10003, RTCP_RR, ("198.51.100.20", 5001))])
        self.reactor.deliver(10002, rtp(3), PHONE_B)  # the other direction has no transform
        self.assertEqual(self.reactor.take(), [(10000, rtp(3), PHONE_A)])

    def test_removing_the_transform_restores_the_class_hot_path(self) -> None:
        session = self.session()
        leg = session.leg("a")
        leg.set_transform(upper_payload)
        channel = leg._rtp
        self.assertIs(channel.datagramReceived.__func__, _Channel._relay_transformed)
        leg.set_transform(None)
        self.assertIs(channel.datagramReceived.__func__, _Channel.datagramReceived)
        self.reactor.deliver(10000, rtp(1), PHONE_A)
        self.assertEqual(self.reactor.take(), [(10002, rtp(1), PHONE_B)])

    def test_attached_legs_deliver_untransformed_and_detaching_transforms_again(self) -> None:
        session = self.session()
        leg = session.leg("a")
        leg.set_transform(upper_payload)
        consumer = Consumer()
        leg.attach(consumer)
        self.reactor.deliver(10000, rtp(1), PHONE_A)
        self.assertEqual(consumer.rtp, [(rtp(1), PHONE_A)])
        self.assertEqual(self.reactor.take(), [])
        leg.detach()
        self.reactor.deliver(10000, rtp(2), PHONE_A)
        self.assertEqual(self.reactor.take(), [(10002, upper_payload(rtp(2)), PHONE_B)])

    def test_the_transform_sees_the_continued_stream(self) -> None:
        """After the PBX spoke to B, A's packets are renumbered to continue that stream, then transformed."""
        session = self.session()
        seen: list[bytes] = []
        session.leg("a").set_transform(lambda p: seen.append(p) or p)
        b = session.leg("b")
        b.attach(Consumer())
        b.send_rtp(rtp(500, ssrc=0x9999))
        b.detach()
        self.reactor.take()
        self.reactor.deliver(10000, rtp(7), PHONE_A)
        (packet,) = seen
        self.assertEqual(packet[2:4], (501).to_bytes(2, "big"))
        self.assertEqual(packet[8:12], (0x9999).to_bytes(4, "big"))

    def test_a_closed_leg_takes_no_transform_and_reuse_forgets_it(self) -> None:
        relay = UdpMediaRelay(self.reactor, self.pool, bind_host="10.0.0.1", keep_open=2, reuse_after=0)
        session = relay.create_session("one")
        session.leg("a").set_transform(upper_payload)
        self.successResultOf(session.close())
        session.leg("a").set_transform(upper_payload)  # closed: ignored
        again = relay.create_session("two")
        again.leg("a").set_remote(*PHONE_A)
        again.leg("b").set_remote(*PHONE_B)
        port = again.leg("a").local_port
        self.reactor.deliver(port, rtp(1), PHONE_A)
        self.assertEqual(self.reactor.take(), [(again.leg("b").local_port, rtp(1), PHONE_B)])


class TapTests(RelayTestCase):
    def test_the_tap_sees_each_packet_before_the_transform_and_changes_nothing(self) -> None:
        session = self.session()
        leg = session.leg("a")
        seen: list[bytes] = []
        leg.set_tap(seen.append)
        self.reactor.deliver(10000, rtp(1), PHONE_A)
        self.assertEqual(self.reactor.take(), [(10002, rtp(1), PHONE_B)])
        leg.set_transform(upper_payload)  # a transform set later keeps the tap
        self.reactor.deliver(10000, rtp(2), PHONE_A)
        self.assertEqual(self.reactor.take(), [(10002, upper_payload(rtp(2)), PHONE_B)])
        self.assertEqual(seen, [rtp(1), rtp(2)])
        leg.set_tap(None)  # the transform alone again, then the plain hot path
        self.reactor.deliver(10000, rtp(3), PHONE_A)
        self.assertEqual(seen, [rtp(1), rtp(2)])
        leg.set_transform(None)
        self.assertIs(leg._rtp.datagramReceived.__func__, _Channel.datagramReceived)


class RtcpTransformTests(RelayTestCase):
    def test_srtcp_decrypted_and_encrypted_between_an_srtp_leg_and_a_plain_one(self) -> None:
        import os

        from pbx.media.srtp import SrtpLeg, srtcp_transform

        phone_key, pbx_key = os.urandom(30), os.urandom(30)
        pbx = SrtpLeg("AES_CM_128_HMAC_SHA1_80", phone_key, pbx_key)
        phone = SrtpLeg("AES_CM_128_HMAC_SHA1_80", pbx_key, phone_key)
        session = self.session()
        session.leg("a").set_rtcp_transform(srtcp_transform(pbx, None))
        session.leg("b").set_rtcp_transform(srtcp_transform(None, pbx))
        protected = phone.protect_rtcp(RTCP_RR)
        assert protected is not None
        self.reactor.deliver(10001, protected, ("192.0.2.10", 4001))
        self.assertEqual(self.reactor.take(), [(10003, RTCP_RR, ("198.51.100.20", 5001))])
        self.reactor.deliver(10001, protected, ("192.0.2.10", 4001))  # replayed: dropped
        self.assertEqual(self.reactor.take(), [])
        self.reactor.deliver(10003, RTCP_RR, ("198.51.100.20", 5001))
        ((port, sent, to),) = self.reactor.take()
        self.assertEqual((port, to), (10001, ("192.0.2.10", 4001)))
        self.assertEqual(phone.unprotect_rtcp(sent), RTCP_RR)
        self.assertEqual(pbx.stats.rtcp_dropped, 1)
        session.leg("a").set_rtcp_transform(None)
        self.reactor.deliver(10001, RTCP_RR, ("192.0.2.10", 4001))
        self.assertEqual(self.reactor.take(), [(10003, RTCP_RR, ("198.51.100.20", 5001))])
