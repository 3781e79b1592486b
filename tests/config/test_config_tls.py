"""`[tls] min_version` / `ciphers`, `[[sip.listen]] require_client_certificate` and a trunk's client
certificate (`pbx.config.load_tls`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pbx.config import ConfigError, parse_config

MINIMAL: dict[str, Any] = {
    "sip": {"listen": [{"transport": "tls", "host": "127.0.0.1"}]},
    "tenants": {"default": {"domain": "localhost", "extensions": {"1000": {"password": "secret"}}}},
}


def document(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(MINIMAL)
    result.update(copy.deepcopy(changes))
    return result


def error_for(value: dict[str, Any], base: Path = Path("/etc/pbx")) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(value, base)
    return info.value


def test_defaults() -> None:
    config = parse_config(document(), Path("/etc/pbx"))
    assert (config.tls.min_version, config.tls.ciphers) == ("1.2", "")
    assert config.sip.listeners[0].require_client_certificate is False


def test_policy_values() -> None:
    config = parse_config(document(tls={"min_version": "1.3", "ciphers": "ECDHE+AESGCM"}), Path("/etc/pbx"))
    assert (config.tls.min_version, config.tls.ciphers) == ("1.3", "ECDHE+AESGCM")
    unquoted = parse_config(document(tls={"min_version": 1.2}), Path("/etc/pbx"))
    assert unquoted.tls.min_version == "1.2"


@pytest.mark.parametrize(
    ("tls", "key", "text"),
    [
        ({"min_version": "1.1"}, "tls.min_version", "must be one of '1.2', '1.3'"),
        ({"min_version": 1}, "tls.min_version", "must be one of"),
        ({"ciphers": "NO-SUCH-CIPHER"}, "tls.ciphers", "selects no cipher"),
        ({"ciphers": 3}, "tls.ciphers", "must be a string"),
    ],
)
def test_bad_policy(tls: dict[str, Any], key: str, text: str) -> None:
    error = error_for(document(tls=tls))
    assert error.path == key and text in str(error)


def test_require_client_certificate(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    listen = [{"transport": "tls", "host": "127.0.0.1", "require_client_certificate": True}]
    mutual = document(sip={"listen": listen}, tls={"ca_certificates": "ca.pem"})
    config = parse_config(mutual, tmp_path)
    assert config.sip.listeners[0].require_client_certificate is True

    listen = [{"transport": "tls", "host": "127.0.0.1", "require_client_certificate": True}]
    error = error_for(document(sip={"listen": listen}))
    assert error.path == "sip.listen[0].require_client_certificate" and "needs tls.ca_certificates" in str(
        error
    )
    udp = [{"transport": "udp", "host": "127.0.0.1", "require_client_certificate": True}]
    error = error_for(document(sip={"listen": udp}))
    assert error.path == "sip.listen[0].require_client_certificate" and "only for TLS" in str(error)


def test_trunk_client_certificate(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_text("x")
    (tmp_path / "client-key.pem").write_text("x")
    trunk = {"host": "carrier.example", "transport": "tls", "tls_certificate": "client.pem"}
    tenants = copy.deepcopy(MINIMAL["tenants"])
    tenants["default"]["trunks"] = {"carrier": {**trunk, "tls_private_key": "client-key.pem"}}
    config = parse_config(document(tenants=tenants), tmp_path)
    carrier = config.tenants[0].trunks["carrier"]
    assert (carrier.tls_certificate, carrier.tls_private_key) == (
        tmp_path / "client.pem",
        tmp_path / "client-key.pem",
    )
    tenants["default"]["trunks"] = {"carrier": trunk}
    error = error_for(document(tenants=tenants), tmp_path)
    assert error.path == "tenants.default.trunks.carrier.tls_private_key"
    tenants["default"]["trunks"] = {"carrier": {**trunk, "tls_private_key": "missing.pem"}}
    error = error_for(document(tenants=tenants), tmp_path)
    assert "no such file" in str(error)
