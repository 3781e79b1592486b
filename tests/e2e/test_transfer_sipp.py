"""Call transfer shown with SIPp against a live `twistd pbx` (RFC 3515 REFER, RFC 3891 Replaces, RFC 4488):

- blind: 1001 calls 1002 and REFERs it to 1003; 1001 gets 202, NOTIFY `message/sipfrag` 100 Trying, the
  progress and the final 200 OK, then the PBX's BYE; 1002 is re-INVITEd onto the new call and talks with
  1003 (routed as 1001: the CDR says 1001 -> 1003);
- refused REFERs: out of any dialog (405), in a dialog that does not exist (481), a Refer-To that is not a
  SIP URI (400);
- a transfer to a number the transferor may not dial (1001 has no `may_call_out`; 9 + number goes to a
  trunk in the demo dialplan): 202, then a failed final NOTIFY, nothing reaches the trunk, and the
  transferee is given back to the transferor;
- attended: 1001 talks to 1002, calls 1003, then REFERs 1002 with `Replaces` naming its call with 1003:
  1002 and 1003 end up in one call through the PBX and 1001 drops out of both;
- INVITE with Replaces: another device of 1001 takes over 1001's call with 1002;
- transfer by keys (the demo dialplan's `transfer=##`): 1001 presses ## 1003 # by SIP INFO in its call with
  1002; 1002 is re-INVITEd onto a new call to 1003 (routed as 1001) and 1001 gets the PBX's BYE.

Each test starts its own PBX and SIPps (free ports); SIPp exit codes and the PBX's CDRs are the verdict.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.harness import free_port
from tests.e2e.test_calls_sipp import (  # noqa: F401 (fixtures)
    CallPbx,
    SippSet,
    sipp,
    start_pbx,
)
from tests.e2e.test_offer_answer_sipp import assert_no_traceback

pytestmark = pytest.mark.e2e


def _cdr_rows(pbx: CallPbx, count: int) -> list[dict]:
    for _ in range(count):
        pbx.wait_for(r"Call \S+ ended: ", count=count)
    rows = pbx.wait_cdrs(count)
    return [{k: row[k] for k in ("caller", "dialed", "answered_by", "cause")} for row in rows]


def test_blind_transfer_by_refer_with_notify_progress(start_pbx, sipp: SippSet):  # noqa: F811
    pbx = start_pbx()
    bob = sipp.register(pbx, "1002")
    carol = sipp.register(pbx, "1003")
    transferee = sipp.uas("bob", "transfer_uas_transferee.xml", "1002", bob, ["-d", "1500"])
    target = sipp.uas("carol", "call_uas.xml", "1003", carol, ["-d", "800"])
    uac = sipp.uac(pbx, "transfer_uac_blind.xml", "1002", extra_fields=["1003"])
    sipp.check(pbx, uac, transferee, target)

    notifies = uac.requests("NOTIFY")
    frags = [n.split("\r\n\r\n", 1)[1].strip() for n in notifies]
    assert frags[0] == "SIP/2.0 100 Trying" and frags[-1] == "SIP/2.0 200 OK", frags
    assert "SIP/2.0 180 Ringing" in frags, frags
    assert "terminated" in re.search(r"Subscription-State: (.*)", notifies[-1]).group(1)
    pbx.wait_for(r"Call \S+ ended: .*1001@default -> 1003 answered by 1003")
    pbx.wait_for(r"Call \S+ ended: transferred .*1001@default -> 1002")
    rows = _cdr_rows(pbx, 2)
    assert {"caller": "1001", "dialed": "1003", "answered_by": "1003", "cause": "normal"} in rows, rows
    assert_no_traceback(pbx)


def test_refers_out_of_dialog_forged_or_malformed_are_refused(start_pbx, sipp: SippSet):  # noqa: F811
    pbx = start_pbx()
    bob = sipp.register(pbx, "1002")
    callee = sipp.uas("bob", "call_uas.xml", "1002", bob)
    uac = sipp.uac(pbx, "transfer_uac_bad_refer.xml", "1002", extra_fields=["1003"])
    sipp.check(pbx, uac, callee)
    pbx.ended(200, "normal")
    assert_no_traceback(pbx)


def test_a_transfer_to_a_number_the_transferor_may_not_dial_is_refused(start_pbx, sipp: SippSet):  # noqa: F811
    pbx = start_pbx()
    bob = sipp.register(pbx, "1002")
    transferee = sipp.uas("bob", "transfer_uas_given_back.xml", "1002", bob)
    uac = sipp.uac(pbx, "transfer_uac_refused.xml", "1002", extra_fields=["915551230000"])
    sipp.check(pbx, uac, transferee)
    pbx.wait_for(r"Call \S+ ended: .*1001@default -> 915551230000")
    pbx.wait_for(r"transfer failed, the transferee is back")
    assert_no_traceback(pbx)


def tcp_listening(port: int) -> bool:
    """Whether something listens on TCP 127.0.0.1:`port` (SIPp's 3PCC twin socket), from /proc/net/tcp."""
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] in (f"0100007F:{port:04X}", f"00000000:{port:04X}") and fields[3] == "0A":
                return True
    return False


def wait_tcp_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not tcp_listening(port):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on TCP {port}")
        time.sleep(0.02)  # polling /proc/net/tcp for an event: the listen


def test_attended_transfer_by_refer_with_replaces(start_pbx, sipp: SippSet):  # noqa: F811
    """1001 calls 1002 and 1003 (two SIPp twins, 3PCC, so the REFER can name the other call's dialog)."""
    pbx = start_pbx()
    bob = sipp.register(pbx, "1002")
    carol = sipp.register(pbx, "1003")
    transferee = sipp.uas("bob", "transfer_uas_transferee.xml", "1002", bob, ["-d", "1500"])
    target = sipp.uas("carol", "call_uas.xml", "1003", carol)
    twin = f"127.0.0.1:{free_port()}"
    main_csv = sipp.users_csv([("1001", "pass1001", "1002", "1003")], "main_users")
    main = sipp.start(
        "main",
        "transfer_uac_attended.xml",
        [f"127.0.0.1:{pbx.sip}", "-inf", str(main_csv), "-3pcc", twin],
        timeout=25,
    )
    wait_tcp_listening(int(twin.rsplit(":", 1)[1]))
    consult_csv = sipp.users_csv([("1001", "pass1001", "1003")], "consult_users")
    consult = sipp.start(
        "consult",
        "transfer_uac_consult.xml",
        [f"127.0.0.1:{pbx.sip}", "-inf", str(consult_csv), "-3pcc", twin],
        timeout=25,
    )
    sipp.check(pbx, consult, main, transferee, target)

    (reinvite,) = [m for m in transferee.requests("INVITE")[1:]]
    assert re.search(r"^m=audio [1-9]", reinvite.split("\r\n\r\n", 1)[1], flags=re.M), reinvite
    # 1002 and 1003 talked in the consultation call (1001 -> 1003), now answered by... 1003 with 1002 in it
    # The consultation call (1001 -> 1003) goes on with 1002 in 1001's place, until 1002 hangs up.
    pbx.wait_for(r"Call \S+ ended: normal .*1001@default -> 1003 answered by 1003")
    pbx.wait_for(r"Call \S+ ended: transferred .*1001@default -> 1002")
    assert len(target.requests("BYE")) == 1
    assert_no_traceback(pbx)


def test_invite_with_replaces_moves_a_call_to_another_device(start_pbx, sipp: SippSet):  # noqa: F811
    """1001 calls 1002; a second device of 1001 sends an INVITE with Replaces naming that call's dialog: it
    gets the call (200), the first device gets a BYE, and 1002 stays in the call until the new device hangs
    up."""
    pbx = start_pbx()
    bob = sipp.register(pbx, "1002")
    callee = sipp.uas("bob", "call_uas.xml", "1002", bob)
    twin = f"127.0.0.1:{free_port()}"
    csv = sipp.users_csv([("1001", "pass1001", "1002")], "device2_users")
    device2 = sipp.start(
        "device2",
        "transfer_uac_replaces.xml",
        [f"127.0.0.1:{pbx.sip}", "-inf", str(csv), "-3pcc", twin],
        timeout=25,
    )
    wait_tcp_listening(int(twin.rsplit(":", 1)[1]))
    csv1 = sipp.users_csv([("1001", "pass1001", "1002")], "device1_users")
    device1 = sipp.start(
        "device1",
        "transfer_uac_consult.xml",
        [f"127.0.0.1:{pbx.sip}", "-inf", str(csv1), "-3pcc", twin],
        timeout=25,
    )
    sipp.check(pbx, device1, device2, callee)
    pbx.wait_for(r"side a replaced by a new dialog of 1001")
    pbx.wait_for(r"Call \S+ ended: normal .*1001@default -> 1002 answered by 1002")
    assert len(callee.requests("BYE")) == 1
    assert_no_traceback(pbx)


def test_transfer_by_keys_sent_as_sip_info(start_pbx, sipp: SippSet):  # noqa: F811
    pbx = start_pbx()
    bob = sipp.register(pbx, "1002")
    carol = sipp.register(pbx, "1003")
    transferee = sipp.uas("bob", "transfer_uas_transferee.xml", "1002", bob, ["-d", "1500"])
    target = sipp.uas("carol", "call_uas.xml", "1003", carol, ["-d", "800"])
    uac = sipp.uac(pbx, "dtmf_transfer_uac_info.xml", "1002")
    sipp.check(pbx, uac, transferee, target)
    pbx.wait_for(r"Call \S+: 1001 transfers to 1003 \(keys\)")
    pbx.wait_for(r"Call \S+ ended: .*1001@default -> 1003 answered by 1003")
    rows = _cdr_rows(pbx, 2)
    assert {"caller": "1001", "dialed": "1003", "answered_by": "1003", "cause": "normal"} in rows, rows
    assert transferee.requests("INFO") == []  # the keys reached 1002 as RFC 4733 events, not INFO
    assert uac.requests("NOTIFY") == []
    assert_no_traceback(pbx)
