"""Phone features in the PBX's SQLite database: `IFeatureStore` for `SqliteLocationStore`.

One table, `extension_features`, created by the store's schema migration (`MIGRATION`, appended to
`pbx.store.sqlite._MIGRATIONS`): one row per extension whose owner pressed a feature code (docs/features.md),
with its do-not-disturb flag and the forwardings set by phone (NULL: never set, the config's applies; "":
turned off). Writes go through the store's group commit (`_run`), so a code's confirmation is spoken only
once the change is durable.

This module knows SQL only: nothing of feature codes, dialplans or the reactor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Final

from twisted.internet.defer import Deferred

from pbx.store.records import ExtensionFeatures

MIGRATION: Final[tuple[str, ...]] = (
    """
    CREATE TABLE IF NOT EXISTS extension_features (
        tenant TEXT NOT NULL,
        extension TEXT NOT NULL,
        dnd INTEGER NOT NULL,
        forward_all TEXT,
        forward_busy TEXT,
        forward_noanswer TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (tenant, extension)
    ) WITHOUT ROWID
    """,
)
"""The schema migration of `pbx.store.sqlite` that adds the phone features' table (self-contained)."""

_COLUMNS = "tenant, extension, dnd, forward_all, forward_busy, forward_noanswer, updated_at"
_UPSERT = f"INSERT OR REPLACE INTO extension_features ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_ALL = f"SELECT {_COLUMNS} FROM extension_features ORDER BY tenant, extension"


def _row(f: ExtensionFeatures) -> tuple[object, ...]:
    return (
        f.tenant, f.extension, int(f.dnd), f.forward_all, f.forward_busy, f.forward_noanswer, f.updated_at,
    )  # fmt: skip


def select_features(conn: sqlite3.Connection) -> list[ExtensionFeatures]:
    """Every row, by tenant and extension."""
    return [
        ExtensionFeatures(
            tenant=tenant,
            extension=extension,
            dnd=bool(dnd),
            forward_all=forward_all,
            forward_busy=forward_busy,
            forward_noanswer=forward_noanswer,
            updated_at=updated_at,
        )
        for tenant, extension, dnd, forward_all, forward_busy, forward_noanswer, updated_at in conn.execute(
            _ALL
        )
    ]


class SqliteFeatureStore:
    """`IFeatureStore` over the store's group commit (a mixin of `SqliteLocationStore`, which provides
    `_run`; the `implementer` declaration is there)."""

    _run: Callable[..., Deferred[Any]]

    def all_features(self) -> Deferred[list[ExtensionFeatures]]:
        """See `IFeatureStore.all_features`."""
        return self._run(select_features, weight=0)

    def save_features(self, features: ExtensionFeatures) -> Deferred[None]:
        """See `IFeatureStore.save_features`."""
        row = _row(features)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(_UPSERT, row)

        return self._run(write)
