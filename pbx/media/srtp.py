"""SRTP (RFC 3711) for the relay and the PBX's own media, through libsrtp (`pylibsrtp`): the PBX does not
implement any cryptography itself.

A `SrtpLeg` is one phone's SRTP state: an inbound session keyed with the key the phone sent in its
`a=crypto` (RFC 4568: each side encrypts with its own key) and an outbound session keyed with the PBX's key
for that phone. `unprotect` and `protect` (and their RTCP counterparts for SRTCP) return None instead of
raising: a packet that fails authentication, a replay (libsrtp's replay window, RFC 3711 3.3.2) or a packet
too short is dropped and counted in `SrtpStats`, never relayed.

`srtp_transform` composes a relay direction's transform (`IRelayLeg.set_transform`): decrypt what the
source phone sends (when its leg is SRTP), apply the inner transform (transcoding, DTMF interworking) and
encrypt for the target phone (when its leg is SRTP). Between two SRTP legs the packet is decrypted with
one key and encrypted with the other.

This module knows nothing of SDP or SIP: suite names and key bytes in (the names of
`pbx.sip.sdp_crypto.SUITES`), packets out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pylibsrtp

__all__ = ["PROFILES", "SrtpEndpointLeg", "SrtpLeg", "SrtpStats", "srtcp_transform", "srtp_transform"]

PROFILES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}
"""SDES suite name (RFC 4568 6.2, RFC 7714 14.2) -> libsrtp profile."""

REPLAY_WINDOW = 128
"""Packets of libsrtp's replay window (RFC 3711 3.3.2 asks for at least 64)."""

Transform = Callable[[bytes], "bytes | None"]


@dataclass(slots=True)
class SrtpStats:
    """What one SRTP leg dropped: packets libsrtp refused (forged or corrupted: authentication failed;
    replayed; malformed), by direction of the check."""

    rtp_dropped: int = 0
    rtcp_dropped: int = 0
    replayed: int = 0
    auth_failed: int = 0


def _session(suite: str, key: bytes, ssrc_type: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=PROFILES[suite])
    policy.window_size = REPLAY_WINDOW
    policy.allow_repeat_tx = True  # a re-sent packet (a re-INVITE's switch, a pacer's repeat) is not fatal
    return pylibsrtp.Session(policy=policy)


class SrtpLeg:
    """The SRTP sessions of one phone's leg: `inbound` decrypts what the phone sends (its key),
    `outbound` encrypts what the PBX sends it (the PBX's key for it). Counts what it drops."""

    __slots__ = ("_inbound", "_outbound", "stats", "suite")

    def __init__(self, suite: str, remote_key: bytes, local_key: bytes) -> None:
        """
        Args:
            suite: The negotiated suite (a key of `PROFILES`).
            remote_key: The phone's master key and salt (its `a=crypto`).
            local_key: The PBX's master key and salt for this phone (the PBX's `a=crypto`).

        Raises:
            ValueError: An unknown suite or a key libsrtp refuses.
        """
        if suite not in PROFILES:
            raise ValueError(f"unsupported SRTP suite {suite!r}")
        try:
            self._inbound = _session(suite, remote_key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
            self._outbound = _session(suite, local_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        except pylibsrtp.Error as e:
            raise ValueError(f"libsrtp refused the key: {e}") from None
        self.suite = suite
        self.stats = SrtpStats()

    def _count(self, error: Exception, rtcp: bool) -> None:
        stats = self.stats
        if rtcp:
            stats.rtcp_dropped += 1
        else:
            stats.rtp_dropped += 1
        text = str(error).lower()
        if "replay" in text:
            stats.replayed += 1
        elif "auth" in text:
            stats.auth_failed += 1

    def unprotect(self, packet: bytes) -> bytes | None:
        """The RTP packet of an SRTP packet from the phone; None (counted) when libsrtp refuses it."""
        try:
            return self._inbound.unprotect(packet)
        except pylibsrtp.Error as e:
            self._count(e, False)
            return None

    def protect(self, packet: bytes) -> bytes | None:
        """The SRTP packet of an RTP packet for the phone; None (counted) when libsrtp refuses it."""
        try:
            return self._outbound.protect(packet)
        except pylibsrtp.Error as e:
            self._count(e, False)
            return None

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The RTCP packet of an SRTCP packet from the phone (RFC 3711 3.4); None (counted) when refused."""
        try:
            return self._inbound.unprotect_rtcp(packet)
        except pylibsrtp.Error as e:
            self._count(e, True)
            return None

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        """The SRTCP packet of an RTCP packet for the phone; None (counted) when libsrtp refuses it."""
        try:
            return self._outbound.protect_rtcp(packet)
        except pylibsrtp.Error as e:
            self._count(e, True)
            return None


def srtp_transform(
    source: SrtpLeg | None, target: SrtpLeg | None, inner: Transform | None = None
) -> Transform | None:
    """The relay's transform for the direction source phone -> target phone: decrypt with `source`'s
    inbound key (when the source leg is SRTP), apply `inner` (when given), encrypt with `target`'s outbound
    key (when the target leg is SRTP). None when there is nothing to do."""
    if source is None and target is None:
        return inner
    if inner is None:
        if source is None:
            assert target is not None
            return target.protect
        if target is None:
            return source.unprotect
        unprotect, protect = source.unprotect, target.protect

        def both(packet: bytes) -> bytes | None:
            plain = unprotect(packet)
            return None if plain is None else protect(plain)

        return both
    decrypt = source.unprotect if source is not None else None
    encrypt = target.protect if target is not None else None

    def chained(packet: bytes) -> bytes | None:
        plain = decrypt(packet) if decrypt is not None else packet
        if plain is None:
            return None
        out = inner(plain)
        if out is None or encrypt is None:
            return out
        return encrypt(out)

    return chained


def srtcp_transform(source: SrtpLeg | None, target: SrtpLeg | None) -> Transform | None:
    """The relay's RTCP transform for the direction source phone -> target phone (RFC 3711 3.4): SRTCP
    decrypted with `source`'s key, encrypted with `target`'s; None when neither leg is SRTP."""
    if source is None and target is None:
        return None
    if source is None:
        assert target is not None
        return target.protect_rtcp
    if target is None:
        return source.unprotect_rtcp
    unprotect, protect = source.unprotect_rtcp, target.protect_rtcp

    def both(packet: bytes) -> bytes | None:
        plain = unprotect(packet)
        return None if plain is None else protect(plain)

    return both


class _Decrypting:
    """A relay consumer that hands the attached endpoint what the phone sent, decrypted."""

    __slots__ = ("_consumer", "_srtp")

    def __init__(self, consumer: Any, srtp: SrtpLeg) -> None:
        self._consumer, self._srtp = consumer, srtp

    def rtp_received(self, data: bytes, addr: Any) -> None:
        plain = self._srtp.unprotect(data)
        if plain is not None:
            self._consumer.rtp_received(plain, addr)

    def rtcp_received(self, data: bytes, addr: Any) -> None:
        plain = self._srtp.unprotect_rtcp(data)
        if plain is not None:
            self._consumer.rtcp_received(plain, addr)


class SrtpEndpointLeg:
    """A relay leg (`IRelayLeg`) to an SRTP phone as the PBX's own media sees it: `attach`ed endpoints get
    what the phone sends decrypted, and what they `send_rtp`/`send_rtcp` is encrypted for the phone. The rest
    (addresses, `last_sent`: RTP headers are not encrypted) is the leg's."""

    __slots__ = ("_leg", "_srtp")

    def __init__(self, leg: Any, srtp: SrtpLeg) -> None:
        self._leg, self._srtp = leg, srtp

    def attach(self, consumer: Any) -> None:
        self._leg.attach(_Decrypting(consumer, self._srtp))

    def send_rtp(self, data: bytes) -> None:
        packet = self._srtp.protect(data)
        if packet is not None:
            self._leg.send_rtp(packet)

    def send_rtcp(self, data: bytes) -> None:
        packet = self._srtp.protect_rtcp(data)
        if packet is not None:
            self._leg.send_rtcp(packet)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._leg, name)
