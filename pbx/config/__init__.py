"""The configuration layer: TOML in, frozen and validated values out.

The bottom layer of the PBX, beside `pbx.store`: it imports nothing from other `pbx` packages. Only the
composition root (`pbx/tap.py`) reads these objects; every other layer gets plain constructor arguments.
"""

from pbx.config.load import ConfigError, load_config, parse_config
from pbx.config.model import (
    CallsConfig,
    Config,
    Extension,
    ListenerConfig,
    MediaConfig,
    MwiConfig,
    OutboundCredentials,
    RegistrarConfig,
    SecurityConfig,
    SipConfig,
    Tenant,
    TlsConfig,
    TrustedPeer,
    normalize_host,
)
from pbx.config.trunks import Trunk
from pbx.config.voicemail import Mailbox, SmtpConfig, VoicemailConfig

__all__ = [
    "CallsConfig",
    "MwiConfig",
    "Config",
    "ConfigError",
    "Extension",
    "ListenerConfig",
    "MediaConfig",
    "RegistrarConfig",
    "SecurityConfig",
    "SipConfig",
    "Tenant",
    "TlsConfig",
    "OutboundCredentials",
    "TrustedPeer",
    "Mailbox",
    "SmtpConfig",
    "Trunk",
    "VoicemailConfig",
    "load_config",
    "normalize_host",
    "parse_config",
]
