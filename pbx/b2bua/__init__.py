"""The B2BUA: calls bridged as two dialogs, media anchored on the PBX (`b2bua`, `call`, `leg`, `media`)."""

from pbx.b2bua.b2bua import B2BUA, Caller, Directory, PeerLookup, TrustedPeer
from pbx.b2bua.call import Call
from pbx.dialplan.simulate import ExtensionInfo

__all__ = ["B2BUA", "Call", "Caller", "Directory", "ExtensionInfo", "PeerLookup", "TrustedPeer"]
