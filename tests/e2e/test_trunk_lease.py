"""One PBX node registers a trunk (issue 17: the lease in the shared store), end to end: two `twistd pbx`
nodes on the tests' PostgreSQL, SIPp as the carrier's registrar (tests/e2e/scenarios/
trunk_lease_registrar.xml), `[store] trunk_lease = 2`.

Node A starts first and takes the lease: the carrier gets REGISTERs from node A only; node B stands by,
naming node A (its log and `pbx trunks status`, which also lists the lease). Node A is killed (`kill -9`):
once its lease has lapsed (2 s) node B takes it over at its next try (every 2/3 s) and registers. Node B
stopped with SIGTERM unregisters (Expires: 0) and releases the lease.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.harness import run_pbx_cli
from tests.e2e.test_calls_sipp import header, sip_messages, sipp, start_pbx  # noqa: F401 - fixtures
from tests.e2e.test_trunk_registration_sipp import carrier_trunk
from tests.store import postgres_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(postgres_server.unavailable() is not None, reason=postgres_server.unavailable() or ""),
]


def registers(carrier) -> list[tuple[int, str]]:
    """(Contact port, Expires) of every REGISTER the carrier received so far."""
    found = []
    for direction, message in sip_messages(carrier.message_file):
        if direction != "received" or not message.startswith("REGISTER "):
            continue
        (contact,) = header(message, "Contact")
        port = re.search(r"@127\.0\.0\.1:(\d+)", contact)
        assert port is not None, contact
        found.append((int(port.group(1)), (header(message, "Expires") or ["?"])[0]))
    return found


def wait_registers(carrier, predicate, timeout: float = 10.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):
        seen = registers(carrier)
        if predicate(seen):
            return seen
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)  # polling SIPp's message file for an event: a REGISTER
    raise AssertionError(f"the carrier did not get the REGISTERs expected: {registers(carrier)}")


def test_one_node_registers_the_trunk_and_the_other_takes_over_when_it_dies(start_pbx, sipp):  # noqa: F811
    carrier = sipp.start("carrier", "trunk_lease_registrar.xml", calls=200, timeout=60).wait_listening()
    url = postgres_server.server().url()
    extra = f'[store]\nurl = "{url}"\ntrunk_lease = 2\n\n' + carrier_trunk(carrier.port)
    node_a = start_pbx(extra=extra)
    node_a.wait_for(r"Trunk default/carrier: this node registers it")
    node_a.wait_for(r"Trunk default/carrier: registered")
    node_b = start_pbx(extra=extra)
    a, b = node_a.sip, node_b.sip
    node_b.wait_for(rf"Trunk default/carrier: standby \(registered by \S+:{a}\)")
    # Node B has decided before it could send anything: one binding at the carrier, node A's.
    assert {port for port, _ in wait_registers(carrier, bool)} == {a}
    listed = run_pbx_cli("trunks", "status", str(node_b.ports["path"]))
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"default/carrier\s+standby\s+.*registered by \S+:{a}", listed.stdout), listed.stdout
    assert re.search(
        rf"who registers each trunk.*\n.*\ndefault/carrier\s+\S+:{a}\s+expires in", listed.stdout
    )

    node_a.process.kill9()
    killed = time.monotonic()
    node_b.wait_for(r"Trunk default/carrier: this node registers it", timeout=10)
    took = time.monotonic() - killed
    node_b.wait_for(r"Trunk default/carrier: registered")
    seen = wait_registers(carrier, lambda s: any(port == b for port, _ in s))
    assert {port for port, _ in seen} == {a, b} and took < 2 + 2 / 3 + 1.5, (seen, took)

    node_b.process.stop()  # SIGTERM: drains (no calls), releases the lease, unregisters
    seen = wait_registers(carrier, lambda s: (b, "0") in s)
    assert postgres_leases(url) == []
    output = node_a.process.output + node_b.process.output
    assert "Traceback" not in output


def postgres_leases(url: str) -> list:
    from pbx.store import offline

    return offline.trunk_leases(url, None)  # type: ignore[arg-type]
