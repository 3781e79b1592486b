"""Call park (the Asterisk model): `park` puts the call on a free orbit, `unpark ORBIT` retrieves it.

docs/features.md has the dialplan side (the demo parks on 700 and retrieves on 701-709). In order:

1. `park` takes the first free orbit of the tenant's `park_orbits` (none free: the `park-full` prompt and
   the result "full"), answers the call, says the orbit ("Your call is parked on 7 0 1"; `announce=no` or
   the tenant's `park_announce = false` leave it out), and plays music on hold. Whoever is on the call's
   media hears it: the parker when it dialled the park code (it then completes an attended transfer, and
   the parked party takes its place in the call), the parked party after a blind transfer. The app reads
   the call's media through `AppCall` at every step, never keeping the first party's endpoint.
2. `unpark ORBIT` from another call claims the parked call at once (the first of two racing retrievers
   wins, the other hears `park-empty`: result "empty"), answers, and joins the two calls' media inside the
   PBX: each call's endpoint is closed and a `pbx.media.patch.MediaPatch` is attached to both calls' relay
   legs, translating between PCMU and PCMA when the two phones chose different codecs. Both calls stay
   PBX-answered calls: when either ends, the other is hung up, and both applications return then.
3. Not retrieved within the tenant's `park_timeout`: the orbit is freed, the music stops and `park`
   returns "timeout" with the call's variables `parker` (who parked it: `call.referred_by` after a blind
   transfer, else the call's caller extension) and `park_orbit` set, for the template to go on (the demo:
   `goto park-return`, which rings the parker again, then the operator).
4. The parked party hanging up frees the orbit ("hangup").

The events `parked(call, tenant, orbit)` and `unparked(call, tenant, orbit)` go to the B2BUA's observers
(`emit`): busy lamps show an orbit in use. `CallPark` is itself an observer (`call_ended`), which is how it
learns that a parked or joined call ended. Time is the injected clock.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pbx.apps.base import AppCall, media_format
from pbx.apps.ivr import IvrApps
from pbx.apps.voicemail.speech import spoken_digits
from pbx.dialplan import Action
from pbx.media.patch import MediaPatch, PatchSide

__all__ = ["CallPark", "ParkedCall"]


@dataclass(eq=False)
class ParkedCall:
    """A call on an orbit.

    Attributes:
        call: the parked call.
        tenant: its tenant.
        orbit: the orbit number.
        parker: the extension that parked it ("" when unknown).
        ready: True once its media is up and it can be retrieved.
        claimed: True once a retriever took it (the orbit is free again for others).
        done: fires with "retrieved", "timeout" or "hangup".
    """

    call: Any
    tenant: str
    orbit: str
    parker: str
    ready: bool = False
    claimed: bool = False
    done: Deferred[str] = field(default_factory=Deferred)
    timer: IDelayedCall | None = None


class CallPark:
    """The orbits of every tenant and the `park`/`unpark` applications.

    Args:
        clock: time source (the park timeout).
        ivr: the media applications (answering, prompts, music).
        orbits: a tenant's orbits, in the order they are taken.
        timeout: a tenant's park timeout, in seconds.
        announce: whether a tenant's orbits are spoken before the music.
        emit: `emit(event, *args)` of the B2BUA's observers (`parked`, `unparked`), or None.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        ivr: IvrApps,
        *,
        orbits: Callable[[str], tuple[str, ...]],
        timeout: Callable[[str], float],
        announce: Callable[[str], bool] = lambda tenant: True,
        emit: Callable[..., None] | None = None,
    ) -> None:
        self.clock = clock
        self.ivr = ivr
        self._orbits = orbits
        self._timeout = timeout
        self._announce = announce
        self._emit = emit
        self._lots: dict[tuple[str, str], ParkedCall] = {}
        self._parked: dict[Any, ParkedCall] = {}  # call -> its slot
        self._joined: dict[Any, tuple[Any, MediaPatch]] = {}  # call -> (the other call, the patch)
        self._waiters: dict[Any, Deferred[None]] = {}  # call -> fires when it ends

    def register(self, apps: MutableMapping[str, Any]) -> None:
        """Plug `park` and `unpark` into a B2BUA's `apps` table."""
        apps.update(park=self.park, unpark=self.unpark)

    def parked(self, tenant: str) -> dict[str, Any]:
        """The calls parked in a tenant now, by orbit (for tests and the console)."""
        return {orbit: slot.call for (t, orbit), slot in self._lots.items() if t == tenant}

    def stop(self) -> None:
        """Shutting down: cancel the park timers (the B2BUA hangs the calls up)."""
        for slot in list(self._lots.values()):
            self._cancel_timer(slot)

    # -- park ---------------------------------------------------------------------------------------------

    async def park(self, call: AppCall, action: Action) -> str:
        """`park [announce=no]`: "retrieved", "timeout", "hangup", "full" or "failed"."""
        tenant = call.tenant
        orbit = next((o for o in self._orbits(tenant) if (tenant, o) not in self._lots), None)
        if orbit is None:
            self._log.info("Call {id}: park: every orbit of {tenant} is taken", id=call.id, tenant=tenant)
            await self._say(call, ["park-full"])
            return "full"
        caller = getattr(call, "caller", None)
        parker = str(getattr(call, "referred_by", "") or getattr(caller, "extension", "") or "")
        slot = ParkedCall(call, tenant, orbit, parker)
        self._lots[(tenant, orbit)] = slot
        self._parked[call] = slot
        variables = getattr(call, "vars", None)
        if isinstance(variables, dict):
            variables.update(parker=parker, park_orbit=orbit)
        endpoint = await self.ivr._media(call, action)
        if endpoint is None or call.ended:
            self._release(slot)
            return "hangup" if call.ended else "failed"
        slot.ready = True
        slot.timer = self.clock.callLater(self._timeout(tenant), self._timed_out, slot)
        self._log.info(
            "Call {id} parked on {tenant}/{orbit} by {parker}",
            id=call.id, tenant=tenant, orbit=orbit, parker=parker or "?",
        )  # fmt: skip
        if self._emit is not None:
            self._emit("parked", call, tenant, orbit)
        if self._announce(tenant) and action.options.get("announce") != "no":
            await self._say(call, ["park-parked-on", *spoken_digits(orbit)])
        if not slot.claimed and not slot.done.called and not call.ended:
            current = call.endpoint  # whoever is on the call's media now (a transfer may have replaced it)
            if current is not None:
                current.music_on_hold(self.ivr.prompt(tenant, "moh"))
        outcome = await slot.done
        if outcome == "retrieved":
            await self._until_ended(call)
        return outcome

    def _timed_out(self, slot: ParkedCall) -> None:
        slot.timer = None
        if slot.claimed or slot.done.called:
            return
        self._log.info(
            "Call {id}: not retrieved from {tenant}/{orbit} in time", id=slot.call.id, tenant=slot.tenant,
            orbit=slot.orbit,
        )  # fmt: skip
        endpoint = slot.call.endpoint
        if endpoint is not None:
            endpoint.stop()  # the music; a following dial plays its ringback
        self._release(slot)
        slot.done.callback("timeout")

    def _release(self, slot: ParkedCall) -> None:
        """Free the orbit (once)."""
        self._cancel_timer(slot)
        self._parked.pop(slot.call, None)
        if self._lots.get((slot.tenant, slot.orbit)) is slot:
            del self._lots[(slot.tenant, slot.orbit)]
            if slot.ready and self._emit is not None:
                self._emit("unparked", slot.call, slot.tenant, slot.orbit)

    def _cancel_timer(self, slot: ParkedCall) -> None:
        if slot.timer is not None and slot.timer.active():
            slot.timer.cancel()
        slot.timer = None

    # -- unpark -------------------------------------------------------------------------------------------

    async def unpark(self, call: AppCall, action: Action) -> str:
        """`unpark ORBIT`: "retrieved" (once the joined calls ended), "empty" or "failed"."""
        tenant, orbit = call.tenant, action.args[0]
        slot = self._lots.get((tenant, orbit))
        if slot is None or not slot.ready or slot.claimed or slot.call.ended or slot.call is call:
            self._log.info(
                "Call {id}: nothing to retrieve on {tenant}/{orbit}", id=call.id, tenant=tenant, orbit=orbit
            )
            await self._say(call, ["park-empty"])
            return "empty"
        slot.claimed = True  # synchronously: a second retriever finds the orbit taken
        self._cancel_timer(slot)
        try:
            call.answer_locally()
            ready = await call.media_ready()
        except BaseException:  # an offer the PBX cannot answer (a SipError for the caller): leave it parked
            self._unclaim(slot)
            raise
        if not ready or call.ended or slot.call.ended:
            if self._unclaim(slot):
                return "failed"
            await self._say(call, ["park-empty"])
            return "empty"
        if not self._join(slot.call, call):
            slot.claimed = False
            self._hang_up(slot.call)
            return "failed"
        self._log.info(
            "Call {id} retrieved from {tenant}/{orbit} by call {by}",
            id=slot.call.id, tenant=tenant, orbit=orbit, by=call.id,
        )  # fmt: skip
        self._release(slot)
        slot.done.callback("retrieved")
        await self._until_ended(call)
        return "retrieved"

    def _unclaim(self, slot: ParkedCall) -> bool:
        """A retrieval that did not happen: the call stays parked (its timer starts again); False when the
        parked call has gone meanwhile."""
        slot.claimed = False
        if slot.call.ended or slot.done.called:
            return False
        slot.timer = self.clock.callLater(self._timeout(slot.tenant), self._timed_out, slot)
        return True

    def _join(self, parked: AppCall, retriever: AppCall) -> bool:
        """Close both calls' PBX media and patch their relay legs together; False when either has no
        media the PBX can speak."""
        sides = []
        for call in (parked, retriever):
            endpoint = call.endpoint
            last = getattr(endpoint, "last_sent", None) if endpoint is not None else None
            if endpoint is not None:
                call.endpoint = None
                endpoint.close()
            leg = call.media_leg()
            sdp = call.local_sdp
            if leg is None or sdp is None:
                return False
            try:
                fmt = media_format(sdp)
            except ValueError as e:
                self._log.warn("Call {id}: cannot join its media ({e})", id=call.id, e=str(e))
                return False
            sides.append((leg, PatchSide(leg, fmt.codec, fmt.payload_type, fmt.telephone_event, last)))
        (leg_a, side_a), (leg_b, side_b) = sides
        patch = MediaPatch(self.clock, side_a, side_b)
        leg_a.attach(patch.consumer_a)
        leg_b.attach(patch.consumer_b)
        self._joined[parked] = (retriever, patch)
        self._joined[retriever] = (parked, patch)
        return True

    # -- the end of calls (observer) ----------------------------------------------------------------------

    def call_ended(self, call: Any) -> None:
        """A call ended: free its orbit, or hang up the call it was joined to."""
        slot = self._parked.get(call)
        if slot is not None and not slot.claimed:
            self._release(slot)
            if not slot.done.called:
                slot.done.callback("hangup")
        joined = self._joined.pop(call, None)
        if joined is not None:
            other, patch = joined
            patch.close()
            self._joined.pop(other, None)
            self._hang_up(other)
        waiter = self._waiters.pop(call, None)
        if waiter is not None:
            waiter.callback(None)

    def _hang_up(self, call: Any) -> None:
        if not call.ended:
            hangup = getattr(call, "hangup", None)
            if hangup is not None:
                hangup("callee")

    def _until_ended(self, call: AppCall) -> Deferred[None]:
        if call.ended:
            return Deferred.fromCoroutine(_nothing())
        waiter = self._waiters.get(call)
        if waiter is None:
            waiter = self._waiters[call] = Deferred()
        return waiter

    async def _say(self, call: AppCall, prompts: list[str]) -> None:
        endpoint = await self.ivr._media(call, Action("answer"))
        if endpoint is not None and not call.ended:
            await self.ivr._play(call, endpoint, prompts, barge_in=False)


async def _nothing() -> None:
    return None
