"""The B2BUA end to end through its transaction-user methods, on fakes (tests/b2bua/fakes.py).

Every call is placed by a `CallerPhone` (INVITE, 407, INVITE with Proxy-Authorization from `answer_challenge`)
against a real `DigestAuthenticator`, routed by a real `DialplanEngine` over templates each test writes, and
rung on contacts registered in a `LocationService` over a `MemoryLocationStore`. The called phones answer
through the transaction user the B2BUA handed to `FakeStack.send_request`; ACKs, BYEs, re-INVITEs and CANCELs
come in through `ack_received`, `request_received` and `cancel_received`; time is a `task.Clock`. No sockets,
no sleeping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pbx.dialplan import DialplanUnavailable
from pbx.media.interfaces import IMediaRelay, IRelayLeg, IRelaySession
from pbx.sip.interfaces import IDialogUsage, IFlow, IServerTransaction, ITransactionUser
from pbx.sip.sdp import SessionDescription

from .fakes import (
    CALLER_CONTACT,
    PBX_CONTACT,
    RELAY_ADDRESS,
    CalleePhone,
    CallerPhone,
    FakeFlow,
    FakeRelay,
    FakeServerTransaction,
    Harness,
    Registration,
    callee_sdp,
    deliver,
    respond_to,
    sdp,
    sdp_body,
    wire_request,
)

REG_1003 = Registration("1003", "sip:1003@192.168.1.30:5070", "udp:127.0.0.1:5070")
REG_1004 = Registration("1004", "sip:1004@192.168.1.40:5080", "udp:127.0.0.1:5080")

# The relay's ports (FakeRelay, first session): leg "a" faces the caller, leg "b" the called phones.
PORT_A, PORT_B = 40000, 40002


def statuses(txn: FakeServerTransaction | None) -> list[int]:
    """Every status sent on a server transaction, in order (provisional and final)."""
    assert txn is not None
    return txn.statuses


def audio(body: bytes) -> tuple[str | None, int, list[str]]:
    """(connection address, port, formats) of the first m= line."""
    description = SessionDescription.parse(body)
    media = description.media[0]
    connection = description.connection_for(media)
    return (connection.address if connection else None, media.port, list(media.formats))


def origin(body: bytes) -> tuple[str, str, int]:
    o = SessionDescription.parse(body).origin
    return (str(o.session_id), o.address, int(o.session_version))


class B2BUATestCase(SynchronousTestCase):
    """Builds harnesses in a fresh directory and checks that calls leave nothing behind."""

    def build(self, main: str | None = None, **kwargs: Any) -> Harness:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        return Harness.build(path, main, **kwargs)

    def answered(
        self, h: Harness, dialed: str = "1002", *, ack: bool = True, **caller: Any
    ) -> tuple[CallerPhone, CalleePhone]:
        """A call from 1001, rung (180) and answered (200 with SDP) by the single contact, ACKed."""
        phone = h.place_call(dialed, **caller)
        callee = h.callee()
        callee.respond(180)
        callee.answer()
        if ack:
            phone.ack()
        return phone, callee

    def assertIdle(self, h: Harness) -> None:
        """No call, no dialog, no timer, no open relay session; every INVITE's Deferred fired cleanly."""
        self.assertEqual(h.b2bua.calls, {})
        self.assertEqual(len(h.stack.dialogs), 0)  # no dialog left to route in-dialog requests to
        self.assertEqual(h.b2bua.counters["active"], 0)
        self.assertEqual(h.relay.sessions, 0)
        self.assertEqual(h.leftover_timers(), [])
        for phone in h.phones:
            if phone.deferred is not None:
                self.assertIsNone(self.successResultOf(phone.deferred))


class SeamTests(B2BUATestCase):
    """The B2BUA and the fakes provide the interfaces they claim."""

    def test_b2bua_is_a_transaction_user_and_its_calls_own_their_dialogs(self) -> None:
        h = self.build("dial 1002")
        self.assertTrue(verifyObject(ITransactionUser, h.b2bua))
        h.register_1002()
        self.answered(h)
        self.assertEqual(len(h.stack.dialogs), 2)  # the caller's and the callee's, in the stack's table
        for dialog in h.stack.dialogs:
            self.assertTrue(verifyObject(IDialogUsage, h.stack.dialogs.usage_of(dialog)))

    def test_fakes_provide_the_interfaces(self) -> None:
        relay = FakeRelay()
        session = relay.create_session("c")
        self.assertTrue(verifyObject(IMediaRelay, relay))
        self.assertTrue(verifyObject(IRelaySession, session))
        self.assertTrue(verifyObject(IRelayLeg, session.leg("a")))
        flow = FakeFlow()
        self.assertTrue(verifyObject(IFlow, flow))
        invite = wire_request("INVITE", "sip:1002@a.example", [("Call-ID", "x"), ("CSeq", "1 INVITE")])
        self.assertTrue(verifyObject(IServerTransaction, FakeServerTransaction(invite, flow)))
        self.assertEqual((session.leg("a").local_port, session.leg("b").local_port), (PORT_A, PORT_B))
        self.assertEqual(relay.create_session("d").leg("a").local_port, PORT_A + 4)


class AuthenticationTests(B2BUATestCase):
    """A new INVITE is challenged (407) and must come from an extension of the Request-URI's tenant."""

    def test_first_invite_is_challenged_then_the_answered_challenge_is_accepted(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.caller()
        first = phone.send_invite()
        self.assertEqual(statuses(first), [407])
        challenge = first.final
        assert challenge is not None
        self.assertTrue(challenge.headers.get_all("Proxy-Authenticate"))
        self.assertEqual(h.invites(), [])
        self.assertEqual(h.b2bua.calls, {})
        second = phone.send_invite(phone.credentials(challenge))
        self.assertEqual(statuses(second), [])  # ringing: no final yet
        self.assertEqual(len(h.invites()), 1)
        self.assertEqual(list(h.b2bua.calls), [phone.call_id])
        self.assertEqual(h.b2bua.counters["challenged"], 1)
        self.assertEqual(h.b2bua.counters["calls"], 1)
        self.assertEqual(h.b2bua.counters["active"], 1)

    def test_md5_credentials_are_accepted_too(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.caller()
        first = phone.send_invite()
        assert first.final is not None
        phone.send_invite(phone.credentials(first.final, algorithm="MD5"))
        self.assertEqual(len(h.invites()), 1)

    def test_a_wrong_password_is_challenged_again(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.caller(password="wrong")
        first = phone.send_invite()
        assert first.final is not None
        second = phone.send_invite(phone.credentials(first.final))
        self.assertEqual(statuses(second), [407])
        self.assertEqual(h.invites(), [])
        self.assertEqual(h.b2bua.counters["challenged"], 2)
        self.assertEqual(h.b2bua.counters["calls"], 0)

    def test_unknown_domain_is_404_without_a_challenge(self) -> None:
        h = self.build("dial 1002")
        phone = h.caller(domain="elsewhere.example")
        txn = phone.send_invite()
        self.assertEqual(statuses(txn), [404])
        self.assertEqual(h.b2bua.counters["challenged"], 0)
        self.assertEqual(h.cdrs(), [])

    def test_authenticated_user_that_is_no_extension_gets_403(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.caller(user="9999")
        txn = phone.call()
        self.assertEqual(statuses(txn), [403])
        self.assertEqual(h.invites(), [])
        self.assertEqual(h.b2bua.counters["calls"], 0)

    def test_a_request_outside_a_dialog_other_than_invite_is_481(self) -> None:
        h = self.build("dial 1002")
        bye = wire_request(
            "BYE",
            "sip:1002@a.example",
            [("From", "<sip:1001@a.example>;tag=x"), ("To", "<sip:1002@a.example>"), ("Call-ID", "c"),
             ("CSeq", "1 BYE")],
        )  # fmt: skip
        txn = FakeServerTransaction(bye, FakeFlow())
        deliver(h.b2bua, txn)
        self.assertEqual(statuses(txn), [481])

    def test_a_request_in_an_unknown_dialog_is_481_and_its_ack_is_dropped(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h)
        phone.bye()
        late = phone.request("INFO")
        self.assertEqual(statuses(late), [481])
        requests_before = len(h.stack.requests)
        phone.ack()  # matches no dialog any more
        self.assertEqual(len(h.stack.requests), requests_before)
        self.assertIdle(h)


class DialplanTests(B2BUATestCase):
    """The actions run as docs/dialplan.md "How actions run" says."""

    def test_dial_to_an_unregistered_extension_is_480_once_the_actions_end(self) -> None:
        h = self.build("dial 1002\nset after=dial\ndial 1004 if=unavailable")
        h.register(REG_1004)
        phone = h.place_call()
        assert phone.txn is not None
        # 1002 could not ring: the next action (1004, if=unavailable) rings, the caller waits.
        (sent,) = h.invites()
        self.assertEqual(sent.request.uri.user, "1004")  # type: ignore[union-attr]
        self.assertEqual(statuses(phone.txn), [])
        CalleePhone(h, sent).respond(480)
        self.assertEqual(statuses(phone.txn), [480])
        (cdr,) = h.cdrs()
        self.assertEqual((cdr.status, cdr.answered_by, cdr.hangup_by), (480, "", "pbx"))
        self.assertIdle(h)

    def test_nothing_registered_at_all_is_480_at_once(self) -> None:
        h = self.build("dial 1002")
        phone = h.place_call()
        self.assertEqual(statuses(phone.txn), [480])
        self.assertEqual(h.invites(), [])
        (cdr,) = h.cdrs()
        self.assertEqual((cdr.cause, cdr.status), ("unavailable", 480))
        self.assertIdle(h)

    def test_the_context_time_comes_from_the_injected_clock(self) -> None:
        """`now` in a dialplan is the clock's time (timezone-aware UTC), not the machine's wall clock."""
        h = self.build("hangup {{ 400 + now.hour }}")
        h.clock.advance(1_700_000_000)  # 2023-11-14 22:13:20 UTC
        phone = h.place_call("5555")
        self.assertEqual(statuses(phone.txn), [422])
        self.assertIdle(h)

    def test_an_unreadable_dialplan_is_503_with_retry_after(self) -> None:
        """A template the engine cannot read now (descriptors out, say): a temporary 503, not a 500."""
        h = self.build("dial 1002")

        def unreadable(*args: Any, **kwargs: Any) -> Any:
            raise DialplanUnavailable("cannot read the template now (Too many open files)", "main.j2")

        h.b2bua._dialplans.render = unreadable  # type: ignore[method-assign]
        phone = h.place_call("1002")
        self.assertEqual(statuses(phone.txn), [503])
        self.assertEqual(phone.txn.responses[-1].headers.get("Retry-After"), "5")
        self.assertIdle(h)

    def test_hangup_with_a_code_rejects_with_it(self) -> None:
        h = self.build("hangup 404")
        phone = h.place_call("5555")
        self.assertEqual(statuses(phone.txn), [404])
        (cdr,) = h.cdrs()
        self.assertEqual((cdr.dialed, cdr.cause, cdr.status), ("5555", "hangup", 404))
        self.assertIdle(h)

    def test_template_branches_on_the_context(self) -> None:
        main = """
{% if call.dialed in extensions and caller.extension == "1001" and call.transport == "udp" %}
dial {{ call.dialed }}
{% else %}
hangup 404
{% endif %}
"""
        h = self.build(main)
        h.register_1002()
        h.place_call("1002")
        self.assertEqual(len(h.invites()), 1)
        other = h.place_call("7777")
        self.assertEqual(statuses(other.txn), [404])

    def test_extensions_show_who_is_registered_at_render_time(self) -> None:
        main = """
{% if extensions["1002"].registered and not extensions["1003"].registered and extensions|length > 2 %}
dial 1002
{% else %}
hangup 404
{% endif %}
"""
        h = self.build(main)
        self.assertEqual(statuses(h.place_call("1002").txn), [404])  # 1002 not registered yet
        h.register_1002()
        h.place_call("1002")
        self.assertEqual(len(h.invites()), 1)
        h.register(REG_1003)
        h.place_call("1002")
        self.assertEqual(len(h.invites()), 1)  # 1003 registered now: 404

    def test_the_directory_is_prepared_once_not_per_call(self) -> None:
        h = self.build("hangup 404")
        h.place_call("1002")
        views = dict(h.b2bua._views)
        h.place_call("1002")
        self.assertEqual(len(views), 1)
        ((tenant, view),) = views.items()
        self.assertIs(h.b2bua._views[tenant], view)

    def test_goto_continues_in_another_template_with_vars_and_result(self) -> None:
        h = self.build(
            "set who=reception\ndial 1002\ngoto after\nhangup 403",
            templates={
                "after": '{% if result == "busy" and vars.who == "reception" %}dial 1003{% else %}hangup 404'
                "{% endif %}"
            },
        )
        h.register_1002()
        h.register(REG_1003)
        phone = h.place_call()
        h.callee().respond(486)
        _first, second = h.invites()
        self.assertEqual(second.request.uri.user, "1003")  # type: ignore[union-attr]
        CalleePhone(h, second).respond(486)
        self.assertEqual(statuses(phone.txn), [486])  # not the 403 after the goto
        self.assertIdle(h)

    def test_goto_chain_is_limited_to_sixteen_renders(self) -> None:
        # Each render counts itself in vars.n and jumps again until `limit` renders happened.
        template = """
{% set n = (vars.get("n", "0") | int) + 1 %}
set n={{ n }}
{% if n < LIMIT %}
goto main
{% else %}
hangup 404
{% endif %}
"""
        h = self.build(template.replace("LIMIT", "16"))
        self.assertEqual(statuses(h.place_call().txn), [404])  # 16 renders: fine
        h.write("main", template.replace("LIMIT", "17"))
        self.assertEqual(statuses(h.place_call().txn), [500])  # a 17th: a loop
        self.assertIdle(h)

    def test_missing_template_is_500(self) -> None:
        h = self.build()
        phone = h.place_call()
        self.assertEqual(statuses(phone.txn), [500])
        (cdr,) = h.cdrs()
        self.assertEqual(cdr.status, 500)
        self.assertIdle(h)

    def test_template_that_never_worked_is_500(self) -> None:
        h = self.build("dail 1002")
        self.assertEqual(statuses(h.place_call().txn), [500])

    def test_action_without_an_implementation_is_500(self) -> None:
        h = self.build("voicemail 1002")
        self.assertEqual(statuses(h.place_call().txn), [500])
        self.assertIdle(h)

    def test_goto_to_a_missing_template_is_500(self) -> None:
        h = self.build("goto nowhere")
        self.assertEqual(statuses(h.place_call().txn), [500])


class DialResultTests(B2BUATestCase):
    """How a dial ends: busy, declined, no answer, unavailable; and what the caller gets."""

    def test_busy_callee_gives_the_caller_486(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        callee = h.callee()
        callee.respond(100)
        callee.respond(180)
        callee.respond(486)
        self.assertEqual(statuses(phone.txn), [180, 486])
        self.assertEqual(h.stack.cancels, [])
        (cdr,) = h.cdrs()
        self.assertEqual((cdr.cause, cdr.status, cdr.hangup_by), ("busy", 486, "pbx"))
        self.assertEqual(cdr.legs, "1002@sip:1002@192.168.1.20:5062=486")
        self.assertEqual(h.b2bua.counters["failed"], 1)
        self.assertIdle(h)

    def test_busy_then_the_if_busy_dial_rings_the_second_target(self) -> None:
        h = self.build("dial 1002\ndial 1003 if=busy\ndial 1004 if=noanswer")
        h.register_1002()
        h.register(REG_1003, REG_1004)
        phone = h.place_call()
        h.callee().respond(486)
        self.assertEqual(statuses(phone.txn), [])
        _first, second = h.invites()
        self.assertEqual(second.destination, ("udp", "127.0.0.1", 5070))
        callee = CalleePhone(h, second)
        callee.respond(180)
        callee.answer()
        self.assertEqual(statuses(phone.txn), [180, 200])
        self.assertEqual(len(h.invites()), 2)  # 1004 (if=noanswer) never rang
        phone.ack()
        phone.bye()
        (cdr,) = h.cdrs()
        self.assertEqual((cdr.answered_by, cdr.status, cdr.cause), ("1003", 200, "normal"))
        self.assertIdle(h)

    def test_decline_gives_the_caller_603(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        h.callee().respond(603)
        self.assertEqual(statuses(phone.txn), [603])
        (cdr,) = h.cdrs()
        self.assertEqual(cdr.status, 603)
        self.assertIdle(h)

    def test_decline_counts_as_busy_for_the_next_actions(self) -> None:
        h = self.build("dial 1002\ndial 1003 if=busy")
        h.register_1002()
        h.register(REG_1003)
        phone = h.place_call()
        h.callee().respond(603)
        second = h.invites()[1]
        CalleePhone(h, second).respond(486)
        self.assertEqual(statuses(phone.txn), [486])  # the last dial's result
        self.assertIdle(h)

    def test_ring_timeout_cancels_the_ringing_leg_and_the_caller_gets_480(self) -> None:
        h = self.build("dial 1002 timeout=20")
        h.register_1002()
        phone = h.place_call()
        callee = h.callee()
        h.clock.advance(1)
        callee.respond(180)
        h.clock.advance(18.9)
        self.assertEqual(h.stack.cancels, [])
        self.assertEqual(statuses(phone.txn), [180])
        h.clock.advance(0.1)
        (cancel,) = h.stack.cancels
        self.assertEqual(cancel.destination, ("udp", "127.0.0.1", 5062))
        self.assertEqual(cancel.request.headers.get("Via"), callee.invite.headers.get("Via"))
        self.assertEqual(cancel.request.call_id, callee.invite.call_id)
        self.assertEqual((cancel.request.cseq.number, cancel.request.cseq.method), (1, "CANCEL"))
        self.assertEqual(statuses(phone.txn), [180, 480])
        callee.respond(487)  # the leg's INVITE ends; nothing more for the caller
        self.assertEqual(statuses(phone.txn), [180, 480])
        (cdr,) = h.cdrs()
        self.assertEqual((cdr.cause, cdr.status, cdr.end), ("noanswer", 480, 20.0))
        self.assertIdle(h)

    def test_default_ring_timeout_is_the_b2buas(self) -> None:
        h = self.build("dial 1002", ring_timeout=7)
        h.register_1002()
        phone = h.place_call()
        h.callee().respond(180)
        h.clock.advance(6.9)
        self.assertEqual(statuses(phone.txn), [180])
        h.clock.advance(0.1)
        self.assertEqual(statuses(phone.txn), [180, 480])

    def test_cancel_waits_for_a_provisional_response(self) -> None:
        h = self.build("dial 1002 timeout=5")
        h.register_1002()
        phone = h.place_call()
        callee = h.callee()
        h.clock.advance(5)
        self.assertEqual(h.stack.cancels, [])  # RFC 3261 9.1: nothing to CANCEL before a provisional
        self.assertEqual(statuses(phone.txn), [480])
        callee.respond(180)
        self.assertEqual(len(h.stack.cancels), 1)  # now the CANCEL goes
        self.assertEqual(statuses(phone.txn), [480])  # the 180 is not relayed
        callee.respond(487)
        self.assertIdle(h)

    def test_a_100_trying_is_enough_to_cancel(self) -> None:
        h = self.build("dial 1002 timeout=5")
        h.register_1002()
        h.place_call()
        callee = h.callee()
        h.clock.advance(5)
        callee.respond(100)
        self.assertEqual(len(h.stack.cancels), 1)

    def test_no_answer_then_the_if_noanswer_dial(self) -> None:
        h = self.build("dial 1002 timeout=5\ndial 1003 if=busy\ndial 1004 if=noanswer timeout=5")
        h.register_1002()
        h.register(REG_1003, REG_1004)
        phone = h.place_call()
        h.callee().respond(180)
        h.clock.advance(5)
        first, second = h.invites()
        self.assertEqual(second.request.uri.user, "1004")  # type: ignore[union-attr]
        self.assertEqual(statuses(phone.txn), [180])
        h.clock.advance(5)
        self.assertEqual(statuses(phone.txn), [180, 480])
        CalleePhone(h, first).respond(487)
        self.assertIdle(h)

    def test_transport_failure_is_unavailable(self) -> None:
        h = self.build("dial 1002\nhangup 404 if=unavailable\nhangup 403")
        h.register_1002()
        phone = h.place_call()
        sent = h.invites()[0]
        sent.tu.transport_error(sent.transaction, "connection refused")
        self.assertEqual(statuses(phone.txn), [404])
        self.assertIdle(h)

    def test_transaction_timeout_is_noanswer(self) -> None:
        h = self.build("dial 1002\nhangup 404 if=noanswer\nhangup 403")
        h.register_1002()
        phone = h.place_call()
        sent = h.invites()[0]
        sent.tu.transaction_timeout(sent.transaction)
        self.assertEqual(statuses(phone.txn), [404])
        self.assertIdle(h)

    def test_ring_group_rings_every_member(self) -> None:
        h = self.build("dial group:sales timeout=10")
        h.register_1002()
        h.register(REG_1003)
        h.place_call("600")
        self.assertEqual(
            [s.request.uri.user for s in h.invites()],  # type: ignore[union-attr]
            ["1002", "1003"],
        )

    def test_sequential_dial_rings_one_target_after_another(self) -> None:
        h = self.build("dial 1002 1003 strategy=sequential ringtime=5 timeout=20")
        h.register_1002()
        h.register(REG_1003)
        phone = h.place_call()
        (first,) = h.invites()
        CalleePhone(h, first).respond(180)
        h.clock.advance(5)
        self.assertEqual(len(h.stack.cancels), 1)
        first, second = h.invites()
        self.assertEqual(second.request.uri.user, "1003")  # type: ignore[union-attr]
        callee = CalleePhone(h, second)
        callee.answer()
        self.assertEqual(statuses(phone.txn), [180, 200])

    def test_busy_and_unregistered_in_one_dial_is_busy(self) -> None:
        h = self.build("dial 1002 1003\nhangup 404 if=busy\nhangup 403")
        h.register_1002()
        phone = h.place_call()
        h.callee().respond(486)
        self.assertEqual(statuses(phone.txn), [404])


class ForkingTests(B2BUATestCase):
    """Two contacts of 1002 ring at once; the first 2xx wins (RFC 3261 16.7-like behaviour of a B2BUA)."""

    def setUp(self) -> None:
        self.h = self.build("dial 1002 timeout=30")
        self.h.register_1002(contacts=2)
        self.phone = self.h.place_call()
        self.one, self.two = self.h.callees()

    def test_both_contacts_ring_at_their_registered_flows(self) -> None:
        self.assertEqual(
            [s.destination for s in self.h.invites()],
            [("udp", "127.0.0.1", 5062), ("udp", "127.0.0.1", 5064)],
        )
        self.assertEqual(
            [str(s.request.uri) for s in self.h.invites()],
            ["sip:1002@192.168.1.20:5062", "sip:1002@192.168.1.21:5064"],
        )
        self.assertNotEqual(self.one.invite.call_id, self.two.invite.call_id)

    def test_first_200_wins_and_the_other_fork_is_cancelled(self) -> None:
        self.one.respond(180)
        self.two.respond(180)
        self.two.answer()
        self.assertEqual(statuses(self.phone.txn), [180, 200])
        (cancel,) = self.h.stack.cancels
        self.assertEqual(cancel.destination, self.one.sent.destination)
        self.assertEqual(cancel.request.call_id, self.one.invite.call_id)
        (ack,) = self.h.stack.acks
        self.assertEqual(ack.destination, self.two.sent.destination)
        self.assertEqual(ack.request.to.tag, self.two.tag)
        self.assertEqual(ack.request.cseq.number, 1)
        self.one.respond(487)
        self.assertEqual(statuses(self.phone.txn), [180, 200])
        self.phone.ack()
        self.phone.bye()
        (cdr,) = self.h.cdrs()
        self.assertEqual(cdr.legs, "1002@sip:1002@192.168.1.20:5062=487,1002@sip:1002@192.168.1.21:5064=200")
        self.assertIdle(self.h)

    def test_a_late_200_from_the_loser_is_acked_and_hung_up(self) -> None:
        self.one.respond(180)
        self.two.answer()
        self.one.answer()  # crossed the CANCEL
        acks = [a for a in self.h.stack.acks if a.request.call_id == self.one.invite.call_id]
        self.assertEqual(len(acks), 1)
        (bye,) = self.h.stack.sent("BYE")
        self.assertEqual(bye.request.call_id, self.one.invite.call_id)
        self.assertEqual(bye.request.to.tag, self.one.tag)
        self.assertEqual(bye.destination, self.one.sent.destination)
        self.assertEqual(statuses(self.phone.txn), [180, 200])  # one 200
        self.phone.ack()
        # The winner's call goes on: a BYE from the caller reaches the winner.
        self.phone.bye()
        byes = self.h.stack.sent("BYE")
        self.assertEqual(byes[-1].request.call_id, self.two.invite.call_id)
        self.assertIdle(self.h)

    def test_a_fork_that_never_rang_is_cancelled_when_it_does(self) -> None:
        self.two.answer()
        self.assertEqual(self.h.stack.cancels, [])
        self.one.respond(180)
        (cancel,) = self.h.stack.cancels
        self.assertEqual(cancel.request.call_id, self.one.invite.call_id)
        self.assertEqual(statuses(self.phone.txn), [200])  # no 180 after the 200

    def test_180_is_relayed_once(self) -> None:
        self.one.respond(180)
        self.two.respond(180)
        self.one.respond(180)
        self.assertEqual(statuses(self.phone.txn), [180])
        ringing = self.phone.txn.responses[0]  # type: ignore[union-attr]
        self.assertEqual(ringing.headers.get("Contact"), PBX_CONTACT)
        self.assertIsNotNone(ringing.to.tag)
        self.assertEqual(ringing.body, b"")

    def test_183_with_sdp_is_relayed_with_the_sdp_rewritten(self) -> None:
        self.one.respond(180)
        self.one.respond(183, callee_sdp())
        self.assertEqual(statuses(self.phone.txn), [180, 183])
        progress = self.phone.txn.responses[1]  # type: ignore[union-attr]
        self.assertEqual(progress.headers.get("Content-Type"), "application/sdp")
        self.assertEqual(audio(progress.body)[:2], (RELAY_ADDRESS, PORT_A))
        self.assertNotIn(b"192.168.1.20", progress.body)
        self.assertEqual(self.h.relay.created[0].leg("b").remote, ("192.168.1.20", 30000))

    def test_no_provisional_after_the_200(self) -> None:
        self.two.answer()
        self.one.respond(180)
        self.one.respond(183, callee_sdp())
        self.assertEqual(statuses(self.phone.txn), [200])

    def test_both_forks_busy_is_486(self) -> None:
        self.one.respond(486)
        self.assertEqual(statuses(self.phone.txn), [])  # the other still rings
        self.two.respond(486)
        self.assertEqual(statuses(self.phone.txn), [486])
        self.assertIdle(self.h)

    def test_one_fork_busy_the_other_answers(self) -> None:
        self.one.respond(486)
        self.two.answer()
        self.assertEqual(statuses(self.phone.txn), [200])
        self.assertEqual(self.h.stack.cancels, [])


class CallerCancelTests(B2BUATestCase):
    """The caller CANCELs while the legs ring."""

    def test_cancel_gives_487_cancels_the_legs_and_writes_the_cdr(self) -> None:
        h = self.build("dial 1002 timeout=30\ndial 1003 if=noanswer")
        h.register_1002(contacts=2)
        h.register(REG_1003)
        phone = h.place_call()
        one, two = h.callees()
        one.respond(180)
        two.respond(100)
        two.respond(180)
        h.clock.advance(3)
        phone.cancel()
        self.assertEqual(statuses(phone.txn), [180, 487])
        self.assertEqual(
            sorted(c.request.call_id for c in h.stack.cancels),  # type: ignore[type-var]
            sorted([one.invite.call_id, two.invite.call_id]),  # type: ignore[type-var]
        )
        self.assertEqual(len(h.invites()), 2)  # nothing more runs: 1003 never rings
        (cdr,) = h.cdrs()
        self.assertEqual(
            (cdr.cause, cdr.status, cdr.hangup_by, cdr.answer, cdr.end),
            ("cancelled", 487, "caller", None, 3.0),
        )
        one.respond(487)
        two.respond(487)
        self.assertEqual(statuses(phone.txn), [180, 487])
        self.assertIdle(h)

    def test_cancel_before_any_provisional_is_sent_when_one_arrives(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        phone.cancel()
        self.assertEqual(statuses(phone.txn), [487])
        self.assertEqual(h.stack.cancels, [])
        callee = h.callee()
        callee.respond(180)
        self.assertEqual(len(h.stack.cancels), 1)
        self.assertEqual(statuses(phone.txn), [487])
        callee.answer()  # crossed the CANCEL: ACK and BYE
        self.assertEqual(len(h.stack.acks), 1)
        self.assertEqual(len(h.stack.sent("BYE")), 1)
        self.assertIdle(h)

    def test_cancel_after_the_200_changes_nothing(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h)
        phone.cancel()
        self.assertEqual(statuses(phone.txn), [180, 200])
        self.assertEqual(h.stack.cancels, [])
        self.assertEqual(len(h.b2bua.calls), 1)

    def test_cancel_for_an_unknown_transaction_is_487(self) -> None:
        h = self.build("dial 1002")
        txn = FakeServerTransaction(
            wire_request(
                "INVITE",
                "sip:1002@a.example",
                [
                    ("From", "<sip:1001@a.example>;tag=t"),
                    ("To", "<sip:1002@a.example>"),
                    ("Call-ID", "u"),
                    ("CSeq", "1 INVITE"),
                ],
            ),
            FakeFlow(),
        )
        h.b2bua.cancel_received(txn.request, txn)
        self.assertEqual(statuses(txn), [487])


class AnsweredCallTests(B2BUATestCase):
    """Once answered, the call is two dialogs: BYE, re-INVITE and ACK cross from one to the other."""

    def test_the_200_reaches_the_caller_with_our_contact_and_the_relay_sdp(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h, ack=False)
        ok = phone.txn.final  # type: ignore[union-attr]
        assert ok is not None
        self.assertEqual(ok.status, 200)
        self.assertEqual(ok.headers.get("Contact"), PBX_CONTACT)
        self.assertEqual(audio(ok.body), (RELAY_ADDRESS, PORT_A, ["0", "8", "101"]))
        self.assertEqual(origin(ok.body)[1:], (RELAY_ADDRESS, 1))
        (ack,) = h.stack.acks
        self.assertEqual(str(ack.request.uri), callee.contact[1:-1])  # the Contact of its 200
        self.assertEqual(ack.destination, ("udp", "127.0.0.1", 5062))
        session = h.relay.created[0]
        self.assertEqual(session.leg("a").set_remote_calls, [("192.168.1.10", 49170, 49171)])
        self.assertEqual(session.leg("b").set_remote_calls, [("192.168.1.20", 30000, 30001)])
        self.assertEqual(h.b2bua.counters["active"], 1)

    def test_bye_from_the_caller_is_answered_and_sent_to_the_callee(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        h.clock.advance(60)
        txn = phone.bye()
        self.assertEqual(statuses(txn), [200])
        (bye,) = h.stack.sent("BYE")
        self.assertEqual(bye.destination, ("udp", "127.0.0.1", 5062))
        self.assertEqual(str(bye.request.uri), callee.contact[1:-1])
        self.assertEqual(bye.request.call_id, callee.invite.call_id)
        self.assertEqual(bye.request.from_.tag, callee.invite.from_.tag)
        self.assertEqual(bye.request.to.tag, callee.tag)
        self.assertEqual(bye.request.cseq.number, 2)
        (cdr,) = h.cdrs()
        self.assertEqual(
            (cdr.caller, cdr.dialed, cdr.answered_by, cdr.cause, cdr.status, cdr.hangup_by),
            ("1001", "1002", "1002", "normal", 200, "caller"),
        )
        self.assertEqual((cdr.start, cdr.answer, cdr.end, cdr.billsec), (0.0, 0.0, 60.0, 60.0))
        self.assertEqual(cdr.call_id, phone.call_id)
        self.assertEqual(cdr.tenant, "acme")
        self.assertEqual(h.relay.created[0].closed, True)
        self.assertEqual(h.b2bua.counters["answered"], 1)
        respond_to(bye, 200)  # the callee's answer changes nothing
        self.assertIdle(h)

    def test_bye_from_the_callee_is_sent_to_the_caller(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        txn = callee.bye()
        self.assertEqual(statuses(txn), [200])
        (bye,) = h.stack.sent("BYE")
        self.assertEqual(bye.destination, ("udp", "192.168.1.10", 5060))
        self.assertEqual(str(bye.request.uri), CALLER_CONTACT[1:-1])
        self.assertEqual(bye.request.call_id, phone.call_id)
        self.assertEqual(bye.request.from_.tag, phone.remote_tag)
        self.assertEqual(bye.request.to.tag, phone.tag)
        (cdr,) = h.cdrs()
        self.assertEqual((cdr.hangup_by, cdr.cause), ("callee", "normal"))
        self.assertIdle(h)

    def test_reinvite_from_the_caller_is_relayed_with_the_sdp_rewritten(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        first_offer = callee.invite.body
        txn = phone.request("INVITE", sdp_body(port=49180, version=2, direction="sendonly"))
        (reinvite,) = [s for s in h.stack.sent("INVITE") if s.request.to.tag is not None]
        self.assertEqual(reinvite.destination, ("udp", "127.0.0.1", 5062))
        self.assertEqual(reinvite.request.call_id, callee.invite.call_id)
        self.assertEqual(reinvite.request.cseq.number, 2)
        self.assertEqual(reinvite.request.headers.get("Contact"), PBX_CONTACT)
        self.assertEqual(audio(reinvite.request.body)[:2], (RELAY_ADDRESS, PORT_B))
        self.assertIn(b"a=sendonly", reinvite.request.body)
        self.assertNotIn(b"192.168.1.10", reinvite.request.body)
        session_id, _, version = origin(reinvite.request.body)
        self.assertEqual((session_id, version), (origin(first_offer)[0], origin(first_offer)[2] + 1))
        self.assertEqual(h.relay.created[0].leg("a").remote, ("192.168.1.10", 49180))
        # The callee answers; the answer goes back rewritten, the callee gets its ACK.
        first_answer = phone.txn.final.body  # type: ignore[union-attr]
        respond_to(
            reinvite, 200, callee_sdp(port=30010, version=2, direction="recvonly"), contact=callee.contact
        )
        self.assertEqual(statuses(txn), [200])
        back = txn.final
        assert back is not None
        self.assertEqual(audio(back.body)[:2], (RELAY_ADDRESS, PORT_A))
        self.assertIn(b"a=recvonly", back.body)
        self.assertEqual(origin(back.body)[0], origin(first_answer)[0])
        self.assertEqual(origin(back.body)[2], origin(first_answer)[2] + 1)
        self.assertEqual(back.headers.get("Contact"), PBX_CONTACT)
        self.assertEqual(h.relay.created[0].leg("b").remote, ("192.168.1.20", 30010))
        acks = [a for a in h.stack.acks if a.request.cseq.number == 2]
        self.assertEqual(len(acks), 1)
        self.assertEqual(acks[0].destination, ("udp", "127.0.0.1", 5062))
        # Our 200 to the caller is retransmitted until its ACK.
        h.clock.advance(0.5)
        self.assertEqual([r.status for r, _, _ in h.stack.responses], [200])
        phone.ack()
        h.clock.advance(10)
        self.assertEqual(len(h.stack.responses), 1)
        phone.bye()
        self.assertIdle(h)

    def test_reinvite_rejected_by_the_callee_is_relayed_back(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h)
        txn = phone.request("INVITE", sdp_body(version=2))
        (reinvite,) = [s for s in h.stack.sent("INVITE") if s.request.to.tag is not None]
        respond_to(reinvite, 100)
        respond_to(reinvite, 488)
        self.assertEqual(statuses(txn), [488])
        self.assertEqual(len(h.stack.acks), 1)  # only the ACK of the first 200: a 488's ACK is the stack's
        self.assertEqual(len(h.b2bua.calls), 1)

    def test_info_from_the_callee_is_relayed_to_the_caller(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        txn = callee.request("INFO")
        (info,) = h.stack.sent("INFO")
        self.assertEqual(info.destination, ("udp", "192.168.1.10", 5060))
        self.assertEqual(info.request.call_id, phone.call_id)
        respond_to(info, 200)
        self.assertEqual(statuses(txn), [200])

    def test_relayed_request_timing_out_is_408(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h)
        txn = phone.request("INFO")
        (info,) = h.stack.sent("INFO")
        info.tu.transaction_timeout(info.transaction)
        self.assertEqual(statuses(txn), [408])

    def test_reinvite_before_the_ack_is_491(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h, ack=False)
        txn = phone.request("INVITE", sdp_body(version=2))
        self.assertEqual(statuses(txn), [491])

    def test_malformed_sdp_in_a_reinvite_is_400(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h)
        txn = phone.request("INVITE", b"v=0\r\nbogus\r\n")
        self.assertEqual(statuses(txn), [400])
        self.assertEqual(len(h.b2bua.calls), 1)

    def test_2xx_is_retransmitted_until_the_ack(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h, ack=False)
        h.clock.pump([0.5] * 16)
        self.assertEqual([at for _, _, at in h.stack.responses], [0.5, 1.5, 3.5, 7.5])
        self.assertTrue(all(r is phone.txn.final for r, _, _ in h.stack.responses))  # type: ignore[union-attr]
        self.assertTrue(all(flow is phone.flow for _, flow, _ in h.stack.responses))
        phone.ack()
        h.clock.pump([0.5] * 80)
        self.assertEqual(len(h.stack.responses), 4)
        self.assertEqual(h.stack.sent("BYE"), [])
        self.assertEqual(len(h.b2bua.calls), 1)

    def test_missing_ack_hangs_up_after_32_seconds(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h, ack=False)
        h.clock.advance(31.9)
        self.assertEqual(h.stack.sent("BYE"), [])
        h.clock.advance(0.1)
        byes = h.stack.sent("BYE")
        self.assertEqual(
            sorted(b.request.call_id for b in byes),  # type: ignore[type-var]
            sorted([phone.call_id, callee.invite.call_id]),  # type: ignore[type-var]
        )
        (cdr,) = h.cdrs()
        self.assertEqual((cdr.hangup_by, cdr.status, cdr.cause), ("pbx", 200, "pbx"))
        self.assertIdle(h)

    def test_2xx_is_sent_once_over_tcp_but_the_ack_wait_still_applies(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, _callee = self.answered(h, ack=False, flow=FakeFlow("TCP"))
        h.clock.advance(31.9)
        self.assertEqual(h.stack.responses, [])
        h.clock.advance(0.1)
        self.assertEqual(len(h.stack.sent("BYE")), 2)
        (bye_to_caller,) = [b for b in h.stack.sent("BYE") if b.request.call_id == phone.call_id]
        self.assertEqual(bye_to_caller.destination, ("tcp", "192.168.1.10", 5060))
        self.assertIdle(h)

    def test_retransmitted_2xx_from_the_callee_is_acked_again(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        callee.answer()
        self.assertEqual(len(h.stack.acks), 2)
        self.assertEqual(statuses(phone.txn), [180, 200])

    def test_maximum_call_duration_hangs_up(self) -> None:
        h = self.build("dial 1002", max_call_duration=3600)
        h.register_1002()
        self.answered(h)
        h.clock.advance(3599)
        self.assertEqual(h.stack.sent("BYE"), [])
        h.clock.advance(1)
        self.assertEqual(len(h.stack.sent("BYE")), 2)
        (cdr,) = h.cdrs()
        self.assertEqual((cdr.hangup_by, cdr.end), ("pbx", 3600.0))
        self.assertIdle(h)

    def test_stop_hangs_up_answered_calls_and_rejects_ringing_ones(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        _answered, _callee = self.answered(h)
        h.register(REG_1003)
        ringing = h.place_call("1002")
        self.successResultOf(h.b2bua.stop())
        self.assertEqual(statuses(ringing.txn), [503])
        self.assertEqual(len(h.stack.sent("BYE")), 2)
        self.assertEqual(len(h.cdrs()), 2)
        self.assertIdle(h)


class LateOfferTests(B2BUATestCase):
    """An INVITE without SDP: the callee's 2xx carries the offer, the caller's ACK the answer (RFC 3264)."""

    def test_offer_in_the_200_and_answer_in_the_ack(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call(body=b"")
        callee = h.callee()
        self.assertEqual(callee.invite.body, b"")
        self.assertIsNone(callee.invite.headers.get("Content-Type"))
        callee.respond(180)
        callee.answer(callee_sdp())
        ok = phone.txn.final  # type: ignore[union-attr]
        assert ok is not None
        self.assertEqual(audio(ok.body)[:2], (RELAY_ADDRESS, PORT_A))
        self.assertEqual(h.stack.acks, [])  # the callee's ACK waits for the caller's answer
        phone.ack(sdp_body(port=49200, formats=(("0", "PCMU/8000"),)))
        (ack,) = h.stack.acks
        self.assertEqual(ack.destination, ("udp", "127.0.0.1", 5062))
        self.assertEqual(ack.request.headers.get("Content-Type"), "application/sdp")
        # The callee keeps the telephone-event it offered: the PBX converts the caller's DTMF for it.
        self.assertEqual(audio(ack.request.body), (RELAY_ADDRESS, PORT_B, ["0", "101"]))
        session = h.relay.created[0]
        self.assertEqual(session.leg("a").remote, ("192.168.1.10", 49200))
        self.assertEqual(session.leg("b").remote, ("192.168.1.20", 30000))
        phone.bye()
        self.assertIdle(h)


class SdpTests(B2BUATestCase):
    """Media anchoring and topology hiding as the phones see it."""

    def test_malformed_sdp_in_the_invite_is_400(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call(body=b"v=0\r\nthis is not sdp\r\n")
        self.assertEqual(statuses(phone.txn), [400])
        self.assertEqual(h.invites(), [])
        (cdr,) = h.cdrs()
        self.assertEqual(cdr.status, 400)
        self.assertIdle(h)

    def test_no_allowed_codec_is_488(self) -> None:
        h = self.build("dial 1002", codecs=("PCMA", "telephone-event"))
        h.register_1002()
        phone = h.place_call(body=sdp_body(formats=(("0", "PCMU/8000"), ("101", "telephone-event/8000"))))
        self.assertEqual(statuses(phone.txn), [488])
        self.assertIn("304", phone.txn.final.headers.get("Warning") or "")  # type: ignore[union-attr]
        self.assertEqual(h.invites(), [])
        self.assertIdle(h)

    def test_codecs_are_filtered_to_the_allow_list(self) -> None:
        h = self.build("dial 1002", codecs=("PCMA", "telephone-event"))
        h.register_1002()
        h.place_call()
        invite = h.callee().invite
        self.assertEqual(audio(invite.body)[2], ["8", "101"])
        self.assertNotIn(b"PCMU", invite.body)

    def test_topology_is_hidden_from_the_callee(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        caller_invite = phone.txn.request  # type: ignore[union-attr]
        sent = h.callee().invite
        wire = sent.to_bytes()
        self.assertNotIn(phone.call_id.encode(), wire)
        self.assertNotIn(phone.tag.encode(), wire)
        self.assertNotIn(b"192.168.1.10", wire)  # the caller's Via, Contact and SDP address
        self.assertNotIn(caller_invite.top_via.branch.encode(), wire)  # type: ignore[union-attr]
        self.assertNotIn(b"49170", wire)  # the caller's RTP port
        self.assertNotIn(b"TestPhone", wire)
        self.assertNotIn(b"Proxy-Authorization", wire)
        (via,) = sent.headers.get_all("Via")
        self.assertIn("198.51.100.1", via)
        self.assertEqual(sent.headers.get("Contact"), PBX_CONTACT)
        self.assertEqual(sent.from_.uri.user, "1001")  # type: ignore[union-attr]
        self.assertEqual(sent.from_.display_name, "Alice")  # the configured name, not the phone's
        self.assertIsNone(sent.to.tag)
        self.assertEqual(audio(sent.body), (RELAY_ADDRESS, PORT_B, ["0", "8", "101"]))
        self.assertEqual(origin(sent.body)[1], RELAY_ADDRESS)

    def test_topology_is_hidden_from_the_caller(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        phone = h.place_call()
        callee = h.callee()
        callee.respond(180)
        callee.respond(183, callee_sdp())
        callee.answer()
        for response in phone.txn.responses:  # type: ignore[union-attr]
            wire = response.to_bytes()
            self.assertNotIn(b"192.168.1.20", wire)
            self.assertNotIn(b"127.0.0.1", wire)
            self.assertNotIn(callee.tag.encode(), wire)
            self.assertNotIn(str(callee.invite.call_id).encode(), wire)
            self.assertNotIn(b"30000", wire)

    def test_callerid_option_sets_the_display_name(self) -> None:
        h = self.build('dial 1002 callerid="Sales: \\"Alice\\""')
        h.register_1002()
        h.place_call()
        sent = h.callee().invite
        self.assertEqual(sent.from_.display_name, 'Sales: "Alice"')

    def test_video_is_declined_towards_the_callee(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        h.place_call(body=sdp_body(video_port=49300))
        description = sdp(h.callee().invite.body)
        self.assertEqual([(m.media, m.port) for m in description.media], [("audio", PORT_B), ("video", 0)])


class BookkeepingTests(B2BUATestCase):
    """Counters, CDRs and timers over several calls."""

    def test_counters_and_cdrs_over_three_calls(self) -> None:
        h = self.build("dial 1002 timeout=10")
        h.register_1002()
        one, callee = self.answered(h)
        busy = h.place_call()
        CalleePhone(h, h.invites()[1]).respond(486)
        unanswered = h.place_call()
        third = CalleePhone(h, h.invites()[2])
        third.respond(180)
        self.assertEqual(h.b2bua.counters["active"], 2)
        h.clock.advance(10)
        third.respond(487)
        callee.bye()
        self.assertEqual(
            h.b2bua.counters, {"calls": 3, "answered": 1, "failed": 2, "challenged": 3, "active": 0}
        )
        self.assertEqual(
            [(c.call_id, c.cause, c.status, c.hangup_by, c.answered_by) for c in h.cdrs()],
            [
                (busy.call_id, "busy", 486, "pbx", ""),
                (unanswered.call_id, "noanswer", 480, "pbx", ""),
                (one.call_id, "normal", 200, "callee", "1002"),
            ],
        )
        self.assertEqual(statuses(busy.txn), [486])
        self.assertEqual(statuses(unanswered.txn), [180, 480])
        self.assertIdle(h)

    def test_stray_2xx_retransmission_is_acked(self) -> None:
        h = self.build("dial 1002")
        h.register_1002()
        _phone, callee = self.answered(h)
        self.assertTrue(h.stack.dialogs.route_response(callee.response(200, callee_sdp())))
        self.assertEqual(len(h.stack.acks), 2)
        h.stack.dialogs.route_response(callee.response(486))
        self.assertEqual(len(h.stack.acks), 2)


class MemoryTests(B2BUATestCase):
    def test_an_ended_call_is_freed_while_its_invite_transaction_lives_on(self) -> None:
        """The answered leg's client transaction keeps its user 32 s (RFC 6026 Timer M) to re-ACK a
        retransmitted 2xx: it must not keep the whole call, its media and dialogs alive that long."""
        import weakref

        h = self.build("dial 1002")
        h.register_1002()
        phone, callee = self.answered(h)
        (call,) = h.b2bua.calls.values()
        ref = weakref.ref(call)
        del call
        phone.bye()
        self.assertIsNone(ref())  # freed by reference counting: not even the collector needed
        (leg_invite,) = h.invites()  # the transaction user (the leg) is still referenced here ...
        self.assertIsNone(leg_invite.tu.call)
        callee.answer()  # ... and still acknowledges a retransmitted 2xx
        self.assertEqual(len(h.stack.acks), 2)
