"""Issue 14: an INVITE whose credentials name a user that does not exist counts towards the brute-force guard
exactly like a wrong password, and the answers to both are the same (nothing to tell them apart by)."""

from __future__ import annotations

from twisted.internet.task import Clock

from pbx.registrar import BruteForceGuard
from tests.b2bua.fakes import FakeFlow
from tests.b2bua.test_b2bua import B2BUATestCase, statuses


class UnknownUserGuardTests(B2BUATestCase):
    def guarded(self) -> tuple[BruteForceGuard, object]:
        guard = BruteForceGuard(Clock(), max_failures=3, window=60, block_duration=600)
        return guard, self.build("dial 1002", guard=guard)

    def attempt(self, h: object, user: str, password: str, source: str) -> list[int]:
        phone = h.caller(user=user, password=password, flow=FakeFlow(remote_address=(source, 5060)))  # type: ignore[attr-defined]
        first = phone.send_invite()
        assert first.final is not None
        return statuses(phone.send_invite(phone.credentials(first.final)))

    def test_unknown_users_are_blocked_like_wrong_passwords(self) -> None:
        guard, h = self.guarded()
        self.assertEqual([self.attempt(h, f"77{n}", "guess", "192.0.2.66") for n in range(3)], [[407]] * 3)
        self.assertTrue(guard.is_blocked("192.0.2.66"))
        for _ in range(3):
            self.attempt(h, "1001", "guess", "192.0.2.67")
        self.assertTrue(guard.is_blocked("192.0.2.67"))
        self.assertEqual(guard.counters["failures"], 6)
        self.assertEqual(guard.counters["blocks"], 2)

    def test_observers_hear_of_each_block_once(self) -> None:
        guard, h = self.guarded()
        heard: list[tuple[str, float, str]] = []
        guard.observers.append(lambda *args: heard.append(args))
        for n in range(4):
            self.attempt(h, f"77{n}", "guess", "192.0.2.66")
        self.assertEqual(heard, [("192.0.2.66", 600.0, "3 failed authentications in 60 s")])
