"""Calls through trunks on a live `twistd pbx`, with SIPp carriers on loopback.

1. Out: a SIPp phone (extension 1005, which may call out) dials 9 + a number; the SIPp carrier challenges the
   INVITE with 407, sees the right Request-URI, From and P-Asserted-Identity and a correct digest, sends early
   media (183 with SDP) and answers; the CDR names the trunk and the number.
2. Failover: the first carrier answers 503, the second takes the call.
3. In: a carrier calling from the trunk's network reaches the extension the DID is routed to (a SIPp UAS
   registered as 1001), with no challenge; an unknown DID gets 404.
4. A trunk's DID called from an address outside the trunk's networks is challenged like any INVITE.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pbx.sip.digest import DigestCredentials
from tests.e2e.harness import free_port
from tests.e2e.test_calls_sipp import CallPbx, header, launch_pbx, sipp  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e

CALLER = """
[tenants.default.extensions.1005]
name = "Out Caller"
password = "pass1005"
may_call_out = true
"""

OUTBOUND = """
{% if call.trunk %}
hangup 404
{% elif call.dialed is match("9[0-9]{7,15}") and caller.may_call_out %}
{%   set number = call.dialed[1:] | e164(country="1") %}
dial trunk:first/{{ number }} trunk:second/{{ number }}
hangup
{% else %}
hangup 404
{% endif %}
"""

INBOUND = """
{% if call.trunk == "carrier" and call.did == "+15551230000" %}
dial 1001 timeout=20
{% endif %}
hangup
"""


def trunk(name: str, port: int, extra: str = "", did: str = "+15551230000") -> str:
    return (
        f"[tenants.default.trunks.{name}]\n"
        f'host = "127.0.0.1"\nport = {port}\ntransport = "udp"\n'
        f'username = "acct-{name}"\npassword = "secret-{name}"\nrealm = "carrier.test"\n'
        f'dids = ["{did}"]\nnetworks = ["192.0.2.0/24"]\ncaller_id_name = "ACME"\n{extra}\n'
    )


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def check_digest(invite: str, username: str, password: str) -> None:
    """The INVITE's Proxy-Authorization answers the carrier's challenge (RFC 7616 3.4.1, MD5, qop=auth)."""
    (value,) = header(invite, "Proxy-Authorization")
    digest = DigestCredentials.parse(value)
    assert (digest.username, digest.realm, digest.qop) == (username, "carrier.test", "auth")
    ha1 = md5(f"{username}:carrier.test:{password}")
    ha2 = md5(f"INVITE:{digest.uri}")
    expected = md5(f"{ha1}:{digest.nonce}:{digest.nc}:{digest.cnonce}:auth:{ha2}")
    assert digest.response == expected


def test_out_through_a_challenging_carrier_with_caller_id(tmp_path: Path, sipp) -> None:  # noqa: F811
    first, second = free_port(), free_port()
    config = CALLER + trunk("first", first) + trunk("second", second, did="+15551230001")
    pbx = launch_pbx(tmp_path / "pbx", OUTBOUND, config)
    try:
        carrier = sipp.start("carrier", "trunk_carrier_407_uas.xml", port=first, timeout=30).wait_listening()
        phone = sipp.uac(pbx, "call_uac.xml", "95551234567", caller="1005")
        sipp.check(pbx, phone, carrier)
        call_id = pbx.ended(200, "normal")
        invites = carrier.requests("INVITE")
        assert len(invites) == 2
        for invite in invites:
            assert invite.startswith(f"INVITE sip:+15551234567@127.0.0.1:{first};transport=udp SIP/2.0")
            (from_,) = header(invite, "From")
            assert from_.startswith('"ACME" <sip:1005@127.0.0.1>;tag='), from_
            assert header(invite, "P-Asserted-Identity") == ['"ACME" <sip:1005@127.0.0.1>']
            assert "m=audio" in invite and "RTP/AVP 0 8 101" in invite  # the trunk's codec order
        check_digest(invites[1], "acct-first", "secret-first")
        assert call_id not in invites[0]  # topology hiding
        early = [m for m in phone.messages("received") if m.startswith("SIP/2.0 183 ")]
        assert early and "m=audio" in early[0]  # the carrier's early media reached the phone
        cdr = pbx.wait_cdr(call_id)
        assert cdr["answered_by"] == "trunk:first/+15551234567"
        assert f"trunk:first/+15551234567@sip:+15551234567@127.0.0.1:{first};transport=udp=200" in cdr["legs"]
        assert "Traceback" not in pbx.process.output
    finally:
        pbx.process.stop()


def test_failover_to_a_second_carrier_after_503_and_a_challenge_elsewhere(
    tmp_path: Path,
    sipp,  # noqa: F811
) -> None:
    first, second = free_port(), free_port()
    config = CALLER + trunk("first", first) + trunk("second", second, did="+15551230001")
    pbx = launch_pbx(tmp_path / "pbx", OUTBOUND, config)
    try:
        down = sipp.start("down", "trunk_carrier_503_uas.xml", port=first, timeout=30).wait_listening()
        up = sipp.start("up", "call_uas.xml", ["-s", "carrier"], port=second, timeout=30).wait_listening()
        phone = sipp.uac(pbx, "call_uac.xml", "95551234567", caller="1005")
        sipp.check(pbx, phone, down, up)
        call_id = pbx.ended(200, "normal")
        (invite,) = up.requests("INVITE")
        assert invite.startswith(f"INVITE sip:+15551234567@127.0.0.1:{second};transport=udp SIP/2.0")
        cdr = pbx.wait_cdr(call_id)
        assert "trunk:first/+15551234567" in cdr["legs"] and "=503" in cdr["legs"]
        # The trunks' DID called from 127.0.0.1, outside their networks: an ordinary INVITE, challenged.
        csv = sipp.directory / "elsewhere.csv"
        csv.write_text("SEQUENTIAL\n+15551230000;+15559876543\n")
        elsewhere = sipp.start(
            "elsewhere", "trunk_carrier_uac_407.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=10
        )
        sipp.check(pbx, elsewhere)
        assert "Traceback" not in pbx.process.output
    finally:
        pbx.process.stop()


def inbound_pbx(tmp_path: Path) -> CallPbx:
    config = trunk("carrier", free_port(), 'did_source = "request-uri"').replace(
        'networks = ["192.0.2.0/24"]', 'networks = ["127.0.0.1/32"]'
    )
    return launch_pbx(tmp_path / "pbx", INBOUND, config)


def test_a_carrier_calls_a_did_and_an_unknown_did_is_refused(tmp_path: Path, sipp) -> None:  # noqa: F811
    pbx = inbound_pbx(tmp_path)
    try:
        port = sipp.register(pbx, "1001")
        callee = sipp.uas("callee", "call_uas.xml", "1001", port)
        csv = sipp.directory / "carrier.csv"
        csv.write_text("SEQUENTIAL\n+15551230000;+15559876543\n")
        carrier = sipp.start(
            "carrier", "trunk_carrier_uac.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=20
        )
        sipp.check(pbx, carrier, callee)
        call_id = pbx.ended(200, "normal")
        assert not carrier.responses(407)
        (invite,) = callee.requests("INVITE")
        (from_,) = header(invite, "From")
        assert "<sip:+15559876543@localhost>" in from_, from_
        cdr = pbx.wait_cdr(call_id)
        assert (cdr["caller"], cdr["dialed"], cdr["answered_by"]) == (
            "trunk:carrier/+15559876543",
            "+15551230000",
            "1001",
        )
        unknown = sipp.directory / "unknown.csv"
        unknown.write_text("SEQUENTIAL\n+15550000000;+15559876543\n")
        refused = sipp.start(
            "unknown", "trunk_carrier_uac_404.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(unknown)], timeout=10
        )
        sipp.check(pbx, refused)
        assert len(callee.requests("INVITE")) == 1  # never routed onward
        assert "Traceback" not in pbx.process.output
    finally:
        pbx.process.stop()
