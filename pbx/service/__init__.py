"""The PBX assembled from a validated config: the composition root's parts, read by `pbx/tap.py`.

- `sip`: the stack and transports (`[sip]`, `[tls]`);
- `registrar`: REGISTER, the location service, digest auth and the brute-force guard;
- `calls`: the B2BUA, dialplans, media relay and media applications;
- `voicemail`: the mailboxes (files and index), recovered at start, shared by calls and MWI;
- `voicemail_mail`: voicemail to e-mail (`[smtp]`), told of new messages by the mailboxes;
- `mwi`: message-waiting subscriptions;
- `features`: phone features (DND and forwarding codes, busy lamps, call park);
- `overload`: the event loop's lag monitor and the stack's overload guard (`[overload]`);
- `tls_reload`: TLS certificates reloaded on SIGHUP and when the configured files change;
- `trunks`: the trunks' registrations, OPTIONS pings and live state (`TrunksService.states`);
- `adapters`: config -> the plain lookups and values the layers below take;
- `process` and `logs`: descriptor limits, the garbage collector, the ready line;
- `metrics` and `log_json`: Prometheus metrics, per-call traces, JSON log lines, log levels per subsystem.
- `admin`: the live extension directory (config + store) and the operator's console (`[admin]`).

Nothing here names the reactor: `pbx/tap.py` passes it in. Nothing below this package reads the config.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, gatherResults, succeed

from pbx.config import Config
from pbx.service.admin import build_admin, build_extensions
from pbx.service.calls import build_calls
from pbx.service.features import build_features
from pbx.service.log_json import LogSettings
from pbx.service.metrics import build_observability
from pbx.service.mwi import build_mwi
from pbx.service.overload import build_overload
from pbx.service.registrar import build_registrar
from pbx.service.sip import build_sip
from pbx.service.tls_reload import build_tls_reload
from pbx.service.trunk_lease import build_trunk_leases
from pbx.service.trunk_store import build_trunk_store
from pbx.service.trunks import build_trunks
from pbx.service.voicemail import build_voicemail
from pbx.service.voicemail_mail import build_mailer


class PbxServices(service.MultiService):
    """The PBX's services; stopping first drains the calls (`[calls] drain_timeout`), then stops them all."""

    def __init__(self) -> None:
        super().__init__()
        self.drain: Any = None  # () -> Deferred: CallsService.drain

    def stopService(self) -> Deferred[Any]:
        drained = self.drain() if self.drain is not None else succeed(None)
        return drained.addBoth(lambda _: service.MultiService.stopService(self))


def build(
    config: Config, the_reactor: Any, *, sip_trace: bool = False, log: LogSettings | None = None
) -> service.MultiService:
    """The PBX's services, in the order they start: SIP listeners, registrar, voicemail, trunks, calls,
    message waiting (they stop in the reverse order: calls end before the trunks unregister)."""
    top = PbxServices()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    stack, sip = build_sip(config, the_reactor, trace=sip_trace)
    sip.setServiceParent(top)
    overload = build_overload(config, stack, the_reactor)  # [overload]: shed new work early
    overload.setServiceParent(top)
    tls_reload = build_tls_reload(sip, the_reactor)  # None without a TLS listener; SIGHUP: tap.py
    if tls_reload is not None:
        tls_reload.setServiceParent(top)
    extensions = build_extensions(config)  # the live directory: config + store (the console's changes)
    registrar = build_registrar(config, stack, the_reactor, ha1=extensions.directory.ha1)
    registrar.setServiceParent(top)
    extensions.directory.attach(registrar.store)
    extensions.setServiceParent(top)
    voicemail = build_voicemail(config, registrar.store, the_reactor)
    voicemail.setServiceParent(top)
    trunks = build_trunks(config, stack, the_reactor)  # trunks.states: the ITrunkStates calls read
    trunks.setServiceParent(top)
    trunk_store = build_trunk_store(config, trunks.states, registrar.store, the_reactor)  # for other nodes
    if trunk_store is not None:
        trunk_store.setServiceParent(top)
    trunk_leases = build_trunk_leases(config, trunks, registrar.store, the_reactor)  # one node registers each
    if trunk_leases is not None:
        trunk_leases.setServiceParent(top)  # stops before the trunks: unregisters and releases first
    mailer = build_mailer(config, voicemail, the_reactor)  # None without [smtp] host
    if mailer is not None:
        mailer.setServiceParent(top)
    calls = build_calls(
        config,
        stack,
        registrar,
        the_reactor,
        voicemail.mailboxes,
        trunks.states,
        extensions.directory.directory,
    )
    calls.setServiceParent(top)
    top.drain = calls.drain
    if trunk_leases is not None:  # a draining node lets another register its trunks
        top.drain = trunk_leases.before_drain(calls.drain)
    mwi = build_mwi(config, stack, registrar, voicemail.mailboxes)
    mwi.setServiceParent(top)
    # Phone features (docs/features.md): DND/forwarding codes, busy lamps on MWI's notifier, call park.
    build_features(config, calls, mwi, registrar.store, the_reactor).setServiceParent(top)
    # Metrics, call traces, log levels ("metrics": top.getServiceNamed("metrics")): pbx.service.metrics.
    observability = build_observability(
        config, the_reactor, sip=sip, stack=stack, registrar=registrar, calls=calls, trunks=trunks,
        voicemail=voicemail, log=log,
    )  # fmt: skip
    observability.setServiceParent(top)
    monitor = overload.monitor
    if monitor is not None:  # the event-loop lag metric is the overload monitor's (else a probe of its own)
        observability.metrics.set_lag_source(lambda: monitor.lag)
    admin = build_admin(
        config,
        the_reactor,
        extensions.directory,
        registrar=registrar,
        calls=calls,
        trunks=trunks,
        mailboxes=voicemail.mailboxes,
        metrics=observability,
    )
    if admin is not None:  # off unless [admin] listen is set
        admin.setServiceParent(top)
    return top


def when_ready(top: service.IServiceCollection) -> Deferred[Any]:
    """Fires once every service with a `ready` Deferred (voicemail recovery) has fired it: then the PBX
    says it is ready."""
    return gatherResults([s.ready for s in top if isinstance(getattr(s, "ready", None), Deferred)])
