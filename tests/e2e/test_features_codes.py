"""Do-not-disturb and forwarding codes end to end (docs/features.md), with SIPp phones and the demo dialplan.

- `*78` from 1002 (the PBX answers, confirms, hangs up); a call from 1001 to 1002 then never rings 1002's
  phone: it goes where the demo sends DND calls, 1002's busy voicemail greeting (answered by the PBX).
- `*72` + 1003 from 1002 forwards its calls to 1003; the PBX is stopped and started again on the same data
  directory, and a call to 1002 still rings 1003 (the setting was read back from SQLite).
- A call parked on 700 that nobody retrieves comes back to its parker (park-return.j2).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, PbxProcess
from tests.e2e.test_calls_sipp import SippSet, launch_pbx, sipp  # noqa: F401 (the fixture)

pytestmark = pytest.mark.e2e

DEMO = (REPO / "dialplans" / "default" / "main.j2").read_text()
MAILBOX = '[tenants.default.mailboxes.1002]\npin = "1002"\n\n'


def test_dnd_code_sends_calls_away_from_the_phone(tmp_path: Path, sipp: SippSet) -> None:  # noqa: F811
    pbx = launch_pbx(tmp_path / "pbx", DEMO, MAILBOX, keepalive="crlf")
    try:
        port = sipp.register(pbx, "1002")
        phone = sipp.uas("phone_1002", "call_uas.xml", "1002", port)
        code = sipp.uac(pbx, "feature_uac.xml", "*78", caller="1002", name="dnd_on")
        sipp.check(pbx, code)
        pbx.wait_for(r"default/1002 set dnd on")
        caller = sipp.uac(pbx, "call_uac.xml", "1002", caller="1001", name="caller")
        sipp.check(pbx, caller)
        pbx.wait_for(r"ended: .*1001@default -> 1002")
        assert phone.requests("INVITE") == [], "a DND phone rang"
        answer = [m for m in caller.messages("received") if m.startswith("SIP/2.0 200 ")]
        assert answer, "the PBX's voicemail did not answer"
        # *79 turns it off again: the next call rings the phone.
        off = sipp.uac(pbx, "feature_uac.xml", "*79", caller="1002", name="dnd_off")
        sipp.check(pbx, off)
        pbx.wait_for(r"default/1002 set dnd off")
    finally:
        pbx.process.stop()


def test_forward_code_survives_a_restart(tmp_path: Path, sipp: SippSet) -> None:  # noqa: F811
    pbx = launch_pbx(tmp_path / "pbx", DEMO, keepalive="crlf")
    try:
        code = sipp.uac(pbx, "feature_uac.xml", "*721003", caller="1002", name="forward_on")
        sipp.check(pbx, code)
        pbx.wait_for(r"default/1002 set forward_all 1003")
    finally:
        pbx.process.stop()
    # The same config, ports and data directory again: the new process reads the setting from SQLite.
    pbx.process = PbxProcess(pbx.ports["path"])
    try:
        pbx.process.wait_ready(pbx.ports["listeners"])
        pbx.wait_for(r"Phone features: 1 extensions with DND or forwarding set by phone")
        port = sipp.register(pbx, "1003")
        target = sipp.uas("phone_1003", "call_uas.xml", "1003", port)
        caller = sipp.uac(pbx, "call_uac.xml", "1002", caller="1001", name="caller")
        sipp.check(pbx, caller, target)
        assert len(target.requests("INVITE")) == 1
    finally:
        pbx.process.stop()


def test_an_unretrieved_parked_call_rings_the_parker_again(tmp_path: Path, sipp: SippSet) -> None:  # noqa: F811
    """1001 parks itself (dials 700); nobody retrieves it within park_timeout (5 s): park-return.j2 rings the
    parker, 1001, again (its registered phone answers, and the two are connected)."""
    features = "[tenants.default.features]\npark_timeout = 5\npark_announce = false\n\n"
    pbx = launch_pbx(tmp_path / "pbx", DEMO, features, keepalive="crlf")
    shutil.copy(
        REPO / "dialplans" / "default" / "park-return.j2", pbx.dialplan_path.parent / "park-return.j2"
    )
    try:
        port = sipp.register(pbx, "1001")
        phone = sipp.uas("phone_1001", "call_uas.xml", "1001", port)
        parked = sipp.uac(pbx, "park_uac.xml", "700", caller="1001", name="parked")
        sipp.check(pbx, parked, phone)
        pbx.wait_for(r"parked on default/701 by 1001")
        pbx.wait_for(r"not retrieved from default/701 in time")
        assert len(phone.requests("INVITE")) == 1
        pbx.wait_for(r"ended: .*1001@default -> 700 answered by 1001")
    finally:
        pbx.process.stop()
