"""One outbound leg of a call: an INVITE to one contact of the dialed extension (RFC 3261 13.2, 9.1).

A leg sends its INVITE through a client transaction towards the flow the contact registered on (NAT), relays
provisional and final responses to its `Call`, builds its dialog from the first 2xx, acknowledges 2xx
responses itself (and again for retransmissions), and can be cancelled: a CANCEL is only sent once a
provisional response has arrived (RFC 3261 9.1), so a cancel requested earlier waits for it. A 2xx that
arrives after the leg was cancelled (the race of 9.1) is acknowledged and followed by a BYE.

This module knows nothing of dialplans; it reports to its call.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from zope.interface import implementer

from pbx.sip.dialog import Dialog
from pbx.sip.interfaces import IClientTransactionUser
from pbx.sip.message import Request, Response, new_call_id, new_tag
from pbx.sip.transaction import make_cancel
from pbx.store import Binding

if TYPE_CHECKING:
    from pbx.b2bua.call import Call


@implementer(IClientTransactionUser)
class OutboundLeg:
    """An INVITE to one registered contact.

    Attributes:
        extension: the extension this contact belongs to.
        binding: the registration it rings.
        destination: (transport, host, port) where every request of this leg goes (the registered flow).
        status: the final status received (0 while none).
        dialog: the dialog once a 2xx arrived.
    """

    _log = Logger()

    def __init__(
        self, call: Call, extension: str, binding: Binding, destination: tuple[str, str, int]
    ) -> None:
        # The INVITE's client transaction (our transaction user) lives 32 s after a 2xx (RFC 6026 Timer M)
        # to re-ACK retransmissions: a strong reference would keep the whole ended call alive as long.
        self._call = weakref.ref(call)
        self._stack = call.b2bua.stack
        self._parse_contact = call.b2bua.parse_contact
        self.extension = extension
        self.binding = binding
        self.destination = destination
        self.status = 0
        self.transport_failed = False
        self.awaiting_answer = False
        self.provisional = False
        self.cancel_wanted = False
        self.cancelled = False
        self.dialog: Dialog | None = None
        self.invite: Request | None = None
        self.transaction: Any = None
        self.local_tag = new_tag()
        self.call_id = new_call_id(call.b2bua.host)

    @property
    def call(self) -> Call | None:
        """The call, or None once it has ended and is gone."""
        return self._call()

    def start(self, from_value: str, to_value: str, body: bytes, content_type: str | None) -> None:
        stack = self._stack
        transport, host, port = self.destination
        request = Request("INVITE", self._parse_contact(self.binding.contact))
        request.headers.add("From", f"{from_value};tag={self.local_tag}")
        request.headers.add("To", to_value)
        request.headers.add("Call-ID", self.call_id)
        request.headers.add("CSeq", "1 INVITE")
        request.headers.add("Contact", stack.contact_for(transport, host))
        request.headers.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO")
        request.headers.add("Supported", "timer")
        if body:
            request.headers.add("Content-Type", content_type or "application/sdp")
        request.body = body
        self.invite = request
        self.transaction = stack.send_request(request, self, transport, host, port)

    # -- IClientTransactionUser ----------------------------------------------------------------------------

    def response_received(self, transaction: object, response: Any) -> None:
        assert isinstance(response, Response)
        status = response.status
        if status < 200:
            self.provisional = True  # any 1xx, 100 Trying included, allows a CANCEL (RFC 3261 9.1)
            if self.cancel_wanted and not self.cancelled:
                self._send_cancel()
                return
            call = self._call()
            if status > 100 and call is not None:
                call.leg_progress(self, response)
            return
        if 200 <= status < 300:
            self._answered(response)
            return
        if self.status == 0:
            self.status = status
            call = self._call()
            if call is not None:
                call.leg_failed(self, status, response)

    def transaction_timeout(self, transaction: object) -> None:
        if self.status == 0:
            self.status = 408
            call = self._call()
            if call is not None:
                call.leg_failed(self, 408, None)

    def transport_error(self, transaction: object, reason: str) -> None:
        self._log.warn(
            "Could not reach {ext} at {dest}: {reason}",
            ext=self.extension,
            dest=self.destination,
            reason=reason,
        )
        if self.status == 0:
            self.transport_failed = True
            self.status = 503
            call = self._call()
            if call is not None:
                call.leg_failed(self, 503, None)

    # -- 2xx, ACK and BYE --------------------------------------------------------------------------------

    def _answered(self, response: Response) -> None:
        assert self.invite is not None
        if self.dialog is not None:
            if response.to.tag == self.dialog.remote_tag:
                if not self.awaiting_answer:
                    self.send_ack(None)  # a retransmitted 2xx: acknowledge again
            else:
                self._hang_up_extra_fork(response)
            return
        self.status = response.status
        self.dialog = Dialog.create_uac(self.invite, response)
        call = self._call()
        if self.cancel_wanted or call is None or not call.leg_answered(self, response):
            # Lost the race (another fork answered, or the caller hung up): ACK, then BYE (RFC 3261 9.1).
            self.send_ack(None)
            self.send_bye()

    def _hang_up_extra_fork(self, response: Response) -> None:
        """A 2xx from a second fork downstream (another To tag): its own dialog, ACKed and ended at once."""
        assert self.invite is not None
        try:
            extra = Dialog.create_uac(self.invite, response)
        except ValueError:
            return
        transport, host, port = self.destination
        stack = self._stack
        stack.send_stateless(extra.create_ack(self.invite), transport, host, port)
        bye = extra.create_request("BYE")
        extra.terminate()
        stack.send_request(bye, _Ignore(), transport, host, port)

    def send_ack(self, body: bytes | None, content_type: str | None = None) -> None:
        """ACK our 2xx (RFC 3261 13.2.2.4); the body carries the answer when the 2xx carried the offer."""
        assert self.dialog is not None and self.invite is not None
        if body is not None:
            self._ack_body = (body, content_type)
        body_type = getattr(self, "_ack_body", (b"", None))
        ack = self.dialog.create_ack(self.invite, body=body_type[0], content_type=body_type[1])
        transport, host, port = self.destination
        self._stack.send_stateless(ack, transport, host, port)

    def send_bye(self) -> None:
        if self.dialog is None or self.dialog.terminated:
            return
        bye = self.dialog.create_request("BYE")
        self.dialog.terminate()
        transport, host, port = self.destination
        self._stack.send_request(bye, _Ignore(), transport, host, port)

    def cancel(self) -> None:
        """Stop ringing: CANCEL now if a provisional arrived, else as soon as one does."""
        if self.status or self.cancel_wanted:
            return
        self.cancel_wanted = True
        if self.provisional:
            self._send_cancel()

    def _send_cancel(self) -> None:
        assert self.invite is not None
        self.cancelled = True
        transport, host, port = self.destination
        cancel = make_cancel(self.invite)
        # The CANCEL is its own transaction, to the same destination, with the INVITE's top Via.
        self._stack.send_cancel(cancel, _Ignore(), transport, host, port)


@implementer(IClientTransactionUser)
class _Ignore:
    """For requests whose outcome changes nothing (BYE to a leg that is being torn down, CANCEL)."""

    def response_received(self, transaction: object, response: Any) -> None:
        pass

    def transaction_timeout(self, transaction: object) -> None:
        pass

    def transport_error(self, transaction: object, reason: str) -> None:
        pass
