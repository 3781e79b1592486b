"""The registrar as a service: location service, digest authenticator, brute-force guard and keep-alives
built from `[registrar]` and `[security]`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pbx.config import Config
from pbx.registrar import BruteForceGuard, KeepAlive, LocationService, Registrar, RegistrarPolicy
from pbx.registrar.registrar import flow_text
from pbx.service.adapters import domain_lookup, ha1_lookup, nonce_secret
from pbx.service.edge import link_guard
from pbx.sip.auth import DigestAuthenticator, NonceCounter, NonceSource
from pbx.sip.origin import network_matcher
from pbx.sip.stack import SipStack
from pbx.store import Binding, SqliteLocationStore

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
        self.registrar: Any = None  # the REGISTER transaction user (its counters: metrics)
        self._purge = LoopingCall(self._purge_expired)
        self._purge.clock = clock

    def startService(self) -> None:
        super().startService()
        self._location.load().addErrback(lambda f: _log.failure("Loading registrations failed", f))
        watch = getattr(self._store, "watch_bindings", None)
        if watch is not None:  # a store shared with other PBX processes (PostgreSQL): follow their changes
            watch(self._changed_elsewhere)
        self._keepalive.start()
        self._purge.start(300, now=False)

    def _changed_elsewhere(self, tenant: str | None, aor: str | None) -> None:
        """Another PBX process sharing the store changed the registrations of (tenant, aor); (None, None):
        changes may have been missed, take everything from the store again."""
        now = self._purge.clock.seconds()
        if tenant is None or aor is None:
            self._store.load(now).addCallbacks(self._resync, lambda f: _log.failure("Resync failed", f))
            return
        self._store.load_aor(tenant, aor, now).addCallbacks(
            lambda stored: self._replaced(tenant, aor, stored),
            lambda f: _log.failure(
                "Reading registrations of {aor}@{tenant} failed", f, aor=aor, tenant=tenant
            ),
        )

    def _replaced(self, tenant: str, aor: str, stored: list[Any]) -> None:
        self._location.replace(tenant, aor, stored)
        _log.info(
            "Registrations of {aor}@{tenant} changed on another node: {n} contact(s)",
            aor=aor, tenant=tenant, n=len(stored),
        )  # fmt: skip

    def _resync(self, stored: list[Any]) -> None:
        grouped: dict[tuple[str, str], list[Any]] = {}
        for binding in stored:
            grouped.setdefault((binding.tenant, binding.aor), []).append(binding)
        keys = set(grouped) | {(b.tenant, b.aor) for b in self._location}
        for tenant, aor in keys:
            self._location.replace(tenant, aor, grouped.get((tenant, aor), []))

    def _purge_expired(self) -> None:
        self._location.purge_store().addErrback(lambda f: _log.failure("Purging registrations failed", f))

    def stopService(self) -> Any:
        super().stopService()
        self._keepalive.stop()
        if self._purge.running:
            self._purge.stop()
        self._location.stop()
        return self._store.close()


def open_store(config: Config, the_reactor: Any) -> Any:
    """The PBX's store: `[store] url` (PostgreSQL, shared by several PBX processes), else the embedded
    SQLite file in `pbx.data_dir`. Nothing is opened here: the first call connects (after `twistd` forked)."""
    if config.store.postgresql:
        from pbx.store.postgres import PostgresStore, safe_url

        store = PostgresStore(config.store.url, the_reactor)
        _log.info("Store: PostgreSQL at {url}", url=safe_url(config.store.url))
        return store
    # A call's CDR waits up to 0.1 s for others: one commit for the calls that ended meanwhile. A registration
    # is committed on the reactor thread when the writer thread is idle (no hand-off and back), after waiting
    # up to 5 ms for others to share its commit (pbx/store/sqlite.py, "Direct commits").
    return SqliteLocationStore(
        config.data_dir / "pbx.sqlite3", the_reactor, cdr_delay=0.1, direct=True, apply_delay=0.005
    )


def owned_bindings(config: Config) -> Callable[[Binding], bool] | None:
    """With a shared store (PostgreSQL), the bindings this node keeps alive: those registered through its
    own listeners (and those that do not say); None (every binding) with the embedded store."""
    if not config.store.postgresql:
        return None
    own = frozenset(flow_text(x.transport, (x.host, x.port)) for x in config.sip.listeners)
    return lambda binding: not binding.local or binding.local in own


def build_registrar(
    config: Config, stack: SipStack, the_reactor: Any, store: Any = None, *, ha1: Any = None
) -> RegistrarService:
    """The registrar, its location service (SQLite in data_dir unless another `store` is given: the
    benchmarks' in-memory one), digest auth and brute-force guard. `ha1`: the H(A1) lookup (the console's
    live extension directory), else the config's extensions."""
    security, policy = config.security, config.registrar
    if store is None:
        store = open_store(config, the_reactor)
    location = LocationService(the_reactor, store)
    authenticator = DigestAuthenticator(
        NonceSource(the_reactor, nonce_secret(config.data_dir), security.nonce_lifetime),
        NonceCounter(),
        ha1 if ha1 is not None else ha1_lookup(config),
        algorithms=security.auth_algorithms,
    )
    guard = BruteForceGuard(
        the_reactor,
        max_failures=security.max_auth_failures,
        window=security.failure_window,
        block_duration=security.block_duration,
        max_account_failures=security.max_account_failures,
        trusted=security.trusted_networks + security.trusted_proxies,  # a proxy itself is never blocked
    )
    stack.set_source_filter(guard.is_blocked)
    if security.trusted_proxies:  # behind Kamailio: failures count against the phone behind the proxy
        stack.is_trusted_proxy = network_matcher(security.trusted_proxies)
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
    registrar.is_trusted_proxy = stack.is_trusted_proxy
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
        tenant_domain={tenant.name: tenant.domain for tenant in config.tenants}.get,
        owned=owned_bindings(config),  # a shared store: each node pings the phones it registered
    )
    built = RegistrarService(
        location, keepalive, store, the_reactor, authenticator=authenticator, guard=guard
    )
    built.registrar = registrar  # its counters, for the metrics
    return built
