"""Unit tests of the console's security pieces: password hashing, sessions, CSRF tokens, roles, lock-out."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.admin.auth import LockedOut, Logins, Principal, Sessions, csrf_ok
from pbx.admin.passwords import hash_password, new_token, password_problem, token_hash, verify_password
from pbx.store import MemoryLocationStore
from pbx.store.admin import AdminUser
from tests.admin.console_fakes import fast_hash


class PasswordTests(SynchronousTestCase):
    def test_hash_is_salted_scrypt_and_verifies(self) -> None:
        first, second = (
            hash_password("correct horse", n=16, r=1, p=1),
            hash_password("correct horse", n=16, r=1, p=1),
        )
        self.assertTrue(first.startswith("scrypt$16$1$1$"))
        self.assertNotEqual(first, second)  # a new salt each time
        self.assertTrue(verify_password("correct horse", first))
        self.assertFalse(verify_password("correct horsE", first))

    def test_default_cost(self) -> None:
        self.assertTrue(hash_password("x" * 8).startswith("scrypt$16384$8$1$"))

    def test_malformed_hashes_never_verify(self) -> None:
        for stored in (
            "",
            "plain",
            "scrypt$16$1$1$zz$00",
            "scrypt$1$1$1$00$" + "00" * 32,
            "md5$abc",
            "scrypt$16$1$1$00$00",
        ):
            self.assertFalse(verify_password("x", stored), stored)

    def test_password_rules_and_tokens(self) -> None:
        self.assertIsNotNone(password_problem("short"))
        self.assertIsNone(password_problem("long enough"))
        token = new_token()
        self.assertTrue(token.startswith("pbx_") and len(token) > 40)
        self.assertEqual(len(token_hash(token)), 64)
        self.assertNotEqual(token_hash(token), token_hash(new_token()))


class RoleTests(SynchronousTestCase):
    def test_admin_sees_and_changes_everything(self) -> None:
        admin = Principal("root", "admin")
        self.assertTrue(admin.can_see("a") and admin.can_change("b") and admin.is_admin)
        self.assertEqual(admin.tenants(["a", "b"]), ["a", "b"])

    def test_tenant_admin_only_its_tenant(self) -> None:
        ann = Principal("ann", "tenant_admin", "a")
        self.assertTrue(ann.can_see("a") and ann.can_change("a"))
        self.assertFalse(ann.can_see("b") or ann.can_change("b") or ann.is_admin)
        self.assertEqual(ann.tenants(["a", "b"]), ["a"])

    def test_viewer_reads_only(self) -> None:
        everywhere, one = Principal("v", "viewer"), Principal("w", "viewer", "b")
        self.assertTrue(everywhere.can_see("a") and everywhere.can_see("b"))
        self.assertFalse(everywhere.can_change("a"))
        self.assertEqual(one.tenants(["a", "b"]), ["b"])
        self.assertFalse(one.can_change("b"))

    def test_unknown_role_sees_nothing(self) -> None:
        self.assertFalse(Principal("x", "superuser").can_see("a"))


class SessionTests(SynchronousTestCase):
    def test_random_ids_sliding_expiry_and_logout(self) -> None:
        clock = Clock()
        sessions = Sessions(clock, lifetime=100)
        one, two = sessions.create(Principal("a", "admin")), sessions.create(Principal("a", "admin"))
        self.assertNotEqual(one.id, two.id)
        self.assertGreaterEqual(len(one.id), 40)
        self.assertNotEqual(one.csrf, two.csrf)
        clock.advance(99)
        self.assertIs(sessions.get(one.id), one)  # used: lives another 100 s
        clock.advance(99)
        self.assertIs(sessions.get(one.id), one)
        self.assertIsNone(sessions.get(two.id))  # unused for 198 s: gone
        sessions.end(one.id)
        self.assertIsNone(sessions.get(one.id))
        self.assertIsNone(sessions.get("made-up"))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_purge_and_end_user(self) -> None:
        clock = Clock()
        sessions = Sessions(clock, lifetime=10)
        sessions.create(Principal("a", "admin"))
        kept = sessions.create(Principal("b", "admin"))
        sessions.end_user("a")
        self.assertEqual(len(sessions), 1)
        clock.advance(11)
        self.assertEqual(sessions.purge(), 1)
        self.assertIsNone(sessions.get(kept.id))

    def test_csrf_compare(self) -> None:
        session = Sessions(Clock()).create(Principal("a", "admin"))
        self.assertTrue(csrf_ok(session, session.csrf))
        self.assertFalse(csrf_ok(session, None))
        self.assertFalse(csrf_ok(session, ""))
        self.assertFalse(csrf_ok(session, session.csrf + "x"))


class LoginTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryLocationStore()
        self.store.put_admin_user(
            AdminUser(name="ann", password_hash=fast_hash("ann-password"), role="tenant_admin", tenant="a")
        )
        self.logins = Logins(self.store, self.clock, max_failures=3, window=60, lockout=300)

    def test_right_password(self) -> None:
        principal = self.successResultOf(self.logins.login("ann", "ann-password", "192.0.2.1"))
        self.assertEqual(principal, Principal("ann", "tenant_admin", "a"))

    def test_wrong_password_or_name(self) -> None:
        self.assertIsNone(self.successResultOf(self.logins.login("ann", "wrong", "192.0.2.1")))
        self.assertIsNone(self.successResultOf(self.logins.login("bob", "ann-password", "192.0.2.1")))

    def test_lock_out_and_release(self) -> None:
        for _ in range(2):
            self.assertIsNone(self.successResultOf(self.logins.login("ann", "wrong", "192.0.2.1")))
        self.failureResultOf(self.logins.login("ann", "wrong", "192.0.2.1"), LockedOut)
        self.failureResultOf(self.logins.login("ann", "ann-password", "192.0.2.1"), LockedOut)
        self.assertIsNotNone(self.successResultOf(self.logins.login("ann", "ann-password", "192.0.2.2")))
        self.clock.advance(301)
        self.assertIsNotNone(self.successResultOf(self.logins.login("ann", "ann-password", "192.0.2.1")))

    def test_failures_outside_the_window_do_not_add_up(self) -> None:
        for _ in range(5):
            self.assertIsNone(self.successResultOf(self.logins.login("ann", "wrong", "192.0.2.1")))
            self.clock.advance(31)
        self.assertIsNotNone(self.successResultOf(self.logins.login("ann", "ann-password", "192.0.2.1")))
