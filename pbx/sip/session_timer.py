"""Session timers for INVITE sessions (RFC 4028): negotiation of Session-Expires, Min-SE and the refresher.

The pure part of RFC 4028, used by `pbx.sip.session`:

- `SessionTimerPolicy`: the interval we ask for and the smallest we accept (Min-SE, at least 90 s, 4).
- `negotiate_uas` (section 9): what a UAS answers to an INVITE, re-INVITE or UPDATE: a `422` with our
  Min-SE when the requested interval is too small (only to a UAC that supports `timer`, 9), else the
  `Session-Expires` (and `Require: timer` when the UAC refreshes) of the 2xx, or no timer.
- `request_headers` (7.1, 7.4): the Session-Expires and Min-SE a UAC puts in an INVITE or a refresh.
- `from_response` (7.2): the interval and refresher a UAC learns from a 2xx (none: no timer).
- `expiry_margin` (10): the non-refresher sends BYE `min(32, interval / 3)` seconds before expiry; the
  refresher refreshes at half the interval.

`refresher` values are relative to one transaction: `uac` is the sender of the request. A negotiated
timer is kept as `SessionTimer(interval, we_refresh)`. This module knows nothing of transports, dialogs or
clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pbx.sip.errors import SipError
from pbx.sip.message import Request, Response

TIMER: Final = "timer"
RFC_MIN_SE: Final = 90  # RFC 4028 4: Min-SE is never below 90 seconds


@dataclass(frozen=True, slots=True)
class SessionTimerPolicy:
    """Our session timer preferences.

    Attributes:
        interval: the Session-Expires we ask for as UAC, and the largest we let a UAS pick (seconds).
        min_se: the smallest interval we accept (422 below it); at least 90.
        enabled: False: never ask for a timer nor refresh (requests with `Require: timer` still get a
            timer, since the stack accepted them).
    """

    interval: int = 1800
    min_se: int = RFC_MIN_SE
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.min_se < RFC_MIN_SE:
            raise ValueError(f"min_se must be at least {RFC_MIN_SE}")
        if self.interval < self.min_se:
            raise ValueError("interval must not be below min_se")


@dataclass(frozen=True, slots=True)
class SessionTimer:
    """A negotiated session timer: `interval` seconds, refreshed by us when `we_refresh`."""

    interval: int
    we_refresh: bool

    @property
    def refresh_after(self) -> float:
        """When the refresher sends its refresh: half the interval (RFC 4028 10)."""
        return self.interval / 2

    @property
    def expire_after(self) -> float:
        """When the other side gives up and sends BYE: `min(32, interval / 3)` before expiry (10)."""
        return self.interval - expiry_margin(self.interval)


def expiry_margin(interval: float) -> float:
    """How long before the session expires the non-refresher sends its BYE (RFC 4028 10)."""
    return min(32.0, interval / 3)


def _delta(text: str, name: str) -> int:
    value = text.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        raise SipError(400, f"Bad {name} header")
    return int(value)


def session_expires(message: Request | Response) -> tuple[int, str | None] | None:
    """The Session-Expires of a message as (seconds, refresher or None); None when absent.

    Raises:
        SipError: 400 when malformed (delta-seconds, `;refresher=uac|uas`).
    """
    text = message.headers.get("Session-Expires")
    if text is None:
        return None
    value, *params = text.split(";")
    refresher = None
    for param in params:
        key, _, param_value = param.partition("=")
        if key.strip().lower() == "refresher":
            refresher = param_value.strip().lower()
            if refresher not in ("uac", "uas"):
                raise SipError(400, "Bad Session-Expires refresher")
    seconds = _delta(value, "Session-Expires")
    if seconds < 1:
        raise SipError(400, "Bad Session-Expires header")
    return seconds, refresher


def min_se(message: Request | Response) -> int | None:
    """The Min-SE of a message in seconds, None when absent.

    Raises:
        SipError: 400 when malformed.
    """
    text = message.headers.get("Min-SE")
    if text is None:
        return None
    return _delta(text.split(";")[0], "Min-SE")


def has_option(message: Request | Response, name: str, tag: str = TIMER) -> bool:
    """Whether the option tag appears in the header `name` (Supported, Require)."""
    return any(value.strip().lower() == tag for value in message.headers.get_all(name))


def negotiate_uas(
    request: Request, policy: SessionTimerPolicy
) -> tuple[SessionTimer | None, list[tuple[str, str]]]:
    """The session timer a UAS grants to an INVITE, re-INVITE or UPDATE (RFC 4028 9).

    Returns:
        (the timer, or None for none; headers for the 2xx: Session-Expires, and Require: timer when the
        UAC is the refresher).

    Raises:
        SipError: 422 with our Min-SE when the UAC supports timer and asked for less than our minimum;
            400 for malformed headers.
    """
    asked = session_expires(request)
    if asked is None and not policy.enabled:
        return None, []  # nothing asked, nothing offered: Supported and Require need no parsing
    uac_supports = has_option(request, "Supported") or has_option(request, "Require")
    if asked is None and not (uac_supports and policy.enabled):
        return None, []
    floor = max(policy.min_se, min_se(request) or RFC_MIN_SE)
    if asked is None:
        interval, refresher = max(policy.interval, floor), None
    else:
        interval, refresher = asked
        if interval < policy.min_se:
            if uac_supports:
                raise SipError(422, None, [("Min-SE", str(policy.min_se))])
            # A proxy asked for it for a UAC that would not understand a 422: we take it as it is (a UAS
            # must not lengthen it, RFC 4028 9), never below the 90 s every Min-SE respects.
            interval = max(interval, RFC_MIN_SE)
        interval = min(interval, max(policy.interval, floor))  # we may shorten, never below Min-SE
    if refresher is None:
        refresher = "uac" if uac_supports else "uas"
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if refresher == "uac":
        headers.append(("Require", TIMER))
    return SessionTimer(interval, we_refresh=refresher == "uas"), headers


def request_headers(
    policy: SessionTimerPolicy, current: SessionTimer | None, floor: int | None = None
) -> list[tuple[str, str]]:
    """The Session-Expires and Min-SE a UAC sends (RFC 4028 7.1, 7.4).

    In an initial INVITE (`current` None) we ask for our interval and let the UAS choose the refresher;
    in a refresh we keep the running interval and say who refreshes (`uac` when that is us). `floor` is a
    Min-SE learnt from a 422, which raises our request to it.
    """
    if not policy.enabled and current is None:
        return []
    minimum = max(policy.min_se, floor or 0)
    if current is None:
        return [("Session-Expires", str(max(policy.interval, minimum))), ("Min-SE", str(minimum))]
    refresher = "uac" if current.we_refresh else "uas"
    return [
        ("Session-Expires", f"{max(current.interval, minimum)};refresher={refresher}"),
        ("Min-SE", str(minimum)),
    ]


def from_response(response: Response) -> SessionTimer | None:
    """The timer a UAC runs after a 2xx (RFC 4028 7.2): none without Session-Expires; a missing refresher
    is taken as `uac` (refreshing more often never ends a call).

    Raises:
        SipError: 400 for a malformed Session-Expires (the caller treats the timer as absent).
    """
    found = session_expires(response)
    if found is None:
        return None
    interval, refresher = found
    return SessionTimer(max(interval, RFC_MIN_SE), we_refresh=refresher != "uas")
