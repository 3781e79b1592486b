"""The TLS reload service (`pbx/service/tls_reload.py`): configured certificate files are watched, the
generated development certificate is not; SIGHUP reloads either (issue 13, item 3)."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.application import service
from twisted.internet.task import Clock
from twisted.trial import unittest

from pbx.config import TlsConfig, load_config
from pbx.service.sip import build_sip
from pbx.service.tls_reload import SERVICE_NAME, TlsReloadService, build_tls_reload, install_sighup
from tests.sip.test_tls_reload import served_serial
from tests.sip.tls_material import make_pair, replace_file

EXAMPLE = Path(__file__).resolve().parent.parent / "pbx.example.toml"


class ThreadCalls(Clock):
    """A clock that also records `callFromThread` (what a signal handler may call)."""

    def __init__(self) -> None:
        super().__init__()
        self.from_thread: list[tuple[Any, ...]] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.from_thread.append((f, *args))


class TlsReloadServiceTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = Path(self.mktemp())
        self.config = dataclasses.replace(load_config(EXAMPLE), data_dir=self.data_dir)
        self.clock = ThreadCalls()
        self.clock.advance(1.8e9)  # 2027: within the test certificates' validity

    def configured(self, serial: int = 1) -> tuple[Path, Path]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cert, key = self.data_dir / "cert.pem", self.data_dir / "key.pem"
        pair = make_pair(serial=serial, days=(-3650, 3650))
        replace_file(key, pair[1])
        replace_file(cert, pair[0])
        self.config = dataclasses.replace(self.config, tls=TlsConfig(certificate=cert, private_key=key))
        return cert, key

    def test_the_development_certificate_is_not_watched(self) -> None:
        _, sip = build_sip(self.config, self.clock)
        reload = build_tls_reload(sip, self.clock)
        assert reload is not None
        self.assertIsNone(reload.watcher)
        reload.startService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(reload.options.cert_path, self.data_dir / "tls" / "dev-cert.pem")
        self.assertFalse(reload.reload())  # unchanged
        reload.stopService()

    def test_configured_files_are_watched_and_reloaded(self) -> None:
        cert, key = self.configured(serial=1)
        _, sip = build_sip(self.config, self.clock)
        self.assertIs(sip.transports._tls_server_options, sip.tls_reloadable)
        reload = build_tls_reload(sip, self.clock)
        assert reload is not None and reload.watcher is not None
        reload.startService()
        pair = make_pair(serial=2, days=(-3650, 3650))
        replace_file(key, pair[1])
        replace_file(cert, pair[0])
        self.clock.pump([2.0, 2.0])
        self.assertEqual(served_serial(reload.options), 2)
        reload.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_listener_requiring_client_certificates_follows_the_reload(self) -> None:
        cert, key = self.configured(serial=1)
        ca = self.data_dir / "ca.pem"
        replace_file(ca, make_pair(serial=7, days=(-3650, 3650))[0])
        mutual = dataclasses.replace(
            self.config.sip.listeners[0], transport="tls", require_client_certificate=True
        )
        sip_config = dataclasses.replace(self.config.sip, listeners=(mutual,))
        tls = dataclasses.replace(self.config.tls, ca_certificates=ca)
        self.config = dataclasses.replace(self.config, sip=sip_config, tls=tls)
        _, sip = build_sip(self.config, self.clock)
        options = sip._mutual_tls_options
        self.assertEqual(served_serial(options), 1)
        pair = make_pair(serial=2, days=(-3650, 3650))
        replace_file(key, pair[1])
        replace_file(cert, pair[0])
        reload = build_tls_reload(sip, self.clock)
        assert reload is not None
        self.assertTrue(reload.reload("SIGHUP"))
        self.assertEqual(served_serial(options), 2)

    def test_no_tls_listener_no_service(self) -> None:
        self.assertIsNone(build_tls_reload(SimpleNamespace(), self.clock))

    def test_sighup_schedules_a_reload_in_the_reactor_thread(self) -> None:
        self.configured(serial=1)
        _, sip = build_sip(self.config, self.clock)
        reload = build_tls_reload(sip, self.clock)
        assert isinstance(reload, TlsReloadService)
        top = service.MultiService()
        reload.setServiceParent(top)
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        self.assertTrue(install_sighup(top, self.clock))
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)
        self.assertEqual(self.clock.from_thread, [(reload.reload, "SIGHUP")])
        self.assertFalse(install_sighup(service.MultiService(), self.clock))
        self.assertEqual(SERVICE_NAME, reload.name)
