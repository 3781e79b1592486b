"""SRTP through the PBX (RFC 3711, SDES keys RFC 4568): a baresip with `srtp.so` and `mediaenc=srtp-mand`
(it offers `RTP/SAVP` with `a=crypto`) calls a plain-RTP baresip; the PBX answers the caller with its own
key, offers the callee plain `RTP/AVP`, and its relay decrypts and re-encrypts; both phones hear the other's
tone (the analysis of `test_calls_baresip`).

The SRTP baresips signal over TLS (the keys never cross the wire in clear; no `allow_srtp_over_plain`);
only the SIPp caller of the capture test signals over UDP, with `allow_srtp_over_plain = true` on its
extension. The PBX's log shows keys masked in the SIP trace.
"""

from __future__ import annotations

import array
import base64
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pylibsrtp
import pytest

from pbx.media.g711 import ulaw_decode
from tests.e2e.audio import Audio, assert_hears, read_wav
from tests.e2e.baresip import Baresip, TonePhones
from tests.e2e.harness import free_port
from tests.e2e.test_calls_baresip import HEARD_SECONDS, heard_dump, wait_heard
from tests.e2e.test_calls_sipp import CallPbx, SippSet, launch_pbx, sipp  # noqa: F401 (fixture)
from tests.e2e.test_ivr_baresip import DEMO_MAIN, IVR_TEMPLATE, assert_speech, heard_seconds
from tests.e2e.test_ivr_baresip import wait_heard as wait_heard_seconds

pytestmark = pytest.mark.e2e

CALLER_TONE = 440.0
CALLEE_TONE = 1000.0
SIPP_SRTP_EXTENSION = (
    '[tenants.default.extensions.1005]\nname = "SRTP SIPp"\npassword = "pass1005"\n'
    "allow_srtp_over_plain = true\n\n"
)
SRTP_EXTENSION = (
    '[tenants.default.extensions.1004]\nname = "SRTP phone"\npassword = "pass1004"\n'
    'srtp = "optional"\n\n'
    '[tenants.default.extensions.1006]\nname = "SRTP only"\npassword = "pass1006"\n'
    'srtp = "mandatory"\n\n'
)


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[CallPbx]:
    started = launch_pbx(tmp_path / "pbx", extra=SRTP_EXTENSION)
    yield started
    started.process.stop()


def _phone(
    phones: TonePhones, pbx: CallPbx, user: str, tone: float, *params: str, srtp: bool = False
) -> Baresip:
    if not srtp:
        return phones.add(user, tone, *params)
    # SRTP phones signal over TLS: keys offered over plain signalling are refused (docs/security.md).
    return phones.add(
        user, tone, *params, port=pbx.ports["tls"], transport="tls", extra_config=["module srtp.so"]
    )


def test_srtp_phone_and_plain_phone_hear_each_other(pbx: CallPbx, tmp_path: Path) -> None:
    phones = TonePhones(tmp_path, pbx.sip)

    def phone(user: str, tone: float, *params: str, srtp: bool = False) -> Baresip:
        return _phone(phones, pbx, user, tone, *params, srtp=srtp)

    try:
        caller = phone("1004", CALLER_TONE, "mediaenc=srtp-mand", srtp=True)
        callee = phone("1002", CALLEE_TONE, "answermode=auto")
        phones.wait_registered()
        pbx.wait_for(r"Registered 1004@default at ")
        pbx.wait_for(r"Registered 1002@default at ")
        caller_ctl, callee_ctl = caller.control(), callee.control()
        assert caller_ctl.dial(f"sip:1002@127.0.0.1:{pbx.ports['tls']}").get("ok"), caller.output[-3000:]
        caller_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        callee_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        wait_heard(tmp_path / "heard_by_1004", HEARD_SECONDS)
        wait_heard(tmp_path / "heard_by_1002", HEARD_SECONDS)
        assert callee_ctl.hangup().get("ok"), callee.output[-3000:]
        caller_ctl.wait_event("CALL_CLOSED", timeout=10)
    finally:
        phones.stop()

    log = "\n".join(pbx.process.lines)
    assert "m=audio" in log and "RTP/SAVP" in log  # the trace shows the SRTP offer and answer ...
    assert "inline:***" in log  # ... with the keys masked
    heard_by_caller = read_wav(heard_dump(tmp_path / "heard_by_1004"))
    heard_by_callee = read_wav(heard_dump(tmp_path / "heard_by_1002"))
    assert_hears(heard_by_caller, CALLEE_TONE, CALLER_TONE, label="SRTP 1004 hears plain 1002")
    assert_hears(heard_by_callee, CALLER_TONE, CALLEE_TONE, label="plain 1002 hears SRTP 1004")


def test_srtp_phone_hears_the_ivr_then_a_plain_phone(tmp_path: Path) -> None:
    """An SRTP phone (baresip's best-effort `mediaenc=srtp`: RTP/AVP with a=crypto) dials 500: the PBX
    answers it with its own key and its prompt is heard (the IVR's endpoint speaks SRTP); key 1 puts it
    through to plain 1001, whom it then hears (the relay re-encrypts with the key the PBX gave in its answer
    to the INVITE)."""
    pbx = launch_pbx(tmp_path / "pbx", DEMO_MAIN, extra=SRTP_EXTENSION)
    path = pbx.directory / "dialplans" / "default" / "ivr" / "main.j2"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(IVR_TEMPLATE)
    phones = TonePhones(tmp_path, pbx.sip)
    try:
        callee = _phone(phones, pbx, "1001", CALLEE_TONE, "answermode=auto")
        caller = _phone(phones, pbx, "1004", CALLER_TONE, "mediaenc=srtp", srtp=True)
        phones.wait_registered()
        pbx.wait_for(r"Registered 1004@default at ")
        pbx.wait_for(r"Registered 1001@default at ")
        caller_ctl, callee_ctl = caller.control(), callee.control()
        heard = tmp_path / "heard_by_1004"
        assert caller_ctl.dial(f"sip:500@127.0.0.1:{pbx.ports['tls']}").get("ok"), caller.output[-3000:]
        caller_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        pressed_at = wait_heard_seconds(heard, 2.5)  # the welcome prompt
        assert caller_ctl.send_dtmf("1").get("ok"), caller.output[-3000:]
        callee_ctl.wait_event("CALL_ESTABLISHED", timeout=20)
        bridged_at = heard_seconds(heard)
        wait_heard_seconds(heard, bridged_at + 3.0)
        assert caller_ctl.hangup().get("ok")
        callee_ctl.wait_event("CALL_CLOSED", timeout=10)
    finally:
        phones.stop()
        pbx.process.stop()
    # baresip's mediaenc=srtp is "best effort" SRTP (RTP/AVP with a=crypto): the PBX's answer has its key too.
    log = "\n".join(pbx.process.lines)
    assert log.count("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:***") >= 2, "no SRTP answer"
    audio = read_wav(heard_dump(heard))
    assert_speech(audio.window(0.2, pressed_at), "the IVR prompt over SRTP")
    assert_hears(
        audio.window(bridged_at + 0.5, bridged_at + 3.0), CALLEE_TONE, CALLER_TONE, label="1001 after the IVR"
    )


class Capture:
    """A UDP socket standing for the SRTP phone's media: keeps every datagram the PBX sends it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port(tcp=False)))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.packets: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for _ in range(1000):  # bounded: at most 200 s of 0.2 s timeouts or packets
            if self._stop.is_set():
                return
            try:
                self.packets.append(self.sock.recv(2048))
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_captured_srtp_leg_is_encrypted_and_decrypts_with_the_sdes_key(
    tmp_path: Path,
    sipp: SippSet,  # noqa: F811
) -> None:
    """A SIPp caller offers RTP/SAVP with its key, its media address being a socket of the test; it dials
    the IVR. What the PBX sends there is SRTP: the payloads are not the G.711 the prompt is (they do not
    decode to speech), and libsrtp, keyed with the PBX's key from its SDP answer, turns them into the
    prompt. A replayed and a forged packet from the caller are dropped and counted."""
    pbx = launch_pbx(tmp_path / "pbx", DEMO_MAIN, extra=SIPP_SRTP_EXTENSION, keepalive="crlf")
    path = pbx.directory / "dialplans" / "default" / "ivr" / "main.j2"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(IVR_TEMPLATE)
    capture = Capture()
    key = base64.b64encode(os.urandom(30)).decode()
    try:
        csv = sipp.users_csv([("1005", "pass1005", "500", str(capture.port), key)], "srtp_users")
        uac = sipp.start("uac", "srtp_uac.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=20)
        # The PBX sends to a phone once it has heard from it (latching): send it SRTP with our key.
        for _ in range(200):
            if uac.responses(200) or uac.proc.poll() is not None:
                break
            threading.Event().wait(0.05)  # polling SIPp's message file for an event: the 200
        assert uac.responses(200), str(uac)
        port = int(re.search(r"^m=audio (\d+) ", uac.responses(200)[0], re.MULTILINE).group(1))  # type: ignore[union-attr]
        ours = pylibsrtp.Session(
            policy=pylibsrtp.Policy(key=base64.b64decode(key), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        for seq in range(1, 6):
            header = bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") + b"\0\0\0\7"
            packet = ours.protect(header + b"\xff" * 160)
            capture.sock.sendto(packet, ("127.0.0.1", port))
        capture.sock.sendto(packet, ("127.0.0.1", port))  # replayed
        forged = header[:2] + (9).to_bytes(2, "big") + header[4:] + os.urandom(170)
        capture.sock.sendto(forged, ("127.0.0.1", port))  # not from the key's holder
        sipp.check(pbx, uac)
        pbx.wait_for(
            r"SRTP from side a dropped 2 RTP and 0 RTCP packets \(1 replayed, 1 failing authentication\)"
        )
    finally:
        capture.close()
        pbx.process.stop()
    (answer,) = uac.responses(200)[:1]
    assert re.search(r"^m=audio \d+ RTP/SAVP ", answer, flags=re.MULTILINE), answer
    match = re.search(r"^a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]+)", answer, re.MULTILINE)
    assert match is not None, answer
    pbx_key = base64.b64decode(match.group(1))
    assert pbx_key != base64.b64decode(key)  # each side sends with its own key (RFC 4568)
    packets = [p for p in capture.packets if len(p) > 12 and p[1] & 0x7F == 0]  # RTCP aside
    assert len(packets) >= 100, len(capture.packets)  # 2 s of prompt at 50 packets/s

    def speech_level(payload: bytes) -> float:
        pcm = array.array("h")
        pcm.frombytes(ulaw_decode(payload))
        return sum(abs(x) for x in pcm) / (32768.0 * len(pcm))

    session = pylibsrtp.Session(
        policy=pylibsrtp.Policy(key=pbx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
    )
    plain = [session.unprotect(p) for p in packets]
    for raw, clear in zip(packets, plain, strict=True):
        assert len(raw) == len(clear) + 10  # the 80-bit authentication tag
        assert raw[:12] == clear[:12] and raw[12 : len(clear)] != clear[12:]  # the header in clear only
    # The ciphertext decoded as G.711 is uniform noise (mean |sample| of random
    # u-law codes: about 0.18); the prompt is quiet speech far below it.
    cipher_level = sum(speech_level(p[12:-10]) for p in packets) / len(packets)
    clear_level = sum(speech_level(p[12:]) for p in plain) / len(plain)
    assert cipher_level > 0.12, cipher_level
    assert clear_level < 0.5 * cipher_level, (clear_level, cipher_level)
    pcm = array.array("h")
    pcm.frombytes(ulaw_decode(b"".join(p[12:] for p in plain)))
    assert_speech(Audio(8000, [x / 32768.0 for x in pcm]).window(0.2, 2.0), "the decrypted prompt")


def test_plain_phone_calls_an_srtp_only_phone(pbx: CallPbx, tmp_path: Path) -> None:
    """The other way round: plain 1002 calls 1006 (`srtp = "mandatory"`): the PBX offers 1006 RTP/SAVP with
    its own keys and answers 1002 with plain RTP; both hear each other."""
    phones = TonePhones(tmp_path, pbx.sip)
    try:
        caller = _phone(phones, pbx, "1002", CALLER_TONE)
        callee = _phone(phones, pbx, "1006", CALLEE_TONE, "answermode=auto", "mediaenc=srtp-mand", srtp=True)
        phones.wait_registered()
        pbx.wait_for(r"Registered 1002@default at ")
        pbx.wait_for(r"Registered 1006@default at ")
        caller_ctl, callee_ctl = caller.control(), callee.control()
        assert caller_ctl.dial(f"sip:1006@127.0.0.1:{pbx.sip}").get("ok"), caller.output[-3000:]
        caller_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        callee_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        wait_heard(tmp_path / "heard_by_1002", HEARD_SECONDS)
        wait_heard(tmp_path / "heard_by_1006", HEARD_SECONDS)
        assert caller_ctl.hangup().get("ok"), caller.output[-3000:]
        callee_ctl.wait_event("CALL_CLOSED", timeout=10)
    finally:
        phones.stop()
    assert_hears(
        read_wav(heard_dump(tmp_path / "heard_by_1002")), CALLEE_TONE, CALLER_TONE, label="1002 hears 1006"
    )
    assert_hears(
        read_wav(heard_dump(tmp_path / "heard_by_1006")), CALLER_TONE, CALLEE_TONE, label="1006 hears 1002"
    )
