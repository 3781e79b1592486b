"""A busy lamp end to end: a SIPp phone (1003) subscribes to the `dialog` package of extension 1002
(RFC 4235, digest-authenticated) and sees `early`, then `confirmed`, then `terminated` while 1001 calls 1002
(a SIPp callee that rings and answers) and hangs up. The `<remote>` of the ringing state names the caller."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pbx.sip.events.dialog_info import DialogInfo
from tests.e2e.harness import REPO
from tests.e2e.test_calls_sipp import SippSet, body, launch_pbx, sipp  # noqa: F401 (the fixture)

pytestmark = pytest.mark.e2e

DEMO = (REPO / "dialplans" / "default" / "main.j2").read_text()


def test_a_lamp_sees_early_confirmed_terminated(tmp_path: Path, sipp: SippSet) -> None:  # noqa: F811
    pbx = launch_pbx(tmp_path / "pbx", DEMO, keepalive="crlf")
    try:
        port = sipp.register(pbx, "1002")
        callee = sipp.uas("phone_1002", "call_uas.xml", "1002", port)
        csv = sipp.users_csv([("1003", "pass1003", "1002")], "lamp_users")
        lamp = sipp.start("lamp_1003", "subscribe_dialog.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)])
        deadline = time.monotonic() + 10
        while not lamp.requests("NOTIFY"):  # the first NOTIFY (idle) arrived: the lamp is subscribed
            assert time.monotonic() < deadline, f"no first NOTIFY\n{lamp}\n{pbx.tail()}"
            assert lamp.proc.poll() is None, f"the subscriber exited\n{lamp}\n{pbx.tail()}"
            time.sleep(0.05)  # polling SIPp's message file for an event: the NOTIFY
        caller = sipp.uac(pbx, "call_uac.xml", "1002", caller="1001", name="caller")
        sipp.check(pbx, caller, callee, lamp)
        documents = [DialogInfo.parse(body(m).encode()) for m in lamp.requests("NOTIFY")]
        assert [d.version for d in documents] == [0, 1, 2, 3]
        assert [[x.state for x in d.dialogs] for d in documents] == [
            [],
            ["early"],
            ["confirmed"],
            ["terminated"],
        ]
        ringing = documents[1].dialogs[0]
        assert ringing.remote_identity == "sip:1001@localhost"
        assert ringing.direction == "recipient"
    finally:
        pbx.process.stop()
