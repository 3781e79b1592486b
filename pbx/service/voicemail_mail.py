"""Voicemail to e-mail as a service: a `VoicemailMailer` over the PBX's mailboxes, built from `[smtp]` and
`[voicemail]` only when `[smtp] host` is set (no host: no mailer, and messages are never mailed).

The mailer is told of each new message by the mailboxes' `listeners` hook; once voicemail recovery is done
(`VoicemailService.ready`) it queues the messages not mailed before the last stop (`Mailboxes.unsent`). On
shutdown it abandons a delivery under way and its timers: what was not mailed stays `emailed = false` in the
index and is mailed after the next start. Connections go through the reactor's `connectTCP`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger

from pbx.config import Config
from pbx.service.voicemail import VoicemailService

if TYPE_CHECKING:
    from pbx.apps.voicemail.mailer import VoicemailMailer

_log = Logger(namespace="pbx")


class MailerService(service.Service):
    """Starts the mailer once voicemail recovery is done; stops it on shutdown."""

    def __init__(self, mailer: VoicemailMailer, voicemail: VoicemailService) -> None:
        self.mailer = mailer
        self._voicemail = voicemail

    def startService(self) -> None:
        super().startService()

        def start(result: Any) -> Any:
            if self.running:
                self.mailer.start()
            return result

        self._voicemail.ready.addCallback(start)

    def stopService(self) -> Any:
        self.mailer.stop()
        return super().stopService()


def build_mailer(config: Config, voicemail: VoicemailService, the_reactor: Any) -> MailerService | None:
    """The mailer, subscribed to the mailboxes' new messages, or None without `[smtp] host`."""
    smtp = config.smtp
    if not smtp.host:
        return None
    # imported here: twisted.mail.smtp takes half a second to import and asks the resolver for this host's
    # name (socket.getfqdn) as it does; a PBX without e-mail never pays for that
    from pbx.apps.voicemail.mailer import VoicemailMailer

    def connect(host: str, port: int, factory: ClientFactory, timeout: float) -> Any:
        return the_reactor.connectTCP(host, port, factory, timeout=timeout)

    mailer = VoicemailMailer(
        voicemail.mailboxes,
        smtp,
        sender=config.voicemail.email_from,
        retry_min=config.voicemail.email_retry_min,
        retry_max=config.voicemail.email_retry_max,
        clock=the_reactor,
        connect=connect,
    )
    voicemail.mailboxes.listeners.append(mailer.message_added)
    _log.info(
        "Voicemail e-mail through {host}:{port} (STARTTLS {starttls}{auth})",
        host=smtp.host,
        port=smtp.port,
        starttls=smtp.starttls,
        auth=", AUTH as " + smtp.username if smtp.username else "",
    )
    return MailerService(mailer, voicemail)
