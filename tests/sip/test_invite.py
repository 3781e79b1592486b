"""Tests for `pbx.sip.invite`: the UAS's 2xx retransmission until the ACK (RFC 3261 13.3.1.4) and the UAC's
ACK cache for retransmitted 2xx responses (13.2.2.4), on a `task.Clock`. No sockets, no sleeps."""

from __future__ import annotations

import itertools

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.sip.dialog import Dialog
from pbx.sip.invite import (
    CONFIRMED,
    INPUTS,
    RETRANSMITTER,
    STOPPED,
    TIMED_OUT,
    WAITING,
    UacAckCache,
    Uas2xxRetransmitter,
    ack_key,
)
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.timers import TimerConfig

INVITE = (
    "INVITE sip:1002@198.51.100.7 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKours;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:pbx@pbx.example.com>;tag=pbxtag\r\n"
    "To: <sip:1002@pbx.example.com>\r\n"
    "Call-ID: call-b@203.0.113.1\r\n"
    "CSeq: 20 INVITE\r\n"
    "Contact: <sip:pbx@203.0.113.1>\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def response(status: int = 200, *, cseq: str = "20 INVITE", to_tag: str = "bobtag") -> Response:
    message = parse_message(
        (
            f"SIP/2.0 {status} OK\r\n"
            "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKours;rport=5060\r\n"
            "From: <sip:pbx@pbx.example.com>;tag=pbxtag\r\n"
            f"To: <sip:1002@pbx.example.com>;tag={to_tag}\r\n"
            "Call-ID: call-b@203.0.113.1\r\n"
            f"CSeq: {cseq}\r\n"
            "Contact: <sip:1002@198.51.100.7>\r\n"
            "Content-Length: 0\r\n"
            "\r\n"
        ).encode()
    )
    assert isinstance(message, Response)
    return message


class Harness:
    def __init__(self, timers: TimerConfig | None = None) -> None:
        self.clock = Clock()
        self.timers = timers or TimerConfig()
        self.sent_at: list[float] = []
        self.timeouts: list[float] = []

    def send(self) -> None:
        self.sent_at.append(self.clock.seconds())

    def on_timeout(self) -> None:
        self.timeouts.append(self.clock.seconds())

    def retransmitter(self, *, reliable: bool = False) -> Uas2xxRetransmitter:
        return Uas2xxRetransmitter(self.clock, self.timers, self.send, self.on_timeout, reliable=reliable)

    def intervals(self) -> list[float]:
        times = [0.0, *self.sent_at]
        return [b - a for a, b in itertools.pairwise(times)]


class Uas2xxRetransmitterTests(SynchronousTestCase):
    def test_schedule_and_timeout(self) -> None:
        """Re-sent after 0.5, 1, 2, 4, 4 ... seconds; timeout once at 64*T1 = 32 s, then nothing runs."""
        h = Harness()
        retransmitter = h.retransmitter()
        h.clock.pump([0.5] * 100)
        self.assertEqual(h.intervals(), [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0])
        self.assertEqual(h.sent_at, [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
        self.assertEqual(h.timeouts, [32.0])
        self.assertEqual(retransmitter.state, TIMED_OUT)
        self.assertFalse(retransmitter.waiting)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_ack_stops_retransmission(self) -> None:
        h = Harness()
        retransmitter = h.retransmitter()
        h.clock.pump([0.5] * 4)
        retransmitter.ack_received()
        self.assertEqual(retransmitter.state, CONFIRMED)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.clock.pump([0.5] * 100)
        self.assertEqual(h.sent_at, [0.5, 1.5])
        self.assertEqual(h.timeouts, [])
        retransmitter.ack_received()  # a retransmitted ACK: no-op
        retransmitter.stop()
        self.assertEqual(retransmitter.state, CONFIRMED)

    def test_reliable_transport_only_waits_for_ack(self) -> None:
        h = Harness()
        h.retransmitter(reliable=True)
        h.clock.pump([0.5] * 100)
        self.assertEqual(h.sent_at, [])
        self.assertEqual(h.timeouts, [32.0])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stop_reports_nothing(self) -> None:
        h = Harness()
        retransmitter = h.retransmitter()
        h.clock.pump([0.5, 0.5])
        retransmitter.stop()
        self.assertEqual(retransmitter.state, STOPPED)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.clock.advance(100)
        self.assertEqual((h.sent_at, h.timeouts), ([0.5], []))

    def test_ack_after_timeout_is_ignored(self) -> None:
        h = Harness()
        retransmitter = h.retransmitter()
        h.clock.pump([1] * 40)
        retransmitter.ack_received()
        self.assertEqual(retransmitter.state, TIMED_OUT)
        self.assertEqual(len(h.timeouts), 1)

    def test_timer_values_come_from_config(self) -> None:
        h = Harness(TimerConfig(t1=1.0, t2=2.0))
        h.retransmitter()
        h.clock.pump([0.5] * 200)
        self.assertEqual(h.sent_at[:4], [1.0, 3.0, 5.0, 7.0])
        self.assertEqual(h.timeouts, [64.0])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_one_timer_at_a_time(self) -> None:
        """Timer G runs alone while retransmissions come before the deadline, then Timer H alone."""
        h = Harness()
        h.retransmitter()
        for _ in range(63):
            self.assertEqual(len(h.clock.getDelayedCalls()), 1)
            h.clock.advance(0.5)
        self.assertEqual(h.timeouts, [])
        h.clock.advance(0.5)
        self.assertEqual(h.timeouts, [32.0])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_no_retransmission_at_the_deadline(self) -> None:
        """A retransmission due at 64*T1 exactly is not sent: the wait is over (Timer H comes first)."""
        h = Harness(TimerConfig(t1=0.5, t2=0.5))
        h.retransmitter()
        h.clock.pump([0.25] * 200)
        self.assertEqual(h.sent_at[-1], 31.5)
        self.assertEqual(len(h.sent_at), 63)
        self.assertEqual(h.timeouts, [32.0])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_ack_during_send(self) -> None:
        """An ACK handled while `send` runs (a synchronous loopback) leaves no timer behind."""
        h = Harness()
        holder: list[Uas2xxRetransmitter] = []
        retransmitter = Uas2xxRetransmitter(h.clock, h.timers, lambda: holder[0].ack_received(), h.on_timeout)
        holder.append(retransmitter)
        h.clock.advance(0.5)
        self.assertEqual(retransmitter.state, CONFIRMED)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_table_covers_waiting(self) -> None:
        for event in INPUTS:
            self.assertIn((WAITING, event), RETRANSMITTER)


class UacAckCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.cache = UacAckCache(self.clock, TimerConfig())
        self.acks: list[float] = []

    def send_ack(self) -> None:
        self.acks.append(self.clock.seconds())

    def test_key_is_dialog_key_and_cseq(self) -> None:
        invite = parse_message(INVITE.encode())
        assert isinstance(invite, Request)
        ok = response()
        dialog = Dialog.create_uac(invite, ok)
        self.assertEqual(ack_key(ok), (*dialog.key, 20))

    def test_stray_2xx_is_answered_with_the_same_ack(self) -> None:
        self.cache.remember(ack_key(response()), self.send_ack)
        self.clock.advance(4)
        self.assertTrue(self.cache.on_stray_2xx(response()))
        self.assertTrue(self.cache.on_stray_2xx(response()))
        self.assertEqual(self.acks, [4.0, 4.0])

    def test_other_responses_are_not_answered(self) -> None:
        self.cache.remember(ack_key(response()), self.send_ack)
        self.assertFalse(self.cache.on_stray_2xx(response(180)))
        self.assertFalse(self.cache.on_stray_2xx(response(486)))
        self.assertFalse(self.cache.on_stray_2xx(response(cseq="21 INVITE")))
        self.assertFalse(self.cache.on_stray_2xx(response(cseq="20 BYE")))
        self.assertFalse(self.cache.on_stray_2xx(response(to_tag="otherfork")))
        self.assertEqual(self.acks, [])

    def test_entries_expire_after_64_t1(self) -> None:
        self.cache.remember(ack_key(response()), self.send_ack)
        self.clock.advance(31.9)
        self.assertIn(ack_key(response()), self.cache)
        self.clock.advance(0.1)
        self.assertFalse(self.cache.on_stray_2xx(response()))
        self.assertEqual(len(self.cache), 0)
        self.assertEqual(self.acks, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_remember_again_replaces_and_restarts(self) -> None:
        key = ack_key(response())
        self.cache.remember(key, lambda: None)
        self.clock.advance(20)
        self.cache.remember(key, self.send_ack)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(20)
        self.assertTrue(self.cache.on_stray_2xx(response()))
        self.assertEqual(self.acks, [40.0])
        self.clock.advance(12)
        self.assertEqual(len(self.cache), 0)

    def test_forget_and_clear_cancel_timers(self) -> None:
        self.cache.remember(ack_key(response()), self.send_ack)
        self.cache.remember(ack_key(response(cseq="21 INVITE")), self.send_ack)
        self.cache.forget(ack_key(response()))
        self.cache.forget(ack_key(response()))  # unknown: ignored
        self.assertEqual(list(self.cache), [ack_key(response(cseq="21 INVITE"))])
        self.cache.clear()
        self.assertEqual(len(self.cache), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
