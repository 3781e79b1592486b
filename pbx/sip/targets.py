"""Failing over between the targets of a request within one transaction's time budget (RFC 3263 4.3).

RFC 3263 4.3: when a request to one target times out (`408` from the transaction), fails at the transport
layer, or is answered `503`, the client tries the next target (a new client transaction with a new branch).
The whole attempt shares one budget, 64*T1 by default (`TimerConfig.timer_b`), however many targets it uses.

Usage, by a client request helper::

    budget = Budget(clock, timers.timer_b)
    outcome = await try_targets(targets, lambda target: send(request, target, budget.remaining()),
                                clock, budget)

- `attempt(target)` starts one try and returns a Deferred firing with its outcome (typically the final
  `Response`); it fails on a transport error. It may read `budget.remaining()` to shorten its own timers.
- `should_try_next(outcome)` says whether an outcome means "try the next target"; the default answers True for
  a status (an int, or an object with a `status` attribute) 408 or 503, and for any failure.
- The Deferred of `try_targets` fires with the first outcome that is not to be retried, or with the last one
  (or fails with the last failure) when no target is left. When the budget runs out, the running attempt is
  cancelled (its Deferred's canceller should end the transaction) and `try_targets` fails with
  `BudgetExpired`. Cancelling the Deferred of `try_targets` cancels the running attempt.

`TargetList` is the same walk for callers that drive it themselves: `next()` gives the next target while the
budget lasts. This module knows nothing of messages, transactions or DNS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

T = TypeVar("T")
O = TypeVar("O")  # noqa: E741

RETRY_STATUSES = frozenset({408, 503})


class BudgetExpired(TimeoutError):
    """The time budget of a request ran out before a target gave a final outcome."""


class Budget:
    """The time left of one request's budget, on an injected clock.

    Args:
        clock: the clock.
        total: seconds from now (64*T1 for a SIP transaction, RFC 3263 4.3).
    """

    def __init__(self, clock: IReactorTime, total: float) -> None:
        self._clock = clock
        self.deadline = clock.seconds() + total

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.deadline - self._clock.seconds())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0


def should_try_next(outcome: Any) -> bool:
    """The default predicate: a failure (transport error) or a status 408/503 means "try the next target"."""
    if isinstance(outcome, Failure):
        return not outcome.check(CancelledError)
    status = outcome if isinstance(outcome, int) else getattr(outcome, "status", None)
    return status in RETRY_STATUSES


class TargetList(Generic[T]):
    """The targets of one request, handed out in order while the budget lasts.

    Args:
        targets: in order of preference (as `SipResolver.resolve` gives them).
        budget: the request's budget.
    """

    def __init__(self, targets: Iterable[T], budget: Budget) -> None:
        self._targets = list(targets)
        self._index = 0
        self.budget = budget

    def __len__(self) -> int:
        """Targets not handed out yet."""
        return len(self._targets) - self._index

    def next(self) -> T | None:
        """The next target, or None when none is left or the budget has run out."""
        if self._index >= len(self._targets) or self.budget.expired:
            return None
        target = self._targets[self._index]
        self._index += 1
        return target


def try_targets(
    targets: Iterable[T],
    attempt: Callable[[T], Deferred[O]],
    clock: IReactorTime,
    budget: Budget | float,
    retry: Callable[[Any], bool] = should_try_next,
) -> Deferred[O]:
    """Try `targets` in turn until an outcome is not to be retried, within one budget (see module docstring).

    Args:
        targets: the targets, best first.
        attempt: starts one try at a target; its Deferred fires with the outcome or fails.
        clock: the clock the budget runs on.
        budget: a `Budget`, or its total in seconds from now.
        retry: whether an outcome (or a `Failure`) means "try the next target".

    Returns:
        A Deferred with the chosen outcome; fails with the last failure, with `BudgetExpired` when time ran
        out, or with `ValueError` when there is no target at all.
    """
    if not isinstance(budget, Budget):
        budget = Budget(clock, budget)
    return _Walk(TargetList(targets, budget), attempt, clock, retry).start()


class _Walk(Generic[T, O]):
    """The state of one `try_targets` call."""

    def __init__(
        self,
        targets: TargetList[T],
        attempt: Callable[[T], Deferred[O]],
        clock: IReactorTime,
        retry: Callable[[Any], bool],
    ) -> None:
        self._targets = targets
        self._attempt = attempt
        self._clock = clock
        self._retry = retry
        self._result: Deferred[O] = Deferred(self._cancel)
        self._current: Deferred[O] | None = None
        self._timer_budget: IDelayedCall | None = None
        self._last: O | Failure | None = None
        self._expired = False

    def start(self) -> Deferred[O]:
        if not len(self._targets):
            self._result.errback(ValueError("no target to try"))
            return self._result
        self._timer_budget = self._clock.callLater(self._targets.budget.remaining(), self._budget_expired)
        self._next()
        return self._result

    def _next(self) -> None:
        target = self._targets.next()
        if target is None:
            if self._expired or self._targets.budget.expired:
                self._finish(Failure(BudgetExpired("request budget expired")))
            else:
                self._finish(self._last)
            return
        try:
            current = self._attempt(target)
        except Exception:
            self._outcome(Failure(), None)
            return
        self._current = current
        current.addBoth(self._outcome, current)

    def _outcome(self, outcome: O | Failure, current: Deferred[O] | None) -> None:
        if current is not None and current is not self._current:
            return None  # an attempt cancelled by the budget or by our caller
        self._current = None
        if self._result.called:
            return None
        self._last = outcome
        if self._retry(outcome) and not self._expired:
            self._next()
        elif self._expired:
            self._finish(Failure(BudgetExpired("request budget expired")))
        else:
            self._finish(outcome)
        return None

    def _budget_expired(self) -> None:
        self._timer_budget = None
        self._expired = True
        current, self._current = self._current, None
        self._finish(Failure(BudgetExpired("request budget expired")))
        if current is not None:
            current.cancel()  # its outcome, a CancelledError most likely, is dropped by _outcome

    def _cancel(self, _result: Deferred[O]) -> None:
        if self._timer_budget is not None and self._timer_budget.active():
            self._timer_budget.cancel()
        self._timer_budget = None
        current, self._current = self._current, None
        if current is not None:
            current.cancel()

    def _finish(self, outcome: Any) -> None:
        if self._timer_budget is not None and self._timer_budget.active():
            self._timer_budget.cancel()
        self._timer_budget = None
        if self._result.called:
            return
        if isinstance(outcome, Failure):
            self._result.errback(outcome)
        else:
            self._result.callback(outcome)
