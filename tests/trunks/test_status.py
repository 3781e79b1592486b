"""`pbx.trunks.state` (TrunkStates, the ITrunkStates seam), `pbx.trunks.status` (the JSON status file) and
`pbx trunks status` (pbx/cli/trunks.py) reading it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from pbx.cli import main
from pbx.cli.trunks import format_row
from pbx.trunks.settings import ITrunkStates
from pbx.trunks.state import FAILED, REGISTERED, TrunkStates
from pbx.trunks.status import STATUS_FILE, StatusFile, read_status


def test_states_satisfy_the_seam() -> None:
    states: ITrunkStates = TrunkStates(Clock())
    assert states.is_up("t", "x") is False
    assert states.contact_user("t", "x") is None


def test_up_and_state_words() -> None:
    states = TrunkStates(Clock())
    states.add("t", "reg", registers=True, contact_user="c1")
    states.add("t", "ping", pings=True)
    states.add("t", "off", enabled=False, registers=True, contact_user="c2")
    assert [s.state for s in states] == ["registering", "up", "disabled"]
    assert (states.is_up("t", "reg"), states.is_up("t", "ping"), states.is_up("t", "off")) == (
        True,
        True,
        False,
    )
    assert (states.contact_user("t", "reg"), states.contact_user("t", "off")) == ("c1", None)
    states.update("t", "reg", registration=FAILED, code=403, reason="Forbidden", retry_at=30.0)
    states.update("t", "ping", reachable=False, ping_code=408)
    assert (states.is_up("t", "reg"), states.is_up("t", "ping")) == (False, False)
    assert states.get("t", "reg").describe() == "failed (403 Forbidden)"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        states.add("t", "reg")
    with pytest.raises(KeyError):
        states.update("t", "nope", code=1)


def test_listeners_hear_every_change_and_a_failing_one_is_contained() -> None:
    states = TrunkStates(Clock())
    heard: list[str] = []
    states.on_change(lambda s: 1 / 0)  # type: ignore[arg-type,func-returns-value]
    states.on_change(lambda s: heard.append(s.registration))
    states.add("t", "reg", registers=True)
    states.update("t", "reg", registration=REGISTERED, code=200)
    states.update("t", "reg", registration=REGISTERED, code=200)  # no change: nobody told
    states.update("t", "reg", expires_at=100.0)
    assert heard == ["registered", "registered"]


def test_status_file_is_written_once_per_burst(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(1000)
    states = TrunkStates(clock)
    path = tmp_path / STATUS_FILE
    status = StatusFile(path, states, clock, delay=0.5)
    for index in range(100):
        states.add("t", f"x{index}", registers=True, contact_user=f"u{index}")
    for index in range(100):
        states.update("t", f"x{index}", registration=REGISTERED, code=200, reason="OK", contact="<sip:u@h>")
    assert not path.exists()
    clock.advance(0.5)
    assert status.writes == 1
    document = read_status(path)
    assert document is not None
    assert document["pid"] == os.getpid() and document["written_at"] == 1000.5
    assert len(document["trunks"]) == 100
    row = document["trunks"][0]
    assert (row["state"], row["up"], row["code"], row["contact"]) == ("registered", True, 200, "<sip:u@h>")
    status.close()
    assert status.writes == 2
    assert clock.getDelayedCalls() == []
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]  # no temporary file left


def test_status_file_write_failure_is_logged_not_raised(tmp_path: Path) -> None:
    states = TrunkStates(Clock())
    status = StatusFile(tmp_path / "missing" / STATUS_FILE, states, Clock())
    status.write()
    assert status.writes == 0


def test_read_status_tolerates_garbage(tmp_path: Path) -> None:
    path = tmp_path / STATUS_FILE
    assert read_status(path) is None
    path.write_text("{not json")
    assert read_status(path) is None
    path.write_text('{"trunks": 3}')
    assert read_status(path) is None


def test_format_row() -> None:
    failed = {
        "tenant": "default",
        "trunk": "carrier",
        "state": "failed",
        "registration": "failed",
        "code": 408,
        "reason": "timeout",
        "retry_at": 160.0,
    }
    line = format_row(failed, now=100.0)
    assert line.split() == ["default/carrier", "failed", "408", "timeout", "retry", "in", "60s", "-"]
    registered = {
        "tenant": "default",
        "trunk": "carrier",
        "state": "registered",
        "registration": "registered",
        "code": 200,
        "reason": "OK",
        "expires_at": 700.0,
        "contact": "<sip:1555@127.0.0.1:5060>",
    }
    line = format_row(registered, now=100.0)
    assert "expires in 600s" in line and line.endswith("<sip:1555@127.0.0.1:5060>")


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "pbx.toml"
    path.write_text(
        '[pbx]\ndata_dir = "data"\n[[sip.listen]]\ntransport = "udp"\nhost = "127.0.0.1"\nport = 5999\n'
        '[tenants.default]\ndomain = "localhost"\n'
        '[tenants.default.trunks.carrier]\nhost = "192.0.2.1"\nregister = true\nusername = "u"\n'
        'password = "pw-never-shown"\n'
        '[tenants.default.trunks.spare]\nhost = "192.0.2.2"\nenabled = false\n'
    )
    return path


def test_cli_without_a_status_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trunks", "status", str(write_config(tmp_path))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:2] == ["default/carrier", "unknown"]
    assert out[2].split()[:2] == ["default/spare", "disabled"]
    assert out[-1].startswith("2 trunk(s); no status file")


def test_cli_reads_the_status_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    document = {
        "version": 1,
        "pid": os.getpid(),
        "written_at": 0,
        "trunks": [
            {
                "tenant": "default",
                "trunk": "carrier",
                "state": "registered",
                "registration": "registered",
                "code": 200,
                "reason": "OK",
                "expires_at": 4e9,
                "contact": "<sip:u@127.0.0.1:5999>",
            }
        ],
    }
    (tmp_path / "data" / STATUS_FILE).write_text(json.dumps(document))
    assert main(["trunks", "status", str(config)]) == 0
    out = capsys.readouterr().out
    assert "default/carrier" in out and "registered" in out and "<sip:u@127.0.0.1:5999>" in out
    assert "pw-never-shown" not in out
    assert out.splitlines()[-1] == "2 trunk(s); the PBX is running"


def test_cli_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pbx.toml"
    path.write_text("[tenants.default]\n")
    assert main(["trunks", "status", str(path)]) == 1


def test_cli_shows_every_nodes_view_from_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rows the nodes wrote to the store (here the SQLite file; PostgreSQL when shared) follow the
    status file's lines, one per trunk and node."""
    from pbx.store.sqlite import open_offline
    from pbx.store.trunk_state import _UPSERT, TrunkStatus, _row

    config = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    rows = [
        TrunkStatus(
            tenant="default", trunk="carrier", node="pbx1:5071", state="registered",
            registration="registered", code=200, reason="OK", expires_at=4e9,
            contact="<sip:u@127.0.0.1:5071>", updated_at=1.0,
        ),
        TrunkStatus(
            tenant="default", trunk="carrier", node="pbx2:5072", state="failed", registration="failed",
            code=403, reason="Forbidden", reachable=False, ping_code=408, updated_at=2.0,
        ),
    ]  # fmt: skip
    conn = open_offline(tmp_path / "data" / "pbx.sqlite3")
    for row in rows:
        conn.execute(_UPSERT, _row(row))
    conn.close()
    assert main(["trunks", "status", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    start = out.index("every node's view, from the store:")
    assert out[start + 2].split()[:4] == ["default/carrier", "pbx1:5071", "registered", "200"]
    assert "expires in" in out[start + 2]
    assert out[start + 3].split()[:4] == ["default/carrier", "pbx2:5072", "failed", "403"]
    assert "OPTIONS 408" in out[start + 3]
    assert out[-1].startswith("2 trunk(s); no status file")


def test_cli_shows_who_registers_each_trunk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A node standing by names the holder; the store's leases list who registers which trunk."""
    import time

    from pbx.store.sqlite import open_offline
    from pbx.store.trunk_lease import take

    standby = {"tenant": "default", "trunk": "carrier", "state": "standby", "registration": "standby"}
    assert format_row({**standby, "holder": "pbx1:5071"}, now=0.0).split()[-3:] == [
        "registered",
        "by",
        "pbx1:5071",
    ]
    assert format_row(standby, now=0.0).endswith("registered by an unknown node")
    config = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    conn = open_offline(tmp_path / "data" / "pbx.sqlite3")
    now = time.time()
    take(conn, "default", "carrier", "pbx1:5071", now, now + 3600)
    take(conn, "default", "spare", "pbx2:5072", now - 100, now - 50)
    conn.commit()
    conn.close()
    assert main(["trunks", "status", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    start = out.index("who registers each trunk (the lease; the other nodes stand by):")
    assert out[start + 2].split()[:4] == ["default/carrier", "pbx1:5071", "expires", "in"]
    assert out[start + 3].split()[:3] == ["default/spare", "pbx2:5072", "lapsed"]
