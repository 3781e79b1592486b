"""What happens to calls, for whoever watches them: busy lamps, pickup, park, metrics, the console, limits.

The B2BUA tells each registered `CallObserver` when a call starts, when one of its outbound legs starts
ringing (or fails), when it is answered and when it ends. Observers are plain objects with any subset of
the methods below (a missing method is skipped); an observer that raises is logged and the call goes on.
Observers run synchronously in the reactor thread: keep them cheap (count, index, schedule), never block.

    b2bua.observers.append(MyObserver())

A leg's `extension` (the callee extension, "" for a trunk or URI target), `target.trunk` and `status`
say where it rang and how it ended; a call's `caller`, `tenant`, `dialed`, `winner`, `answered_at`,
`started_at`, `cause` and `cdr()` say the rest (`pbx/b2bua/call.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.logger import Logger

if TYPE_CHECKING:
    from pbx.b2bua.call import Call
    from pbx.b2bua.leg import OutboundLeg

EVENTS = ("call_started", "leg_started", "leg_ended", "leg_answered", "call_answered", "call_ended")


class CallObserver(Protocol):
    """Any subset of these methods (see the module docstring)."""

    def call_started(self, call: Call) -> None:
        """A new call passed authentication and is about to run its dialplan."""

    def leg_started(self, call: Call, leg: OutboundLeg) -> None:
        """An outbound leg sent (or is about to send) its INVITE: its target is ringing or being tried."""

    def leg_ended(self, call: Call, leg: OutboundLeg) -> None:
        """An outbound leg got its final failure (`leg.status`: 486, 487 when cancelled, 408, ...)."""

    def leg_answered(self, call: Call, leg: OutboundLeg) -> None:
        """An outbound leg won: its callee answered (before `call_answered`, or without it when the PBX had
        answered the caller already: IVR, early media)."""

    def call_answered(self, call: Call) -> None:
        """The caller got its 200 (from a callee, `call.winner`, or from the PBX itself: IVR, voicemail)."""

    def call_ended(self, call: Call) -> None:
        """The call is over (its CDR is `call.cdr()`); legs still ringing are being cancelled."""


class CallEvents:
    """The B2BUA's list of observers and the one way events reach them.

    Each event's bound methods are looked up once (on the first emit after the list changed through
    `append`, `remove` or `replace`), not on every emit: a call emits ~8 events to ~6 observers."""

    __slots__ = ("_methods", "observers")
    _log = Logger()

    def __init__(self) -> None:
        self.observers: list[Any] = []
        self._methods: dict[str, tuple[Any, ...]] = {}  # event -> the observers' bound methods, in order

    def append(self, observer: Any) -> None:
        self.observers.append(observer)
        self._methods.clear()

    def remove(self, observer: Any) -> None:
        self.observers.remove(observer)
        self._methods.clear()

    def replace(self, observers: list[Any]) -> None:
        """Watch with these observers instead (benchmarks, tests)."""
        self.observers[:] = observers
        self._methods.clear()

    def __bool__(self) -> bool:
        return bool(self.observers)

    def emit(self, event: str, *args: Any) -> None:
        """Tell every observer that has a method named `event`; one failing does not stop the others."""
        methods = self._methods.get(event)
        if methods is None:
            methods = tuple(
                method
                for method in (getattr(observer, event, None) for observer in self.observers)
                if method is not None
            )
            self._methods[event] = methods
        for method in methods:
            try:
                method(*args)
            except Exception:
                self._log.failure(
                    "Call observer {obs!r} failed on {event}",
                    obs=getattr(method, "__self__", method),
                    event=event,
                )
