"""The B2BUA: every call is two dialogs, with the PBX in the middle (RFC 3261 sections 12-15, RFC 7092).

`B2BUA` is the transaction user for new INVITEs and the stack's CANCEL handler. A new INVITE (no To tag) is
authenticated (`407`, the same digest rules and brute-force guard as the registrar), its Request-URI domain
selects the tenant, and it becomes a `Call` that runs the tenant's dialplan. Each side of a call is an INVITE
session (`pbx.sip.session`) registered with the stack's dialog table, which routes the requests, ACKs and
late 2xx of that dialog to it; the stack answers `481` for an unknown dialog. Topology is hidden: a callee
sees only the PBX's Call-ID, tags, Via, Contact and relay address.

This module knows nothing of sockets or of the config file: `pbx/tap.py` hands it plain values.
"""

from __future__ import annotations

import datetime
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pbx.b2bua.bridge import CallSide
from pbx.b2bua.call import Call, CallDeadlines
from pbx.b2bua.events import CallEvents
from pbx.b2bua.leg import LegTarget, OutboundLeg
from pbx.b2bua.media import parse_sdp
from pbx.b2bua.normalise import CALLING_NUMBER, asserted_identity, display_name, trusted_headers
from pbx.b2bua.outbound_policy import OutboundPolicy
from pbx.b2bua.pickup import Pickup
from pbx.b2bua.transfer import Transfers
from pbx.dialplan import Action, DialplanEngine
from pbx.dialplan.simulate import (
    CallerInfo,
    CallInfo,
    ExtensionInfo,
    LiveExtensions,
    TenantDirectory,
    extension_variants,
    make_context,
)
from pbx.media.interfaces import IMediaRelay
from pbx.registrar import BruteForceGuard, ChallengePolicy, Domain, LocationService, parse_flow_text
from pbx.sip.auth import AuthOutcome, DigestAuthenticator
from pbx.sip.client_auth import Credentials
from pbx.sip.errors import SipError, SipParseError
from pbx.sip.interfaces import IFlow, IServerTransaction, ISipStack, ITransactionUser
from pbx.sip.message import Request, Response, new_tag
from pbx.sip.offer_answer import make_answer
from pbx.sip.origin import request_origin
from pbx.sip.resolver import Target
from pbx.sip.sdp import SessionDescription
from pbx.sip.session_timer import SessionTimerPolicy
from pbx.sip.session_uas import UasSession
from pbx.sip.uri import SipURI, parse_sip_uri
from pbx.store import ICdrStore
from pbx.trunks.outbound import (
    identity_headers,
    next_hops,
    presentation,
    request_uri,
    route_headers,
    trunk_credentials,
)
from pbx.trunks.routing import InboundTrunk, TrunkRouting

App = Callable[[Call, Action], Deferred[str]]

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, REFER, NOTIFY"
"""The methods the PBX allows in its calls' dialogs."""


def as_log_format(text: str) -> str:
    """`text` as a Twisted log format that formats to itself (a Call-ID may hold braces)."""
    return text.replace("{", "{{").replace("}", "}}") if "{" in text or "}" in text else text


@dataclass(frozen=True, slots=True)
class Directory:
    """A tenant's directory: its domain, extensions and ring groups."""

    tenant: str
    domain: str
    extensions: Mapping[str, ExtensionInfo] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling; `peer` names the trusted peer the INVITE came from ("" after digest auth). A call
    from a trunk has no extension: `trunk` names the trunk and `number` is the calling number (From)."""

    tenant: str
    extension: str
    name: str
    domain: str
    may_call_out: bool = False
    peer: str = ""
    trunk: str = ""
    number: str = ""
    srtp: str = "optional"
    allow_srtp_over_plain: bool = False
    outbound_classes: tuple[str, ...] = ()  # its extension's (pbx.b2bua.outbound_policy); () by may_call_out
    # Identity headers the callee's phones get (a trunk trusted with identity: pbx.b2bua.normalise).
    asserted: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TrustedPeer:
    """A peer authenticated by its source address: its INVITEs get no 407 and call as `extension`."""

    name: str
    extension: str


def withheld(invite: Request) -> bool:
    """Whether the caller asked for its identity to be withheld: a `Privacy` header with `id`, `user` or
    `header` (RFC 3323 4.2, RFC 3325 9.3)."""
    value = invite.headers.get("Privacy")
    if not value:
        return False
    return any(token.strip().lower() in ("id", "user", "header") for token in value.split(";"))


PeerLookup = Callable[[str, str], TrustedPeer | None]
"""(tenant, source IP address of an INVITE) -> the tenant's trusted peer at that address, or None."""


@implementer(ITransactionUser)
class B2BUA:
    """Calls between the tenant's phones.

    Args:
        clock: time source.
        stack: the SipStack (send_request, send_stateless, send_response, contact_for, timers).
        location: registered contacts.
        authenticator: digest authentication (407 challenges).
        domains: Request-URI host -> Domain.
        directories: tenant name -> Directory.
        dialplans: the dialplan engine.
        relay: the media relay.
        cdrs: where CDRs go.
        guard: brute-force guard.
        peers: finds the trusted peer an INVITE comes from (no 407 for it); None: every INVITE is challenged.
        locate: RFC 3263 server location of a SIP URI target (`SipResolver.resolve`); None: such targets
            fail with 503.
        uri_credentials: (tenant, realm) -> the credentials the PBX answers a SIP URI target's 401/407 with.
        trunks: the tenants' trunks (`dial trunk:NAME/NUMBER`, inbound calls by DID); None: no trunks.
        outbound: toll-fraud controls: outbound classes and limits (`pbx.b2bua.outbound_policy`); None:
            the default rules (country code 1) without limits.
        ring_timeout, max_call_duration: seconds.
        codecs: codecs let through ("*" for all).
        md5_only_user_agents: User-Agent substrings challenged with MD5 only.
        host: host part for generated Call-IDs.
        trunk_transfers: whether a party reached through a trunk may transfer its call (REFER); off: 403.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        stack: ISipStack,
        location: LocationService,
        authenticator: DigestAuthenticator,
        domains: Callable[[str], Domain | None],
        directories: Callable[[str], Directory | None],
        dialplans: DialplanEngine,
        relay: IMediaRelay,
        cdrs: ICdrStore | None = None,
        guard: BruteForceGuard | None = None,
        *,
        peers: PeerLookup | None = None,
        locate: Callable[[str], Deferred[list[Target]]] | None = None,
        uri_credentials: Callable[[str, str], Credentials | None] | None = None,
        trunks: TrunkRouting | None = None,
        outbound: OutboundPolicy | None = None,
        ring_timeout: float = 30.0,
        max_call_duration: float = 14400.0,
        codecs: Sequence[str] = ("*",),
        md5_only_user_agents: Sequence[str] = (),
        host: str = "pbx",
        trunk_transfers: bool = False,
    ) -> None:
        self.clock = clock
        self.stack = stack
        self.location = location
        self._auth = authenticator
        self._domains = domains
        self._directories = directories
        self._dialplans = dialplans
        self.relay = relay
        self.bridge_relay: IMediaRelay | None = None  # rtpengine: bridged calls' media (pbx.media.rtpengine)
        self._cdrs = cdrs
        self._challenges = ChallengePolicy(authenticator, guard, md5_only_user_agents)
        self._peers = peers
        self._locate = locate
        self._uri_credentials = uri_credentials
        self._trunks = trunks if trunks is not None and not trunks.empty else None
        self.ring_timeout = ring_timeout
        self.max_call_duration = max_call_duration
        self.deadlines = CallDeadlines(clock, max_call_duration)  # answered calls' maximum duration
        self.codecs = tuple(codecs)
        self.host = host
        self.apps: dict[str, Callable[[Call, Action], Any]] = {}
        # Music on hold (pbx.apps.MusicOnHold, plugged in by pbx/tap.py): start(tenant, leg, answer_sdp)
        # returns an endpoint attached to the held side's relay leg, or None.
        self.hold_music: Any = None
        # What extensions' owners set by phone (DND, forwarding: pbx.apps.features, plugged in by
        # pbx/service): (tenant, number) -> the context's ExtensionInfo fields to override, or None.
        self.extension_overrides: Callable[[str, str], Mapping[str, Any] | None] | None = None
        self.calls: dict[str, Call] = {}
        # Who watches calls (busy lamps, pickup, park, metrics, the console): pbx.b2bua.events.
        self.observers = CallEvents()
        # Toll fraud: every trunk and URI target is judged where it is built; limits count as an observer.
        self.outbound = outbound if outbound is not None else OutboundPolicy(clock)
        if outbound is not None and outbound.counting:
            self.observers.append(outbound)
        # How the sessions of every call are made: no session timer of our own (the phones' are honoured),
        # one random source for glare delays, the methods we allow.
        self.session_options: dict[str, Any] = {
            "policy": SessionTimerPolicy(enabled=False),
            "rng": random.Random(),
            "allow": ALLOW,
        }
        self._views: dict[str, tuple[Directory, Mapping[str, Any], Mapping[str, tuple[str, ...]]]] = {}
        self.counters = {"calls": 0, "answered": 0, "failed": 0, "challenged": 0, "active": 0}
        self.draining = False  # `drain`: no new calls
        # Transfers (REFER, Replaces) and call pickup (the `pickup` action): pbx.b2bua.transfer, .pickup.
        self.transfers = Transfers(self, trunk_transfers=trunk_transfers)
        self.pickup = Pickup(self)
        self.apps["pickup"] = self.pickup.app

    @staticmethod
    def new_tag() -> str:
        return new_tag()

    @staticmethod
    def parse_contact(contact: str) -> SipURI:
        return parse_sip_uri(contact)

    # -- ITransactionUser --------------------------------------------------------------------------------

    def request_received(self, transaction: IServerTransaction, request: object) -> Deferred[None] | None:
        assert isinstance(request, Request)
        if request.method != "INVITE" or request.to.tag is not None:
            raise SipError(481)  # the stack hands requests in our dialogs to their sessions
        return ensureDeferred(self._new_call(transaction, request))

    def cancel_received(self, cancel: object, invite: IServerTransaction) -> None:
        for call in self.calls.values():
            if call.txn is invite:
                call.a.cancel_received()
                return
        invite.respond(invite.request.response(487))

    # -- new calls ---------------------------------------------------------------------------------------

    async def _new_call(self, txn: IServerTransaction, request: Request) -> None:
        if self.draining:  # stopping: calls in progress go on, new ones go to another node (RFC 3261 21.5.4)
            raise SipError(503, "Draining", [("Retry-After", "60")])
        uri = request.uri
        if not isinstance(uri, SipURI):
            raise SipError(416)
        if self._trunks is not None:
            inbound = self._trunks.inbound_call(txn.flow.remote_address[0], request)
            if inbound is not None:  # no challenge: carriers do not answer them (docs/trunks.md)
                await self._trunk_call(txn, request, inbound)
                return
        domain = self._domains(uri.host)
        if domain is None:
            raise SipError(404, "Domain Not Served")
        peer = self._peers(domain.tenant, txn.flow.remote_address[0]) if self._peers is not None else None
        if peer is not None:
            username = peer.extension  # authenticated by its address (docs/configuration.md, peers)
        else:
            verdict = self._auth.authenticate_now(request, domain.realm, proxy=True)
            # The hashes are in memory: the verdict is at hand, with no Deferred to wait on.
            result = await verdict if isinstance(verdict, Deferred) else verdict
            if result.outcome is not AuthOutcome.OK:
                self._challenge(txn, request, domain, result)
                return
            username = result.username or ""
        try:
            contacts = request.contacts
        except SipParseError as e:
            raise SipError(400, f"Bad Contact header: {e.reason}") from None
        if len(contacts) != 1 or contacts[0].wildcard:
            raise SipError(400, "An INVITE needs exactly one Contact")
        directory = self._directories(domain.tenant)
        if directory is None or username not in directory.extensions:
            raise SipError(403)
        info = directory.extensions[username]
        caller = Caller(
            domain.tenant,
            username,
            info.name,
            directory.domain,
            info.may_call_out,
            peer.name if peer else "",
            srtp=getattr(info, "srtp", "optional"),
            allow_srtp_over_plain=getattr(info, "allow_srtp_over_plain", False),
            outbound_classes=tuple(getattr(info, "outbound_classes", ())),
        )
        if "Replaces" in request.headers and self.transfers.invite_with_replaces(txn, request, caller):
            return  # RFC 3891: it took the place of a dialog of a call on the PBX
        call = Call(self, txn, request, caller)
        self._add_call(call)
        self.counters["calls"] += 1
        self.counters["active"] = len(self.calls)
        if self.observers:
            self.observers.emit("call_started", call)
        await call.run()

    async def _trunk_call(self, txn: IServerTransaction, request: Request, inbound: InboundTrunk) -> None:
        """A call from a trunk: routed by its DID through the tenant's dialplan (`call.did`, `call.trunk`);
        a number that is not one of the trunk's DIDs is refused with 404 and goes nowhere."""
        assert self._trunks is not None
        trunk, tenant = inbound.trunk, inbound.tenant
        did = self._trunks.called_number(trunk, request)
        if not self._trunks.has_did(tenant, trunk, did):
            self._log.info("Trunk {trunk}: no DID {did}: 404", trunk=trunk.name, did=did[:40])
            raise SipError(404, "Unknown Number")
        try:
            contacts = request.contacts
            from_uri = request.from_.uri
            display = request.from_.display_name or ""
        except SipParseError as e:
            raise SipError(400, f"Bad header: {e.reason}") from None
        if len(contacts) != 1 or contacts[0].wildcard:
            raise SipError(400, "An INVITE needs exactly one Contact")
        directory = self._directories(tenant)
        if directory is None:
            raise SipError(404, "Unknown Number")
        number = getattr(from_uri, "user", None) or ""
        if not CALLING_NUMBER.fullmatch(number):
            number = "anonymous"
        asserted: tuple[tuple[str, str], ...] = ()
        if getattr(trunk, "trust_identity", False):  # else its identity headers go no further (normalise)
            found = asserted_identity(request.headers)
            if found is not None:
                number, display = found[0], found[1] or display
            asserted = trusted_headers(request.headers, number, display_name(display), directory.domain)
        if not self._trunks.acquire(txn, tenant, trunk.name):  # held by the call's transaction
            self._log.info("Trunk {trunk} is at its max_calls: 503", trunk=trunk.name)
            raise SipError(503, "Trunk Busy", [("Retry-After", "5")])
        caller = Caller(
            tenant,
            "",
            display_name(display),
            directory.domain,
            trunk=trunk.name,
            number=number,
            asserted=asserted,
            srtp=getattr(trunk, "srtp", "optional"),
            allow_srtp_over_plain=getattr(trunk, "allow_srtp_over_plain", False),
        )
        call = Call(self, txn, request, caller)
        call.dialed = did
        self._add_call(call)
        self.counters["calls"] += 1
        self.counters["active"] = len(self.calls)
        if self.observers:
            self.observers.emit("call_started", call)
        await call.run()

    def stateless_challenge(self, request: Request, flow: IFlow) -> Response | None:
        """The 407 for a new INVITE without credentials, answered without a transaction (RFC 3261 8.2.7:
        a flood of unauthenticated INVITEs then costs no state; `SipStack.answer_statelessly`). Everything
        else goes the stateful way (None): requests in a dialog, with Proxy-Authorization, from a trusted
        peer, to a domain not served (refused there with the reason). The ACK of such a 407 matches no
        transaction and no dialog and is dropped in `ack_received`."""
        if self.draining:
            return None  # refused by `_new_call` with 503
        domain = self._challenges.unauthenticated_domain(request, self._domains, proxy=True)
        if domain is None:
            return None
        if self._trunks is not None:
            user = request.uri.user if isinstance(request.uri, SipURI) else None
            if self._trunks.inbound(flow.remote_address[0], user) is not None:
                return None  # a trunk's call: never challenged
        if self._peers is not None and self._peers(domain.tenant, flow.remote_address[0]) is not None:
            return None
        self.counters["challenged"] += 1
        return self._challenges.challenge(request, domain.realm, proxy=True)

    def _challenge(self, txn: IServerTransaction, request: Request, domain: Domain, result: Any) -> None:
        self.counters["challenged"] += 1
        source = request_origin(
            request, txn.flow.remote_address[0], getattr(self.stack, "is_trusted_proxy", None)
        )
        txn.respond(
            self._challenges.refused(
                request, result, realm=domain.realm, tenant=domain.tenant, source=source, proxy=True
            )
        )

    def _add_call(self, call: Call) -> None:
        """Keep a live call by its Call-ID: the caller's, so another phone (of any tenant) may send the same
        one; such a call gets a key of its own and never takes the other's place."""
        key = call.id
        if key in self.calls:
            key = f"{call.id}\x00{id(call)}"
        self.calls[key] = call

    def _remove_call(self, call: Call) -> None:
        if self.calls.get(call.id) is call:
            del self.calls[call.id]
            return
        for key, value in list(self.calls.items()):
            if value is call:
                del self.calls[key]

    # -- what transfers and pickups ask of us -------------------------------------------------------------

    def caller_for(self, tenant: str, extension: str) -> Caller | None:
        """The `Caller` of an extension of `tenant` (a transferor that was the callee), or None."""
        directory = self._directories(tenant)
        if directory is None or extension not in directory.extensions:
            return None
        info = directory.extensions[extension]
        return Caller(
            tenant,
            extension,
            info.name,
            directory.domain,
            info.may_call_out,
            srtp=getattr(info, "srtp", "optional"),
            allow_srtp_over_plain=getattr(info, "allow_srtp_over_plain", False),
            outbound_classes=tuple(getattr(info, "outbound_classes", ())),  # its toll-fraud classes
        )

    def trunk_caller(self, tenant: str, trunk: str) -> Caller | None:
        """The `Caller` of a party reached through `trunk` (only when trunks may transfer)."""
        directory = self._directories(tenant)
        if directory is None:
            return None
        return Caller(tenant, "", "", directory.domain, trunk=trunk, number="anonymous")

    def adopt(self, call: Call) -> None:
        """A call made by the PBX itself (a blind transfer's) joins the running calls."""
        self._add_call(call)
        self.counters["calls"] += 1
        self.counters["active"] = len(self.calls)
        if self.observers:
            self.observers.emit("call_started", call)

    def uas_session(self, txn: IServerTransaction, call: Call, side: str) -> UasSession:
        """A UAS session for a new INVITE that joins `call` on `side` (INVITE with Replaces, pickup)."""
        flow = txn.flow
        target = (flow.transport.lower(), flow.remote_address[0], flow.remote_address[1])
        return UasSession(self.stack, txn, CallSide(call, side), target=target, **self.session_options)

    # -- what calls ask of us ----------------------------------------------------------------------------

    def directory(self, call: Call) -> Directory:
        directory = self._directories(call.caller.tenant)
        assert directory is not None
        return directory

    def render(self, call: Call, template: str, digits: str | None = None) -> list[Action]:
        if not self.observers:
            return self._dialplans.render(call.caller.tenant, self.context_for(call, digits), template)
        began = time.perf_counter()  # a measurement for metrics and traces, not a timer
        actions = self._dialplans.render(call.caller.tenant, self.context_for(call, digits), template)
        self.observers.emit("dialplan_rendered", call, template, time.perf_counter() - began)
        return actions

    def context_for(self, call: Call, digits: str | None = None) -> Mapping[str, Any]:
        """The dialplan context (docs/dialplan.md), built with the dialplan layer's own `make_context`."""
        directory = self.directory(call)
        invite = call.invite
        variants, groups = self._directory_view(directory)
        tenant, lookup = directory.tenant, self.location.lookup
        overrides = self.extension_overrides
        extensions = LiveExtensions(
            variants,
            lambda number: bool(lookup(tenant, number)),
            None if overrides is None else (lambda number: overrides(tenant, number)),
        )
        try:
            display = invite.from_.display_name or ""
        except SipParseError:
            display = ""
        headers = {
            name.lower(): value
            for name in ("User-Agent", "Subject", "Priority", "Alert-Info")
            if (value := invite.headers.get(name)) is not None
        }
        trunk = call.caller.trunk or None
        return make_context(
            call=CallInfo(
                id=call.id,
                dialed=call.dialed,
                display_name=display,
                from_trunk=trunk,
                did=call.dialed if trunk else None,
                headers=headers,
                transport=call.txn.flow.transport.lower(),
                referred_by=call.referred_by,
            ),
            caller=CallerInfo(
                tenant=call.caller.tenant,
                extension=call.caller.extension or None,
                name=call.caller.name,
                authenticated=trunk is None,
                may_call_out=call.caller.may_call_out,
            ),
            directory=TenantDirectory(extensions, groups),
            now=datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC),
            result=call.run_state.result,
            digits=digits,
            variables=call.vars,
        )

    def _directory_view(
        self, directory: Directory
    ) -> tuple[Mapping[str, tuple[ExtensionInfo, ExtensionInfo]], Mapping[str, tuple[str, ...]]]:
        """What the context needs of a directory that does not change from call to call, made once per
        directory (a new Directory object, after a reload, gets a new one)."""
        cached = self._views.get(directory.tenant)
        if cached is None or cached[0] is not directory:
            groups = MappingProxyType({name: tuple(members) for name, members in directory.groups.items()})
            cached = self._views[directory.tenant] = (
                directory,
                extension_variants(directory.extensions),
                groups,
            )
        return cached[1], cached[2]

    def resolve(
        self, call: Call, targets: Sequence[str], options: Mapping[str, str] = MappingProxyType({})
    ) -> list[LegTarget]:
        """Where the targets of a `dial` ring: every registered contact of its extensions and groups, its
        SIP URIs (resolved by RFC 3263 when their leg starts) and its trunk targets (`options`: the dial's,
        for caller ID and privacy).

        Raises:
            SipError: 403 for a trunk target when the caller may not call out.
        """
        directory = self.directory(call)
        numbers: list[str] = []
        out: list[LegTarget] = []
        for target in targets:
            if target.startswith("group:"):
                numbers.extend(directory.groups.get(target[6:], ()))
            elif target.startswith("trunk:"):
                found = self._trunk_target(call, target, options)
                if found is not None:
                    out.append(found)
            elif target.startswith(("sip:", "sips:")):
                out.append(self._uri_target(call, target))
            else:
                numbers.append(target)
        seen: set[tuple[str, str]] = set()
        domain = directory.domain
        for number in numbers:
            if number not in directory.extensions:
                continue
            for binding in self.location.lookup(directory.tenant, number):
                if (number, binding.contact) in seen:
                    continue
                seen.add((number, binding.contact))
                info = directory.extensions[number]
                out.append(  # one LegTarget (`dataclasses.replace` of one cost as much again)
                    LegTarget.contact(
                        number,
                        binding,
                        parse_flow_text(binding.received),
                        domain,
                        headers=call.caller.asserted,  # after the Path's Route
                        srtp=getattr(info, "srtp", "optional"),
                        srtp_over_plain=getattr(info, "allow_srtp_over_plain", False),
                    )
                )
        return out

    def _uri_target(self, call: Call, uri: str) -> LegTarget:
        self.outbound.check_uri(call, uri, self.directory(call).domain)  # 403 when it may not leave
        lookup = self._uri_credentials
        tenant = call.caller.tenant
        credentials = None if lookup is None else (lambda realm: lookup(tenant, realm))
        return LegTarget(uri, uri, uri, credentials=credentials)

    def _trunk_target(self, call: Call, target: str, options: Mapping[str, str]) -> LegTarget | None:
        """A `trunk:NAME/NUMBER` target (docs/trunks.md), or None for a trunk the tenant does not have."""
        caller = call.caller
        name, _, number = target[6:].partition("/")
        # The number as it will be sent, judged after the dialplan chose it: a 403 (SipError) for a class,
        # a limit or a caller that may not call out; never for an emergency number (docs/security.md).
        self.outbound.check_trunk(call, name, number)
        trunk = self._trunks.trunk(caller.tenant, name) if self._trunks is not None else None
        if trunk is None:
            self._log.warn(
                "Call {id}: no trunk {name} in tenant {tenant}", id=call.id, name=name, tenant=caller.tenant
            )
            return None
        up = self._trunks is not None and self._trunks.is_up(caller.tenant, name)
        if not up:
            self._log.info("Trunk {name} is down: 503 for {target}", name=name, target=target)
        privacy = options.get("privacy")
        if privacy is None:
            privacy = "yes" if withheld(call.invite) else "no"
        who = presentation(
            trunk,
            callerid=options.get("callerid"),
            callername=options.get("callername"),
            extension=caller.extension,
            name=caller.name,
            withheld=privacy == "yes",
        )
        from_value, headers = identity_headers(trunk, who)
        uri = request_uri(trunk, number)
        return LegTarget(
            target,
            uri,
            uri,
            credentials=trunk_credentials(trunk),
            next_hops=next_hops(trunk),
            from_value=from_value,
            headers=headers + route_headers(trunk),
            codecs=trunk.codecs,
            trunk=name,
            dtmf=trunk.dtmf,
            refused=0 if up else 503,
            srtp=getattr(trunk, "srtp", "optional"),
            srtp_over_plain=getattr(trunk, "allow_srtp_over_plain", False),
            secure=str(getattr(trunk, "transport", "")).lower() == "tls",
        )

    def use_trunk(self, call: Call, leg: OutboundLeg) -> bool:
        """Count a leg's call on its trunk; False when the trunk is at its max_calls."""
        if self._trunks is None:
            return False
        return self._trunks.acquire(leg, call.caller.tenant, leg.target.trunk)

    def release_trunk(self, owner: object) -> None:
        """The leg or call `owner` no longer holds a call on its trunk."""
        if self._trunks is not None:
            self._trunks.release(owner)

    def resolve_uri(self, uri: str) -> Deferred[Sequence[tuple[str, str, int]]]:
        """The next hops of a SIP URI target, in order (RFC 3263); fails when it has none."""
        if self._locate is None:
            raise SipError(503, "No resolver")
        return self._locate(uri).addCallback(
            lambda targets: [t.hop for t in targets]  # tuples carrying the TLS server name
        )

    def local_answer(self, call: Call, offer_body: bytes, parsed: SessionDescription | None = None) -> bytes:
        """Our SDP answer when the PBX itself answers (leg "a" of the relay receives the caller's media);
        `parsed`: the offer, when it was parsed already."""
        assert call.media is not None
        # A SipError (400/413/488) for a body the PBX cannot answer.
        offer = parsed if parsed is not None else parse_sdp(offer_body)
        offer = call.media.srtp_offer("a", offer)  # an SRTP offer made plain (its key kept), or a 488
        leg = call.media.session.leg("a")
        answer = make_answer(offer, leg.local_address, leg.local_port, ("PCMU", "PCMA", "telephone-event"))
        if answer is None:
            raise SipError(488)
        answer = call.media.srtp_answer("a", answer)  # RTP/SAVP with the PBX's key to an SRTP offer
        # One codec (the caller's first G.711) and telephone-event: the PBX then knows what it will hear.
        media = list(answer.media)
        for i, m in enumerate(media):
            if m.port:
                rtpmap = m.rtpmap
                names = {f: (rtpmap[f].encoding if f in rtpmap else "").lower() for f in m.formats}
                audio = [f for f in m.formats if names[f] != "telephone-event"][:1]
                events = [f for f in m.formats if names[f] == "telephone-event"][:1]
                media[i] = m.with_formats(audio + events)
                break
        return answer.with_media(tuple(media)).to_bytes()

    def call_ended(self, call: Call) -> None:
        self._remove_call(call)
        if self._trunks is not None:
            self._trunks.release(call.txn)
            for leg in call.legs:
                self._trunks.release(leg)
        self.counters["active"] = len(self.calls)
        if call.answered_at is not None:
            self.counters["answered"] += 1
        else:
            self.counters["failed"] += 1
        cdr = call.cdr()
        # The one log line of a call (a busy PBX logs hundreds per second: keep it to one). Formatted here in
        # one go and given as the format itself, braces doubled: Twisted's formatter then has no field to
        # look up. The fields (the line included) stay in the event.
        via = f" (peer {call.caller.peer})" if call.caller.peer else ""
        by = f" answered by {cdr.answered_by}" if cdr.answered_by else ""
        line = (
            f"Call {call.id} ended: {cdr.cause} (status {cdr.status}, {cdr.duration:.1f} s), "
            f"{cdr.caller}@{cdr.tenant}{via} -> {cdr.dialed}{by}"
        )
        self._log.info(
            as_log_format(line),
            line=line,
            id=call.id, cause=cdr.cause, status=cdr.status, caller=cdr.caller, tenant=cdr.tenant,
            dialed=cdr.dialed, peer=call.caller.peer, answered_by=cdr.answered_by,
        )  # fmt: skip
        if self._cdrs is not None:
            self._cdrs.write_cdr(cdr).addErrback(lambda f: self._log.failure("Could not write a CDR", f))
        if self.observers:
            self.observers.emit("call_ended", call)

    def drain(self, timeout: float) -> Deferred[None]:
        """Take no new calls (503, and 503 to OPTIONS from the stack), let the calls up finish; fires once
        none is left or after `timeout` seconds (then `stop` hangs up the rest)."""
        self.draining = True
        self.stack.out_of_service = True
        done: Deferred[None] = Deferred()
        deadline = self.clock.seconds() + timeout
        if self.calls:
            self._log.info(
                "Draining: no new calls; waiting up to {timeout:g} s for {n} call(s) to end",
                timeout=timeout, n=len(self.calls),
            )  # fmt: skip

        def check() -> None:
            if not self.calls or self.clock.seconds() >= deadline:
                if self.calls:
                    self._log.info("Drain time is up: hanging up {n} call(s)", n=len(self.calls))
                done.callback(None)
                return
            self.clock.callLater(min(0.5, max(0.0, deadline - self.clock.seconds())), check)

        check()
        return done

    def stop(self) -> Deferred[None]:
        for call in list(self.calls.values()):
            if call.answered_at is not None:
                call.hangup("pbx")
            else:
                call.reject(503)
        return succeed(None)
