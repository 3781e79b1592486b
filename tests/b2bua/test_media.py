"""`pbx.b2bua.media.MediaBridge`: the SDP of each side rewritten to the relay, learnt by the relay's legs,
filtered to the codec allow-list (RFC 3264, RFC 4566), with one session id and increasing versions per side.
The relay is `FakeRelay` (fixed ports: leg "a" 40000, leg "b" 40002)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua.media import MediaBridge
from pbx.sip.errors import SipError

from .fakes import RELAY_ADDRESS, FakeRelay, callee_sdp, sdp, sdp_body

PCMU_PCMA_DTMF = (("0", "PCMU/8000"), ("8", "PCMA/8000"), ("101", "telephone-event/8000"))


def bridge(codecs: tuple[str, ...] = ("*",)) -> tuple[MediaBridge, FakeRelay]:
    relay = FakeRelay()
    return MediaBridge(relay, "call-1", codecs), relay


class RewriteTests(SynchronousTestCase):
    """Each side sees only the relay's address and the port of its own relay leg."""

    def test_offer_from_a_is_rewritten_for_b(self) -> None:
        media, relay = bridge()
        out = sdp(media.forward("a", sdp_body(), is_offer=True))
        (audio,) = out.media
        self.assertEqual((out.connection_for(audio).address, audio.port), (RELAY_ADDRESS, 40002))  # type: ignore[union-attr]
        self.assertEqual(out.origin.address, RELAY_ADDRESS)
        self.assertEqual(out.origin.username, "pbx")
        self.assertEqual(list(audio.formats), ["0", "8", "101"])
        self.assertEqual(audio.direction, "sendrecv")
        self.assertEqual(relay.created[0].call_id, "call-1")
        self.assertEqual(relay.created[0].leg("a").set_remote_calls, [("192.168.1.10", 49170, 49171)])
        self.assertEqual(relay.created[0].leg("b").set_remote_calls, [])

    def test_answer_from_b_is_rewritten_for_a(self) -> None:
        media, relay = bridge()
        media.forward("a", sdp_body(), is_offer=True)
        out = sdp(media.forward("b", callee_sdp(), is_offer=False))
        (audio,) = out.media
        self.assertEqual((out.connection_for(audio).address, audio.port), (RELAY_ADDRESS, 40000))  # type: ignore[union-attr]
        self.assertEqual(relay.created[0].leg("b").set_remote_calls, [("192.168.1.20", 30000, 30001)])
        self.assertNotIn(b"192.168.1.20", media.forward("b", callee_sdp(), is_offer=False))

    def test_rtcp_attribute_is_learnt_and_rewritten(self) -> None:
        media, relay = bridge()
        body = sdp_body().replace(b"a=sendrecv", b"a=rtcp:50000\r\na=sendrecv")
        out = media.forward("a", body, is_offer=True)
        self.assertEqual(relay.created[0].leg("a").set_remote_calls, [("192.168.1.10", 49170, 50000)])
        self.assertIn(b"a=rtcp:40003", out)

    def test_versions_increase_per_side_with_one_session_id(self) -> None:
        media, _relay = bridge()
        to_b = [sdp(media.forward("a", sdp_body(version=v), is_offer=True)).origin for v in (1, 2, 3)]
        to_a = [sdp(media.forward("b", callee_sdp(version=v), is_offer=False)).origin for v in (1, 2)]
        self.assertEqual([int(o.session_version) for o in to_b], [1, 2, 3])
        self.assertEqual([int(o.session_version) for o in to_a], [1, 2])
        self.assertEqual(len({o.session_id for o in to_b}), 1)
        self.assertEqual(len({o.session_id for o in to_a}), 1)
        self.assertNotEqual(to_a[0].session_id, to_b[0].session_id)

    def test_old_style_hold_does_not_move_the_remote(self) -> None:
        media, relay = bridge()
        media.forward("a", sdp_body(), is_offer=True)
        held = media.forward("a", sdp_body(address="0.0.0.0", version=2), is_offer=True)
        self.assertEqual(relay.created[0].leg("a").set_remote_calls, [("192.168.1.10", 49170, 49171)])
        self.assertIn(b"c=IN IP4 0.0.0.0", held)  # the hold reaches the other side

    def test_sendonly_direction_passes(self) -> None:
        media, _relay = bridge()
        out = media.forward("a", sdp_body(direction="sendonly"), is_offer=True)
        self.assertEqual(sdp(out).media[0].direction, "sendonly")

    def test_video_is_declined_with_port_zero(self) -> None:
        media, _relay = bridge()
        out = sdp(media.forward("a", sdp_body(video_port=49300), is_offer=True))
        self.assertEqual([(m.media, m.port) for m in out.media], [("audio", 40002), ("video", 0)])
        self.assertNotIn("192.168.1.10", out.to_bytes().decode())

    def test_malformed_sdp_is_400(self) -> None:
        media, _relay = bridge()
        for body in (b"v=0\r\nnot sdp\r\n", b"", b"m=audio 1 RTP/AVP 0\r\n"):
            with self.assertRaises(SipError) as caught:
                media.forward("a", body, is_offer=True)
            self.assertEqual(caught.exception.status, 400)

    def test_close_is_idempotent(self) -> None:
        media, relay = bridge()
        media.close()
        media.close()
        self.assertTrue(media.closed)
        self.assertEqual(relay.created[0].close_calls, 1)
        self.assertEqual(relay.sessions, 0)


class CodecFilterTests(SynchronousTestCase):
    """Offers keep only the allowed codecs (no transcoding); answers pass unchanged."""

    def test_offer_keeps_the_allowed_codecs(self) -> None:
        media, _relay = bridge(("PCMA", "telephone-event"))
        out = sdp(media.forward("a", sdp_body(formats=PCMU_PCMA_DTMF), is_offer=True))
        audio = out.media[0]
        self.assertEqual(list(audio.formats), ["8", "101"])
        self.assertEqual(sorted(audio.rtpmap), ["101", "8"])
        self.assertNotIn(b"PCMU", out.to_bytes())

    def test_codec_names_are_case_insensitive(self) -> None:
        media, _relay = bridge(("pcmu",))
        out = sdp(media.forward("a", sdp_body(formats=PCMU_PCMA_DTMF), is_offer=True))
        self.assertEqual(list(out.media[0].formats), ["0"])

    def test_nothing_allowed_left_is_488_with_a_warning(self) -> None:
        media, _relay = bridge(("G722",))
        with self.assertRaises(SipError) as caught:
            media.forward("a", sdp_body(formats=PCMU_PCMA_DTMF), is_offer=True)
        self.assertEqual(caught.exception.status, 488)
        self.assertEqual(caught.exception.headers, (("Warning", '304 pbx "Media type not available"'),))

    def test_only_telephone_event_left_is_488(self) -> None:
        media, _relay = bridge(("PCMA", "telephone-event"))
        with self.assertRaises(SipError) as caught:
            media.forward(
                "a", sdp_body(formats=(("0", "PCMU/8000"), ("101", "telephone-event/8000"))), is_offer=True
            )
        self.assertEqual(caught.exception.status, 488)

    def test_answers_are_not_filtered(self) -> None:
        media, _relay = bridge(("PCMA",))
        out = sdp(media.forward("b", callee_sdp(formats=PCMU_PCMA_DTMF), is_offer=False))
        self.assertEqual(list(out.media[0].formats), ["0", "8", "101"])

    def test_wildcard_lets_everything_through(self) -> None:
        media, _relay = bridge(("*",))
        out = sdp(media.forward("a", sdp_body(formats=(("9", "G722/8000"),)), is_offer=True))
        self.assertEqual(list(out.media[0].formats), ["9"])
