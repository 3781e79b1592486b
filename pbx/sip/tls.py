"""TLS material for SIP over TLS (RFC 3261 section 26.2, RFC 5922 server identity, RFC 5246/8446).

- `ensure_dev_certificate` creates a self-signed development certificate and key (PEM) once, so that a fresh
  install can listen on TLS; production deployments point the configuration at real files instead.
- `server_options` loads a certificate (optionally with its chain) and key into a Twisted server context
  factory, TLS 1.2 or later; with a CA file it also requests and verifies client certificates.
- `client_options_factory` returns `host -> client connection creator`, verifying the server's identity with
  `service_identity` (DNS name or IP address, RFC 5922 7.2) against a CA file or the platform's trust store,
  presenting a client certificate to the hosts given one (mutual TLS).
- `TlsPolicy`: the protocol versions and TLS 1.2 cipher suites both sides accept; by default TLS 1.2 or later
  with ECDHE key exchange and AEAD ciphers only (AES-GCM, ChaCha20-Poly1305; TLS 1.3's suites are all AEAD).
- `describe_failure`: one line saying why a TLS handshake failed (untrusted CA, expired, wrong name ...).

Every unreadable or malformed file is a `ValueError` that names the file. This module knows nothing of
sockets, SIP messages or the PBX; `pbx.sip.transport` takes what it builds.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import tempfile
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.hazmat import DNS_ID, IPAddress_ID, ServiceID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet import ssl
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "DEFAULT_CIPHERS",
    "DEV_CERT_NAME",
    "DEV_KEY_NAME",
    "TLS_VERSIONS",
    "TlsPolicy",
    "client_options_factory",
    "describe_failure",
    "ensure_dev_certificate",
    "load_client_certificate",
    "server_options",
]

DEV_CERT_NAME = "dev-cert.pem"
DEV_KEY_NAME = "dev-key.pem"

_DEV_VALIDITY_DAYS = 825
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

_log = Logger()

DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
"""TLS 1.2 suites by default: ECDHE (forward secrecy) with an AEAD cipher; no CBC, no RSA key exchange."""

TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = MappingProxyType(
    {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
)
"""The accepted values of `[tls] min_version`: older protocol versions are not offered at all."""


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """What both directions of TLS accept (RFC 7525 / RFC 9325 recommendations).

    Attributes:
        min_version: "1.2" or "1.3" (`TLS_VERSIONS`).
        ciphers: an OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are fixed by OpenSSL, all AEAD).
    """

    min_version: str = "1.2"
    ciphers: str = DEFAULT_CIPHERS

    def options(self) -> dict[str, Any]:
        """Keyword arguments of `twisted.internet.ssl.CertificateOptions` for this policy.

        Raises:
            ValueError: an unknown `min_version`, or a cipher string that selects no cipher.
        """
        if self.min_version not in TLS_VERSIONS:
            raise ValueError(f"unknown TLS version {self.min_version!r} (one of {', '.join(TLS_VERSIONS)})")
        ciphers = ssl.AcceptableCiphers.fromOpenSSLCipherString(self.ciphers)
        if not ciphers._ciphers:
            raise ValueError(f"the cipher string {self.ciphers!r} selects no cipher")
        return {"raiseMinimumTo": TLS_VERSIONS[self.min_version], "acceptableCiphers": ciphers}


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
    policy: TlsPolicy | None = None,
) -> ssl.CertificateOptions:
    """Build the server side of TLS from PEM files (TLS 1.2 or later).

    Args:
        cert_path: the server certificate, optionally followed by its intermediate chain.
        key_path: the private key matching the first certificate in `cert_path`.
        ca_path: CA certificates for client certificates; when given, a client certificate is requested and,
            if presented, must be signed by one of them. None: client certificates are not requested.
        require_client_certificate: with `ca_path`, refuse clients without a certificate (mutual TLS).
        policy: protocol versions and ciphers (default `TlsPolicy()`: TLS 1.2+, AEAD suites only).

    Raises:
        ValueError: a file is unreadable, holds no valid PEM, or the key does not match the certificate.
    """
    private_cert, chain = _private_certificate(cert_path, key_path)
    kwargs: dict[str, object] = (policy or TlsPolicy()).options()
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
            **kwargs,  # type: ignore[arg-type]
        )
        options.getContext()
    except TypeError:  # pyOpenSSL < 24.3 takes only its own objects
        options = ssl.CertificateOptions(
            privateKey=key,
            certificate=cert,
            extraCertChain=chain,
            **kwargs,  # type: ignore[arg-type]
        )
    try:
        options.getContext()
    except SSL.Error as e:
        raise ValueError(f"{cert_path}: unusable with {key_path} ({_describe(e)})")
    return options


def load_client_certificate(cert_path: Path, key_path: Path) -> ssl.PrivateCertificate:
    """A client certificate and its key for mutual TLS, checked now (a `ValueError` names the bad file)."""
    private_cert, _chain = _private_certificate(cert_path, key_path)
    return private_cert


def client_options_factory(
    ca_path: Path | None,
    verify: bool = True,
    *,
    policy: TlsPolicy | None = None,
    client_certificates: Mapping[str, tuple[Path, Path]] | None = None,
) -> ClientOptionsFactory:
    """Build `host -> client connection creator` for outgoing TLS connections.

    The creator verifies the server's chain against the trust root and its identity against `host` with
    `service_identity` (RFC 5922 7.2, RFC 6125): a DNS-ID (SubjectAltName dNSName, one left-most wildcard
    label allowed by `service_identity`) for a name, an IP-ID (iPAddress) for an IP literal.

    Args:
        ca_path: PEM file of trusted CA certificates; None trusts the platform's store.
        verify: check the server's certificate and identity. False is for development only: any
            certificate is accepted (SNI is still sent).
        policy: protocol versions and ciphers (default `TlsPolicy()`).
        client_certificates: server name (as resolved: a host name or an IP address) -> (certificate,
            key) PEM files presented to that server when it asks (mutual TLS).

    Raises:
        ValueError: a file is unreadable or invalid, or the policy is (checked now, not per connection).
    """
    extra = (policy or TlsPolicy()).options()
    identities = {
        _name_key(name): load_client_certificate(cert, key)
        for name, (cert, key) in (client_certificates or {}).items()
    }
    if not verify:
        _log.warn("Outgoing TLS connections will NOT verify server certificates (development only)")
        insecure = ssl.CertificateOptions(verify=False, **extra)

        def insecure_options(host: str) -> IOpenSSLClientConnectionCreator:
            return _UnverifiedClientOptions(insecure, host)

        return insecure_options

    trust_root: object
    if ca_path is None:
        trust_root = ssl.platformTrust()
    else:
        trust_root = ssl.trustRootFromCertificates(_load_certificates(ca_path))
    cache: dict[str, IOpenSSLClientConnectionCreator] = {}

    def options(host: str) -> IOpenSSLClientConnectionCreator:
        key = _name_key(host)
        creator = cache.get(key)
        if creator is None:
            if len(cache) >= 256:
                cache.clear()
            options = dict(extra)  # a copy per name: Twisted adds to it
            identity = identities.get(key)
            if identity is not None:  # cryptography objects: pyOpenSSL deprecates its own in a context
                options["privateKey"] = identity.privateKey.original.to_cryptography_key()
                options["certificate"] = identity.original.to_cryptography()
            creator = cache[key] = _RecordingClientOptions(
                ssl.optionsForClientTLS(
                    key,
                    trustRoot=trust_root,  # type: ignore[arg-type]
                    extraCertificateOptions=options,
                ),
                key,
            )
        return creator

    return options


@implementer(IOpenSSLClientConnectionCreator)
class _RecordingClientOptions:
    """Twisted's client options with our own verify callback: the chain's first X.509 error is remembered
    per connection, and the leaf's identity is checked with `service_identity` (RFC 5922 7.2, RFC 6125).

    OpenSSL reports only "certificate verify failed"; the error code (expired, unknown issuer ...) is seen
    by the verify callback alone, so it is kept per TLS protocol for `describe_failure`. A wrong name fails
    the connection with the `VerificationError` (as Twisted's own callback does), which names the identity.
    """

    def __init__(self, inner: IOpenSSLClientConnectionCreator, host: str) -> None:
        self._inner = inner
        self._identity: ServiceID = IPAddress_ID(host) if _is_ip(host) else DNS_ID(host)

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = self._inner.clientConnectionForTLS(tlsProtocol)  # type: ignore[arg-type]
        identity = self._identity
        protocol: list[object] = [tlsProtocol]  # no reference kept once verified

        def verify(_conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
            if not protocol:
                return bool(ok)
            if not ok:
                _verify_errors.setdefault(protocol[0], errno)
                return False
            if depth != 0:
                return True
            owner = protocol.pop()
            try:
                verify_service_identity(extract_patterns(cert), [identity], [])
            except VerificationError:
                owner.failVerification(Failure())  # type: ignore[attr-defined]
                return False
            except Exception:
                _log.failure("while verifying a TLS certificate's identity")
                return False
            return True

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


_verify_errors: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()


def describe_failure(reason: BaseException, tls_transport: object = None) -> str:
    """Why a TLS handshake failed, in a few words for a log line.

    Args:
        reason: what closed the connection (an `SSL.Error`, a `service_identity` `VerificationError`...).
        tls_transport: the connection's TLS protocol (the transport of the protocol above it), whose
            recorded X.509 error names the chain's fault: expired, unknown CA ...
    """
    mismatch = _name_mismatch(reason)
    if mismatch is not None:
        return mismatch
    text = _describe(reason)
    if isinstance(reason, SSL.Error):
        parts = [str(item[2]) for item in (reason.args[0] if reason.args else []) if len(item) > 2]
        text = "; ".join(p for p in parts if p) or text
        code = _verify_errors.get(tls_transport) if tls_transport is not None else None
        if "certificate verify failed" in text and code:
            text = f"certificate verify failed: {_X509_ERRORS.get(code, f'X509 error {code}')}"
    return f"TLS handshake failed: {text}"


_X509_ERRORS: Mapping[int, str] = MappingProxyType(
    {
        2: "unable to get issuer certificate (unknown CA)",
        9: "certificate is not yet valid",
        10: "certificate has expired",
        18: "self-signed certificate (untrusted)",
        19: "self-signed certificate in chain (unknown CA)",
        20: "unable to get local issuer certificate (unknown CA)",
        21: "unable to verify the first certificate (unknown CA)",
        23: "certificate revoked",
        24: "invalid CA certificate",
        26: "unsupported certificate purpose",
    }
)
"""OpenSSL X509_V_ERR_* codes seen when a peer's chain is refused (`X509_verify_cert_error_string` words)."""


def _name_mismatch(reason: BaseException) -> str | None:
    errors = getattr(reason, "errors", None)
    if type(reason).__name__ != "VerificationError" or not errors:
        return None
    wanted = []
    for error in errors:
        identity = getattr(error, "mismatched_id", None)
        value = getattr(identity, "hostname", None) or getattr(identity, "ip", None)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        kind = "IP-ID" if getattr(identity, "ip", None) is not None else "DNS-ID"
        wanted.append(f"{kind} {value}" if value is not None else type(error).__name__)
    return f"TLS certificate name mismatch: the certificate does not name {', '.join(wanted)}"


def _name_key(name: str) -> str:
    name = name.strip().strip("[]").rstrip(".").lower()
    if _is_ip(name):
        return str(ipaddress.ip_address(name))
    return name


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


def _private_certificate(cert_path: Path, key_path: Path) -> tuple[ssl.PrivateCertificate, list[Any]]:
    """The first certificate of `cert_path` with the key of `key_path`, and the chain after it."""
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
    return private_cert, chain


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


def _describe(error: BaseException) -> str:
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
