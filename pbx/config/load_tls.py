"""TLS policy and mutual-TLS settings of the configuration (RFC 7525 / RFC 9325 defaults).

- `[tls] min_version`: "1.2" (default) or "1.3": older protocol versions are never offered nor accepted.
- `[tls] ciphers`: an OpenSSL cipher string for TLS 1.2; "" (default) is the PBX's AEAD-only list
  (`pbx.sip.tls.DEFAULT_CIPHERS`: ECDHE with AES-GCM or ChaCha20-Poly1305, no CBC). TLS 1.3 suites are
  OpenSSL's, all AEAD. A string that selects no cipher is refused here, not at the first handshake.
- `[[sip.listen]] require_client_certificate`: a TLS listener refuses clients without a certificate signed
  by `[tls] ca_certificates` (mutual TLS).
- A trunk's `tls_certificate` and `tls_private_key`: the client certificate it presents to its carrier.

Called by `pbx.config.load` (imported when used: this module imports its `ConfigError`); pyOpenSSL
checks the cipher string (no PBX layer involved).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from OpenSSL import SSL

from pbx.config.load import ConfigError
from pbx.config.model import SipConfig, TlsConfig

__all__ = [
    "TLS_MIN_VERSIONS",
    "check_mutual_tls",
    "listener_client_certificate",
    "tls_policy",
    "trunk_certificate",
]

TLS_MIN_VERSIONS: tuple[str, ...] = ("1.2", "1.3")


class _Parser(Protocol):
    def _string(self, table: Mapping[str, Any], key: str, path: str, default: str) -> str: ...

    def _boolean(self, table: Mapping[str, Any], key: str, path: str, default: bool) -> bool: ...

    def _path(self, table: Mapping[str, Any], key: str, path: str, default: str) -> Path | None: ...


def tls_policy(parser: _Parser, table: Mapping[str, Any]) -> dict[str, str]:
    """`min_version` and `ciphers` of `[tls]`, checked: keyword arguments of `TlsConfig`."""
    version = table.get("min_version", "1.2")
    if isinstance(version, float):  # min_version = 1.2 written without quotes
        version = f"{version:.1f}"
    if not isinstance(version, str) or version.strip() not in TLS_MIN_VERSIONS:
        raise ConfigError(
            "tls.min_version", f"must be one of {', '.join(map(repr, TLS_MIN_VERSIONS))}, not {version!r}"
        )
    ciphers = parser._string(table, "ciphers", "tls", "").strip()
    if ciphers:
        try:
            SSL.Context(SSL.TLS_METHOD).set_cipher_list(ciphers.encode("ascii"))
        except (SSL.Error, UnicodeEncodeError):
            raise ConfigError("tls.ciphers", f"selects no cipher OpenSSL knows: {ciphers[:200]!r}")
    return {"min_version": version.strip(), "ciphers": ciphers}


def listener_client_certificate(parser: _Parser, table: Mapping[str, Any], path: str, transport: str) -> bool:
    """`require_client_certificate` of one `[[sip.listen]]` (TLS listeners only)."""
    required = parser._boolean(table, "require_client_certificate", path, False)
    if required and transport != "tls":
        raise ConfigError(f"{path}.require_client_certificate", "is only for TLS listeners")
    return required


def check_mutual_tls(sip: SipConfig, tls: TlsConfig) -> None:
    """A listener requiring client certificates needs the CAs to verify them with."""
    for index, listener in enumerate(sip.listeners):
        if listener.require_client_certificate and tls.ca_certificates is None:
            raise ConfigError(
                f"sip.listen[{index}].require_client_certificate",
                "needs tls.ca_certificates (the clients' CAs)",
            )


def trunk_certificate(parser: _Parser, table: Mapping[str, Any], path: str) -> dict[str, Path | None]:
    """A trunk's client certificate and key (both or neither; the files must exist)."""
    certificate = parser._path(table, "tls_certificate", path, "")
    private_key = parser._path(table, "tls_private_key", path, "")
    if (certificate is None) != (private_key is None):
        missing = "tls_private_key" if private_key is None else "tls_certificate"
        raise ConfigError(
            f"{path}.{missing}", "is required when the other of tls_certificate/tls_private_key is set"
        )
    for key, file in (("tls_certificate", certificate), ("tls_private_key", private_key)):
        if file is not None and not file.is_file():
            raise ConfigError(f"{path}.{key}", f"no such file: {file}")
    return {"tls_certificate": certificate, "tls_private_key": private_key}
