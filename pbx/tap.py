"""`twistd pbx`: the command-line options and the composition root.

This is the only module that names the reactor. It reads the config (a `ConfigError` stops `twistd` before
anything listens, naming the key), tunes the process, and has `pbx.service` build the PBX from the config:

1. `pbx.service.sip`: the SIP stack and its transports;
2. `pbx.service.registrar`: REGISTER, the location service, digest auth, the brute-force guard;
3. `pbx.service.calls`: the B2BUA, dialplans, media relay and the PBX's own media;
4. `pbx.service.mwi`: message-waiting subscriptions.

Then it logs one ready line (`pbx.service.logs`), once start-up work (voicemail recovery) is done.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import reactor
from twisted.logger import Logger
from twisted.python import usage

from pbx.admin.log_levels import LogLevels
from pbx.config import Config, ConfigError, load_config
from pbx.service import build, when_ready
from pbx.service.log_json import LogSettings
from pbx.service.logs import QuietLogging, quiet_log_observer, ready_message
from pbx.service.process import raise_file_limit_to_hard, tune_garbage_collector
from pbx.service.supervisor import build_supervisor, twistd_command, watch_parent
from pbx.service.tls_reload import install_sighup
from pbx.service.wakeups import nap_between_polls
from pbx.service.workers import check_workers, worker_config

_log = Logger(namespace="pbx")


class Options(usage.Options):
    """Command-line options of `twistd pbx`."""

    synopsis = "[--config FILE] [--sip-trace] [--workers N]"
    optParameters = [
        ["config", "c", "pbx.toml", "The PBX configuration file (TOML)."],
        ["workers", None, 1, "Run N PBX processes behind a supervisor (docs/scaling.md).", int],
        ["worker-index", None, None, "Run as worker I of --workers N (the supervisor passes it).", int],
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
        problem = check_workers(self["config_obj"], self["workers"], self["worker-index"])
        if problem is not None:
            raise usage.UsageError(problem)


def makeService(options: Options) -> service.IService:
    """twistd's entry point."""
    config: Config = options["config_obj"]
    workers, index = options["workers"], options["worker-index"]
    server_options = getattr(options, "parent", None)  # twistd's own options
    if workers > 1 and index is None:  # --workers N: the supervisor (pbx.service.supervisor)
        top: service.IService = build_supervisor(
            config, reactor, workers, command=twistd_command(sys.argv[0], sys.executable),
            server_options=server_options, sip_trace=bool(options["sip-trace"]), environ=os.environ,
            pid=os.getpid(),
        )  # fmt: skip
        return _logged(top, server_options, None)
    if index is not None:  # worker I: its own ports and RTP slice (pbx.service.workers)
        config = worker_config(config, index, workers)
        reactor.callWhenRunning(watch_parent, reactor, os.environ, os.getppid)
    reactor.callWhenRunning(tune_garbage_collector)
    if config.poll_window > 0 and nap_between_polls(reactor, config.poll_window) is not None:
        _log.info("Busy event loop: at least {ms:g} ms between wake-ups", ms=config.poll_window * 1e3)
    raise_file_limit_to_hard()
    _log.info("PBX starting with {config} (Python {v})", config=str(config.source), v=sys.version.split()[0])
    log = LogSettings(config.log.format, LogLevels(config.log.levels))  # [log]: JSON lines, levels
    top = build(config, reactor, sip_trace=bool(options["sip-trace"]), log=log)
    reactor.callWhenRunning(install_sighup, top, reactor)  # SIGHUP: reload the TLS certificate
    ready = ready_message(config) + (f" (worker {index} of {workers})" if index is not None else "")
    reactor.callWhenRunning(lambda: when_ready(top).addBoth(lambda _: _log.info("{message}", message=ready)))
    return _logged(top, server_options, log)


def _logged(top: service.IService, server_options: Any, log: LogSettings | None) -> service.IService:
    if server_options is None or server_options.get("logger"):
        return top  # not run by twistd, or the operator chose a log observer (--logger)
    return QuietLogging(top, partial(quiet_log_observer, server_options, log, reactor))
