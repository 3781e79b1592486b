"""`pbx.sip.tls_reload`: server certificates replaced while the listener runs (issue 13, item 3)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pbx.sip.tls import server_options
from pbx.sip.tls_reload import CertificateFileWatcher, ReloadableServerOptions, check_certificate_pair
from tests.sip.tls_material import make_pair, replace_file

# What `TLSMemoryBIOProtocol` offers a connection creator: its factory, wrapping the SIP factory (no ALPN).
A_TLS_PROTOCOL = SimpleNamespace(factory=SimpleNamespace(wrappedFactory=object()))


def served_serial(options: ReloadableServerOptions) -> int:
    """The serial number of the certificate a new handshake would present."""
    connection = options.serverConnectionForTLS(A_TLS_PROTOCOL)
    cert = connection.get_certificate()
    assert cert is not None
    return int(cert.to_cryptography().serial_number)


class Files:
    def __init__(self, test: SynchronousTestCase) -> None:
        self.dir = Path(tempfile.mkdtemp())
        test.addCleanup(shutil.rmtree, self.dir, True)
        self.cert, self.key = self.dir / "cert.pem", self.dir / "key.pem"

    def write(self, pair: tuple[bytes, bytes]) -> None:
        replace_file(self.key, pair[1])
        replace_file(self.cert, pair[0])


class LogCapture:
    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, needle: str) -> list[str]:
        return [formatEvent(e) for e in self.events if needle in formatEvent(e)]


class CheckPairTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = Files(self)

    def test_a_good_pair_gives_the_leaf(self) -> None:
        self.files.write(make_pair(serial=7))
        leaf = check_certificate_pair(self.files.cert, self.files.key, time.time())
        self.assertIsInstance(leaf, x509.Certificate)
        self.assertEqual(leaf.serial_number, 7)

    def test_refusals_name_the_reason(self) -> None:
        cert, key = make_pair()
        _, other_key = make_pair()
        cases = {
            "does not match": (cert, other_key),
            "expired on": make_pair(days=(-10, -1)),
            "not valid before": make_pair(days=(1, 10)),
            "no PEM certificate": (b"garbage", key),
            "not a valid PEM certificate chain": (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                key,
            ),
            "not a valid unencrypted PEM private key": (cert, b"-----BEGIN PRIVATE KEY-----\nxx\n"),
        }
        for reason, pair in cases.items():
            with self.subTest(reason):
                self.files.write(pair)
                with self.assertRaisesRegex(ValueError, reason):
                    check_certificate_pair(self.files.cert, self.files.key, time.time())

    def test_an_unreadable_file_is_refused(self) -> None:
        self.files.write(make_pair())
        self.files.key.unlink()
        with self.assertRaisesRegex(ValueError, "key.pem: cannot read"):
            check_certificate_pair(self.files.cert, self.files.key, time.time())

    def test_certificate_and_key_in_one_file(self) -> None:
        cert, key = make_pair(serial=6)
        self.files.write((cert + key, b""))
        leaf = check_certificate_pair(self.files.cert, self.files.cert, time.time())
        self.assertEqual(leaf.serial_number, 6)
        clock = Clock()
        clock.advance(time.time())
        options = ReloadableServerOptions(
            self.files.cert, self.files.cert, lambda: server_options(self.files.cert, self.files.cert), clock
        )
        self.files.write((make_pair(serial=7, key=None)[0] + key, b""))
        self.assertFalse(options.reload())  # a certificate of another key
        cert, key = make_pair(serial=8)
        self.files.write((key + cert, b""))
        self.assertTrue(options.reload())
        self.assertEqual(served_serial(options), 8)

    def test_a_chain_after_the_leaf_parses(self) -> None:
        cert, key = make_pair(serial=3)
        self.files.write((cert + make_pair(serial=4)[0], key))
        self.assertEqual(
            check_certificate_pair(self.files.cert, self.files.key, time.time()).serial_number, 3
        )


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = Files(self)
        self.files.write(make_pair(serial=1))
        self.clock = Clock()
        self.clock.advance(time.time())
        self.log = LogCapture(self)
        self.options = ReloadableServerOptions(
            self.files.cert,
            self.files.key,
            lambda: server_options(self.files.cert, self.files.key),
            self.clock,
        )

    def test_it_is_a_server_connection_creator(self) -> None:
        verifyObject(IOpenSSLServerConnectionCreator, self.options)
        self.assertIsInstance(self.options.getContext(), SSL.Context)
        self.assertEqual(served_serial(self.options), 1)

    def test_a_good_swap_serves_new_handshakes_and_leaves_open_connections_alone(self) -> None:
        established = self.options.serverConnectionForTLS(A_TLS_PROTOCOL)
        self.files.write(make_pair(serial=2))
        self.assertTrue(self.options.reload("SIGHUP"))
        self.assertEqual(served_serial(self.options), 2)
        self.assertEqual(established.get_certificate().to_cryptography().serial_number, 1)  # type: ignore[union-attr]
        self.assertEqual(self.options.reloads, 1)
        self.assertEqual(len(self.log.lines("TLS certificate reloaded (SIGHUP)")), 1)
        self.assertIn("serial 2", self.log.lines("reloaded")[0])

    def test_bad_replacements_are_refused_with_one_line_and_the_old_one_keeps_serving(self) -> None:
        _, other_key = make_pair()
        cert, _ = make_pair(serial=5)
        for pair, reason in [
            ((cert, other_key), "does not match"),
            (make_pair(serial=6, days=(-10, -1)), "expired on"),
        ]:
            with self.subTest(reason):
                self.files.write(pair)
                self.assertFalse(self.options.reload("SIGHUP"))
                self.assertEqual(served_serial(self.options), 1)
                lines = self.log.lines(reason)
                self.assertEqual(len(lines), 1)
                self.assertIn("refused", lines[0])
                self.assertIn("still serving CN=pbx.test serial 1", lines[0])
        os.chmod(self.files.key, 0)
        if os.access(self.files.key, os.R_OK):  # running as root
            self.files.key.unlink()
        self.assertFalse(self.options.reload())
        self.assertEqual(len(self.log.lines("cannot read")), 1)
        self.assertEqual(self.options.refusals, 3)

    def test_unchanged_files_are_not_reloaded(self) -> None:
        self.assertFalse(self.options.reload())
        self.assertEqual(self.options.reloads, 0)
        self.assertEqual(self.options.refusals, 0)

    def test_a_refusal_by_the_builder_keeps_the_old_options(self) -> None:
        self.files.write(make_pair(serial=9))

        def refuse() -> Any:
            raise ValueError("policy says no")

        self.options._build = refuse
        self.assertFalse(self.options.reload())
        self.assertEqual(served_serial(self.options), 1)
        self.assertEqual(len(self.log.lines("policy says no")), 1)

    def test_a_variant_follows_the_reloads_and_the_refusals(self) -> None:
        # A listener requiring client certificates serves the same files with other options.
        built: list[int] = []

        def mutual() -> Any:
            built.append(1)
            return server_options(self.files.cert, self.files.key)

        variant = self.options.variant(mutual)
        verifyObject(IOpenSSLServerConnectionCreator, variant)
        self.assertEqual(served_serial(variant), 1)  # type: ignore[arg-type]
        self.files.write(make_pair(serial=2))
        self.assertTrue(self.options.reload("SIGHUP"))
        self.assertEqual(served_serial(variant), 2)  # type: ignore[arg-type]
        self.files.write(make_pair(serial=3))

        def refuse() -> Any:
            raise ValueError("no CA file")

        variant.build = refuse
        self.assertFalse(self.options.reload("SIGHUP"))  # one refusing build refuses the reload for all
        self.assertEqual((served_serial(self.options), served_serial(variant)), (2, 2))  # type: ignore[arg-type]
        self.assertEqual(len(self.log.lines("no CA file")), 1)
        self.assertEqual(len(built), 2)


class WatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = Files(self)
        self.files.write(make_pair(serial=1))
        self.clock = Clock()
        self.clock.advance(time.time())
        self.log = LogCapture(self)
        self.options = ReloadableServerOptions(
            self.files.cert,
            self.files.key,
            lambda: server_options(self.files.cert, self.files.key),
            self.clock,
        )
        self.watcher = CertificateFileWatcher(
            self.clock, [self.files.cert, self.files.key], lambda: self.options.reload("file change"), 2.0
        )
        self.watcher.start()

    def tearDown(self) -> None:
        self.watcher.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_replaced_pair_is_picked_up_once_settled(self) -> None:
        self.files.write(make_pair(serial=2))
        self.clock.advance(2)
        self.assertEqual(served_serial(self.options), 1)  # seen, not settled yet
        self.clock.advance(2)
        self.assertEqual(served_serial(self.options), 2)
        self.clock.pump([2] * 10)
        self.assertEqual(self.options.reloads, 1)

    def test_a_half_written_file_is_read_once_complete(self) -> None:
        cert, key = make_pair(serial=3)
        replace_file(self.files.key, key)
        with open(self.files.cert, "wb") as f:  # written in place, in two steps
            f.write(cert[: len(cert) // 2])
            f.flush()
            self.clock.advance(2)
            self.clock.advance(2)  # the half file settled: refused, the old pair keeps serving
            self.assertEqual(served_serial(self.options), 1)
            f.write(cert[len(cert) // 2 :])
        os.utime(self.files.cert, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
        self.clock.advance(2)
        self.clock.advance(2)
        self.assertEqual(served_serial(self.options), 3)

    def test_a_key_replaced_after_its_certificate_within_a_poll_is_read_with_it(self) -> None:
        cert, key = make_pair(serial=4)
        replace_file(self.files.cert, cert)
        self.clock.advance(2)
        replace_file(self.files.key, key)
        self.clock.advance(2)
        self.clock.advance(2)
        self.assertEqual(served_serial(self.options), 4)
        self.assertEqual(self.options.refusals, 0)

    def test_a_deleted_file_is_refused_and_its_return_reloads(self) -> None:
        self.files.cert.unlink()
        self.clock.pump([2, 2])
        self.assertEqual(served_serial(self.options), 1)
        self.assertEqual(len(self.log.lines("cannot read")), 1)
        self.files.write(make_pair(serial=8))
        self.clock.pump([2, 2])
        self.assertEqual(served_serial(self.options), 8)

    def test_a_failing_callback_is_logged_and_polling_goes_on(self) -> None:
        calls: list[int] = []

        def boom() -> None:
            calls.append(1)
            raise RuntimeError("boom")

        watcher = CertificateFileWatcher(self.clock, [self.files.cert], boom, 1.0)
        watcher.start()
        self.files.write(make_pair(serial=2))
        self.clock.pump([1, 1])
        self.files.write(make_pair(serial=3))
        self.clock.pump([1, 1])
        watcher.stop()
        self.assertEqual(len(calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
