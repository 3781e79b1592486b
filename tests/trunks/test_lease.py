"""`pbx.trunks.lease`: one node registers each trunk. Two nodes on one store (each with its own Clock, so
that one can die: its clock stops): the first to try takes the lease and registers, the other stands by
naming the holder; the holder renews; when it dies the other takes over once the lease lapsed; a holder that
gives up (stop, drain) unregisters and releases, and the other takes over at its next try; a holder that
cannot reach the store stands by before its lease can lapse. Then the same with the real
`TrunkRegistrations` against an in-memory carrier: REGISTERs come from the holder only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher

from pbx.service.trunks import build_trunks
from pbx.sip.stack import SipStack
from pbx.store import MemoryLocationStore
from pbx.store.trunk_lease import TrunkLease
from pbx.trunks.lease import TrunkLeases
from pbx.trunks.state import STANDBY
from tests.trunks.carrier import CarrierNet
from tests.trunks.test_service import config

T0 = 1_765_000_000.0
KEY = ("default", "carrier")


class FakeRegistrations:
    def __init__(self) -> None:
        self.leased: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, str | None]] = []

    def take(self, tenant: str, trunk: str, holder: str) -> None:
        self.calls.append(("take", holder))

    def standby(self, tenant: str, trunk: str, holder: str | None) -> Deferred[None]:
        self.calls.append(("standby", holder))
        return succeed(None)


class FlakyStore:
    """A memory store whose lease calls fail while `down`."""

    def __init__(self) -> None:
        self.inner = MemoryLocationStore()
        self.down = False

    def take_trunk_lease(self, *args: Any) -> Deferred[TrunkLease]:
        return fail(OSError("connection lost")) if self.down else self.inner.take_trunk_lease(*args)

    def release_trunk_lease(self, *args: Any) -> Deferred[None]:
        return fail(OSError("connection lost")) if self.down else self.inner.release_trunk_lease(*args)


def node(store: Any, name: str, **kwargs: Any) -> tuple[TrunkLeases, FakeRegistrations, Clock]:
    clock = Clock()
    clock.advance(T0)
    registrations = FakeRegistrations()
    leases = TrunkLeases(store, clock, registrations, [KEY], name, ttl=30.0, **kwargs)
    assert registrations.leased == {KEY}
    return leases, registrations, clock


def tick(seconds: float, *clocks: Clock) -> None:
    for clock in clocks:
        clock.advance(seconds)


def test_one_node_registers_the_other_stands_by_naming_it() -> None:
    store = MemoryLocationStore()
    a, ra, ca = node(store, "a:5071")
    b, rb, cb = node(store, "b:5072")
    assert a.renew == 10.0
    a.start()
    b.start()
    assert ra.calls == [("take", "a:5071")] and rb.calls == [("standby", "a:5071")]
    for _ in range(6):
        tick(10, ca, cb)
    assert set(ra.calls) == {("take", "a:5071")} and rb.calls == [("standby", "a:5071")]
    assert a.held == {KEY: T0 + 60 + 30} and b.holders == {KEY: "a:5071"} and b.held == {}
    assert store.trunk_leases().result == [TrunkLease("default", "carrier", "a:5071", T0 + 90)]
    a.give_up()
    b.give_up()
    assert ca.getDelayedCalls() == [] and cb.getDelayedCalls() == []


def test_the_other_takes_over_once_a_dead_holders_lease_lapsed() -> None:
    store = MemoryLocationStore()
    a, ra, ca = node(store, "a:5071")
    b, rb, cb = node(store, "b:5072")
    a.start()
    b.start()
    # a dies: its clock stops, it renews no more. Its lease (until T0 + 30) lapses; b's try at T0 + 30 wins.
    tick(20, cb)
    assert rb.calls == [("standby", "a:5071")]
    tick(10, cb)
    assert rb.calls == [("standby", "a:5071"), ("take", "b:5072")] and b.held == {KEY: T0 + 60}
    # a comes back (a frozen process): at its next try it sees b's lease and stands by.
    tick(10, ca)
    assert ra.calls == [("take", "a:5071"), ("standby", "b:5072")] and a.held == {}
    a.give_up()
    b.give_up()
    assert ca.getDelayedCalls() == [] and cb.getDelayedCalls() == []


def test_a_holder_giving_up_unregisters_releases_and_the_other_takes_over_at_its_next_try() -> None:
    store = MemoryLocationStore()
    a, ra, ca = node(store, "a:5071")
    b, rb, cb = node(store, "b:5072")
    a.start()
    b.start()
    tick(5, ca, cb)
    gave_up = a.give_up()
    assert gave_up.called and ra.calls[-1] == ("standby", None) and store.trunk_leases().result == []
    assert ca.getDelayedCalls() == []
    tick(5, cb)  # b's next try, 10 s after its first
    assert rb.calls[-1] == ("take", "b:5072")
    b.give_up()
    assert store.trunk_leases().result == [] and cb.getDelayedCalls() == []


def test_a_holder_that_cannot_renew_stands_by_before_its_lease_may_lapse() -> None:
    store = FlakyStore()
    a, ra, ca = node(store, "a:5071")
    logged: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        logged.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        a.start()
        store.down = True
        tick(10, ca)  # T0 + 10: renewing failed, but the next try (T0 + 20) is before T0 + 30
        assert ra.calls == [("take", "a:5071")] and a.held == {KEY: T0 + 30}
        tick(10, ca)  # T0 + 20: the try after (T0 + 30) would be too late
        assert ra.calls[-1] == ("standby", None) and a.held == {} and a.holders == {KEY: None}
        tick(10, ca)
        assert ra.calls[-1] == ("standby", None)
        store.down = False
        tick(10, ca)  # T0 + 40: the lease lapsed at T0 + 30 and nobody took it: a takes it again
        assert ra.calls[-1] == ("take", "a:5071")
    finally:
        globalLogPublisher.removeObserver(observe)
    assert sum("could not be taken or renewed" in line for line in logged) == 1
    assert any("readable again" in line for line in logged)
    a.give_up()
    assert ca.getDelayedCalls() == []


SETTINGS = {"carrier": {"host": "192.0.2.10", "register": True, "username": "1555", "password": "secret"}}


def pbx_node(tmp_path: Path, name: str, store: Any, carrier: Any) -> tuple[Any, TrunkLeases, CarrierNet, Any]:
    reactor = MemoryReactorClock()
    reactor.advance(T0)
    stack = SipStack(reactor)
    net = CarrierNet(stack)
    stack.attach_transport(net)
    net.carriers[("192.0.2.10", 5060)] = carrier
    (tmp_path / name).mkdir()
    trunks = build_trunks(config(tmp_path / name, SETTINGS), stack, reactor)  # type: ignore[arg-type]
    leases = TrunkLeases(store, reactor, trunks.registrations, [KEY], name, ttl=30.0)
    trunks.startService()
    leases.start()
    return trunks, leases, net, reactor


def step(seconds: float, *nodes: tuple[Any, TrunkLeases, CarrierNet, Any]) -> None:
    """Every node's clock forward by `seconds`, a second at a time, its network run after each."""
    for _ in range(int(seconds)):
        for _trunks, _leases, net, reactor in nodes:
            net.run()
            reactor.advance(1)
            net.run()


def registers(net: CarrierNet) -> int:
    return sum(1 for _t, _h, _p, data in net.sent if data.startswith(b"REGISTER "))


def test_with_real_registrations_only_the_holder_registers_and_the_other_takes_over(tmp_path: Path) -> None:
    store = MemoryLocationStore()
    from tests.trunks.carrier import Carrier

    carrier = Carrier()
    a = pbx_node(tmp_path, "a:5071", store, carrier)
    b = pbx_node(tmp_path, "b:5072", store, carrier)
    step(2, a, b)
    state_a, state_b = a[0].states.get(*KEY), b[0].states.get(*KEY)
    assert (state_a.registration, state_a.holder) == ("registered", "a:5071")
    assert (state_b.registration, state_b.holder, state_b.up) == (STANDBY, "a:5071", True)
    assert state_b.describe() == "standby (registered by a:5071)"
    assert registers(a[2]) >= 1 and registers(b[2]) == 0
    # a dies: b registers once a's lease has lapsed (T0 + 30, b's try then).
    step(31, b)
    state_b = b[0].states.get(*KEY)
    assert (state_b.registration, state_b.holder) == ("registered", "b:5072") and registers(b[2]) >= 1
    # b stops: it unregisters (Expires: 0) and releases its lease.
    stopped = b[1].give_up()
    step(1, b)
    assert stopped.called and store.trunk_leases().result == []
    assert carrier.registers()[-1].headers.get("Expires") == "0"
    assert b[0].states.get(*KEY).registration == STANDBY
    a[1].give_up()
    for trunks, _leases, net, _reactor in (a, b):
        trunks.stopService()
        net.run()


def lease_config(tmp_path: Path, store: dict[str, Any]) -> Any:
    from pbx.config import parse_config

    return parse_config(
        {
            "pbx": {"data_dir": str(tmp_path)},
            "sip": {"listen": [{"transport": "udp", "host": "127.0.0.1", "port": 5071}]},
            "store": store,
            "tenants": {"default": {"domain": "localhost", "trunks": SETTINGS}},
        },
        tmp_path,
    )


def test_the_service_is_built_for_a_shared_store_and_gives_up_before_a_drain(tmp_path: Path) -> None:
    from pbx.config import ConfigError
    from pbx.service.trunk_lease import build_trunk_leases

    reactor = MemoryReactorClock()
    reactor.advance(T0)
    stack = SipStack(reactor)
    store = MemoryLocationStore()
    shared = lease_config(tmp_path, {"url": "postgresql://pbx@db.example/pbx", "trunk_lease": 12})
    trunks = build_trunks(shared, stack, reactor)  # type: ignore[arg-type]
    assert build_trunk_leases(lease_config(tmp_path, {}), trunks, store, reactor) is None  # SQLite: one node
    off = lease_config(tmp_path, {"url": "postgresql://pbx@db.example/pbx", "trunk_lease": 0})
    assert build_trunk_leases(off, trunks, store, reactor) is None
    for bad in (1, -1, 3601, "30"):
        try:
            lease_config(tmp_path, {"url": "postgresql://pbx@db.example/pbx", "trunk_lease": bad})
        except ConfigError as e:
            assert "store.trunk_lease" in str(e)
        else:
            raise AssertionError(f"trunk_lease = {bad!r} accepted")
    leases = build_trunk_leases(shared, trunks, store, reactor)
    assert leases is not None and leases.leases.ttl == 12.0 and leases.leases.renew == 4.0
    assert leases.leases.node.endswith(":5071") and trunks.registrations.leased == {KEY}
    leases.startService()
    trunks.startService()
    assert store.trunk_leases().result == [TrunkLease("default", "carrier", leases.leases.node, T0 + 12)]
    drained: list[bool] = []
    drain = leases.before_drain(lambda: succeed(drained.append(True)))
    drain()
    assert drained == [True] and store.trunk_leases().result == []
    assert trunks.states.get(*KEY).registration == STANDBY
    assert leases.stopService().called
    trunks.stopService()
