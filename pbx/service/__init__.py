"""The PBX assembled from a validated config: the composition root's parts, read by `pbx/tap.py`.

- `sip`: the stack and transports (`[sip]`, `[tls]`);
- `registrar`: REGISTER, the location service, digest auth and the brute-force guard;
- `calls`: the B2BUA, dialplans, media relay and media applications;
- `voicemail`: the mailboxes (files and index), recovered at start, shared by calls and MWI;
- `voicemail_mail`: voicemail to e-mail (`[smtp]`), told of new messages by the mailboxes;
- `mwi`: message-waiting subscriptions;
- `overload`: the event loop's lag monitor and the stack's overload guard (`[overload]`);
- `tls_reload`: TLS certificates reloaded on SIGHUP and when the configured files change;
- `trunks`: the trunks' registrations, OPTIONS pings and live state (`TrunksService.states`);
- `adapters`: config -> the plain lookups and values the layers below take;
- `process` and `logs`: descriptor limits, the garbage collector, the ready line.

Nothing here names the reactor: `pbx/tap.py` passes it in. Nothing below this package reads the config.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, gatherResults

from pbx.config import Config
from pbx.service.calls import build_calls
from pbx.service.mwi import build_mwi
from pbx.service.overload import build_overload
from pbx.service.registrar import build_registrar
from pbx.service.sip import build_sip
from pbx.service.tls_reload import build_tls_reload
from pbx.service.trunks import build_trunks
from pbx.service.voicemail import build_voicemail
from pbx.service.voicemail_mail import build_mailer


def build(config: Config, the_reactor: Any, *, sip_trace: bool = False) -> service.MultiService:
    """The PBX's services, in the order they start: SIP listeners, registrar, voicemail, trunks, calls,
    message waiting (they stop in the reverse order: calls end before the trunks unregister)."""
    top = service.MultiService()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    stack, sip = build_sip(config, the_reactor, trace=sip_trace)
    sip.setServiceParent(top)
    build_overload(config, stack, the_reactor).setServiceParent(top)  # [overload]: shed new work early
    tls_reload = build_tls_reload(sip, the_reactor)  # None without a TLS listener; SIGHUP: tap.py
    if tls_reload is not None:
        tls_reload.setServiceParent(top)
    registrar = build_registrar(config, stack, the_reactor)
    registrar.setServiceParent(top)
    voicemail = build_voicemail(config, registrar.store, the_reactor)
    voicemail.setServiceParent(top)
    trunks = build_trunks(config, stack, the_reactor)  # trunks.states: the ITrunkStates calls read
    trunks.setServiceParent(top)
    mailer = build_mailer(config, voicemail, the_reactor)  # None without [smtp] host
    if mailer is not None:
        mailer.setServiceParent(top)
    build_calls(config, stack, registrar, the_reactor, voicemail.mailboxes, trunks.states).setServiceParent(
        top
    )
    build_mwi(config, stack, registrar, voicemail.mailboxes).setServiceParent(top)
    return top


def when_ready(top: service.IServiceCollection) -> Deferred[Any]:
    """Fires once every service with a `ready` Deferred (voicemail recovery) has fired it: then the PBX
    says it is ready."""
    return gatherResults([s.ready for s in top if isinstance(getattr(s, "ready", None), Deferred)])
