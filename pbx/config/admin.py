"""The operator's console settings as frozen values: the `[admin]` section (`docs/configuration.md`).

Like `pbx.config.model` it imports only the standard library. The console is off unless `listen` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ADMIN_KEYS: tuple[str, ...] = (
    "listen",
    "certificate",
    "private_key",
    "session_lifetime",
    "max_login_failures",
    "login_failure_window",
    "lockout_duration",
    "url",
)
"""The keys of `[admin]`, for `pbx.config.load.SCHEMA_KEYS`."""


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The `[admin]` section: the console's HTTP(S) listener and its login policy.

    Attributes:
        host: The address the console listens on ("" when the console is off).
        port: Its TCP port (0 when off).
        certificate: A PEM certificate (chain): the console speaks HTTPS with it; None for plain HTTP.
        private_key: The certificate's PEM private key (required with `certificate`).
        session_lifetime: Seconds a login lasts without activity.
        max_login_failures: Wrong passwords from one address within `login_failure_window` that lock it out.
        login_failure_window: Seconds over which wrong passwords are counted.
        lockout_duration: Seconds a lock-out lasts.
        url: The base URL the `pbx` command uses to reach the console ("" to derive it from `listen`).
    """

    host: str = ""
    port: int = 0
    certificate: Path | None = None
    private_key: Path | None = None
    session_lifetime: float = 3600.0
    max_login_failures: int = 5
    login_failure_window: float = 300.0
    lockout_duration: float = 900.0
    url: str = ""

    @property
    def enabled(self) -> bool:
        """Whether the console listens at all (`listen` set)."""
        return bool(self.host) and self.port > 0

    @property
    def base_url(self) -> str:
        """Where the console is reached: `url`, else derived from `listen` and the certificate."""
        if self.url:
            return self.url.rstrip("/")
        if not self.enabled:
            return ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        scheme = "https" if self.certificate is not None else "http"
        return f"{scheme}://{host}:{self.port}"
