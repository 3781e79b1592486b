"""The base of the store contract suites: a mixin run once per store implementation (memory, SQLite,
PostgreSQL), each subclass naming its store in `make_store`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.trial.unittest import TestCase

if TYPE_CHECKING:
    _MixinBase = TestCase
else:
    _MixinBase = object


class StoreContract(_MixinBase):
    """`self.store` is a fresh store for each test, closed after it; a subclass provides `make_store`."""

    store: Any

    def make_store(self) -> Any:
        raise NotImplementedError

    def setUp(self) -> None:
        self.store = self.make_store()
        self.addCleanup(lambda: self.store.close())
