"""Trunks as a service: each tenant's `[tenants.NAME.trunks.TRUNK]` registered and pinged, their state kept.

`build_trunks` returns a `TrunksService` whose `states` (a `pbx.trunks.state.TrunkStates`, the
`ITrunkStates` of `pbx.trunks.settings`) is what call routing reads: `pbx.service.build` hands it to the
B2BUA's composition. Started, it sends every registering trunk's first REGISTER and first OPTIONS; stopped, it
unregisters them (Expires: 0, each bounded by `UNREGISTER_TIMEOUT`) before the SIP listeners close. The
state goes to `DATA_DIR/trunks.json` (`pbx.trunks.status`) for `pbx trunks status`.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from pbx.config import Config, Trunk
from pbx.service.adapters import sip_locator
from pbx.sip.stack import SipStack
from pbx.trunks.registration import TrunkRegistrations
from pbx.trunks.state import TrunkStates
from pbx.trunks.status import STATUS_FILE, StatusFile

_log = Logger(namespace="pbx")

UNREGISTER_TIMEOUT = 5.0
"""Seconds the PBX waits at shutdown for a carrier to answer the unregister."""


def configured_trunks(config: Config) -> list[tuple[str, Trunk]]:
    """Every tenant's trunks as (tenant name, trunk), in the config's order, disabled ones included."""
    return [(tenant.name, trunk) for tenant in config.tenants for trunk in tenant.trunks.values()]


class TrunksService(service.Service):
    """Starts and stops the trunks' registrations and pings; keeps the status file.

    Attributes:
        states: the trunks' live state (`ITrunkStates`: `is_up`, `contact_user`).
        registrations: the registration clients and pingers.
        status_file: the JSON status file, or None when no trunk is configured.
    """

    def __init__(self, registrations: TrunkRegistrations, status_file: StatusFile | None) -> None:
        self.registrations = registrations
        self.states = registrations.states
        self.status_file = status_file

    def startService(self) -> None:
        super().startService()
        if self.status_file is None:
            return
        states = list(self.states)
        _log.info(
            "Trunks: {count} configured, {registering} registering, {pinged} pinged with OPTIONS",
            count=len(states),
            registering=sum(1 for state in states if state.registers),
            pinged=sum(1 for state in states if state.pings),
        )
        self.registrations.start()
        self.status_file.write()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self.status_file is None:
            return succeed(None)
        stopped = self.registrations.stop()
        status_file = self.status_file
        stopped.addCallback(lambda _: status_file.close())
        return stopped


def build_trunks(config: Config, stack: SipStack, the_reactor: Any) -> TrunksService:
    """Registration clients and OPTIONS pingers for the configured trunks (RFC 3263 through the configured
    name servers), their `TrunkStates`, and the status file in the data directory."""
    trunks = configured_trunks(config)
    states = TrunkStates(the_reactor)
    registrations = TrunkRegistrations(
        stack,
        the_reactor,
        states,
        trunks,
        locate=sip_locator(config, the_reactor).resolve if trunks else None,
        stop_timeout=UNREGISTER_TIMEOUT,
    )
    status_file = StatusFile(config.data_dir / STATUS_FILE, states, the_reactor) if trunks else None
    return TrunksService(registrations, status_file)
