"""Voicemail to e-mail against a live PBX and a real SMTP server on loopback (issue 11 item 5).

The SMTP server is Twisted's ESMTP in a subprocess (`tests/e2e/smtp_server.py`) that asks for AUTH and
writes every mail it takes to a directory. The messages are put in place before the PBX starts, as a PBX that
ran before would have left them: a WAV (a 440 Hz tone) and an index row with `emailed = 0` in its SQLite
database (the store's own schema and statements); at start-up the mailer queues every such message.

- With the server up, the mail arrives: From, To, a subject naming the caller and the box, the WAV attached
  as audio/wav byte for byte; the row is then `emailed = 1` and the message stays in its box.
- With the server down, each attempt fails with one log line and a doubling back-off; the message stays
  (row and WAV). Once a server listens on that port, the next attempt mails it; with `delete_after_email`
  the message then leaves the box (row and WAV).

Every wait is on an event (a log line, a file, a process's output) with a timeout; ports are free ones.
"""

from __future__ import annotations

import email
import email.policy
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pbx.store.records import VoicemailMessage
from tests.e2e.harness import REPO, PbxProcess, free_port, write_config
from tests.e2e.voicemail_seed import seed_message

pytestmark = pytest.mark.e2e
USER, PASSWORD = "pbx-mailer", "smtp-secret-42"


def extra(smtp_port: int, *, delete_after_email: bool = False) -> str:
    return f"""
[voicemail]
email_from = "voicemail@pbx.test"
email_retry_min = 0.5
email_retry_max = 2.0

[smtp]
host = "127.0.0.1"
port = {smtp_port}
starttls = "off"
username = "{USER}"
password = "{PASSWORD}"
timeout = 5.0

[tenants.default.mailboxes.1002]
pin = "1002"
name = "Bob"
email = "bob@example.test"
delete_after_email = {"true" if delete_after_email else "false"}
"""


def rows(data_dir: Path) -> list[tuple[str, int]]:
    """(id, emailed) of every message in the PBX's index (read-only, while it runs)."""
    conn = sqlite3.connect(f"file:{data_dir / 'pbx.sqlite3'}?mode=ro", uri=True)
    try:
        return list(conn.execute("SELECT id, emailed FROM voicemail_messages ORDER BY id"))
    finally:
        conn.close()


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling a database another process writes; bounded by the deadline


class SmtpServer:
    """`python -m tests.e2e.smtp_server PORT DIR USER PASSWORD`, its output collected line by line."""

    def __init__(self, port: int, directory: Path) -> None:
        self.directory = directory
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.smtp_server", str(port), str(directory), USER, PASSWORD],
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("ready")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"SMTP server: no {prefix!r}:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.5))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def cleanup() -> Iterator[list]:
    things: list = []
    yield things
    for thing in reversed(things):
        thing.stop()


def check_mail(path: Path, message: VoicemailMessage, wav: bytes) -> None:
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert mail["From"] == "voicemail@pbx.test" and mail["To"] == "bob@example.test"
    assert mail["Subject"] == "New voicemail from Alice <1001> in mailbox 1002"
    body = mail.get_body(("plain",))
    assert body is not None and "1002 (Bob)" in body.get_content() and "0:01" in body.get_content()
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_content_type() == "audio/wav"
    assert attachment.get_filename() == f"voicemail-1002-{message.id}.wav"
    assert attachment.get_content() == wav


def test_an_unmailed_message_is_mailed_at_start_with_the_wav(tmp_path, cleanup):
    smtp_port = free_port(udp=False)
    inbox = tmp_path / "inbox"
    cleanup.append(SmtpServer(smtp_port, inbox))
    ports = write_config(tmp_path, extra=extra(smtp_port))
    message, wav = seed_message(tmp_path / "data", "default", "1002")
    process = PbxProcess(ports["path"])
    cleanup.append(process)
    process.wait_ready(ports["listeners"])
    process.wait_for(rf"Voicemail e-mail default/1002/{message.id}: mailed to bob@example\.test", timeout=20)
    line = cleanup[0].wait_for("received ")
    assert line == "received 1.eml voicemail@pbx.test bob@example.test"
    check_mail(inbox / "1.eml", message, wav)
    assert wait_until(lambda: rows(tmp_path / "data") == [(message.id, 1)], 10, "emailed = 1")
    assert (tmp_path / "data" / message.audio).exists()  # mailed, and still in the box
    assert PASSWORD not in process.output


def test_with_the_server_down_the_message_stays_and_is_mailed_once_it_is_up(tmp_path, cleanup):
    smtp_port = free_port(udp=False)
    inbox = tmp_path / "inbox"
    ports = write_config(tmp_path, extra=extra(smtp_port, delete_after_email=True))
    message, wav = seed_message(tmp_path / "data", "default", "1002")
    process = PbxProcess(ports["path"])
    cleanup.append(process)
    process.wait_ready(ports["listeners"])
    failed = rf"Voicemail e-mail default/1002/{message.id} to bob@example\.test: attempt \d+ failed"
    lines = process.wait_for(failed, timeout=20, count=3)
    assert "Connection refused" in lines[0], lines
    assert [line.rsplit("next try in ", 1)[1] for line in lines[:3]] == ["0.5 s", "1 s", "2 s"]
    assert rows(tmp_path / "data") == [(message.id, 0)]
    assert (tmp_path / "data" / message.audio).read_bytes() == wav
    cleanup.insert(0, SmtpServer(smtp_port, inbox))  # the server comes back on the same port
    cleanup[0].wait_for("received ", timeout=20)
    process.wait_for(rf"Voicemail e-mail default/1002/{message.id}: mailed to bob@example\.test", timeout=10)
    check_mail(inbox / "1.eml", message, wav)
    # delete_after_email: the message leaves the box (row, then WAV)
    wait_until(lambda: rows(tmp_path / "data") == [], 10, "the row to go")
    wait_until(lambda: not (tmp_path / "data" / message.audio).exists(), 10, "the WAV to go")
    assert PASSWORD not in process.output
