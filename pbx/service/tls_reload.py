"""TLS certificates reloaded without a restart: on SIGHUP and when the configured files change on disk.

`build_sip` gives the TLS listeners a `pbx.sip.tls_reload.ReloadableServerOptions`; `TlsReloadService` polls
the configured `[tls] certificate` and `private_key` (the generated development certificate is not watched,
but SIGHUP reloads it too) and `install_sighup` (called by `pbx/tap.py` once the reactor runs) makes SIGHUP
reload. Established connections, the registrations over them and their calls are never dropped by a reload."""

from __future__ import annotations

import signal
from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pbx.sip.tls_reload import DEFAULT_WATCH_INTERVAL, CertificateFileWatcher, ReloadableServerOptions

_log = Logger(namespace="pbx")

SERVICE_NAME = "tls-reload"


class TlsReloadService(service.Service):
    """Reloads the TLS listeners' certificate on request (SIGHUP) and, when `watch`, on file changes.

    Args:
        options: what the TLS listeners were given.
        clock: polls the files.
        watch: poll the certificate and key files (configured files; not the development certificate).
        interval: seconds between polls.
    """

    name = SERVICE_NAME

    def __init__(
        self,
        options: ReloadableServerOptions,
        clock: IReactorTime,
        *,
        watch: bool,
        interval: float = DEFAULT_WATCH_INTERVAL,
    ) -> None:
        self.options = options
        self.watcher = (
            CertificateFileWatcher(
                clock, [options.cert_path, options.key_path], lambda: options.reload("file change"), interval
            )
            if watch
            else None
        )

    def startService(self) -> None:
        super().startService()
        if self.watcher is not None:
            self.watcher.start()
            _log.info(
                "Watching {cert} and {key} for new TLS certificates",
                cert=str(self.options.cert_path),
                key=str(self.options.key_path),
            )

    def stopService(self) -> Any:
        if self.watcher is not None:
            self.watcher.stop()
        return super().stopService()

    def reload(self, trigger: str = "SIGHUP") -> bool:
        """Reload now (see `ReloadableServerOptions.reload`)."""
        return self.options.reload(trigger)


def build_tls_reload(sip: Any, clock: IReactorTime) -> TlsReloadService | None:
    """The reload service for `SipService` `sip` (None without a TLS listener)."""
    options = getattr(sip, "tls_reloadable", None)
    if not isinstance(options, ReloadableServerOptions):
        return None
    return TlsReloadService(options, clock, watch=bool(getattr(sip, "tls_watch", False)))


def install_sighup(top: service.IServiceCollection, the_reactor: Any) -> bool:
    """Make SIGHUP reload the TLS certificate (the handler only schedules the reload in the reactor thread).

    Returns:
        False when there is nothing to reload (no TLS listener) or no SIGHUP on this platform.
    """
    try:
        reloader = top.getServiceNamed(SERVICE_NAME)
    except KeyError:
        return False
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None:
        return False

    def on_sighup(signum: int, frame: object) -> None:
        the_reactor.callFromThread(reloader.reload, "SIGHUP")

    signal.signal(sighup, on_sighup)
    return True
