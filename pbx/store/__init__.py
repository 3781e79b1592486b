"""Storage for the PBX: interfaces with an in-memory and an SQLite provider each (the bottom layer).

Start with `ILocationStore` (the registrar's durable location service, RFC 3261 10.3) and its record types.
This package imports nothing from the rest of `pbx`; it knows nothing of SIP messages, policy or the global
reactor.
"""

from pbx.store.interfaces import (
    ICdrStore,
    IFeatureStore,
    ILocationStore,
    IVoicemailStore,
    StoreClosedError,
    StoreError,
)
from pbx.store.memory import MemoryLocationStore
from pbx.store.records import (
    Binding,
    BindingChange,
    Cdr,
    DeleteAor,
    DeleteBinding,
    ExtensionFeatures,
    PutBinding,
    VoicemailMessage,
)
from pbx.store.sqlite import SqliteLocationStore

__all__ = [
    "Cdr",
    "ICdrStore",
    "Binding",
    "BindingChange",
    "DeleteAor",
    "DeleteBinding",
    "ExtensionFeatures",
    "IFeatureStore",
    "ILocationStore",
    "IVoicemailStore",
    "VoicemailMessage",
    "MemoryLocationStore",
    "PutBinding",
    "SqliteLocationStore",
    "StoreClosedError",
    "StoreError",
]
