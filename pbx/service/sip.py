"""The SIP stack and its transports, built from `[sip]` and `[tls]`; the service that opens the listeners."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.logger import Logger

from pbx.config import Config
from pbx.service.adapters import connection_limits
from pbx.sip.interfaces import IFlow
from pbx.sip.parser import ParserLimits
from pbx.sip.sdp_crypto import mask_crypto
from pbx.sip.stack import SipStack
from pbx.sip.timers import TimerConfig
from pbx.sip.tls import client_options_factory, ensure_dev_certificate, server_options
from pbx.sip.transport import TransportManager

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

    def __init__(self, config: Config, transports: TransportManager) -> None:
        self._config = config
        self.transports = transports
        self.ports: list[Any] = []

    def privilegedStartService(self) -> None:
        for listener in self._config.sip.listeners:
            listen = {
                "udp": self.transports.listen_udp,
                "tcp": self.transports.listen_tcp,
                "tls": self.transports.listen_tls,
            }[listener.transport]
            self.ports.append(listen(listener.host, listener.port, listener.advertise or ""))
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
        timers=TimerConfig(t1=sip.t1, t2=sip.t2, t4=sip.t4),
        user_agent=sip.user_agent,
    )
    tls_server = None
    if any(listener.transport == "tls" for listener in sip.listeners):
        cert, key = config.tls.certificate, config.tls.private_key
        if cert is None or key is None:
            names = sorted({h for t in config.tenants for h in t.hosts} | {"localhost"})
            cert, key = ensure_dev_certificate(config.data_dir / "tls", names)
            _log.info("Using the development TLS certificate {cert}", cert=str(cert))
        tls_server = server_options(cert, key)
    transports = TransportManager(
        the_reactor,
        stack,
        limits=ParserLimits(max_message_size=sip.max_message_size),
        idle_timeout=sip.idle_timeout,
        tls_server_options=tls_server,
        tls_client_options_factory=client_options_factory(config.tls.ca_certificates),
        trace=sip_trace if (trace or config.sip_trace) else None,
        **connection_limits(config),
    )
    stack.attach_transport(transports)
    return stack, SipService(config, transports)
