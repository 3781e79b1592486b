"""The calling side of an INVITE session (RFC 3261 13.2, 9.1, 13.2.2.4; RFC 4028 7).

`UacSession` sends an INVITE (`start`) through an injectable sender (default `stack.send_request`; a client
that answers 401/407 challenges plugs in with the same signature, see `pbx.sip.session`) and reports its
provisional responses. The first 2xx makes the dialog (registered with the stack) and is ACKed, with the
answer in the ACK when the 2xx carried the offer; a retransmitted 2xx is ACKed again (`UacAckCache`, also
for a stray one after the INVITE transaction ended); the 2xx of another fork is ACKed and BYEd at once.
`cancel` sends a CANCEL only after a provisional response (RFC 3261 9.1: until then it waits), gives the
INVITE up 64*T1 later if no final response comes, and ACKs and BYEs a 2xx that crosses the CANCEL. A 422
(RFC 4028 7.1) is retried once with the Min-SE it names. Once the dialog exists everything else is
`pbx.sip.session.InviteSession`'s.

Early dialogs are not registered with the stack (a request inside one gets 481); the session knows nothing
of SDP.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from pbx.sip.dialog import Dialog, destination, request_next_hop
from pbx.sip.errors import SipError
from pbx.sip.interfaces import ISipStack
from pbx.sip.message import Request, Response, new_call_id, new_tag
from pbx.sip.session import InviteSession
from pbx.sip.session_events import (
    DEFAULT_ALLOW,
    IGNORE,
    LOCAL_OFFER,
    MAX_RETRIES,
    RECEIVE_ANSWER,
    RECEIVE_OFFER,
    REJECT,
    SEND_ANSWER,
    SEND_OFFER,
    STABLE,
    SUPPORTED,
    ISessionListener,
    Sender,
    _Client,
    content_type_of,
)
from pbx.sip.session_timer import SessionTimer, SessionTimerPolicy, min_se, request_headers
from pbx.sip.session_timer import from_response as timer_from_response
from pbx.sip.transaction import make_cancel
from pbx.sip.uri import URI


def make_invite(
    uri: URI,
    from_: str,
    to: str,
    contact: str,
    *,
    body: bytes = b"",
    content_type: str = "application/sdp",
    call_id: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> Request:
    """A new INVITE outside any dialog: From gets a fresh tag (unless it has one), CSeq 1, no Via (the stack
    adds it). `from_` and `to` are name-addr values (`"<sip:1001@example.com>"`)."""
    request = Request("INVITE", uri)
    tag = "" if ";tag=" in from_ else f";tag={new_tag()}"
    request.headers.add("From", from_ + tag)
    request.headers.add("To", to)
    request.headers.add("Call-ID", call_id or new_call_id("pbx"))
    request.headers.add("CSeq", "1 INVITE")
    request.headers.add("Contact", contact)
    request.headers.extend(headers)
    if body:
        request.headers.add("Content-Type", content_type)
        request.body = body
    return request


class UacSession(InviteSession):
    """An INVITE session on the side that sent the INVITE.

    Args:
        stack: the SIP stack.
        invite: the INVITE to send (see `make_invite`); Allow, Supported, Session-Expires and Min-SE are
            added by `start`.
        listener: told of what happens.
        destination: (transport, host, port) of the INVITE (default: its first Route or Request-URI).
        Other keyword arguments as for `InviteSession` (`target`: where in-dialog requests go).

    Attributes:
        invite: the INVITE last sent (after a challenge or a 422, the one with the credentials or Min-SE).
        transaction: its client transaction.
    """

    __slots__ = (
        "_forks",
        "_retries",
        "_timer_cancel",
        "cancel_sent",
        "cancel_wanted",
        "final_received",
        "invite",
        "provisional_seen",
        "transaction",
        "where",
    )

    def __init__(
        self,
        stack: ISipStack,
        invite: Request,
        listener: ISessionListener,
        *,
        destination: tuple[str, str, int] | None = None,
        policy: SessionTimerPolicy = SessionTimerPolicy(),  # noqa: B008 - frozen value
        rng: random.Random | None = None,
        sender: Sender | None = None,
        target: tuple[str, str, int] | None = None,
        allow: str = DEFAULT_ALLOW,
    ) -> None:
        super().__init__(stack, listener, policy=policy, rng=rng, sender=sender, target=target, allow=allow)
        self.invite = invite
        self.where = destination if destination is not None else _destination_of(invite)
        self.transaction: Any = None
        self.provisional_seen = False
        self.cancel_wanted = False
        self.cancel_sent = False
        self.final_received = False
        self._retries = 0
        self._forks: dict[str, Callable[[], None]] = {}  # other forks' To tags -> re-send their ACK
        self._timer_cancel: IDelayedCall | None = None

    def start(self) -> None:
        """Send the INVITE (once)."""
        if self.transaction is not None:
            raise ValueError("already started")
        headers = self.invite.headers
        for name, value in (("Allow", self.allow), ("Supported", SUPPORTED)):
            if name not in headers:
                headers.add(name, value)
        self._timer_headers(None)
        if self.invite.body:
            self._oa(SEND_OFFER)
            self.local_body = (self.invite.body, content_type_of(self.invite))
        self._send(self.invite)

    def _timer_headers(self, floor: int | None) -> None:
        headers = self.invite.headers
        headers.remove("Session-Expires")
        headers.remove("Min-SE")
        headers.extend(request_headers(self.policy, None, floor))

    def _send(self, request: Request) -> None:
        self.transaction = self._sender(
            request, _Client(self._final_response, self._provisional), *self.where
        )

    # -- responses to the INVITE -------------------------------------------------------------------------

    def _provisional(self, transaction: Any, response: Response) -> None:
        self.transaction = transaction
        self.invite = transaction.request
        self.provisional_seen = True  # any 1xx, 100 included, allows the CANCEL (RFC 3261 9.1)
        if self.cancel_wanted:
            if not self.cancel_sent:
                self._send_cancel()
            return
        if response.status > 100 and not self.ended:
            self._notify("provisional", response)

    def _final_response(self, transaction: Any, response: Response | None, status: int) -> None:
        if response is not None and 200 <= status < 300:
            self._success(transaction.request, response)
            return
        if self.final_received or self.ended:
            return
        self.invite = transaction.request
        if status == 422 and response is not None and self._retries < MAX_RETRIES and not self.cancel_wanted:
            floor = min_se(response)
            if floor is not None:  # RFC 4028 7.1: again, asking for at least the Min-SE we were told
                self._retries += 1
                self._retry(floor)
                return
        self.final_received = True
        if self.offer_answer != STABLE:
            self._oa(REJECT)
        self._notify("failed", status, response)
        self._end("cancelled" if self.cancel_wanted else "failed")

    def _retry(self, floor: int) -> None:
        request = self.invite.copy()
        request.headers.remove("Via")
        request.headers.set("CSeq", f"{request.cseq.number + 1} INVITE")
        self.invite = request
        self.provisional_seen = False  # a CANCEL waits for a provisional response to the new INVITE
        self._timer_headers(floor)
        self._send(request)

    def _success(self, request: Request, response: Response) -> None:
        tag = response.to.tag
        if tag is not None and tag in self._forks:
            self._forks[tag]()  # an unwanted 2xx again: the same ACK again
            return
        if self.dialog is not None:
            if tag == self.dialog.remote_tag:
                if self._acks is not None:
                    self._acks.on_stray_2xx(response)  # a retransmission: the same ACK again
                return
            self._ack_and_bye(request, response)  # another fork answered too (RFC 3261 13.2.2.4)
            return
        self.final_received = True
        self.invite = request
        if self.cancel_wanted or self.ended:  # the 2xx crossed our CANCEL
            self._ack_and_bye(request, response)
            self._end("cancelled")
            return
        try:
            self.dialog = Dialog.create_uac(request, response)
        except (ValueError, SipError):
            self._ack_and_bye(request, response)
            self._notify("failed", 502, response)
            self._end("failed")
            return
        self.stack.add_dialog(self.dialog, self)
        self._learn_allow(response)
        try:
            timer = timer_from_response(response)
        except SipError:
            timer = None
        if self.offer_answer == LOCAL_OFFER:
            self._answered_offer(request, response, timer)
        else:
            self._offered_in_2xx(request, response, timer)

    def _answered_offer(self, request: Request, response: Response, timer: SessionTimer | None) -> None:
        self._send_ack(request, response, b"", "")  # first: whatever the listener does next
        if not response.body:  # RFC 3261 13.2.1: the 2xx must carry the answer
            self._oa(REJECT)
            self._notify("answered", response)
            self.bye("no answer in 2xx")
            return
        self._oa(RECEIVE_ANSWER)
        self.remote_body = (response.body, content_type_of(response))
        self._notify("answered", response)
        if not self.ended:
            self._confirm(timer)

    def _offered_in_2xx(self, request: Request, response: Response, timer: SessionTimer | None) -> None:
        """The INVITE had no offer: the 2xx has it and our answer goes into the ACK (RFC 3261 13.2.2.4)."""
        content_type = content_type_of(response)
        if not response.body:
            self._send_ack(request, response, b"", "")
            self._notify("answered", response)
            self.bye("no offer in 2xx")
            return
        self._oa(RECEIVE_OFFER)
        self.remote_body = (response.body, content_type)
        self._notify("answered", response)
        d = maybeDeferred(self.listener.offer_received, self, response.body, content_type)

        def ack(body: object) -> None:
            if not isinstance(body, bytes) or not body:
                raise SipError(488)
            if self.ended:  # hung up meanwhile: the 2xx is still ACKed (the BYE went first)
                self._send_ack(request, response, body, content_type)
                return
            self._oa(SEND_ANSWER)
            self.local_body = (body, content_type)
            self._send_ack(request, response, body, content_type)
            self._confirm(timer)

        def refused(failure: Failure) -> None:  # a valid ACK, then BYE (RFC 3261 13.2.2.4)
            self._send_ack(request, response, b"", "")
            if not self.ended:
                self._oa(REJECT)
                self.bye("offer refused")

        d.addCallback(ack).addErrback(refused)

    def _confirm(self, timer: SessionTimer | None) -> None:
        self._notify("confirmed")
        self._apply_timer(timer)

    def _ack_and_bye(self, request: Request, response: Response) -> None:
        """ACK a 2xx we do not want, then BYE its dialog (another fork, or the 2xx after our CANCEL)."""
        try:
            dialog = Dialog.create_uac(request, response)
            where = destination(dialog.next_hop())
        except (ValueError, SipError):
            return  # no Contact: nowhere to send the ACK
        ack = dialog.create_ack(request)

        def send() -> None:
            self.stack.send_stateless(ack.copy(), *where)

        send()
        if dialog.remote_tag is not None:
            self._forks[dialog.remote_tag] = send
        self._sender(dialog.create_request("BYE"), IGNORE, *where)

    def dialog_response(self, response: object, dialog: object) -> None:
        assert isinstance(response, Response)
        tag = response.to.tag
        if 200 <= response.status < 300 and tag is not None and tag in self._forks:
            self._forks[tag]()
            return
        super().dialog_response(response, dialog)

    # -- ending before the answer ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Give the call up before it is answered: CANCEL now if a provisional response came, else as soon as
        one comes (RFC 3261 9.1). A no-op once a final response arrived."""
        if self.final_received or self.ended or self.cancel_wanted:
            return
        self.cancel_wanted = True
        if self.transaction is not None and self.provisional_seen:
            self._send_cancel()

    def _send_cancel(self) -> None:
        self.cancel_sent = True
        self.stack.send_cancel(make_cancel(self.invite), IGNORE, *self.where)
        # RFC 3261 9.1: no final response 64*T1 after the CANCEL: the INVITE is given up.
        self._timer_cancel = self.stack.clock.callLater(self.stack.timers.timer_b, self._cancel_timeout)

    def _cancel_timeout(self) -> None:
        self._timer_cancel = None
        if not self.final_received:
            self.final_received = True
            self._notify("failed", 408, None)
            self._end("cancelled")

    def hangup(self) -> None:
        """End the session whatever its state: `cancel` before the answer, BYE after it."""
        if self.dialog is None:
            self.cancel()
        else:
            self.bye()

    def _ended(self) -> None:
        if self._timer_cancel is not None and self._timer_cancel.active():
            self._timer_cancel.cancel()
        self._timer_cancel = None
        super()._ended()


def _destination_of(request: Request) -> tuple[str, str, int]:
    return destination(request_next_hop(request))
