"""Calls through trunks on a live `twistd pbx`, with SIPp carriers on loopback.

1. Out: a SIPp phone (extension 1005, which may call out) dials 9 + a number; the SIPp carrier challenges the
   INVITE with 407, sees the right Request-URI, From and P-Asserted-Identity and a correct digest, sends early
   media (183 with SDP) and answers; the CDR names the trunk and the number.
2. Failover: the first carrier answers 503, the second takes the call.
3. In: a carrier calling from the trunk's network reaches the extension the DID is routed to (a SIPp UAS
   registered as 1001), with no challenge; an unknown DID gets 404.
4. A trunk's DID called from an address outside the trunk's networks is challenged like any INVITE.
5. Kamailio as the carrier (tests/e2e/kamailio.py): the PBX registers to it, a call goes out through it
   (Kamailio's 407 answered), and a call for the account comes in to the PBX's registered Contact.
6. Fast failures: while the trunk's registration has failed a call gets 503 at once; an extension that may
   not call out gets 403; nothing reaches the carrier in either case.
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
        csv.write_text("SEQUENTIAL\n+15551230000;+15559876543;+15551230000\n")
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
        csv.write_text("SEQUENTIAL\n+15551230000;+15559876543;+15551230000\n")
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
        unknown.write_text("SEQUENTIAL\n+15550000000;+15559876543;+15550000000\n")
        refused = sipp.start(
            "unknown", "trunk_carrier_uac_404.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(unknown)], timeout=10
        )
        sipp.check(pbx, refused)
        assert len(callee.requests("INVITE")) == 1  # never routed onward
        assert "Traceback" not in pbx.process.output
    finally:
        pbx.process.stop()


KAMAILIO_ROUTE = """
    if (is_method("INVITE") && !has_totag()) {{
        if (!proxy_authenticate("{realm}", "subscriber")) {{
            proxy_challenge("{realm}", "1");
            exit;
        }}
        xlog("L_NOTICE", "KAMAILIO INVITE ru=$ru from=$fu pai=$ai auth=$au\\n");
        consume_credentials();
        $du = "sip:127.0.0.1:{uas}";
        t_relay();
        exit;
    }}
    if (is_method("CANCEL") || has_totag()) {{
        t_relay();  # ACK, BYE ... to the Request-URI (the UAS's Contact); CANCEL to its INVITE's branch
        exit;
    }}
"""


def test_a_call_through_kamailio_as_the_carrier(tmp_path: Path, sipp) -> None:  # noqa: F811
    """The PBX registers to Kamailio (auth_db) and sends a call through it: Kamailio challenges the INVITE
    with 407, checks the digest against its subscriber table and relays the call to a SIPp UAS."""
    from tests.e2e.kamailio import Kamailio

    uas_port = free_port()
    realm = "carrier.test"
    route = KAMAILIO_ROUTE.format(realm=realm, uas=uas_port)
    with Kamailio(tmp_path, [("1555", "secret")], realm=realm, route=route) as carrier:
        carrier.wait_listening()
        config = CALLER + (
            "[tenants.default.trunks.first]\n"
            f'host = "127.0.0.1"\nport = {carrier.port}\ntransport = "udp"\n'
            'username = "1555"\npassword = "secret"\nregister = true\nregister_expires = 120\n'
            'caller_id = "+15551230000"\n'
        )
        pbx = launch_pbx(tmp_path / "pbx", OUTBOUND, config)
        try:
            pbx.wait_for(r"Trunk default/first: registered \(200 OK\)", timeout=15)
            uas = sipp.start("uas", "call_uas.xml", ["-s", "carrier"], port=uas_port, timeout=30)
            uas.wait_listening()
            phone = sipp.uac(pbx, "call_uac.xml", "95551234567", caller="1005")
            sipp.check(pbx, phone, uas)
            pbx.ended(200, "normal")
            (invite,) = uas.requests("INVITE")
            assert invite.startswith(
                f"INVITE sip:+15551234567@127.0.0.1:{carrier.port};transport=udp SIP/2.0"
            )
            relayed = [line for line in carrier.log.splitlines() if "KAMAILIO INVITE" in line]
            assert relayed and relayed[-1].endswith(
                "ru=sip:+15551234567@127.0.0.1:"
                + f"{carrier.port};transport=udp from=sip:+15551230000@127.0.0.1 "
                "pai=sip:+15551230000@127.0.0.1 auth=1555"
            ), relayed
            assert "Traceback" not in pbx.process.output
        finally:
            pbx.process.stop()


KAMAILIO_INBOUND = """
    if (is_method("INVITE") && !has_totag() && $rU == "1555") {{
        xlog("L_NOTICE", "KAMAILIO TO-PBX ru=$ru to=$tu\\n");
        if (!lookup("location")) {{
            sl_send_reply("480", "Not Registered");
            exit;
        }}
        t_relay();
        exit;
    }}
"""


def test_a_call_to_the_contact_registered_at_kamailio_reaches_a_did(
    tmp_path: Path,
    sipp,  # noqa: F811
) -> None:
    """A call for the account (1555) at Kamailio goes to the Contact the PBX registered there: the PBX takes
    it as the trunk's (no challenge; not from any of its networks) with the DID from To (`did_source = "to"`)
    and routes it to extension 1001."""
    from tests.e2e.kamailio import Kamailio

    route = KAMAILIO_INBOUND.format() + KAMAILIO_ROUTE.format(realm="carrier.test", uas=free_port())
    with Kamailio(tmp_path, [("1555", "secret")], route=route) as carrier:
        carrier.wait_listening()
        config = (
            "[tenants.default.trunks.carrier]\n"
            f'host = "127.0.0.1"\nport = {carrier.port}\ntransport = "udp"\n'
            'username = "1555"\npassword = "secret"\nregister = true\nregister_expires = 120\n'
            'dids = ["+15551230000"]\ndid_source = "to"\n'
        )
        pbx = launch_pbx(tmp_path / "pbx", INBOUND, config)
        try:
            pbx.wait_for(r"Trunk default/carrier: registered \(200 OK\)", timeout=15)
            port = sipp.register(pbx, "1001")
            callee = sipp.uas("callee", "call_uas.xml", "1001", port)
            csv = sipp.directory / "carrier.csv"
            csv.write_text("SEQUENTIAL\n1555;+15559876543;+15551230000\n")
            caller = sipp.start(
                "caller", "trunk_carrier_uac.xml", [f"127.0.0.1:{carrier.port}", "-inf", str(csv)], timeout=20
            )
            sipp.check(pbx, caller, callee)
            call_id = pbx.ended(200, "normal")
            cdr = pbx.wait_cdr(call_id)
            assert (cdr["caller"], cdr["dialed"], cdr["answered_by"]) == (
                "trunk:carrier/+15559876543",
                "+15551230000",
                "1001",
            )
            assert "KAMAILIO TO-PBX ru=sip:1555@" in carrier.log
            assert "Traceback" not in pbx.process.output
        finally:
            pbx.process.stop()


def test_calls_fail_fast_with_503_while_the_trunks_registration_has_failed(
    tmp_path: Path,
    sipp,  # noqa: F811
) -> None:
    """The carrier refuses the trunk's REGISTER (503): the trunk is down, and a call through it is refused
    with 503 at once, without an INVITE to the carrier."""
    carrier_port = free_port()
    config = CALLER + trunk("first", carrier_port, "register = true\n")
    registrar = sipp.start("registrar", "registration_busy_uas.xml", port=carrier_port, timeout=30)
    registrar.wait_listening()
    pbx = launch_pbx(tmp_path / "pbx", OUTBOUND, config)
    try:
        pbx.wait_for(r"Trunk default/first: failed \(503", timeout=15)
        phone = sipp.uac(pbx, "call_uac_refused.xml", "95551234567", caller="1005")
        sipp.check(pbx, phone)
        assert phone.elapsed < 5
        pbx.ended(503)
        assert not [m for m in registrar.messages("received") if m.startswith("INVITE ")]
        assert "Traceback" not in pbx.process.output
    finally:
        pbx.process.stop()


def test_an_extension_that_may_not_call_out_gets_403(tmp_path: Path, sipp) -> None:  # noqa: F811
    """Extension 1001 (may_call_out false) dials a number the dialplan sends to a trunk: 403, nothing out."""
    carrier_port = free_port()
    dialplan = "dial trunk:first/{{ call.dialed[1:] }}\nhangup\n"
    pbx = launch_pbx(tmp_path / "pbx", dialplan, CALLER + trunk("first", carrier_port))
    try:
        carrier = sipp.start("carrier", "call_uas.xml", port=carrier_port, timeout=10).wait_listening()
        phone = sipp.uac(pbx, "call_uac_refused.xml", "95551234567", caller="1001")
        sipp.check(pbx, phone)
        assert phone.responses(403) and not phone.responses(503)
        pbx.ended(403)
        assert not carrier.messages("received")
        assert "Traceback" not in pbx.process.output
    finally:
        pbx.process.stop()
