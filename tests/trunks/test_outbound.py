"""What a trunk call looks like on the wire (`pbx.trunks.outbound`): URIs, next hops, caller ID, credentials,
the codec offer."""

from __future__ import annotations

from pbx.config.trunks import Trunk
from pbx.sip.sdp import SessionDescription
from pbx.trunks.outbound import (
    ANONYMOUS_FROM,
    Presentation,
    identity_headers,
    next_hops,
    offer_for_trunk,
    presentation,
    request_uri,
    route_headers,
    trunk_credentials,
    trunk_domain,
)
from tests.b2bua.fakes import sdp_body

HOST = Trunk("t", host="sip.carrier.example", port=5080, transport="tcp")


def test_uris_and_hops() -> None:
    assert request_uri(HOST, "+15551234567") == "sip:+15551234567@sip.carrier.example:5080;transport=tcp"
    assert next_hops(HOST) == ()
    assert route_headers(HOST) == ()
    listed = Trunk("t", proxies=("192.0.2.1:5060", "[2001:db8::1]:5070"))
    assert trunk_domain(listed) == "192.0.2.1"
    assert trunk_domain(Trunk("t", proxies=("[2001:db8::1]:5070",))) == "[2001:db8::1]"
    assert next_hops(listed) == ("sip:192.0.2.1:5060", "sip:[2001:db8::1]:5070")
    proxied = Trunk("t", host="c.example", outbound_proxy="proxy.example:5062")
    assert next_hops(proxied) == ("sip:proxy.example:5062",)
    assert route_headers(proxied) == (("Route", "<sip:proxy.example:5062;lr>"),)


def test_presentation_rules() -> None:
    plain = Trunk("t", host="c.example")
    who = presentation(plain, callerid=None, callername=None, extension="1001", name="Alice", withheld=False)
    assert who == Presentation("1001", "Alice")
    who = presentation(
        plain, callerid="+4420", callername=None, extension="1001", name="Alice", withheld=False
    )
    assert who == Presentation("+4420", "Alice")
    who = presentation(
        plain, callerid="Sales", callername=None, extension="1001", name="Alice", withheld=True
    )
    assert who == Presentation("1001", "Sales", True)
    fixed = Trunk("t", host="c.example", caller_id="+15550000000", caller_id_name="ACME")
    who = presentation(
        fixed, callerid="+4420", callername="X", extension="1001", name="Alice", withheld=False
    )
    assert who == Presentation("+15550000000", "ACME")


def test_identity_headers() -> None:
    trunk = Trunk("t", host="c.example")
    assert identity_headers(trunk, Presentation("1001", 'A "B"')) == (
        '"A \\"B\\"" <sip:1001@c.example>',
        (("P-Asserted-Identity", '"A \\"B\\"" <sip:1001@c.example>'),),
    )
    assert identity_headers(trunk, Presentation("1001", "", True)) == (
        ANONYMOUS_FROM,
        (("P-Asserted-Identity", "<sip:1001@c.example>"), ("Privacy", "id")),
    )
    no_pai = Trunk("t", host="c.example", send_pai=False)
    assert identity_headers(no_pai, Presentation("1001", "")) == ("<sip:1001@c.example>", ())


def test_credentials_by_realm() -> None:
    assert trunk_credentials(Trunk("t", host="h")) is None
    anyrealm = trunk_credentials(Trunk("t", host="h", username="u", password="p"))
    assert anyrealm is not None and anyrealm("whatever") is not None
    one = trunk_credentials(Trunk("t", host="h", username="u", auth_username="a", password="p", realm="r"))
    assert one is not None and one("other") is None
    found = one("r")
    assert found is not None and found.username == "a"


def test_offer_for_trunk() -> None:
    body = sdp_body()
    assert offer_for_trunk(body, ()) is body
    assert offer_for_trunk(body, ("PCMU", "PCMA", "telephone-event")) is body  # already in order
    reordered = offer_for_trunk(body, ("pcma", "telephone-event"))
    assert reordered is not None
    assert SessionDescription.parse(reordered).media[0].formats == ("8", "101")
    assert offer_for_trunk(body, ("G722", "telephone-event")) is None
    assert offer_for_trunk(b"garbage", ("PCMU",)) is None
