"""Tests for `pbx.sip.targets`: failover across the targets of a request within one budget (RFC 3263 4.3)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.sip.resolver import Target
from pbx.sip.targets import Budget, BudgetExpired, TargetList, should_try_next, try_targets
from pbx.sip.timers import TimerConfig


class Attempts:
    """Records attempts; each returns a Deferred the test fires (or `outcomes[target]` at once)."""

    def __init__(self, outcomes: dict[str, Any] | None = None) -> None:
        self.outcomes = outcomes or {}
        self.tried: list[str] = []
        self.pending: dict[str, Deferred] = {}
        self.cancelled: list[str] = []

    def __call__(self, target: str) -> Deferred:
        self.tried.append(target)
        if target in self.outcomes:
            outcome = self.outcomes[target]
            return fail(outcome) if isinstance(outcome, Exception) else succeed(outcome)
        d: Deferred = Deferred(lambda _: self.cancelled.append(target))
        self.pending[target] = d
        return d


class FailoverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_next_target_on_503_408_and_transport_error(self) -> None:
        attempts = Attempts({"a": 503, "c": ConnectionRefusedError()})
        d = try_targets(["a", "b", "c", "d", "e"], attempts, self.clock, 32)
        self.clock.advance(10)
        attempts.pending["b"].callback(408)
        self.clock.advance(10)
        attempts.pending["d"].callback(200)
        self.assertEqual(self.successResultOf(d), 200)
        self.assertEqual(attempts.tried, ["a", "b", "c", "d"])

    def test_a_final_answer_stops(self) -> None:
        attempts = Attempts({"a": 486})
        self.assertEqual(self.successResultOf(try_targets(["a", "b"], attempts, self.clock, 32)), 486)
        self.assertEqual(attempts.tried, ["a"])

    def test_all_failed_gives_the_last_outcome(self) -> None:
        attempts = Attempts({"a": 503, "b": 408})
        self.assertEqual(self.successResultOf(try_targets(["a", "b"], attempts, self.clock, 32)), 408)
        attempts = Attempts({"a": 503, "b": ConnectionRefusedError()})
        self.failureResultOf(try_targets(["a", "b"], attempts, self.clock, 32), ConnectionRefusedError)

    def test_the_budget_is_shared_across_targets(self) -> None:
        """RFC 3263 4.3: one 64*T1 for the request, however many targets it tries."""
        attempts = Attempts()
        budget = Budget(self.clock, 32)
        d = try_targets(["a", "b", "c"], attempts, self.clock, budget)
        self.clock.advance(20)
        self.assertEqual(budget.remaining(), 12)
        attempts.pending["a"].callback(503)
        self.clock.advance(12)
        self.failureResultOf(d, BudgetExpired)
        self.assertEqual(attempts.tried, ["a", "b"])
        self.assertEqual(attempts.cancelled, ["b"])
        self.assertTrue(budget.expired)

    def test_an_outcome_after_the_budget_is_ignored(self) -> None:
        attempts = Attempts()
        d = try_targets(["a"], attempts, self.clock, 1)
        self.clock.advance(1)
        self.failureResultOf(d, BudgetExpired)
        self.assertEqual(attempts.cancelled, ["a"])

    def test_spent_budget_tries_nothing(self) -> None:
        attempts = Attempts()
        self.failureResultOf(try_targets(["a"], attempts, self.clock, 0), BudgetExpired)
        self.assertEqual(attempts.tried, [])

    def test_no_targets(self) -> None:
        self.failureResultOf(try_targets([], Attempts(), self.clock, 32), ValueError)

    def test_cancelling_cancels_the_running_attempt(self) -> None:
        attempts = Attempts()
        d = try_targets(["a", "b"], attempts, self.clock, 32)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(attempts.cancelled, ["a"])
        self.assertEqual(attempts.tried, ["a"])

    def test_an_attempt_that_raises_counts_as_a_failure(self) -> None:
        def attempt(target: str) -> Deferred:
            if target == "a":
                raise OSError("no route")
            return succeed(200)

        self.assertEqual(self.successResultOf(try_targets(["a", "b"], attempt, self.clock, 32)), 200)

    def test_custom_predicate(self) -> None:
        attempts = Attempts({"a": 500, "b": 200})
        d = try_targets(["a", "b"], attempts, self.clock, 32, retry=lambda outcome: outcome == 500)
        self.assertEqual(self.successResultOf(d), 200)

    def test_default_predicate(self) -> None:
        class Response:
            status = 503

        self.assertTrue(should_try_next(Response()))
        self.assertTrue(should_try_next(408))
        self.assertFalse(should_try_next(404))
        self.assertFalse(should_try_next(None))

    def test_target_list(self) -> None:
        budget = Budget(self.clock, 5)
        targets = TargetList(["a", "b", "c"], budget)
        self.assertEqual((targets.next(), len(targets)), ("a", 2))
        self.clock.advance(5)
        self.assertIsNone(targets.next())

    def test_with_resolved_targets_and_a_transaction_budget(self) -> None:
        """The shape a client request helper uses: `Target`s from the resolver, 64*T1 from `TimerConfig`."""
        first, second = Target("udp", "192.0.2.1", 5060), Target("tcp", "192.0.2.2", 5060)
        budget = Budget(self.clock, TimerConfig().timer_b)
        sent: list[tuple[Target, float]] = []

        def attempt(target: Target) -> Deferred:
            sent.append((target, budget.remaining()))
            return succeed(503 if target == first else 200)

        self.assertEqual(self.successResultOf(try_targets([first, second], attempt, self.clock, budget)), 200)
        self.assertEqual(sent, [(first, 32.0), (second, 32.0)])
