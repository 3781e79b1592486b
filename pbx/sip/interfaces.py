"""The seams of the SIP library: how bytes, messages and transaction events move between its layers.

Upward communication goes through these interfaces: a transport hands what it decoded to an `IMessageSink`;
the transaction layer hands new requests and the fate of client transactions to an `ITransactionUser`.
Nothing here knows of the PBX.
"""

from __future__ import annotations

from typing import Any

from zope.interface import Attribute, Interface


class IFlow(Interface):
    """A path to one peer: a UDP socket plus the peer's address, or one TCP/TLS connection.

    Responses go back on the flow their request came in on (RFC 3261 18.2.2, RFC 3581); a registrar can
    remember a flow to reach a phone behind NAT (RFC 5626).
    """

    transport = Attribute("'UDP', 'TCP' or 'TLS'.")
    reliable = Attribute("True for stream transports (no retransmissions needed).")
    secure = Attribute("True for TLS.")
    local_address = Attribute("(host, port) of our socket.")
    remote_address = Attribute("(host, port) of the peer, as seen on the wire.")

    def send(data: bytes) -> None:
        """Send serialized message bytes; a closed connection drops them (and is reported by `connected`)."""

    def connected() -> bool:
        """False once a stream connection has been closed; always True for UDP."""


class IMessageSink(Interface):
    """Where a transport delivers what it receives."""

    def message_received(message: object, flow: IFlow) -> None:
        """A parsed `Request` or `Response` arrived on `flow`."""

    def undecodable(data: bytes, flow: IFlow, error: Exception) -> None:
        """Bytes that did not parse (a `SipParseError`); the sink may answer `400` when it can be routed."""


class IServerTransaction(Interface):
    """A server transaction as its transaction user sees it."""

    request = Attribute("The request that created the transaction.")
    flow = Attribute("The IFlow it arrived on.")

    def respond(response: object) -> None:
        """Send a response (provisional or final); retransmissions and timers are the transaction's job."""


class IClientTransactionUser(Interface):
    """The owner of a client transaction: told of its responses and of its failure."""

    def response_received(transaction: object, response: object) -> None:
        """A response (provisional or final) for the transaction; retransmissions are absorbed."""

    def transaction_timeout(transaction: object) -> None:
        """Timer B or F fired: no final response came (treat as 408)."""

    def transport_error(transaction: object, reason: str) -> None:
        """The request could not be sent (treat as 503, RFC 3261 8.1.3.1)."""


class ITransactionUser(Interface):
    """The part of an application that receives new requests of a method (a registrar, a B2BUA, a
    notifier): `SipStack.register(method, tu)`. What arrives inside a dialog goes to the dialog's
    `IDialogUsage` instead."""

    def request_received(transaction: IServerTransaction, request: object) -> object:
        """A new request in its server transaction (never a retransmission, never an ACK or CANCEL).

        May return a Deferred: if it fails, the stack answers as for a raised error (`SipError` -> its
        response, anything else -> a logged `500`).
        """

    def cancel_received(cancel: object, invite: IServerTransaction) -> None:
        """A CANCEL matched a pending INVITE server transaction; the stack has already answered it 200."""


class ITransactionLayerUser(ITransactionUser):
    """The user of the transaction layer (the stack): also told of ACKs that matched no transaction."""

    def ack_received(request: object, flow: IFlow) -> None:
        """An ACK that matched no INVITE server transaction: the ACK of a 2xx, for the dialog table."""


class IDialogUsage(Interface):
    """The owner of a dialog in the stack's dialog table: a call leg, a subscription, an INVITE session.

    Any number of usages live side by side; the stack finds the dialog of what arrives (RFC 3261 12.2.2)
    and hands it to that dialog's usage. A request whose dialog is unknown is answered `481` by the stack.
    """

    def dialog_request(transaction: IServerTransaction, request: object, dialog: object) -> object:
        """A request inside `dialog` (BYE, re-INVITE, UPDATE, INFO, NOTIFY, REFER ...; never ACK or CANCEL).

        The dialog has already accounted for it (`Dialog.receive_request`: CSeq order, target refresh).
        Errors raised (or the failure of a returned Deferred) become responses at the stack's one edge:
        `SipError` -> its response, anything else -> a logged `500`.
        """

    def dialog_ack(request: object, flow: IFlow, dialog: object) -> None:
        """The ACK of a 2xx this usage sent (it matched no INVITE server transaction)."""

    def dialog_response(response: object, dialog: object) -> None:
        """A response that matched no client transaction but belongs to `dialog`: a 2xx retransmitted
        after the INVITE client transaction ended, or the 2xx of a second fork (another To tag, matched
        to the early dialog that has none yet)."""


class ISipStack(Interface):
    """What a usage (a call leg, a registration client, a subscription) may ask of the SIP stack."""

    clock = Attribute("The IReactorTime every timer of the stack runs on.")
    timers = Attribute("The TimerConfig (T1, T2, T4).")
    user_agent = Attribute("The User-Agent / Server value.")
    out_of_service = Attribute("bool: taking no new work (OPTIONS outside a dialog is answered 503).")

    def send_request(
        request: Any,
        tu: IClientTransactionUser,
        transport: str,
        host: str,
        port: int,
        *,
        new_via: bool = True,
        server_name: str | None = None,
    ) -> object:
        """Start a client transaction for `request` towards (transport, host, port); returns it. Over TLS,
        `server_name` is the name the server's certificate must show (default: `host`)."""

    def send_cancel(cancel: Any, tu: IClientTransactionUser, transport: str, host: str, port: int) -> object:
        """Send a CANCEL built by `make_cancel` (it carries its INVITE's Via)."""

    def send_stateless(request: Any, transport: str, host: str, port: int) -> object:
        """Send a request outside any transaction (the ACK of a 2xx); returns a Deferred."""

    def send_response(response: Any, flow: IFlow) -> object:
        """Send a response where RFC 3261 18.2.2 says (outside a transaction: 2xx retransmissions)."""

    def contact_for(transport: str, host: str, user: str = "pbx", *, secure: bool = False) -> str:
        """A Contact for our side of a dialog whose peer is `host` over `transport` (`sips` only when
        `secure`: the dialog's Request-URI is `sips`)."""

    def add_dialog(dialog: Any, usage: IDialogUsage) -> None:
        """Route what arrives in `dialog` to `usage` until `remove_dialog`."""

    def remove_dialog(dialog: Any) -> None:
        """Forget a dialog (a dialog not in the table is ignored)."""
