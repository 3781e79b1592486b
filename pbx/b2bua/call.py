"""A call: the caller's INVITE, the dialplan's actions, the outbound legs, and the bridge once answered.

A `Call` starts when an authenticated INVITE arrives; the caller's side is a `UasSession` (provisional
responses, the 200 retransmitted until its ACK, the rejection, CANCEL). It renders the tenant's dialplan and
runs the actions in order (`docs/dialplan.md` has the protocol) with the shared interpreter
(`pbx.dialplan.interpreter`, the call is its `ActionHost`): `dial` (`pbx.b2bua.dialing`) forks legs and takes
the first 2xx. A dial that ends without an answer sets `result` (busy, noanswer, unavailable, failed) for
the next actions; when the actions run out, the caller gets the failure (486, 480, ...). Once answered, the
call is two INVITE sessions, side "a" and side "b", whose listeners (`pbx.b2bua.bridge`) pass re-INVITE,
UPDATE and INFO across with their SDP rewritten; when one side's session ends (BYE, no ACK, ...) the call
hangs up the other (`side_terminated`). The CDR is written when the call ends.

Offer/answer (RFC 3261 13.2.1, RFC 3264): the caller's offer is checked before any action runs (`parse_sdp`:
400, 413 or 488, never a 500). An INVITE without an offer that the PBX answers itself (IVR) gets a 200 with
the PBX's offer (`MediaBridge.local_offer`) and the answer comes in the ACK: the applications wait for it
(`media_ready`); an ACK without an acceptable answer ends the call with BYE. Early media cannot be offered in
an unreliable 183 (no PRACK here), so such a caller gets a 183 without SDP and the PBX answers when an
application needs media.

This module knows nothing of authentication or of how targets are found: the `B2BUA` gives it both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pbx.b2bua.bridge import CallSide, music_on_hold
from pbx.b2bua.dialing import Dialing
from pbx.b2bua.leg import OutboundLeg
from pbx.b2bua.media import MediaBridge, accepted_audio, parse_sdp
from pbx.dialplan import Action, DialplanError, DialplanUnavailable, RunState
from pbx.dialplan.interpreter import run_actions
from pbx.sip.errors import SipError
from pbx.sip.interfaces import IServerTransaction
from pbx.sip.message import Request
from pbx.sip.sdp import SessionDescription
from pbx.sip.session import InviteSession
from pbx.sip.session_uas import UasSession
from pbx.store import Cdr

if TYPE_CHECKING:
    from pbx.b2bua.b2bua import B2BUA, Caller


class CallDeadlines:
    """The maximum duration of every answered call of a B2BUA (one length for all), run by one rolling
    `IDelayedCall` instead of one per call: a call held for hours would otherwise keep a `DelayedCall` (and
    its place in the reactor's heap) for nothing, as nearly every call ends long before.

    The calls wait in a dict in the order they were answered, which is the order their time runs out; a call
    that ends leaves it at once (so nothing keeps an ended call). The delayed call is armed only while a call
    waits, for the earliest deadline, and fires that call's `_too_long`.
    """

    __slots__ = ("_call", "_calls", "_clock", "duration")

    def __init__(self, clock: IReactorTime, duration: float) -> None:
        self._clock = clock
        self.duration = duration
        self._calls: dict[Call, float] = {}  # call -> deadline, in answer (= deadline) order
        self._call: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, call: Call) -> None:
        """Hang `call` up (`call._too_long()`) when the duration has passed, unless it leaves first."""
        if call in self._calls:
            return
        self._calls[call] = self._clock.seconds() + self.duration
        if self._call is None:
            self._call = self._clock.callLater(self.duration, self._expire)

    def discard(self, call: Call) -> None:
        """`call` ended: forget its deadline (the delayed call stops when no call waits)."""
        if self._calls.pop(call, None) is not None and not self._calls and self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _expire(self) -> None:
        self._call = None
        calls = self._calls
        now = self._clock.seconds()
        while calls:
            call, deadline = next(iter(calls.items()))
            if deadline > now:
                if self._call is None:
                    self._call = self._clock.callLater(deadline - now, self._expire)
                return
            del calls[call]
            try:
                call._too_long()
            except Exception:
                Call._log.failure("Call {id}: error at its maximum duration", id=call.id)


class Call(Dialing):
    """One call through the PBX.

    Attributes:
        a: the caller's session (side "a").
        b: the callee's session once a leg answered (side "b"), else None.
    """

    # One per call, held for its whole length: no instance dict (legs and bridges keep weak references).
    __slots__ = (
        "__weakref__",
        "_answer_pending",
        "_caller_sdp",
        "_cdr",
        "_early_sent",
        "_media_waiters",
        "_status",
        "a",
        "answered_at",
        "answered_by",
        "b2bua",
        "caller",
        "cause",
        "clock",
        "declined",
        "dialed",
        "endpoint",
        "features",
        "hangup_by",
        "invite",
        "legs",
        "moh",
        "own_sdp",
        "referred_by",
        "released",
        "result",
        "run_state",
        "started_at",
        "transfer",
        "txn",
        "vars",
    )

    _log = Logger()

    def __init__(
        self,
        b2bua: B2BUA,
        transaction: IServerTransaction,
        invite: Request,
        caller: Caller,
        *,
        session: InviteSession | None = None,
    ) -> None:
        self.b2bua = b2bua
        self.clock = b2bua.clock
        self.txn = transaction
        self.invite = invite
        self.caller = caller
        self.id = invite.call_id or ""
        self.dialed = getattr(invite.uri, "user", None) or ""
        if session is None:
            flow = transaction.flow
            target = (flow.transport.lower(), flow.remote_address[0], flow.remote_address[1])
            self.a = UasSession(
                b2bua.stack,
                transaction,
                CallSide(self, "a"),
                target=target,
                **b2bua.session_options,
            )
        else:  # a transfer: a session already answered (`pbx.b2bua.transfer`) becomes side "a"
            session.listener = CallSide(self, "a")
            self.a = session  # type: ignore[assignment]  # only InviteSession methods once answered
        self.b: InviteSession | None = None
        self.media: MediaBridge | None = None
        self.legs: list[OutboundLeg] = []
        self.winner: OutboundLeg | None = None
        self.vars: dict[str, str] = {}
        self.result: str | None = None
        self.run_state = RunState()
        self.declined = False
        self.ended = False
        self.answered_at: float | None = None
        self.started_at = self.clock.seconds()
        self.cause = ""
        self.hangup_by = "pbx"
        self._status = 0
        self.endpoint: Any = None  # the PBX's own media on leg "a" (pbx.apps: IVR), or None
        self.own_sdp: bytes | None = None  # our SDP towards the caller, once the PBX is its media end
        self.offer_sdp: SessionDescription | None = None  # the caller's offer, parsed once
        self._early_sent = False
        self._answer_pending = False  # our 200 carried an offer (late offer): the answer comes in the ACK
        self._on_answer: Callable[[bytes], None] | None = None  # takes the answer the caller's ACK brings
        self._media_waiters: tuple[Deferred[bool], ...] = ()
        self._caller_sdp: bytes | None = None  # the caller's answer to that offer, once it came
        self.moh: dict[str, Any] = {}  # side -> music-on-hold endpoint on that side's relay leg
        self.referred_by = ""  # the transferor's extension when this call routes a transferred party
        self.released = ""  # the side whose session a transfer or pickup moved to another call
        self.transfer: Any = None  # told how a transfer's routing goes (`pbx.b2bua.transfer`), or None
        self.answered_by = ""  # who answered when no leg did (a pickup)
        self.features: Any = None  # watches key presses for in-call codes (`pbx.b2bua.dtmf_transfer`)
        self._cdr: Cdr | None = None  # the record as the call ended (the store and the observers share it)
        self._init_dialing()

    # -- what the applications see (pbx.apps.base.AppCall) ----------------------------------------------

    @property
    def tenant(self) -> str:
        return self.caller.tenant

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def source(self) -> str:
        """The IP address the caller's INVITE came from (mailbox access counts wrong PINs against it)."""
        return str(self.txn.flow.remote_address[0])

    @property
    def final_sent(self) -> bool:
        """The caller's INVITE has its final response."""
        return self.answered_at is not None or self.a.final_sent

    @property
    def local_tag(self) -> str:
        return self.a.local_tag

    @property
    def callee_extension(self) -> str:
        return self.winner.extension if self.winner is not None else self.answered_by

    def session_of(self, side: str) -> InviteSession | None:
        """The session of `side` while it belongs to this call (None once a transfer moved it away)."""
        if side == self.released:
            return None
        return self.a if side == "a" else self.b

    @property
    def local_sdp(self) -> bytes | None:
        """Our SDP towards the caller once the media is agreed (None while our offer awaits its answer)."""
        return None if self._answer_pending else self.own_sdp

    def media_ready(self) -> Deferred[bool]:
        """Fires True once the caller's media is agreed (at once, unless our 200 carried an offer whose
        answer the ACK has yet to bring), False when the call ends first or the answer is unacceptable."""
        if self.ended:
            return succeed(False)
        if not self._answer_pending:
            return succeed(True)
        waiter: Deferred[bool] = Deferred()
        self._media_waiters += (waiter,)
        return waiter

    def _media_agreed(self, agreed: bool) -> None:
        waiters, self._media_waiters = self._media_waiters, ()
        for waiter in waiters:
            waiter.callback(agreed)

    def media_leg(self) -> Any:
        """The caller's relay leg (where the PBX's own media is attached), or None before any."""
        if self.media is None:
            return None
        return self.media.srtp.endpoint_leg("a", self.media.session.leg("a"))  # through SRTP when it is

    # -- running the dialplan ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.invite.body:  # RFC 3261 13.2.1: a bad offer is refused before any action runs
                self.offer_sdp = parse_sdp(self.invite.body, self.invite.headers.get("Content-Type"))
            await run_actions(self)
        except DialplanUnavailable:  # the engine could not read a template now (logged once there)
            self._fail(503, "Dialplan Unavailable", (("Retry-After", "5"),))
            return
        except DialplanError as e:
            self._log.error("Dialplan error for call {id}: {e}", id=self.id, e=str(e))
            self._fail(500, "Dialplan Error")
            return
        except SipError as e:
            self._fail(e.status, e.reason, e.headers)
            return
        except Exception:
            self._log.failure("Call {id} failed", id=self.id)
            self._fail(500)
            return
        if self.ended or self.answered_at is not None:
            if self.b is None and not self.ended:
                self.hangup("pbx")  # the PBX answered and the dialplan is done
            return
        if not self.final_sent:
            self.reject(self._failure_status())

    def _fail(self, status: int, reason: str | None = None, headers: Any = ()) -> None:
        """Reject the call, or hang it up once answered (a 200 can no longer be taken back)."""
        self._status = self._status or status
        if self.answered_at is not None:
            self.hangup("pbx")
        else:
            self.reject(status, reason, headers)

    def _failure_status(self, action: Action | None = None) -> int:
        """How to reject the caller: `hangup CODE`, else by the last dial (a declined call stays a 603)."""
        if (action is None or not action.args) and self.declined:
            return 603
        if (action is None or not action.args) and self.dial_status:
            return self.dial_status  # a trunk dial's 4xx (or the PBX's own 503/488) for the caller
        return self.run_state.hangup_status(action)

    # -- the dialplan interpreter's host (pbx.dialplan.interpreter.ActionHost) ----------------------------

    @property
    def connected(self) -> bool:
        """Bridged to a callee: the dialplan's actions are over."""
        return self.b is not None

    @property
    def variables(self) -> dict[str, str]:
        return self.vars

    def render(self, template: str, digits: str | None) -> list[Action]:
        return self.b2bua.render(self, template, digits=digits)

    def starting(self, action: Action) -> None:
        """Tell the observers (the call trace: `pbx.b2bua.trace`); a live call logs one line when it ends."""
        if self.b2bua.observers:
            self.b2bua.observers.emit("action_started", self, action)

    async def run_dial(self, action: Action) -> str:
        result = await self.dial(action)
        if result != "cancelled" and not self.ended:
            self.declined = result == "declined"
            self.result = "busy" if self.declined else result
        return result

    async def run_app(self, action: Action) -> str:
        if action.name == "answer" and "answer" not in self.b2bua.apps:
            self.answer_locally()
            await self.media_ready()
            return "answered"
        return await self._app(action)

    def run_hangup(self, action: Action) -> None:
        # A code-less hangup after a dial reports how the dial ended (busy, noanswer ...).
        self.cause = self.run_state.result if not action.args and self.run_state.result else "hangup"
        if self.answered_at is not None:
            self._status = self._status or self._failure_status(action)
            self.hangup("pbx")
        else:
            self.reject(self._failure_status(action))

    async def _app(self, action: Action) -> str:
        """Run the application of an action (pbx.apps, plugged in by pbx/tap.py); its result string."""
        app = self.b2bua.apps.get(action.name)
        if app is None:
            raise DialplanError(f"action {action.name!r} is not available", action.source, action.line)
        if self.transfer is not None and action.name != "pickup":
            self.transfer.connected(self)  # an application took the transferred party (park, IVR ...)
        return str(await app(self, action))

    def context(self) -> Mapping[str, Any]:
        """The dialplan context of this call (docs/dialplan.md)."""
        return self.b2bua.context_for(self)

    # -- answering the caller ------------------------------------------------------------------------------

    def _answer_caller(self, body: bytes) -> None:
        self.answered_at = self.clock.seconds()
        self.a.answer(body)
        self.b2bua.deadlines.add(self)
        if self.b2bua.observers:
            self.b2bua.observers.emit("call_answered", self)
        # Both INVITEs stay with the call for its length; what was parsed of them served the set-up: their
        # header fields kept as one string each (~2 KB a call less), unpacked if ever read again.
        self.invite.headers.pack()
        if self.winner is not None and self.winner.invite is not None:
            self.winner.invite.headers.pack()

    def answer_locally(self) -> None:
        """The `answer` action: the PBX itself answers (media comes from apps; without one, silence)."""
        if self.final_sent:
            return
        self._answer_caller(self._make_local_sdp())
        if self._answer_pending:
            self._on_answer = self._local_answer_received

    def early_media(self) -> bool:
        """`183 Session Progress` with our SDP (early media: the PBX plays before or without answering);
        True when the caller can hear the PBX before an answer. A caller that sent no offer gets a 183
        without SDP and False: an offer in an unreliable 183 is not allowed (RFC 3261 13.2.1, RFC 3262)."""
        if self.final_sent:
            return False
        if not self.invite.body:
            if not self._early_sent:
                self._early_sent = True
                self._send_progress(b"")
            return False
        if not self._early_sent:
            body = self._make_local_sdp()
            self._early_sent = True
            self._send_progress(body)
        return True

    def _send_progress(self, body: bytes) -> None:
        self.a.provisional(183, body, reason="Session Progress")

    def _make_local_sdp(self) -> bytes:
        """Our SDP with relay leg "a" as the PBX's own media (made once): the answer to the caller's offer,
        or, when its INVITE had none, our offer (`_answer_pending` until the ACK brings the answer)."""
        if self.own_sdp is None:
            if self.media is None:
                self.media = self._media_bridge()
            if self.invite.body:
                self.own_sdp = self.b2bua.local_answer(self, self.invite.body, self.offer_sdp)
            else:
                self.own_sdp = self.media.local_offer("a")
                self._answer_pending = True
        return self.own_sdp

    def _local_answer_received(self, body: bytes) -> None:
        """The caller's ACK to our 200 that carried an offer: its answer sets up the media, or the call
        ends with BYE when there is none or none the PBX can use (RFC 3261 13.2.1, RFC 3264 6)."""
        self._answer_pending = False
        try:
            agreed = self._agree(body)
        except SipError as e:
            self._log.warn(
                "Call {id}: the ACK has no usable SDP answer ({reason}): BYE", id=self.id, reason=e.reason
            )
            self.hangup("pbx")
            return
        self.own_sdp, self._caller_sdp = agreed, body
        self._media_agreed(True)

    def _agree(self, body: bytes) -> bytes:
        """Our offer cut down to the formats of the caller's answer, in the answer's order (what the
        endpoint then speaks); the relay leg learns where the caller's media goes.

        Raises:
            SipError: no answer, a malformed one, or one accepting neither PCMU nor PCMA.
        """
        assert self.own_sdp is not None and self.media is not None
        if not body:
            raise SipError(488, "No SDP")
        audio = accepted_audio(parse_sdp(body))
        ours = SessionDescription.parse(self.own_sdp)
        offered = ours.media[0]
        kept = [f for f in audio.formats if f in offered.formats] if audio is not None else []
        if not any(f in ("0", "8") for f in kept):
            raise SipError(488, "No Acceptable Codec")
        self.media.forward("a", body, is_offer=False)
        return ours.with_media((offered.with_formats(kept),)).to_bytes()

    def refresh_local(self, offer: bytes) -> bytes:
        """A re-INVITE or UPDATE from the caller while the PBX is its media end (IVR): learn where its media
        now is (from `offer`, when it has one) and answer with the same SDP (same codec, same port; a
        session refresh or a moved phone)."""
        assert self.own_sdp is not None
        if offer and self.media is not None:
            self.media.forward("a", offer, is_offer=True)  # moves leg a's remote; the rest is unused
        return self.own_sdp

    def answer_in_ack(self, side: str, body: bytes) -> None:
        """The caller's ACK brought the answer to the offer in our 200 (late offer)."""
        forward, self._on_answer = self._on_answer, None
        if forward is not None and side == "a":
            forward(body)

    def update_hold(self, held: str, offer: bytes, answer: bytes) -> None:
        """After a re-INVITE from the other side: music on hold for `held` while it is held, none after."""
        music_on_hold(self, held, offer, answer)

    def stop_moh(self, side: str) -> None:
        endpoint = self.moh.pop(side, None)
        if endpoint is not None:
            endpoint.close()
            if self.media is not None:
                self.media.session.leg(side).detach()

    def _close_endpoint(self) -> None:
        """Stop the PBX's own media on leg "a" (the relay carries the caller's audio again)."""
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            endpoint.close()
            leg = self.media_leg()
            if leg is not None:
                leg.detach()

    def reject(self, status: int, reason: str | None = None, headers: Any = ()) -> None:
        """Answer the caller's INVITE with a final failure and end the call."""
        if not self.final_sent:
            self._status = status
            self.a.reject(status, reason, headers)
        for leg in self.legs:
            leg.cancel()
        self._end(self.cause or (self.result or "failed"))

    # -- the sessions' ends ------------------------------------------------------------------------------

    def side_terminated(self, side: str, reason: str) -> None:
        """The session of one side ended: the caller cancelled, hung up (BYE, also before the answer), or
        a session ended on its own (no ACK, no answer in the ACK, session expired, dialog gone): the other
        side is hung up. What the call ended itself ("bye sent", "rejected") changes nothing."""
        if self.ended or reason in ("bye sent", "rejected"):
            return
        if side == "a" and not self.answered:  # CANCEL, or a BYE in the early dialog (RFC 3261 15.1.2)
            self.cause = "cancelled"
            self.hangup_by = "caller"
            self._status = 487
            for leg in self.legs:
                leg.cancel()
            self._end("cancelled")  # ends the call first, then finishes the dial: nothing more may ring
            return
        if reason == "bye received":
            self.hangup_by = "caller" if side == "a" else "callee"
            self._hang_up_sides()
            self._end("normal")
            return
        if reason == "no answer in ACK":  # our 200 carried an offer (late offer) and the ACK no answer
            self._log.warn("Call {id}: the ACK has no usable SDP answer (No SDP): BYE", id=self.id)
        else:
            self._log.warn(
                "Call {id}: {side} side ended ({reason}): BYE", id=self.id, side=side, reason=reason
            )
        self.hangup("pbx")

    # -- ending ------------------------------------------------------------------------------------------

    def hangup(self, by: str) -> None:
        """End an answered call from the PBX's side: BYE to both."""
        if self.ended:
            return
        self.hangup_by = by
        self._hang_up_sides()
        self._end("normal" if by != "pbx" else "pbx")

    def _hang_up_sides(self) -> None:
        """BYE to each side still up; a callee's 2xx whose ACK waited for the caller's answer is ACKed
        first (without one)."""
        if self.transfer is not None:
            self.transfer.hanging_up(self)  # a failed blind transfer gives the transferee back
        winner = self.winner
        if winner is not None and winner.awaiting_answer:
            winner.awaiting_answer = False
            self._on_answer = None
            winner.send_ack(None)
        a, b = self.session_of("a"), self.session_of("b")
        for session in (a, b):
            if session is not None:
                listener = session.listener
                if isinstance(listener, CallSide):
                    listener.flush()
        if self.answered and a is not None:
            a.bye()
        if b is not None:
            b.bye()

    def _too_long(self) -> None:
        self._log.info("Call {id} reached the maximum duration", id=self.id)
        if self.b2bua.observers:
            self.b2bua.observers.emit("timer_expired", self, "maximum duration")
        self.hangup("pbx")

    def _end(self, cause: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.cause = self.cause or cause
        self._stop_ringing()
        self.b2bua.deadlines.discard(self)
        for leg in self.legs:
            if leg is not self.winner:
                leg.cancel()
        self._close_endpoint()
        for side in list(self.moh):
            self.stop_moh(side)
        if self.media is not None:
            for side in ("a", "b"):
                stats = self.media.srtp.stats(side)
                if stats is not None and (stats.rtp_dropped or stats.rtcp_dropped):
                    self._log.warn(
                        "Call {id}: SRTP from side {side} dropped {rtp} RTP and {rtcp} RTCP packets "
                        "({replayed} replayed, {forged} failing authentication)",
                        id=self.id, side=side, rtp=stats.rtp_dropped, rtcp=stats.rtcp_dropped,
                        replayed=stats.replayed, forged=stats.auth_failed,
                    )  # fmt: skip
            if self.b2bua.observers:  # the relay's counters, before it closes (pbx.b2bua.trace)
                self.b2bua.observers.emit("media_closing", self, self.media)
            self.media.close()
        self._finish_dial("cancelled")
        self._media_agreed(False)
        if self.features is not None:
            self.features.close()
        if self.transfer is not None:
            self.transfer.ended(self)
        self.b2bua.call_ended(self)

    def cdr(self) -> Cdr:
        """The call's record: as it is now while the call is up; once it ended, as it was at its end (made
        once: the store, the log line and every observer of `call_ended` read the same one)."""
        if self._cdr is not None:
            return self._cdr
        legs = ",".join(
            f"{leg.extension}@{leg.target.uri}={leg.status or (487 if leg.cancel_wanted else 0)}"
            for leg in self.legs
        )
        status = 200 if self.answered_at is not None else self._status
        cdr = Cdr(
            call_id=self.id,
            tenant=self.caller.tenant,
            caller=self.caller.extension or f"trunk:{self.caller.trunk}/{self.caller.number}",
            dialed=self.dialed,
            answered_by=self.callee_extension,
            start=self.started_at,
            answer=self.answered_at,
            end=self.clock.seconds(),
            cause=self.cause or "normal",
            status=status,
            hangup_by=self.hangup_by,
            legs=legs,
        )
        if self.ended:
            self._cdr = cdr
        return cdr
