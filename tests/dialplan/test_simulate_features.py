"""`pbx dialplan simulate` and the phone features (docs/features.md): feature codes, park and retrieval, a
transferred party (`--referred-by`), a pickup, and the DND/forwarding set by phone read from the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pbx.dialplan import Action
from pbx.dialplan.simulate import CallerInfo, CallInfo, TenantDirectory, make_context, simulate_call
from pbx.store import sqlite_features
from tests.dialplan.test_simulate import NOW, config, run, simulate  # noqa: F401 (the fixture)


def test_feature_codes(capsys: pytest.CaptureFixture[str], config: Path) -> None:  # noqa: F811
    assert simulate(capsys, config, "--from", "1001", "--to", "*78") == [
        "feature dnd on",
        "# sets do-not-disturb on for 1001 (stored; it survives restarts), says so",
        "hangup",
        "# end (hangup): the PBX hangs up (BYE)",
    ]
    assert simulate(capsys, config, "--from", "1002", "--to", "*721003")[:2] == [
        "feature forward_all 1003",
        "# sets forward all to 1003 for 1002 (stored; it survives restarts), says so",
    ]
    assert simulate(capsys, config, "--from", "1002", "--to", "*53")[0] == "feature forward_noanswer off"


def test_a_transferred_party_is_parked_and_comes_back_to_the_transferor(
    capsys: pytest.CaptureFixture[str],
    config: Path,  # noqa: F811
) -> None:
    assert simulate(capsys, config, "--referred-by", "1003", "--to", "700") == [
        "park",
        "# answers; parks the call on the first free orbit (701), says it, plays music",
        "# -> timeout (nobody dialled 701): vars.parker = '1003'",
        "goto park-return",
        "dial 1003 timeout=20",
        "# -> answered",
        "# end: the call is connected; it ends when either side hangs up",
    ]


def test_a_transfer_to_a_number_is_routed_as_the_transferor(
    capsys: pytest.CaptureFixture[str],
    config: Path,  # noqa: F811
) -> None:
    with open(config, "a") as f:
        f.write('\n[tenants.default.extensions.1005]\npassword = "p"\nmay_call_out = true\n')
    out = simulate(capsys, config, "--referred-by", "1005", "--to", "9015551234")
    assert out[0].startswith("dial trunk:carrier/")  # 1005 may call out: so may what it transfers
    refused = simulate(capsys, config, "--referred-by", "1002", "--to", "9015551234")
    assert refused[-1] == "# end (hangup): the call is rejected with 404"  # 1002 may not, nor its transfer
    status, _, err = run(
        capsys, "simulate", "--config", str(config), "--referred-by", "1002", "--from", "1001"
    )
    assert status == 2 and "--referred-by EXT routes the call as EXT" in err


def test_retrieving_an_orbit(capsys: pytest.CaptureFixture[str], config: Path) -> None:  # noqa: F811
    assert simulate(capsys, config, "--from", "1002", "--to", "701")[0] == "unpark 701"


def test_phone_settings_from_the_database(capsys: pytest.CaptureFixture[str], config: Path) -> None:  # noqa: F811
    data = config.parent / "data"
    data.mkdir(exist_ok=True)
    connection = sqlite3.connect(data / "pbx.sqlite3")
    for statement in sqlite_features.MIGRATION:
        connection.execute(statement)
    connection.execute("INSERT INTO extension_features VALUES ('default', '1003', 1, NULL, NULL, NULL, 0.0)")
    connection.commit()
    connection.close()
    assert simulate(capsys, config, "--from", "1001", "--to", "1003")[:2] == [
        "voicemail 1003 greeting=busy",
        "# answers; plays mailbox 1003's busy greeting (none recorded: "
        '"the person at extension 1003 is busy"); * skips it',
    ]


def test_a_pickup_is_described() -> None:
    def render(context: Any, template: str) -> list[Action]:
        return [Action("pickup", ("group",)), Action("hangup")]

    context = make_context(
        call=CallInfo("c1", "*8"), caller=CallerInfo("default", "1001"), directory=TenantDirectory(), now=NOW
    )
    assert simulate_call(render, context, ()) == [
        "pickup group",
        "# picks up a call ringing in the caller's pickup group (the first picker wins; none ringing: the "
        "next action)",
        "# end: the picked-up call is connected to the caller; its ringing phones stop",
    ]
