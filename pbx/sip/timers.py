"""RFC 3261 timer values (section 17 and table 4), passed to each transaction instead of module globals."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """Timer base values in seconds.

    Attributes:
        t1: RTT estimate (500 ms).
        t2: maximum retransmit interval for non-INVITE requests and INVITE responses (4 s).
        t4: maximum time a message stays in the network (5 s).
        timer_d: wait time for response retransmissions in INVITE client Completed over UDP (>= 32 s).
        trying: how long an INVITE server transaction leaves its transaction user to send the first
            provisional response before it sends `100 Trying` itself (RFC 3261 17.2.1: a 100 is needed only
            when the TU will not send a provisional response within 200 ms). 0 (the default) sends the 100 at
            once; at most 0.15 leaves room for a `WaitTimers` sweep's resolution (50 ms).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    trying: float = 0.0

    @property
    def timer_b(self) -> float:
        """INVITE transaction timeout (64*T1); also Timer F, H and J (unreliable)."""
        return 64 * self.t1


DEFAULT_TIMERS = TimerConfig()
