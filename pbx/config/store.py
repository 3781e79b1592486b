"""`[store]`: where the PBX keeps its durable state (registrations, CDRs, the voicemail index).

Without `url` (the default) that is the embedded SQLite file `pbx.data_dir/pbx.sqlite3`; with
`url = "postgresql://user:password@host:port/database"` it is a PostgreSQL database that several PBX
processes may share (`pbx.store.postgres`). Documented in docs/configuration.md and docs/scaling.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STORE_KEYS = ("url", "trunk_lease")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The `[store]` table; `url` "" means the embedded SQLite file."""

    url: str = field(default="", repr=False)  # may hold a password
    trunk_lease: float = 30.0
    """Seconds a node's lease on a trunk's registration lasts (a PostgreSQL store: one node registers each
    trunk, `pbx.trunks.lease`); 0: every node registers every trunk."""

    @property
    def postgresql(self) -> bool:
        return bool(self.url)
