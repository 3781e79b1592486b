"""The notifier side of SIP subscriptions (RFC 6665 4.2, 4.4.3; RFC 5057 for NOTIFY failures).

`Notifier` is the transaction user of new SUBSCRIBE requests (`SipStack.register("SUBSCRIBE", notifier)`).
For each one, in order:

1. The Event header names a registered package (`489 Bad Event` with Allow-Events otherwise, 400 without
   one); the Accept header allows the package's content type (`406`); Expires lies between the minimum and
   the maximum (`423 Interval Too Brief` with Min-Expires below it, capped to the maximum, the default when
   absent; 0 is a fetch, 4.4.3).
2. `authorize(request, transaction)` names the subscriber: it returns an identity, or None when it has
   answered the request itself (a `401` challenge), or a Deferred of either; it may raise `SipError`.
3. The package names the resource (`IEventPackage.resource_for`, which raises 403/404).
4. `200` with Expires and Contact (RFC 6665 4.2.1.1: `202` is deprecated), the UAS dialog goes into the
   stack's dialog table, and the first NOTIFY leaves at once with `Subscription-State: active;expires=N`.

Then each `Subscription` (the dialog's `IDialogUsage`) answers in-dialog SUBSCRIBEs: a refresh (200 and a
NOTIFY with the current state, 4.2.1.2) or an unsubscribe (Expires: 0: 200 and a final NOTIFY with
`Subscription-State: terminated` and the current state, 4.2.1.4). `notify(package, resource)` sends the
current state to every subscriber of a resource; a subscription that is not refreshed ends with
`terminated;reason=timeout` (4.2.2) and `stop()` ends them all with `deactivated` (or any reason, e.g.
`noresource` with `end`). A NOTIFY answered with a response that ends the dialog or the usage (408, 481,
404, 480 ... RFC 5057 5.1, 5.2), that times out or cannot be sent ends the subscription without another
NOTIFY. At most one NOTIFY per subscription is in flight (RFC 6665 4.2.2): a change meanwhile is sent,
as the state of that moment, when the previous one is answered.

NOTIFYs go to the first route of the dialog's route set if it has one, else back to the source of the last
SUBSCRIBE (the flow the phone reaches us from, across NAT, as the registrar remembers flows), not to a
private Contact address. In-dialog SUBSCRIBEs are not authenticated again: the dialog's tags (48 random
bits each) stand for the first authentication.

This module knows nothing of the PBX, of authentication schemes or of any particular event package.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from pbx.sip.dialog import Dialog, destination
from pbx.sip.errors import SipError, SipParseError
from pbx.sip.interfaces import (
    IClientTransactionUser,
    IDialogUsage,
    IFlow,
    IServerTransaction,
    ISipStack,
    ITransactionUser,
)
from pbx.sip.message import Request, Response, new_tag
from pbx.sip.subscription import (
    ACTIVE,
    DEACTIVATED,
    TERMINATED,
    TIMEOUT,
    EventHeader,
    IEventPackage,
    SubscriptionState,
    accepts,
    event_of,
    expires_of,
)

# Responses to a NOTIFY that end the subscription (RFC 5057 5.1 dialog-terminating, 5.2 usage-terminating);
# any other error (401, 491, 500, 503 ...) ends only its transaction.
ENDING_RESPONSES: Final = frozenset(
    {404, 405, 408, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 502, 604}
)

Authorize = Callable[[Request, IServerTransaction], Any]
"""`authorize(request, transaction) -> identity, None or a Deferred of either`; None: it answered."""


@dataclass(frozen=True, slots=True)
class SubscriptionPolicy:
    """Expiry bounds in seconds (RFC 6665 4.2.1.1) and how many subscriptions the notifier keeps.

    Attributes:
        min_expires: a SUBSCRIBE asking for less (but more than 0) gets `423` with Min-Expires.
        max_expires: longer subscriptions are shortened to it.
        default_expires: the duration when the SUBSCRIBE names none (packages define it; 3600 is common).
        max_subscriptions: beyond this many live subscriptions new ones get `503` with Retry-After.
    """

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_subscriptions: int = 10_000


@implementer(IDialogUsage, IClientTransactionUser)
class Subscription:
    """One subscription on the notifier side: its dialog, resource, expiry timer and NOTIFYs.

    Attributes:
        package: the event package.
        resource: the package's key for the resource.
        identity: whoever `authorize` said the subscriber is.
        event: the SUBSCRIBE's Event header (package and id), repeated in each NOTIFY.
        dialog: the UAS dialog.
        state: `active` until it ends, then `terminated`.
        reason: why it ended (`timeout`, `deactivated` ...), None while active or after an unsubscribe.
    """

    _log = Logger()

    def __init__(
        self,
        notifier: Notifier,
        package: IEventPackage,
        resource: Hashable,
        identity: Any,
        event: EventHeader,
        dialog: Dialog,
        flow: IFlow,
    ) -> None:
        self._notifier = notifier
        self._stack = notifier.stack
        self.package = package
        self.resource = resource
        self.identity = identity
        self.event = event
        self.dialog = dialog
        self.state = ACTIVE
        self.reason: str | None = None
        self._target = (flow.transport.lower(), flow.remote_address[0], flow.remote_address[1])
        self._expires_at = 0.0
        self._timer_expiry: IDelayedCall | None = None
        self._in_flight = False
        self._queued = False  # a NOTIFY waits for the one in flight
        self.version = 0  # NOTIFYs built so far: a package with `versioned_body` numbers its documents

    @property
    def expires_in(self) -> int:
        """Whole seconds left (0 once ended)."""
        if self.state == TERMINATED:
            return 0
        return max(0, round(self._expires_at - self._stack.clock.seconds()))

    def start(self, expires: int) -> None:
        """(Re)arm the expiry timer and send the current state."""
        self._expires_at = self._stack.clock.seconds() + expires
        if self._timer_expiry is not None and self._timer_expiry.active():
            self._timer_expiry.reset(expires)
        else:
            self._timer_expiry = self._stack.clock.callLater(expires, self._expired)
        self.send_state()

    def send_state(self) -> None:
        """Send a NOTIFY with the resource's current state (or once the one in flight is answered)."""
        if self._in_flight:
            self._queued = True
            return
        if self.dialog.terminated:
            return
        if self.state == TERMINATED:
            header = SubscriptionState(TERMINATED, self.reason)
        else:
            header = SubscriptionState(ACTIVE, expires=self.expires_in)
        fields = [("Event", str(self.event)), ("Subscription-State", str(header))]
        fields.append(("Allow-Events", self._notifier.allow_events))
        try:
            versioned = getattr(self.package, "versioned_body", None)  # RFC 4235 4.1.1: per subscription
            body = versioned(self.resource, self.version) if versioned else self.package.body(self.resource)
            self.version += 1
            request = self.dialog.create_request(
                "NOTIFY", body=body, content_type=self.package.content_type, headers=fields
            )
            transport, host, port = self._next_hop()
        except Exception:
            self._log.failure("Cannot build a NOTIFY for {event}", event=self.event.package)
            self._end_quietly()
            return
        if self.state == TERMINATED:
            self.dialog.terminate()  # nothing more will be sent in it
        self._in_flight = True
        self._stack.send_request(request, self, transport, host, port)

    def _next_hop(self) -> tuple[str, str, int]:
        if self.dialog.route_set:
            return destination(self.dialog.next_hop())
        return self._target

    def terminate(self, reason: str | None) -> None:
        """End the subscription with a final NOTIFY (`terminated`, with `reason` when given)."""
        if self.state == TERMINATED:
            return
        self.state, self.reason = TERMINATED, reason
        self._forget()
        self.send_state()

    def _expired(self) -> None:
        self._timer_expiry = None
        self._notifier.counters["expired"] += 1
        self.terminate(TIMEOUT)

    def _end_quietly(self) -> None:
        """End without a NOTIFY: the subscriber is gone or the dialog broke."""
        self.state = TERMINATED
        self.dialog.terminate()
        self._forget()

    def _forget(self) -> None:
        if self._timer_expiry is not None and self._timer_expiry.active():
            self._timer_expiry.cancel()
        self._timer_expiry = None
        self._stack.remove_dialog(self.dialog)
        self._notifier._forget(self)

    # -- IDialogUsage: in-dialog SUBSCRIBEs ----------------------------------------------------------------

    def dialog_request(self, transaction: IServerTransaction, request: object, dialog: object) -> None:
        assert isinstance(request, Request)
        if request.method != "SUBSCRIBE":
            raise SipError(405, None, [("Allow", "SUBSCRIBE")])
        event = event_of(request)
        if event is None or not event.matches(self.event):
            raise SipError(489, None, [("Allow-Events", self._notifier.allow_events)])
        expires = self._notifier.granted_expires(request)
        flow = transaction.flow
        self._target = (flow.transport.lower(), flow.remote_address[0], flow.remote_address[1])
        transaction.respond(
            self._notifier.ok(request, self.dialog.local_tag, self.dialog.local_contact, expires)
        )
        if expires == 0:  # unsubscribe (RFC 6665 4.2.1.4): a final NOTIFY with the current state
            self._notifier.counters["unsubscribed"] += 1
            self.terminate(None)
        else:
            self._notifier.counters["refreshed"] += 1
            self.start(expires)

    def dialog_ack(self, request: object, flow: IFlow, dialog: object) -> None:
        """Not used: no INVITE in a subscription's dialog."""

    def dialog_response(self, response: object, dialog: object) -> None:
        """Not used: responses to our NOTIFYs match their transactions."""

    # -- IClientTransactionUser: the NOTIFY's fate ---------------------------------------------------------

    def response_received(self, transaction: object, response: object) -> None:
        assert isinstance(response, Response)
        if response.status < 200:
            return
        self._in_flight = False
        if response.status in ENDING_RESPONSES:
            self._failed(f"{response.status} to NOTIFY")
            return
        if response.status >= 300:
            self._log.info(
                "NOTIFY for {event} answered {status}", event=self.event.package, status=response.status
            )
        self._send_queued()

    def transaction_timeout(self, transaction: object) -> None:
        self._in_flight = False
        self._failed("NOTIFY timed out")

    def transport_error(self, transaction: object, reason: str) -> None:
        self._in_flight = False
        self._failed(f"NOTIFY not sent: {reason}")

    def _failed(self, why: str) -> None:
        if self.state != TERMINATED:
            self._notifier.counters["notify_failures"] += 1
            self._log.info("Subscription to {event} ended: {why}", event=self.event.package, why=why)
        self._queued = False
        self._end_quietly()

    def _send_queued(self) -> None:
        if self._queued:
            self._queued = False
            self.send_state()


@implementer(ITransactionUser)
class Notifier:
    """The SUBSCRIBE transaction user: accepts subscriptions to its event packages and notifies them.

    Args:
        stack: the SIP stack (dialog table, client transactions, clock).
        authorize: `authorize(request, transaction) -> identity | None | Deferred[...]` (None: it answered).
        packages: the event packages served.
        policy: expiry bounds and limits.
    """

    _log = Logger()

    def __init__(
        self,
        stack: ISipStack,
        authorize: Authorize,
        packages: Iterable[IEventPackage] = (),
        policy: SubscriptionPolicy = SubscriptionPolicy(),
    ) -> None:
        self.stack = stack
        self._authorize = authorize
        self.policy = policy
        self._packages: dict[str, IEventPackage] = {}
        self._by_resource: dict[tuple[str, Hashable], list[Subscription]] = {}
        self._count = 0
        self.allow_events = ""
        self.counters = {
            "subscribed": 0,
            "refreshed": 0,
            "unsubscribed": 0,
            "expired": 0,
            "notify_failures": 0,
            "rejected": 0,
        }
        for package in packages:
            self.add_package(package)

    def add_package(self, package: IEventPackage) -> None:
        """Serve `package` (a package of the same name is replaced)."""
        self._packages[package.name] = package
        self.allow_events = ", ".join(sorted(self._packages))

    def __len__(self) -> int:
        return self._count

    def subscriptions(self, package: str, resource: Hashable) -> list[Subscription]:
        """The live subscriptions to a resource of a package."""
        return list(self._by_resource.get((package, resource), ()))

    def notify(self, package: str, resource: Hashable) -> int:
        """The state of `resource` changed: NOTIFY its subscribers. Returns how many there are."""
        subscriptions = self.subscriptions(package, resource)
        for subscription in subscriptions:
            subscription.send_state()
        return len(subscriptions)

    def end(self, package: str, resource: Hashable, reason: str) -> None:
        """End every subscription to a resource (`noresource` when it is gone, `rejected` ...)."""
        for subscription in self.subscriptions(package, resource):
            subscription.terminate(reason)

    def stop(self, reason: str = DEACTIVATED) -> None:
        """End every subscription (shutting down: `deactivated` invites the subscribers to come back)."""
        for subscriptions in list(self._by_resource.values()):
            for subscription in list(subscriptions):
                subscription.terminate(reason)

    # -- ITransactionUser: new SUBSCRIBEs --------------------------------------------------------------------

    def request_received(self, transaction: IServerTransaction, request: object) -> Deferred[None] | None:
        assert isinstance(request, Request)
        event = event_of(request)
        if event is None:
            raise SipError(400, "Missing Event header")
        package = self._packages.get(event.package)
        if package is None:
            self.counters["rejected"] += 1
            raise SipError(489, None, [("Allow-Events", self.allow_events)])
        if not accepts(request, package.content_type):
            raise SipError(406, None, [("Accept", package.content_type)])
        expires = self.granted_expires(request)
        if self._count >= self.policy.max_subscriptions:
            raise SipError(503, "Too Many Subscriptions", [("Retry-After", "60")])
        result = self._authorize(request, transaction)
        if isinstance(result, Deferred):
            return result.addCallback(self._authorized, transaction, request, package, event, expires)
        self._authorized(result, transaction, request, package, event, expires)
        return None

    def cancel_received(self, cancel: object, invite: IServerTransaction) -> None:
        """Not used: SUBSCRIBE is not INVITE."""

    def granted_expires(self, request: Request) -> int:
        """The duration granted to a SUBSCRIBE: its Expires (or the default) capped to the maximum.

        Raises:
            SipError: 423 with Min-Expires when it asks for less than the minimum (but more than 0).
        """
        policy = self.policy
        expires = expires_of(request)
        if expires is None:
            return policy.default_expires
        if 0 < expires < policy.min_expires:
            raise SipError(423, None, [("Min-Expires", str(policy.min_expires))])
        return min(expires, policy.max_expires)

    def _authorized(
        self,
        identity: Any,
        transaction: IServerTransaction,
        request: Request,
        package: IEventPackage,
        event: EventHeader,
        expires: int,
    ) -> None:
        if identity is None:
            return  # authorize answered (a challenge)
        resource = package.resource_for(request, identity)
        flow = transaction.flow
        contact = self.stack.contact_for(
            flow.transport, flow.remote_address[0], secure=request.uri.scheme == "sips"
        )
        response = self.ok(request, new_tag(), contact, expires)
        try:
            dialog = Dialog.create_uas(request, response, contact)
        except SipParseError as e:
            raise SipError(400, e.reason) from None
        subscription = Subscription(self, package, resource, identity, event, dialog, flow)
        transaction.respond(response)
        self.counters["subscribed"] += 1
        if expires == 0:  # a fetch (RFC 6665 4.4.3): one NOTIFY with the state, no subscription kept
            subscription.state, subscription.reason = TERMINATED, TIMEOUT
            subscription.send_state()
            return
        self.stack.add_dialog(dialog, subscription)
        self._by_resource.setdefault((package.name, resource), []).append(subscription)
        self._count += 1
        subscription.start(expires)

    def ok(self, request: Request, to_tag: str, contact: object, expires: int) -> Response:
        """The 200 to a SUBSCRIBE (RFC 6665 4.2.1.1): Expires, Contact and Allow-Events; the Record-Route
        values copied in order (RFC 3261 12.1.1)."""
        response = request.response(200, to_tag=to_tag)
        for value in request.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", value)
        response.headers.add("Expires", str(expires))
        response.headers.add("Contact", str(contact))
        response.headers.add("Allow-Events", self.allow_events)
        return response

    def _forget(self, subscription: Subscription) -> None:
        key = (subscription.package.name, subscription.resource)
        subscriptions = self._by_resource.get(key)
        if subscriptions is None or subscription not in subscriptions:
            return
        subscriptions.remove(subscription)
        self._count -= 1
        if not subscriptions:
            del self._by_resource[key]
