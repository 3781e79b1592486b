"""The `dial` action of a call: forking, ringing, and the first 2xx that wins (RFC 3261 13.2, 9.1; RFC 3264).

`dial` forks an `OutboundLeg` to every target at once (or one target after another: `strategy=sequential`),
passes the first 180/183 on to the caller (a 183 with its SDP rewritten to the relay), and takes the first
2xx: the other forks are CANCELled, the callee's side becomes a `CalleeSession` and the caller gets the 200. A
dial that ends without an answer returns its result (busy, noanswer, unavailable, failed, declined) from the
final statuses of its legs (`classify`).

A callee's 2xx without a usable answer (or, when our INVITE had no offer, without a usable offer) is ACKed
and BYEd and counts as a failed target: the other forks ring on. When our INVITE had no offer, the callee's
2xx carries it and the answer comes in the caller's ACK, then goes into the callee's ACK.

`Dialing` is mixed into `pbx.b2bua.call.Call`; the legs report to it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from pbx.b2bua.bridge import CallSide
from pbx.b2bua.leg import OutboundLeg
from pbx.b2bua.media import MediaBridge, accepted_audio, parse_sdp
from pbx.b2bua.normalise import display_name, reason_phrase
from pbx.b2bua.srtp_plan import SrtpPolicy, srtp_policy
from pbx.dialplan import Action
from pbx.sip.errors import SipError
from pbx.sip.headers import quote_string
from pbx.sip.message import Response
from pbx.sip.sdp import SdpError, SessionDescription

if TYPE_CHECKING:
    from collections.abc import Callable

    from pbx.b2bua.b2bua import B2BUA, Caller
    from pbx.sip.session import InviteSession
    from pbx.sip.session_uas import UasSession


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


def attempt_status(legs: list[OutboundLeg]) -> tuple[int, bool]:
    """The final status of one failover attempt (its one leg) and whether the PBX refused it itself: 0 for
    a transport error or a ring timeout (the leg was cancelled), 503 when nothing could ring."""
    if not legs:
        return 503, True  # an unknown trunk: nothing rang
    leg = legs[0]
    if leg.transport_failed or (leg.cancel_wanted and leg.status in (0, 487)):
        return 0, False
    local = leg.transaction is None and leg.invite is None  # refused before anything was sent
    return leg.status, local


def fails_over(status: int) -> bool:
    """Whether a failover dial tries its next target after an attempt that ended with `status`: after a
    timeout or transport error (0, 408), a 5xx or 6xx, or a 401/407 the trunk's credentials could not
    answer; never after a 4xx the caller should hear (486, 404, 403 ...)."""
    return status in (0, 401, 407, 408, 488) or status >= 500


def _callee_srtp(targets: list[Any]) -> SrtpPolicy:
    """The called side's SRTP setting: every fork shares side "b" of the media bridge, so the strictest
    mode of the targets wins ("mandatory" only when every target is; "off" when any is), SDES keys travel
    only when every target's signalling is TLS (or allows plain)."""
    modes = [getattr(t, "srtp", "optional") for t in targets]
    mode = (
        "off"
        if "off" in modes
        else "mandatory"
        if modes and all(m == "mandatory" for m in modes)
        else "optional"
    )
    secure = all(getattr(t, "secure", False) for t in targets)
    over_plain = all(getattr(t, "srtp_over_plain", False) for t in targets)
    return srtp_policy(mode, secure, over_plain)


class Dialing:
    """The `dial` action and the legs' callbacks, mixed into `Call` (module docstring)."""

    # The slots of what it sets; `Call` has the rest.
    __slots__ = (
        "_current",
        "_dial_done",
        "_dial_status",
        "_on_answer",
        "_relayed",
        "_ring_timer",
        "_transfer_code",
        "b",
        "ended",
        "id",
        "media",
        "offer_sdp",
        "winner",
    )

    _log = Logger()

    # What `Call` provides.
    b2bua: B2BUA
    caller: Caller
    clock: Any
    id: str
    invite: Any
    txn: Any
    media: MediaBridge | None
    legs: list[OutboundLeg]
    winner: OutboundLeg | None
    a: UasSession
    b: InviteSession | None
    ended: bool
    answered_at: float | None
    endpoint: Any
    own_sdp: bytes | None
    offer_sdp: SessionDescription | None
    _caller_sdp: bytes | None
    _on_answer: Callable[[bytes], None] | None

    if TYPE_CHECKING:

        @property
        def final_sent(self) -> bool: ...
        def _answer_caller(self, body: bytes) -> None: ...
        def _close_endpoint(self) -> None: ...
        def hangup(self, by: str) -> None: ...

    def _init_dialing(self) -> None:
        self._dial_done: Deferred[str] | None = None
        self._ring_timer: IDelayedCall | None = None
        self._current: list[OutboundLeg] = []
        self._relayed: tuple[int, ...] = ()  # the statuses relayed (a tuple: an empty set costs 216 bytes)
        self._dial_status = 0  # the status the caller hears after a trunk dial (`dial_status`), 0: by result
        self._transfer_code = ""  # the dial's `transfer=` feature code (`pbx.b2bua.dtmf_transfer`)

    async def dial(self, action: Action) -> str:
        result = await self._dial(action)
        media = self.media
        if result != "answered" and not self.ended and media is not None and media.external:
            # Nobody answered a call on rtpengine: the dialplan goes on (voicemail, IVR) with the PBX as
            # the caller's media end, which takes the built-in relay.
            self.media = None
            media.close()
        return result

    async def _dial(self, action: Action) -> str:
        targets = list(action.args)
        timeout = float(action.options.get("timeout") or self.b2bua.ring_timeout)
        self._dial_status = 0
        self._transfer_code = action.options.get("transfer", "")
        strategy = action.options.get("strategy")
        if strategy == "failover" or (strategy is None and all(t.startswith("trunk:") for t in targets)):
            ringtime = float(action.options.get("ringtime") or timeout)
            return await self._fail_over(targets, ringtime, action)
        if strategy == "sequential":
            ringtime = float(action.options.get("ringtime") or timeout / max(1, len(targets)))
            result = "unavailable"
            for target in targets:
                result = await self._dial_once([target], ringtime, action)
                if result in ("answered", "cancelled") or self.ended:
                    return result
            return result
        return await self._dial_once(targets, timeout, action)

    async def _fail_over(self, targets: list[str], ringtime: float, action: Action) -> str:
        """Try the targets one after another (trunks: docs/trunks.md), each for `ringtime`: the next one
        only after a timeout, a transport error, a 5xx or 6xx, or the PBX's own refusal (the trunk is down
        or full: 503; no common codec: 488). An answer, or a 4xx the caller should hear (486, 404 ...),
        ends the dial; that 4xx is what the caller gets when the actions run out (`dial_status`)."""
        result = "unavailable"
        for target in targets:
            self._current = []
            result = await self._dial_once([target], ringtime, action)
            if result in ("answered", "cancelled") or self.ended:
                return result
            status, local = attempt_status(self._current)
            if not fails_over(status):
                self._dial_status = status
                return result
            self._dial_status = status if local else 0
        return result

    def _media_bridge(self, relay: Any = None) -> MediaBridge:
        """The call's media bridge, with the caller's SRTP setting (its extension's or trunk's `srtp`; keys
        may travel when the INVITE came over TLS). The called side offers plain RTP ("optional").
        `relay`: another relay than the B2BUA's (`bridge_relay`)."""
        media = MediaBridge(relay or self.b2bua.relay, self.id, self.b2bua.codecs)
        caller = self.caller
        flow = getattr(getattr(self, "txn", None), "flow", None)
        secure = str(getattr(flow, "transport", "")).upper() == "TLS"
        media.set_srtp(
            "a",
            srtp_policy(
                getattr(caller, "srtp", "optional"), secure, getattr(caller, "allow_srtp_over_plain", False)
            ),
        )
        return media

    def _bridge_relay(self, contacts: list[Any]) -> Any:
        """The B2BUA's `bridge_relay` (rtpengine) for a call bridged from the start whose media it can carry
        as it is: the caller offered plain RTP (no SRTP to terminate) and no target insists on SRTP; else
        None (the built-in relay)."""
        relay = getattr(self.b2bua, "bridge_relay", None)
        if relay is None or not self.invite.body or self.offer_sdp is None:
            return None
        audio = accepted_audio(self.offer_sdp)
        if audio is None or audio.proto.upper() != "RTP/AVP" or _callee_srtp(contacts).mode == "mandatory":
            return None
        return relay

    @property
    def dial_status(self) -> int:
        """After a failover dial that stopped on a 4xx, that status (the caller hears the carrier's 404,
        486 ...); after one whose every target the PBX refused itself, that 503 or 488; else 0."""
        return self._dial_status

    async def _dial_once(self, targets: list[str], timeout: float, action: Action) -> str:
        contacts = self.b2bua.resolve(self, targets, action.options)  # type: ignore[arg-type]
        if not contacts:
            return "unavailable"
        if self.media is None:
            relay = self._bridge_relay(contacts)
            self.media = self._media_bridge(relay)
            if relay is not None:  # rtpengine sets the call up first (pbx.media.rtpengine)
                try:
                    await self.media.ready()
                except SipError:
                    if self.ended:  # the caller gave up meanwhile: nothing to answer
                        return "cancelled"
                    raise  # 503 for the caller
                if self.ended:
                    return "cancelled"
        self.media.set_srtp("b", _callee_srtp(contacts))
        body = b""
        content_type = None
        offer = self.invite.body or self._caller_sdp  # the caller's offer, or its answer to ours (IVR)
        if offer:
            parsed = self.offer_sdp if offer is self.invite.body else None
            if self.own_sdp is not None:
                offer, parsed = restrict_offer(offer, self.own_sdp), None
            body = self.media.forward("a", offer, is_offer=True, parsed=parsed)
            content_type = "application/sdp"
        callerid = action.options.get("callerid")
        display = callerid if callerid is not None else (self.caller.name or self.invite.from_.display_name)
        display = display_name(display)  # what a phone or a carrier wrote, bounded (pbx.b2bua.normalise)
        user = self.caller.extension or self.caller.number or "anonymous"  # a trunk's caller: its number
        from_value = f"<sip:{user}@{self.caller.domain}>"
        if display:
            from_value = f"{quote_string(display)} {from_value}"
        resolve = self.b2bua.resolve_uri
        legs = [OutboundLeg(self, target, resolve) for target in contacts]  # type: ignore[arg-type]
        self.legs.extend(legs)
        done: Deferred[str] = Deferred()
        self._dial_done = done
        self._current = legs
        for leg in legs:
            trunk = leg.target.trunk
            if trunk and not leg.target.refused and not self.b2bua.use_trunk(self, leg):  # type: ignore[arg-type]
                self._log.info("Trunk {trunk} is at its max_calls: 503", trunk=trunk)
                leg.status = 503  # fail fast; a failover dial tries its next target
                continue
            try:
                leg.start(from_value, body, content_type)
            except Exception as e:
                self._log.warn("Could not start a leg to {ext}: {e}", ext=leg.extension, e=e)
                leg.status = 503
            if trunk and leg.status >= 300:
                self.b2bua.release_trunk(leg)
            if leg.status == 0 and self.b2bua.observers:
                self.b2bua.observers.emit("leg_started", self, leg)
        self._ring_timer = self.clock.callLater(timeout, self._ring_timeout)
        if self.endpoint is not None:  # the caller is on the PBX's media: let it hear the ringing
            ringing = f"tone:ringback:{min(600, max(1, math.ceil(timeout)))}"
            self.endpoint.play([ringing], barge_in=False).addErrback(self._log.failure, "Ringback failed")
        self._check_dial_over()
        result = await done
        if self.endpoint is not None and result != "answered":
            self.endpoint.stop()
        self._stop_ringing()
        return result

    def _stop_ringing(self) -> None:
        if self._ring_timer is not None and self._ring_timer.active():
            self._ring_timer.cancel()
        self._ring_timer = None

    def _ring_timeout(self) -> None:
        """Nobody answered in time: stop the ringing legs; a leg that said busy still makes it "busy"."""
        self._ring_timer = None
        if self.b2bua.observers:
            self.b2bua.observers.emit("timer_expired", self, "ring timeout")
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
            self._finish_dial(classify(statuses))

    # -- callbacks from legs -----------------------------------------------------------------------------

    def leg_progress(self, leg: OutboundLeg, response: Response) -> None:
        transfer = getattr(self, "transfer", None)
        if transfer is not None and not self.ended and leg in self._current:
            transfer.ringing(self, response.status)
        if self.final_sent or self.ended or self.winner is not None or leg not in self._current:
            return
        if self.own_sdp is not None:
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
        self._relayed += (status,)
        self.a.provisional(status, body, reason=reason_phrase(status, response.reason))

    def leg_failed(self, leg: OutboundLeg, status: int, response: Response | None) -> None:
        if leg.target.trunk:
            self.b2bua.release_trunk(leg)
        if self.b2bua.observers:
            self.b2bua.observers.emit("leg_ended", self, leg)
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
        self.offer_sdp = None  # connected: no more dials (the only users of the parsed offer)
        if self.b2bua.observers:
            self.b2bua.observers.emit("leg_answered", self, leg)  # the callee answered (outbound limits)
        for other in self._current:
            if other is not leg:
                other.cancel()
        self.b = leg.session(CallSide(self, "b"), **self.b2bua.session_options)  # type: ignore[arg-type]
        # What each end said so far (a transfer offers the same to whoever takes this side's place).
        if leg.invite is not None and leg.invite.body:
            self.b.local_body = (leg.invite.body, "application/sdp")
        self.b.remote_body = (response.body, "application/sdp")
        if late_offer:
            leg.awaiting_answer = True  # 2xx retransmissions wait for the answer the caller's ACK brings
        else:
            leg.send_ack(None)
        if self.own_sdp is not None:
            # The caller already has our SDP (an IVR answered it, or early media): hand its relay leg back
            # to the relay; the callee's codec was chosen among the ones the caller was told about.
            self._close_endpoint()
            if self.answered_at is None:
                self._answer_caller(self.own_sdp)
        else:
            self._answer_caller(body)
        if late_offer:

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

            self._on_answer = forward_answer
        self._finish_dial("answered")
        if self._transfer_code:
            self.b2bua.transfers.watch_digits(self, self._transfer_code)  # type: ignore[arg-type]
        transfer = getattr(self, "transfer", None)
        if transfer is not None:
            transfer.connected(self)
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
            self.media = self._media_bridge()
        self.media.note_allow("b", response.headers.get_all("Allow"))  # DTMF by INFO to the callee?
        return self.media.forward("b", response.body, is_offer=late_offer, parsed=sdp)

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
