"""Unsolicited message-summary NOTIFYs (RFC 3842 4: "a UA MAY send a NOTIFY ... without a subscription")
for phones that light their lamp but never SUBSCRIBE.

Switched on per box (`unsolicited_notify`): each phone of such a box gets, at each of its registered contacts,
an out-of-dialog NOTIFY with the counts its lamp shows, when the counts change and when it registers a new
contact (after the REGISTER's 200, on the next reactor turn). As deployed servers do (Asterisk's unsolicited
MWI), the NOTIFY carries `Event: message-summary` and `Subscription-State: active`, a fresh Call-ID and
From tag, and goes to the flow the phone registered from (the registrar's `received`), like keep-alives.
A phone with a live subscription of its own gets its NOTIFYs there instead. Responses are counted only:
a phone that answers 4xx/5xx or not at all is not retried (the next change tries again).

Only the phones of the box's own tenant are ever addressed. This module knows the registrar's bindings and
SIP requests; it knows nothing of how messages are stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pbx.registrar.registrar import parse_flow_text
from pbx.sip.events.message_summary import CONTENT_TYPE, EVENT, MessageSummary
from pbx.sip.interfaces import IClientTransactionUser
from pbx.sip.message import Request, new_call_id, new_tag
from pbx.sip.uri import parse_sip_uri
from pbx.store import Binding

Counts = Callable[[str, str], tuple[int, int]]
Names = Callable[[str, str], tuple[str, ...]]


@implementer(IClientTransactionUser)
class _Outcome:
    """Counts the answer to one NOTIFY."""

    def __init__(self, counters: dict[str, int]) -> None:
        self._counters = counters

    def response_received(self, transaction: object, response: Any) -> None:
        status = getattr(response, "status", 0)
        if status >= 300:
            self._counters["refused"] += 1
        elif status >= 200:
            self._counters["answered"] += 1

    def transaction_timeout(self, transaction: object) -> None:
        self._counters["timeouts"] += 1

    def transport_error(self, transaction: object, reason: str) -> None:
        self._counters["errors"] += 1


class UnsolicitedMwi:
    """Out-of-dialog message-summary NOTIFYs to the registered contacts of phones that want them.

    Args:
        clock: schedules the NOTIFY after a registration's 200.
        stack: sends the requests (`send_request(request, tu, transport, host, port)`).
        contacts: `contacts(tenant, extension)`: the extension's unexpired bindings (the location service).
        counts: `counts(tenant, extension) -> (new, old)`: what the phone's lamp shows.
        phones_of: `phones_of(tenant, box)`: the phones of a box that wants unsolicited NOTIFYs (empty for a
            box that does not).
        wants: `wants(tenant, extension)`: whether the extension is a phone of such a box.
        subscribed: `subscribed(tenant, extension)`: whether it has a subscription of its own (then skipped).
        tenant_domain: a tenant's domain, for From and Message-Account.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        stack: Any,
        contacts: Callable[[str, str], list[Binding]],
        counts: Counts,
        phones_of: Names,
        wants: Callable[[str, str], bool],
        subscribed: Callable[[str, str], bool],
        tenant_domain: Callable[[str], str | None],
    ) -> None:
        self._clock = clock
        self._stack = stack
        self._contacts = contacts
        self._counts = counts
        self._phones_of = phones_of
        self._wants = wants
        self._subscribed = subscribed
        self._domain = tenant_domain
        self.counters = {"sent": 0, "answered": 0, "refused": 0, "timeouts": 0, "errors": 0}

    def changed(self, tenant: str, box: str) -> int:
        """A box's counts changed: NOTIFY every registered contact of its phones; returns how many."""
        sent = 0
        for phone in self._phones_of(tenant, box):
            if not self._subscribed(tenant, phone):
                for binding in self._contacts(tenant, phone):
                    sent += self._send(binding)
        return sent

    def registered(self, binding: Binding) -> None:
        """A phone registered a new contact: tell it the counts once the REGISTER is answered."""
        if self._wants(binding.tenant, binding.aor):
            self._clock.callLater(0, self._registered, binding)

    def _registered(self, binding: Binding) -> None:
        if not self._subscribed(binding.tenant, binding.aor):
            self._send(binding)

    def _send(self, binding: Binding) -> int:
        try:
            request = self._request(binding)
            transport, host, port = parse_flow_text(binding.received)
            self._stack.send_request(request, _Outcome(self.counters), transport, host, port)
        except Exception:
            self._log.failure("Unsolicited NOTIFY to {contact} failed", contact=binding.contact)
            return 0
        self.counters["sent"] += 1
        return 1

    def _request(self, binding: Binding) -> Request:
        domain = self._domain(binding.tenant) or "localhost"
        new, old = self._counts(binding.tenant, binding.aor)
        body = MessageSummary.voice(new, old, f"sip:{binding.aor}@{domain}").to_bytes()
        request = Request("NOTIFY", parse_sip_uri(binding.contact))
        request.headers.add("From", f"<sip:{binding.aor}@{domain}>;tag={new_tag()}")
        request.headers.add("To", f"<sip:{binding.aor}@{domain}>")
        request.headers.add("Call-ID", new_call_id(domain))
        request.headers.add("CSeq", "1 NOTIFY")
        request.headers.add("Max-Forwards", "70")
        if binding.path:  # registered through a proxy: through it, like calls (RFC 3327 5.4)
            request.headers.add("Route", binding.path)
        request.headers.add("Event", EVENT)
        request.headers.add("Subscription-State", "active")
        request.headers.add("Content-Type", CONTENT_TYPE)
        request.body = body
        return request
