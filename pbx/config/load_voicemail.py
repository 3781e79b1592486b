"""Read the voicemail tables of the TOML config: `[voicemail]`, `[smtp]` and
`[tenants.NAME.mailboxes.NUMBER]`, into the frozen values of `pbx.config.voicemail`.

Called by `pbx.config.load._Parser` (which it imports lazily from there, so the two modules need no import
cycle at start-up); every problem is a `ConfigError` naming the key, unknown keys included. The keys are
documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pbx.config.load import ConfigError, _join, _kind
from pbx.config.model import Extension
from pbx.config.voicemail import STARTTLS_MODES, Mailbox, SmtpConfig, VoicemailConfig

if TYPE_CHECKING:
    from pbx.config.load import _Parser


_MAILBOX_NUMBER = re.compile(r"[0-9]{1,32}")
"""A box is dialled by DTMF (`*98` asks for it): digits only."""
_PIN = re.compile(r"[0-9]{4,12}")
_PIN_HASH = re.compile(r"pbkdf2_sha256\$[1-9][0-9]{0,6}\$[0-9a-f]{32}\$[0-9a-f]{64}")
"""What `pbx voicemail hash-pin` prints (`pbx.apps.voicemail.files.hash_pin`)."""
# A practical address check (RFC 5321 4.1.2 Mailbox, without quoted local parts or address literals).
_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_MAX_EMAIL = 254
_MAX_MESSAGES = 100_000


def email_address(parser: _Parser, table: Mapping[str, Any], key: str, path: str, default: str) -> str:
    """`local@domain` (or ``""`` when `default` is ``""`` and the key is absent or empty)."""
    value = parser._string(table, key, path, default).strip()
    if not value:
        return ""
    if len(value) > _MAX_EMAIL or not _EMAIL.fullmatch(value):
        raise ConfigError(
            _join(path, key), f"must be an e-mail address like 'alice@example.com', not {value!r}"
        )
    return value


def voicemail(parser: _Parser, value: object) -> VoicemailConfig:
    """The `[voicemail]` table."""
    table = parser._table(value, "voicemail", "voicemail")
    path = "voicemail"
    retry_min = parser._positive(table, "email_retry_min", path, 60.0)
    retry_max = parser._positive(table, "email_retry_max", path, 3600.0)
    if retry_max < retry_min:
        raise ConfigError(
            "voicemail.email_retry_max",
            f"must be at least voicemail.email_retry_min ({retry_min:g}), not {retry_max:g}",
        )
    email_from = email_address(parser, table, "email_from", path, "voicemail@localhost")
    if not email_from:
        raise ConfigError("voicemail.email_from", "must not be empty")
    return VoicemailConfig(
        min_message_seconds=parser._seconds(table, "min_message_seconds", path, 1.0, 0.0, 60.0),
        silence_seconds=parser._seconds(table, "silence_seconds", path, 10.0, 0.0),
        max_pin_attempts=parser._integer(table, "max_pin_attempts", path, 3, 1, 10),
        email_from=email_from,
        email_retry_min=retry_min,
        email_retry_max=retry_max,
    )


def smtp(parser: _Parser, value: object) -> SmtpConfig:
    """The `[smtp]` table; no `host` (or ``""``) switches voicemail e-mail off."""
    table = parser._table(value, "smtp", "smtp")
    path = "smtp"
    host = table.get("host", "")
    if host != "":
        host = parser._host(host, "smtp.host")
    starttls = parser._string(table, "starttls", path, "optional").lower()
    if starttls not in STARTTLS_MODES:
        raise ConfigError(
            "smtp.starttls", f"must be one of {', '.join(STARTTLS_MODES)}, not {table['starttls']!r}"
        )
    username = parser._text(table, "username", path, "", empty=True)
    password = parser._text(table, "password", path, "", empty=True)
    if password and not username:
        raise ConfigError("smtp.username", "is required when smtp.password is set")
    if username and not password:
        raise ConfigError("smtp.password", "is required when smtp.username is set")
    return SmtpConfig(
        host=host,
        port=parser._integer(table, "port", path, 587, 1, 65535),
        starttls=starttls,
        username=username,
        password=password,
        timeout=parser._positive(table, "timeout", path, 30.0),
    )


def mailboxes(
    parser: _Parser, value: object, path: str, extensions: Mapping[str, Extension]
) -> dict[str, Mailbox]:
    """`[tenants.NAME.mailboxes]`: one table per box number."""
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a table, not {_kind(value)}")
    return {
        number: mailbox(parser, number, item, _join(path, number), extensions)
        for number, item in value.items()
    }


def mailbox(
    parser: _Parser, number: str, value: object, path: str, extensions: Mapping[str, Extension]
) -> Mailbox:
    """One `[tenants.NAME.mailboxes.NUMBER]` table."""
    if not _MAILBOX_NUMBER.fullmatch(number):
        raise ConfigError(path, "a mailbox number must be 1 to 32 digits (it is dialled by DTMF)")
    table = parser._table(value, path, "tenants.<tenant>.mailboxes.<number>")
    pin = table.get("pin")
    pin_hash = table.get("pin_hash")
    if pin_hash is not None:
        if pin is not None:
            raise ConfigError(_join(path, "pin_hash"), "conflicts with pin: give one or the other")
        if not isinstance(pin_hash, str) or not _PIN_HASH.fullmatch(pin_hash):
            raise ConfigError(
                _join(path, "pin_hash"),
                "must be a hash as `pbx voicemail hash-pin` prints it (pbkdf2_sha256$...)",
            )
        pin = ""
    elif pin is None:
        raise ConfigError(_join(path, "pin"), "is required (or pin_hash): a string of 4 to 12 digits")
    elif not isinstance(pin, str) or not _PIN.fullmatch(pin):
        shown = "an integer (quote it)" if isinstance(pin, int) and not isinstance(pin, bool) else "not that"
        raise ConfigError(_join(path, "pin"), f"must be a string of 4 to 12 digits, {shown}")
    default_phones = [number] if number in extensions else []
    raw_phones = parser._strings(table, "phones", path, default_phones)
    phones: list[str] = []
    for index, phone in enumerate(raw_phones):
        if phone not in extensions:
            raise ConfigError(
                f"{_join(path, 'phones')}[{index}]", f"must be an extension of this tenant, not {phone!r}"
            )
        if phone in phones:
            raise ConfigError(f"{_join(path, 'phones')}[{index}]", f"{phone} is listed twice")
        phones.append(phone)
    email = email_address(parser, table, "email", path, "")
    delete_after_email = parser._boolean(table, "delete_after_email", path, False)
    if delete_after_email and not email:
        raise ConfigError(_join(path, "delete_after_email"), "needs an email address to mail the message to")
    owner = extensions.get(number)
    return Mailbox(
        number=number,
        pin=pin,
        pin_hash=pin_hash or "",
        name=parser._text(table, "name", path, owner.name if owner is not None else "", empty=True),
        phones=tuple(phones),
        email=email,
        email_attach=parser._boolean(table, "email_attach", path, True),
        delete_after_email=delete_after_email,
        max_messages=parser._integer(table, "max_messages", path, 100, 1, _MAX_MESSAGES),
        max_message_seconds=parser._seconds(table, "max_message_seconds", path, 180.0, 1.0, 86400.0),
        unsolicited_notify=parser._boolean(table, "unsolicited_notify", path, False),
    )


def check_email(tenants: Any, smtp_config: SmtpConfig) -> None:
    """A box that mails its messages needs an SMTP server: the first such box is named otherwise."""
    if smtp_config.host:
        return
    for tenant in tenants:
        for box in tenant.mailboxes.values():
            if box.email:
                raise ConfigError(
                    _join(_join(_join(_join("tenants", tenant.name), "mailboxes"), box.number), "email"),
                    "needs an SMTP server: set smtp.host",
                )
