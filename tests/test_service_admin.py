"""`pbx.service.admin`: the console is built only when `[admin] listen` is set, listens where it says (TLS
with a certificate), and the extension directory loads the store's rows at start."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from twisted.internet.testing import MemoryReactorClock

from pbx.admin.api import api_routes
from pbx.admin.openapi import OPENAPI
from pbx.config import parse_config
from pbx.service.admin import build_admin, build_extensions
from pbx.store import MemoryLocationStore
from pbx.store.admin import StoredExtension
from tests.config.test_config import data
from tests.sip.tls_material import make_pair


class FakeThreadReactor(MemoryReactorClock):
    def getThreadPool(self) -> None:
        return None


def services(config, store):
    extensions = build_extensions(config)
    extensions.directory.attach(store)
    registrar = SimpleNamespace(store=store, location=[])
    calls = SimpleNamespace(b2bua=SimpleNamespace(calls={}), dialplans=None)
    return extensions, registrar, calls


def test_off_without_listen(tmp_path: Path) -> None:
    config = parse_config(data(), tmp_path)
    extensions, registrar, calls = services(config, MemoryLocationStore())
    assert (
        build_admin(config, FakeThreadReactor(), extensions.directory, registrar=registrar, calls=calls)
        is None
    )


def test_listens_on_the_configured_address(tmp_path: Path) -> None:
    config = parse_config(data(admin={"listen": "127.0.0.1:8089"}), tmp_path)
    reactor = FakeThreadReactor()
    extensions, registrar, calls = services(config, MemoryLocationStore())
    admin = build_admin(config, reactor, extensions.directory, registrar=registrar, calls=calls)
    assert admin is not None
    admin.startService()
    [(port, _factory, _backlog, interface)] = reactor.tcpServers
    assert (port, interface) == (8089, "127.0.0.1")
    admin.stopService()


def test_tls_with_a_certificate(tmp_path: Path) -> None:
    cert, key = make_pair()
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    table = {"listen": "[::1]:8443", "certificate": "c.pem", "private_key": "k.pem"}
    config = parse_config(data(admin=table), tmp_path)
    reactor = FakeThreadReactor()
    extensions, registrar, calls = services(config, MemoryLocationStore())
    admin = build_admin(config, reactor, extensions.directory, registrar=registrar, calls=calls)
    assert admin is not None and admin.app.secure and admin.app.cookie == "__Host-pbx_session"
    admin.startService()
    [(port, _factory, _context, _backlog, interface)] = reactor.sslServers
    assert (port, interface) == (8443, "::1")
    admin.stopService()


def test_store_extensions_are_loaded_at_start(tmp_path: Path) -> None:
    config = parse_config(data(), tmp_path)
    store = MemoryLocationStore()
    store.put_extension(StoredExtension(tenant="default", number="1077", ha1_md5="ab" * 16))
    extensions, _, _ = services(config, store)
    extensions.startService()
    assert extensions.ready.called
    assert "1077" in extensions.directory.directory("default").extensions


def test_every_api_route_is_in_the_openapi_document() -> None:
    app = SimpleNamespace(view=None)
    paths = OPENAPI["paths"]
    for r in api_routes(app):  # type: ignore[arg-type]
        template = r.pattern.pattern.strip("^$").replace("\\", "")
        template = __import__("re").sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", template)
        assert template in paths, template
        assert r.method.lower() in paths[template] or template == "/api/v1/openapi.json", (r.method, template)
