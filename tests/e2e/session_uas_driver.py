"""A tiny user agent for the end-to-end test of INVITE sessions: a real reactor, a real `SipStack` and
`TransportManager` on a loopback UDP port, and `InviteAcceptor` + `UasSession` answering every INVITE.

Run as `python tests/e2e/session_uas_driver.py PORT [MAX_SECONDS]`. It prints one line per event on stdout
(`READY`, `INVITE`, `CONFIRMED`, `REINVITE <status>`, `TERMINATED <reason>`); on each confirmed call it sends
a re-INVITE with its current description (a session refresh, RFC 4028 with `refresher=uas`), and after the
first session ends it stops. It stops anyway after MAX_SECONDS (default 30).
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from pbx.sip.offer_answer import make_answer
from pbx.sip.parser import ParserLimits
from pbx.sip.sdp import SessionDescription
from pbx.sip.session import InviteSession
from pbx.sip.session_events import SessionListener
from pbx.sip.session_uas import InviteAcceptor, UasSession
from pbx.sip.stack import SipStack
from pbx.sip.transport import TransportManager


def say(*words: object) -> None:
    print(*words, flush=True)


def main(reactor: Any, port_text: str, limit_text: str = "30") -> Deferred[None]:
    stack = SipStack(reactor, user_agent="session-driver")
    transports = TransportManager(reactor, stack, limits=ParserLimits(), idle_timeout=60)
    stack.attach_transport(transports)
    transports.listen_udp("127.0.0.1", int(port_text))
    done: Deferred[None] = Deferred()

    def finish() -> None:
        if not done.called:
            done.callback(None)

    class Listener(SessionListener):
        def confirmed(self, session: InviteSession) -> None:
            say("CONFIRMED")
            body, content_type = session.local_body or (b"", "application/sdp")
            d = session.reinvite(body, content_type)
            d.addCallbacks(lambda r: say("REINVITE", r.status), lambda f: say("REINVITE", f.value))

        def terminated(self, session: InviteSession, reason: str) -> None:
            say("TERMINATED", reason)
            reactor.callLater(0.5, finish)

    def on_session(session: UasSession) -> None:
        say("INVITE")
        session.provisional(180)
        offer = SessionDescription.parse(session.invite.body)
        answer = make_answer(offer, "127.0.0.1", 40000, ["PCMU", "PCMA", "telephone-event"])
        if answer is None:
            session.reject(488)
            return
        session.answer(answer.to_bytes())

    stack.register("INVITE", InviteAcceptor(stack, on_session, Listener))
    reactor.callLater(float(limit_text), finish)
    say("READY")
    return done


if __name__ == "__main__":
    react(main, sys.argv[1:])
