"""Outbound registration and OPTIONS pings for every trunk (RFC 3261 10, 11; RFC 3263 4.3), kept in
`TrunkStates`.

`TrunkRegistrations` builds, per enabled trunk,

- with `register = true`, a `pbx.sip.registration.RegistrationClient`: REGISTER for the account's AoR
  (``sip:USERNAME@HOST``) to the carrier (``sip:HOST[:PORT][;transport=X]``), digest answered (401 and 407;
  MD5, SHA-256, SHA-512-256; `auth_username`, and only the trunk's `realm` when it names one), refreshed
  before expiry, `423` followed with Min-Expires, back-off on failures (`retry_interval`, 30 s by default,
  doubling to 600 s, 20 % jitter, Retry-After honoured), failover across the carrier's RFC 3263 targets or
  its listed `proxies` (`pbx.trunks.targets.TrunkLocator`). The Contact is ``<sip:CONTACT_USER@LISTENER>``
  where the user is `contact_user` or `username` and the listener is the PBX's own for the target's
  transport and address family (`SipStack.contact_for`), so the carrier's requests come back to where it
  sent them;
- with `options_interval` > 0, a `pbx.trunks.options.OptionsPinger`.

Every change reaches `TrunkStates` (one log line per change of a trunk's summary); `stop()` stops the pings
and unregisters (Expires: 0) every trunk at once, each bounded by `stop_timeout`. Disabled trunks are known
to `TrunkStates` (as disabled: never up) and send nothing. This module reads `TrunkSettings`, never the
config.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pbx.sip import registration as sip_registration
from pbx.sip.client_auth import CredentialLookup, Credentials
from pbx.sip.registration import RegistrationClient, RegistrationStatus
from pbx.trunks.options import OptionsPinger
from pbx.trunks.settings import TrunkSettings
from pbx.trunks.state import FAILED, OFF, REGISTERED, REGISTERING, STANDBY, UNREGISTERED, TrunkStates
from pbx.trunks.targets import Locate, TrunkLocator, aor, outbound_proxy_uri, registrar_uri


def trunk_credentials(trunk: TrunkSettings) -> CredentialLookup:
    """realm -> the trunk's credentials: for any realm, or only for `trunk.realm` when it names one."""
    credentials = Credentials(trunk.auth_user, trunk.password)

    def lookup(realm: str) -> Credentials | None:
        return credentials if not trunk.realm or realm == trunk.realm else None

    return lookup


def _target_text(target: tuple[str, str, int] | None) -> str | None:
    if target is None:
        return None
    transport, host, port = target
    return f"{transport} {f'[{host}]' if ':' in host else host}:{port}"


class TrunkRegistrations:
    """The registration clients and OPTIONS pingers of a set of trunks.

    Args:
        stack: the `SipStack`.
        clock: the clock of every timer.
        states: where each trunk's state is kept (every trunk is added to it here).
        trunks: (tenant name, trunk settings) pairs, disabled ones included.
        locate: RFC 3263 lookup of a SIP URI (`SipResolver.resolve`); None: IP addresses only.
        rng: the randomness of the back-off jitter.
        retry_base: the first back-off after a failed registration, seconds (None: each trunk's
            `retry_interval`).
        retry_max: the longest back-off, seconds.
        refresh_margin: a refresh goes out at least this long before expiry (see `refresh_delay`).
        stop_timeout: how long `stop()` waits for each unregister's answer, seconds.
    """

    _log = Logger(namespace="pbx.trunks")

    def __init__(
        self,
        stack: Any,
        clock: IReactorTime,
        states: TrunkStates,
        trunks: Iterable[tuple[str, TrunkSettings]],
        *,
        locate: Locate | None = None,
        rng: random.Random | None = None,
        retry_base: float | None = None,
        retry_max: float = 600.0,
        refresh_margin: float = 5.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self._stack = stack
        self._clock = clock
        self.states = states
        self.clients: dict[tuple[str, str], RegistrationClient] = {}
        self.pingers: dict[tuple[str, str], OptionsPinger] = {}
        self._stopping: Deferred[None] | None = None
        self._timers_start: list[IDelayedCall] = []
        self._make_client: dict[tuple[str, str], Callable[..., RegistrationClient]] = {}
        self._generation: dict[tuple[str, str], int] = {}
        self._standby: set[tuple[str, str]] = set()
        self.leased: set[tuple[str, str]] = set()
        """Trunks whose registration a lease decides (`take`, `standby`): `start` leaves them alone."""
        for tenant, trunk in trunks:
            pings = trunk.options_interval > 0
            states.add(
                tenant,
                trunk.name,
                enabled=trunk.enabled,
                registers=trunk.register,
                pings=pings,
                contact_user=trunk.contact_user or trunk.username,
            )
            if not trunk.enabled:
                continue
            key = (tenant, trunk.name)
            locator = TrunkLocator(trunk, locate)
            proxy = outbound_proxy_uri(trunk)
            if trunk.register:
                self._make_client[key] = partial(
                    RegistrationClient,
                    stack,
                    clock,
                    aor=str(aor(trunk)),
                    registrar=str(registrar_uri(trunk)),
                    credentials=trunk_credentials(trunk),
                    contact_user=trunk.contact_user or trunk.username,
                    expires=trunk.register_expires,
                    resolver=locator,
                    outbound_proxy=str(proxy) if proxy is not None else None,
                    rng=rng,
                    refresh_margin=refresh_margin,
                    retry_base=trunk.retry_interval if retry_base is None else retry_base,
                    retry_max=retry_max,
                    stop_timeout=stop_timeout,
                )
                self.clients[key] = self._new_client(key)
            if pings:
                self.pingers[key] = OptionsPinger(
                    stack,
                    clock,
                    uri=registrar_uri(trunk),
                    from_uri=aor(trunk),
                    locator=locator,
                    interval=trunk.options_interval,
                    on_result=partial(self._pinged, tenant, trunk.name),
                    route=proxy,
                )

    def start(self, spacing: float = 0.0) -> None:
        """Send every trunk's first REGISTER and first OPTIONS: the first trunk's now, each next one
        `spacing` seconds later (so that a thousand trunks do not challenge one carrier in the same
        millisecond); refreshes then follow each trunk's own expiry."""
        own = [client for key, client in self.clients.items() if key not in self.leased]
        for index, client in enumerate(own):
            self._start_later(index * spacing, client.start)
        for index, pinger in enumerate(self.pingers.values()):
            self._start_later(index * spacing, pinger.start)

    def _start_later(self, delay: float, start: Any) -> None:
        if delay <= 0:
            start()
            return
        self._timers_start.append(self._clock.callLater(delay, start))

    def stop(self) -> Deferred[None]:
        """Stop the pings and unregister every trunk; fires when all are answered or timed out."""
        if self._stopping is not None:
            return self._stopping
        for timer in self._timers_start:
            if timer.active():
                timer.cancel()
        self._timers_start = []
        for pinger in self.pingers.values():
            pinger.stop()
        stops = [client.stop() for client in self.clients.values()]
        done: Deferred[Any] = gatherResults(stops, consumeErrors=True)
        stopping: Deferred[None] = Deferred()
        done.addBoth(lambda _: stopping.callback(None))
        self._stopping = stopping
        return stopping

    # -- one registering node per trunk (pbx.trunks.lease) ----------------------------------------------

    def _new_client(self, key: tuple[str, str]) -> RegistrationClient:
        generation = self._generation[key] = self._generation.get(key, 0) + 1
        on_state = partial(self._client_changed, key, generation)
        return self._make_client[key](on_state=on_state)

    def take(self, tenant: str, trunk: str, holder: str) -> None:
        """This node (`holder`) now holds the trunk's registration: register (a fresh client when the last
        one was stopped); a no-op while registering already or once `stop` was called."""
        key = (tenant, trunk)
        client = self.clients.get(key)
        if client is None or self._stopping is not None:
            return
        self._standby.discard(key)
        self.states.update(tenant, trunk, holder=holder)
        if client.status.state == sip_registration.UNREGISTERED:
            client.start()
        elif client.status.state == sip_registration.STOPPED:
            self.clients[key] = self._new_client(key)
            self.clients[key].start()

    def standby(self, tenant: str, trunk: str, holder: str | None) -> Deferred[None]:
        """Another node (`holder`, None when unknown) holds the trunk's registration: stop registering
        (removing this node's binding, if any) and show the trunk as `standby`; fires once unregistered."""
        key = (tenant, trunk)
        client = self.clients.get(key)
        if client is None:
            return succeed(None)
        self._standby.add(key)
        stopped = client.stop()
        self.states.update(
            tenant, trunk, registration=STANDBY, holder=holder, code=None, reason=None, retry_at=None,
            expires_at=None, refresh_at=None, contact=None, target=None,
        )  # fmt: skip
        return stopped

    def _client_changed(self, key: tuple[str, str], generation: int, status: RegistrationStatus) -> None:
        if generation != self._generation.get(key) or key in self._standby:
            return  # a client replaced, or stopped because another node registers the trunk
        self._registration_changed(key[0], key[1], status)

    # -- reports -----------------------------------------------------------------------------------------

    def _registration_changed(self, tenant: str, trunk: str, status: RegistrationStatus) -> None:
        current = self.states.get(tenant, trunk)
        assert current is not None
        target = _target_text(status.target)
        if status.state == sip_registration.REGISTERING:
            if current.registration in (OFF, UNREGISTERED, REGISTERING, STANDBY):
                self.states.update(tenant, trunk, registration=REGISTERING)
            elif current.registration == FAILED:
                self.states.update(tenant, trunk, retry_at=None)  # the retry is under way
            return  # a refresh under way: still registered
        if status.state == sip_registration.REGISTERED:
            self.states.update(
                tenant,
                trunk,
                registration=REGISTERED,
                code=status.code,
                reason=status.reason,
                retry_at=None,
                expires_at=status.expires_at,
                refresh_at=status.refresh_at,
                contact=self._contact(status.target, current.contact_user, self.clients.get((tenant, trunk))),
                target=target,
            )
        elif status.state == sip_registration.FAILED:
            self.states.update(
                tenant,
                trunk,
                registration=FAILED,
                code=status.code,
                reason=status.reason,
                retry_at=status.retry_at,
                expires_at=None,
                refresh_at=None,
                contact=None,
                target=target,
            )
        elif status.state == sip_registration.STOPPED:
            self.states.update(
                tenant,
                trunk,
                registration=UNREGISTERED,
                code=status.code,
                reason=status.reason,
                retry_at=None,
                expires_at=None,
                refresh_at=None,
                contact=None,
            )

    def _contact(
        self, target: tuple[str, str, int] | None, user: str, client: RegistrationClient | None
    ) -> str | None:
        """The Contact the client registered at `target` (the same the stack built for it: `sips` only for
        a `sips` registrar)."""
        if target is None:
            return None
        secure = client is not None and client.registrar.scheme == "sips"
        try:
            return str(self._stack.contact_for(target[0], target[1], user, secure=secure))
        except Exception:  # no listener any more: shown as unknown
            return None

    def _pinged(self, tenant: str, trunk: str, reachable: bool, code: int) -> None:
        self.states.update(tenant, trunk, reachable=reachable, ping_code=code)
