"""The registrar as a service: location service, digest authenticator, brute-force guard and keep-alives
built from `[registrar]` and `[security]`."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pbx.config import Config
from pbx.registrar import BruteForceGuard, KeepAlive, LocationService, Registrar, RegistrarPolicy
from pbx.service.adapters import domain_lookup, ha1_lookup, nonce_secret
from pbx.service.edge import link_guard
from pbx.sip.auth import DigestAuthenticator, NonceCounter, NonceSource
from pbx.sip.stack import SipStack
from pbx.store import SqliteLocationStore

_log = Logger(namespace="pbx")


class RegistrarService(service.Service):
    """Loads the location service before phones are answered, runs keep-alives and store housekeeping.

    Attributes:
        location: the location service (the B2BUA finds phones in it).
        store: the location and CDR store.
        authenticator: the digest authenticator every method's challenges share.
        guard: the brute-force guard.
    """

    def __init__(
        self,
        location: LocationService,
        keepalive: KeepAlive,
        store: Any,
        clock: Any,
        *,
        authenticator: DigestAuthenticator,
        guard: BruteForceGuard,
    ) -> None:
        self._location = location
        self._keepalive = keepalive
        self._store = store
        self.location = location
        self.store = store
        self.authenticator = authenticator
        self.guard = guard
        self._purge = LoopingCall(self._purge_expired)
        self._purge.clock = clock

    def startService(self) -> None:
        super().startService()
        self._location.load().addErrback(lambda f: _log.failure("Loading registrations failed", f))
        self._keepalive.start()
        self._purge.start(300, now=False)

    def _purge_expired(self) -> None:
        self._location.purge_store().addErrback(lambda f: _log.failure("Purging registrations failed", f))

    def stopService(self) -> Any:
        super().stopService()
        self._keepalive.stop()
        if self._purge.running:
            self._purge.stop()
        self._location.stop()
        return self._store.close()


def build_registrar(config: Config, stack: SipStack, the_reactor: Any, store: Any = None) -> RegistrarService:
    """The registrar, its location service (SQLite in data_dir unless another `store` is given: the
    benchmarks' in-memory one), digest auth and brute-force guard."""
    security, policy = config.security, config.registrar
    if store is None:
        store = SqliteLocationStore(config.data_dir / "pbx.sqlite3", the_reactor)
    location = LocationService(the_reactor, store)
    authenticator = DigestAuthenticator(
        NonceSource(the_reactor, nonce_secret(config.data_dir), security.nonce_lifetime),
        NonceCounter(),
        ha1_lookup(config),
        algorithms=security.auth_algorithms,
    )
    guard = BruteForceGuard(
        the_reactor,
        max_failures=security.max_auth_failures,
        window=security.failure_window,
        block_duration=security.block_duration,
        max_account_failures=security.max_account_failures,
        trusted=security.trusted_networks,
    )
    stack.set_source_filter(guard.is_blocked)
    admission = getattr(stack.transport, "admission", None)
    if admission is not None:
        link_guard(guard, admission)  # the guard's blocks are dropped before parsing too
    registrar = Registrar(
        the_reactor,
        location,
        authenticator,
        domain_lookup(config),
        guard,
        RegistrarPolicy(policy.min_expires, policy.max_expires, policy.default_expires, policy.max_contacts),
        md5_only_user_agents=security.md5_only_user_agents,
    )
    stack.register("REGISTER", registrar)
    stack.answer_statelessly("REGISTER", registrar.stateless_challenge)
    keepalive = KeepAlive(
        the_reactor,
        location,
        stack,
        mode=policy.keepalive,
        interval=policy.keepalive_interval,
        max_failures=policy.keepalive_failures,
        from_host=config.tenants[0].domain,
    )
    return RegistrarService(location, keepalive, store, the_reactor, authenticator=authenticator, guard=guard)
