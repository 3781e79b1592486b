"""SDES keys for SRTP in SDP: the `a=crypto` attribute (RFC 4568 9.1) of an `RTP/SAVP` media description.

    a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]
    key-params = "inline:" base64(master key || master salt) ["|" lifetime] ["|" MKI ":" length]

`parse_crypto` reads one attribute's value into a `CryptoAttribute`; `format_crypto` writes one;
`new_crypto` makes the PBX's own (a fresh random master key and salt from `os.urandom`, RFC 4568 6.1: each
side sends with its own key). `choose_crypto` picks, from an offer's attributes, the first one the PBX can
use (RFC 4568 7.1.2: the answer names the same tag and suite, with the answerer's key).

What the PBX can use (anything else is skipped, as RFC 4568 6.3 asks for a line with parameters the answerer
does not support): one of `SUITES`, exactly one `inline:` key of the suite's length, no MKI (the relay keeps
one key per direction), a lifetime, if any, of at least 2^31 packets (the PBX does not re-key), and no
session parameters (UNENCRYPTED_SRTP and the like would weaken the call; KDR and WSH are rarely sent).

`mask_crypto` hides the key material of `a=crypto` lines in a SIP message for logs (`--sip-trace`): keys
never reach a log. This module knows nothing of sockets or libsrtp: suite names and bytes in and out.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "OFFER_ORDER",
    "SUITES",
    "CryptoAttribute",
    "CryptoError",
    "Suite",
    "choose_crypto",
    "format_crypto",
    "mask_crypto",
    "new_crypto",
    "offer_cryptos",
    "answer_crypto",
    "parse_crypto",
]


class CryptoError(ValueError):
    """An `a=crypto` value that is malformed or that the PBX cannot use (the reason is bounded)."""


@dataclass(frozen=True, slots=True)
class Suite:
    """An SRTP crypto suite of the SDES registry (RFC 4568 6.2, RFC 7714 14.2 for AEAD).

    Attributes:
        name: The name in `a=crypto`, upper case.
        key_length: Octets of the master key.
        salt_length: Octets of the master salt.
    """

    name: str
    key_length: int
    salt_length: int

    @property
    def material_length(self) -> int:
        """Octets of the `inline:` key-info: master key and master salt."""
        return self.key_length + self.salt_length


SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite("AEAD_AES_256_GCM", 32, 12),
        Suite("AEAD_AES_128_GCM", 16, 12),
        Suite("AES_CM_128_HMAC_SHA1_80", 16, 14),
        Suite("AES_CM_128_HMAC_SHA1_32", 16, 14),
    )
}
"""The suites the PBX accepts, by name; the PBX offers them in `OFFER_ORDER`."""

OFFER_ORDER: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
"""The suites the PBX offers, in preference order: the two every SDES phone has (RFC 4568 6.2.1's
mandatory AES_CM_128_HMAC_SHA1_80 first). The AEAD suites are accepted when offered."""

MIN_LIFETIME = 1 << 31
"""The shortest key lifetime (packets) accepted: the PBX does not re-key, and 2^31 packets of 20 ms is
over a year of audio (RFC 3711 9.2's default is 2^48 for SRTP)."""

MAX_TAG = 999_999_999  # 1*9DIGIT (RFC 4568 9.1)

_TAG = re.compile(r"[0-9]{1,9}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_LIFETIME = re.compile(r"(?:2\^([0-9]{1,2})|([0-9]{1,20}))")
_INLINE = re.compile(r"(inline:)([A-Za-z0-9+/=]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """One usable `a=crypto` line.

    Attributes:
        tag: The line's tag (1..999999999), which the answer repeats.
        suite: The crypto suite.
        key: The master key followed by the master salt (`suite.material_length` octets).
    """

    tag: int
    suite: Suite
    key: bytes

    def __repr__(self) -> str:  # the key never reaches a log through a repr
        return f"CryptoAttribute(tag={self.tag}, suite={self.suite.name}, key=<{len(self.key)} octets>)"


def _bounded(text: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text[:40])
    return text + ("..." if len(text) >= 40 else "")


def parse_crypto(value: str) -> CryptoAttribute:
    """The `CryptoAttribute` of the value of one `a=crypto` attribute (what follows `crypto:`).

    Raises:
        CryptoError: The value is malformed, or the PBX cannot use it (unknown suite, MKI, several keys,
            a short lifetime, session parameters, a key of the wrong length).
    """
    fields = value.strip(" \t").split()
    if len(fields) < 3:
        raise CryptoError("a=crypto needs a tag, a suite and key parameters")
    tag_text, suite_name, key_params = fields[0], fields[1], fields[2]
    if not _TAG.fullmatch(tag_text) or int(tag_text) == 0:
        raise CryptoError(f"bad a=crypto tag: {_bounded(tag_text)}")
    suite = SUITES.get(suite_name.upper())
    if suite is None:
        raise CryptoError(f"unsupported crypto suite: {_bounded(suite_name)}")
    if len(fields) > 3:
        raise CryptoError(f"unsupported session parameter: {_bounded(fields[3])}")
    if ";" in key_params:
        raise CryptoError("more than one key in a=crypto")
    method, colon, info = key_params.partition(":")
    if not colon or method.lower() != "inline":
        raise CryptoError(f"unsupported key method: {_bounded(method)}")
    parts = info.split("|")
    if len(parts) > 3:
        raise CryptoError("bad a=crypto key parameters")
    material, extras = parts[0], parts[1:]
    if any(":" in extra for extra in extras):
        raise CryptoError("MKI is not supported")
    if len(extras) > 1:
        raise CryptoError("bad a=crypto key parameters")
    for extra in extras:
        match = _LIFETIME.fullmatch(extra)
        if match is None:
            raise CryptoError(f"bad key lifetime: {_bounded(extra)}")
        lifetime = 1 << int(match.group(1)) if match.group(1) is not None else int(match.group(2))
        if lifetime < MIN_LIFETIME:
            raise CryptoError("key lifetime too short (the PBX does not re-key)")
    if not _BASE64.fullmatch(material):
        raise CryptoError("key is not base64")
    try:
        # RFC 4568 6.1: base64 with or without padding; be lenient on the missing '='s only.
        key = base64.b64decode(material + "=" * (-len(material) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("key is not base64")
    if len(key) != suite.material_length:
        raise CryptoError(f"{suite.name} needs a {suite.material_length}-octet key and salt, not {len(key)}")
    return CryptoAttribute(int(tag_text), suite, key)


def format_crypto(crypto: CryptoAttribute) -> str:
    """The value of the `a=crypto` attribute for `crypto` (what follows `crypto:`)."""
    encoded = base64.b64encode(crypto.key).decode("ascii")
    return f"{crypto.tag} {crypto.suite.name} inline:{encoded}"


def new_crypto(suite_name: str, tag: int = 1, *, random: bytes | None = None) -> CryptoAttribute:
    """A crypto attribute of the PBX's with a fresh master key and salt (`os.urandom`; `random` for tests)."""
    suite = SUITES[suite_name]
    key = random if random is not None else os.urandom(suite.material_length)
    if len(key) != suite.material_length:
        raise ValueError("wrong key length for the suite")
    return CryptoAttribute(tag, suite, key)


def offer_cryptos(*, random: Iterable[bytes] | None = None) -> tuple[CryptoAttribute, ...]:
    """The PBX's `a=crypto` lines of an offer: one per suite of `OFFER_ORDER`, tags from 1, fresh keys."""
    randoms = list(random) if random is not None else [None] * len(OFFER_ORDER)
    return tuple(
        new_crypto(name, tag, random=r)
        for tag, (name, r) in enumerate(zip(OFFER_ORDER, randoms, strict=True), 1)
    )


def choose_crypto(values: Iterable[str]) -> CryptoAttribute | None:
    """From the values of an offer's `a=crypto` attributes, in the offer's order of preference, the first
    one the PBX can use; None when there is none (the media description is then refused). RFC 4568 7.1.2:
    the answer carries that line's tag and suite with a key of the answerer's."""
    seen: set[int] = set()
    for value in values:
        try:
            crypto = parse_crypto(value)
        except CryptoError:
            continue
        if crypto.tag in seen:
            continue
        seen.add(crypto.tag)
        return crypto
    return None


def answer_crypto(offered: CryptoAttribute, *, random: bytes | None = None) -> CryptoAttribute:
    """The PBX's answer to the chosen offered line: the same tag and suite, a fresh key (RFC 4568 7.1.2)."""
    return new_crypto(offered.suite.name, offered.tag, random=random)


def mask_crypto(text: str) -> str:
    """`text` (a SIP message or SDP) with the key material of every `inline:` key replaced by `***`: for
    logs, which must never carry keys. The rest of the line (tag, suite, lifetime) stays readable."""
    return _INLINE.sub(r"\1***", text)
