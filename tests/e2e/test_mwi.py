"""Message waiting shown with a real peer: SIPp subscribes to message-summary with digest authentication
(401, then credentials), gets 200 and the first NOTIFY at once, and a `terminated;reason=timeout` NOTIFY
when its short subscription expires; then the PBX has forgotten the dialog (a refresh gets 481).

Every wait is on an event (SIPp's exit, a log line) with a timeout; ports are free ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.baresip import Account, Baresip
from tests.e2e.harness import PbxProcess, free_port, run_sipp, write_config

SCENARIOS = Path(__file__).parent / "scenarios"
pytestmark = pytest.mark.e2e


@pytest.fixture
def mwi_pbx(tmp_path: Path) -> Iterator[tuple[PbxProcess, dict]]:
    """A PBX whose subscriptions may be as short as 1 s."""
    ports = write_config(tmp_path, extra="[mwi]\nmin_expires = 1\nmax_expires = 60\ndefault_expires = 30\n")
    process = PbxProcess(ports["path"])
    try:
        process.wait_ready(ports["listeners"])
        yield process, ports
    finally:
        process.stop()


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_subscribes_with_digest_and_sees_the_subscription_expire(mwi_pbx, tmp_path, transport):
    process, ports = mwi_pbx
    csv = tmp_path / "users.csv"
    users = range(1000, 1004)
    csv.write_text(
        "SEQUENTIAL\n"
        + "".join(f"{n};pass{n};[authentication username={n} password=pass{n}]\n" for n in users)
    )
    error_file = tmp_path / f"sipp_err_{transport}.log"
    result = run_sipp(
        [
            f"127.0.0.1:{ports['sip']}",
            "-sf", str(SCENARIOS / "subscribe_mwi.xml"),
            "-inf", str(csv),
            "-t", transport,
            "-i", "127.0.0.1",
            "-p", str(free_port()),
            "-mp", str(free_port()),
            "-m", str(len(users)),
            "-l", str(len(users)),
            "-r", "10",
            "-timeout", "30s",
            "-timeout_error",
            "-trace_err",
            "-error_file", str(error_file),
        ],
        timeout=45,
        cwd=tmp_path,
    )  # fmt: skip
    errors = error_file.read_text() if error_file.exists() else ""
    assert result.returncode == 0, (
        f"SIPp failed ({result.returncode}):\n{result.stdout[-3000:]!r}\n{errors[-3000:]}\n"
        f"{process.output[-3000:]}"
    )
    # both NOTIFYs crossed the wire, as the trace shows
    process.wait_for(r"Subscription-State: active;expires=", count=len(users))
    process.wait_for(r"Subscription-State: terminated;reason=timeout", count=len(users))


def test_baresip_mwi_subscribes_and_is_notified(mwi_pbx, tmp_path):
    """baresip's `mwi.so` subscribes to its own mailbox after registering (digest answered, 401 like
    REGISTER, MD5 only for baresip) and answers the first NOTIFY; stopping the PBX deactivates it."""
    process, ports = mwi_pbx
    account = Account("1001", "pass1001", "127.0.0.1", ports["sip"])
    phone = Baresip(tmp_path / "baresip", [account], extra_config=["module_app mwi.so"])
    try:
        phone.wait_registered(account, timeout=15)
        try:
            process.wait_for(r"SUBSCRIBE sip:1001@127\.0\.0\.1", timeout=15)
            process.wait_for(r"Subscription-State: active;expires=", timeout=20)
            process.wait_for(r"CSeq: 1 NOTIFY", timeout=15, count=2)  # the NOTIFY and baresip's answer
        except AssertionError as failure:  # what baresip made of it, beside the PBX's trace
            raise AssertionError(f"{failure}\n--- baresip:\n{phone.output[-4000:]}") from None
        answer = re.search(
            r"<-- UDP [^\n]*\n\s*SIP/2\.0 (\d+)[^\n]*\n(?:[^\n]*\n){0,8}?\s*CSeq: 1 NOTIFY", process.output
        )
        assert answer is not None and answer.group(1) == "200", process.output[-3000:]
    finally:
        phone.stop()
