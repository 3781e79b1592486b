"""The live extension directory: the configuration's extensions overlaid with those kept in the store.

Rules (docs/console.md, "Extensions: the TOML and the store"):

- The TOML's extensions are the seed: with nothing in the store, the directory is the TOML's.
- A `StoredExtension` (added or edited in the console) replaces the TOML's extension of the same tenant and
  number, all fields; one marked `deleted` hides it. Removing a console-only extension deletes its row.
- The store wins until the row is removed; editing the TOML changes an extension only while the store has no
  row for it (the console shows where each extension comes from).

The registrar's digest check (`ha1`) and the B2BUA's directory (`directory`) read this object on every
request, so a change takes effect on the next REGISTER or INVITE: no restart, no reload. A changed tenant
gets a new `Directory` object, which the B2BUA notices (its per-directory views are keyed by identity).

Plain inputs only (`TenantSeed`): the composition root turns the config into them; this module never reads
the config. Passwords of store extensions are kept as H(A1) for the tenant's realm, MD5 and SHA-256.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from twisted.internet.defer import Deferred, succeed

from pbx.b2bua import Directory, ExtensionInfo
from pbx.sip.digest import ha1
from pbx.store.admin import StoredExtension

NUMBER = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
"""What an extension number may be (as in the config)."""
TARGET = re.compile(r"[A-Za-z0-9_.:/@+*#-]{0,128}")
SRTP_MODES = ("off", "optional", "mandatory")
EDITABLE = (
    "name",
    "forward_all",
    "forward_busy",
    "forward_noanswer",
    "ring_timeout",
    "may_call_out",
    "srtp",
    "allow_srtp_over_plain",
)
"""The fields of an extension the console and the API change (besides the password)."""


class ExtensionProblem(ValueError):
    """An extension's values are not acceptable; the message says which and why."""


@dataclass(frozen=True, slots=True)
class TenantSeed:
    """A tenant as the directory needs it: names, realm, groups and the configured extensions.

    `extensions` values are any objects with the attributes of a configured extension (`number`, `name`,
    `password` or `ha1_md5`/`ha1_sha256`, the forwards, `ring_timeout`, `may_call_out`, `srtp`,
    `allow_srtp_over_plain`).
    """

    name: str
    domain: str
    realm: str
    extensions: Mapping[str, Any] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The configured extensions' full `ExtensionInfo` (outbound classes, pickup groups... which the console
    # does not edit): an extension the console changes keeps them; one it adds gets the defaults.
    base: Mapping[str, ExtensionInfo] = field(default_factory=dict)


def _info(number: str, e: Any, base: ExtensionInfo | None) -> ExtensionInfo:
    """What calls see of extension `number`: the console's fields of `e` over the configured `base`."""
    fields: dict[str, Any] = {
        "number": number,
        "name": e.name,
        "forward_all": e.forward_all,
        "forward_busy": e.forward_busy,
        "forward_noanswer": e.forward_noanswer,
        "ring_timeout": e.ring_timeout,
        "may_call_out": e.may_call_out,
        "srtp": e.srtp,
        "allow_srtp_over_plain": e.allow_srtp_over_plain,
    }
    return replace(base, **fields) if base is not None else ExtensionInfo(**fields)


def _configured(tenant: str, e: Any, realm: str) -> StoredExtension:
    password = getattr(e, "password", None)
    number = str(e.number)
    return StoredExtension(
        tenant=tenant,
        number=number,
        name=str(getattr(e, "name", "") or ""),
        ha1_md5=ha1(number, realm, password, "MD5") if password else (getattr(e, "ha1_md5", None) or ""),
        ha1_sha256=(
            ha1(number, realm, password, "SHA-256") if password else (getattr(e, "ha1_sha256", None) or "")
        ),
        forward_all=str(getattr(e, "forward_all", "") or ""),
        forward_busy=str(getattr(e, "forward_busy", "") or ""),
        forward_noanswer=str(getattr(e, "forward_noanswer", "") or ""),
        ring_timeout=float(getattr(e, "ring_timeout", 0.0) or 0.0),
        may_call_out=bool(getattr(e, "may_call_out", False)),
        srtp=str(getattr(e, "srtp", "optional")),
        allow_srtp_over_plain=bool(getattr(e, "allow_srtp_over_plain", False)),
        realm=realm,
    )


def check_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The editable fields of `values`, checked and converted (unknown keys refused).

    Raises:
        ExtensionProblem: naming the field.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in EDITABLE:
            raise ExtensionProblem(f"{key}: unknown field (one of {', '.join(EDITABLE)}, password)")
        if key == "name":
            if not isinstance(value, str) or len(value) > 64 or re.search(r"[\x00-\x1f\x7f\"<>]", value):
                raise ExtensionProblem("name: at most 64 characters, no control characters, quotes or <>")
        elif key.startswith("forward_"):
            if not isinstance(value, str) or not TARGET.fullmatch(value):
                raise ExtensionProblem(f"{key}: a dial target (digits, letters, .:/@+*#-), at most 128")
        elif key == "ring_timeout":
            if isinstance(value, str):
                try:
                    value = float(value or 0)
                except ValueError:
                    raise ExtensionProblem("ring_timeout: a number of seconds") from None
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 600:
                raise ExtensionProblem("ring_timeout: seconds from 0 to 600")
            value = float(value)
        elif key in ("may_call_out", "allow_srtp_over_plain"):
            if isinstance(value, str):
                value = value.lower() in ("1", "true", "on", "yes")
            if not isinstance(value, bool):
                raise ExtensionProblem(f"{key}: true or false")
        elif key == "srtp" and value not in SRTP_MODES:
            raise ExtensionProblem(f"srtp: one of {', '.join(SRTP_MODES)}")
        out[key] = value
    return out


def check_sip_password(password: object) -> str:
    """A SIP password for an extension: 8 to 128 printable characters."""
    if not isinstance(password, str) or not 8 <= len(password) <= 128 or not password.isprintable():
        raise ExtensionProblem("password: 8 to 128 printable characters")
    return password


class ExtensionDirectory:
    """The tenants' extensions, the TOML's overlaid with the store's.

    Args:
        tenants: The tenants, in order.
        store: An `IAdminStore` where console changes go (None: changes stay in memory, for tests).
        clock_seconds: Wall-clock epoch seconds, for `updated_at`.
    """

    def __init__(self, tenants: Sequence[TenantSeed], store: Any = None, clock_seconds: Any = None) -> None:
        self._seeds = {t.name: t for t in tenants}
        self._by_realm: dict[str, str] = {}
        for t in tenants:
            self._by_realm.setdefault(t.realm, t.name)
        self._store = store
        self._now = clock_seconds or (lambda: 0.0)
        self._configured = {
            t.name: {n: _configured(t.name, e, t.realm) for n, e in t.extensions.items()} for t in tenants
        }
        self._stored: dict[str, dict[str, StoredExtension]] = {t.name: {} for t in tenants}
        self._effective: dict[str, dict[str, StoredExtension]] = {}
        self._directories: dict[str, Directory] = {}
        for t in tenants:
            self._rebuild(t.name)

    @property
    def tenants(self) -> list[str]:
        """The tenants' names, in order."""
        return list(self._seeds)

    def seed(self, tenant: str) -> TenantSeed | None:
        return self._seeds.get(tenant)

    def attach(self, store: Any) -> None:
        """Keep changes in `store` (an `IAdminStore`) from now on."""
        self._store = store

    def load(self) -> Deferred[int]:
        """Read the store's rows (at start); fires with how many (0 without a store)."""
        if self._store is None:
            return succeed(0)
        d: Deferred[list[StoredExtension]] = self._store.stored_extensions()

        def loaded(rows: list[StoredExtension]) -> int:
            for rows_of in self._stored.values():
                rows_of.clear()
            for row in rows:
                if row.tenant in self._stored:
                    self._stored[row.tenant][row.number] = row
            for tenant in self._seeds:
                self._rebuild(tenant)
            return len(rows)

        return d.addCallback(loaded)

    # -- what the registrar and the B2BUA read ------------------------------------------------------------

    def directory(self, tenant: str) -> Directory | None:
        """The tenant's directory for the B2BUA (a new object after each change)."""
        return self._directories.get(tenant)

    def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """H(A1) of an extension for the registrar's digest check, or None (unknown, or no such digest)."""
        tenant = self._by_realm.get(realm)
        if tenant is None:
            return None
        e = self._effective[tenant].get(username)
        if e is None:
            return None
        if algorithm.upper().startswith("SHA-256"):
            return e.ha1_sha256 or None
        if algorithm.upper().startswith("MD5"):
            return e.ha1_md5 or None
        return None

    # -- what the console reads and changes ---------------------------------------------------------------

    def extensions(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's extensions as JSON-ready dicts (no digests), with `source` "config" or "console"."""
        out = []
        for number in sorted(self._effective.get(tenant, {})):
            e = self._effective[tenant][number]
            out.append(self._public(e))
        return out

    def get(self, tenant: str, number: str) -> dict[str, Any] | None:
        e = self._effective.get(tenant, {}).get(number)
        return None if e is None else self._public(e)

    def _public(self, e: StoredExtension) -> dict[str, Any]:
        values = {k: v for k, v in asdict(e).items() if k in ("number", *EDITABLE)}
        values["source"] = "console" if e.number in self._stored.get(e.tenant, {}) else "config"
        values["configured"] = e.number in self._configured.get(e.tenant, {})
        values["has_password"] = bool(e.ha1_md5 or e.ha1_sha256)
        return values

    def add(self, tenant: str, number: str, values: Mapping[str, Any], password: str) -> Deferred[None]:
        """Add an extension (refused if it exists). Raises `ExtensionProblem` (synchronously)."""
        if not NUMBER.fullmatch(number):
            raise ExtensionProblem("number: 1-64 letters, digits, '.', '_' or '-'")
        if number in self._effective[tenant]:
            raise ExtensionProblem(f"extension {number} exists")
        fields = check_fields(values)
        realm = self._seeds[tenant].realm
        check_sip_password(password)
        row = StoredExtension(tenant=tenant, number=number, realm=realm, **fields)
        return self._put(self._with_password(row, password))

    def change(
        self, tenant: str, number: str, values: Mapping[str, Any], password: str | None = None
    ) -> Deferred[None]:
        """Change an extension's fields (and password, when given). KeyError if absent."""
        current = self._effective[tenant][number]
        fields = check_fields(values)
        row = replace(current, deleted=False, **fields)
        if password is not None:
            row = self._with_password(row, check_sip_password(password))
        return self._put(row)

    def remove(self, tenant: str, number: str) -> Deferred[None]:
        """Remove an extension (a configured one is hidden by a tombstone). KeyError if absent."""
        current = self._effective[tenant][number]
        if number in self._configured[tenant]:
            return self._put(replace(current, deleted=True))
        self._stored[tenant].pop(number, None)
        self._rebuild(tenant)
        if self._store is None:
            return succeed(None)
        d: Deferred[None] = self._store.delete_stored_extension(tenant, number)
        return d

    def _with_password(self, row: StoredExtension, password: str) -> StoredExtension:
        realm = self._seeds[row.tenant].realm
        return replace(
            row,
            realm=realm,
            ha1_md5=ha1(row.number, realm, password, "MD5"),
            ha1_sha256=ha1(row.number, realm, password, "SHA-256"),
        )

    def _put(self, row: StoredExtension) -> Deferred[None]:
        row = replace(row, updated_at=float(self._now()))
        self._stored[row.tenant][row.number] = row
        self._rebuild(row.tenant)
        if self._store is None:
            return succeed(None)
        d: Deferred[None] = self._store.put_extension(row)
        return d

    def _rebuild(self, tenant: str) -> None:
        effective = dict(self._configured[tenant])
        for number, row in self._stored[tenant].items():
            if row.deleted:
                effective.pop(number, None)
            else:
                effective[number] = row
        self._effective[tenant] = effective
        seed = self._seeds[tenant]
        self._directories[tenant] = Directory(
            tenant=tenant,
            domain=seed.domain,
            extensions={number: _info(number, e, seed.base.get(number)) for number, e in effective.items()},
            groups=dict(seed.groups),
        )
