"""The console's storage seam: admin users, API tokens, and the extensions managed from the console.

`IAdminStore` is provided by both stores (`pbx.store.memory_admin.MemoryAdminStore` and
`pbx.store.sqlite_admin.SqliteAdminStore`, mixins of the location stores), so the console shares the PBX's
database, connection and commit queue. The records are plain values: passwords arrive here already hashed
(scrypt for admin users, H(A1) digests for extensions), tokens as their SHA-256; nothing here hashes,
checks or decides.

Extensions: a `StoredExtension` overrides the configuration's extension of the same (tenant, number); one
with `deleted` set hides it (docs/console.md, "Extensions: the TOML and the store").
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Interface

ROLES: tuple[str, ...] = ("admin", "tenant_admin", "viewer")
"""Admin roles: everything; everything of one tenant; read-only (of one tenant, or of all)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminUser:
    """A person who logs in to the console.

    Attributes:
        name: The login name, unique.
        password_hash: `scrypt$N$r$p$SALT$HASH` (`pbx.admin.passwords`); never the password.
        role: One of `ROLES`.
        tenant: The tenant a `tenant_admin` (or a restricted `viewer`) sees; "" for all.
        created_at: Wall-clock epoch seconds.
    """

    name: str
    password_hash: str
    role: str
    tenant: str = ""
    created_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiToken:
    """A bearer token for scripts, acting as its user.

    Attributes:
        token_hash: The SHA-256 (hex) of the token; the token itself is shown once and never stored.
        user: The user it acts as.
        label: What it is for ("" if nothing was said).
        created_at: Wall-clock epoch seconds.
    """

    token_hash: str
    user: str
    label: str = ""
    created_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredExtension:
    """An extension added or changed from the console (or a deletion of a configured one).

    Attributes:
        tenant: The tenant's name.
        number: The extension number.
        name: Its display name.
        ha1_md5: H(A1) with MD5 for the tenant's realm (RFC 2617), or "" (no password set).
        ha1_sha256: H(A1) with SHA-256 (RFC 7616), or "".
        forward_all: Dial target for all calls, "" for none.
        forward_busy: Dial target when busy.
        forward_noanswer: Dial target when unanswered.
        ring_timeout: Seconds it rings; 0 for the PBX default.
        may_call_out: Whether it may call through trunks.
        srtp: "off", "optional" or "mandatory".
        allow_srtp_over_plain: Whether SRTP keys may travel over plain signalling.
        deleted: A tombstone: the configured extension of this number is gone.
        realm: The realm the digests were made for (a changed realm needs a new password).
        updated_at: Wall-clock epoch seconds.
    """

    tenant: str
    number: str
    name: str = ""
    ha1_md5: str = ""
    ha1_sha256: str = ""
    forward_all: str = ""
    forward_busy: str = ""
    forward_noanswer: str = ""
    ring_timeout: float = 0.0
    may_call_out: bool = False
    srtp: str = "optional"
    allow_srtp_over_plain: bool = False
    deleted: bool = False
    realm: str = ""
    updated_at: float = 0.0


class IAdminStore(Interface):
    """Admin users, API tokens and console-managed extensions. Every method returns a Deferred firing on the
    reactor thread once the change is durable; operations take effect in the order they were called."""

    def admin_users() -> Deferred[list[AdminUser]]:
        """Every admin user, by name."""

    def admin_user(name: str) -> Deferred[AdminUser | None]:
        """One user, or None."""

    def put_admin_user(user: AdminUser) -> Deferred[None]:
        """Add or replace a user (by name)."""

    def delete_admin_user(name: str) -> Deferred[bool]:
        """Remove a user and its tokens; True if it existed."""

    def api_token(token_hash: str) -> Deferred[ApiToken | None]:
        """The token with this hash, or None."""

    def put_api_token(token: ApiToken) -> Deferred[None]:
        """Store a token (its hash)."""

    def stored_extensions() -> Deferred[list[StoredExtension]]:
        """Every stored extension (and tombstone), by tenant and number."""

    def put_extension(extension: StoredExtension) -> Deferred[None]:
        """Add or replace an extension (by tenant and number)."""

    def delete_stored_extension(tenant: str, number: str) -> Deferred[None]:
        """Forget the stored row (the configured extension, if any, applies again)."""
