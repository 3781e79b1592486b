"""Two PBX processes sharing one PostgreSQL database (issue 17, item 1), end to end with SIPp.

A phone registers through node A; a phone calling through node B reaches it (node B heard of the
registration through LISTEN/NOTIFY and read it from the database); the call's CDR is in the shared database;
and the offline `pbx registrations` reads the database both nodes use. The PostgreSQL server is the tests'
own (tests/store/postgres_server.py): a temporary data directory, a free loopback port, run as the
`postgres` user when the tests run as root.
"""

from __future__ import annotations

import re

import pytest

from pbx.store import offline
from tests.e2e.harness import run_pbx_cli
from tests.e2e.test_calls_sipp import sipp, start_pbx  # noqa: F401 - fixtures
from tests.store import postgres_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(postgres_server.unavailable() is not None, reason=postgres_server.unavailable() or ""),
]


def test_a_registration_taken_by_one_node_routes_calls_on_the_other(start_pbx, sipp, tmp_path):  # noqa: F811
    url = postgres_server.server().url()
    store = f'[store]\nurl = "{url}"\n'
    node_a = start_pbx(extra=store)
    node_b = start_pbx(extra=store)
    for node in (node_a, node_b):
        node.wait_for(r"Store: PostgreSQL at postgresql://pbx@127\.0\.0\.1:\d+/postgres")

    port = sipp.register(node_a, "1002")
    node_b.wait_for(r"Registrations of 1002@default changed on another node: 1 contact\(s\)")
    uas = sipp.uas("uas", "call_uas.xml", "1002", port)
    uac = sipp.uac(node_b, "call_uac.xml", "1002")
    sipp.check(node_b, uac, uas)
    call_id = node_b.ended(200, "normal")

    rows = [c for c in offline.cdrs(url, tmp_path) if c.call_id == call_id]
    assert [(c.caller, c.dialed, c.answered_by) for c in rows] == [("1001", "1002", "1002")]
    listed = run_pbx_cli("registrations", str(node_b.ports["path"]))
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"default\s+1002\s+.*sip:1002@127\.0\.0\.1:{port}", listed.stdout), listed.stdout
    assert "Traceback" not in node_a.process.output + node_b.process.output
