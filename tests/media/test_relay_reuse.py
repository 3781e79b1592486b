"""Tests for parked relay sockets (`UdpMediaRelay(keep_open=...)`): closed legs keep their sockets open and
a later leg reuses them once they have been quiet, starting from scratch; nothing of the old call leaks."""

from __future__ import annotations

import gc
from typing import Any

from pbx.media import PortPool, UdpMediaRelay
from pbx.media.relay import REUSE_AFTER, _Channel
from pbx.media.relay_channel import _Rare
from tests.media.test_relay import NAT_A, PHONE_A, PHONE_B, RTCP_RR, FakeUdpReactor, RelayTestCase, rtp

OTHER_A = ("192.0.2.77", 6000)


class ReuseTests(RelayTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.relay = UdpMediaRelay(self.reactor, self.pool, bind_host="10.0.0.1", keep_open=4)

    def used_session(self) -> Any:
        """A session with traffic both ways, latched, then closed."""
        session = self.session()
        self.reactor.deliver(10000, rtp(1), NAT_A)
        self.reactor.deliver(10002, rtp(2), PHONE_B)
        self.reactor.take()
        self.successResultOf(session.close())
        return session

    def test_closed_legs_keep_their_sockets_open_and_their_ports(self) -> None:
        self.used_session()
        self.assertEqual(sorted(self.reactor.ports), [10000, 10001, 10002, 10003])
        self.assertEqual((self.relay.parked, self.relay.sessions, self.pool.in_use), (2, 0, 2))

    def test_parked_sockets_are_reused_only_once_quiet_for_reuse_after(self) -> None:
        self.used_session()
        early = self.relay.create_session("call-2")
        self.assertEqual((early.leg("a").local_port, early.leg("b").local_port), (10004, 10006))
        self.reactor.advance(REUSE_AFTER)
        later = self.relay.create_session("call-3")
        self.assertEqual((later.leg("a").local_port, later.leg("b").local_port), (10000, 10002))
        self.assertEqual((self.relay.reused, self.relay.parked, len(self.reactor.ports)), (2, 0, 8))

    def test_a_reused_leg_starts_from_scratch(self) -> None:
        self.used_session()
        self.reactor.advance(REUSE_AFTER)
        session = self.relay.create_session("call-2")
        a, b = session.leg("a"), session.leg("b")
        self.assertEqual((a.latched, a.remote, b.latched, b.remote), (None, None, None, None))
        stats = session.stats()
        self.assertEqual(
            (stats.call_id, stats.a.packets, stats.b.packets, stats.a.bytes), ("call-2", 0, 0, 0)
        )
        # Nothing is relayed to the old call's phones: the new legs know no one yet.
        self.reactor.deliver(10000, rtp(3), OTHER_A)
        self.assertEqual(self.reactor.take(), [])
        self.assertEqual((a.latched, session.stats().a.dropped), (OTHER_A, 1))
        b.set_remote(*PHONE_B)
        self.reactor.deliver(10000, rtp(4), OTHER_A)
        self.assertEqual(self.reactor.take(), [(10002, rtp(4), PHONE_B)])

    def test_packets_to_parked_sockets_are_dropped_and_delay_their_reuse(self) -> None:
        self.used_session()
        self.reactor.advance(REUSE_AFTER / 2)
        self.reactor.deliver(10000, rtp(5), NAT_A)  # the old phone is still sending
        self.reactor.deliver(10001, RTCP_RR, NAT_A)
        self.assertEqual(self.reactor.take(), [])
        self.reactor.advance(REUSE_AFTER / 2)
        session = self.relay.create_session("call-2")
        # Leg a of the old call heard a stray packet: it went to the back; leg b (10002) was quiet.
        self.assertEqual((session.leg("a").local_port, session.leg("b").local_port), (10002, 10004))
        self.reactor.advance(REUSE_AFTER / 2)
        self.assertEqual(self.relay.create_session("call-3").leg("a").local_port, 10000)

    def test_the_old_leg_object_cannot_reach_the_new_call(self) -> None:
        old = self.used_session()
        old_a = old.leg("a")
        final = old.stats()
        self.reactor.advance(REUSE_AFTER)
        new = self.relay.create_session("call-2")
        new.leg("a").set_remote(*OTHER_A)
        old_a.set_remote(*PHONE_A)
        old_a.send_rtp(rtp(9))
        old_a.detach()
        old_a.attach(object())  # ignored: closed
        self.assertEqual(self.reactor.take(), [])
        self.assertEqual(new.leg("a").remote, OTHER_A)
        self.assertEqual(old.stats(), final)
        self.assertEqual((old_a.latched, old_a.unsent), (NAT_A, 1))

    def test_parked_legs_beyond_keep_open_are_closed(self) -> None:
        sessions = [self.relay.create_session(f"call-{n}") for n in range(3)]
        for session in sessions:
            self.successResultOf(session.close())
        self.assertEqual((self.relay.parked, self.pool.in_use, len(self.reactor.ports)), (4, 4, 8))

    def test_parked_legs_are_taken_early_rather_than_running_out_of_ports(self) -> None:
        pool = PortPool(10000, 10003)  # two pairs: one session
        relay = UdpMediaRelay(self.reactor, pool, bind_host="10.0.0.1", keep_open=4)
        self.successResultOf(relay.create_session("call-1").close())
        session = relay.create_session("call-2")  # not quiet yet, but there is nothing else
        self.assertEqual({session.leg("a").local_port, session.leg("b").local_port}, {10000, 10002})

    def test_relay_close_closes_the_parked_sockets(self) -> None:
        self.used_session()
        self.relay.create_session("open")
        self.successResultOf(self.relay.close())
        self.assertEqual((self.reactor.ports, self.pool.in_use, self.relay.parked), ({}, 0, 0))

    def test_ten_thousand_sessions_reuse_a_few_sockets_and_leave_nothing_behind(self) -> None:
        reactor = FakeUdpReactor()
        pool = PortPool(20000, 20999)
        relay = UdpMediaRelay(reactor, pool, keep_open=200)
        opened = 0
        while opened < 10_000:
            wave = [relay.create_session(f"call-{opened + i}") for i in range(40)]
            opened += len(wave)
            for session in wave[::7]:
                a, b = session.leg("a"), session.leg("b")
                b.set_remote(*PHONE_B)
                reactor.deliver(a.local_port, rtp(), NAT_A)
            for session in wave:
                self.successResultOf(session.close())
            reactor.advance(REUSE_AFTER / 2)
            reactor.take()
        self.assertLessEqual(len(reactor.ports), 2 * (80 + 200))
        self.assertGreater(relay.reused, 19_000)
        self.successResultOf(relay.close())
        self.assertEqual((reactor.ports, pool.in_use, relay.sessions), ({}, 0, 0))

    def test_a_closed_leg_keeps_a_copy_of_every_field_of_its_channels(self) -> None:
        """The copy a closed leg keeps (its sockets serve another leg) has every slot of the channel."""
        session = self.session()
        channel = session.leg("a")._rtp
        values = {name: object() for name in _Channel.__slots__ if name != "_rare"}
        for name, value in values.items():
            setattr(channel, name, value)
        rare = channel._more()
        counts = {name: object() for name in _Rare.__slots__}
        for name, value in counts.items():
            setattr(rare, name, value)
        copy = channel.snapshot()
        self.assertIs(type(copy), type(channel))
        self.assertEqual({name: getattr(copy, name) for name in values}, values)
        self.assertIsNot(copy._rare, rare)  # the parked channel may count on: the copy stays as it was
        self.assertEqual({name: getattr(copy._rare, name) for name in _Rare.__slots__}, counts)

    def test_channels_keep_no_instance_dict_while_relaying(self) -> None:
        """Channels live in slots (4 per call): relaying, closing and reusing them makes no instance dict."""
        self.used_session()
        self.reactor.advance(REUSE_AFTER)
        session = self.relay.create_session("call-2")
        for name in "ab":
            session.leg(name).set_remote(*(PHONE_A if name == "a" else PHONE_B))
        self.reactor.deliver(10000, rtp(7), PHONE_A)
        self.assertEqual(self.reactor.take(), [(10002, rtp(7), PHONE_B)])
        for name in "ab":
            leg = session.leg(name)
            for channel in (leg._rtp, leg._rtcp):
                self.assertFalse(_has_dict(channel), channel)
        session.leg("a")._rtp.__dict__  # noqa: B018 (makes one: the check sees it)
        self.assertTrue(_has_dict(session.leg("a")._rtp))


def _has_dict(obj: object) -> bool:
    """Whether an instance dict was made for `obj` (without making one: `obj.__dict__` would)."""
    return any(isinstance(referent, dict) for referent in gc.get_referents(obj))
