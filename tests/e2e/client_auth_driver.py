"""A small UAC on a real reactor, SipStack and TransportManager that drives `pbx.sip.client.ClientRequest`
against a SIP server (SIPp in tests/e2e/test_client_auth_sipp.py). Run as
`python -m tests.e2e.client_auth_driver STEP --port P --server-port S --user U --password PW`.

Steps: `register` (REGISTER until final) and `call` (INVITE until final; on 2xx the ACK, then a BYE until
final). Prints one JSON line per request with its final status and the number of requests sent, then exits
0; exits 2 when the whole run takes longer than `--timeout` seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks

from pbx.sip.client import ClientRequest, dialog_cseq
from pbx.sip.client_auth import Credentials
from pbx.sip.dialog import Dialog, destination
from pbx.sip.message import Request, new_call_id, new_tag
from pbx.sip.parser import ParserLimits
from pbx.sip.stack import SipStack
from pbx.sip.transport import TransportManager
from pbx.sip.uri import parse_uri

reactor: Any = _reactor

SDP = (
    b"v=0\r\no=driver 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def report(step: str, client: ClientRequest, status: int) -> None:
    line = {
        "step": step,
        "status": status,
        "attempts": client.attempts,
        "cseq": client.request.cseq.number,
        "local_failure": client.local_failure,
    }
    print(json.dumps(line), flush=True)


def base_request(method: str, uri: str, user: str, server: str, contact: str) -> Request:
    request = Request(method, parse_uri(uri))
    headers = request.headers
    headers.add("Max-Forwards", "70")
    headers.add("From", f"<sip:{user}@{server}>;tag={new_tag()}")
    headers.add("To", f"<sip:{user}@{server}>" if method == "REGISTER" else f"<{uri}>")
    headers.add("Call-ID", new_call_id("127.0.0.1"))
    headers.add("CSeq", f"1 {method}")
    headers.add("Contact", contact)
    return request


@inlineCallbacks
def run(args: argparse.Namespace, stack: SipStack) -> Any:
    server = f"127.0.0.1:{args.server_port}"
    target = ("udp", "127.0.0.1", args.server_port)
    contact = stack.contact_for("udp", "127.0.0.1", args.user)

    def credentials(realm: str) -> Credentials | None:
        return Credentials(args.user, args.password) if realm in args.realms.split(",") else None

    if args.step == "register":
        request = base_request("REGISTER", f"sip:{server}", args.user, server, contact)
        request.headers.add("Expires", "600")
        client = ClientRequest(stack, request, target, credentials)
        response = yield client.start()
        report("register", client, response.status)
        return
    request = base_request("INVITE", f"sip:service@{server}", args.user, server, contact)
    request.headers.add("Content-Type", "application/sdp")
    request.body = SDP
    invite = ClientRequest(stack, request, target, credentials)
    response = yield invite.start()
    report("invite", invite, response.status)
    if response.status >= 300:
        return
    dialog = Dialog.create_uac(invite.request, response)
    ack = dialog.create_ack(invite.request)
    transport, host, port = destination(dialog.next_hop())
    stack.send_stateless(ack, transport, host, port)
    bye = ClientRequest(
        stack,
        dialog.create_request("BYE"),
        (transport, host, port),
        credentials,
        next_cseq=dialog_cseq(dialog),
    )
    response = yield bye.start()
    report("bye", bye, response.status)
    print(json.dumps({"step": "dialog", "local_cseq": dialog.local_cseq}), flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=("register", "call"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-port", type=int, required=True)
    parser.add_argument("--user", default="1001")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--realms", default="sipp.test,proxy.sipp.test", help="comma-separated")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    stack = SipStack(reactor)
    transports = TransportManager(reactor, stack, limits=ParserLimits(), idle_timeout=0)
    stack.attach_transport(transports)
    transports.listen_udp("127.0.0.1", args.port)
    outcome = {"code": 0}

    def give_up() -> None:
        print(json.dumps({"step": "timeout"}), flush=True)
        outcome["code"] = 2
        reactor.stop()

    guard = reactor.callLater(args.timeout, give_up)

    def done(result: object) -> None:
        if guard.active():
            guard.cancel()
        if isinstance(result, Exception) or hasattr(result, "getTraceback"):
            print(json.dumps({"step": "error", "error": str(result)}), flush=True)
            outcome["code"] = 1
        reactor.callLater(0, reactor.stop)

    d: Deferred[Any] = run(args, stack)
    d.addBoth(done)
    reactor.run()
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
