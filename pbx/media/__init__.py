"""Media: RTP port pool and the relay that anchors a call's RTP (later: G.711, RFC 4733, player, recorder).

Knows nothing of SIP or of the rest of the PBX: call control passes plain addresses and ports. Modules:
`interfaces` (the relay's seam, `IMediaRelay`), `ports` (`PortPool`), `relay` (`UdpMediaRelay`, the
in-process relay with symmetric RTP and latching; `MemoryMediaRelay`, its in-memory twin for tests).
"""

from pbx.media.interfaces import IMediaRelay, IRelayLeg, IRelaySession, LegStats, SessionStats
from pbx.media.ports import PortPool, PortsExhausted
from pbx.media.relay import UdpMediaRelay
from pbx.media.relay_memory import MemoryMediaRelay

__all__ = [
    "IMediaRelay",
    "IRelayLeg",
    "IRelaySession",
    "LegStats",
    "MemoryMediaRelay",
    "PortPool",
    "PortsExhausted",
    "SessionStats",
    "UdpMediaRelay",
]
