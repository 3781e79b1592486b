"""Calls over TLS with real phones (issue 13, item 1): baresip over TLS, TCP and UDP in a mix.

Each pair of phones registers with one PBX, each over its own transport; the caller dials the callee, both
hear each other (each plays its own tone, the dumps of what it heard are analysed by Goertzel as in
`test_calls_baresip`), and the callee hangs up. What this proves for TLS/TCP phones:

- the PBX's Contact in the 200 to a `sip:` INVITE over TLS is `sip:...;transport=tls`, not `sips:` (RFC 3261
  26.2, RFC 5630): baresip ACKs it (with `sips:` it closed the call, "Function not implemented");
- the INVITE to a phone registered over TLS/TCP goes over the connection it registered on, and the BYE to
  the caller over the connection its INVITE came in on: baresip 1.0 does not listen for TLS, so a new
  connection to its Contact could never work.

baresip 1.0 has no `sip_verify_server`; as a TLS client it does not check the PBX's (self-signed, demo)
certificate, so nothing needs to be configured for it. Waits are on events, each with a timeout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.e2e.audio import assert_hears, read_wav
from tests.e2e.baresip import Account, Baresip, TonePhones
from tests.e2e.test_calls_baresip import heard_dump, wait_heard
from tests.e2e.test_calls_sipp import CallPbx, launch_pbx

pytestmark = pytest.mark.e2e

CALLER_TONE = 440.0
CALLEE_TONE = 1000.0
HEARD_SECONDS = 1.5
ENDED = r"Call \S+ ended: normal .*1001@default -> 1002 answered by 1002"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallPbx]:
    """One PBX for the whole module (the pairs use different extensions in turn, one call at a time)."""
    started = launch_pbx(tmp_path_factory.mktemp("tls_calls") / "pbx", keepalive="crlf")
    yield started
    started.process.stop()


@pytest.mark.parametrize(
    ("caller_transport", "callee_transport", "hangs_up"),
    [
        ("tls", "udp", "callee"),  # the PBX's BYE to the TLS caller: on the connection its INVITE came in on
        ("udp", "tls", "caller"),  # the PBX's BYE to the TLS callee: on the connection it registered on
        ("tls", "tls", "callee"),
        ("tcp", "udp", "callee"),
    ],
)
def test_phones_over_tls_tcp_and_udp_hear_each_other(
    pbx, tmp_path, caller_transport, callee_transport, hangs_up
):
    phones = TonePhones(tmp_path, pbx.sip, seconds=20.0)

    def phone(user: str, transport: str, tone: float, *params: str) -> Baresip:
        port = pbx.ports["tls"] if transport == "tls" else pbx.sip
        return phones.add(user, tone, *params, port=port, transport=transport, sip_trace=True)

    ended_before = len(re.findall(ENDED, pbx.process.output))
    try:
        caller = phone("1001", caller_transport, CALLER_TONE)
        callee = phone("1002", callee_transport, CALLEE_TONE, "answermode=auto")
        phones.wait_registered()
        caller_ctl, callee_ctl = caller.control(), callee.control()
        port = pbx.ports["tls"] if caller_transport == "tls" else pbx.sip
        dialed = f"sip:1002@127.0.0.1:{port}"  # baresip adds the account's transport parameter
        assert caller_ctl.dial(dialed).get("ok"), caller.output[-3000:]
        caller_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        callee_ctl.wait_event("CALL_ESTABLISHED", timeout=15)

        wait_heard(tmp_path / "heard_by_1001", HEARD_SECONDS)
        wait_heard(tmp_path / "heard_by_1002", HEARD_SECONDS)

        # One side hangs up: the PBX's BYE reaches the other over that phone's own connection.
        ending, other = (callee, caller) if hangs_up == "callee" else (caller, callee)
        assert ending.control().hangup().get("ok"), ending.output[-3000:]
        ending.control().wait_event("CALL_CLOSED", timeout=10)
        other.control().wait_event("CALL_CLOSED", timeout=10)
        pbx.wait_for(ENDED, count=ended_before + 1)
        for p in phones:
            assert not re.search(r"Function not implemented", p.output), p.output[-4000:]
            assert not re.search(r"sips:", p.output), p.output[-4000:]
    finally:
        phones.stop()

    heard_by_caller = read_wav(heard_dump(tmp_path / "heard_by_1001"))
    heard_by_callee = read_wav(heard_dump(tmp_path / "heard_by_1002"))
    assert_hears(heard_by_caller, CALLEE_TONE, CALLER_TONE, label="1001 hears 1002")
    assert_hears(heard_by_callee, CALLER_TONE, CALLEE_TONE, label="1002 hears 1001")


def test_a_tls_phone_whose_connection_closed_is_not_called_on_a_new_connection(pbx, tmp_path):
    """baresip 1003 registers over TLS and dies (no un-REGISTER, its connection closes): a call to it fails
    at once; the PBX does not try to open a TLS connection to the phone's ephemeral source port."""
    gone = Baresip(
        tmp_path / "gone", [Account("1003", "pass1003", "127.0.0.1", pbx.ports["tls"], transport="tls")]
    )
    caller = Baresip(tmp_path / "caller", [Account("1001", "pass1001", "127.0.0.1", pbx.sip)], ctrl=True)
    try:
        gone.wait_registered(timeout=15)
        caller.wait_registered(timeout=15)
        assert gone.proc is not None
        gone.proc.kill()
        gone.proc.wait(10)
        started = time.monotonic()
        assert caller.control().dial(f"sip:1003@127.0.0.1:{pbx.sip}").get("ok"), caller.output[-3000:]
        caller.control().wait_event("CALL_CLOSED", timeout=10)
        assert time.monotonic() - started < 5
        pbx.wait_for(r"connection from 127\.0\.0\.1:\d+ is closed: a peer that connected to us")
        assert not re.search(r"TLS connection to 127\.0\.0\.1:\d+ failed", pbx.process.output)
    finally:
        gone.stop()
        caller.stop()
