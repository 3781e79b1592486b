"""The IVR shown with SIPp: key presses by SIP INFO, RFC 4733 and in-band tones, recordings, early media.

Each test starts its own PBX (`launch_pbx` of the call tests) with the demo's auto-attendant
(`dialplans/default/ivr/main.j2`) or a dialplan of its own. A caller's SIPp scenario calls 500 and presses
1 (an INFO `application/dtmf-relay`, RTP telephone-events from SIPp's `dtmf_2833_1.pcap`, or a DTMF tone in
the audio when the caller offers no telephone-event); the PBX must put the call through to 1001, a SIPp UAS
registered as 1001, which then receives the INVITE and answers it. SIPp sends audio with
`play_pcap_audio` (it needs root, like raw sockets): the pcap files are written by the test (`write_rtp_pcap`,
G.711 u-law RTP in Ethernet/IPv4/UDP frames). A recording test sends a 1000 Hz tone and finds it in the WAV
the PBX wrote (Goertzel); another sends a tone then `#` by RFC 4733 (SIPp's `dtmf_2833_pound.pcap`), which
must end the recording and let the dialplan go on to its hang-up. Waits are on process exits and log lines
with timeouts; only SIPp's scenarios pause.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import struct
from datetime import datetime
from pathlib import Path

import pytest

from pbx.media.g711 import ulaw_encode
from tests.e2e.audio import assert_hears, read_wav
from tests.e2e.harness import REPO
from tests.e2e.test_calls_sipp import CallPbx, body, sdp_port, sipp, start_pbx  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="SIPp's play_pcap_audio needs root"),
]

IVR_TEMPLATE = (REPO / "dialplans" / "default" / "ivr" / "main.j2").read_text()
DEMO_MAIN = (REPO / "dialplans" / "default" / "main.j2").read_text()
RATE = 8000


# -- audio and pcap ------------------------------------------------------------------------------------------


def tone_pcm(frequencies: tuple[float, ...], seconds: float, amplitude: float = 0.3) -> bytes:
    """16-bit little-endian PCM at 8 kHz: the sum of sines (each `amplitude` / len), or silence for ()."""
    n = int(seconds * RATE)
    if not frequencies:
        return b"\x00\x00" * n
    scale = amplitude * 32767 / len(frequencies)
    return b"".join(
        struct.pack("<h", int(scale * sum(math.sin(2 * math.pi * f * i / RATE) for f in frequencies)))
        for i in range(n)
    )


DTMF_1 = (697.0, 1209.0)
LOOPBACK = bytes([127, 0, 0, 1])


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(path: Path, pcm: bytes, payload_type: int = 0, ssrc: int = 0x5EED) -> Path:
    """A pcap (Ethernet, IPv4, UDP) of 20 ms G.711 u-law RTP packets of `pcm`, timestamped 20 ms apart,
    for SIPp's `play_pcap_audio` (it rewrites the addresses and ports; the ones here are placeholders)."""
    ulaw = ulaw_encode(pcm)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for index, offset in enumerate(range(0, len(ulaw), 160)):
        payload = ulaw[offset : offset + 160]
        rtp = struct.pack(
            "!BBHII", 0x80, (0x80 if index == 0 else 0) | payload_type, index, index * 160, ssrc
        )
        udp_payload = rtp + payload
        udp = struct.pack("!HHHH", 40000, 40002, 8 + len(udp_payload), 0) + udp_payload
        ip_header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            index,
            0,
            64,
            17,
            0,
            bytes([127, 0, 0, 1]),
            bytes([127, 0, 0, 1]),
        )
        ip_header = ip_header[:10] + struct.pack("!H", _checksum(ip_header)) + ip_header[12:]
        frame = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00" + ip_header + udp
        micros = index * 20_000
        out.append(struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


# -- the PBX with the auto-attendant -------------------------------------------------------------------------


def with_ivr(pbx: CallPbx, template: str = IVR_TEMPLATE) -> CallPbx:
    """Install the demo's ivr/main.j2 (or `template`) in the test PBX's dialplans."""
    path = pbx.directory / "dialplans" / "default" / "ivr" / "main.j2"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template)
    return pbx


def put_through(pbx: CallPbx, sipp, scenario: str, extra_fields=(), pcap: bytes | Path | None = None) -> None:  # noqa: F811
    """1003 calls 500, presses 1 as the scenario does; the SIPp UAS registered as 1001 must get the call."""
    port = sipp.register(pbx, "1001")
    uas = sipp.uas("uas_1001", "call_uas.xml", "1001", port)
    if isinstance(pcap, Path):
        shutil.copy(pcap, sipp.directory / "ivr_audio.pcap")
    elif pcap is not None:
        (sipp.directory / "ivr_audio.pcap").write_bytes(pcap)
    uac = sipp.uac(pbx, scenario, "500", caller="1003", extra_fields=extra_fields)
    sipp.check(pbx, uac, uas)
    (invite,) = uas.requests("INVITE")
    assert pbx.rtp[0] <= sdp_port(invite) <= pbx.rtp[1], invite
    answer = uac.responses(200)[0]
    assert pbx.rtp[0] <= sdp_port(answer) <= pbx.rtp[1], answer
    (line,) = pbx.wait_for(r"Call \S+ ended: .*1003@default -> 500 answered by 1001")
    cdr = pbx.wait_cdr(line.split("Call ", 1)[1].split(" ", 1)[0])
    assert (cdr["caller"], cdr["dialed"], cdr["answered_by"], cdr["status"]) == (
        "1003",
        "500",
        "1001",
        200,
    ), cdr
    assert not uas.requests("INFO"), "a key press by INFO was passed on to the callee"


def test_sip_info_key_puts_the_caller_through(start_pbx, sipp):  # noqa: F811
    pbx = with_ivr(start_pbx(DEMO_MAIN))
    put_through(pbx, sipp, "ivr_uac_info.xml", extra_fields=("1",))


def test_rfc4733_key_from_sipp_puts_the_caller_through(start_pbx, sipp):  # noqa: F811
    pbx = with_ivr(start_pbx(DEMO_MAIN))
    put_through(pbx, sipp, "ivr_uac_rfc4733.xml", pcap=Path("/usr/share/sip-tester/dtmf_2833_1.pcap"))


def test_in_band_key_puts_the_caller_through(start_pbx, sipp, tmp_path):  # noqa: F811
    pbx = with_ivr(start_pbx(DEMO_MAIN))
    audio = tone_pcm((), 1.0) + tone_pcm(DTMF_1, 0.2, amplitude=0.5) + tone_pcm((), 1.0)
    put_through(pbx, sipp, "ivr_uac_pcap.xml", pcap=write_rtp_pcap(tmp_path / "dtmf1.pcap", audio))


# -- recording -----------------------------------------------------------------------------------------------


def test_recording_holds_the_audio_sent(start_pbx, sipp, tmp_path):  # noqa: F811
    """The caller sends 1 s of silence and 3 s of 1000 Hz, then hangs up: the WAV holds the tone."""
    pbx = start_pbx("record tests/tone beep=no maxlength=30 silence=0\nhangup\n")
    audio = tone_pcm((), 1.0) + tone_pcm((1000.0,), 3.0) + tone_pcm((), 0.5)
    (sipp.directory / "ivr_audio.pcap").write_bytes(write_rtp_pcap(tmp_path / "a.pcap", audio).read_bytes())
    uac = sipp.uac(pbx, "ivr_uac_pcap.xml", "700", caller="1003")
    sipp.check(pbx, uac)
    pbx.wait_for(r"Call \S+: recorded \S+tone\.wav \((\d+\.\d) s, closed\)")
    wav = pbx.directory / "data" / "recordings" / "default" / "tests" / "tone.wav"
    heard = read_wav(wav)
    assert heard.rate == 8000 and 3.0 <= heard.seconds <= 9.0, heard.seconds
    assert_hears(heard, 1000.0, 440.0, label="the recording")


def test_pound_ends_the_recording_and_the_dialplan_goes_on(start_pbx, sipp, tmp_path):  # noqa: F811
    """The caller sends 2 s of 1000 Hz, then `#` as RFC 4733 events (SIPp's dtmf_2833_pound.pcap) 2.5 s
    after the audio began. `maxlength` and `silence` are far away, so only the `#` can end the recording;
    the dialplan then plays a beep and hangs up: the caller gets the PBX's BYE within 5 s of the `#`."""
    pbx = start_pbx("record tests/pound beep=no maxlength=60 silence=30\nplay tone:beep\nhangup\n")
    audio = tone_pcm((1000.0,), 2.0)
    (sipp.directory / "ivr_audio.pcap").write_bytes(write_rtp_pcap(tmp_path / "a.pcap", audio).read_bytes())
    shutil.copy("/usr/share/sip-tester/dtmf_2833_pound.pcap", sipp.directory / "ivr_digit.pcap")
    uac = sipp.uac(pbx, "ivr_uac_record_digit.xml", "700", caller="1003")
    sipp.check(pbx, uac)
    assert len(uac.requests("BYE")) == 1, uac
    assert not [m for m in uac.messages("sent") if m.startswith("BYE ")], "the caller hung up itself"
    (line,) = pbx.wait_for(r"Call \S+: recorded \S+pound\.wav \(\d+\.\d s, \w+\)")
    assert line.endswith(", digit)"), line
    wav = pbx.directory / "data" / "recordings" / "default" / "tests" / "pound.wav"
    heard = read_wav(wav)
    assert heard.rate == 8000 and 1.5 <= heard.seconds <= 4.5, heard.seconds
    assert_hears(heard, 1000.0, 440.0, label="the recording")
    pbx.wait_for(r"Call \S+ ended: ")
    timeline = message_times(uac)
    acked = next(t for t, d, m in timeline if d == "sent" and m.startswith("ACK ") and "CSeq: 2 ACK" in m)
    bye = next(t for t, d, m in timeline if d == "received" and m.startswith("BYE "))
    # the scenario sends the '#' 2.5 s after its ACK (and fails without the BYE 5 s after that)
    assert 2.5 <= bye - acked <= 7.5, (bye - acked, uac)


def message_times(uac) -> list[tuple[float, str, str]]:
    """(POSIX time, "sent" | "received", the message's text) of each message in a SIPp message file."""
    text = uac.message_file.read_text(errors="replace")
    out = []
    stamp = r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n"
    pattern = stamp + r"\w+ message (sent|received)[^\n]*\n(.*?)(?=^-{20,} |\Z)"
    for match in re.finditer(pattern, text, flags=re.MULTILINE | re.DOTALL):
        when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        out.append((when, match.group(2), match.group(3).strip()))
    return out


# -- early media ---------------------------------------------------------------------------------------------


def test_early_media_is_a_183_with_the_relay_sdp_then_the_rejection(start_pbx, sipp):  # noqa: F811
    pbx = start_pbx("progress\nplay tone:ringback:2 noanswer=yes\nhangup 480\n")
    uac = sipp.uac(pbx, "ivr_uac_early.xml", "800", caller="1003")
    sipp.check(pbx, uac)
    (progress,) = uac.responses(183)
    assert "application/sdp" in progress and pbx.rtp[0] <= sdp_port(progress) <= pbx.rtp[1], progress
    assert "m=audio" in body(progress), progress
    call_id = pbx.ended(480)
    cdr = pbx.wait_cdr(call_id)
    assert (cdr["status"], cdr["answer"]) == (480, None), cdr
