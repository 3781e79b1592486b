"""The voicemail tables of the config: `[voicemail]`, `[smtp]`, `[tenants.NAME.mailboxes.NUMBER]`; the demo
config's boxes, defaults, and every error naming its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pbx.cli import main
from pbx.config import Mailbox, SmtpConfig, VoicemailConfig, load_config, parse_config
from tests.config.test_config import BASE, REPO, data, error_for

BOX = "tenants.default.mailboxes.1000"
HASH = "pbkdf2_sha256$1000$" + "ab" * 16 + "$" + "cd" * 32


def with_boxes(boxes: dict[str, Any], **tables: Any) -> dict[str, Any]:
    document = data(**tables)
    tenant = document["tenants"]["default"]
    tenant["extensions"]["1001"] = {"password": "x", "name": "Alice"}
    tenant["mailboxes"] = boxes
    return document


def test_demo_config_has_the_documented_boxes() -> None:
    config = load_config(REPO / "pbx.example.toml")
    boxes = config.tenants[0].mailboxes
    assert sorted(boxes) == ["1000", "1001", "1002", "1003", "8000"]
    assert all(boxes[n].pin == n for n in boxes)
    assert boxes["1000"].phones == ("1000",)
    assert boxes["1000"].name == "Reception"
    assert boxes["8000"].phones == ("1000",)
    assert config.smtp == SmtpConfig()
    assert config.voicemail == VoicemailConfig()


def test_defaults() -> None:
    config = parse_config(with_boxes({"1001": {"pin": "0042"}, "7000": {"pin": "1234"}}), BASE)
    alice, general = config.tenants[0].mailboxes["1001"], config.tenants[0].mailboxes["7000"]
    assert alice == Mailbox(number="1001", pin="0042", name="Alice", phones=("1001",))
    assert general.phones == () and general.name == ""
    assert "0042" not in repr(alice)
    assert config.voicemail.min_message_seconds == 1.0


def test_no_mailboxes_by_default() -> None:
    assert parse_config(data(), BASE).tenants[0].mailboxes == {}


def test_every_key() -> None:
    box = {
        "pin": "123456789012",
        "name": "General",
        "phones": ["1000", "1001"],
        "email": "ops@example.com",
        "email_attach": False,
        "delete_after_email": True,
        "max_messages": 5,
        "max_message_seconds": 60,
        "unsolicited_notify": True,
    }
    voicemail = {
        "min_message_seconds": 0,
        "silence_seconds": 5,
        "max_pin_attempts": 5,
        "email_from": "pbx@example.com",
        "email_retry_min": 10,
        "email_retry_max": 20,
    }
    smtp = {
        "host": "SMTP.example.com",
        "port": 25,
        "starttls": "Required",
        "username": "u",
        "password": "p",
        "timeout": 5,
    }
    config = parse_config(with_boxes({"8000": box}, voicemail=voicemail, smtp=smtp), BASE)
    got = config.tenants[0].mailboxes["8000"]
    assert got == Mailbox(
        number="8000",
        pin="123456789012",
        name="General",
        phones=("1000", "1001"),
        email="ops@example.com",
        email_attach=False,
        delete_after_email=True,
        max_messages=5,
        max_message_seconds=60.0,
        unsolicited_notify=True,
    )
    assert config.voicemail == VoicemailConfig(0.0, 5.0, 5, "pbx@example.com", 10.0, 20.0)
    assert config.smtp == SmtpConfig("smtp.example.com", 25, "required", "u", "p", 5.0)
    assert "'p'" not in repr(config.smtp)


@pytest.mark.parametrize(
    ("boxes", "path", "words"),
    [
        ({"1000": {}}, f"{BOX}.pin", "is required"),
        ({"1000": {"pin": "1234", "pin_hash": HASH}}, f"{BOX}.pin_hash", "conflicts with pin"),
        ({"1000": {"pin_hash": "1234"}}, f"{BOX}.pin_hash", "pbx voicemail hash-pin"),
        ({"1000": {"pin_hash": HASH.upper()}}, f"{BOX}.pin_hash", "pbx voicemail hash-pin"),
        ({"1000": {"pin": 1234}}, f"{BOX}.pin", "quote it"),
        ({"1000": {"pin": "123"}}, f"{BOX}.pin", "4 to 12 digits"),
        ({"1000": {"pin": "1234567890123"}}, f"{BOX}.pin", "4 to 12 digits"),
        ({"1000": {"pin": "12a4"}}, f"{BOX}.pin", "4 to 12 digits"),
        ({"1000": {"pin": "1234", "pni": "1"}}, f"{BOX}.pni", "did you mean 'pin'"),
        ({"1000": {"pin": "1234", "phones": ["1009"]}}, f"{BOX}.phones[0]", "extension of this tenant"),
        ({"1000": {"pin": "1234", "phones": ["1000", "1000"]}}, f"{BOX}.phones[1]", "listed twice"),
        ({"1000": {"pin": "1234", "phones": "1000"}}, f"{BOX}.phones", "array of strings"),
        ({"1000": {"pin": "1234", "email": "not-an-address"}}, f"{BOX}.email", "e-mail address"),
        ({"1000": {"pin": "1234", "email": "a@b.c\nBcc: x@y"}}, f"{BOX}.email", "e-mail address"),
        ({"1000": {"pin": "1234", "max_messages": 0}}, f"{BOX}.max_messages", "from 1"),
        ({"1000": {"pin": "1234", "max_message_seconds": 0}}, f"{BOX}.max_message_seconds", "from 1"),
        ({"1000": {"pin": "1234", "delete_after_email": True}}, f"{BOX}.delete_after_email", "email"),
        (
            {"1000": {"pin": "1234", "unsolicited_notify": "yes"}},
            f"{BOX}.unsolicited_notify",
            "true or false",
        ),
        ({"10a": {"pin": "1234"}}, "tenants.default.mailboxes.10a", "digits"),
        ({"1000": "1234"}, BOX, "must be a table"),
    ],
)
def test_mailbox_errors_name_the_key(boxes: dict[str, Any], path: str, words: str) -> None:
    error = error_for(with_boxes(boxes))
    assert error.path == path
    assert words in error.message


def test_mailboxes_must_be_a_table() -> None:
    document = data()
    document["tenants"]["default"]["mailboxes"] = ["1000"]
    assert error_for(document).path == "tenants.default.mailboxes"


def test_email_needs_an_smtp_server() -> None:
    error = error_for(with_boxes({"1000": {"pin": "1234", "email": "a@example.com"}}))
    assert (error.path, error.message) == (f"{BOX}.email", "needs an SMTP server: set smtp.host")
    parse_config(with_boxes({"1000": {"pin": "1234", "email": "a@example.com"}}, smtp={"host": "::1"}), BASE)


@pytest.mark.parametrize(
    ("tables", "path", "words"),
    [
        ({"voicemail": {"max_pin_attempts": 0}}, "voicemail.max_pin_attempts", "from 1 to 10"),
        ({"voicemail": {"min_message_seconds": -1}}, "voicemail.min_message_seconds", "from 0"),
        ({"voicemail": {"silence_seconds": -1}}, "voicemail.silence_seconds", "at least 0"),
        ({"voicemail": {"email_from": "x"}}, "voicemail.email_from", "e-mail address"),
        ({"voicemail": {"email_from": ""}}, "voicemail.email_from", "must not be empty"),
        ({"voicemail": {"email_retry_min": 0}}, "voicemail.email_retry_min", "greater than 0"),
        (
            {"voicemail": {"email_retry_min": 9, "email_retry_max": 5}},
            "voicemail.email_retry_max",
            "at least",
        ),
        ({"voicemail": {"pin": "1"}}, "voicemail.pin", "unknown key"),
        ({"smtp": {"host": "bad host"}}, "smtp.host", "host name"),
        ({"smtp": {"port": 0}}, "smtp.port", "from 1 to 65535"),
        ({"smtp": {"starttls": "always"}}, "smtp.starttls", "required, optional, off"),
        ({"smtp": {"password": "p"}}, "smtp.username", "is required"),
        ({"smtp": {"username": "u"}}, "smtp.password", "is required"),
        ({"smtp": {"timeout": 0}}, "smtp.timeout", "greater than 0"),
        ({"smtp": {"hots": "x"}}, "smtp.hots", "did you mean 'host'"),
        ({"smtp": "localhost"}, "smtp", "must be a table"),
    ],
)
def test_section_errors_name_the_key(tables: dict[str, Any], path: str, words: str) -> None:
    error = error_for(data(**tables))
    assert error.path == path
    assert words in error.message


def test_config_check_reports_a_mailbox_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = (REPO / "pbx.example.toml").read_text().replace('pin = "1002"', 'pin = "12"')
    (tmp_path / "pbx.toml").write_text(source)
    assert main(["config", "check", str(tmp_path / "pbx.toml")]) == 1
    assert "tenants.default.mailboxes.1002.pin: must be a string of 4 to 12 digits" in capsys.readouterr().err


def test_pin_hash_instead_of_pin() -> None:
    config = parse_config(with_boxes({"1001": {"pin_hash": HASH}}), BASE)
    box = config.tenants[0].mailboxes["1001"]
    assert (box.pin, box.pin_hash) == ("", HASH)
    assert HASH not in repr(box)


def test_hash_pin_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`pbx voicemail hash-pin` prints what `pin_hash` accepts, and a PIN opens it."""
    import io

    from pbx.apps.voicemail.files import pin_matches

    monkeypatch.setattr("sys.stdin", io.StringIO("0042\n"))
    assert main(["voicemail", "hash-pin"]) == 0
    printed = capsys.readouterr().out.strip()
    assert pin_matches("0042", printed) and not pin_matches("0043", printed)
    parse_config(with_boxes({"1001": {"pin_hash": printed}}), BASE)
    monkeypatch.setattr("sys.stdin", io.StringIO("12\n"))
    assert main(["voicemail", "hash-pin"]) == 1
