"""One outbound leg of a call: an INVITE to one target (RFC 3261 13.2, 9.1; RFC 3263 4.3; RFC 3261 22).

A target (`LegTarget`) is a registered contact of the dialed extension (its INVITE goes to the flow the
contact registered on: NAT) or a SIP URI (resolved by RFC 3263: NAPTR, SRV, A/AAAA; a target that times out,
fails at the transport or answers 503 before any provisional response is followed by the next one within
the transaction's 64*T1 budget). A target with credentials answers 401/407 challenges to its INVITE and to
its BYE (`pbx.sip.client.ClientRequest`).

A leg relays provisional and final responses to its `Call`, builds its dialog from the first 2xx,
acknowledges 2xx responses itself (and again for retransmissions), and can be cancelled: a CANCEL is only
sent once a provisional response has arrived (RFC 3261 9.1), so a cancel requested earlier waits for it. A
2xx that arrives after the leg was cancelled (the race of 9.1) is acknowledged and followed by a BYE.

Once the call takes a leg's 2xx, the dialog is run by a `CalleeSession` (`session`): an `InviteSession`
(`pbx.sip.session`) registered with the stack, whose in-dialog requests (BYE, re-INVITE ...) answer the
target's challenges through an `AuthenticatingSender`; the INVITE, its failover and its challenges stay the
leg's (so do the ACKs of its 2xx).

This module knows nothing of dialplans; it reports to its call.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pbx.sip.client import ClientRequest, dialog_cseq
from pbx.sip.client_auth import CredentialLookup, DigestCache
from pbx.sip.dialog import Dialog, destination
from pbx.sip.flow import ip_or_none
from pbx.sip.interfaces import IClientTransactionUser
from pbx.sip.message import Request, Response, new_call_id, new_tag
from pbx.sip.session import InviteSession
from pbx.sip.session_events import ISessionListener
from pbx.sip.targets import Budget
from pbx.sip.transaction import IGNORE_OUTCOME, make_cancel
from pbx.sip.uri import URI
from pbx.store import Binding
from pbx.trunks.outbound import offer_for_trunk

if TYPE_CHECKING:
    from pbx.b2bua.call import Call


Destination = tuple[str, str, int]
"""(transport, host, port) of the next hop."""

Resolve = Callable[[str], Deferred[Sequence[Destination]]]
"""A SIP URI -> its RFC 3263 targets in order (`SipResolver.resolve`, reduced to destinations)."""


@dataclass(frozen=True, slots=True)
class LegTarget:
    """Where one outbound leg rings.

    Attributes:
        label: the extension number (or the URI) named in logs, CDRs and as the callee.
        uri: the Request-URI (a registered contact, or the dialed URI).
        to: the To URI.
        destinations: the next hops in order; empty: resolve `uri` by RFC 3263 when the leg starts.
        binding: the registration rung, for a contact of an extension.
        credentials: realm -> credentials for 401/407 challenges; None: a challenge is a failure.
        next_hops: URIs located by RFC 3263 in order instead of `uri` (a trunk's outbound proxy or
            proxies), their targets tried one after another; empty: `uri` is located.
        from_value: the From (without tag) of this leg instead of the call's (a trunk's caller ID).
        headers: extra headers of the INVITE (P-Asserted-Identity, Privacy, Route).
        codecs: the codecs offered, in this order (`pbx.trunks.outbound.offer_for_trunk`); empty: the
            caller's offer as relayed.
        trunk: the trunk the leg goes through, "" for none.
        dtmf: the trunk's DTMF mode ("rfc4733", "info", "inband"), "" for none (for the media bridge's
            DTMF interworking on side "b").
        refused: a status the leg fails with at once, sending nothing (503: the trunk is down or full).
        srtp: the target's SRTP mode ("off", "optional", "mandatory": its extension's or trunk's `srtp`).
        srtp_over_plain: whether SDES keys may travel to it over plain UDP/TCP signalling.
        secure: whether the signalling to it is TLS (a contact registered over TLS, a TLS trunk).
    """

    label: str
    uri: str
    to: str
    destinations: tuple[Destination, ...] = ()
    binding: Binding | None = None
    credentials: CredentialLookup | None = None
    next_hops: tuple[str, ...] = ()
    from_value: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    codecs: tuple[str, ...] = ()
    trunk: str = ""
    dtmf: str = ""
    refused: int = 0
    srtp: str = "optional"
    srtp_over_plain: bool = False
    secure: bool = False

    @classmethod
    def contact(
        cls,
        extension: str,
        binding: Binding,
        destination: Destination,
        domain: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        srtp: str = "optional",
        srtp_over_plain: bool = False,
    ) -> LegTarget:
        """A registered contact of `extension`, reached over the flow it registered on; through the proxies
        of its Path (RFC 3327 5.4: the Path values become the INVITE's Route set, the flow is the first
        proxy's), then `headers`. `secure` when that flow is TLS."""
        if binding.path:
            headers = (("Route", binding.path), *headers)
        return cls(
            extension,
            binding.contact,
            f"sip:{extension}@{domain}",
            (destination,),
            binding,
            headers=headers,
            srtp=srtp,
            srtp_over_plain=srtp_over_plain,
            secure=str(destination[0]).upper() == "TLS",
        )


@implementer(IClientTransactionUser)
class OutboundLeg:
    """An INVITE to one target.

    Attributes:
        extension: the target's label (the extension number, or the dialed URI).
        binding: the registration it rings, if it is a registered contact.
        destination: (transport, host, port) where every request of this leg goes (the registered flow, or
            the resolved target that took the INVITE).
        status: the final status received (0 while none).
        dialog: the dialog once a 2xx arrived.
    """

    __slots__ = (
        "_ack_body",
        "_budget",
        "_call",
        "_client",
        "_parse_contact",
        "_remaining",
        "_resolve",
        "_stack",
        "_template",
        "awaiting_answer",
        "binding",
        "call_id",
        "cancel_wanted",
        "cancelled",
        "destination",
        "dialog",
        "digests",
        "extension",
        "invite",
        "local_tag",
        "provisional",
        "status",
        "target",
        "transaction",
        "transport_failed",
    )

    _log = Logger()

    def __init__(self, call: Call, target: LegTarget, resolve: Resolve | None = None) -> None:
        # The INVITE's client transaction (our transaction user) lives 32 s after a 2xx (RFC 6026 Timer M)
        # to re-ACK retransmissions: a strong reference would keep the whole ended call alive as long.
        self._call = weakref.ref(call)
        self._stack = call.b2bua.stack
        self._parse_contact = call.b2bua.parse_contact
        self.target = target
        self.extension = target.label
        self.binding = target.binding
        self.destination: Destination = target.destinations[0] if target.destinations else ("udp", "", 0)
        self._resolve = resolve
        # The next destinations to try, a tuple (the empty one, for nearly every leg, is shared).
        self._remaining: tuple[Destination, ...] = tuple(target.destinations[1:])
        self._budget: Budget | None = None
        self._client: ClientRequest | None = None
        self.digests = DigestCache() if target.credentials is not None else None
        self._template: Request | None = None
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

    def start(self, from_value: str, body: bytes, content_type: str | None) -> None:
        """Build the INVITE and send it (after resolving the target's URI when it has no destinations)."""
        target = self.target
        if target.refused:
            self.status = target.refused  # the call sees it once every leg has started
            return
        if target.codecs and body:
            trunk_body = offer_for_trunk(body, target.codecs)
            if trunk_body is None:
                self._log.info("No codec of {target} was offered: 488", target=self.extension)
                self.status = 488
                return
            body = trunk_body
        uri: URI = self._parse_contact(target.uri)
        request = Request("INVITE", uri)
        request.headers.add("From", f"{target.from_value or from_value};tag={self.local_tag}")
        request.headers.add("To", f"<{target.to}>")
        request.headers.add("Call-ID", self.call_id)
        request.headers.add("CSeq", "1 INVITE")
        for name, value in target.headers:
            request.headers.add(name, value)
        request.headers.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO")
        request.headers.add("Supported", "timer")
        if body:
            request.headers.add("Content-Type", content_type or "application/sdp")
        request.body = body
        self._template = request
        self._budget = Budget(self._stack.clock, self._stack.timers.timer_b)
        if target.destinations:
            self._send_invite()
            return
        if self._resolve is None:
            self._unreachable("no resolver for SIP URI targets")
            return
        if target.next_hops:
            self._locate_hops(list(target.next_hops), []).addCallbacks(
                self._resolved, self._resolution_failed
            )
            return
        self._resolve(target.uri).addCallbacks(self._resolved, self._resolution_failed)

    def _locate_hops(self, hops: list[str], found: list[Destination]) -> Deferred[Sequence[Destination]]:
        """The RFC 3263 targets of every URI of `hops` in order, one list (a hop that does not resolve adds
        none); fails only when no hop has a target."""
        assert self._resolve is not None
        if not hops:
            return succeed(found)
        hop, rest = hops[0], hops[1:]

        def add(destinations: Sequence[Destination]) -> Deferred[Sequence[Destination]]:
            return self._locate_hops(rest, [*found, *destinations])

        def skip(failure: Failure) -> Deferred[Sequence[Destination]]:
            if not rest and not found:
                return fail(failure)
            self._log.warn("Could not resolve {hop}: {e}", hop=hop, e=failure.getErrorMessage())
            return self._locate_hops(rest, found)

        return self._resolve(hop).addCallbacks(add, skip)

    def _resolved(self, destinations: Sequence[Destination]) -> None:
        if not destinations:
            self._unreachable("no address")
            return
        if self.cancel_wanted:  # the call gave up while DNS answered
            self._set_failed(487)
            return
        self.destination, self._remaining = destinations[0], tuple(destinations[1:])
        self._send_invite()

    def _resolution_failed(self, failure: Failure) -> None:
        self._unreachable(str(failure.value))

    def _unreachable(self, reason: str) -> None:
        self._log.warn("Could not resolve {target}: {reason}", target=self.extension, reason=reason)
        self.transport_failed = True
        self._set_failed(503)

    def _send_invite(self) -> None:
        """Send the INVITE to `destination`: directly, or through a ClientRequest that answers challenges."""
        assert self._template is not None
        stack = self._stack
        transport, host, port = self.destination
        request = self._template.copy()
        secure = self.target.uri.startswith("sips:")
        request.headers.add("Contact", stack.contact_for(transport, host, secure=secure))
        credentials = self.target.credentials
        self.provisional = False
        if credentials is None:
            self.invite = request
            name = getattr(self.destination, "server_name", None)  # a `pbx.sip.resolver.Hop`
            self.transaction = stack.send_request(
                request,
                self,
                transport,
                host,
                port,
                **({"server_name": name} if name and transport == "tls" else {}),
            )
            return
        client = self._client = ClientRequest(
            stack,
            request,
            self.destination,
            credentials,
            cache=self.digests,
            on_provisional=self._client_provisional,
            on_extra_final=self._client_2xx,
        )
        self.invite = client.request
        client.start().addCallback(self._client_final, client)

    def _failover(self) -> bool:
        """After a 408, a transport error or a 503 before any provisional: try the next destination while
        the budget lasts (RFC 3263 4.3). True when another INVITE went out."""
        if self.provisional or self.cancel_wanted or not self._remaining:
            return False
        if self._budget is not None and self._budget.remaining() <= 0:
            return False
        self.destination, self._remaining = self._remaining[0], self._remaining[1:]
        self._log.info("Trying {target} at {dest}", target=self.extension, dest=self.destination)
        self._send_invite()
        return True

    # -- through ClientRequest (a target with credentials) --------------------------------------------

    def _client_provisional(self, response: Response) -> None:
        if self._client is not None:
            self.invite = self._client.request
        self.response_received(None, response)

    def _client_2xx(self, response: Response) -> None:
        self._answered(response)

    def _client_final(self, response: Response, client: ClientRequest) -> None:
        if client is not self._client:
            return
        self.invite = client.request
        self.transaction = client.transaction
        failure = client.local_failure
        if failure == "timeout":
            self.transaction_timeout(None)
        elif failure is not None:
            self.transport_error(None, failure)
        else:
            self.response_received(None, response)

    # -- IClientTransactionUser ----------------------------------------------------------------------------

    def response_received(self, transaction: object, response: Any) -> None:
        assert isinstance(response, Response)
        status = response.status
        if status < 200:
            self.provisional = True  # any 1xx, 100 Trying included, allows a CANCEL (RFC 3261 9.1)
            if self.cancel_wanted and not self.cancelled and self._client is None:
                self._send_cancel()
                return
            call = self._call()
            if status > 100 and call is not None:
                call.leg_progress(self, response)
            return
        if 200 <= status < 300:
            self._answered(response)
            return
        if status == 503 and self._failover():
            return
        self._set_failed(status, response)

    def _set_failed(self, status: int, response: Response | None = None) -> None:
        if self.status == 0:
            self.status = status
            call = self._call()
            if call is not None:
                call.leg_failed(self, status, response)

    def transaction_timeout(self, transaction: object) -> None:
        if self.status == 0 and not self._failover():
            self._set_failed(408)

    def transport_error(self, transaction: object, reason: str) -> None:
        self._log.warn(
            "Could not reach {ext} at {dest}: {reason}",
            ext=self.extension,
            dest=self.destination,
            reason=reason,
        )
        if self.status == 0 and not self._failover():
            self.transport_failed = True
            self._set_failed(503)

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
        self._template = None  # no more attempts (challenges, failover) once a 2xx came
        if self.binding is None:
            self.destination = self._dialog_destination(self.dialog)
        call = self._call()
        if self.cancel_wanted or call is None or not call.leg_answered(self, response):
            # Lost the race (another fork answered, or the caller hung up): ACK, then BYE (RFC 3261 9.1).
            self.send_ack(None)
            self.send_bye()

    def _dialog_destination(self, dialog: Dialog) -> Destination:
        """Where the dialog's requests (ACK, BYE, re-INVITE) go for a target that is not a registered phone
        (a SIP URI, a trunk): the first hop of the route set, else the remote target (RFC 3261 12.2.1.1), not
        the proxy the INVITE went to (it need not stay in the path). A registered phone keeps its flow.

        Without DNS here: a hop named by a host name keeps the destination that took the INVITE (resolved by
        RFC 3263 for the same carrier); a hop without a transport parameter keeps the INVITE's transport.
        """
        try:
            hop = dialog.next_hop()
        except ValueError:
            return self.destination
        transport, host, port = destination(hop)
        if ip_or_none(host) is None:
            return self.destination
        if not hop.transport and not hop.secure:
            transport = self.destination[0]
            port = hop.port or (5061 if transport == "tls" else 5060)
        return (transport, host, port)

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
        self._send_bye(extra)

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
        self._send_bye(self.dialog)

    def _send_bye(self, dialog: Dialog) -> None:
        send_in_dialog(self._stack, dialog, "BYE", self.destination, self.target.credentials, self.digests)

    def resend_ack(self) -> None:
        """A retransmitted 2xx to our INVITE after its transaction ended: the same ACK again, unless that ACK
        still waits for the caller's answer (late offer)."""
        if not self.awaiting_answer:
            self.send_ack(None)

    def session(self, listener: ISessionListener, **options: Any) -> CalleeSession:
        """The INVITE session of the dialog our 2xx made (answered legs only), registered with the stack."""
        assert self.dialog is not None
        credentials = self.target.credentials
        sender = None
        if credentials is not None:
            sender = AuthenticatingSender(self._stack, self.dialog, credentials, self.digests)
        session = CalleeSession(self, listener, sender=sender, **options)
        self._stack.add_dialog(self.dialog, session)
        return session

    def cancel(self) -> None:
        """Stop ringing: CANCEL now if a provisional arrived, else as soon as one does."""
        if self.status or self.cancel_wanted:
            return
        self.cancel_wanted = True
        if self._client is not None:
            self._client.cancel()  # CANCELs once a provisional came, and stops answering challenges
            return
        if self.provisional:
            self._send_cancel()

    def _send_cancel(self) -> None:
        assert self.invite is not None
        self.cancelled = True
        transport, host, port = self.destination
        cancel = make_cancel(self.invite)
        # The CANCEL is its own transaction, to the same destination, with the INVITE's top Via.
        self._stack.send_cancel(cancel, IGNORE_OUTCOME, transport, host, port)


class CalleeSession(InviteSession):
    """The callee's side of an answered call: an `InviteSession` over the dialog the leg's 2xx made (the
    leg keeps the INVITE, its failover and challenges). Retransmissions of that 2xx are the leg's to ACK."""

    __slots__ = ("_invite_cseq", "_leg")

    def __init__(self, leg: OutboundLeg, listener: ISessionListener, **options: Any) -> None:
        super().__init__(leg._stack, listener, target=leg.destination, **options)
        self.dialog = leg.dialog
        self._invite_cseq = leg.invite.cseq.number if leg.invite is not None else 1
        self._leg = leg

    def dialog_response(self, response: object, dialog: object) -> None:
        assert isinstance(response, Response)
        cseq = response.cseq
        if 200 <= response.status < 300 and cseq.method == "INVITE" and cseq.number == self._invite_cseq:
            self._leg.resend_ack()
            return
        super().dialog_response(response, dialog)


class AuthenticatingSender:
    """A session's `sender` (the signature of `ISipStack.send_request`) that answers 401/407 challenges to
    its in-dialog requests with a target's credentials (`ClientRequest`, each retry with the dialog's next
    CSeq); the session hears the final response with the transaction that carried the last attempt."""

    __slots__ = ("_credentials", "_dialog", "_digests", "_stack")

    def __init__(
        self, stack: Any, dialog: Dialog, credentials: CredentialLookup, digests: DigestCache | None
    ) -> None:
        self._stack = stack
        self._dialog = dialog
        self._credentials = credentials
        self._digests = digests

    def __call__(self, request: Request, tu: Any, transport: str, host: str, port: int) -> Any:
        client = ClientRequest(
            self._stack,
            request,
            (transport, host, port),
            self._credentials,
            cache=self._digests,
            next_cseq=dialog_cseq(self._dialog),
            on_extra_final=(lambda r: tu.response_received(_Attempted(client.request), r))
            if request.method == "INVITE"
            else None,
        )
        client.start().addCallback(_report, client, tu)
        return client.transaction


def _report(response: Response, client: ClientRequest, tu: Any) -> None:
    transaction = client.transaction or _Attempted(client.request)
    failure = client.local_failure
    if failure == "timeout":
        tu.transaction_timeout(transaction)
    elif failure is not None:
        tu.transport_error(transaction, failure)
    else:
        tu.response_received(transaction, response)


class _Attempted:
    """Stands for a client transaction where only its request is wanted."""

    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request


def send_in_dialog(
    stack: Any,
    dialog: Dialog,
    method: str,
    destination: Destination,
    credentials: CredentialLookup | None,
    digests: DigestCache | None,
) -> None:
    """Send a request whose outcome changes nothing (a BYE ending the dialog): answering 401/407 with
    `credentials` when given (each retry takes the dialog's next CSeq)."""
    request = dialog.create_request(method)
    if method == "BYE":
        dialog.terminate()
    if credentials is None:
        stack.send_request(request, IGNORE_OUTCOME, *destination)
        return
    ClientRequest(
        stack, request, destination, credentials, cache=digests, next_cseq=dialog_cseq(dialog)
    ).start()
