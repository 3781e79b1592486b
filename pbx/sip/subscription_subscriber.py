"""The subscriber side of SIP subscriptions (RFC 6665 4.1).

`Subscriber` keeps one subscription to one resource alive:

- `start()` sends a SUBSCRIBE with Event, Accept, Expires and Contact. Its early UAC dialog goes into the
  stack's dialog table at once, so a NOTIFY that overtakes the 2xx creates the dialog (RFC 6665 4.1.2.4:
  remote tag from its From, route set from its Record-Route); the 2xx otherwise does (RFC 3261 12.1.2).
- Each NOTIFY is answered `200` and handed to `on_notify` as a `Notification` (Subscription-State, body).
  One that names another Event gets `489`, one without Subscription-State `400`.
- Refreshes: an in-dialog SUBSCRIBE at `refresh_delay(expires)` (see there; the duration is the 2xx's
  Expires, shortened by a NOTIFY's `expires` parameter; a 2xx granting 0 s counts as the end). A refresh
  answered 404, 405, 408, 410, 416, 480-485, 489, 501 or 604 ends the subscription (RFC 6665 4.1.2.2) and a
  new one is made; after other errors the subscription stays valid until it expires and the refresh is tried
  again meanwhile. A `423` is obeyed (the request is sent again with its Min-Expires).
- After `terminated` (RFC 6665 4.1.3): `deactivated` and `timeout` subscribe again at once (but not twice
  within `retry_delay`, so a notifier that keeps ending subscriptions cannot make a loop); `rejected`,
  `noresource` and `invariant` never; `probation`, `giveup`, other reasons and none after the NOTIFY's
  `retry-after`, else after `retry_delay`. An initial SUBSCRIBE that fails with 408, 480, 500, 503 or 504 is
  retried after its Retry-After or `retry_delay`; other failures end the subscriber (`failure` holds the
  status).
- `stop()` unsubscribes (in-dialog SUBSCRIBE with Expires: 0), waits (at most 64*T1) for the final NOTIFY
  and forgets the dialog.

Requests go out through `send(request, hop) -> Deferred[Response]`, hop = (transport, host, port), which
fires with the final response (a synthesized 408 when the transaction timed out, 503 when it could not be
sent). The default, `StackSender`, is one client transaction on the stack and answers no challenges. To
authenticate, pass a sender that does (the client helper of `pbx.sip.client`): on a 401/407 it sends a
copy of the request with credentials and CSeq + 1, and fires with the final response of that; the subscriber
then moves its dialog's local CSeq up to the response's, so the next in-dialog request counts on from there.

Requests go to `hop` when given (an outbound proxy), else to the Request-URI / the dialog's next hop
(RFC 3261 8.1.2, 12.2.1.1, without DNS). Forked subscriptions (NOTIFYs from a second notifier) are not
kept: once the dialog knows its remote tag, the stack answers another tag's NOTIFY with 481.

This module knows nothing of the PBX or of any event package's body.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from pbx.sip.dialog import CONFIRMED, EARLY, Dialog, destination, request_next_hop
from pbx.sip.errors import SipError, SipParseError
from pbx.sip.headers import NameAddress
from pbx.sip.interfaces import IClientTransactionUser, IDialogUsage, IFlow, IServerTransaction, ISipStack
from pbx.sip.message import Request, Response, new_call_id, new_tag
from pbx.sip.subscription import (
    NEVER_RETRY,
    RETRY_AT_ONCE,
    TERMINATED,
    EventHeader,
    SubscriptionState,
    event_of,
)
from pbx.sip.uri import SipURI

Hop = tuple[str, str, int]
Send = Callable[[Request, Hop], "Deferred[Response]"]

# Responses to a refresh that end the subscription (RFC 6665 4.1.2.2).
REFRESH_ENDING: Final = frozenset({404, 405, 408, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 604})
# Failures of an initial SUBSCRIBE worth trying again later; any other ends the subscriber.
RETRIABLE: Final = frozenset({408, 480, 500, 503, 504})

# Subscriber states besides the Subscription-State values (`active`, `pending`, `terminated`).
IDLE: Final = "idle"
SUBSCRIBING: Final = "subscribing"
ACCEPTED: Final = "accepted"  # the 2xx came, no NOTIFY yet


def refresh_delay(expires: float, t1: float = 0.5) -> float:
    """When to refresh a subscription granted for `expires` seconds: 64*T1 (Timer F, 32 s by default)
    before it ends, so that even a refresh that needs its whole transaction time arrives in time, but never
    before half of the duration (short subscriptions: 60 s are refreshed after 30, 5 s after 2.5)."""
    return max(expires / 2, expires - 64 * t1)


@dataclass(frozen=True, slots=True)
class Notification:
    """A NOTIFY as the subscriber's owner sees it.

    Attributes:
        state: its Subscription-State.
        content_type: its Content-Type (None without a body).
        body: its body (the package's state document).
        request: the NOTIFY itself.
    """

    state: SubscriptionState
    content_type: str | None
    body: bytes
    request: Request


@implementer(IClientTransactionUser)
class _FinalResponse:
    """Fires a Deferred with the final response of one client transaction (408 / 503 when there is none)."""

    def __init__(self, request: Request, result: Deferred[Response]) -> None:
        self._request = request
        self._result = result

    def response_received(self, transaction: object, response: object) -> None:
        assert isinstance(response, Response)
        if response.status >= 200 and not self._result.called:
            self._result.callback(response)

    def transaction_timeout(self, transaction: object) -> None:
        if not self._result.called:
            self._result.callback(self._request.response(408))

    def transport_error(self, transaction: object, reason: str) -> None:
        if not self._result.called:
            self._result.callback(self._request.response(503, "Transport Error"))


class StackSender:
    """The default `send`: one client transaction on the stack, challenges not answered."""

    def __init__(self, stack: ISipStack) -> None:
        self._stack = stack

    def __call__(self, request: Request, hop: Hop) -> Deferred[Response]:
        result: Deferred[Response] = Deferred()
        self._stack.send_request(request, _FinalResponse(request, result), *hop)
        return result


@implementer(IDialogUsage)
class Subscriber:
    """One subscription kept alive (RFC 6665 4.1).

    Args:
        stack: the SIP stack (dialog table, contacts, clock).
        resource: the Request-URI and To of the SUBSCRIBE (`sip:1000@pbx.example.com`).
        local: our From address without a tag (`<sip:monitor@example.com>`).
        event: the Event package (`message-summary`), optionally with parameters (`;id=1`).
        accept: the Accept content types (`application/simple-message-summary`).
        on_notify: called with each NOTIFY's `Notification`.
        expires: the duration to ask for.
        send: sends a request and fires with its final response (default: `StackSender`).
        hop: where every request goes (an outbound proxy), or None for the Request-URI / next hop.
        retry_delay: seconds before subscribing again after a failure without Retry-After.
        contact_user: the user part of our Contact.
    """

    _log = Logger()

    def __init__(
        self,
        stack: ISipStack,
        resource: SipURI,
        local: str,
        event: str,
        accept: Sequence[str],
        on_notify: Callable[[Notification], object],
        *,
        expires: int = 3600,
        send: Send | None = None,
        hop: Hop | None = None,
        retry_delay: float = 30.0,
        contact_user: str = "pbx",
    ) -> None:
        self._stack = stack
        self._clock = stack.clock
        self.resource = resource
        self._local = NameAddress.parse(local).without_param("tag")
        self.event = EventHeader.parse(event)
        self._accept = tuple(accept)
        self._on_notify = on_notify
        self._expires = expires
        self._send: Send = send if send is not None else StackSender(stack)
        self._hop = hop
        self._retry_delay = retry_delay
        self._contact_user = contact_user
        self.state = IDLE
        self.failure: int | None = None
        self.dialog: Dialog | None = None
        self._running = False
        self._stopped: list[Deferred[None]] = []
        self._timer_refresh: IDelayedCall | None = None
        self._timer_retry: IDelayedCall | None = None
        self._timer_linger: IDelayedCall | None = None
        self._last_quick_retry = float("-inf")
        self._expires_at: float | None = None

    # -- public ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe (again); a subscriber that is running already is left alone."""
        if self._running:
            return
        self._running, self.failure = True, None
        self._subscribe()

    def stop(self) -> Deferred[None]:
        """Unsubscribe; fires once the dialog is forgotten (final NOTIFY, error, or 64*T1 without one)."""
        self._running = False
        self._cancel(refresh=True, retry=True)
        dialog = self.dialog
        if dialog is None:
            self.state = TERMINATED if self.state != IDLE else IDLE
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._stopped.append(done)
        if dialog.remote_tag is not None and self._timer_linger is None:
            self._unsubscribe(dialog)
        # else: the initial SUBSCRIBE is in flight; its answer unsubscribes
        return done

    # -- the initial SUBSCRIBE -------------------------------------------------------------------------------

    def _fields(self, expires: int) -> list[tuple[str, str]]:
        fields = [("Event", str(self.event))]
        fields.extend(("Accept", value) for value in self._accept)
        fields.append(("Expires", str(expires)))
        return fields

    def _subscribe(self) -> None:
        self._timer_retry = None
        self.state = SUBSCRIBING
        hop = self._hop or destination(request_next_hop(Request("SUBSCRIBE", self.resource)))
        secure = self.resource.scheme == "sips"
        contact = self._stack.contact_for(hop[0], hop[1], self._contact_user, secure=secure)
        local = self._local.with_param("tag", new_tag())
        remote = NameAddress(self.resource)
        call_id = new_call_id(hop[1] if ":" not in hop[1] else "pbx")
        request = Request("SUBSCRIBE", self.resource)
        headers = request.headers
        headers.add("Max-Forwards", "70")
        headers.add("From", str(local))
        headers.add("To", str(remote))
        headers.add("Call-ID", call_id)
        headers.add("CSeq", "1 SUBSCRIBE")
        headers.add("Contact", contact)
        headers.extend(self._fields(self._expires))
        dialog = Dialog(  # early, without a remote tag: a NOTIFY before the 2xx finds it (RFC 6665 4.1.2.4)
            call_id=call_id,
            local_tag=local.tag or "",
            remote_tag=None,
            local_uri=local,
            remote_uri=remote,
            local_contact=contact,
            remote_target=self.resource,
            local_cseq=1,
            state=EARLY,
            is_uac=True,
        )
        self.dialog = dialog
        self._stack.add_dialog(dialog, self)
        self._send(request, hop).addCallback(self._subscribe_answered, dialog, request)

    def _subscribe_answered(self, response: Response, dialog: Dialog, request: Request) -> None:
        if dialog is not self.dialog:
            return  # a dialog given up meanwhile
        self._follow_cseq(dialog, response)
        status = response.status
        if 200 <= status < 300:
            early = dialog.state == EARLY
            dialog.receive_response(request, response)  # remote tag, target refresh
            if early:
                dialog.route_set = list(reversed(response.headers.get_all("Record-Route")))
                dialog.state = CONFIRMED
            if self.state == SUBSCRIBING:
                self.state = ACCEPTED
            if not self._running:
                if self._timer_linger is None:  # stopped while the SUBSCRIBE was in flight
                    self._unsubscribe(dialog)
                return
            self._granted_or_lost(response)
            return
        self._drop_dialog()
        if not self._running:
            self._finish()
            return
        min_expires = _min_expires(response)
        if status == 423 and min_expires is not None and min_expires > self._expires:
            self._expires = min_expires
            self._subscribe()
            return
        if status in RETRIABLE:
            self.state = TERMINATED
            self._retry(_retry_after(response))
            return
        self._give_up(status)

    def _granted_or_lost(self, response: Response) -> None:
        """Schedule the refresh of the duration a 2xx granted; a 2xx granting 0 s ended the subscription
        (subscribe again after `retry_delay`, never in a loop of immediate refreshes)."""
        granted = self._granted(response)
        if granted > 0:
            self._schedule_refresh(granted)
            return
        self._drop_dialog()
        self.state = TERMINATED
        self._retry(None)

    def _granted(self, response: Response) -> int:
        value = (response.headers.get("Expires") or "").strip()
        if value.isascii() and value.isdigit() and len(value) < 12:
            return int(value)
        return self._expires

    @staticmethod
    def _follow_cseq(dialog: Dialog, response: Response) -> None:
        """A sender that answered a challenge sent the request again with a higher CSeq."""
        try:
            number = response.cseq.number
        except SipParseError:
            return
        dialog.local_cseq = max(dialog.local_cseq, number)

    # -- refreshes -----------------------------------------------------------------------------------------

    def _schedule_refresh(self, expires: float) -> None:
        delay = refresh_delay(expires, self._stack.timers.t1)
        if self._timer_refresh is not None and self._timer_refresh.active():
            self._timer_refresh.reset(delay)
        else:
            self._timer_refresh = self._clock.callLater(delay, self._refresh)
        self._expires_at = self._clock.seconds() + expires

    def _refresh(self) -> None:
        self._timer_refresh = None
        dialog = self.dialog
        if dialog is None or dialog.terminated:
            return
        request = dialog.create_request("SUBSCRIBE", headers=self._fields(self._expires))
        self._send(request, self._dialog_hop(dialog)).addCallback(self._refresh_answered, dialog, request)

    def _dialog_hop(self, dialog: Dialog) -> Hop:
        return self._hop or destination(dialog.next_hop())

    def _refresh_answered(self, response: Response, dialog: Dialog, request: Request) -> None:
        if dialog is not self.dialog or not self._running:
            return
        self._follow_cseq(dialog, response)
        status = response.status
        if 200 <= status < 300:
            dialog.receive_response(request, response)
            self._granted_or_lost(response)
            return
        min_expires = _min_expires(response)
        if status == 423 and min_expires is not None and min_expires > self._expires:
            self._expires = min_expires
            self._refresh()
            return
        left = (self._expires_at or 0.0) - self._clock.seconds()
        if status in REFRESH_ENDING or left < 1:
            self._log.info("Subscription to {uri} lost ({status})", uri=str(self.resource), status=status)
            self._drop_dialog()
            self.state = TERMINATED
            self._retry(None)
            return
        self._timer_refresh = self._clock.callLater(min(self._retry_delay, left / 2), self._refresh)

    # -- NOTIFY ----------------------------------------------------------------------------------------------

    def dialog_request(self, transaction: IServerTransaction, request: object, dialog: object) -> None:
        assert isinstance(request, Request) and isinstance(dialog, Dialog)
        if request.method != "NOTIFY":
            raise SipError(405, None, [("Allow", "NOTIFY")])
        event = event_of(request)
        if event is None or not event.matches(self.event):
            raise SipError(489)
        text = request.headers.get("Subscription-State")
        if text is None:
            raise SipError(400, "Missing Subscription-State header")
        try:
            state = SubscriptionState.parse(text)
        except SipParseError as e:
            raise SipError(400, e.reason) from None
        if dialog.remote_tag is None:  # the NOTIFY overtook the 2xx: it makes the dialog (RFC 6665 4.1.2.4)
            tag = request.from_.tag
            dialog.remote_tag = tag
            if tag is not None:
                dialog.remote_uri = dialog.remote_uri.with_param("tag", tag)
            dialog.route_set = request.headers.get_all("Record-Route")
            dialog.state = CONFIRMED
        transaction.respond(request.response(200))
        self.state = state.state
        try:
            self._on_notify(Notification(state, request.headers.get("Content-Type"), request.body, request))
        except Exception:
            self._log.failure("on_notify failed for {uri}", uri=str(self.resource))
        if dialog is not self.dialog:
            return
        if state.state == TERMINATED:
            self._terminated(state)
        elif state.expires is not None and self._running and dialog.remote_tag is not None:
            ends = self._expires_at
            if ends is None or state.expires < ends - self._clock.seconds():
                self._schedule_refresh(state.expires)

    def _terminated(self, state: SubscriptionState) -> None:
        """RFC 6665 4.1.3: whether and when to subscribe again."""
        self._drop_dialog()
        if not self._running:
            self._finish()
            return
        reason = state.reason
        if reason in NEVER_RETRY:
            self._give_up(None)
        elif reason in RETRY_AT_ONCE and state.retry_after is None:
            self._retry(0.0)
        else:
            self._retry(float(state.retry_after) if state.retry_after is not None else None)

    def dialog_ack(self, request: object, flow: IFlow, dialog: object) -> None:
        """Not used: no INVITE in a subscription's dialog."""

    def dialog_response(self, response: object, dialog: object) -> None:
        """Not used: our SUBSCRIBEs' responses match their transactions."""

    # -- ending ----------------------------------------------------------------------------------------------

    def _unsubscribe(self, dialog: Dialog) -> None:
        self._cancel(refresh=True, retry=True)
        try:
            request = dialog.create_request("SUBSCRIBE", headers=self._fields(0))
            hop = self._dialog_hop(dialog)
        except ValueError:
            self._finish()
            return
        self._timer_linger = self._clock.callLater(64 * self._stack.timers.t1, self._finish)
        self._send(request, hop).addCallback(self._unsubscribe_answered, dialog)

    def _unsubscribe_answered(self, response: Response, dialog: Dialog) -> None:
        if dialog is self.dialog and response.status >= 300:
            self._finish()  # no final NOTIFY will come

    def _retry(self, delay: float | None) -> None:
        """Subscribe again after `delay` (None: `retry_delay`); at once at most once per `retry_delay`."""
        now = self._clock.seconds()
        if delay is None:
            delay = self._retry_delay
        elif delay <= 0:
            if now - self._last_quick_retry < self._retry_delay:
                delay = self._retry_delay
            else:
                self._last_quick_retry = now
        self._cancel(refresh=True, retry=True)
        self._timer_retry = self._clock.callLater(delay, self._subscribe)

    def _give_up(self, status: int | None) -> None:
        self._running = False
        self.state = TERMINATED
        self.failure = status
        self._cancel(refresh=True, retry=True)
        self._log.info("Subscription to {uri} refused ({status})", uri=str(self.resource), status=status)

    def _drop_dialog(self) -> None:
        if self.dialog is not None:
            self.dialog.terminate()
            self._stack.remove_dialog(self.dialog)
            self.dialog = None
        self._cancel(refresh=True, retry=False)

    def _finish(self) -> None:
        self._drop_dialog()
        self._cancel(refresh=True, retry=True)
        if self._timer_linger is not None and self._timer_linger.active():
            self._timer_linger.cancel()
        self._timer_linger = None
        self.state = TERMINATED
        stopped, self._stopped = self._stopped, []
        for d in stopped:
            d.callback(None)

    def _cancel(self, *, refresh: bool, retry: bool) -> None:
        for name, wanted in (("_timer_refresh", refresh), ("_timer_retry", retry)):
            timer = getattr(self, name)
            if wanted and timer is not None:
                if timer.active():
                    timer.cancel()
                setattr(self, name, None)


def _min_expires(response: Response) -> int | None:
    value = (response.headers.get("Min-Expires") or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) < 12 else None


def _retry_after(response: Response) -> float | None:
    value = (response.headers.get("Retry-After") or "").partition(";")[0].partition("(")[0].strip()
    return float(value) if value.isascii() and value.isdigit() and len(value) < 12 else None
