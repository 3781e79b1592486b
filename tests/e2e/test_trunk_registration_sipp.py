"""A PBX trunk registering to SIPp as the carrier, over real UDP on loopback (`twistd pbx` as a subprocess).

SIPp (tests/e2e/scenarios/trunk_registrar_uas.xml) challenges the first REGISTER with a 401, checks the
digest of the second with `<verifyauth>` and grants 2 s, so the PBX refreshes within the test (checked again,
nonce-count 2); then SIPp exits: the carrier is gone. The PBX (T1 = 50 ms, so a REGISTER times out after
3.2 s; `retry_interval = 1`) then fails with 408 and retries with a growing back-off, which its log lines and
`pbx trunks status` show. Exit code 0 of SIPp means every digest it checked was right; this test also checks
the requests' Call-ID, CSeq, Contact and Authorization from SIPp's trace.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.harness import PbxProcess, run_pbx_cli, write_config
from tests.e2e.test_calls_sipp import Sipp, header
from tests.e2e.test_client_auth_sipp import check_md5_digest

SCENARIOS = Path(__file__).parent / "scenarios"
pytestmark = pytest.mark.e2e


def trunk_config(directory: Path, trunk: str, *, t1: float = 0.05) -> dict:
    """A demo PBX config (tests/e2e/harness.py) with `[sip] t1` and the trunk table(s) `trunk` appended."""
    ports = write_config(directory, extra=trunk)
    path: Path = ports["path"]
    text = path.read_text()
    path.write_text(text.replace("[[sip.listen]]", f"[sip]\nt1 = {t1}\n\n[[sip.listen]]", 1))
    return ports


def carrier_trunk(port: int, name: str = "carrier", **settings: object) -> str:
    """A `[tenants.default.trunks.NAME]` table for a carrier on 127.0.0.1:`port` (account 1555/secret)."""
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "transport": "udp",
        "username": "1555",
        "password": "secret",
        "register": True,
        "register_expires": 60,
        "retry_interval": 1,
    }
    values.update(settings)
    lines = [f"[tenants.default.trunks.{name}]"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, list | tuple):
            lines.append(f"{key} = [{', '.join(repr(str(v)).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def trunk_status(config: Path, trunk: str, state: str, timeout: float = 10.0) -> tuple[list[str], str]:
    """Wait until `pbx trunks status CONFIG` shows `trunk` ("tenant/name") in `state` (the PBX writes its
    status file half a second after a change); that row's words and the whole output."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.2) + 1):
        result = run_pbx_cli("trunks", "status", str(config))
        assert result.returncode == 0, result.stderr
        for line in result.stdout.splitlines()[1:-1]:
            words = line.split()
            if words[0] == trunk and words[1] == state:
                return words, result.stdout
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling the status file for an event: the state change
    raise AssertionError(f"{trunk} is not {state} after {timeout} s:\n{result.stdout}")


def test_register_through_a_challenge_refresh_then_back_off(tmp_path: Path) -> None:
    sipp = Sipp("carrier", SCENARIOS / "trunk_registrar_uas.xml", [], tmp_path, timeout=30).wait_listening()
    ports = trunk_config(tmp_path, carrier_trunk(sipp.port))
    pbx = PbxProcess(ports["path"])
    try:
        pbx.wait_ready(ports["listeners"])
        contact = f"<sip:1555@127.0.0.1:{ports['sip']}>"
        pbx.wait_for(
            rf"Trunk default/carrier: registered \(200 OK\); Contact {re.escape(contact)} "
            rf"at udp 127\.0\.0\.1:{sipp.port}"
        )
        assert sipp.wait() == 0, str(sipp)  # the refresh was checked too; now the carrier is gone
        pbx.wait_for(r"Trunk default/carrier: failed \(408 timeout\); next try in \d+ s", timeout=15)
        retries = pbx.wait_for(
            r"Registration of sip:1555@127\.0\.0\.1 failed: 408 timeout; retry in \d+ s", timeout=30, count=3
        )
        delays = [int(re.search(r"retry in (\d+) s", line).group(1)) for line in retries[:3]]  # type: ignore[union-attr]
        assert delays[0] < delays[1] < delays[2], delays  # 1, 2, 4 s, each up to 20 % shorter
        row, output = trunk_status(ports["path"], "default/carrier", "failed")
        assert row[2:5] == ["408", "timeout", "retry"], output
        assert output.rstrip().endswith("the PBX is running")
        assert "secret" not in pbx.output and "secret" not in output
    finally:
        sipp.kill()
        pbx.stop()
    unique = {header(r, "CSeq")[0]: r for r in reversed(sipp.requests("REGISTER"))}  # T1 = 50 ms: resent
    requests = sorted(unique.values(), key=lambda r: int(header(r, "CSeq")[0].split()[0]))
    assert len(requests) == 3, str(sipp)
    assert "Authorization" not in requests[0]
    assert len({header(r, "Call-ID")[0] for r in requests}) == 1
    assert [int(header(r, "CSeq")[0].split()[0]) for r in requests] == [1, 2, 3]
    assert {header(r, "Contact")[0] for r in requests} == {f"{contact};expires=60"}
    assert {header(r, "To")[0] for r in requests} == {"<sip:1555@127.0.0.1>"}
    assert requests[0].split(" ", 2)[1] == f"sip:127.0.0.1:{sipp.port};transport=udp"
    answers = [check_md5_digest(header(r, "Authorization")[0], "REGISTER") for r in requests[1:]]
    assert [(c.username, c.realm, c.nc) for c in answers] == [
        ("1555", "carrier.test", "00000001"),
        ("1555", "carrier.test", "00000002"),
    ]
    # Stopped: the last known state stays readable, from a PBX that is no longer running.
    status = run_pbx_cli("trunks", "status", str(ports["path"]))
    assert status.stdout.splitlines()[1].split()[1] == "unregistered", status.stdout
    assert "the PBX is not running" in status.stdout
