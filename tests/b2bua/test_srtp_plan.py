"""SRTP negotiation per side (`pbx.b2bua.srtp_plan` through `MediaBridge`): an SRTP caller and a plain
callee, keys over plain signalling refused, modes off/optional/mandatory, and the relay's transforms
decrypting and re-encrypting (with libsrtp, `pbx.media.srtp`)."""

from __future__ import annotations

import struct

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua.media import MediaBridge
from pbx.b2bua.srtp_plan import SrtpPolicy
from pbx.media.srtp import SrtpLeg
from pbx.sip.errors import SipError
from pbx.sip.sdp_crypto import CryptoAttribute, format_crypto, new_crypto, parse_crypto

from .fakes import FakeRelay, callee_sdp, sdp, sdp_body

PHONE = new_crypto("AES_CM_128_HMAC_SHA1_80", 1)
PHONE_32 = new_crypto("AES_CM_128_HMAC_SHA1_32", 2)


def savp(body: bytes, *cryptos: str) -> bytes:
    text = body.decode().replace("RTP/AVP", "RTP/SAVP")
    text += "".join(f"a=crypto:{c}\r\n" for c in cryptos)
    return text.encode()


def bridge(clock: Clock | None = None) -> tuple[MediaBridge, FakeRelay]:
    relay = FakeRelay(clock)
    return MediaBridge(relay, "call-1"), relay


def rtp(seq: int, pt: int = 0, payload: bytes = b"\xff" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 160, 0x99) + payload


def crypto_line(crypto: CryptoAttribute) -> str:
    return format_crypto(crypto)


class SrtpCallerPlainCallee(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.media, self.relay = bridge(self.clock)
        self.media.set_srtp("a", SrtpPolicy("optional", secure=True))

    def test_keys_stay_on_their_side_and_the_relay_converts(self) -> None:
        offer = sdp(self.media.forward("a", savp(sdp_body(), crypto_line(PHONE_32)), is_offer=True))
        (audio,) = offer.media
        self.assertEqual(audio.proto, "RTP/AVP")
        self.assertEqual(audio.attribute_values("crypto"), [])
        answer = sdp(self.media.forward("b", callee_sdp(), is_offer=False))
        (audio,) = answer.media
        self.assertEqual(audio.proto, "RTP/SAVP")
        (line,) = audio.attribute_values("crypto")
        ours = parse_crypto(line)
        self.assertEqual((ours.tag, ours.suite), (2, PHONE_32.suite))
        self.assertNotEqual(ours.key, PHONE_32.key)
        # The phone's mirror image: it sends with its key, decrypts with ours.
        phone = SrtpLeg(ours.suite.name, ours.key, PHONE_32.key)
        session = self.relay.created[0]
        from_phone = phone.protect(rtp(1))
        assert from_phone is not None
        self.assertEqual(session.leg("a").relay_rtp(from_phone), rtp(1))  # decrypted for the plain callee
        to_phone = session.leg("b").relay_rtp(rtp(7))
        assert to_phone is not None
        self.assertNotEqual(to_phone, rtp(7))
        self.assertEqual(phone.unprotect(to_phone), rtp(7))  # encrypted for the SRTP caller
        # Replays and forgeries stop at the relay, counted.
        self.assertIsNone(session.leg("a").relay_rtp(from_phone))
        self.assertIsNone(session.leg("a").relay_rtp(rtp(2)))
        stats = self.media.srtp.stats("a")
        assert stats is not None
        self.assertEqual(stats.rtp_dropped, 2)
        self.assertEqual(stats.replayed, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_transcoding_composes_with_srtp(self) -> None:
        self.media.forward(
            "a", savp(sdp_body(formats=(("0", "PCMU/8000"),)), crypto_line(PHONE)), is_offer=True
        )
        answer = sdp(self.media.forward("b", callee_sdp(formats=(("8", "PCMA/8000"),)), is_offer=False))
        ours = parse_crypto(answer.media[0].attribute_values("crypto")[0])
        phone = SrtpLeg(ours.suite.name, ours.key, PHONE.key)
        out = self.relay.created[0].leg("a").relay_rtp(phone.protect(rtp(1, pt=0)) or b"")
        assert out is not None
        self.assertEqual(out[1] & 0x7F, 8)  # PCMU from the SRTP phone -> PCMA for the callee
        back = self.relay.created[0].leg("b").relay_rtp(rtp(1, pt=8, payload=b"\xd5" * 160))
        plain = phone.unprotect(back or b"")
        assert plain is not None
        self.assertEqual(plain[1] & 0x7F, 0)


class Refusals(SynchronousTestCase):
    def assert488(self, policy: SrtpPolicy, body: bytes, reason: str) -> None:
        media, _ = bridge()
        media.set_srtp("a", policy)
        with self.assertRaises(SipError) as info:
            media.forward("a", body, is_offer=True)
        self.assertEqual(info.exception.status, 488)
        self.assertIn(reason, info.exception.reason)

    def test_keys_over_plain_signalling(self) -> None:
        body = savp(sdp_body(), crypto_line(PHONE))
        self.assert488(SrtpPolicy("optional", secure=False), body, "plain signalling")
        media, _ = bridge()
        media.set_srtp("a", SrtpPolicy("optional", secure=False, allow_plain=True))
        self.assertEqual(sdp(media.forward("a", body, is_offer=True)).media[0].proto, "RTP/AVP")

    def test_off_mandatory_and_unusable_crypto(self) -> None:
        self.assert488(SrtpPolicy("off", secure=True), savp(sdp_body(), crypto_line(PHONE)), "not accepted")
        self.assert488(SrtpPolicy("mandatory", secure=True), sdp_body(), "SRTP required")
        self.assert488(
            SrtpPolicy("optional", secure=True),
            savp(sdp_body(), f"1 F8_128_HMAC_SHA1_80 inline:{'A' * 40}"),
            "No usable crypto",
        )
        self.assert488(SrtpPolicy("optional", secure=True), savp(sdp_body()), "No usable crypto")

    def test_plain_call_keeps_the_hot_path(self) -> None:
        media, relay = bridge(Clock())
        media.forward("a", sdp_body(), is_offer=True)
        answer = sdp(media.forward("b", callee_sdp(), is_offer=False))
        self.assertEqual(answer.media[0].proto, "RTP/AVP")
        self.assertIsNone(relay.created[0].leg("a").transform)
        self.assertIsNone(relay.created[0].leg("b").transform)


class MandatoryCallee(SynchronousTestCase):
    def test_pbx_offers_savp_and_checks_the_answer(self) -> None:
        media, relay = bridge(Clock())
        media.set_srtp("b", SrtpPolicy("mandatory", secure=True))
        offer = sdp(media.forward("a", sdp_body(), is_offer=True))
        (audio,) = offer.media
        self.assertEqual(audio.proto, "RTP/SAVP")
        offered = [parse_crypto(v) for v in audio.attribute_values("crypto")]
        self.assertEqual([c.tag for c in offered], [1, 2])
        callee_key = new_crypto("AES_CM_128_HMAC_SHA1_80", 1)
        answer = sdp(media.forward("b", savp(callee_sdp(), crypto_line(callee_key)), is_offer=False))
        self.assertEqual(answer.media[0].proto, "RTP/AVP")  # the plain caller
        callee = SrtpLeg("AES_CM_128_HMAC_SHA1_80", offered[0].key, callee_key.key)
        out = relay.created[0].leg("a").relay_rtp(rtp(3))
        self.assertEqual(callee.unprotect(out or b""), rtp(3))

    def test_plain_answer_to_savp_offer_refused(self) -> None:
        media, _ = bridge()
        media.set_srtp("b", SrtpPolicy("mandatory", secure=True))
        media.forward("a", sdp_body(), is_offer=True)
        with self.assertRaises(SipError) as info:
            media.forward("b", callee_sdp(), is_offer=False)
        self.assertEqual(info.exception.status, 488)


class CalleePolicy(SynchronousTestCase):
    def test_strictest_of_the_forks(self) -> None:
        from pbx.b2bua.dialing import _callee_srtp
        from pbx.b2bua.leg import LegTarget

        def target(mode: str, secure: bool, plain: bool = False) -> LegTarget:
            return LegTarget("1", "sip:1@h", "sip:1@h", srtp=mode, secure=secure, srtp_over_plain=plain)

        self.assertEqual(_callee_srtp([target("mandatory", True)]), SrtpPolicy("mandatory", True, False))
        self.assertEqual(
            _callee_srtp([target("mandatory", True), target("optional", False)]),
            SrtpPolicy("optional", False, False),
        )
        self.assertEqual(_callee_srtp([target("off", True), target("mandatory", True)]).mode, "off")
        self.assertEqual(
            _callee_srtp([target("mandatory", False, True)]), SrtpPolicy("mandatory", False, True)
        )


class ReOffers(SynchronousTestCase):
    def test_callee_reoffer_keeps_the_srtp_caller_on_srtp(self) -> None:
        clock = Clock()
        media, relay = bridge(clock)
        media.set_srtp("a", SrtpPolicy("optional", secure=True))
        media.forward("a", savp(sdp_body(), crypto_line(PHONE)), is_offer=True)
        answer = sdp(media.forward("b", callee_sdp(), is_offer=False))
        ours = parse_crypto(answer.media[0].attribute_values("crypto")[0])
        leg = media.srtp.legs["a"]
        # The plain callee re-offers (hold): the SRTP caller is offered RTP/SAVP with the PBX's same key.
        reoffer = sdp(media.forward("b", callee_sdp(version=2, direction="sendonly"), is_offer=True))
        (audio,) = reoffer.media
        self.assertEqual(audio.proto, "RTP/SAVP")
        self.assertEqual([parse_crypto(v) for v in audio.attribute_values("crypto")], [ours])
        # The caller answers with its same key: the libsrtp sessions are kept (their replay state too).
        back = sdp(
            media.forward(
                "a", savp(sdp_body(version=2, direction="recvonly"), crypto_line(PHONE)), is_offer=False
            )
        )
        self.assertEqual(back.media[0].proto, "RTP/AVP")
        self.assertIs(media.srtp.legs["a"], leg)
        phone = SrtpLeg(ours.suite.name, ours.key, PHONE.key)
        self.assertEqual(relay.created[0].leg("a").relay_rtp(phone.protect(rtp(5)) or b""), rtp(5))
        # A plain answer to that SRTP re-offer is refused.
        media.forward("b", callee_sdp(version=3), is_offer=True)
        with self.assertRaises(SipError):
            media.forward("a", sdp_body(version=3), is_offer=False)


class BestEffort(SynchronousTestCase):
    def test_avp_offer_with_keys_is_answered_avp_with_the_pbx_key(self) -> None:
        media, relay = bridge(Clock())
        media.set_srtp("a", SrtpPolicy("optional", secure=True))
        body = sdp_body().decode() + f"a=crypto:{crypto_line(PHONE)}\r\n"
        offer = sdp(media.forward("a", body.encode(), is_offer=True))
        self.assertEqual(offer.media[0].attribute_values("crypto"), [])
        answer = sdp(media.forward("b", callee_sdp(), is_offer=False))
        (audio,) = answer.media
        self.assertEqual(audio.proto, "RTP/AVP")
        ours = parse_crypto(audio.attribute_values("crypto")[0])
        phone = SrtpLeg(ours.suite.name, ours.key, PHONE.key)
        self.assertEqual(relay.created[0].leg("a").relay_rtp(phone.protect(rtp(1)) or b""), rtp(1))

    def test_keys_over_plain_make_it_a_plain_call(self) -> None:
        media, _ = bridge()
        body = sdp_body().decode() + f"a=crypto:{crypto_line(PHONE)}\r\n"
        media.forward("a", body.encode(), is_offer=True)
        answer = sdp(media.forward("b", callee_sdp(), is_offer=False))
        self.assertEqual((answer.media[0].proto, answer.media[0].attribute_values("crypto")), ("RTP/AVP", []))
