"""Who is asking, and whether they may: principals and roles, sessions, CSRF tokens, logins with lock-out.

- `Principal`: an authenticated user (`admin` of everything; `tenant_admin` of one tenant; `viewer`,
  read-only, of one tenant or of all). `can_see` and `can_change` are the only role checks; the API turns
  "may not see" into 404 (another tenant's objects do not exist for a tenant admin) and "may see but not
  change" into 403.
- `Sessions`: server-side sessions keyed by 256-bit random ids (the cookie holds only the id), each with its
  own CSRF token; a session ends `lifetime` seconds after its last use (sliding expiry on the injected clock)
  and at logout. Held in memory: a restart logs everyone out.
- `Logins`: checks a name and password against the store (scrypt in a thread), counting wrong passwords in a
  `pbx.registrar.BruteForceGuard` of its own: too many from one address lock that address out; an account
  attacked from many addresses locks out each further failing address. A locked-out address is refused even
  with the right password, with the same answer for unknown names and wrong passwords.

Nothing here knows HTTP: `pbx.admin.site` reads cookies and headers and calls these.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pbx.admin.passwords import dummy_hash, token_hash, verify_password
from pbx.registrar.guard import BruteForceGuard
from pbx.store.admin import ROLES, AdminUser

_log = Logger(namespace="pbx.admin")

MAX_SESSIONS = 10_000
"""The most sessions kept; the least recently used goes first."""

InThread = Callable[..., Deferred[Any]]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user.

    Attributes:
        name: The user's login name.
        role: One of `pbx.store.admin.ROLES`.
        tenant: The one tenant the user is limited to, "" for all.
        via: "session" (a browser, CSRF-checked) or "token" (a script with a bearer token).
    """

    name: str
    role: str
    tenant: str = ""
    via: str = "session"

    def can_see(self, tenant: str) -> bool:
        """Whether the user may read `tenant`'s objects."""
        return self.role in ROLES and (not self.tenant or self.tenant == tenant)

    def can_change(self, tenant: str) -> bool:
        """Whether the user may change `tenant`'s objects (hang up, add an extension...)."""
        return self.can_see(tenant) and self.role in ("admin", "tenant_admin")

    @property
    def is_admin(self) -> bool:
        """Whether the user is an admin of everything (PBX-wide actions)."""
        return self.role == "admin" and not self.tenant

    def tenants(self, all_tenants: list[str]) -> list[str]:
        """The tenants this user sees, of `all_tenants`, in their order."""
        return [t for t in all_tenants if self.can_see(t)]


def principal_of(user: AdminUser, via: str = "session") -> Principal:
    """The principal of a stored user; an admin's tenant is ignored (an admin sees every tenant)."""
    return Principal(user.name, user.role, "" if user.role == "admin" else user.tenant, via)


@dataclass(slots=True)
class Session:
    """A browser's login: the user, its CSRF token and when it lapses."""

    id: str
    principal: Principal
    csrf: str
    expires_at: float
    data: dict[str, Any] = field(default_factory=dict)


class Sessions:
    """Server-side sessions with sliding expiry.

    Args:
        clock: The time source.
        lifetime: Seconds a session lives after its last use.
    """

    def __init__(self, clock: IReactorTime, lifetime: float = 3600.0) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, principal: Principal) -> Session:
        """A new session for `principal` (a fresh id at every login: no session fixation)."""
        now = self._clock.seconds()
        session = Session(
            secrets.token_urlsafe(32), principal, secrets.token_urlsafe(32), now + self._lifetime
        )
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session of this id (its expiry pushed back), or None: unknown or lapsed."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock.seconds()
        if now >= session.expires_at:
            del self._sessions[session_id]
            return None
        session.expires_at = now + self._lifetime
        self._sessions.move_to_end(session_id)
        return session

    def end(self, session_id: str) -> None:
        """Log out."""
        self._sessions.pop(session_id, None)

    def end_user(self, name: str) -> None:
        """End every session of a user (removed, or given a new password)."""
        for key in [k for k, s in self._sessions.items() if s.principal.name == name]:
            del self._sessions[key]

    def purge(self) -> int:
        """Drop lapsed sessions; how many."""
        now = self._clock.seconds()
        dead = [k for k, s in self._sessions.items() if now >= s.expires_at]
        for key in dead:
            del self._sessions[key]
        return len(dead)


def csrf_ok(session: Session, offered: str | None) -> bool:
    """Whether a form's (or header's) CSRF token is the session's, compared in constant time."""
    return offered is not None and hmac.compare_digest(session.csrf.encode(), offered.encode())


class LockedOut(Exception):
    """The address has failed too often: no password is checked until the lock-out ends."""


class Logins:
    """Password and token checks over an `IAdminStore`, with lock-out.

    Args:
        store: An `IAdminStore`.
        clock: The time source.
        in_thread: Runs a blocking function off the reactor (scrypt); synchronous in tests.
        max_failures: Wrong passwords from one address within `window` that lock it out.
        window: Seconds over which failures count.
        lockout: Seconds a lock-out lasts.
    """

    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        in_thread: InThread | None = None,
        *,
        max_failures: int = 5,
        window: float = 300.0,
        lockout: float = 900.0,
    ) -> None:
        self._store = store
        self._in_thread: InThread = in_thread or (lambda fn, *args: succeed(fn(*args)))
        self.guard = BruteForceGuard(
            clock,
            max_failures=max_failures,
            window=window,
            block_duration=lockout,
            max_account_failures=max_failures * 4,
        )

    def login(self, name: str, password: str, source: str) -> Deferred[Principal | None]:
        """The principal for a right name and password; None when wrong (either of them).

        Raises (in the Deferred):
            LockedOut: `source` is locked out (checked before and after the password).
        """
        if self.guard.is_blocked(source):
            return fail(LockedOut(source))
        return Deferred.fromCoroutine(self._login(name, password, source))

    async def _login(self, name: str, password: str, source: str) -> Principal | None:
        user: AdminUser | None = await self._store.admin_user(name)
        stored = user.password_hash if user is not None else dummy_hash()
        ok = await self._in_thread(verify_password, password, stored)
        if ok and user is not None:
            return principal_of(user)
        if self.guard.failure(source, name[:64]):
            _log.warn("Console: {source} locked out after failed logins", source=source)
            raise LockedOut(source)
        return None

    def token(self, token: str) -> Deferred[Principal | None]:
        """The principal a bearer token acts for, or None."""
        d = self._store.api_token(token_hash(token))

        def user_of(found: Any) -> Deferred[AdminUser | None] | None:
            return None if found is None else self._store.admin_user(found.user)

        d.addCallback(user_of)
        d.addCallback(lambda user: None if user is None else principal_of(user, via="token"))
        return d
