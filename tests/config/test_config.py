"""Tests for `pbx.config`: the demo config loads, paths resolve, and every error names its key."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pbx.config import (
    CallsConfig,
    Config,
    ConfigError,
    Extension,
    ListenerConfig,
    MediaConfig,
    RegistrarConfig,
    SecurityConfig,
    Tenant,
    load_config,
    normalize_host,
    parse_config,
)
from pbx.config.load import SCHEMA_KEYS

REPO = Path(__file__).resolve().parents[2]
BASE = Path("/etc/pbx")

MINIMAL: dict[str, Any] = {
    "sip": {"listen": [{"transport": "udp", "host": "127.0.0.1"}]},
    "tenants": {"default": {"domain": "localhost", "extensions": {"1000": {"password": "secret"}}}},
}


def data(**changes: Any) -> dict[str, Any]:
    """A deep copy of MINIMAL with top-level tables replaced or added."""
    result = copy.deepcopy(MINIMAL)
    result.update(copy.deepcopy(changes))
    return result


def error_for(document: dict[str, Any], base_dir: Path = BASE) -> ConfigError:
    """Parse a document that must be invalid and return the error."""
    with pytest.raises(ConfigError) as info:
        parse_config(document, base_dir)
    return info.value


EXT = "tenants.default.extensions.1000"
GROUPS = "tenants.default.groups"


def tenant_with(extension: dict[str, Any], **tenant: Any) -> dict[str, Any]:
    """A document whose tenant "default" has the given settings and the extension 1000."""
    table = {"domain": "localhost", **tenant, "extensions": {"1000": extension}}
    return data(tenants={"default": table})


# -- the demo config ---------------------------------------------------------------------------------------


def test_demo_config_loads() -> None:
    config = load_config(REPO / "pbx.example.toml")
    assert config.source == REPO / "pbx.example.toml"
    assert config.base_dir == REPO
    assert config.data_dir == REPO / "data"
    assert config.dialplan_dir == REPO / "dialplans"
    assert (config.dialplan_dir / "default").is_dir()
    assert config.sip_trace is False
    assert config.poll_window == 0.0  # off unless asked for (docs/configuration.md)
    assert {(li.transport, li.host, li.port) for li in config.sip.listeners} == {
        (transport, host, 5061 if transport == "tls" else 5060)
        for transport in ("udp", "tcp", "tls")
        for host in ("127.0.0.1", "::1")
    }
    assert config.tls.certificate is None and config.tls.private_key is None
    (tenant,) = config.tenants
    assert (tenant.name, tenant.domain, tenant.aliases, tenant.realm) == (
        "default",
        "localhost",
        ("127.0.0.1", "::1"),
        "localhost",
    )
    assert sorted(tenant.extensions) == ["1000", "1001", "1002", "1003"]
    assert all(ext.password for ext in tenant.extensions.values())
    assert config.registrar == RegistrarConfig()
    assert config.security == SecurityConfig()
    assert config.media == MediaConfig()
    assert config.calls == CallsConfig()
    assert dict(tenant.groups) == {"sales": ("1000", "1001")}
    assert tenant.extensions["1001"] == Extension("1001", "Alice", "pass1001", pickup_groups=("front",))
    assert tenant.extensions["1003"].forward_noanswer == ""


def test_demo_forward_example_is_valid() -> None:
    """The commented forward_noanswer example of the demo config works when uncommented."""
    text = (REPO / "pbx.example.toml").read_text()
    commented = '#     forward_noanswer = "1000"\n'
    assert commented in text
    document = tomllib.loads(text.replace(commented, 'forward_noanswer = "1000"\n'))
    config = parse_config(document, REPO)
    assert config.tenants[0].extensions["1003"].forward_noanswer == "1000"


def test_demo_ha1_example_matches_the_password() -> None:
    """The digest quoted in a comment of the demo config is right."""
    text = (REPO / "pbx.example.toml").read_text()
    assert hashlib.md5(b"1003:localhost:pass1003").hexdigest() in text


def test_defaults() -> None:
    config = parse_config(MINIMAL, BASE)
    assert config.source is None
    assert config.data_dir == BASE / "data"
    assert config.dialplan_dir == BASE / "dialplans"
    assert config.sip_trace is False
    sip = config.sip
    assert (sip.user_agent, sip.idle_timeout, sip.max_message_size) == ("pbx", 600.0, 65535)
    assert (sip.t1, sip.t2, sip.t4) == (0.5, 4.0, 5.0)
    limits = (sip.max_connections, sip.max_connections_per_address)
    assert limits == (4096, 64)
    assert (sip.tls_handshake_timeout, sip.first_message_timeout) == (10.0, 30.0)
    assert sip.listeners == (ListenerConfig("udp", "127.0.0.1", 5060, None),)
    tenant = config.tenants[0]
    assert tenant.realm == "localhost" and tenant.aliases == ()
    assert tenant.extensions["1000"] == Extension("1000", "", "secret", None, None)
    assert config.registrar == RegistrarConfig(60, 3600, 3600, 10, "options", 30.0, 3)
    assert config.security == SecurityConfig(5, 60.0, 600.0, 20, 300.0, ("MD5", "SHA-256"), (), ("baresip",))
    assert config.media == MediaConfig(10000, 20000, "127.0.0.1", "")
    assert config.media.advertised_host == "127.0.0.1"
    assert config.calls == CallsConfig(30.0, 14400.0, ("PCMU", "PCMA", "telephone-event"))
    assert dict(tenant.groups) == {}
    extension = tenant.extensions["1000"]
    assert (extension.forward_all, extension.forward_busy, extension.forward_noanswer) == ("", "", "")
    assert (extension.ring_timeout, extension.may_call_out) == (0.0, False)


def test_registrar_and_security_defaults_by_hand() -> None:
    """The dataclass defaults match the parser's, so other layers' tests may build them directly."""
    assert parse_config(data(registrar={}, security={}), BASE).registrar == RegistrarConfig()
    assert parse_config(data(registrar={}, security={}), BASE).security == SecurityConfig()
    security = SecurityConfig(auth_algorithms=["MD5"], trusted_networks=["10.0.0.0/8"])  # type: ignore[arg-type]
    assert security.auth_algorithms == ("MD5",) and security.trusted_networks == ("10.0.0.0/8",)
    hash(security)


def test_registrar_values() -> None:
    registrar = {
        "min_expires": 30,
        "max_expires": 7200,
        "default_expires": 30,
        "max_contacts": 1,
        "keepalive": "CRLF",
        "keepalive_interval": 5,
        "keepalive_failures": 20,
    }
    config = parse_config(data(registrar=registrar), BASE)
    assert config.registrar == RegistrarConfig(30, 7200, 30, 1, "crlf", 5.0, 20)
    assert isinstance(config.registrar.keepalive_interval, float)
    same = {"min_expires": 600, "max_expires": 600, "default_expires": 600, "keepalive": "none"}
    assert parse_config(data(registrar=same), BASE).registrar == RegistrarConfig(
        600, 600, 600, keepalive="none"
    )


def test_security_values_and_normalization() -> None:
    security = {
        "max_auth_failures": 1,
        "failure_window": 1,
        "block_duration": 86400,
        "max_account_failures": 100000,
        "nonce_lifetime": 10,
        "auth_algorithms": ["md5", "sha-256"],
        "trusted_networks": ["192.0.2.7/24", "203.0.113.10", "2001:DB8:0:0::/32", " 10.0.0.0/8 "],
    }
    config = parse_config(data(security=security), BASE).security
    assert config == SecurityConfig(
        1,
        1.0,
        86400.0,
        100000,
        10.0,
        ("MD5", "SHA-256"),
        ("192.0.2.0/24", "203.0.113.10/32", "2001:db8::/32", "10.0.0.0/8"),
    )
    assert isinstance(config.failure_window, float) and isinstance(config.nonce_lifetime, float)
    assert parse_config(data(security={"auth_algorithms": ["Sha-256"]}), BASE).security.auth_algorithms == (
        "SHA-256",
    )


def test_media_and_calls_defaults_by_hand() -> None:
    """The dataclass defaults match the parser's, so other layers' tests may build them directly."""
    config = parse_config(data(media={}, calls={}), BASE)
    assert config.media == MediaConfig() and config.calls == CallsConfig()
    paths = (config.data_dir, config.dialplan_dir)
    assert Config(None, BASE, *paths, False, config.sip, config.tls, config.tenants) == config
    calls = CallsConfig(codecs=["PCMU"])  # type: ignore[arg-type]
    assert calls.codecs == ("PCMU",)
    hash(calls)


def test_media_values_and_normalization() -> None:
    media = {"rtp_port_min": 1024, "rtp_port_max": 1027, "bind_host": "[::]", "advertise": "2001:DB8::0:1"}
    config = parse_config(data(media=media), BASE).media
    assert config == MediaConfig(1024, 1027, "::", "2001:db8::1")
    assert config.advertised_host == "2001:db8::1"
    media = {"rtp_port_min": 65532, "rtp_port_max": 65535, "bind_host": "0.0.0.0", "advertise": "192.0.2.1"}
    assert parse_config(data(media=media), BASE).media.advertised_host == "192.0.2.1"
    media = {"bind_host": "10.0.0.1", "advertise": "203.0.113.10"}
    expected = MediaConfig(10000, 20000, "10.0.0.1", "203.0.113.10")
    assert parse_config(data(media=media), BASE).media == expected


def test_calls_values_and_normalization() -> None:
    calls = {
        "ring_timeout": 5,
        "max_call_duration": 60,
        "codecs": ["opus", " g722 ", "pcmu", "TELEPHONE-EVENT", "X-Custom", "ilbc"],
    }
    config = parse_config(data(calls=calls), BASE).calls
    assert config == CallsConfig(5.0, 60.0, ("opus", "G722", "PCMU", "telephone-event", "X-Custom", "iLBC"))
    assert isinstance(config.ring_timeout, float) and isinstance(config.max_call_duration, float)
    assert config.allows_codec("OPUS") and config.allows_codec("x-custom") and config.allows_codec("pcmu")
    assert not config.allows_codec("PCMA") and not config.allows_codec("*")
    every = parse_config(data(calls={"codecs": ["*"]}), BASE).calls
    assert every.codecs == ("*",)
    assert every.allows_codec("G729") and every.allows_codec("anything")
    assert CallsConfig().allows_codec("pcma") and not CallsConfig().allows_codec("G722")


def test_extension_forwarding_and_groups() -> None:
    extensions = {
        "1000": {"password": "a", "forward_all": "trunk:carrier/15551234", "may_call_out": True},
        "1001": {"password": "b", "forward_busy": "1000", "forward_noanswer": "*97", "ring_timeout": 12},
        "1002": {"password": "c", "forward_noanswer": "x" * 128, "ring_timeout": 0},
    }
    groups = {"sales": ["1001", "1000"], "all.staff": ["1000", "1001", "1002"], "solo": ["1002"]}
    tenants = {"default": {"domain": "localhost", "extensions": extensions, "groups": groups}}
    tenant = parse_config(data(tenants=tenants), BASE).tenants[0]
    assert tenant.extensions["1000"] == Extension(
        "1000", password="a", forward_all="trunk:carrier/15551234", may_call_out=True
    )
    assert tenant.extensions["1001"] == Extension(
        "1001", password="b", forward_busy="1000", forward_noanswer="*97", ring_timeout=12.0
    )
    assert isinstance(tenant.extensions["1001"].ring_timeout, float)
    assert tenant.extensions["1002"].forward_noanswer == "x" * 128
    assert dict(tenant.groups) == {
        "sales": ("1001", "1000"),
        "all.staff": ("1000", "1001", "1002"),
        "solo": ("1002",),
    }
    assert list(tenant.groups) == ["sales", "all.staff", "solo"]
    with pytest.raises(TypeError):
        tenant.groups["new"] = ("1000",)  # type: ignore[index]


def test_listener_defaults_and_normalization() -> None:
    listen = [
        {"transport": "TLS", "host": "[::1]"},
        {"transport": "Tcp", "host": "0:0:0:0:0:0:0:1", "advertise": "PBX.Example.COM."},
        {},
    ]
    listeners = parse_config(data(sip={"listen": listen}), BASE).sip.listeners
    assert listeners == (
        ListenerConfig("tls", "::1", 5061, None),
        ListenerConfig("tcp", "::1", 5060, "pbx.example.com"),
        ListenerConfig("udp", "127.0.0.1", 5060, None),
    )
    assert listeners[1].advertised_host == "pbx.example.com"
    assert listeners[2].advertised_host == "127.0.0.1"
    assert listeners[0].reliable and not listeners[2].reliable


def test_objects_are_frozen() -> None:
    config = parse_config(MINIMAL, BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sip_trace = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.tenants[0].extensions["1001"] = Extension("1001")  # type: ignore[index]
    hash(config)


def test_secrets_stay_out_of_repr() -> None:
    config = parse_config(tenant_with({"password": "hunter2"}), BASE)
    assert "hunter2" not in repr(config)


# -- paths -------------------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "certs").mkdir()
    for name in ("pbx.pem", "pbx.key", "ca.pem"):
        (tmp_path / "etc" / "certs" / name).write_text("PEM")
    config_file = tmp_path / "etc" / "pbx.toml"
    config_file.write_text(
        '[pbx]\ndata_dir = "state"\ndialplan_dir = "../plans"\n'
        '[tls]\ncertificate = "certs/pbx.pem"\nprivate_key = "certs/pbx.key"\n'
        f'ca_certificates = "{tmp_path / "etc" / "certs" / "ca.pem"}"\n'
        '[[sip.listen]]\n[tenants.t]\ndomain = "example.com"\n'
    )
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/pbx.toml")
    assert config.source == config_file
    assert config.base_dir == tmp_path / "etc"
    assert config.data_dir == tmp_path / "etc" / "state"
    assert config.dialplan_dir.resolve() == tmp_path / "plans"
    assert config.tls.certificate == tmp_path / "etc" / "certs" / "pbx.pem"
    assert config.tls.private_key == tmp_path / "etc" / "certs" / "pbx.key"
    assert config.tls.ca_certificates == tmp_path / "etc" / "certs" / "ca.pem"


def test_absolute_paths_are_kept() -> None:
    config = parse_config(data(pbx={"data_dir": "/var/lib/pbx"}), BASE)
    assert config.data_dir == Path("/var/lib/pbx")


# -- errors name their key ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path", "words"),
    [
        (data(sip={"listen": [{}, {"port": 70000}]}), "sip.listen[1].port", "integer from 1 to 65535"),
        (data(sip={"listen": [{"port": "5060"}]}), "sip.listen[0].port", "integer"),
        (data(sip={"listen": [{"port": True}]}), "sip.listen[0].port", "integer"),
        (data(sip={"listn": [], "listen": [{}]}), "sip.listn", "unknown key"),
        (data(bogus=1), "bogus", "unknown key"),
        (data(pbx={"data-dir": "x"}), "pbx.data-dir", "unknown key"),
        (data(sip={}), "sip.listen", "at least one listener"),
        (data(sip={"listen": []}), "sip.listen", "at least one listener"),
        (data(sip={"listen": {"host": "::1"}}), "sip.listen", "array of tables"),
        (data(sip={"listen": [{"transport": "sctp"}]}), "sip.listen[0].transport", "udp, tcp, tls"),
        (data(sip={"listen": [{"host": "localhost"}]}), "sip.listen[0].host", "IPv4 or IPv6"),
        (data(sip={"listen": [{"advertise": "bad host!"}]}), "sip.listen[0].advertise", "host name"),
        (data(sip={"listen": [{}, {"transport": "UDP"}]}), "sip.listen[1]", "same UDP socket"),
        (
            data(sip={"listen": [{"transport": "tcp", "port": 5070}, {"transport": "tls", "port": 5070}]}),
            "sip.listen[1]",
            "same TCP socket",
        ),
        (data(sip={"listen": [{}], "t1": 1.0, "t2": 0.5}), "sip.t2", "at least sip.t1"),
        (data(sip={"listen": [{}], "t1": 0}), "sip.t1", "greater than 0"),
        (data(sip={"listen": [{}], "t4": float("inf")}), "sip.t4", "greater than 0"),
        (data(sip={"listen": [{}], "idle_timeout": -1}), "sip.idle_timeout", "greater than 0"),
        (data(sip={"listen": [{}], "max_connections": 0}), "sip.max_connections", "1 to 1000000"),
        (
            data(sip={"listen": [{}], "max_connections_per_address": 1.5}),
            "sip.max_connections_per_address",
            "integer",
        ),
        (
            data(sip={"listen": [{}], "tls_handshake_timeout": 0}),
            "sip.tls_handshake_timeout",
            "greater than 0",
        ),
        (data(sip={"listen": [{}], "first_message_timeout": -1}), "sip.first_message_timeout", "at least 0"),
        (data(sip={"listen": [{}], "max_message_size": 512}), "sip.max_message_size", "1024 to 1048576"),
        (data(sip={"listen": [{}], "user_agent": "pbx\r\nX: y"}), "sip.user_agent", "control characters"),
        (data(pbx={"sip_trace": "yes"}), "pbx.sip_trace", "true or false"),
        (data(pbx={"data_dir": ""}), "pbx.data_dir", "must not be empty"),
        (data(pbx={"poll_window": 0.1}), "pbx.poll_window", "from 0 to 0.05"),
        (data(pbx={"poll_window": -0.001}), "pbx.poll_window", "from 0 to 0.05"),
        (data(pbx={"poll_window": "5ms"}), "pbx.poll_window", "number of seconds"),
        (data(pbx={"dialplan_dir": 3}), "pbx.dialplan_dir", "string"),
        (data(tls={"certificate": "cert.pem"}), "tls.private_key", "required when tls.certificate"),
        (data(tls={"private_key": "key.pem"}), "tls.certificate", "required when tls.private_key"),
        (data(tls={"ca_certificates": "nowhere.pem"}), "tls.ca_certificates", "no such file"),
        (data(tenants={}), "tenants", "at least one tenant"),
        (data(tenants={"../etc": {"domain": "a.example"}}), 'tenants."../etc"', "tenant name"),
        (data(tenants={"t": {}}), "tenants.t.domain", "required"),
        (data(tenants={"t": {"domain": "a..example"}}), "tenants.t.domain", "host name"),
        (data(tenants={"t": {"domain": "10.0.0.300"}}), "tenants.t.domain", "host name"),
        (data(tenants={"t": {"domain": "a.example", "aliases": "b"}}), "tenants.t.aliases", "array"),
        (data(tenants={"t": {"domain": "a.example", "aliases": ["b", 7]}}), "tenants.t.aliases[1]", "string"),
        (data(tenants={"t": {"domain": "a.example", "realm": 'a"b'}}), "tenants.t.realm", "must not contain"),
        (tenant_with({}), "tenants.default.extensions.1000.password", "required unless ha1_md5"),
        (tenant_with({"name": "Alice"}), "tenants.default.extensions.1000.password", "required"),
        (tenant_with({"password": ""}), "tenants.default.extensions.1000.password", "non-empty"),
        (tenant_with({"ha1_md5": "abc"}), "tenants.default.extensions.1000.ha1_md5", "32 hexadecimal"),
        (
            tenant_with({"ha1_sha256": "a" * 32}),
            "tenants.default.extensions.1000.ha1_sha256",
            "64 hexadecimal",
        ),
        (tenant_with({"ha1_md5": "g" * 32}), "tenants.default.extensions.1000.ha1_md5", "hexadecimal"),
        (
            tenant_with({"password": "x", "ha1_md5": "a" * 32}),
            "tenants.default.extensions.1000.ha1_md5",
            "conflicts with password",
        ),
        (tenant_with({"passwd": "x"}), "tenants.default.extensions.1000.passwd", "did you mean 'password'"),
        (
            data(tenants={"t": {"domain": "a.example", "extensions": {"10 00": {"password": "x"}}}}),
            'tenants.t.extensions."10 00"',
            "extension number",
        ),
        (
            data(tenants={"t": {"domain": "a.example", "extensions": {"1000": "secret"}}}),
            "tenants.t.extensions.1000",
            "must be a table",
        ),
        (data(registrar=[]), "registrar", "must be a table"),
        (data(registrar={"min_expire": 60}), "registrar.min_expire", "did you mean 'min_expires'"),
        (data(registrar={"min_expires": 0}), "registrar.min_expires", "integer from 1 to 86400"),
        (data(registrar={"min_expires": 86401}), "registrar.min_expires", "integer from 1 to 86400"),
        (data(registrar={"min_expires": 60.0}), "registrar.min_expires", "integer"),
        (data(registrar={"max_expires": 604801}), "registrar.max_expires", "integer from 1 to 604800"),
        (data(registrar={"max_expires": "1h"}), "registrar.max_expires", "integer"),
        (data(registrar={"default_expires": True}), "registrar.default_expires", "integer"),
        (data(registrar={"max_contacts": 0}), "registrar.max_contacts", "integer from 1 to 100"),
        (data(registrar={"max_contacts": 101}), "registrar.max_contacts", "integer from 1 to 100"),
        (data(registrar={"keepalive": "sip"}), "registrar.keepalive", "options, crlf, none"),
        (data(registrar={"keepalive": False}), "registrar.keepalive", "string"),
        (data(registrar={"keepalive_interval": 0}), "registrar.keepalive_interval", "at least 5"),
        (data(registrar={"keepalive_interval": 4.5}), "registrar.keepalive_interval", "at least 5"),
        (data(registrar={"keepalive_interval": "30"}), "registrar.keepalive_interval", "seconds"),
        (data(registrar={"keepalive_interval": float("nan")}), "registrar.keepalive_interval", "seconds"),
        (data(registrar={"keepalive_failures": 21}), "registrar.keepalive_failures", "integer from 1 to 20"),
        (data(security=7), "security", "must be a table"),
        (data(security={"block_time": 60}), "security.block_time", "did you mean 'block_duration'"),
        (data(security={"max_auth_failures": 0}), "security.max_auth_failures", "integer from 1 to 1000"),
        (data(security={"max_auth_failures": 1001}), "security.max_auth_failures", "integer from 1 to 1000"),
        (data(security={"failure_window": 0}), "security.failure_window", "greater than 0"),
        (data(security={"failure_window": -5.0}), "security.failure_window", "greater than 0"),
        (data(security={"block_duration": float("inf")}), "security.block_duration", "greater than 0"),
        (data(security={"block_duration": True}), "security.block_duration", "greater than 0"),
        (
            data(security={"max_account_failures": 100001}),
            "security.max_account_failures",
            "integer from 1 to 100000",
        ),
        (data(security={"nonce_lifetime": 9.9}), "security.nonce_lifetime", "from 10 to 86400"),
        (data(security={"nonce_lifetime": 86401}), "security.nonce_lifetime", "from 10 to 86400"),
        (data(security={"auth_algorithms": "MD5"}), "security.auth_algorithms", "array of strings"),
        (data(security={"auth_algorithms": []}), "security.auth_algorithms", "at least one of MD5, SHA-256"),
        (data(security={"auth_algorithms": ["MD5", 5]}), "security.auth_algorithms[1]", "string"),
        (data(security={"auth_algorithms": ["SHA-512"]}), "security.auth_algorithms[0]", "MD5, SHA-256"),
        (data(security={"auth_algorithms": ["SHA256"]}), "security.auth_algorithms[0]", "MD5, SHA-256"),
        (
            data(security={"auth_algorithms": ["MD5", "md5"]}),
            "security.auth_algorithms[1]",
            "MD5 is listed twice",
        ),
        (data(security={"trusted_networks": "10.0.0.0/8"}), "security.trusted_networks", "array of strings"),
        (data(security={"trusted_networks": [10]}), "security.trusted_networks[0]", "string"),
        (
            data(security={"trusted_networks": ["10.0.0.0/8", "office"]}),
            "security.trusted_networks[1]",
            "CIDR",
        ),
        (data(security={"trusted_networks": ["10.0.0.0/33"]}), "security.trusted_networks[0]", "CIDR"),
        (data(security={"trusted_networks": ["2001:db8::/129"]}), "security.trusted_networks[0]", "CIDR"),
        (data(security={"trusted_networks": [""]}), "security.trusted_networks[0]", "CIDR"),
        (data(media=[]), "media", "must be a table"),
        (data(media={"rtp_port": 10000}), "media.rtp_port", "did you mean 'rtp_port_min'"),
        (data(media={"rtp_port_min": 1023}), "media.rtp_port_min", "integer from 1024 to 65534"),
        (data(media={"rtp_port_min": 65535}), "media.rtp_port_min", "integer from 1024 to 65534"),
        (data(media={"rtp_port_min": 10001}), "media.rtp_port_min", "must be even"),
        (data(media={"rtp_port_min": "10000"}), "media.rtp_port_min", "integer"),
        (data(media={"rtp_port_min": 10000.0}), "media.rtp_port_min", "integer"),
        (data(media={"rtp_port_max": 65536}), "media.rtp_port_max", "to 65535"),
        (data(media={"rtp_port_max": 10000}), "media.rtp_port_max", "at least 4 ports"),
        (data(media={"rtp_port_max": 10002}), "media.rtp_port_max", "(10003, at least 4 ports)"),
        (data(media={"rtp_port_min": 30000}), "media.rtp_port_max", "not 20000"),
        (data(media={"rtp_port_min": 65534}), "media.rtp_port_max", "(65537, at least 4 ports)"),
        (data(media={"rtp_port_max": True}), "media.rtp_port_max", "integer"),
        (data(media={"bind_host": "localhost"}), "media.bind_host", "IPv4 or IPv6"),
        (data(media={"bind_host": ""}), "media.bind_host", "IPv4 or IPv6"),
        (data(media={"bind_host": 127}), "media.bind_host", "string"),
        (data(media={"advertise": "pbx.example.com"}), "media.advertise", "IPv4 or IPv6"),
        (data(media={"advertise": False}), "media.advertise", "string"),
        (data(media={"advertise": "0.0.0.0"}), "media.advertise", "wildcard"),
        (data(media={"bind_host": "::", "advertise": "[::]"}), "media.advertise", "wildcard"),
        (data(media={"bind_host": "0.0.0.0"}), "media.advertise", "required when media.bind_host"),
        (data(media={"bind_host": "[::]", "advertise": ""}), "media.advertise", "wildcard address ('::')"),
        (data(calls=7), "calls", "must be a table"),
        (data(calls={"codec": ["PCMU"]}), "calls.codec", "did you mean 'codecs'"),
        (data(calls={"ring_timeout": 0}), "calls.ring_timeout", "greater than 0"),
        (data(calls={"ring_timeout": "30s"}), "calls.ring_timeout", "greater than 0"),
        (data(calls={"max_call_duration": -1.0}), "calls.max_call_duration", "greater than 0"),
        (data(calls={"max_call_duration": float("inf")}), "calls.max_call_duration", "greater than 0"),
        (data(calls={"codecs": "PCMU"}), "calls.codecs", "array of strings"),
        (data(calls={"codecs": []}), "calls.codecs", "at least one codec"),
        (data(calls={"codecs": ["PCMU", 0]}), "calls.codecs[1]", "string"),
        (data(calls={"codecs": ["PCMU", ""]}), "calls.codecs[1]", "encoding name"),
        (data(calls={"codecs": ["PCMU/8000"]}), "calls.codecs[0]", "encoding name"),
        (data(calls={"codecs": ["G 729"]}), "calls.codecs[0]", "encoding name"),
        (data(calls={"codecs": ["PCMU", "pcmu"]}), "calls.codecs[1]", "PCMU is listed twice"),
        (data(calls={"codecs": ["x-foo", "X-FOO"]}), "calls.codecs[1]", "X-FOO is listed twice"),
        (data(calls={"codecs": ["*", "PCMU"]}), "calls.codecs[0]", "must be the only entry"),
        (data(calls={"codecs": ["PCMU", "*"]}), "calls.codecs[1]", "must be the only entry"),
        (tenant_with({"password": "x", "forward_all": "a b"}), f"{EXT}.forward_all", "whitespace"),
        (tenant_with({"password": "x", "forward_busy": "1001\n"}), f"{EXT}.forward_busy", "whitespace"),
        (tenant_with({"password": "x", "forward_noanswer": "\x00"}), f"{EXT}.forward_noanswer", "control"),
        (tenant_with({"password": "x", "forward_all": "1\u00a02"}), f"{EXT}.forward_all", "whitespace"),
        (tenant_with({"password": "x", "forward_all": "9" * 129}), f"{EXT}.forward_all", "at most 128"),
        (tenant_with({"password": "x", "forward_busy": 1001}), f"{EXT}.forward_busy", "string"),
        (tenant_with({"password": "x", "forward_noanswer": "1000"}), f"{EXT}.forward_noanswer", "itself"),
        (tenant_with({"password": "x", "forward_alll": ""}), f"{EXT}.forward_alll", "'forward_all'"),
        (tenant_with({"password": "x", "ring_timeout": -1}), f"{EXT}.ring_timeout", "at least 0"),
        (tenant_with({"password": "x", "ring_timeout": "20"}), f"{EXT}.ring_timeout", "seconds"),
        (tenant_with({"password": "x", "ring_timeout": float("nan")}), f"{EXT}.ring_timeout", "seconds"),
        (tenant_with({"password": "x", "may_call_out": 1}), f"{EXT}.may_call_out", "true or false"),
        (tenant_with({"password": "x", "may_call_out": "yes"}), f"{EXT}.may_call_out", "true or false"),
        (tenant_with({"password": "x"}, groups=[]), "tenants.default.groups", "must be a table"),
        (tenant_with({"password": "x"}, groups={"sales": "1000"}), f"{GROUPS}.sales", "array of strings"),
        (tenant_with({"password": "x"}, groups={"sales": []}), f"{GROUPS}.sales", "at least one extension"),
        (tenant_with({"password": "x"}, groups={"sales": [1000]}), f"{GROUPS}.sales[0]", "string"),
        (
            tenant_with({"password": "x"}, groups={"sales": ["1000", "1009"]}),
            f"{GROUPS}.sales[1]",
            "tenant default has no extension '1009'",
        ),
        (
            tenant_with({"password": "x"}, groups={"sales": ["1000", "1000"]}),
            f"{GROUPS}.sales[1]",
            "1000 is listed twice",
        ),
        (tenant_with({"password": "x"}, groups={"a b": ["1000"]}), f'{GROUPS}."a b"', "group name"),
        (tenant_with({"password": "x"}, groups={".hidden": ["1000"]}), f'{GROUPS}.".hidden"', "group name"),
        (tenant_with({"password": "x"}, groups={"g" * 64: ["1000"]}), f"{GROUPS}.{'g' * 64}", "group name"),
    ],
)
def test_errors_name_their_key(document: dict[str, Any], path: str, words: str) -> None:
    error = error_for(document)
    assert error.path == path
    assert words in error.message
    assert str(error) == f"{path}: {error.message}"


def test_media_and_group_messages() -> None:
    error = error_for(data(media={"bind_host": "0.0.0.0"}))
    assert str(error) == (
        "media.advertise: is required when media.bind_host is a wildcard address ('0.0.0.0'): "
        "the address peers send RTP to"
    )
    error = error_for(data(media={"rtp_port_min": 20000}))
    assert str(error) == (
        "media.rtp_port_max: must be an integer from media.rtp_port_min + 3 (20003, at least 4 ports) "
        "to 65535, not 20000"
    )
    error = error_for(tenant_with({"password": "x"}, groups={"sales": ["1000", "1001"]}))
    assert str(error) == "tenants.default.groups.sales[1]: tenant default has no extension '1001'"


def test_a_group_member_of_another_tenant_is_an_error() -> None:
    tenants = {
        "a": {"domain": "a.example", "extensions": {"1000": {"password": "x"}}},
        "b": {"domain": "b.example", "extensions": {"2000": {"password": "y"}}, "groups": {"g": ["1000"]}},
    }
    assert str(error_for(data(tenants=tenants))) == "tenants.b.groups.g[0]: tenant b has no extension '1000'"


DEFAULT_EXPIRES_RANGE = (
    "registrar.default_expires: must be from registrar.min_expires to registrar.max_expires "
)


@pytest.mark.parametrize(
    ("registrar", "message"),
    [
        (
            {"min_expires": 120, "max_expires": 60},
            "registrar.max_expires: must be at least registrar.min_expires (120), not 60",
        ),
        (
            {"min_expires": 7200},
            "registrar.max_expires: must be at least registrar.min_expires (7200), not 3600",
        ),
        (
            {"max_expires": 1800},
            DEFAULT_EXPIRES_RANGE + "(60 to 1800), not 3600",
        ),
        (
            {"min_expires": 300, "default_expires": 120},
            DEFAULT_EXPIRES_RANGE + "(300 to 3600), not 120",
        ),
        (
            {"max_expires": 7200, "default_expires": 7201},
            DEFAULT_EXPIRES_RANGE + "(60 to 7200), not 7201",
        ),
    ],
)
def test_registrar_expires_are_checked_together(registrar: dict[str, Any], message: str) -> None:
    assert str(error_for(data(registrar=registrar))) == message


def test_float_seconds_messages() -> None:
    error = error_for(data(registrar={"keepalive_interval": 1}))
    assert str(error) == "registrar.keepalive_interval: must be a number of seconds of at least 5, not 1"
    error = error_for(data(security={"nonce_lifetime": 5}))
    assert str(error) == "security.nonce_lifetime: must be a number of seconds from 10 to 86400, not 5"
    error = error_for(data(security={"trusted_networks": ["10.0.0.300/8"]}))
    assert str(error) == (
        "security.trusted_networks[0]: must be an IP network in CIDR notation (like '192.0.2.0/24'), "
        "not '10.0.0.300/8'"
    )


def test_poll_window_is_read_in_seconds() -> None:
    assert parse_config(data(pbx={"poll_window": 0.02}), BASE).poll_window == 0.02
    assert parse_config(data(pbx={"poll_window": 0}), BASE).poll_window == 0.0


def test_unknown_keys_are_reported_before_other_errors() -> None:
    """A misspelt key is named, not the missing value it was meant to supply."""
    error = error_for(data(sip={"listn": [{}]}))
    assert str(error) == "sip.listn: unknown key (did you mean 'listen'?)"


def test_duplicate_domain_across_tenants() -> None:
    tenants = {"a": {"domain": "a.example"}, "b": {"domain": "A.Example."}}
    error = error_for(data(tenants=tenants))
    assert str(error) == "tenants.b.domain: 'a.example' is already used by tenants.a.domain"


def test_duplicate_alias_across_tenants() -> None:
    tenants = {
        "a": {"domain": "a.example", "aliases": ["127.0.0.1"]},
        "b": {"domain": "b.example", "aliases": ["b2.example", "[::1]"]},
        "c": {"domain": "c.example", "aliases": ["0:0::1"]},
    }
    error = error_for(data(tenants=tenants))
    assert str(error) == "tenants.c.aliases[0]: '::1' is already used by tenants.b.aliases[1]"


def test_two_tenants_may_not_share_a_realm() -> None:
    """A realm names the tenant whose passwords answer it: shared, tenant a's password for its 1001 would
    answer a challenge for tenant b's 1001 (H(A1) depends on the realm, not on the tenant)."""
    tenants = {"a": {"domain": "a.example", "realm": "pbx"}, "b": {"domain": "b.example", "realm": "pbx"}}
    error = error_for(data(tenants=tenants))
    assert str(error) == "tenants.b.realm: 'pbx' is already the realm of tenants.a.realm"
    tenants = {"a": {"domain": "a.example"}, "b": {"domain": "b.example", "realm": "a.example"}}
    assert str(error_for(data(tenants=tenants))) == (
        "tenants.b.realm: 'a.example' is already the realm of tenants.a.realm"
    )


def test_two_tenants_may_share_an_extension_number() -> None:
    tenants = {
        "a": {"domain": "a.example", "extensions": {"1001": {"password": "x"}}},
        "b": {"domain": "b.example", "extensions": {"1001": {"password": "y"}}},
    }
    config = parse_config(data(tenants=tenants), BASE)
    assert [t.extensions["1001"].password for t in config.tenants] == ["x", "y"]


def test_digests_only() -> None:
    md5, sha = "AB" * 16, "cd" * 32
    config = parse_config(tenant_with({"name": "Bob", "ha1_md5": md5, "ha1_sha256": sha}), BASE)
    assert config.tenants[0].extensions["1000"] == Extension("1000", "Bob", None, "ab" * 16, sha)


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    config_file = tmp_path / "pbx.toml"
    config_file.write_text('[pbx]\ndata_dir = "data"\nsip_trace = yes\n')
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    assert info.value.path == ""
    assert info.value.file == config_file
    assert str(config_file) in str(info.value)
    assert "line 3" in str(info.value)


def test_file_errors_carry_the_file(tmp_path: Path) -> None:
    config_file = tmp_path / "pbx.toml"
    config_file.write_text('[[sip.listen]]\nport = 0\n[tenants.t]\ndomain = "x.example"\n')
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    assert str(info.value) == "sip.listen[0].port: must be an integer from 1 to 65535, not 0"
    assert info.value.file == config_file


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert info.value.path == "" and "cannot read" in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    config_file = tmp_path / "pbx.toml"
    config_file.write_bytes(b'[pbx]\ndata_dir = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    assert "UTF-8" in str(info.value)


# -- tenant lookup -----------------------------------------------------------------------------------------


def two_tenants() -> Config:
    tenants = {
        "default": {"domain": "localhost", "aliases": ["127.0.0.1", "::1"]},
        "acme": {"domain": "Acme.Example", "aliases": ["sip.acme.example", "2001:db8::1"], "realm": "ACME"},
    }
    return parse_config(data(tenants=tenants), BASE)


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("localhost", "default"),
        ("LOCALHOST", "default"),
        ("127.0.0.1", "default"),
        ("::1", "default"),
        ("[::1]", "default"),
        ("[0:0:0:0:0:0:0:1]", "default"),
        ("acme.example", "acme"),
        ("ACME.example.", "acme"),
        ("Sip.Acme.Example", "acme"),
        ("[2001:DB8::1]", "acme"),
        ("other.example", None),
        ("127.0.0.2", None),
        ("", None),
    ],
)
def test_tenant_for_domain(host: str, name: str | None) -> None:
    tenant = two_tenants().tenant_for_domain(host)
    assert (tenant.name if tenant else None) == name


def test_tenant_by_name_and_realm() -> None:
    config = two_tenants()
    acme = config.tenant("acme")
    assert acme is not None and acme.realm == "ACME" and acme.domain == "acme.example"
    assert config.tenant("nobody") is None


def test_model_built_by_hand() -> None:
    """Other layers' tests may build config objects directly; a plain dict of extensions is frozen."""
    tenant = Tenant("t", "t.example", extensions={"1": Extension("1", password="p")})
    assert tenant.realm == "t.example"
    with pytest.raises(TypeError):
        tenant.extensions["2"] = Extension("2")  # type: ignore[index]
    assert tenant == Tenant("t", "t.example", (), "t.example", {"1": Extension("1", password="p")})
    assert normalize_host("[FE80::1]") == "fe80::1"
    grouped = Tenant("t", "t.example", groups={"g": ["1"]})  # type: ignore[dict-item]
    assert grouped.groups["g"] == ("1",)
    with pytest.raises(TypeError):
        grouped.groups["h"] = ("1",)  # type: ignore[index]
    assert grouped == Tenant("t", "t.example", groups={"g": ("1",)})
    hash(grouped)
    assert MediaConfig(advertise="192.0.2.1").advertised_host == "192.0.2.1"


# -- documentation and layering ----------------------------------------------------------------------------


def test_every_key_is_documented() -> None:
    docs = (REPO / "docs" / "configuration.md").read_text()
    missing = [
        f"{section}.{key}" if section else key
        for section, keys in SCHEMA_KEYS.items()
        for key in keys
        if f"`{section}.{key}`" not in docs and f"`[{key}]`" not in docs
    ]
    assert missing == []


def test_config_imports_no_other_pbx_package() -> None:
    code = (
        "import sys, pbx.config; "
        "print(sorted(m for m in sys.modules if m.startswith('pbx.') and not m.startswith('pbx.config')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# -- trusted peers (authenticated by source address) --------------------------------------------------------

PEER = {"name": "gw", "networks": ["192.0.2.10"], "extension": "1000"}


def test_trusted_peers_are_off_by_default() -> None:
    assert parse_config(MINIMAL, BASE).tenants[0].peers == ()


def test_trusted_peers_load_with_normalized_networks() -> None:
    peers = [
        PEER,
        {"name": "app.server-2", "networks": ["198.51.100.7/24", "2001:DB8::1/64"], "extension": "1000"},
    ]
    (tenant,) = parse_config(tenant_with({"password": "x"}, peers=peers), BASE).tenants
    assert [(p.name, p.networks, p.extension) for p in tenant.peers] == [
        ("gw", ("192.0.2.10/32",), "1000"),
        ("app.server-2", ("198.51.100.0/24", "2001:db8::/64"), "1000"),
    ]
    hash(tenant.peers)


@pytest.mark.parametrize(
    ("peers", "message"),
    [
        (
            {"name": "gw"},
            "tenants.default.peers: must be an array of tables ([[tenants.default.peers]]), not a table",
        ),
        (["gw"], "tenants.default.peers[0]: must be a table, not a string"),
        ([{**PEER, "port": 5060}], "tenants.default.peers[0].port: unknown key"),
        ([{"networks": ["192.0.2.10"], "extension": "1000"}], "tenants.default.peers[0].name: is required"),
        ([{"name": "gw", "extension": "1000"}], "tenants.default.peers[0].networks: is required"),
        ([{"name": "gw", "networks": ["192.0.2.10"]}], "tenants.default.peers[0].extension: is required"),
        (
            [{**PEER, "name": ".gw"}],
            "tenants.default.peers[0].name: a peer name must be 1-63 letters, digits, '.', '_' or '-'",
        ),
        (
            [PEER, {**PEER, "networks": ["192.0.2.11"]}],
            "tenants.default.peers[1].name: 'gw' is already used by tenants.default.peers[0]",
        ),
        ([{**PEER, "networks": []}], "tenants.default.peers[0].networks: must list at least one network"),
        (
            [{**PEER, "networks": "192.0.2.10"}],
            "tenants.default.peers[0].networks: must be an array of strings, not a string",
        ),
        (
            [{**PEER, "networks": ["192.0.2.10", "gateway.example"]}],
            "tenants.default.peers[0].networks[1]: must be an IP network in CIDR notation "
            "(like '192.0.2.10/32'), not 'gateway.example'",
        ),
        (
            [PEER, {**PEER, "name": "lan", "networks": ["192.0.2.0/24"]}],
            "tenants.default.peers[1].networks[0]: 192.0.2.0/24 overlaps "
            "tenants.default.peers[0].networks[0] (192.0.2.10/32)",
        ),
        (
            [{**PEER, "extension": "1001"}],
            "tenants.default.peers[0].extension: must be an extension of this tenant, not '1001'",
        ),
        (
            [{**PEER, "extension": 1000}],
            "tenants.default.peers[0].extension: must be a string, not an integer",
        ),
    ],
)
def test_trusted_peer_errors_name_the_key(peers: Any, message: str) -> None:
    assert str(error_for(tenant_with({"password": "x"}, peers=peers))) == message


def test_the_same_peer_network_may_serve_two_tenants() -> None:
    tenants = {
        "a": {"domain": "a.example", "extensions": {"1000": {"password": "x"}}, "peers": [PEER]},
        "b": {"domain": "b.example", "extensions": {"1000": {"password": "y"}}, "peers": [PEER]},
    }
    config = parse_config(data(tenants=tenants), BASE)
    assert [t.peers[0].networks for t in config.tenants] == [("192.0.2.10/32",), ("192.0.2.10/32",)]


def test_nameservers_and_outbound_credentials() -> None:
    sip = {"listen": [{"transport": "udp", "host": "127.0.0.1"}], "nameservers": ["127.0.0.1:5353", "::1"]}
    config = parse_config(data(sip=sip), BASE)
    assert config.sip.nameservers == (("127.0.0.1", 5353), ("::1", 53))
    bracketed = dict(sip, nameservers=["[::1]:5300"])
    assert parse_config(data(sip=bracketed), BASE).sip.nameservers == (("::1", 5300),)
    for bad in ("dns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1]x"):
        error = error_for(data(sip=dict(sip, nameservers=[bad])))
        assert error.path == "sip.nameservers[0]", bad
    entry = {"realm": "carrier", "username": "pbx", "password": "pw"}
    config = parse_config(tenant_with({"password": "s"}, credentials=[entry]), BASE)
    (found,) = config.tenants[0].credentials
    assert (found.realm, found.username, found.password) == ("carrier", "pbx", "pw")
    assert "pw" not in repr(found)
    twice = error_for(tenant_with({"password": "s"}, credentials=[entry, entry]))
    assert twice.path == "tenants.default.credentials[1].realm"
    missing = error_for(tenant_with({"password": "s"}, credentials=[{"realm": "r", "username": "u"}]))
    assert missing.path == "tenants.default.credentials[0].password"
    quoted = error_for(tenant_with({"password": "s"}, credentials=[dict(entry, username='a"b')]))
    assert quoted.path == "tenants.default.credentials[0].username"
