"""`LocationService`: expiry on a `task.Clock` at exactly the right time, refreshes, lookup order, rebuilding
from a store, removal listeners, one timer for all bindings, and memory per binding."""

from __future__ import annotations

import gc
import tracemalloc

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.registrar import LocationService
from pbx.store import Binding, DeleteAor, DeleteBinding, MemoryLocationStore, PutBinding

from .fakes import SlowLocationStore, binding


def make_location(store=None) -> tuple[LocationService, Clock, MemoryLocationStore]:
    clock = Clock()
    store = store if store is not None else MemoryLocationStore()
    return LocationService(clock, store), clock, store


def put(location: LocationService, *bindings: Binding) -> None:
    by_aor: dict[tuple[str, str], list[Binding]] = {}
    for b in bindings:
        by_aor.setdefault((b.tenant, b.aor), []).append(b)
    for (tenant, aor), puts in by_aor.items():
        location.apply(tenant, aor, puts, ())


class ExpiryTests(SynchronousTestCase):
    """A binding is gone at, and not before, its `expires_at`."""

    def test_binding_expires_at_exactly_its_expiry(self) -> None:
        location, clock, _ = make_location()
        put(location, binding(expires_at=100))
        clock.advance(99.999)
        self.assertEqual(len(location.lookup("acme", "1001")), 1)
        self.assertEqual(len(location), 1)
        clock.advance(0.001)
        self.assertEqual(location.lookup("acme", "1001"), [])
        self.assertEqual(location.contacts("acme", "1001"), {})
        self.assertEqual(len(location), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lookup_hides_an_expired_binding_even_before_the_timer_runs(self) -> None:
        location, clock, _ = make_location()
        put(location, binding(expires_at=100))
        clock.rightNow = 100.0  # time moved, the timer has not run yet
        self.assertEqual(location.lookup("acme", "1001"), [])
        self.assertEqual(len(location.contacts("acme", "1001")), 1)  # "may linger briefly"

    def test_refresh_moves_the_expiry(self) -> None:
        location, clock, _ = make_location()
        put(location, binding(expires_at=100))
        clock.advance(50)
        put(location, binding(expires_at=200, registered_at=50))
        clock.advance(50)
        self.assertEqual([b.expires_at for b in location.lookup("acme", "1001")], [200])
        clock.advance(99)
        self.assertEqual(len(location), 1)
        clock.advance(1)
        self.assertEqual(len(location), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_refresh_to_an_earlier_expiry_rearms_the_timer(self) -> None:
        location, clock, _ = make_location()
        put(location, binding(expires_at=3600))
        put(location, binding(expires_at=60))
        clock.advance(60)
        self.assertEqual(len(location), 0)

    def test_one_timer_for_many_bindings(self) -> None:
        location, clock, _ = make_location()
        for n in range(50):
            put(location, binding(f"sip:1001@10.0.0.{n}", expires_at=100 + n))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(100)
        self.assertEqual(len(location), 49)
        clock.pump([1] * 49)
        self.assertEqual(len(location), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_bindings_expiring_together_go_in_one_run(self) -> None:
        location, clock, _ = make_location()
        removed: list[Binding] = []
        location.on_removed(removed.append)
        put(location, *(binding(f"sip:{n}@10.0.0.1", aor=str(n), expires_at=30) for n in range(5)))
        clock.advance(30)
        self.assertEqual(sorted(b.aor for b in removed), ["0", "1", "2", "3", "4"])
        self.assertEqual(list(location), [])

    def test_no_delayed_calls_once_everything_expired(self) -> None:
        location, clock, _ = make_location()
        put(location, binding("sip:a@h", expires_at=10), binding("sip:b@h", expires_at=20))
        put(location, binding("sip:a@h", expires_at=15))  # leaves a stale heap entry behind
        location.apply("acme", "1001", (), ["sip:b@h"])
        clock.advance(10)
        self.assertEqual(len(location), 1)
        clock.advance(10)
        self.assertEqual(len(location), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_cancels_the_timer(self) -> None:
        location, clock, _ = make_location()
        put(location, binding(expires_at=100))
        location.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        location.stop()  # harmless twice


class LookupTests(SynchronousTestCase):
    """Lookups: most preferred first (q), then the most recent registration."""

    def test_lookup_orders_by_q_then_recency(self) -> None:
        location, _, _ = make_location()
        put(
            location,
            binding("sip:old-high@h", q=0.9, registered_at=1),
            binding("sip:low@h", q=0.1, registered_at=9),
            binding("sip:new-high@h", q=0.9, registered_at=5),
            binding("sip:default@h", q=1.0, registered_at=0),
        )
        self.assertEqual(
            [b.contact for b in location.lookup("acme", "1001")],
            ["sip:default@h", "sip:new-high@h", "sip:old-high@h", "sip:low@h"],
        )

    def test_unknown_aor_is_empty(self) -> None:
        location, _, _ = make_location()
        self.assertEqual(location.lookup("acme", "9999"), [])
        self.assertEqual(location.contacts("acme", "9999"), {})

    def test_tenants_are_separate(self) -> None:
        location, _, _ = make_location()
        put(location, binding("sip:a@h", tenant="acme"), binding("sip:b@h", tenant="globex"))
        self.assertEqual([b.contact for b in location.lookup("acme", "1001")], ["sip:a@h"])
        self.assertEqual([b.contact for b in location.lookup("globex", "1001")], ["sip:b@h"])

    def test_contacts_is_a_copy(self) -> None:
        location, _, _ = make_location()
        put(location, binding())
        location.contacts("acme", "1001").clear()
        self.assertEqual(len(location.contacts("acme", "1001")), 1)

    def test_iteration_and_len(self) -> None:
        location, _, _ = make_location()
        self.assertEqual(len(location), 0)
        put(location, binding("sip:a@h"), binding("sip:b@h"), binding("sip:c@h", aor="1002"))
        put(location, binding("sip:a@h", expires_at=7200))  # a refresh is not a new binding
        self.assertEqual(len(location), 3)
        self.assertEqual(sorted(b.contact for b in location), ["sip:a@h", "sip:b@h", "sip:c@h"])


class ChangeTests(SynchronousTestCase):
    """`apply`, `remove`, `remove_aor`: the index at once, the store in the same order."""

    def test_apply_reaches_the_store(self) -> None:
        location, _, store = make_location()
        b = binding()
        self.assertIsNone(self.successResultOf(location.apply("acme", "1001", [b], ())))
        self.assertEqual(self.successResultOf(store.load(0)), [b])
        self.successResultOf(location.apply("acme", "1001", (), [b.contact]))
        self.assertEqual(self.successResultOf(store.load(0)), [])

    def test_apply_hands_the_store_one_batch(self) -> None:
        store = SlowLocationStore()
        location, _, _ = make_location(store)
        a, b = binding("sip:a@h"), binding("sip:b@h")
        put(location, a)
        d = location.apply("acme", "1001", [b], ["sip:a@h"])
        self.assertNoResult(d)
        self.assertEqual(store.pending[-1][1], [DeleteBinding("acme", "1001", "sip:a@h"), PutBinding(b)])
        self.assertEqual(location.lookup("acme", "1001"), [b])  # the index changed at once
        store.commit_all()
        self.successResultOf(d)

    def test_deleting_an_absent_contact_is_harmless(self) -> None:
        location, _, _ = make_location()
        self.successResultOf(location.apply("acme", "1001", (), ["sip:nobody@h"]))
        self.assertEqual(len(location), 0)

    def test_remove_only_removes_the_current_binding(self) -> None:
        location, _, store = make_location()
        old = binding(expires_at=100)
        put(location, old)
        new = binding(expires_at=200)
        put(location, new)
        commits = store.commits
        self.successResultOf(location.remove(old))
        self.assertEqual(location.lookup("acme", "1001"), [new])
        self.assertEqual(store.commits, commits)
        self.successResultOf(location.remove(new))
        self.assertEqual(len(location), 0)

    def test_remove_aor(self) -> None:
        store = SlowLocationStore()
        location, _, _ = make_location(store)
        put(location, binding("sip:a@h"), binding("sip:b@h"), binding("sip:c@h", aor="1002"))
        d = location.remove_aor("acme", "1001")
        self.assertEqual(store.pending[-1][1], [DeleteAor("acme", "1001")])
        store.commit_all()
        self.successResultOf(d)
        self.assertEqual(len(location), 1)
        self.assertEqual(location.lookup("acme", "1001"), [])

    def test_purge_store_deletes_expired_rows(self) -> None:
        location, clock, store = make_location()
        store.apply([PutBinding(binding("sip:gone@h", expires_at=10)), PutBinding(binding(expires_at=100))])
        clock.advance(10)
        self.assertEqual(self.successResultOf(location.purge_store()), 1)
        self.assertEqual(len(self.successResultOf(store.load(0))), 1)


class ListenerTests(SynchronousTestCase):
    """`on_removed` listeners hear of every binding that expires or is removed, never of refreshes."""

    def setUp(self) -> None:
        self.location, self.clock, _ = make_location()
        self.removed: list[Binding] = []
        self.location.on_removed(self.removed.append)

    def test_expiry_is_heard(self) -> None:
        b = binding(expires_at=5)
        put(self.location, b)
        self.clock.advance(5)
        self.assertEqual(self.removed, [b])

    def test_delete_and_remove_aor_are_heard(self) -> None:
        a, b, c = binding("sip:a@h"), binding("sip:b@h"), binding("sip:c@h")
        put(self.location, a, b, c)
        self.location.apply("acme", "1001", (), ["sip:a@h"])
        self.location.remove(b)
        self.location.remove_aor("acme", "1001")
        self.assertEqual(self.removed, [a, b, c])

    def test_refresh_is_not_heard(self) -> None:
        put(self.location, binding(expires_at=5))
        put(self.location, binding(expires_at=50))
        self.clock.advance(5)
        self.assertEqual(self.removed, [])

    def test_a_failing_listener_is_logged_and_others_still_hear(self) -> None:
        def broken(_: Binding) -> None:
            raise RuntimeError("listener bug")

        location, clock, _ = make_location()
        heard: list[Binding] = []
        location.on_removed(broken)
        location.on_removed(heard.append)
        put(location, binding(expires_at=5))
        clock.advance(5)
        self.assertEqual(len(heard), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(clock.getDelayedCalls(), [])


class LoadTests(SynchronousTestCase):
    """`load` rebuilds the index from a pre-filled store after a restart."""

    def prefilled(self) -> MemoryLocationStore:
        store = MemoryLocationStore()
        store.apply(
            [
                PutBinding(binding("sip:a@h", expires_at=100)),
                PutBinding(binding("sip:b@h", expires_at=200, q=0.5)),
                PutBinding(binding("sip:c@h", tenant="globex", expires_at=300)),
                PutBinding(binding("sip:gone@h", expires_at=50)),
            ]
        )
        return store

    def test_load_rebuilds_every_unexpired_binding(self) -> None:
        clock = Clock()
        clock.advance(50)
        location = LocationService(clock, self.prefilled())
        self.assertEqual(self.successResultOf(location.load()), 3)
        self.assertEqual(len(location), 3)
        self.assertEqual([b.contact for b in location.lookup("acme", "1001")], ["sip:a@h", "sip:b@h"])
        self.assertEqual([b.contact for b in location.lookup("globex", "1001")], ["sip:c@h"])

    def test_loaded_bindings_expire_on_time(self) -> None:
        clock = Clock()
        location = LocationService(clock, self.prefilled())
        removed: list[Binding] = []
        location.on_removed(removed.append)
        self.successResultOf(location.load())
        clock.advance(50)
        clock.advance(50)
        self.assertEqual(sorted(b.contact for b in location), ["sip:b@h", "sip:c@h"])
        clock.advance(200)
        self.assertEqual(len(location), 0)
        self.assertEqual([b.contact for b in removed], ["sip:gone@h", "sip:a@h", "sip:b@h", "sip:c@h"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_bindings_added_before_load_win(self) -> None:
        clock = Clock()
        location = LocationService(clock, self.prefilled())
        newer = binding("sip:a@h", expires_at=1000, registered_at=1)
        location.apply("acme", "1001", [newer], ())
        self.assertEqual(self.successResultOf(location.load()), 3)
        self.assertIs(location.contacts("acme", "1001")["sip:a@h"], newer)
        self.assertEqual(len(location), 4)

    def test_loading_twice_adds_nothing(self) -> None:
        location = LocationService(Clock(), self.prefilled())
        self.successResultOf(location.load())
        self.assertEqual(self.successResultOf(location.load()), 0)
        self.assertEqual(len(location), 4)


class MemoryTests(SynchronousTestCase):
    """100,000 bindings in a LocationService over a MemoryLocationStore cost < 2 KiB each."""

    def test_refreshing_a_binding_does_not_grow_memory(self) -> None:
        location, clock, _ = make_location()
        location.apply("acme", "1001", [binding(expires_at=3600)], ())
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(1, 1001):
                clock.advance(1)
                now = clock.seconds()
                location.apply(
                    "acme", "1001", [binding(expires_at=now + 3600, registered_at=now, cseq=n)], ()
                )
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertEqual(len(location), 1)
        self.assertLess(used, 2048)

    def test_memory_per_binding(self) -> None:
        n = 100_000
        clock = Clock()
        clock.advance(1_700_000_000.0)
        now = clock.seconds()
        # As in the registrar: tenant names are shared; address fragments are temporaries.
        tenants = [f"tenant{t}" for t in range(50)]
        hosts = [f"{a}.{b}" for a in range(256) for b in range(256)]
        ports = [str(p) for p in range(10_000, 60_000)]
        versions = [str(v) for v in range(100)]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            store = MemoryLocationStore()
            location = LocationService(clock, store)
            for i in range(n):
                # Every field a binding owns is a fresh object, as if parsed from its own REGISTER.
                user, host = str(100_000 + i), hosts[i % 65_536]
                b = Binding(
                    tenant=tenants[i % 50],
                    aor=user,
                    contact=f"sip:{user}@192.168.{host}:5060;transport=udp;ob",
                    expires_at=now + (3600 + i % 600),
                    call_id=f"{i:032x}@192.168.{host}",
                    cseq=i % 1000 + 2,
                    received=f"udp:203.0.{host}:{ports[i % 50_000]}",
                    local="udp:198.51.100.1:" + ports[0],
                    instance_id=f"<urn:uuid:00000000-0000-1000-8000-{i:012x}>",
                    reg_id=1,
                    user_agent="Yealink SIP-T46S 66.86.0." + versions[i % 100],
                    registered_at=now + i / 1000,
                )
                location.apply(b.tenant, b.aor, [b], ())
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        per_binding = used / n
        print(f"\nLocationService + MemoryLocationStore: {per_binding:.0f} bytes per binding ({n} bindings)")
        self.assertEqual(len(location), n)
        self.assertLess(per_binding, 2048)
        location.stop()


class StoreFailureTests(SynchronousTestCase):
    """A change the store could not make durable is undone in memory, unless changed again since."""

    def test_a_failed_put_is_undone_and_the_previous_binding_restored(self) -> None:
        store = SlowLocationStore()
        location, _, _ = make_location(store)
        old = binding(expires_at=100)
        location.apply("acme", "1001", [old], ())
        store.commit_all()
        new = binding(expires_at=200, registered_at=50)
        other = binding("sip:1001@10.0.0.9:5060")
        d = location.apply("acme", "1001", [new, other], ())
        self.assertEqual(len(location), 2)
        store.fail_all(OSError("disk full"))
        self.failureResultOf(d, OSError)
        self.assertEqual(location.contacts("acme", "1001"), {old.contact: old})
        self.assertEqual(len(location), 1)

    def test_a_failed_delete_is_undone(self) -> None:
        store = SlowLocationStore()
        location, _, _ = make_location(store)
        old = binding()
        location.apply("acme", "1001", [old], ())
        store.commit_all()
        d = location.apply("acme", "1001", (), [old.contact])
        self.assertEqual(len(location), 0)
        store.fail_all(OSError("disk full"))
        self.failureResultOf(d, OSError)
        self.assertEqual(location.lookup("acme", "1001"), [old])

    def test_a_newer_change_stands(self) -> None:
        store = SlowLocationStore()
        location, _, _ = make_location(store)
        first = binding(expires_at=100)
        second = binding(expires_at=300, cseq=2)
        failing = location.apply("acme", "1001", [first], ())
        location.apply("acme", "1001", [second], ())
        pending = store.pending
        store.pending = []
        pending[0][0].errback(OSError("disk full"))  # the first fails after the second was made
        self.failureResultOf(failing, OSError)
        self.assertEqual(location.lookup("acme", "1001"), [second])
        self.assertEqual(len(location), 1)


class ReplaceTests(SynchronousTestCase):
    """`replace`: what another PBX process sharing the store did to an address-of-record (issue 17)."""

    def test_another_node_adds_changes_and_removes_contacts_without_writing_back(self) -> None:
        location, clock, store = make_location()
        removed: list[Binding] = []
        added: list[Binding] = []
        location.on_removed(removed.append)
        location.on_added(added.append)
        mine = binding("sip:a@x")
        put(location, mine)
        self.assertEqual(added, [mine])
        theirs = binding("sip:b@x", expires_at=1800.0)
        location.replace("acme", "1001", [theirs])  # node B: the phone moved to contact b
        self.assertEqual(location.lookup("acme", "1001"), [theirs])
        self.assertEqual((removed, added[1:], len(location)), ([mine], [theirs], 1))
        self.assertEqual(store.commits, 1)  # the store was not written (the other node did)
        location.replace("acme", "1001", [theirs])  # the same again: nothing to tell
        self.assertEqual(len(added), 2)
        clock.advance(1800)  # the replaced binding expires on this node's clock too
        self.assertEqual(location.lookup("acme", "1001"), [])
        self.assertEqual(len(location), 0)
        location.replace("acme", "1002", [binding("sip:c@x", aor="1002", expires_at=10.0)])  # already expired
        self.assertEqual(location.lookup("acme", "1002"), [])
        location.replace("acme", "1002", [])
        self.assertEqual(len(location), 0)
        location.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
