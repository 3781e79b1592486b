"""The SIP stack: transports below, transaction users above (RFC 3261 8.2, 17, 18; RFC 3581).

`SipStack` is the `IMessageSink` of the transports and the transaction user of the transaction layer. It
- stamps `received`/`rport` on the top Via of every request (RFC 3261 18.2.1, RFC 3581 4),
- answers malformed requests with `400` and a reason when a response can be routed, and drops the rest,
- checks each new request (`pbx.sip.validate`), dispatches it by method to the registered transaction user,
  answers OPTIONS itself and unknown methods with `501`,
- turns a `SipError` raised by a transaction user into its final response, and anything unexpected into a
  logged `500` (the one edge where errors become responses, STYLE.md 7),
- answers retransmissions of requests it answered statelessly from `StatelessCache` (the same bytes, no work
  redone: RFC 3261 8.2.7, 17.2.2) and, with an `OverloadGuard`, sheds new INVITEs and REGISTERs under
  overload with a stateless `503` + Retry-After or a drop, never retransmissions nor requests in dialogs
  (`pbx.sip.overload`, RFC 7339's idea), from a UDP datagram's raw bytes where it can (`pbx.sip.shedding`),
- routes responses back per RFC 3261 18.2.2 and RFC 3581 (same connection, or received/rport),
- creates client transactions for outgoing requests.

It knows nothing of registrars, calls or the PBX: those register as transaction users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pbx.sip.dialog import Dialog
from pbx.sip.dialog_router import DialogRouter
from pbx.sip.errors import SipError, SipParseError
from pbx.sip.headers import Via
from pbx.sip.interfaces import (
    IClientTransactionUser,
    IDialogUsage,
    IFlow,
    IMessageSink,
    IServerTransaction,
    ISipStack,
    ITransactionLayerUser,
    ITransactionUser,
)
from pbx.sip.message import MAGIC_COOKIE, Request, Response, new_branch
from pbx.sip.origin import request_origin
from pbx.sip.overload import OverloadGuard, Verdict
from pbx.sip.shedding import ShedScreen, tag_for
from pbx.sip.stateless_cache import StatelessCache
from pbx.sip.timers import DEFAULT_TIMERS, TimerConfig
from pbx.sip.transaction_layer import TransactionLayer
from pbx.sip.validate import check_request

# Methods of RFC 3261 and its common extensions: a request with one of these that has no handler gets 405,
# anything else 501 (RFC 3261 21.4.6 and 21.5.2).
KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH",
        "INFO", "REFER", "MESSAGE", "UPDATE",
    }
)  # fmt: skip
ACCEPT = "application/sdp"


class _RateLimitedLog:
    """Log at most `burst` lines per `period` seconds for one kind of event, then count the rest."""

    def __init__(self, log: Logger, clock: IReactorTime, period: float = 10.0, burst: int = 5) -> None:
        self._log, self._clock, self._period, self._burst = log, clock, period, burst
        self._window_start = -period
        self._count = 0
        self.suppressed = 0

    def warn(self, fmt: str, **kwargs: Any) -> None:
        now = self._clock.seconds()
        if now - self._window_start >= self._period:
            if self.suppressed:
                self._log.warn("{n} similar messages suppressed", n=self.suppressed)
            self._window_start, self._count, self.suppressed = now, 0, 0
        if self._count < self._burst:
            self._count += 1
            self._log.warn(fmt, **kwargs)
        else:
            self.suppressed += 1


# Methods whose requests reach their transaction user even with a To tag that names no dialog of ours: a
# REGISTER refresh may carry the tag of the registrar's earlier 200, and OPTIONS is answered anyway.
_OUTSIDE_DIALOGS = frozenset({"REGISTER", "OPTIONS"})


@implementer(IMessageSink, ITransactionLayerUser, ISipStack)
class SipStack:
    """Transports on one side, transaction users on the other.

    Args:
        clock: the reactor's time.
        timers: RFC 3261 timer values.
        user_agent: value for Server and User-Agent headers.
        supported: option tags we support (for Require/Supported). Only what is implemented: `timer`
            (RFC 4028, in `pbx.sip.session`; a B2BUA relays Session-Expires and refreshes end to end).
            Not `path` (RFC 3327: Path is stored but not used as a route), `outbound` (RFC 5626: no flow
            tokens, no `Require: outbound` in the 200) nor `replaces` (RFC 3891: no Replaces handling).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        timers: TimerConfig = DEFAULT_TIMERS,
        user_agent: str = "pbx",
        supported: Iterable[str] = ("timer",),
    ) -> None:
        self.clock = clock
        self.timers = timers
        self.user_agent = user_agent
        self.supported = frozenset(tag.lower() for tag in supported)
        self.transactions = TransactionLayer(
            clock, timers, self, self.send_response, on_terminated=self._transaction_terminated
        )
        self.transport: Any = None  # a TransportManager, set by attach_transport
        self._handlers: dict[str, ITransactionUser] = {}
        self._stateless: dict[str, Callable[[Request, IFlow], Response | None]] = {}
        # Answers sent without a transaction, for the retransmissions of their requests (64*T1: Timer F).
        self.stateless_cache = StatelessCache(clock, lifetime=64 * timers.t1)
        # New requests screened before parsing (`pbx.sip.shedding`), by their bytes and source: the 503 of a
        # refused one, the transaction key of an admitted one. A retransmission (the same bytes, RFC 3261
        # 17.1.1.2) is answered from there before anything is looked for in it.
        self.by_bytes = StatelessCache(clock, lifetime=64 * timers.t1)
        self.overload: OverloadGuard | None = None
        self.shed_screen = ShedScreen(self)  # UDP datagrams dealt with before parsing while shedding
        self.dialogs = DialogRouter()
        # The source filter (`set_source_filter`): None, or whether a source host is blocked.
        self.is_blocked: Callable[[str], bool] | None = None
        self._drop_log = _RateLimitedLog(self._log, clock)
        self.counters = {
            "requests": 0,
            "responses": 0,
            "bad_requests": 0,
            "dropped": 0,
            "errors": 0,
            "stateless": 0,
            "stateless_retransmissions": 0,
            "shed": 0,
            "screened": 0,  # UDP datagrams dealt with before parsing (`screen_datagram`)
        }
        self._options_fields: tuple[tuple[str, str], ...] | None = None  # Allow, Accept, Supported
        # Set while the UA takes no new work (a PBX node draining before it stops): OPTIONS outside a dialog
        # is answered 503 with Retry-After, so a front proxy's health check takes the node out.
        self.out_of_service = False
        # Proxies in front of this UA (host -> trusted?): a request through one is checked against the
        # source filter by the address in the Via below the proxy's (`pbx.sip.origin`), not the proxy's.
        self.is_trusted_proxy: Callable[[str], bool] | None = None

    def attach_transport(self, transport: Any) -> None:
        """Give the stack its `TransportManager` (built with this stack as its sink)."""
        self.transport = transport

    # -- registration of transaction users ---------------------------------------------------------------

    def register(self, method: str, tu: ITransactionUser) -> None:
        """Send new requests of `method` to `tu`."""
        self._handlers[method] = tu
        self._options_fields = None

    def answer_statelessly(self, method: str, answer: Callable[[Request, IFlow], Response | None]) -> None:
        """Let `answer(request, flow)` see new requests of `method` before a transaction is made for them:
        a Response it returns is sent at once and no transaction is kept (RFC 3261 8.2.7, stateless UAS
        behaviour: meant for the challenge to an unauthenticated request, so that a flood of them costs no
        transaction state; a retransmission is simply answered again); None lets the request go on to the
        transaction layer as usual. The answer must depend on the request alone, so that retransmissions
        of a request are always answered the same way (statelessly or not)."""
        self._stateless[method] = answer

    def set_overload(self, guard: OverloadGuard | None) -> None:
        """Let `guard` decide on new requests of its methods (outside dialogs, not retransmissions) before a
        transaction is made for them: a stateless `503` with Retry-After, a silent drop, or on as usual; and
        count the asynchronous work of non-INVITE transaction users as its work in flight."""
        self.overload = guard

    def set_source_filter(self, is_blocked: Callable[[str], bool]) -> None:
        """Drop, silently and before parsing further, every message from a source host for which
        `is_blocked(host)` is true (the brute-force guard)."""
        self.is_blocked = is_blocked

    def add_dialog(self, dialog: Dialog, usage: IDialogUsage) -> None:
        """Route the requests, ACKs and stray responses of `dialog` to `usage` (until `remove_dialog`)."""
        self.dialogs.add(dialog, usage)

    def remove_dialog(self, dialog: Dialog) -> None:
        """Forget a dialog; one that is not in the table is ignored."""
        self.dialogs.remove(dialog)

    @property
    def allowed_methods(self) -> list[str]:
        """The methods we answer: OPTIONS, ACK and CANCEL always, and those with a transaction user."""
        return sorted({"OPTIONS", "ACK", "CANCEL", *self._handlers})

    # -- IMessageSink ------------------------------------------------------------------------------------

    def message_received(self, message: object, flow: IFlow) -> None:
        if self.is_blocked is not None and self.is_blocked(flow.remote_address[0]):
            return
        counters = self.counters
        try:
            if isinstance(message, Request):
                counters["requests"] += 1
                self._request_received(message, flow)
            elif isinstance(message, Response):
                counters["responses"] += 1
                self._response_received(message)
        except Exception:
            self.counters["errors"] += 1
            self._log.failure("Unhandled error processing a message from {peer}", peer=flow.remote_address)

    def screen_datagram(self, data: bytes, flow: IFlow) -> bool:
        """Deal with a UDP datagram before it is parsed while the guard sheds (`pbx.sip.shedding`): True
        when it was dealt with, False lets it be parsed. Asked by the pre-parse entry
        (`pbx.sip.intake.DatagramIntake.screen`, after the admission)."""
        return self.shed_screen.screen(data, flow)

    def undecodable(self, data: bytes, flow: IFlow, error: Exception) -> None:
        if self.is_blocked is not None and self.is_blocked(flow.remote_address[0]):
            return
        self.counters["bad_requests"] += 1
        request = error.request if isinstance(error, SipParseError) else None
        reason = error.reason if isinstance(error, SipParseError) else "Bad Request"
        status = error.status if isinstance(error, SipParseError) else 400
        if (
            request is not None
            and request.method != "ACK"
            and (self._routable(request) or self._read_via_leniently(request) is not None)
        ):
            self._stamp_via(request, flow)
            self._answer_statelessly(request, flow, status, reason)
            return
        self.counters["dropped"] += 1
        self._drop_log.warn(
            "Dropped undecodable message from {peer} over {transport}: {reason}",
            peer=flow.remote_address,
            transport=flow.transport,
            reason=reason,
        )

    @staticmethod
    def _routable(request: Request) -> bool:
        """A response can be routed when the top Via parses (RFC 3261 18.2.2 needs nothing else)."""
        try:
            return request.top_via is not None
        except SipParseError:
            return False

    @staticmethod
    def _read_via_leniently(request: Request) -> str | None:
        """For a request whose top Via does not parse: rewrite it as `Via.parse_lenient` reads it, so that a
        `400` can be routed (RFC 4475 3.1.2.1), and return why it did not parse; None when unreadable."""
        headers = request.headers
        text = headers.get("Via")
        via = Via.parse_lenient(text) if text is not None else None
        if text is None or via is None:
            return None
        try:
            Via.parse(text)
        except SipParseError as e:
            reason = e.reason
        else:
            return None
        headers.replace_first("Via", str(via))
        headers.remember_parsed("Via", Via.parse, via)
        return reason

    # -- requests ----------------------------------------------------------------------------------------

    def _request_received(self, request: Request, flow: IFlow) -> None:
        if not self._routable(request):  # parses the top Via once: stamping, checks, matching reuse it
            bad_via = self._read_via_leniently(request)
            if bad_via is not None:  # readable enough to answer, never to accept
                self.counters["bad_requests"] += 1
                if request.method != "ACK":
                    self._stamp_via(request, flow)
                    self._answer_statelessly(request, flow, 400, f"Bad Via header: {bad_via}")
                return
            self.counters["dropped"] += 1
            self._drop_log.warn(
                "Dropped request without routable headers from {peer}", peer=flow.remote_address
            )
            return
        method = request.method
        stateless = self._stateless.get(method)
        guard = self.overload
        shed_screen = self.shed_screen
        screened, shed_screen.admitted = shed_screen.admitted is flow, None
        key = None
        if stateless is not None or (guard is not None and method in guard.methods):
            # Before stamping and validation: a retransmission of an answered request, or work to shed,
            # should cost as little as possible.
            key = self._stateless_key(request, flow)
            raw, shed_screen.admitted_bytes = shed_screen.admitted_bytes, None
            if screened and raw is not None and key is not None:
                self.by_bytes.put(raw, key)  # its retransmissions: to what becomes of it, unscanned
            if key is not None and self.answered_again(key, flow):
                return
        self._stamp_via(request, flow)
        proxy = self.is_trusted_proxy
        if proxy is not None and self.is_blocked is not None and proxy(flow.remote_address[0]):
            origin = request_origin(request, flow.remote_address[0], proxy)  # who is behind the proxy
            if origin != flow.remote_address[0] and self.is_blocked(origin):
                return
        if (
            guard is not None
            and method in guard.methods
            and not screened
            and self._shed(request, flow, guard, key)
        ):
            return
        try:
            check_request(request, self.supported)
        except SipError as e:
            self.counters["bad_requests"] += 1
            if request.method != "ACK":
                self._answer_statelessly(request, flow, e.status, e.reason, e.headers)
            return
        if stateless is not None:
            try:
                response = stateless(request, flow)
            except SipError as e:
                self._answer_statelessly(request, flow, e.status, e.reason, e.headers)
                return
            if response is not None:
                self.counters["stateless"] += 1
                self._send_stateless(response, flow, key)
                return
        self.transactions.receive_request(request, flow, reliable=flow.reliable)

    @staticmethod
    def _stateless_key(request: Request, flow: IFlow) -> tuple[Any, ...] | None:
        """The key of a request's stateless answer: its transaction key (RFC 3261 17.2.3) and its source;
        None over streams (no retransmissions: 17.1.2.2) and for RFC 2543 branches."""
        if flow.reliable:
            return None
        via = request.top_via
        branch = via.branch if via is not None else None
        if via is None or branch is None or not branch.startswith(MAGIC_COOKIE):
            return None
        return (branch, via.host.lower(), via.port, request.method, flow.remote_address)

    def answered_again(self, key: tuple[Any, ...], flow: IFlow) -> bool:
        """Send again what a retransmitted request got without a transaction; False when it got nothing."""
        cached = self.stateless_cache.get(key)
        if cached is None:
            return False
        self.counters["stateless_retransmissions"] += 1
        if isinstance(cached, bytes):
            flow.send(cached)
        else:
            self.send_response(cached, flow)
        return True

    def _shed(self, request: Request, flow: IFlow, guard: OverloadGuard, key: tuple[Any, ...] | None) -> bool:
        """Ask the overload guard about a new request outside any dialog that is not a retransmission of
        accepted work: a 503 with Retry-After (kept for its retransmissions) or a drop; False admits it."""
        try:
            # In a dialog, or a retransmission of accepted work (an RFC 2543 one is matched by its CSeq too):
            # never shed.
            if request.to.tag is not None or self.transactions.has_server(request):
                return False
        except SipParseError:
            return False  # a header missing or malformed: validation answers it
        headers = request.headers
        verdict = guard.admit("Authorization" in headers or "Proxy-Authorization" in headers)
        if verdict is Verdict.ADMIT:
            return False
        self.counters["shed"] += 1
        if verdict is Verdict.REJECT:
            retry = [("Retry-After", guard.retry_after)]
            try:
                self._send_stateless(self._error_response(request, 503, None, retry), flow, key)
            except (SipParseError, ValueError):
                self.counters["dropped"] += 1  # too broken to answer: dropped
        return True

    def _send_stateless(self, response: Response, flow: IFlow, key: tuple[Any, ...] | None) -> None:
        """Send a response made without a transaction; keep it for retransmissions under `key` (if any)."""
        data = self.send_response(response, flow)
        if key is not None:
            self.stateless_cache.put(key, data if data is not None else response)

    def _answer_statelessly(
        self,
        request: Request,
        flow: IFlow,
        status: int,
        reason: str | None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer a request that will not reach a transaction (400, 416, 420, 483 ...), or drop it quietly
        when even that is impossible (headers too broken to copy)."""
        try:
            response = self._error_response(request, status, reason, headers)
            self.send_response(response, flow)
        except (SipParseError, ValueError) as e:
            self.counters["dropped"] += 1
            self._drop_log.warn(
                "Could not answer a bad request from {peer}: {e}", peer=flow.remote_address, e=e
            )

    @staticmethod
    def _stamp_via(request: Request, flow: IFlow) -> None:
        """RFC 3261 18.2.1 `received` and RFC 3581 `rport` on the top Via (its text kept as written)."""
        via = request.top_via
        if via is None:
            return
        headers = request.headers
        text = headers.get("Via")
        assert text is not None
        remote = flow.remote_address
        stamped = via.stamped(text, remote[0], remote[1])
        if stamped is not None:
            headers.replace_first("Via", stamped[0])
            if stamped[1] is not None:  # known without parsing the new text again
                headers.remember_parsed("Via", Via.parse, stamped[1])

    # ITransactionUser: the transaction layer hands us new requests; we dispatch them by method.
    def request_received(self, transaction: IServerTransaction, request: object) -> None:
        assert isinstance(request, Request)
        try:
            method = request.method
            handler = self._handlers.get(method)
            if request.to.tag is not None:  # inside a dialog (RFC 3261 12.2.2): its usage answers
                try:
                    result = self.dialogs.route_request(transaction, request)
                except LookupError:
                    if method in KNOWN_METHODS and method not in _OUTSIDE_DIALOGS:
                        raise SipError(481) from None
                else:
                    if isinstance(result, Deferred):
                        result.addErrback(self._tu_failed, transaction, request)
                    return
            if handler is None and method == "OPTIONS":
                if self.out_of_service:
                    raise SipError(503, "Out Of Service", [("Retry-After", "60")])
                transaction.respond(self.options_response(request))
                return
            if handler is None:
                status = 405 if request.method in KNOWN_METHODS else 501
                raise SipError(status, None, [("Allow", ", ".join(self.allowed_methods))])
            result = handler.request_received(transaction, request)
        except Exception:
            self._tu_failed(Failure(), transaction, request)
            return
        if isinstance(result, Deferred):  # an asynchronous transaction user: its errors end here too
            result.addErrback(self._tu_failed, transaction, request)
            guard = self.overload
            if guard is not None and method != "INVITE":  # an INVITE's Deferred lasts as long as its call
                guard.work_started()
                result.addBoth(guard.work_finished)

    def _tu_failed(self, failure: Failure, transaction: IServerTransaction, request: Request) -> None:
        """The one edge where errors become responses: SipError -> its response, anything else -> 500."""
        error = failure.value
        if isinstance(error, SipError):
            transaction.respond(self._error_response(request, error.status, error.reason, error.headers))
            return
        self.counters["errors"] += 1
        self._log.failure(
            "Error handling {method} {cid}", failure=failure, method=request.method, cid=request.call_id
        )
        transaction.respond(self._error_response(request, 500, None))

    def ack_received(self, request: object, flow: IFlow) -> None:
        assert isinstance(request, Request)
        if self.dialogs.route_ack(request, flow) or not self.stateless_cache:
            return
        # An ACK in no dialog of ours is dropped. It may ACK a non-2xx answer sent statelessly (a 407): the
        # client's INVITE transaction is Completed and sends no more retransmissions (RFC 3261 17.1.1.2), so
        # the answer kept for them is forgotten now rather than after 64*T1 (the ACK has the INVITE's
        # branch, 17.1.1.3).
        key = self._stateless_key(request, flow)
        if key is not None:
            self.stateless_cache.discard((*key[:3], "INVITE", key[4]))

    def cancel_received(self, cancel: object, invite: IServerTransaction) -> None:
        handler = self._handlers.get("INVITE")
        if handler is not None:
            handler.cancel_received(cancel, invite)
        else:
            invite.respond(invite.request.response(487))

    def options_response(self, request: Request) -> Response:
        """`200` to OPTIONS with Allow, Accept and Supported (RFC 3261 11.2)."""
        response = request.response(200, to_tag=self._to_tag(request))
        fields = self._options_fields
        if fields is None:  # computed once per set of transaction users
            fields = self._options_fields = (
                ("Allow", ", ".join(self.allowed_methods)),
                ("Accept", ACCEPT),
                ("Supported", ", ".join(sorted(self.supported))),
            )
        response.headers.extend(fields)
        return response

    def _error_response(
        self, request: Request, status: int, reason: str | None, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        response = request.response(status, reason, to_tag=self._to_tag(request))
        for name, value in headers:
            response.headers.add(name, value)
        return response

    @staticmethod
    def _to_tag(request: Request) -> str:
        """A To tag for responses the stack itself generates: stable per request, so retransmissions match."""
        branch = request.top_via.branch if request.top_via is not None else None
        return tag_for(branch or request.call_id or "x")

    # -- responses ---------------------------------------------------------------------------------------

    def _response_received(self, response: Response) -> None:
        try:
            matched = self.transactions.receive_response(response)
            if not matched:  # a dialog's usage may rely on these: check them here
                response.cseq  # noqa: B018
                response.top_via  # noqa: B018
                response.from_  # noqa: B018
                response.to  # noqa: B018
        except SipParseError as e:
            self.counters["dropped"] += 1
            self._drop_log.warn("Dropped a malformed response: {reason}", reason=e.reason)
            return
        if not matched:
            self.dialogs.route_response(response)

    def send_response(self, response: Response, flow: IFlow) -> bytes | None:
        """Send a response where RFC 3261 18.2.2 and RFC 3581 say: the request's connection or source.

        Returns the bytes when they went back to the source on an unreliable `flow` (so a retransmission
        is `flow.send(the same bytes)`: a completed UDP server transaction keeps only those), else None.
        """
        headers = response.headers
        if "Server" not in headers:
            headers.add("Server", self.user_agent)
        data = response.to_bytes()
        reliable = flow.reliable
        if reliable and flow.connected():
            flow.send(data)
            return None
        try:
            via = response.top_via
        except SipParseError:
            return None
        if via is None:
            return None
        # Via.received, .maddr and .rport (the first of each parameter) in one pass over the parameters.
        found: dict[str, str | None] = {}
        for key, value in via.params:
            found.setdefault(key.lower(), value)
        received, maddr, rport = found.get("received"), found.get("maddr"), found.get("rport")
        rport_number = int(rport) if rport and rport.isascii() and rport.isdigit() else None
        default_port = 5061 if via.transport == "TLS" else 5060
        if reliable:  # the connection is gone: open a new one (RFC 3261 18.2.2)
            host, port = received or via.host, via.port or default_port
        elif maddr is not None:
            host, port = maddr, via.port or default_port
        elif rport_number is not None:  # RFC 3581: back to the source address and port
            host, port = received or via.host, rport_number
        else:
            host, port = received or via.host, via.port or default_port
        remote = flow.remote_address
        if not reliable and host == remote[0] and port == remote[1]:
            flow.send(data)
            return data
        if self.transport is not None:
            self.transport.send(data, via.transport.lower(), host, port).addErrback(
                self._log_send_failure, host, port
            )
        return None

    def _log_send_failure(self, failure: Failure, host: str, port: int) -> None:
        self._drop_log.warn("Could not send to {host}:{port}: {err}", host=host, port=port, err=failure.value)

    def _transaction_terminated(self, transaction: Any) -> None:
        if getattr(transaction, "ack_timed_out", False):
            request = transaction.request
            self._drop_log.warn(
                "No ACK for the final response to INVITE {cid} from {peer} (Timer H)",
                cid=request.call_id,
                peer=transaction.flow.remote_address,
            )

    # -- client side -------------------------------------------------------------------------------------

    def _add_via(self, request: Request, transport: str, host: str) -> None:
        local_host, local_port = self.transport.local_address(transport, host)
        via_host = f"[{local_host}]" if ":" in local_host else local_host
        via = f"SIP/2.0/{transport.upper()} {via_host}:{local_port};branch={new_branch()};rport"
        request.headers.prepend("Via", via)
        if "Max-Forwards" not in request.headers:
            request.headers.add("Max-Forwards", "70")

    def send_stateless(self, request: Request, transport: str, host: str, port: int) -> Deferred[Any]:
        """Send a request outside any transaction: the ACK for a 2xx (RFC 3261 13.2.2.4), with a fresh Via."""
        transport = transport.lower()
        self._add_via(request, transport, host)
        d: Deferred[Any] = self.transport.send(request.to_bytes(), transport, host, port)
        d.addErrback(self._log_send_failure, host, port)
        return d

    def contact_for(self, transport: str, host: str, user: str = "pbx", *, secure: bool = False) -> str:
        """A Contact URI for our side of a dialog whose peer is `host` over `transport`.

        The scheme is `sips` only when `secure` (the request we answer, or the target we send to, has a
        `sips` Request-URI: RFC 3261 12.1.1, 8.1.1.8); a `sip:` dialog over TLS gets `sip:...;transport=tls`
        (RFC 3261 26.2, 19.1; RFC 5630 3.1.3: TLS on one hop does not make a `sips` dialog, and phones such as
        baresip refuse a `sips` Contact they did not ask for).
        """
        transport = transport.lower()
        local_host, local_port = self.transport.local_address(transport, host)
        scheme = "sips" if secure and transport == "tls" else "sip"
        host_text = f"[{local_host}]" if ":" in local_host else local_host
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<{scheme}:{user}@{host_text}:{local_port}{suffix}>"

    def send_request(
        self,
        request: Request,
        tu: IClientTransactionUser,
        transport: str,
        host: str,
        port: int,
        *,
        new_via: bool = True,
        server_name: str | None = None,
    ) -> Any:
        """Start a client transaction for `request` towards (transport, host, port).

        A top Via with a fresh branch is added (sent-by from our listener for that transport), unless
        `new_via` is false (a CANCEL carries its INVITE's Via). Over TLS, `server_name` is the identity the
        server's certificate must show (RFC 5922 4: the host of the URI RFC 3263 resolved,
        `Target.server_name`); None checks `host` itself (an IP-ID for an address). Returns the client
        transaction.
        """
        transport = transport.lower()
        if new_via:
            self._add_via(request, transport, host)
        if "User-Agent" not in request.headers:
            request.headers.add("User-Agent", self.user_agent)
        reliable = transport != "udp"
        holder: list[Any] = []
        extra = {"server_name": server_name} if server_name and transport == "tls" else {}

        def send(message: Request | Response) -> None:
            d: Deferred[Any] = self.transport.send(message.to_bytes(), transport, host, port, **extra)
            if not reliable and d.called and not isinstance(d.result, Failure):
                return  # a datagram sent: nothing to watch or to fail
            failed: list[Failure] = []
            if reliable:  # a connection that breaks with an error fails the transaction at once
                d.addCallback(lambda flow: _watch(flow, holder))
            d.addErrback(lambda f: holder[0].transport_error(str(f.value)) if holder else failed.append(f))
            if failed:  # failed before the transaction existed: it treats OSError as a transport error
                raise OSError(str(failed[0].value))

        txn: Any
        if request.method == "INVITE":
            txn = self.transactions.client_invite(request, send, tu, reliable=reliable)
        else:
            txn = self.transactions.client_non_invite(request, send, tu, reliable=reliable)
        holder.append(txn)
        return txn

    def send_cancel(
        self,
        cancel: Request,
        tu: IClientTransactionUser,
        transport: str,
        host: str,
        port: int,
        *,
        server_name: str | None = None,
    ) -> Any:
        """Send a CANCEL built by `make_cancel` (it already carries the INVITE's top Via, RFC 3261 9.1)."""
        return self.send_request(cancel, tu, transport, host, port, new_via=False, server_name=server_name)


def _watch(flow: Any, holder: list[Any]) -> Any:
    """Have the stream `flow` tell the client transaction in `holder` if it breaks (`StreamFlow.watch`)."""
    watch = getattr(flow, "watch", None)
    if watch is not None and holder:
        watch(holder[0])
    return flow
