"""Draining before a stop (issue 17, item 5): no new calls (503 with Retry-After, OPTIONS 503 from the
stack), the calls up go on, and the drain ends when the last one does or when its time is up."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from .fakes import Harness


class DrainTests(SynchronousTestCase):
    def build(self) -> Harness:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        return Harness.build(path, "dial 1002")

    def answered(self, h: Harness):  # type: ignore[no-untyped-def]
        phone = h.place_call()
        callee = h.callee()
        callee.respond(180)
        callee.answer()
        phone.ack()
        return phone

    def test_new_calls_are_refused_and_the_call_up_ends_the_drain(self) -> None:
        h = self.build()
        h.register_1002()
        phone = self.answered(h)
        done = h.b2bua.drain(300)
        self.assertNoResult(done)
        self.assertTrue(h.stack.out_of_service)
        refused = h.caller()
        txn = refused.send_invite()
        assert txn.final is not None
        self.assertEqual(txn.final.status, 503)
        self.assertEqual(txn.final.headers.get("Retry-After"), "60")
        self.assertIsNone(h.b2bua.stateless_challenge(txn.request, refused.flow))
        h.clock.advance(10)
        self.assertNoResult(done)
        phone.bye()
        h.clock.advance(0.5)
        self.successResultOf(done)
        self.assertEqual(h.b2bua.calls, {})
        self.assertEqual(h.leftover_timers(), [])

    def test_the_drain_ends_at_its_timeout_with_calls_still_up(self) -> None:
        h = self.build()
        h.register_1002()
        self.answered(h)
        done = h.b2bua.drain(30)
        h.clock.advance(29.9)
        self.assertNoResult(done)
        h.clock.advance(0.1)
        self.successResultOf(done)
        self.assertEqual(len(h.b2bua.calls), 1)  # `stop` hangs it up next
        self.successResultOf(h.b2bua.stop())
        self.assertEqual(h.b2bua.calls, {})

    def test_nothing_up_nothing_to_wait_for(self) -> None:
        h = self.build()
        self.successResultOf(h.b2bua.drain(300))
        self.assertEqual(h.clock.getDelayedCalls(), [])
