"""INVITE-session reliability above the transactions (RFC 3261 13.2.2.4 and 13.3.1.4, RFC 6026).

A 2xx to an INVITE ends the INVITE transaction (RFC 6026 keeps it only to absorb retransmissions), so the
transaction user makes the 2xx/ACK exchange reliable itself:

- `Uas2xxRetransmitter` (13.3.1.4): the UAS re-sends its 2xx at T1, 2T1, 4T1 ... capped at T2 until the ACK
  arrives, and gives up after 64*T1 (the caller then sends BYE). Over a reliable transport the 2xx is sent
  once but the 64*T1 wait for the ACK still runs. Its states walk the table `RETRANSMITTER`.
- `UacAckCache` (13.2.2.4): the UAC remembers, for 64*T1, how to re-send the ACK it sent for a 2xx, so a
  retransmitted 2xx (passed up by the INVITE client transaction in Accepted, or a stray after Timer M) is
  answered with the same ACK again.

Time comes from an injected `IReactorTime`, timer values from a `TimerConfig`. This module knows nothing of
messages on the wire, transports, dialogs or transactions: it calls the `send` callables it is given, which
must not raise. Session timers (RFC 4028) and PRACK (RFC 3262) are not here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pbx.sip.errors import SipParseError
from pbx.sip.message import Response
from pbx.sip.timers import TimerConfig

# Retransmitter states.
WAITING: Final = "Waiting"  # 2xx sent, no ACK yet
CONFIRMED: Final = "Confirmed"  # the ACK came
TIMED_OUT: Final = "Timed out"  # 64*T1 passed without an ACK
STOPPED: Final = "Stopped"  # the caller gave up waiting (BYE, CANCELled call, shutdown)

# Retransmitter inputs. 13.3.1.4 names no timers; they work as Timer G and H do for a 300-699 (17.2.1).
TIMER_G: Final = "timer_g"  # retransmit the 2xx, doubling up to T2
TIMER_H: Final = "timer_h"  # give up waiting for the ACK after 64*T1
ACK: Final = "ACK"
STOP: Final = "stop"

# (state, input) -> (next state, action). Every input in a final state is absorbed.
RETRANSMITTER: Final[dict[tuple[str, str], tuple[str, str]]] = {
    (WAITING, TIMER_G): (WAITING, "retransmit"),
    (WAITING, TIMER_H): (TIMED_OUT, "report_timeout"),
    (WAITING, ACK): (CONFIRMED, "ignore"),
    (WAITING, STOP): (STOPPED, "ignore"),
}
INPUTS: Final = (TIMER_G, TIMER_H, ACK, STOP)

AckKey = tuple[str, str, str, int]


class Uas2xxRetransmitter:
    """Retransmits a UAS's 2xx to an INVITE until the ACK arrives (RFC 3261 13.3.1.4).

    Create it right after sending the 2xx (it does not send it itself): it re-sends at T1, then after 2T1,
    4T1 ... capped at T2, and after 64*T1 without `ack_received` calls `on_timeout` once. Leaving the Waiting
    state cancels the timer. One `IDelayedCall` runs at a time (nearly every 2xx is ACKed before its first
    retransmission: one timer armed and cancelled per call, not two): over UDP it is Timer G until the next
    retransmission would come at or after the 64*T1 deadline, then Timer H at the deadline; over TCP/TLS it
    is Timer H.

    Args:
        clock: the time source.
        timers: timer values.
        send: re-sends the 2xx (for example `lambda: stack.send_response(ok, flow)`); must not raise.
        on_timeout: called once when 64*T1 passed without an ACK; the caller should send BYE.
        reliable: True on TCP/TLS: no retransmissions, the 64*T1 timeout still applies.

    Attributes:
        state: `WAITING`, `CONFIRMED`, `TIMED_OUT` or `STOPPED`.
    """

    __slots__ = (
        "_clock",
        "_deadline",
        "_interval",
        "_on_timeout",
        "_send",
        "_timer_g",
        "_timer_h",
        "_timers",
        "state",
    )

    def __init__(
        self,
        clock: IReactorTime,
        timers: TimerConfig,
        send: Callable[[], None],
        on_timeout: Callable[[], None],
        *,
        reliable: bool = False,
    ) -> None:
        self._clock = clock
        self._timers = timers
        self._send = send
        self._on_timeout = on_timeout
        self.state = WAITING
        self._interval = timers.t1
        self._deadline = clock.seconds() + timers.timer_b  # when Timer H fires (64*T1)
        self._timer_g: IDelayedCall | None = None
        self._timer_h: IDelayedCall | None = None
        if reliable or self._interval >= timers.timer_b:
            self._timer_h = clock.callLater(timers.timer_b, self._expire, TIMER_H)
        else:
            self._timer_g = clock.callLater(self._interval, self._expire, TIMER_G)

    @property
    def waiting(self) -> bool:
        """True until the ACK came, the wait timed out or `stop` was called."""
        return self.state == WAITING

    def ack_received(self) -> None:
        """The ACK for the 2xx arrived: stop retransmitting. Later calls are no-ops."""
        self._fire(ACK)

    def stop(self) -> None:
        """Stop without reporting a timeout (the call ended another way). Later calls are no-ops."""
        self._fire(STOP)

    def _fire(self, event: str) -> None:
        transition = RETRANSMITTER.get((self.state, event))
        if transition is None:
            return  # a final state absorbs every input
        next_state, action = transition
        if next_state != self.state:
            self.state = next_state
            self._cancel_timers()
        getattr(self, "_" + action)()

    def _expire(self, timer: str) -> None:
        setattr(self, "_" + timer, None)
        self._fire(timer)

    def _cancel_timers(self) -> None:
        for attr in ("_timer_g", "_timer_h"):
            call: IDelayedCall | None = getattr(self, attr)
            setattr(self, attr, None)
            if call is not None and call.active():
                call.cancel()

    def _retransmit(self) -> None:
        self._send()
        self._interval = min(2 * self._interval, self._timers.t2)
        if self.state == WAITING:  # `send` may have led to ack_received or stop
            left = self._deadline - self._clock.seconds()
            if self._interval < left:
                self._timer_g = self._clock.callLater(self._interval, self._expire, TIMER_G)
            else:  # no retransmission before the deadline: Timer H is next
                self._timer_h = self._clock.callLater(max(left, 0.0), self._expire, TIMER_H)

    def _report_timeout(self) -> None:
        self._on_timeout()

    def _ignore(self) -> None:
        """Nothing to do besides leaving Waiting."""

    def __repr__(self) -> str:
        return f"<Uas2xxRetransmitter {self.state}>"


def ack_key(response: Response) -> AckKey:
    """The key of the ACK for a 2xx response: (Call-ID, From tag, To tag, CSeq number).

    For a UAC dialog this is `(*dialog.key, invite.cseq.number)`.

    Raises:
        ValueError: the response lacks a Call-ID or a tag (SipParseError, a ValueError, when malformed).
    """
    call_id = response.call_id
    local_tag = response.from_.tag
    remote_tag = response.to.tag
    if call_id is None or local_tag is None or remote_tag is None:
        raise ValueError("a 2xx to an INVITE needs a Call-ID, a From tag and a To tag")
    return (call_id, local_tag, remote_tag, response.cseq.number)


class UacAckCache:
    """How to re-send each ACK a UAC sent for a 2xx, kept for 64*T1 (RFC 3261 13.2.2.4).

    Args:
        clock: the time source.
        timers: timer values (entries live `timers.timer_b`, 64*T1).
    """

    __slots__ = ("_clock", "_entries", "_timers")

    def __init__(self, clock: IReactorTime, timers: TimerConfig) -> None:
        self._clock = clock
        self._timers = timers
        self._entries: dict[AckKey, tuple[Callable[[], None], IDelayedCall]] = {}

    def remember(self, response_key: AckKey, send_ack: Callable[[], None]) -> None:
        """Remember `send_ack` (which must not raise) under `ack_key(the 2xx)` for 64*T1 from now; an
        earlier entry under the same key is replaced."""
        self.forget(response_key)
        expiry = self._clock.callLater(self._timers.timer_b, self._expire, response_key)
        self._entries[response_key] = (send_ack, expiry)

    def on_stray_2xx(self, response: Response) -> bool:
        """Re-send the remembered ACK for a retransmitted 2xx to an INVITE.

        Returns:
            True when the ACK was re-sent; False when the response is not a 2xx to an INVITE or no ACK is
            remembered for it (a 2xx from a new fork: the caller ACKs it and, unwanted, sends BYE).
        """
        if not 200 <= response.status < 300:
            return False
        try:
            if response.cseq.method != "INVITE":
                return False
            key = ack_key(response)
        except (SipParseError, ValueError):
            return False
        entry = self._entries.get(key)
        if entry is None:
            return False
        entry[0]()
        return True

    def forget(self, response_key: AckKey) -> None:
        """Drop an entry early (the dialog ended); an unknown key is ignored."""
        entry = self._entries.pop(response_key, None)
        if entry is not None and entry[1].active():
            entry[1].cancel()

    def clear(self) -> None:
        """Drop every entry and cancel their timers (shutdown)."""
        for key in list(self._entries):
            self.forget(key)

    def _expire(self, response_key: AckKey) -> None:
        self._entries.pop(response_key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, response_key: object) -> bool:
        return response_key in self._entries

    def __iter__(self) -> Iterator[AckKey]:
        return iter(list(self._entries))
