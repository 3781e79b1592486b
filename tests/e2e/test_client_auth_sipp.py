"""`pbx.sip.client.ClientRequest` against SIPp as a challenging server, over real UDP on loopback.

The client runs in `tests/e2e/client_auth_driver.py` (a subprocess with a real reactor, SipStack and
TransportManager); SIPp plays the registrar or carrier and checks the digests with `<verifyauth>`, so its exit
code 0 means every Authorization it got was right. SIPp 3.6's verifyauth reads only Authorization: the
Proxy-Authorization digests are checked here, from SIPp's message trace, with hashlib.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pbx.sip.digest import DigestCredentials
from tests.e2e.harness import REPO, free_port
from tests.e2e.test_calls_sipp import Sipp, header

SCENARIOS = Path(__file__).parent / "scenarios"
pytestmark = pytest.mark.e2e


def drive(step: str, server: Sipp, *extra: str) -> list[dict]:
    """Run the driver to completion (bounded) and return its JSON report lines."""
    command = [
        sys.executable, "-m", "tests.e2e.client_auth_driver", step,
        "--port", str(free_port()), "--server-port", str(server.port), "--timeout", "25", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}\n{server}"
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def check_md5_digest(value: str, method: str, password: str = "secret") -> DigestCredentials:
    """Recompute an MD5 qop=auth response independently of pbx.sip.digest (RFC 2617 3.2.2.1)."""
    c = DigestCredentials.parse(value)
    ha1 = md5(f"{c.username}:{c.realm}:{password}")
    ha2 = md5(f"{method}:{c.uri}")
    assert c.response == md5(f"{ha1}:{c.nonce}:{c.nc}:{c.cnonce}:{c.qop}:{ha2}"), value
    return c


def test_register_401_then_200(tmp_path: Path) -> None:
    sipp = Sipp("registrar", SCENARIOS / "client_auth_register_uas.xml", [], tmp_path).wait_listening()
    try:
        lines = drive("register", sipp)
        assert sipp.wait() == 0, str(sipp)
    finally:
        sipp.kill()
    assert lines == [{"step": "register", "status": 200, "attempts": 2, "cseq": 2, "local_failure": None}]
    first, second = sipp.requests("REGISTER")
    assert header(first, "Call-ID") == header(second, "Call-ID")
    assert header(first, "From") == header(second, "From")
    assert header(first, "To") == header(second, "To")
    assert header(first, "Via")[0].split("branch=")[1] != header(second, "Via")[0].split("branch=")[1]
    [value] = header(second, "Authorization")
    c = check_md5_digest(value, "REGISTER")
    assert (c.opaque, c.nc, c.qop) == ("op,aque", "00000001", "auth")


def test_register_with_a_wrong_password_is_refused(tmp_path: Path) -> None:
    """The negative control: SIPp's verifyauth really checks (it answers 403 and fails its call)."""
    sipp = Sipp("registrar", SCENARIOS / "client_auth_register_uas.xml", [], tmp_path).wait_listening()
    try:
        lines = drive("register", sipp, "--password", "wrong")
        assert sipp.wait() != 0, str(sipp)
    finally:
        sipp.kill()
    assert [(line["status"], line["attempts"]) for line in lines] == [(403, 2)]


def test_invite_407_and_401_then_bye_401(tmp_path: Path) -> None:
    """A proxy's 407, then the server's 401 (each ACKed by the transaction layer), the INVITE answered for
    both realms (the proxy nonce counted on to nc 2), 200 and ACK; then the BYE challenged with 401 and
    retried with the dialog's next CSeq."""
    sipp = Sipp("carrier", SCENARIOS / "client_auth_call_uas.xml", [], tmp_path).wait_listening()
    try:
        lines = drive("call", sipp)
        assert sipp.wait() == 0, str(sipp)
    finally:
        sipp.kill()
    assert lines == [
        {"step": "invite", "status": 200, "attempts": 3, "cseq": 3, "local_failure": None},
        {"step": "bye", "status": 200, "attempts": 2, "cseq": 5, "local_failure": None},
        {"step": "dialog", "local_cseq": 5},
    ]
    invites = sipp.requests("INVITE")
    assert [header(m, "CSeq") for m in invites] == [["1 INVITE"], ["2 INVITE"], ["3 INVITE"]]
    [proxy1] = header(invites[1], "Proxy-Authorization")
    [proxy2] = header(invites[2], "Proxy-Authorization")
    assert [check_md5_digest(v, "INVITE").nc for v in (proxy1, proxy2)] == ["00000001", "00000002"]
    acks = sipp.requests("ACK")
    assert [header(m, "CSeq") for m in acks] == [["1 ACK"], ["2 ACK"], ["3 ACK"]]
    # The ACKs of the 407 and the 401 are hop-by-hop: the branch of the INVITE they acknowledge.
    for ack, invite in zip(acks[:2], invites[:2], strict=True):
        assert header(ack, "Via")[0] == header(invite, "Via")[0]
    byes = sipp.requests("BYE")
    assert [header(m, "CSeq") for m in byes] == [["4 BYE"], ["5 BYE"]]
    check_md5_digest(header(byes[1], "Authorization")[0], "BYE")
