"""Call pickup: answering, from one's own phone, a call that rings at another extension.

- The dialplan action `pickup group` (the demo's `*8`) takes the oldest call of the tenant ringing at an
  extension that shares a pickup group with the picker (`pickup_groups` of each extension);
  `pickup EXTENSION` (the demo's `**EXT`) takes the oldest call ringing at that extension, when the picker
  may: it shares a pickup group with it, or has `directed_pickup`.
- An INVITE with `Replaces` naming the early dialog of a ringing call (RFC 3891, a phone's busy-lamp key)
  is a directed pickup of that call with the same permission.

The ringing call's other legs are CANCELled and its caller is answered with the picker's media on the relay
leg the legs shared ("b"), so the caller's offer needs no re-INVITE: the picker's offer is answered with the
codec the picker and the caller's offer have in common. The check and the take-over happen in one turn of
the reactor, so of two pickers racing for one call exactly one wins; the other finds nothing left to pick
up and is refused (`480 Nothing To Pick Up`, or whatever its dialplan does after the action fails).

Only calls whose caller sent an offer can be picked up (an INVITE without SDP is answered by a callee's
offer; such a call just keeps ringing). The picker's own call ends quietly (its CDR says `picked up`); the
picked-up call goes on with the picker as its callee (`answered_by`, busy lamps and CDR).

This module knows nothing of the config: the permissions come with the directory's `ExtensionInfo`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from pbx.b2bua.bridge import CallSide
from pbx.b2bua.media import parse_sdp
from pbx.sip.errors import SipError
from pbx.sip.offer_answer import make_answer
from pbx.sip.sdp import SessionDescription

if TYPE_CHECKING:
    from pbx.b2bua.b2bua import B2BUA, Caller
    from pbx.b2bua.call import Call
    from pbx.dialplan import Action
    from pbx.sip.interfaces import IServerTransaction
    from pbx.sip.session_uas import UasSession

_AUXILIARY = ("telephone-event", "cn")
_STATIC = {"0": "PCMU", "8": "PCMA"}


def _audio(sdp: SessionDescription) -> Any:
    return next((m for m in sdp.media if m.media.lower() == "audio" and m.port), None)


def _codecs(media: Any) -> list[str]:
    rtpmap = media.rtpmap
    return [rtpmap[f].encoding if f in rtpmap else _STATIC.get(f, f) for f in media.formats]


def common_codec(offer: SessionDescription, sent: SessionDescription) -> str | None:
    """The first codec of the picker's `offer` that the offer the ringing legs got (`sent`) also has."""
    mine, theirs = _audio(offer), _audio(sent)
    if mine is None or theirs is None:
        return None
    wanted = {c.lower() for c in _codecs(theirs)}
    return next((c for c in _codecs(mine) if c.lower() not in _AUXILIARY and c.lower() in wanted), None)


def ringing_extensions(call: Call) -> list[str]:
    """The extensions a call is ringing at now (legs sent and not finished)."""
    return [
        leg.extension
        for leg in call._current
        if leg.binding is not None and not leg.status and not leg.cancel_wanted
    ]


class Pickup:
    """Call pickup for the calls of one B2BUA (module docstring)."""

    _log = Logger()

    def __init__(self, b2bua: B2BUA) -> None:
        self.b2bua = b2bua

    # -- who may pick up what ------------------------------------------------------------------------------

    def _info(self, tenant: str, extension: str) -> Any:
        directory = self.b2bua._directories(tenant)
        return directory.extensions.get(extension) if directory is not None else None

    def may_pick(self, tenant: str, picker: str, target: str, *, directed: bool) -> bool:
        """Whether `picker` may pick up a call ringing at `target`: they share a pickup group, or (for a
        directed pickup) the picker has `directed_pickup`."""
        mine, theirs = self._info(tenant, picker), self._info(tenant, target)
        if mine is None or theirs is None or picker == target:
            return False
        if set(getattr(mine, "pickup_groups", ())) & set(getattr(theirs, "pickup_groups", ())):
            return True
        return directed and bool(getattr(mine, "directed_pickup", False))

    def ringing(
        self, tenant: str, picker: str, target: str | None, exclude: Call | None = None
    ) -> Call | None:
        """The oldest call of `tenant` ringing at `target` (None: at any extension of the picker's groups)
        that `picker` may pick up."""
        found: list[Call] = []
        for call in self.b2bua.calls.values():
            if call is exclude or not self.can_connect(call) or call.caller.tenant != tenant:
                continue
            if call.caller.extension == picker:
                continue  # one's own outgoing call
            at = ringing_extensions(call)
            if target is not None:
                if target in at and self.may_pick(tenant, picker, target, directed=True):
                    found.append(call)
            elif any(self.may_pick(tenant, picker, ext, directed=False) for ext in at):
                found.append(call)
        return min(found, key=lambda c: c.started_at) if found else None

    @staticmethod
    def can_connect(call: Call) -> bool:
        """Whether `call` rings and can be handed to a picker (an offer went to its legs)."""
        return (
            not call.ended
            and not call.answered
            and not call.final_sent
            and call.winner is None
            and call.media is not None
            and bool(call.invite.body)
            and call.own_sdp is None
            and any(leg.invite is not None and leg.invite.body for leg in call._current)
        )

    # -- the `pickup` action -------------------------------------------------------------------------------

    def app(self, call: Call, action: Action) -> Deferred[str]:
        """`pickup group|EXTENSION` in the picker's call: connect the picker or raise 480."""
        what = action.args[0] if action.args else "group"
        picker = call.caller.extension
        if not picker or call.final_sent or not call.invite.body:
            raise SipError(480, "Nothing To Pick Up")
        target = None if what == "group" else what
        ringing = self.ringing(call.caller.tenant, picker, target, exclude=call)
        if ringing is None:
            self._log.info(
                "Call {id}: {ext} found nothing to pick up ({what})", id=call.id, ext=picker, what=what
            )
            raise SipError(480, "Nothing To Pick Up")
        session = call.a
        self.connect(ringing, session, call.invite.body, picker)
        call.released = "a"  # the picker's session now belongs to the picked-up call
        call.cause = "picked up"
        call._status = 200
        call._end("picked up")
        return succeed("answered")

    def replaces_early(self, txn: IServerTransaction, request: Any, caller: Caller, call: Call) -> None:
        """An INVITE with Replaces naming the early dialog of `call`: a directed pickup of it."""
        at = ringing_extensions(call)
        if not caller.extension or not any(
            self.may_pick(caller.tenant, caller.extension, ext, directed=True) for ext in at
        ):
            raise SipError(403, "Pickup Not Allowed")
        if not self.can_connect(call) or not request.body:
            raise SipError(481, "Nothing To Pick Up")
        session = self.b2bua.uas_session(txn, call, "b")
        self.connect(call, session, request.body, caller.extension)

    # -- connecting ------------------------------------------------------------------------------------------

    def connect(self, call: Call, session: UasSession, offer: bytes, picker: str) -> None:
        """Answer `call`'s caller with the picker (`session`, whose INVITE carried `offer`) as its callee.

        Raises:
            SipError: 488 when the picker and the caller have no codec in common (nothing changes then).
        """
        assert call.media is not None
        sent_body = next(
            leg.invite.body for leg in call._current if leg.invite is not None and leg.invite.body
        )
        mine, sent = parse_sdp(offer), SessionDescription.parse(sent_body)
        codec = common_codec(mine, sent)
        audio = _audio(mine)
        connection = mine.connection_for(audio) if audio is not None else None
        if codec is None or connection is None:
            raise SipError(488, "No Common Codec")
        supported = (codec, "telephone-event")
        # What the picker would have answered to the legs' offer: the caller's answer comes out of it.
        as_callee = make_answer(sent, connection.address, audio.port, supported)
        leg = call.media.session.leg("b")
        to_picker = make_answer(mine, leg.local_address, leg.local_port, supported)
        if as_callee is None or to_picker is None:
            raise SipError(488, "No Common Codec")
        to_caller = call.media.forward("b", as_callee.to_bytes(), is_offer=False)
        self._log.info("Call {id} picked up by {ext}", id=call.id, ext=picker)
        for ringing in call._current:
            ringing.cancel()
        call.answered_by = picker
        session.listener = CallSide(call, "b")
        call.b = session
        call._answer_caller(to_caller)
        session.answer(to_picker.to_bytes())
        call._finish_dial("answered")
