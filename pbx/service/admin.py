"""The console as a service: the live extension directory (always) and the admin HTTP(S) listener (when
`[admin] listen` is set), built from the config and the PBX's other services.

- `build_extensions`: the configuration's extensions overlaid with those kept in the store
  (`pbx.admin.extensions`); the registrar's digest check and the B2BUA's directory read it, so console
  changes take effect on the next request. Built before the registrar; `ExtensionsService` loads the
  store's rows at start (its `ready` holds the ready line until then).
- `build_admin`: the `ConsoleApp` over a `PbxView` of the B2BUA, location service, trunks, CDRs, mailboxes
  and dialplans; listening on `[admin] listen`, with TLS when `[admin] certificate` is set.

Mounting more resources into the console (the lead's merge of `/metrics` and call traces) is one line each
in `build_admin`, after the app is made: `app.mount("metrics", resource, public=True, bearer_token=...)`
or `app.mount("api/v1/calls", resource)` (behind the console's login).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.application import service
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pbx import __version__
from pbx.admin.auth import Logins, Sessions
from pbx.admin.extensions import ExtensionDirectory, TenantSeed
from pbx.admin.log_levels import LogLevelsResource
from pbx.admin.site import ConsoleApp
from pbx.admin.trace_api import CallTraceResource, TraceListResource
from pbx.admin.view import PbxView
from pbx.config import Config
from pbx.service.adapters import directories

_log = Logger(namespace="pbx")


class ExtensionsService(service.Service):
    """Loads the store's extensions at start.

    Attributes:
        directory: the live `ExtensionDirectory`.
        ready: fires once the store's rows are in (also after a failure, which is logged).
    """

    def __init__(self, directory: ExtensionDirectory) -> None:
        self.directory = directory
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        d = self.directory.load()
        d.addCallbacks(self._loaded, lambda f: _log.failure("Loading the store's extensions failed", f))
        d.addBoth(lambda _: None).chainDeferred(self.ready)

    def _loaded(self, count: int) -> None:
        if count:
            _log.info("Extensions: {count} kept in the store", count=count)


def build_extensions(config: Config) -> ExtensionsService:
    """The live directory of every tenant's extensions (its store is attached once the registrar's exists:
    `directory.attach(store)`)."""
    configured = directories(config)  # the full ExtensionInfo of each configured extension

    def base(name: str) -> dict[str, Any]:
        directory = configured(name)
        return dict(directory.extensions) if directory is not None else {}

    seeds = [
        TenantSeed(
            name=tenant.name,
            domain=tenant.domain,
            realm=tenant.realm,
            extensions=dict(tenant.extensions),
            groups=dict(tenant.groups),
            base=base(tenant.name),
        )
        for tenant in config.tenants
    ]
    return ExtensionsService(ExtensionDirectory(seeds, None, time.time))


class AdminService(service.Service):
    """Listens for the console and purges lapsed sessions.

    Attributes:
        app: the console (`mount` more resources on it before the service starts).
        port: the listening port once started (tests read its address).
    """

    def __init__(self, app: ConsoleApp, config: Config, the_reactor: Any) -> None:
        self.app = app
        self._config = config.admin
        self._reactor = the_reactor
        self.port: Any = None
        self._purge = LoopingCall(app.sessions.purge)
        self._purge.clock = the_reactor

    def startService(self) -> None:
        super().startService()
        admin = self._config
        site = self.app.site()
        if admin.certificate is not None and admin.private_key is not None:
            pem = admin.certificate.read_text() + "\n" + admin.private_key.read_text()
            options = ssl.PrivateCertificate.loadPEM(pem).options()
            self.port = self._reactor.listenSSL(admin.port, site, options, interface=admin.host)
        else:
            self.port = self._reactor.listenTCP(admin.port, site, interface=admin.host)
        _log.info("Console on {url}", url=admin.base_url)
        self._purge.start(300, now=False)

    def stopService(self) -> Any:
        super().stopService()
        if self._purge.running:
            self._purge.stop()
        if self.port is not None:
            return self.port.stopListening()
        return None


def build_admin(
    config: Config,
    the_reactor: Any,
    extensions: ExtensionDirectory,
    *,
    registrar: Any,
    calls: Any,
    trunks: Any = None,
    mailboxes: Any = None,
    metrics: Any = None,
) -> AdminService | None:
    """The console over the PBX's services; None while `[admin] listen` is not set."""
    admin = config.admin
    if not admin.enabled:
        return None
    store = registrar.store

    def in_thread(fn: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(the_reactor, the_reactor.getThreadPool(), fn, *args)

    view = PbxView(
        tenants=[t.name for t in config.tenants],
        clock=the_reactor,
        extensions=extensions,
        b2bua=calls.b2bua,
        location=registrar.location,
        trunk_states=trunks.states if trunks is not None and trunks.status_file is not None else None,
        cdr_store=store,
        mailboxes=mailboxes,
        dialplans=getattr(calls, "dialplans", None),
        data_dir=config.data_dir,
        started_at=the_reactor.seconds(),
        version=__version__,
    )
    logins = Logins(
        store,
        the_reactor,
        in_thread,
        max_failures=admin.max_login_failures,
        window=admin.login_failure_window,
        lockout=admin.lockout_duration,
    )
    app = ConsoleApp(
        view,
        logins,
        Sessions(the_reactor, admin.session_lifetime),
        secure=admin.certificate is not None,
        lockout=admin.lockout_duration,
        users=store,
    )
    if metrics is not None:
        view.tracer = metrics.tracer  # the console's ladder pages
    if metrics is not None:  # the MetricsService: /metrics for Prometheus (its own [metrics] token, if any)
        app.mount("metrics", metrics.metrics_resource(), public=True, bearer_token=None)
        # Call traces (`pbx trace --url CONSOLE --token TOKEN`) and log levels: PBX-wide, for admins only.
        if metrics.tracer is not None:
            app.mount("api/v1/calls", CallTraceResource(metrics.tracer), admin_only=True)
            app.mount("api/v1/traces", TraceListResource(metrics.tracer), admin_only=True)
        app.mount("api/v1/log/levels", LogLevelsResource(metrics.log_levels), admin_only=True)
    return AdminService(app, config, the_reactor)
