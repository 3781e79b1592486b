"""Fixtures for end-to-end tests: a running `twistd pbx` on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PbxProcess, write_config


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[tuple[PbxProcess, dict]]:
    """A PBX on the demo extensions, listening on UDP/TCP/TLS on 127.0.0.1 (and ::1 when there is one)."""
    ports = write_config(tmp_path)
    process = PbxProcess(ports["path"])
    try:
        process.wait_ready(ports["listeners"])
        yield process, ports
    finally:
        process.stop()
