"""`pbx.service.trunks`: the trunks built from the config, started and stopped as a service, their states
handed to the composition (`TrunksService.states`)."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import MemoryReactorClock

from pbx.config import parse_config
from pbx.service.trunks import build_trunks, configured_trunks
from pbx.sip.stack import SipStack
from pbx.trunks.status import STATUS_FILE, read_status
from tests.trunks.carrier import CarrierNet, advance


def config(tmp_path: Path, trunks: dict) -> object:
    return parse_config(
        {
            "pbx": {"data_dir": str(tmp_path)},
            "sip": {"listen": [{"transport": "udp", "host": "127.0.0.1"}]},
            "tenants": {"default": {"domain": "localhost", "trunks": trunks}},
        },
        tmp_path,
    )


def test_no_trunks_no_file(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    stack = SipStack(reactor)
    trunks = build_trunks(config(tmp_path, {}), stack, reactor)  # type: ignore[arg-type]
    trunks.startService()
    assert len(trunks.states) == 0 and trunks.status_file is None
    trunks.stopService()
    assert not (tmp_path / STATUS_FILE).exists()


def test_registers_reports_and_unregisters(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    stack = SipStack(reactor)
    net = CarrierNet(stack)
    stack.attach_transport(net)
    carrier = net.add("192.0.2.10")
    settings = {
        "carrier": {"host": "192.0.2.10", "register": True, "username": "1555", "password": "secret"},
        "ip": {"host": "192.0.2.20", "dids": ["+15550001"]},
    }
    cfg = config(tmp_path, settings)
    assert [(t, trunk.name) for t, trunk in configured_trunks(cfg)] == [  # type: ignore[arg-type]
        ("default", "carrier"),
        ("default", "ip"),
    ]
    trunks = build_trunks(cfg, stack, reactor)  # type: ignore[arg-type]
    trunks.startService()
    advance(net, reactor, 1)
    assert trunks.states.is_up("default", "carrier") and trunks.states.is_up("default", "ip")
    assert trunks.states.contact_user("default", "carrier") == "1555"
    document = read_status(tmp_path / STATUS_FILE)
    assert document is not None
    assert [row["state"] for row in document["trunks"]] == ["registered", "up"]
    stopped = trunks.stopService()
    advance(net, reactor, 1)
    assert stopped.called
    assert carrier.registers()[-1].headers.get("Expires") == "0"
    document = read_status(tmp_path / STATUS_FILE)
    assert document is not None and document["trunks"][0]["state"] == "unregistered"
    # What is left is the stack's and the DNS client's own housekeeping, nothing of the trunks.
    left = [repr(call) for call in reactor.getDelayedCalls()]
    assert [r for r in left if "_sweep" not in r and "arseConfig" not in r] == [], left
