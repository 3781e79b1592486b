"""Toll-fraud controls on a live `twistd pbx`, a SIPp UAS as the carrier (docs/security.md, "Toll fraud").

1. Classes after the dialplan: a careless template sends whatever is dialled to the trunk. Extension 1005 (may
   call out: local, national, emergency) dials 9 011 44 20 7123 4567: refused with 403, and the carrier never
   sees an INVITE; extension 1001 (no class at all) dials 911: the carrier gets it and answers; 1005 dials a
   national number: the carrier gets it. The PBX log names who, what and why.
2. Limits: extension 1006 may have one outbound call at a time and two an hour. While its first call rings at
   the carrier a second is refused with 403; after it, a third goes through; a fourth is refused with 403
   (the hourly limit). Nothing refused reaches the carrier.

Each test starts its own PBX and SIPp processes (free ports, own directories).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import free_port
from tests.e2e.test_calls_sipp import launch_pbx, sipp  # noqa: F401  (the fixture)
from tests.e2e.test_trunk_calls_sipp import trunk

pytestmark = pytest.mark.e2e

CARELESS = """
{% if call.dialed is match("9[0-9]{7,}") %}
dial trunk:first/{{ call.dialed[1:] }}
{% else %}
dial trunk:first/{{ call.dialed }}
{% endif %}
hangup
"""
"""A template mistake: no test of the number, no test of caller.may_call_out."""

EXTENSIONS = """
[tenants.default.extensions.1005]
name = "Out Caller"
password = "pass1005"
may_call_out = true

[tenants.default.extensions.1006]
name = "Limited"
password = "pass1006"
outbound_classes = ["national"]
max_outbound_calls = 1
max_outbound_calls_per_hour = 2
"""


def test_classes_are_judged_after_the_template_and_emergency_always_goes(tmp_path: Path, sipp) -> None:  # noqa: F811
    port = free_port()
    pbx = launch_pbx(tmp_path / "pbx", CARELESS, EXTENSIONS + trunk("first", port))
    try:
        carrier = sipp.start("carrier", "call_uas.xml", ["-s", "carrier"], port=port, timeout=30, calls=2)
        carrier.wait_listening()
        refused = sipp.uac(pbx, "call_uac_refused.xml", "9011442071234567", caller="1005", name="world")
        sipp.check(pbx, refused)
        assert refused.responses(403) and "403 Number Not Allowed" in refused.responses(403)[0]
        pbx.ended(403)
        pbx.wait_for(
            r"refused \(403\): default/1005 from 127\.0\.0\.1 -> 011442071234567 "
            r"\(E\.164 \+442071234567, class international\) via trunk first: class international not allowed"
        )
        assert not carrier.messages("received")  # the carrier never saw the call
        emergency = sipp.uac(pbx, "call_uac.xml", "911", caller="1001", name="emergency")
        sipp.check(pbx, emergency)
        pbx.ended(200, "normal")
        national = sipp.uac(pbx, "call_uac.xml", "92125551234", caller="1005", name="national")
        sipp.check(pbx, national, carrier)
        invites = carrier.requests("INVITE")
        assert [i.split(" ", 2)[1].split("@")[0] for i in invites] == ["sip:911", "sip:2125551234"]
        pbx.wait_for(r"Emergency call \S+: default/1001 -> 911 via trunk first")
        assert "Traceback" not in pbx.process.output
    finally:
        pbx.process.stop()


def test_the_concurrent_and_hourly_limits_refuse_the_next_call(tmp_path: Path, sipp) -> None:  # noqa: F811
    port = free_port()
    pbx = launch_pbx(tmp_path / "pbx", CARELESS, EXTENSIONS + trunk("first", port))
    try:
        # The carrier rings 2 s before it answers: the first call holds the extension's one call meanwhile.
        carrier = sipp.start(
            "carrier", "call_uas.xml", ["-s", "carrier", "-d", "2000"], port=port, timeout=30, calls=2
        )
        carrier.wait_listening()
        csv = sipp.users_csv([("1006", "pass1006", "92125551234")], "first_users")
        first = sipp.start("first", "call_uac.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=20)
        pbx.wait_for(r"Outbound call \S+: default/1006 -> 2125551234 \(class national\) via trunk first")
        second = sipp.uac(pbx, "call_uac_refused.xml", "92125551235", caller="1006", name="second")
        sipp.check(pbx, second)
        assert "403 Outbound Call Limit Reached" in second.responses(403)[0]
        pbx.wait_for(r"default/1006 .* via trunk first: extension default/1006: concurrent calls 1 of 1")
        sipp.check(pbx, first)
        third = sipp.uac(pbx, "call_uac.xml", "92125551236", caller="1006", name="third")
        sipp.check(pbx, third, carrier)
        fourth = sipp.uac(pbx, "call_uac_refused.xml", "92125551237", caller="1006", name="fourth")
        sipp.check(pbx, fourth)
        assert fourth.responses(403)
        pbx.wait_for(r"default/1006 .* via trunk first: extension default/1006: calls per hour 2 of 2")
        numbers = [i.split(" ", 2)[1].split("@")[0] for i in carrier.requests("INVITE")]
        assert numbers == ["sip:2125551234", "sip:2125551236"]  # nothing refused reached the carrier
        assert "Traceback" not in pbx.process.output
    finally:
        pbx.process.stop()
