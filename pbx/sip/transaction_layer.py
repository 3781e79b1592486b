"""The transaction layer: matching messages to transactions (RFC 3261 17.1.3, 17.2.3) and CANCEL (9.2).

`TransactionLayer` keeps two tables of live transactions, filled when a transaction is created and emptied by
the transaction's own `on_terminated`:

- client transactions, keyed by (top Via branch, method): a response matches on its top Via branch and its
  CSeq method (17.1.3);
- server transactions, keyed by (branch, sent-by host, sent-by port, method) when the branch carries the
  RFC 3261 magic cookie, ACK counting as INVITE and CANCEL as its own method (17.2.3); otherwise by the
  RFC 2543 fields (Request-URI, To tag, From tag, Call-ID, CSeq, top Via). An RFC 2543 ACK matches the INVITE
  whose response carried the ACK's To tag.

New requests go up to an `ITransactionUser`; an ACK that matches nothing (the ACK of a 2xx) goes to its
`ack_received`; a CANCEL gets its own non-INVITE server transaction, is answered 200 or 481 here and reported
through `cancel_received`. A response that matches nothing is the caller's (`receive_response` returns False).

Timers J and K of all transactions run from one `WaitTimers` (one rolling `IDelayedCall`, armed only while a
transaction waits, and cleared when the layer holds no transaction any more).

This module knows nothing of transports, serialization, DNS or dialogs: the stack sends what it is handed and
validates messages first (a malformed top Via, CSeq, From or To raises `SipParseError` here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from pbx.sip.headers import NameAddress
from pbx.sip.interfaces import IClientTransactionUser, IFlow, ITransactionLayerUser
from pbx.sip.message import MAGIC_COOKIE, Request, Response, new_tag
from pbx.sip.timers import TimerConfig
from pbx.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    RetransmissionCounts,
    SendRequest,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Transaction,
    WaitTimers,
)

ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction
ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction


class TransactionLayer:
    """Every live transaction of one stack, and the rules that match messages to them.

    Args:
        clock: the time source handed to every transaction.
        timers: timer values handed to every transaction.
        tu: receives new requests, ACKs for 2xx and CANCELs.
        send_response: sends a server transaction's response on the flow its request came in on; it may
            return the bytes sent, as a `SendResponse` does (`pbx.sip.transaction`).
        on_terminated: optional; called with every transaction after the layer has forgotten it (for metrics,
            or to log an INVITE server transaction whose `ack_timed_out` is True).
    """

    __slots__ = (
        "_client",
        "_client_ended",
        "_clock",
        "_on_terminated",
        "_send_response",
        "_server",
        "_server_ended",
        "_timers",
        "_tu",
        "_waits",
    )

    def __init__(
        self,
        clock: IReactorTime,
        timers: TimerConfig,
        tu: ITransactionLayerUser,
        send_response: Callable[[Response, IFlow], object],
        *,
        on_terminated: Callable[[Transaction], None] | None = None,
    ) -> None:
        self._clock = clock
        self._timers = timers
        self._tu = tu
        self._send_response = send_response
        self._on_terminated = on_terminated
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._server: dict[tuple[Any, ...], ServerTransaction] = {}
        self._waits = WaitTimers(clock)
        # Bound once: a bound method made per transaction would be one more object for each.
        self._server_ended = self._server_terminated
        self._client_ended = self._client_terminated

    def __len__(self) -> int:
        return len(self._client) + len(self._server)

    @property
    def retransmissions(self) -> RetransmissionCounts:
        """What the layer's transactions retransmitted (`sent`) and absorbed (`received`)."""
        return self._waits.retransmissions

    @property
    def client_count(self) -> int:
        return len(self._client)

    @property
    def server_count(self) -> int:
        return len(self._server)

    # Server side.

    def receive_request(self, request: Request, flow: IFlow, *, reliable: bool) -> None:
        """Match a request to a server transaction, or start one and pass the request up (17.2.3).

        Args:
            request: a validated request.
            flow: where it came from; the transaction's responses go back on it.
            reliable: whether the flow is a stream transport (no retransmissions).
        """
        method = request.method
        via = request.top_via
        branch = via.branch if via is not None else None
        rfc3261 = via is not None and branch is not None and branch.startswith(MAGIC_COOKIE)
        if rfc3261:
            assert via is not None
            key: tuple[Any, ...] = (
                branch,
                via.host.lower(),
                via.port,
                "INVITE" if method == "ACK" else method,
            )
            txn = self._server.get(key)
            if method == "ACK":
                if txn is None or not txn.receive_request(request):
                    self._tu.ack_received(request, flow)
                return
        else:
            if method == "ACK":
                self._receive_rfc2543_ack(request, flow)
                return
            key = _rfc2543_key(request, method)
            txn = self._server.get(key)
        if txn is not None:
            self._waits.retransmissions.received += 1
            txn.receive_request(request)
            return
        txn = self._new_server(request, flow, key, reliable)
        if method == "CANCEL":
            invite_key = (*key[:3], "INVITE") if rfc3261 else _rfc2543_key(request, "INVITE")
            self._cancel(txn, self._server.get(invite_key))
        elif not txn.terminated:
            self._tu.request_received(txn, request)

    def absorb_retransmission(self, key: tuple[Any, ...]) -> bool:
        """Give a retransmission known by its RFC 3261 key alone (not parsed) to its live server transaction
        (absorbed, or its last response sent again); False when no transaction has that key."""
        txn = self._server.get(key)
        if txn is None:
            return False
        txn.retransmission_received()
        return True

    def has_server(self, request: Request) -> bool:
        """Whether a live server transaction matches `request` (17.2.3): a retransmission of a request in
        progress, which overload control must never shed."""
        method = request.method
        via = request.top_via
        branch = via.branch if via is not None else None
        if via is not None and branch is not None and branch.startswith(MAGIC_COOKIE):
            return (branch, via.host.lower(), via.port, method) in self._server
        return _rfc2543_key(request, method) in self._server

    def _receive_rfc2543_ack(self, ack: Request, flow: IFlow) -> None:
        """RFC 2543 ACK matching: the INVITE with the same fields whose response carried the ACK's To tag."""
        to_tag = ack.to.tag
        txn = self._server.get(_rfc2543_key(ack, "INVITE", to_tag))  # a re-INVITE: To tag in the INVITE
        if txn is None and to_tag is not None:
            txn = self._server.get(_rfc2543_key(ack, "INVITE", None))
            if txn is not None and _response_to_tag(txn) != to_tag:
                txn = None
        if txn is None or not txn.receive_request(ack):
            self._tu.ack_received(ack, flow)

    def _new_server(
        self, request: Request, flow: IFlow, key: tuple[Any, ...], reliable: bool
    ) -> ServerTransaction:
        send_response = self._send_response

        def send(response: Response) -> object:
            return send_response(response, flow)

        cls = ServerInviteTransaction if request.method == "INVITE" else ServerNonInviteTransaction
        txn = cls(
            request,
            flow,
            send,
            clock=self._clock,
            timers=self._timers,
            reliable=reliable,
            on_terminated=self._server_ended,
            waits=self._waits,
        )
        txn.key = key
        if not txn.terminated:  # sending 100 Trying may have failed
            self._server[key] = txn
        return txn

    def _cancel(self, cancel_txn: ServerTransaction, invite: ServerTransaction | None) -> None:
        """Answer a new CANCEL (RFC 3261 9.2) and tell the TU when it cancels a pending INVITE."""
        cancel = cancel_txn.request
        assert cancel is not None  # released only once a final response has been sent
        if not isinstance(invite, ServerInviteTransaction):
            cancel_txn.respond(cancel.response(481, to_tag=new_tag()))
            return
        cancel_txn.respond(cancel.response(200, to_tag=_response_to_tag(invite) or new_tag()))
        if not invite.final_sent:
            self._tu.cancel_received(cancel, invite)

    def _server_terminated(self, txn: Transaction) -> None:
        if self._server.get(txn.key) is txn:
            del self._server[txn.key]
            if not self._server and not self._client:
                self._waits.clear()  # entries of transactions that ended early: nothing left to expire
        if self._on_terminated is not None:
            self._on_terminated(txn)

    # Client side.

    def receive_response(self, response: Response) -> bool:
        """Hand a response to its client transaction (17.1.3).

        Returns:
            False when no client transaction matches: a stray, such as a 2xx retransmission after Timer M,
            which the stack hands to the dialog layer or drops.
        """
        via = response.top_via
        if via is None:
            return False
        branch = via.branch
        if branch is None:
            return False
        txn = self._client.get((branch, response.cseq.method))
        if txn is None:
            return False
        txn.receive_response(response)
        return True

    def client_invite(
        self, request: Request, send: SendRequest, tu: IClientTransactionUser, *, reliable: bool
    ) -> ClientInviteTransaction:
        """Create, register and start an INVITE client transaction.

        Raises:
            ValueError: the request is not an INVITE, has no top Via branch, or its branch is in use.
        """
        if request.method != "INVITE":
            raise ValueError(f"client_invite needs an INVITE, not {request.method}")
        txn = ClientInviteTransaction(request, send, tu, reliable=reliable, **self._client_options())
        self._start_client(txn)
        return txn

    def client_non_invite(
        self, request: Request, send: SendRequest, tu: IClientTransactionUser, *, reliable: bool
    ) -> ClientNonInviteTransaction:
        """Create, register and start a non-INVITE client transaction (not for ACK, which has none).

        Raises:
            ValueError: the request is an INVITE or ACK, has no top Via branch, or its branch is in use.
        """
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"client_non_invite cannot send {request.method}")
        txn = ClientNonInviteTransaction(request, send, tu, reliable=reliable, **self._client_options())
        self._start_client(txn)
        return txn

    def _client_options(self) -> dict[str, Any]:
        """What every client transaction of this layer shares: clock, timers, end callback, wait queues."""
        return {
            "clock": self._clock,
            "timers": self._timers,
            "on_terminated": self._client_ended,
            "waits": self._waits,
        }

    def _start_client(self, txn: ClientTransaction) -> None:
        via = txn.request.top_via
        branch = via.branch if via is not None else None
        if not branch:
            raise ValueError("a client transaction's request needs a top Via with a branch")
        key = (branch, txn.request.method)
        if key in self._client:
            raise ValueError(f"branch {branch} is already in use for {txn.request.method}")
        txn.key = key
        self._client[key] = txn
        txn.start()

    def _client_terminated(self, txn: Transaction) -> None:
        if self._client.get(txn.key) is txn:
            del self._client[txn.key]
            if not self._server and not self._client:
                self._waits.clear()
        if self._on_terminated is not None:
            self._on_terminated(txn)


_UNSET: Any = object()


def _rfc2543_key(request: Request, method: str, to_tag: str | None = _UNSET) -> tuple[Any, ...]:
    """The RFC 2543 matching fields (RFC 3261 17.2.3, last paragraphs), the To tag replaceable for ACK."""
    return (
        request.uri,
        request.to.tag if to_tag is _UNSET else to_tag,
        request.from_.tag,
        request.call_id,
        request.cseq.number,
        method,
        request.top_via,
    )


def _response_to_tag(txn: ServerTransaction) -> str | None:
    """The To tag of the last response a server transaction sent, if any (an INVITE's 2xx is not kept)."""
    response = txn.last_response
    if response is not None:
        return response.to.tag
    if isinstance(txn, ServerInviteTransaction) and txn.final_to is not None:
        return NameAddress.parse(txn.final_to).tag
    return None
