"""`[tenants.NAME.trunks.TRUNK]` (`pbx.config.load_trunks`): values, normalisation, errors naming the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pbx.config import ConfigError, Trunk, load_config, parse_config
from pbx.config.load import SCHEMA_KEYS
from pbx.config.trunks import TRUNK_KEYS

REPO = Path(__file__).resolve().parents[2]
BASE = Path("/etc/pbx")
T = "tenants.default.trunks.carrier"


def document(trunks: dict[str, Any]) -> dict[str, Any]:
    return {
        "sip": {"listen": [{"transport": "udp", "host": "127.0.0.1"}]},
        "tenants": {
            "default": {
                "domain": "localhost",
                "extensions": {"1000": {"password": "secret"}},
                "trunks": copy.deepcopy(trunks),
            }
        },
    }


def trunks_of(trunks: dict[str, Any]) -> dict[str, Trunk]:
    return dict(parse_config(document(trunks), BASE).tenants[0].trunks)


def carrier(**settings: Any) -> dict[str, Any]:
    return {"carrier": {"host": "sip.carrier.example", **settings}}


def error(trunks: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(document(trunks), BASE)
    return info.value


def test_no_trunks_by_default() -> None:
    config = parse_config({k: v for k, v in document({}).items()}, BASE)
    assert dict(config.tenants[0].trunks) == {}


def test_defaults() -> None:
    trunk = trunks_of(carrier())["carrier"]
    assert trunk == Trunk(name="carrier", host="sip.carrier.example")
    assert (trunk.register, trunk.enabled, trunk.transport, trunk.dtmf) == (False, True, "", "rfc4733")
    assert trunk.codecs == ("PCMU", "PCMA", "telephone-event")


def test_every_setting_read_and_normalised() -> None:
    trunk = trunks_of(
        carrier(
            host="SIP.Carrier.Example.",
            port=5080,
            proxies=["192.0.2.1:5060", "[2001:DB8::2]:5070", "2001:db8::3", "Edge.Carrier.Example"],
            transport="TLS",
            outbound_proxy="[::1]:5090",
            username="pbx-account",
            auth_username="auth-user",
            password="s3cret",
            realm="carrier",
            register=True,
            contact_user="trunk1",
            register_expires=600,
            retry_interval=5,
            options_interval=30,
            codecs=["pcma", "Telephone-Event"],
            dtmf="INFO",
            caller_id="+15550001111",
            caller_id_name="Example Inc",
            send_pai=False,
            dids=["+15551230000", "5551230001"],
            did_source="To",
            networks=["192.0.2.7/24", "2001:db8::1", "192.0.2.0/24"],
            max_calls=30,
            enabled=False,
        )
    )["carrier"]
    assert trunk.host == "sip.carrier.example"
    assert trunk.proxies == ("192.0.2.1:5060", "[2001:db8::2]:5070", "[2001:db8::3]", "edge.carrier.example")
    assert (trunk.transport, trunk.outbound_proxy, trunk.port) == ("tls", "[::1]:5090", 5080)
    assert (trunk.username, trunk.auth_user, trunk.registered_user) == ("pbx-account", "auth-user", "trunk1")
    assert trunk.codecs == ("PCMA", "telephone-event")
    assert (trunk.dtmf, trunk.did_source, trunk.options_interval) == ("info", "to", 30.0)
    assert trunk.networks == ("192.0.2.0/24", "2001:db8::1/128")
    assert trunk.dids == ("+15551230000", "5551230001")
    assert (trunk.max_calls, trunk.enabled, trunk.send_pai) == (30, False, False)
    assert "s3cret" not in repr(trunk)


def test_proxies_alone_are_enough() -> None:
    trunk = trunks_of({"edge": {"proxies": ["192.0.2.1"]}})["edge"]
    assert (trunk.host, trunk.proxies) == ("", ("192.0.2.1",))


def test_trunks_keep_their_order() -> None:
    names = list(trunks_of({"b": {"host": "b.example"}, "a": {"host": "a.example"}}))
    assert names == ["b", "a"]


@pytest.mark.parametrize(
    ("trunks", "path", "words"),
    [
        ({"bad/name": {"host": "a.example"}}, 'tenants.default.trunks."bad/name"', "trunk name"),
        ({"carrier": "sip.example"}, T, "must be a table"),
        ({"carrier": {}}, f"{T}.host", "required unless proxies"),
        (carrier(hots="x"), f"{T}.hots", "unknown key (did you mean 'host'?)"),
        (carrier(host="bad..host"), f"{T}.host", "host name"),
        (carrier(port=70000), f"{T}.port", "0 to 65535"),
        (carrier(proxies="a.example"), f"{T}.proxies", "array of strings"),
        (carrier(proxies=["a.example:99999"]), f"{T}.proxies[0]", "1 to 65535"),
        (carrier(proxies=["ok.example", "a b"]), f"{T}.proxies[1]", "host name"),
        (carrier(transport="sctp"), f"{T}.transport", "udp, tcp, tls"),
        (carrier(outbound_proxy="::1:bad:"), f"{T}.outbound_proxy", "host"),
        (carrier(register=True, password="x"), f"{T}.username", "required when register"),
        (carrier(register=True, username="u"), f"{T}.password", "required when register"),
        (carrier(register="yes"), f"{T}.register", "true or false"),
        (carrier(username="a b"), f"{T}.username", "SIP user part"),
        (carrier(contact_user="a;b"), f"{T}.contact_user", "SIP user part"),
        (carrier(auth_username='a"b'), f"{T}.auth_username", "quotes"),
        (carrier(realm="a\\b"), f"{T}.realm", "quotes"),
        (carrier(password="a\nb"), f"{T}.password", "control characters"),
        (carrier(register_expires=5), f"{T}.register_expires", "10 to 604800"),
        (carrier(retry_interval=0.5), f"{T}.retry_interval", "from 1 to 600"),
        (carrier(options_interval=2), f"{T}.options_interval", "0 (no pings)"),
        (carrier(options_interval=-1), f"{T}.options_interval", "seconds"),
        (carrier(codecs=[]), f"{T}.codecs", "at least one codec"),
        (carrier(codecs=["PCMU", "pcmu"]), f"{T}.codecs[1]", "listed twice"),
        (carrier(codecs=["PCMU", "a b"]), f"{T}.codecs[1]", "encoding name"),
        (carrier(codecs=["telephone-event"]), f"{T}.codecs", "audio codec"),
        (carrier(dtmf="rfc2833"), f"{T}.dtmf", "rfc4733, info, inband"),
        (carrier(did_source="from"), f"{T}.did_source", "request-uri, to"),
        (carrier(dids=["555-1234"]), f"{T}.dids[0]", "digits"),
        (carrier(dids=["5551234", "5551234"]), f"{T}.dids[1]", "listed twice"),
        (carrier(dids=[5551234]), f"{T}.dids[0]", "must be a string"),
        (carrier(networks=["192.0.2.0/33"]), f"{T}.networks[0]", "CIDR"),
        (carrier(networks=["carrier.example"]), f"{T}.networks[0]", "CIDR"),
        (carrier(max_calls=-1), f"{T}.max_calls", "0 to 1000000"),
        (carrier(caller_id="555 1234"), f"{T}.caller_id", "digits"),
        (carrier(caller_id_name="<x>"), f"{T}.caller_id_name", "must not contain"),
        (carrier(enabled=1), f"{T}.enabled", "true or false"),
    ],
)
def test_errors_name_the_key(trunks: dict[str, Any], path: str, words: str) -> None:
    problem = error(trunks)
    assert problem.path == path
    assert words in problem.message


def test_a_did_belongs_to_one_trunk_of_the_tenant() -> None:
    problem = error(
        {"a": {"host": "a.example", "dids": ["100"]}, "b": {"host": "b.example", "dids": ["100"]}}
    )
    assert (
        str(problem)
        == "tenants.default.trunks.b.dids[0]: 100 is already delivered by tenants.default.trunks.a"
    )


def test_two_tenants_may_share_a_did() -> None:
    doc = document({"a": {"host": "a.example", "dids": ["100"]}})
    doc["tenants"]["other"] = {
        "domain": "other.example",
        "trunks": {"a": {"host": "a.example", "dids": ["100"]}},
    }
    assert len(parse_config(doc, BASE).tenants) == 2


def test_registered_contact_users_differ() -> None:
    account = {"host": "a.example", "register": True, "username": "555", "password": "p"}
    problem = error({"a": account, "b": {**account, "host": "b.example"}})
    assert problem.path == "tenants.default.trunks.b.username"
    assert "contact_user" in problem.message
    trunks = trunks_of({"a": account, "b": {**account, "contact_user": "555b"}})
    assert [t.registered_user for t in trunks.values()] == ["555", "555b"]
    assert len(trunks_of({"a": account, "b": {**account, "enabled": False}})) == 2


def test_schema_lists_every_trunk_field() -> None:
    fields = set(Trunk.__dataclass_fields__) - {"name"}
    assert set(TRUNK_KEYS) == fields
    assert SCHEMA_KEYS["tenants.<tenant>.trunks.<trunk>"] == TRUNK_KEYS
    assert "trunks" in SCHEMA_KEYS["tenants.<tenant>"]


def test_the_example_trunk_is_documented_and_off() -> None:
    config = load_config(REPO / "pbx.example.toml")
    default = config.tenants[0]
    trunk = default.trunks["carrier"]
    assert trunk.enabled is False
    assert trunk.dids and trunk.register
    assert trunk.dids == ("+15551230000",)
