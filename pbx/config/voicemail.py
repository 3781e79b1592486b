"""Voicemail settings as frozen values: the `[voicemail]` and `[smtp]` sections and a tenant's mailboxes
(`[tenants.NAME.mailboxes.NUMBER]`).

Like `pbx.config.model` it imports only the standard library; secrets (PINs, the SMTP password)
are left out of every ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STARTTLS_MODES: tuple[str, ...] = ("required", "optional", "off")
"""How the SMTP client uses STARTTLS: insist on it, use it when offered, never."""

# The keys of each table, for `pbx.config.load.SCHEMA_KEYS` (documented in docs/configuration.md).
MAILBOX_KEYS: tuple[str, ...] = (
    "pin",
    "pin_hash",
    "name",
    "phones",
    "email",
    "email_attach",
    "delete_after_email",
    "max_messages",
    "max_message_seconds",
    "unsolicited_notify",
)
VOICEMAIL_KEYS: tuple[str, ...] = (
    "min_message_seconds",
    "silence_seconds",
    "max_pin_attempts",
    "email_from",
    "email_retry_min",
    "email_retry_max",
)
SMTP_KEYS: tuple[str, ...] = ("host", "port", "starttls", "username", "password", "timeout")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A tenant's voicemail box.

    A box usually belongs to the extension of the same number (whose phones it lights), but a general box
    (the auto-attendant's "9") need not be an extension at all.

    Attributes:
        number: The mailbox number (digits), unique in its tenant.
        pin: The initial PIN (4 to 12 digits) from the config; a PIN the owner changes by phone is stored
            hashed in the store and wins over this one. Never logged.
        name: Who the box belongs to, for logs and `pbx voicemail list`; defaults to the extension's name.
        phones: The extensions whose phones get message-waiting indication for this box; by default the
            extension of the same number if there is one. A box shared by several phones lights them all.
        email: Where new messages are mailed ("" for no e-mail).
        email_attach: Whether the mail carries the WAV (else only the details).
        delete_after_email: Whether a message is deleted from the box once mailed.
        max_messages: The most messages the box holds; a full box says so and records nothing.
        max_message_seconds: The longest one message may be; the recording stops there.
        unsolicited_notify: Whether the box's phones get unsolicited NOTIFYs (to their registered contacts)
            when they do not subscribe to message-summary themselves.
        pin_hash: Instead of `pin`: the PIN's PBKDF2 hash (`pbkdf2_sha256$ITERATIONS$SALT$HASH`, as
            `pbx voicemail hash-pin` prints it), so that no plain PIN sits in the file. Never logged.
    """

    number: str
    pin: str = field(default="", repr=False)
    name: str = ""
    phones: tuple[str, ...] = ()
    email: str = ""
    email_attach: bool = True
    delete_after_email: bool = False
    max_messages: int = 100
    max_message_seconds: float = 180.0
    unsolicited_notify: bool = False
    pin_hash: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "phones", tuple(self.phones))


@dataclass(frozen=True, slots=True)
class VoicemailConfig:
    """How voicemail records and answers (the `[voicemail]` section).

    Attributes:
        min_message_seconds: A message shorter than this is discarded.
        silence_seconds: Seconds of silence after which a recording stops (0: never).
        max_pin_attempts: Wrong PINs before mailbox access hangs up; each counts as a failed authentication
            for the brute-force guard.
        email_from: The From address of voicemail mails.
        email_retry_min: Seconds before the first retry of a mail the SMTP server did not take.
        email_retry_max: The longest wait between retries (the wait doubles up to it).
    """

    min_message_seconds: float = 1.0
    silence_seconds: float = 10.0
    max_pin_attempts: int = 3
    email_from: str = "voicemail@localhost"
    email_retry_min: float = 60.0
    email_retry_max: float = 3600.0


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """The SMTP server voicemail mails go through (the `[smtp]` section); no host means no e-mail.

    Attributes:
        host: The server's name or address ("" switches e-mail off).
        port: Its port (587 for submission with STARTTLS, 25, or 465 is not supported: no implicit TLS).
        starttls: One of `STARTTLS_MODES`.
        username: The user for SMTP AUTH ("" for none).
        password: Its password; never logged.
        timeout: Seconds one delivery attempt may take.
    """

    host: str = ""
    port: int = 587
    starttls: str = "optional"
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 30.0
