"""`pbx.trunks.targets`: the carrier's URIs and the targets of a trunk's requests (proxies, RFC 3263)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from pbx.config import Trunk
from pbx.sip.resolver import ResolutionError, Target
from pbx.trunks.targets import (
    TrunkLocator,
    aor,
    literal_targets,
    outbound_proxy_uri,
    registrar_uri,
    split_host_port,
)


def result(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


def test_split_host_port() -> None:
    assert split_host_port("a.example") == ("a.example", 0)
    assert split_host_port("a.example:5080") == ("a.example", 5080)
    assert split_host_port("[2001:db8::1]:5070") == ("2001:db8::1", 5070)
    assert split_host_port("[2001:db8::1]") == ("2001:db8::1", 0)


def test_uris() -> None:
    trunk = Trunk("c", host="sip.carrier.example", port=5080, transport="tcp", username="1555")
    assert str(registrar_uri(trunk)) == "sip:sip.carrier.example:5080;transport=tcp"
    assert str(aor(trunk)) == "sip:1555@sip.carrier.example"
    assert outbound_proxy_uri(trunk) is None
    by_proxy = Trunk("c", proxies=("[2001:db8::1]:5070",), outbound_proxy="192.0.2.9:5065", username="u")
    assert str(registrar_uri(by_proxy)) == "sip:[2001:db8::1]:5070"
    assert str(aor(by_proxy)) == "sip:u@[2001:db8::1]"
    assert str(outbound_proxy_uri(by_proxy)) == "sip:192.0.2.9:5065"


def test_literal_targets() -> None:
    trunk = Trunk("c", host="192.0.2.1", transport="tcp")
    assert result(literal_targets(registrar_uri(trunk))) == [Target("tcp", "192.0.2.1", 5060)]
    failure = result(literal_targets(registrar_uri(Trunk("c", host="carrier.example"))))
    assert isinstance(failure, Failure) and failure.check(ResolutionError)


def test_proxies_are_resolved_in_order_and_merged() -> None:
    answers = {
        "sip:edge1.example": [Target("udp", "192.0.2.1", 5060), Target("udp", "192.0.2.2", 5060)],
        "sip:edge2.example:5080": [Target("udp", "192.0.2.2", 5060), Target("udp", "192.0.2.3", 5080)],
    }
    asked: list[str] = []

    def locate(uri: Any) -> Deferred[list[Target]]:
        asked.append(str(uri))
        if str(uri) == "sip:bad.example":
            return fail(ResolutionError("NXDOMAIN"))
        return succeed(answers[str(uri)])

    trunk = Trunk("c", proxies=("bad.example", "edge1.example", "edge2.example:5080"))
    found = result(TrunkLocator(trunk, locate).resolve(registrar_uri(trunk)))
    assert [t.address for t in found] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert asked == ["sip:bad.example", "sip:edge1.example", "sip:edge2.example:5080"]
    only_bad = Trunk("c", proxies=("bad.example",))
    failure = result(TrunkLocator(only_bad, locate).resolve(registrar_uri(only_bad)))
    assert isinstance(failure, Failure) and failure.check(ResolutionError)


def test_host_and_outbound_proxy_resolve_the_uri_asked() -> None:
    asked: list[str] = []

    def locate(uri: Any) -> Deferred[list[Target]]:
        asked.append(str(uri))
        return succeed([Target("udp", "192.0.2.7", 5060)])

    trunk = Trunk("c", host="carrier.example", proxies=("192.0.2.1",), outbound_proxy="proxy.example")
    TrunkLocator(trunk, locate).resolve("sip:proxy.example")
    TrunkLocator(Trunk("c", host="carrier.example"), locate).resolve(
        registrar_uri(Trunk("c", host="carrier.example"))
    )
    assert asked == ["sip:proxy.example", "sip:carrier.example"]
