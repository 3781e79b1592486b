"""`pbx.media.ng.NgClient`: ng requests answered by cookie, retransmitted on the clock until a timeout,
rtpengine's error answers as `NgError`, strangers' datagrams dropped; no timer left behind."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.bencode import encode
from pbx.media.ng import NgClient, NgError, NgTimeout

from .ngfakes import NG, FakeNgServer


def client(*, auto: bool = True) -> tuple[NgClient, FakeNgServer, Clock]:
    clock = Clock()
    ng = NgClient(clock, NG, interval=0.5, timeout=4.0)
    return ng, FakeNgServer(ng, auto=auto), clock


class RequestTests(SynchronousTestCase):
    def test_ping_is_answered_by_cookie(self) -> None:
        ng, server, clock = client()
        answer = self.successResultOf(ng.request({"command": "ping"}))
        self.assertEqual(answer, {b"result": b"pong"})
        ((cookie, command),) = server.requests
        self.assertEqual(command, {b"command": b"ping"})
        self.assertRegex(cookie.decode(), r"^[0-9a-f]{8}_1$")
        self.assertEqual(ng.pending, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cookies_are_unique_per_request_and_client(self) -> None:
        ng, server, _ = client()
        other, other_server, _ = client()
        for _ in range(3):
            ng.request({"command": "ping"})
            other.request({"command": "ping"})
        cookies = [c for c, _ in server.requests + other_server.requests]
        self.assertEqual(len(set(cookies)), 6)

    def test_answers_in_any_order_reach_their_requests(self) -> None:
        ng, server, clock = client(auto=False)
        first = ng.request({"command": "ping"})
        second = ng.request({"command": "query", "call-id": "x"})
        server.waiting.reverse()
        server.deliver()
        self.assertEqual(self.successResultOf(first), {b"result": b"pong"})
        self.assertEqual(self.failureResultOf(second, NgError).value.reason, "Unknown call-id")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unencodable_command_fails_at_once(self) -> None:
        ng, server, clock = client()
        self.failureResultOf(ng.request({"command": "offer", "sdp": None}), ValueError)
        self.assertEqual(server.requests, [])
        self.assertEqual(clock.getDelayedCalls(), [])


class RetransmissionTests(SynchronousTestCase):
    def test_unanswered_request_is_retransmitted_with_backoff_then_times_out(self) -> None:
        ng, server, clock = client()
        server.silent.add("offer")
        d = ng.request({"command": "offer", "call-id": "c"})
        times = []
        for step in [0.1] * 60:
            before = len(server.requests)
            clock.advance(step)
            if len(server.requests) > before:
                times.append(round(clock.seconds(), 1))
        self.assertEqual(times, [0.5, 1.5, 3.5])  # 0.5, then 1, then 2 seconds later
        self.assertEqual(len({c for c, _ in server.requests}), 1)  # the same cookie each time
        failure = self.failureResultOf(d, NgTimeout)
        self.assertIn("no answer from rtpengine", failure.value.reason)
        self.assertEqual(ng.counters["retransmissions"], 3)
        self.assertEqual(ng.counters["timeouts"], 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_answer_to_a_retransmission_ends_the_request(self) -> None:
        ng, server, clock = client(auto=False)
        d = ng.request({"command": "ping"})
        clock.advance(0.5)
        server.deliver()  # two identical answers (rtpengine repeats the answer to a repeated cookie)
        self.assertEqual(self.successResultOf(d), {b"result": b"pong"})
        self.assertEqual(ng.counters["dropped"], 1)  # the second one
        self.assertEqual(clock.getDelayedCalls(), [])


class AnswerTests(SynchronousTestCase):
    def test_error_answer_fails_with_its_reason(self) -> None:
        ng, server, clock = client()
        server.fail["offer"] = "Failed to parse SDP\x00\x07" + "x" * 300
        failure = self.failureResultOf(ng.request({"command": "offer"}), NgError)
        self.assertTrue(failure.value.reason.startswith("Failed to parse SDP"))
        self.assertLessEqual(len(failure.value.reason), 120)
        self.assertTrue(failure.value.reason.isprintable())
        self.assertEqual(ng.counters["errors"], 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_load_limit_and_missing_result_are_errors(self) -> None:
        ng, server, clock = client(auto=False)
        for answer, reason in ((b"d6:result10:load limite", "load limit"), (b"de", "no result")):
            d = ng.request({"command": "ping"})
            cookie = server.requests[-1][0]
            ng.datagramReceived(cookie + b" " + answer, NG)
            self.assertEqual(self.failureResultOf(d, NgError).value.reason, reason)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_strangers_and_garbage_are_dropped(self) -> None:
        ng, server, clock = client(auto=False)
        d = ng.request({"command": "ping"})
        cookie = server.requests[-1][0]
        good = cookie + b" " + encode({"result": "pong"})
        ng.datagramReceived(good, ("127.0.0.2", NG[1]))  # another host
        ng.datagramReceived(good, (NG[0], 9999))  # another port
        ng.datagramReceived(b"nope " + encode({"result": "pong"}), NG)  # an unknown cookie
        ng.datagramReceived(cookie + b" i1e", NG)  # not a dictionary
        ng.datagramReceived(cookie + b" d6:result", NG)  # not bencode
        ng.datagramReceived(cookie, NG)
        self.assertNoResult(d)
        self.assertEqual(ng.counters["dropped"], 6)
        ng.datagramReceived(good, NG)
        self.assertEqual(self.successResultOf(d), {b"result": b"pong"})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_close_fails_pending_requests_and_refuses_new_ones(self) -> None:
        ng, _server, clock = client(auto=False)
        d = ng.request({"command": "ping"})
        ng.close()
        self.assertEqual(self.failureResultOf(d, NgError).value.reason, "ng client closed")
        self.failureResultOf(ng.request({"command": "ping"}), NgError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_write_errors_are_retried(self) -> None:
        ng, server, clock = client()
        calls = []

        def refuse(data: bytes, addr: object = None) -> None:
            calls.append(data)
            if len(calls) == 1:
                raise OSError("no buffer space")
            FakeNgServer.write(server, data, addr)

        server.write = refuse  # type: ignore[method-assign]
        d = ng.request({"command": "ping"})
        self.assertNoResult(d)
        clock.advance(0.5)
        self.assertEqual(self.successResultOf(d), {b"result": b"pong"})
        self.assertEqual(clock.getDelayedCalls(), [])
