"""`StatelessCache`: what a stateless UAS answered, for its requests' retransmissions (RFC 3261 8.2.7)."""

from __future__ import annotations

import time

import pytest
from twisted.internet.task import Clock

from pbx.sip.stateless_cache import StatelessCache


def test_hit_then_expiry_after_the_lifetime() -> None:
    clock = Clock()
    cache = StatelessCache(clock, lifetime=32.0, max_entries=10)
    cache.put(("b1",), b"401")
    clock.advance(31.9)
    assert cache.get(("b1",)) == b"401"
    clock.advance(0.1)
    assert cache.get(("b1",)) is None  # 64*T1 later the client has given up retransmitting
    assert (cache.hits, cache.misses, cache.expired, len(cache)) == (1, 1, 1, 0)
    assert clock.getDelayedCalls() == []  # expiry is checked on access: no timer


def test_bounded_the_oldest_go_first() -> None:
    clock = Clock()
    cache = StatelessCache(clock, max_entries=3)
    for i in range(5):
        cache.put((i,), i)
    assert len(cache) == 3 and cache.evicted == 2
    assert [cache.get((i,)) for i in range(5)] == [None, None, 2, 3, 4]


def test_put_forgets_expired_entries_from_the_old_end() -> None:
    clock = Clock()
    cache = StatelessCache(clock, lifetime=1.0, max_entries=100)
    for i in range(5):
        cache.put((i,), i)
    clock.advance(2.0)
    cache.put(("new",), "x")
    assert len(cache) == 1 and cache.expired == 5 and cache.evicted == 0
    cache.put(("new",), "y")  # replacing keeps one entry
    assert len(cache) == 1 and cache.get(("new",)) == "y"
    cache.clear()
    assert len(cache) == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        StatelessCache(Clock(), lifetime=0)
    with pytest.raises(ValueError):
        StatelessCache(Clock(), max_entries=0)


def test_cost_of_a_hit_and_a_put_stays_small() -> None:
    """The cost measured (a loose bound, for slow CI machines): a hit or a put at the cap is a few
    microseconds; printed with -s. The stack's full cost of a retransmission is in bench/overload_bench.py."""
    clock = Clock()
    cache = StatelessCache(clock, max_entries=4096)
    keys = [(f"z9hG4bK{i}", "192.0.2.1", 5060, "REGISTER", ("192.0.2.1", 5060)) for i in range(8192)]
    started = time.perf_counter()
    for key in keys:
        cache.put(key, b"x" * 400)
    put = (time.perf_counter() - started) / len(keys)
    started = time.perf_counter()
    for key in keys[-4096:]:
        assert cache.get(key) is not None
    hit = (time.perf_counter() - started) / 4096
    print(f"stateless cache: put {put * 1e6:.2f} us, hit {hit * 1e6:.2f} us")
    assert len(cache) == 4096
    assert put < 50e-6 and hit < 50e-6


def test_discard_forgets_one_answer() -> None:
    cache = StatelessCache(Clock())
    cache.put(("a",), 1)
    cache.put(("b",), 2)
    cache.discard(("a",))
    cache.discard(("never",))
    assert len(cache) == 1 and cache.get(("a",)) is None and cache.get(("b",)) == 2
