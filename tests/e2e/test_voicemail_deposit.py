"""Leaving a voicemail message, end to end with SIPp: the demo dialplan sends a call for 1002 (not
registered) to mailbox 1002.

The caller's scenario is written by each test (`caller_scenario`): INVITE with digest auth, then after the
ACK a list of steps: RTP from pcap files (`play_pcap_audio`, root only: a 440 Hz tone written by
`write_rtp_pcap`, SIPp's RFC 4733 `*`), pauses, and either the caller's BYE or the PBX's. The tests check the
saved WAV (Goertzel: the tone is there), the index row in SQLite, the log lines, and what is NOT left behind:
a full box, a read-only voicemail directory (a read-only tmpfs mounted over the box's directory, else a
file in the directory's place), and a `kill -9` of the PBX during a recording (no half file, no orphan row
after the restart). Waits are on process exits and log lines with timeouts; only SIPp's scenarios pause.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import wave
from pathlib import Path

import pytest

from tests.e2e.audio import assert_hears, read_wav
from tests.e2e.harness import REPO, PbxProcess, options_request, udp_exchange
from tests.e2e.test_calls_sipp import CallPbx, launch_pbx, sipp  # noqa: F401 (fixture)
from tests.e2e.test_ivr_sipp import tone_pcm, write_rtp_pcap

pytestmark = pytest.mark.e2e
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="SIPp's play_pcap_audio needs root")

DEMO_MAIN = (REPO / "dialplans" / "default" / "main.j2").read_text()
SOUNDS = REPO / "sounds" / "en"
STAR = Path("/usr/share/sip-tester/dtmf_2833_star.pcap")
MAILBOXES = """
[voicemail]
min_message_seconds = 1
silence_seconds = 10

[tenants.default.mailboxes.1002]
pin = "4321"
max_messages = {max_messages}
max_message_seconds = 20
"""


def greeting_seconds(number: str = "1002") -> float:
    """How long the default unavailable greeting of `number` plays, from the shipped prompts."""
    names = [
        "vm-person-at-extension",
        *(f"digit-{d}" for d in number),
        "vm-is-unavailable",
        "vm-leave-message",
    ]
    total = 0.0
    for name in names:
        with wave.open(str(SOUNDS / f"{name}.wav")) as w:
            total += w.getnframes() / w.getframerate()
    return total


def caller_scenario(steps: str) -> str:
    """A caller's SIPp scenario: INVITE (PCMU + telephone-event), 407, INVITE with credentials, 200, ACK,
    then `steps` (XML). CSV fields: caller, password, [authentication ...], the number dialed."""
    sdp = (
        "v=0\no=uac 1 1 IN IP[local_ip_type] [local_ip]\ns=-\nc=IN IP[media_ip_type] [media_ip]\nt=0 0\n"
        "m=audio [media_port] RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n"
        "a=fmtp:101 0-15\na=ptime:20\n"
    )

    def invite(cseq: int, auth: str) -> str:
        return f"""  <send retrans="500"><![CDATA[
INVITE sip:[field3]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-inv{cseq};rport
Max-Forwards: 70
From: "Caller [field0]" <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag[call_number]
To: <sip:[field3]@[remote_ip]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:[field0]@[local_ip]:[local_port];transport=[transport]>
{auth}
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
"""

    def ack(cseq: int, uri: str, branch: str) -> str:
        return f"""  <send><![CDATA[
ACK {uri} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch};rport
Max-Forwards: 70
From: "Caller [field0]" <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} ACK
Content-Length: 0

]]></send>
"""

    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="voicemail caller">
{invite(1, "")}  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
{ack(1, "sip:[field3]@[remote_ip]:[remote_port]", "z9hG4bK-[pid]-[call_number]-inv1")}
{invite(2, "[field2]")}  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
{ack(2, "[next_url]", "[branch]")}
{steps}
</scenario>
"""


def play(name: str) -> str:
    return f'  <nop><action><exec play_pcap_audio="{name}"/></action></nop>\n'


def pause(seconds: float) -> str:
    return f'  <pause milliseconds="{int(seconds * 1000)}"/>\n'


CALLER_BYE = """  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: "Caller [field0]" <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 3 BYE
Content-Length: 0

]]></send>
  <recv response="200"/>
"""


def pbx_bye(timeout: float) -> str:
    return f"""  <recv request="BYE" timeout="{int(timeout * 1000)}"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
"""


def start(tmp_path: Path, name: str = "pbx", max_messages: int = 10) -> CallPbx:
    return launch_pbx(
        tmp_path / name, DEMO_MAIN, MAILBOXES.format(max_messages=max_messages), keepalive="crlf"
    )


@pytest.fixture
def pbxs() -> list[CallPbx]:
    started: list[CallPbx] = []
    yield started
    for pbx in started:
        pbx.process.stop()


def call(sipp, pbx: CallPbx, tmp_path: Path, name: str, steps: str, pcaps: dict[str, bytes | Path]):  # noqa: F811
    """1003 calls 1002 with a scenario of `steps`; `pcaps` are put where SIPp finds them."""
    for file, data in pcaps.items():
        if isinstance(data, Path):
            shutil.copy(data, sipp.directory / file)
        else:
            (sipp.directory / file).write_bytes(data)
    scenario = tmp_path / f"{name}.xml"
    scenario.write_text(caller_scenario(steps))
    return sipp.uac(pbx, scenario, "1002", caller="1003", name=name)


def tone(tmp_path: Path, seconds: float, lead: float = 0.0) -> bytes:
    audio = tone_pcm((), lead) + tone_pcm((440.0,), seconds)
    return write_rtp_pcap(tmp_path / "tone.pcap", audio).read_bytes()


def box_dir(pbx: CallPbx) -> Path:
    return pbx.directory / "data" / "voicemail" / "default" / "1002"


def rows(pbx: CallPbx) -> list[dict]:
    path = pbx.directory / "data" / "pbx.sqlite3"
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        connection.row_factory = sqlite3.Row
        return [dict(r) for r in connection.execute("SELECT * FROM voicemail_messages")]
    finally:
        connection.close()


def wavs(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wav")) if directory.is_dir() else []


# -- leaving a message ---------------------------------------------------------------------------------------


@needs_root
def test_a_message_for_unregistered_1002_holds_the_tone(pbxs, sipp, tmp_path):  # noqa: F811
    """The default greeting plays in full (the caller is silent meanwhile), then 3 s of 440 Hz and the
    caller hangs up: the message is saved with the tone, its caller and its Call-ID."""
    pbx = start(tmp_path)
    pbxs.append(pbx)
    lead = greeting_seconds() + 0.5 + 1.0  # the greeting, the beep, a margin
    steps = play("audio.pcap") + pause(lead + 3.0 + 0.5) + CALLER_BYE
    uac = call(sipp, pbx, tmp_path, "uac", steps, {"audio.pcap": tone(tmp_path, 3.0, lead)})
    sipp.check(pbx, uac)
    (line,) = pbx.wait_for(r"voicemail default/1002: message \S+ saved \((\d+\.\d) s, closed\)")
    (wav,) = wavs(box_dir(pbx))
    heard = read_wav(wav)
    assert heard.rate == 8000 and 2.5 <= heard.seconds <= 5.0, (heard.seconds, line)
    assert_hears(heard, 440.0, 1000.0, label="the message")
    (row,) = rows(pbx)
    assert (row["mailbox"], row["caller_number"], row["folder"]) == ("1002", "1003", "new"), row
    assert row["call_id"] and row["call_id"] in uac.messages("sent")[0], row
    assert 2.5 <= row["duration"] <= 5.0, row


@needs_root
def test_star_skips_the_greeting_and_a_full_box_records_nothing(pbxs, sipp, tmp_path):  # noqa: F811
    """`*` by RFC 4733 a second into the greeting: the beep comes at once, and 2 s of tone sent then are
    the message (the whole call is far shorter than the greeting). The box holds one message: the next
    caller hears that it is full, nothing is recorded, and the PBX hangs up."""
    pbx = start(tmp_path, max_messages=1)
    pbxs.append(pbx)
    steps = pause(1.0) + play("star.pcap") + pause(1.5) + play("audio.pcap") + pause(2.5) + CALLER_BYE
    first = call(sipp, pbx, tmp_path, "first", steps, {"star.pcap": STAR, "audio.pcap": tone(tmp_path, 2.0)})
    sipp.check(pbx, first)
    assert first.elapsed < greeting_seconds(), first.elapsed
    pbx.wait_for(r"voicemail default/1002: message \S+ saved")
    (wav,) = wavs(box_dir(pbx))
    heard = read_wav(wav)
    assert 1.5 <= heard.seconds <= 4.0, heard.seconds
    assert_hears(heard, 440.0, 1000.0, label="the message")

    second = call(sipp, pbx, tmp_path, "second", pbx_bye(15.0), {})
    sipp.check(pbx, second)
    pbx.wait_for(r"voicemail default/1002 is full")
    assert wavs(box_dir(pbx)) == [wav] and len(rows(pbx)) == 1


# -- storage failures ----------------------------------------------------------------------------------------


def _mount_read_only(directory: Path, options: str = "ro,size=1m") -> bool:
    """A read-only tmpfs over `directory` (root in a mount namespace that allows it); False if refused."""
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return result.returncode == 0


@needs_root
def test_a_read_only_voicemail_directory_gets_an_apology_and_no_file(pbxs, sipp, tmp_path):  # noqa: F811
    """The box's directory becomes read-only (a read-only tmpfs over it; where mounts are refused, a file
    in its place): the caller hears the apology and the PBX hangs up; one log line, no file, no row, no
    traceback, and the PBX still answers."""
    pbx = start(tmp_path)
    pbxs.append(pbx)
    directory = box_dir(pbx)
    directory.mkdir(parents=True, exist_ok=True)
    mounted = _mount_read_only(directory)
    if not mounted:
        directory.rmdir()
        directory.write_text("not a directory\n")
    try:
        uac = call(sipp, pbx, tmp_path, "uac", pbx_bye(15.0), {})
        sipp.check(pbx, uac)
        pbx.wait_for(r"voicemail default/1002: storage unavailable, nothing recorded: .+")
        assert "Traceback" not in pbx.process.output
        problems = [line for line in pbx.process.lines if re.search(r"#(warn|error|critical)\]", line)]
        assert len(problems) == 1 and "unavailable" in problems[0], problems  # one line says what failed
        if mounted:
            assert os.listdir(directory) == [], os.listdir(directory)
        assert rows(pbx) == []
        reply = udp_exchange("127.0.0.1", pbx.sip, options_request("127.0.0.1", pbx.sip, "UDP", 9))
        assert reply is not None and reply.startswith(b"SIP/2.0 200"), reply
    finally:
        pbx.process.stop()
        if mounted:
            subprocess.run(["umount", str(directory)], capture_output=True, timeout=10, check=False)


@needs_root
def test_a_disk_that_fills_up_during_the_recording_leaves_no_half_file(pbxs, sipp, tmp_path):  # noqa: F811
    """The box's directory is a 2 MB tmpfs: enough when the call comes (the longest message, 20 s, and the
    spare), full once the recording runs (the test fills it). The caller talks 4 s and hangs up: the WAV
    cannot be written (ENOSPC), and there is no half file, no temp file, no sidecar, no row; one error
    line; the PBX lives on."""
    pbx = start(tmp_path)
    pbxs.append(pbx)
    directory = box_dir(pbx)
    directory.mkdir(parents=True, exist_ok=True)
    if not _mount_read_only(directory, "size=2m"):
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        steps = pause(1.0) + play("star.pcap") + pause(1.5) + play("audio.pcap") + pause(4.5) + CALLER_BYE
        pcaps = {"star.pcap": STAR, "audio.pcap": tone(tmp_path, 4.0)}
        for file, data in pcaps.items():
            if isinstance(data, Path):
                shutil.copy(data, sipp.directory / file)
            else:
                (sipp.directory / file).write_bytes(data)
        scenario = tmp_path / "full.xml"
        scenario.write_text(caller_scenario(steps))
        csv = sipp.users_csv([("1003", "pass1003", "1002")], "full_users")
        uac = sipp.start("full", scenario, [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=20)
        pbx.wait_for(r"voicemail default/1002: recording", timeout=15)
        filler = directory / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill the disk: the recording will find no room
            for _ in range(64):  # 4 MB at most: more than the tmpfs holds
                try:
                    f.write(bytes(65536))
                except OSError:
                    break
        sipp.check(pbx, uac)
        (line,) = pbx.wait_for(r"voicemail default/1002: storage unavailable, nothing recorded: .+")
        assert "No space left" in line, line
        assert "Traceback" not in pbx.process.output
        assert sorted(p.name for p in directory.iterdir()) == ["filler"]
        assert rows(pbx) == []
        reply = udp_exchange("127.0.0.1", pbx.sip, options_request("127.0.0.1", pbx.sip, "UDP", 9))
        assert reply is not None and reply.startswith(b"SIP/2.0 200"), reply
    finally:
        pbx.process.stop()
        subprocess.run(["umount", str(directory)], capture_output=True, timeout=10, check=False)


# -- kill -9 -------------------------------------------------------------------------------------------------


@needs_root
def test_kill_9_during_a_recording_leaves_no_half_file_and_no_orphan_row(pbxs, sipp, tmp_path):  # noqa: F811
    pbx = start(tmp_path)
    pbxs.append(pbx)
    steps = pause(1.0) + play("star.pcap") + pause(1.5) + play("audio.pcap") + pause(8.0) + CALLER_BYE
    for file, data in {"star.pcap": STAR, "audio.pcap": tone(tmp_path, 8.0)}.items():
        if isinstance(data, Path):
            shutil.copy(data, sipp.directory / file)
        else:
            (sipp.directory / file).write_bytes(data)
    scenario = tmp_path / "kill.xml"
    scenario.write_text(caller_scenario(steps))
    csv = sipp.users_csv([("1003", "pass1003", "1002")], "kill_users")
    uac = sipp.start("kill", scenario, [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=20)
    pbx.wait_for(r"voicemail default/1002: recording", timeout=15)
    pbx.process.kill9()
    uac.kill()
    directory = box_dir(pbx)
    left = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    assert not [n for n in left if n.endswith(".wav")], left  # the audio was still in memory: no file

    restarted = PbxProcess(pbx.ports["path"])
    pbxs.append(CallPbx(restarted, pbx.ports, pbx.directory, pbx.rtp))
    restarted.wait_ready(pbx.ports["listeners"])
    restarted.wait_for(r"Location service loaded \d+ bindings")
    assert rows(pbx) == []
    left = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    assert left == [], left  # recovery removed what the cut recording left (its sidecar)


# A real phone (baresip) leaving a message: step 1 of test_voicemail_journey.py.
