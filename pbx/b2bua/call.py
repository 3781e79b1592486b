"""A call: the caller's INVITE, the dialplan's actions, the outbound legs, and the bridge once answered.

A `Call` starts when an authenticated INVITE arrives. It renders the tenant's dialplan and runs the actions
in order (`docs/dialplan.md` has the protocol): `dial` forks an `OutboundLeg` to every registered contact of
every target at once (or one target after another), relays the first 180/183 (a 183 with its SDP rewritten
to the relay), and takes the first 2xx: the other forks are CANCELled and the caller gets the 200. A dial
that ends without an answer sets `result` (busy, noanswer, unavailable, failed) for the next actions; when the
actions run out, the caller gets the failure (486, 480, ...). Once answered, the call is two dialogs, side
"a" and side "b": BYE on one ends the other, re-INVITE/UPDATE/INFO are passed across with their SDP rewritten,
and every 2xx we send is retransmitted until its ACK arrives (RFC 3261 13.3.1.4). The CDR is written when the
call ends.

Offer/answer (RFC 3261 13.2.1, RFC 3264): the caller's offer is checked before any action runs (`parse_sdp`:
400, 413 or 488, never a 500). An INVITE without an offer that the PBX answers itself (IVR) gets a 200 with
the PBX's offer (`MediaBridge.local_offer`) and the answer comes in the ACK: the applications wait for it
(`media_ready`); an ACK without an acceptable answer ends the call with BYE. Early media cannot be offered in
an unreliable 183 (no PRACK here), so such a caller gets a 183 without SDP and the PBX answers when an
application needs media. A callee's 2xx without a usable answer (or, for an INVITE without offer, without
a usable offer) is ACKed and BYEd and counts as a failed target: the other forks ring on.

This module knows nothing of authentication or of how targets are found: the `B2BUA` gives it both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from pbx.b2bua.leg import OutboundLeg, send_in_dialog
from pbx.b2bua.media import MediaBridge, accepted_audio, parse_sdp
from pbx.b2bua.peer import Peer
from pbx.dialplan import Action, DialplanError, RunState
from pbx.dialplan.interpreter import run_actions
from pbx.media.dtmf import parse_dtmf_info
from pbx.sip.dialog import Dialog
from pbx.sip.errors import SipError, SipParseError
from pbx.sip.headers import quote_string
from pbx.sip.interfaces import IClientTransactionUser, IServerTransaction
from pbx.sip.invite import Uas2xxRetransmitter
from pbx.sip.message import Request, Response
from pbx.sip.sdp import SdpError, SessionDescription
from pbx.store import Cdr

if TYPE_CHECKING:
    from pbx.b2bua.b2bua import B2BUA, Caller

# Headers passed from one side's in-dialog request to the other's (everything else is the PBX's own).
PASSED_HEADERS = ("Content-Type", "Content-Disposition", "Event", "Subscription-State", "Session-Expires")


def is_hold_offer(body: bytes) -> bool:
    """Whether an SDP offer puts its first audio stream on hold: a=sendonly, a=inactive or c=0.0.0.0."""
    try:
        sdp = SessionDescription.parse(body)
    except SdpError:
        return False
    for media in sdp.media:
        if media.media.lower() == "audio" and media.port:
            return sdp.direction_for(media) in ("sendonly", "inactive") or sdp.on_hold_for(media)
    return False


def restrict_offer(offer: bytes, answer: bytes) -> bytes:
    """The caller's offer with its first audio stream cut down to the formats of our answer to it, so a
    callee put through later picks a codec the caller was told about (no re-INVITE to the caller)."""
    try:
        theirs, ours = SessionDescription.parse(offer), SessionDescription.parse(answer)
    except SdpError:
        return offer
    accepted = next((m for m in ours.media if m.media.lower() == "audio" and m.port), None)
    if accepted is None:
        return offer
    media = list(theirs.media)
    for i, m in enumerate(media):
        if m.media.lower() == "audio" and m.port:
            kept = [f for f in m.formats if f in accepted.formats]
            if kept:
                media[i] = m.with_formats(kept)
            break
    return theirs.with_media(tuple(media)).to_bytes()


def classify(statuses: list[int]) -> str:
    """The dial result of the final statuses of every leg, none of them 2xx (docs/dialplan.md: the first
    matching row wins; 0 stands for a transport failure). "declined" (every leg 603) counts as busy for the
    dialplan, but the caller then gets the 603 itself."""
    if statuses and all(s in (603, 607) for s in statuses):
        return "declined"
    if any(s in (486, 600, 603) for s in statuses):
        return "busy"
    if any(s in (408, 480, 487) for s in statuses):
        return "noanswer"
    if any(s in (0, 404, 410, 484, 604) for s in statuses):
        return "unavailable"
    return "failed"


class Call:
    """One call through the PBX."""

    _log = Logger()

    def __init__(
        self, b2bua: B2BUA, transaction: IServerTransaction, invite: Request, caller: Caller
    ) -> None:
        self.b2bua = b2bua
        self.clock = b2bua.clock
        self.txn = transaction
        self.invite = invite
        self.caller = caller
        self.id = invite.call_id or ""
        self.dialed = getattr(invite.uri, "user", None) or ""
        self.local_tag = b2bua.new_tag()
        self.media: MediaBridge | None = None
        self.legs: list[OutboundLeg] = []
        self.winner: OutboundLeg | None = None
        self.a: Peer | None = None
        self.b: Peer | None = None
        self.vars: dict[str, str] = {}
        self.result: str | None = None
        self.run_state = RunState()
        self.declined = False
        self.final_sent = False
        self.ended = False
        self.answered_at: float | None = None
        self.started_at = self.clock.seconds()
        self.cause = ""
        self.hangup_by = "pbx"
        self._relayed: set[int] = set()
        self._dial_done: Deferred[str] | None = None
        self._ring_timer: IDelayedCall | None = None
        self._max_timer: IDelayedCall | None = None
        self._last_statuses: list[int] = []
        self._on_end: list[Callable[[Call], None]] = []
        self._contact: str | None = None
        self.endpoint: Any = None  # the PBX's own media on leg "a" (pbx.apps: IVR), or None
        self._local_sdp: bytes | None = None  # our SDP answer to the caller's offer, once we are its media
        self._early_sent = False
        self._answer_pending = False  # our 200 carried an offer (late offer): the answer comes in the ACK
        self._media_waiters: list[Deferred[bool]] = []
        self._caller_sdp: bytes | None = None  # the caller's answer to that offer, once it came
        self._moh: dict[str, Any] = {}  # side -> music-on-hold endpoint on that side's relay leg

    # -- what the applications see (pbx.apps.base.AppCall) ----------------------------------------------

    @property
    def tenant(self) -> str:
        return self.caller.tenant

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def local_sdp(self) -> bytes | None:
        """Our SDP towards the caller once the media is agreed (None while our offer awaits its answer)."""
        return None if self._answer_pending else self._local_sdp

    def media_ready(self) -> Deferred[bool]:
        """Fires True once the caller's media is agreed (at once, unless our 200 carried an offer whose
        answer the ACK has yet to bring), False when the call ends first or the answer is unacceptable."""
        if self.ended:
            return succeed(False)
        if not self._answer_pending:
            return succeed(True)
        waiter: Deferred[bool] = Deferred()
        self._media_waiters.append(waiter)
        return waiter

    def _media_agreed(self, agreed: bool) -> None:
        waiters, self._media_waiters = self._media_waiters, []
        for waiter in waiters:
            waiter.callback(agreed)

    def media_leg(self) -> Any:
        """The caller's relay leg (where the PBX's own media is attached), or None before any."""
        return self.media.session.leg("a") if self.media is not None else None

    # -- running the dialplan ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.invite.body:  # RFC 3261 13.2.1: a bad offer is refused before any action runs
                parse_sdp(self.invite.body, self.invite.headers.get("Content-Type"))
            await run_actions(self)
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
            if self.a is not None and self.b is None and not self.ended:
                self.hangup("pbx")  # the PBX answered and the dialplan is done
            return
        if not self.final_sent:
            self.reject(self._failure_status())

    def _fail(self, status: int, reason: str | None = None, headers: Any = ()) -> None:
        """Reject the call, or hang it up once answered (a 200 can no longer be taken back)."""
        if self.answered_at is not None:
            self.hangup("pbx")
        else:
            self.reject(status, reason, headers)

    def _failure_status(self, action: Action | None = None) -> int:
        """How to reject the caller: `hangup CODE`, else by the last dial (a declined call stays a 603)."""
        if (action is None or not action.args) and self.declined:
            return 603
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
        """Nothing to trace: a live call logs one line when it ends."""

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
            self.hangup("pbx")
        else:
            self.reject(self._failure_status(action))

    async def _app(self, action: Action) -> str:
        """Run the application of an action (pbx.apps, plugged in by pbx/tap.py); its result string."""
        app = self.b2bua.apps.get(action.name)
        if app is None:
            raise DialplanError(f"action {action.name!r} is not available", action.source, action.line)
        return str(await app(self, action))

    def context(self) -> Mapping[str, Any]:
        """The dialplan context of this call (docs/dialplan.md)."""
        return self.b2bua.context_for(self)

    # -- dialing -----------------------------------------------------------------------------------------

    async def dial(self, action: Action) -> str:
        targets = list(action.args)
        timeout = float(action.options.get("timeout") or self.b2bua.ring_timeout)
        if action.options.get("strategy") == "sequential":
            ringtime = float(action.options.get("ringtime") or timeout / max(1, len(targets)))
            result = "unavailable"
            for target in targets:
                result = await self._dial_once([target], ringtime, action)
                if result in ("answered", "cancelled") or self.ended:
                    return result
            return result
        return await self._dial_once(targets, timeout, action)

    async def _dial_once(self, targets: list[str], timeout: float, action: Action) -> str:
        contacts = self.b2bua.resolve(self, targets)
        if not contacts:
            self._last_statuses = [480]
            return "unavailable"
        if self.media is None:
            self.media = MediaBridge(self.b2bua.relay, self.id, self.b2bua.codecs)
        body = b""
        content_type = None
        offer = self.invite.body or self._caller_sdp  # the caller's offer, or its answer to ours (IVR)
        if offer:
            if self._local_sdp is not None:
                offer = restrict_offer(offer, self._local_sdp)
            body = self.media.forward("a", offer, is_offer=True)
            content_type = "application/sdp"
        callerid = action.options.get("callerid")
        display = callerid if callerid is not None else (self.caller.name or self.invite.from_.display_name)
        domain = self.caller.domain
        from_value = f"<sip:{self.caller.extension}@{domain}>"
        if display:
            from_value = f"{quote_string(display)} {from_value}"
        resolve = self.b2bua.resolve_uri
        legs = [OutboundLeg(self, target, resolve) for target in contacts]
        self.legs.extend(legs)
        done: Deferred[str] = Deferred()
        self._dial_done = done
        self._current = legs
        for leg in legs:
            try:
                leg.start(from_value, body, content_type)
            except Exception as e:
                self._log.warn("Could not start a leg to {ext}: {e}", ext=leg.extension, e=e)
                leg.status = 503
        self._ring_timer = self.clock.callLater(timeout, self._ring_timeout)
        if self.endpoint is not None:  # the caller is on the PBX's media: let it hear the ringing
            ringing = f"tone:ringback:{min(600, max(1, math.ceil(timeout)))}"
            self.endpoint.play([ringing], barge_in=False).addErrback(self._log.failure, "Ringback failed")
        self._check_dial_over()
        result = await done
        if self.endpoint is not None and result != "answered":
            self.endpoint.stop()
        if self._ring_timer is not None and self._ring_timer.active():
            self._ring_timer.cancel()
        self._ring_timer = None
        return result

    def _ring_timeout(self) -> None:
        """Nobody answered in time: stop the ringing legs; a leg that said busy still makes it "busy"."""
        self._ring_timer = None
        statuses = [0 if leg.transport_failed else (leg.status or 408) for leg in self._current]
        for leg in self._current:
            leg.cancel()
        self._finish_dial(classify(statuses))

    def _finish_dial(self, result: str) -> None:
        done, self._dial_done = self._dial_done, None
        if done is not None:
            done.callback(result)

    def _check_dial_over(self) -> None:
        if self._dial_done is None or self.winner is not None:
            return
        statuses = [leg.status for leg in self._current]
        if all(statuses):
            statuses = [0 if leg.transport_failed else leg.status for leg in self._current]
            self._last_statuses = statuses
            self._finish_dial(classify(statuses))

    # -- callbacks from legs -----------------------------------------------------------------------------

    def leg_progress(self, leg: OutboundLeg, response: Response) -> None:
        if self.final_sent or self.ended or self.winner is not None or leg not in self._current:
            return
        if self._local_sdp is not None:
            return  # the caller hears the PBX (early media: its ringback), not the callee's provisional
        status = response.status
        body = b""
        if status == 183 and response.body and self.media is not None and self.invite.body:
            try:
                body = self.media.forward("b", response.body, is_offer=False)
            except SipError:
                body = b""
        if status in self._relayed and not body:
            return
        self._relayed.add(status)
        provisional = self.invite.response(status, response.reason, to_tag=self.local_tag)
        if body:
            provisional.headers.add("Content-Type", "application/sdp")
            provisional.body = body
        provisional.headers.add("Contact", self._our_contact())
        self.txn.respond(provisional)

    def leg_failed(self, leg: OutboundLeg, status: int, response: Response | None) -> None:
        self._check_dial_over()

    def leg_answered(self, leg: OutboundLeg, response: Response) -> bool:
        """The first 2xx of a leg; False when the call no longer wants it (the leg then hangs up)."""
        rejected = self.final_sent and self.answered_at is None
        if self.winner is not None or self.ended or rejected or leg not in self._current:
            return False
        late_offer = not (leg.invite is not None and leg.invite.body)  # then the 2xx must carry the offer
        try:
            body = self._callee_sdp(response, late_offer)
        except SipError as e:
            # RFC 3264: no usable answer (or offer), no call. ACK and BYE it; the other forks ring on.
            self._log.warn(
                "Call {id}: the 2xx of {ext} has no usable SDP {what} ({reason}): ACK, BYE",
                id=self.id, ext=leg.extension, what="offer" if late_offer else "answer", reason=e.reason,
            )  # fmt: skip
            leg.status = e.status
            leg.send_ack(None)
            leg.send_bye()
            self._check_dial_over()
            return True
        self.winner = leg
        for other in self._current:
            if other is not leg:
                other.cancel()
        assert leg.dialog is not None
        self.b = Peer("b", leg.dialog, leg.destination, extension=leg.extension)
        self.b.credentials, self.b.digests = leg.target.credentials, leg.digests
        self.b2bua.track(self, self.b)
        if not late_offer:
            leg.send_ack(None)
        if self._local_sdp is not None:
            # The caller already has our SDP (an IVR answered it, or early media): hand its relay leg back
            # to the relay; the callee's codec was chosen among the ones the caller was told about.
            self._close_endpoint()
            if self.answered_at is None:
                self._answer_caller(self._local_sdp)
        else:
            self._answer_caller(body)
        if late_offer:
            assert self.a is not None

            leg.awaiting_answer = True  # 2xx retransmissions wait for the answer the caller's ACK brings

            def forward_answer(ack_body: bytes) -> None:
                leg.awaiting_answer = False
                try:
                    answer = self._caller_answer(ack_body)
                except SipError as e:
                    self._log.warn(
                        "Call {id}: the caller's ACK has no usable SDP answer ({reason}): BYE",
                        id=self.id, reason=e.reason,
                    )  # fmt: skip
                    leg.send_ack(None)
                    self.hangup("pbx")
                    return
                leg.send_ack(answer, "application/sdp")

            self.a.pending_ack_body = forward_answer
        self._finish_dial("answered")
        return True

    def _callee_sdp(self, response: Response, late_offer: bool) -> bytes:
        """The SDP of a callee's 2xx rewritten for the caller: its answer to our offer, or its offer when
        our INVITE had none (`late_offer`).

        Raises:
            SipError: no body, not SDP, malformed, or no audio stream with a codec in it.
        """
        if not response.body:
            raise SipError(488, "No SDP")
        sdp = parse_sdp(response.body, response.headers.get("Content-Type"))
        if accepted_audio(sdp) is None:
            raise SipError(488, "No Audio Accepted")
        if self.media is None:
            self.media = MediaBridge(self.b2bua.relay, self.id, self.b2bua.codecs)
        return self.media.forward("b", response.body, is_offer=late_offer)

    def _caller_answer(self, body: bytes) -> bytes:
        """The caller's answer (in its ACK) to the offer a callee made in its 2xx, rewritten for the callee.

        Raises:
            SipError: no answer, a malformed one, or one without an audio stream.
        """
        if not body or self.media is None:
            raise SipError(488, "No SDP")
        if accepted_audio(parse_sdp(body)) is None:
            raise SipError(488, "No Audio Accepted")
        return self.media.forward("a", body, is_offer=False)

    # -- answering the caller ------------------------------------------------------------------------------

    def _our_contact(self) -> str:
        """Our Contact towards the caller (asked of the stack once per call)."""
        contact = self._contact
        if contact is None:
            flow = self.txn.flow
            contact = self._contact = self.b2bua.stack.contact_for(flow.transport, flow.remote_address[0])
        return contact

    def _answer_caller(self, body: bytes) -> None:
        response = self.invite.response(200, to_tag=self.local_tag)
        contact = self._our_contact()
        response.headers.add("Contact", contact)
        response.headers.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO")
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        self.final_sent = True
        self.answered_at = self.clock.seconds()
        flow = self.txn.flow
        dialog = Dialog.create_uas(self.invite, response, contact)
        destination = (flow.transport.lower(), flow.remote_address[0], flow.remote_address[1])
        self.a = Peer("a", dialog, destination, extension=self.caller.extension)
        self.b2bua.track(self, self.a)
        self.txn.respond(response)
        self._retransmit_2xx(self.a, response)
        self._max_timer = self.clock.callLater(self.b2bua.max_call_duration, self._too_long)

    def answer_locally(self) -> None:
        """The `answer` action: the PBX itself answers (media comes from apps; without one, silence)."""
        if self.final_sent:
            return
        self._answer_caller(self._make_local_sdp())
        if self._answer_pending:
            assert self.a is not None
            self.a.pending_ack_body = self._local_answer_received

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
        progress = self.invite.response(183, "Session Progress", to_tag=self.local_tag)
        progress.headers.add("Contact", self._our_contact())
        if body:
            progress.headers.add("Content-Type", "application/sdp")
            progress.body = body
        self.txn.respond(progress)

    def _make_local_sdp(self) -> bytes:
        """Our SDP with relay leg "a" as the PBX's own media (made once): the answer to the caller's offer,
        or, when its INVITE had none, our offer (`_answer_pending` until the ACK brings the answer)."""
        if self._local_sdp is None:
            if self.media is None:
                self.media = MediaBridge(self.b2bua.relay, self.id, self.b2bua.codecs)
            if self.invite.body:
                self._local_sdp = self.b2bua.local_answer(self, self.invite.body)
            else:
                self._local_sdp = self.media.local_offer("a")
                self._answer_pending = True
        return self._local_sdp

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
        self._local_sdp, self._caller_sdp = agreed, body
        self._media_agreed(True)

    def _agree(self, body: bytes) -> bytes:
        """Our offer cut down to the formats of the caller's answer, in the answer's order (what the
        endpoint then speaks); the relay leg learns where the caller's media goes.

        Raises:
            SipError: no answer, a malformed one, or one accepting neither PCMU nor PCMA.
        """
        assert self._local_sdp is not None and self.media is not None
        if not body:
            raise SipError(488, "No SDP")
        audio = accepted_audio(parse_sdp(body))
        ours = SessionDescription.parse(self._local_sdp)
        offered = ours.media[0]
        kept = [f for f in audio.formats if f in offered.formats] if audio is not None else []
        if not any(f in ("0", "8") for f in kept):
            raise SipError(488, "No Acceptable Codec")
        self.media.forward("a", body, is_offer=False)
        return ours.with_media((offered.with_formats(kept),)).to_bytes()

    def _close_endpoint(self) -> None:
        """Stop the PBX's own media on leg "a" (the relay carries the caller's audio again)."""
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            endpoint.close()
            leg = self.media_leg()
            if leg is not None:
                leg.detach()

    def _retransmit_2xx(self, peer: Peer, response: Response) -> None:
        flow = self.txn.flow if peer.side == "a" else None

        def send() -> None:
            if flow is not None:
                self.b2bua.stack.send_response(response, flow)

        def timeout() -> None:
            peer.pending_2xx = None
            self._log.warn("No ACK for the 200 of call {id}: hanging up", id=self.id)
            self.hangup("pbx")

        peer.pending_2xx = Uas2xxRetransmitter(
            self.clock,
            self.b2bua.stack.timers,
            send,
            timeout,
            reliable=bool(flow is not None and flow.reliable),
        )

    def reject(self, status: int, reason: str | None = None, headers: Any = ()) -> None:
        """Answer the caller's INVITE with a final failure and end the call."""
        if not self.final_sent:
            self.final_sent = True
            response = self.invite.response(status, reason, to_tag=self.local_tag)
            for name, value in headers:
                response.headers.add(name, value)
            self.txn.respond(response)
            self._status = status
        for leg in self.legs:
            leg.cancel()
        self._end(self.cause or (self.result or "failed"))

    # -- caller CANCEL, BYE, in-dialog requests ----------------------------------------------------------

    def caller_cancelled(self) -> None:
        if self.final_sent or self.ended:
            return
        self.cause = "cancelled"
        self.hangup_by = "caller"
        self.final_sent = True
        self._status = 487
        self.txn.respond(self.invite.response(487, to_tag=self.local_tag))
        for leg in self.legs:
            leg.cancel()
        self._end("cancelled")  # ends the call first, then finishes the dial: nothing more may ring

    def peer_request(self, peer: Peer, txn: IServerTransaction, request: Request) -> None:
        """An in-dialog request from one side: BYE ends the call; others are passed across."""
        other = self.b if peer is self.a else self.a
        method = request.method
        if method == "BYE":
            txn.respond(request.response(200))
            self.hangup_by = "caller" if peer.side == "a" else "callee"
            self._bye(other)
            self._end("normal")
            return
        if method == "INFO" and other is None and not self.ended:
            # The PBX is the caller's media end (IVR): a key press by SIP INFO goes to it, never onward.
            digit = parse_dtmf_info(request.headers.get("Content-Type") or "", request.body)
            if digit is not None and self.endpoint is not None:
                self.endpoint.inject_digit(digit, "info")
            txn.respond(request.response(200))
            return
        if method in ("INVITE", "UPDATE") and other is None and not self.ended and self._local_sdp:
            self._refresh_local(peer, txn, request)
            return
        if other is None or self.ended:
            raise SipError(481)
        if method == "INVITE" and peer.pending_2xx is not None:
            raise SipError(491)  # our own re-INVITE glare (RFC 3261 14.1)
        self._relay(peer, other, txn, request)

    def _relay(self, source: Peer, target: Peer, txn: IServerTransaction, request: Request) -> None:
        body = request.body
        content_type = request.headers.get("Content-Type")
        is_sdp = bool(body) and (content_type or "").lower().startswith("application/sdp")
        if is_sdp and self.media is not None:
            body = self.media.forward(source.side, body, is_offer=True)
        outgoing = target.dialog.create_request(request.method, body=body, content_type=content_type)
        for name in PASSED_HEADERS:
            if name != "Content-Type":
                for value in request.headers.get_all(name):
                    outgoing.headers.add(name, value)
        transport, host, port = target.destination
        self.b2bua.stack.send_request(
            outgoing, _Relay(self, source, target, txn, outgoing), transport, host, port
        )

    def response_relayed(
        self, source: Peer, target: Peer, txn: IServerTransaction, sent: Request, response: Response
    ) -> None:
        """The response of `target` to a request we relayed from `source`: pass it back."""
        if response.status < 101:
            return
        target.dialog.receive_response(sent, response)
        body = response.body
        content_type = response.headers.get("Content-Type")
        sdp = bool(body) and (content_type or "").lower().startswith("application/sdp")
        if sdp and self.media is not None:
            try:
                body = self.media.forward(target.side, body, is_offer=not sent.body)
            except SipError:
                body = b""
        success = sent.method == "INVITE" and 200 <= response.status < 300
        if success:
            if sent.body or not sdp:
                self._ack_relayed(target, sent, b"", None)
            else:  # the re-INVITE had no offer: the 200 has it, and the answer comes in the ACK of `source`

                def forward_answer(ack_body: bytes) -> None:
                    try:
                        answer = (
                            self.media.forward(source.side, ack_body, is_offer=False) if self.media else b""
                        )
                    except SipError as e:  # no usable answer in the ACK: no session (RFC 3261 13.2.1)
                        self._log.warn(
                            "Call {id}: the ACK has no usable SDP answer ({reason}): BYE",
                            id=self.id,
                            reason=e.reason,
                        )
                        self._ack_relayed(target, sent, b"", None)
                        self.hangup("pbx")
                        return
                    self._ack_relayed(target, sent, answer, "application/sdp" if answer else None)

                source.pending_ack_body = forward_answer
        if success and response.body and txn.request.body:
            self._update_hold(target, txn.request.body, response.body)
        back = txn.request.response(response.status, response.reason)
        if body:
            back.headers.add("Content-Type", content_type or "application/sdp")
            back.body = body
        if sent.method == "INVITE":
            back.headers.add("Contact", str(source.dialog.local_contact))
        txn.respond(back)
        if success:
            self._retransmit_reinvite_2xx(source, back)

    def _refresh_local(self, peer: Peer, txn: IServerTransaction, request: Request) -> None:
        """A re-INVITE or UPDATE from the caller while the PBX is its media end (IVR): learn where its media
        now is and answer with the same SDP (same codec, same port; a session refresh or a moved phone)."""
        if request.method == "INVITE" and peer.pending_2xx is not None:
            raise SipError(491)
        content_type = (request.headers.get("Content-Type") or "").lower()
        if request.body and content_type.startswith("application/sdp") and self.media is not None:
            self.media.forward("a", request.body, is_offer=True)  # moves leg a's remote; the rest is unused
        response = request.response(200)
        response.headers.add("Contact", self._our_contact())
        response.headers.add("Content-Type", "application/sdp")
        response.body = self._local_sdp or b""
        txn.respond(response)
        if request.method == "INVITE":
            self._retransmit_reinvite_2xx(peer, response)

    def _update_hold(self, held: Peer, offer: bytes, answer: bytes) -> None:
        """After a re-INVITE from the other side: music on hold for `held` while it is held, none after."""
        holding = is_hold_offer(offer)
        playing = held.side in self._moh
        music = self.b2bua.hold_music
        if holding and not playing and music is not None and self.media is not None:
            endpoint = music.start(self.tenant, self.media.session.leg(held.side), answer)
            if endpoint is not None:
                self._moh[held.side] = endpoint
                self._log.info("Call {id}: music on hold for {ext}", id=self.id, ext=held.extension)
        elif not holding and playing:
            self._stop_moh(held.side)
            self._log.info("Call {id}: music on hold for {ext} ends", id=self.id, ext=held.extension)

    def _stop_moh(self, side: str) -> None:
        endpoint = self._moh.pop(side, None)
        if endpoint is not None:
            endpoint.close()
            if self.media is not None:
                self.media.session.leg(side).detach()

    def _ack_relayed(self, target: Peer, sent: Request, body: bytes, content_type: str | None) -> None:
        ack = target.dialog.create_ack(sent, body=body, content_type=content_type)
        target.extra["last_ack"] = (sent, body, content_type)
        t, h, p = target.destination
        self.b2bua.stack.send_stateless(ack, t, h, p)

    def reack_relayed(self, target: Peer) -> None:
        """A retransmitted 2xx to a re-INVITE we relayed: the same ACK again, nothing relayed."""
        last = target.extra.get("last_ack")
        if last is not None:
            self._ack_relayed(target, *last)

    def _retransmit_reinvite_2xx(self, peer: Peer, response: Response) -> None:
        if peer.pending_2xx is not None:
            peer.pending_2xx.stop()
            peer.pending_2xx = None
        flow = self.txn.flow

        def send() -> None:
            self.b2bua.stack.send_response(response, flow)

        peer.pending_2xx = Uas2xxRetransmitter(
            self.clock,
            self.b2bua.stack.timers,
            send,
            lambda: setattr(peer, "pending_2xx", None),
            reliable=flow.reliable,
        )

    def peer_ack(self, peer: Peer, ack: Request) -> None:
        if peer.pending_2xx is not None:
            peer.pending_2xx.ack_received()
            peer.pending_2xx = None
        if peer.pending_ack_body is not None:
            forward, peer.pending_ack_body = peer.pending_ack_body, None
            content_type = (ack.headers.get("Content-Type") or "application/sdp").lower()
            forward(ack.body if content_type.startswith("application/sdp") else b"")

    # -- ending ------------------------------------------------------------------------------------------

    def hangup(self, by: str) -> None:
        """End an answered call from the PBX's side: BYE to both."""
        if self.ended:
            return
        self.hangup_by = by
        self._bye(self.a)
        self._bye(self.b)
        self._end("normal" if by != "pbx" else "pbx")

    def _too_long(self) -> None:
        self._max_timer = None
        self._log.info("Call {id} reached the maximum duration", id=self.id)
        self.hangup("pbx")

    def _bye(self, peer: Peer | None) -> None:
        if peer is None or peer.dialog.terminated:
            return
        if peer.pending_2xx is not None:
            peer.pending_2xx.ack_received()
            peer.pending_2xx = None
        send_in_dialog(self.b2bua.stack, peer.dialog, "BYE", peer.destination, peer.credentials, peer.digests)

    def _end(self, cause: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.cause = self.cause or cause
        for timer in (self._ring_timer, self._max_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._ring_timer = self._max_timer = None
        for leg in self.legs:
            if leg is not self.winner:
                leg.cancel()
        for peer in (self.a, self.b):
            if peer is not None and peer.pending_2xx is not None:
                peer.pending_2xx.stop()
                peer.pending_2xx = None
        self._close_endpoint()
        for side in list(self._moh):
            self._stop_moh(side)
        if self.media is not None:
            self.media.close()
        self._finish_dial("cancelled")
        self._media_agreed(False)
        self.b2bua.call_ended(self)

    def cdr(self) -> Cdr:
        legs = ",".join(
            f"{leg.extension}@{leg.target.uri}={leg.status or (487 if leg.cancel_wanted else 0)}"
            for leg in self.legs
        )
        status = 200 if self.answered_at is not None else getattr(self, "_status", 0)
        return Cdr(
            call_id=self.id,
            tenant=self.caller.tenant,
            caller=self.caller.extension,
            dialed=self.dialed,
            answered_by=self.winner.extension if self.winner is not None else "",
            start=self.started_at,
            answer=self.answered_at,
            end=self.clock.seconds(),
            cause=self.cause or "normal",
            status=status,
            hangup_by=self.hangup_by,
            legs=legs,
        )


@implementer(IClientTransactionUser)
class _Relay:
    """The transaction user of a request relayed from one side to the other."""

    def __init__(
        self, call: Call, source: Peer, target: Peer, txn: IServerTransaction, sent: Request
    ) -> None:
        self._call, self._source, self._target, self._txn, self._sent = call, source, target, txn, sent
        self._final = False

    def response_received(self, transaction: object, response: Any) -> None:
        if self._final:
            if 200 <= response.status < 300 and self._sent.method == "INVITE":
                self._call.reack_relayed(self._target)
            return
        if response.status >= 200:
            self._final = True
        try:
            self._call.response_relayed(self._source, self._target, self._txn, self._sent, response)
        except SipParseError:
            self._txn.respond(self._txn.request.response(502))

    def transaction_timeout(self, transaction: object) -> None:
        self._txn.respond(self._txn.request.response(408))

    def transport_error(self, transaction: object, reason: str) -> None:
        self._txn.respond(self._txn.request.response(503))
