"""`pbx.media.rtpengine.RtpengineRelay` on a fake rtpengine (`ngfakes.FakeNgServer`): a session's setup
(`offer`, `answer`, `query`) gives each leg rtpengine's port facing its phone; `set_remote` re-offers with the
real addresses (one cycle at a time); `close` deletes; failures fail `ready` and delete what was made."""

from __future__ import annotations

import re

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pbx.media.interfaces import IMediaRelay, IRelayLeg, IRelaySession
from pbx.media.ng import NgClient, NgError, NgTimeout
from pbx.media.rtpengine import RtpengineRelay, synthetic_sdp

from .ngfakes import ENGINE_ADDRESS, NG, FakeNgServer


def relay(*, auto: bool = True) -> tuple[RtpengineRelay, FakeNgServer, Clock]:
    clock = Clock()
    client = NgClient(clock, NG)
    server = FakeNgServer(client, auto=auto)
    return RtpengineRelay(client), server, clock


def sdp_address(command: dict) -> tuple[str, int]:
    text = command[b"sdp"].decode()
    host = re.search(r"c=IN IP[46] (\S+)", text)
    port = re.search(r"m=audio (\d+) ", text)
    assert host is not None and port is not None
    return host.group(1), int(port.group(1))


class SetupTests(SynchronousTestCase):
    def test_setup_gives_each_leg_the_port_facing_its_phone(self) -> None:
        r, server, clock = relay()
        session = r.create_session("call-1")
        self.assertIsNone(self.successResultOf(session.ready))
        self.assertTrue(verifyObject(IMediaRelay, r))
        self.assertTrue(verifyObject(IRelaySession, session))
        self.assertTrue(verifyObject(IRelayLeg, session.leg("a")))
        self.assertEqual([c[b"command"] for c in server.commands()], [b"offer", b"answer", b"query"])
        offer, answer, _ = server.commands()
        self.assertEqual((offer[b"from-tag"], answer[b"from-tag"], answer[b"to-tag"]), (b"a", b"a", b"b"))
        self.assertEqual(offer[b"flags"], [b"port latching"])
        self.assertEqual(sdp_address(offer), ("0.0.0.0", 9))  # nowhere to send yet
        call_id = offer[b"call-id"]
        self.assertTrue(call_id.startswith(b"call-1~"))
        ports = server.calls[call_id]
        self.assertEqual((session.leg("a").local_port, session.leg("b").local_port), (ports["a"], ports["b"]))
        self.assertEqual(session.leg("a").local_address, ENGINE_ADDRESS)
        self.assertEqual(r.sessions, 1)
        self.successResultOf(session.close())
        self.assertEqual(server.deleted, [call_id])
        self.assertEqual(r.sessions, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_same_call_id_twice_is_two_rtpengine_calls(self) -> None:
        r, server, _ = relay()
        one, two = r.create_session("c"), r.create_session("c")
        self.assertEqual(len(server.calls), 2)
        self.assertNotEqual(one.ng_call_id, two.ng_call_id)

    def test_legs_have_no_port_before_ready(self) -> None:
        r, server, clock = relay(auto=False)
        session = r.create_session("c")
        self.assertNoResult(session.ready)
        self.assertEqual(session.leg("a").local_port, 0)
        for _ in range(3):
            server.deliver()
        self.successResultOf(session.ready)
        self.assertNotEqual(session.leg("a").local_port, 0)
        session.close()
        server.deliver()
        self.assertEqual(clock.getDelayedCalls(), [])


class FailureTests(SynchronousTestCase):
    def test_error_answer_fails_ready_and_deletes_the_call(self) -> None:
        r, server, clock = relay()
        server.fail["answer"] = "Unknown call-id"
        session = r.create_session("c")
        failure = self.failureResultOf(session.ready, NgError)
        self.assertEqual(failure.value.reason, "Unknown call-id")
        self.assertTrue(session.closed)
        self.assertEqual(r.sessions, 0)
        self.assertEqual(server.calls, {})  # the offer's call was deleted
        self.assertEqual(len(server.commands("delete")), 1)
        self.successResultOf(session.close())  # idempotent
        self.assertEqual(len(server.commands("delete")), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_no_answer_fails_ready_with_a_timeout_and_nothing_is_left(self) -> None:
        r, server, clock = relay()
        server.silent.update({"offer", "delete"})
        session = r.create_session("c")
        self.assertNoResult(session.ready)
        clock.advance(4.0)
        self.failureResultOf(session.ready, NgTimeout)
        self.assertEqual(r.sessions, 0)
        closed = session.close()
        self.assertNoResult(closed)  # the delete is being retransmitted
        clock.advance(4.0)
        self.assertIsNone(self.successResultOf(closed))  # its failure is logged, not raised
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_malformed_query_answer_fails_ready(self) -> None:
        r, server, clock = relay()
        server._monologue = staticmethod(lambda port: {"medias": []})  # type: ignore[method-assign]
        session = r.create_session("c")
        self.failureResultOf(session.ready, NgError)
        self.assertEqual(server.calls, {})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_close_during_setup_deletes_after_it(self) -> None:
        r, server, clock = relay(auto=False)
        session = r.create_session("c")
        closed = session.close()
        self.assertEqual(r.sessions, 0)
        for _ in range(2):
            server.deliver()
        self.assertEqual(server.commands("delete"), [])
        server.deliver()  # the query's answer: now the delete goes out
        self.assertEqual(len(server.commands("delete")), 1)
        server.deliver()
        self.successResultOf(closed)
        self.assertEqual(server.calls, {})
        self.assertEqual(clock.getDelayedCalls(), [])


class UpdateTests(SynchronousTestCase):
    def test_set_remote_re_offers_with_both_remotes(self) -> None:
        r, server, clock = relay()
        session = r.create_session("c")
        session.leg("a").set_remote("192.168.1.10", 49170)
        offer, answer = server.commands()[-2:]
        self.assertEqual((offer[b"command"], answer[b"command"]), (b"offer", b"answer"))
        self.assertEqual(sdp_address(offer), ("192.168.1.10", 49170))
        self.assertEqual(sdp_address(answer), ("0.0.0.0", 9))
        session.leg("b").set_remote("192.168.1.20", 30000, 30005)
        offer, answer = server.commands()[-2:]
        self.assertEqual(sdp_address(offer), ("192.168.1.10", 49170))
        self.assertEqual(sdp_address(answer), ("192.168.1.20", 30000))
        self.assertEqual(session.leg("b").rtcp_remote, ("192.168.1.20", 30005))
        count = len(server.commands())
        session.leg("b").set_remote("192.168.1.20", 30000)  # the same address: nothing to tell
        self.assertEqual(len(server.commands()), count)
        session.close()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_changes_during_a_cycle_go_in_one_more(self) -> None:
        r, server, clock = relay(auto=False)
        session = r.create_session("c")
        for _ in range(3):
            server.deliver()
        session.leg("a").set_remote("192.168.1.10", 1000)
        session.leg("a").set_remote("192.168.1.10", 1002)
        session.leg("b").set_remote("192.168.1.20", 2000)
        self.assertEqual(len(server.commands()), 4)  # the first cycle's offer only
        for _ in range(4):
            server.deliver()
        offers = server.commands("offer")
        self.assertEqual(
            [sdp_address(o) for o in offers], [("0.0.0.0", 9), ("192.168.1.10", 1000), ("192.168.1.10", 1002)]
        )
        self.assertEqual(sdp_address(server.commands("answer")[-1]), ("192.168.1.20", 2000))
        session.close()
        server.deliver()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_hold_address_and_port_zero_mean_nowhere(self) -> None:
        r, _server, _ = relay()
        session = r.create_session("c")
        leg = session.leg("a")
        leg.set_remote("192.168.1.10", 1000)
        leg.set_remote("0.0.0.0", 1000)
        self.assertIsNone(leg.remote)
        leg.set_remote("192.168.1.10", 0)
        self.assertIsNone(leg.remote)
        for bad in (("pbx.example.com", 1000), ("224.0.0.1", 1000), ("192.168.1.10", 70000)):
            with self.assertRaises(ValueError):
                leg.set_remote(*bad)

    def test_failed_update_is_logged_and_the_call_goes_on(self) -> None:
        r, server, clock = relay()
        session = r.create_session("c")
        server.fail["offer"] = "Unknown call-id"
        session.leg("a").set_remote("192.168.1.10", 1000)
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        del server.fail["offer"]
        session.leg("a").set_remote("192.168.1.10", 1002)
        self.assertEqual(sdp_address(server.commands("offer")[-1]), ("192.168.1.10", 1002))
        session.close()
        self.assertEqual(clock.getDelayedCalls(), [])


class OtherTests(SynchronousTestCase):
    def test_stats_come_from_query(self) -> None:
        r, _server, _ = relay()
        session = r.create_session("c")
        stats = self.successResultOf(session.refresh_stats())
        self.assertEqual((stats.a.packets, stats.a.bytes, stats.a.rtcp_packets), (50, 50 * 172, 2))
        self.assertEqual(stats.b.latched, ("192.168.1.10", 4000))
        session.close()
        self.assertEqual(self.successResultOf(session.refresh_stats()), session.stats())

    def test_pbx_media_is_not_carried(self) -> None:
        r, _server, _ = relay()
        leg = r.create_session("c").leg("a")
        leg.attach(object())
        self.assertFalse(leg.attached)
        leg.set_transform(None)
        leg.set_transform(lambda data: data)
        leg.send_rtp(b"x" * 12)
        leg.send_rtcp(b"x" * 8)
        leg.detach()
        self.assertEqual(leg.unsent, 2)
        self.assertIsNone(r.clock)

    def test_relay_close_deletes_every_call_and_ping_pongs(self) -> None:
        r, server, clock = relay()
        for n in range(3):
            r.create_session(f"c{n}")
        self.assertEqual(self.successResultOf(r.ping()), {b"result": b"pong"})
        self.successResultOf(r.close())
        self.assertEqual((r.sessions, server.calls), (0, {}))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_synthetic_sdp(self) -> None:
        self.assertIn(b"c=IN IP6 ::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP", synthetic_sdp(("::1", 4000), 3))
        self.assertIn(b"o=pbx 1 3 IN IP4 0.0.0.0", synthetic_sdp(None, 3))

    def test_relay_close_waits_for_deletes_already_in_flight(self) -> None:
        r, server, clock = relay(auto=False)
        session = r.create_session("c")
        for _ in range(3):
            server.deliver()
        session.close()  # a hang-up just before the PBX stops: its delete is on its way
        closing = r.close()
        self.assertNoResult(closing)
        server.deliver()
        self.assertIsNone(self.successResultOf(closing))
        self.assertEqual(server.calls, {})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_close_during_a_failing_setup_still_deletes(self) -> None:
        r, server, clock = relay(auto=False)
        server.fail["answer"] = "Internal error"
        session = r.create_session("c")
        closed = session.close()
        server.deliver()  # the offer: ok
        server.deliver()  # the answer: error; now the delete goes out
        self.failureResultOf(session.ready, NgError)
        self.assertEqual(len(server.commands("delete")), 1)
        closing = r.close()
        server.deliver()
        self.successResultOf(closed)
        self.successResultOf(closing)
        self.assertEqual(server.calls, {})
        self.assertEqual(clock.getDelayedCalls(), [])
