"""SRTP legs through libsrtp: protect/unprotect round trips, replays and forgeries dropped and counted, the
relay's composed transforms."""

from __future__ import annotations

import os
import struct

import pytest

from pbx.media.srtp import PROFILES, SrtpLeg, srtp_transform

KEYS = {"AEAD_AES_256_GCM": 44, "AEAD_AES_128_GCM": 28}


def _key(suite: str) -> bytes:
    return os.urandom(KEYS.get(suite, 30))


def _rtp(seq: int, payload: bytes = b"\xff" * 160, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 160, 0x1234) + payload


def _pair(suite: str = "AES_CM_128_HMAC_SHA1_80") -> tuple[SrtpLeg, SrtpLeg]:
    """The PBX's leg and the phone's mirror image (its keys swapped)."""
    phone_key, pbx_key = _key(suite), _key(suite)
    return SrtpLeg(suite, phone_key, pbx_key), SrtpLeg(suite, pbx_key, phone_key)


@pytest.mark.parametrize("suite", sorted(PROFILES))
def test_round_trip_every_suite(suite: str) -> None:
    pbx, phone = _pair(suite)
    for seq in range(1, 5):
        packet = _rtp(seq)
        sent = pbx.protect(packet)
        assert sent is not None and sent != packet and b"\xff" * 16 not in sent
        assert phone.unprotect(sent) == packet
        back = phone.protect(packet)
        assert back is not None and pbx.unprotect(back) == packet
    rtcp = struct.pack("!BBHI", 0x80, 200, 6, 0x1234) + bytes(20)
    protected = pbx.protect_rtcp(rtcp)
    assert protected is not None and phone.unprotect_rtcp(protected) == rtcp


def test_replay_and_forgery_dropped_and_counted() -> None:
    pbx, phone = _pair()
    sent = phone.protect(_rtp(10))
    assert sent is not None
    assert pbx.unprotect(sent) == _rtp(10)
    assert pbx.unprotect(sent) is None  # replayed
    assert pbx.stats.replayed == 1
    forged = bytearray(phone.protect(_rtp(11)) or b"")
    forged[20] ^= 0x01
    assert pbx.unprotect(bytes(forged)) is None
    assert pbx.stats.auth_failed == 1
    assert pbx.unprotect(b"\x80\x00") is None
    wrong_key = SrtpLeg("AES_CM_128_HMAC_SHA1_80", _key("x"), _key("x"))
    assert pbx.unprotect(wrong_key.protect(_rtp(12)) or b"") is None
    assert pbx.stats.rtp_dropped == 4
    assert pbx.unprotect_rtcp(b"\x80\xc8\x00\x01") is None
    assert pbx.stats.rtcp_dropped == 1
    assert pbx.unprotect(phone.protect(_rtp(13)) or b"") == _rtp(13)  # still working


def test_bad_suite_or_key() -> None:
    with pytest.raises(ValueError, match="suite"):
        SrtpLeg("F8_128_HMAC_SHA1_80", _key("x"), _key("x"))


def test_transforms() -> None:
    assert srtp_transform(None, None) is None
    inner = lambda p: p[:1] + bytes([8]) + p[2:]  # noqa: E731 - a payload-type rewrite
    assert srtp_transform(None, None, inner) is inner
    a_pbx, a_phone = _pair()
    b_pbx, b_phone = _pair("AEAD_AES_128_GCM")
    # SRTP phone A -> plain phone: decrypt only.
    out = srtp_transform(a_pbx, None)
    assert out is not None and out(a_phone.protect(_rtp(1)) or b"") == _rtp(1)
    # plain phone -> SRTP phone A: encrypt only.
    out = srtp_transform(None, a_pbx)
    assert out is not None and a_phone.unprotect(out(_rtp(1)) or b"") == _rtp(1)
    # SRTP A -> SRTP B, different keys and suites; with an inner transform.
    for inner_transform, expected in ((None, _rtp(2)), (inner, _rtp(2, pt=8))):
        seq = 2 if inner_transform is None else 3
        out = srtp_transform(a_pbx, b_pbx, inner_transform)
        assert out is not None
        got = b_phone.unprotect(out(a_phone.protect(_rtp(seq)) or b"") or b"")
        assert got == (expected if seq == 2 else _rtp(3, pt=8))
    # A forged packet from A stops at the decryption, whatever follows.
    out = srtp_transform(a_pbx, b_pbx, inner)
    assert out is not None and out(_rtp(99)) is None
    out = srtp_transform(None, b_pbx, lambda p: None)
    assert out is not None and out(_rtp(4)) is None
