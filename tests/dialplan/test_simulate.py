"""`simulate_call` (the execution protocol), `make_context`, and the CLI: ``pbx dialplan check`` and
``pbx dialplan simulate`` run through `main([...])` with their output captured."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pbx.cli.dialplan import main
from pbx.dialplan import (
    MAX_RENDERS,
    Action,
    CallerInfo,
    CallInfo,
    ExtensionInfo,
    TenantDirectory,
    make_context,
    parse_actions,
    simulate_call,
)

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)

CONFIG = """
[pbx]
dialplan_dir = "dialplans"

[[sip.listen]]
transport = "udp"
host = "127.0.0.1"

[tenants.default]
domain = "localhost"

[tenants.default.extensions.1000]
name = "Reception"
password = "p"

[tenants.default.extensions.1001]
name = "Alice"
password = "p"

[tenants.default.extensions.1002]
name = "Bob"
password = "p"
forward_busy = "1003"
forward_noanswer = "group:sales"

[tenants.default.extensions.1003]
name = "Carol"
password = "p"
ring_timeout = 15

[tenants.default.extensions.1004]
name = "Dave"
password = "p"
forward_all = "1000"

[tenants.default.groups]
sales = ["1000", "1001"]

[tenants.default.trunks.carrier]
host = "sip.carrier.example"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose dialplan directory holds a copy of the shipped demo dialplan."""
    shutil.copytree(REPO / "dialplans", tmp_path / "dialplans")
    path = tmp_path / "pbx.toml"
    path.write_text(CONFIG)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    status = main(["dialplan", *argv])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def simulate(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> list[str]:
    status, out, err = run(capsys, "simulate", "--config", str(config), *argv)
    assert status == 0, err
    return out


# -- simulate with the demo dialplan ---------------------------------------------------------------------


def test_simulate_an_answered_call(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert simulate(capsys, config, "--from", "1001", "--to", "1003") == [
        "dial 1003 timeout=15.0 transfer=##",
        "# -> answered",
        "# end: the call is connected; it ends when either side hangs up",
    ]


def test_simulate_busy_forwards_to_forward_busy(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert simulate(capsys, config, "--from", "1001", "--to", "1002", "--result", "busy,noanswer") == [
        "dial 1002 timeout=20 transfer=##",
        "# -> busy",
        "dial 1003 timeout=20 if=busy",
        "# -> noanswer",
        "hangup",
        "# end (hangup): the call is rejected with 480",
    ]


@pytest.mark.parametrize("result", ["noanswer", "unavailable"])
def test_simulate_no_answer_forwards_to_the_group(
    capsys: pytest.CaptureFixture[str], config: Path, result: str
) -> None:
    assert simulate(
        capsys, config, "--from", "1001", "--to", "1002", "--result", result, "--result", "busy"
    ) == [
        "dial 1002 timeout=20 transfer=##",
        f"# -> {result}",
        "dial group:sales timeout=20 if=noanswer|unavailable",
        "# -> busy",
        "hangup",
        "# end (hangup): the call is rejected with 486",
    ]


def test_simulate_without_forwarding_goes_to_voicemail(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    assert simulate(capsys, config, "--from", "1002", "--to", "1001", "--result", "busy") == [
        "dial 1001 timeout=20 transfer=##",
        "# -> busy",
        "voicemail 1001 if=busy",
        "# answers; plays mailbox 1001's busy greeting"
        ' (none recorded: "the person at extension 1001 is busy"); * skips it',
        "# beep; records until #, silence, the mailbox's longest message or hang-up",
        "# end: the caller leaves a message (a full mailbox says so and records nothing)",
    ]
    for result in ("noanswer", "unavailable"):
        out = simulate(capsys, config, "--from", "1002", "--to", "1001", "--result", result)
        assert out[2] == "voicemail 1001 if=noanswer|unavailable"
        assert "1001's unavailable greeting" in out[3] and "is not available" in out[3]


def test_simulate_mailbox_access(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert simulate(capsys, config, "--from", "1002", "--to", "*97", "--list") == ["voicemailmain"]
    assert simulate(capsys, config, "--from", "1002", "--to", "*98", "--list") == ["voicemailmain ask"]


def test_simulate_forward_all(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert simulate(capsys, config, "--from", "1001", "--to", "1004")[0] == "dial 1000 timeout=20"


def test_simulate_the_ring_group_and_unknown_numbers(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    assert simulate(capsys, config, "--from", "1003", "--to", "600")[0] == (
        'dial group:sales timeout=20 callerid="Sales: Carol"'
    )
    assert simulate(capsys, config, "--from", "1003", "--to", "600", "--display-name", "Caz")[0] == (
        'dial group:sales timeout=20 callerid="Sales: Caz"'
    )
    assert simulate(capsys, config, "--from", "1001", "--to", "501") == [
        "hangup 404",
        "# end (hangup): the call is rejected with 404",
    ]
    assert simulate(capsys, config, "--from-trunk", "carrier", "--to", "1001")[0] == "hangup 404"


def test_simulate_a_trunks_call_by_did(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert simulate(capsys, config, "--trunk", "carrier", "--did", "+15551230000")[0] == "ivr main"
    assert simulate(capsys, config, "--trunk", "carrier", "--did", "15551230000")[0] == "ivr main"
    assert simulate(capsys, config, "--trunk", "carrier", "--did", "15559999999") == [
        "hangup 404",
        "# end (hangup): the call is rejected with 404",
    ]


TRUNKS = """
[tenants.default.extensions.1005]
password = "p"
may_call_out = true

[tenants.default.trunks.backup]
host = "backup.example"
enabled = false
"""


def test_simulate_shows_where_trunk_dials_go(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    config.write_text(config.read_text() + TRUNKS)
    assert simulate(capsys, config, "--from", "1005", "--to", "95551234567", "--result", "failed") == [
        "dial trunk:carrier/+15551234567 timeout=60",
        "#   trunk:carrier/+15551234567 -> sip:+15551234567@sip.carrier.example",
        "# -> failed",
        "hangup",
        "# end (hangup): the call is rejected with 480",
    ]
    main_j2 = config.parent / "dialplans" / "default" / "main.j2"
    main_j2.write_text("dial trunk:backup/123 trunk:carrier/123 trunk:other/1\n")
    assert simulate(capsys, config, "--from", "1005", "--to", "9123")[1:5] == [
        "#   trunk:backup/123 -> sip:123@backup.example (disabled: 503, the next target is tried)",
        "#   trunk:carrier/123 -> sip:123@sip.carrier.example",
        "#   trunk:other: no such trunk (the target is unavailable)",
        "#   failover: the next trunk after a timeout, 5xx/6xx or transport error",
    ]
    # The toll-fraud verdict (docs/security.md): 1005 has the default classes, 1001 none at all.
    main_j2.write_text("dial trunk:carrier/{{ call.dialed }}\n")
    assert simulate(capsys, config, "--from", "1005", "--to", "011442071234567")[1] == (
        "#   trunk:carrier/011442071234567 -> sip:011442071234567@sip.carrier.example"
        " (refused: 403, class international not allowed)"
    )
    assert simulate(capsys, config, "--from", "1001", "--to", "911")[1] == (
        "#   trunk:carrier/911 -> sip:911@sip.carrier.example"
    )
    assert simulate(capsys, config, "--from-trunk", "carrier", "--to", "15551230000")[1].endswith(
        "(refused: 403, calls from trunks may not go out again)"
    )


def test_simulate_list_shows_every_rendered_line(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    out = simulate(capsys, config, "--from", "1001", "--to", "1002", "--list", "-v")
    main_j2 = config.parent / "dialplans" / "default" / "main.j2"
    lines = main_j2.read_text().splitlines()
    assert [line.split("  # ")[0] for line in out] == [
        "dial 1002 timeout=20 transfer=##",
        "dial 1003 timeout=20 if=busy",
        "dial group:sales timeout=20 if=noanswer|unavailable",
        "hangup",
    ]
    for line in out:  # -v names the template line that printed the action
        action, where = line.split("  # ")
        file, number = where.rsplit(":", 1)
        assert file == str(main_j2)
        assert lines[int(number) - 1].strip().split()[0] == action.split()[0]


def test_simulate_usage_errors(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    for argv, message in (
        (("--tenant", "acme", "--from", "1001", "--to", "1"), "no tenant 'acme'"),
        (("--from", "7777", "--to", "1"), "no extension '7777'"),
        (("--to", "1"), "give --from"),
        (("--from", "1001", "--to", "1", "--result", "maybe"), "--result must be one of"),
        (("--from", "1001", "--to", "1", "--time", "yesterday"), "Invalid isoformat"),
    ):
        status, _, err = run(capsys, "simulate", "--config", str(config), *argv)
        assert status == 2 and message in err, err
    bad = config.parent / "bad.toml"
    bad.write_text("[pbx]\nnope = 1\n")
    status, _, err = run(capsys, "simulate", "--config", str(bad), "--from", "1", "--to", "2")
    assert status == 2 and "nope" in err


def test_simulate_reports_dialplan_errors(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    main_j2 = config.parent / "dialplans" / "default" / "main.j2"
    main_j2.write_text("answer\ndail {{ call.dialed }}\n")
    status, out, err = run(capsys, "simulate", "--config", str(config), "--from", "1001", "--to", "1002")
    assert (status, out) == (1, [])
    assert err.strip() == f"{main_j2}:2: unknown action 'dail'"


def test_simulate_with_dir_and_no_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "d" / "default").mkdir(parents=True)
    (tmp_path / "d" / "default" / "main.j2").write_text(
        "set who={{ caller.extension }} ua={{ call.headers['user-agent'] }} v={{ vars.x }} t={{ now.hour }}\n"
        "dial {{ call.dialed }}\n"
    )
    status, out, err = run(
        capsys, "simulate", "--dir", str(tmp_path / "d"), "--from", "42", "--to", "1002",
        "--header", "User-Agent=phone 1", "--var", "x=y", "--time", "2024-05-06T09:30:00+00:00",
    )  # fmt: skip
    assert status == 0, err
    assert out[:2] == ['set who=42 ua="phone 1" v=y t=9', "dial 1002"]


# -- the protocol, with a scripted renderer ----------------------------------------------------------------


class Script:
    """Renders templates from fixed text, recording each render's context."""

    def __init__(self, templates: dict[str, str]) -> None:
        self.templates = templates
        self.contexts: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, context: Any, template: str) -> list[Action]:
        self.contexts.append((template, dict(context)))
        return parse_actions(self.templates[template], f"{template}.j2")


def new_context() -> dict[str, Any]:
    return make_context(
        call=CallInfo("c1", "1002"),
        caller=CallerInfo("default", "1001"),
        directory=TenantDirectory(),
        now=NOW,
    )


def test_goto_carries_result_vars_and_guard() -> None:
    script = Script(
        {
            "main": "dial 1002\nset a=1\ngoto next\nhangup 500",
            "next": "dial 1003 if=busy\nset b=2 if=noanswer\nhangup",
        }
    )
    out = simulate_call(script, new_context(), ["busy", "noanswer"])
    assert out == [
        "dial 1002",
        "# -> busy",
        "set a=1",
        "goto next",
        "dial 1003 if=busy",
        "# -> noanswer",
        "hangup",
        "# end (hangup): the call is rejected with 480",
    ]
    template, context = script.contexts[1]
    assert template == "next"
    assert (context["result"], dict(context["vars"]), context["digits"]) == ("busy", {"a": "1"}, None)


def test_conditional_actions_are_skipped_before_any_dial_and_on_other_results() -> None:
    script = Script({"main": "hangup 486 if=busy\nanswer if=failed\ndial 1002\nhangup 404 if=busy"})
    assert simulate_call(script, new_context(), ["noanswer"]) == [
        "dial 1002",
        "# -> noanswer",
        "# end (no more actions): the call is rejected with 480",
    ]


def test_menu_re_renders_the_same_template_with_the_digits() -> None:
    script = Script(
        {
            "main": "ivr main\nhangup 500",
            "ivr/main": "{digits}",
        }
    )
    rendered = iter(["menu prompt=welcome maxdigits=1\nplay never", "play thanks\ndial 1001", "unused"])

    def render(context: Any, template: str) -> list[Action]:
        script.contexts.append((template, dict(context)))
        if template == "main":
            return parse_actions(script.templates["main"])
        return parse_actions(next(rendered))

    out = simulate_call(render, new_context(), ["answered"], digits=["1"])
    assert out == [
        "ivr main",
        "menu prompt=welcome maxdigits=1",
        "# -> digits '1'",
        "play thanks",
        "dial 1001",
        "# -> answered",
        "# end: the call is connected; it ends when either side hangs up",
    ]
    assert [(t, c["digits"]) for t, c in script.contexts] == [
        ("main", None),
        ("ivr/main", None),
        ("ivr/main", "1"),
    ]


def test_answered_calls_end_with_bye_and_voicemail_ends_the_plan() -> None:
    assert simulate_call(Script({"main": "answer\nplay hi\nhangup 404"}), new_context(), [])[-1] == (
        "# end (hangup): the PBX hangs up (BYE)"
    )
    out = simulate_call(Script({"main": "dial 1002\nvoicemail 1002\nhangup"}), new_context(), ["busy"])
    assert out[-1] == "# end: the caller leaves a message (a full mailbox says so and records nothing)"
    assert "busy greeting" in out[3]


def test_voicemail_greeting_option_and_operator() -> None:
    script = Script({"main": "dial 1002\nvoicemail 1002 greeting=unavailable operator=1000\nhangup 404"})
    out = simulate_call(script, new_context(), ["busy"])
    assert "unavailable greeting" in out[3]
    assert out[4:] == [
        "# -> no 0 pressed (0 would go to 1000)",
        "# beep; records until #, silence, the mailbox's longest message or hang-up",
        "# end: the caller leaves a message (a full mailbox says so and records nothing)",
    ]
    out = simulate_call(script, new_context(), ["busy", "noanswer"], digits=["0"])
    assert out[4:] == [
        "# -> 0 pressed: the call goes to the operator (1000)",
        "dial 1000",
        "# -> noanswer",
        "hangup 404",
        "# end (hangup): the PBX hangs up (BYE)",
    ]
    out = simulate_call(script, new_context(), ["busy", "answered"], digits=["0"])
    assert out[-3:] == [
        "dial 1000",
        "# -> answered",
        "# end: the call is connected; it ends when either side hangs up",
    ]


def test_a_goto_loop_ends_after_max_renders() -> None:
    script = Script({"main": "goto main"})
    out = simulate_call(script, new_context(), [])
    assert len(script.contexts) == MAX_RENDERS
    assert out[-1] == f"# end: more than {MAX_RENDERS} renders (a goto loop?): the call fails"


def test_simulate_call_rejects_unknown_results() -> None:
    with pytest.raises(ValueError, match="unknown dial result"):
        simulate_call(Script({"main": "dial 1"}), new_context(), ["maybe"])


def test_make_context_is_read_only_and_complete() -> None:
    context = make_context(
        call=CallInfo("c1", "1002", headers={"user-agent": "x"}),
        caller=CallerInfo("default", "1001", "Alice", True, False),
        directory=TenantDirectory({"1002": ExtensionInfo("1002", "Bob")}, {"sales": ["1002"]}),
        now=NOW,
        variables={"a": "1"},
    )
    assert set(context) == {"call", "caller", "extensions", "groups", "now", "digits", "result", "vars"}
    assert context["groups"]["sales"] == ("1002",)
    with pytest.raises(TypeError):
        context["extensions"]["1003"] = ExtensionInfo("1003")
    with pytest.raises(TypeError):
        context["call"].headers["x"] = "y"


def test_extension_info_from_attributes() -> None:
    class Configured:
        number = "1002"
        name = "Bob"
        forward_busy = "1003"
        ring_timeout = 12.0
        password = "secret"

    assert ExtensionInfo.from_attributes(Configured()) == ExtensionInfo(
        "1002", "Bob", forward_busy="1003", ring_timeout=12.0
    )


# -- check -------------------------------------------------------------------------------------------------


def test_check_passes_the_shipped_dialplans(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "check", "--config", str(REPO / "pbx.example.toml"))
    assert status == 0, out
    assert out == [f"{REPO / 'dialplans'}: 3 template(s) OK"]
    status, out, _ = run(capsys, "check", "--dir", str(REPO / "dialplans"))
    assert status == 0, out


def test_check_with_the_test_config(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    status, out, _ = run(capsys, "check", "--config", str(config))
    assert status == 0, out


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_check_reports_every_problem_with_file_and_line(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    d = config.parent / "dialplans"
    acme = d / "acme"
    write(
        acme / "main.j2",
        "{% if call.dialed == '600' %}\ndial {{ groups.sales_team }}\n{% endif %}\ngoto nowhere\n",
    )
    write(acme / "broken.j2", "answer\n{% if %}\n")
    write(acme / "typo.j2", "answer\n\ndail 1002\n")
    write(acme / "ivr" / "main.j2", "{% if digits == '7' %}\nhangup {{ digits }}\n{% endif %}\nivr nope\n")
    write(acme / "bad.name.j2", "answer\n")
    write(d / "nomain" / "other.j2", "answer\n")
    default_main = d / "default" / "main.j2"
    default_main.write_text(default_main.read_text().replace("dial 1000 1001", "dial 1000 1009"))
    write(d / "default" / "unknown.j2", "dial 1009 group:support\ndial trunk:carier/123\n")
    status, out, err = run(capsys, "check", "--config", str(config))
    assert status == 1
    assert out == [
        f"{acme / 'bad.name.j2'}: 'bad.name' is no valid template name: goto and ivr cannot reach it",
        f"{acme / 'broken.j2'}:2: Expected an expression, got 'end of statement block'",
        f"{acme / 'ivr' / 'main.j2'}:2: hangup: must be a whole number from 400 to 699, not '7'",
        f"{acme / 'ivr' / 'main.j2'}:4: ivr nope: no template {acme / 'ivr' / 'nope.j2'}",
        f"{acme / 'main.j2'}:2: 'mappingproxy object' has no attribute 'sales_team'",
        f"{acme / 'main.j2'}:4: goto nowhere: no template {acme / 'nowhere.j2'}",
        f"{acme / 'typo.j2'}:3: unknown action 'dail'",
        f"{d / 'default' / 'unknown.j2'}:1: dial: tenant 'default' has no extension '1009'",
        f"{d / 'default' / 'unknown.j2'}:1: dial: tenant 'default' has no group 'support'",
        f"{d / 'default' / 'unknown.j2'}:2: dial: tenant 'default' has no trunk 'carier'",
        f"{d / 'nomain' / 'main.j2'}: missing: every call of the tenant starts here",
    ]
    assert "11 problem(s) in 10 template(s)" in err


def test_check_reports_configured_tenants_without_a_dialplan(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    config.write_text(CONFIG + '\n[tenants.acme]\ndomain = "acme.example"\n')
    status, out, _ = run(capsys, "check", "--config", str(config))
    assert status == 1
    assert out == [f"{config.parent / 'dialplans' / 'acme' / 'main.j2'}: no dialplan for tenant 'acme'"]


def test_check_errors_for_a_missing_directory_and_a_bad_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, _ = run(capsys, "check", "--dir", str(tmp_path / "none"))
    assert status == 1 and out == [f"{tmp_path / 'none'}: no such directory"]
    bad = write(tmp_path / "bad.toml", "[pbx]\nnope = 1\n")
    status, _, err = run(capsys, "check", "--config", str(bad))
    assert status == 2 and "nope" in err


def test_check_default_directory_is_the_working_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(tmp_path / "dialplans" / "default" / "main.j2", "hangup 404\n")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        status, out, _ = run(capsys, "check")
    finally:
        os.chdir(cwd)
    assert (status, out) == (0, ["dialplans: 1 template(s) OK"])


def test_simulate_the_shipped_auto_attendant(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    menu = 'menu prompt="welcome&menu" choices=1|2|9 maxdigits=1 timeout=5 retries=2'
    assert simulate(capsys, config, "--from", "1003", "--to", "500", "--digits", "1") == [
        "ivr main",
        menu,
        "# -> digits '1'",
        "play please-hold",
        "dial 1001 timeout=20",
        "# -> answered",
        "# end: the call is connected; it ends when either side hangs up",
    ]
    out = simulate(capsys, config, "--from", "1003", "--to", "500", "--digits", "2", "--result", "busy")
    assert out[3:7] == ["play please-hold", "dial 1002 timeout=20", "# -> busy", "voicemail 1002"]
    assert "mailbox 1002's busy greeting" in out[7]
    assert out[-1] == "# end: the caller leaves a message (a full mailbox says so and records nothing)"
    out = simulate(capsys, config, "--from", "1003", "--to", "500", "--digits", "9")
    assert out[3] == "voicemail 8000" and "mailbox 8000's unavailable greeting" in out[4]
    for nothing in ("", "5"):
        assert simulate(capsys, config, "--from", "1003", "--to", "500", "--digits", nothing)[3:] == [
            "play goodbye",
            "hangup",
            "# end (hangup): the PBX hangs up (BYE)",
        ]


def test_early_media_is_not_an_answer() -> None:
    """`progress` and `play ... noanswer=yes` send 183 with media: a later hangup rejects the call."""
    script = Script({"main": "progress\nplay closed noanswer=yes\nhangup 480"})
    out = simulate_call(script, new_context(), [])
    assert out[-1] == "# end (hangup): the call is rejected with 480"
    script = Script({"main": "play closed\nhangup 480"})
    assert simulate_call(script, new_context(), [])[-1] == "# end (hangup): the PBX hangs up (BYE)"
