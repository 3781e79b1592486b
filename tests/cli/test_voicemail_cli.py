"""`pbx voicemail list EXT`: a box's messages from the database, new first, read-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.cli import main
from pbx.store.records import VoicemailMessage
from pbx.store.sqlite import read_messages

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path) -> Path:
    text = (REPO / "pbx.example.toml").read_text()
    text = text.replace('data_dir = "data"', f'data_dir = "{tmp_path / "data"}"')
    config = tmp_path / "pbx.toml"
    config.write_text(text)
    return config


def fill(database: Path, messages: list[VoicemailMessage]) -> None:
    """Write messages with the SQLite store's own schema and statements, synchronously."""
    import sqlite3

    from pbx.store import sqlite as sqlite_module
    from pbx.store import sqlite_voicemail

    database.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(database)
    sqlite_module._migrate(conn, database)
    for m in messages:
        conn.execute(sqlite_voicemail._UPSERT, sqlite_voicemail._row(m))
    conn.commit()
    conn.close()


def message(id: str, folder: str, at: float, **kw: str) -> VoicemailMessage:
    return VoicemailMessage(
        tenant="default",
        mailbox="1001",
        id=id,
        folder=folder,
        received_at=at,
        duration=12.25,
        audio=f"voicemail/default/1001/{id}.wav",
        **kw,
    )


def test_lists_new_then_old(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    fill(
        tmp_path / "data" / "pbx.sqlite3",
        [
            message("1700000000000-000001", "old", 1_700_000_000, caller_number="1002", caller_name="Bob"),
            message("1700000100000-000002", "new", 1_700_000_100, caller_number="1003"),
            message("1700000200000-000003", "new", 1_700_000_200),
        ],
    )
    assert main(["voicemail", "list", "1001", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "mailbox 1001 (Alice) of tenant default: 2 new, 1 old"
    assert [line.split()[0] for line in out[2:]] == ["new", "new", "old"]
    assert "1003" in out[2] and "unknown" in out[3] and '"Bob" <1002>' in out[4]
    assert "12.2s" in out[2] and out[2].endswith("1700000100000-000002.wav")


def test_empty_box_and_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["voicemail", "list", "8000", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "mailbox 8000 (General) of tenant default: 0 new, 0 old\n"
    assert not (tmp_path / "data" / "pbx.sqlite3").exists()  # read-only: nothing created


def test_unknown_box_or_tenant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["voicemail", "list", "4444", "--config", str(config)]) == 1
    assert "no mailbox '4444'" in capsys.readouterr().err
    assert main(["voicemail", "list", "1001", "--config", str(config), "--tenant", "x"]) == 1
    assert "no tenant 'x'" in capsys.readouterr().err


def test_fill_matches_the_store(tmp_path: Path) -> None:
    """The helper above writes what the store reads (guards against schema drift)."""
    fill(tmp_path / "db", [message("1700000000000-000001", "new", 1.0)])
    assert [m.id for m in read_messages(tmp_path / "db", "default", "1001")] == ["1700000000000-000001"]
