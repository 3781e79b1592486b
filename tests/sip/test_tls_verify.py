"""Verified TLS (`pbx.sip.tls`): the policy, the client's chain and name checks (RFC 5922 DNS-ID / IP-ID),
the failure descriptions, and mutual TLS, with real handshakes between pyOpenSSL connections in memory."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from pbx.sip.client import ClientRequest
from pbx.sip.message import Request
from pbx.sip.resolver import Target
from pbx.sip.stack import SipStack
from pbx.sip.tls import (
    DEFAULT_CIPHERS,
    TlsPolicy,
    client_options_factory,
    describe_failure,
    server_options,
)
from pbx.sip.uri import parse_sip_uri
from tests.sip.tls_certs import issue, make_ca


class _Factory:
    wrappedFactory = object()  # no ALPN (Twisted asks the wrapped factory)


class _TlsProtocol:
    """What Twisted's client options call back: `failVerification` on a wrong name."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []
        self.factory = _Factory()

    def failVerification(self, reason: Failure) -> None:
        self.failures.append(reason)


def _pump(client: SSL.Connection, server: SSL.Connection) -> tuple[Exception | None, Exception | None]:
    """Run a handshake between two memory-BIO connections; the error each side raised (None: done)."""
    errors: dict[int, Exception | None] = {0: None, 1: None}
    done = {0: False, 1: False}
    sides = ((0, client, server), (1, server, client))
    for _ in range(30):  # a handshake takes a few flights; bounded
        moved = False
        for index, this, other in sides:
            if errors[index] is None and not done[index]:
                try:
                    this.do_handshake()
                    done[index] = True
                except SSL.WantReadError:
                    pass
                except SSL.Error as e:
                    errors[index] = e
            try:
                data = this.bio_read(65536)
            except (SSL.WantReadError, SSL.Error):
                data = b""
            if data:
                other.bio_write(data)
                moved = True
        if not moved and (done[0] or errors[0]) and (done[1] or errors[1]):
            break
    if errors[0] is None and done[0] and errors[1] is None:
        # TLS 1.3: the server checks the client's certificate after the client finished; reading shows it.
        try:
            client.recv(1)
        except SSL.WantReadError:
            pass
        except SSL.Error as e:
            errors[0] = e
    return errors[0], errors[1]


class TlsVerifyTest(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp())
        self.ca = make_ca(self.dir, "ca")
        self.other_ca = make_ca(self.dir, "other")

    def handshake(
        self,
        server_cert: tuple[Path, Path],
        name: str,
        *,
        policy: TlsPolicy | None = None,
        client_certificates: dict[str, tuple[Path, Path]] | None = None,
        require_client_certificate: bool = False,
    ) -> tuple[_TlsProtocol, Exception | None, Exception | None]:
        server = SSL.Connection(
            server_options(
                *server_cert,
                self.ca[2] if require_client_certificate else None,
                require_client_certificate=require_client_certificate,
            ).getContext(),
            None,
        )
        server.set_accept_state()
        factory = client_options_factory(self.ca[2], policy=policy, client_certificates=client_certificates)
        protocol = _TlsProtocol()
        client = factory(name).clientConnectionForTLS(protocol)  # type: ignore[arg-type]
        client.set_connect_state()
        client_error, server_error = _pump(client, server)
        self._last = (protocol, client_error)
        return protocol, client_error, server_error

    def test_right_dns_name_and_ip_address_connect(self) -> None:
        for names, target in ((["sip.carrier.test"], "sip.carrier.test"), (["127.0.0.1"], "127.0.0.1")):
            protocol, client_error, server_error = self.handshake(
                issue(self.dir, "s", self.ca, names), target
            )
            self.assertEqual((protocol.failures, client_error, server_error), ([], None, None))

    def test_wrong_name_fails_with_the_identity_named(self) -> None:
        protocol, client_error, _ = self.handshake(
            issue(self.dir, "s", self.ca, ["other.carrier.test"]), "sip.carrier.test"
        )
        self.assertIsNotNone(client_error)
        self.assertEqual(len(protocol.failures), 1)
        self.assertEqual(
            describe_failure(protocol.failures[0].value, protocol),
            "TLS certificate name mismatch: the certificate does not name DNS-ID sip.carrier.test",
        )

    def test_ip_address_is_checked_as_an_ip_id(self) -> None:
        # A DNS entry spelling the address is no IP-ID.
        protocol, client_error, _ = self.handshake(
            issue(self.dir, "s", self.ca, ["127.0.0.2", "localhost"]), "127.0.0.1"
        )
        self.assertIsNotNone(client_error)
        self.assertIn("IP-ID 127.0.0.1", describe_failure(protocol.failures[0].value, protocol))

    def test_unknown_ca_and_expired_are_told_apart(self) -> None:
        protocol, client_error, _ = self.handshake(issue(self.dir, "s", self.other_ca, ["a.test"]), "a.test")
        assert client_error is not None
        self.assertEqual(protocol.failures, [])
        self.assertIn("certificate verify failed", describe_failure(client_error))
        self.assertRegex(describe_failure(client_error, protocol), r"verify failed: .*\(unknown CA\)$")
        protocol, client_error, _ = self.handshake(
            issue(self.dir, "s", self.ca, ["a.test"], expired=True), "a.test"
        )
        assert client_error is not None
        self.assertEqual(
            describe_failure(client_error, protocol),
            "TLS handshake failed: certificate verify failed: certificate has expired",
        )

    def test_mutual_tls_with_and_without_a_client_certificate(self) -> None:
        server_cert = issue(self.dir, "s", self.ca, ["sip.carrier.test"])
        client_cert = issue(self.dir, "c", self.ca, ["pbx.test"], client=True)
        _, client_error, server_error = self.handshake(
            server_cert,
            "SIP.Carrier.test.",  # names are compared case-insensitively, without the root dot
            client_certificates={"sip.carrier.test": client_cert},
            require_client_certificate=True,
        )
        self.assertEqual((client_error, server_error), (None, None))
        _, client_error, server_error = self.handshake(
            server_cert,
            "sip.carrier.test",
            client_certificates={"elsewhere.test": client_cert},
            require_client_certificate=True,
        )
        self.assertIsNotNone(server_error)
        self.assertIn("certificate", str(server_error))

    def test_tls_1_3_only(self) -> None:
        server = SSL.Connection(
            server_options(
                *issue(self.dir, "s", self.ca, ["a.test"]), policy=TlsPolicy(min_version="1.3")
            ).getContext(),
            None,
        )
        server.set_accept_state()
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        client = SSL.Connection(context, None)
        client.set_connect_state()
        _, server_error = _pump(client, server)
        self.assertIsNotNone(server_error)


class TlsPolicyTest(SynchronousTestCase):
    def test_defaults_are_tls_1_2_and_aead_only(self) -> None:
        options: dict[str, Any] = TlsPolicy().options()
        self.assertEqual(options["raiseMinimumTo"], ssl.TLSVersion.TLSv1_2)
        names = [
            c.fullName for c in options["acceptableCiphers"]._ciphers if not c.fullName.startswith("TLS_")
        ]
        self.assertTrue(names)
        for name in names:
            self.assertTrue(name.startswith("ECDHE-"), name)
            self.assertRegex(name, "GCM|CHACHA20")
        self.assertEqual(TlsPolicy().ciphers, DEFAULT_CIPHERS)
        self.assertEqual(TlsPolicy(min_version="1.3").options()["raiseMinimumTo"], ssl.TLSVersion.TLSv1_3)

    def test_bad_policies_are_refused(self) -> None:
        with self.assertRaisesRegex(ValueError, "unknown TLS version '1.1'"):
            TlsPolicy(min_version="1.1").options()
        with self.assertRaisesRegex(ValueError, "selects no cipher"):
            TlsPolicy(ciphers="NO-SUCH-CIPHER").options()

    def test_server_refuses_tls_1_1_and_cbc_suites(self) -> None:
        directory = Path(tempfile.mkdtemp())
        ca = make_ca(directory, "ca")
        cert = issue(directory, "s", ca, ["a.test"])
        for configure in (
            lambda c: (
                c.set_min_proto_version(SSL.TLS1_1_VERSION),
                c.set_max_proto_version(SSL.TLS1_1_VERSION),
                c.set_cipher_list(b"DEFAULT@SECLEVEL=0"),
            ),
            lambda c: (
                c.set_max_proto_version(SSL.TLS1_2_VERSION),
                c.set_cipher_list(b"ECDHE-ECDSA-AES128-SHA:AES128-SHA256"),
            ),
        ):
            server = SSL.Connection(server_options(*cert).getContext(), None)
            server.set_accept_state()
            context = SSL.Context(SSL.TLS_METHOD)
            configure(context)
            client = SSL.Connection(context, None)
            client.set_connect_state()
            _, server_error = _pump(client, server)
            self.assertIsNotNone(server_error)

    def test_client_certificate_files_are_checked_now(self) -> None:
        directory = Path(tempfile.mkdtemp())
        with self.assertRaisesRegex(ValueError, "cannot read"):
            client_options_factory(
                None, client_certificates={"a.test": (directory / "x.pem", directory / "y.pem")}
            )


class _NamedTransports:
    """Records the `server_name` each send asked the transport to verify."""

    def __init__(self) -> None:
        self.names: list[tuple[str, str | None]] = []

    def send(self, data: bytes, transport: str, host: str, port: int, **kwargs: Any) -> Deferred[None]:
        self.names.append((transport, kwargs.get("server_name")))
        return succeed(None)

    def local_address(self, transport: str, host: str) -> tuple[str, int]:
        return ("127.0.0.1", 5071)


class ServerNameTest(SynchronousTestCase):
    """The name RFC 3263 resolved from reaches the TLS transport (RFC 5922 4), for TLS hops only."""

    def test_hops_carry_the_name_for_tls_only(self) -> None:
        hop = Target("tls", "192.0.2.1", 5061, "carrier.test").hop
        self.assertEqual((hop, hop.server_name), (("tls", "192.0.2.1", 5061), "carrier.test"))
        self.assertIsNone(Target("udp", "192.0.2.1", 5060, "carrier.test").hop.server_name)

    def test_client_request_passes_the_name_to_the_transport(self) -> None:
        clock = Clock()
        stack = SipStack(clock)
        transports = _NamedTransports()
        stack.attach_transport(transports)
        request = Request("OPTIONS", parse_sip_uri("sip:carrier.test"))
        for header, value in (
            ("From", "<sip:pbx@pbx.test>;tag=1"),
            ("To", "<sip:carrier.test>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 OPTIONS"),
        ):
            request.headers.add(header, value)
        ClientRequest(
            stack, request, Target("tls", "192.0.2.1", 5061, "carrier.test").hop, lambda _r: None
        ).start()
        ClientRequest(
            stack, request, ("tls", "192.0.2.1", 5061), lambda _r: None, server_name="b.test"
        ).start()
        ClientRequest(
            stack, request, ("udp", "192.0.2.1", 5060), lambda _r: None, server_name="c.test"
        ).start()
        self.assertEqual(transports.names, [("tls", "carrier.test"), ("tls", "b.test"), ("udp", None)])
        clock.advance(64)  # the transactions time out
        for _ in range(20):
            clock.advance(5)
        self.assertEqual(clock.getDelayedCalls(), [])
