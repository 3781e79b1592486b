"""Calls as a service: the B2BUA with its dialplans, the media relay and the PBX's own media applications."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from pbx.apps import IvrApps, MusicOnHold
from pbx.apps.voicemail.deposit import VoicemailDeposit
from pbx.apps.voicemail.mailboxes import Mailboxes
from pbx.b2bua import B2BUA
from pbx.config import Config
from pbx.dialplan import DialplanEngine
from pbx.media import PortPool, UdpMediaRelay
from pbx.media.endpoint import MediaEngine
from pbx.media.ng import NgClient
from pbx.media.recorder import thread_writer
from pbx.media.rtpengine import RtpengineRelay
from pbx.service.adapters import (
    directories,
    domain_lookup,
    outbound_credentials,
    peer_lookup,
    sip_locator,
    trunk_routing,
)
from pbx.service.outbound import outbound_policy
from pbx.service.process import parked_legs
from pbx.service.registrar import RegistrarService
from pbx.service.voicemail import build_access
from pbx.sip.stack import SipStack
from pbx.trunks.settings import ITrunkStates

_log = Logger(namespace="pbx")


_CHECKOUT = Path(__file__).resolve().parents[2]


def shipped_sounds(checkout: Path = _CHECKOUT, prefix: str = sys.prefix) -> Path:
    """The shipped prompts (scripts/make_prompts), played by name: `sounds/en` of the checkout (a source tree
    or an editable install), else where a wheel installs them (`PREFIX/share/pbx/sounds/en`)."""
    for candidate in (checkout / "sounds" / "en", Path(prefix) / "share" / "pbx" / "sounds" / "en"):
        if candidate.is_dir():
            return candidate
    return checkout / "sounds" / "en"


SOUNDS_DIR = shipped_sounds()


class CallsService(service.Service):
    """Hangs up the calls and closes the media engine and relay when the PBX stops.

    Attributes:
        mailboxes: the voicemail boxes the voicemail applications use (None when built without them).
    """

    def __init__(
        self,
        b2bua: B2BUA,
        relay: UdpMediaRelay,
        engine: MediaEngine | None = None,
        mailboxes: Mailboxes | None = None,
    ) -> None:
        self.b2bua = b2bua
        self.relay = relay
        self.engine = engine
        self.mailboxes = mailboxes
        self.drain_timeout = 0.0  # `[calls] drain_timeout`: seconds calls may go on once the PBX stops

    def drain(self) -> Deferred[None]:
        """Before anything stops: no new calls, and those up may finish within `drain_timeout`."""
        if self.drain_timeout <= 0:
            return succeed(None)
        return self.b2bua.drain(self.drain_timeout)
        self.dialplans: DialplanEngine | None = None

    def stopService(self) -> Any:
        super().stopService()
        self.b2bua.stop()
        if self.engine is not None:
            self.engine.close()
        external = self.b2bua.bridge_relay
        if isinstance(external, RtpengineRelay):  # its calls are deleted on rtpengine, then its port closes
            closing = external.close()
            closing.addBoth(lambda _: external.client.close())
            port = external.client.transport
            if port is not None:
                closing.addBoth(lambda _: port.stopListening())
            return DeferredList([closing, self.relay.close()])
        return self.relay.close()


def build_rtpengine(address: str, the_reactor: Any) -> RtpengineRelay:
    """An `RtpengineRelay` talking to rtpengine's ng listener at `address` ("IP:port", "[IPv6]:port")
    from an ephemeral UDP port on the loopback or wildcard address of the same family."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    client = NgClient(the_reactor, (host, int(port)))
    loopback = ipaddress.ip_address(host).is_loopback
    interface = ("::1" if loopback else "::") if ":" in host else ("127.0.0.1" if loopback else "0.0.0.0")
    the_reactor.listenUDP(0, client, interface=interface)
    _log.info("Media: bridged calls on rtpengine at {address}", address=address)
    relay = RtpengineRelay(client)
    relay.ping().addCallbacks(
        lambda _: _log.info("Media: rtpengine at {address} answers", address=address),
        lambda failure: _log.warn(
            "Media: rtpengine at {address} does not answer ({e}): bridged calls will get 503 until it does",
            address=address,
            e=failure.getErrorMessage(),
        ),
    )
    return relay


def build_media_apps(
    config: Config, b2bua: B2BUA, the_reactor: Any, mailboxes: Mailboxes | None = None
) -> MediaEngine:
    """The PBX's own media (prompts, menus, recordings, music on hold) plugged into the B2BUA's actions.

    Recordings are written in the reactor's thread pool (the fsync of a finished recording stays off the
    reactor); the shipped prompts are loaded and encoded now, so no call waits for a disk. The voicemail
    applications register here with `mailboxes` (`IMailboxes`), when given."""
    engine = MediaEngine(the_reactor, SOUNDS_DIR, writer=thread_writer(the_reactor))
    count = engine.prompts.preload()
    _log.info("Media: {count} prompts loaded from {dir}", count=count, dir=str(SOUNDS_DIR))
    ivr = IvrApps(engine, config.dialplan_dir, config.data_dir / "recordings")
    ivr.register(b2bua.apps)
    b2bua.hold_music = MusicOnHold(engine, config.dialplan_dir)
    # The voicemail applications (deposit `voicemail MAILBOX`, access *97/*98) register into b2bua.apps
    # here, over `mailboxes` (an `IMailboxes`; None in tests that build calls without voicemail).
    if mailboxes is not None:
        VoicemailDeposit(
            ivr,
            mailboxes,
            the_reactor,
            min_message_seconds=config.voicemail.min_message_seconds,
            silence_seconds=config.voicemail.silence_seconds,
        ).register(b2bua.apps)
    return engine


def build_calls(
    config: Config,
    stack: SipStack,
    registrar: RegistrarService,
    the_reactor: Any,
    mailboxes: Mailboxes | None = None,
    trunk_states: ITrunkStates | None = None,
    directory: Any = None,
) -> CallsService:
    """The B2BUA with its dialplans and media relay (and the voicemail applications over `mailboxes`);
    `trunk_states`: the trunks' live state (registration, OPTIONS pings), else a trunk is up while enabled;
    `directory`: tenant -> `Directory` (the console's live extension directory), else the config's."""
    media = config.media
    pool = PortPool(media.rtp_port_min, media.rtp_port_max)
    relay = UdpMediaRelay(
        the_reactor,
        pool,
        bind_host=media.bind_host,
        advertise=media.advertise or None,
        keep_open=parked_legs(pool.capacity),
    )
    dialplans = DialplanEngine(config.dialplan_dir)
    b2bua = B2BUA(
        the_reactor,
        stack,
        registrar.location,
        registrar.authenticator,
        domain_lookup(config),
        directory if directory is not None else directories(config),
        dialplans,
        relay,
        registrar.store,
        registrar.guard,
        peers=peer_lookup(config),
        locate=sip_locator(config, the_reactor).resolve,
        uri_credentials=outbound_credentials(config),
        trunks=trunk_routing(config, trunk_states),
        outbound=outbound_policy(config, the_reactor),
        ring_timeout=config.calls.ring_timeout,
        max_call_duration=config.calls.max_call_duration,
        codecs=config.calls.codecs,
        md5_only_user_agents=config.security.md5_only_user_agents,
        host="pbx",  # in the Call-IDs of outbound legs: no tenant's domain (they reach other tenants, trunks)
    )
    if media.relay == "rtpengine":  # bridged calls' media on rtpengine (docs/media.md)
        b2bua.bridge_relay = build_rtpengine(media.rtpengine, the_reactor)
    for method in ("INVITE", "BYE", "UPDATE", "INFO"):
        stack.register(method, b2bua)
    stack.answer_statelessly("INVITE", b2bua.stateless_challenge)
    engine = build_media_apps(config, b2bua, the_reactor, mailboxes)
    if mailboxes is not None:  # mailbox access: wrong PINs count for the registrar's brute-force guard
        build_access(config, mailboxes, engine, registrar.guard, the_reactor).register(b2bua.apps)
    calls = CallsService(b2bua, relay, engine, mailboxes)
    calls.drain_timeout = config.calls.drain_timeout
    calls.dialplans = dialplans  # the console shows its templates' errors
    return calls
