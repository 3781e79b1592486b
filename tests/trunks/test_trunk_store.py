"""`pbx.service.trunk_store`: the trunks' live state written to the store, one row per (tenant, trunk,
node), at start and on each change a row shows; a failing store is logged once and written again later."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher

from pbx.service.trunk_store import build_trunk_store, node_name
from pbx.service.trunks import build_trunks
from pbx.sip.stack import SipStack
from pbx.store import MemoryLocationStore
from pbx.trunks.state import TrunkStates
from tests.trunks.carrier import CarrierNet, advance
from tests.trunks.test_service import config

SETTINGS = {
    "carrier": {"host": "192.0.2.10", "register": True, "username": "1555", "password": "secret"},
    "ip": {"host": "192.0.2.20", "dids": ["+15550001"]},
}


def test_every_trunk_state_reaches_the_store_under_this_node(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    reactor.advance(1_765_000_000)
    stack = SipStack(reactor)
    net = CarrierNet(stack)
    stack.attach_transport(net)
    net.add("192.0.2.10")
    cfg = config(tmp_path, SETTINGS)
    trunks = build_trunks(cfg, stack, reactor)  # type: ignore[arg-type]
    store = MemoryLocationStore()
    writer = build_trunk_store(cfg, trunks.states, store, reactor)  # type: ignore[arg-type]
    assert writer is not None and writer.node == node_name(cfg) == node_name(cfg, None)  # type: ignore[arg-type]
    assert node_name(cfg, "pbx1") == "pbx1:5060"  # type: ignore[arg-type]
    trunks.startService()
    writer.startService()
    rows = store.trunk_statuses().result
    assert [(r.trunk, r.state, r.node) for r in rows] == [
        ("carrier", "registering", writer.node),
        ("ip", "up", writer.node),
    ]
    advance(net, reactor, 1)
    carrier = store.trunk_statuses().result[0]
    assert (carrier.state, carrier.code, carrier.registration) == ("registered", 200, "registered")
    assert carrier.expires_at is not None and carrier.expires_at > reactor.seconds()
    assert carrier.contact and "1555@" in carrier.contact
    assert 1_765_000_000 <= carrier.updated_at <= reactor.seconds()
    writer.stopService()
    trunks.stopService()
    advance(net, reactor, 1)


def test_unchanged_rows_are_not_written_again_and_failures_are_logged_once(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    states = TrunkStates(reactor)
    states.add("default", "ip")
    calls: list[object] = []
    answers = [fail(RuntimeError("database down")), fail(RuntimeError("database down")), succeed(None)]

    class Store(MemoryLocationStore):
        def save_trunk_status(self, status):  # type: ignore[no-untyped-def]
            calls.append(status)
            return answers.pop(0) if answers else succeed(None)

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        writer = build_trunk_store(config(tmp_path, {}), states, Store(), reactor)  # type: ignore[arg-type]
        assert writer is not None
        writer.startService()  # fails
        reactor.advance(5)
        states.update(
            "default", "ip", target="udp 192.0.2.20:5060"
        )  # not in a row, but the last write failed
        states.update("default", "ip", reachable=False, ping_code=408)  # fails again: no second warning
        states.update("default", "ip", reachable=True, ping_code=200)  # written
        states.update("default", "ip", target="udp 192.0.2.21:5060")  # nothing a row shows: not written
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert len(calls) == 4 and calls[-1].reachable is True  # type: ignore[attr-defined]
    warnings = [formatEvent(e) for e in events if "could not be written" in formatEvent(e)]
    assert warnings == ["Trunk default/ip: its state could not be written to the store: database down"]


def test_no_trunks_no_writer(tmp_path: Path) -> None:
    assert (
        build_trunk_store(
            config(tmp_path, {}), TrunkStates(MemoryReactorClock()), MemoryLocationStore(), None
        )
        is None
    )
