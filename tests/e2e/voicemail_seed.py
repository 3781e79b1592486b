"""Voicemail messages put in place before a PBX starts, as a PBX that ran before would have left them: the WAV
in `DATA_DIR/voicemail/TENANT/BOX/ID.wav` and its index row in the PBX's SQLite database, written with the
store's own schema and statements."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pbx.store import sqlite as sqlite_store
from pbx.store import sqlite_voicemail
from pbx.store.records import VoicemailMessage
from tests.e2e.baresip import write_tone_wav

NOW = 1_765_000_000.0


def seed_message(
    data_dir: Path,
    tenant: str,
    box: str,
    *,
    index: int = 1,
    folder: str = "new",
    caller_number: str = "1001",
    caller_name: str = "Alice",
    seconds: float = 1.0,
) -> tuple[VoicemailMessage, bytes]:
    """One unmailed message (a 440 Hz tone of `seconds`) with its row; returns it and the WAV's bytes."""
    directory = data_dir / "voicemail" / tenant / box
    directory.mkdir(parents=True, exist_ok=True)
    id = f"{int((NOW + index) * 1000):013d}-{index:06x}"
    wav = write_tone_wav(directory / f"{id}.wav", 440.0, seconds=seconds)
    message = VoicemailMessage(
        tenant=tenant,
        mailbox=box,
        id=id,
        folder=folder,
        caller_number=caller_number,
        caller_name=caller_name,
        received_at=NOW + index,
        duration=seconds,
        call_id="seeded",
        audio=f"voicemail/{tenant}/{box}/{id}.wav",
    )
    database = data_dir / "pbx.sqlite3"
    conn = sqlite3.connect(database)
    try:
        sqlite_store._migrate(conn, database)
        conn.execute(sqlite_voicemail._UPSERT, sqlite_voicemail._row(message))
        conn.commit()
    finally:
        conn.close()
    return message, wav.read_bytes()
