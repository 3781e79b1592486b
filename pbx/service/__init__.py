"""The PBX assembled from a validated config: the composition root's parts, read by `pbx/tap.py`.

- `sip`: the stack and transports (`[sip]`, `[tls]`);
- `registrar`: REGISTER, the location service, digest auth and the brute-force guard;
- `calls`: the B2BUA, dialplans, media relay and media applications;
- `voicemail`: the mailboxes (files and index), recovered at start, shared by calls and MWI;
- `mwi`: message-waiting subscriptions;
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
from pbx.service.registrar import build_registrar
from pbx.service.sip import build_sip
from pbx.service.voicemail import build_voicemail


def build(config: Config, the_reactor: Any, *, sip_trace: bool = False) -> service.MultiService:
    """The PBX's services, in the order they start: SIP listeners, registrar, voicemail, calls, message
    waiting."""
    top = service.MultiService()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    stack, sip = build_sip(config, the_reactor, trace=sip_trace)
    sip.setServiceParent(top)
    registrar = build_registrar(config, stack, the_reactor)
    registrar.setServiceParent(top)
    voicemail = build_voicemail(config, registrar.store, the_reactor)
    voicemail.setServiceParent(top)
    build_calls(config, stack, registrar, the_reactor, voicemail.mailboxes).setServiceParent(top)
    build_mwi(config, stack, registrar, voicemail.mailboxes).setServiceParent(top)
    return top


def when_ready(top: service.IServiceCollection) -> Deferred[Any]:
    """Fires once every service with a `ready` Deferred (voicemail recovery) has fired it: then the PBX
    says it is ready."""
    return gatherResults([s.ready for s in top if isinstance(getattr(s, "ready", None), Deferred)])
