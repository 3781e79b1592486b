"""Tenants never cross, shown with SIPp against a live `twistd pbx` (issue 14 item 5, docs/security.md).

One PBX for the file: tenants `a` (a.example) and `b` (b.example) both have extensions 1001 and 1002 (each
with its own password) and a mailbox 1002 (b's holds 3 new messages, a's 1, put in place before the start).
Every SIPp runs on 127.0.0.1 and names the tenant by its domain in the Request-URI, as phones of hosted
tenants do. The loopback is a trusted network, so that the refused attempts never block the source.

- REGISTER: a's 1001 registers at a.example, b's 1001 at b.example; a's 1001 with a's password at
  b.example gets 401 again and b's binding is untouched.
- INVITE: a's 1001 calling 1002 reaches a's 1002 (the To naming b.example changes nothing), b's 1001 reaches
  b's 1002; a's 1001 calling 1002 at b.example, or b's voicemail (*97 at b.example), gets 407 again and
  nothing rings. The CDRs carry the caller's tenant.
- SUBSCRIBE (message-summary): each 1002 sees its own tenant's box (1 new for a, 3 new for b); a's 1002 at
  b.example gets 401 again.
- Voicemail: a's 1002 unregistered, a's 1001's call goes to a's box 1002, never to b's.

Every wait is on an event (SIPp's exit, a log line) with a timeout; ports are free ones.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PbxProcess, free_port, run_sipp, write_config
from tests.e2e.test_calls_sipp import CallPbx, SippSet, rtp_range, sipp  # noqa: F401 (the fixture)
from tests.e2e.test_voicemail_deposit import greeting_seconds
from tests.e2e.test_voicemail_mwi_sipp import seed

SCENARIOS = Path(__file__).parent / "scenarios"
pytestmark = pytest.mark.e2e

PASSWORDS = {("a", "1001"): "a-secret-1001", ("a", "1002"): "a-secret-1002"}
PASSWORDS |= {("b", "1001"): "b-secret-1001", ("b", "1002"): "b-secret-1002"}
DOMAIN = {"a": "a.example", "b": "b.example"}

TENANTS = """
[security]
trusted_networks = ["127.0.0.0/8"]

[mwi]
min_expires = 1
max_expires = 120
default_expires = 60
""" + "".join(
    f'\n[tenants.{t}]\ndomain = "{DOMAIN[t]}"\n'
    + "".join(
        f'\n[tenants.{t}.extensions.{n}]\nname = "{t.upper()} {n}"\npassword = "{PASSWORDS[(t, n)]}"\n'
        for n in ("1001", "1002")
    )
    + f'\n[tenants.{t}.mailboxes.1002]\npin = "{"2468" if t == "a" else "1357"}"\n'
    for t in ("a", "b")
)

DIALPLAN = """
{% if call.dialed in extensions %}
dial {{ call.dialed }} timeout=10
voicemail {{ call.dialed }} if=noanswer|unavailable|busy
hangup
{% elif call.dialed == "*97" %}
voicemailmain
{% else %}
hangup 404
{% endif %}
"""


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallPbx]:
    """The PBX of the module docstring, its boxes seeded and its tenants' dialplans written before it starts
    (as `launch_pbx` does for the default tenant)."""
    directory = tmp_path_factory.mktemp("tenants")
    seed(directory / "data", "a", "1002", ["new"])
    seed(directory / "data", "b", "1002", ["new", "new", "new"])
    for tenant in ("default", "a", "b"):
        path = directory / "dialplans" / tenant / "main.j2"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(DIALPLAN)
    low, high = rtp_range()
    extra = f'[media]\nrtp_port_min = {low}\nrtp_port_max = {high}\n\n[registrar]\nkeepalive = "crlf"\n'
    ports = write_config(directory, ipv6=False, extra=extra + TENANTS)
    started = CallPbx(PbxProcess(ports["path"]), ports, directory, (low, high))
    try:
        started.process.wait_ready(ports["listeners"])
        started.wait_for(r"Location service loaded \d+ bindings")
        yield started
    finally:
        started.process.stop()


def template(directory: Path, name: str, **values: str) -> Path:
    """A scenario template of tests/e2e/scenarios with its @KEY@s filled in, written to `directory`."""
    text = (SCENARIOS / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", value)
    path = directory / f"{name.removesuffix('.xml.in')}-{len(list(directory.glob('*.xml')))}.xml"
    path.write_text(text)
    return path


def credentials(tenant: str, extension: str) -> str:
    return f"[authentication username={extension} password={PASSWORDS[(tenant, extension)]}]"


def run(
    pbx: CallPbx,
    directory: Path,
    xml: Path,
    fields: list[str],
    auth_uri: str,
    port: int | None = None,
) -> None:
    """One SIPp call of `xml` (its CSV row `fields`), bounded; asserts it went as the scenario says."""
    csv = directory / f"{xml.stem}.csv"
    csv.write_text("SEQUENTIAL\n" + ";".join(fields) + "\n")
    errors = directory / f"{xml.stem}_errors.log"
    result = run_sipp(
        [
            f"127.0.0.1:{pbx.sip}",
            "-sf", str(xml),
            "-inf", str(csv),
            "-auth_uri", auth_uri,
            "-i", "127.0.0.1",
            "-p", str(port or free_port()),
            "-mp", str(free_port()),
            "-m", "1",
            "-timeout", "20s",
            "-timeout_error",
            "-trace_err",
            "-error_file", str(errors),
        ],
        timeout=40,
        cwd=directory,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"SIPp {xml.name} failed ({result.returncode}):\n{result.stdout[-2000:]!r}\n"
        f"{errors.read_text()[-3000:] if errors.exists() else ''}\n{pbx.tail()}"
    )


def register(pbx: CallPbx, directory: Path, tenant: str, extension: str, port: int) -> None:
    xml = template(directory, "tenant_register.xml.in", host=DOMAIN[tenant], final="200")
    run(pbx, directory, xml, [extension, credentials(tenant, extension)], DOMAIN[tenant], port)
    pbx.wait_for(rf"Registered {extension}@{tenant} at sip:{extension}@127\.0\.0\.1:{port}\b")


def test_register_with_another_tenants_password_is_refused(pbx: CallPbx, tmp_path: Path) -> None:
    own_a, own_b, attacker = free_port(), free_port(), free_port()
    register(pbx, tmp_path, "a", "1001", own_a)
    register(pbx, tmp_path, "b", "1001", own_b)
    xml = template(tmp_path, "tenant_register.xml.in", host="b.example", final="401")
    run(pbx, tmp_path, xml, ["1001", credentials("a", "1001")], "b.example", attacker)
    pbx.wait_for(r"Failed REGISTER authentication for 1001@b from 127\.0\.0\.1")
    assert not re.search(rf"Registered 1001@\w+ at sip:1001@127\.0\.0\.1:{attacker}\b", pbx.process.output)


def test_calls_stay_in_their_tenant(pbx: CallPbx, sipp: SippSet, tmp_path: Path) -> None:  # noqa: F811
    """Each 1001 reaches its own tenant's 1002 (a To naming the other domain changes nothing); naming
    the other tenant's domain in the Request-URI, for an extension or its voicemail, gets 407 again."""
    port_a, port_b = free_port(), free_port()
    register(pbx, tmp_path, "a", "1002", port_a)
    register(pbx, tmp_path, "b", "1002", port_b)
    callee_a = sipp.start("callee_a", "call_uas.xml", ["-s", "1002"], port=port_a, timeout=30, calls=2)
    callee_b = sipp.start("callee_b", "call_uas.xml", ["-s", "1002"], port=port_b, timeout=30)
    callee_a.wait_listening()
    callee_b.wait_listening()
    for tenant, to in (("a", "a.example"), ("b", "b.example"), ("a", "b.example")):
        xml = template(tmp_path, "tenant_call.xml.in", host=DOMAIN[tenant], to=to, pause="100")
        run(pbx, tmp_path, xml, ["1001", credentials(tenant, "1001"), "1002"], DOMAIN[tenant])
    sipp.check(pbx, callee_a, callee_b)
    for invite in callee_a.requests("INVITE"):
        assert "@a.example" in invite.split("\r\n", 1)[0] or "To: <sip:1002@a.example>" in invite
        assert "b.example" not in invite, invite
    (invite_b,) = callee_b.requests("INVITE")
    assert "a.example" not in invite_b, invite_b
    for dialed in ("1002", "*97"):
        refused = template(tmp_path, "tenant_call_refused.xml.in", host="b.example")
        run(pbx, tmp_path, refused, ["1001", credentials("a", "1001"), dialed], f"{dialed}@b.example")
    pbx.wait_for(r"Failed INVITE authentication for 1001@b from 127\.0\.0\.1", count=2)
    # CDRs are written just after a call's "ended" line: wait for the three answered calls'.
    deadline = time.monotonic() + 10
    rows = [row for row in pbx.cdrs() if row["status"] == 200]
    while len(rows) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the database the PBX writes; bounded by the deadline
        rows = [row for row in pbx.cdrs() if row["status"] == 200]
    assert sorted((row["tenant"], row["caller"], row["answered_by"]) for row in rows[-3:]) == [
        ("a", "1001", "1002"),
        ("a", "1001", "1002"),
        ("b", "1001", "1002"),
    ]
    assert not [row for row in pbx.cdrs() if row["dialed"] == "*97"]  # b's voicemail never answered


def test_message_summary_shows_the_own_tenants_box_only(pbx: CallPbx, tmp_path: Path) -> None:
    for tenant, counts in (("a", "1/0"), ("b", "3/0")):
        xml = template(tmp_path, "mwi_counts.xml.in", host=DOMAIN[tenant], waiting="yes", counts=counts)
        run(pbx, tmp_path, xml, ["1002", credentials(tenant, "1002")], f"1002@{DOMAIN[tenant]}")
    refused = template(
        tmp_path,
        "mwi_refused.xml.in",
        host="b.example",
        event="message-summary",
        final="401",
        header="WWW-Authenticate:",
    )
    run(pbx, tmp_path, refused, ["1002", credentials("a", "1002")], "1002@b.example")
    pbx.wait_for(r"Failed SUBSCRIBE authentication for 1002@b from 127\.0\.0\.1")


def test_voicemail_goes_to_the_callers_tenants_box(pbx: CallPbx, tmp_path: Path) -> None:
    """a's 1001 calls a's 1003-less 1002 while nobody answers there: a's box 1002 takes the message."""
    pause = int((greeting_seconds("1002") + 1.5) * 1000)
    xml = template(tmp_path, "tenant_call.xml.in", host="a.example", to="a.example", pause=str(pause))
    before = len(re.findall(r"voicemail \w+/1002: recording", pbx.process.output))
    unregister_1002(pbx, tmp_path)
    run(pbx, tmp_path, xml, ["1001", credentials("a", "1001"), "1002"], "a.example")
    lines = pbx.wait_for(r"voicemail \w+/1002: recording", count=before + 1)
    assert lines[-1].split("voicemail ", 1)[1].startswith("a/1002"), lines[-1]


def unregister_1002(pbx: CallPbx, directory: Path) -> None:
    """a's 1002 may be registered by an earlier test: nobody listens there any more, so its binding would
    ring into the void for 10 s; REGISTER with Expires 0 for it instead (a fresh contact at a free port
    replaced by nothing would leave the old one)."""
    if "Registered 1002@a at" not in pbx.process.output:
        return
    xml = template(directory, "tenant_register.xml.in", host="a.example", final="200")
    text = (
        xml.read_text()
        .replace("Expires: 600", "Expires: 0")
        .replace("<sip:[field0]@[local_ip]:[local_port];transport=[transport]>", "*")
    )
    xml.write_text(text)
    run(pbx, directory, xml, ["1002", credentials("a", "1002")], "a.example")
    pbx.wait_for(r"Unregistered all contacts of 1002@a")
