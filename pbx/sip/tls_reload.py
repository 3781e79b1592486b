"""Server certificates replaced without a restart (RFC 5246/8446 servers; RFC 3261 section 26.2 SIP over TLS).

- `ReloadableServerOptions` is what a TLS listener is given: a server connection creator that hands every
  *new* handshake an `OpenSSL.SSL.Connection` built from the options in force now. `reload()` checks the
  certificate and key files (readable, a chain of PEM certificates that parses, the key matching the first
  certificate, valid now), builds new options through the injected `build` callable (so the TLS policy lives
  elsewhere, `pbx.sip.tls.server_options`) and swaps one reference. Connections already established keep their
  own `SSL.Connection` (and its context): they, the registrations over them and the calls they signal are not
  touched. A refused pair is one log line naming the reason; the current certificate keeps serving.
- `CertificateFileWatcher` polls the files' inode, size and modification time on the injected clock and calls
  back once a change has stayed the same for one poll (a file being written is not read half-way, and a
  certificate and key replaced one after the other are read together).

Pure library: no configuration, no signals, no reactor; `pbx.service.tls_reload` wires it up."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

__all__ = [
    "DEFAULT_WATCH_INTERVAL",
    "CertificateFileWatcher",
    "ReloadableServerOptions",
    "ServerOptionsVariant",
    "check_certificate_pair",
]

DEFAULT_WATCH_INTERVAL = 2.0

_log = Logger(namespace="pbx.sip.tls")

_PEM_KEY = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.DOTALL)
_Signature = tuple[tuple[int, int, int, int] | None, ...]


def check_certificate_pair(cert_path: Path, key_path: Path, now: float) -> x509.Certificate:
    """Check a PEM certificate file (leaf first, then its chain) and its PEM private key.

    Args:
        cert_path: the certificate, optionally followed by intermediate certificates.
        key_path: the unencrypted private key of the first certificate.
        now: POSIX seconds at which the certificate must be valid.

    Returns:
        The leaf certificate.

    Raises:
        ValueError: unreadable file, no or malformed PEM certificate, a malformed or encrypted key, a key that
            does not match the certificate, or a certificate expired or not yet valid. The message names the
            file and the reason.
    """
    cert_pem, key_pem = _read(cert_path), _read(key_path)
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise ValueError(f"{cert_path}: no PEM certificate found")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as e:
        raise ValueError(f"{cert_path}: not a valid PEM certificate chain ({_describe(e)})") from None
    leaf = chain[0]
    block = _PEM_KEY.search(key_pem)  # the key may share its file with the certificate
    try:
        key = serialization.load_pem_private_key(block.group(0) if block else key_pem, password=None)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{key_path}: not a valid unencrypted PEM private key ({_describe(e)})") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise ValueError(f"{key_path}: the private key does not match the certificate in {cert_path}")
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if moment < leaf.not_valid_before_utc:
        raise ValueError(f"{cert_path}: not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
    if moment > leaf.not_valid_after_utc:
        raise ValueError(f"{cert_path}: expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    return leaf


def describe_certificate(cert: x509.Certificate) -> str:
    """Subject, serial number (hex) and end of validity, for log lines."""
    return (
        f"{cert.subject.rfc4514_string()} serial {cert.serial_number:x} "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    )


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerOptions:
    """The server side of TLS whose certificate and key can be replaced while the listener runs.

    Args:
        cert_path: the certificate file (leaf then chain, PEM).
        key_path: its private key (PEM).
        build: builds the server options from the files as they are now (the TLS policy: versions, ciphers,
            client certificates); a `ValueError` refuses them.
        clock: the time against which validity is checked.

    Raises:
        ValueError: at construction, when `build` refuses the files (the listener cannot start). A certificate
            that is expired or not yet valid at start is served with a warning, as before reloads existed.
    """

    def __init__(
        self,
        cert_path: Path,
        key_path: Path,
        build: Callable[[], Any],
        clock: IReactorTime,
    ) -> None:
        self.cert_path = Path(cert_path)
        self.key_path = Path(key_path)
        self._build = build
        self._clock = clock
        self.reloads = 0
        self.refusals = 0
        try:
            self.certificate: x509.Certificate | None = check_certificate_pair(
                self.cert_path, self.key_path, clock.seconds()
            )
        except ValueError as e:
            _log.warn("TLS certificate: {reason}", reason=str(e))
            self.certificate = None
        self._options = build()
        self._fingerprint = self._files_fingerprint()
        self._variants: list[ServerOptionsVariant] = []

    def variant(self, build: Callable[[], Any]) -> ServerOptionsVariant:
        """Other server options from the same files (a listener requiring client certificates), rebuilt
        with `build` whenever this reloads: a refused build refuses the reload for all of them."""
        variant = ServerOptionsVariant(build())
        variant.build = build
        self._variants.append(variant)
        return variant

    @property
    def options(self) -> Any:
        """The options new handshakes use now."""
        return self._options

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """A connection for one new handshake, from the options in force now."""
        return self._options.serverConnectionForTLS(tlsProtocol)

    def getContext(self) -> SSL.Context:
        """The current context (for callers that take the older context factory interface)."""
        return self._options.getContext()

    def reload(self, trigger: str = "request") -> bool:
        """Load the files again; new handshakes use them if they are good.

        Args:
            trigger: what asked (``"SIGHUP"``, ``"file change"``), for the log line.

        Returns:
            True when a new certificate now serves; False when the files are unchanged or refused (one log
            line says which and why; the current certificate keeps serving).
        """
        try:
            fingerprint = self._files_fingerprint()
            if fingerprint == self._fingerprint:
                _log.info("TLS certificate unchanged ({trigger}); nothing to reload", trigger=trigger)
                return False
            leaf = check_certificate_pair(self.cert_path, self.key_path, self._clock.seconds())
            options = self._build()
            variants = [variant.build() for variant in self._variants]
        except ValueError as e:
            self.refusals += 1
            _log.error(
                "TLS certificate reload ({trigger}) refused: {reason}; still serving {current}",
                trigger=trigger,
                reason=str(e),
                current=describe_certificate(self.certificate) if self.certificate else str(self.cert_path),
            )
            return False
        self._options, self.certificate, self._fingerprint = options, leaf, fingerprint
        for variant, variant_options in zip(self._variants, variants, strict=True):
            variant.options = variant_options
        self.reloads += 1
        _log.info(
            "TLS certificate reloaded ({trigger}): new handshakes use {cert}",
            trigger=trigger,
            cert=describe_certificate(leaf),
        )
        return True

    def _files_fingerprint(self) -> bytes:
        digest = hashlib.sha256(_read(self.cert_path))
        digest.update(_read(self.key_path))
        return digest.digest()


@implementer(IOpenSSLServerConnectionCreator)
class ServerOptionsVariant:
    """Server options that follow a `ReloadableServerOptions`'s files (`ReloadableServerOptions.variant`)."""

    build: Callable[[], Any]

    def __init__(self, options: Any) -> None:
        self.options = options

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return self.options.serverConnectionForTLS(tlsProtocol)

    def getContext(self) -> SSL.Context:
        return self.options.getContext()


class CertificateFileWatcher:
    """Calls `on_change` when files change on disk (inode, size or modification time), polled on `clock`.

    A change is reported once it has been seen unchanged at two polls in a row, so a file still being written
    (or a key replaced just after its certificate) is read complete. A missing file counts as a state of its
    own: deleting then recreating a file is a change.

    Args:
        clock: the reactor's time.
        paths: the files to watch.
        on_change: called with no argument after a settled change.
        interval: seconds between polls.
    """

    def __init__(
        self,
        clock: IReactorTime,
        paths: list[Path],
        on_change: Callable[[], object],
        interval: float = DEFAULT_WATCH_INTERVAL,
    ) -> None:
        self._paths = [Path(p) for p in paths]
        self._on_change = on_change
        self._interval = interval
        self._loop = LoopingCall(self.poll)
        self._loop.clock = clock
        self._seen = self._signature()
        self._pending: _Signature | None = None

    def start(self) -> None:
        """Start polling (the first poll is one interval from now)."""
        if not self._loop.running:
            self._seen = self._signature()
            self._pending = None
            self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        """Stop polling."""
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> None:
        """Look at the files once."""
        signature = self._signature()
        if signature == self._seen:
            self._pending = None
        elif signature != self._pending:
            self._pending = signature  # changed since the last poll: wait for it to settle
        else:
            self._seen, self._pending = signature, None
            try:
                self._on_change()
            except Exception:
                _log.failure("TLS certificate reload after a file change failed")

    def _signature(self) -> _Signature:
        return tuple(_stat(path) for path in self._paths)


def _stat(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None


def _describe(error: Exception) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__
