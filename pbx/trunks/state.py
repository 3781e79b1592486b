"""The live state of every trunk: its registration, its OPTIONS pings, and whether calls may go out on it.

`TrunkStates` implements `pbx.trunks.settings.ITrunkStates` (read by call routing: `is_up`, `contact_user`)
and is written by the registration clients and OPTIONS pingers of `pbx.trunks.registration`. Each trunk has
one `TrunkState` value, replaced (never mutated) on every change; the listeners (`on_change`) get the new
value: the log line, the status file (`pbx.trunks.status`) and anyone else who wants to know.

A trunk's registration is seen as

- `off`: the trunk does not register (or is disabled);
- `registering`: the first REGISTER is under way;
- `registered`: a binding was accepted and is being kept (a refresh under way stays `registered`);
- `failed`: the last attempt failed (with its code and reason); `retry_at` says when the next one goes out
  (a retry under way stays `failed` until it succeeds);
- `unregistered`: stopped (the PBX is shutting down);
- `standby`: another node holds the trunk's registration (`holder`: the lease in a shared store,
  `pbx.trunks.lease`); this node does not register but sends calls out on the trunk all the same.

Pings (when `options_interval` > 0) set `reachable`: None until the first answer or miss, True after any
answer, False after a miss (no answer, a transport error, a 503). A trunk is *up* when it is enabled, its
registration has not failed and its pings have not gone unanswered; a trunk that neither registers nor pings
is up while enabled. One log line is written each time a trunk's summary (`describe`) changes; passwords are
never part of a state. This module knows no SIP and no config: plain values in, plain values out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from twisted.logger import Logger

OFF = "off"
REGISTERING = "registering"
REGISTERED = "registered"
FAILED = "failed"
UNREGISTERED = "unregistered"
STANDBY = "standby"
REGISTRATION_STATES: tuple[str, ...] = (OFF, REGISTERING, REGISTERED, FAILED, UNREGISTERED, STANDBY)


@dataclass(frozen=True, slots=True)
class TrunkState:
    """One trunk's state at one moment.

    Attributes:
        tenant: the tenant's name.
        trunk: the trunk's name.
        enabled: whether the trunk is enabled at all.
        registers: whether the PBX registers to the carrier.
        pings: whether the PBX pings the carrier with OPTIONS.
        contact_user: the user part of the registered Contact ("" when the trunk does not register).
        registration: one of `REGISTRATION_STATES`.
        code: the status code of the last REGISTER answer (408/503 made up for timeouts and transport
            errors), or None.
        reason: its reason phrase, or why it was made up ("timeout", "transport error: ...").
        retry_at: when the next REGISTER goes out after a failure (the clock's seconds), or None.
        expires_at: when the binding lapses unless refreshed (registered), or None.
        refresh_at: when the next refresh goes out (registered), or None.
        contact: the Contact registered (registered), or None.
        target: the carrier's address that answered last, "transport host:port", or None.
        reachable: the OPTIONS verdict: None (no pings, or none finished yet), True or False.
        ping_code: the status of the last ping's answer (408/503 made up), or None.
        changed_at: when the summary last changed (the clock's seconds).
        holder: with a registration lease, the node that holds the trunk's registration (this node's name
            when it registers itself), or None (no lease: this node registers, or the holder is unknown).
    """

    tenant: str
    trunk: str
    enabled: bool = True
    registers: bool = False
    pings: bool = False
    contact_user: str = ""
    registration: str = OFF
    code: int | None = None
    reason: str | None = None
    retry_at: float | None = None
    expires_at: float | None = None
    refresh_at: float | None = None
    contact: str | None = None
    target: str | None = None
    reachable: bool | None = None
    ping_code: int | None = None
    changed_at: float = 0.0
    holder: str | None = None

    @property
    def up(self) -> bool:
        """Whether calls may go out on the trunk now (see the module docstring)."""
        return self.enabled and self.registration != FAILED and self.reachable is not False

    @property
    def state(self) -> str:
        """One word for the trunk: `disabled`, `down` (pings unanswered), else the registration's state,
        else `up`."""
        if not self.enabled:
            return "disabled"
        if self.reachable is False and self.registration != FAILED:
            return "down"
        if self.registration != OFF:
            return self.registration
        return "up"

    def describe(self) -> str:
        """The summary a log line shows (and whose change is logged): state, code, reason, reachability."""
        text = self.state
        if self.registration in (REGISTERED, FAILED) and self.code is not None:
            text += f" ({self.code} {self.reason or ''})".replace(" )", ")")
        if self.registration == STANDBY:
            text += f" (registered by {self.holder or 'an unknown node'})"
        if self.pings and self.reachable is not None:
            text += ", OPTIONS " + ("answered" if self.reachable else "unanswered")
            if self.ping_code is not None and not self.reachable:
                text += f" ({self.ping_code})"
        return text

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every attribute, with `up` and `state`."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update(up=self.up, state=self.state)
        return values


class TrunkStates:
    """Every trunk's `TrunkState` by (tenant, trunk name); an `ITrunkStates`.

    Args:
        clock: anything with `seconds()` (stamps `changed_at`).
    """

    _log = Logger(namespace="pbx.trunks")

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._states: dict[tuple[str, str], TrunkState] = {}
        self._listeners: list[Callable[[TrunkState], None]] = []

    # -- ITrunkStates ------------------------------------------------------------------------------------

    def is_up(self, tenant: str, trunk: str) -> bool:
        """Whether calls may go out on `trunk` of `tenant` now; False for a trunk not known."""
        state = self._states.get((tenant, trunk))
        return state is not None and state.up

    def contact_user(self, tenant: str, trunk: str) -> str | None:
        """The user part of the Contact registered for the trunk, or None when it does not register."""
        state = self._states.get((tenant, trunk))
        if state is None or not state.registers or not state.enabled:
            return None
        return state.contact_user

    # -- reading -----------------------------------------------------------------------------------------

    def get(self, tenant: str, trunk: str) -> TrunkState | None:
        """The trunk's state, or None for a trunk not known."""
        return self._states.get((tenant, trunk))

    def __iter__(self) -> Iterator[TrunkState]:
        """Every trunk's state, in the order they were added."""
        return iter(list(self._states.values()))

    def __len__(self) -> int:
        return len(self._states)

    def on_change(self, listener: Callable[[TrunkState], None]) -> None:
        """Call `listener` with every new state (a listener that raises is logged, the others still run)."""
        self._listeners.append(listener)

    # -- writing -----------------------------------------------------------------------------------------

    def add(
        self,
        tenant: str,
        trunk: str,
        *,
        enabled: bool = True,
        registers: bool = False,
        pings: bool = False,
        contact_user: str = "",
    ) -> TrunkState:
        """Know a trunk (before its registration or pings start); a trunk added twice is an error."""
        key = (tenant, trunk)
        if key in self._states:
            raise ValueError(f"trunk {tenant}/{trunk} is already known")
        state = TrunkState(
            tenant,
            trunk,
            enabled=enabled,
            registers=registers and enabled,
            pings=pings and enabled,
            contact_user=contact_user if registers and enabled else "",
            registration=REGISTERING if registers and enabled else OFF,
            changed_at=self._clock.seconds(),
        )
        self._states[key] = state
        return state

    def update(self, tenant: str, trunk: str, **changes: Any) -> TrunkState:
        """Replace some attributes of a known trunk's state; logs when its summary changes; tells listeners.

        Raises:
            KeyError: for a trunk not added.
        """
        key = (tenant, trunk)
        old = self._states[key]
        new = replace(old, **changes)
        if new == old:
            return old
        summary = new.describe()
        if summary != old.describe():
            new = replace(new, changed_at=self._clock.seconds())
            self._log_change(new, summary)
        self._states[key] = new
        for listener in list(self._listeners):
            try:
                listener(new)
            except Exception:
                self._log.failure("A trunk state listener failed")
        return new

    def _log_change(self, state: TrunkState, summary: str) -> None:
        details = ""
        if state.registration == REGISTERED and state.contact:
            details = f"; Contact {state.contact} at {state.target}"
        elif state.registration == FAILED and state.retry_at is not None:
            details = f"; next try in {max(0.0, state.retry_at - self._clock.seconds()):.0f} s"
        self._log.info(
            "Trunk {tenant}/{trunk}: {summary}{details}",
            tenant=state.tenant,
            trunk=state.trunk,
            summary=summary,
            details=details,
        )
