"""`ExtensionDirectory`: the configuration's extensions overlaid with the store's, as the registrar's digest
check and the B2BUA's directory read them."""

from __future__ import annotations

import pytest

from pbx.admin.extensions import ExtensionDirectory, ExtensionProblem, TenantSeed
from pbx.sip.digest import ha1
from pbx.store import MemoryLocationStore
from pbx.store.admin import StoredExtension
from tests.admin.console_fakes import FakeExtension

REALM = "acme.example"


def make(store: MemoryLocationStore | None = None) -> ExtensionDirectory:
    digest_only = FakeExtension("1002", "Bob", password=None, ha1_md5="ab" * 16)
    seed = TenantSeed(
        "acme", "acme.example", REALM, {"1001": FakeExtension("1001", "Alice"), "1002": digest_only}
    )
    return ExtensionDirectory([seed], store, lambda: 42.0)


def test_the_config_alone() -> None:
    directory = make()
    assert directory.ha1("1001", REALM, "MD5") == ha1("1001", REALM, "secret-1001", "MD5")
    assert directory.ha1("1001", REALM, "SHA-256") == ha1("1001", REALM, "secret-1001", "SHA-256")
    assert directory.ha1("1002", REALM, "MD5") == "ab" * 16
    assert directory.ha1("1002", REALM, "SHA-256") is None  # no such digest configured
    assert directory.ha1("1001", "other.realm", "MD5") is None
    assert directory.ha1("9999", REALM, "MD5") is None
    assert sorted(directory.directory("acme").extensions) == ["1001", "1002"]
    assert directory.directory("nope") is None
    assert [e["source"] for e in directory.extensions("acme")] == ["config", "config"]


def test_store_rows_override_and_tombstones_hide() -> None:
    store = MemoryLocationStore()
    store.put_extension(StoredExtension(tenant="acme", number="1001", name="Alice B", ha1_md5="cd" * 16))
    store.put_extension(StoredExtension(tenant="acme", number="1002", deleted=True))
    store.put_extension(StoredExtension(tenant="acme", number="1003", name="Carol", ha1_md5="ef" * 16))
    store.put_extension(
        StoredExtension(tenant="gone", number="1", ha1_md5="00" * 16)
    )  # unknown tenant: ignored
    directory = make(store)
    before = directory.directory("acme")
    assert directory.load().result == 4
    after = directory.directory("acme")
    assert after is not before  # the B2BUA sees a new directory object
    assert sorted(after.extensions) == ["1001", "1003"]
    assert after.extensions["1001"].name == "Alice B"
    assert directory.ha1("1001", REALM, "MD5") == "cd" * 16
    assert directory.ha1("1002", REALM, "MD5") is None
    assert {e["number"]: e["source"] for e in directory.extensions("acme")} == {
        "1001": "console",
        "1003": "console",
    }


def test_changes_are_written_to_the_store() -> None:
    store = MemoryLocationStore()
    directory = make(store)
    directory.add("acme", "1004", {"name": "Dan", "may_call_out": True}, "pass-1004")
    [row] = store.stored_extensions().result
    assert (row.number, row.name, row.may_call_out, row.realm, row.updated_at) == (
        "1004",
        "Dan",
        True,
        REALM,
        42.0,
    )
    assert row.ha1_md5 == ha1("1004", REALM, "pass-1004", "MD5")
    directory.change("acme", "1002", {"forward_all": "1001"})
    assert directory.get("acme", "1002")["forward_all"] == "1001"
    assert directory.ha1("1002", REALM, "MD5") == "ab" * 16  # the configured digest is kept
    directory.remove("acme", "1004")
    directory.remove("acme", "1001")
    assert sorted((r.number, r.deleted) for r in store.stored_extensions().result) == [
        ("1001", True),
        ("1002", False),
    ]
    fresh = make(store)
    fresh.load()
    assert sorted(fresh.directory("acme").extensions) == ["1002"]


@pytest.mark.parametrize(
    ("number", "values", "password", "message"),
    [
        ("1001", {}, "pass-word-1", "exists"),
        ("bad number", {}, "pass-word-1", "number"),
        ("1005", {}, "short", "password"),
        ("1005", {"srtp": "always"}, "pass-word-1", "srtp"),
        ("1005", {"ring_timeout": 9999}, "pass-word-1", "ring_timeout"),
        ("1005", {"forward_all": "1001; hangup"}, "pass-word-1", "forward_all"),
        ("1005", {"name": 'a"b'}, "pass-word-1", "name"),
        ("1005", {"password_hash": "x"}, "pass-word-1", "unknown field"),
    ],
)
def test_bad_values_are_refused(number: str, values: dict, password: str, message: str) -> None:
    with pytest.raises(ExtensionProblem, match=message):
        make().add("acme", number, values, password)


def test_what_the_console_does_not_edit_stays_from_the_config() -> None:
    """Outbound classes and pickup groups of a configured extension survive a console edit (toll fraud and
    pickup keep working); an extension the console adds gets the defaults."""
    from pbx.b2bua import ExtensionInfo

    store = MemoryLocationStore()
    store.put_extension(StoredExtension(tenant="acme", number="1001", name="Alice B", ha1_md5="cd" * 16))
    store.put_extension(StoredExtension(tenant="acme", number="1003", name="Carol", ha1_md5="ef" * 16))
    base = ExtensionInfo(
        number="1001", name="Alice", outbound_classes=("international",), pickup_groups=("front",)
    )
    seed = TenantSeed(
        "acme", "acme.example", REALM, {"1001": FakeExtension("1001", "Alice")}, base={"1001": base}
    )
    directory = ExtensionDirectory([seed], store, lambda: 42.0)
    assert directory.directory("acme").extensions["1001"].outbound_classes == ("international",)
    directory.load()
    alice = directory.directory("acme").extensions["1001"]
    assert (alice.name, alice.outbound_classes, alice.pickup_groups) == (
        "Alice B",
        ("international",),
        ("front",),
    )
    carol = directory.directory("acme").extensions["1003"]
    assert (carol.outbound_classes, carol.pickup_groups) == ((), ())
