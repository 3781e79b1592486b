"""Message waiting as a service: the `message-summary` notifier (RFC 6665, RFC 3842), built from `[mwi]`."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from pbx.apps.mwi import MessageSummaryPackage, Mwi, MwiAuthorizer
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


def build_mwi(config: Config, stack: SipStack, registrar: RegistrarService) -> MwiService:
    """Message waiting (RFC 3842): SUBSCRIBE to `message-summary`, authenticated like REGISTER (401)."""
    authorize = MwiAuthorizer(
        registrar.authenticator, domain_lookup(config), registrar.guard, config.security.md5_only_user_agents
    )
    package = MessageSummaryPackage(tenant_domain={t.name: t.domain for t in config.tenants}.get)
    mwi = config.mwi
    policy = SubscriptionPolicy(mwi.min_expires, mwi.max_expires, mwi.default_expires)
    notifier = Notifier(stack, authorize, [package], policy)
    stack.register("SUBSCRIBE", notifier)
    stack.answer_statelessly("SUBSCRIBE", authorize.stateless_challenge)
    return MwiService(Mwi(notifier))
