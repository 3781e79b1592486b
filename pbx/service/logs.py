"""What the PBX says when it starts: the one ready line, and Twisted's per-socket lines kept quiet; its log
file flushed at most every `FLUSH_DELAY` seconds (`DelayedFlush`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from threading import get_ident
from typing import Any, cast

from twisted.application import service
from twisted.internet.interfaces import IDelayedCall, IReactorCore, IReactorTime
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogEvent,
    PredicateResult,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python import threadable, usage
from twisted.python.components import Componentized

from pbx.config import Config
from pbx.service.log_json import JsonLogLines, LogSettings

_TWISTED_PORT_LINE = re.compile(r".+ starting on \d+|\(\w+ Port \d+ Closed\)")


def quiet_port_lines(event: LogEvent) -> PredicateResult:
    """Hide the lines Twisted logs for every socket it opens and closes ("SipStreamFactory starting on 5060",
    "(UDP Port 10002 Closed)"), relayed calls' RTP sockets included: the ready line names the listeners."""
    if event.get("log_namespace") == "log_legacy" and _TWISTED_PORT_LINE.fullmatch(
        str(event.get("log_text"))
    ):
        return PredicateResult.no
    return PredicateResult.maybe


class ClassicLogText:
    """Twisted's `formatEventAsClassicLogText` (`2026-12-07T04:12:04+0000 [namespace#info] text`), the same
    text at less cost for the PBX's own lines (a busy PBX logs one per call, hundreds a second).

    The time stamp (to the second) is formatted once per second, not per line, and a format without braces
    is its own text (Twisted runs `string.Formatter` on it, and the PBX's per-call line is formatted before
    it is logged: see `pbx.b2bua.b2bua.as_log_format`). Any other event (fields to format, a failure, a
    `log_system`, Twisted's legacy lines) is Twisted's to format.
    """

    __slots__ = ("_second", "_stamp")

    def __init__(self) -> None:
        self._second: int | None = None
        self._stamp = ""

    def time_stamp(self, when: float | None) -> str:
        """`formatTime(when)` in twistd's format; the same within a second (no fraction is shown)."""
        if type(when) is not float or when < 0:
            return formatTime(when, timeFormatRFC3339)
        second = int(when)
        if second != self._second:  # the UTC offset can only change on a whole second
            self._stamp = formatTime(second, timeFormatRFC3339)
            self._second = second
        return self._stamp

    def __call__(self, event: LogEvent) -> str | None:
        text = event.get("log_format")
        level = event.get("log_level")
        if (
            type(text) is not str
            or not text
            or "{" in text
            or "}" in text
            or level is None
            or "log_system" in event
            or "log_failure" in event
            or "log_flattened" in event
        ):
            return formatEventAsClassicLogText(event, formatTime=self.time_stamp)
        system = f"{event.get('log_namespace', '-')}#{level.name}"
        line = f"{self.time_stamp(event.get('log_time'))} [{system}] {text}"
        if "\n" in line:
            line = line.replace("\n", "\n\t")
        return line + "\n"


FLUSH_DELAY = 0.1
"""Seconds a line written to the log file may wait for the file's flush (`DelayedFlush`)."""


class DelayedFlush:
    """The log file as Twisted's `FileLogObserver` sees it: the lines written in the reactor's thread are kept
    and written to the file together `delay` seconds after the first of them, in one write and one flush.

    `FileLogObserver` writes and flushes each line: one `write` system call per line (the PBX runs with
    PYTHONUNBUFFERED=1 under systemd and the benchmarks, so even the write alone is one), which on a pipe
    read by another process (systemd's journal, the benchmarks' reader) cost the PBX 15-35 us of CPU per line,
    for the line each call logs. Lines now reach the file at most `delay` seconds after they are logged. A
    line from another thread than the reactor's (or before the reactor runs, or once it has shut down) is
    written and flushed at once, as before (it may then come before lines of the reactor's that wait).

    Args:
        file: the log file (stdout, a `LogFile`).
        clock: the reactor (its time, and its shutdown: the waiting lines are written then).
        delay: seconds.
        in_io_thread: whether the caller runs in the reactor's thread (tests replace it; default:
            `in_reactor_thread`).
    """

    __slots__ = ("_call", "_clock", "_delay", "_file", "_in_io_thread", "_pending", "_stopped")

    def __init__(
        self,
        file: Any,
        clock: IReactorTime,
        delay: float = FLUSH_DELAY,
        in_io_thread: Callable[[], bool] | None = None,
    ) -> None:
        self._file = file
        self._clock = clock
        self._delay = delay
        self._in_io_thread = in_io_thread if in_io_thread is not None else in_reactor_thread
        self._pending: list[Any] = []  # lines (str, or bytes for a binary file) not written yet
        self._call: IDelayedCall | None = None
        self._stopped = False
        if IReactorCore.providedBy(clock):
            clock.addSystemEventTrigger("after", "shutdown", self.stop)

    def write(self, data: Any) -> None:
        if self._stopped or not self._in_io_thread():
            self._file.write(data)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            if self._call is None:
                self._call = self._clock.callLater(self._delay, self._write_pending)
        else:
            self._file.flush()  # a line written at once (another thread, or stopped)

    def _write_pending(self) -> None:
        self._call = None
        pending, self._pending = self._pending, []
        if pending:
            self._file.write(pending[0][:0].join(pending))
            self._file.flush()

    def stop(self) -> None:
        """Write what waits, and from now on every line at once (the reactor runs no more timers)."""
        self._stopped = True
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._write_pending()


def in_reactor_thread() -> bool:
    """`threadable.isInIOThread()` without making the current `Thread` object (`threading.current_thread()`,
    which Twisted's `getThreadID` asks for each time): the thread's identifier, compared with the reactor's.
    Asked for every line the PBX logs."""
    return threadable.ioThread == get_ident()


def quiet_log_observer(
    server_options: usage.Options, log: LogSettings | None = None, clock: IReactorTime | None = None
) -> ILogObserver:
    """The observer twistd would make for its options (stdout with -n, --logfile, --syslog), behind
    `quiet_port_lines`; a text file's lines are formatted by `ClassicLogText`, or as JSON lines
    (`JsonLogLines`) with `[log] format = "json"`, and flushed by `DelayedFlush` when a `clock` (the
    reactor) is given; `log.levels` filters by subsystem (`LogLevels`)."""
    from twisted.scripts._twistd_unix import UnixAppLogger  # twistd's own; the PBX runs on POSIX only

    observer = UnixAppLogger(server_options)._getLogObserver()
    if isinstance(observer, FileLogObserver):  # twistd's `textFileLogObserver(file)`
        json_lines = log is not None and log.format == "json"
        observer.formatEvent = JsonLogLines(log.context if log else None) if json_lines else ClassicLogText()
        out = vars(observer).get("_outFile")  # Twisted's attribute: the file it writes and flushes
        if clock is not None and out is not None:
            observer._outFile = DelayedFlush(out, clock)  # type: ignore[assignment]
    if not ILogObserver.providedBy(observer):
        observer = LegacyLogObserverWrapper(observer)  # syslog's observer is a legacy one
    predicates = [cast(ILogFilterPredicate, quiet_port_lines)]
    if log is not None:
        predicates.append(log.levels.predicate)
    return FilteringLogObserver(observer, predicates)


def ready_message(config: Config) -> str:
    """The one line that says the PBX is up: its SIP listeners, its tenants, and where to point a phone."""

    def address(host: str, port: int) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    listeners = config.sip.listeners
    sockets = ", ".join(f"{x.transport} {address(x.host, x.port)}" for x in listeners)
    tenants = ", ".join(
        f"{t.name} ({len(t.extensions)} extension{'' if len(t.extensions) == 1 else 's'})"
        for t in config.tenants[:5]
    )
    if len(config.tenants) > 5:
        tenants += f" and {len(config.tenants) - 5} more"
    text = f"PBX ready: SIP on {sockets}; tenants: {tenants}"
    tenant = next((t for t in config.tenants if t.extensions), None)
    if tenant is None or not listeners:
        return text
    listener = next((x for x in listeners if x.transport == "udp"), listeners[0])
    host = listener.advertise or {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listener.host, listener.host)
    uri = f"sip:{next(iter(tenant.extensions))}@"
    if host in (tenant.domain, *tenant.aliases):
        uri += address(host, listener.port)
    else:
        uri += f"{tenant.domain} through {address(host, listener.port)}"
    where = f" (passwords in {config.source.name})" if config.source is not None else ""
    transport = "" if listener.transport == "udp" else f" over {listener.transport}"
    return f"{text}; point a softphone at {uri}{transport}{where}"


class QuietLogging(service.MultiService):
    """Holds the PBX's services; when twistd adds it to its `Application`, gives the application a log
    observer (as a .tac file would), which twistd then uses instead of making its own."""

    def __init__(self, pbx: service.IService, observer: Callable[[], ILogObserver]) -> None:
        super().__init__()
        self._observer = observer
        pbx.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(ILogObserver, self._observer())
        super().setServiceParent(parent)
