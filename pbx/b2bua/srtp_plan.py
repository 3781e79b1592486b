"""SRTP for one call's two sides (RFC 3711 media, SDES keys in `a=crypto`, RFC 4568): each side's phone is
offered and answered by its own setting, and the relay decrypts and re-encrypts between them.

Each side has a `SrtpPolicy`: its mode ("off", "optional", "mandatory"; `docs/security.md`), whether its
signalling is TLS, and whether keys may travel over plain signalling anyway. The B2BUA sees every audio
description twice, and `SrtpPlan` rewrites it both times:

- `incoming(side, media, is_offer)`, for what a phone sent: an `RTP/SAVP` offer is checked against the
  side's policy (488 when SRTP is off for it, or when the keys came over plain UDP/TCP, or when no `a=crypto`
  line is usable) and its chosen key is remembered; an answer to an `RTP/SAVP` offer of the PBX must name one
  of the offered tags. What goes on is plain `RTP/AVP` without `a=crypto` (the codec plan and the other side
  never see keys).
- `outgoing(side, media, is_offer)`, for what the PBX sends: an offer is `RTP/SAVP` with fresh keys for both
  offered suites when the side's mode is mandatory, plain `RTP/AVP` otherwise (RFC 4568 has no "best
  effort": an `RTP/SAVP` offer that a plain phone cannot take fails the call); an answer to an `RTP/SAVP`
  offer is `RTP/SAVP` with the chosen tag and suite and a fresh PBX key (RFC 4568 7.1.2).

Once both sides are answered, each side with SRTP has a `pbx.media.srtp.SrtpLeg`, and `SecureSession` (the
relay session the codec plan sees) composes each direction's transform: decrypt the source phone's SRTP,
the codec plan's transform (transcoding, DTMF interworking), encrypt for the target phone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from pbx.media.interfaces import IRelaySession
from pbx.media.relay_channel import Transform
from pbx.media.srtp import SrtpEndpointLeg, SrtpLeg, SrtpStats, srtcp_transform, srtp_transform
from pbx.sip.errors import SipError
from pbx.sip.sdp import MediaDescription, replace
from pbx.sip.sdp_crypto import (
    CryptoAttribute,
    answer_crypto,
    choose_crypto,
    format_crypto,
    offer_cryptos,
    parse_crypto,
)
from pbx.sip.sdp_crypto import CryptoError as _CryptoError

__all__ = ["SRTP_PROTO", "SecureSession", "SrtpPlan", "SrtpPolicy"]

SRTP_PROTO = "RTP/SAVP"
PLAIN_PROTO = "RTP/AVP"
_OTHER = {"a": "b", "b": "a"}


def _refused(reason: str) -> SipError:
    return SipError(488, reason, [("Warning", f'306 pbx "{reason}"')])


@dataclass(frozen=True, slots=True)
class SrtpPolicy:
    """One side's SRTP setting.

    Attributes:
        mode: "off", "optional" or "mandatory".
        secure: Whether the side's signalling is TLS (SDES keys travel encrypted).
        allow_plain: Whether keys may be exchanged over plain UDP/TCP signalling anyway.
    """

    mode: str = "optional"
    secure: bool = False
    allow_plain: bool = False

    @property
    def keys_may_travel(self) -> bool:
        """Whether SDES keys may be exchanged with this side at all."""
        return self.mode != "off" and (self.secure or self.allow_plain)


def _strip(
    media: MediaDescription, proto: str, cryptos: tuple[CryptoAttribute, ...] = ()
) -> MediaDescription:
    attributes = tuple(a for a in media.attributes if a[0].lower() != "crypto")
    if not cryptos and proto == media.proto and len(attributes) == len(media.attributes):
        return media  # a plain stream staying plain (most calls): nothing to change
    attributes += tuple(("crypto", format_crypto(c)) for c in cryptos)
    return replace(media, proto=proto, attributes=attributes)


class SecureSession:
    """The relay session as the codec plan sees it: `leg(side).set_transform(t)` installs `t` wrapped in the
    side's SRTP decryption and the other side's encryption. Everything else is the session's own."""

    def __init__(self, session: IRelaySession, plan: SrtpPlan) -> None:
        self._session = session
        self._plan = plan

    def leg(self, side: str) -> Any:
        return _SecureLeg(self._session.leg(side), side, self._plan)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class _SecureLeg:
    __slots__ = ("_leg", "_plan", "_side")

    def __init__(self, leg: Any, side: str, plan: SrtpPlan) -> None:
        self._leg, self._side, self._plan = leg, side, plan

    def set_transform(self, transform: Transform | None) -> None:
        self._plan.inner[self._side] = transform
        self._plan.apply(self._side)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._leg, name)


T = TypeVar("T")


class _Sides(Generic[T]):
    """A value for side "a" and one for side "b", read and set as a dict keyed by side."""

    __slots__ = ("a", "b")

    def __init__(self, a: T, b: T) -> None:
        self.a = a
        self.b = b

    def __getitem__(self, side: str) -> T:
        if side == "a":
            return self.a
        if side == "b":
            return self.b
        raise KeyError(side)

    def __setitem__(self, side: str, value: T) -> None:
        if side == "a":
            self.a = value
        elif side == "b":
            self.b = value
        else:
            raise KeyError(side)

    def get(self, side: str, default: T | None = None) -> T | None:
        return self[side] if side in ("a", "b") else default


_DEFAULT_POLICY = SrtpPolicy()


@lru_cache(maxsize=64)
def srtp_policy(mode: str = "optional", secure: bool = False, allow_plain: bool = False) -> SrtpPolicy:
    """The `SrtpPolicy` of these values, one shared instance each (a call keeps one per side for its
    length; the values are few: three modes and two flags)."""
    return SrtpPolicy(mode, secure, allow_plain)


class SrtpPlan:
    """The SRTP state of one call's two sides (module docstring)."""

    def __init__(self, session: IRelaySession) -> None:
        self._session = session
        # Per side ("a", "b"): `_Sides`, two slots each (a call keeps seven of these for its length).
        self.policies: _Sides[SrtpPolicy] = _Sides(_DEFAULT_POLICY, _DEFAULT_POLICY)
        self.legs: _Sides[SrtpLeg | None] = _Sides(None, None)
        self.inner: _Sides[Transform | None] = _Sides(None, None)
        self._remote: _Sides[CryptoAttribute | None] = _Sides(None, None)  # a phone's offered key
        self._answer_proto: _Sides[str] = _Sides(SRTP_PROTO, SRTP_PROTO)  # RTP/AVP for best effort
        self._offered: _Sides[tuple[CryptoAttribute, ...]] = _Sides((), ())  # the PBX's offered keys
        # The keys of each side's last SDES exchange (the phone's, the PBX's): a re-offer with the same key
        # (a session refresh, a dial after the IVR answered) keeps the PBX's key and the libsrtp sessions.
        self._agreed: _Sides[tuple[CryptoAttribute, CryptoAttribute] | None] = _Sides(None, None)
        self._installed = False

    def set_policy(self, side: str, policy: SrtpPolicy) -> None:
        self.policies[side] = policy

    @property
    def active(self) -> bool:
        """Whether either side speaks SRTP."""
        return self.legs["a"] is not None or self.legs["b"] is not None

    def stats(self, side: str) -> SrtpStats | None:
        leg = self.legs[side]
        return leg.stats if leg is not None else None

    # -- descriptions --------------------------------------------------------------------------------------

    def incoming(self, side: str, media: MediaDescription, is_offer: bool) -> MediaDescription:
        """What `side`'s phone sent, checked and made plain (module docstring).

        Raises:
            SipError: 488 when the side's policy or the keys refuse it.
        """
        secure = media.proto.upper() == SRTP_PROTO
        policy = self.policies[side]
        if is_offer:
            self._remote[side] = None
            self._answer_proto[side] = SRTP_PROTO
            if not secure:
                cryptos = media.attribute_values("crypto")
                if cryptos and policy.keys_may_travel and media.proto.upper() == PLAIN_PROTO:
                    # "Best effort" SRTP (baresip's mediaenc=srtp): RTP/AVP with keys. Answered alike.
                    chosen = choose_crypto(cryptos)
                    if chosen is not None:
                        self._remote[side] = chosen
                        self._answer_proto[side] = media.proto
                        return _strip(media, PLAIN_PROTO)
                if policy.mode == "mandatory":
                    raise _refused("SRTP required")
                return media if not cryptos else _strip(media, media.proto)
            if policy.mode == "off":
                raise _refused("SRTP not accepted")
            if not policy.keys_may_travel:
                raise _refused("SRTP keys over plain signalling refused")
            chosen = choose_crypto(media.attribute_values("crypto"))
            if chosen is None:
                raise _refused("No usable crypto attribute")
            self._remote[side] = chosen
            return _strip(media, PLAIN_PROTO)
        # An answer to the PBX's offer.
        offered = self._offered[side]
        if not offered:
            if secure:
                raise _refused("SRTP answer to a plain offer")
            return media
        if not secure:
            raise _refused("SRTP required")
        values = media.attribute_values("crypto")
        if len(values) != 1:
            raise _refused("An SRTP answer needs one crypto attribute")
        try:
            answered = parse_crypto(values[0])
        except _CryptoError:
            raise _refused("No usable crypto attribute") from None
        ours = next((c for c in offered if c.tag == answered.tag and c.suite == answered.suite), None)
        if ours is None:
            raise _refused("Crypto answer matches no offered tag")
        if self._agreed[side] != (answered, ours) or self.legs[side] is None:
            self._set_leg(side, answered, ours)  # the same keys again keep libsrtp's sessions
        return _strip(media, PLAIN_PROTO)

    def outgoing(self, side: str, media: MediaDescription, is_offer: bool) -> MediaDescription:
        """What the PBX sends to `side`'s phone, with the PBX's keys where SRTP is wanted (docstring)."""
        if is_offer:
            agreed = self._agreed[side]
            if agreed is not None and self.legs[side] is not None:
                # A re-offer to a phone that speaks SRTP (hold, a session refresh from the other side): SRTP
                # again, with the PBX's current key (RFC 4568 7.1.4 lets an offerer keep its key).
                self._offered[side] = (agreed[1],)
                return _strip(media, SRTP_PROTO, self._offered[side])
            if self.policies[side].mode == "mandatory":
                if not self.policies[side].keys_may_travel:
                    raise _refused("SRTP keys over plain signalling refused")
                self._offered[side] = offer_cryptos()
                return _strip(media, SRTP_PROTO, self._offered[side])
            self._offered[side] = ()
            self.legs[side] = None
            return _strip(media, PLAIN_PROTO)
        remote = self._remote[side]
        if remote is None:
            self.legs[side] = None
            self._install()
            return _strip(media, PLAIN_PROTO)
        agreed = self._agreed[side]
        if agreed is not None and agreed[0] == remote and self.legs[side] is not None:
            ours = agreed[1]
        else:
            ours = answer_crypto(remote)
            self._set_leg(side, remote, ours)
        self._install()
        return _strip(media, self._answer_proto[side], (ours,))

    def _set_leg(self, side: str, remote: CryptoAttribute, ours: CryptoAttribute) -> None:
        try:
            self.legs[side] = SrtpLeg(remote.suite.name, remote.key, ours.key)
        except ValueError:
            raise _refused("Crypto keys refused") from None
        self._agreed[side] = (remote, ours)

    def endpoint_leg(self, side: str, leg: Any) -> Any:
        """The relay leg `leg` of `side` as the PBX's own media (IVR, prompts, recording, voicemail) must use
        it: through SRTP when the side speaks it (`pbx.media.srtp.SrtpEndpointLeg`), else `leg` itself."""
        srtp = self.legs[side]
        return leg if srtp is None else SrtpEndpointLeg(leg, srtp)

    # -- the relay's transforms ------------------------------------------------------------------------------

    def _install(self) -> None:
        """After an answer: (re)install both directions' transforms (a plain call without a codec plan
        transform keeps the relay's hot path)."""
        if self.active or self._installed:
            self._installed = self.active
            self.apply("a")
            self.apply("b")

    def apply(self, side: str) -> None:
        """Install the transform of what `side`'s phone sends."""
        source, target = self.legs[side], self.legs[_OTHER[side]]
        leg = self._session.leg(side)
        leg.set_transform(srtp_transform(source, target, self.inner[side]))
        set_rtcp = getattr(leg, "set_rtcp_transform", None)  # the UDP relay's legs: SRTCP too
        if set_rtcp is not None:
            set_rtcp(srtcp_transform(source, target))
