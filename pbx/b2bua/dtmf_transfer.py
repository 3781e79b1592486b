"""Unattended transfer by a DTMF feature code in a connected call, for phones that send no REFER.

A `dial` with `transfer=CODE` (the demo dialplan: `transfer=##`) watches the key presses of both parties once
the call is connected: CODE, then the number, then `#` (or a pause of `DIGIT_PAUSE` seconds) transfers the
OTHER party to that number, exactly as a blind REFER from the party who pressed would
(`pbx.b2bua.transfer.Transfers.dtmf_transfer`: routed as that party through the dialplan, its rights
apply). Key presses arrive as SIP INFO (`application/dtmf-relay`, `application/dtmf`) through the call's
sessions, or as RFC 4733 events on the relay: each side's relay leg shows its packets to a tap
(`UdpRelayLeg.set_tap`) that parses telephone-event packets only (other packets cost one byte compare). A
side whose media is SRTP is watched by INFO only (its events are encrypted). The digits still reach the other
party as they would without the watch.

This module knows nothing of SIP: it gets digits, RTP packets and a function to call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pbx.media.dtmf import DtmfReceiver, TelephoneEvent
from pbx.media.rtp import RtpPacket
from pbx.sip.sdp import telephone_event_types

DIGIT_PAUSE = 3.0
"""Seconds after the last digit of the number at which the transfer starts without a closing `#`."""

MAX_NUMBER = 32

CODE = re.compile(r"[0-9*#]{1,4}")
"""What a feature code may be (the `dial` option's check is the same)."""


def event_payload_types(bodies: Iterable[bytes | None]) -> frozenset[int]:
    """The telephone-event payload types named in any of the SDP `bodies` (the phone's and ours: bodies
    the call's media bridge took, so already parsed once; `telephone_event_types` reads only their m= and
    rtpmap lines)."""
    found: set[int] = set()
    for body in set(bodies):  # a side's offer is often its session's remote body too: read once
        if body:
            found |= telephone_event_types(body)
    types = frozenset(found)
    shared = _SHARED_TYPES.get(types)  # each watched call keeps its two sides' sets: the few there are,
    if shared is not None:  # once (101 for nearly every phone)
        return shared
    if len(_SHARED_TYPES) >= 64:
        _SHARED_TYPES.clear()
    _SHARED_TYPES[types] = types
    return types


_SHARED_TYPES: dict[frozenset[int], frozenset[int]] = {}


class _Side:
    __slots__ = ("collecting", "number", "receiver", "recent", "timer")

    def __init__(self) -> None:
        self.recent = ""  # the last key presses, to find the code
        self.collecting = False
        self.number = ""
        self.timer: IDelayedCall | None = None
        self.receiver: DtmfReceiver | None = None  # made by the side's first telephone-event packet


class _Tap:
    """`DigitWatch.tap`: a slotted callable (a call keeps two for its length; a closure costs more)."""

    __slots__ = ("side", "types", "watch")

    def __init__(self, watch: DigitWatch, side: str, types: frozenset[int]) -> None:
        self.watch = watch
        self.side = side
        self.types = types

    def __call__(self, packet: bytes) -> None:
        watch = self.watch
        if len(packet) < 12 or (packet[1] & 0x7F) not in self.types or watch.closed:
            return
        try:
            rtp = RtpPacket.parse(packet)
            event = TelephoneEvent.parse(rtp.payload)
        except ValueError:
            return
        state = watch.side_state(self.side)
        receiver = state.receiver
        if receiver is None:
            receiver = state.receiver = DtmfReceiver()
        for digit in receiver.feed(rtp.timestamp, rtp.marker, event):
            watch.digit(self.side, digit)


class DigitWatch:
    """Finds `code` + number (+ `#` or a pause) in the key presses of each side of one call.

    Args:
        clock: time (the pause).
        code: the feature code (`CODE`).
        fire: `fire(side, number)` once a side entered a complete transfer.
    """

    __slots__ = ("_a", "_b", "_clock", "_fire", "closed", "code")
    _log = Logger()

    def __init__(self, clock: IReactorTime, code: str, fire: Callable[[str, str], object]) -> None:
        self._clock = clock
        self.code = code
        self._fire = fire
        # Each side's state, made by its first key press (most calls have none: a watch per connected call).
        self._a: _Side | None = None
        self._b: _Side | None = None
        self.closed = False

    def side_state(self, side: str) -> _Side:
        """`side`'s state ("a" or "b"), made if need be."""
        if side == "a":
            if self._a is None:
                self._a = _Side()
            return self._a
        if side == "b":
            if self._b is None:
                self._b = _Side()
            return self._b
        raise KeyError(side)

    # -- inputs ------------------------------------------------------------------------------------------

    def digit(self, side: str, digit: str) -> None:
        """A key pressed on `side`'s phone (from INFO, or an RFC 4733 event)."""
        if self.closed:
            return
        state = self.side_state(side)
        if state.collecting:
            if digit == "#" and state.number:
                self._complete(side)
                return
            if digit.isdigit() or digit == "*":
                state.number = (state.number + digit)[:MAX_NUMBER]
                self._arm(side)
            return
        state.recent = (state.recent + digit)[-len(self.code) :]
        if state.recent == self.code:
            state.recent = ""
            state.collecting, state.number = True, ""
            self._arm(side)

    def tap(self, side: str, payload_types: frozenset[int]) -> Callable[[bytes], None]:
        """The relay tap of `side`'s leg: RFC 4733 events in `payload_types` become `digit` calls."""
        return _Tap(self, side, payload_types)

    # -- the number --------------------------------------------------------------------------------------

    def _arm(self, side: str) -> None:
        state = self.side_state(side)
        if state.timer is not None and state.timer.active():
            state.timer.cancel()
        state.timer = self._clock.callLater(DIGIT_PAUSE, self._paused, side)

    def _paused(self, side: str) -> None:
        state = self.side_state(side)
        state.timer = None
        if state.number:
            self._complete(side)
        else:
            state.collecting = False

    def _complete(self, side: str) -> None:
        number = self.side_state(side).number
        self.close()
        self._log.info("Side {side} entered a transfer to {number}", side=side, number=number)
        self._fire(side, number)

    def close(self, legs: Any = None) -> None:
        """Stop watching: timers cancelled (and the taps of `legs`, relay legs, removed)."""
        self.closed = True
        for state in (self._a, self._b):
            if state is None:
                continue
            if state.timer is not None and state.timer.active():
                state.timer.cancel()
            state.timer = None
            state.collecting = False
        for leg in legs or ():
            set_tap = getattr(leg, "set_tap", None)
            if set_tap is not None:
                set_tap(None)
