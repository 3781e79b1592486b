"""Tests for `pbx.sip.tls`: the development certificate, server options and client options.

No sockets here; the TLS round trips over loopback are in test_transport.py.
"""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pbx.sip.tls import client_options_factory, ensure_dev_certificate, server_options


class DevCertificateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()) / "tls"

    def test_creates_a_certificate_for_loopback_and_the_given_names(self) -> None:
        cert_path, key_path = ensure_dev_certificate(self.directory, ["pbx.example.com", "192.0.2.10"])
        self.assertEqual(cert_path.parent, self.directory)
        self.assertEqual(stat.S_IMODE(key_path.stat().st_mode), 0o600)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(set(names.get_values_for_type(x509.DNSName)), {"localhost", "pbx.example.com"})
        self.assertEqual(
            set(names.get_values_for_type(x509.IPAddress)),
            {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "192.0.2.10")},
        )
        self.assertIn(b"PRIVATE KEY", key_path.read_bytes())
        self.assertEqual(sorted(p.name for p in self.directory.iterdir()), ["dev-cert.pem", "dev-key.pem"])

    def test_existing_files_are_kept(self) -> None:
        first = ensure_dev_certificate(self.directory, [])
        contents = [p.read_bytes() for p in first]
        second = ensure_dev_certificate(self.directory, ["other.example.com"])
        self.assertEqual(first, second)
        self.assertEqual([p.read_bytes() for p in second], contents)


class ServerOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.cert, self.key = ensure_dev_certificate(self.directory / "a", [])

    def test_loads_certificate_and_key(self) -> None:
        options = server_options(self.cert, self.key)
        self.assertIsInstance(options, CertificateOptions)
        self.assertIsInstance(options.getContext(), SSL.Context)
        self.assertFalse(options.verify)

    def test_chain_after_the_certificate_is_served(self) -> None:
        other_cert, _ = ensure_dev_certificate(self.directory / "b", [])
        full_chain = self.directory / "fullchain.pem"
        full_chain.write_bytes(self.cert.read_bytes() + other_cert.read_bytes())
        options = server_options(full_chain, self.key)
        self.assertEqual(len(options.extraCertChain), 1)

    def test_client_certificates_with_a_ca(self) -> None:
        options = server_options(self.cert, self.key, self.cert)
        self.assertTrue(options.verify)
        self.assertFalse(options.requireCertificate)
        options = server_options(self.cert, self.key, self.cert, require_client_certificate=True)
        self.assertTrue(options.requireCertificate)

    def test_errors_name_the_file(self) -> None:
        missing = self.directory / "missing.pem"
        garbage = self.directory / "garbage.pem"
        garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
        empty = self.directory / "empty.pem"
        empty.write_bytes(b"nothing here")
        _, other_key = ensure_dev_certificate(self.directory / "b", [])
        cases = [
            ((missing, self.key), str(missing)),
            ((self.cert, missing), str(missing)),
            ((garbage, self.key), str(garbage)),
            ((empty, self.key), str(empty)),
            ((self.cert, self.cert), str(self.cert)),  # no key in it
            ((self.cert, other_key), "does not match"),
        ]
        for args, expected in cases:
            error = self.assertRaises(ValueError, server_options, *args)
            self.assertIn(expected, str(error))
        error = self.assertRaises(ValueError, server_options, self.cert, self.key, empty)
        self.assertIn(str(empty), str(error))


class ClientOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.cert, _ = ensure_dev_certificate(self.directory, [])

    def test_factory_with_a_ca_file(self) -> None:
        factory = client_options_factory(self.cert)
        for host in ("localhost", "127.0.0.1", "[::1]"):
            verifyObject(IOpenSSLClientConnectionCreator, factory(host))

    def test_factory_with_platform_trust(self) -> None:
        verifyObject(IOpenSSLClientConnectionCreator, client_options_factory(None)("example.com"))

    def test_unverified_factory_sends_sni_without_verifying(self) -> None:
        creator = client_options_factory(None, verify=False)("pbx.example.com")
        verifyObject(IOpenSSLClientConnectionCreator, creator)
        connection = creator.clientConnectionForTLS(object())
        self.assertEqual(connection.get_servername(), b"pbx.example.com")
        self.assertEqual(connection.get_context().get_verify_mode(), SSL.VERIFY_NONE)

    def test_bad_ca_file_is_reported_now(self) -> None:
        missing = self.directory / "missing.pem"
        error = self.assertRaises(ValueError, client_options_factory, missing)
        self.assertIn(str(missing), str(error))
