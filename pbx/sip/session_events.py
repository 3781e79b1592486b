"""What an INVITE session shares with its owner: the listener interface, the offer/answer state table, errors.

- `ISessionListener` (and `SessionListener`, every method a no-op): what a `pbx.sip.session.InviteSession`
  tells its owner (a B2BUA leg, an IVR, a softphone).
- `OFFER_ANSWER`: the offer/answer states of RFC 3264 4 and RFC 6337 2 (one offer outstanding at a time).
- `SessionRequestFailed`: how a request the session sent in its dialog failed.
- `_Client`: the client transaction user of the session's requests.

Nothing here knows of SDP, transports or the PBX.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

from pbx.sip.errors import SipError
from pbx.sip.interfaces import IClientTransactionUser
from pbx.sip.message import Request, Response

if TYPE_CHECKING:
    from pbx.sip.session import InviteSession

# Offer/answer states (RFC 3264 4, RFC 6337 2): at most one offer outstanding in a session.
STABLE: Final = "stable"
LOCAL_OFFER: Final = "local offer"  # we sent an offer, no answer yet
REMOTE_OFFER: Final = "remote offer"  # we received an offer and owe the answer

SEND_OFFER: Final = "send offer"
RECEIVE_OFFER: Final = "receive offer"
SEND_ANSWER: Final = "send answer"
RECEIVE_ANSWER: Final = "receive answer"
REJECT: Final = "reject"  # the request carrying the offer failed: the session stays as it was

OFFER_ANSWER: Final[dict[tuple[str, str], str]] = {
    (STABLE, SEND_OFFER): LOCAL_OFFER,
    (STABLE, RECEIVE_OFFER): REMOTE_OFFER,
    (LOCAL_OFFER, RECEIVE_ANSWER): STABLE,
    (LOCAL_OFFER, REJECT): STABLE,
    (REMOTE_OFFER, SEND_ANSWER): STABLE,
    (REMOTE_OFFER, REJECT): STABLE,
}

DEFAULT_ALLOW: Final = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, REFER, NOTIFY, MESSAGE"
SUPPORTED: Final = "timer"
MAX_RETRIES: Final = 5  # glare (491) and 422 retries of one request
BUSY_RETRY: Final = 2.0  # a refresh due while another request is pending waits this long

Sender = Callable[..., Any]
"""`sender(request, tu, transport, host, port)` -> client transaction, as `ISipStack.send_request`."""


class SessionRequestFailed(Exception):
    """An in-dialog request we sent got a non-2xx final response (or none: 408, 503 for a transport error).

    Attributes:
        status: the final status.
        response: the response, None for a timeout or a transport error.
    """

    def __init__(self, status: int, response: Response | None = None) -> None:
        super().__init__(f"request failed with {status}")
        self.status = status
        self.response = response


class ISessionListener(Interface):
    """What an INVITE session tells its owner. `SessionListener` provides every method as a no-op."""

    def offer_received(session: InviteSession, body: bytes, content_type: str) -> object:
        """An offer (re-INVITE, UPDATE, or the 2xx to our INVITE without one): return the answer body
        (bytes) or a Deferred firing with it; raise `SipError` (488) to refuse it."""

    def offer_requested(session: InviteSession) -> object:
        """A re-INVITE without an offer: return our offer (bytes or a Deferred); the ACK brings the answer."""

    def answer_received(session: InviteSession, body: bytes, content_type: str) -> None:
        """The answer, in an ACK, to an offer we put in a 2xx."""

    def request_received(session: InviteSession, request: Request) -> object:
        """INFO, REFER, NOTIFY, MESSAGE ... in the dialog: return a status, a `Response`, or a Deferred."""

    def provisional(session: InviteSession, response: Response) -> None:
        """UAC: a 101-199 response to our INVITE."""

    def answered(session: InviteSession, response: Response) -> None:
        """UAC: the 2xx that made the dialog (its body is the answer, or the offer we answered)."""

    def failed(session: InviteSession, status: int, response: Response | None) -> None:
        """UAC: the INVITE failed (non-2xx, 408 for a timeout, 503 for a transport error)."""

    def cancelled(session: InviteSession) -> None:
        """UAS: the caller CANCELled before we answered (the stack answered 487 through us)."""

    def confirmed(session: InviteSession) -> None:
        """The initial INVITE's 2xx was ACKed (received on the UAS side, sent on the UAC side)."""

    def terminated(session: InviteSession, reason: str) -> None:
        """The session ended (always the last call): "bye received", "bye sent", "no ACK", "rejected",
        "cancelled", "failed", "session expired", "dialog gone"."""


@implementer(ISessionListener)
class SessionListener:
    """An `ISessionListener` that refuses offers (488), accepts nothing else and ignores every event.

    A base for listeners that care about a few events (it has no instance dictionary of its own)."""

    __slots__ = ()

    def offer_received(self, session: InviteSession, body: bytes, content_type: str) -> object:
        raise SipError(488)

    def offer_requested(self, session: InviteSession) -> object:
        if session.local_body is None:
            raise SipError(488)
        return session.local_body[0]

    def answer_received(self, session: InviteSession, body: bytes, content_type: str) -> None:
        pass

    def request_received(self, session: InviteSession, request: Request) -> object:
        return 405

    def provisional(self, session: InviteSession, response: Response) -> None:
        pass

    def answered(self, session: InviteSession, response: Response) -> None:
        pass

    def failed(self, session: InviteSession, status: int, response: Response | None) -> None:
        pass

    def cancelled(self, session: InviteSession) -> None:
        pass

    def confirmed(self, session: InviteSession) -> None:
        pass

    def terminated(self, session: InviteSession, reason: str) -> None:
        pass


@implementer(IClientTransactionUser)
class _Client:
    """The user of one client transaction of a session: hands its final response (or its failure) on."""

    __slots__ = ("_on_final", "_on_provisional")

    def __init__(
        self,
        on_final: Callable[[Any, Response | None, int], None],
        on_provisional: Callable[[Any, Response], None] | None = None,
    ) -> None:
        self._on_final = on_final
        self._on_provisional = on_provisional

    def response_received(self, transaction: object, response: object) -> None:
        assert isinstance(response, Response)
        if response.status < 200:
            if self._on_provisional is not None:
                self._on_provisional(transaction, response)
            return
        self._on_final(transaction, response, response.status)

    def transaction_timeout(self, transaction: object) -> None:
        self._on_final(transaction, None, 408)

    def transport_error(self, transaction: object, reason: str) -> None:
        self._on_final(transaction, None, 503)


def _ignore_final(transaction: object, response: Response | None, status: int) -> None:
    """The fate of a BYE or a fork's BYE: nothing waits for it."""


IGNORE: Final = _Client(_ignore_final)


class _Outgoing:
    """One re-INVITE, UPDATE or other request we send in the dialog, retried on 491 (and 422)."""

    __slots__ = ("acked", "body", "content_type", "deferred", "floor", "headers", "method", "retries")

    def __init__(
        self, method: str, body: bytes, content_type: str, headers: Sequence[tuple[str, str]]
    ) -> None:
        self.method = method
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)
        self.deferred: Deferred[Response] = Deferred()
        self.retries = 0
        self.floor: int | None = None  # a Min-SE learnt from a 422
        self.acked = False


def content_type_of(message: Request | Response) -> str:
    return message.headers.get("Content-Type") or "application/sdp"
