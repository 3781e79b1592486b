"""The e-mail that tells a mailbox's owner about a new voicemail message (RFC 5322 headers, a MIME body of RFC
2045/2046 with the WAV as an `audio/wav` part, RFC 2392 / RFC 5322 section 3.6.4 Message-ID).

Built with the standard library's `email` package; header values that come from a caller (the display name,
the number) are cleaned of control characters and bounded, so a hostile display name can never add a header.
It knows nothing of SMTP (`pbx.apps.voicemail.mailer` sends it) nor of where the audio lives (it is given the
bytes).
"""

from __future__ import annotations

import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from pbx.store.records import VoicemailMessage

MAX_HEADER_TEXT = 64
"""The longest caller text (name, number) put into a header or the body."""


def clean(text: str, limit: int = MAX_HEADER_TEXT) -> str:
    """`text` with control characters (CR, LF, NUL, ...) replaced by spaces, squeezed and cut to `limit`."""
    printable = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(printable.split())[:limit]


def caller_text(message: VoicemailMessage) -> str:
    """Who left the message, for the subject: `"Name" <number>`, the number or name alone, or "an unknown
    caller"."""
    number, name = clean(message.caller_number), clean(message.caller_name)
    if number and name and name != number:
        return f"{name} <{number}>"
    return number or name or "an unknown caller"


def format_duration(seconds: float) -> str:
    """`M:SS` for a message's length."""
    whole = max(0, round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


def format_time(epoch: float) -> str:
    """An epoch time as `YYYY-MM-DD HH:MM:SS UTC`."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def domain_of(address: str) -> str:
    """The domain part of an e-mail address ("localhost" when it has none)."""
    _, _, domain = address.rpartition("@")
    return clean(domain) or "localhost"


def build_mail(
    message: VoicemailMessage,
    *,
    sender: str,
    recipient: str,
    box_name: str = "",
    audio: bytes | None = None,
) -> EmailMessage:
    """The mail announcing `message`.

    Args:
        message: The voicemail message's entry.
        sender: The From address (`[voicemail] email_from`).
        recipient: The To address (the mailbox's `email`).
        box_name: Whose box it is, for the body ("" to leave it out).
        audio: The WAV's bytes to attach as `audio/wav`, or None for a mail with the details only.

    Returns:
        The message; `bytes(mail)` is not used to send it: `mail_bytes` gives the wire form.
    """
    mail = EmailMessage(policy=SMTP)
    caller = caller_text(message)
    mail["From"] = clean(sender, 254)
    mail["To"] = clean(recipient, 254)
    mail["Subject"] = f"New voicemail from {caller} in mailbox {clean(message.mailbox)}"
    mail["Date"] = formatdate(message.received_at, usegmt=True)
    mail["Message-ID"] = make_msgid(idstring=clean(message.id, 80), domain=domain_of(sender))
    box = clean(message.mailbox) + (f" ({clean(box_name)})" if box_name else "")
    lines = [
        f"You have a new voicemail message in mailbox {box}.",
        "",
        f"From:     {clean(message.caller_number) or 'unknown'}",
        f"Name:     {clean(message.caller_name) or '-'}",
        f"Received: {format_time(message.received_at)}",
        f"Length:   {format_duration(message.duration)}",
        f"Mailbox:  {clean(message.mailbox)}",
        "",
        "The recording is attached." if audio is not None else "Dial *97 to listen to it.",
    ]
    mail.set_content("\n".join(lines) + "\n")
    if audio is not None:
        filename = f"voicemail-{clean(message.mailbox)}-{clean(message.id, 80)}.wav"
        mail.add_attachment(audio, maintype="audio", subtype="wav", filename=filename)
    return mail


def mail_bytes(mail: EmailMessage) -> bytes:
    """The mail's bytes with LF line ends: Twisted's SMTP client turns each LF into CRLF and dot-stuffs lines
    itself (RFC 5321 section 4.5.2), so CRLF here would become CR CR LF."""
    return mail.as_bytes(policy=mail.policy.clone(linesep="\n"))
