"""Message waiting as a service: the `message-summary` notifier (RFC 6665, RFC 3842), built from `[mwi]`, with
the voicemail boxes' counts."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from pbx.apps.mwi import MessageSummaryPackage, Mwi, MwiAuthorizer
from pbx.apps.mwi_unsolicited import UnsolicitedMwi
from pbx.apps.voicemail.mailboxes import Mailboxes
from pbx.config import Config
from pbx.service.adapters import domain_lookup
from pbx.service.registrar import RegistrarService
from pbx.sip.stack import SipStack
from pbx.sip.subscription_notifier import Notifier, SubscriptionPolicy


class MwiService(service.Service):
    """Ends the message-summary subscriptions on shutdown (`deactivated`: the phones come back later)."""

    def __init__(self, mwi: Mwi, unsolicited: UnsolicitedMwi | None = None) -> None:
        self.mwi = mwi
        self.unsolicited = unsolicited

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
    mwi = config.mwi
    policy = SubscriptionPolicy(mwi.min_expires, mwi.max_expires, mwi.default_expires)
    if mailboxes is None:
        notifier = Notifier(stack, authorize, [MessageSummaryPackage(tenant_domain=domains)], policy)
        stack.register("SUBSCRIBE", notifier)
        stack.answer_statelessly("SUBSCRIBE", authorize.stateless_challenge)
        return MwiService(Mwi(notifier))
    boxes = mailboxes
    package = MessageSummaryPackage(boxes.phone_counts, domains, boxes.boxes_of_phone, boxes.counts)
    notifier = Notifier(stack, authorize, [package], policy)
    stack.register("SUBSCRIBE", notifier)
    stack.answer_statelessly("SUBSCRIBE", authorize.stateless_challenge)

    def phones_of(tenant: str, number: str) -> tuple[str, ...]:
        box = boxes.mailbox(tenant, number)
        return box.phones if box is not None else ()

    def unsolicited_phones(tenant: str, number: str) -> tuple[str, ...]:
        box = boxes.mailbox(tenant, number)
        return box.phones if box is not None and box.unsolicited_notify else ()

    def wants(tenant: str, extension: str) -> bool:
        return any(unsolicited_phones(tenant, number) for number in boxes.boxes_of_phone(tenant, extension))

    indication = Mwi(notifier, phones_of)
    mailboxes.watchers.append(indication.changed)
    unsolicited = UnsolicitedMwi(
        stack.clock,
        stack,
        registrar.location.lookup,
        boxes.phone_counts,
        unsolicited_phones,
        wants,
        indication.subscribed,
        domains,
    )
    mailboxes.watchers.append(unsolicited.changed)
    registrar.location.on_added(unsolicited.registered)
    return MwiService(indication, unsolicited)
