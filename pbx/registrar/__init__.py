"""The registrar: REGISTER with digest auth (`registrar`), the location service (`location`), brute-force
blocking (`guard`) and NAT keep-alive (`keepalive`)."""

from pbx.registrar.challenge import ChallengePolicy
from pbx.registrar.guard import BruteForceGuard
from pbx.registrar.keepalive import KeepAlive
from pbx.registrar.location import LocationService
from pbx.registrar.registrar import Domain, Registrar, RegistrarPolicy, flow_text, parse_flow_text

__all__ = [
    "BruteForceGuard",
    "ChallengePolicy",
    "Domain",
    "KeepAlive",
    "LocationService",
    "Registrar",
    "RegistrarPolicy",
    "flow_text",
    "parse_flow_text",
]
