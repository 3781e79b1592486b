"""Voicemail as a service: the mailboxes (`pbx.apps.voicemail.mailboxes.Mailboxes`) over the PBX's store and
data directory, built from `[voicemail]` and the tenants' `[tenants.NAME.mailboxes.NUMBER]` tables.

`build_voicemail` runs before the calls and message waiting are built, so both get the same `Mailboxes`:

- the voicemail applications (deposit `voicemail MAILBOX`, access `*97`/`*98`) get it as
  `CallsService.mailboxes` / the `mailboxes` argument of `pbx.service.calls.build_media_apps`;
- message waiting subscribes to its `watchers` (`pbx.service.mwi.build_mwi`);
- voicemail to e-mail subscribes to its `listeners`.

At start the service recovers the files and index (`Mailboxes.recover`); `ready` fires when that is done, and
the PBX logs its ready line only after it (`pbx.service.when_ready`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbx.apps.voicemail.mailboxes import Mailboxes, MailboxSettings
from pbx.config import Config

_log = Logger(namespace="pbx")


class VoicemailService(service.Service):
    """Recovers the voicemail files and index at start.

    Attributes:
        mailboxes: the PBX's voicemail boxes (`IMailboxes` and more: see `Mailboxes`).
        ready: fires (with None, also after a failed recovery, which is logged) once recovery is done.
    """

    def __init__(self, mailboxes: Mailboxes) -> None:
        self.mailboxes = mailboxes
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        self.mailboxes.recover().addErrback(self._failed).chainDeferred(self.ready)

    def _failed(self, failure: Failure) -> None:
        _log.failure("Voicemail recovery failed: message counts may be wrong until a restart", failure)


def mailbox_settings(config: Config) -> dict[str, Mapping[str, MailboxSettings]]:
    """Every tenant's boxes by tenant name, then number."""
    return {tenant.name: tenant.mailboxes for tenant in config.tenants}


def build_voicemail(config: Config, store: Any, the_reactor: Any) -> VoicemailService:
    """The mailboxes in `data_dir/voicemail/` indexed in `store` (the registrar's: SQLite by default); PIN
    hashing runs in the reactor's thread pool."""

    def in_thread(fn: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(the_reactor, the_reactor.getThreadPool(), fn, *args)

    mailboxes = Mailboxes(
        store,
        config.data_dir,
        mailbox_settings(config),
        clock=the_reactor,
        min_message_seconds=config.voicemail.min_message_seconds,
        in_thread=in_thread,
    )
    return VoicemailService(mailboxes)
