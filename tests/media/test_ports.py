"""Tests for `pbx.media.ports`: even RTP ports with RTCP on N + 1, round-robin reuse, exhaustion."""

from __future__ import annotations

import errno

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import CannotListenError
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.ports import PortPool, PortsExhausted, out_of_resources


class PortPoolTests(SynchronousTestCase):
    def test_hands_out_even_ports_whose_rtcp_port_is_in_range(self) -> None:
        """An odd start rounds up; the last pair must fit: 10001-10008 holds 10002, 10004 and 10006."""
        pool = PortPool(10001, 10008)
        self.assertEqual((pool.capacity, pool.available, pool.in_use), (3, 3, 0))
        self.assertEqual([pool.allocate() for _ in range(3)], [10002, 10004, 10006])
        self.assertEqual((pool.available, pool.in_use), (0, 3))

    def test_exhausted_until_a_port_comes_back(self) -> None:
        pool = PortPool(20000, 20003)
        first, second = pool.allocate(), pool.allocate()
        self.assertEqual((first, second), (20000, 20002))
        self.assertRaises(PortsExhausted, pool.allocate)
        pool.release(first)
        self.assertEqual(pool.allocate(), first)

    def test_round_robin_a_released_port_is_handed_out_last(self) -> None:
        """Late packets of the previous call must not reach the next one: no immediate reuse."""
        pool = PortPool(30000, 30009)  # 30000 .. 30008
        port = pool.allocate()
        pool.release(port)
        handed = [pool.allocate() for _ in range(pool.available)]
        self.assertEqual(handed, [30002, 30004, 30006, 30008, 30000])

    def test_release_of_a_port_not_allocated_is_an_error(self) -> None:
        pool = PortPool(10000, 10100)
        self.assertRaises(ValueError, pool.release, 10000)
        port = pool.allocate()
        pool.release(port)
        self.assertRaises(ValueError, pool.release, port)  # double release
        self.assertRaises(ValueError, pool.release, 10001)  # an RTCP port
        self.assertEqual((pool.available, pool.in_use), (pool.capacity, 0))

    def test_bad_ranges(self) -> None:
        for start, end in [(0, 100), (100, 99), (60000, 70000), (10000, 10000), (10001, 10002)]:
            with self.subTest(start=start, end=end):
                self.assertRaises(ValueError, PortPool, start, end)
        self.assertEqual(PortPool(65534, 65535).capacity, 1)


@given(st.lists(st.booleans(), max_size=200))
def test_allocations_are_unique_and_counts_add_up(steps: list[bool]) -> None:
    """Any sequence of allocate (True) and release of the oldest allocation (False) keeps the invariants."""
    pool = PortPool(40000, 40019)
    held: list[int] = []
    for allocate in steps:
        if allocate:
            if pool.available:
                port = pool.allocate()
                assert port % 2 == 0 and 40000 <= port < 40019
                assert port not in held
                held.append(port)
            else:
                try:
                    pool.allocate()
                except PortsExhausted:
                    pass
                else:
                    raise AssertionError("allocate() on an empty pool must raise")
        elif held:
            pool.release(held.pop(0))
        assert pool.in_use == len(held)
        assert pool.available + pool.in_use == pool.capacity == 10


class OutOfResourcesTests(SynchronousTestCase):
    def test_descriptors_and_memory_are_resources_a_taken_port_is_not(self) -> None:
        for code in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            self.assertTrue(out_of_resources(CannotListenError("", 10000, OSError(code, "x"))))
            self.assertTrue(out_of_resources(OSError(code, "x")))
        for code in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            self.assertFalse(out_of_resources(CannotListenError("", 10000, OSError(code, "x"))))
        self.assertFalse(out_of_resources(ValueError("x")))
