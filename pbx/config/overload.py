"""Overload control settings as a frozen value: the `[overload]` section (docs/configuration.md).

Like `pbx.config.model` it imports only the standard library. `pbx.service` turns it into the stack's
`pbx.sip.overload.LagMonitor` and `OverloadGuard`, and the size of its `StatelessCache`.
"""

from __future__ import annotations

from dataclasses import dataclass

# The keys of the table, for `pbx.config.load.SCHEMA_KEYS` (documented in docs/configuration.md).
OVERLOAD_KEYS: tuple[str, ...] = (
    "enabled",
    "lag_interval",
    "lag_high",
    "lag_critical",
    "max_pending",
    "max_rate",
    "burst",
    "retry_after",
    "drop_critical",
    "stateless_cache_size",
    "receive_buffer",
    "receive_buffer_level",
    "follow_completions",
    "queue_drop",
    "finish_critical",
    "reject_high",
    "receive_buffer_hold",
    "prioritize",
    "increase",
    "decrease",
    "read_budget",
    "lag_attack",
    "refuse_at_once",
)


@dataclass(frozen=True, slots=True)
class OverloadConfig:
    """The `[overload]` section.

    Attributes:
        enabled: shed new work under overload (the lag monitor runs and the stack asks the guard); the
            cache of stateless answers works either way.
        lag_interval: seconds between two measures of the event loop's lag.
        lag_high: smoothed lag (seconds) from which new requests without credentials get a 503.
        lag_critical: smoothed lag (seconds) from which every new INVITE and REGISTER is shed (dropped
            unanswered with `drop_critical`, else a 503).
        max_pending: unfinished asynchronous work (store commits, lookups) from which new requests get a
            503; 0: no cap.
        max_rate: new exchanges (INVITEs and REGISTERs without credentials) admitted per second; 0: no cap.
        burst: how many of them may come at once above `max_rate` (0: one second's worth).
        retry_after: seconds in the 503's Retry-After.
        drop_critical: drop instead of answering 503 at the critical level.
        stateless_cache_size: answers sent without a transaction kept for retransmissions.
        receive_buffer: SO_RCVBUF (bytes) of the UDP listeners while overloaded, so that the wait in them
            stays short and the kernel drops the excess; 0 leaves them alone.
        receive_buffer_level: the lag level from which they are that small: "critical" (`lag_critical`)
            or "high" (`lag_high`); they grow back below `lag_high` either way.
        follow_completions: from `lag_high`, admit new exchanges no faster than exchanges complete
            (authenticated requests admitted), a little slower so that the queue drains (on by default
            since session 12: calmer and a few points more goodput at 5x, bench/RESULTS-issue14-overload.md).
        queue_drop: seconds of wait in the UDP receive buffers from which new INVITEs and REGISTERs (no
            credentials, no To tag) are dropped before parsing, until the wait is shorter; 0: never.
        finish_critical: at `lag_critical`, still admit requests with credentials (the second half of an
            exchange admitted before); only new exchanges are shed.
        reject_high: from `lag_high`, refuse a share of new exchanges with 503; false: admit them until
            `lag_critical` (the kernel drops the excess, with small buffers from `receive_buffer_level`).
        receive_buffer_hold: seconds below `lag_high` before small receive buffers grow back (0: at once).
        prioritize: while new work is shed, handle the work in progress first: new INVITEs and REGISTERs
            wait for the end of the reactor turn.
        increase: below `lag_high`, the share of new exchanges admitted grows by this much per sample.
        decrease: from `lag_high`, that share is multiplied by this per sample.
        read_budget: with `prioritize`, datagram bytes a UDP port reads per reactor turn while shedding (0:
            Twisted's own 256 KiB; more was measured worse at 5x).
        lag_attack: the weight of a lag sample above the smoothed lag (0.25, as every sample's: a rising
            lag is followed as slowly as a falling one; 1: at once).
        refuse_at_once: with `prioritize`, a new INVITE or REGISTER the guard surely refuses is refused
            when it is read (and one the share admits is admitted then); false: they all wait for the end
            of the reactor turn, as before session 11.
    """

    enabled: bool = True
    lag_interval: float = 0.05
    lag_high: float = 0.2
    lag_critical: float = 1.0
    max_pending: int = 2000
    max_rate: float = 0.0
    burst: float = 0.0
    retry_after: int = 5
    drop_critical: bool = True
    stateless_cache_size: int = 8192
    receive_buffer: int = 262144
    receive_buffer_level: str = "critical"
    follow_completions: bool = True
    queue_drop: float = 0.0
    finish_critical: bool = False
    reject_high: bool = True
    receive_buffer_hold: float = 0.0
    prioritize: bool = True
    increase: float = 0.05
    decrease: float = 0.8
    read_budget: int = 0
    lag_attack: float = 0.25
    refuse_at_once: bool = True
