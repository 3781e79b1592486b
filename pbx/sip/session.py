"""INVITE sessions: the dialog usage an endpoint (a B2BUA leg, an IVR, a softphone) runs a call with.

RFC 3261 13-15 with RFC 3264/6337 offer/answer, RFC 3311 UPDATE and RFC 4028 session timers. This module is
what both sides share once a dialog exists; `pbx.sip.session_uas` answers an INVITE and `pbx.sip.session_uac`
sends one. An `InviteSession` is the `IDialogUsage` of its dialog in the stack's table (`stack.add_dialog`
when the dialog is made, `remove_dialog` when it ends) and tells an `ISessionListener` what happens:

- BYE received: `200`, the session ends; `bye()` sends one and ends it.
- In-dialog requests (INFO, REFER, NOTIFY, MESSAGE ...) go to `listener.request_received`; OPTIONS is
  answered here.
- re-INVITE and UPDATE both ways (`reinvite` and `update`, from `pbx.sip.session_requests`), with the
  offer/answer state of the table `OFFER_ANSWER` (one offer outstanding at a time). Received while one is
  pending: RFC 3261 14.2 (an INVITE while ours is in progress: `491`; while an earlier one we received is
  unanswered: `500` + Retry-After 0-10 s) and RFC 3311 5.2 (an offer in UPDATE while our offer is unanswered:
  `491`; while theirs is: `500` + Retry-After). A `491` to ours is retried after the RFC 3261 14.1 delay:
  2.1-4 s in 10 ms steps for the owner of the Call-ID (the dialog's UAC), 0-2 s for the other, from an
  injected `random.Random`.
- Each 2xx we send to an INVITE is retransmitted until its ACK (`Uas2xxRetransmitter`); no ACK after 64*T1:
  BYE. Each 2xx to our INVITEs is ACKed, and re-ACKed when retransmitted (`UacAckCache`).
- Session timers (`pbx.sip.session_timer`): the refresher refreshes at half the interval (UPDATE when the
  peer allows it, else a re-INVITE with our current description); without a refresh the session ends with
  a BYE `min(32, interval / 3)` s before it expires.

Bodies are opaque bytes with a content type: SDP is the listener's business. Requests go out through an
injectable `sender` with the signature of `ISipStack.send_request` (default: the stack's), so a client that
answers 401/407 challenges can be plugged in: it must return the transaction and report responses with the
transaction whose `request` is the one actually sent (with its credentials and CSeq). Time and randomness
are injected. Reliable provisional responses (RFC 3262 PRACK) are not supported. The listener interface and
the offer/answer table are in `pbx.sip.session_events`.

Plugging in the challenge-answering client (`pbx.sip.client`, to come): pass `sender=client.send_request`
(any callable `(request, tu, transport, host, port) -> transaction`). It may re-send a challenged request
with credentials and a higher CSeq in a new transaction, as long as it reports every response to `tu` with
the transaction whose `request` is what went out last: the UAC session ACKs, CANCELs and builds its dialog
from `transaction.request` (RFC 3261 13.2.2.4: the ACK repeats the INVITE's credentials).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from twisted.internet.defer import maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pbx.sip.dialog import Dialog, destination
from pbx.sip.errors import SipError
from pbx.sip.interfaces import IDialogUsage, IFlow, IServerTransaction, ISipStack
from pbx.sip.invite import UacAckCache, Uas2xxRetransmitter, ack_key
from pbx.sip.message import Request, Response
from pbx.sip.session_events import (
    BUSY_RETRY,
    DEFAULT_ALLOW,
    IGNORE,
    LOCAL_OFFER,
    OFFER_ANSWER,
    RECEIVE_ANSWER,
    RECEIVE_OFFER,
    REJECT,
    REMOTE_OFFER,
    SEND_ANSWER,
    SEND_OFFER,
    STABLE,
    SUPPORTED,
    ISessionListener,
    Sender,
    SessionRequestFailed,
    _Outgoing,
    content_type_of,
)
from pbx.sip.session_requests import SessionRequests
from pbx.sip.session_timer import SessionTimer, SessionTimerPolicy, negotiate_uas

_NO_METHODS: frozenset[str] = frozenset()
_ALLOWS: dict[tuple[str, ...], frozenset[str]] = {}
"""Allow header values -> their methods: one set shared by every session with phones of one kind."""


@implementer(IDialogUsage)
class InviteSession(SessionRequests):
    """What a UAS and a UAC session share once their dialog exists; see the module docstring.

    Args:
        stack: the SIP stack (`ISipStack`).
        listener: told of what happens (`ISessionListener`).
        policy: session timer preferences.
        rng: randomness for the 491 retry delay and Retry-After.
        sender: sends a request in a client transaction (default `stack.send_request`).
        target: (transport, host, port) for every request in the dialog, instead of the dialog's next hop
            (a B2BUA reaching a phone through the flow it registered from).
        allow: our Allow header value.

    Attributes:
        dialog: the dialog once made (None before; kept after the end, terminated).
        offer_answer: `STABLE`, `LOCAL_OFFER` or `REMOTE_OFFER`.
        local_body, remote_body: the last (body, content type) we sent and received, None before.
        session_timer: the running `SessionTimer`, None when there is none.
        ended: True once `terminated` was reported.
    """

    # Two per call, held for its whole length: no instance dict.
    __slots__ = (
        "_acks",
        "_awaiting_ack",
        "_end_hooks",
        "_glare_op",
        "_incoming_invite",
        "_outgoing_invite",
        "_pending",
        "_sender",
        "_timer_expire",
        "_timer_glare",
        "_timer_refresh",
        "allow",
        "dialog",
        "ended",
        "listener",
        "local_body",
        "offer_answer",
        "peer_allows",
        "policy",
        "remote_body",
        "rng",
        "session_timer",
        "stack",
        "target",
    )

    _log = Logger()

    def __init__(
        self,
        stack: ISipStack,
        listener: ISessionListener,
        *,
        policy: SessionTimerPolicy = SessionTimerPolicy(),  # noqa: B008 - frozen value
        rng: random.Random | None = None,
        sender: Sender | None = None,
        target: tuple[str, str, int] | None = None,
        allow: str = DEFAULT_ALLOW,
    ) -> None:
        self.stack = stack
        self.listener = listener
        self.policy = policy
        self.rng = rng if rng is not None else random.Random()
        self._sender: Sender = sender if sender is not None else stack.send_request
        self.target = target
        self.allow = allow
        self.dialog: Dialog | None = None
        self.offer_answer = STABLE
        self.local_body: tuple[bytes, str] | None = None
        self.remote_body: tuple[bytes, str] | None = None
        self.session_timer: SessionTimer | None = None
        self.peer_allows: frozenset[str] = _NO_METHODS
        self.ended = False
        self._acks: UacAckCache | None = None  # made by the first ACK of a 2xx to a re-INVITE of ours
        self._awaiting_ack: dict[
            int, tuple[Uas2xxRetransmitter, bool]
        ] = {}  # CSeq -> (retransmitter, offered)
        self._incoming_invite: IServerTransaction | None = None  # a re-INVITE we have not answered yet
        self._outgoing_invite: _Outgoing | None = None  # our re-INVITE in progress
        self._pending: list[_Outgoing] = []  # every request of ours not finished, retries waiting included
        self._timer_glare: IDelayedCall | None = None
        self._glare_op: _Outgoing | None = None
        self._timer_refresh: IDelayedCall | None = None
        self._timer_expire: IDelayedCall | None = None
        self._end_hooks: tuple[Callable[[], object], ...] = ()  # a tuple: no list per session

    # -- helpers ------------------------------------------------------------------------------------------

    def _oa(self, event: str) -> None:
        try:
            self.offer_answer = OFFER_ANSWER[self.offer_answer, event]
        except KeyError:
            raise ValueError(f"cannot {event} in offer/answer state {self.offer_answer}") from None

    def _notify(self, event: str, *args: object) -> None:
        """Call `listener.<event>(self, *args)`; its errors are logged, never raised into the stack."""
        try:
            getattr(self.listener, event)(self, *args)
        except Exception:
            self._log.failure("Session listener failed in {event}", event=event)

    def _destination(self) -> tuple[str, str, int]:
        if self.target is not None:
            return self.target
        assert self.dialog is not None
        return destination(self.dialog.next_hop())

    def _learn_allow(self, message: Request | Response) -> None:
        allowed = message.headers.get_all("Allow")
        if allowed:
            key = tuple(allowed)
            methods = _ALLOWS.get(key)
            if methods is None:
                methods = frozenset(m.strip().upper() for m in allowed)
                if len(_ALLOWS) >= 256:  # the values come from the network: bounded
                    _ALLOWS.clear()
                _ALLOWS[key] = methods
            self.peer_allows = methods

    def _retry_after(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.rng.randint(0, 10)))]

    def glare_delay(self) -> float:
        """The wait before retrying after a 491 (RFC 3261 14.1): 2.1-4 s in 10 ms units for the owner of the
        Call-ID (the dialog's UAC), 0-2 s for the other side."""
        if self.dialog is not None and self.dialog.is_uac:
            return (210 + self.rng.randint(0, 190)) / 100
        return self.rng.randint(0, 200) / 100

    def _response(self, request: Request, status: int, headers: Iterable[tuple[str, str]] = ()) -> Response:
        response = request.response(status)
        response.headers.extend(headers)
        return response

    def _ok_headers(self) -> list[tuple[str, str]]:
        assert self.dialog is not None
        return [
            ("Contact", str(self.dialog.local_contact)),
            ("Allow", self.allow),
            ("Supported", SUPPORTED),
        ]

    def _send_2xx(self, transaction: IServerTransaction, response: Response, *, offered: bool) -> None:
        """Send a 2xx to an INVITE and retransmit it until its ACK (RFC 3261 13.3.1.4)."""
        transaction.respond(response)
        flow: IFlow = transaction.flow
        cseq = response.cseq.number

        def resend() -> None:
            self.stack.send_response(response, flow)

        retransmitter = Uas2xxRetransmitter(
            self.stack.clock,
            self.stack.timers,
            resend,
            lambda: self._no_ack(cseq),
            reliable=bool(flow.reliable),
        )
        self._awaiting_ack[cseq] = (retransmitter, offered)

    def _no_ack(self, cseq: int) -> None:
        self._awaiting_ack.pop(cseq, None)
        self._shrink_awaiting_ack()
        self.bye("no ACK")

    def _send_ack(self, request: Request, response: Response, body: bytes, content_type: str) -> None:
        """ACK a 2xx to our INVITE (RFC 3261 13.2.2.4), and remember how to ACK its retransmissions."""
        assert self.dialog is not None
        ack = self.dialog.create_ack(request, body=body, content_type=content_type if body else None)
        where = self._destination()

        def send() -> None:
            self.stack.send_stateless(ack.copy(), *where)

        send()
        if self._acks is None:
            self._acks = UacAckCache(self.stack.clock, self.stack.timers)
        try:
            self._acks.remember(ack_key(response), send)
        except ValueError:
            pass

    # -- IDialogUsage ------------------------------------------------------------------------------------

    def dialog_request(self, transaction: IServerTransaction, request: object, dialog: object) -> object:
        assert isinstance(request, Request)
        method = request.method
        if method == "BYE":
            transaction.respond(request.response(200))
            self._bye_received()
            return None
        if method == "INVITE":
            return self._reinvite_received(transaction, request)
        if method == "UPDATE":
            return self._update_received(transaction, request)
        if method == "OPTIONS":
            transaction.respond(
                self._response(request, 200, [("Allow", self.allow), ("Supported", SUPPORTED)])
            )
            return None
        if method == "PRACK":
            raise SipError(481)  # we never send reliable provisional responses
        result = maybeDeferred(self.listener.request_received, self, request)

        def respond(answer: object) -> None:
            if isinstance(answer, Response):
                transaction.respond(answer)
            elif isinstance(answer, int):
                headers = [("Allow", self.allow)] if answer == 405 else []
                transaction.respond(self._response(request, answer, headers))
            else:
                raise TypeError("request_received must return a status or a Response")

        return result.addCallback(respond)

    def dialog_ack(self, request: object, flow: IFlow, dialog: object) -> None:
        assert isinstance(request, Request)
        entry = self._awaiting_ack.pop(request.cseq.number, None)
        self._shrink_awaiting_ack()
        if entry is None:
            return  # a retransmitted ACK
        retransmitter, offered = entry
        retransmitter.ack_received()
        if offered and self.offer_answer == LOCAL_OFFER:
            if not request.body:
                self._oa(REJECT)
                self.bye("no answer in ACK")  # RFC 3261 13.3.1.4: the offer in our 2xx went unanswered
                return
            self._oa(RECEIVE_ANSWER)
            self.remote_body = (request.body, content_type_of(request))
            self._notify("answer_received", request.body, content_type_of(request))
        self._acked(request)

    def dialog_response(self, response: object, dialog: object) -> None:
        assert isinstance(response, Response)
        if 200 <= response.status < 300 and self._acks is not None and response.cseq.method == "INVITE":
            self._acks.on_stray_2xx(response)

    def _acked(self, ack: Request) -> None:
        """Hook: the ACK of one of our 2xx arrived (the UAS session reports the initial one)."""

    def _bye_received(self) -> None:
        if self._incoming_invite is not None:
            self._incoming_invite.respond(self._incoming_invite.request.response(487))
            self._incoming_invite = None
        self._end("bye received")

    # -- requests we receive that change the session -------------------------------------------------------

    def _reinvite_received(self, transaction: IServerTransaction, request: Request) -> object:
        """A re-INVITE (RFC 3261 14.2): glare rules, the session timer, then the listener's answer/offer."""
        if self._outgoing_invite is not None or self._awaiting_ack:
            raise SipError(491)  # ours in progress, or our 2xx to the last one not ACKed yet (RFC 3261 14.2)
        if self._incoming_invite is not None or self._initial_pending():
            raise SipError(500, None, self._retry_after())
        offered = bool(request.body)
        if self.offer_answer == LOCAL_OFFER:
            raise SipError(491)
        if self.offer_answer == REMOTE_OFFER:
            raise SipError(500, None, self._retry_after())
        timer, timer_headers = negotiate_uas(request, self.policy)
        self._learn_allow(request)
        self._incoming_invite = transaction
        content_type = content_type_of(request)
        if offered:
            self._oa(RECEIVE_OFFER)
            self.remote_body = (request.body, content_type)
            d = maybeDeferred(self.listener.offer_received, self, request.body, content_type)
        else:
            d = maybeDeferred(self.listener.offer_requested, self)

        def answer(body: object) -> None:
            if self._incoming_invite is not transaction:
                return  # the session ended meanwhile (BYE: 487 sent)
            if not isinstance(body, bytes) or not body:
                raise SipError(488)
            self._incoming_invite = None
            local_type = content_type if offered else "application/sdp"
            self._oa(SEND_ANSWER if offered else SEND_OFFER)
            self.local_body = (body, local_type)
            response = self._response(request, 200, [*self._ok_headers(), *timer_headers])
            response.headers.add("Content-Type", local_type)
            response.body = body
            self._send_2xx(transaction, response, offered=not offered)
            self._apply_timer(timer)

        return d.addCallback(answer).addErrback(self._refuse, transaction, request, offered)

    def _refuse(
        self, failure: Failure, transaction: IServerTransaction, request: Request, offered: bool
    ) -> None:
        """A re-INVITE or UPDATE we could not answer: the offer is rejected and the session unchanged."""
        if offered and self.offer_answer == REMOTE_OFFER:
            self._oa(REJECT)
        if request.method == "INVITE":
            if self._incoming_invite is not transaction:
                return  # already answered: 487 when a BYE ended the session meanwhile
            self._incoming_invite = None
        error = failure.value
        if isinstance(error, SipError):
            transaction.respond(self._response(request, error.status, error.headers))
            return
        self._log.failure("Could not answer {method}", failure=failure, method=request.method)
        transaction.respond(self._response(request, 500))

    def _update_received(self, transaction: IServerTransaction, request: Request) -> object:
        """An UPDATE (RFC 3311 5.2): an offer only when none is outstanding; refreshes the session timer."""
        offered = bool(request.body)
        if offered and self.offer_answer == LOCAL_OFFER:
            raise SipError(491)
        if offered and self.offer_answer == REMOTE_OFFER:
            raise SipError(500, None, self._retry_after())
        timer, timer_headers = negotiate_uas(request, self.policy)
        self._learn_allow(request)
        content_type = content_type_of(request)
        if offered:
            self._oa(RECEIVE_OFFER)
            self.remote_body = (request.body, content_type)
            d = maybeDeferred(self.listener.offer_received, self, request.body, content_type)
        else:
            d = succeed(b"")

        def answer(body: object) -> None:
            if self.ended:
                transaction.respond(self._response(request, 481))
                return
            response = self._response(request, 200, [*self._ok_headers(), *timer_headers])
            if offered:
                if not isinstance(body, bytes) or not body:
                    raise SipError(488)
                self._oa(SEND_ANSWER)
                self.local_body = (body, content_type)
                response.headers.add("Content-Type", content_type)
                response.body = body
            transaction.respond(response)
            if self.dialog is not None and not self.dialog.terminated and self._initial_done():
                self._apply_timer(timer)

        return d.addCallback(answer).addErrback(self._refuse, transaction, request, offered)

    @property
    def receiving_invite(self) -> bool:
        """True while a re-INVITE we received awaits our answer (an offer then came in an INVITE, not in an
        UPDATE: a B2BUA passes it on in the same method)."""
        return self._incoming_invite is not None

    def _initial_pending(self) -> bool:
        """True while the INVITE that creates the session has no final response (no re-INVITE then)."""
        return False

    def _initial_done(self) -> bool:
        return not self._initial_pending()

    def bye(self, reason: str = "bye sent") -> None:
        """Send BYE and end the session (a no-op once it ended)."""
        if self.ended:
            return
        dialog = self.dialog
        if dialog is not None and not dialog.terminated:
            try:
                self._sender(dialog.create_request("BYE"), IGNORE, *self._destination())
            except ValueError as e:
                self._log.warn("Could not send BYE: {e}", e=e)
        self._end(reason)

    # -- session timers (RFC 4028) ---------------------------------------------------------------------

    def _apply_timer(self, timer: SessionTimer | None) -> None:
        """Run `timer` from now (a successful INVITE, re-INVITE or UPDATE resets it), or none."""
        self._cancel_session_timers()
        self.session_timer = timer
        if timer is None or self.ended:
            return
        clock = self.stack.clock
        if timer.we_refresh:
            self._timer_refresh = clock.callLater(timer.refresh_after, self._refresh)
        self._timer_expire = clock.callLater(timer.expire_after, self._expired)

    def _cancel_session_timers(self) -> None:
        refresh, expire = self._timer_refresh, self._timer_expire
        if refresh is None and expire is None:
            return  # most sessions have no timer: nothing to do on every answer and end
        self._timer_refresh = self._timer_expire = None
        for call in (refresh, expire):
            if call is not None and call.active():
                call.cancel()

    def _refresh(self) -> None:
        """Refresh the session: UPDATE without a body when the peer allows it, else a re-INVITE with our
        current description (RFC 4028 7.4, 9). A refresh due while another request is pending waits."""
        self._timer_refresh = None
        if self.ended:
            return
        busy = (
            self._outgoing_invite is not None
            or self._incoming_invite is not None
            or self._glare_op is not None
        )
        if busy or self.offer_answer != STABLE:
            self._timer_refresh = self.stack.clock.callLater(BUSY_RETRY, self._refresh)
            return
        if "UPDATE" in self.peer_allows:
            d = self.update()
        else:
            body, content_type = self.local_body or (b"", "application/sdp")
            d = self.reinvite(body, content_type)
        d.addErrback(lambda f: f.trap(SessionRequestFailed))  # the expiry timer still runs

    def _expired(self) -> None:
        self._timer_expire = None
        self.bye("session expired")

    # -- the end ---------------------------------------------------------------------------------------

    def _end(self, reason: str) -> None:
        """End the session once: timers stopped, dialog out of the stack's table, `terminated` reported."""
        if self.ended:
            return
        self.ended = True
        self._cancel_session_timers()
        if self._timer_glare is not None and self._timer_glare.active():
            self._timer_glare.cancel()
        self._timer_glare = self._glare_op = None
        for retransmitter, _offered in self._awaiting_ack.values():
            retransmitter.stop()
        self._awaiting_ack.clear()
        if self._acks is not None:
            self._acks.clear()
        self._outgoing_invite = None
        pending, self._pending = self._pending, []
        for op in pending:
            if not op.deferred.called:
                op.deferred.errback(SessionRequestFailed(481))
                op.deferred.addErrback(lambda f: None)
        self._ended()
        if self.dialog is not None:
            self.dialog.terminate()
            self.stack.remove_dialog(self.dialog)
        self._notify("terminated", reason)

    def _shrink_awaiting_ack(self) -> None:
        """A dict emptied keeps its grown table (224 bytes) for the call's whole length: start afresh."""
        if not self._awaiting_ack:
            self._awaiting_ack = {}

    def on_end(self, hook: Callable[[], object]) -> None:
        """Call `hook()` when the session ends, before `terminated` is reported (owners' bookkeeping)."""
        self._end_hooks += (hook,)

    def _ended(self) -> None:
        """Release what a subclass holds when the session ends."""
        hooks, self._end_hooks = self._end_hooks, ()
        for hook in hooks:
            try:
                hook()
            except Exception:
                self._log.failure("Session end hook failed")

    def __repr__(self) -> str:
        state = "ended" if self.ended else (self.dialog.state if self.dialog is not None else "new")
        return f"<{type(self).__name__} {state} {self.offer_answer}>"
