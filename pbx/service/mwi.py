"""Message waiting as a service: the `message-summary` notifier (RFC 6665, RFC 3842), built from `[mwi]`, with
the voicemail boxes' counts."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from pbx.apps.mwi import MessageSummaryPackage, Mwi, MwiAuthorizer
from pbx.apps.voicemail.mailboxes import Mailboxes
from pbx.config import Config
from pbx.service.adapters import domain_lookup
from pbx.service.registrar import RegistrarService
from pbx.sip.stack import SipStack
from pbx.sip.subscription_notifier import Notifier, SubscriptionPolicy


class MwiService(service.Service):
    """Ends the message-summary subscriptions on shutdown (`deactivated`: the phones come back later)."""

    def __init__(self, mwi: Mwi) -> None:
        self.mwi = mwi

    def stopService(self) -> Any:
        self.mwi.stop()
        return super().stopService()


def build_mwi(
    config: Config, stack: SipStack, registrar: RegistrarService, mailboxes: Mailboxes | None = None
) -> MwiService:
    """Message waiting (RFC 3842): SUBSCRIBE to `message-summary`, authenticated like REGISTER (401); a phone
    sees the counts of the boxes whose `phones` include its extension, and every change of a box's counts
    NOTIFYs all of its phones."""
    authorize = MwiAuthorizer(
        registrar.authenticator, domain_lookup(config), registrar.guard, config.security.md5_only_user_agents
    )
    domains = {t.name: t.domain for t in config.tenants}.get
    if mailboxes is None:
        package = MessageSummaryPackage(tenant_domain=domains)
    else:
        package = MessageSummaryPackage(mailboxes.phone_counts, domains)
    mwi = config.mwi
    policy = SubscriptionPolicy(mwi.min_expires, mwi.max_expires, mwi.default_expires)
    notifier = Notifier(stack, authorize, [package], policy)
    stack.register("SUBSCRIBE", notifier)
    stack.answer_statelessly("SUBSCRIBE", authorize.stateless_challenge)
    indication = Mwi(notifier)
    if mailboxes is not None:
        boxes = mailboxes

        def changed(tenant: str, number: str) -> None:
            box = boxes.mailbox(tenant, number)
            for phone in box.phones if box is not None else ():
                indication.changed(tenant, phone)

        mailboxes.watchers.append(changed)
    return MwiService(indication)
