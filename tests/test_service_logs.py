"""The first lines a new user reads: the ready line and the log filter of `pbx/service/logs.py`."""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path

from twisted.application import service
from twisted.internet.task import Clock
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    PredicateResult,
    formatEvent,
    formatEventAsClassicLogText,
    textFileLogObserver,
)
from twisted.python import log as legacy_log
from twisted.trial import unittest

from pbx.config import load_config
from pbx.config.model import ListenerConfig
from pbx.service.logs import (
    FLUSH_DELAY,
    ClassicLogText,
    DelayedFlush,
    QuietLogging,
    in_reactor_thread,
    quiet_log_observer,
    quiet_port_lines,
    ready_message,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "pbx.example.toml"


def legacy_event(text: str) -> dict:
    """What a `twisted.python.log.msg(text)` (as Twisted's ports call it) reaches observers as."""
    events: list[dict] = []
    publisher = legacy_log.LogPublisher(
        observerPublisher=events.append, publishPublisher=events.append, logBeginner=None
    )
    publisher.msg(text)
    (event,) = events
    return event


class ReadyMessageTests(unittest.SynchronousTestCase):
    def test_example_config(self) -> None:
        """The demo's line names every listener, the tenant with its extensions, and a phone to set up."""
        message = ready_message(load_config(EXAMPLE))
        self.assertEqual(
            message,
            "PBX ready: SIP on udp 127.0.0.1:5060, tcp 127.0.0.1:5060, tls 127.0.0.1:5061, udp [::1]:5060, "
            "tcp [::1]:5060, tls [::1]:5061; tenants: default (4 extensions); "
            "point a softphone at sip:1000@127.0.0.1:5060 (passwords in pbx.example.toml)",
        )

    def test_wildcard_and_other_domain(self) -> None:
        """A wildcard listener is reached on loopback; a host that is not the tenant's names the domain."""
        config = load_config(EXAMPLE)
        sip = dataclasses.replace(config.sip, listeners=(ListenerConfig("tcp", "0.0.0.0", 5070),))
        tenant = dataclasses.replace(config.tenants[0], domain="pbx.example.com", aliases=())
        message = ready_message(dataclasses.replace(config, sip=sip, tenants=(tenant,), source=None))
        self.assertTrue(message.startswith("PBX ready: SIP on tcp 0.0.0.0:5070; tenants: default"), message)
        self.assertTrue(
            message.endswith("point a softphone at sip:1000@pbx.example.com through 127.0.0.1:5070 over tcp"),
            message,
        )

    def test_advertised_address(self) -> None:
        config = load_config(EXAMPLE)
        sip = dataclasses.replace(
            config.sip, listeners=(ListenerConfig("udp", "0.0.0.0", 5060, advertise="192.0.2.7"),)
        )
        message = ready_message(dataclasses.replace(config, sip=sip))
        self.assertIn("through 192.0.2.7:5060 (passwords", message)


class QuietPortLinesTests(unittest.SynchronousTestCase):
    def test_twisted_port_lines_dropped(self) -> None:
        for text in (
            "SipDatagramProtocol starting on 5060",
            "SipStreamFactory (TLS) starting on 5061",
            "_Channel starting on 10002",
            "(UDP Port 10002 Closed)",
            "(TLS Port 5061 Closed)",
        ):
            self.assertEqual(quiet_port_lines(legacy_event(text)), PredicateResult.no, text)

    def test_everything_else_kept(self) -> None:
        kept = [
            legacy_event("Received SIGTERM, shutting down."),
            legacy_event("SipStreamFactory starting on 5060, really"),
            {"log_namespace": "pbx", "log_format": "x starting on 5060", "log_text": "x starting on 5060"},
        ]
        for event in kept:
            self.assertEqual(quiet_port_lines(event), PredicateResult.maybe, formatEvent(event))


class ClassicLogTextTests(unittest.SynchronousTestCase):
    def events(self) -> list[dict]:
        """Events as the PBX's Logger makes them, Twisted's legacy lines, and odd ones."""
        events: list[dict] = []
        log = Logger(namespace="pbx.b2bua.b2bua.B2BUA", observer=events.append)
        line = "Call abc@192.0.2.1 ended: normal (status 200, 0.2 s), 1001@default -> 1002 answered by 1002"
        log.info(line, line=line, id="abc@192.0.2.1")
        log.warn("Call {id}: BYE", id="x{y}")
        log.info("two\nlines")
        log.info("{{braces}} doubled")
        log.error("")
        log.info("with a system", log_system="sip")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.failure("Call {id} failed", id="z")
        events.append(legacy_event("Received SIGTERM, shutting down."))
        events.append({"log_format": "no level", "log_time": 1.5})
        events.append({"log_format": "no time", "log_level": LogLevel.info})
        events.append({"log_format": "before 1970", "log_level": LogLevel.info, "log_time": -3.5})
        events.append({"log_format": "an int time", "log_level": LogLevel.info, "log_time": 1_796_000_000})
        return events

    def test_same_text_as_twisted(self) -> None:
        """Every event gives Twisted's classic text, the time stamp included, across seconds."""
        format_event = ClassicLogText()
        for when in (
            1_796_000_000.25,
            1_796_000_000.75,
            1_796_000_001.0,
            1_796_000_000.5,
            0.0,
            1_796_003_600.9,
        ):
            for event in self.events():
                if isinstance(event.get("log_time"), float) and event["log_time"] > 1e9:
                    event["log_time"] = when
                self.assertEqual(format_event(event), formatEventAsClassicLogText(event), event)

    def test_twistd_text_file_observer(self) -> None:
        """The observer made for `twistd -n` writes its lines through `ClassicLogText`."""
        from twisted.application.app import ServerOptions

        options = ServerOptions()
        options.update({"nodaemon": True, "logfile": "-", "syslog": False, "prefix": "twisted"})
        observer = quiet_log_observer(options)
        self.assertIsInstance(observer._observer.formatEvent, ClassicLogText)  # type: ignore[attr-defined]

    def test_twistd_text_file_observer_flushes_late_with_a_clock(self) -> None:
        """Given the reactor, the file observer's file is a `DelayedFlush` around twistd's file."""
        from twisted.application.app import ServerOptions

        options = ServerOptions()
        options.update({"nodaemon": True, "logfile": "-", "syslog": False, "prefix": "twisted"})
        clock = Clock()
        observer = quiet_log_observer(options, clock=clock)
        out = observer._observer._outFile  # type: ignore[attr-defined]
        self.assertIsInstance(out, DelayedFlush)
        self.assertIs(out._file, sys.stdout)
        plain = quiet_log_observer(options)
        self.assertIs(plain._observer._outFile, sys.stdout)  # type: ignore[attr-defined]


class _File:
    def __init__(self) -> None:
        self.written: list[str | bytes] = []
        self.flushed: list[list[str | bytes]] = []

    def write(self, data: str | bytes) -> None:
        self.written.append(data)

    def flush(self) -> None:
        self.flushed.append(list(self.written))


class DelayedFlushTests(unittest.SynchronousTestCase):
    def test_lines_of_a_delay_share_one_write(self) -> None:
        clock, file = Clock(), _File()
        observer = textFileLogObserver(DelayedFlush(file, clock, in_io_thread=lambda: True))  # type: ignore[arg-type]
        log = Logger(observer=observer)
        log.info("one")
        clock.advance(FLUSH_DELAY / 2)
        log.info("two")
        self.assertEqual((file.written, file.flushed), ([], []))
        clock.advance(FLUSH_DELAY / 2)
        (text,) = file.written
        self.assertEqual([line.split(" ", 2)[2] for line in text.splitlines()], ["one", "two"])
        self.assertEqual(file.flushed, [[text]])
        self.assertEqual(clock.getDelayedCalls(), [])
        log.info("three")
        clock.advance(FLUSH_DELAY)
        self.assertEqual(len(file.written), 2)
        self.assertEqual(len(file.flushed), 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_bytes_lines(self) -> None:
        clock, file = Clock(), _File()
        out = DelayedFlush(file, clock, in_io_thread=lambda: True)
        out.write(b"a\n")
        out.flush()
        out.write(b"b\n")
        out.flush()
        clock.advance(FLUSH_DELAY)
        self.assertEqual(file.written, [b"a\nb\n"])  # type: ignore[comparison-overlap]

    def test_other_threads_and_a_stopped_reactor_write_at_once(self) -> None:
        clock, file = Clock(), _File()
        out = DelayedFlush(file, clock, in_io_thread=lambda: False)
        out.write("a\n")
        out.flush()
        self.assertEqual(file.flushed, [["a\n"]])
        out = DelayedFlush(file, clock, in_io_thread=lambda: True)
        out.write("b\n")
        out.flush()
        self.assertEqual(len(file.flushed), 1)
        out.stop()  # the reactor shut down: what waited goes, the call is cancelled
        self.assertEqual(file.flushed[-1], ["a\n", "b\n"])
        self.assertEqual(clock.getDelayedCalls(), [])
        out.write("c\n")
        out.flush()
        self.assertEqual(file.flushed[-1], ["a\n", "b\n", "c\n"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_written_when_the_reactor_shuts_down(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        reactor, file = MemoryReactorClock(), _File()
        out = DelayedFlush(file, reactor, in_io_thread=lambda: True)
        out.write("last\n")
        out.flush()
        self.assertEqual(file.flushed, [])
        for trigger, args, kwargs in reactor.triggers["after"]["shutdown"]:
            trigger(*args, **kwargs)
        self.assertEqual(file.flushed, [["last\n"]])

    def test_in_reactor_thread_agrees_with_twisted(self) -> None:
        """The default check is Twisted's `isInIOThread`, asked of the thread's identifier only."""
        import threading

        from twisted.python import threadable

        seen: list[tuple[bool, bool]] = []
        here = (in_reactor_thread(), threadable.isInIOThread())

        def ask() -> None:
            seen.append((in_reactor_thread(), threadable.isInIOThread()))

        thread = threading.Thread(target=ask)
        thread.start()
        thread.join()
        self.assertEqual(here[0], here[1])
        self.assertEqual(seen, [(False, False)])
        saved = threadable.ioThread
        try:
            threadable.registerAsIOThread()
            self.assertTrue(in_reactor_thread())
        finally:
            threadable.ioThread = saved


class QuietLoggingTests(unittest.SynchronousTestCase):
    def test_gives_the_application_its_observer(self) -> None:
        """Added to twistd's Application, it sets the observer twistd then logs with; the PBX's services
        are its children."""
        made: list[object] = []

        def observer() -> ILogObserver:
            made.append(textFileLogObserver(io.StringIO()))
            return made[-1]

        pbx = service.MultiService()
        top = QuietLogging(pbx, observer)
        application = service.Application("pbx")
        top.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), made[0])
        self.assertEqual(list(top), [pbx])
        self.assertIn(top, list(service.IServiceCollection(application)))

    def test_keeps_a_chosen_observer(self) -> None:
        application = service.Application("pbx")
        chosen = object()
        application.setComponent(ILogObserver, chosen)
        QuietLogging(service.MultiService(), lambda: self.fail("made an observer")).setServiceParent(
            application
        )
        self.assertIs(application.getComponent(ILogObserver), chosen)


def test_shipped_sounds_are_found_in_the_checkout_or_the_install_prefix(tmp_path) -> None:
    from pbx.service.calls import SOUNDS_DIR, shipped_sounds

    assert (SOUNDS_DIR / "welcome.wav").is_file()
    installed = tmp_path / "prefix" / "share" / "pbx" / "sounds" / "en"
    installed.mkdir(parents=True)
    assert shipped_sounds(tmp_path / "nowhere", tmp_path / "prefix") == installed
    assert shipped_sounds(tmp_path / "nowhere", tmp_path / "none") == tmp_path / "nowhere" / "sounds" / "en"
