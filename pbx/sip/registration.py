"""The registration client: keep one binding of a Contact at a registrar (RFC 3261 10.2, 10.3; RFC 3263 4.3).

`RegistrationClient` sends REGISTER for one address-of-record and keeps the binding alive (pjsip's `regc`):

- Every REGISTER of the binding has the same Call-ID and From tag and a CSeq one higher than the last
  (RFC 3261 10.2.4, also across digest retries); To is the AoR, the Request-URI the registrar. Our Contact
  carries `expires=N` and the request an `Expires: N` header (both the same value).
- Digest challenges (401 and 407, MD5/SHA-256/SHA-512-256) are answered by `pbx.sip.client.ClientRequest`
  with a `DigestCache` per target, so a refresh answers the last challenge pre-emptively (nc counting up).
- The granted expiry is read from the 200: the `expires` parameter of our Contact in its Contact list
  (RFC 3261 10.2.4), else its Expires header, else what we asked for.
- Refresh rule: after `max(min(granted - margin, 0.9 * granted), granted / 2)` seconds, margin 5 s by default:
  90 % of a long expiry (3600 s: after 3240 s), `granted - 5` below 50 s, never earlier than half of it
  (a 2 s grant is refreshed after 1 s).
- `423 Interval Too Brief`: retried at once with the Min-Expires value (RFC 3261 10.2.8), at most twice in a
  row.
- Targets: `resolver` is a `SipResolver` (RFC 3263 lookup of the registrar, or of the outbound proxy when
  there is one; the proxy then goes in a Route header with `lr`) or a fixed list of `Target`s. One attempt
  tries the targets in turn (`pbx.sip.targets.try_targets`) on timeout, transport error or 503, within a
  budget of 2 x 64*T1 per target. Once a target accepts, later attempts try it first (the others follow
  only when it times out, fails at the transport or answers 503); a failed attempt forgets it.
- Failure (any other final response, timeout, transport error, no target): state `failed` with the code and
  reason, and a new attempt after a back-off: `retry_base` (30 s) doubling per consecutive failure up to
  `retry_max` (600 s), shortened by up to `jitter` (20 %) at random; a Retry-After on a 500 or 503 is honoured
  instead (bounded to `retry_max`). Timeouts and transport errors come back as 408 / 503 with the reason.
- Over TCP/TLS the stack's transport manager reuses the open connection to the target's address, so refreshes
  and the final unregister travel on the flow of the first REGISTER.
- `stop()` cancels the timers and, when a binding may exist, sends Expires 0 for our Contact (RFC 3261
  10.2.2); its Deferred fires when that is answered, or after `stop_timeout` seconds.

States: `unregistered` (built), `registering`, `registered`, `failed`, `stopped`; each change is reported
to `on_state` with a `RegistrationStatus` (also the `status` property). Not done: RFC 5626 outbound
(instance-id, reg-id, keep-alives); a Contact that changes with the target (another transport) leaves the old
binding to lapse. This module knows no PBX: trunks and their configuration build clients from here.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbx.sip.client import ClientRequest
from pbx.sip.client_auth import CredentialLookup, DigestCache
from pbx.sip.errors import SipParseError
from pbx.sip.headers import NameAddress
from pbx.sip.interfaces import ISipStack
from pbx.sip.message import Request, Response, new_call_id, new_tag
from pbx.sip.resolver import ResolutionError, Target
from pbx.sip.targets import Budget, BudgetExpired, try_targets
from pbx.sip.uri import SipURI, parse_sip_uri

UNREGISTERED = "unregistered"
REGISTERING = "registering"
REGISTERED = "registered"
FAILED = "failed"
STOPPED = "stopped"

# Which state may follow which (entering `registering` starts an attempt; `registered` the refresh timer;
# `failed` the retry timer; `stopped` cancels them all).
TRANSITIONS: dict[str, frozenset[str]] = {
    UNREGISTERED: frozenset({REGISTERING, STOPPED}),
    REGISTERING: frozenset({REGISTERING, REGISTERED, FAILED, STOPPED}),
    REGISTERED: frozenset({REGISTERING, STOPPED}),
    FAILED: frozenset({REGISTERING, STOPPED}),
    STOPPED: frozenset(),
}

MAX_EXPIRES = 2**32 - 1  # delta-seconds (RFC 3261 25.1)
_MAX_423 = 2  # consecutive 423 answers followed within one attempt
_RETRY_AFTER_STATUSES = frozenset({500, 503})


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    """What a registration client reports.

    Attributes:
        state: one of `unregistered`, `registering`, `registered`, `failed`, `stopped`.
        code: the status of the last final response (synthesized 408/503 for timeouts and transport errors).
        reason: its reason, or why it was synthesized ("timeout", "transport error: ...").
        expires: the granted expiry in seconds (registered).
        expires_at: when the binding lapses, on the client's clock (registered).
        refresh_at: when the next REGISTER goes out (registered).
        retry_at: when the next attempt starts (failed).
        target: the (transport, address, port) that answered last, or None.
    """

    state: str
    code: int | None = None
    reason: str | None = None
    expires: int | None = None
    expires_at: float | None = None
    refresh_at: float | None = None
    retry_at: float | None = None
    target: tuple[str, str, int] | None = None


def refresh_delay(granted: float, margin: float = 5.0) -> float:
    """Seconds after a 200 when the binding is refreshed (see the module docstring)."""
    return max(min(granted - margin, 0.9 * granted), granted / 2)


def _delta_seconds(text: str | None) -> int | None:
    """A delta-seconds value (RFC 3261 25.1), or None when absent or malformed; capped at `MAX_EXPIRES`."""
    if text is None:
        return None
    text = text.strip().split(";", 1)[0].split("(", 1)[0].strip()  # Retry-After: 120 (comment);duration=..
    if not text.isdigit() or len(text) > 12:
        return None
    return min(int(text), MAX_EXPIRES)


class RegistrationClient:
    """Keep a Contact bound to an address-of-record at a registrar.

    Args:
        stack: the `ISipStack` (`send_request`, `contact_for`, `timers`).
        clock: the clock for refresh and retry timers.
        aor: the address-of-record (From and To), a sip: or sips: URI.
        registrar: the Request-URI; default: the AoR's domain (`sip:example.com`).
        credentials: realm -> `Credentials` or None.
        contact: our whole Contact (`<sip:u@host:port>`); default: `stack.contact_for` the chosen target,
            with `contact_user` (default: the AoR's user) as user part.
        contact_user: the user part of the built Contact.
        expires: the expiry asked for, seconds (raised by a 423's Min-Expires).
        resolver: a `SipResolver` (anything with `resolve(uri) -> Deferred[list[Target]]`) or a fixed list of
            targets; default: the registrar's (or proxy's) address as an IP literal, else an error.
        outbound_proxy: a sip URI every REGISTER is routed through (a Route with `lr`); targets are its own.
        on_state: called with each new `RegistrationStatus`.
        rng: the randomness of the retry jitter.
        refresh_margin: seconds before expiry a refresh goes out at the latest (see `refresh_delay`).
        retry_base: the first back-off, seconds.
        retry_max: the longest back-off, seconds.
        jitter: the back-off is shortened by up to this fraction at random.
        stop_timeout: the longest `stop()` waits for the unregister's answer, seconds.
    """

    _log = Logger()

    def __init__(
        self,
        stack: ISipStack,
        clock: IReactorTime,
        *,
        aor: str,
        credentials: CredentialLookup,
        registrar: str | None = None,
        contact: str | None = None,
        contact_user: str | None = None,
        expires: int = 3600,
        resolver: Any = None,
        outbound_proxy: str | None = None,
        on_state: Callable[[RegistrationStatus], None] | None = None,
        rng: random.Random | None = None,
        refresh_margin: float = 5.0,
        retry_base: float = 30.0,
        retry_max: float = 600.0,
        jitter: float = 0.2,
        stop_timeout: float = 5.0,
    ) -> None:
        if not 0 < expires <= MAX_EXPIRES:
            raise ValueError("expires must be a positive number of seconds")
        self._stack = stack
        self._clock = clock
        self.aor = parse_sip_uri(aor)
        self.registrar = (
            parse_sip_uri(registrar) if registrar else SipURI(self.aor.host, scheme=self.aor.scheme)
        )
        self._proxy = parse_sip_uri(outbound_proxy) if outbound_proxy else None
        self._credentials = credentials
        self._contact = contact
        self._contact_user = contact_user or self.aor.user or "pbx"
        self.expires = expires
        self._resolver = resolver
        self._on_state = on_state
        self._rng = rng or random.Random()
        self._margin = refresh_margin
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._jitter = jitter
        self._stop_timeout = stop_timeout
        self.call_id = new_call_id(self.aor.host)
        self._from_tag = new_tag()
        self.cseq = 0
        self._caches: dict[Target, DigestCache] = {}
        self._sticky: Target | None = None  # the target that accepted last; refreshes go there first
        self._bound: tuple[Target, str] | None = None  # where our Contact was last accepted, and the Contact
        self._current_target: Target | None = None  # of the REGISTER in flight or answered last
        self._client: ClientRequest | None = None
        self._423s = 0
        self._failures = 0
        self._walk: Deferred[Any] | None = None
        self._timer_refresh: IDelayedCall | None = None
        self._timer_retry: IDelayedCall | None = None
        self._status = RegistrationStatus(UNREGISTERED)
        self._stopping: Deferred[None] | None = None

    # -- public ------------------------------------------------------------------------------------------

    @property
    def status(self) -> RegistrationStatus:
        """The current state with its details."""
        return self._status

    def start(self) -> None:
        """Register now (once; later REGISTERs are scheduled by the client itself)."""
        if self._status.state != UNREGISTERED:
            raise RuntimeError(f"cannot start a registration that is {self._status.state}")
        self._attempt()

    def stop(self) -> Deferred[None]:
        """Stop refreshing and remove our binding (Expires 0); fires when answered or after `stop_timeout`."""
        if self._stopping is not None:
            return self._stopping
        self._cancel_timers()
        walk, self._walk = self._walk, None
        if walk is not None:
            walk.cancel()
        previous = self._status
        binding = self._bound
        if previous.state == REGISTERING and self._current_target is not None:
            binding = (self._current_target, self._contact_for(self._current_target))  # it may be accepted
        self._set(RegistrationStatus(STOPPED, previous.code, previous.reason, target=previous.target))
        if binding is None:
            self._stopping = succeed(None)
            return self._stopping
        self._stopping = Deferred()
        self._unregister(*binding)
        return self._stopping

    # -- attempts ----------------------------------------------------------------------------------------

    def _attempt(self) -> None:
        """Enter `registering` and walk the targets of a fresh lookup, the one that accepted last first."""
        self._cancel_timers()
        previous = self._status
        self._set(RegistrationStatus(REGISTERING, previous.code, previous.reason, target=previous.target))
        if self._stopping is not None:
            return  # stopped from the on_state callback
        targets = self._targets()
        self._walk = targets
        if self._sticky is not None:
            sticky = self._sticky
            targets.addCallback(lambda found: [sticky, *(t for t in found if t != sticky)])
        targets.addCallback(self._walk_targets)
        targets.addCallbacks(self._outcome, self._walk_failed)
        targets.addErrback(self._log_bug)

    def _targets(self) -> Deferred[list[Target]]:
        uri = self._proxy or self.registrar
        if self._resolver is None:
            return _literal_target(uri)
        if isinstance(self._resolver, Sequence):
            return succeed(list(self._resolver))
        resolved: Deferred[list[Target]] = self._resolver.resolve(uri)
        return resolved

    def _walk_targets(self, targets: list[Target]) -> Deferred[Response]:
        self._423s = 0
        self._caches = {target: cache for target, cache in self._caches.items() if target in targets}
        budget = Budget(self._clock, 2 * self._stack.timers.timer_b * max(1, len(targets)))
        walk = try_targets(targets, self._send_to, self._clock, budget)
        self._walk = walk
        return walk

    def _send_to(self, target: Target) -> Deferred[Response]:
        """One try at `target`: REGISTER (digest answered) until a final response."""
        self._current_target = target
        contact = self._contact_for(target)
        client = ClientRequest(
            self._stack,
            self._request(contact, self.expires),
            (target.transport, target.address, target.port),
            self._credentials,
            cache=self._caches.setdefault(target, DigestCache()),
            next_cseq=self._next_cseq,
            server_name=target.server_name,
        )
        self._client = client
        result = client.start()
        result.addCallback(self._maybe_423, target)
        return result

    def _maybe_423(self, response: Response, target: Target) -> Response | Deferred[Response]:
        """Retry at once with Min-Expires on a 423 (RFC 3261 10.2.8)."""
        if response.status != 423 or self._423s >= _MAX_423:
            return response
        minimum = _delta_seconds(response.headers.get("Min-Expires"))
        if minimum is None or minimum <= self.expires:
            return response
        self._423s += 1
        self._log.info("Registrar wants at least {minimum} s for {aor}", minimum=minimum, aor=str(self.aor))
        self.expires = minimum
        return self._send_to(target)

    def _outcome(self, response: Response) -> None:
        self._walk = None
        target = self._current_target
        reason = (self._client.local_failure if self._client else None) or response.reason
        if 200 <= response.status < 300 and target is not None:
            self._registered(response, target)
            return
        self._failed(response.status, reason, response)

    def _walk_failed(self, failure: Failure) -> None:
        self._walk = None
        if failure.check(CancelledError):
            return
        if failure.check(BudgetExpired):
            self._failed(408, "timeout", None)
        elif failure.check(ResolutionError):
            error = failure.value
            assert isinstance(error, ResolutionError)
            self._failed(503 if error.transient else 404, f"DNS: {error.reason}", None)
        else:
            self._log.failure("Registration of {aor} failed", failure, aor=str(self.aor))
            self._failed(503, f"error: {failure.getErrorMessage()[:100]}", None)

    def _log_bug(self, failure: Failure) -> None:
        self._log.failure("Bug in the registration of {aor}", failure, aor=str(self.aor))

    def _registered(self, response: Response, target: Target) -> None:
        contact = self._contact_for(target)
        granted = self._granted(response, contact)
        self._failures = 0
        self._sticky = target
        self._bound = (target, contact)
        delay = refresh_delay(granted, self._margin)
        now = self._clock.seconds()
        self._timer_refresh = self._clock.callLater(delay, self._refresh)
        self._set(
            RegistrationStatus(
                REGISTERED,
                response.status,
                response.reason,
                expires=granted,
                expires_at=now + granted,
                refresh_at=now + delay,
                target=(target.transport, target.address, target.port),
            )
        )

    def _refresh(self) -> None:
        self._timer_refresh = None
        self._attempt()

    def _failed(self, code: int, reason: str | None, response: Response | None) -> None:
        self._sticky = None  # it failed: the next attempt takes the targets in the lookup's order
        self._failures += 1
        delay = min(self._retry_base * 2 ** min(self._failures - 1, 30), self._retry_max)
        delay *= 1 - self._jitter * self._rng.random()
        if response is not None and code in _RETRY_AFTER_STATUSES:
            retry_after = _delta_seconds(response.headers.get("Retry-After"))
            if retry_after is not None:
                delay = min(max(retry_after, 1), self._retry_max)
        self._log.warn(
            "Registration of {aor} failed: {code} {reason}; retry in {delay:.0f} s",
            aor=str(self.aor),
            code=code,
            reason=reason,
            delay=delay,
        )
        self._timer_retry = self._clock.callLater(delay, self._retry)
        target = self._current_target
        self._set(
            RegistrationStatus(
                FAILED,
                code,
                reason,
                retry_at=self._clock.seconds() + delay,
                target=(target.transport, target.address, target.port) if target else None,
            )
        )

    def _retry(self) -> None:
        self._timer_retry = None
        self._attempt()

    # -- unregistering -----------------------------------------------------------------------------------

    def _unregister(self, target: Target, contact: str) -> None:
        client = ClientRequest(
            self._stack,
            self._request(contact, 0),
            (target.transport, target.address, target.port),
            self._credentials,
            cache=self._caches.setdefault(target, DigestCache()),
            next_cseq=self._next_cseq,
            server_name=target.server_name,
        )
        done = client.start()
        timer = self._clock.callLater(self._stop_timeout, done.cancel)

        def finished(result: Response | Failure) -> None:
            if timer.active():
                timer.cancel()
            if isinstance(result, Response):
                reason = client.local_failure or result.reason
                self._set(RegistrationStatus(STOPPED, result.status, reason, target=self._status.target))
            assert self._stopping is not None
            self._stopping.callback(None)

        done.addBoth(finished)

    # -- messages ----------------------------------------------------------------------------------------

    def _next_cseq(self, _previous: int) -> int:
        self.cseq += 1
        return self.cseq

    def _contact_for(self, target: Target) -> str:
        if self._contact is not None:
            return self._contact
        secure = self.registrar.scheme == "sips"
        return str(
            self._stack.contact_for(target.transport, target.address, self._contact_user, secure=secure)
        )

    def _request(self, contact: str, expires: int) -> Request:
        """A REGISTER of the binding with the next CSeq (RFC 3261 10.2)."""
        request = Request("REGISTER", self.registrar)
        headers = request.headers
        if self._proxy is not None:
            route = self._proxy if self._proxy.has_param("lr") else self._proxy.with_param("lr")
            headers.add("Route", f"<{route}>")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{self.aor}>;tag={self._from_tag}")
        headers.add("To", f"<{self.aor}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self._next_cseq(self.cseq)} REGISTER")
        headers.add("Contact", str(NameAddress.parse(contact).with_param("expires", str(expires))))
        headers.add("Expires", str(expires))
        return request

    def _granted(self, response: Response, contact: str) -> int:
        """Our Contact's expiry in a 200 (RFC 3261 10.2.4): its `expires`, else Expires, else ours."""
        ours = NameAddress.parse(contact).uri
        for value in response.headers.get_all("Contact"):
            try:
                bound = NameAddress.parse(value)
            except (SipParseError, ValueError):
                continue
            if bound.uri == ours:
                expires = _delta_seconds(bound.param("expires"))
                if expires:
                    return expires
        header = _delta_seconds(response.headers.get("Expires"))
        return header if header else self.expires

    # -- state -------------------------------------------------------------------------------------------

    def _set(self, status: RegistrationStatus) -> None:
        if status.state not in TRANSITIONS[self._status.state] and status.state != self._status.state:
            raise RuntimeError(f"registration cannot go from {self._status.state} to {status.state}")
        self._status = status
        if self._on_state is not None:
            try:
                self._on_state(status)
            except Exception:
                self._log.failure("on_state callback failed")

    def _cancel_timers(self) -> None:
        for name in ("_timer_refresh", "_timer_retry"):
            timer: IDelayedCall | None = getattr(self, name)
            if timer is not None and timer.active():
                timer.cancel()
            setattr(self, name, None)


def _literal_target(uri: SipURI) -> Deferred[list[Target]]:
    """Without a resolver: the URI's host must be an IP literal (RFC 3263 4: no DNS needed)."""
    host = uri.param("maddr") or uri.host
    try:
        address = str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return fail(ResolutionError(f"no resolver to look up {host[:100]}"))
    transport = (uri.transport or ("tls" if uri.secure else "udp")).lower()
    return succeed([Target(transport, address, uri.port or (5061 if transport == "tls" else 5060))])
