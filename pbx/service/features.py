"""Phone features as a service (docs/features.md): DND and forwarding set by phone (`feature`), busy lamps
(the RFC 4235 `dialog` package on the SUBSCRIBE notifier MWI built) and call park (`park`, `unpark`).

Built after the calls and MWI (`pbx.service.build`): it plugs its applications into the B2BUA's `apps`,
lays the owners' settings over the dialplan context (`B2BUA.extension_overrides`), watches calls through the
B2BUA's observers, and loads the settings from the store at start (`ready`).
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbx.apps import IvrApps
from pbx.apps.busy_lamps import BusyLamps, DialogPackage
from pbx.apps.features import PhoneFeatures
from pbx.apps.park import CallPark
from pbx.config import Config
from pbx.service.calls import CallsService
from pbx.service.mwi import MwiService

_log = Logger(namespace="pbx")


class FeaturesService(service.Service):
    """Loads the owners' settings at start (`ready` fires once done, also after a logged failure) and ends
    the parked calls when the PBX stops."""

    def __init__(self, features: PhoneFeatures, lamps: BusyLamps, park: CallPark) -> None:
        self.features = features
        self.lamps = lamps
        self.park = park
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        self.features.load().addCallbacks(self._loaded, self._failed).chainDeferred(self.ready)

    def _loaded(self, count: int) -> None:
        _log.info("Phone features: {count} extensions with DND or forwarding set by phone", count=count)

    def _failed(self, failure: Failure) -> None:
        _log.failure("Phone features: could not read the settings set by phone", failure)

    def stopService(self) -> Any:
        self.park.stop()
        return super().stopService()


def build_features(
    config: Config, calls: CallsService, mwi: MwiService, store: Any, the_reactor: Any
) -> FeaturesService:
    """DND/forwarding codes, busy lamps and call park for the B2BUA of `calls`, over `store` (an
    `IFeatureStore`: the registrar's SQLite store), with the dialog package on MWI's notifier."""
    b2bua = calls.b2bua
    ivr = IvrApps(calls.engine, config.dialplan_dir, config.data_dir / "recordings")
    features = PhoneFeatures(store, the_reactor, ivr)
    features.register(b2bua.apps)
    b2bua.extension_overrides = features.overrides
    settings = {tenant.name: tenant.features for tenant in config.tenants}
    park = CallPark(
        the_reactor,
        ivr,
        orbits=lambda tenant: settings[tenant].park_orbits if tenant in settings else (),
        timeout=lambda tenant: settings[tenant].park_timeout if tenant in settings else 45.0,
        announce=lambda tenant: settings[tenant].park_announce if tenant in settings else True,
        emit=b2bua.observers.emit,
    )
    park.register(b2bua.apps)
    b2bua.observers.append(park)
    domains = {tenant.name: tenant.domain for tenant in config.tenants}
    extensions = {tenant.name: frozenset(tenant.extensions) for tenant in config.tenants}

    def watchable(tenant: str, watcher: str, number: str) -> int | None:
        """None when `watcher` may watch `number` (default: every extension and orbit of its tenant)."""
        if tenant not in settings:
            return 404
        if number not in extensions[tenant] and number not in settings[tenant].park_orbits:
            return 404
        allowed = settings[tenant].blf_watchable
        return 403 if allowed and number not in allowed else None

    notifier = mwi.mwi.notifier
    lamps = BusyLamps(notifier, domains.get)
    notifier.add_package(DialogPackage(lamps, watchable))
    b2bua.observers.append(lamps)
    return FeaturesService(features, lamps, park)
