"""A PBX trunk registering to Kamailio (an independent carrier implementation) through its digest challenge.

Kamailio (tests/e2e/kamailio.py: `auth_db` over a db_text `subscriber` table, `registrar`, `usrloc`) answers
the first REGISTER with a 401 and saves the binding only when the digest is right; the test reads the binding
from Kamailio's location table (`kamcmd ul.dump`): the PBX's Contact, on the PBX's UDP listener. When the PBX
stops, its unregister (Expires: 0) removes the binding. A wrong password is the negative control: no binding,
the trunk `failed` with Kamailio's answer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.harness import PbxProcess, run_pbx_cli
from tests.e2e.kamailio import Kamailio
from tests.e2e.test_trunk_registration_sipp import carrier_trunk, trunk_config, trunk_status

pytestmark = pytest.mark.e2e


def test_registers_to_kamailio_and_unregisters_on_stop(tmp_path: Path) -> None:
    with Kamailio(tmp_path, [("1555", "secret")]) as carrier:
        carrier.wait_listening()
        ports = trunk_config(tmp_path, carrier_trunk(carrier.port, register_expires=120), t1=0.5)
        pbx = PbxProcess(ports["path"])
        try:
            pbx.wait_ready(ports["listeners"])
            contact = f"sip:1555@127.0.0.1:{ports['sip']}"
            pbx.wait_for(
                rf"Trunk default/carrier: registered \(200 OK\); Contact <{re.escape(contact)}> "
                rf"at udp 127\.0\.0\.1:{carrier.port}"
            )
            assert carrier.wait_binding("1555") == [contact]
            registers = re.findall(
                r"KAMAILIO REGISTER from=(\S+) contact=(\S+) expires=(\S+) auth=(\S*)", carrier.log
            )
            assert registers[0][3] in ("", "<null>")  # challenged first
            assert registers[1] == ("sip:1555@127.0.0.1", f"<{contact}>;expires=120", "120", "1555")
            row, _ = trunk_status(ports["path"], "default/carrier", "registered")
            assert row[2:6] == ["200", "OK", "expires", "in"]
            assert row[-1] == f"<{contact}>"
        finally:
            pbx.stop()
        assert "the PBX is not running" in run_pbx_cli("trunks", "status", str(ports["path"])).stdout
        assert carrier.bindings().get("1555", []) == [], carrier.bindings()  # the unregister removed it


def test_a_wrong_password_leaves_no_binding(tmp_path: Path) -> None:
    with Kamailio(tmp_path, [("1555", "secret")]) as carrier:
        carrier.wait_listening()
        ports = trunk_config(tmp_path, carrier_trunk(carrier.port, password="wrong"), t1=0.5)
        pbx = PbxProcess(ports["path"])
        try:
            pbx.wait_ready(ports["listeners"])
            (line,) = pbx.wait_for(r"Trunk default/carrier: failed \(\d+ [^)]*\); next try in \d+ s")
            assert "(401 " in line or "(403 " in line, line
            assert carrier.bindings().get("1555", []) == []
        finally:
            pbx.stop()
