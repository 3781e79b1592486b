"""SIP transactions: the four state machines of RFC 3261 section 17, with RFC 6026's Accepted state.

- `ClientInviteTransaction` (17.1.1, RFC 6026 section 7): Calling, Proceeding, Completed, Accepted.
- `ClientNonInviteTransaction` (17.1.2): Trying, Proceeding, Completed.
- `ServerInviteTransaction` (17.2.1, RFC 6026 section 7): Proceeding, Completed, Confirmed, Accepted.
- `ServerNonInviteTransaction` (17.2.2): Trying, Proceeding, Completed.
- `make_ack` (17.1.1.3) and `make_cancel` (9.1) build the requests a client needs.

Each machine is a table `(state, input) -> (next state, action)` that reads against the RFC's figures. Inputs
are messages (responses classified as 1xx, 2xx or 300-699; a retransmitted request; an ACK), timer expiries
and transport errors. Entering a state starts the timers that state runs (unless they already run), leaving it
cancels the others; every timer is an `IDelayedCall` in an attribute named after it (`_timer_a`). On a
reliable transport the retransmission timers (A, E, G) never start and the wait timers D, I, J and K are zero:
the machine moves on synchronously. Terminated absorbs every input. Timer values come from a `TimerConfig`,
time from an injected `IReactorTime`.

The wait timers D, I, J, K, L and M have one duration for every transaction of a `TimerConfig`; given a shared
`WaitTimers`, a transaction queues them there instead (the attribute then holds `QUEUED`): one rolling
`IDelayedCall` expires them all in order. A non-INVITE server transaction over UDP that has sent its final
response keeps only what absorbing retransmissions needs, when its `send` told it the bytes (see
`SendResponse`): the request and the response objects are dropped, so the tens of thousands that wait out
Timer J cost little memory and GC time.

Matching messages to transactions (17.1.3, 17.2.3) is `pbx.sip.transaction_layer`'s job. This module knows
nothing of transports, addresses or serialization (a transaction hands messages to a `send` callable and is
told of a failed send by `transport_error`), nor of dialogs: the ACK for a 2xx and the retransmission of a 2xx
belong to the transaction user (RFC 3261 13.2.2.4, 13.3.1.4).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pbx.sip.interfaces import IClientTransactionUser, IFlow, IServerTransaction
from pbx.sip.message import Headers, Request, Response
from pbx.sip.timers import TimerConfig

# States.
CALLING: Final = "Calling"
TRYING: Final = "Trying"
PROCEEDING: Final = "Proceeding"
COMPLETED: Final = "Completed"
CONFIRMED: Final = "Confirmed"
ACCEPTED: Final = "Accepted"
TERMINATED: Final = "Terminated"

# Message inputs. Responses: received by a client transaction, or passed down by the TU to a server one.
PROVISIONAL: Final = "1xx"
SUCCESS: Final = "2xx"
FAILURE: Final = "300-699"
REQUEST: Final = "request retransmission"
ACK: Final = "ACK"
TRANSPORT_ERROR: Final = "transport error"

# Timer inputs; each runs in the attribute "_" + name.
TIMER_A: Final = "timer_a"
TIMER_B: Final = "timer_b"
TIMER_D: Final = "timer_d"
TIMER_E: Final = "timer_e"
TIMER_F: Final = "timer_f"
TIMER_G: Final = "timer_g"
TIMER_H: Final = "timer_h"
TIMER_I: Final = "timer_i"
TIMER_J: Final = "timer_j"
TIMER_K: Final = "timer_k"
TIMER_L: Final = "timer_l"
TIMER_M: Final = "timer_m"
TIMER_100: Final = "timer_100"  # not named by RFC 3261: the wait before an INVITE server's own 100 (17.2.1)

SendRequest = Callable[[Request], None]
SendResponse = Callable[[Response], object]
"""Sends a server transaction's response. It may return the bytes it sent when sending them again on the
transaction's flow (`flow.send(data)`) is all a retransmission needs (a datagram back to the request's
source); anything else (None) means "call me again with the response"."""
Table = dict[tuple[str, str], tuple[str, str]]
Delay = Callable[[TimerConfig, bool], "float | None"]


def _retransmit_t1(timers: TimerConfig, reliable: bool) -> float | None:
    return None if reliable else timers.t1


def _t1_x64(timers: TimerConfig, reliable: bool) -> float | None:
    return 64 * timers.t1


def _d(timers: TimerConfig, reliable: bool) -> float | None:
    return 0.0 if reliable else timers.timer_d


def _t4_or_zero(timers: TimerConfig, reliable: bool) -> float | None:
    return 0.0 if reliable else timers.t4


def _t1_x64_or_zero(timers: TimerConfig, reliable: bool) -> float | None:
    return 0.0 if reliable else 64 * timers.t1


def _trying(timers: TimerConfig, reliable: bool) -> float | None:
    return timers.trying if timers.trying > 0 else None


# Initial duration of each timer (RFC 3261 table 4, RFC 6026 section 8); None: not run on this transport,
# 0: fires synchronously on entering its state.
TIMER_DELAYS: Final[dict[str, Delay]] = {
    TIMER_A: _retransmit_t1,  # INVITE retransmit, doubling without a cap
    TIMER_B: _t1_x64,  # INVITE transaction timeout
    TIMER_D: _d,  # absorb 300-699 retransmissions
    TIMER_E: _retransmit_t1,  # non-INVITE retransmit, doubling up to T2
    TIMER_F: _t1_x64,  # non-INVITE transaction timeout
    TIMER_G: _retransmit_t1,  # INVITE final response retransmit, doubling up to T2
    TIMER_H: _t1_x64,  # wait for ACK
    TIMER_I: _t4_or_zero,  # absorb ACK retransmissions
    TIMER_J: _t1_x64_or_zero,  # absorb non-INVITE request retransmissions
    TIMER_K: _t4_or_zero,  # absorb non-INVITE response retransmissions
    TIMER_L: _t1_x64,  # absorb INVITE retransmissions after a 2xx (RFC 6026)
    TIMER_M: _t1_x64,  # absorb 2xx retransmissions, passing them up (RFC 6026)
    TIMER_100: _trying,  # send 100 Trying unless the TU sent a provisional response first (17.2.1)
}

_ATTR: Final = {timer: "_" + timer for timer in TIMER_DELAYS}
# Constant durations, each run to its end (its state's only way out but a transport error), and the 100's
# short wait (its INVITE transaction lives on anyway): a `WaitTimers` runs them. A, B, E, F, G and H, most
# often stopped early by a message, stay `IDelayedCall`s: a queue would keep their transaction alive until
# the timer's time.
QUEUED_TIMERS: Final = frozenset({TIMER_D, TIMER_I, TIMER_J, TIMER_K, TIMER_L, TIMER_M, TIMER_100})
_log = Logger()


class _Queued:
    """What a timer attribute holds while its timer waits in a `WaitTimers` queue (an inactive call)."""

    __slots__ = ()

    def active(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "QUEUED"


QUEUED: Final = _Queued()


class RetransmissionCounts:
    """Retransmissions of one transaction layer: `sent` by the timers (A, E, G), `received` requests that
    matched a server transaction (absorbed)."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0


class WaitTimers:
    """Timers of constant duration (D, I, J, K, L, M) of many transactions, expired in order by one call.

    A transaction that enters a waiting state (Completed, Confirmed, Accepted) over UDP appends itself to the
    queue of its timer (a FIFO: the duration is the same for all, so expiry order is arrival order) instead of
    scheduling an `IDelayedCall`.
    One call, armed only while a queue holds something, fires at the earliest expiry (at most every
    `resolution` seconds, so a timer may run late by that much) and feeds the timer input to every
    transaction due whose timer is still queued (a transaction that left the state meanwhile is skipped).

    Args:
        clock: the time source (the same as the transactions').
        resolution: the shortest interval between two sweeps, in seconds.
    """

    __slots__ = ("_call", "_clock", "_queues", "_resolution", "retransmissions")

    def __init__(self, clock: IReactorTime, resolution: float = 0.05) -> None:
        self._clock = clock
        # Shared by the transactions of one layer like the timers: what they retransmitted (for metrics).
        self.retransmissions = RetransmissionCounts()
        self._resolution = resolution
        # (timer, duration) -> (expiry times, transactions): two deques, so an entry is no new object.
        self._queues: dict[tuple[str, float], tuple[deque[float], deque[Transaction]]] = {}
        self._call: IDelayedCall | None = None

    def __len__(self) -> int:
        return sum(len(times) for times, _ in self._queues.values())

    def add(self, transaction: Transaction, timer: str, delay: float) -> None:
        """Expire `timer` of `transaction` in `delay` seconds (the caller sets its attribute to QUEUED)."""
        queue = self._queues.get((timer, delay))
        if queue is None:
            queue = self._queues[timer, delay] = (deque(), deque())
        expiry = self._clock.seconds() + delay
        queue[0].append(expiry)
        queue[1].append(transaction)
        call = self._call
        if call is None:
            self._call = self._clock.callLater(delay, self._sweep)
        elif call.getTime() > expiry + self._resolution:  # shorter than the timer the call waits for
            call.reset(delay)

    def clear(self) -> None:
        """Forget every queued timer and stop the call (when no transaction is left alive)."""
        self._queues.clear()
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _sweep(self) -> None:
        self._call = None
        now = self._clock.seconds()
        for (timer, _), (times, transactions) in list(self._queues.items()):
            attr = _ATTR[timer]
            while times and times[0] <= now:
                times.popleft()
                transaction = transactions.popleft()
                if getattr(transaction, attr) is QUEUED:
                    setattr(transaction, attr, None)
                    try:
                        transaction._fire(timer)
                    except Exception:
                        _log.failure("Error expiring {timer} of {txn!r}", timer=timer, txn=transaction)
        heads = [times[0] for times, _ in self._queues.values() if times]
        if heads and self._call is None:
            self._call = self._clock.callLater(max(min(heads) - now, self._resolution), self._sweep)


def classify(status: int) -> str:
    """The input a response status is to a state machine: `PROVISIONAL`, `SUCCESS` or `FAILURE`."""
    if status < 200:
        return PROVISIONAL
    if status < 300:
        return SUCCESS
    return FAILURE


def make_ack(request: Request, response: Response) -> Request:
    """The ACK for a 300-699 response to `request` (RFC 3261 17.1.1.3).

    Same Request-URI, Call-ID, From, top Via (branch included) and CSeq number as the INVITE; To from the
    response (with its tag); the INVITE's Route headers. The ACK for a 2xx is a dialog's business (13.2.2.4).
    """
    return _derived_request("ACK", request, to=response.headers.get("To"))


def make_cancel(request: Request) -> Request:
    """The CANCEL for a pending `request` (RFC 3261 9.1).

    Same Request-URI, Call-ID, To, From and CSeq number; a single Via equal to the request's top Via (so the
    CANCEL reaches the same server transaction's neighbour); Route headers copied; Max-Forwards 70.
    """
    return _derived_request("CANCEL", request, to=request.headers.get("To"))


def _derived_request(method: str, request: Request, to: str | None) -> Request:
    source = request.headers
    headers = Headers()
    via = source.get("Via")
    if via is not None:
        headers.add("Via", via)
    for route in source.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    for name, value in (("From", source.get("From")), ("To", to), ("Call-ID", source.get("Call-ID"))):
        if value is not None:
            headers.add(name, value)
    headers.add("CSeq", f"{request.cseq.number} {method}")
    return Request(method, request.uri, headers)


class Transaction:
    """What the four machines share: walking the table and running the timers.

    Subclasses declare `TABLE` (`(state, input) -> (next state, action)`, the action a method named
    `"_" + action` called with the input's argument), `STATE_TIMERS` (the timers each state runs) and
    `MESSAGE_INPUTS` (inputs every live state must handle).

    Attributes:
        request: the request that created the transaction (see `ServerNonInviteTransaction` for when it is
            released).
        state: the current state (a module constant such as `CALLING`).
        key: the transaction layer's key for this transaction (set by the layer).
    """

    __slots__ = (
        "_busy",
        "_clock",
        "_interval",
        "_on_terminated",
        "_reliable",
        "_send",
        "_timers",
        "_waits",
        "key",
        "state",
    )

    TABLE: ClassVar[Table]
    STATE_TIMERS: ClassVar[dict[str, tuple[str, ...]]]
    MESSAGE_INPUTS: ClassVar[frozenset[str]]
    _compiled: ClassVar[dict[tuple[str, str], tuple[str, Callable[[Any, Any], Any]]]]
    _timer_attrs: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "TABLE" in cls.__dict__:  # resolve action names once; a typo fails at import
            cls._compiled = {
                key: (nxt, getattr(cls, "_" + action)) for key, (nxt, action) in cls.TABLE.items()
            }
        if "STATE_TIMERS" in cls.__dict__:
            cls._timer_attrs = tuple(
                sorted({_ATTR[t] for timers in cls.STATE_TIMERS.values() for t in timers})
            )

    def __init__(
        self,
        send: Callable[[Any], object],
        state: str,
        clock: IReactorTime,
        timers: TimerConfig,
        reliable: bool,
        on_terminated: Callable[[Any], None] | None,
        waits: WaitTimers | None,
    ) -> None:
        self.state = state
        self.key: Any = None
        self._send = send
        self._clock = clock
        self._timers = timers
        self._reliable = reliable
        self._on_terminated = on_terminated
        self._waits = waits
        self._interval = 0.0  # current interval of the retransmission timer (A, E or G)
        self._busy = False  # inside a state change (actions may fire nested inputs)
        for attr in self._timer_attrs:
            setattr(self, attr, None)

    @property
    def terminated(self) -> bool:
        return self.state == TERMINATED

    @property
    def reliable(self) -> bool:
        return self._reliable

    def transport_error(self, reason: str) -> None:
        """The stack could not send a message of this transaction (RFC 3261 17.1.4, 17.2.4).

        The stack may call this at any time, even from inside `send`; a `send` that raises `OSError` has the
        same effect.
        """
        self._fire(TRANSPORT_ERROR, reason)

    def connection_failed(self, reason: str) -> None:
        """The connection this transaction's request went out on broke before the transaction was done: a
        transport error while it still waits for a response, ignored once it has one (RFC 3261 17.1.4)."""
        if (self.state, TRANSPORT_ERROR) in self._compiled:
            self.transport_error(reason)

    def _count_retransmission(self) -> None:
        if self._waits is not None:
            self._waits.retransmissions.sent += 1

    def _transmit(self, message: Request | Response) -> object:
        """Hand `message` to `send`; return what it returned (None after a transport error)."""
        try:
            return self._send(message)
        except OSError as e:
            self._fire(TRANSPORT_ERROR, str(e) or type(e).__name__)
            return None

    def _fire(self, event: str, arg: object = None) -> object:
        """Feed one input to the machine; return what the action returned."""
        state = self.state
        if state == TERMINATED:
            return None
        next_state, action = self._compiled[state, event]
        if next_state == state:
            return action(self, arg)
        outer, self._busy = not self._busy, True
        try:
            for timer in self.STATE_TIMERS[state]:
                if timer not in self.STATE_TIMERS[next_state]:
                    self._cancel(timer)
            self.state = next_state
            result = action(self, arg)
            if self.state == next_state:  # the action may have moved on (a transport error while sending)
                self._enter(next_state)
        finally:
            if outer:
                self._busy = False
                if self.state == TERMINATED:
                    self._release()
        return result

    def _enter(self, state: str) -> None:
        """Start the timers of `state` that do not run yet; report termination."""
        if state == TERMINATED:
            callback, self._on_terminated = self._on_terminated, None
            if callback is not None:
                callback(self)
            if not self._busy:
                self._release()  # else when the outermost input is done (its action may still report up)
            return
        for timer in self.STATE_TIMERS[state]:
            if getattr(self, _ATTR[timer]) is not None:
                continue  # carried over from the previous state (Timer F from Trying to Proceeding)
            delay = TIMER_DELAYS[timer](self._timers, self._reliable)
            if delay is None:
                continue
            if delay <= 0:
                self._fire(timer)  # a zero timer is the only timer of its state
                return
            if timer in (TIMER_A, TIMER_E, TIMER_G):
                self._interval = delay
            if self._waits is not None and timer in QUEUED_TIMERS:
                setattr(self, _ATTR[timer], QUEUED)
                self._waits.add(self, timer, delay)
                continue
            self._schedule(timer, delay)

    def _schedule(self, timer: str, delay: float) -> None:
        setattr(self, _ATTR[timer], self._clock.callLater(delay, self._expire, timer))

    def _expire(self, timer: str) -> None:
        setattr(self, _ATTR[timer], None)
        self._fire(timer)

    def _cancel(self, timer: str) -> None:
        call: IDelayedCall | None = getattr(self, _ATTR[timer])
        if call is not None:
            setattr(self, _ATTR[timer], None)
            if call.active():
                call.cancel()

    def _release(self) -> None:
        """Terminated: let go of what may refer back to us (a stack's `send` closure usually does), so the
        transaction is freed by reference counting, not left to the cyclic collector: at hundreds of calls a
        second those cycles piled up into collections that stalled the reactor for a second and more."""
        self._send = _send_nothing

    # Actions shared by all machines.
    def _ignore(self, arg: object) -> None:
        """Absorb the input (a retransmission, or something the state does not act on)."""

    def _forget(self, arg: object) -> None:
        """Nothing to do on the way to Terminated."""

    def __repr__(self) -> str:
        request = getattr(self, "request", None)
        method = request.method if request is not None else "(released)"
        return f"<{type(self).__name__} {method} {self.state} key={self.key!r}>"


class _ClientTransaction(Transaction):
    __slots__ = ("request", "tu")

    def __init__(
        self,
        request: Request,
        send: SendRequest,
        tu: IClientTransactionUser,
        initial: str,
        clock: IReactorTime,
        timers: TimerConfig,
        reliable: bool,
        on_terminated: Callable[[Any], None] | None,
        waits: WaitTimers | None,
    ) -> None:
        super().__init__(send, initial, clock, timers, reliable, on_terminated, waits)
        self.request = request
        self.tu = tu

    def start(self) -> None:
        """Start the initial state's timers and send the request; call once."""
        self._enter(self.state)
        self._transmit(self.request)

    def receive_response(self, response: Response) -> None:
        """A response matched to this transaction (RFC 3261 17.1.3), retransmissions included."""
        self._fire(classify(response.status), response)

    def _pass_up(self, response: Response) -> None:
        self.tu.response_received(self, response)

    def _report_timeout(self, arg: object) -> None:
        self.tu.transaction_timeout(self)

    def _report_transport_error(self, reason: str) -> None:
        self.tu.transport_error(self, reason)

    def _release(self) -> None:
        super()._release()
        self.tu = (
            IGNORE_OUTCOME  # the user usually holds us too (an outbound leg keeps its INVITE transaction)
        )


# RFC 3261 figure 5 with RFC 6026's Accepted state. A transport error after the final response has been passed
# up terminates quietly: the TU already has its answer.
INVITE_CLIENT: Final[Table] = {
    (CALLING, TIMER_A): (CALLING, "retransmit"),
    (CALLING, TIMER_B): (TERMINATED, "report_timeout"),
    (CALLING, PROVISIONAL): (PROCEEDING, "pass_up"),
    (CALLING, SUCCESS): (ACCEPTED, "accept"),
    (CALLING, FAILURE): (COMPLETED, "ack_and_pass_up"),
    (CALLING, TRANSPORT_ERROR): (TERMINATED, "report_transport_error"),
    (PROCEEDING, PROVISIONAL): (PROCEEDING, "pass_up"),
    (PROCEEDING, SUCCESS): (ACCEPTED, "accept"),
    (PROCEEDING, FAILURE): (COMPLETED, "ack_and_pass_up"),
    (PROCEEDING, TRANSPORT_ERROR): (TERMINATED, "report_transport_error"),
    (COMPLETED, PROVISIONAL): (COMPLETED, "ignore"),
    (COMPLETED, SUCCESS): (COMPLETED, "ignore"),
    (COMPLETED, FAILURE): (COMPLETED, "resend_ack"),
    (COMPLETED, TIMER_D): (TERMINATED, "forget"),
    (COMPLETED, TRANSPORT_ERROR): (TERMINATED, "forget"),
    (ACCEPTED, PROVISIONAL): (ACCEPTED, "ignore"),
    (ACCEPTED, SUCCESS): (ACCEPTED, "pass_up"),
    (ACCEPTED, FAILURE): (ACCEPTED, "ignore"),
    (ACCEPTED, TIMER_M): (TERMINATED, "forget"),
    (ACCEPTED, TRANSPORT_ERROR): (ACCEPTED, "ignore"),
}


class ClientInviteTransaction(_ClientTransaction):
    """An INVITE client transaction (RFC 3261 17.1.1, RFC 6026).

    Sends the INVITE (retransmitting it on Timer A over UDP), passes every response up except retransmitted
    300-699 responses, ACKs 300-699 responses itself and passes every 2xx up in Accepted, so the TU (a dialog)
    can ACK each one. Timer B reports a timeout.

    Args:
        request: the INVITE, with a top Via carrying a branch.
        send: hands a request (the INVITE, the ACK) to the stack for serializing and routing.
        tu: told of responses, of the timeout and of transport errors.
        clock: the time source.
        timers: timer values.
        reliable: True on TCP/TLS: no retransmissions, Timer D zero.
        on_terminated: called with the transaction once when it terminates.
    """

    __slots__ = ("_ack", "_timer_a", "_timer_b", "_timer_d", "_timer_m")

    TABLE = INVITE_CLIENT
    STATE_TIMERS = {
        CALLING: (TIMER_A, TIMER_B),
        PROCEEDING: (),
        COMPLETED: (TIMER_D,),
        ACCEPTED: (TIMER_M,),
        TERMINATED: (),
    }
    MESSAGE_INPUTS = frozenset({PROVISIONAL, SUCCESS, FAILURE, TRANSPORT_ERROR})

    def __init__(
        self,
        request: Request,
        send: SendRequest,
        tu: IClientTransactionUser,
        *,
        clock: IReactorTime,
        timers: TimerConfig,
        reliable: bool,
        on_terminated: Callable[[ClientInviteTransaction], None] | None = None,
        waits: WaitTimers | None = None,
    ) -> None:
        super().__init__(request, send, tu, CALLING, clock, timers, reliable, on_terminated, waits)
        self._ack: Request | None = None

    def _accept(self, response: Response) -> None:
        """The first 2xx: up it goes. Nothing is sent in Accepted (the ACK of a 2xx is the TU's, RFC 3261
        13.2.2.4), so `send` (a closure that refers back to us) goes now rather than after Timer M."""
        self._send = _send_nothing
        self._pass_up(response)

    @property
    def ack(self) -> Request | None:
        """The ACK this transaction sent for a 300-699 response, if any."""
        return self._ack

    def _retransmit(self, arg: object) -> None:
        self._count_retransmission()
        self._transmit(self.request)
        self._interval *= 2
        self._schedule(TIMER_A, self._interval)

    def _ack_and_pass_up(self, response: Response) -> None:
        self._ack = make_ack(self.request, response)
        self._transmit(self._ack)
        self.tu.response_received(self, response)

    def _resend_ack(self, response: Response) -> None:
        if self._ack is not None:
            self._transmit(self._ack)


# RFC 3261 figure 6 (with RFC 4320's unchanged state machine).
NON_INVITE_CLIENT: Final[Table] = {
    (TRYING, TIMER_E): (TRYING, "retransmit_backing_off"),
    (TRYING, TIMER_F): (TERMINATED, "report_timeout"),
    (TRYING, PROVISIONAL): (PROCEEDING, "pass_up"),
    (TRYING, SUCCESS): (COMPLETED, "pass_up"),
    (TRYING, FAILURE): (COMPLETED, "pass_up"),
    (TRYING, TRANSPORT_ERROR): (TERMINATED, "report_transport_error"),
    (PROCEEDING, TIMER_E): (PROCEEDING, "retransmit_every_t2"),
    (PROCEEDING, TIMER_F): (TERMINATED, "report_timeout"),
    (PROCEEDING, PROVISIONAL): (PROCEEDING, "pass_up"),
    (PROCEEDING, SUCCESS): (COMPLETED, "pass_up"),
    (PROCEEDING, FAILURE): (COMPLETED, "pass_up"),
    (PROCEEDING, TRANSPORT_ERROR): (TERMINATED, "report_transport_error"),
    (COMPLETED, PROVISIONAL): (COMPLETED, "ignore"),
    (COMPLETED, SUCCESS): (COMPLETED, "ignore"),
    (COMPLETED, FAILURE): (COMPLETED, "ignore"),
    (COMPLETED, TIMER_K): (TERMINATED, "forget"),
    (COMPLETED, TRANSPORT_ERROR): (TERMINATED, "forget"),
}


class ClientNonInviteTransaction(_ClientTransaction):
    """A non-INVITE client transaction (RFC 3261 17.1.2): REGISTER, OPTIONS, BYE, CANCEL ...

    Over UDP the request goes out at 0, T1, 3*T1, 7*T1 ... then every T2 (Timer E); Timer F (64*T1) reports a
    timeout. The first final response is passed up, its retransmissions are absorbed during Timer K.
    Arguments as for `ClientInviteTransaction`.
    """

    __slots__ = ("_timer_e", "_timer_f", "_timer_k")

    TABLE = NON_INVITE_CLIENT
    STATE_TIMERS = {
        TRYING: (TIMER_E, TIMER_F),
        PROCEEDING: (TIMER_E, TIMER_F),
        COMPLETED: (TIMER_K,),
        TERMINATED: (),
    }
    MESSAGE_INPUTS = frozenset({PROVISIONAL, SUCCESS, FAILURE, TRANSPORT_ERROR})

    def __init__(
        self,
        request: Request,
        send: SendRequest,
        tu: IClientTransactionUser,
        *,
        clock: IReactorTime,
        timers: TimerConfig,
        reliable: bool,
        on_terminated: Callable[[ClientNonInviteTransaction], None] | None = None,
        waits: WaitTimers | None = None,
    ) -> None:
        super().__init__(request, send, tu, TRYING, clock, timers, reliable, on_terminated, waits)

    def _retransmit_backing_off(self, arg: object) -> None:
        self._count_retransmission()
        self._transmit(self.request)
        self._interval = min(2 * self._interval, self._timers.t2)
        self._schedule(TIMER_E, self._interval)

    def _retransmit_every_t2(self, arg: object) -> None:
        self._count_retransmission()
        self._transmit(self.request)
        self._interval = self._timers.t2
        self._schedule(TIMER_E, self._interval)


class _ServerTransaction(Transaction):
    __slots__ = ("flow", "last_response")

    def __init__(
        self,
        flow: IFlow,
        send: SendResponse,
        initial: str,
        clock: IReactorTime,
        timers: TimerConfig,
        reliable: bool,
        on_terminated: Callable[[Any], None] | None,
        waits: WaitTimers | None,
    ) -> None:
        super().__init__(send, initial, clock, timers, reliable, on_terminated, waits)
        self.flow = flow
        self.last_response: Response | None = None

    @property
    def final_sent(self) -> bool:
        """True once a final response has been sent."""
        return self.last_response is not None and self.last_response.status >= 200

    def respond(self, response: Response) -> None:
        """Send a response from the TU; the state decides whether it goes out (RFC 3261 17.2.1, 17.2.2)."""
        self._fire(classify(response.status), response)

    def receive_request(self, request: Request) -> bool:
        """A request matched to this transaction: a retransmission, or (INVITE) an ACK.

        Returns:
            False when the request is not the transaction's to absorb: an ACK in Accepted, which belongs to
            the dialog (RFC 6026 section 8); True otherwise.
        """
        return self._fire(REQUEST, request) is not False

    def retransmission_received(self) -> None:
        """A retransmission of the request, known by its transaction key alone (its bytes were not parsed:
        overload control, `pbx.sip.stack.SipStack.screen_datagram`): absorbed, or the last response is sent
        again, as `receive_request` does (RFC 3261 17.2.1, 17.2.2)."""
        self._fire(REQUEST)

    def _send_response(self, response: Response) -> None:
        self.last_response = response
        self._transmit(response)

    def _resend_last(self, request: Request) -> None:
        if self.last_response is not None:
            self._transmit(self.last_response)


# RFC 3261 figure 7 with RFC 6026's Accepted state. In Accepted the TU retransmits its 2xx through `respond`
# and an ACK (the ACK of the 2xx, which only matches under RFC 2543 rules or with a reused branch) goes up.
INVITE_SERVER: Final[Table] = {
    (PROCEEDING, TIMER_100): (PROCEEDING, "send_trying"),
    (PROCEEDING, REQUEST): (PROCEEDING, "resend_last"),
    (PROCEEDING, ACK): (PROCEEDING, "ignore"),
    (PROCEEDING, PROVISIONAL): (PROCEEDING, "send_response"),
    (PROCEEDING, SUCCESS): (ACCEPTED, "send_response"),
    (PROCEEDING, FAILURE): (COMPLETED, "send_response"),
    (PROCEEDING, TRANSPORT_ERROR): (TERMINATED, "forget"),
    (COMPLETED, REQUEST): (COMPLETED, "resend_last"),
    (COMPLETED, ACK): (CONFIRMED, "ignore"),
    (COMPLETED, PROVISIONAL): (COMPLETED, "ignore"),
    (COMPLETED, SUCCESS): (COMPLETED, "ignore"),
    (COMPLETED, FAILURE): (COMPLETED, "ignore"),
    (COMPLETED, TIMER_G): (COMPLETED, "retransmit_final"),
    (COMPLETED, TIMER_H): (TERMINATED, "note_ack_timeout"),
    (COMPLETED, TRANSPORT_ERROR): (TERMINATED, "forget"),
    (CONFIRMED, REQUEST): (CONFIRMED, "ignore"),
    (CONFIRMED, ACK): (CONFIRMED, "ignore"),
    (CONFIRMED, PROVISIONAL): (CONFIRMED, "ignore"),
    (CONFIRMED, SUCCESS): (CONFIRMED, "ignore"),
    (CONFIRMED, FAILURE): (CONFIRMED, "ignore"),
    (CONFIRMED, TIMER_I): (TERMINATED, "forget"),
    (CONFIRMED, TRANSPORT_ERROR): (TERMINATED, "forget"),
    (ACCEPTED, REQUEST): (ACCEPTED, "ignore"),
    (ACCEPTED, ACK): (ACCEPTED, "decline"),
    (ACCEPTED, PROVISIONAL): (ACCEPTED, "ignore"),
    (ACCEPTED, SUCCESS): (ACCEPTED, "send_response"),
    (ACCEPTED, FAILURE): (ACCEPTED, "ignore"),
    (ACCEPTED, TIMER_L): (TERMINATED, "forget"),
    (ACCEPTED, TRANSPORT_ERROR): (TERMINATED, "forget"),
}


@implementer(IServerTransaction)
class ServerInviteTransaction(_ServerTransaction):  # type: ignore[override]  # respond: interface says object
    """An INVITE server transaction (RFC 3261 17.2.1, RFC 6026).

    Sends `100 Trying` at once, or, with `TimerConfig.trying`, after that long unless the TU sent a
    provisional or final response first (RFC 3261 17.2.1: a B2BUA whose callee rings within milliseconds
    then sends the caller its 180 and no 100), or when the INVITE is retransmitted before any response.
    Re-sends the last response for each retransmitted INVITE, retransmits a 300-699 response on Timer G
    until the ACK comes (Confirmed) or Timer H gives up, and after a 2xx absorbs INVITE retransmissions for
    Timer L.

    Args:
        request: the INVITE.
        flow: the flow it came in on.
        send: hands a response to the stack (which sends it on `flow`).
        clock: the time source.
        timers: timer values.
        reliable: True on TCP/TLS: no Timer G, Timer I zero.
        on_terminated: called with the transaction once when it terminates.

    Attributes:
        ack_timed_out: True when Timer H fired: the ACK for a 300-699 response never came.
    """

    __slots__ = (
        "_final_released",
        "_timer_100",
        "_timer_g",
        "_timer_h",
        "_timer_i",
        "_timer_l",
        "ack_timed_out",
        "final_to",
        "request",
    )

    TABLE = INVITE_SERVER
    STATE_TIMERS = {
        PROCEEDING: (TIMER_100,),
        COMPLETED: (TIMER_G, TIMER_H),
        CONFIRMED: (TIMER_I,),
        ACCEPTED: (TIMER_L,),
        TERMINATED: (),
    }
    MESSAGE_INPUTS = frozenset({REQUEST, ACK, PROVISIONAL, SUCCESS, FAILURE, TRANSPORT_ERROR})

    def __init__(
        self,
        request: Request,
        flow: IFlow,
        send: SendResponse,
        *,
        clock: IReactorTime,
        timers: TimerConfig,
        reliable: bool,
        on_terminated: Callable[[ServerInviteTransaction], None] | None = None,
        waits: WaitTimers | None = None,
    ) -> None:
        super().__init__(flow, send, PROCEEDING, clock, timers, reliable, on_terminated, waits)
        self.request = request
        self.ack_timed_out = False
        self._final_released = False
        self.final_to: str | None = None  # the To of the 2xx sent, once sent (it is not kept)
        if _trying(timers, reliable) is None:
            self._send_response(request.response(100))
        else:
            self._enter(PROCEEDING)  # Timer 100: the TU's first provisional response may come before it

    @property
    def final_sent(self) -> bool:
        """True once a final response has been sent."""
        return self._final_released or super().final_sent

    def _send_response(self, response: Response) -> None:
        """A 2xx is sent, not kept: in Accepted nothing here re-sends it (the TU does, RFC 6026 section 8),
        and a call's 2xx would otherwise stay for Timer L; its To (whose tag a CANCEL's 200 repeats) is kept
        as text."""
        if 200 <= response.status < 300:
            self.last_response = None
            self._final_released = True
            self.final_to = response.headers.get("To")
            self._transmit(response)
        else:
            super()._send_response(response)

    def _release(self) -> None:
        """Also let go of the last response: a call keeps its INVITE transaction for its whole length, and
        nothing is retransmitted once terminated (`final_sent` stays True)."""
        super()._release()
        response, self.last_response = self.last_response, None
        if response is not None and response.status >= 200:
            self._final_released = True

    def receive_request(self, request: Request) -> bool:
        """A retransmitted INVITE or an ACK matched to this transaction; see `_ServerTransaction`."""
        return self._fire(ACK if request.method == "ACK" else REQUEST, request) is not False

    def _send_trying(self, arg: object) -> None:
        """Timer 100, or a retransmitted INVITE before any response: `100 Trying` unless the TU sent a
        response already (RFC 3261 17.2.1)."""
        if self.last_response is None:
            self._send_response(self.request.response(100))

    def _resend_last(self, request: Request) -> None:
        if self.last_response is None:  # nothing sent yet (Proceeding, waiting for Timer 100)
            self._send_trying(request)
        else:
            super()._resend_last(request)

    def _retransmit_final(self, arg: object) -> None:
        if self.last_response is not None:
            self._count_retransmission()
            self._transmit(self.last_response)
        self._interval = min(2 * self._interval, self._timers.t2)
        self._schedule(TIMER_G, self._interval)

    def _note_ack_timeout(self, arg: object) -> None:
        self.ack_timed_out = True

    def _decline(self, arg: object) -> bool:
        return False


# RFC 3261 figure 8.
NON_INVITE_SERVER: Final[Table] = {
    (TRYING, REQUEST): (TRYING, "ignore"),
    (TRYING, PROVISIONAL): (PROCEEDING, "send_response"),
    (TRYING, SUCCESS): (COMPLETED, "send_response"),
    (TRYING, FAILURE): (COMPLETED, "send_response"),
    (TRYING, TRANSPORT_ERROR): (TERMINATED, "forget"),
    (PROCEEDING, REQUEST): (PROCEEDING, "resend_last"),
    (PROCEEDING, PROVISIONAL): (PROCEEDING, "send_response"),
    (PROCEEDING, SUCCESS): (COMPLETED, "send_response"),
    (PROCEEDING, FAILURE): (COMPLETED, "send_response"),
    (PROCEEDING, TRANSPORT_ERROR): (TERMINATED, "forget"),
    (COMPLETED, REQUEST): (COMPLETED, "resend_last"),
    (COMPLETED, PROVISIONAL): (COMPLETED, "ignore"),
    (COMPLETED, SUCCESS): (COMPLETED, "ignore"),
    (COMPLETED, FAILURE): (COMPLETED, "ignore"),
    (COMPLETED, TIMER_J): (TERMINATED, "forget"),
    (COMPLETED, TRANSPORT_ERROR): (TERMINATED, "forget"),
}


def _send_nothing(message: object) -> None:
    """The `send` of a transaction that keeps only the bytes of its final response, or has terminated."""


@implementer(IClientTransactionUser)
class IgnoreOutcome:
    """A client transaction user that changes nothing: for requests whose outcome does not matter (a CANCEL,
    the BYE of a dialog being torn down), and the user of a terminated transaction. Use `IGNORE_OUTCOME`."""

    def response_received(self, transaction: object, response: object) -> None:
        pass

    def transaction_timeout(self, transaction: object) -> None:
        pass

    def transport_error(self, transaction: object, reason: str) -> None:
        pass


IGNORE_OUTCOME = IgnoreOutcome()


@implementer(IServerTransaction)
class ServerNonInviteTransaction(_ServerTransaction):  # type: ignore[override]  # as above
    """A non-INVITE server transaction (RFC 3261 17.2.2).

    Absorbs retransmissions while Trying, re-sends the last response once there is one, and keeps the final
    response for Timer J. Arguments as for `ServerInviteTransaction`.

    Over UDP, when `send` returned the bytes of the final response (see `SendResponse`), the transaction
    keeps only those, its flow and its key while it waits out Timer J: `request` and `last_response` become
    None (`final_sent` stays True) and retransmitted requests are answered with `flow.send(bytes)`. A TU
    must therefore take what it needs from the request before it sends the final response.
    """

    __slots__ = ("_timer_j", "_wire", "request")

    TABLE = NON_INVITE_SERVER
    STATE_TIMERS = {
        TRYING: (),
        PROCEEDING: (),
        COMPLETED: (TIMER_J,),
        TERMINATED: (),
    }
    MESSAGE_INPUTS = frozenset({REQUEST, PROVISIONAL, SUCCESS, FAILURE, TRANSPORT_ERROR})

    def __init__(
        self,
        request: Request,
        flow: IFlow,
        send: SendResponse,
        *,
        clock: IReactorTime,
        timers: TimerConfig,
        reliable: bool,
        on_terminated: Callable[[ServerNonInviteTransaction], None] | None = None,
        waits: WaitTimers | None = None,
    ) -> None:
        super().__init__(flow, send, TRYING, clock, timers, reliable, on_terminated, waits)
        self.request: Request | None = request
        self._wire: bytes | None = None  # the final response as sent, once request and response are released

    @property
    def final_sent(self) -> bool:
        """True once a final response has been sent."""
        return self._wire is not None or super().final_sent

    def _send_response(self, response: Response) -> None:
        self.last_response = response
        sent = self._transmit(response)
        if type(sent) is bytes and self.state == COMPLETED and not self._reliable:
            self._wire = sent  # all a retransmission needs: release the objects (and the send closure)
            self.last_response = None
            self.request = None
            self._send = _send_nothing

    def _resend_last(self, request: Request) -> None:
        if self._wire is not None:
            self.flow.send(self._wire)
        elif self.last_response is not None:
            self._transmit(self.last_response)
