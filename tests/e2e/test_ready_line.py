"""What `twistd -n pbx` prints when it starts: one ready line, none of Twisted's per-socket lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.harness import PbxProcess, write_config

pytestmark = pytest.mark.e2e


def test_one_ready_line(tmp_path: Path) -> None:
    """The ready line names every listener and a phone to set up; Twisted's 'X starting on N' and
    '(UDP Port N Closed)' lines, one per socket, are not printed."""
    ports = write_config(tmp_path)
    process = PbxProcess(ports["path"])
    try:
        process.wait_ready(ports["listeners"])
        (ready,) = process.wait_for(r"PBX ready: ")
    finally:
        process.stop()
    sip, tls = ports["sip"], ports["tls"]
    assert f"SIP on udp 127.0.0.1:{sip}, tcp 127.0.0.1:{sip}, tls 127.0.0.1:{tls}" in ready
    assert "tenants: default (4 extensions)" in ready
    assert ready.endswith(f"point a softphone at sip:1000@127.0.0.1:{sip} (passwords in pbx.toml)")
    assert "starting on" not in process.output
    assert re.search(r"\(\w+ Port \d+ Closed\)", process.output) is None
    assert "Server Shut Down." in process.output
