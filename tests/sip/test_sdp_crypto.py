"""SDES `a=crypto` parsing, producing, choosing and masking (RFC 4568)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.sip.sdp_crypto import (
    SUITES,
    CryptoAttribute,
    CryptoError,
    answer_crypto,
    choose_crypto,
    format_crypto,
    mask_crypto,
    new_crypto,
    offer_cryptos,
    parse_crypto,
)

KEY30 = bytes(range(30))
B64 = base64.b64encode(KEY30).decode()


def test_parse_rfc4568_example_without_mki() -> None:
    # RFC 4568 9.1's key, without the example's MKI and short lifetime (both refused: see test_parse_refuses).
    crypto = parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
    assert crypto.key == base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")


@pytest.mark.parametrize(
    "value",
    [
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}",
        f"1 aes_cm_128_hmac_sha1_80 INLINE:{B64}",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^31",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64.rstrip('=')}",
        f"  1 AES_CM_128_HMAC_SHA1_80   inline:{B64}  ",
    ],
)
def test_parse_accepts(value: str) -> None:
    crypto = parse_crypto(value)
    assert crypto.tag == 1
    assert crypto.suite is SUITES["AES_CM_128_HMAC_SHA1_80"]
    assert crypto.key == KEY30


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "needs a tag"),
        (f"0 AES_CM_128_HMAC_SHA1_80 inline:{B64}", "tag"),
        (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{B64}", "tag"),
        (f"1 F8_128_HMAC_SHA1_80 inline:{B64}", "unsupported crypto suite"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^20|1:4", "MKI"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^20", "lifetime too short"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|x", "lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64};inline:{B64}", "more than one key"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64} UNENCRYPTED_SRTP", "session parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{B64}", "key method"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", "base64"),
        (f"1 AEAD_AES_128_GCM inline:{B64}", "28-octet"),
    ],
)
def test_parse_refuses(value: str, reason: str) -> None:
    with pytest.raises(CryptoError, match=reason):
        parse_crypto(value)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_round_trip_every_suite(suite: str) -> None:
    crypto = new_crypto(suite, 7)
    assert len(crypto.key) == SUITES[suite].material_length
    assert parse_crypto(format_crypto(crypto)) == crypto


def test_fresh_keys_differ_and_repr_hides_key() -> None:
    a, b = new_crypto("AES_CM_128_HMAC_SHA1_80"), new_crypto("AES_CM_128_HMAC_SHA1_80")
    assert a.key != b.key
    assert base64.b64encode(a.key).decode() not in repr(a)
    assert a.key.hex() not in repr(a)


def test_offer_and_answer() -> None:
    offer = offer_cryptos()
    assert [(c.tag, c.suite.name) for c in offer] == [
        (1, "AES_CM_128_HMAC_SHA1_80"),
        (2, "AES_CM_128_HMAC_SHA1_32"),
    ]
    chosen = choose_crypto(
        [
            f"1 F8_128_HMAC_SHA1_80 inline:{B64}",
            f"2 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^20|1:4",
            f"3 AES_CM_128_HMAC_SHA1_32 inline:{B64}",
            f"4 AES_CM_128_HMAC_SHA1_80 inline:{B64}",
        ]
    )
    assert chosen is not None and chosen.tag == 3
    answer = answer_crypto(chosen)
    assert (answer.tag, answer.suite) == (3, chosen.suite)
    assert answer.key != chosen.key
    assert choose_crypto([f"1 F8_128_HMAC_SHA1_80 inline:{B64}", "garbage"]) is None


def test_mask() -> None:
    sdp = f"v=0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^31\r\n"
    masked = mask_crypto(sdp)
    assert B64 not in masked and B64[:10] not in masked
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:***|2^31\r\n" in masked
    assert mask_crypto("INVITE sip:a@b SIP/2.0\r\n\r\n") == "INVITE sip:a@b SIP/2.0\r\n\r\n"
    assert B64 not in mask_crypto(f"a=crypto:1 X INLINE:{B64}")


@given(st.text(max_size=200))
def test_parser_never_raises_anything_else(value: str) -> None:
    try:
        crypto = parse_crypto(value)
    except CryptoError as e:
        assert len(str(e)) < 120
        return
    assert isinstance(crypto, CryptoAttribute)
    assert parse_crypto(format_crypto(crypto)) == crypto


@given(
    st.sampled_from(sorted(SUITES)),
    st.integers(1, 999_999_999),
    st.binary(min_size=44, max_size=44),
)
def test_produced_lines_parse(suite: str, tag: int, random: bytes) -> None:
    crypto = new_crypto(suite, tag, random=random[: SUITES[suite].material_length])
    assert parse_crypto(format_crypto(crypto)) == crypto
    assert choose_crypto([format_crypto(crypto)]) == crypto
