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

from pbx.apps import IvrApps
from pbx.apps.voicemail.access import AuthFailures, VoicemailAccess
from pbx.apps.voicemail.boxes import IMailboxes
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
        self.mailboxes.shared = hasattr(self.mailboxes.store, "watch_mailboxes")  # PostgreSQL: other nodes
        self.mailboxes.recover().addErrback(self._failed).chainDeferred(self.ready)
        store = self.mailboxes.store
        watch = getattr(store, "watch_mailboxes", None)
        if watch is not None:  # a store shared with other PBX nodes (PostgreSQL): MWI follows their messages
            self.mailboxes.announcers.append(self._announce)
            watch(self._changed_elsewhere)

    def _announce(self, tenant: str, number: str) -> None:
        store: Any = self.mailboxes.store  # a PostgresStore (see startService)
        store.announce_mailbox(tenant, number).addErrback(
            lambda f: _log.warn("Could not tell the other nodes of box {box}: {why}", box=number, why=f.value)
        )

    def _changed_elsewhere(self, tenant: str | None, number: str | None) -> None:
        """Another node changed box `number` of `tenant` (None: maybe several): count it again for MWI."""
        self.mailboxes.reload_counts(tenant, number).addErrback(
            lambda f: _log.failure("Reloading voicemail counts failed", f)
        )

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


def build_access(
    config: Config, mailboxes: IMailboxes, engine: Any, guard: AuthFailures | None, the_reactor: Any
) -> VoicemailAccess:
    """Mailbox access (`voicemailmain`, *97/*98) over the mailboxes and the media engine; its wrong PINs are
    failed authentications for `guard`, the registrar's brute-force guard (`RegistrarService.guard`)."""
    media = IvrApps(engine, config.dialplan_dir, config.data_dir / "recordings")
    return VoicemailAccess(
        mailboxes, media, the_reactor, guard, max_pin_attempts=config.voicemail.max_pin_attempts
    )
