"""A client request that answers digest challenges: send, and on 401/407 retry with credentials (RFC 3261
8.1.3.5, 22.2, 22.3; RFC 7616; RFC 8760).

`ClientRequest` sends a request through `SipStack.send_request` and reports its final outcome in a Deferred:
- a 401 or 407 is answered for every (header, realm) whose credentials the lookup gives, the strongest
  algorithm per realm; the retry is a copy of the original request with the same Call-ID, From, To (tag
  included in a dialog) and Route set, the next CSeq (`next_cseq`: in a dialog the dialog's own counter, see
  `dialog_cseq`), a new Via branch (the stack adds it) and the Authorization / Proxy-Authorization headers.
  Credentials for realms answered earlier in the sequence are sent again (a proxy wants them each time).
- a challenge with `stale=true` for a realm we answered is retried once with the new nonce; any other second
  challenge for a realm we answered means the credentials were refused: that 401/407 is the outcome.
- a 401/407 we cannot answer (no credentials for its realms, only unknown algorithms) is the outcome.
- no final response (Timer B/F) gives a synthesized 408, a transport failure a synthesized 503 (RFC 3261
  8.1.3.1); `local_failure` then says why.

For INVITE, the transaction layer ACKs the 401/407 itself (RFC 3261 17.1.1.3); provisional responses go to
`on_provisional`; `cancel()` sends a CANCEL once a provisional has arrived (RFC 3261 9.1), and stops retries;
the ACK of a 2xx is the dialog's job (use `request`, the INVITE last sent, with the 2xx).

Failover between several targets (RFC 3263) composes around this class: one `ClientRequest` per target with a
shared `DigestCache`, since a nonce belongs to the server that made it. This module knows no PBX.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from pbx.sip.client_auth import (
    CredentialLookup,
    Credentials,
    DigestCache,
    RealmKey,
    authorization_header,
    build_authorization,
    random_cnonce,
    select_challenges,
)
from pbx.sip.dialog import Dialog
from pbx.sip.digest import DigestChallenge, UnsupportedAlgorithm
from pbx.sip.interfaces import IClientTransactionUser
from pbx.sip.message import Request, Response
from pbx.sip.transaction import IGNORE_OUTCOME, make_cancel

Destination = tuple[str, str, int]
"""(transport, host, port) of the next hop."""

MAX_CSEQ = 2**31 - 1  # RFC 3261 8.1.1.5


def dialog_cseq(dialog: Dialog) -> Callable[[int], int]:
    """A `next_cseq` for a request in `dialog`: each retry takes the dialog's next local CSeq (RFC 3261
    12.2.1.1), so the dialog's later requests keep counting up from it."""

    def advance(_previous: int) -> int:
        dialog.local_cseq += 1
        return dialog.local_cseq

    return advance


def _next_number(previous: int) -> int:
    return previous + 1


class ClientRequest:
    """One request, retried with digest credentials until it gets a final answer.

    Args:
        stack: a `SipStack` (its `send_request`, `send_cancel`).
        request: the request to send, without Via (the stack adds one per attempt) and without credentials;
            it is copied, never changed.
        destination: (transport, host, port) of the next hop; retries go to the same one (the nonce is
            that server's).
        credentials: realm -> `Credentials` or None.
        cache: remembered challenges and nonce-counts shared between requests to the same server; with
            `preemptive`, its challenges are answered in the first request already. A private one by default.
        preemptive: answer the cache's challenges before being challenged.
        cnonce: makes client nonces (tests give a fixed one).
        on_provisional: called with each 1xx.
        on_extra_final: called with each 2xx to an INVITE after the outcome: retransmissions of the first
            (its ACK was lost: send it again, RFC 3261 13.2.2.4, RFC 6026) and those of other forks (each
            needs an ACK and a BYE).
        next_cseq: previous CSeq -> the retry's; `dialog_cseq(dialog)` in a dialog.
        max_attempts: the most requests sent in all (a bound on servers that keep challenging new realms).
        server_name: over TLS, the name the server's certificate must show (`Target.server_name`, RFC 5922);
            None checks the destination's host.

    Attributes:
        request: the request last sent (with its Via, CSeq and credentials).
        transaction: its client transaction (for an INVITE: what a CANCEL refers to).
        attempts: how many requests were sent.
        local_failure: None, or why the outcome was synthesized: "timeout" or the transport error.
    """

    _log = Logger()

    def __init__(
        self,
        stack: Any,
        request: Request,
        destination: Destination,
        credentials: CredentialLookup,
        *,
        cache: DigestCache | None = None,
        preemptive: bool = True,
        cnonce: Callable[[], str] = random_cnonce,
        on_provisional: Callable[[Response], None] | None = None,
        on_extra_final: Callable[[Response], None] | None = None,
        next_cseq: Callable[[int], int] = _next_number,
        max_attempts: int = 5,
        server_name: str | None = None,
    ) -> None:
        self._stack = stack
        server_name = server_name or getattr(destination, "server_name", None)  # a `resolver.Hop`
        tls = destination[0].lower() == "tls"
        self._server_name = {"server_name": server_name} if server_name and tls else {}
        self._template = request.copy()
        self._destination = destination
        self._lookup = credentials
        self._cache = cache if cache is not None else DigestCache()
        self._preemptive = preemptive and cache is not None
        self._cnonce = cnonce
        self._on_provisional = on_provisional
        self._on_extra_final = on_extra_final
        self._next_cseq = next_cseq
        self._max_attempts = max_attempts
        self._done: Deferred[Response] = Deferred(lambda _d: self._cancelled_by_caller())
        self._answering: dict[RealmKey, DigestChallenge] = {}  # what the next request answers
        self._challenged: set[RealmKey] = set()  # realms that challenged us in this sequence and we answered
        self._stale_retries: set[RealmKey] = set()
        self._found: dict[str, Credentials | None] = {}
        self._provisional_seen = False
        self._cancel_wanted = False
        self._cancel_sent = False
        self.request: Request = self._template
        self.transaction: Any = None
        self.attempts = 0
        self.local_failure: str | None = None

    @property
    def finished(self) -> bool:
        """True once the outcome is known."""
        return self._done.called

    def start(self) -> Deferred[Response]:
        """Send the request; the Deferred fires with the final response (never fails, unless cancelled)."""
        if self.attempts:
            raise RuntimeError("ClientRequest.start() called twice")
        if self._preemptive:
            self._answering = dict(self._cache.challenges())
        self._send(self._template.copy())
        return self._done

    def cancel(self) -> None:
        """Give up: no more retries; for an INVITE, CANCEL it (now, or when its first 1xx arrives).

        The outcome is still the final response that comes (487 for a cancelled INVITE).
        """
        if self.finished:
            return
        self._cancel_wanted = True
        if self.request.method == "INVITE" and self._provisional_seen:
            self._send_cancel()

    # -- sending -----------------------------------------------------------------------------------------

    def _credentials(self, realm: str) -> Credentials | None:
        if realm not in self._found:
            try:
                self._found[realm] = self._lookup(realm)
            except Exception:
                self._log.failure("The credential lookup failed for realm {realm!r}", realm=realm)
                self._found[realm] = None
        return self._found[realm]

    def _authorize(self, request: Request) -> None:
        """Add a header per realm being answered, counting nonce-counts in the cache.

        Authorization before Proxy-Authorization: their order means nothing to RFC 3261, but SIPp 3.6 (a
        common test carrier) finds "Authorization:" inside "Proxy-Authorization:" and checks the wrong one.
        """
        for key, challenge in sorted(self._answering.items(), key=lambda item: item[0][0]):
            proxy, realm = key
            credentials = self._credentials(realm)
            if credentials is None:
                del self._answering[key]
                continue
            try:
                value = build_authorization(
                    challenge,
                    credentials,
                    request,
                    nc=self._cache.next_nc(key, challenge),
                    cnonce=self._cnonce(),
                )
            except (UnsupportedAlgorithm, ValueError) as e:
                self._log.warn("Cannot answer the challenge of realm {realm!r}: {e}", realm=realm, e=e)
                del self._answering[key]
                self._cache.forget(key)
                continue
            request.headers.add(authorization_header(proxy), str(value))

    def _send(self, request: Request) -> None:
        self._authorize(request)
        self.attempts += 1
        self.request = request
        self._provisional_seen = False
        attempt = _Attempt(self, self.attempts)
        transport, host, port = self._destination
        try:
            transaction = self._stack.send_request(
                request, attempt, transport, host, port, **self._server_name
            )
        except Exception as e:  # an unusable destination or transport: as a transport error
            self._log.failure("Could not send {method}", method=request.method)
            self._finish_locally(503, f"transport error: {e}")
            return
        if attempt.number == self.attempts:
            self.transaction = transaction

    def _retry(self) -> None:
        request = self._template.copy()
        previous = self.request.cseq.number
        number = self._next_cseq(previous)
        if not 0 < number <= MAX_CSEQ:
            raise ValueError(f"CSeq {number} out of range")
        request.headers.set("CSeq", f"{number} {request.method}")
        self._send(request)

    def _send_cancel(self) -> None:
        if self._cancel_sent or self.transaction is None:
            return
        self._cancel_sent = True
        transport, host, port = self._destination
        self._stack.send_cancel(
            make_cancel(self.transaction.request), IGNORE_OUTCOME, transport, host, port, **self._server_name
        )

    # -- outcomes ----------------------------------------------------------------------------------------

    def _response(self, attempt: _Attempt, response: Response) -> None:
        if attempt.number != self.attempts:
            return
        if response.status < 200:
            if self.finished:
                return
            self._provisional_seen = True
            if self._cancel_wanted:
                self._send_cancel()
            if self._on_provisional is not None:
                self._on_provisional(response)
            return
        if self.finished:
            if response.status < 300 and self._on_extra_final is not None:
                self._on_extra_final(response)
            return
        if response.status in (401, 407) and not self._cancel_wanted and self._prepare_retry(response):
            try:
                self._retry()
            except ValueError as e:
                self._log.warn("Cannot retry {method}: {e}", method=self.request.method, e=e)
                self._done.callback(response)
            return
        self._done.callback(response)

    def _prepare_retry(self, response: Response) -> bool:
        """Decide from a 401/407 whether to retry, updating what the retry answers (RFC 3261 22.2, 22.3)."""
        if self.attempts >= self._max_attempts:
            return False
        retry = False
        for key, challenge in select_challenges(response).items():
            if self._credentials(key[1]) is None:
                continue
            if key in self._challenged:
                if not challenge.stale or key in self._stale_retries:
                    self._cache.forget(key)  # refused: do not offer these credentials again
                    return False
                self._stale_retries.add(key)
            self._challenged.add(key)
            self._answering[key] = challenge
            retry = True
        return retry

    def _finish_locally(self, status: int, reason: str) -> None:
        if self.finished:
            return
        self.local_failure = reason
        self._done.callback(self.request.response(status))

    def _timeout(self, attempt: _Attempt) -> None:
        if attempt.number == self.attempts:
            self._finish_locally(408, "timeout")

    def _transport_error(self, attempt: _Attempt, reason: str) -> None:
        if attempt.number == self.attempts:
            self._finish_locally(503, f"transport error: {reason}")

    def _cancelled_by_caller(self) -> None:
        """The Deferred was cancelled (it fails with CancelledError): stop retrying, CANCEL an INVITE."""
        self._cancel_wanted = True
        if self.request.method == "INVITE" and self._provisional_seen:
            self._send_cancel()


@implementer(IClientTransactionUser)
class _Attempt:
    """The transaction user of one attempt: events of superseded attempts are ignored by number."""

    __slots__ = ("number", "owner")

    def __init__(self, owner: ClientRequest, number: int) -> None:
        self.owner = owner
        self.number = number

    def response_received(self, transaction: object, response: object) -> None:
        assert isinstance(response, Response)
        self.owner._response(self, response)

    def transaction_timeout(self, transaction: object) -> None:
        self.owner._timeout(self)

    def transport_error(self, transaction: object, reason: str) -> None:
        self.owner._transport_error(self, reason)


def send_authenticated(
    stack: Any, request: Request, destination: Destination, credentials: CredentialLookup, **options: Any
) -> Deferred[Response]:
    """Send `request`, answering digest challenges; fires with the final response. See `ClientRequest`."""
    return ClientRequest(stack, request, destination, credentials, **options).start()
