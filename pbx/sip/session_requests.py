"""The requests an INVITE session sends in its dialog: re-INVITE, UPDATE and the others (RFC 3261 14.1,
RFC 3311, RFC 3264), as a mixin of `pbx.sip.session.InviteSession`.

Each request is an `_Outgoing` operation whose Deferred fires with the 2xx or fails with
`SessionRequestFailed`. An offer moves the session's offer/answer state to `LOCAL_OFFER` until the answer (or
the failure) comes; a 2xx to an INVITE is ACKed (with our answer when it carried the offer) and re-ACKed when
it is retransmitted. A 491 is retried after `glare_delay()` (RFC 3261 14.1), a 422 at once with the Min-SE
it names (RFC 4028 7.1), each at most `MAX_RETRIES` times; a 408 or no response ends the dialog with BYE,
a 481 ends it at once (RFC 3261 12.2.1.2). A 2xx to an INVITE or UPDATE sets the session timer it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.python.failure import Failure

from pbx.sip.errors import SipError
from pbx.sip.message import Request, Response
from pbx.sip.session_events import (
    LOCAL_OFFER,
    MAX_RETRIES,
    RECEIVE_ANSWER,
    RECEIVE_OFFER,
    REJECT,
    SEND_ANSWER,
    SEND_OFFER,
    STABLE,
    SUPPORTED,
    SessionRequestFailed,
    _Client,
    _Outgoing,
    content_type_of,
)
from pbx.sip.session_timer import SessionTimer, min_se, request_headers
from pbx.sip.session_timer import from_response as timer_from_response

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from pbx.sip.dialog import Dialog
    from pbx.sip.interfaces import IServerTransaction, ISipStack
    from pbx.sip.invite import UacAckCache
    from pbx.sip.session_events import Sender
    from pbx.sip.session_timer import SessionTimerPolicy


class _Session(Protocol):
    """What the mixin uses of `InviteSession` (mypy checks each method against it)."""

    stack: ISipStack
    listener: Any  # an ISessionListener, called with the session itself
    policy: SessionTimerPolicy
    allow: str
    dialog: Dialog | None
    ended: bool
    offer_answer: str
    local_body: tuple[bytes, str] | None
    remote_body: tuple[bytes, str] | None
    session_timer: SessionTimer | None
    _sender: Sender
    _acks: UacAckCache | None
    _pending: list[_Outgoing]
    _outgoing_invite: _Outgoing | None
    _incoming_invite: IServerTransaction | None
    _glare_op: _Outgoing | None
    _timer_glare: IDelayedCall | None

    def _oa(self, event: str) -> None: ...
    def _destination(self) -> tuple[str, str, int]: ...
    def _learn_allow(self, message: Request | Response) -> None: ...
    def _send_ack(self, request: Request, response: Response, body: bytes, content_type: str) -> None: ...
    def _apply_timer(self, timer: SessionTimer | None) -> None: ...
    def _end(self, reason: str) -> None: ...
    def glare_delay(self) -> float: ...
    def bye(self, reason: str = ...) -> None: ...
    def _start(self, op: _Outgoing) -> Deferred[Response]: ...
    def _transmit(self, op: _Outgoing) -> None: ...
    def _final(self, op: _Outgoing, transaction: Any, response: Response | None, status: int) -> None: ...
    def _succeeded(self, op: _Outgoing, request: Request, response: Response, offered: bool) -> None: ...
    def _done(self, op: _Outgoing, response: Response, timer: SessionTimer | None) -> None: ...
    def _retry_glare(self) -> None: ...


class SessionRequests:
    """Sending re-INVITE, UPDATE and other in-dialog requests; mixed into `InviteSession`."""

    __slots__ = ()

    local_body: tuple[bytes, str] | None
    remote_body: tuple[bytes, str] | None
    _outgoing_invite: _Outgoing | None
    _glare_op: _Outgoing | None

    def reinvite(
        self: _Session,
        body: bytes = b"",
        content_type: str = "application/sdp",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Deferred[Response]:
        """Send a re-INVITE (with an offer, or without: the 2xx's offer goes to `offer_received` and its
        answer into the ACK). Fires with the 2xx, or fails with `SessionRequestFailed` (a 491 is retried
        first). Raises ValueError when another INVITE is pending or an offer is outstanding."""
        if (
            self._outgoing_invite is not None
            or self._incoming_invite is not None
            or self._glare_op is not None
        ):
            raise ValueError("an INVITE is already pending in this session")
        return self._start(_Outgoing("INVITE", body, content_type, headers))

    def update(
        self: _Session,
        body: bytes = b"",
        content_type: str = "application/sdp",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Deferred[Response]:
        """Send an UPDATE (with an offer, or without: a session refresh). Fires with the 2xx, or fails with
        `SessionRequestFailed` after 491 retries."""
        return self._start(_Outgoing("UPDATE", body, content_type, headers))

    def request(
        self: _Session,
        method: str,
        body: bytes = b"",
        content_type: str = "application/sdp",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Deferred[Response]:
        """Send another request in the dialog (INFO, REFER, NOTIFY, MESSAGE); fires with its final reply."""
        if method in ("INVITE", "UPDATE", "BYE", "ACK", "CANCEL", "PRACK"):
            raise ValueError(f"use the session's own method for {method}")
        return self._start(_Outgoing(method, body, content_type, headers))

    def _start(self: _Session, op: _Outgoing) -> Deferred[Response]:
        if self.ended or self.dialog is None or self.dialog.terminated:
            return fail(SessionRequestFailed(481))
        if op.body and op.method in ("INVITE", "UPDATE") and self.offer_answer != STABLE:
            raise ValueError(f"an offer is outstanding ({self.offer_answer})")
        self._pending.append(op)
        self._transmit(op)
        return op.deferred

    def _transmit(self: _Session, op: _Outgoing) -> None:
        assert self.dialog is not None
        headers = list(op.headers)
        if op.method in ("INVITE", "UPDATE"):
            headers += request_headers(self.policy, self.session_timer, op.floor)
            headers += [("Allow", self.allow), ("Supported", SUPPORTED)]
            if op.body:
                self._oa(SEND_OFFER)
                self.local_body = (op.body, op.content_type)
        request = self.dialog.create_request(
            op.method, body=op.body, content_type=op.content_type if op.body else None, headers=headers
        )
        if op.method == "INVITE":
            self._outgoing_invite = op
        client = _Client(lambda txn, resp, status: self._final(op, txn, resp, status))
        self._sender(request, client, *self._destination())

    def _final(
        self: _Session, op: _Outgoing, transaction: Any, response: Response | None, status: int
    ) -> None:
        """The final response to one of our in-dialog requests (every 2xx to an INVITE comes here)."""
        if op.acked:
            if response is not None and self._acks is not None:
                self._acks.on_stray_2xx(response)  # a retransmitted 2xx: ACK it again
            return
        request: Request = transaction.request
        assert self.dialog is not None
        if self.ended or op.deferred.called:
            if response is not None and op.method == "INVITE" and 200 <= status < 300:
                op.acked = True
                self._send_ack(request, response, b"", "")  # every 2xx is ACKed, even after our BYE
            return
        if response is not None:
            self.dialog.receive_response(request, response)
        offered = bool(op.body) and op.method in ("INVITE", "UPDATE")
        if op.method == "INVITE":
            self._outgoing_invite = None
        if 200 <= status < 300 and response is not None:
            self._succeeded(op, request, response, offered)
            return
        if offered and self.offer_answer == LOCAL_OFFER:
            self._oa(REJECT)
        if status in (491, 422) and op.retries < MAX_RETRIES and op.method in ("INVITE", "UPDATE"):
            op.retries += 1
            if status == 422 and response is not None:
                op.floor = min_se(response) or op.floor
                self._transmit(op)
                return
            if self._glare_op is None:  # one retry waits at a time; a second request that met glare fails
                self._glare_op = op
                self._timer_glare = self.stack.clock.callLater(self.glare_delay(), self._retry_glare)
                return
        self._pending.remove(op)
        op.deferred.errback(SessionRequestFailed(status, response))
        if status == 408:  # a 408 or no response at all ends the dialog (RFC 3261 12.2.1.2, RFC 4028 10)
            self.bye("dialog gone")
        elif self.dialog.terminated:  # 481
            self._end("dialog gone")

    def _succeeded(
        self: _Session, op: _Outgoing, request: Request, response: Response, offered: bool
    ) -> None:
        self._learn_allow(response)
        try:
            timer = timer_from_response(response) if op.method in ("INVITE", "UPDATE") else self.session_timer
        except SipError:
            timer = None
        if offered:
            if response.body:
                self._oa(RECEIVE_ANSWER)
                self.remote_body = (response.body, content_type_of(response))
            else:
                self._oa(REJECT)
        if op.method == "INVITE":
            op.acked = True
            if offered or not response.body:
                self._send_ack(request, response, b"", "")
                self._done(op, response, timer)
                return
            self._oa(RECEIVE_OFFER)
            content_type = content_type_of(response)
            self.remote_body = (response.body, content_type)
            d = maybeDeferred(self.listener.offer_received, self, response.body, content_type)

            def ack(body: object) -> None:
                if self.ended:  # hung up meanwhile: still ACK the 2xx (the BYE went first)
                    self._send_ack(request, response, body if isinstance(body, bytes) else b"", content_type)
                    return
                if isinstance(body, bytes) and body:
                    self._oa(SEND_ANSWER)
                    self.local_body = (body, content_type)
                    self._send_ack(request, response, body, content_type)
                    self._done(op, response, timer)
                else:
                    raise SipError(488)

            def refused(failure: Failure) -> None:
                if self.ended:
                    self._send_ack(request, response, b"", "")
                    return
                self._oa(REJECT)
                self._send_ack(request, response, b"", "")  # RFC 3261 13.2.2.4: ACK, then BYE
                self._pending.remove(op)
                op.deferred.errback(SessionRequestFailed(488, response))
                self.bye("offer refused")

            d.addCallback(ack).addErrback(refused)
            return
        self._done(op, response, timer)

    def _done(self: _Session, op: _Outgoing, response: Response, timer: SessionTimer | None) -> None:
        self._pending.remove(op)
        if op.method in ("INVITE", "UPDATE"):
            self._apply_timer(timer)
        op.deferred.callback(response)

    def _retry_glare(self: _Session) -> None:
        self._timer_glare = None
        op, self._glare_op = self._glare_op, None
        if op is None or self.ended:
            return
        busy = op.method == "INVITE" and self._incoming_invite is not None
        if busy or (op.body and self.offer_answer != STABLE):
            self._glare_op = op  # the peer's request is still being answered: wait once more
            self._timer_glare = self.stack.clock.callLater(self.glare_delay(), self._retry_glare)
            return
        self._transmit(op)
