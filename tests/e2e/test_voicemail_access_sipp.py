"""Mailbox access (`voicemailmain`) shown with SIPp sending its keys as RFC 4733 telephone-events.

Each test starts its own PBX whose dialplan is `voicemailmain` for every number, with box 1002 (PIN 2468).
The caller's SIPp scenario (`vm_uac_rfc4733.xml`) calls, and once answered plays `vm_digits.pcap`: RTP
telephone-events (payload type 101, 100 ms per key, the end packet sent three times, RFC 4733 2.5) at set
times, between 20 ms PCMU silence packets, written here; it then waits for the PBX's BYE. The key times
leave seconds of margin around the prompts they answer (`vm-enter-pin` 3.4 s, the counts 4.6 s, a message's
envelope about 9 s): a key pressed during a prompt interrupts it, so only the order matters.

- three wrong PINs: the call ends (BYE) and each counts as a failed authentication of `default/1002` from
  127.0.0.1; with `max_auth_failures = 4` a second call's first wrong PIN blocks the source: its call is hung
  up at once and the PBX then ignores anything from 127.0.0.1 (an OPTIONS gets no answer);
- the right PIN: the caller hears the counts (1 new, 0 old: a message put in the box before the start and
  adopted by the voicemail recovery), `7` during the message's envelope deletes it (its WAV and its index row
  are gone), `*` at the main menu says goodbye and the PBX hangs up.
- mailbox options: `0`, `1` records the unavailable greeting (a 1000 Hz tone the pcap sends after the beep,
  ended by `#`: the WAV holds the tone), `4` changes the PIN (typed twice); a second call opens the box with
  the new PIN.

SIPp's `play_pcap_audio` needs root, as in the IVR tests. Waits are on process exits and log lines.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import struct
import wave
from pathlib import Path

import pytest

from pbx.media.g711 import ulaw_encode
from tests.e2e.audio import assert_hears, read_wav
from tests.e2e.harness import PbxProcess, free_port, write_config
from tests.e2e.test_calls_sipp import CallPbx, SippSet, rtp_range, sipp  # noqa: F401 (fixture)
from tests.e2e.test_ivr_sipp import _checksum

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="SIPp's play_pcap_audio needs root"),
]

PIN = "97531864"  # long and odd enough never to be found by chance in the PBX's log (ports, Call-IDs)
MESSAGE_ID = "1765100000000-abc123"
CONFIG = f"""
[security]
max_auth_failures = 4

[voicemail]
max_pin_attempts = 3

[tenants.default.mailboxes.1002]
pin = "{PIN}"
"""
EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}
TONE = [int(10000 * math.sin(2 * math.pi * 1000 * i / 8000)) for i in range(8)]  # 1000 Hz: one period


# -- RTP telephone-events in a pcap -----------------------------------------------------------------------


def _frame(rtp: bytes, index: int) -> bytes:
    """An Ethernet/IPv4/UDP frame around one RTP packet (SIPp rewrites the addresses and ports)."""
    udp = struct.pack("!HHHH", 40000, 40002, 8 + len(rtp), 0) + rtp
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), index & 0xFFFF, 0, 64, 17, 0, b"\x7f\0\0\1", b"\x7f\0\0\1"
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return b"\0\0\0\0\0\2" + b"\0\0\0\0\0\1" + b"\x08\x00" + ip + udp


def write_keys_pcap(
    path: Path, keys: list[tuple[float, str]], seconds: float, tone: tuple[float, float] | None = None
) -> Path:
    """A pcap of one RTP stream (SSRC 0x5EED) lasting `seconds`: PCMU silence every 20 ms (a 1000 Hz tone
    between the two times of `tone`), except while a key is pressed: each key of `keys` ((start time, keys
    pressed 200 ms apart) ...) is 100 ms of RFC 4733 events (payload type 101, volume 10, marker on the first
    packet, the end packet three times)."""
    events: dict[int, tuple[str, int]] = {}  # 20 ms slot -> (key, slot index within the event)
    for start, pressed in keys:
        for n, key in enumerate(pressed):
            first = round((start + 0.2 * n) / 0.02)
            for slot in range(8):  # 5 packets of 20 ms, then the end packet twice more
                events[first + slot] = (key, slot)
    packets = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for index in range(round(seconds / 0.02)):
        if index in events:
            key, slot = events[index]
            start_slot = index - slot
            end = slot >= 4
            duration = 160 * min(slot + 1, 5)
            header = struct.pack(
                "!BBHII", 0x80, (0x80 if slot == 0 else 0) | 101, index, start_slot * 160, 0x5EED
            )
            payload = struct.pack("!BBH", EVENTS[key], (0x80 if end else 0) | 10, duration)
        else:
            header = struct.pack("!BBHII", 0x80, 0, index, index * 160, 0x5EED)
            payload = b"\xff" * 160
            if tone is not None and tone[0] <= index * 0.02 < tone[1]:
                payload = ulaw_encode(
                    b"".join(struct.pack("<h", TONE[(index * 160 + i) % 8]) for i in range(160))
                )
        frame = _frame(header + payload, index)
        micros = index * 20_000
        packets.append(struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)))
        packets.append(frame)
    path.write_bytes(b"".join(packets))
    return path


# -- the PBX and the caller ---------------------------------------------------------------------------------


def seed_message(pbx_dir: Path) -> Path:
    """Put a 2 s 440 Hz message from 1001 in box 1002 before the PBX starts: the start-up recovery adopts a
    WAV with a sidecar as a new message (what a `kill -9` between the recording and its index leaves)."""
    box = pbx_dir / "data" / "voicemail" / "default" / "1002"
    box.mkdir(parents=True)
    audio = box / f"{MESSAGE_ID}.wav"
    tone = (int(8000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(16000))
    with wave.open(str(audio), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(struct.pack("<h", sample) for sample in tone))
    sidecar = {
        "caller_number": "1001",
        "caller_name": "Alice",
        "call_id": "seed",
        "received_at": 1765100000.0,
    }
    audio.with_suffix(".json").write_text(json.dumps(sidecar))
    return audio


@pytest.fixture
def vm_pbx(tmp_path: Path):
    """A PBX whose dialplan is `voicemailmain` with box 1002; `seed=True` puts a message in it first."""
    started: list[CallPbx] = []

    def start(seed: bool = False) -> tuple[CallPbx, Path | None]:
        directory = tmp_path / f"pbx{len(started)}"
        directory.mkdir(parents=True)
        audio = seed_message(directory) if seed else None
        low, high = rtp_range()
        extra = f"[media]\nrtp_port_min = {low}\nrtp_port_max = {high}\n\n"
        extra += '[registrar]\nkeepalive = "crlf"\n' + CONFIG
        ports = write_config(directory, ipv6=False, extra=extra)
        pbx = CallPbx(PbxProcess(ports["path"]), ports, directory, (low, high))
        started.append(pbx)
        pbx.write_dialplan("voicemailmain\n")
        pbx.process.wait_ready(ports["listeners"])
        return pbx, audio

    yield start
    for pbx in started:
        pbx.process.stop()


def rows(pbx: CallPbx) -> list[tuple[str, str, str]]:
    path = pbx.directory / "data" / "pbx.sqlite3"
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return list(connection.execute("SELECT mailbox, id, folder FROM voicemail_messages"))
    finally:
        connection.close()


def call(
    pbx: CallPbx,
    sipp: SippSet,  # noqa: F811
    keys: list[tuple[float, str]],
    seconds: float,
    name: str,
    tone: tuple[float, float] | None = None,
):
    """1002 dials *97 and presses `keys`; the caller's SIPp, once it has its BYE (or failed)."""
    write_keys_pcap(sipp.directory / "vm_digits.pcap", keys, seconds, tone)
    csv = sipp.users_csv([("1002", "pass1002", "*97")], f"{name}_users")
    uac = sipp.start(name, "vm_uac_rfc4733.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=60)
    uac.wait()
    return uac


def unanswered_options(pbx: CallPbx) -> bytes:
    """Send an OPTIONS from 127.0.0.1 and return what came back within 2 s (b"" for nothing)."""
    port = free_port(tcp=False)
    request = (
        f"OPTIONS sip:127.0.0.1:{pbx.sip} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-blocked-1;rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: blocked-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.settimeout(2.0)
        sock.sendto(request, ("127.0.0.1", pbx.sip))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return b""


# -- the tests ---------------------------------------------------------------------------------------------

WRONG_PINS = [(1.0, "80706050#"), (8.0, "13579024#"), (15.0, "24680135#")]


def test_three_wrong_pins_end_the_call_then_the_source_is_blocked(vm_pbx, sipp):  # noqa: F811
    pbx, _ = vm_pbx()
    first = call(pbx, sipp, WRONG_PINS, 20.0, "wrong_pins")
    sipp.check(pbx, first)
    assert len(first.requests("BYE")) == 1, first
    attempts = pbx.wait_for(
        r"wrong PIN for mailbox default/1002 from 127\.0\.0\.1 \(attempt \d of 3\)", count=3
    )
    assert [line.rsplit("(attempt ", 1)[1] for line in attempts] == ["1 of 3)", "2 of 3)", "3 of 3)"]
    for _, pin in WRONG_PINS:  # never logged
        assert pin.rstrip("#") not in pbx.process.output
    assert unanswered_options(pbx).startswith(b"SIP/2.0 200 "), "blocked after 3 failures of 4"

    second = call(pbx, sipp, WRONG_PINS[:1], 4.0, "blocked")
    sipp.check(pbx, second)  # the first wrong PIN (the 4th failure) blocks: BYE at once
    assert len(second.requests("BYE")) >= 1, second
    pbx.wait_for(r"Blocked 127\.0\.0\.1 for \d+ s: 4 failed authentications")
    assert unanswered_options(pbx) == b""


def test_right_pin_hears_the_counts_and_7_deletes_the_message(vm_pbx, sipp):  # noqa: F811
    pbx, audio = vm_pbx(seed=True)
    assert audio is not None
    pbx.wait_for(rf"Voicemail recovery: message {MESSAGE_ID} of default/1002 adopted")
    assert rows(pbx) == [("1002", MESSAGE_ID, "new")]
    keys = [(1.0, PIN + "#"), (11.0, "7"), (15.0, "*")]
    uac = call(pbx, sipp, keys, 17.0, "right_pin")
    sipp.check(pbx, uac)
    pbx.wait_for(r"mailbox default/1002 opened from 127\.0\.0\.1")
    pbx.wait_for(r"mailbox default/1002 has 1 new and 0 old messages")
    pbx.wait_for(rf"message {MESSAGE_ID} of default/1002 deleted")
    assert not audio.exists()
    assert rows(pbx) == []
    assert "wrong PIN" not in pbx.process.output and PIN not in pbx.process.output


NEW_PIN = "13572468"


def test_options_record_the_unavailable_greeting_and_change_the_pin(vm_pbx, sipp):  # noqa: F811
    """0 (options), 1 (unavailable greeting): a 1000 Hz tone after the beep, ended by #; then 4 and the new
    PIN twice; * * leaves. A second call opens the box with the new PIN."""
    pbx, _ = vm_pbx()
    keys = [
        (1.0, PIN + "#"),  # then "You have no messages" and the main menu
        (6.0, "0"),  # the options menu
        (8.0, "1"),  # "Record your greeting after the tone ..." (4.6 s) and the beep: recording from ~13 s
        (17.5, "#"),  # after 3 s of tone (14-17 s): "Your greeting has been recorded", the options menu
        (21.0, "4"),  # "Enter your new PIN ..."
        (22.0, NEW_PIN + "#"),  # "Enter your new PIN again ..." from ~23.8 s
        (25.5, NEW_PIN + "#"),  # "Your PIN has been changed", the options menu
        (31.0, "*"),  # the main menu
        (33.0, "*"),  # goodbye
    ]
    first = call(pbx, sipp, keys, 34.0, "options", tone=(14.0, 17.0))
    sipp.check(pbx, first)
    (line,) = pbx.wait_for(r"unavailable of default/1002 recorded \(\d+\.\d s, \w+\)")
    assert line.endswith(", digit)"), line
    pbx.wait_for(r"PIN of default/1002 changed")
    greeting = pbx.directory / "data" / "voicemail" / "default" / "1002" / "greetings" / "unavailable.wav"
    heard = read_wav(greeting)
    assert 2.5 <= heard.seconds <= 5.5, heard.seconds
    assert_hears(heard, 1000.0, 440.0, label="the greeting")
    assert NEW_PIN not in pbx.process.output

    second = call(pbx, sipp, [(1.0, NEW_PIN + "#"), (5.0, "*")], 6.0, "new_pin")
    sipp.check(pbx, second)
    pbx.wait_for(r"mailbox default/1002 opened from 127\.0\.0\.1", count=2)
    assert "wrong PIN" not in pbx.process.output
