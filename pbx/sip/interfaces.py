"""The seams of the SIP library: how bytes, messages and transaction events move between its layers.

Upward communication goes through these interfaces: a transport hands what it decoded to an `IMessageSink`;
the transaction layer hands new requests and the fate of client transactions to an `ITransactionUser`.
Nothing here knows of the PBX.
"""

from __future__ import annotations

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
    """The part of an application that receives new requests (a registrar, a B2BUA)."""

    def request_received(transaction: IServerTransaction, request: object) -> object:
        """A new request in its server transaction (never a retransmission, never an ACK or CANCEL).

        May return a Deferred: if it fails, the stack answers as for a raised error (`SipError` -> its
        response, anything else -> a logged `500`).
        """

    def ack_received(request: object, flow: IFlow) -> None:
        """An ACK that matched no INVITE server transaction: the ACK of a 2xx, for the dialog layer."""

    def cancel_received(cancel: object, invite: IServerTransaction) -> None:
        """A CANCEL matched a pending INVITE server transaction; the stack has already answered it 200."""
