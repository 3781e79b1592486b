"""The one way a UDP datagram comes in before the parser: per-source admission, then overload screening.

Two things look at a datagram's raw bytes before `pbx.sip.parser` does, and they must be asked in one place
and counted once:

1. the admission (`pbx.sip.admission.Admission`, the `[edge]` section): per-source token buckets, blocks
   and raw-byte screens; what it refuses is dropped at the cost of a dictionary look-up;
2. the overload screen (`pbx.sip.shedding.ShedScreen`, the `[overload]` section): while the
   guard sheds, a new INVITE or REGISTER is answered (503, a repeated stateless answer) or dropped from its
   bytes (`pbx.sip.refusal`, `pbx.sip.peek`), a retransmission of accepted work goes to its transaction.

`DatagramIntake` holds both and counts every datagram read (`read`) and every one the admission refused
(`refused`). Overload control estimates how long input waits in the sockets' receive buffers from the rate
the loop drains them (`pbx.sip.overload.SocketQueueDelay`): that rate must count every datagram read,
also those the admission drops for about a microsecond each, or a flood it throws away looks like a backlog of
seconds and legitimate new requests get 503s (RFC 7339's shedding is for the server's own work, not for input
it already refuses).

While overload control sheds (`prioritize`, set by `pbx.sip.overload.Prioritize`), the datagrams that may
start new work (`new_starts`: a new INVITE or REGISTER, or a retransmission of one) wait until the end of the
reactor turn (`later`), so that everything else read in the same turn (responses, ACKs, BYEs: the work the
server accepted) is handled first: with one socket for all, what completes calls would otherwise wait
behind what starts them, and the calls admitted are answered late (retransmissions, failed calls).

This module knows nothing of parsing, transactions or the PBX; `pbx.sip.protocols.SipDatagramProtocol`
asks it, `pbx.sip.transport.TransportManager` owns one for all its UDP listeners.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pbx.sip.admission import Admission

_log = Logger(namespace="pbx.sip.intake")

Screen = Callable[[bytes, Any], bool]
"""screen(datagram, flow) -> True when it was dealt with before parsing (`SipStack.screen_datagram`)."""


class DatagramIntake:
    """The pre-parse entry of UDP datagrams, shared by all listeners of one transport manager.

    Args:
        admission: per-source limits, blocks and screens (None admits everything).
        clock: the reactor's time, for `later` (None: nothing is ever deferred).

    Attributes:
        admission: as given (the stream path asks it directly, per framed message).
        screen: the overload screen, asked after the admission (set by overload control; None asks nothing).
        refuse: asked by `later` first: True when the datagram was refused at once from its bytes
            (`pbx.sip.shedding.ShedScreen.quick`), so that only what may be admitted waits for the end of
            the turn; None asks nothing.
        read: datagrams offered so far (a running total: the drain rate of the receive buffers).
        refused: datagrams the admission refused so far.
        prioritize: while True (and with a clock), datagrams starting with `new_starts` are handled after
            the rest of the reactor turn (`deferred`: how many so far).
    """

    __slots__ = (
        "_flush_call",
        "_later",
        "_waiting",
        "admission",
        "clock",
        "deferred",
        "dropping",
        "new_starts",
        "prioritize",
        "read",
        "refuse",
        "refused",
        "screen",
        "shed",
    )

    def __init__(self, admission: Admission | None = None, clock: IReactorTime | None = None) -> None:
        self.admission = admission
        self.clock = clock
        self.screen: Screen | None = None
        self.refuse: Screen | None = None
        self.read = 0
        self.refused = 0
        self.shed = 0
        self.dropping = False
        self.prioritize = False
        self.deferred = 0
        self.new_starts: tuple[bytes, ...] = (b"INVITE ", b"REGISTER ")
        self._later: list[tuple[Callable[[bytes, Any], object], bytes, Any]] = []
        self._waiting: set[bytes] = set()  # the datagrams in `_later`
        self._flush_call: IDelayedCall | None = None

    def defers(self, datagram: bytes) -> bool:
        """Whether `datagram` should wait for the end of the reactor turn (`later`): it may start new work
        and the intake prioritizes the rest."""
        return self.prioritize and self.clock is not None and datagram.startswith(self.new_starts)

    def later(self, handle: Callable[[bytes, Any], object], datagram: bytes, flow: Any) -> None:
        """Call `handle(datagram, flow)` once the reactor has handled what it read in this turn (a call
        due at once: the timed calls run before the next poll of the sockets), in the order given; unless
        `refuse` deals with it at once. A copy of a datagram that waits waits too, without asking `refuse`
        (a retransmission read in the same turn as its original goes to what becomes of that)."""
        waiting = self._waiting
        refuse = self.refuse
        if refuse is not None and datagram not in waiting and refuse(datagram, flow):
            return
        self.deferred += 1
        self._later.append((handle, datagram, flow))
        waiting.add(datagram)
        if self._flush_call is None:
            assert self.clock is not None
            self._flush_call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        self._waiting.clear()
        waiting, self._later = self._later, []
        for handle, datagram, flow in waiting:
            try:
                handle(datagram, flow)
            except Exception:
                _log.failure("Unexpected error handling a deferred datagram")

    def stop(self) -> None:
        """Forget what waits for the end of the turn (the listeners are stopping); no call is left."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        self._later = []
        self._waiting.clear()

    def admit(self, host: str, datagram: bytes) -> bool:
        """Count a datagram from source address `host`; whether it goes on (the admission lets it, and it
        is not a new exchange dropped while the receive queue is too long: `dropping`)."""
        self.read += 1
        admission = self.admission
        if admission is not None and not admission.admit(host, datagram):
            self.refused += 1
            return False
        if self.dropping and datagram.startswith(self.new_starts) and new_exchange(datagram):
            self.shed += 1
            return False
        return True


def new_exchange(datagram: bytes) -> bool:
    """Whether a request's bytes start a new exchange: no credentials (Authorization, Proxy-Authorization)
    and no To tag (not in a dialog). Cheap and conservative: anything else (folded lines included) is
    no new exchange, and is not dropped unparsed."""
    end = datagram.find(b"\r\n\r\n")
    head = (datagram if end < 0 else datagram[:end]).lower()
    if b"authorization" in head:
        return False
    to = head.find(b"\r\nto:")
    if to < 0:
        to = head.find(b"\r\nt:")
        if to < 0:
            return False
    line_end = head.find(b"\r\n", to + 2)
    return b"tag=" not in head[to : line_end if line_end >= 0 else len(head)]
