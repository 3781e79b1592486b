"""`BruteForceGuard`: counting wrong digest answers per source and per account, blocking and unblocking on a
`task.Clock`, trusted networks, logging and counters, bounded memory."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from pbx.registrar import guard as guard_module
from pbx.registrar.guard import BruteForceGuard

ATTACKER = "192.0.2.66"
PHONE = "203.0.113.5"


def make_guard(**kwargs) -> tuple[BruteForceGuard, Clock]:
    clock = Clock()
    options = {"max_failures": 3, "window": 60.0, "block_duration": 600.0, "max_account_failures": 20}
    options.update(kwargs)
    return BruteForceGuard(clock, **options), clock


class SourceRuleTests(SynchronousTestCase):
    """`max_failures` failures from one source within `window` block it for `block_duration`."""

    def test_nothing_is_blocked_at_first(self) -> None:
        guard, _ = make_guard()
        self.assertFalse(guard.is_blocked(ATTACKER))
        self.assertEqual(guard.blocked_sources, [])
        self.assertEqual(guard.counters, {"failures": 0, "blocks": 0, "unblocks": 0, "dropped": 0})

    def test_the_nth_failure_blocks_the_source(self) -> None:
        guard, _ = make_guard()
        self.assertEqual([guard.failure(ATTACKER, "acme/1001") for _ in range(3)], [False, False, True])
        self.assertTrue(guard.is_blocked(ATTACKER))
        self.assertEqual(guard.blocked_sources, [ATTACKER])
        self.assertEqual((guard.counters["failures"], guard.counters["blocks"]), (3, 1))

    def test_one_failure_blocks_when_max_failures_is_one(self) -> None:
        guard, _ = make_guard(max_failures=1)
        self.assertTrue(guard.failure(ATTACKER, "acme/1001"))

    def test_failures_for_different_accounts_add_up_per_source(self) -> None:
        guard, _ = make_guard()
        for user in ("1001", "1002", "1003"):
            guard.failure(ATTACKER, f"acme/{user}")
        self.assertTrue(guard.is_blocked(ATTACKER))

    def test_failures_spread_beyond_the_window_never_block(self) -> None:
        guard, clock = make_guard()
        for _ in range(10):
            self.assertFalse(guard.failure(ATTACKER, "acme/1001"))
            clock.advance(30)  # at most two inside any 60 s
        self.assertFalse(guard.is_blocked(ATTACKER))
        self.assertEqual(guard.counters["blocks"], 0)

    def test_a_failure_exactly_one_window_old_no_longer_counts(self) -> None:
        guard, clock = make_guard()
        guard.failure(ATTACKER, "acme/1001")
        clock.advance(1)
        guard.failure(ATTACKER, "acme/1001")
        clock.advance(59)  # the first failure is now exactly 60 s old
        self.assertFalse(guard.failure(ATTACKER, "acme/1001"))
        clock.advance(0.5)
        self.assertTrue(guard.failure(ATTACKER, "acme/1001"))

    def test_other_sources_are_unaffected(self) -> None:
        guard, _ = make_guard()
        guard.failure(PHONE, "acme/1002")
        for _ in range(3):
            guard.failure(ATTACKER, "acme/1001")
        self.assertFalse(guard.is_blocked(PHONE))
        self.assertFalse(guard.is_blocked("192.0.2.67"))
        self.assertEqual(guard.blocked_sources, [ATTACKER])


class BlockDurationTests(SynchronousTestCase):
    """A block lasts exactly `block_duration`, then a fresh count starts."""

    def blocked(self, **kwargs) -> tuple[BruteForceGuard, Clock]:
        guard, clock = make_guard(**kwargs)
        for _ in range(3):
            guard.failure(ATTACKER, "acme/1001")
        return guard, clock

    def test_is_blocked_flips_back_after_block_duration(self) -> None:
        guard, clock = self.blocked()
        clock.advance(599)
        self.assertTrue(guard.is_blocked(ATTACKER))
        self.assertEqual(guard.blocked_sources, [ATTACKER])
        clock.advance(1)
        self.assertEqual(guard.blocked_sources, [])
        self.assertFalse(guard.is_blocked(ATTACKER))
        self.assertEqual(guard.counters["unblocks"], 1)
        self.assertFalse(guard.is_blocked(ATTACKER))
        self.assertEqual(guard.counters["unblocks"], 1)

    def test_block_duration_is_configurable(self) -> None:
        guard, clock = self.blocked(block_duration=30)
        clock.advance(29.5)
        self.assertTrue(guard.is_blocked(ATTACKER))
        clock.advance(0.5)
        self.assertFalse(guard.is_blocked(ATTACKER))

    def test_each_dropped_message_is_counted(self) -> None:
        guard, _ = self.blocked()
        for _ in range(4):
            guard.is_blocked(ATTACKER)
        guard.is_blocked(PHONE)
        self.assertEqual(guard.counters["dropped"], 4)

    def test_after_a_block_the_count_starts_again(self) -> None:
        guard, clock = self.blocked()
        clock.advance(600)
        self.assertFalse(guard.is_blocked(ATTACKER))
        self.assertFalse(guard.failure(ATTACKER, "acme/1001"))
        self.assertFalse(guard.failure(ATTACKER, "acme/1001"))
        self.assertTrue(guard.failure(ATTACKER, "acme/1001"))
        self.assertEqual(guard.counters["blocks"], 2)

    def test_failures_while_blocked_do_not_extend_or_recount_the_block(self) -> None:
        guard, clock = self.blocked()
        clock.advance(300)
        for _ in range(3):
            guard.failure(ATTACKER, "acme/1001")
        self.assertEqual(guard.counters["blocks"], 1)
        clock.advance(300)
        self.assertFalse(guard.is_blocked(ATTACKER))

    def test_failure_reports_a_source_that_is_still_blocked(self) -> None:
        guard, clock = self.blocked()
        clock.advance(300)
        self.assertTrue(guard.failure(ATTACKER, "acme/1001"))


class AccountRuleTests(SynchronousTestCase):
    """One account attacked from many addresses: past `max_account_failures`, failing sources are blocked."""

    def test_many_sources_against_one_account(self) -> None:
        guard, _ = make_guard(max_failures=10, max_account_failures=3)
        sources = [f"192.0.2.{n}" for n in range(6)]
        results = [guard.failure(source, "acme/1001") for source in sources]
        self.assertEqual(results, [False, False, False, True, True, True])
        self.assertEqual(guard.blocked_sources, sorted(sources[3:]))

    def test_a_source_that_already_failed_is_blocked_at_its_next_failure(self) -> None:
        guard, _ = make_guard(max_failures=10, max_account_failures=3)
        for n in range(4):
            guard.failure(f"192.0.2.{n}", "acme/1001")
        self.assertFalse(guard.is_blocked("192.0.2.0"))
        self.assertTrue(guard.failure("192.0.2.0", "acme/1001"))

    def test_accounts_are_counted_separately(self) -> None:
        guard, _ = make_guard(max_failures=10, max_account_failures=3)
        for n in range(3):
            guard.failure(f"192.0.2.{n}", "acme/1001")
        self.assertFalse(guard.failure("192.0.2.9", "globex/1001"))
        self.assertFalse(guard.failure("192.0.2.10", "acme/1002"))
        self.assertEqual(guard.blocked_sources, [])

    def test_account_failures_leave_the_window(self) -> None:
        guard, clock = make_guard(max_failures=10, max_account_failures=3)
        for n in range(3):
            guard.failure(f"192.0.2.{n}", "acme/1001")
        clock.advance(60)
        self.assertFalse(guard.failure("192.0.2.3", "acme/1001"))

    def test_a_phone_that_never_fails_is_not_blocked(self) -> None:
        guard, _ = make_guard(max_failures=10, max_account_failures=3)
        for n in range(10):
            guard.failure(f"192.0.2.{n}", "acme/1001")
        self.assertFalse(guard.is_blocked(PHONE))


class TrustedNetworkTests(SynchronousTestCase):
    """Sources in `trusted` networks are never blocked."""

    def test_trusted_ipv4_network(self) -> None:
        guard, _ = make_guard(trusted=["10.0.0.0/8"])
        for _ in range(10):
            self.assertFalse(guard.failure("10.1.2.3", "acme/1001"))
        self.assertFalse(guard.is_blocked("10.1.2.3"))
        self.assertEqual((guard.counters["failures"], guard.counters["blocks"]), (10, 0))

    def test_trusted_ipv6_network_and_host_bits_allowed(self) -> None:
        guard, _ = make_guard(trusted=["2001:db8::1/64", "192.0.2.7"])
        for _ in range(5):
            guard.failure("2001:db8::99", "acme/1001")
            guard.failure("192.0.2.7", "acme/1001")
        self.assertEqual(guard.blocked_sources, [])

    def test_sources_outside_the_trusted_networks_are_still_blocked(self) -> None:
        guard, _ = make_guard(trusted=["10.0.0.0/8"])
        for _ in range(3):
            guard.failure("11.0.0.1", "acme/1001")
        self.assertTrue(guard.is_blocked("11.0.0.1"))

    def test_a_source_that_is_not_an_address_is_not_trusted(self) -> None:
        guard, _ = make_guard(trusted=["10.0.0.0/8"])
        for _ in range(3):
            guard.failure("not-an-address", "acme/1001")
        self.assertTrue(guard.is_blocked("not-an-address"))

    def test_trusted_failures_do_not_block_under_the_account_rule(self) -> None:
        guard, _ = make_guard(max_account_failures=1, trusted=["10.0.0.0/8"])
        for n in range(5):
            self.assertFalse(guard.failure(f"10.0.0.{n}", "acme/1001"))


class LoggingTests(SynchronousTestCase):
    """Blocks and unblocks are logged (and counted, above)."""

    def test_block_and_unblock_are_logged(self) -> None:
        guard, clock = make_guard()
        with capturedLogs() as events:
            for _ in range(3):
                guard.failure(ATTACKER, "acme/1001")
            clock.advance(600)
            guard.is_blocked(ATTACKER)
        mine = [e for e in events if e.get("source") in (ATTACKER,)]
        self.assertEqual([e["log_level"] for e in mine], [LogLevel.warn, LogLevel.info])
        self.assertIn("Blocked {source}", mine[0]["log_format"])
        self.assertIn("3 failed authentications", mine[0]["reason"])
        self.assertEqual(mine[0]["duration"], 600)
        self.assertIn("Unblocked {source}", mine[1]["log_format"])

    def test_account_block_reason_names_the_account(self) -> None:
        guard, _ = make_guard(max_failures=10, max_account_failures=1)
        with capturedLogs() as events:
            guard.failure("192.0.2.1", "acme/1001")
            guard.failure("192.0.2.2", "acme/1001")
        (event,) = [e for e in events if e.get("source") == "192.0.2.2"]
        self.assertIn("account acme/1001 under attack", event["reason"])


class MemoryBoundTests(SynchronousTestCase):
    """Memory is bounded: the least recently failing sources are forgotten first."""

    def setUp(self) -> None:
        self.patch(guard_module, "_MAX_TRACKED", 3)

    def test_oldest_source_counts_are_evicted(self) -> None:
        guard, _ = make_guard(max_failures=2)
        guard.failure(ATTACKER, "acme/1001")
        for n in range(3):
            guard.failure(f"198.51.100.{n}", f"acme/{n}")
        # The attacker's first failure was forgotten: one more is not yet two.
        self.assertFalse(guard.failure(ATTACKER, "acme/1001"))
        self.assertTrue(guard.failure(ATTACKER, "acme/1001"))

    def test_a_recent_failure_keeps_a_source_tracked(self) -> None:
        guard, _ = make_guard(max_failures=3)
        guard.failure(ATTACKER, "acme/1001")
        guard.failure("198.51.100.0", "acme/0")
        guard.failure(ATTACKER, "acme/1001")  # moves the attacker to the young end
        guard.failure("198.51.100.1", "acme/1")
        guard.failure("198.51.100.2", "acme/2")
        self.assertTrue(guard.failure(ATTACKER, "acme/1001"))

    def test_expired_blocks_are_dropped_when_the_table_is_full(self) -> None:
        guard, clock = make_guard(max_failures=1)
        for n in range(4):
            guard.failure(f"198.51.100.{n}", "acme/x")
        clock.advance(600)
        for n in range(4, 8):
            guard.failure(f"198.51.100.{n}", "acme/y")
        self.assertLessEqual(len(guard._blocked), 4)
        self.assertEqual(guard.blocked_sources, [f"198.51.100.{n}" for n in range(4, 8)])
