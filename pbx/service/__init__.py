"""The PBX assembled from a validated config: the composition root's parts, read by `pbx/tap.py`.

- `sip`: the stack and transports (`[sip]`, `[tls]`);
- `registrar`: REGISTER, the location service, digest auth and the brute-force guard;
- `calls`: the B2BUA, dialplans, media relay and media applications;
- `mwi`: message-waiting subscriptions;
- `trunks`: the trunks' registrations, OPTIONS pings and live state (`TrunksService.states`);
- `adapters`: config -> the plain lookups and values the layers below take;
- `process` and `logs`: descriptor limits, the garbage collector, the ready line.

Nothing here names the reactor: `pbx/tap.py` passes it in. Nothing below this package reads the config.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service

from pbx.config import Config
from pbx.service.calls import build_calls
from pbx.service.mwi import build_mwi
from pbx.service.registrar import build_registrar
from pbx.service.sip import build_sip
from pbx.service.trunks import build_trunks


def build(config: Config, the_reactor: Any, *, sip_trace: bool = False) -> service.MultiService:
    """The PBX's services, in the order they start: SIP listeners, registrar, trunks, calls, message
    waiting (they stop in the reverse order: calls end before the trunks unregister)."""
    top = service.MultiService()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    stack, sip = build_sip(config, the_reactor, trace=sip_trace)
    sip.setServiceParent(top)
    registrar = build_registrar(config, stack, the_reactor)
    registrar.setServiceParent(top)
    trunks = build_trunks(config, stack, the_reactor)  # trunks.states: the ITrunkStates calls read
    trunks.setServiceParent(top)
    build_calls(config, stack, registrar, the_reactor, trunks.states).setServiceParent(top)
    build_mwi(config, stack, registrar).setServiceParent(top)
    return top
