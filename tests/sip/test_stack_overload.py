"""The stack under overload: stateless answers from the cache, new work shed early, accepted work never.

A fake flow and a Clock: RFC 3261 8.2.7 (a stateless UAS), 17.2.3 (what a retransmission is), 21.5.4 (503
with Retry-After); RFC 7339's idea of refusing new work early so that the work already accepted completes.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

import pbx.sip.shedding as shedding
from pbx.sip.interfaces import IFlow
from pbx.sip.message import Request, Response
from pbx.sip.overload import LagMonitor, OverloadGuard, OverloadPolicy
from pbx.sip.parser import parse_message
from pbx.sip.peek import peek_new_request, raw_response
from pbx.sip.refusal import scan_new_request
from pbx.sip.stack import SipStack
from tests.sip.test_refusal import requests
from tests.sip.test_stack import FakeFlow, FakeTransports, deliver, request


class SlowTU:
    """A transaction user that answers when told to (a store commit in flight)."""

    def __init__(self) -> None:
        self.pending: list[tuple[object, Request, Deferred[None]]] = []

    def request_received(self, transaction, request):
        d: Deferred[None] = Deferred()
        d.addCallback(lambda _: transaction.respond(request.response(200, to_tag="t")))
        self.pending.append((transaction, request, d))
        return d

    def ack_received(self, request, flow):
        pass

    def cancel_received(self, cancel, invite):
        pass


def challenge(req: Request, flow: IFlow) -> Response | None:
    if "Authorization" in req.headers or "Proxy-Authorization" in req.headers:
        return None
    return req.response(401, to_tag="ch")


def make(lag: float = 0.0, **policy: object) -> tuple[SipStack, OverloadGuard, SlowTU, Clock]:
    clock = Clock()
    stack = SipStack(clock)
    stack.attach_transport(FakeTransports())
    monitor = LagMonitor(clock, high=0.2, critical=1.0)
    monitor.lag = lag
    guard = OverloadGuard(clock, monitor, OverloadPolicy(**policy))  # type: ignore[arg-type]
    if lag >= monitor.high:
        guard.admit_share = 0.0  # as after a while at that lag
    stack.set_overload(guard)
    tu = SlowTU()
    stack.register("REGISTER", tu)
    stack.register("INVITE", tu)
    stack.answer_statelessly("REGISTER", challenge)
    return stack, guard, tu, clock


def via(branch: str) -> str:
    return f"SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK{branch};rport"


def finish(clock: Clock) -> None:
    clock.advance(64)  # Timer J and friends
    assert clock.getDelayedCalls() == []


def test_new_exchange_gets_a_stateless_503_and_its_retransmission_the_same_bytes() -> None:
    stack, guard, _, clock = make(lag=0.3)
    flow = FakeFlow()
    deliver(stack, request("REGISTER", via=via("a")), flow)
    deliver(stack, request("REGISTER", via=via("a")), flow)
    [first, _] = flow.responses()
    assert first.status == 503 and first.headers.get("Retry-After") == "5"
    assert flow.sent[0] == flow.sent[1]
    assert stack.transactions.server_count == 0  # no state kept for shed work
    assert guard.counters["rejected"] == 1  # the retransmission did not ask again
    assert (stack.counters["shed"], stack.counters["stateless_retransmissions"]) == (1, 1)
    finish(clock)


def test_the_challenge_is_answered_once_and_repeated_from_the_cache() -> None:
    """The collapse this prevents: a fresh 401 (a new nonce) for every retransmission arrives after the
    client moved on, and aborts its next transaction."""
    stack, guard, _, clock = make()
    flow = FakeFlow()
    for _ in range(3):
        deliver(stack, request("REGISTER", via=via("c")), flow)
    assert len(set(flow.sent)) == 1 and [r.status for r in flow.responses()] == [401] * 3
    assert stack.counters["stateless"] == 1 and stack.counters["stateless_retransmissions"] == 2
    assert guard.counters["admitted"] == 1
    other = FakeFlow(remote=("192.0.2.11", 5070))  # the same branch from another source: not the same
    deliver(stack, request("REGISTER", via=via("c")), other)
    assert stack.counters["stateless"] == 2
    finish(clock)


def test_credentials_finish_the_exchange_at_high_lag() -> None:
    stack, guard, tu, clock = make(lag=0.3)
    flow = FakeFlow()
    deliver(stack, request("REGISTER", via=via("d"), Authorization="Digest x=1"), flow)
    assert len(tu.pending) == 1 and guard.pending == 1  # work in flight
    tu.pending[0][2].callback(None)
    assert guard.pending == 0 and flow.responses()[-1].status == 200
    finish(clock)


def test_retransmission_of_accepted_work_is_never_shed() -> None:
    stack, guard, tu, clock = make()
    flow = FakeFlow()
    deliver(stack, request("REGISTER", via=via("e"), Authorization="Digest x=1"), flow)
    guard.monitor.lag = 5.0  # type: ignore[union-attr]  # now critical
    deliver(stack, request("REGISTER", via=via("e"), Authorization="Digest x=1"), flow)
    assert stack.counters["shed"] == 0 and len(tu.pending) == 1  # absorbed by its transaction
    tu.pending[0][2].callback(None)
    assert [r.status for r in flow.responses()] == [200]
    deliver(stack, request("REGISTER", via=via("e"), Authorization="Digest x=1"), flow)
    assert [r.status for r in flow.responses()] == [200, 200]  # the completed transaction answers
    finish(clock)


def test_requests_in_dialogs_and_other_methods_are_never_shed() -> None:
    stack, guard, _, clock = make(lag=5.0)
    flow = FakeFlow()
    deliver(stack, request("INVITE", via=via("f"), To="<sip:bob@example.com>;tag=x"), flow)
    assert flow.responses()[-1].status == 481  # went on to the dialog layer: no such dialog
    deliver(stack, request("OPTIONS", via=via("g")), flow)
    assert flow.responses()[-1].status == 200
    deliver(stack, request("BYE", via=via("h"), To="<sip:bob@example.com>;tag=x"), flow)
    assert flow.responses()[-1].status == 481
    assert stack.counters["shed"] == 0 and sum(guard.counters.values()) == 0
    finish(clock)


def test_critical_lag_drops_new_work_unanswered() -> None:
    stack, guard, tu, clock = make(lag=5.0)
    flow = FakeFlow()
    deliver(stack, request("INVITE", via=via("i"), **{"Proxy-Authorization": "Digest x=1"}), flow)
    deliver(stack, request("REGISTER", via=via("j")), flow)
    assert flow.sent == [] and tu.pending == [] and stack.counters["shed"] == 2
    assert guard.counters["dropped"] == 2
    finish(clock)


def test_a_request_too_broken_to_match_is_left_to_validation() -> None:
    """An RFC 2543 branch is matched with its CSeq (17.2.3): none at all is validation's 400, not an error."""
    stack, _guard, tu, clock = make(lag=0.3)
    flow = FakeFlow()
    deliver(stack, request("REGISTER", via="SIP/2.0/UDP 192.0.2.10:5070;branch=2543", CSeq=None), flow)
    [answer] = flow.responses()
    assert answer.status == 400
    assert stack.counters["errors"] == 0 and tu.pending == []
    finish(clock)


def test_invites_are_not_counted_as_work_in_flight() -> None:
    """An INVITE's Deferred lasts as long as its call: not a measure of backlog."""
    stack, guard, tu, clock = make(max_pending=1)
    flow = FakeFlow()
    deliver(stack, request("INVITE", via=via("k")), flow)
    assert len(tu.pending) == 1 and guard.pending == 0
    deliver(stack, request("REGISTER", via=via("l"), Authorization="Digest x=1"), flow)
    deliver(stack, request("REGISTER", via=via("m"), Authorization="Digest x=1"), flow)
    assert guard.pending == 1 and guard.counters["rejected_pending"] == 1
    assert flow.responses()[-1].status == 503
    for _, req, d in tu.pending:
        if req.method == "REGISTER":
            d.callback(None)
    tu.pending[0][0].respond(tu.pending[0][1].response(486, to_tag="busy"))
    finish(clock)


def test_streams_keep_no_answers_in_the_cache() -> None:
    """No retransmissions over TCP or TLS (RFC 3261 17.1.2.2): nothing to keep."""
    stack, _, _, clock = make()
    flow = FakeFlow("TCP", reliable=True)
    deliver(stack, request("REGISTER", via="SIP/2.0/TCP 192.0.2.10:5070;branch=z9hG4bKn"), flow)
    assert flow.responses()[0].status == 401 and len(stack.stateless_cache) == 0
    finish(clock)


def test_without_a_guard_the_cache_still_answers_retransmissions() -> None:
    clock = Clock()
    stack = SipStack(clock)
    stack.attach_transport(FakeTransports())
    stack.answer_statelessly("REGISTER", challenge)
    flow = FakeFlow()
    deliver(stack, request("REGISTER", via=via("o")), flow)
    deliver(stack, request("REGISTER", via=via("o")), flow)
    assert stack.counters["stateless"] == 1 and stack.counters["stateless_retransmissions"] == 1
    assert stack.overload is None
    finish(clock)


def test_screened_before_parsing_a_shed_register_gets_a_503_from_its_bytes() -> None:
    """The cheapest refusal: the datagram is never parsed; its retransmission gets the same bytes."""
    stack, guard, _tu, clock = make(lag=0.3)
    flow = FakeFlow()
    data = request("REGISTER", via=via("p"))
    assert stack.screen_datagram(data, flow) and stack.screen_datagram(data, flow)
    [first, _again] = flow.responses()
    assert first.status == 503 and first.headers.get("Retry-After") == "5" and first.to.tag
    assert flow.sent[0] == flow.sent[1] and guard.counters["rejected"] == 1
    assert stack.counters["stateless_retransmissions"] == 1
    assert (stack.counters["screened"], stack.counters["requests"]) == (2, 0)  # never parsed
    finish(clock)


def test_screened_admission_is_not_asked_twice_and_accepted_work_passes() -> None:
    stack, guard, tu, clock = make(max_rate=1, burst=1)
    flow = FakeFlow()
    data = request("REGISTER", via=via("q"), Authorization="Digest x=1")
    assert not stack.screen_datagram(data, flow)  # admitted: on to the parser
    deliver(stack, data, flow)
    assert guard.counters["admitted"] == 1 and len(tu.pending) == 1
    assert stack.screen_datagram(data, flow) and flow.sent == []  # accepted work: absorbed by its transaction
    assert guard.counters["admitted"] == 1
    challenged = request("REGISTER", via=via("r"))
    assert not stack.screen_datagram(challenged, flow)  # the bucket's one token
    deliver(stack, challenged, flow)
    assert flow.responses()[-1].status == 401
    assert stack.screen_datagram(challenged, flow)  # its retransmission: the same 401 from the cache
    assert flow.sent[-1] == flow.sent[-2]
    assert stack.screen_datagram(request("REGISTER", via=via("s")), flow)  # no token left: 503
    assert flow.responses()[-1].status == 503
    assert not stack.screen_datagram(request("BYE", via=via("t")), flow)  # never screened
    assert stack.counters["screened"] == 3  # the retransmission, the cached 401 and the 503
    tu.pending[0][2].callback(None)
    finish(clock)


def test_a_register_the_guard_admits_is_parsed_unscanned_and_then_known_by_its_bytes(monkeypatch) -> None:
    """What `pbx.sip.refusal` finds only a refusal needs: a REGISTER the guard surely admits (here with
    credentials at a high lag) goes to the parser at once, asked once; its retransmission is then known by
    its bytes (its transaction absorbs it); a new one at that lag is scanned and refused."""
    scans: list[bytes] = []

    def counted(data: bytes, methods: dict[bytes, str]) -> object:
        scans.append(data)
        return scan_new_request(data, methods)

    monkeypatch.setattr(shedding, "scan_new_request", counted)
    stack, guard, tu, clock = make(lag=0.3)
    flow = FakeFlow()
    data = request("REGISTER", via=via("x1"), Authorization="Digest x=1")
    assert not stack.screen_datagram(data, flow)
    deliver(stack, data, flow)
    assert (scans, guard.counters["admitted"], len(tu.pending)) == ([], 1, 1)
    assert stack.screen_datagram(data, flow) and flow.sent == []  # absorbed by its transaction
    assert (scans, guard.counters["admitted"], stack.counters["requests"]) == ([], 1, 1)
    new = request("REGISTER", via=via("x2"))
    assert stack.screen_datagram(new, flow) and flow.responses()[-1].status == 503
    assert scans == [new] and guard.counters["rejected"] == 1
    tu.pending[0][2].callback(None)
    assert stack.screen_datagram(data, flow) and flow.responses()[-1].status == 200  # its 200 again
    finish(clock)


def test_a_new_register_admitted_unscanned_gets_its_challenge_again_by_its_bytes() -> None:
    """Below the share's refusals (the guard admits it surely), a new REGISTER is challenged by the parser's
    way; its retransmission gets the same 401 from the cache, known by its bytes."""
    stack, guard, _tu, clock = make()
    guard.admit_share = 0.5  # shedding: the screen is asked
    guard._credit = 0.6  # the next new exchange is admitted
    flow = FakeFlow()
    data = request("REGISTER", via=via("x3"))
    assert guard.shedding and not stack.screen_datagram(data, flow)
    deliver(stack, data, flow)
    assert flow.responses()[-1].status == 401 and guard.counters["admitted"] == 1
    assert stack.screen_datagram(data, flow) and flow.sent[-1] == flow.sent[-2]
    assert guard.counters["admitted"] == 1 and stack.counters["requests"] == 1
    finish(clock)


def test_retransmissions_of_accepted_work_get_the_last_response_without_parsing() -> None:
    """RFC 3261 17.2.1, 17.2.2: the server transaction answers them, known by their key alone."""
    stack, guard, tu, clock = make(lag=0.3)
    flow = FakeFlow()
    register = request("REGISTER", via=via("v"), Authorization="Digest x=1")
    invite = request("INVITE", via=via("w"), **{"Proxy-Authorization": "Digest x=1"})
    for data in (register, invite):
        assert not stack.screen_datagram(data, flow)  # credentials: admitted at high lag
        deliver(stack, data, flow)
    assert len(tu.pending) == 2 and stack.counters["requests"] == 2
    [trying] = flow.sent  # the INVITE's 100; the REGISTER is in Trying, unanswered
    assert trying.startswith(b"SIP/2.0 100 ")
    assert stack.screen_datagram(register, flow) and stack.screen_datagram(invite, flow)
    assert flow.sent == [trying, trying]  # absorbed; the 100 sent again
    tu.pending[0][2].callback(None)  # the REGISTER's 200
    assert stack.screen_datagram(register, flow)
    assert flow.responses()[-1].status == 200 and flow.sent[-1] == flow.sent[-2]
    assert stack.counters["requests"] == 2 and guard.counters["admitted"] == 2  # parsed and asked once each
    assert stack.counters["screened"] == 3
    tu.pending[1][2].callback(None)
    finish(clock)


def test_nothing_is_screened_while_the_guard_sheds_nothing() -> None:
    """At a normal level without caps the parser's way costs less than peeking first; it decides the same."""
    stack, guard, _tu, clock = make()
    flow = FakeFlow()
    data = request("REGISTER", via=via("n"))
    assert not stack.screen_datagram(data, flow)
    deliver(stack, data, flow)
    assert not stack.screen_datagram(data, flow)
    deliver(stack, data, flow)  # the retransmission: the same 401, from the cache after parsing
    assert flow.sent[0] == flow.sent[1] and flow.responses()[0].status == 401
    assert stack.counters["screened"] == 0 and stack.counters["stateless_retransmissions"] == 1
    assert guard.counters["admitted"] == 1
    finish(clock)


def test_without_a_guard_nothing_is_screened() -> None:
    clock = Clock()
    stack = SipStack(clock)
    assert not stack.screen_datagram(request("REGISTER", via=via("u")), FakeFlow())
    assert stack.counters["screened"] == 0


def test_the_ack_of_a_stateless_challenge_forgets_it() -> None:
    """An INVITE challenged statelessly (407) and ACKed: the client's transaction is Completed and retransmits
    no more (RFC 3261 17.1.1.2), so the kept answer goes at once, not 64*T1 later; other ACKs keep theirs."""
    clock = Clock()
    stack = SipStack(clock)
    stack.attach_transport(FakeTransports())
    stack.register("INVITE", SlowTU())
    stack.answer_statelessly("INVITE", lambda req, flow: req.response(407, to_tag="ch"))
    flow = FakeFlow()
    deliver(stack, request("INVITE", via=via("i1")), flow)
    deliver(stack, request("INVITE", via=via("i2")), flow)
    assert [r.status for r in flow.responses()] == [407, 407] and len(stack.stateless_cache) == 2
    deliver(stack, request("ACK", via=via("other"), To="<sip:bob@example.com>;tag=ch"), flow)
    assert len(stack.stateless_cache) == 2  # not the ACK of either
    deliver(stack, request("ACK", via=via("i1"), To="<sip:bob@example.com>;tag=ch"), flow)
    assert len(stack.stateless_cache) == 1
    deliver(stack, request("INVITE", via=via("i2")), flow)  # the other one's retransmission: the same bytes
    assert flow.sent[-1] == flow.sent[1] and stack.counters["stateless_retransmissions"] == 1
    clock.advance(64)
    assert clock.getDelayedCalls() == []


def test_the_raw_refusal_is_the_bytes_the_peeked_one_was() -> None:
    """`pbx.sip.refusal` (the usual shape) answers with the very bytes `pbx.sip.peek`'s way built."""
    stack, _guard, _tu, clock = make(lag=0.3)
    flow = FakeFlow()
    data = request("INVITE", via=via("raw"), Contact="<sip:a@192.0.2.10:5070>")
    assert stack.screen_datagram(data, flow)
    peeked = peek_new_request(data, (b"INVITE ",))
    assert peeked is not None
    extra = f"Retry-After: 5\r\nServer: {stack.user_agent}\r\n".encode()
    assert flow.sent == [raw_response(peeked, b"SIP/2.0 503 Service Unavailable", "z9hG4bKraw", extra)]
    finish(clock)


def test_a_shape_the_raw_scan_declines_is_refused_the_peeked_way() -> None:
    stack, guard, _tu, clock = make(lag=0.3)
    flow = FakeFlow(remote=("2001:db8::10", 5070))
    data = request("REGISTER", via="SIP/2.0/UDP [2001:db8::10]:5070;branch=z9hG4bKv6;rport")
    assert stack.screen_datagram(data, flow) and stack.screen_datagram(data, flow)
    [first, _again] = flow.responses()
    assert first.status == 503 and flow.sent[0] == flow.sent[1] and guard.counters["rejected"] == 1
    finish(clock)


def test_an_answer_that_would_go_elsewhere_than_the_source_takes_the_parsers_way() -> None:
    """No rport and a Via port other than the source's: RFC 3261 18.2.2 sends the 503 there, as the full
    path does (the guard is asked once)."""
    stack, guard, _tu, clock = make(lag=0.3)
    flow = FakeFlow()
    data = request("REGISTER", via="SIP/2.0/UDP 192.0.2.10:5999;branch=z9hG4bKelse")
    assert not stack.screen_datagram(data, flow)
    deliver(stack, data, flow)
    assert flow.sent == [] and guard.counters["rejected"] == 1
    [(answer, _transport, host, port)] = stack.transport.sent
    assert (host, port) == ("192.0.2.10", 5999) and answer.startswith(b"SIP/2.0 503 ")
    finish(clock)


def test_a_refused_request_is_known_by_its_bytes_and_another_copy_gets_the_same_503() -> None:
    stack, guard, _tu, clock = make(lag=0.3)
    flow = FakeFlow()
    data = request("REGISTER", via=via("copy"))
    assert stack.screen_datagram(data, flow) and stack.screen_datagram(data, flow)
    assert stack.counters["stateless_retransmissions"] == 1 and guard.counters["rejected"] == 1
    other = request("REGISTER", via=via("copy"), Subject="the same transaction, other bytes")
    assert stack.screen_datagram(other, flow)  # not the same bytes: scanned again, refused again alike
    assert flow.sent[0] == flow.sent[1] == flow.sent[2] and guard.counters["rejected"] == 2
    assert stack.screen_datagram(data, FakeFlow(remote=("192.0.2.11", 5070))) is True  # another source:
    assert guard.counters["rejected"] == 3  # not a retransmission of the first
    finish(clock)


def screen_or_deliver(stack: SipStack, data: bytes, flow: FakeFlow) -> None:
    """The UDP entry's way: the screen first, the parser for what it leaves."""
    if not stack.screen_datagram(data, flow):
        deliver(stack, data, flow)


def ack(branch: str, tag: str = "x") -> bytes:
    return request("ACK", via=via(branch), To=f"<sip:bob@example.com>;tag={tag}", CSeq="1 ACK")


def test_the_ack_of_a_screened_503_is_absorbed_from_its_bytes() -> None:
    """RFC 3261 17.1.1.3: the ACK of a non-2xx has the INVITE's branch; that of a 503 sent from the screen
    ends no transaction and no dialog, so it is dropped before parsing (once: a second copy is parsed)."""
    stack, _guard, _tu, clock = make(lag=0.3)
    flow = FakeFlow()
    assert stack.screen_datagram(request("INVITE", via=via("r1")), flow)
    assert flow.responses()[0].status == 503
    assert not stack.screen_datagram(ack("other"), flow)  # another branch: the parser's way
    assert not stack.screen_datagram(ack("r1"), FakeFlow(remote=("192.0.2.11", 5070)))  # another source
    assert stack.screen_datagram(ack("r1"), flow)
    assert not stack.screen_datagram(ack("r1"), flow)  # forgotten: parsed, as before
    assert stack.counters["screened"] == 2 and stack.counters["requests"] == 0
    finish(clock)


def test_the_ack_of_a_stateless_challenge_to_a_screened_invite_forgets_it_unparsed() -> None:
    stack, _guard, _tu, clock = make(max_rate=1, burst=2)  # shedding (a rate cap): screened, admitted
    stack.answer_statelessly("INVITE", lambda req, flow: req.response(407, to_tag="ch"))
    flow = FakeFlow()
    screen_or_deliver(stack, request("INVITE", via=via("c1")), flow)
    assert flow.responses()[-1].status == 407 and len(stack.stateless_cache) == 1
    assert stack.screen_datagram(ack("c1"), flow)
    assert len(stack.stateless_cache) == 0 and stack.counters["requests"] == 1  # only the INVITE parsed
    finish(clock)


def test_the_ack_of_an_invite_answered_by_a_transaction_goes_to_it() -> None:
    """An admitted INVITE handled by its transaction: the ACK of its non-2xx final response must reach it
    (Timer G stops), so it is parsed."""
    stack, _guard, tu, clock = make(max_rate=1, burst=2)
    flow = FakeFlow()
    screen_or_deliver(stack, request("INVITE", via=via("t1")), flow)
    [(transaction, invite, d)] = tu.pending
    transaction.respond(invite.response(486, to_tag="busy"))
    assert flow.responses()[-1].status == 486
    assert not stack.screen_datagram(ack("t1", "busy"), flow)
    deliver(stack, ack("t1", "busy"), flow)
    clock.advance(5)  # Timer I: the 486 was not sent again
    assert [r.status for r in flow.responses()].count(486) == 1
    d.callback(None)
    finish(clock)


def test_acks_expected_are_bounded() -> None:
    stack, _guard, _tu, clock = make(lag=0.3)
    stack.shed_screen.max_acks = 4
    flow = FakeFlow()
    for n in range(6):
        assert stack.screen_datagram(request("INVITE", via=via(f"b{n}")), flow)
    assert not stack.screen_datagram(ack("b0"), flow) and not stack.screen_datagram(ack("b1"), flow)
    assert all(stack.screen_datagram(ack(f"b{n}"), flow) for n in range(2, 6))
    finish(clock)


def test_only_an_ack_whose_top_via_names_the_branch_is_absorbed() -> None:
    """The branch is read from the first `Via: ` line only; other spellings take the parser's way."""
    stack, _guard, _tu, clock = make(lag=0.3)
    flow = FakeFlow()
    assert stack.screen_datagram(request("INVITE", via=via("d1")), flow)
    compact = ack("d1").replace(b"\r\nVia: ", b"\r\nv: ")
    assert not stack.screen_datagram(compact, flow)
    below = request(
        "ACK", via=via("proxy") + "\r\nVia: " + via("d1"), To="<sip:bob@example.com>;tag=x", CSeq="1 ACK"
    )
    assert not stack.screen_datagram(below, flow)  # the branch in a lower Via: not this ACK's
    longer = ack("d1x")
    assert not stack.screen_datagram(longer, flow)
    assert stack.screen_datagram(ack("d1"), flow)
    finish(clock)


@settings(max_examples=60, deadline=None)
@given(requests(), st.booleans())
def test_the_ack_absorbed_is_the_ack_of_the_refused_invite(data: bytes, same: bool) -> None:
    """Over hypothesis-made INVITEs refused by the screen: the ACK a client sends for the 503 (its top Via
    copied, RFC 3261 17.1.1.3) is absorbed whenever the 503 came from the raw bytes, and an ACK with another
    branch never is."""
    invite = data.replace(b"REGISTER", b"INVITE")
    stack, _guard, _tu, clock = make(lag=0.3)
    flow = FakeFlow()
    screened = stack.screen_datagram(invite, flow)
    parsed = parse_message(invite)
    assert isinstance(parsed, Request) and parsed.top_via is not None
    top = parsed.top_via
    port = f":{top.port}" if top.port else ""
    branch = top.branch if same else f"{top.branch}x"
    ack = (
        f"ACK sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {top.host}{port};branch={branch}\r\n"
        f"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=x\r\nCall-ID: {parsed.call_id}\r\n"
        "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    absorbed = stack.screen_datagram(ack, flow)
    if not same:
        assert not absorbed
    elif screened and scan_new_request(invite, {b"INVITE": "INVITE"}) is not None:
        assert absorbed and not stack.screen_datagram(ack, flow)  # once
    assert stack.counters["requests"] == 0
    finish(clock)


# -- the refusal at once (`ShedScreen.quick`, asked by the intake for what it would defer) -----------------


def test_quick_refuses_a_new_register_at_once_as_the_screen_would() -> None:
    stack, guard, _tu, clock = make(lag=0.3)
    twin, twin_guard, _, twin_clock = make(lag=0.3)
    flow, twin_flow = FakeFlow(), FakeFlow()
    data = request("REGISTER", via=via("q1"))
    assert stack.shed_screen.quick(data, flow) and twin.screen_datagram(data, twin_flow)
    assert flow.sent == twin_flow.sent and flow.responses()[0].status == 503
    assert guard.counters == twin_guard.counters and guard.counters["rejected"] == 1
    assert stack.shed_screen.quick(data, flow) and flow.sent[1] == flow.sent[0]  # its retransmission
    assert stack.counters["stateless_retransmissions"] == 1 and stack.counters["screened"] == 2
    assert stack.counters["requests"] == 0
    finish(clock)
    finish(twin_clock)


def test_quick_leaves_what_the_guard_would_admit_to_the_regular_way() -> None:
    """Credentials, a new exchange within the share, a rate bucket, an admitted one's copy: untouched."""
    stack, guard, _tu, clock = make(lag=0.3)
    flow = FakeFlow()
    quick = stack.shed_screen.quick
    assert not quick(request("REGISTER", via=via("c"), Authorization="Digest x=1"), flow)
    assert not quick(request("INVITE", via=via("c"), AUTHORIZATION="Digest x=1"), flow)  # the scan sees it
    guard.admit_share, guard._credit = 0.5, 0.6  # the next new exchange is admitted
    data = request("REGISTER", via=via("a"))
    assert not quick(data, flow)
    screen_or_deliver(stack, data, flow)
    assert flow.responses()[-1].status == 401 and guard.counters["admitted"] == 1
    assert not quick(data, flow)  # its retransmission: the regular way knows it by its bytes
    assert stack.screen_datagram(data, flow) and flow.sent[-1] == flow.sent[-2]
    limited, limited_guard, _, limited_clock = make(max_rate=1, burst=1)
    assert not limited.shed_screen.quick(request("REGISTER", via=via("b")), flow)  # the bucket decides
    assert limited_guard.counters["admitted"] == limited_guard.counters["rejected"] == 0
    assert len(flow.sent) == 2 and guard.counters["rejected"] == 0
    finish(clock)
    finish(limited_clock)


def test_quick_repeats_a_stateless_answer_and_leaves_accepted_work_to_its_transaction() -> None:
    stack, guard, tu, clock = make()
    flow = FakeFlow()
    challenged = request("REGISTER", via=via("s1"))
    accepted = request("REGISTER", via=via("s2"), Authorization="Digest x=1")
    deliver(stack, challenged, flow)  # before the overload: challenged statelessly (not known by bytes)
    deliver(stack, accepted, flow)  # and one in its transaction
    guard.monitor.lag, guard.admit_share = 0.3, 0.0  # type: ignore[union-attr]
    assert stack.shed_screen.quick(challenged, flow) and flow.sent[-1] == flow.sent[0]  # its 401 again
    assert stack.shed_screen.quick(accepted.replace(b"Authorization", b"X-Unused"), flow)  # same key:
    assert len(flow.sent) == 2 and guard.counters["rejected"] == 0  # absorbed by its transaction
    tu.pending[0][2].callback(None)
    finish(clock)


def test_quick_drops_at_the_critical_level_and_an_invite_s_ack_is_expected() -> None:
    stack, guard, _tu, clock = make(lag=1.5)
    flow = FakeFlow()
    assert stack.shed_screen.quick(request("INVITE", via=via("d")), flow)
    assert flow.sent == [] and guard.counters["dropped"] == 1 and stack.counters["shed"] == 1
    stack.overload.monitor.lag = 0.3  # type: ignore[union-attr]
    assert stack.shed_screen.quick(request("INVITE", via=via("e")), flow)
    assert flow.responses()[0].status == 503
    assert stack.screen_datagram(ack("e"), flow)  # the ACK of that 503: absorbed from its bytes
    finish(clock)


def test_quick_follows_the_completions_bucket_when_the_request_is_read() -> None:
    """While the guard follows completions (`admit_rate`), `quick` asks the token bucket itself: without a
    token the new exchange is refused at once (no wait for the end of the turn), with one it is taken, and
    the screen at the end of the turn admits it without asking again (one token, one admission)."""
    stack, guard, _tu, clock = make(lag=0.3)
    guard.admit_rate = 1e-9
    flow = FakeFlow()
    refused = request("REGISTER", via=via("f1"))
    assert stack.shed_screen.quick(refused, flow) and flow.responses()[0].status == 503
    assert guard.counters["rejected_lag"] == 1 and stack.counters["screened"] == 1
    assert stack.shed_screen.quick(refused, flow) and flow.sent[1] == flow.sent[0]  # its 503 again
    guard.admit_rate, guard._rate_tokens = 100.0, 1.5
    taken = request("REGISTER", via=via("f2"))
    assert not stack.shed_screen.quick(taken, flow) and guard.counters["admitted"] == 1
    screen_or_deliver(stack, taken, flow)  # the end of the turn: admitted without a second token
    assert flow.responses()[-1].status == 401 and guard.counters["admitted"] == 1
    assert guard._rate_tokens == 0.5 and guard.counters["rejected"] == 1
    finish(clock)


_STATES = [
    {"lag": 0.3},
    {"lag": 1.5},
    {"lag": 0.3, "share": 0.5, "credit": 0.6},
    {"lag": 0.3, "share": 0.5, "credit": 0.2},
    {"lag": 0.0, "pending": 5, "max_pending": 5},
    {"lag": 0.3, "max_rate": 1.0},
    {"lag": 0.3, "admit_rate": 1e-9},  # following completions, no token: refused at once
    {"lag": 0.3, "admit_rate": 100.0, "tokens": 3.0},  # following completions, a token: taken at once
    {"lag": 1.5, "admit_rate": 100.0, "tokens": 3.0},  # critical: dropped whatever the bucket holds
]


@settings(max_examples=80, deadline=None)
@given(requests(), st.sampled_from(_STATES), st.booleans())
def test_quick_agrees_with_the_screen(data: bytes, state: dict[str, float], blocked: bool) -> None:
    """Whatever the request and the guard's state: `quick` then (if it left the request for the end of the
    turn) `screen` do what `screen` alone does on a twin stack, byte for byte and count for count (a new
    exchange the share admits is counted when it is read, and the screen does not ask again)."""
    stacks = []
    for _ in range(2):
        policy = {k: state[k] for k in ("max_pending", "max_rate") if k in state}
        stack, guard, _tu, clock = make(lag=state["lag"], **policy)  # type: ignore[arg-type]
        guard.admit_share = state.get("share", guard.admit_share)
        guard._credit = state.get("credit", 0.0)
        guard.pending = int(state.get("pending", 0))
        guard.admit_rate = state.get("admit_rate", 0.0)
        guard._rate_tokens = state.get("tokens", 0.0)
        if blocked:
            stack.set_source_filter(lambda host: host == "192.0.2.10")
        stacks.append((stack, guard, FakeFlow(), clock))
    (stack, guard, flow, clock), (twin, twin_guard, twin_flow, twin_clock) = stacks
    if not stack.shed_screen.quick(data, flow):  # left for the end of the turn: the screen then
        assert flow.sent == [] and guard.counters["rejected"] == guard.counters["dropped"] == 0
        screen_or_deliver(stack, data, flow)
        screen_or_deliver(twin, data, twin_flow)
    else:
        assert twin.screen_datagram(data, twin_flow)
    assert flow.sent == twin_flow.sent and stack.transport.sent == twin.transport.sent
    assert guard.counters == twin_guard.counters
    assert stack.counters == twin.counters
    finish(clock)
    finish(twin_clock)
