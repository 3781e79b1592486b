"""NAT keep-alive and contact qualification for registered phones (RFC 5626 4.4, RFC 3261 11).

Every `interval` seconds each binding is pinged through the flow it registered on:
- UDP bindings (mode "options"): an OPTIONS request to the Contact, sent to the flow's source address and
  port (with the binding's Path as Route when it came through a proxy), which keeps the phone's NAT binding
  open; any final response means alive (even 404 or 501: the phone answered), a timeout or a transport
  error is a miss.
- TCP/TLS bindings (modes "options" and "crlf"): a double-CRLF ping on the connection; a connection that is
  gone is a miss.
After `max_failures` misses in a row the binding is removed, so calls stop ringing a phone that went away.
With `owned`, only the bindings it accepts are pinged: PBX nodes sharing a store each ping the bindings
registered through their own listeners (a phone gets one OPTIONS per round, not one per node).

This module knows nothing of how bindings are stored; it talks to the location service and the SIP stack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from pbx.registrar.location import LocationService
from pbx.registrar.registrar import parse_flow_text
from pbx.sip.interfaces import IClientTransactionUser
from pbx.sip.message import Request, new_call_id, new_tag
from pbx.sip.uri import parse_sip_uri
from pbx.store import Binding

MODES = ("options", "crlf", "none")


@implementer(IClientTransactionUser)
class _Ping:
    """The transaction user of one OPTIONS ping."""

    def __init__(self, done: Callable[[bool], None]) -> None:
        self._done = done

    def response_received(self, transaction: object, response: Any) -> None:
        if response.status >= 200:
            self._done(True)

    def transaction_timeout(self, transaction: object) -> None:
        self._done(False)

    def transport_error(self, transaction: object, reason: str) -> None:
        self._done(False)


class KeepAlive:
    """Pings registered contacts and removes those that stop answering.

    Args:
        clock: time source.
        location: the bindings to ping.
        stack: a `SipStack` (for `send_request`) whose transport offers `flow_for`.
        mode: "options", "crlf" or "none".
        interval: seconds between rounds.
        max_failures: misses in a row before a binding is removed.
        from_host: host for the From header of OPTIONS pings.
        tenant_domain: a tenant's domain, for the From of the pings to its phones (a phone never sees
            another tenant's domain); None, or a tenant it does not know: `from_host`.
        owned: which bindings this node pings (None: all of them).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        location: LocationService,
        stack: Any,
        *,
        mode: str = "options",
        interval: float = 30.0,
        max_failures: int = 3,
        from_host: str = "localhost",
        tenant_domain: Callable[[str], str | None] | None = None,
        owned: Callable[[Binding], bool] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"keep-alive mode must be one of {MODES}")
        self._clock = clock
        self._location = location
        self._stack = stack
        self._mode = mode
        self._interval = interval
        self._max_failures = max_failures
        self._from_host = from_host
        self._tenant_domain = tenant_domain
        self._owned = owned
        self._misses: dict[tuple[str, str, str], int] = {}
        self._loop: LoopingCall | None = None
        self.counters = {"pings": 0, "misses": 0, "removed": 0}
        location.on_removed(self._forget)

    def _forget(self, binding: Binding) -> None:
        self._misses.pop((binding.tenant, binding.aor, binding.contact), None)

    def start(self) -> None:
        if self._mode == "none" or self._loop is not None:
            return
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def tick(self) -> None:
        """One round of pings."""
        owned = self._owned
        for binding in list(self._location):
            if owned is not None and not owned(binding):
                continue  # another node's: it pings it
            try:
                self._ping(binding)
            except Exception:
                self._log.failure("Keep-alive ping to {contact} failed", contact=binding.contact)

    def _ping(self, binding: Binding) -> None:
        transport, host, port = parse_flow_text(binding.received)
        if transport == "udp":
            if self._mode == "options":
                self._options(binding, host, port)
            return
        self.counters["pings"] += 1
        flow = self._stack.transport.flow_for(transport, host, port)
        if flow is not None and flow.connected():
            flow.send(b"\r\n\r\n")
            self._result(binding, True)
        else:
            self._result(binding, False)

    def _options(self, binding: Binding, host: str, port: int) -> None:
        self.counters["pings"] += 1
        request = Request("OPTIONS", parse_sip_uri(binding.contact))
        domain = self._tenant_domain(binding.tenant) if self._tenant_domain is not None else None
        domain = domain or self._from_host
        request.headers.add("From", f"<sip:keepalive@{domain}>;tag={new_tag()}")
        request.headers.add("To", f"<{binding.contact}>")
        request.headers.add("Call-ID", new_call_id(domain))
        request.headers.add("CSeq", "1 OPTIONS")
        if binding.path:  # registered through a proxy: through it, like calls (RFC 3327 5.4)
            request.headers.add("Route", binding.path)
        done: list[bool] = []

        def finished(alive: bool) -> None:
            if not done:
                done.append(alive)
                self._result(binding, alive)

        self._stack.send_request(request, _Ping(finished), "udp", host, port)

    def _result(self, binding: Binding, alive: bool) -> None:
        key = (binding.tenant, binding.aor, binding.contact)
        if alive:
            self._misses.pop(key, None)
            return
        self.counters["misses"] += 1
        misses = self._misses.get(key, 0) + 1
        self._misses[key] = misses
        if misses >= self._max_failures:
            self._misses.pop(key, None)
            self.counters["removed"] += 1
            self._log.warn(
                "Removing {aor}@{tenant} at {contact}: {n} keep-alives unanswered",
                aor=binding.aor,
                tenant=binding.tenant,
                contact=binding.contact,
                n=misses,
            )
            self._location.remove(binding)
