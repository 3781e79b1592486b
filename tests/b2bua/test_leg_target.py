"""A registered contact reached through the proxies of its Path (RFC 3327 5.4)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua.leg import LegTarget
from pbx.store import Binding
from tests.b2bua.fakes import TENANT, Harness


def binding(path: str) -> Binding:
    return Binding(
        tenant="default",
        aor="1001",
        contact="sip:1001@10.0.0.5:5062",
        expires_at=100.0,
        call_id="c",
        cseq=1,
        received="udp:127.0.0.2:5060",
        local="udp:127.0.0.1:5060",
        path=path,
        registered_at=0.0,
    )


def test_the_path_becomes_the_route_set() -> None:
    destination = ("udp", "127.0.0.2", 5060)
    through = LegTarget.contact("1001", binding("<sip:127.0.0.2;lr>"), destination, "a.example")
    assert through.headers == (("Route", "<sip:127.0.0.2;lr>"),)
    assert through.uri == "sip:1001@10.0.0.5:5062" and through.to == "sip:1001@a.example"
    direct = LegTarget.contact("1001", binding(""), destination, "a.example")
    assert direct.headers == ()


class ThroughTheB2BUA(SynchronousTestCase):
    def test_a_call_to_a_contact_registered_through_a_proxy_carries_its_path_as_route(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        h = Harness.build(directory, "dial 1002")
        h.register_1002()
        (old,) = h.location.lookup(TENANT, "1002")
        path = "<sip:127.0.0.1:5060;lr;received=sip:192.0.2.7:40000>"
        h.location.apply(TENANT, "1002", [replace(old, path=path)], [])
        h.place_call()
        (sent,) = h.invites()
        self.assertEqual(sent.request.headers.get_all("Route"), [path])
        self.assertEqual(sent.destination, ("udp", "127.0.0.1", 5062))  # the flow, i.e. the proxy
