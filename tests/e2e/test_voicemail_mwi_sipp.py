"""Message waiting over real voicemail boxes, shown with SIPp against a live PBX (issue 11 item 4).

The boxes' messages are put in place before the PBX starts, as a PBX that ran before would have left them:
index rows in its SQLite database (the store's own schema and statements) with their WAVs, and, for the
restart test, a WAV with its sidecar but no row (the PBX died between the recorder's rename and the commit)
and a half recording (a temp file). Then SIPp subscribes to message-summary with digest authentication:

- the first NOTIFY says `Messages-Waiting: yes` and `Voice-Message: 2/1`; an in-dialog refresh gets another
  with the same counts; the short refreshed subscription expires (`terminated;reason=timeout`);
- a box without messages says `no` and `0/0`;
- an unknown event package gets `489 Bad Event` (after the digest exchange) naming `message-summary`;
- tenants never cross: the other tenant's 1001 sees its own box (3/0), and default's 1001 cannot subscribe
  at the other tenant's domain (its credentials do not open that realm: 401 again);
- a phone of a box with `unsolicited_notify` that only REGISTERs gets an out-of-dialog NOTIFY with the
  counts right after its 200 (a plain UDP socket plays the phone: SIPp drops requests of unknown Call-IDs);
- after `kill -9` and a restart the counts are the same (the adopted message got its row before the PBX
  said it was ready), the half recording is gone, and `pbx voicemail list` shows the box.

Every wait is on an event (SIPp's exit, a log line) with a timeout; ports are free ones.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx.media.wav import write_pcm_atomic
from pbx.sip.digest import DigestChallenge, answer_challenge
from pbx.sip.events.message_summary import MessageSummary
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.store import sqlite as sqlite_store
from pbx.store import sqlite_voicemail
from pbx.store.records import VoicemailMessage
from tests.e2e.harness import PbxProcess, free_port, run_pbx_cli, run_sipp, write_config

SCENARIOS = Path(__file__).parent / "scenarios"
pytestmark = pytest.mark.e2e
NOW = 1_765_000_000.0

EXTRA = """
[mwi]
min_expires = 1
max_expires = 120
default_expires = 60

[tenants.default.mailboxes.1001]
pin = "1001"

[tenants.default.mailboxes.1002]
pin = "1002"
unsolicited_notify = true

[tenants.default.mailboxes.1003]
pin = "1003"

[tenants.acme]
domain = "acme.test"

[tenants.acme.extensions.1001]
password = "acme1001"

[tenants.acme.mailboxes.1001]
pin = "4321"
"""


def seed(data_dir: Path, tenant: str, box: str, folders: list[str]) -> list[VoicemailMessage]:
    """Messages with rows and WAVs (one second of silence each), as the PBX leaves them."""
    directory = data_dir / "voicemail" / tenant / box
    directory.mkdir(parents=True, exist_ok=True)
    database = data_dir / "pbx.sqlite3"
    conn = sqlite3.connect(database)
    sqlite_store._migrate(conn, database)
    messages = []
    for index, folder in enumerate(folders):
        id = f"{int((NOW + index) * 1000):013d}-{index:06x}"
        write_pcm_atomic(directory / f"{id}.wav", b"\0\0" * 8000)
        message = VoicemailMessage(
            tenant=tenant,
            mailbox=box,
            id=id,
            folder=folder,
            caller_number="1000",
            received_at=NOW + index,
            duration=1.0,
            audio=f"voicemail/{tenant}/{box}/{id}.wav",
        )
        conn.execute(sqlite_voicemail._UPSERT, sqlite_voicemail._row(message))
        messages.append(message)
    conn.commit()
    conn.close()
    return messages


def scenario(tmp_path: Path, template: str, **values: str) -> Path:
    text = (SCENARIOS / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", value)
    path = tmp_path / template.removesuffix(".in").replace(
        ".xml", f"-{len(list(tmp_path.glob('*.xml')))}.xml"
    )
    path.write_text(text)
    return path


def sipp(
    process: PbxProcess,
    ports: dict,
    tmp_path: Path,
    xml: Path,
    user: str,
    password: str,
    t: str = "u1",
    *,
    host: str = "127.0.0.1",
) -> None:
    """Run one SIPp call of `xml` as `user` (the digest uri is the Request-URI, `sip:USER@HOST`)."""
    csv = tmp_path / f"{xml.stem}.csv"
    csv.write_text(f"SEQUENTIAL\n{user};[authentication username={user} password={password}]\n")
    error_file = tmp_path / f"{xml.stem}_err.log"
    result = run_sipp(
        [
            f"127.0.0.1:{ports['sip']}",
            "-sf", str(xml),
            "-inf", str(csv),
            "-auth_uri", f"{user}@{host}",
            "-t", t,
            "-i", "127.0.0.1",
            "-p", str(free_port()),
            "-m", "1",
            "-timeout", "20s",
            "-timeout_error",
            "-trace_err",
            "-error_file", str(error_file),
        ],
        timeout=30,
        cwd=tmp_path,
    )  # fmt: skip
    errors = error_file.read_text() if error_file.exists() else ""
    assert result.returncode == 0, (
        f"SIPp failed ({result.returncode}):\n{result.stdout[-3000:]!r}\n{errors[-3000:]}\n"
        f"{process.output[-4000:]}"
    )


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[tuple[PbxProcess, dict]]:
    """A PBX whose default 1001 holds 2 new and 1 old message, 1002 (unsolicited NOTIFYs) 1 new and 1 old,
    acme's 1001 3 new, and 1003 none."""
    ports = write_config(tmp_path, extra=EXTRA)
    seed(tmp_path / "data", "default", "1001", ["new", "old", "new"])
    seed(tmp_path / "data", "default", "1002", ["old", "new"])
    seed(tmp_path / "data", "acme", "1001", ["new", "new", "new"])
    process = PbxProcess(ports["path"])
    try:
        process.wait_ready(ports["listeners"])
        yield process, ports
    finally:
        process.stop()


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_initial_notify_refresh_and_expiry_with_the_counts(pbx, tmp_path, transport):
    process, ports = pbx
    assert "Voicemail: 8 messages in 3 boxes (0 recovered)" in process.output
    xml = scenario(tmp_path, "mwi_counts.xml.in", host="127.0.0.1", waiting="yes", counts="2/1")
    sipp(process, ports, tmp_path, xml, "1001", "pass1001", transport)
    empty = scenario(tmp_path, "mwi_counts.xml.in", host="127.0.0.1", waiting="no", counts="0/0")
    sipp(process, ports, tmp_path, empty, "1003", "pass1003", transport)


def test_unknown_event_gets_489(pbx, tmp_path):
    process, ports = pbx
    xml = scenario(
        tmp_path,
        "mwi_refused.xml.in",
        host="127.0.0.1",
        event="presence",
        final="489",
        header="Allow-Events:",
    )
    sipp(process, ports, tmp_path, xml, "1001", "pass1001")
    process.wait_for(r"Allow-Events: .*message-summary")


def test_subscriptions_never_cross_tenants(pbx, tmp_path):
    process, ports = pbx
    own = scenario(tmp_path, "mwi_counts.xml.in", host="acme.test", waiting="yes", counts="3/0")
    sipp(process, ports, tmp_path, own, "1001", "acme1001", host="acme.test")
    refused = scenario(
        tmp_path,
        "mwi_refused.xml.in",
        host="acme.test",
        event="message-summary",
        final="401",
        header="WWW-Authenticate:",
    )
    sipp(process, ports, tmp_path, refused, "1001", "pass1001", host="acme.test")
    process.wait_for(r"Failed SUBSCRIBE authentication for 1001@acme from 127\.0\.0\.1 \(bad_credentials\)")


def receive(phone: socket.socket) -> Request | Response:
    phone.settimeout(10)
    message = parse_message(phone.recv(65535))
    assert isinstance(message, Request | Response)
    return message


def register(phone: socket.socket, server: tuple[str, int], user: str, password: str) -> Response:
    """REGISTER from `phone`, answering the 401 (MD5); returns the final response."""
    host, port = phone.getsockname()
    uri = f"sip:{server[0]}"
    authorization = ""
    for cseq in (1, 2):
        phone.sendto(
            (
                f"REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bKreg{cseq};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:{user}@{server[0]}>;tag=reg{user}\r\n"
                f"To: <sip:{user}@{server[0]}>\r\nCall-ID: reg-{user}@{host}\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{user}@{host}:{port}>\r\nExpires: 600\r\n{authorization}"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            server,
        )
        response = receive(phone)
        assert isinstance(response, Response)
        if response.status != 401:
            return response
        (md5,) = [
            c
            for c in map(DigestChallenge.parse, response.headers.get_all("WWW-Authenticate"))
            if c.algorithm == "MD5"
        ]
        credentials = answer_challenge(md5, method="REGISTER", uri=uri, username=user, password=password)
        authorization = f"Authorization: {credentials}\r\n"
    return response


def test_unsolicited_notify_after_registration(pbx):
    process, ports = pbx
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        assert register(phone, ("127.0.0.1", ports["sip"]), "1002", "pass1002").status == 200
        notify = receive(phone)
        assert isinstance(notify, Request) and notify.method == "NOTIFY"
        assert notify.headers.get("Event") == "message-summary"
        assert notify.headers.get("Subscription-State") == "active"
        assert str(notify.uri) == f"sip:1002@127.0.0.1:{phone.getsockname()[1]}"
        summary = MessageSummary.parse(notify.body)
        assert summary.waiting and str(summary.count("voice")) == "1/1"
        phone.sendto(notify.response(200).to_bytes(), ("127.0.0.1", ports["sip"]))
    process.wait_for(r"CSeq: 1 NOTIFY", count=2)  # the NOTIFY and its 200, in the trace


def test_messages_survive_kill_9_and_restart(tmp_path):
    ports = write_config(tmp_path, extra=EXTRA)
    data_dir = tmp_path / "data"
    seed(data_dir, "default", "1002", ["new"])
    box = data_dir / "voicemail" / "default" / "1002"
    acknowledged = box / "1765000100000-00aaaa.wav"  # renamed by the recorder, the PBX died before the row
    write_pcm_atomic(acknowledged, b"\0\0" * 16000)
    sidecar = {"caller_number": "1003", "caller_name": "Carol", "call_id": "c1", "received_at": NOW + 100}
    acknowledged.with_suffix(".json").write_text(json.dumps(sidecar))
    half = box / ".tmp-killed.wav"
    half.write_bytes(b"RIFF\x00\x00")
    process = PbxProcess(ports["path"])
    try:
        process.wait_ready(ports["listeners"])
        output = process.output
        recovered = output.index("Voicemail: 2 messages in 1 boxes (1 recovered)")
        assert recovered < output.index("PBX ready: "), "recovery ends before the PBX says it is ready"
        assert not half.exists() and not acknowledged.with_suffix(".json").exists()
        xml = scenario(tmp_path, "mwi_counts.xml.in", host="127.0.0.1", waiting="yes", counts="2/0")
        sipp(process, ports, tmp_path, xml, "1002", "pass1002")
        process.kill9()
        listing = run_pbx_cli("voicemail", "list", "1002", "--config", str(ports["path"]))
        assert listing.returncode == 0, listing.stderr
        assert "2 new, 0 old" in listing.stdout and '"Carol" <1003>' in listing.stdout
        process = PbxProcess(ports["path"])
        process.wait_ready(ports["listeners"])
        assert "Voicemail: 2 messages in 1 boxes (0 recovered)" in process.output
        again = scenario(tmp_path, "mwi_counts.xml.in", host="127.0.0.1", waiting="yes", counts="2/0")
        sipp(process, ports, tmp_path, again, "1002", "pass1002")
    finally:
        process.stop()
