"""The answering side of an INVITE session (RFC 3261 13.3, 9.2, 15.1.2; RFC 4028 9).

`UasSession` is made from the server transaction of a new INVITE. Its owner then sends provisional responses
(`provisional`: with our To tag, a 101-199 makes the early dialog and registers it with the stack), answers
(`answer`: a 2xx with Contact and body, retransmitted until the ACK; the body is our answer, or our offer
when the INVITE had none, whose answer comes in the ACK) or refuses (`reject`: 300-699). A CANCEL reaches
it through `cancel_received` (487 to the INVITE). Once the dialog exists everything else is
`pbx.sip.session.InviteSession`'s.

`InviteAcceptor` is a ready `ITransactionUser` for the INVITE method: it makes a `UasSession` for each new
INVITE, hands it to a callback, and routes CANCELs to the right session.

The session knows nothing of SDP or of the application answering: `ISessionListener` does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pbx.sip.dialog import Dialog
from pbx.sip.errors import SipError
from pbx.sip.interfaces import IServerTransaction, ISipStack, ITransactionUser
from pbx.sip.message import Request, Response, new_tag
from pbx.sip.session import InviteSession
from pbx.sip.session_events import (
    DEFAULT_ALLOW,
    RECEIVE_OFFER,
    SEND_ANSWER,
    SEND_OFFER,
    STABLE,
    ISessionListener,
    Sender,
    content_type_of,
)
from pbx.sip.session_timer import SessionTimerPolicy, negotiate_uas


class UasSession(InviteSession):
    """An INVITE session on the side that received the INVITE.

    Args:
        stack: the SIP stack.
        transaction: the INVITE's server transaction.
        listener: told of what happens.
        contact: our Contact (default: `stack.contact_for` the flow the INVITE came on).
        Other keyword arguments as for `InviteSession`.

    Raises:
        SipError: 400 when the INVITE has no Contact; 422 with Min-SE when it asks for a session interval
            below our minimum (raised inside a transaction user's `request_received`, the stack answers).

    Attributes:
        invite: the INVITE.
        transaction: its server transaction.
        final_sent: True once a final response went out.
    """

    __slots__ = (
        "_invite_cseq",
        "_timer",
        "_timer_headers",
        "contact",
        "final_sent",
        "invite",
        "local_tag",
        "transaction",
    )

    _log = Logger()

    def __init__(
        self,
        stack: ISipStack,
        transaction: IServerTransaction,
        listener: ISessionListener,
        *,
        contact: str | None = None,
        policy: SessionTimerPolicy = SessionTimerPolicy(),  # noqa: B008 - frozen value
        rng: random.Random | None = None,
        sender: Sender | None = None,
        target: tuple[str, str, int] | None = None,
        allow: str = DEFAULT_ALLOW,
    ) -> None:
        super().__init__(stack, listener, policy=policy, rng=rng, sender=sender, target=target, allow=allow)
        request: Request = transaction.request
        contacts = request.contacts
        if not contacts or contacts[0].wildcard:
            raise SipError(400, "Missing Contact header")
        self._timer, timer_headers = negotiate_uas(request, policy)
        self._timer_headers = timer_headers or ()  # usually none: no empty list kept per call
        self.invite = request
        self._invite_cseq = request.cseq.number  # its ACK's: the INVITE's fields may be packed by then
        self.transaction = transaction
        self.final_sent = False
        self.local_tag = new_tag()
        flow = transaction.flow
        self.contact = contact or stack.contact_for(
            flow.transport, flow.remote_address[0], secure=request.uri.scheme == "sips"
        )
        self._learn_allow(request)
        if request.body:
            self._oa(RECEIVE_OFFER)
            self.remote_body = (request.body, content_type_of(request))

    def _initial_pending(self) -> bool:
        return not self.final_sent

    def _make_dialog(self, response: Response) -> None:
        if self.dialog is None:
            self.dialog = Dialog.create_uas(self.invite, response, self.contact)
            self.stack.add_dialog(self.dialog, self)
        else:
            self.dialog.response_sent(self.invite, response)

    def _dialog_response(self, status: int, reason: str | None = None) -> Response:
        """A 101-299 to the INVITE with our To tag, the INVITE's Record-Route values copied in order
        (RFC 3261 12.1.1: the proxies that record-routed stay on the caller's route set) and our Contact."""
        response = self.invite.response(status, reason, to_tag=self.local_tag)
        for value in self.invite.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", value)
        response.headers.add("Contact", self.contact)
        return response

    def _check_open(self) -> None:
        if self.final_sent or self.ended:
            raise ValueError("the INVITE already has its final response")

    def provisional(
        self,
        status: int = 180,
        body: bytes = b"",
        content_type: str = "application/sdp",
        headers: Sequence[tuple[str, str]] = (),
        reason: str | None = None,
    ) -> None:
        """Send a 101-199 with our To tag (100 Trying is the transaction's). The first one makes the early
        dialog. A body is early media: an unreliable 1xx does not complete the offer/answer exchange, so
        the 2xx must carry the same answer again (RFC 3261 13.3.1.1, RFC 6337 3.1). `reason`: the reason
        phrase (default: the status's own; a B2BUA passes on the callee's)."""
        self._check_open()
        if not 100 < status < 200:
            raise ValueError(f"not a provisional status: {status}")
        response = self._dialog_response(status, reason)
        response.headers.extend(headers)
        if body:
            response.headers.add("Content-Type", content_type)
            response.body = body
        self._make_dialog(response)
        self.transaction.respond(response)

    def answer(
        self, body: bytes, content_type: str = "application/sdp", headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Send the 200 (with Contact, Allow, Supported and the negotiated Session-Expires) and retransmit it
        until the ACK (RFC 3261 13.3.1.4). `body` answers the INVITE's offer, or is our offer when it had
        none (RFC 3261 13.2.1: the 2xx must then carry one).

        Raises:
            ValueError: the final response was sent already, or `body` is empty.
        """
        self._check_open()
        if not body:
            raise ValueError("a 2xx to an INVITE needs the answer, or an offer when the INVITE had none")
        offered = self.offer_answer == STABLE
        response = self._dialog_response(200)
        self._make_dialog(response)
        response.headers.extend([("Allow", self.allow), ("Supported", "timer"), *self._timer_headers])
        response.headers.extend(headers)
        response.headers.add("Content-Type", content_type)
        response.body = body
        self._oa(SEND_OFFER if offered else SEND_ANSWER)
        self.local_body = (body, content_type)
        self.final_sent = True
        self._send_2xx(self.transaction, response, offered=offered)
        self._apply_timer(self._timer)

    def reject(
        self, status: int = 486, reason: str | None = None, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Refuse the INVITE with a 300-699 (same To tag as our provisional responses); the session ends."""
        self._check_open()
        if not 300 <= status < 700:
            raise ValueError(f"not a failure status: {status}")
        response = self.invite.response(status, reason, to_tag=self.local_tag)
        response.headers.extend(headers)
        self.final_sent = True
        if self.dialog is not None:
            self.dialog.response_sent(self.invite, response)
        self.transaction.respond(response)
        self._end("rejected")

    def cancel_received(self) -> None:
        """The INVITE was CANCELled (the stack answered the CANCEL 200): 487, then the session ends
        (RFC 3261 9.2). After the final response a CANCEL changes nothing."""
        if self.final_sent or self.ended:
            return
        self.final_sent = True
        self.transaction.respond(self.invite.response(487, to_tag=self.local_tag))
        self._notify("cancelled")
        self._end("cancelled")

    def hangup(self, status: int = 480) -> None:
        """End the session whatever its state: `reject(status)` before the answer, BYE after it."""
        if self.ended:
            return
        if not self.final_sent:
            self.reject(status)
        else:
            self.bye()

    def _bye_received(self) -> None:
        if not self.final_sent:  # RFC 3261 15.1.2: a BYE in the early dialog ends the pending INVITE
            self.final_sent = True
            self.transaction.respond(self.invite.response(487, to_tag=self.local_tag))
        super()._bye_received()

    def _acked(self, ack: Request) -> None:
        if ack.cseq.number == self._invite_cseq:
            self._notify("confirmed")


@implementer(ITransactionUser)
class InviteAcceptor:
    """The transaction user of new INVITEs: one `UasSession` each, handed to `on_session`.

    `on_session(session)` sets `session.listener` if it wants another one than `listener_factory()`'s, then
    answers (now or later) through the session. CANCELs reach the session of their INVITE.

    Args:
        stack: the SIP stack (register this with `stack.register("INVITE", acceptor)`).
        on_session: called with each new session.
        listener_factory: makes the listener of each new session.
        session_options: keyword arguments for each `UasSession` (policy, rng, sender, allow ...).
    """

    _log = Logger()

    def __init__(
        self,
        stack: ISipStack,
        on_session: Callable[[UasSession], object],
        listener_factory: Callable[[], ISessionListener],
        **session_options: Any,
    ) -> None:
        self._stack = stack
        self._on_session = on_session
        self._listener_factory = listener_factory
        self._options = session_options
        self._sessions: dict[int, UasSession] = {}  # id(server transaction) -> its session, until final

    def request_received(self, transaction: IServerTransaction, request: object) -> object:
        assert isinstance(request, Request)
        session = UasSession(self._stack, transaction, self._listener_factory(), **self._options)
        key = id(transaction)
        self._sessions[key] = session
        session.on_end(lambda: self._sessions.pop(key, None))
        try:
            result = self._on_session(session)
        except Exception:
            self._failed(Failure(), session)
            return None
        if isinstance(result, Deferred):
            result.addErrback(self._failed, session)
        return None

    def _failed(self, failure: Failure, session: UasSession) -> None:
        """`on_session` failed: the INVITE gets a 500 (or the session its BYE) instead of hanging."""
        self._log.failure("Could not start a session for {cid}", failure=failure, cid=session.invite.call_id)
        session.hangup(500)

    def cancel_received(self, cancel: object, invite: IServerTransaction) -> None:
        session = self._sessions.get(id(invite))
        if session is not None:
            session.cancel_received()
        else:
            invite.respond(invite.request.response(487))

    def __len__(self) -> int:
        return len(self._sessions)
