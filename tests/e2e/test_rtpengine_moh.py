"""Music on hold on a call relayed by rtpengine (issue 17): Debian's rtpengine plays it itself (`play media`).

1001 (SIPp) calls 1002 (SIPp) through the PBX with `[media] relay = "rtpengine"` (the fixtures of
tests/e2e/test_rtpengine.py), puts 1002 on hold with a re-INVITE (`a=sendonly`) and keeps it there 2 s; the
caller sends no RTP at all, so what reaches 1002's media port during the hold is the music rtpengine plays
(SIPp does not read that socket: its receive queue, in /proc/net/udp, fills). The PBX logs the music on hold
and its end; rtpengine's log shows the `play media` and `stop media` it was asked for.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.test_calls_sipp import SCENARIOS, sipp  # noqa: F401 - fixture
from tests.e2e.test_rtpengine import pbx, rtpengine  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists("/usr/bin/rtpengine"), reason="rtpengine-daemon not installed"),
]


def queued(port: int) -> int:
    """Bytes waiting in the receive queue of the UDP socket bound to 127.0.0.1:`port` (0 if none)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == wanted:
                return int(fields[4].split(":")[1], 16)
    return 0


def test_a_held_phone_hears_music_played_by_rtpengine(pbx, rtpengine, sipp, tmp_path: Path):  # noqa: F811
    hold = (SCENARIOS / "call_uac_hold.xml").read_text()
    at = hold.rindex('<pause milliseconds="100"/>')  # after the hold's ACK: stay on hold 2 s
    scenario = tmp_path / "call_uac_long_hold.xml"
    scenario.write_text(
        hold[:at] + '<pause milliseconds="2000"/>' + hold[at + len('<pause milliseconds="100"/>') :]
    )
    port = sipp.register(pbx, "1002")
    uas = sipp.uas("uas", "call_uas_reinvite.xml", "1002", port)
    media_port = int(uas.proc.args[uas.proc.args.index("-mp") + 1])
    csv = sipp.users_csv([("1001", "pass1001", "1002")], "uac_users")
    uac = sipp.start("uac", scenario, [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=20)
    pbx.wait_for(r"Call \S+: music on hold for 1002$")
    deadline = time.monotonic() + 1.5
    heard = 0
    while heard < 1600 and time.monotonic() < deadline:  # two packets' worth of kernel memory and more
        heard = queued(media_port)
        time.sleep(0.05)  # polling the held phone's socket for the music's packets
    sipp.check(pbx, uac, uas)
    assert heard >= 1600, f"1002 got nothing during the hold ({heard} bytes queued)"
    pbx.wait_for(r"Call \S+: music on hold for 1002 ends|Call \S+ ended: normal")
    log = rtpengine.log.read_text()
    asked = [line.split("command ")[-1] for line in log.splitlines() if "Received command" in line]
    assert [a.split(" from")[0] for a in asked if "media" in a] == ["'play media'", "'stop media'"], asked
