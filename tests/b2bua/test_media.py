"""`pbx.b2bua.media.MediaBridge`: the SDP of each side rewritten to the relay, learnt by the relay's legs,
filtered to the codec allow-list (RFC 3264, RFC 4566), with one session id and increasing versions per side.
The relay is `FakeRelay` (fixed ports: leg "a" 40000, leg "b" 40002)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua.media import MediaBridge, _is_ipv4, accepted_audio, parse_sdp
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


class CheckTests(SynchronousTestCase):
    """`parse_sdp`: what the B2BUA accepts from a phone, and reasons that echo none of its bytes."""

    def status_and_reason(self, body: bytes, content_type: str | None = None) -> tuple[int, str]:
        with self.assertRaises(SipError) as caught:
            parse_sdp(body, content_type)
        reason = caught.exception.reason or ""
        self.assertTrue(all(0x20 <= ord(c) < 0x7F for c in reason), repr(reason))
        self.assertLessEqual(len(reason), 80)
        return caught.exception.status, reason

    def test_malformed_bodies_are_400_with_the_parsers_words_only(self) -> None:
        good = sdp_body().decode()
        status, reason = self.status_and_reason(good.replace("49170", "99999").encode())
        self.assertEqual((status, reason), (400, "Malformed SDP: bad m= line: port out of range"))
        status, reason = self.status_and_reason(good.replace("RTP/AVP 0 ", "RTP/AVP \xe9\r\n\x00 ").encode())
        self.assertEqual(status, 400)
        self.assertNotIn("\x00", reason)
        status, reason = self.status_and_reason(b"\x1b[2J\x07" * 20)
        self.assertEqual((status, reason), (400, "Malformed SDP: missing v= line"))

    def test_another_content_type_is_488_with_accept(self) -> None:
        with self.assertRaises(SipError) as caught:
            parse_sdp(sdp_body(), "text/plain")
        self.assertEqual(caught.exception.status, 488)
        self.assertIn(("Accept", "application/sdp"), caught.exception.headers)
        self.assertEqual(parse_sdp(sdp_body(), "Application/SDP; charset=utf-8").media[0].port, 49170)

    def test_the_audio_address_must_be_an_ip_address_of_its_type(self) -> None:
        for address in ("phone.example.com", "999.1.1.1", "::1"):
            body = sdp_body().replace(b"c=IN IP4 192.168.1.10", f"c=IN IP4 {address}".encode())
            self.assertEqual(self.status_and_reason(body)[0], 488)
        v6 = sdp_body().replace(b"c=IN IP4 192.168.1.10", b"c=IN IP6 2001:db8::1")
        self.assertEqual(parse_sdp(v6).connection.address, "2001:db8::1")  # type: ignore[union-attr]
        hold = sdp_body().replace(b"c=IN IP4 192.168.1.10", b"c=IN IP4 0.0.0.0")
        self.assertEqual(len(parse_sdp(hold).media), 1)

    def test_an_active_stream_without_c_line_is_400(self) -> None:
        body = sdp_body().replace(b"c=IN IP4 192.168.1.10\r\n", b"")
        self.assertEqual(self.status_and_reason(body), (400, "Malformed SDP: no c= line"))

    def test_accepted_audio_needs_a_codec(self) -> None:
        self.assertIsNotNone(accepted_audio(sdp(sdp_body())))
        self.assertIsNone(accepted_audio(sdp(sdp_body(formats=(("101", "telephone-event/8000"),)))))
        self.assertIsNone(accepted_audio(sdp(sdp_body(port=0))))

    def test_local_offer_is_g711_and_events_at_the_relay_leg_with_growing_versions(self) -> None:
        media, _relay = bridge()
        first, second = sdp(media.local_offer("a")), sdp(media.local_offer("a"))
        (audio,) = first.media
        self.assertEqual((first.connection.address, audio.port), (RELAY_ADDRESS, 40000))  # type: ignore[union-attr]
        self.assertEqual(
            [str(audio.rtpmap[f]) for f in audio.formats], ["PCMU/8000", "PCMA/8000", "telephone-event/8000"]
        )
        self.assertEqual(first.origin.session_id, second.origin.session_id)
        self.assertLess(first.origin.session_version, second.origin.session_version)


@given(
    st.one_of(
        st.lists(
            st.sampled_from(["0", "1", "9", "00", "01", "10", "99", "255", "256", "999", "x", ""]), max_size=5
        ).map(".".join),
        st.text(max_size=16),
    )
)
def test_ipv4_check_agrees_with_ipaddress(host: str) -> None:
    """`_is_ipv4` (with its memo of hosts seen) says what `ipaddress.IPv4Address` says, asked twice."""
    try:
        ipaddress.IPv4Address(host)
        valid = True
    except ValueError:
        valid = False
    assert _is_ipv4(host) is valid
    assert _is_ipv4(host) is valid
