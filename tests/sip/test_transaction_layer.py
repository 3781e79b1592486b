"""Tests for `pbx.sip.transaction_layer`: RFC 3261 17.1.3 / 17.2.3 matching (with the RFC 2543 fallback),
CANCEL handling, stray responses and leak checks, on a `task.Clock` with recording fakes."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pbx.sip.flow import StreamFlow
from pbx.sip.interfaces import IClientTransactionUser, IFlow, IServerTransaction, ITransactionUser
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.timers import TimerConfig
from pbx.sip.transaction import (
    ACCEPTED,
    COMPLETED,
    CONFIRMED,
    TERMINATED,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Transaction,
    make_ack,
    make_cancel,
)
from pbx.sip.transaction_layer import TransactionLayer

BRANCH = "z9hG4bKa1b2c3"


def make_request(
    method: str = "INVITE",
    branch: str | None = BRANCH,
    *,
    sent_by: str = "10.0.0.1:5060",
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    call_id: str = "call-1@10.0.0.1",
    uri: str = "sip:1002@pbx.example.com",
) -> Request:
    via = f"SIP/2.0/UDP {sent_by}" + (f";branch={branch}" if branch else "")
    to = "<sip:1002@pbx.example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:1001@pbx.example.com>;tag=fromtag\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def make_response(request: Request, status: int, to_tag: str = "totag") -> Response:
    return request.response(status, to_tag=to_tag)


class _NullConnection:
    def write(self, data: bytes) -> None:
        pass

    def loseConnection(self) -> None:
        pass


@implementer(IFlow)
class FakeFlow:
    transport = "UDP"
    reliable = False
    secure = False
    local_address = ("10.0.0.2", 5060)

    def __init__(self, remote: tuple[str, int] = ("10.0.0.1", 5060)) -> None:
        self.remote_address = remote

    def send(self, data: bytes) -> None:
        raise AssertionError("the layer never sends on a flow itself")

    def connected(self) -> bool:
        return True


@implementer(ITransactionUser)
class RecordingUser:
    def __init__(self) -> None:
        self.requests: list[tuple[Any, Any]] = []
        self.acks: list[tuple[Any, Any]] = []
        self.cancels: list[tuple[Any, Any]] = []

    def request_received(self, transaction: Any, request: Any) -> None:
        self.requests.append((transaction, request))

    def ack_received(self, request: Any, flow: Any) -> None:
        self.acks.append((request, flow))

    def cancel_received(self, cancel: Any, invite: Any) -> None:
        self.cancels.append((cancel, invite))


@implementer(IClientTransactionUser)
class RecordingClientUser:
    def __init__(self) -> None:
        self.responses: list[tuple[Any, Any]] = []
        self.timeouts: list[object] = []
        self.errors: list[tuple[object, str]] = []

    def response_received(self, transaction: object, response: Any) -> None:
        self.responses.append((transaction, response))

    def transaction_timeout(self, transaction: object) -> None:
        self.timeouts.append(transaction)

    def transport_error(self, transaction: object, reason: str) -> None:
        self.errors.append((transaction, reason))


class LayerHarness:
    def __init__(self) -> None:
        self.clock = Clock()
        self.user = RecordingUser()
        self.client_user = RecordingClientUser()
        self.responses: list[tuple[Response, IFlow]] = []
        self.requests: list[Request] = []
        self.terminated: list[Transaction] = []
        self.flow = FakeFlow()
        self.layer = TransactionLayer(
            self.clock,
            TimerConfig(),
            self.user,
            lambda response, flow: self.responses.append((response, flow)),
            on_terminated=self.terminated.append,
        )

    def receive(self, request: Request, *, reliable: bool = False) -> None:
        self.layer.receive_request(request, self.flow, reliable=reliable)

    def statuses(self, method: str | None = None) -> list[int]:
        return [r.status for r, _ in self.responses if method is None or r.cseq.method == method]

    def run_out(self) -> None:
        """Let every timer run out (64*T1 and then some)."""
        self.clock.pump([0.5] * 80)


class ServerMatchingTests(SynchronousTestCase):
    def test_new_invite_sends_100_and_goes_up_once(self) -> None:
        h = LayerHarness()
        h.receive(make_request())
        self.assertEqual(h.statuses(), [100])
        self.assertIs(h.responses[0][1], h.flow)
        self.assertEqual(len(h.user.requests), 1)
        txn, request = h.user.requests[0]
        self.assertIsInstance(txn, ServerInviteTransaction)
        verifyObject(IServerTransaction, txn)
        self.assertIs(txn.flow, h.flow)
        self.assertIs(txn.request, request)
        h.receive(make_request())  # retransmission
        self.assertEqual(h.statuses(), [100, 100])
        self.assertEqual(len(h.user.requests), 1)
        self.assertEqual((len(h.layer), h.layer.server_count, h.layer.client_count), (1, 1, 0))

    def test_branch_sent_by_and_method_make_the_key(self) -> None:
        h = LayerHarness()
        h.receive(make_request())
        h.receive(make_request(branch="z9hG4bKother"))
        h.receive(make_request(sent_by="10.0.0.7:5060"))
        h.receive(make_request("OPTIONS"))
        h.receive(make_request(sent_by="10.0.0.1:5070"))
        self.assertEqual(len(h.user.requests), 5)
        self.assertEqual(len(h.layer), 5)

    def test_sent_by_host_is_case_insensitive(self) -> None:
        h = LayerHarness()
        h.receive(make_request(sent_by="PC.example.com:5060"))
        h.receive(make_request(sent_by="pc.example.com:5060"))
        self.assertEqual(len(h.user.requests), 1)

    def test_non_invite_retransmission_absorbed_then_answered(self) -> None:
        h = LayerHarness()
        h.receive(make_request("REGISTER"))
        txn, request = h.user.requests[0]
        self.assertIsInstance(txn, ServerNonInviteTransaction)
        h.receive(make_request("REGISTER"))
        self.assertEqual(h.responses, [])  # nothing to re-send in Trying
        txn.respond(make_response(request, 200))
        h.receive(make_request("REGISTER"))
        self.assertEqual(h.statuses(), [200, 200])
        self.assertEqual(len(h.user.requests), 1)

    def test_retransmissions_are_counted_both_ways(self) -> None:
        """For metrics: requests absorbed by a server transaction, and requests the timers sent again."""
        h = LayerHarness()
        for _ in range(3):
            h.receive(make_request("REGISTER"))
        sent: list[object] = []
        h.layer.client_non_invite(make_request("OPTIONS"), sent.append, h.client_user, reliable=False)
        h.clock.pump([0.5] * 3)  # Timer E at 0.5 and 1.5
        counts = h.layer.retransmissions
        self.assertEqual((counts.received, counts.sent, len(sent)), (2, 2, 3))
        h.clock.pump([0.5] * 80)

    def test_ack_for_failure_is_consumed(self) -> None:
        h = LayerHarness()
        h.receive(make_request())
        txn, request = h.user.requests[0]
        busy = make_response(request, 486)
        txn.respond(busy)
        h.receive(make_ack(request, busy))
        self.assertEqual(txn.state, CONFIRMED)
        self.assertEqual(h.user.acks, [])
        h.run_out()
        self.assertEqual(len(h.layer), 0)
        self.assertEqual(h.terminated, [txn])
        self.assertFalse(txn.ack_timed_out)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_ack_for_2xx_goes_to_the_tu(self) -> None:
        """The ACK of a 2xx carries a new branch and matches no transaction (RFC 3261 17.2.3)."""
        h = LayerHarness()
        h.receive(make_request())
        txn, request = h.user.requests[0]
        txn.respond(make_response(request, 200))
        ack = make_request("ACK", branch="z9hG4bKackbranch", to_tag="totag", cseq_method="ACK")
        h.receive(ack)
        self.assertEqual(h.user.acks, [(ack, h.flow)])
        self.assertEqual(txn.state, ACCEPTED)

    def test_ack_reusing_the_invite_branch_in_accepted_goes_to_the_tu(self) -> None:
        """RFC 6026: an ACK that matches an Accepted INVITE transaction is passed up, not absorbed."""
        h = LayerHarness()
        h.receive(make_request())
        txn, request = h.user.requests[0]
        ok = make_response(request, 200)
        txn.respond(ok)
        ack = make_ack(request, ok)
        h.receive(ack)
        self.assertEqual(h.user.acks, [(ack, h.flow)])

    def test_stray_ack_goes_to_the_tu(self) -> None:
        h = LayerHarness()
        ack = make_request("ACK", to_tag="totag")
        h.receive(ack)
        self.assertEqual(h.user.acks, [(ack, h.flow)])
        self.assertEqual(len(h.layer), 0)

    def test_invite_timer_h_is_reported_through_on_terminated(self) -> None:
        h = LayerHarness()
        h.receive(make_request())
        txn, request = h.user.requests[0]
        txn.respond(make_response(request, 480))
        h.run_out()
        self.assertEqual(h.terminated, [txn])
        self.assertTrue(txn.ack_timed_out)
        self.assertEqual(len(h.layer), 0)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_request_after_termination_is_new(self) -> None:
        h = LayerHarness()
        h.receive(make_request("OPTIONS"), reliable=True)
        txn, request = h.user.requests[0]
        txn.respond(make_response(request, 200))
        self.assertEqual(txn.state, TERMINATED)  # Timer J is zero on a reliable transport
        self.assertEqual(len(h.layer), 0)
        h.receive(make_request("OPTIONS"), reliable=True)
        self.assertEqual(len(h.user.requests), 2)

    def test_failed_100_trying_forgets_the_transaction(self) -> None:
        clock, user = Clock(), RecordingUser()

        def send_response(response: Response, flow: IFlow) -> None:
            raise OSError("sendto failed")

        layer = TransactionLayer(clock, TimerConfig(), user, send_response)
        layer.receive_request(make_request(), FakeFlow(), reliable=False)
        self.assertEqual(len(layer), 0)
        self.assertEqual(user.requests, [])


class CancelTests(SynchronousTestCase):
    def test_cancel_of_a_pending_invite(self) -> None:
        h = LayerHarness()
        h.receive(make_request())
        invite_txn, invite = h.user.requests[0]
        invite_txn.respond(make_response(invite, 180, to_tag="ringtag"))
        cancel = make_cancel(invite)
        h.receive(cancel)
        self.assertEqual(h.statuses("CANCEL"), [200])
        ok = h.responses[-1][0]
        self.assertEqual(ok.to.tag, "ringtag")  # RFC 3261 9.2: same To tag as the INVITE's responses
        self.assertIs(h.responses[-1][1], h.flow)
        self.assertEqual(h.user.cancels, [(cancel, invite_txn)])
        self.assertEqual(len(h.user.requests), 1)  # CANCEL is not a new request for the TU
        invite_txn.respond(make_response(invite, 487, to_tag="ringtag"))  # the TU's job
        h.receive(make_cancel(invite))  # retransmitted CANCEL: 200 again, reported once
        self.assertEqual(h.statuses("CANCEL"), [200, 200])
        self.assertEqual(len(h.user.cancels), 1)
        self.assertEqual(h.statuses("INVITE"), [100, 180, 487])
        h.receive(make_ack(invite, make_response(invite, 487, to_tag="ringtag")))
        h.run_out()
        self.assertEqual(len(h.layer), 0)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_cancel_matching_nothing_gets_481(self) -> None:
        h = LayerHarness()
        h.receive(make_cancel(make_request(branch="z9hG4bKnothing")))
        self.assertEqual(h.statuses(), [481])
        self.assertIsNotNone(h.responses[0][0].to.tag)
        self.assertEqual(h.user.cancels, [])
        self.assertEqual(h.user.requests, [])

    def test_cancel_after_the_final_response_gets_200_only(self) -> None:
        h = LayerHarness()
        h.receive(make_request())
        txn, invite = h.user.requests[0]
        txn.respond(make_response(invite, 200, to_tag="oktag"))
        self.assertIsNone(txn.last_response)  # a 2xx is not kept in Accepted (the TU re-sends it) ...
        h.receive(make_cancel(invite))
        self.assertEqual(h.statuses("CANCEL"), [200])
        self.assertEqual(h.responses[-1][0].to.tag, "oktag")  # ... but its To tag is (RFC 3261 9.2)
        self.assertEqual(h.user.cancels, [])
        self.assertEqual(txn.state, ACCEPTED)

    def test_cancel_from_another_sent_by_does_not_match(self) -> None:
        h = LayerHarness()
        h.receive(make_request())
        h.receive(make_cancel(make_request(sent_by="10.6.6.6:5060")))
        self.assertEqual(h.statuses("CANCEL"), [481])


class Rfc2543Tests(SynchronousTestCase):
    """Requests without the z9hG4bK magic cookie match on their fields (RFC 3261 17.2.3, last paragraphs)."""

    def test_invite_retransmission_and_new_cseq(self) -> None:
        h = LayerHarness()
        h.receive(make_request(branch=None))
        h.receive(make_request(branch=None))
        self.assertEqual(len(h.user.requests), 1)
        self.assertEqual(h.statuses(), [100, 100])
        h.receive(make_request(branch=None, cseq=2))
        h.receive(make_request(branch="1234-old-style"))
        h.receive(make_request(branch=None, call_id="call-2@10.0.0.1"))
        h.receive(make_request(branch=None, uri="sip:1003@pbx.example.com"))
        self.assertEqual(len(h.user.requests), 5)

    def test_ack_matches_on_the_response_to_tag(self) -> None:
        h = LayerHarness()
        h.receive(make_request(branch=None))
        txn, invite = h.user.requests[0]
        txn.respond(make_response(invite, 486, to_tag="resp-tag"))
        stray = make_request("ACK", branch=None, to_tag="some-other-tag", cseq_method="ACK")
        h.receive(stray)
        self.assertEqual(h.user.acks, [(stray, h.flow)])
        self.assertEqual(txn.state, COMPLETED)
        h.receive(make_request("ACK", branch=None, to_tag="resp-tag", cseq_method="ACK"))
        self.assertEqual(txn.state, CONFIRMED)
        self.assertEqual(len(h.user.acks), 1)

    def test_reinvite_ack(self) -> None:
        """A re-INVITE carries its To tag already, so the ACK matches on the INVITE's own fields."""
        h = LayerHarness()
        h.receive(make_request(branch=None, to_tag="dlg", cseq=5))
        txn, invite = h.user.requests[0]
        txn.respond(make_response(invite, 488))
        h.receive(make_request("ACK", branch=None, to_tag="dlg", cseq=5, cseq_method="ACK"))
        self.assertEqual(txn.state, CONFIRMED)
        self.assertEqual(h.user.acks, [])

    def test_ack_for_2xx_goes_up(self) -> None:
        h = LayerHarness()
        h.receive(make_request(branch=None))
        txn, invite = h.user.requests[0]
        txn.respond(make_response(invite, 200, to_tag="ok-tag"))
        ack = make_request("ACK", branch=None, to_tag="ok-tag", cseq_method="ACK")
        h.receive(ack)
        self.assertEqual(h.user.acks, [(ack, h.flow)])

    def test_cancel(self) -> None:
        h = LayerHarness()
        h.receive(make_request(branch=None))
        txn, _ = h.user.requests[0]
        cancel = make_request("CANCEL", branch=None)
        h.receive(cancel)
        self.assertEqual(h.statuses("CANCEL"), [200])
        self.assertEqual(h.user.cancels, [(cancel, txn)])
        h.receive(make_request("CANCEL", branch=None, cseq=9))
        self.assertEqual(h.statuses("CANCEL"), [200, 481])


class ClientSideTests(SynchronousTestCase):
    def test_response_routed_by_branch_and_cseq_method(self) -> None:
        """An INVITE and its CANCEL share a branch; the CSeq method tells their responses apart."""
        h = LayerHarness()
        sent: list[Request] = []
        invite = make_request()
        invite_txn = h.layer.client_invite(invite, sent.append, h.client_user, reliable=False)
        self.assertIsInstance(invite_txn, ClientInviteTransaction)
        self.assertTrue(h.layer.receive_response(make_response(invite, 180)))
        cancel = make_cancel(invite)
        cancel_txn = h.layer.client_non_invite(cancel, sent.append, h.client_user, reliable=False)
        self.assertIsInstance(cancel_txn, ClientNonInviteTransaction)
        self.assertEqual(h.layer.client_count, 2)
        self.assertTrue(h.layer.receive_response(make_response(cancel, 200)))
        self.assertTrue(h.layer.receive_response(make_response(invite, 487)))
        got = [(txn, r.status) for txn, r in h.client_user.responses]
        self.assertEqual(got, [(invite_txn, 180), (cancel_txn, 200), (invite_txn, 487)])
        self.assertEqual([r.method for r in sent], ["INVITE", "CANCEL", "ACK"])
        h.run_out()
        self.assertEqual(len(h.layer), 0)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stray_responses_return_false(self) -> None:
        h = LayerHarness()
        options = make_request("OPTIONS")
        h.layer.client_non_invite(options, lambda _: None, h.client_user, reliable=False)
        self.assertFalse(h.layer.receive_response(make_response(make_request(branch="z9hG4bKx"), 200)))
        self.assertFalse(h.layer.receive_response(make_response(make_request("INVITE"), 200)))
        self.assertFalse(h.layer.receive_response(make_response(make_request(branch=None), 200)))
        self.assertEqual(h.client_user.responses, [])

    def test_2xx_retransmission_after_timer_m_is_stray(self) -> None:
        h = LayerHarness()
        invite = make_request()
        h.layer.client_invite(invite, lambda _: None, h.client_user, reliable=False)
        self.assertTrue(h.layer.receive_response(make_response(invite, 200)))
        self.assertTrue(h.layer.receive_response(make_response(invite, 200)))
        h.clock.advance(32)
        self.assertEqual(len(h.layer), 0)
        self.assertFalse(h.layer.receive_response(make_response(invite, 200)))
        self.assertEqual(len(h.client_user.responses), 2)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_timeout_and_forget(self) -> None:
        h = LayerHarness()
        txn = h.layer.client_non_invite(make_request("BYE"), lambda _: None, h.client_user, reliable=True)
        h.clock.advance(32)
        self.assertEqual(h.client_user.timeouts, [txn])
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(len(h.layer), 0)

    def test_transport_error_reports_upward_and_forgets(self) -> None:
        h = LayerHarness()
        txn = h.layer.client_invite(make_request(), lambda _: None, h.client_user, reliable=True)
        txn.transport_error("connection refused")
        self.assertEqual(h.client_user.errors, [(txn, "connection refused")])
        self.assertEqual(len(h.layer), 0)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_a_broken_connection_fails_a_waiting_transaction_at_once(self) -> None:
        # A TLS 1.3 server refusing our client certificate ends the connection after our request went out.
        h = LayerHarness()
        flow = StreamFlow(_NullConnection(), "TLS", ("127.0.0.1", 5061), ("127.0.0.1", 5062))
        waiting = h.layer.client_non_invite(
            make_request("OPTIONS"), lambda _: None, h.client_user, reliable=True
        )
        invite = make_request()
        answered = h.layer.client_invite(invite, lambda _: None, h.client_user, reliable=True)
        flow.watch(waiting)
        flow.watch(waiting)
        flow.watch(answered)
        self.assertTrue(h.layer.receive_response(make_response(invite, 486)))
        flow._mark_closed("tlsv13 alert certificate required")
        self.assertEqual(h.client_user.errors, [(waiting, "tlsv13 alert certificate required")])
        self.assertTrue(answered.terminated)  # over a reliable transport a final response ends it
        self.assertEqual(len(h.layer), 0)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_a_cleanly_closed_connection_leaves_the_transaction_to_its_timer(self) -> None:
        h = LayerHarness()
        flow = StreamFlow(_NullConnection(), "TCP", ("127.0.0.1", 5060), ("127.0.0.1", 5062))
        txn = h.layer.client_non_invite(make_request("OPTIONS"), lambda _: None, h.client_user, reliable=True)
        flow.watch(txn)
        flow._mark_closed()
        self.assertEqual(h.client_user.errors, [])
        h.clock.advance(32)
        self.assertEqual(h.client_user.timeouts, [txn])

    def test_a_long_lived_connection_forgets_ended_transactions(self) -> None:
        h = LayerHarness()
        flow = StreamFlow(_NullConnection(), "TCP", ("127.0.0.1", 5060), ("127.0.0.1", 5062))
        for i in range(100):
            request = make_request("OPTIONS", branch=f"z9hG4bK-{i}")
            txn = h.layer.client_non_invite(request, lambda _: None, h.client_user, reliable=True)
            flow.watch(txn)
            h.layer.receive_response(make_response(request, 200))
        self.assertLessEqual(len(flow._watchers), 33)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_bad_client_requests(self) -> None:
        h = LayerHarness()
        with self.assertRaises(ValueError):
            h.layer.client_invite(make_request(branch=None), lambda _: None, h.client_user, reliable=False)
        with self.assertRaises(ValueError):
            h.layer.client_invite(make_request("OPTIONS"), lambda _: None, h.client_user, reliable=False)
        with self.assertRaises(ValueError):
            h.layer.client_non_invite(make_request("ACK"), lambda _: None, h.client_user, reliable=False)
        h.layer.client_invite(make_request(), lambda _: None, h.client_user, reliable=False)
        with self.assertRaises(ValueError):
            h.layer.client_invite(make_request(), lambda _: None, h.client_user, reliable=False)
        self.assertEqual(len(h.layer), 1)


class LeakTests(SynchronousTestCase):
    def test_many_transactions_leave_nothing_behind(self) -> None:
        """A burst of every kind of transaction: once the timers have run, tables and clock are empty."""
        h = LayerHarness()
        for i in range(200):
            branch = f"z9hG4bKload{i}"
            invite = make_request(branch=branch, call_id=f"c{i}")
            h.receive(invite, reliable=i % 2 == 0)
            txn, request = h.user.requests[-1]
            final = (200, 486, 603)[i % 3]
            txn.respond(make_response(request, final))
            if final != 200 and i % 4:
                h.receive(make_ack(request, make_response(request, final)))
            h.receive(make_request("OPTIONS", branch=branch, call_id=f"c{i}"))
            h.user.requests[-1][0].respond(make_response(request, 200))
            out = make_request("BYE", branch=f"z9hG4bKout{i}")
            h.layer.client_non_invite(out, lambda _: None, h.client_user, reliable=i % 2 == 1)
            if i % 5:
                h.layer.receive_response(make_response(out, 200))
        self.assertGreater(len(h.layer), 0)
        h.run_out()
        self.assertEqual(len(h.layer), 0)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_fakes_provide_their_interfaces(self) -> None:
        verifyObject(IFlow, FakeFlow())
        verifyObject(ITransactionUser, RecordingUser())
        verifyObject(IClientTransactionUser, RecordingClientUser())


class WaitTimerTests(SynchronousTestCase):
    def test_timer_j_of_many_transactions_runs_from_one_call(self) -> None:
        h = LayerHarness()
        for i in range(100):
            h.receive(make_request("OPTIONS", branch=f"z9hG4bKj{i}"))
            txn, request = h.user.requests[-1]
            txn.respond(make_response(request, 200))
        self.assertEqual(h.layer.server_count, 100)
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        h.run_out()
        self.assertEqual(len(h.layer), 0)
        self.assertEqual(len(h.terminated), 100)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_an_idle_layer_holds_no_call(self) -> None:
        """A queued transaction that ended early (transport error) does not keep the sweeping call alive."""
        h = LayerHarness()
        h.receive(make_request("OPTIONS"))
        txn, request = h.user.requests[-1]
        txn.respond(make_response(request, 200))
        txn.transport_error("closed")
        self.assertEqual(len(h.layer), 0)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_released_transaction_answers_retransmissions_with_the_same_bytes(self) -> None:
        clock, user = Clock(), RecordingUser()
        sent: list[bytes] = []

        class Flow(FakeFlow):
            def send(self, data: bytes) -> None:
                sent.append(data)

        def send_response(response: Response, flow: IFlow) -> bytes:
            data = response.to_bytes()
            flow.send(data)
            return data

        layer = TransactionLayer(clock, TimerConfig(), user, send_response)
        flow = Flow()
        layer.receive_request(make_request("REGISTER"), flow, reliable=False)
        txn, request = user.requests[0]
        txn.respond(make_response(request, 200))
        self.assertIsNone(txn.request)  # released: only the bytes are kept
        layer.receive_request(make_request("REGISTER"), flow, reliable=False)
        self.assertEqual(len(sent), 2)
        self.assertEqual(sent[0], sent[1])
        self.assertEqual(len(user.requests), 1)
        clock.advance(32)
        self.assertEqual(len(layer), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
