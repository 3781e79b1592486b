"""The shipped deployment files (deploy/): the systemd template unit runs the command the docs name, and the
Kamailio configuration parses with the defines its README lists (the end-to-end test runs it:
tests/e2e/test_kamailio_front.py)."""

from __future__ import annotations

import configparser
import shlex
import subprocess
from pathlib import Path

import pytest

from pbx.tap import Options
from tests.e2e.harness import REPO, free_port, write_config
from tests.e2e.kamailio import kamailio_binary, modules_dir

UNIT = REPO / "deploy" / "systemd" / "pbx@.service"
KAMAILIO_CFG = REPO / "deploy" / "kamailio" / "kamailio.cfg"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_the_systemd_template_runs_one_pbx_per_instance(tmp_path: Path) -> None:
    service = unit()["Service"]
    program, *args = shlex.split(service["ExecStart"])
    assert program.endswith("/twistd")
    assert args == ["-n", "--pidfile=", "pbx", "-c", "/etc/pbx/node-%i.toml"]
    config = write_config(tmp_path)["path"].rename(tmp_path / "node-1.toml")
    options = Options()
    options.parseOptions(["-c", str(config)])  # what twistd hands the plugin, the instance name filled in
    assert Path(options["config"]) == config
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 300  # longer than the drain_timeout docs/scaling.md suggests
    assert service["StateDirectory"] == "pbx/node-%i"


def test_the_workers_unit_runs_a_supervisor_of_several_pbx_processes(tmp_path: Path) -> None:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNIT.parent / "pbx-workers.service").read_text())
    service = parser["Service"]
    program, *args = shlex.split(service["ExecStart"])
    assert program.endswith("/twistd")
    assert args == ["-n", "--pidfile=", "pbx", "-c", "/etc/pbx/pbx.toml", "--workers", "4"]
    store = '[store]\nurl = "postgresql://pbx@127.0.0.1:5432/pbx"\n'
    config = write_config(tmp_path, extra=store)["path"]
    options = Options()
    options.parseOptions(["-c", str(config), "--workers", "4"])
    assert options["workers"] == 4
    assert service["KillMode"] == "mixed" and int(service["TimeoutStopSec"]) > 330


def test_the_kamailio_configuration_parses_with_its_defines(tmp_path: Path) -> None:
    try:
        binary = kamailio_binary()
    except FileNotFoundError:
        pytest.skip("kamailio is not installed (Debian: kamailio)")
    nodes = tmp_path / "dispatcher.list"
    nodes.write_text("1 sip:127.0.0.1:5071\n1 sip:127.0.0.1:5072\n")
    port = free_port(tcp=False)
    result = subprocess.run(
        [binary, "-c", "-f", str(KAMAILIO_CFG), "-L", modules_dir(),
         "-A", f"LISTEN=udp:127.0.0.1:{port}", "-A", f"LISTEN_TCP=tcp:127.0.0.1:{port}",
         "-A", f'DISPATCHER_LIST="{nodes}"', "-A", "PING_INTERVAL=2",
         "-A", f'CTL_SOCKET="unix:{tmp_path}/ctl"'],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config file ok" in result.stdout + result.stderr
    assert f"udp: 127.0.0.1 [127.0.0.1]:{port}" in result.stdout + result.stderr
    assert f"tcp: 127.0.0.1 [127.0.0.1]:{port}" in result.stdout + result.stderr
