"""The one way a UDP datagram comes in before the parser: per-source admission, then overload screening.

Two things look at a datagram's raw bytes before `pbx.sip.parser` does, and they must be asked in one place
and counted once:

1. the admission (`pbx.sip.admission.Admission`, the `[edge]` section): per-source token buckets, blocks
   and raw-byte screens; what it refuses is dropped at the cost of a dictionary look-up;
2. the overload screen (`pbx.sip.stack.SipStack.screen_datagram`, the `[overload]` section): while the
   guard sheds, a new INVITE or REGISTER is answered (503, a repeated stateless answer) or dropped from its
   bytes (`pbx.sip.peek`), a retransmission of accepted work goes to its transaction.

`DatagramIntake` holds both and counts every datagram read (`read`) and every one the admission refused
(`refused`). Overload control estimates how long input waits in the sockets' receive buffers from the rate
the loop drains them (`pbx.sip.overload.SocketQueueDelay`): that rate must count every datagram read,
also those the admission drops for about a microsecond each, or a flood it throws away looks like a backlog of
seconds and legitimate new requests get 503s (RFC 7339's shedding is for the server's own work, not for input
it already refuses).

This module knows nothing of parsing, transactions or the PBX; `pbx.sip.protocols.SipDatagramProtocol`
asks it, `pbx.sip.transport.TransportManager` owns one for all its UDP listeners.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pbx.sip.admission import Admission

Screen = Callable[[bytes, Any], bool]
"""screen(datagram, flow) -> True when it was dealt with before parsing (`SipStack.screen_datagram`)."""


class DatagramIntake:
    """The pre-parse entry of UDP datagrams, shared by all listeners of one transport manager.

    Args:
        admission: per-source limits, blocks and screens (None admits everything).

    Attributes:
        admission: as given (the stream path asks it directly, per framed message).
        screen: the overload screen, asked after the admission (set by overload control; None asks nothing).
        read: datagrams offered so far (a running total: the drain rate of the receive buffers).
        refused: datagrams the admission refused so far.
    """

    __slots__ = ("admission", "read", "refused", "screen")

    def __init__(self, admission: Admission | None = None) -> None:
        self.admission = admission
        self.screen: Screen | None = None
        self.read = 0
        self.refused = 0

    def admit(self, host: str, datagram: bytes) -> bool:
        """Count a datagram from source address `host`; whether the admission lets it go on."""
        self.read += 1
        admission = self.admission
        if admission is None or admission.admit(host, datagram):
            return True
        self.refused += 1
        return False
