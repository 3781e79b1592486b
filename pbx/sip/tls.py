"""TLS material for SIP over TLS (RFC 3261 section 26.2, RFC 5922 server identity, RFC 5246/8446).

- `ensure_dev_certificate` creates a self-signed development certificate and key (PEM) once, so that a fresh
  install can listen on TLS; production deployments point the configuration at real files instead.
- `server_options` loads a certificate (optionally with its chain) and key into a Twisted server context
  factory, TLS 1.2 or later; with a CA file it also requests and verifies client certificates.
- `client_options_factory` returns `host -> client connection creator`, verifying the server's identity with
  `service_identity` (DNS name or IP address, RFC 5922 7.2) against a CA file or the platform's trust store.

Every unreadable or malformed file is a `ValueError` that names the file. This module knows nothing of
sockets, SIP messages or the PBX; `pbx.sip.transport` takes what it builds.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

__all__ = [
    "DEV_CERT_NAME",
    "DEV_KEY_NAME",
    "client_options_factory",
    "ensure_dev_certificate",
    "server_options",
]

DEV_CERT_NAME = "dev-cert.pem"
DEV_KEY_NAME = "dev-key.pem"

_DEV_VALIDITY_DAYS = 825
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

_log = Logger()

ClientOptionsFactory = Callable[[str], IOpenSSLClientConnectionCreator]


def ensure_dev_certificate(directory: Path, hostnames: list[str]) -> tuple[Path, Path]:
    """Create a self-signed development certificate and key in `directory` unless both exist.

    The certificate's SubjectAltName holds DNS:localhost, IP:127.0.0.1 and IP:::1 plus `hostnames` (IP
    literals become IP entries); it is valid for about two years and may serve as its own trust root in
    tests. Files are written atomically; the key file has mode 0600.

    Args:
        directory: where `dev-cert.pem` and `dev-key.pem` live (created if missing).
        hostnames: further DNS names or IP addresses to certify; the first one is the subject CN.

    Returns:
        (certificate path, key path).
    """
    directory = Path(directory)
    cert_path, key_path = directory / DEV_CERT_NAME, directory / DEV_KEY_NAME
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in ["localhost", "127.0.0.1", "::1", *hostnames]:
        entry = _general_name(name)
        if str(entry.value) not in seen:
            seen.add(str(entry.value))
            names.append(entry)
    common_name = hostnames[0] if hostnames else "localhost"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PBX development certificate"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=_DEV_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _log.info("Created a self-signed development TLS certificate {cert}", cert=str(cert_path))
    return cert_path, key_path


def server_options(
    cert_path: Path,
    key_path: Path,
    ca_path: Path | None = None,
    *,
    require_client_certificate: bool = False,
) -> ssl.CertificateOptions:
    """Build the server side of TLS from PEM files (TLS 1.2 or later).

    Args:
        cert_path: the server certificate, optionally followed by its intermediate chain.
        key_path: the private key matching the first certificate in `cert_path`.
        ca_path: CA certificates for client certificates; when given, a client certificate is requested and,
            if presented, must be signed by one of them. None: client certificates are not requested.
        require_client_certificate: with `ca_path`, refuse clients without a certificate (mutual TLS).

    Raises:
        ValueError: a file is unreadable, holds no valid PEM, or the key does not match the certificate.
    """
    cert_pem = _read(cert_path)
    key_pem = _read(key_path)
    blocks = _PEM_CERT.findall(cert_pem)
    if not blocks:
        raise ValueError(f"{cert_path}: no PEM certificate found")
    try:
        key_pair = ssl.KeyPair.load(key_pem, crypto.FILETYPE_PEM)
    except Exception as e:
        raise ValueError(f"{key_path}: not a valid PEM private key ({_describe(e)})")
    try:
        private_cert = ssl.PrivateCertificate.load(blocks[0], key_pair, crypto.FILETYPE_PEM)
    except VerifyError:
        raise ValueError(f"{key_path}: the private key does not match the certificate in {cert_path}")
    except Exception as e:
        raise ValueError(f"{cert_path}: not a valid PEM certificate ({_describe(e)})")
    chain = [_load_certificate(block, cert_path).original for block in blocks[1:]]
    kwargs: dict[str, object] = {}
    if ca_path is not None:
        kwargs.update(
            verify=True,
            requireCertificate=require_client_certificate,
            caCerts=[c.original for c in _load_certificates(ca_path)],
        )
    key, cert = private_cert.privateKey.original, private_cert.original
    try:
        # cryptography objects: pyOpenSSL deprecates passing its own X509/PKey to a context.
        options = ssl.CertificateOptions(
            privateKey=key.to_cryptography_key(),
            certificate=cert.to_cryptography(),
            extraCertChain=[c.to_cryptography() for c in chain],
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            **kwargs,  # type: ignore[arg-type]
        )
        options.getContext()
    except TypeError:  # pyOpenSSL < 24.3 takes only its own objects
        options = ssl.CertificateOptions(
            privateKey=key,
            certificate=cert,
            extraCertChain=chain,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            **kwargs,  # type: ignore[arg-type]
        )
    try:
        options.getContext()
    except SSL.Error as e:
        raise ValueError(f"{cert_path}: unusable with {key_path} ({_describe(e)})")
    return options


def client_options_factory(ca_path: Path | None, verify: bool = True) -> ClientOptionsFactory:
    """Build `host -> client connection creator` for outgoing TLS connections (TLS 1.2 or later).

    Args:
        ca_path: PEM file of trusted CA certificates; None trusts the platform's store.
        verify: check the server's certificate and identity (a DNS name or an IP address). False is for
            development only: any certificate is accepted (SNI is still sent).

    Raises:
        ValueError: `ca_path` is unreadable or holds no valid certificate (checked now, not per connection).
    """
    if not verify:
        _log.warn("Outgoing TLS connections will NOT verify server certificates (development only)")
        insecure = ssl.CertificateOptions(verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)

        def insecure_options(host: str) -> IOpenSSLClientConnectionCreator:
            return _UnverifiedClientOptions(insecure, host)

        return insecure_options

    trust_root: object
    if ca_path is None:
        trust_root = ssl.platformTrust()
    else:
        trust_root = ssl.trustRootFromCertificates(_load_certificates(ca_path))

    def options(host: str) -> IOpenSSLClientConnectionCreator:
        return ssl.optionsForClientTLS(
            host.strip("[]"),
            trustRoot=trust_root,  # type: ignore[arg-type]
            extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
        )

    return options


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClientOptions:
    """A client connection creator that sends SNI but accepts any certificate."""

    def __init__(self, options: ssl.CertificateOptions, host: str) -> None:
        self._options = options
        self._host = host.strip("[]")

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        if not _is_ip(self._host):
            connection.set_tlsext_host_name(self._host.encode("idna"))
        return connection


def _general_name(name: str) -> x509.GeneralName:
    if _is_ip(name):
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    return x509.DNSName(name)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})")


def _load_certificate(block: bytes, path: Path) -> ssl.Certificate:
    try:
        return ssl.Certificate.loadPEM(block)
    except Exception as e:
        raise ValueError(f"{path}: not a valid PEM certificate ({_describe(e)})")


def _load_certificates(path: Path) -> list[ssl.Certificate]:
    blocks = _PEM_CERT.findall(_read(path))
    if not blocks:
        raise ValueError(f"{path}: no PEM certificate found")
    return [_load_certificate(block, path) for block in blocks]


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` through a temporary file in the same directory, then rename."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
