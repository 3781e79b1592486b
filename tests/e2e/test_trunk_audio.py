"""Trunk calls with real audio: a baresip phone and a SIPp carrier hear each other through `twistd pbx`.

1. Out: extension 1005 on baresip dials 9 + a number; the SIPp carrier answers the PBX's INVITE with 407,
   then 200; it sees the Request-URI, caller ID and digest it should, and its tone reaches the phone.
2. In: the carrier calls a DID; baresip registered as 1001 answers; each hears the other's tone.
3. A PCMA-only carrier and a PCMU-only phone (baresip's account restricted to PCMU): each hears the other,
   the PBX converting A-law <-> µ-law in the relay; the carrier only ever gets PCMA, the phone PCMU. Both
   ways: the carrier calls the phone (3), and the phone calls out to a carrier that answers PCMA (1).

SIPp does the carrier's signalling; its RTP end is the test's own UDP socket (`CarrierRtp`), which sends a
1000 Hz tone to the PBX's port (written to a file by the scenario) one 20 ms packet every 20 ms, as a real
carrier would, and keeps what the PBX sends back. The phone plays a 440 Hz WAV and `sndfile` dumps what it
hears. Both sides are analysed with Goertzel (`tests/e2e/audio.py`): the other side's tone must dominate the
side's own tone and the noise floor. The phone hangs up (ctrl_tcp) and the carrier must get the PBX's BYE.

Every wait is on an event (a log line, a ctrl_tcp event, a file, packets, a dump's length) with a timeout.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from pbx.media.rtp import RtpPacket
from tests.e2e.audio import Audio, assert_hears, read_wav
from tests.e2e.baresip import Account, Baresip, write_tone_wav
from tests.e2e.harness import free_port
from tests.e2e.test_calls_baresip import heard_dump, wait_heard
from tests.e2e.test_calls_sipp import CallPbx, Sipp, SippSet, header, launch_pbx, sipp  # noqa: F401 (fixture)
from tests.e2e.test_dtmf_interworking_sipp import wait_for_port
from tests.e2e.test_transcode_sipp import packets, tone
from tests.e2e.test_trunk_calls_sipp import CALLER, INBOUND, check_digest, trunk

pytestmark = pytest.mark.e2e

PHONE_TONE = 440.0
CARRIER_TONE = 1000.0
HEARD_SECONDS = 2.0  # audio the phone must have heard (its dump's length) before it hangs up
CARRIER_PACKETS = 75  # 1.5 s of 20 ms packets the carrier must have received
SEND_SECONDS = 15  # the carrier's tone: at most this long (it stops at the hang-up)
CODECS = {0: ("PCMU", ulaw_encode, ulaw_decode), 8: ("PCMA", alaw_encode, alaw_decode)}

OUTBOUND = """
{% if call.dialed is match("9[0-9]{7,15}") and caller.may_call_out %}
dial trunk:carrier/{{ call.dialed[1:] | e164(country="1") }} timeout=20
{% endif %}
hangup 404
"""


class CarrierRtp:
    """The carrier's RTP end: a UDP socket on loopback sending a tone in one G.711 law, paced in real time
    (a 20 ms packet every 20 ms) to the PBX's port, and keeping every packet the PBX sends to it.

    One thread does both (sending on time, receiving in between); it stops at `stop()`, after
    `SEND_SECONDS`, or when the tone runs out, whichever comes first.
    """

    def __init__(self, payload_type: int, frequency: float = CARRIER_TONE) -> None:
        self.payload_type = payload_type
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        encode = CODECS[payload_type][1]
        self._tone = packets(encode(tone(frequency, 160 * 50 * SEND_SECONDS)), payload_type, 0xCA771E2)
        self.received: list[RtpPacket] = []
        self.sent = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, pbx_port: int) -> None:
        self._thread = threading.Thread(target=self._run, args=(pbx_port,), daemon=True)
        self._thread.start()

    def _run(self, pbx_port: int) -> None:
        next_send = time.monotonic()
        while not self._stop.is_set() and self.sent < len(self._tone):
            now = time.monotonic()
            if now >= next_send:
                self.sock.sendto(self._tone[self.sent], ("127.0.0.1", pbx_port))
                self.sent += 1
                next_send += 0.02
                continue
            self.sock.settimeout(next_send - now)
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            with self._cond:
                self.received.append(RtpPacket.parse(data))
                self._cond.notify_all()

    def wait_received(self, count: int, timeout: float = 15.0) -> list[RtpPacket]:
        """Wait until `count` packets arrived from the PBX; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the carrier got {len(self.received)} RTP packets, not {count}")
                self._cond.wait(min(left, 0.5))
            return list(self.received)

    def heard(self) -> Audio:
        """What the carrier heard: the payloads decoded with its own law (every packet must be in it)."""
        with self._cond:
            got = list(self.received)
        types = {p.payload_type for p in got}
        assert types == {self.payload_type}, f"the carrier got payload types {[p.payload_type for p in got]}"
        pcm = CODECS[self.payload_type][2](b"".join(p.payload for p in got))
        samples = memoryview(pcm).cast("h")
        return Audio(8000, [s / 32768 for s in samples])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()


@pytest.fixture
def carriers() -> Iterator[list[CarrierRtp]]:
    started: list[CarrierRtp] = []
    yield started
    for carrier in started:
        carrier.stop()


@pytest.fixture
def phones() -> Iterator[list[Baresip]]:
    started: list[Baresip] = []
    yield started
    for phone in started:
        phone.stop()


def start_phone(
    phones: list[Baresip], pbx: CallPbx, tmp_path: Path, user: str, *params: str
) -> tuple[Baresip, Path]:
    """baresip registered as `user` at the PBX, playing `PHONE_TONE`, its SIP messages in its output
    (`-s`); returns it and its dump directory."""
    account = Account(user, f"pass{user}", "127.0.0.1", pbx.sip, params=params)
    record_dir = tmp_path / f"heard_by_{user}"
    phone = Baresip(
        tmp_path / f"baresip_{user}",
        [account],
        audio_source=write_tone_wav(tmp_path / f"tone_{user}.wav", PHONE_TONE, seconds=30.0),
        record_dir=record_dir,
        ctrl=True,
        sip_trace=True,
    )
    phones.append(phone)
    phone.wait_registered(timeout=15)
    pbx.wait_for(rf"Registered {user}@default at ")
    return phone, record_dir


def phone_sdp(phone: Baresip) -> list[str]:
    """The `m=audio` lines of the SIP messages baresip sent and received, in order (its `-s` trace)."""
    return [line for line in phone.output.splitlines() if line.startswith("m=audio ")]


def codec_keys(carrier: CarrierRtp) -> list[str]:
    name = CODECS[carrier.payload_type][0]
    keys = {"rtp_port": str(carrier.port), "codec": str(carrier.payload_type), "codec_name": name}
    return [arg for key, value in keys.items() for arg in ("-key", key, value)]


def hear_each_other(
    pbx: CallPbx,
    sipp: SippSet,  # noqa: F811
    signalling: Sipp,
    carrier: CarrierRtp,
    phone: Baresip,
    record_dir: Path,
) -> None:
    """The call is up: the carrier sends its tone, both sides listen, the phone hangs up; the analysis."""
    carrier.start(wait_for_port(sipp.directory / "carrier_port.txt", signalling))
    control = phone.control()
    control.wait_event("CALL_ESTABLISHED", timeout=15)
    carrier.wait_received(CARRIER_PACKETS)
    wait_heard(record_dir, HEARD_SECONDS)
    assert control.hangup().get("ok"), phone.output[-3000:]
    control.wait_event("CALL_CLOSED", timeout=10)
    sipp.check(pbx, signalling)  # the carrier got the PBX's BYE and answered it
    carrier.stop()
    phone.stop()  # closes the dump (its WAV header gets its final length)
    heard_by_phone = read_wav(heard_dump(record_dir))
    assert heard_by_phone.rate == 8000 and heard_by_phone.seconds >= HEARD_SECONDS, heard_by_phone.seconds
    assert_hears(heard_by_phone, CARRIER_TONE, PHONE_TONE, label="the phone hears the carrier")
    assert_hears(carrier.heard(), PHONE_TONE, CARRIER_TONE, label="the carrier hears the phone")
    assert "Traceback" not in pbx.process.output


@pytest.mark.parametrize(
    ("payload_type", "phone_params"),
    [(0, ()), (8, ("audio_codecs=PCMU/8000/1",))],
    ids=["pcmu", "pcma-carrier-pcmu-phone"],
)
def test_a_phone_calls_out_through_a_challenging_carrier_and_hears_it(
    tmp_path: Path,
    sipp,  # noqa: F811
    carriers,
    phones,
    payload_type: int,
    phone_params: tuple[str, ...],
) -> None:
    port = free_port()
    pbx = launch_pbx(tmp_path / "pbx", OUTBOUND, CALLER + trunk("carrier", port))
    try:
        carrier = CarrierRtp(payload_type)
        carriers.append(carrier)
        signalling = sipp.start(
            "carrier", "trunk_audio_407_uas.xml", codec_keys(carrier), port=port, timeout=40
        ).wait_listening()
        phone, record_dir = start_phone(phones, pbx, tmp_path, "1005", *phone_params)
        assert phone.control().dial(f"sip:95551234567@127.0.0.1:{pbx.sip}").get("ok"), phone.output[-3000:]
        hear_each_other(pbx, sipp, signalling, carrier, phone, record_dir)
        call_id = pbx.ended(200, "normal")
        invites = signalling.requests("INVITE")
        assert len(invites) == 2, invites
        for invite in invites:
            assert invite.startswith(f"INVITE sip:+15551234567@127.0.0.1:{port};transport=udp SIP/2.0")
            (from_,) = header(invite, "From")
            assert from_.startswith('"ACME" <sip:1005@127.0.0.1>;tag='), from_
            assert header(invite, "P-Asserted-Identity") == ['"ACME" <sip:1005@127.0.0.1>']
            assert re.search(r"^m=audio \d+ RTP/AVP 0 8 101\r$", invite, re.MULTILINE), invite
        if phone_params:  # the phone offered PCMU alone and is answered in it (the PBX converts)
            offer, *answers = phone_sdp(phone)
            assert re.fullmatch(r"m=audio \d+ RTP/AVP 0( 101)?", offer) and answers, (offer, answers)
            assert all(re.fullmatch(r"m=audio \d+ RTP/AVP 0( 101)?", line) for line in answers), answers
        assert not header(invites[0], "Proxy-Authorization")
        check_digest(invites[1], "acct-carrier", "secret-carrier")
        cdr = pbx.wait_cdr(call_id)
        assert (cdr["caller"], cdr["answered_by"], cdr["hangup_by"]) == (
            "1005",
            "trunk:carrier/+15551234567",
            "caller",
        ), cdr
    finally:
        pbx.process.stop()


def inbound_call(
    tmp_path: Path,
    sipp: SippSet,  # noqa: F811
    carriers: list[CarrierRtp],
    phones: list[Baresip],
    payload_type: int,
    *phone_params: str,
) -> None:
    """The carrier (codec `payload_type` only) calls DID +15551230000, routed to 1001 on baresip."""
    config = trunk("carrier", free_port(), 'did_source = "request-uri"').replace(
        'networks = ["192.0.2.0/24"]', 'networks = ["127.0.0.1/32"]'
    )
    pbx = launch_pbx(tmp_path / "pbx", INBOUND, config)
    try:
        phone, record_dir = start_phone(phones, pbx, tmp_path, "1001", "answermode=auto", *phone_params)
        phone.control()  # ctrl_tcp connected before the call, so that no event is missed
        carrier = CarrierRtp(payload_type)
        carriers.append(carrier)
        csv = sipp.directory / "carrier.csv"
        csv.write_text("SEQUENTIAL\n+15551230000;+15559876543;+15551230000\n")
        signalling = sipp.start(
            "carrier",
            "trunk_audio_uac.xml",
            [f"127.0.0.1:{pbx.sip}", "-inf", str(csv), *codec_keys(carrier)],
            timeout=40,
        )
        hear_each_other(pbx, sipp, signalling, carrier, phone, record_dir)
        call_id = pbx.ended(200, "normal")
        (ok,) = signalling.responses(200)
        assert re.search(rf"^m=audio \d+ RTP/AVP {payload_type}\b", ok, re.MULTILINE), ok
        cdr = pbx.wait_cdr(call_id)
        assert (cdr["caller"], cdr["dialed"], cdr["answered_by"], cdr["hangup_by"]) == (
            "trunk:carrier/+15559876543",
            "+15551230000",
            "1001",
            "callee",
        ), cdr
    finally:
        pbx.process.stop()


def test_the_carrier_calls_a_did_and_the_phone_and_carrier_hear_each_other(
    tmp_path: Path,
    sipp,  # noqa: F811
    carriers,
    phones,
) -> None:
    inbound_call(tmp_path, sipp, carriers, phones, 0)


def test_a_pcma_only_carrier_and_a_pcmu_only_phone_hear_each_other(
    tmp_path: Path,
    sipp,  # noqa: F811
    carriers,
    phones,
) -> None:
    inbound_call(tmp_path, sipp, carriers, phones, 8, "audio_codecs=PCMU/8000/1")
    # The PBX offered the phone PCMA (the carrier's) then PCMU and telephone-event; the phone took PCMU.
    offer, *answers = phone_sdp(phones[0])  # the INVITE it got, then its 200 (and any retransmission)
    assert offer.endswith(" RTP/AVP 8 0 101") and answers, (offer, answers)
    assert all(re.fullmatch(r"m=audio \d+ RTP/AVP 0( 101)?", line) for line in answers), answers
