"""Tests for `pbx.sip.transaction`: the four RFC 3261 section 17 state machines (with RFC 6026), walked step
by step on a `task.Clock`, plus `make_ack` and `make_cancel`. No sockets, no sleeps."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pbx.sip.interfaces import IClientTransactionUser, IServerTransaction
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.timers import TimerConfig
from pbx.sip.transaction import (
    ACCEPTED,
    ACK,
    CALLING,
    COMPLETED,
    CONFIRMED,
    FAILURE,
    PROCEEDING,
    PROVISIONAL,
    QUEUED,
    REQUEST,
    SUCCESS,
    TERMINATED,
    TIMER_DELAYS,
    TRANSPORT_ERROR,
    TRYING,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Transaction,
    WaitTimers,
    classify,
    make_ack,
    make_cancel,
)

BRANCH = "z9hG4bKclient1"


def make_request(method: str = "INVITE", branch: str = BRANCH, *, to_tag: str | None = None) -> Request:
    """A request as a UAC behind a proxy would send it: two Vias, a Route, no To tag."""
    to = "<sip:1002@pbx.example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:1002@pbx.example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch={branch};rport\r\n"
        "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKupstream\r\n"
        "Route: <sip:edge.example.com;lr>, <sip:core.example.com;lr>\r\n"
        "Max-Forwards: 69\r\n"
        'From: "Alice" <sip:1001@pbx.example.com>;tag=alicetag\r\n'
        f"To: {to}\r\n"
        "Call-ID: call-1@10.0.0.1\r\n"
        f"CSeq: 7 {method}\r\n"
        "Contact: <sip:1001@10.0.0.1:5060>\r\n"
        "Content-Type: application/sdp\r\n"
        "Content-Length: 4\r\n"
        "\r\n"
        "v=0\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def response_to(request: Request, status: int, to_tag: str = "bobtag") -> Response:
    return request.response(status, to_tag=to_tag)


@implementer(IClientTransactionUser)
class RecordingTU:
    """A client transaction user that records what it is told."""

    def __init__(self) -> None:
        self.responses: list[Any] = []
        self.timeouts: list[object] = []
        self.errors: list[tuple[object, str]] = []

    def response_received(self, transaction: object, response: Any) -> None:
        self.responses.append(response)

    def transaction_timeout(self, transaction: object) -> None:
        self.timeouts.append(transaction)

    def transport_error(self, transaction: object, reason: str) -> None:
        self.errors.append((transaction, reason))

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


class Harness:
    """A clock, a recording send (with the time of each message) and a terminated-callback recorder."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.sent: list[tuple[float, Request | Response]] = []
        self.terminated: list[Transaction] = []
        self.tu = RecordingTU()

    def send(self, message: Request | Response) -> None:
        self.sent.append((self.clock.seconds(), message))

    def times(self, what: str | int) -> list[float]:
        """Send times of requests with method `what`, or of responses with status `what`."""
        return [t for t, m in self.sent if _label(m) == what]

    def labels(self) -> list[str | int]:
        return [_label(m) for _, m in self.sent]

    def client(self, cls: Any, request: Request, *, reliable: bool = False) -> Any:
        txn = cls(
            request,
            self.send,
            self.tu,
            clock=self.clock,
            timers=TimerConfig(),
            reliable=reliable,
            on_terminated=self.terminated.append,
        )
        txn.start()
        return txn

    def server(self, cls: Any, request: Request, *, reliable: bool = False) -> Any:
        return cls(
            request,
            FLOW,
            self.send,
            clock=self.clock,
            timers=TimerConfig(),
            reliable=reliable,
            on_terminated=self.terminated.append,
        )


def _label(message: Request | Response) -> str | int:
    return message.method if isinstance(message, Request) else message.status


FLOW: Any = object()  # the machines never look at their flow
UDP_NON_INVITE_SCHEDULE = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
UDP_INVITE_SCHEDULE = [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]


class ClientNonInviteTests(SynchronousTestCase):
    def test_udp_retransmission_schedule(self) -> None:
        """An unanswered OPTIONS over UDP goes out at 0, T1, 3T1, 7T1, then every T2; Timer F ends it."""
        h = Harness()
        txn = h.client(ClientNonInviteTransaction, make_request("OPTIONS"))
        h.clock.pump([0.5] * 63)
        self.assertEqual(h.tu.timeouts, [])
        h.clock.advance(0.5)
        self.assertEqual(h.times("OPTIONS"), UDP_NON_INVITE_SCHEDULE)
        self.assertEqual(h.tu.timeouts, [txn])
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_proceeding_retransmits_every_t2(self) -> None:
        """After a 1xx, Timer E keeps running and is reset to T2 each time it fires (RFC 3261 17.1.2.2)."""
        h = Harness()
        request = make_request("OPTIONS")
        txn = h.client(ClientNonInviteTransaction, request)
        h.clock.pump([0.5, 0.5])
        txn.receive_response(response_to(request, 100))
        self.assertEqual(txn.state, PROCEEDING)
        self.assertEqual(h.tu.statuses, [100])
        h.clock.pump([0.5] * 62)
        self.assertEqual(h.times("OPTIONS"), [0.0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5])
        self.assertEqual(len(h.tu.timeouts), 1)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_final_response_completes_and_timer_k_absorbs(self) -> None:
        """A final response is passed up once; retransmissions stop; Timer K (T4) absorbs repeats."""
        h = Harness()
        request = make_request("OPTIONS")
        txn = h.client(ClientNonInviteTransaction, request)
        h.clock.pump([0.5, 0.2])
        txn.receive_response(response_to(request, 100))
        txn.receive_response(response_to(request, 200))
        self.assertEqual(txn.state, COMPLETED)
        txn.receive_response(response_to(request, 200))
        txn.receive_response(response_to(request, 180))
        self.assertEqual(h.tu.statuses, [100, 200])
        h.clock.advance(4.9)
        self.assertEqual(txn.state, COMPLETED)
        h.clock.advance(0.1)
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.times("OPTIONS"), [0.0, 0.5])
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.tu.timeouts, [])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_reliable_no_retransmissions_and_zero_timer_k(self) -> None:
        """Over TCP the request is sent once and a final response terminates the transaction at once."""
        h = Harness()
        request = make_request("REGISTER")
        txn = h.client(ClientNonInviteTransaction, request, reliable=True)
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)  # Timer F only
        h.clock.advance(10)
        txn.receive_response(response_to(request, 401))
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.times("REGISTER"), [0.0])
        self.assertEqual(h.tu.statuses, [401])
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_reliable_timer_f(self) -> None:
        h = Harness()
        txn = h.client(ClientNonInviteTransaction, make_request("BYE"), reliable=True)
        h.clock.advance(31.9)
        self.assertEqual(txn.state, TRYING)
        h.clock.advance(0.1)
        self.assertEqual(h.tu.timeouts, [txn])
        self.assertEqual(h.times("BYE"), [0.0])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_transport_error_reports_and_terminates(self) -> None:
        h = Harness()
        txn = h.client(ClientNonInviteTransaction, make_request("OPTIONS"))
        h.clock.advance(0.5)
        txn.transport_error("connection refused")
        self.assertEqual(h.tu.errors, [(txn, "connection refused")])
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_transport_error_while_sending_the_first_request(self) -> None:
        """A stack that reports the failure from inside `send` leaves no timers behind."""
        h = Harness()
        txn: ClientNonInviteTransaction

        def failing_send(message: Request | Response) -> None:
            txn.transport_error("no route to host")

        txn = ClientNonInviteTransaction(
            make_request("OPTIONS"),
            failing_send,
            h.tu,
            clock=h.clock,
            timers=TimerConfig(),
            reliable=False,
            on_terminated=h.terminated.append,
        )
        txn.start()
        self.assertEqual(h.tu.errors, [(txn, "no route to host")])
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])


class ClientInviteTests(SynchronousTestCase):
    def test_2xx_lets_go_of_send(self) -> None:
        """Nothing is sent in Accepted: the `send` (which may refer back to the transaction) is dropped at
        once, not after Timer M."""
        h = Harness()

        class Send:
            def __call__(self, message: Request | Response) -> None:
                h.send(message)

        send = Send()
        gone = weakref.ref(send)
        request = make_request()
        txn = ClientInviteTransaction(
            request, send, h.tu, clock=h.clock, timers=TimerConfig(), reliable=False
        )
        txn.start()
        del send
        txn.receive_response(response_to(request, 180))
        gc.collect()
        self.assertIsNotNone(gone())
        txn.receive_response(response_to(request, 200))
        self.assertIsNone(gone())
        self.assertEqual((txn.state, h.tu.statuses), (ACCEPTED, [180, 200]))
        txn.receive_response(response_to(request, 200))  # a retransmission still goes up
        self.assertEqual(h.tu.statuses, [180, 200, 200])
        h.clock.advance(32)
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_timer_a_doubles_and_timer_b_times_out(self) -> None:
        """Over UDP the INVITE goes out at 0, T1, 3T1, 7T1, 15T1, 31T1, 63T1; Timer B fires at 64*T1."""
        h = Harness()
        txn = h.client(ClientInviteTransaction, make_request())
        self.assertEqual(txn.state, CALLING)
        h.clock.pump([0.5] * 64)
        self.assertEqual(h.times("INVITE"), UDP_INVITE_SCHEDULE)
        self.assertEqual(h.tu.timeouts, [txn])
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_provisional_stops_timers_a_and_b(self) -> None:
        """In Proceeding the INVITE is not retransmitted and Timer B no longer runs."""
        h = Harness()
        request = make_request()
        txn = h.client(ClientInviteTransaction, request)
        h.clock.advance(0.5)
        txn.receive_response(response_to(request, 100))
        txn.receive_response(response_to(request, 180))
        self.assertEqual(txn.state, PROCEEDING)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.clock.advance(300)
        self.assertEqual(h.times("INVITE"), [0.0, 0.5])
        self.assertEqual(h.tu.timeouts, [])
        self.assertEqual(h.tu.statuses, [100, 180])

    def test_failure_is_acked_by_the_transaction(self) -> None:
        """A 486 is ACKed with the request's branch and the response's To tag (RFC 3261 17.1.1.3)."""
        h = Harness()
        request = make_request()
        txn = h.client(ClientInviteTransaction, request)
        h.clock.advance(0.2)
        busy = response_to(request, 486, to_tag="busytag")
        txn.receive_response(busy)
        self.assertEqual(txn.state, COMPLETED)
        self.assertEqual(h.labels(), ["INVITE", "ACK"])
        ack = h.sent[-1][1]
        assert isinstance(ack, Request)
        self.assertIs(txn.ack, ack)
        self.assertEqual(ack.uri, request.uri)
        self.assertEqual(ack.headers.get_all("Via"), [request.headers.get("Via")])
        self.assertEqual(ack.top_via.branch if ack.top_via else None, BRANCH)
        self.assertEqual(ack.to.tag, "busytag")
        self.assertEqual(ack.to.uri, request.to.uri)
        self.assertEqual(ack.headers.get("From"), request.headers.get("From"))
        self.assertEqual(ack.call_id, request.call_id)
        self.assertEqual((ack.cseq.number, ack.cseq.method), (7, "ACK"))
        self.assertEqual(ack.headers.get_all("Route"), request.headers.get_all("Route"))
        self.assertEqual(ack.headers.get("Max-Forwards"), "70")
        self.assertEqual(ack.body, b"")
        self.assertEqual(h.tu.statuses, [486])

    def test_retransmitted_failure_is_reacked_but_passed_up_once(self) -> None:
        h = Harness()
        request = make_request()
        txn = h.client(ClientInviteTransaction, request)
        txn.receive_response(response_to(request, 486))
        h.clock.advance(2)
        txn.receive_response(response_to(request, 486))
        txn.receive_response(response_to(request, 180))
        txn.receive_response(response_to(request, 486))
        self.assertEqual(h.labels(), ["INVITE", "ACK", "ACK", "ACK"])
        self.assertEqual(h.tu.statuses, [486])
        self.assertEqual(h.times("INVITE"), [0.0])  # Timer A stopped
        h.clock.advance(29.9)
        self.assertEqual(txn.state, COMPLETED)
        h.clock.advance(0.1)  # Timer D: 32 s after the 486
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_2xx_retransmissions_are_passed_up_in_accepted(self) -> None:
        """RFC 6026: every 2xx goes up (the dialog ACKs each); Timer M ends the transaction after 64*T1."""
        h = Harness()
        request = make_request()
        txn = h.client(ClientInviteTransaction, request)
        txn.receive_response(response_to(request, 180))
        h.clock.advance(3)
        txn.receive_response(response_to(request, 200))
        self.assertEqual(txn.state, ACCEPTED)
        h.clock.advance(1)
        txn.receive_response(response_to(request, 200))
        txn.receive_response(response_to(request, 200, to_tag="otherfork"))
        txn.receive_response(response_to(request, 183))
        txn.receive_response(response_to(request, 503))
        self.assertEqual(h.tu.statuses, [180, 200, 200, 200])
        self.assertEqual(h.labels(), ["INVITE"])  # the transaction never ACKs a 2xx
        h.clock.advance(30.9)
        self.assertEqual(txn.state, ACCEPTED)
        h.clock.advance(0.1)
        self.assertEqual(txn.state, TERMINATED)
        txn.receive_response(response_to(request, 200))
        self.assertEqual(len(h.tu.responses), 4)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_reliable_no_timer_a_and_zero_timer_d(self) -> None:
        h = Harness()
        request = make_request()
        txn = h.client(ClientInviteTransaction, request, reliable=True)
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)  # Timer B only
        h.clock.advance(5)
        txn.receive_response(response_to(request, 603))
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.labels(), ["INVITE", "ACK"])
        self.assertEqual(h.tu.statuses, [603])
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_reliable_accepted_still_runs_timer_m(self) -> None:
        h = Harness()
        request = make_request()
        txn = h.client(ClientInviteTransaction, request, reliable=True)
        txn.receive_response(response_to(request, 200))
        self.assertEqual(txn.state, ACCEPTED)
        h.clock.advance(32)
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_transport_error_in_calling_is_reported(self) -> None:
        h = Harness()
        txn = h.client(ClientInviteTransaction, make_request())
        txn.transport_error("connection reset")
        self.assertEqual(h.tu.errors, [(txn, "connection reset")])
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_transport_error_in_proceeding_is_reported(self) -> None:
        """Proceeding runs no timer, so a lost connection must reach the TU or the call hangs forever."""
        h = Harness()
        request = make_request()
        txn = h.client(ClientInviteTransaction, request)
        txn.receive_response(response_to(request, 180))
        txn.transport_error("connection lost")
        self.assertEqual(len(h.tu.errors), 1)
        self.assertEqual(txn.state, TERMINATED)

    def test_transport_error_after_the_final_response_is_quiet(self) -> None:
        """The TU already has its 486; a failed ACK terminates without a second verdict."""
        h = Harness()
        request = make_request()
        txn = h.client(ClientInviteTransaction, request)
        txn.receive_response(response_to(request, 486))
        txn.transport_error("connection lost")
        self.assertEqual(h.tu.errors, [])
        self.assertEqual(h.tu.statuses, [486])
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_failed_ack_send_still_passes_the_response_up(self) -> None:
        """A transport error raised from inside the ACK's send ends the transaction; the TU gets the 486."""
        h = Harness()
        request = make_request()
        txn: ClientInviteTransaction

        def send(message: Request | Response) -> None:
            if isinstance(message, Request) and message.method == "ACK":
                txn.transport_error("gone")

        txn = ClientInviteTransaction(
            request,
            send,
            h.tu,
            clock=h.clock,
            timers=TimerConfig(),
            reliable=False,
            on_terminated=h.terminated.append,
        )
        txn.start()
        txn.receive_response(response_to(request, 486))
        self.assertEqual(h.tu.statuses, [486])
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])


class ServerInviteTests(SynchronousTestCase):
    def test_sends_100_at_once_and_resends_last_response(self) -> None:
        h = Harness()
        request = make_request()
        txn = h.server(ServerInviteTransaction, request)
        verifyObject(IServerTransaction, txn)
        self.assertEqual(h.labels(), [100])
        self.assertIsNone(h.sent[0][1].to.tag)
        txn.receive_request(make_request())
        self.assertEqual(h.labels(), [100, 100])
        txn.respond(response_to(request, 180))
        txn.receive_request(make_request())
        self.assertEqual(h.labels(), [100, 100, 180, 180])
        self.assertEqual(txn.state, PROCEEDING)
        self.assertEqual(h.clock.getDelayedCalls(), [])  # Proceeding runs no timer

    def server_trying(self, h: Harness, request: Request, waits: WaitTimers | None = None) -> Any:
        return ServerInviteTransaction(
            request,
            FLOW,
            h.send,
            clock=h.clock,
            timers=TimerConfig(trying=0.15),
            reliable=False,
            on_terminated=h.terminated.append,
            waits=waits,
        )

    def test_trying_delay_a_quick_provisional_response_goes_without_100(self) -> None:
        """With `TimerConfig.trying`, a TU that sends 180 in time spares the 100 (RFC 3261 17.2.1)."""
        h = Harness()
        request = make_request()
        txn = self.server_trying(h, request)
        self.assertEqual(h.labels(), [])
        h.clock.advance(0.1)
        txn.respond(response_to(request, 180))
        h.clock.advance(1)
        self.assertEqual(h.labels(), [180])
        txn.receive_request(make_request())
        self.assertEqual(h.labels(), [180, 180])
        txn.respond(response_to(request, 486))
        self.assertEqual(h.labels(), [180, 180, 486])

    def test_trying_delay_a_slow_tu_gets_its_100_on_time(self) -> None:
        h = Harness()
        request = make_request()
        txn = self.server_trying(h, request)
        h.clock.advance(0.149)
        self.assertEqual(h.labels(), [])
        h.clock.advance(0.001)
        self.assertEqual(h.times(100), [0.15])
        self.assertIsNone(h.sent[0][1].to.tag)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        txn.respond(response_to(request, 200))
        self.assertEqual(h.labels(), [100, 200])

    def test_trying_delay_a_retransmission_before_any_response_gets_100(self) -> None:
        h = Harness()
        request = make_request()
        txn = self.server_trying(h, request)
        h.clock.advance(0.05)
        txn.receive_request(make_request())
        self.assertEqual(h.times(100), [0.05])
        h.clock.advance(1)
        self.assertEqual(h.labels(), [100])  # the timer finds the 100 sent
        txn.retransmission_received()  # known by its key alone (overload screening)
        self.assertEqual(h.labels(), [100, 100])

    def test_trying_delay_a_final_response_stops_the_timer(self) -> None:
        h = Harness()
        request = make_request()
        txn = self.server_trying(h, request)
        txn.respond(response_to(request, 200))
        self.assertEqual(h.labels(), [200])
        self.assertEqual(txn._timer_100, None)
        h.clock.advance(64 * 0.5)
        self.assertEqual(h.labels(), [200])
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_trying_delay_queued_in_wait_timers(self) -> None:
        """With a `WaitTimers`, the wait is queued (no `IDelayedCall` of its own): the 100 goes out on the
        queue's sweep, and a transaction that answered in time is skipped."""
        h = Harness()
        waits = WaitTimers(h.clock)
        quick_request, slow_request = make_request(), make_request(branch="z9hG4bKslow")
        quick = self.server_trying(h, quick_request, waits)
        slow = self.server_trying(h, slow_request, waits)
        self.assertIs(quick._timer_100, QUEUED)
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        quick.respond(response_to(quick_request, 180))
        h.clock.advance(0.15)
        self.assertEqual([(t, _label(m), m.top_via.branch) for t, m in h.sent], [
            (0.0, 180, BRANCH), (0.15, 100, "z9hG4bKslow")
        ])  # fmt: skip
        slow.respond(response_to(slow_request, 486))
        quick.respond(response_to(quick_request, 486))
        h.clock.pump([1.0] * 40)
        self.assertEqual((quick.state, slow.state), (TERMINATED, TERMINATED))
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_timer_g_schedule_and_timer_h(self) -> None:
        """A 486 over UDP is retransmitted at T1, 3T1, 7T1, then every T2 until Timer H gives up at 64*T1."""
        h = Harness()
        request = make_request()
        txn = h.server(ServerInviteTransaction, request)
        txn.respond(response_to(request, 486))
        self.assertEqual(txn.state, COMPLETED)
        h.clock.pump([0.5] * 63)
        self.assertEqual(txn.state, COMPLETED)
        self.assertFalse(txn.ack_timed_out)
        h.clock.advance(0.5)
        self.assertEqual(h.times(486), UDP_NON_INVITE_SCHEDULE)
        self.assertEqual(txn.state, TERMINATED)
        self.assertTrue(txn.ack_timed_out)
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_invite_retransmission_in_completed_resends_final(self) -> None:
        h = Harness()
        request = make_request()
        txn = h.server(ServerInviteTransaction, request)
        txn.respond(response_to(request, 404))
        h.clock.advance(0.2)
        self.assertTrue(txn.receive_request(make_request()))
        self.assertEqual(h.labels(), [100, 404, 404])
        txn.respond(response_to(request, 500))  # a second final response from the TU is dropped
        self.assertEqual(h.labels(), [100, 404, 404])

    def test_ack_confirms_and_timer_i_terminates(self) -> None:
        h = Harness()
        request = make_request()
        txn = h.server(ServerInviteTransaction, request)
        txn.respond(response_to(request, 486))
        h.clock.pump([0.5, 0.5])  # one retransmission at 0.5
        ack = make_ack(request, response_to(request, 486))
        self.assertTrue(txn.receive_request(ack))
        self.assertEqual(txn.state, CONFIRMED)
        self.assertTrue(txn.receive_request(ack))
        self.assertTrue(txn.receive_request(make_request()))
        h.clock.advance(4.9)
        self.assertEqual(h.times(486), [0.0, 0.5])  # Timer G stopped by the ACK
        self.assertEqual(txn.state, CONFIRMED)
        h.clock.advance(0.1)  # Timer I = T4
        self.assertEqual(txn.state, TERMINATED)
        self.assertFalse(txn.ack_timed_out)
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_2xx_accepted_absorbs_retransmissions_and_timer_l(self) -> None:
        """RFC 6026: INVITE retransmissions are absorbed; the TU's own 2xx retransmissions go out."""
        h = Harness()
        request = make_request()
        txn = h.server(ServerInviteTransaction, request)
        ok = response_to(request, 200)
        txn.respond(ok)
        self.assertEqual(txn.state, ACCEPTED)
        self.assertTrue(txn.receive_request(make_request()))
        self.assertEqual(h.labels(), [100, 200])
        h.clock.advance(0.5)
        txn.respond(ok)  # the TU retransmits its 2xx (RFC 3261 13.3.1.4)
        txn.respond(response_to(request, 180))
        txn.respond(response_to(request, 486))
        self.assertEqual(h.labels(), [100, 200, 200])
        ack = Request("ACK", request.uri, make_ack(request, ok).headers)
        self.assertFalse(txn.receive_request(ack), "the ACK of a 2xx belongs to the dialog")
        h.clock.advance(31.4)
        self.assertEqual(txn.state, ACCEPTED)
        h.clock.advance(0.1)
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])
        # A call keeps its INVITE transaction: once terminated it holds no response (still final_sent).
        self.assertIsNone(txn.last_response)
        self.assertTrue(txn.final_sent)

    def test_reliable_no_timer_g_and_zero_timer_i(self) -> None:
        h = Harness()
        request = make_request()
        txn = h.server(ServerInviteTransaction, request, reliable=True)
        txn.respond(response_to(request, 486))
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)  # Timer H only
        h.clock.advance(10)
        txn.receive_request(make_ack(request, response_to(request, 486)))
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.labels(), [100, 486])
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_reliable_timer_h(self) -> None:
        h = Harness()
        request = make_request()
        txn = h.server(ServerInviteTransaction, request, reliable=True)
        txn.respond(response_to(request, 486))
        h.clock.advance(32)
        self.assertTrue(txn.ack_timed_out)
        self.assertEqual(h.labels(), [100, 486])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_transport_error_terminates_quietly(self) -> None:
        h = Harness()
        request = make_request()
        txn = h.server(ServerInviteTransaction, request)
        txn.respond(response_to(request, 486))
        txn.transport_error("connection lost")
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.terminated, [txn])
        txn.respond(response_to(request, 500))
        self.assertEqual(h.labels(), [100, 486])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_send_raising_oserror_is_a_transport_error(self) -> None:
        """A `send` that raises OSError (here: for the 100 Trying, inside the constructor) terminates."""
        h = Harness()

        def send(message: Request | Response) -> None:
            raise OSError("network unreachable")

        txn = ServerInviteTransaction(
            make_request(),
            FLOW,
            send,
            clock=h.clock,
            timers=TimerConfig(),
            reliable=False,
            on_terminated=h.terminated.append,
        )
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.terminated, [txn])
        txn.respond(response_to(make_request(), 180))
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_client_send_raising_oserror_reports_upward(self) -> None:
        h = Harness()

        def send(message: Request | Response) -> None:
            raise ConnectionRefusedError()

        txn = ClientInviteTransaction(
            make_request(), send, h.tu, clock=h.clock, timers=TimerConfig(), reliable=True
        )
        txn.start()
        self.assertEqual(h.tu.errors, [(txn, "ConnectionRefusedError")])
        self.assertEqual(h.clock.getDelayedCalls(), [])


class ServerNonInviteTests(SynchronousTestCase):
    def test_walk(self) -> None:
        """Trying absorbs; 1xx -> Proceeding re-sends it; final -> Completed re-sends it; Timer J ends it."""
        h = Harness()
        request = make_request("SUBSCRIBE")
        txn = h.server(ServerNonInviteTransaction, request)
        verifyObject(IServerTransaction, txn)
        self.assertEqual(txn.state, TRYING)
        self.assertEqual(h.sent, [])  # no 100 Trying for non-INVITE
        txn.receive_request(make_request("SUBSCRIBE"))
        self.assertEqual(h.sent, [])
        txn.respond(response_to(request, 100))
        txn.receive_request(make_request("SUBSCRIBE"))
        self.assertEqual(txn.state, PROCEEDING)
        txn.respond(response_to(request, 202))
        self.assertEqual(txn.state, COMPLETED)
        self.assertTrue(txn.final_sent)
        h.clock.advance(10)
        txn.receive_request(make_request("SUBSCRIBE"))
        txn.respond(response_to(request, 500))
        self.assertEqual(h.labels(), [100, 100, 202, 202])
        h.clock.advance(21.9)
        self.assertEqual(txn.state, COMPLETED)
        h.clock.advance(0.1)  # Timer J = 64*T1 after the final response
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_reliable_zero_timer_j(self) -> None:
        h = Harness()
        request = make_request("OPTIONS")
        txn = h.server(ServerNonInviteTransaction, request, reliable=True)
        txn.respond(response_to(request, 200))
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.terminated, [txn])
        self.assertEqual(h.labels(), [200])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_transport_error_terminates(self) -> None:
        h = Harness()
        request = make_request("OPTIONS")
        txn = h.server(ServerNonInviteTransaction, request)
        txn.transport_error("closed")
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.terminated, [txn])


MACHINES: list[type[Transaction]] = [
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
]


class TableTests(SynchronousTestCase):
    def test_tables_are_exhaustive(self) -> None:
        """Every live state handles every message input and exactly the timers it runs; nothing else."""
        for cls in MACHINES:
            states = set(cls.STATE_TIMERS)
            self.assertIn(TERMINATED, states)
            for state in states - {TERMINATED}:
                handled = {event for (s, event) in cls.TABLE if s == state}
                expected = set(cls.MESSAGE_INPUTS) | set(cls.STATE_TIMERS[state])
                self.assertEqual(handled, expected, f"{cls.__name__} in {state}")
            for (state, _), (next_state, _) in cls.TABLE.items():
                self.assertIn(state, states - {TERMINATED}, cls.__name__)
                self.assertIn(next_state, states, cls.__name__)
            self.assertEqual(cls.STATE_TIMERS[TERMINATED], ())
            for timers in cls.STATE_TIMERS.values():
                for timer in timers:
                    self.assertIn(timer, TIMER_DELAYS)

    def test_every_state_is_reachable(self) -> None:
        for cls in MACHINES:
            initial = {ClientInviteTransaction: CALLING, ServerInviteTransaction: PROCEEDING}.get(cls, TRYING)
            reached, frontier = {initial}, [initial]
            while frontier:
                state = frontier.pop()
                for (s, _), (n, _) in cls.TABLE.items():
                    if s == state and n not in reached:
                        reached.add(n)
                        frontier.append(n)
            self.assertEqual(reached, set(cls.STATE_TIMERS), cls.__name__)

    def test_terminated_absorbs_everything(self) -> None:
        h = Harness()
        request = make_request()
        client = h.client(ClientInviteTransaction, request)
        client.transport_error("x")
        server = h.server(ServerInviteTransaction, request)
        server.transport_error("x")
        before = (list(h.sent), list(h.tu.responses), list(h.tu.errors), list(h.terminated))
        for status in (100, 200, 486):
            client.receive_response(response_to(request, status))
            server.respond(response_to(request, status))
        client.transport_error("again")
        server.transport_error("again")
        self.assertTrue(server.receive_request(make_request()))
        self.assertTrue(server.receive_request(make_ack(request, response_to(request, 486))))
        self.assertEqual((h.sent, h.tu.responses, h.tu.errors, h.terminated), before)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_classify(self) -> None:
        self.assertEqual(
            [classify(s) for s in (100, 199, 200, 299, 300, 699)],
            [PROVISIONAL] * 2 + [SUCCESS] * 2 + [FAILURE] * 2,
        )

    def test_inputs_are_distinct(self) -> None:
        self.assertEqual(len({PROVISIONAL, SUCCESS, FAILURE, REQUEST, ACK, TRANSPORT_ERROR}), 6)

    def test_recording_tu_provides_interface(self) -> None:
        verifyObject(IClientTransactionUser, RecordingTU())


class MakeCancelTests(SynchronousTestCase):
    def test_cancel_copies_what_rfc_3261_9_1_asks(self) -> None:
        request = make_request()
        cancel = make_cancel(request)
        self.assertEqual(cancel.method, "CANCEL")
        self.assertEqual(cancel.uri, request.uri)
        self.assertEqual(cancel.headers.get_all("Via"), [request.headers.get("Via")])
        self.assertEqual(cancel.headers.get("To"), request.headers.get("To"))
        self.assertEqual(cancel.headers.get("From"), request.headers.get("From"))
        self.assertEqual(cancel.call_id, request.call_id)
        self.assertEqual(str(cancel.cseq), "7 CANCEL")
        self.assertEqual(cancel.headers.get_all("Route"), request.headers.get_all("Route"))
        self.assertEqual(cancel.headers.get("Max-Forwards"), "70")
        self.assertEqual(cancel.body, b"")
        self.assertIsNone(cancel.headers.get("Contact"))
        reparsed = parse_message(cancel.to_bytes())
        assert isinstance(reparsed, Request)
        self.assertEqual(reparsed.top_via, request.top_via)

    def test_ack_without_route(self) -> None:
        request = make_request()
        request.headers.remove("Route")
        ack = make_ack(request, response_to(request, 404))
        self.assertEqual(ack.headers.get_all("Route"), [])
        self.assertEqual(ack.to.tag, "bobtag")


class WaitTimersTests(SynchronousTestCase):
    """Timers J and K of many transactions run from one rolling call of a shared `WaitTimers`."""

    def server(self, h: Harness, waits: WaitTimers, request: Request, send: Any = None) -> Any:
        return ServerNonInviteTransaction(
            request,
            FLOW,
            send or h.send,
            clock=h.clock,
            timers=TimerConfig(),
            reliable=False,
            on_terminated=h.terminated.append,
            waits=waits,
        )

    def test_one_call_for_many_timer_js(self) -> None:
        h = Harness()
        waits = WaitTimers(h.clock)
        txns = []
        for i in range(50):
            request = make_request("OPTIONS", branch=f"z9hG4bKw{i}")
            txn = self.server(h, waits, request)
            txn.respond(response_to(request, 200))
            self.assertIs(txn._timer_j, QUEUED)
            txns.append(txn)
            h.clock.advance(0.1)
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        self.assertEqual(len(waits), 50)
        h.clock.advance(32 - 5)  # now 32 s after the first final response: it has run out
        self.assertEqual([t.state for t in txns[:2]], [TERMINATED, COMPLETED])
        h.clock.pump([0.25] * 8)  # 2 s more: those completed up to 2 s after the first (within 0.05 s)
        done = [t for t in txns if t.state == TERMINATED]
        self.assertEqual(done, txns[: len(done)])  # in order
        self.assertIn(len(done), (20, 21))
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        h.clock.pump([0.05] * 200)
        self.assertEqual([t.state for t in txns], [TERMINATED] * 50)
        self.assertEqual(h.terminated, txns)
        self.assertEqual(len(waits), 0)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_timer_j_runs_its_full_length(self) -> None:
        h = Harness()
        waits = WaitTimers(h.clock)
        request = make_request("OPTIONS")
        txn = self.server(h, waits, request)
        txn.respond(response_to(request, 200))
        h.clock.advance(31.9)
        self.assertEqual(txn.state, COMPLETED)
        h.clock.advance(0.1)
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_a_transaction_that_ends_early_is_skipped(self) -> None:
        h = Harness()
        waits = WaitTimers(h.clock)
        request = make_request("OPTIONS")
        txn = self.server(h, waits, request)
        txn.respond(response_to(request, 200))
        txn.transport_error("gone")
        self.assertEqual(txn.state, TERMINATED)
        self.assertIsNone(txn._timer_j)
        h.clock.advance(40)
        self.assertEqual(h.terminated, [txn])  # reported once
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_clear_stops_the_call(self) -> None:
        h = Harness()
        waits = WaitTimers(h.clock)
        request = make_request("OPTIONS")
        self.server(h, waits, request).respond(response_to(request, 200))
        waits.clear()
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(len(waits), 0)

    def test_client_timer_k_is_queued(self) -> None:
        h = Harness()
        waits = WaitTimers(h.clock)
        request = make_request("OPTIONS")
        txn = ClientNonInviteTransaction(
            request, h.send, h.tu, clock=h.clock, timers=TimerConfig(), reliable=False, waits=waits
        )
        txn.start()
        txn.receive_response(response_to(request, 200))
        self.assertIs(txn._timer_k, QUEUED)
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        h.clock.advance(4.9)
        self.assertEqual(txn.state, COMPLETED)
        h.clock.advance(0.1)
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_invite_wait_timers_are_queued(self) -> None:
        """Timers D and M (client), I and L (server) run to their end from the queues: the only delayed
        call left is the queues' own."""
        h = Harness()
        waits = WaitTimers(h.clock)
        timers = TimerConfig()

        def client(status: int, branch: str) -> Any:
            request = make_request(branch=branch)
            txn = ClientInviteTransaction(
                request, h.send, h.tu, clock=h.clock, timers=timers, reliable=False, waits=waits
            )
            txn.start()
            txn.receive_response(response_to(request, status))
            return txn

        def server(status: int, branch: str) -> Any:
            request = make_request(branch=branch)
            txn = ServerInviteTransaction(
                request, FLOW, h.send, clock=h.clock, timers=timers, reliable=False, waits=waits
            )
            response = response_to(request, status)
            txn.respond(response)
            if status >= 300:
                txn.receive_request(make_ack(request, response))
            return txn

        accepted, completed = client(200, "z9hG4bKm"), client(486, "z9hG4bKd")
        confirmed, server_accepted = server(486, "z9hG4bKi"), server(200, "z9hG4bKl")
        self.assertEqual(
            [accepted._timer_m, completed._timer_d, confirmed._timer_i, server_accepted._timer_l],
            [QUEUED] * 4,
        )
        self.assertEqual([t.state for t in (accepted, completed, confirmed, server_accepted)],
                         [ACCEPTED, COMPLETED, CONFIRMED, ACCEPTED])  # fmt: skip
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        h.clock.advance(4.9)
        self.assertEqual(confirmed.state, CONFIRMED)
        h.clock.advance(0.1)  # T4
        self.assertEqual(confirmed.state, TERMINATED)
        h.clock.advance(26.9)
        self.assertEqual(
            [t.state for t in (accepted, completed, server_accepted)], [ACCEPTED, COMPLETED, ACCEPTED]
        )
        h.clock.advance(0.1)  # 64 x T1
        self.assertEqual([t.state for t in (accepted, completed, server_accepted)], [TERMINATED] * 3)
        self.assertEqual(h.clock.getDelayedCalls(), [])


class ReleaseTests(SynchronousTestCase):
    """A completed non-INVITE server transaction over UDP keeps only the bytes of its final response."""

    def test_released_when_send_returns_the_bytes(self) -> None:
        h = Harness()
        flow_sent: list[bytes] = []

        class Flow:
            def send(self, data: bytes) -> None:
                flow_sent.append(data)

        def send(response: Response) -> bytes:
            h.send(response)
            return response.to_bytes()

        request = make_request("REGISTER")
        txn = ServerNonInviteTransaction(
            request, Flow(), send, clock=h.clock, timers=TimerConfig(), reliable=False
        )
        txn.respond(response_to(request, 100))
        self.assertIs(txn.request, request)  # a provisional response releases nothing
        ok = response_to(request, 200)
        txn.respond(ok)
        self.assertEqual(txn.state, COMPLETED)
        self.assertIsNone(txn.request)
        self.assertIsNone(txn.last_response)
        self.assertTrue(txn.final_sent)
        self.assertIn("(released)", repr(txn))
        txn.receive_request(make_request("REGISTER"))
        txn.receive_request(make_request("REGISTER"))
        self.assertEqual(flow_sent, [ok.to_bytes()] * 2)
        txn.respond(response_to(request, 500))  # absorbed
        self.assertEqual(h.labels(), [100, 200])
        h.clock.advance(32)
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_kept_when_send_returns_nothing_or_on_a_reliable_transport(self) -> None:
        h = Harness()
        request = make_request("REGISTER")
        txn = h.server(ServerNonInviteTransaction, request)
        ok = response_to(request, 200)
        txn.respond(ok)
        self.assertIs(txn.request, request)
        self.assertIs(txn.last_response, ok)

        def send(response: Response) -> bytes:
            return response.to_bytes()

        reliable = ServerNonInviteTransaction(
            request, FLOW, send, clock=h.clock, timers=TimerConfig(), reliable=True
        )
        reliable.respond(ok)
        self.assertEqual(reliable.state, TERMINATED)
        self.assertIs(reliable.request, request)


class CycleTests(SynchronousTestCase):
    """A terminated transaction lets go of its `send` and its user, which usually refer back to it (the
    stack's send closure holds the transaction; an outbound leg holds its INVITE transaction): it is then
    freed by reference counting, without the cyclic collector (whose piled-up passes stalled the reactor)."""

    def run_to_end(self, cls: Any, method: str, status: int, wait: float) -> int:
        h = Harness()
        holder: list[Any] = []

        def send(message: Request | Response) -> None:  # the stack's pattern: the closure reaches the txn
            if holder:
                h.send(message)

        class User(RecordingTU):
            transaction: Any = None

        user = User()
        request = make_request(method)
        txn = cls(request, send, user, clock=h.clock, timers=TimerConfig(), reliable=False)
        holder.append(txn)
        user.transaction = txn  # the user holds its transaction
        txn.start()
        txn.receive_response(response_to(request, status))
        h.clock.advance(wait)
        self.assertEqual(txn.state, TERMINATED)
        self.assertEqual(user.statuses, [status])
        ident = id(txn)
        del txn, user  # once we return, only the cycles (send closure <-> txn, user <-> txn) could keep it
        return ident

    def test_client_transactions_are_freed_without_the_collector(self) -> None:
        import gc

        gc.disable()
        self.addCleanup(gc.enable)
        cases = [
            (ClientNonInviteTransaction, "BYE", 200, 5.0),  # Timer K
            (ClientInviteTransaction, "INVITE", 200, 32.0),  # Accepted, Timer M
            (ClientInviteTransaction, "INVITE", 486, 32.0),  # Completed, Timer D
        ]
        for cls, method, status, wait in cases:
            with self.subTest(method=method, status=status):
                ident = self.run_to_end(cls, method, status, wait)
                alive = [o for o in gc.get_objects() if type(o) is cls and id(o) == ident]
                self.assertEqual(alive, [])

    def test_a_terminated_transaction_ignores_late_input(self) -> None:
        h = Harness()
        request = make_request("BYE")
        txn = h.client(ClientNonInviteTransaction, request)
        txn.receive_response(response_to(request, 200))
        h.clock.advance(5)
        self.assertEqual(txn.state, TERMINATED)
        txn.receive_response(response_to(request, 200))
        txn.transport_error("late")
        self.assertEqual((h.tu.statuses, h.tu.errors, h.labels()), ([200], [], ["BYE"]))
