"""`twistd pbx`: options and the composition root.

This is the only module that names the reactor and reads the config objects: it builds the SIP stack, the
transports and (as they arrive) the registrar, dialplans and media from a validated `Config`, and hands each
its plain constructor arguments. A config error stops `twistd` before anything listens, naming the key.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import re
import resource
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, cast

from twisted.application import service
from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogEvent,
    Logger,
    PredicateResult,
)
from twisted.python import usage
from twisted.python.components import Componentized

from pbx.apps import IvrApps, MusicOnHold
from pbx.apps.mwi import MessageSummaryPackage, Mwi, MwiAuthorizer
from pbx.b2bua import B2BUA, Directory, ExtensionInfo, PeerLookup, TrustedPeer
from pbx.config import Config, ConfigError, Tenant, load_config
from pbx.dialplan import DialplanEngine
from pbx.media import PortPool, UdpMediaRelay
from pbx.media.endpoint import MediaEngine
from pbx.media.recorder import thread_writer
from pbx.registrar import BruteForceGuard, Domain, KeepAlive, LocationService, Registrar, RegistrarPolicy
from pbx.sip.auth import DigestAuthenticator, NonceCounter, NonceSource
from pbx.sip.client_auth import Credentials
from pbx.sip.digest import ha1
from pbx.sip.interfaces import IFlow
from pbx.sip.parser import ParserLimits
from pbx.sip.resolver import SipResolver, make_resolver
from pbx.sip.stack import SipStack
from pbx.sip.subscription_notifier import Notifier, SubscriptionPolicy
from pbx.sip.timers import TimerConfig
from pbx.sip.tls import client_options_factory, ensure_dev_certificate, server_options
from pbx.sip.transport import TransportManager
from pbx.store import SqliteLocationStore

_log = Logger(namespace="pbx")
_trace_log = Logger(namespace="pbx.sip.trace")


class Options(usage.Options):
    """Command-line options of `twistd pbx`."""

    synopsis = "[--config FILE] [--sip-trace]"
    optParameters = [
        ["config", "c", "pbx.toml", "The PBX configuration file (TOML)."],
    ]
    optFlags = [
        ["sip-trace", None, "Log every SIP message sent and received, with peer and transport."],
    ]

    def postOptions(self) -> None:
        path = Path(self["config"])
        try:
            self["config_obj"] = load_config(path)
        except ConfigError as e:
            where = f"{e.file}: " if getattr(e, "file", None) and str(e.file) not in str(e) else ""
            raise usage.UsageError(f"{where}{e}") from None


def sip_trace(direction: str, transport: str, flow: IFlow, data: bytes) -> None:
    """Log one SIP message as sent or received (the `--sip-trace` option)."""
    arrow = "<--" if direction == "recv" else "-->"
    host, port = flow.remote_address[:2]
    _trace_log.info(
        "{arrow} {transport} {host}:{port} ({size} bytes)\n{text}",
        arrow=arrow,
        transport=transport,
        host=host,
        port=port,
        size=len(data),
        text=data.decode("utf-8", "replace"),
    )


class SipService(service.Service):
    """Opens the SIP listeners (in privilegedStartService, so a busy port stops startup) and closes them."""

    def __init__(self, config: Config, transports: TransportManager) -> None:
        self._config = config
        self.transports = transports
        self.ports: list[Any] = []

    def privilegedStartService(self) -> None:
        for listener in self._config.sip.listeners:
            listen = {
                "udp": self.transports.listen_udp,
                "tcp": self.transports.listen_tcp,
                "tls": self.transports.listen_tls,
            }[listener.transport]
            self.ports.append(listen(listener.host, listener.port))
            _log.info(
                "SIP listening on {transport} {host} port {port}",
                transport=listener.transport.upper(),
                host=listener.host,
                port=listener.port,
            )
        super().privilegedStartService()

    def stopService(self) -> Any:
        super().stopService()
        return self.transports.stop()


def build(config: Config, sip_trace_enabled: bool = False, the_reactor: Any = reactor) -> service.IService:
    """Build the PBX's services from a validated config."""
    top = service.MultiService()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    sip = config.sip
    stack = SipStack(
        the_reactor,
        timers=TimerConfig(t1=sip.t1, t2=sip.t2, t4=sip.t4),
        user_agent=sip.user_agent,
    )
    tls_server = None
    if any(listener.transport == "tls" for listener in sip.listeners):
        cert, key = config.tls.certificate, config.tls.private_key
        if cert is None or key is None:
            names = sorted({h for t in config.tenants for h in t.hosts} | {"localhost"})
            cert, key = ensure_dev_certificate(config.data_dir / "tls", names)
            _log.info("Using the development TLS certificate {cert}", cert=str(cert))
        tls_server = server_options(cert, key)
    transports = TransportManager(
        the_reactor,
        stack,
        limits=ParserLimits(max_message_size=sip.max_message_size),
        idle_timeout=sip.idle_timeout,
        tls_server_options=tls_server,
        tls_client_options_factory=client_options_factory(config.tls.ca_certificates),
        trace=sip_trace if (sip_trace_enabled or config.sip_trace) else None,
        **connection_limits(config),
    )
    stack.attach_transport(transports)
    SipService(config, transports).setServiceParent(top)
    registrar = build_registrar(config, stack, the_reactor)
    registrar.setServiceParent(top)
    build_calls(config, stack, registrar, the_reactor).setServiceParent(top)
    build_mwi(config, stack, registrar).setServiceParent(top)
    return top


def _nonce_secret(data_dir: Path) -> bytes:
    """The nonce key, kept in the data directory so that nonces stay valid across restarts."""
    path = data_dir / "nonce.key"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        os.replace(tmp, path)
    secret = path.read_bytes()
    if len(secret) < 16:
        raise ConfigError("pbx.data_dir", f"{path} is damaged: delete it to make a new one")
    return secret


def ha1_lookup(config: Config) -> Callable[[str, str, str], str | None]:
    """H(A1) by (username, realm, algorithm) from the tenants' extensions; computed once per password."""
    by_realm: dict[str, Tenant] = {}
    for tenant in config.tenants:
        by_realm.setdefault(tenant.realm, tenant)
    cache: dict[tuple[str, str, str], str | None] = {}

    def lookup(username: str, realm: str, algorithm: str) -> str | None:
        key = (username, realm, algorithm)
        if key in cache:
            return cache[key]
        tenant = by_realm.get(realm)
        extension = tenant.extensions.get(username) if tenant is not None else None
        value: str | None = None
        if extension is not None:
            if extension.password is not None:
                value = ha1(username, realm, extension.password, algorithm)
            elif algorithm == "MD5":
                value = extension.ha1_md5
            elif algorithm == "SHA-256":
                value = extension.ha1_sha256
        if len(cache) < 100_000:
            cache[key] = value
        return value

    return lookup


def domain_lookup(config: Config) -> Callable[[str], Domain | None]:
    """The tenant of a request's host (registrar and B2BUA), remembered per host text: every REGISTER and
    INVITE asks, and normalising an address costs more than the rest of the lookup."""
    cache: dict[str, Domain | None] = {}

    def lookup(host: str) -> Domain | None:
        try:
            return cache[host]
        except KeyError:
            pass
        tenant = config.tenant_for_domain(host)
        domain = Domain(tenant.name, tenant.realm) if tenant is not None else None
        if len(cache) >= 1024:  # hosts come from the network: bound what they can make us keep
            cache.clear()
        cache[host] = domain
        return domain

    return lookup


class RegistrarService(service.Service):
    """Loads the location service before phones are answered, runs keep-alives and store housekeeping."""

    def __init__(self, location: LocationService, keepalive: KeepAlive, store: Any, clock: Any) -> None:
        self._location = location
        self._keepalive = keepalive
        self._store = store
        self.parts: dict[str, Any] = {}
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
        NonceSource(the_reactor, _nonce_secret(config.data_dir), security.nonce_lifetime),
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
    registrar_service = RegistrarService(location, keepalive, store, the_reactor)
    registrar_service.parts = {
        "location": location,
        "authenticator": authenticator,
        "guard": guard,
        "store": store,
    }
    return registrar_service


def directories(config: Config) -> Callable[[str], Directory | None]:
    """Each tenant's directory for the dialplan and the B2BUA."""
    by_name = {
        tenant.name: Directory(
            tenant=tenant.name,
            domain=tenant.domain,
            extensions={
                number: ExtensionInfo(
                    number=number,
                    name=e.name,
                    forward_all=e.forward_all,
                    forward_busy=e.forward_busy,
                    forward_noanswer=e.forward_noanswer,
                    ring_timeout=e.ring_timeout,
                    may_call_out=e.may_call_out,
                )
                for number, e in tenant.extensions.items()
            },
            groups=dict(tenant.groups),
        )
        for tenant in config.tenants
    }
    return by_name.get


def peer_lookup(config: Config) -> PeerLookup | None:
    """The trusted peers of each tenant by source address (`[[tenants.NAME.peers]]`); None when no tenant
    has any, so every INVITE is challenged."""
    by_tenant = {
        tenant.name: [
            (ipaddress.ip_network(network), TrustedPeer(peer.name, peer.extension))
            for peer in tenant.peers
            for network in peer.networks
        ]
        for tenant in config.tenants
        if tenant.peers
    }
    if not by_tenant:
        return None

    def lookup(tenant: str, host: str) -> TrustedPeer | None:
        networks = by_tenant.get(tenant)
        if not networks:
            return None
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket reports IPv4 sources as ::ffff:a.b.c.d
        for network, peer in networks:
            if address in network:
                return peer
        return None

    return lookup


SOUNDS_DIR = Path(__file__).resolve().parent.parent / "sounds" / "en"
"""The shipped prompts (scripts/make_prompts), played by name."""


class CallsService(service.Service):
    """Hangs up the calls and closes the media engine and relay when the PBX stops."""

    def __init__(self, b2bua: B2BUA, relay: UdpMediaRelay, engine: MediaEngine | None = None) -> None:
        self.b2bua = b2bua
        self.relay = relay
        self.engine = engine

    def stopService(self) -> Any:
        super().stopService()
        self.b2bua.stop()
        if self.engine is not None:
            self.engine.close()
        return self.relay.close()


def build_media_apps(config: Config, b2bua: B2BUA, the_reactor: Any) -> MediaEngine:
    """The PBX's own media (prompts, menus, recordings, music on hold) plugged into the B2BUA's actions.

    Recordings are written in the reactor's thread pool (the fsync of a finished recording stays off the
    reactor); the shipped prompts are loaded and encoded now, so no call waits for a disk."""
    engine = MediaEngine(the_reactor, SOUNDS_DIR, writer=thread_writer(the_reactor))
    count = engine.prompts.preload()
    _log.info("Media: {count} prompts loaded from {dir}", count=count, dir=str(SOUNDS_DIR))
    IvrApps(engine, config.dialplan_dir, config.data_dir / "recordings").register(b2bua.apps)
    b2bua.hold_music = MusicOnHold(engine, config.dialplan_dir)
    return engine


def build_calls(config: Config, stack: SipStack, registrar: Any, the_reactor: Any) -> service.IService:
    """The B2BUA with its dialplans and media relay."""
    parts = registrar.parts
    media = config.media
    pool = PortPool(media.rtp_port_min, media.rtp_port_max)
    relay = UdpMediaRelay(
        the_reactor,
        pool,
        bind_host=media.bind_host,
        advertise=media.advertise or None,
        keep_open=parked_legs(pool.capacity),
    )
    b2bua = B2BUA(
        the_reactor,
        stack,
        parts["location"],
        parts["authenticator"],
        domain_lookup(config),
        directories(config),
        DialplanEngine(config.dialplan_dir),
        relay,
        parts["store"],
        parts["guard"],
        peers=peer_lookup(config),
        locate=sip_locator(config, the_reactor).resolve,
        uri_credentials=outbound_credentials(config),
        ring_timeout=config.calls.ring_timeout,
        max_call_duration=config.calls.max_call_duration,
        codecs=config.calls.codecs,
        md5_only_user_agents=config.security.md5_only_user_agents,
        host=config.tenants[0].domain,
    )
    for method in ("INVITE", "BYE", "UPDATE", "INFO"):
        stack.register(method, b2bua)
    stack.answer_statelessly("INVITE", b2bua.stateless_challenge)
    return CallsService(b2bua, relay, build_media_apps(config, b2bua, the_reactor))


def sip_locator(config: Config, the_reactor: Any) -> SipResolver:
    """RFC 3263 server location for SIP URI targets, asking `sip.nameservers` (or the system's resolvers)."""
    transports = sorted({listener.transport for listener in config.sip.listeners})
    families = ["ipv4"] + (["ipv6"] if any(":" in listener.host for listener in config.sip.listeners) else [])
    dns = make_resolver(the_reactor, list(config.sip.nameservers))
    return SipResolver(dns, the_reactor, transports=transports, families=families)


def outbound_credentials(config: Config) -> Callable[[str, str], Credentials | None]:
    """(tenant, realm) -> the credentials of `[[tenants.NAME.credentials]]` for that realm."""
    table = {
        (tenant.name, entry.realm): Credentials(entry.username, entry.password)
        for tenant in config.tenants
        for entry in tenant.credentials
    }
    return lambda tenant, realm: table.get((tenant, realm))


class MwiService(service.Service):
    """Ends the message-summary subscriptions on shutdown (`deactivated`: the phones come back later)."""

    def __init__(self, mwi: Mwi) -> None:
        self.mwi = mwi

    def stopService(self) -> Any:
        self.mwi.stop()
        return super().stopService()


def build_mwi(config: Config, stack: SipStack, registrar: Any) -> MwiService:
    """Message waiting (RFC 3842): SUBSCRIBE to `message-summary`, authenticated like REGISTER (401)."""
    parts = registrar.parts
    authorize = MwiAuthorizer(
        parts["authenticator"], domain_lookup(config), parts["guard"], config.security.md5_only_user_agents
    )
    package = MessageSummaryPackage(tenant_domain={t.name: t.domain for t in config.tenants}.get)
    mwi = config.mwi
    policy = SubscriptionPolicy(mwi.min_expires, mwi.max_expires, mwi.default_expires)
    notifier = Notifier(stack, authorize, [package], policy)
    stack.register("SUBSCRIBE", notifier)
    stack.answer_statelessly("SUBSCRIBE", authorize.stateless_challenge)
    return MwiService(Mwi(notifier))


def raise_file_limit(wanted: int = 65536) -> int:
    """Raise the soft limit of open files towards the hard one (each relayed call holds four sockets); returns
    the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as e:
            _log.warn(
                "Could not raise the open files limit from {soft} to {target}: {e}",
                soft=soft,
                target=target,
                e=e,
            )
    return soft


def connection_limits(config: Config) -> dict[str, Any]:
    """The `TransportManager` arguments that bound TCP/TLS connections (`[sip]` max_connections...)."""
    sip = config.sip
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and sip.max_connections > soft // 2:
        _log.warn(
            "sip.max_connections ({cap}) is more than half the open files limit ({soft}): connections may "
            "use up the descriptors calls need",
            cap=sip.max_connections,
            soft=soft,
        )
    return {
        "max_connections": sip.max_connections,
        "max_connections_per_address": sip.max_connections_per_address,
        "handshake_timeout": sip.tls_handshake_timeout,
        "first_message_timeout": sip.first_message_timeout,
    }


def raise_file_limit_to_hard() -> int:
    """Raise the soft limit of open files to the hard one at start, and log both: every TCP/TLS connection,
    relayed call, prompt and template read needs descriptors, and running out fails calls (issue 10).
    Returns the soft limit in force."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = raise_file_limit(hard if hard != resource.RLIM_INFINITY else 1 << 20)
    _log.info(
        "Open files limit: {soft} (hard limit {hard}, was {before})", soft=soft, hard=hard, before=before
    )
    return soft


def parked_legs(pairs: int) -> int:
    """How many closed relay legs keep their sockets open for reuse (`UdpMediaRelay(keep_open=...)`).

    About a second of legs at 1,000 calls/s, bounded by the RTP range (a quarter of its pairs) and by the
    open files limit (a quarter of it: each parked leg holds two sockets; calls and SIP need the rest).
    """
    limit = raise_file_limit()
    return max(0, min(2048, pairs // 4, (limit - 256) // 8))


GC_THRESHOLDS = (50_000, 50, 100)
"""`gc.set_threshold` of a running PBX (see `tune_garbage_collector`)."""


def tune_garbage_collector(environ: Mapping[str, str] = os.environ) -> tuple[int, ...]:
    """Fewer, cheaper garbage collections: the objects made while starting live for the whole run, so they
    are moved out of the collector's sight (`gc.freeze`), and young-generation collections, which a SIP load
    triggers thousands of times a second, are made rarer. Reference counting still frees almost everything.

    For benchmarks: PBX_GC_THRESHOLDS="50000,5,100" replaces `GC_THRESHOLDS`, and PBX_GC_LOG=1 logs every
    collector pass of 50 ms or more (its generation and length). Returns the thresholds set."""
    thresholds: tuple[int, ...] = GC_THRESHOLDS
    wanted = environ.get("PBX_GC_THRESHOLDS", "")
    if wanted:
        try:
            parsed = tuple(int(v) for v in wanted.split(","))
        except ValueError:
            parsed = ()
        if len(parsed) == 3 and min(parsed) >= 0:
            thresholds = parsed
        else:
            _log.warn("PBX_GC_THRESHOLDS={wanted!r} ignored: three integers wanted", wanted=wanted)
    if environ.get("PBX_GC_LOG"):
        gc.callbacks.append(_gc_pause_logger())
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return thresholds


def _gc_pause_logger() -> Callable[[str, dict[str, int]], None]:
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took >= 0.05:
            _log.info(
                "GC pause: generation {generation}, {ms:.0f} ms, {collected} collected",
                generation=info["generation"],
                ms=took * 1000,
                collected=info["collected"],
            )

    return on_gc


def makeService(options: Options) -> service.IService:
    """twistd's entry point."""
    config: Config = options["config_obj"]
    reactor.callWhenRunning(tune_garbage_collector)
    raise_file_limit_to_hard()
    _log.info("PBX starting with {config} (Python {v})", config=str(config.source), v=sys.version.split()[0])
    top = build(config, sip_trace_enabled=bool(options["sip-trace"]))
    reactor.callWhenRunning(lambda: _log.info("{message}", message=ready_message(config)))
    server_options = getattr(options, "parent", None)  # twistd's own options
    if server_options is None or server_options.get("logger"):
        return top  # not run by twistd, or the operator chose a log observer (--logger)
    return QuietLogging(top, partial(quiet_log_observer, server_options))


_TWISTED_PORT_LINE = re.compile(r".+ starting on \d+|\(\w+ Port \d+ Closed\)")


def quiet_port_lines(event: LogEvent) -> PredicateResult:
    """Hide the lines Twisted logs for every socket it opens and closes ("SipStreamFactory starting on 5060",
    "(UDP Port 10002 Closed)"), relayed calls' RTP sockets included: the ready line names the listeners."""
    if event.get("log_namespace") == "log_legacy" and _TWISTED_PORT_LINE.fullmatch(
        str(event.get("log_text"))
    ):
        return PredicateResult.no
    return PredicateResult.maybe


def quiet_log_observer(server_options: usage.Options) -> ILogObserver:
    """The observer twistd would make for its options (stdout with -n, --logfile, --syslog), behind
    `quiet_port_lines`."""
    from twisted.scripts._twistd_unix import UnixAppLogger  # twistd's own; the PBX runs on POSIX only

    observer = UnixAppLogger(server_options)._getLogObserver()
    if not ILogObserver.providedBy(observer):
        observer = LegacyLogObserverWrapper(observer)  # syslog's observer is a legacy one
    return FilteringLogObserver(observer, [cast(ILogFilterPredicate, quiet_port_lines)])


def ready_message(config: Config) -> str:
    """The one line that says the PBX is up: its SIP listeners, its tenants, and where to point a phone."""

    def address(host: str, port: int) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    listeners = config.sip.listeners
    sockets = ", ".join(f"{x.transport} {address(x.host, x.port)}" for x in listeners)
    tenants = ", ".join(
        f"{t.name} ({len(t.extensions)} extension{'' if len(t.extensions) == 1 else 's'})"
        for t in config.tenants[:5]
    )
    if len(config.tenants) > 5:
        tenants += f" and {len(config.tenants) - 5} more"
    text = f"PBX ready: SIP on {sockets}; tenants: {tenants}"
    tenant = next((t for t in config.tenants if t.extensions), None)
    if tenant is None or not listeners:
        return text
    listener = next((x for x in listeners if x.transport == "udp"), listeners[0])
    host = listener.advertise or {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listener.host, listener.host)
    uri = f"sip:{next(iter(tenant.extensions))}@"
    if host in (tenant.domain, *tenant.aliases):
        uri += address(host, listener.port)
    else:
        uri += f"{tenant.domain} through {address(host, listener.port)}"
    where = f" (passwords in {config.source.name})" if config.source is not None else ""
    transport = "" if listener.transport == "udp" else f" over {listener.transport}"
    return f"{text}; point a softphone at {uri}{transport}{where}"


class QuietLogging(service.MultiService):
    """Holds the PBX's services; when twistd adds it to its `Application`, gives the application a log
    observer (as a .tac file would), which twistd then uses instead of making its own."""

    def __init__(self, pbx: service.IService, observer: Callable[[], ILogObserver]) -> None:
        super().__init__()
        self._observer = observer
        pbx.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(ILogObserver, self._observer())
        super().setServiceParent(parent)
