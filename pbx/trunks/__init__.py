"""SIP trunks: the PBX as a carrier's client (outbound registration, OPTIONS pings, the trunk's state) and
the rules that tell a trunk's inbound calls from anyone else's.

Below the B2BUA (which routes `dial trunk:NAME/NUMBER` and inbound DIDs) and beside the registrar; it uses
the SIP library's usages and never reads the config: `settings.TrunkSettings` is what it needs of a trunk.
"""
