"""Call pickup shown with SIPp against a live `twistd pbx` with the demo dialplan (`*8`, `**EXT`) and, as in
pbx.example.toml, 1001 and 1002 in the pickup group "front" (1003 in none):

- group pickup: 1003 calls 1002, which rings and never answers; 1001 dials `*8` and gets the call: 1003 is
  answered, 1002's phone gets a CANCEL, and the BYE of 1001 reaches 1003;
- directed pickup: the same with `**1002`;
- INVITE with Replaces naming the ringing call's early dialog (a busy-lamp key, RFC 3891) is covered by
  the unit tests (`tests/b2bua/test_pickup.py`): SIPp cannot learn the PBX's early to-tag in one scenario
  and use it in another.

Each test starts its own PBX and SIPps (free ports); SIPp exit codes and the PBX's CDRs are the verdict.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PbxProcess, write_config
from tests.e2e.test_calls_sipp import (  # noqa: F401 (fixtures)
    DEMO_DIALPLAN,
    CallPbx,
    SippSet,
    rtp_range,
    sipp,
)
from tests.e2e.test_offer_answer_sipp import assert_no_traceback

pytestmark = pytest.mark.e2e


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[CallPbx]:
    """`launch_pbx` with 1001 and 1002 in the pickup group "front" (the harness writes the extensions)."""
    directory = tmp_path / "pbx"
    directory.mkdir()
    low, high = rtp_range()
    extra = f'[media]\nrtp_port_min = {low}\nrtp_port_max = {high}\n\n[registrar]\nkeepalive = "crlf"\n\n'
    ports = write_config(directory, ipv6=False, extra=extra)
    text = ports["path"].read_text()
    for n in ("1001", "1002"):
        text = text.replace(
            f'password = "pass{n}"\n', f'password = "pass{n}"\npickup_groups = ["front"]\n', 1
        )
    assert text.count("pickup_groups") == 2, text
    ports["path"].write_text(text)
    started = CallPbx(PbxProcess(ports["path"]), ports, directory, (low, high))
    started.write_dialplan(DEMO_DIALPLAN)
    try:
        started.process.wait_ready(ports["listeners"])
        started.wait_for(r"Location service loaded \d+ bindings")
        yield started
    finally:
        started.process.stop()


def _pickup(pbx: CallPbx, sipp: SippSet, code: str) -> None:  # noqa: F811
    bob = sipp.register(pbx, "1002")
    ringing = sipp.uas("bob", "call_uas_noanswer.xml", "1002", bob)
    csv = sipp.users_csv([("1003", "pass1003", "1002")], "caller_users")
    caller = sipp.start(
        "caller", "pickup_uac_caller.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=20
    )
    pbx.wait_for(r"SIP/2.0 180 Ringing")  # the call rings at 1002 (the SIP trace)
    picker = sipp.uac(pbx, "call_uac.xml", code, caller="1001", name="picker")
    sipp.check(pbx, picker, caller, ringing)
    pbx.wait_for(r"Call \S+ picked up by 1001")
    assert len(ringing.requests("CANCEL")) == 1
    assert len(caller.requests("BYE")) == 1  # 1001's hang-up reached the caller
    pbx.wait_for(r"Call \S+ ended: ", count=2)
    rows = [{k: row[k] for k in ("caller", "dialed", "answered_by")} for row in pbx.wait_cdrs(2)]
    assert {"caller": "1003", "dialed": "1002", "answered_by": "1001"} in rows, rows
    assert_no_traceback(pbx)


def test_group_pickup_with_star_8(pbx: CallPbx, sipp: SippSet):  # noqa: F811
    _pickup(pbx, sipp, "*8")


def test_directed_pickup_with_star_star_extension(pbx: CallPbx, sipp: SippSet):  # noqa: F811
    _pickup(pbx, sipp, "**1002")
