"""The stack with a fake flow and a Clock: validation answers, dispatch, OPTIONS, response routing."""

from __future__ import annotations

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pbx.sip.errors import SipError
from pbx.sip.interfaces import IDialogUsage, IFlow, IMessageSink, ISipStack
from pbx.sip.message import Request, Response
from pbx.sip.origin import network_matcher
from pbx.sip.parser import parse_message
from pbx.sip.stack import SipStack


@implementer(IFlow)
class FakeFlow:
    def __init__(self, transport: str = "UDP", remote=("192.0.2.10", 5070), reliable: bool = False) -> None:
        self.transport = transport
        self.reliable = reliable
        self.secure = transport == "TLS"
        self.local_address = ("127.0.0.1", 5060)
        self.remote_address = remote
        self.sent: list[bytes] = []
        self.open = True

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def connected(self) -> bool:
        return self.open

    def responses(self) -> list[Response]:
        out = [parse_message(d) for d in self.sent]
        assert all(isinstance(r, Response) for r in out)
        return out  # type: ignore[return-value]


class FakeTransports:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, str, int]] = []

    def send(self, data, transport, host, port):
        self.sent.append((data, transport, host, port))
        return succeed(None)

    def local_address(self, transport, host):
        return ("127.0.0.1", 5060)


def request(
    method: str = "OPTIONS", via: str = "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK1;rport", **over
) -> bytes:
    headers = {
        "Via": via,
        "Max-Forwards": "70",
        "From": "<sip:alice@example.com>;tag=a1",
        "To": "<sip:bob@example.com>",
        "Call-ID": "c1@example.com",
        "CSeq": f"1 {method}",
    }
    headers.update(over)
    lines = [f"{method} sip:bob@example.com SIP/2.0"] + [
        f"{k}: {v}" for k, v in headers.items() if v is not None
    ]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def make_stack() -> tuple[SipStack, FakeTransports, Clock]:
    clock = Clock()
    stack = SipStack(clock)
    transports = FakeTransports()
    stack.attach_transport(transports)
    return stack, transports, clock


def deliver(stack: SipStack, data: bytes, flow: FakeFlow) -> None:
    from pbx.sip.errors import SipParseError

    try:
        message = parse_message(data)
    except SipParseError as e:
        stack.undecodable(data, flow, e)
        return
    stack.message_received(message, flow)


def test_stack_provides_interfaces():
    stack, _, _ = make_stack()
    assert verifyObject(IMessageSink, stack)


def test_options_answered_with_allow_accept_supported():
    stack, _, _ = make_stack()
    flow = FakeFlow()
    deliver(stack, request("OPTIONS"), flow)
    [response] = flow.responses()
    assert response.status == 200
    assert "OPTIONS" in response.headers.get_all("Allow")
    assert response.headers.get("Accept") == "application/sdp"
    assert response.headers.get_all("Supported") == ["timer"]  # only what is implemented
    assert response.to.tag
    via = response.top_via
    assert via.received == "192.0.2.10" and via.rport == 5070


def test_options_out_of_service_is_503_with_retry_after():
    """A node draining before it stops: a front proxy's OPTIONS health check sees it out of service."""
    stack, _, _ = make_stack()
    stack.out_of_service = True
    flow = FakeFlow()
    deliver(stack, request("OPTIONS"), flow)
    [response] = flow.responses()
    assert (response.status, response.headers.get("Retry-After")) == (503, "60")


def test_a_request_through_a_trusted_proxy_is_judged_by_the_address_behind_it():
    """Behind a trusted proxy the source filter sees the Via below the proxy's: a blocked phone is dropped,
    others and the proxy's own requests pass."""
    stack, _, _ = make_stack()
    stack.set_source_filter(lambda host: host == "198.51.100.66")
    stack.is_trusted_proxy = network_matcher(["192.0.2.10"])
    proxy_via = "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKp{n}"
    for n, (phone, answered) in enumerate([("198.51.100.66", False), ("198.51.100.7", True), (None, True)]):
        flow = FakeFlow()
        via = proxy_via.format(n=n) + (f", SIP/2.0/UDP {phone}:5060;branch=z9hG4bKa{n}" if phone else "")
        deliver(stack, request("OPTIONS", via=via), flow)
        assert bool(flow.sent) is answered, phone


def test_require_of_an_option_not_implemented_gets_420():
    """path, outbound and replaces are not implemented: requiring one gets 420 (RFC 3261 8.2.2.3)."""
    stack, _, _ = make_stack()
    for tag in ("path", "outbound", "replaces"):
        flow = FakeFlow()
        deliver(stack, request("OPTIONS", Require=tag), flow)
        [response] = flow.responses()
        assert response.status == 420 and response.headers.get("Unsupported") == tag


def test_options_retransmission_absorbed_and_answered_again():
    stack, _, _ = make_stack()
    flow = FakeFlow()
    deliver(stack, request("OPTIONS"), flow)
    deliver(stack, request("OPTIONS"), flow)
    assert len(flow.sent) == 2
    assert flow.sent[0] == flow.sent[1]


def test_unknown_method_501_known_unhandled_405():
    stack, _, _ = make_stack()
    flow = FakeFlow()
    deliver(stack, request("FROBNICATE", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK2"), flow)
    deliver(stack, request("SUBSCRIBE", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK3"), flow)
    first, second = flow.responses()
    assert first.status == 501 and "OPTIONS" in first.headers.get_all("Allow")
    assert second.status == 405


def test_bad_requests_get_400_with_reason():
    stack, _, _ = make_stack()
    cases = {
        "Bad CSeq": request("OPTIONS", CSeq="abc OPTIONS"),
        "CSeq method does not match": request("OPTIONS", CSeq="1 INVITE"),
        "Missing From": request("OPTIONS", From=None),
        "Content-Length larger than body": request("OPTIONS").replace(
            b"Content-Length: 0", b"Content-Length: 10"
        ),
        "Bad Content-Length": request("OPTIONS").replace(b"Content-Length: 0", b"Content-Length: x"),
    }
    for reason, data in cases.items():
        flow = FakeFlow()
        deliver(stack, data, flow)
        [response] = flow.responses()
        assert response.status == 400, reason
        assert reason in response.reason, (reason, response.reason)


def test_unroutable_garbage_is_dropped():
    stack, transports, _ = make_stack()
    flow = FakeFlow()
    deliver(stack, b"\x00\x01garbage\r\n\r\n", flow)
    deliver(stack, request("OPTIONS", Via=None), flow)
    assert flow.sent == [] and transports.sent == []
    assert stack.counters["dropped"] == 2


def test_max_forwards_zero_483_but_options_answered():
    stack, _, _ = make_stack()
    flow = FakeFlow()
    deliver(stack, request("REGISTER", **{"Max-Forwards": "0"}), flow)
    deliver(
        stack,
        request("OPTIONS", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK9", **{"Max-Forwards": "0"}),
        flow,
    )
    first, second = flow.responses()
    assert first.status == 483
    assert second.status == 200


def test_unsupported_uri_scheme_416_and_require_420():
    stack, _, _ = make_stack()
    flow = FakeFlow()
    deliver(
        stack,
        request("OPTIONS").replace(b"OPTIONS sip:bob@example.com", b"OPTIONS mailto:bob@example.com"),
        flow,
    )
    deliver(
        stack,
        request("OPTIONS", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK8", Require="foo, path"),
        flow,
    )
    first, second = flow.responses()
    assert first.status == 416
    assert second.status == 420 and second.headers.get("Unsupported") == "foo"


def test_version_505():
    stack, _, _ = make_stack()
    flow = FakeFlow()
    deliver(stack, request("OPTIONS").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), flow)
    [response] = flow.responses()
    assert response.status == 505


def test_response_without_rport_goes_to_sent_by_port():
    stack, transports, _ = make_stack()
    flow = FakeFlow(remote=("192.0.2.10", 40000))
    deliver(stack, request("OPTIONS", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK5"), flow)
    assert flow.sent == []
    [(data, transport, host, port)] = transports.sent
    assert (transport, host, port) == ("udp", "192.0.2.10", 5070)
    assert data.startswith(b"SIP/2.0 200")


def test_response_on_stream_uses_the_connection_then_reconnects_when_closed():
    stack, transports, _ = make_stack()
    flow = FakeFlow("TCP", reliable=True)
    deliver(stack, request("OPTIONS", via="SIP/2.0/TCP 192.0.2.10:5070;branch=z9hG4bK6"), flow)
    assert len(flow.sent) == 1
    flow.open = False
    deliver(stack, request("OPTIONS", via="SIP/2.0/TCP 192.0.2.10:5070;branch=z9hG4bK7"), flow)
    assert len(flow.sent) == 1
    [(_, transport, host, port)] = transports.sent
    assert (transport, host, port) == ("tcp", "192.0.2.10", 5070)


class StubDialog:
    """What the stack's dialog table reads of a dialog."""

    def __init__(self, call_id, local_tag, remote_tag, is_uac=True):
        self.call_id, self.local_tag, self.remote_tag, self.is_uac = call_id, local_tag, remote_tag, is_uac
        self.key = (call_id, local_tag, remote_tag)
        self.received = []

    def receive_request(self, request):
        self.received.append(request)


@implementer(IDialogUsage)
class RecordingUsage:
    def __init__(self, result=None):
        self.requests, self.acks, self.responses, self.result = [], [], [], result

    def dialog_request(self, transaction, request, dialog):
        self.requests.append((transaction, request, dialog))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def dialog_ack(self, request, flow, dialog):
        self.acks.append((request, dialog))

    def dialog_response(self, response, dialog):
        self.responses.append((response, dialog))


class RaisingTU:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def request_received(self, transaction, request):
        raise self.exc

    def ack_received(self, request, flow):
        pass

    def cancel_received(self, cancel, invite):
        pass


def test_sip_error_from_tu_becomes_response_and_crash_becomes_500():
    stack, _, _ = make_stack()
    stack.register("REGISTER", RaisingTU(SipError(403, "Nope")))
    stack.register("MESSAGE", RaisingTU(RuntimeError("boom")))
    flow = FakeFlow()
    deliver(stack, request("REGISTER"), flow)
    deliver(stack, request("MESSAGE", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKm"), flow)
    first, second = flow.responses()
    assert (first.status, first.reason) == (403, "Nope")
    assert second.status == 500
    assert stack.counters["errors"] == 1


def test_send_request_adds_via_and_starts_client_transaction():
    stack, transports, clock = make_stack()

    class TU:
        def __init__(self):
            self.responses = []
            self.timeouts = 0

        def response_received(self, txn, response):
            self.responses.append(response)

        def transaction_timeout(self, txn):
            self.timeouts += 1

        def transport_error(self, txn, reason):
            pass

    tu = TU()
    req = Request("OPTIONS", parse_message(request("OPTIONS")).uri)
    for name, value in (("From", "<sip:pbx@example.com>;tag=x"), ("To", "<sip:bob@example.com>"),
                        ("Call-ID", "out1"), ("CSeq", "1 OPTIONS")):  # fmt: skip
        req.headers.add(name, value)
    stack.send_request(req, tu, "udp", "192.0.2.20", 5060)
    assert len(transports.sent) == 1
    sent = parse_message(transports.sent[0][0])
    assert isinstance(sent, Request)
    assert sent.top_via.branch.startswith("z9hG4bK")
    response = sent.response(200, to_tag="b")
    stack.message_received(response, FakeFlow(remote=("192.0.2.20", 5060)))
    assert [r.status for r in tu.responses] == [200]
    clock.advance(64)
    assert tu.timeouts == 0


def test_completed_udp_transaction_keeps_only_the_response_bytes():
    """RFC 3261 17.2.2 over UDP: Timer J keeps the transaction 32 s; it holds the bytes, not the objects."""
    stack, _, clock = make_stack()
    flow = FakeFlow()
    deliver(stack, request("OPTIONS"), flow)
    [txn] = stack.transactions._server.values()
    assert txn.request is None and txn.last_response is None and txn.final_sent
    deliver(stack, request("OPTIONS"), flow)
    assert flow.sent == [flow.sent[0]] * 2
    assert len(clock.getDelayedCalls()) == 1  # the one call that expires Timer J of every transaction
    clock.advance(32)
    assert len(stack.transactions) == 0 and clock.getDelayedCalls() == []


def test_send_response_returns_the_bytes_only_when_they_went_back_on_the_flow():
    stack, transports, _ = make_stack()
    req = parse_message(request("OPTIONS"))
    flow = FakeFlow()
    stack._stamp_via(req, flow)
    data = stack.send_response(req.response(200, to_tag="t"), flow)
    assert data is not None and flow.sent == [data]
    elsewhere = FakeFlow(remote=("192.0.2.10", 40000))  # no rport: the answer goes to sent-by
    req = parse_message(request("OPTIONS", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK5"))
    assert stack.send_response(req.response(200, to_tag="t"), elsewhere) is None
    assert elsewhere.sent == [] and len(transports.sent) == 1
    tcp = FakeFlow("TCP", reliable=True)
    req = parse_message(request("OPTIONS", via="SIP/2.0/TCP 192.0.2.10:5070;branch=z9hG4bK6"))
    assert stack.send_response(req.response(200, to_tag="t"), tcp) is None
    assert len(tcp.sent) == 1


def test_received_and_rport_are_stamped_keeping_the_via_text():
    stack, _, _ = make_stack()
    flow = FakeFlow(remote=("198.51.100.7", 40123))
    deliver(stack, request("OPTIONS", via="SIP/2.0/UDP 192.0.2.10:5070;rport;branch=z9hG4bKs"), flow)
    [response] = flow.responses()
    assert response.headers.get("Via") == (
        "SIP/2.0/UDP 192.0.2.10:5070;rport=40123;branch=z9hG4bKs;received=198.51.100.7"
    )


def test_options_fields_follow_registered_transaction_users():
    stack, _, _ = make_stack()
    flow = FakeFlow()
    deliver(stack, request("OPTIONS"), flow)
    stack.register("REGISTER", RaisingTU(SipError(403)))
    deliver(stack, request("OPTIONS", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKo2"), flow)
    first, second = flow.responses()
    assert "REGISTER" not in first.headers.get_all("Allow")
    assert "REGISTER" in second.headers.get_all("Allow")


def test_malformed_stray_responses_are_dropped_not_handed_on():
    stack, _, _ = make_stack()
    strays = []
    good = parse_message(request("OPTIONS")).response(200, to_tag="t")
    usage = RecordingUsage()
    stack.add_dialog(StubDialog(good.call_id, good.from_.tag, "t"), usage)
    bad_cseq = parse_message(request("OPTIONS")).response(200, to_tag="t")
    bad_cseq.headers.set("CSeq", "x OPTIONS")
    no_branch = parse_message(request("OPTIONS", via="SIP/2.0/UDP 192.0.2.10")).response(200, to_tag="t")
    no_branch.headers.set("CSeq", "1 2 3")
    for response in (good, bad_cseq, no_branch):
        stack.message_received(response, FakeFlow())
    strays = [response for response, _dialog in usage.responses]
    assert strays == [good]
    assert stack.counters["dropped"] == 2 and stack.counters["errors"] == 0


def test_stateless_answers_keep_no_transaction_and_answer_retransmissions_from_the_cache():
    """RFC 3261 8.2.7: a stateless answerer (the registrar's challenge) sees new requests first; a
    retransmission gets the same bytes again from the stack's cache, without asking it again."""
    stack, _, _ = make_stack()
    seen: list[Request] = []
    stack.register("REGISTER", RaisingTU(SipError(403, "stateful")))

    def answer(req: Request, flow: IFlow) -> Response | None:
        seen.append(req)
        if req.headers.get("Authorization"):
            return None  # the stateful way
        if req.headers.get("Subject") == "refuse":
            raise SipError(400, "Refused early")
        return req.response(401, to_tag="stateless")

    stack.answer_statelessly("REGISTER", answer)
    flow = FakeFlow()
    deliver(stack, request("REGISTER"), flow)
    deliver(stack, request("REGISTER"), flow)  # a retransmission: answered again, still no transaction
    assert [r.status for r in flow.responses()] == [401, 401]
    assert flow.sent[0] == flow.sent[1]
    assert stack.transactions.server_count == 0
    assert len(seen) == 1
    assert (stack.counters["stateless"], stack.counters["stateless_retransmissions"]) == (1, 1)
    assert "rport=5070" in (seen[0].headers.get("Via") or "")  # stamped before the answerer sees it

    via2 = "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK2;rport"
    deliver(stack, request("REGISTER", via=via2, Authorization="Digest x=1"), flow)
    assert flow.responses()[-1].status == 403  # went on to the transaction user
    assert stack.transactions.server_count == 1

    deliver(
        stack, request("REGISTER", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK9", Subject="refuse"), flow
    )
    assert (flow.responses()[-1].status, flow.responses()[-1].reason) == (400, "Refused early")
    assert stack.transactions.server_count == 1


# -- the stack's dialog table: usages side by side ------------------------------------------------------


def test_stack_provides_the_usage_interface():
    stack, _, _ = make_stack()
    assert verifyObject(ISipStack, stack)
    assert verifyObject(IDialogUsage, RecordingUsage())


def test_in_dialog_requests_go_to_the_usage_of_their_dialog():
    stack, _, _ = make_stack()
    calls, subscriptions = RecordingUsage(), RecordingUsage()
    first = StubDialog("c1@example.com", "b1", "a1", is_uac=False)
    second = StubDialog("c2@example.com", "b2", "a1", is_uac=False)
    stack.add_dialog(first, calls)
    stack.add_dialog(second, subscriptions)
    stack.register("BYE", RaisingTU(AssertionError("a request in a dialog reached the method's handler")))
    flow = FakeFlow()
    deliver(stack, request("BYE", To="<sip:bob@example.com>;tag=b1"), flow)
    notify = request(
        "NOTIFY", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK2", **{"Call-ID": "c2@example.com"}
    )
    deliver(stack, notify.replace(b"<sip:bob@example.com>\r\n", b"<sip:bob@example.com>;tag=b2\r\n"), flow)
    assert [r.method for _t, r, d in calls.requests] == ["BYE"]
    assert [r.method for _t, r, d in subscriptions.requests] == ["NOTIFY"]
    assert calls.requests[0][2] is first and first.received == [calls.requests[0][1]]
    assert flow.responses() == []  # the usages answer (they have the transactions)


def test_a_request_in_an_unknown_dialog_gets_481_but_register_and_options_go_on():
    stack, _, _ = make_stack()
    registrar = RaisingTU(SipError(401))
    stack.register("REGISTER", registrar)
    stack.register("BYE", RaisingTU(AssertionError("no")))
    flow = FakeFlow()
    tagged = "<sip:bob@example.com>;tag=zz"
    deliver(stack, request("BYE", To=tagged), flow)
    deliver(stack, request("NOTIFY", To=tagged, via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK2"), flow)
    deliver(stack, request("REGISTER", To=tagged, via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK3"), flow)
    deliver(stack, request("OPTIONS", To=tagged, via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK4"), flow)
    deliver(stack, request("FOO", To=tagged, via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK5"), flow)
    assert [r.status for r in flow.responses()] == [481, 481, 401, 200, 501]


def test_errors_of_a_usage_become_responses_at_the_one_edge():
    stack, _, _ = make_stack()
    stack.add_dialog(StubDialog("c1@example.com", "b1", "a1", is_uac=False), RecordingUsage(SipError(488)))
    stack.add_dialog(
        StubDialog("c2@example.com", "b2", "a1", is_uac=False), RecordingUsage(RuntimeError("x"))
    )
    flow = FakeFlow()
    deliver(stack, request("INFO", To="<sip:bob@example.com>;tag=b1"), flow)
    second = request(
        "INFO", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK2", **{"Call-ID": "c2@example.com"}
    )
    deliver(stack, second.replace(b"<sip:bob@example.com>\r\n", b"<sip:bob@example.com>;tag=b2\r\n"), flow)
    assert [r.status for r in flow.responses()] == [488, 500]


def test_acks_of_2xx_go_to_their_dialog_and_others_are_dropped():
    stack, _, _ = make_stack()
    usage = RecordingUsage()
    dialog = StubDialog("c1@example.com", "b1", "a1", is_uac=False)
    stack.add_dialog(dialog, usage)
    flow = FakeFlow()
    deliver(stack, request("ACK", To="<sip:bob@example.com>;tag=b1"), flow)
    deliver(stack, request("ACK", To="<sip:bob@example.com>;tag=other"), flow)
    assert [(r.method, d) for r, d in usage.acks] == [("ACK", dialog)]
    stack.remove_dialog(dialog)
    deliver(stack, request("ACK", To="<sip:bob@example.com>;tag=b1"), flow)
    assert len(usage.acks) == 1 and flow.responses() == []


def test_an_early_uac_dialog_takes_a_request_from_a_tag_it_does_not_know_yet():
    """RFC 6665 4.1.2.4: the NOTIFY may arrive before the 2xx to the SUBSCRIBE that made the dialog."""
    stack, _, _ = make_stack()
    usage = RecordingUsage()
    stack.add_dialog(StubDialog("c1@example.com", "b1", None, is_uac=True), usage)
    deliver(stack, request("NOTIFY", To="<sip:bob@example.com>;tag=b1"), FakeFlow())
    assert len(usage.requests) == 1
