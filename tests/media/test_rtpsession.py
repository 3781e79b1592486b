"""Tests for `pbx.media.rtpsession`: RFC 3550 appendix A receive statistics (property-tested against loss,
reordering, duplication and wrap), SSRC switching, sender state and RTCP reports."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.rtp import RtcpPacket, RtcpReceiverReport, RtcpSenderReport
from pbx.media.rtpsession import RtpReceiver, RtpSender, build_report, ntp_time, parse_report


@st.composite
def network(draw: st.DrawFn) -> tuple[int, list[int], int]:
    """(first sequence number, arrival order as packet indices, packets sent)."""
    count = draw(st.integers(3, 300))
    first = draw(st.integers(0, 0xFFFF))
    rng = random.Random(draw(st.integers(0, 2**32)))
    lost = set(rng.sample(range(2, count), k=draw(st.integers(0, (count - 2) // 3))))
    order = [i for i in range(count) if i not in lost]
    for _ in range(draw(st.integers(0, 10))):  # local swaps (reordering within a few packets)
        i = rng.randrange(2, len(order))
        j = min(len(order) - 1, i + rng.randint(1, 5))
        order[i], order[j] = order[j], order[i]
    for _ in range(draw(st.integers(0, 10))):  # duplicates, a few packets later
        i = rng.randrange(1, len(order))
        order.insert(min(len(order), i + rng.randint(0, 5)), order[i])
    return first, order, count


class ReceiveStatsTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(network())
    def test_counts_match_what_the_network_did(self, case: tuple[int, list[int], int]) -> None:
        first, order, _ = case
        receiver = RtpReceiver()
        accepted = 0
        for n, index in enumerate(order):
            ok, changed = receiver.update(77, (first + index) & 0xFFFF, 1000 + 160 * index, 0.02 * n)
            accepted += ok
            self.assertFalse(changed)
        source = receiver.source
        assert source is not None
        unique = set(order)
        self.assertEqual(source.received, len(unique))
        self.assertEqual(accepted, len(unique))
        self.assertEqual(source.duplicates, len(order) - len(unique))
        self.assertEqual(source.extended_max, first + max(unique))
        self.assertEqual(source.expected, max(unique) + 1)
        self.assertEqual(source.lost, max(unique) + 1 - len(unique))

    def test_jitter(self) -> None:
        steady = RtpReceiver()
        for n in range(100):
            steady.update(1, n, 160 * n, 10.0 + 0.02 * n)
        assert steady.source is not None
        self.assertLess(steady.source.jitter, 0.5)
        shaky = RtpReceiver()
        rng = random.Random(4)
        for n in range(500):
            shaky.update(1, n, 160 * n, 10.0 + 0.02 * n + rng.uniform(0, 0.01))
        assert shaky.source is not None
        self.assertTrue(10 < shaky.source.jitter < 40, shaky.source.jitter)  # ~ 3.3 ms in 8 kHz units

    def test_big_jump_resyncs_after_two_sequential_packets(self) -> None:
        receiver = RtpReceiver()
        for seq in range(10):
            receiver.update(1, seq, 0, 0.0)
        self.assertEqual(receiver.update(1, 20000, 0, 0.0), (False, False))
        self.assertEqual(receiver.update(1, 20001, 0, 0.0), (True, False))
        assert receiver.source is not None
        self.assertEqual(receiver.source.lost, 0)

    def test_ssrc_switch_needs_two_in_sequence(self) -> None:
        receiver = RtpReceiver()
        receiver.update(1, 5, 0, 0.0)
        self.assertEqual(receiver.update(2, 100, 0, 0.0), (False, False))
        self.assertEqual(receiver.update(2, 300, 0, 0.0), (False, False))  # not in sequence: start again
        self.assertEqual(receiver.update(2, 301, 0, 0.0), (True, True))
        self.assertEqual((receiver.source.ssrc, receiver.ssrc_changes), (2, 1))  # type: ignore[union-attr]


class SenderAndRtcpTests(SynchronousTestCase):
    def test_random_origin_and_marker(self) -> None:
        a, b = RtpSender(0, 0.0), RtpSender(0, 0.0)
        self.assertNotEqual((a.ssrc, a.seq, a.ts_origin), (b.ssrc, b.seq, b.ts_origin))
        first = a.build(b"x", a.timestamp_at(0.0), 0.0)
        second = a.build(b"x", a.timestamp_at(0.02), 0.02)
        self.assertTrue(first[1] & 0x80)
        self.assertFalse(second[1] & 0x80)
        self.assertEqual((a.timestamp_at(1.0) - a.ts_origin) & 0xFFFFFFFF, 8000)

    def test_ntp_time(self) -> None:
        self.assertEqual(ntp_time(0.5), (2208988800 << 32) | (1 << 31))

    def test_sr_then_rr_with_a_report_block(self) -> None:
        sender = RtpSender(0, 100.0, random.Random(1))
        receiver = RtpReceiver()
        for n in range(50):
            if n != 7:
                receiver.update(9, n, 160 * n, 100.0 + 0.02 * n)
        sender.build(b"\xff" * 160, sender.timestamp_at(100.0), 100.0)
        sr = RtcpPacket.parse_compound(build_report(sender, receiver, 101.0, b"pbx"))
        self.assertIsInstance(sr[0], RtcpSenderReport)
        assert isinstance(sr[0], RtcpSenderReport)
        self.assertEqual((sr[0].packet_count, sr[0].octet_count), (1, 160))
        block = sr[0].reports[0]
        self.assertEqual((block.ssrc, block.cumulative_lost, block.highest_seq), (9, 1, 49))
        self.assertEqual(block.fraction_lost, 256 // 50)
        rr = RtcpPacket.parse_compound(build_report(sender, receiver, 106.0, b"pbx", bye=True))
        self.assertIsInstance(rr[0], RtcpReceiverReport)
        self.assertEqual(rr[0].reports[0].fraction_lost, 0)  # type: ignore[attr-defined]
        self.assertEqual(rr[-1].packet_type, 203)  # type: ignore[attr-defined]

    def test_lsr_dlsr_from_the_peers_sr(self) -> None:
        receiver = RtpReceiver()
        receiver.update(9, 1, 0, 0.0)
        ntp = ntp_time(1234.5)
        peer = RtcpSenderReport(ssrc=9, ntp=ntp, rtp_ts=0, packet_count=1, octet_count=160)
        self.assertIsNone(parse_report(peer.to_bytes(), receiver, 42, 50.0))
        block = receiver.source.report_block(52.0)  # type: ignore[union-attr]
        self.assertEqual(block.lsr, (ntp >> 16) & 0xFFFFFFFF)
        self.assertEqual(block.dlsr, 2 * 65536)
