"""The SIP stack and its transports, built from `[sip]` and `[tls]`; the service that opens the listeners."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from pbx.config import Config
from pbx.service.adapters import connection_limits
from pbx.service.edge import NftablesBlocklist, build_admission
from pbx.sip.interfaces import IFlow
from pbx.sip.parser import ParserLimits
from pbx.sip.sdp_crypto import mask_crypto
from pbx.sip.stack import SipStack
from pbx.sip.timers import TimerConfig
from pbx.sip.tls import TlsPolicy, client_options_factory, ensure_dev_certificate, server_options
from pbx.sip.tls_reload import ReloadableServerOptions
from pbx.sip.transport import TransportManager
from pbx.trunks.targets import split_host_port

_log = Logger(namespace="pbx")
_trace_log = Logger(namespace="pbx.sip.trace")


def sip_trace(direction: str, transport: str, flow: IFlow, data: bytes) -> None:
    """Log one SIP message as sent or received (the `--sip-trace` option). SRTP keys (`a=crypto` ...
    `inline:` key material, RFC 4568) are masked: keys never reach a log."""
    arrow = "<--" if direction == "recv" else "-->"
    host, port = flow.remote_address[:2]
    _trace_log.info(
        "{arrow} {transport} {host}:{port} ({size} bytes)\n{text}",
        arrow=arrow,
        transport=transport,
        host=host,
        port=port,
        size=len(data),
        text=mask_crypto(data.decode("utf-8", "replace")),
    )


class SipService(service.Service):
    """Opens the SIP listeners (in privilegedStartService, so a busy port stops startup) and closes them."""

    def __init__(self, config: Config, transports: TransportManager, mutual_tls_options: Any = None) -> None:
        self._config = config
        self.transports = transports
        self.ports: list[Any] = []
        self._mutual_tls_options = mutual_tls_options
        self.tls_reloadable: ReloadableServerOptions | None = None  # what the TLS listeners serve
        self.tls_watch = False  # configured certificate files: watch them for changes

    def privilegedStartService(self) -> None:
        for listener in self._config.sip.listeners:
            listen = {
                "udp": self.transports.listen_udp,
                "tcp": self.transports.listen_tcp,
                "tls": self.transports.listen_tls,
            }[listener.transport]
            if listener.require_client_certificate:
                port = self.transports.listen_tls(
                    listener.host,
                    listener.port,
                    listener.advertise or "",
                    server_options=self._mutual_tls_options,
                )
            else:
                port = listen(listener.host, listener.port, listener.advertise or "")
            self.ports.append(port)
            _log.info(
                "SIP listening on {transport} {host} port {port}",
                transport=listener.transport.upper(),
                host=listener.host,
                port=listener.port,
            )
        super().privilegedStartService()

    def stopService(self) -> Any:
        super().stopService()
        return self.transports.stop()


def build_sip(config: Config, the_reactor: Any, *, trace: bool = False) -> tuple[SipStack, SipService]:
    """The stack (`[sip]` timers and User-Agent) with its transports (listeners opened by the service)."""
    sip = config.sip
    stack = SipStack(
        the_reactor,
        # An INVITE's 100 Trying only when no 180/183/final went out within 100 ms (RFC 3261 17.2.1): a
        # callee that rings at once spares the caller's side one message, its bytes and its send.
        timers=TimerConfig(t1=sip.t1, t2=sip.t2, t4=sip.t4, trying=0.1),
        user_agent=sip.user_agent,
        supported=("timer", "path"),  # RFC 4028; RFC 3327 (registrations through a proxy: docs/scaling.md)
    )
    tls_server = mutual_tls = None
    policy = tls_policy(config)
    if any(listener.transport == "tls" for listener in sip.listeners):
        cert, key = config.tls.certificate, config.tls.private_key
        if cert is None or key is None:
            names = sorted({h for t in config.tenants for h in t.hosts} | {"localhost"})
            cert, key = ensure_dev_certificate(config.data_dir / "tls", names)
            _log.info("Using the development TLS certificate {cert}", cert=str(cert))
        tls_server = ReloadableServerOptions(
            cert, key, partial(server_options, cert, key, policy=policy), the_reactor
        )
        if any(listener.require_client_certificate for listener in sip.listeners):
            if config.tls.ca_certificates is None:
                raise ValueError("[[sip.listen]] require_client_certificate needs [tls] ca_certificates")
            ca = config.tls.ca_certificates
            mutual_tls = tls_server.variant(  # reloaded with the certificate, like the other listeners
                partial(server_options, cert, key, ca, require_client_certificate=True, policy=policy)
            )
    admission = build_admission(config, the_reactor)  # [edge]: checked before anything is parsed
    if config.edge.nftables_table:
        admission.observers.append(NftablesBlocklist(the_reactor, config.edge.nftables_table))
    transports = TransportManager(
        the_reactor,
        stack,
        limits=ParserLimits(max_message_size=sip.max_message_size),
        idle_timeout=sip.idle_timeout,
        tls_server_options=tls_server,
        tls_client_options_factory=client_options_factory(
            config.tls.ca_certificates, policy=policy, client_certificates=trunk_client_certificates(config)
        ),
        trace=sip_trace if (trace or config.sip_trace) else None,
        admission=admission,
        **connection_limits(config),
    )
    stack.attach_transport(transports)
    sip_service = SipService(config, transports, mutual_tls)
    sip_service.tls_reloadable = tls_server
    sip_service.tls_watch = config.tls.certificate is not None
    return stack, sip_service


def tls_policy(config: Config) -> TlsPolicy:
    """`[tls] min_version` and `ciphers` ("" keeps the AEAD-only default)."""
    if config.tls.ciphers:
        return TlsPolicy(min_version=config.tls.min_version, ciphers=config.tls.ciphers)
    return TlsPolicy(min_version=config.tls.min_version)


def trunk_client_certificates(config: Config) -> dict[str, tuple[Path, Path]]:
    """Carrier name -> (certificate, key) of the trunks with a client certificate (mutual TLS).

    The names are those outgoing TLS verifies: the trunk's host, its proxies' and its outbound proxy's hosts.
    """
    found: dict[str, tuple[Path, Path]] = {}
    for tenant in config.tenants:
        for trunk in tenant.trunks.values():
            if trunk.tls_certificate is None or trunk.tls_private_key is None:
                continue
            hosts = [trunk.host, *trunk.proxies, trunk.outbound_proxy]
            for host in hosts:
                if host:
                    found[split_host_port(host)[0].lower()] = (trunk.tls_certificate, trunk.tls_private_key)
    return found
