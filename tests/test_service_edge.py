"""The admission built from `[edge]` and `[security]` (`pbx.service.edge.build_admission`)."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from pbx.config.load import parse_config
from pbx.service.edge import build_admission
from tests.config.test_config import data


def test_trusted_proxies_are_exempt_from_the_rate_limits(tmp_path: Path) -> None:
    """Behind Kamailio every phone's traffic comes from the proxy: it must never be rate-limited or blocked,
    while any other single source is."""
    config = parse_config(
        data(security={"trusted_proxies": ["127.0.0.2"]}, edge={"rate": 10, "burst": 10}), tmp_path
    )
    admission = build_admission(config, Clock())
    message = b"OPTIONS sip:a SIP/2.0\r\n\r\n"
    assert all(admission.admit("127.0.0.2", message) for _ in range(1000))
    assert not all(admission.admit("192.0.2.9", message) for _ in range(1000))
