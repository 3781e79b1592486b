"""What both sides of a SIP subscription share (RFC 6665): the Event and Subscription-State headers, the
Expires of a SUBSCRIBE, Accept matching, and the plug-in contract of an event package.

- `EventHeader`: `Event: message-summary;id=7` (RFC 6665 8.2.1): the package and its `id` parameter, which
  together name a subscription within a dialog (4.5.2).
- `SubscriptionState`: `Subscription-State: active;expires=600` / `terminated;reason=timeout;retry-after=30`
  (RFC 6665 8.2.3, reasons 4.1.3 and 4.2.2).
- `IEventPackage`: an event package (RFC 6665 4.4) as the notifier sees it: its name, the content type of
  its bodies, the resource a SUBSCRIBE asks for (and whether the subscriber may have it), the body of a
  resource's state.

The notifier is `pbx.sip.subscription_notifier`, the subscriber `pbx.sip.subscription_subscriber`. This
module knows nothing of transports, transactions or of any particular package.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Final

from zope.interface import Attribute, Interface

from pbx.sip.errors import SipError, SipParseError
from pbx.sip.headers import Params, format_header_params, is_token, parse_header_params, split_header_values
from pbx.sip.message import Message, Request

# Subscription states (RFC 6665 4.1.2.3, 8.2.3).
ACTIVE: Final = "active"
PENDING: Final = "pending"
TERMINATED: Final = "terminated"

# Reasons of a terminated subscription (RFC 6665 4.2.2) and what the subscriber does about each (4.1.3).
DEACTIVATED: Final = "deactivated"
PROBATION: Final = "probation"
REJECTED: Final = "rejected"
TIMEOUT: Final = "timeout"
GIVEUP: Final = "giveup"
NORESOURCE: Final = "noresource"
INVARIANT: Final = "invariant"

RETRY_AT_ONCE: Final = frozenset({DEACTIVATED, TIMEOUT})
"""Reasons after which a subscriber may subscribe again at once (RFC 6665 4.1.3)."""
NEVER_RETRY: Final = frozenset({REJECTED, NORESOURCE, INVARIANT})
"""Reasons after which a subscriber must not subscribe again to the same resource (RFC 6665 4.1.3)."""

MAX_EXPIRES: Final = 2**32 - 1  # delta-seconds (RFC 3261 25.1): larger values are taken as this


@dataclass(frozen=True, slots=True)
class EventHeader:
    """An Event header (RFC 6665 8.2.1): `package` (with any template, `presence.winfo`) and `id`."""

    package: str
    id: str | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> EventHeader:
        """Parse `message-summary;id=abc`.

        Raises:
            SipParseError: not a token with parameters.
        """
        head, _, rest = text.partition(";")
        package = head.strip()
        if not is_token(package):
            raise SipParseError("Bad Event header")
        params = parse_header_params(rest) if rest else ()
        event_id = next((v for k, v in params if k.lower() == "id"), None)
        return cls(package, event_id, params)

    def matches(self, other: EventHeader) -> bool:
        """The same subscription: same package (compared case-sensitively, RFC 6665 8.2.1) and same id."""
        return self.package == other.package and self.id == other.id

    def __str__(self) -> str:
        return self.package + format_header_params(self.params)


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """A Subscription-State header (RFC 6665 8.2.3).

    Attributes:
        state: `active`, `pending`, `terminated` (lower case) or an extension value.
        reason: the reason of a terminated subscription (lower case), or None.
        expires: seconds left of an active or pending subscription, or None.
        retry_after: seconds before subscribing again, or None.
    """

    state: str
    reason: str | None = None
    expires: int | None = None
    retry_after: int | None = None

    @classmethod
    def parse(cls, text: str) -> SubscriptionState:
        """Parse `active;expires=600` (unknown parameters are ignored).

        Raises:
            SipParseError: a state that is not a token, or expires/retry-after that are not delta-seconds.
        """
        head, _, rest = text.partition(";")
        state = head.strip().lower()
        if not is_token(state):
            raise SipParseError("Bad Subscription-State header")
        reason = expires = retry_after = None
        for key, value in parse_header_params(rest) if rest else ():
            key = key.lower()
            if key == "reason" and value is not None:
                reason = value.lower()
            elif key == "expires":
                expires = _delta_seconds(value, "Subscription-State expires")
            elif key == "retry-after":
                retry_after = _delta_seconds(value, "Subscription-State retry-after")
        return cls(state, reason, expires, retry_after)

    def __str__(self) -> str:
        text = self.state
        if self.reason is not None:
            text += f";reason={self.reason}"
        if self.expires is not None:
            text += f";expires={self.expires}"
        if self.retry_after is not None:
            text += f";retry-after={self.retry_after}"
        return text


def _delta_seconds(value: str | None, what: str) -> int:
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise SipParseError(f"Bad {what}")
    return min(int(text), MAX_EXPIRES)


def event_of(message: Message) -> EventHeader | None:
    """The Event header of a SUBSCRIBE or NOTIFY (its compact form `o` included), or None when absent.

    Raises:
        SipError: 400 when it does not parse.
    """
    text = message.headers.get("Event")
    if text is None:
        return None
    try:
        return EventHeader.parse(text)
    except SipParseError as e:
        raise SipError(400, e.reason) from None


def expires_of(request: Request) -> int | None:
    """The Expires header of a SUBSCRIBE in seconds (capped at 2**32-1), or None when absent.

    Raises:
        SipError: 400 "Bad Expires header".
    """
    value = request.headers.get("Expires")
    if value is None:
        return None
    try:
        return _delta_seconds(value, "Expires header")
    except SipParseError as e:
        raise SipError(400, e.reason) from None


def accepts(request: Request, content_type: str) -> bool:
    """Whether the request's Accept headers allow `content_type` (RFC 3261 20.1: `*/*`, `type/*`); a request
    without Accept takes the package's default type (RFC 6665 4.2.1.1 then asks for no check)."""
    values = request.headers.get_all("Accept")
    if not values:
        return True
    wanted = content_type.lower()
    major = wanted.partition("/")[0]
    for value in values:
        for item in split_header_values(value):
            media = item.partition(";")[0].strip().lower()
            if media in (wanted, "*/*", f"{major}/*"):
                return True
    return False


class IEventPackage(Interface):
    """An event package (RFC 6665 4.4, 7) as the notifier uses it: a plug-in that knows its resources.

    The package pushes changes by calling `Notifier.notify(package.name, resource)`; the notifier then
    asks it for the body of the resource's current state and sends it to every subscriber of the resource.
    """

    name = Attribute("The Event package name, e.g. 'message-summary'.")
    content_type = Attribute(
        "The Content-Type of its NOTIFY bodies, e.g. 'application/simple-message-summary'."
    )

    def resource_for(request: Request, identity: Any) -> Hashable:
        """The resource a SUBSCRIBE from the authenticated `identity` asks for (a hashable key).

        Raises:
            SipError: 404 when there is no such resource, 403 when `identity` may not subscribe to it.
        """

    def body(resource: Hashable) -> bytes:
        """The body describing the current state of `resource`.

        A package whose documents carry a version per subscription (RFC 4235 4.1.1) may also have
        `versioned_body(resource, version) -> bytes`: the notifier then calls it instead, with 0, 1, 2 ...
        for the NOTIFYs of each subscription."""
