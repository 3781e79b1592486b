"""The two sides of an answered call, as INVITE session listeners (RFC 3261 12-15, RFC 3264, RFC 3311).

Side "a" is the caller's `UasSession`, side "b" the callee's `CalleeSession`; each has a `CallSide` as its
`ISessionListener`. What one side's session receives in its dialog is passed to the other side's session:

- re-INVITE and UPDATE with an offer: the offer rewritten through the `MediaBridge` goes out in the same
  method; the answer comes back rewritten (a failure comes back with its status). A re-INVITE without an
  offer goes out without one: the other side's 2xx brings the offer, our 2xx carries it on, and the answer
  in the ACK goes back in the other side's ACK.
- INFO and other requests (with their Content-Type and `PASSED_HEADERS`), answered with the other side's
  final response; except a DTMF INFO that the other side cannot take (it negotiated RFC 4733 events, or
  takes neither INFO nor events): it is answered 200 here and the digit goes to the other phone as events or
  in-band tones (`MediaBridge.dtmf_info`). The other way round, digits the relay converts for a phone that
  takes INFO are sent to it as INFO requests (`send_dtmf_info`).
- BYE: the session answers it and ends; the call then hangs up the other side (`Call.side_terminated`).
- After a re-INVITE that puts one side on hold, that side hears music on hold until it is taken off hold.

While the PBX itself is the caller's media end (an IVR answered, no callee), a re-INVITE or UPDATE from the
caller is answered with the same SDP (the relay leg learns where its media now is) and an INFO key press goes
to the application. The sessions answer OPTIONS, glare (491) and session timers themselves.

A `CallSide` holds its call weakly: a session may outlive its call (its transactions' timers), and the call
must be freed by reference counting alone.
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pbx.b2bua.normalise import CROSSING, crossing_body, crossing_headers, reason_phrase
from pbx.media.dtmf import parse_dtmf_info
from pbx.media.dtmf_interwork import build_dtmf_info, info_duration
from pbx.sip.errors import SipError
from pbx.sip.message import Request, Response
from pbx.sip.sdp import SdpError, SessionDescription
from pbx.sip.session_events import ISessionListener, SessionListener, SessionRequestFailed

if TYPE_CHECKING:
    from pbx.b2bua.call import Call
    from pbx.sip.session import InviteSession

# Headers passed from one side's in-dialog request to the other's (everything else is the PBX's own): the
# allow-list of pbx.b2bua.normalise, bounded there.
PASSED_HEADERS = CROSSING

_log = Logger()


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


def _is_sdp(content_type: str) -> bool:
    return content_type.lower().startswith("application/sdp")


@implementer(ISessionListener)
class CallSide(SessionListener):
    """The listener of one side's session: passes what it receives to the other side (module docstring).

    Attributes:
        side: "a" (the caller) or "b" (the callee).
    """

    __slots__ = ("_call", "_dtmf_out", "_late_answer", "_late_offer", "_late_peer", "side")

    def __init__(self, call: Call, side: str) -> None:
        self._call = weakref.ref(call)
        self.side = side
        self._late_offer: Deferred[bytes] | None = None  # the other side awaits the offer our 2xx brings
        self._late_answer: Deferred[bytes] | None = None  # the other side's 2xx awaits the answer in our ACK
        self._late_peer: CallSide | None = None  # the side whose re-INVITE without offer awaits ours
        self._dtmf_out: list[tuple[str, int]] | None = None  # DTMF INFOs waiting while one is in flight
        media = call.media if side == "b" else None  # side "a" is made before the call has media
        if media is not None:
            # The callee is connected: digits converted for a phone that takes INFO go out as INFO.
            media.set_info_sender(partial(send_dtmf_info, self._call))
            media.note_allow("a", call.invite.headers.get_all("Allow"))

    def _call_and_other(self) -> tuple[Call, InviteSession | None]:
        call = self._call()
        if call is None or call.ended:
            raise SipError(481)
        return call, call.session_of("b" if self.side == "a" else "a")

    # -- offers --------------------------------------------------------------------------------------------

    def offer_received(self, session: InviteSession, body: bytes, content_type: str) -> object:
        late, self._late_offer = self._late_offer, None
        if late is not None:  # the 2xx to a re-INVITE without offer we passed on: its offer goes across
            return self._offer_in_2xx(late, body, content_type)
        call, other = self._call_and_other()
        sdp = _is_sdp(content_type)
        if other is None:
            if self.side == "a" and call.answered and call.own_sdp is not None:
                return call.refresh_local(body if sdp else b"")
            raise SipError(481)
        media = call.media
        out = media.forward(self.side, body, is_offer=True) if sdp and media is not None else body
        try:
            if session.receiving_invite:
                sent = other.reinvite(out, content_type)
            else:
                sent = other.update(out, content_type)
        except ValueError:
            raise SipError(491) from None  # the other side has a request of its own in progress: glare
        return sent.addCallbacks(
            self._answered, _request_failed, callbackArgs=(body, content_type, session.receiving_invite)
        )

    def _answered(self, response: Response, offer: bytes, content_type: str, invite: bool) -> bytes:
        """The other side's 2xx to the offer we passed on: its answer, rewritten for this side."""
        call = self._call()
        answer = response.body
        if call is None or not answer:
            return answer
        other_side = "b" if self.side == "a" else "a"
        out = answer
        if _is_sdp(response.headers.get("Content-Type") or content_type) and call.media is not None:
            try:
                out = call.media.forward(other_side, answer, is_offer=False)
            except SipError:
                out = b""
        if invite and offer:
            call.update_hold(other_side, offer, answer)
        return out

    def offer_requested(self, session: InviteSession) -> object:
        """A re-INVITE without an offer: passed on without one; the other side's 2xx brings the offer."""
        call, other = self._call_and_other()
        if other is None:
            if self.side == "a" and call.own_sdp is not None:
                return call.refresh_local(b"")
            raise SipError(481)
        across = other.listener
        assert isinstance(across, CallSide)
        try:
            sent = other.reinvite()
        except ValueError:
            raise SipError(491) from None
        waiting: Deferred[bytes] = Deferred()
        across._late_offer, across._late_peer = waiting, self

        def finished(response: Response) -> None:
            across._late_offer = across._late_peer = None
            if not waiting.called:  # a 2xx without the offer it owed (RFC 3261 14.2): nothing to pass on
                waiting.errback(SipError(488, "No SDP"))

        def failed(failure: Failure) -> None:
            across._late_offer = across._late_peer = None
            if not waiting.called:
                waiting.errback(_sip_error(failure))

        sent.addCallbacks(finished, failed)
        return waiting

    def _offer_in_2xx(self, late: Deferred[bytes], body: bytes, content_type: str) -> Deferred[bytes]:
        """The 2xx of this side to a re-INVITE without offer that we passed on: its offer, rewritten, goes
        into the other side's 2xx, and the answer in the other side's ACK comes back for our ACK."""
        peer, self._late_peer = self._late_peer, None
        call = self._call()
        out = body
        if call is not None and call.media is not None and _is_sdp(content_type):
            try:
                out = call.media.forward(self.side, body, is_offer=True)
            except SipError as e:  # refused on both sides: ours is ACKed and BYEd by the session
                late.errback(e)
                raise
        answer: Deferred[bytes] = Deferred()
        if peer is not None:
            peer._late_answer = answer
        late.callback(out)
        return answer

    def answer_received(self, session: InviteSession, body: bytes, content_type: str) -> None:
        """The answer in the ACK to a 2xx of ours that carried an offer."""
        call = self._call()
        waiting, self._late_answer = self._late_answer, None
        if waiting is not None:  # the answer for the other side's ACK
            try:
                if call is None or call.media is None:
                    raise SipError(488, "No SDP")
                waiting.callback(call.media.forward(self.side, body, is_offer=False))
            except SipError as e:
                _log.warn("The ACK has no usable SDP answer ({reason}): BYE", reason=e.reason)
                if not waiting.called:
                    waiting.errback(e)
            return
        if call is not None:
            call.answer_in_ack(self.side, body)

    def flush(self) -> None:
        """The call ends: a 2xx waiting for an answer from the other side is ACKed without one."""
        waiting, self._late_answer = self._late_answer, None
        if waiting is not None and not waiting.called:
            waiting.errback(SipError(488))
        late, self._late_offer = self._late_offer, None
        self._late_peer = None
        if late is not None and not late.called:
            late.errback(SipError(481))

    # -- other requests ------------------------------------------------------------------------------------

    def request_received(self, session: InviteSession, request: Request) -> object:
        call, other = self._call_and_other()
        method = request.method
        if method == "REFER":  # a transfer (RFC 3515): the PBX carries it out, never passes it on
            return call.b2bua.transfers.refer_received(call, self.side, session, request)
        if other is None:
            if method == "INFO" and self.side == "a":
                # The PBX is the caller's media end (IVR): a key press by SIP INFO goes to it, never onward.
                digit = parse_dtmf_info(request.headers.get("Content-Type") or "", request.body)
                if digit is not None and call.endpoint is not None:
                    call.endpoint.inject_digit(digit, "info")
                return 200
            raise SipError(481)
        headers = request.headers
        if method == "INFO" and call.media is not None:
            digit = parse_dtmf_info(headers.get("Content-Type") or "", request.body)
            if digit is not None and call.features is not None:
                call.features.digit(self.side, digit)  # an in-call feature code (`##` transfer)
            if digit is not None and call.media.dtmf_info(self.side, digit, info_duration(request.body)):
                return 200  # converted for the other side (RFC 4733 events or in-band tones)
        passed = crossing_headers(headers)
        content_type = headers.get("Content-Type") or "application/octet-stream"
        try:
            sent = other.request(method, crossing_body(content_type, request.body), content_type, passed)
        except ValueError:
            return 405  # not a method to pass on (the session answers INVITE, UPDATE, BYE, PRACK itself)
        return sent.addCallbacks(_pass_back, _failed_back, callbackArgs=(request,), errbackArgs=(request,))

    def send_dtmf(self, session: InviteSession, digit: str, duration_ms: int) -> None:
        """Send `digit` to this side's phone in an INFO, one INFO at a time (keys stay in order)."""
        if self._dtmf_out is not None:
            self._dtmf_out.append((digit, duration_ms))
            return
        self._dtmf_out = []
        content_type, body = build_dtmf_info(digit, duration_ms)
        try:
            sent = session.request("INFO", body, content_type, [])
        except ValueError:
            self._dtmf_out = None
            return
        sent.addErrback(lambda f: _log.info("DTMF INFO to side {s} failed: {e}", s=self.side, e=f.value))
        sent.addBoth(self._dtmf_sent, session)

    def _dtmf_sent(self, _: object, session: InviteSession) -> None:
        waiting, self._dtmf_out = self._dtmf_out, None
        if waiting and not session.ended:
            digit, duration_ms = waiting.pop(0)
            self.send_dtmf(session, digit, duration_ms)
            if self._dtmf_out is not None:
                self._dtmf_out[:0] = waiting

    # -- the initial INVITE and the end ------------------------------------------------------------------

    # provisional, answered, failed, cancelled, confirmed: nothing to do (SessionListener's no-ops)

    def terminated(self, session: InviteSession, reason: str) -> None:
        call = self._call()
        if call is not None:
            call.side_terminated(self.side, reason)


def send_dtmf_info(call_ref: weakref.ref[Call], side: str, digit: str, duration_ms: int) -> None:
    """Send `digit` to `side`'s phone in an INFO (`application/dtmf-relay`); its answer changes nothing."""
    call = call_ref()
    if call is None or call.ended:
        return
    session = call.session_of(side)
    listener = session.listener if session is not None else None
    if session is not None and isinstance(listener, CallSide):
        listener.send_dtmf(session, digit, duration_ms)


def _sip_error(failure: Failure) -> SipError:
    """How a request we passed on failed, as the error to refuse the original with (same status)."""
    error = failure.value
    if isinstance(error, SessionRequestFailed):
        reason = error.response.reason if error.response is not None else None
        return SipError(error.status, reason_phrase(error.status, reason))
    if isinstance(error, SipError):
        return error
    _log.failure("Passing a request on failed", failure=failure)
    return SipError(500)


def _request_failed(failure: Failure) -> None:
    """An offer we passed on was refused (or got no answer): refuse ours with the same status."""
    raise _sip_error(failure)


def _pass_back(response: Response, request: Request) -> Response:
    back = request.response(response.status, reason_phrase(response.status, response.reason))
    content_type = response.headers.get("Content-Type") or "application/sdp"
    body = crossing_body(content_type, response.body)
    if body:
        back.headers.add("Content-Type", content_type)
        back.body = body
    return back


def _failed_back(failure: Failure, request: Request) -> Response:
    error = failure.value
    if isinstance(error, SessionRequestFailed) and error.response is not None:
        return _pass_back(error.response, request)
    return request.response(_sip_error(failure).status)


def music_on_hold(call: Call, held: str, offer: bytes, answer: bytes) -> Any:
    """Music on hold for side `held` while it is held (after a re-INVITE of the other side), none after."""
    holding = is_hold_offer(offer)
    playing = held in call.moh
    music = call.b2bua.hold_music
    extension = call.caller.extension if held == "a" else call.callee_extension
    if holding and not playing and music is not None and call.media is not None:
        held_leg = call.media.srtp.endpoint_leg(held, call.media.session.leg(held))  # SRTP when it is
        endpoint = music.start(call.tenant, held_leg, answer)
        if endpoint is not None:
            call.moh[held] = endpoint
            _log.info("Call {id}: music on hold for {ext}", id=call.id, ext=extension)
    elif not holding and playing:
        call.stop_moh(held)
        _log.info("Call {id}: music on hold for {ext} ends", id=call.id, ext=extension)
