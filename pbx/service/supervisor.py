"""The `--workers N` supervisor: starts N PBX worker processes, restarts those that die, drains them all.

The supervisor itself opens no SIP socket and no store: it spawns each worker (`worker_argv`: the same
`twistd -n pbx` command with `--worker-index I`), logs each start and exit, and

- restarts a worker that exits while the supervisor runs, after a back-off: `RESTART_DELAY` seconds, doubled
  after each exit that came sooner than `STABLE_AFTER` seconds after its start, at most `RESTART_DELAY_MAX`;
- on stop (`SIGTERM` to the supervisor) sends `SIGTERM` to every worker, which drains as a single PBX does
  (`[calls] drain_timeout`: new calls and health checks get 503, calls up go on), and finishes once all have
  exited; a worker still running `stop_timeout` seconds later gets `SIGKILL`.

Workers get the supervisor's process id in `PBX_SUPERVISOR_PID`; a worker whose parent is no longer that
process (the supervisor was killed with `kill -9`) drains and stops by itself (`ParentWatch`).
Nothing here names the reactor: `pbx/tap.py` passes it in (as the process spawner and the clock).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbx.config import Config
from pbx.service.adapters import nonce_secret
from pbx.service.workers import DISPATCHER_FILE, dispatcher_list, worker_argv

_log = Logger(namespace="pbx")

RESTART_DELAY = 1.0
"""Seconds before a worker that died is started again, the first time."""
RESTART_DELAY_MAX = 30.0
"""The longest wait before a restart (the delay doubles while the worker keeps dying young)."""
STABLE_AFTER = 60.0
"""A worker that ran this many seconds before it exited is restarted after `RESTART_DELAY` again."""
STOP_MARGIN = 30.0
"""Seconds a worker has, beyond `[calls] drain_timeout`, to exit once told to stop (trunks unregister)."""
SUPERVISOR_PID = "PBX_SUPERVISOR_PID"
"""The environment variable that gives a worker its supervisor's process id (`ParentWatch`)."""


def describe_exit(reason: Failure) -> str:
    """`exit code 1`, `signal 9`, or the failure's text, for the log."""
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exit code 0"
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            return f"signal {value.signal}"
        return f"exit code {value.exitCode}"
    return str(value)


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, ended: Callable[[Failure], None]) -> None:
        self._ended = ended

    def processEnded(self, reason: Failure) -> None:
        self._ended(reason)


@dataclass
class _Worker:
    index: int
    process: Any = None  # IProcessTransport while running
    pid: int | None = None  # its process id (the transport forgets it once the process ended)
    started_at: float = 0.0
    delay: float = RESTART_DELAY
    restart: Any = None  # IDelayedCall of a pending restart
    starts: int = 0


class WorkerSupervisor(service.Service):
    """Runs `count` workers; see the module docstring.

    Args:
        count: how many workers.
        argv: worker index -> its command line (argv[0] is the executable).
        spawner: `IReactorProcess` (`spawnProcess`).
        clock: `IReactorTime`.
        env: the workers' environment (the supervisor's own, plus `PBX_SUPERVISOR_PID`).
        stop_timeout: seconds the workers have to drain and exit once told to stop, before `SIGKILL`.
        on_start: called once, at start, before the workers are spawned (writes the dispatcher list).
    """

    def __init__(
        self,
        count: int,
        argv: Callable[[int], Sequence[str]],
        spawner: Any,
        clock: Any,
        *,
        env: Mapping[str, str] | None = None,
        stop_timeout: float = 330.0,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.count = count
        self.argv = argv
        self.spawner = spawner
        self.clock = clock
        self.env = dict(env or {})
        self.stop_timeout = stop_timeout
        self.on_start = on_start
        self.workers = [_Worker(i) for i in range(count)]
        self._stopping = False
        self._all_exited: Deferred[None] | None = None
        self._kill: Any = None

    def startService(self) -> None:
        service.Service.startService(self)
        self._stopping = False
        if self.on_start is not None:
            self.on_start()
        _log.info("PBX supervisor: starting {count} workers", count=self.count)
        for worker in self.workers:
            self._spawn(worker)

    def _spawn(self, worker: _Worker) -> None:
        worker.restart = None
        if self._stopping:
            return
        argv = list(self.argv(worker.index))
        protocol = _WorkerProtocol(lambda reason: self._ended(worker, reason))
        worker.process = self.spawner.spawnProcess(
            protocol, argv[0], argv, env=dict(self.env), childFDs={0: "w", 1: 1, 2: 2}
        )
        worker.pid = getattr(worker.process, "pid", None)
        worker.started_at = self.clock.seconds()
        worker.starts += 1
        _log.info(
            "PBX worker {index} started (pid {pid})",
            index=worker.index,
            pid=getattr(worker.process, "pid", None),
        )

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        pid = worker.pid
        worker.process = None
        how = describe_exit(reason)
        if self._stopping:
            _log.info("PBX worker {index} (pid {pid}) stopped: {how}", index=worker.index, pid=pid, how=how)
            self._check_all_exited()
            return
        ran = self.clock.seconds() - worker.started_at
        if ran >= STABLE_AFTER:
            worker.delay = RESTART_DELAY
        delay = worker.delay
        worker.delay = min(RESTART_DELAY_MAX, worker.delay * 2)
        _log.warn(
            "PBX worker {index} (pid {pid}) exited after {ran:.0f} s: {how}; restarting it in {delay:.0f} s",
            index=worker.index,
            pid=pid,
            ran=ran,
            how=how,
            delay=delay,
        )
        worker.restart = self.clock.callLater(delay, self._spawn, worker)

    @property
    def alive(self) -> list[int]:
        """The indexes of the workers running now."""
        return [w.index for w in self.workers if w.process is not None]

    def stopService(self) -> Deferred[None]:
        service.Service.stopService(self)
        self._stopping = True
        for worker in self.workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
            worker.restart = None
        if not self.alive:
            return succeed(None)
        _log.info("PBX supervisor: stopping {count} workers (they drain first)", count=len(self.alive))
        self._all_exited = Deferred()
        for worker in self.workers:
            self._signal(worker, "TERM")
        self._kill = self.clock.callLater(self.stop_timeout, self._kill_remaining)
        return self._all_exited

    def _signal(self, worker: _Worker, signal: str) -> None:
        if worker.process is None:
            return
        try:
            worker.process.signalProcess(signal)
        except Exception as e:  # ProcessExitedAlready: its end is on its way
            _log.debug("PBX worker {index}: {signal} not sent: {e}", index=worker.index, signal=signal, e=e)

    def _kill_remaining(self) -> None:
        self._kill = None
        for worker in self.workers:
            if worker.process is not None:
                _log.warn(
                    "PBX worker {index} still running {timeout:.0f} s after SIGTERM: SIGKILL",
                    index=worker.index,
                    timeout=self.stop_timeout,
                )
                self._signal(worker, "KILL")

    def _check_all_exited(self) -> None:
        if self.alive or self._all_exited is None:
            return
        if self._kill is not None and self._kill.active():
            self._kill.cancel()
        self._kill = None
        done, self._all_exited = self._all_exited, None
        _log.info("PBX supervisor: every worker has stopped")
        done.callback(None)


class ParentWatch:
    """In a worker: calls `orphaned` once when the worker's parent is no longer its supervisor.

    Args:
        clock: `IReactorTime`.
        parent: the supervisor's process id.
        getppid: `os.getppid`.
        orphaned: what to do (stop the reactor: the worker drains as on SIGTERM).
        interval: seconds between checks.
    """

    def __init__(
        self,
        clock: Any,
        parent: int,
        getppid: Callable[[], int],
        orphaned: Callable[[], None],
        interval: float = 1.0,
    ) -> None:
        self._parent = parent
        self._getppid = getppid
        self._orphaned = orphaned
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock
        self._interval = interval

    def start(self) -> None:
        self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _check(self) -> None:
        if self._getppid() == self._parent:
            return
        self.stop()
        _log.warn("PBX supervisor (pid {pid}) is gone: this worker stops", pid=self._parent)
        self._orphaned()


def twistd_command(argv0: str, executable: str) -> list[str]:
    """How to run this twistd again: its script when it was started as `twistd`, else twistd's entry point."""
    if Path(argv0).name == "twistd" and Path(argv0).is_file():
        return [executable, argv0]
    return [executable, "-c", "from twisted.scripts.twistd import run; run()"]


def build_supervisor(
    config: Config,
    the_reactor: Any,
    count: int,
    *,
    command: list[str],
    server_options: Mapping[str, Any] | None,
    sip_trace: bool,
    environ: Mapping[str, str],
    pid: int,
) -> WorkerSupervisor:
    """The supervisor of `count` workers of `config` (checked with `check_workers` already): the workers'
    command lines, their environment, the stop deadline (`[calls] drain_timeout` + `STOP_MARGIN`), and the
    dispatcher list written to `pbx.data_dir` at start (the nonce key is made there first, so that the
    workers share it)."""
    assert config.source is not None
    config_path = config.source.resolve()
    options = server_options or {}
    pidfile = str(options.get("pidfile") or "")
    logfile = str(options.get("logfile") or "")

    def argv(index: int) -> list[str]:
        return worker_argv(
            command, config_path, count, index, pidfile=pidfile, logfile=logfile, sip_trace=sip_trace
        )

    def on_start() -> None:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        nonce_secret(config.data_dir)  # made once here, not raced by the workers
        path = config.data_dir / DISPATCHER_FILE
        text = dispatcher_list(config, count)
        path.write_text(text)
        _log.info(
            "PBX supervisor: Kamailio dispatcher list in {path}: {lines}",
            path=str(path),
            lines="; ".join(line for line in text.splitlines() if not line.startswith("#")),
        )

    return WorkerSupervisor(
        count,
        argv,
        the_reactor,
        the_reactor,
        env={**environ, SUPERVISOR_PID: str(pid), "PYTHONUNBUFFERED": "1"},
        stop_timeout=config.calls.drain_timeout + STOP_MARGIN,
        on_start=on_start,
    )


def watch_parent(
    the_reactor: Any, environ: Mapping[str, str], getppid: Callable[[], int]
) -> ParentWatch | None:
    """In a worker started by a supervisor: a started `ParentWatch` that stops the reactor (drain) once the
    supervisor is gone; None otherwise."""
    try:
        parent = int(environ.get(SUPERVISOR_PID, ""))
    except ValueError:
        return None
    watch = ParentWatch(the_reactor, parent, getppid, the_reactor.stop)
    watch.start()
    return watch
