"""`pbx user add|list|passwd|remove|token` on the PBX's database (no PBX running), and the API commands'
errors when no console can be reached."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pbx.admin.passwords import token_hash, verify_password
from pbx.cli import main
from pbx.store.sqlite_admin import offline, select_token, select_user
from tests.cli.test_voicemail_cli import write_config


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_user_lifecycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    database = tmp_path / "data" / "pbx.sqlite3"
    status, out, _ = run(
        monkeypatch, capsys, "user", "add", "root", "--config", config, stdin="first-password\n"
    )
    assert status == 0 and "root added (admin)" in out
    user = offline(database, lambda c: select_user(c, "root"))
    assert user is not None and verify_password("first-password", user.password_hash)
    status, _, err = run(
        monkeypatch, capsys, "user", "add", "root", "--config", config, stdin="first-password\n"
    )
    assert status == 1 and "exists" in err
    status, _, err = run(
        monkeypatch,
        capsys,
        "user",
        "add",
        "ann",
        "--role",
        "tenant_admin",
        "--config",
        config,
        stdin="x" * 9 + "\n",
    )
    assert status == 2 and "--tenant" in err
    status, _, err = run(
        monkeypatch,
        capsys,
        "user",
        "add",
        "ann",
        "--role",
        "tenant_admin",
        "--tenant",
        "nope",
        "--config",
        config,
    )
    assert status == 2 and "no tenant" in err
    viewer = ("user", "add", "ann", "--role", "viewer", "--tenant", "default", "--config", config)
    status, _, _ = run(monkeypatch, capsys, *viewer, stdin="ann-password\n")
    assert status == 0
    status, _, err = run(monkeypatch, capsys, "user", "add", "bob", "--config", config, stdin="short\n")
    assert status == 1 and "at least 8" in err
    status, out, _ = run(monkeypatch, capsys, "user", "list", "--config", config, "--json")
    assert json.loads(out) == [
        {"name": "ann", "role": "viewer", "tenant": "default"},
        {"name": "root", "role": "admin", "tenant": ""},
    ]
    status, out, _ = run(monkeypatch, capsys, "user", "list", "--config", config)
    assert "root" in out and "(all)" in out and "2 user(s)" in out
    status, _, _ = run(
        monkeypatch, capsys, "user", "passwd", "root", "--config", config, stdin="second-password\n"
    )
    assert status == 0
    user = offline(database, lambda c: select_user(c, "root"))
    assert user is not None and verify_password("second-password", user.password_hash)
    status, out, _ = run(monkeypatch, capsys, "user", "token", "root", "--label", "cron", "--config", config)
    token = out.strip()
    assert status == 0 and token.startswith("pbx_")
    stored = offline(database, lambda c: select_token(c, token_hash(token)))
    assert stored is not None and stored.user == "root" and stored.label == "cron"
    status, _, _ = run(monkeypatch, capsys, "user", "remove", "root", "--config", config)
    assert status == 0
    assert offline(database, lambda c: select_token(c, token_hash(token))) is None
    status, _, err = run(monkeypatch, capsys, "user", "remove", "root", "--config", config)
    assert status == 1 and "no user" in err
    status, _, err = run(monkeypatch, capsys, "user", "token", "nobody", "--config", config)
    assert status == 1


def test_api_commands_explain_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PBX_TOKEN", raising=False)
    config = str(write_config(tmp_path))
    status, _, err = run(monkeypatch, capsys, "status", "--config", config, "--token", "t")
    assert status == 2 and "[admin] listen" in err
    status, _, err = run(monkeypatch, capsys, "calls", "--url", "http://127.0.0.1:1")
    assert status == 2 and "PBX_TOKEN" in err
    status, _, err = run(monkeypatch, capsys, "status", "--url", "http://127.0.0.1:1", "--token", "t")
    assert status == 3 and "cannot reach" in err
    # Without a URL or token, `pbx registrations FILE` reads the database, as before.
    status, out, _ = run(monkeypatch, capsys, "registrations", config)
    assert status == 0 and "0 registration(s)" in out
