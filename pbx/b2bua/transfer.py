"""Call transfer: REFER in a call's dialog, blind and attended, and INVITE with Replaces (RFC 3515, RFC 3891,
RFC 3892, RFC 4488, RFC 5589).

A REFER never crosses the PBX: the PBX carries the transfer out itself, so media stays anchored on the relay
and the routing goes through the dialplan. It is accepted (202) only in an answered call's dialog, from a
party the PBX knows: the caller of the call (an authenticated extension or trusted peer; a trunk only when
`trunk_transfers` allows it) or its callee when that is a registered extension (its dialog is the one the PBX
made with that extension's contact). Out-of-dialog REFERs never reach here: the stack answers them 405/481.

- **Blind** (`Refer-To: <sip:1003@pbx>`): the other party (the transferee) leaves the call and a new `Call`
  routes it to the target through the dialplan *as the transferor* (its `caller` is the transferor's
  `Caller`, `referred_by` its extension, so the transferor's outbound rights apply: a transfer never reaches
  what the transferor could not dial). The transferee is re-INVITEd onto the new call's relay leg with the
  PBX's offer and hears music (then ringback) while the target rings; the new call is then like a call the
  PBX answered (an IVR that dials): the first leg that answers is bridged without another re-INVITE.
- **Attended** (`Refer-To: <sip:1003@pbx?Replaces=...>`): the `Replaces` names the transferor's other call
  (the consultation). The transferee takes the transferor's place in it: it is re-INVITEd onto that call's
  relay leg with the PBX's SDP of that leg cut to the codec already negotiated there, so the relay's codec
  plan does not change and the far party (a phone, or an application of the PBX: park, IVR, voicemail) is
  not disturbed. The transferor's consultation leg gets a BYE. A consultation still ringing becomes a blind
  transfer to the number it dialed (RFC 5589 7.3).
- Progress goes to the transferor in NOTIFYs (`pbx.b2bua.refer.Referral`): 100, 180, then 200 once the
  target answered (or an application took the call) or the failure; after the final NOTIFY is answered the
  transferor's leg gets a BYE (a phone that hangs up on its own after the 200 crosses it harmlessly).
- **INVITE with Replaces** (RFC 3891) naming a confirmed dialog of a call on the PBX, from the same
  extension as the party of that dialog (a phone moving its call to another device): the new INVITE is
  answered at the replaced party's relay leg and the replaced dialog gets a BYE. One naming an early dialog
  (a ringing call) is a call pickup (`pbx.b2bua.pickup`) with its permissions.

Observers (`pbx.b2bua.events`) see the new call of a blind transfer as any call (`call_started`,
`leg_started`, `call_answered` when the target answers, `call_ended`) and `call_transferred(call, from_call)`
when a party moved into an existing call.

This module knows nothing of sockets, config or the applications.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbx.b2bua.bridge import CallSide
from pbx.b2bua.dtmf_transfer import DigitWatch, event_payload_types
from pbx.b2bua.media import parse_sdp
from pbx.b2bua.refer import Refer, Referral, Replaces, parse_refer, parse_replaces
from pbx.sip.errors import SipError
from pbx.sip.message import Request, Response, new_call_id, new_tag
from pbx.sip.sdp import SdpError, SessionDescription
from pbx.sip.session_events import SessionListener, SessionRequestFailed
from pbx.sip.uri import SipURI

if TYPE_CHECKING:
    from pbx.b2bua.b2bua import B2BUA, Caller
    from pbx.b2bua.call import Call
    from pbx.sip.interfaces import IServerTransaction
    from pbx.sip.session import InviteSession

OTHER = {"a": "b", "b": "a"}

RESULT_STATUS = {"busy": 486, "noanswer": 480, "unavailable": 404, "failed": 503, "declined": 603}
"""How a transfer whose routing ended without an answer is reported (the sipfrag status)."""

_STATIC = {"0": "pcmu", "8": "pcma"}


def _encodings(media: Any) -> dict[str, str]:
    rtpmap = media.rtpmap
    return {f: (rtpmap[f].encoding.lower() if f in rtpmap else _STATIC.get(f, f)) for f in media.formats}


def _audio(sdp: SessionDescription) -> int | None:
    for i, media in enumerate(sdp.media):
        if media.media.lower() == "audio" and media.port:
            return i
    return None


def replacement_sdp(local: bytes, remote: bytes | None) -> bytes:
    """The PBX's SDP of a relay leg (`local`, as last sent to the replaced party) cut to the formats that
    party negotiated (those of `remote`, by encoding name), `a=sendrecv`, a newer version: what the party
    taking its place is offered (or answered), so the relay keeps converting as before.

    Raises:
        SipError: 488 when the SDP cannot be read or has no audio stream.
    """
    try:
        ours = SessionDescription.parse(local)
        theirs = SessionDescription.parse(remote) if remote else None
    except SdpError:
        raise SipError(488, "No Usable SDP") from None
    index = _audio(ours)
    if index is None:
        raise SipError(488, "No Usable SDP")
    media = ours.media[index]
    names = _encodings(media)
    kept = list(media.formats)
    if theirs is not None and (other := _audio(theirs)) is not None:
        wanted = set(_encodings(theirs.media[other]).values())
        kept = [f for f in media.formats if names[f] in wanted] or kept
    media = media.with_formats(kept).with_direction("sendrecv")
    origin = ours.origin.replace(session_version=ours.origin.session_version + 1)
    media_list = tuple(media if i == index else m for i, m in enumerate(ours.media))
    return ours.replace(origin=origin, media=media_list).to_bytes()


def learn_remote(call: Call, side: str, body: bytes) -> None:
    """Point `side`'s relay leg at the media address of an SDP `body` from the phone now on that side.

    Raises:
        SipError: 400/413/488 for a body the relay cannot use (`parse_sdp`).
    """
    sdp = parse_sdp(body)
    index = _audio(sdp)
    if index is None or call.media is None:
        raise SipError(488, "No Audio")
    media = sdp.media[index]
    connection = sdp.connection_for(media)
    if connection is not None and connection.address not in ("0.0.0.0", "::"):
        try:
            call.media.session.leg(side).set_remote(connection.address, media.port, media.rtcp_port)
        except ValueError:
            pass  # latching finds it


def _status_of(failure: Failure) -> int:
    error = failure.value
    if isinstance(error, SessionRequestFailed | SipError):
        return int(error.status) if error.status >= 300 else 500
    return 500


class _Tracker:
    """Told how the routing of a blind transfer goes (`Call.transfer`); reports it to the transferor.

    When the routing fails while the transferor is still in the original call, the transferee is given
    back to it (re-INVITEd onto its old relay leg with the SDP it had there) instead of being hung up.
    """

    __slots__ = ("_observers", "_original", "_saved", "_side", "_transfers", "referral")

    def __init__(
        self,
        referral: Referral,
        transfers: Transfers,
        original: Call,
        side: str,
        saved: tuple[bytes, bytes | None] | None,
    ) -> None:
        self.referral = referral
        self._transfers = transfers
        self._observers = transfers.b2bua.observers
        self._original = original
        self._side = side
        self._saved = saved

    def hanging_up(self, call: Call) -> None:
        """`call` is about to BYE its sides: before any success, give the transferee back if possible."""
        original, session, saved = self._original, call.a, self._saved
        if self.referral.done or call.hangup_by == "caller" or saved is None:
            return
        if original.ended or session.ended or call.released == "a":
            return
        transferor = original.session_of(OTHER[self._side])
        if transferor is None or transferor.ended:
            return
        call.released = "a"
        call.cause = call.cause or (call.result or "failed")
        self._transfers.give_back(original, self._side, session, saved)

    def ringing(self, call: Call, status: int) -> None:
        if status in (180, 183):
            self.referral.progress(180)

    def connected(self, call: Call) -> None:
        if not self.referral.done:
            self.referral.progress(200)
            if self._observers:
                self._observers.emit("call_answered", call)

    def ended(self, call: Call) -> None:
        if self.referral.done:
            return
        if call.hangup_by == "caller":
            status = 487
        elif call._status >= 300:
            status = call._status
        else:
            status = RESULT_STATUS.get(call.result or "", 480)
        self.referral.progress(status)


class Transfers:
    """REFER and Replaces for the calls of one B2BUA (module docstring).

    Args:
        b2bua: the B2BUA (its calls, directories, clock, observers, hold music).
        trunk_transfers: whether a party reached through a trunk may transfer (off: 403).
    """

    _log = Logger()

    def __init__(self, b2bua: B2BUA, *, trunk_transfers: bool = False) -> None:
        self.b2bua = b2bua
        self.trunk_transfers = trunk_transfers

    # -- who is who --------------------------------------------------------------------------------------

    def party(self, call: Call, side: str) -> Caller | None:
        """The identity of the party on `side` of `call`, as a `Caller` (None: not one the PBX knows as an
        extension of the tenant, or a trunk when trunks may not transfer)."""
        if side == "a":
            caller = call.caller
            if caller.trunk and not self.trunk_transfers:
                return None
            return caller
        winner = call.winner
        if winner is None:
            return None
        if winner.target.trunk:
            if not self.trunk_transfers:
                return None
            return self.b2bua.trunk_caller(call.caller.tenant, winner.target.trunk)
        if winner.binding is None:
            return None  # a SIP URI target: nobody the PBX authenticated
        return self.b2bua.caller_for(call.caller.tenant, winner.extension)

    @staticmethod
    def extension_of(call: Call, side: str) -> str:
        """The extension of the party on `side` ("" for a trunk or URI party)."""
        if side == "a":
            return call.caller.extension
        return call.callee_extension if call.winner is None or call.winner.binding is not None else ""

    def find_dialog(self, tenant: str, replaces: Replaces) -> tuple[Call, str] | None:
        """The call and side whose session with a phone is the dialog `replaces` names (confirmed or the
        caller's early dialog), in `tenant`."""
        for call in list(self.b2bua.calls.values()):
            if call.ended or call.caller.tenant != tenant:
                continue
            for side in ("a", "b"):
                session = call.session_of(side)
                dialog = getattr(session, "dialog", None) if session is not None else None
                if dialog is not None and not dialog.terminated:
                    if replaces.matches(dialog.call_id, dialog.local_tag, dialog.remote_tag or ""):
                        return call, side
                elif side == "a" and session is not None and not call.final_sent:
                    # the caller's early dialog: our tag is in the provisional responses
                    invite = call.invite
                    if replaces.matches(invite.call_id or "", call.local_tag, invite.from_.tag or ""):
                        return call, side
        return None

    # -- REFER -------------------------------------------------------------------------------------------

    def refer_received(self, call: Call, side: str, session: InviteSession, request: Request) -> Response:
        """A REFER from the party on `side` of `call`: 202 and the transfer starts, or a `SipError`."""
        refer = parse_refer(request)
        if not call.answered or call.ended:
            raise SipError(403, "Call Not Answered")
        who = self.party(call, side)
        if who is None:
            self._log.info(
                "Call {id}: REFER from side {side} refused: not allowed to transfer", id=call.id, side=side
            )
            raise SipError(403, "Transfer Not Allowed")
        other = OTHER[side]
        transferee = call.session_of(other)
        if transferee is None or transferee.ended:
            raise SipError(403, "Nothing To Transfer")
        consultation = None
        if refer.replaces is not None:
            consultation = self.find_dialog(call.caller.tenant, refer.replaces)
            if consultation is None or consultation[0] is call:
                raise SipError(403, "Replaced Call Not Found")
            target_call, target_side = consultation
            if self.extension_of(target_call, target_side) != who.extension or not who.extension:
                raise SipError(403, "Replaced Call Not Yours")
        response = request.response(202)
        dialog = session.dialog
        if dialog is not None:
            response.headers.add("Contact", str(dialog.local_contact))
        if not refer.subscribe:
            response.headers.add("Refer-Sub", "false")
        self._log.info(
            "Call {id}: {who} transfers to {target} ({kind})",
            id=call.id, who=who.extension or who.trunk, target=refer.target,
            kind="attended" if consultation else "blind",
        )  # fmt: skip

        def finished(status: int) -> None:
            # Done (or failed with the transferee not given back): the transferor's leg ends.
            if not call.ended and (status < 300 or call.released):
                call.hangup("transfer")

        referral = Referral(session, refer.subscribe, finished)
        # After the 202 has gone (the NOTIFYs follow it): the next turn of the reactor.
        self.b2bua.clock.callLater(0, self._start, call, side, refer, who, referral, consultation)
        return response

    def _start(
        self,
        call: Call,
        side: str,
        refer: Refer,
        who: Caller,
        referral: Referral,
        consultation: tuple[Call, str] | None,
    ) -> None:
        other = OTHER[side]
        transferee = call.session_of(other)
        if call.ended or transferee is None or transferee.ended:
            referral.progress(487)
            return
        referral.progress(100)
        try:
            if consultation is not None and not consultation[0].ended:
                target_call, target_side = consultation
                if target_call.answered:
                    self._attended(call, other, transferee, referral, target_call, target_side)
                    return
                # Still ringing: the consultation is dropped and the transferee rings its target instead.
                target = target_call.dialed
                target_call.cause = "transferred"
                target_call.reject(487)
                self._blind(call, other, transferee, who, target, referral)
                return
            self._blind(call, other, transferee, who, refer.target, referral)
        except Exception:
            self._log.failure("Call {id}: transfer failed", id=call.id)
            referral.progress(500)

    def release(self, call: Call, side: str) -> None:
        """`side`'s session leaves `call` (a transfer moved it): no music, no BYE, no more relaying."""
        call.released = side
        call.cause = call.cause or "transferred"
        if side in call.moh:
            call.stop_moh(side)

    def _blind(
        self, call: Call, side: str, session: InviteSession, who: Caller, target: str, referral: Referral
    ) -> None:
        """The party on `side` of `call` is routed to `target` as `who` in a new call."""
        b2bua = self.b2bua
        saved = (
            (session.local_body[0], session.remote_body[0] if session.remote_body else None)
            if session.local_body
            else None
        )
        self.release(call, side)
        domain = who.domain
        invite = Request("INVITE", SipURI(host=domain, user=target))
        invite.headers.add(
            "From", f"<sip:{who.extension or who.number or 'anonymous'}@{domain}>;tag={new_tag()}"
        )
        invite.headers.add("To", f"<sip:{target}@{domain}>")
        invite.headers.add("Call-ID", new_call_id(b2bua.host))
        invite.headers.add("CSeq", "1 INVITE")
        new = type(call)(b2bua, call.txn, invite, who, session=session)
        new.referred_by = who.extension
        new.transfer = _Tracker(referral, self, call, side, saved)
        new.answered_at = b2bua.clock.seconds()  # the transferee's dialog is up: BYE ends it
        b2bua.adopt(new)
        b2bua.deadlines.add(new)
        try:
            new.media = new._media_bridge()
            offer = new.media.local_offer("a")
            new.own_sdp = offer
            sent = session.reinvite(offer, "application/sdp")
        except (SipError, ValueError) as e:
            self._log.info("Call {id}: cannot move the transferee: {e}", id=call.id, e=str(e))
            new._status = getattr(e, "status", 500)
            new.hangup("pbx")
            return

        def moved(response: Response) -> None:
            if new.ended:
                return
            try:
                agreed = new._agree(response.body)
            except SipError as e:
                new._status = e.status
                new.hangup("pbx")
                return
            new.own_sdp, new._caller_sdp = agreed, response.body
            music = b2bua.hold_music
            leg = new.media_leg()
            if music is not None and leg is not None:
                new.endpoint = music.start(new.tenant, leg, agreed)
            ensureDeferred(new.run()).addErrback(
                lambda f: self._log.failure("Transferred call {id} failed", f, id=new.id)
            )

        def refused(failure: Failure) -> None:
            if not new.ended:
                new._status = _status_of(failure)
                new.hangup("pbx")

        sent.addCallbacks(moved, refused)

    def _attended(
        self,
        call: Call,
        side: str,
        session: InviteSession,
        referral: Referral,
        target: Call,
        target_side: str,
    ) -> None:
        """The party on `side` of `call` takes the place of the transferor on `target_side` of `target`."""
        old = target.session_of(target_side)
        assert old is not None and old.local_body is not None
        offer = replacement_sdp(old.local_body[0], old.remote_body[0] if old.remote_body else None)
        party = self.extension_of(call, side)
        self.release(call, side)
        self.move_in(target, target_side, session, old, party)
        try:
            sent = session.reinvite(offer, "application/sdp")
        except ValueError:
            referral.progress(491)
            target.hangup("pbx")
            return

        def moved(response: Response) -> None:
            try:
                learn_remote(target, target_side, response.body)
            except SipError as e:
                referral.progress(e.status)
                target.hangup("pbx")
                return
            referral.progress(200)
            if self.b2bua.observers:
                self.b2bua.observers.emit("call_transferred", target, call)

        def refused(failure: Failure) -> None:
            referral.progress(_status_of(failure))
            target.hangup("pbx")

        sent.addCallbacks(moved, refused)

    def give_back(
        self, call: Call, side: str, session: InviteSession, saved: tuple[bytes, bytes | None]
    ) -> None:
        """A transferee whose transfer failed returns to `side` of `call` (its transferor is still there)."""
        self.move_in(call, side, session, None)
        call.cause = ""
        self._log.info("Call {id}: transfer failed, the transferee is back", id=call.id)
        try:
            sent = session.reinvite(replacement_sdp(*saved), "application/sdp")
        except (SipError, ValueError):
            call.hangup("pbx")
            return

        def back(response: Response) -> None:
            try:
                learn_remote(call, side, response.body)
            except SipError:
                call.hangup("pbx")

        sent.addCallbacks(back, lambda f: call.hangup("pbx"))

    def move_in(
        self, call: Call, side: str, session: InviteSession, old: InviteSession | None, party: str = ""
    ) -> None:
        """`session` (of extension `party`) becomes `call`'s side `side`; the session it replaces (if any)
        gets a BYE."""
        if side == "b":
            if old is not None:
                call.winner = None  # the leg that answered is gone; `answered_by` names the new party
                call.answered_by = party
            call.b = session
        else:
            call.a = session  # type: ignore[assignment]
        session.listener = CallSide(call, side)
        if call.released == side:
            call.released = ""
        if old is not None and old is not session:
            old.listener = SessionListener()
            old.bye()

    # -- transfer by DTMF (`##` + number) ----------------------------------------------------------------

    def watch_digits(self, call: Call, code: str) -> None:
        """Watch both parties of a connected `call` for `code` + number (`pbx.b2bua.dtmf_transfer`)."""
        if call.media is None or call.ended or call.b is None:
            return
        watch = DigitWatch(self.b2bua.clock, code, _KeyedTransfer(self, weakref.ref(call), code))
        call.features = watch
        for side, session in (("a", call.a), ("b", call.b)):
            if call.media.srtp.legs.get(side) is not None:
                continue  # SRTP: its events are encrypted; INFO still works
            set_tap = getattr(call.media.session.leg(side), "set_tap", None)
            if set_tap is None:
                continue  # a relay that shows no packets (rtpengine): INFO still works
            bodies = [b[0] for b in (session.local_body, session.remote_body) if b is not None]
            if side == "a":
                bodies.append(call.invite.body)
            types = event_payload_types(bodies)
            if types:
                set_tap(watch.tap(side, types))

    def dtmf_transfer(self, call: Call, side: str, number: str, code: str = "") -> None:
        """The party on `side` keyed the transfer code and `number`: a blind transfer of the other party,
        as a REFER without subscription would be (no NOTIFY; the keying party leaves on success). A failed
        transfer gives the other party back and watches the keys (`code`) again."""
        if call.media is not None:
            watch = call.features
            call.features = None
            if watch is not None:
                watch.close([call.media.session.leg("a"), call.media.session.leg("b")])
        if call.ended:
            return
        who = self.party(call, side)
        other = OTHER[side]
        transferee = call.session_of(other)
        session = call.session_of(side)
        if who is None or transferee is None or session is None or transferee.ended:
            self._log.info("Call {id}: transfer by keys from side {side} refused", id=call.id, side=side)
            return
        self._log.info(
            "Call {id}: {who} transfers to {target} (keys)", id=call.id, who=who.extension, target=number
        )

        def finished(status: int) -> None:
            if call.ended:
                return
            if status < 300 or call.released:
                call.hangup("transfer")
            elif code:
                self.watch_digits(call, code)  # given back: the keys may try again

        self._blind(call, other, transferee, who, number, Referral(session, False, finished))

    # -- INVITE with Replaces ------------------------------------------------------------------------------

    def invite_with_replaces(self, txn: IServerTransaction, request: Request, caller: Caller) -> bool:
        """A new INVITE with a `Replaces` header (RFC 3891 3): True when it was handled here (answered, or
        refused with a `SipError`); False when it is not one."""
        value = request.headers.get("Replaces")
        if value is None:
            return False
        replaces = parse_replaces(value)
        found = self.find_dialog(caller.tenant, replaces)
        if found is None:
            raise SipError(481, "Replaced Dialog Not Found")
        call, side = found
        if not call.answered:  # an early dialog: a pickup of that ringing call
            self.b2bua.pickup.replaces_early(txn, request, caller, call)
            return True
        if replaces.early_only:
            raise SipError(486, "Replaced Dialog Confirmed")  # RFC 3891 3
        if not caller.extension or self.extension_of(call, side) != caller.extension:
            raise SipError(403, "Replaced Call Not Yours")
        old = call.session_of(side)
        if old is None or old.local_body is None:
            raise SipError(481)
        answer = replacement_sdp(old.local_body[0], old.remote_body[0] if old.remote_body else None)
        if request.body:
            learn_remote(call, side, request.body)
        session = self.b2bua.uas_session(txn, call, side)
        self.move_in(call, side, session, old, caller.extension)
        session.answer(answer)
        self._log.info("Call {id}: side {side} replaced by a new dialog of {ext}", id=call.id, side=side,
                       ext=caller.extension)  # fmt: skip
        if self.b2bua.observers:
            self.b2bua.observers.emit("call_transferred", call, call)
        return True


class _KeyedTransfer:
    """What a `DigitWatch` fires when a party keyed the code and a number (kept for each watched call's
    length: a slotted callable, not a closure)."""

    __slots__ = ("call", "code", "transfers")

    def __init__(self, transfers: Transfers, call: weakref.ref[Call], code: str) -> None:
        self.transfers = transfers
        self.call = call
        self.code = code

    def __call__(self, side: str, number: str) -> None:
        found = self.call()
        if found is not None and not found.ended:
            # Out of the relay's callback: the transfer re-INVITEs and moves relay legs.
            transfers = self.transfers
            transfers.b2bua.clock.callLater(0, transfers.dtmf_transfer, found, side, number, self.code)
