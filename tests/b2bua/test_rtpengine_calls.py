"""The B2BUA with an rtpengine `bridge_relay` (`pbx.media.rtpengine` on the fake rtpengine of
`tests/media/ngfakes.py`): a call bridged from the start gets rtpengine's ports in both SDPs and is deleted
on hang-up; rtpengine refusing or not answering fails the call with 503 and leaves nothing behind; calls the
PBX answers itself (an unanswered dial going on to the dialplan's own media, SRTP) keep the built-in relay."""

from __future__ import annotations

from typing import Any

from pbx.media.ng import NgClient
from pbx.media.rtpengine import RtpengineRelay
from tests.media.ngfakes import ENGINE_ADDRESS, NG, FakeNgServer

from .fakes import RELAY_ADDRESS, Harness, sdp_body
from .test_b2bua import B2BUATestCase, audio, statuses


class RtpengineCallTests(B2BUATestCase):
    def build_engine(self, main: str, **kwargs: Any) -> tuple[Harness, FakeNgServer]:
        h = self.build(main, **kwargs)
        client = NgClient(h.clock, NG)
        server = FakeNgServer(client)
        h.b2bua.bridge_relay = RtpengineRelay(client)
        h.register_1002()
        return h, server

    def assertEngineIdle(self, h: Harness, server: FakeNgServer) -> None:
        self.assertEqual(server.calls, {})
        self.assertEqual(h.b2bua.bridge_relay.sessions, 0)  # type: ignore[union-attr]
        self.assertIdle(h)

    def test_bridged_call_uses_rtpengine_ports_and_is_deleted_on_hang_up(self) -> None:
        h, server = self.build_engine("dial 1002")
        phone, callee = self.answered(h)
        ((call_id, ports),) = server.calls.items()
        self.assertEqual(audio(callee.invite.body)[:2], (ENGINE_ADDRESS, ports["b"]))
        (ok,) = [r for r in phone.txn.responses if r.status == 200]  # type: ignore[union-attr]
        self.assertEqual(audio(ok.body)[:2], (ENGINE_ADDRESS, ports["a"]))
        self.assertEqual(h.relay.created, [])  # the built-in relay was not used
        # rtpengine learnt both phones' addresses from their SDP (re-offers after the setup).
        offer, answer = server.commands()[-2:]
        self.assertIn(b"c=IN IP4 192.168.1.10", offer[b"sdp"])
        self.assertIn(b"c=IN IP4 192.168.1.20", answer[b"sdp"])
        phone.bye()
        self.assertEqual(server.deleted, [call_id])
        self.assertEngineIdle(h, server)

    def test_rtpengine_error_fails_the_call_with_503(self) -> None:
        h, server = self.build_engine("dial 1002")
        server.fail["offer"] = "Too many calls"
        phone = h.place_call()
        self.assertEqual(statuses(phone.txn)[-1], 503)
        self.assertEqual(h.invites(), [])  # nobody rang
        self.assertEqual(h.relay.created, [])
        self.assertEngineIdle(h, server)

    def test_rtpengine_down_fails_the_call_with_503_after_the_timeout(self) -> None:
        h, server = self.build_engine("dial 1002")
        server.silent.update({"offer", "delete"})
        phone = h.place_call()
        self.assertEqual(statuses(phone.txn), [])
        h.clock.advance(4.0)
        self.assertEqual(statuses(phone.txn), [503])
        (final,) = [r for r in phone.txn.responses if r.status == 503]  # type: ignore[union-attr]
        self.assertEqual(final.reason, "Media Relay Unavailable")
        h.clock.advance(4.0)  # the delete's retransmissions give up
        self.assertEqual(h.invites(), [])
        self.assertEqual(h.b2bua.bridge_relay.sessions, 0)  # type: ignore[union-attr]
        self.assertIdle(h)

    def test_caller_cancelling_during_the_setup_leaves_nothing(self) -> None:
        h, server = self.build_engine("dial 1002")
        server.auto = False
        phone = h.place_call()
        phone.cancel()
        for _ in range(5):
            server.deliver()
        self.assertEqual(h.invites(), [])
        self.assertEngineIdle(h, server)

    def test_unanswered_dial_goes_on_with_the_builtin_relay(self) -> None:
        h, server = self.build_engine("dial 1002 timeout=5\nanswer")
        phone = h.place_call()
        callee = h.callee()
        self.assertEqual(audio(callee.invite.body)[0], ENGINE_ADDRESS)
        callee.respond(180)
        h.clock.advance(5)
        callee.respond(487)
        self.assertEqual(server.calls, {})  # deleted as the dial ended
        self.assertEqual(len(h.relay.created), 1)  # the PBX answered on its own relay
        (ok,) = [r for r in phone.txn.responses if r.status == 200]  # type: ignore[union-attr]
        self.assertEqual(audio(ok.body)[1], h.relay.created[0].leg("a").local_port)
        phone.ack()
        self.assertEngineIdle(h, server)

    def test_calls_the_pbx_answers_and_srtp_offers_keep_the_builtin_relay(self) -> None:
        h, server = self.build_engine("answer")
        phone = h.place_call()
        phone.ack()
        srtp = (
            sdp_body()
            .replace(b"RTP/AVP", b"RTP/SAVP")
            .replace(
                b"a=sendrecv", b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + b"A" * 40 + b"\r\na=sendrecv"
            )
        )
        h.write("main", "dial 1002")
        other = h.place_call(body=srtp)
        self.assertEqual(server.requests, [])
        self.assertEqual(len(h.relay.created), 2)
        self.assertEqual(statuses(phone.txn)[-1], 200)
        # SDES keys over plain signalling are refused (488) by the PBX's SRTP plan, not by rtpengine.
        self.assertEqual(statuses(other.txn), [488])

    def test_a_call_the_pbx_answered_first_stays_on_the_builtin_relay_when_it_dials(self) -> None:
        h, server = self.build_engine("answer\ndial 1002")
        phone = h.place_call()
        phone.ack()
        callee = h.callee()
        self.assertEqual(
            audio(callee.invite.body)[:2], (RELAY_ADDRESS, h.relay.created[0].leg("b").local_port)
        )
        self.assertEqual(server.requests, [])
        callee.answer()
        phone.bye()
        self.assertEngineIdle(h, server)

    def test_reinvite_moving_the_media_updates_rtpengine_and_keeps_its_ports(self) -> None:
        h, server = self.build_engine("dial 1002")
        phone, callee = self.answered(h)
        first = audio(callee.invite.body)
        phone.request("INVITE", sdp_body(port=49180, version=2))
        (reinvite,) = [s for s in h.stack.sent("INVITE") if s.request.to.tag is not None]
        self.assertEqual(audio(reinvite.request.body)[:2], first[:2])  # the same rtpengine port for 1002
        offer = server.commands("offer")[-1]
        self.assertIn(b"m=audio 49180 ", offer[b"sdp"])
        self.assertEqual(offer[b"flags"], [b"port latching"])
        phone.bye()
        self.assertEqual(len(server.deleted), 1)

    def test_caller_cancelling_while_rtpengine_does_not_answer_leaves_nothing(self) -> None:
        h, server = self.build_engine("dial 1002")
        server.silent.update({"offer", "delete"})
        phone = h.place_call()
        phone.cancel()
        self.assertEqual(statuses(phone.txn), [487])
        for _ in range(90):  # the setup times out after 4 s, then the delete 4 s later
            h.clock.advance(0.1)
        self.assertEqual(statuses(phone.txn), [487])
        self.assertEqual(h.invites(), [])
        self.assertEqual(h.b2bua.bridge_relay.sessions, 0)  # type: ignore[union-attr]
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.assertIdle(h)
