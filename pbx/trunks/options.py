"""OPTIONS pings that tell whether a carrier answers (RFC 3261 11; the "qualify" of other PBXs).

`OptionsPinger` sends an OPTIONS to the carrier every `interval` seconds (the next one `interval` after the
last finished, so pings never overlap) and reports each verdict to `on_result(reachable, code)`:

- any final answer means the carrier is there (`True`), even a 401/407 (it is not answered: a carrier that
  challenges OPTIONS is alive) or a 404/405;
- a `503`, a timeout (Timer F, reported as 408) or a transport error (503) on every target means it is not
  (`False`). Targets are walked as for any request (`pbx.sip.targets.try_targets`): the next one on a
  timeout, a transport error or a 503, within a budget of 64*T1 (Timer F) per target.

The request: Request-URI the carrier (`sip:HOST`), From the account at the carrier with a tag, To the
carrier, a fresh Call-ID each time, `Max-Forwards: 70`, a Route through the outbound proxy when there is one.
`stop()` cancels the timer and the ping under way. This module knows no config and no PBX state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbx.sip.client import ClientRequest
from pbx.sip.message import Request, Response, new_call_id, new_tag
from pbx.sip.resolver import ResolutionError, Target
from pbx.sip.targets import Budget, BudgetExpired, try_targets
from pbx.sip.uri import SipURI

DOWN_STATUSES = frozenset({408, 503})
"""Answers (real or made up for a timeout / transport error) that mean the carrier is not there."""


class OptionsPinger:
    """Ping one carrier with OPTIONS every `interval` seconds.

    Args:
        stack: the `SipStack` (`send_request`, `timers`).
        clock: the clock of the interval timer.
        uri: the Request-URI and To (the carrier).
        from_uri: the From (the account at the carrier).
        locator: anything with `resolve(uri) -> Deferred[list[Target]]` (a `pbx.trunks.targets.TrunkLocator`).
        interval: seconds between the end of one ping and the start of the next.
        on_result: called with (reachable, status code) after each ping.
        route: the outbound proxy's URI (a Route with `lr`, and the URI the targets are looked up for).
    """

    _log = Logger()

    def __init__(
        self,
        stack: Any,
        clock: IReactorTime,
        *,
        uri: SipURI,
        from_uri: SipURI,
        locator: Any,
        interval: float,
        on_result: Callable[[bool, int], None],
        route: SipURI | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._stack = stack
        self._clock = clock
        self._uri = uri
        self._from = from_uri
        self._locator = locator
        self._interval = interval
        self._on_result = on_result
        self._route = route
        self._timer_ping: IDelayedCall | None = None
        self._ping: Deferred[Any] | None = None
        self._stopped = False
        self.pings = 0

    def start(self) -> None:
        """Ping now, then every `interval` seconds until `stop()`."""
        self._send()

    def stop(self) -> None:
        """Cancel the next ping and the one under way (its result is not reported)."""
        self._stopped = True
        if self._timer_ping is not None and self._timer_ping.active():
            self._timer_ping.cancel()
        self._timer_ping = None
        ping, self._ping = self._ping, None
        if ping is not None:
            ping.cancel()

    def _send(self) -> None:
        self._timer_ping = None
        if self._stopped:
            return
        self.pings += 1
        found: Deferred[list[Target]] = self._locator.resolve(self._route or self._uri)
        self._ping = found
        found.addCallback(self._walk)
        found.addCallbacks(self._answered, self._failed)
        found.addErrback(lambda f: self._log.failure("OPTIONS ping of {uri} failed", f, uri=str(self._uri)))

    def _walk(self, targets: list[Target]) -> Deferred[Response]:
        budget = Budget(self._clock, self._stack.timers.timer_b * max(1, len(targets)))
        walk: Deferred[Response] = try_targets(targets, self._send_to, self._clock, budget)
        self._ping = walk
        return walk

    def _send_to(self, target: Target) -> Deferred[Response]:
        client = ClientRequest(
            self._stack,
            self._request(),
            (target.transport, target.address, target.port),
            lambda _realm: None,
            server_name=target.server_name,
        )
        return client.start()

    def _request(self) -> Request:
        request = Request("OPTIONS", self._uri)
        headers = request.headers
        if self._route is not None:
            route = self._route if self._route.has_param("lr") else self._route.with_param("lr")
            headers.add("Route", f"<{route}>")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{self._from}>;tag={new_tag()}")
        headers.add("To", f"<{self._uri}>")
        headers.add("Call-ID", new_call_id(self._uri.host))
        headers.add("CSeq", "1 OPTIONS")
        headers.add("Accept", "application/sdp")
        return request

    def _answered(self, response: Response) -> None:
        self._report(response.status not in DOWN_STATUSES, response.status)

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(BudgetExpired):
            self._report(False, 408)
        elif failure.check(ResolutionError):
            self._report(False, 503)
        else:
            self._log.failure("OPTIONS ping of {uri} failed", failure, uri=str(self._uri))
            self._report(False, 503)

    def _report(self, reachable: bool, code: int) -> None:
        self._ping = None
        if self._stopped:
            return
        self._timer_ping = self._clock.callLater(self._interval, self._send)
        try:
            self._on_result(reachable, code)
        except Exception:
            self._log.failure("OPTIONS result callback failed")
