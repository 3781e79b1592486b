"""`IAdminStore` in memory: a mixin of `pbx.store.memory.MemoryLocationStore` (tests; no durability)."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from pbx.store.admin import AdminUser, ApiToken, StoredExtension


class MemoryAdminStore:
    """Users, tokens and stored extensions in dicts; every Deferred has fired when returned."""

    def _admin_tables(
        self,
    ) -> tuple[dict[str, AdminUser], dict[str, ApiToken], dict[tuple[str, str], StoredExtension]]:
        tables = self.__dict__.get("_admin")
        if tables is None:
            tables = self.__dict__["_admin"] = ({}, {}, {})
        return tables

    def admin_users(self) -> Deferred[list[AdminUser]]:
        """See `IAdminStore.admin_users`."""
        users = self._admin_tables()[0]
        return succeed([users[name] for name in sorted(users)])

    def admin_user(self, name: str) -> Deferred[AdminUser | None]:
        """See `IAdminStore.admin_user`."""
        return succeed(self._admin_tables()[0].get(name))

    def put_admin_user(self, user: AdminUser) -> Deferred[None]:
        """See `IAdminStore.put_admin_user`."""
        self._admin_tables()[0][user.name] = user
        return succeed(None)

    def delete_admin_user(self, name: str) -> Deferred[bool]:
        """See `IAdminStore.delete_admin_user`."""
        users, tokens, _ = self._admin_tables()
        for key in [k for k, t in tokens.items() if t.user == name]:
            del tokens[key]
        return succeed(users.pop(name, None) is not None)

    def api_token(self, token_hash: str) -> Deferred[ApiToken | None]:
        """See `IAdminStore.api_token`."""
        return succeed(self._admin_tables()[1].get(token_hash))

    def put_api_token(self, token: ApiToken) -> Deferred[None]:
        """See `IAdminStore.put_api_token`."""
        self._admin_tables()[1][token.token_hash] = token
        return succeed(None)

    def stored_extensions(self) -> Deferred[list[StoredExtension]]:
        """See `IAdminStore.stored_extensions`."""
        extensions = self._admin_tables()[2]
        return succeed([extensions[key] for key in sorted(extensions)])

    def put_extension(self, extension: StoredExtension) -> Deferred[None]:
        """See `IAdminStore.put_extension`."""
        self._admin_tables()[2][(extension.tenant, extension.number)] = extension
        return succeed(None)

    def delete_stored_extension(self, tenant: str, number: str) -> Deferred[None]:
        """See `IAdminStore.delete_stored_extension`."""
        self._admin_tables()[2].pop((tenant, number), None)
        return succeed(None)
