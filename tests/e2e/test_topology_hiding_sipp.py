"""Topology hiding and identity at the trunk edge, shown on the wire with SIPp (issue 14 item 4,
docs/security.md).

1. Out: a phone (extension 1005, which may call out) whose INVITE shows a private Via sent-by, Contact and
   SDP (10.x / 192.168.x in o=, c=, a=rtcp, an ICE candidate, a=ssrc cname), its User-Agent, its Call-ID
   (@192.168.77.7) and identity headers it may not set (P-Asserted-Identity, P-Preferred-Identity,
   Remote-Party-ID, Diversion, History-Info) calls out through a trunk; the INVITE the carrier (a SIPp UAS)
   received holds none of it: the PBX's Via, Contact, Call-ID, User-Agent and relay address, and the
   P-Asserted-Identity the trunk presents. So do its re-INVITE (a moved phone) and an INFO (only its
   Content-Disposition and body cross). The responses the phone received (the carrier's 200s, and its 488
   to the INFO with a Warning and a reason naming an inside host) carry nothing of the carrier.
2. In: a carrier that is not trusted with identity calls a DID with the same kind of inside (172.16.x) and
   P-Asserted-Identity, Remote-Party-ID, Diversion and History-Info; the phone (a SIPp UAS that answers with
   a private Contact and SDP, its Server, a Warning and a reason phrase naming an address) receives none of
   the carrier's, and the 180/200 and the BYE's answer the carrier receives carry none of the phone's.
3. A carrier trusted with identity (`trust_identity = true`, calling from 127.0.0.3): the phone gets its
   P-Asserted-Identity (rebuilt in the tenant's domain, also the From), Diversion and History-Info.

Every wait is on an event (SIPp's exit, a log line) with a timeout; ports are free ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import free_port
from tests.e2e.test_calls_sipp import CallPbx, Sipp, SippSet, header, launch_pbx, sipp  # noqa: F401 (the fixture)

pytestmark = pytest.mark.e2e

CONFIG = """
[tenants.default.extensions.1005]
name = "Out Caller"
password = "pass1005"
may_call_out = true

[tenants.default.trunks.carrier]
host = "127.0.0.1"
port = {port}
transport = "udp"
dids = ["+15551230000"]
networks = ["127.0.0.2/32"]  # the carrier calls from there; the phones from 127.0.0.1
caller_id_name = "ACME"

[tenants.default.trunks.screened]
host = "127.0.0.1"
port = {port}
transport = "udp"
dids = ["+15551230001"]
networks = ["127.0.0.3/32"]
trust_identity = true
"""

DIALPLAN = """
{% if call.trunk %}
dial 1001 timeout=10
hangup
{% elif call.dialed is match("9[0-9]{7,15}") and caller.may_call_out %}
dial trunk:carrier/{{ call.dialed[1:] }}
hangup
{% else %}
hangup 404
{% endif %}
"""

PHONE_INSIDE = (
    "10.1.2.3",
    "10.20.30.40",
    "10.20.30.41",
    "192.168.77.",
    "SecretPhone",
    "evil.example",
    "+1999555",
    "topo-",
    "inside",
    "a=candidate",
    "a=tool",
)
CARRIER_INSIDE = ("172.16.5.", "CarrierSwitch", "+1800555", "carrier-")


def leaks(messages: list[str], inside: tuple[str, ...]) -> list[tuple[str, str]]:
    """(what leaked, the first line of the message) for every inside text found in `messages`."""
    return [(text, m.split("\r\n", 1)[0]) for m in messages for text in inside if text in m]


def start(tmp_path: Path) -> tuple[CallPbx, int]:
    carrier_port = free_port()
    pbx = launch_pbx(tmp_path / "pbx", DIALPLAN, CONFIG.format(port=carrier_port), keepalive="crlf")
    return pbx, carrier_port


def test_nothing_of_the_phone_reaches_the_carrier(tmp_path: Path, sipp: SippSet) -> None:  # noqa: F811
    pbx, carrier_port = start(tmp_path)
    try:
        carrier = sipp.start(
            "carrier", "topo_carrier_uas.xml", ["-s", "carrier"], port=carrier_port, timeout=30
        )
        carrier.wait_listening()
        csv = sipp.users_csv([("1005", "pass1005", "95551234567")], "phone")
        phone = sipp.start(
            "phone",
            "topo_phone_uac.xml",
            [f"127.0.0.1:{pbx.sip}", "-inf", str(csv), "-cid_str", "topo-%u-%p@192.168.77.7"],
            timeout=20,
        )
        sipp.check(pbx, phone, carrier)
        pbx.ended(200, "normal")
        sent = phone.messages("sent")
        assert any('P-Asserted-Identity: "Boss"' in m and "10.20.30.40" in m for m in sent)  # it sent them
        received = carrier.messages("received")
        invite, reinvite = carrier.requests("INVITE")
        assert leaks(received, PHONE_INSIDE) == [], invite
        assert header(invite, "P-Asserted-Identity") == ['"ACME" <sip:1005@127.0.0.1>']
        for name in ("P-Preferred-Identity", "Remote-Party-ID", "Diversion", "History-Info", "X-Inside"):
            assert header(invite, name) == [], (name, invite)
        (via,) = header(invite, "Via")
        assert via.startswith("SIP/2.0/UDP 127.0.0.1:"), via
        assert "s=-\r\n" in invite and "c=IN IP4 127.0.0.1" in invite
        assert "c=IN IP4 127.0.0.1" in reinvite and header(reinvite, "P-Asserted-Identity") == []
        (info,) = carrier.requests("INFO")
        assert header(info, "Content-Disposition") == ["render"] and "\r\n\r\nhello" in info
        back = phone.messages("received")  # nothing of the carrier reached the phone
        assert leaks(back, (*CARRIER_INSIDE, "inside")) == [], back
        (refused,) = [m for m in back if m.startswith("SIP/2.0 488 ")]
        assert refused.startswith("SIP/2.0 488 Not Acceptable Here\r\n") and header(refused, "Warning") == []
        assert "Traceback" not in pbx.process.output
    finally:
        pbx.process.stop()


def carrier_call(pbx: CallPbx, sipp: SippSet, did: str, source: str) -> tuple[Sipp, Sipp]:  # noqa: F811
    """1001 registered (a SIPp UAS that shows its inside), then a carrier's call from `source` to `did`;
    the (carrier, phone) SIPps once both are done."""
    port = free_port()
    csv = sipp.users_csv([("1001", "pass1001")], f"reg{did[-1]}")
    registration = sipp.start(
        f"register{did[-1]}",
        "register_auth.xml",
        [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)],
        port=port,
        timeout=10,
    )
    sipp.check(pbx, registration)
    pbx.wait_for(rf"Registered 1001@default at sip:1001@127\.0\.0\.1:{port}\b")
    phone = sipp.start(f"phone{did[-1]}", "topo_phone_uas.xml", ["-s", "1001"], port=port, timeout=30)
    phone.wait_listening()
    calls = sipp.directory / f"carrier{did[-1]}.csv"
    calls.write_text(f"SEQUENTIAL\n{did};+15559876543;{did}\n")
    carrier = sipp.start(
        f"carrier{did[-1]}",
        "topo_carrier_uac.xml",
        [f"127.0.0.1:{pbx.sip}", "-inf", str(calls), "-cid_str", "carrier-%u-%p@172.16.5.5"],
        timeout=20,
        ip=source,
    )
    sipp.check(pbx, carrier, phone)
    return carrier, phone


def test_nothing_of_an_untrusted_carrier_reaches_the_phone_and_back(tmp_path: Path, sipp: SippSet) -> None:  # noqa: F811
    pbx, _ = start(tmp_path)
    try:
        carrier, phone = carrier_call(pbx, sipp, "+15551230000", "127.0.0.2")
        pbx.ended(200, "normal")
        (invite,) = phone.requests("INVITE")
        assert leaks(phone.messages("received"), CARRIER_INSIDE) == [], invite
        for name in ("P-Asserted-Identity", "Remote-Party-ID", "Diversion", "History-Info"):
            assert header(invite, name) == [], (name, invite)
        (from_,) = header(invite, "From")
        assert from_.startswith('"Carrier Caller" <sip:+15559876543@localhost>;tag='), from_  # as claimed
        back = carrier.messages("received")
        assert [m.split("\r\n", 1)[0] for m in back if m.startswith("SIP/2.0 18")] in (
            ["SIP/2.0 180 Ringing"],
            [],
        )
        assert leaks(back, PHONE_INSIDE) == [], back
        for message in back:
            assert header(message, "Warning") == [] and header(message, "Remote-Party-ID") == [], message
        assert "Traceback" not in pbx.process.output
    finally:
        pbx.process.stop()


def test_a_trusted_carrier_asserts_the_caller(tmp_path: Path, sipp: SippSet) -> None:  # noqa: F811
    """A trunk with `trust_identity`: the caller is its P-Asserted-Identity (not the From it claims), the
    phone gets that identity in the tenant's domain and the carrier's Diversion and History-Info; its
    Remote-Party-ID and everything else of its inside stay out."""
    pbx, _ = start(tmp_path)
    try:
        _carrier, phone = carrier_call(pbx, sipp, "+15551230001", "127.0.0.3")
        call_id = pbx.ended(200, "normal")
        (invite,) = phone.requests("INVITE")
        (from_,) = header(invite, "From")
        assert from_.startswith('"Spoofed Bank" <sip:+18005550000@localhost>;tag='), from_
        assert header(invite, "P-Asserted-Identity") == ['"Spoofed Bank" <sip:+18005550000@localhost>']
        assert header(invite, "Diversion") == ["<sip:+18005550002@172.16.5.5>;reason=unconditional"]
        assert header(invite, "History-Info") == ["<sip:+18005550003@172.16.5.5>;index=1"]
        assert header(invite, "Remote-Party-ID") == []
        for text in ("CarrierSwitch", "172.16.5.6", "carrier-"):
            assert text not in invite, (text, invite)
        cdr = pbx.wait_cdr(call_id)  # written just after the "ended" line
        assert (cdr["dialed"], cdr["caller"]) == ("+15551230001", "trunk:screened/+18005550000")
    finally:
        pbx.process.stop()
