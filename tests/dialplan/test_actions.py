"""The action language: tokenizer, every action's validation, errors with file:line, escaping round-trips,
and `RunState`, the execution protocol's bookkeeping."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.dialplan import (
    ACTIONS,
    Action,
    DialplanError,
    DialTarget,
    RunState,
    escape_value,
    format_value,
    parse_actions,
    parse_line,
    parse_target,
    template_for,
)


def one(text: str) -> Action:
    action = parse_line(text, "dialplans/default/main.j2", 7)
    assert action is not None
    return action


def error(text: str) -> str:
    with pytest.raises(DialplanError) as info:
        parse_line(text, "dialplans/default/main.j2", 7)
    assert info.value.file == "dialplans/default/main.j2"
    assert info.value.line == 7
    return str(info.value)


# -- tokenizer -------------------------------------------------------------------------------------------


def test_a_line_is_a_name_arguments_and_options() -> None:
    action = one('dial 1002 1003   timeout=20\tcallerid="Sales: Bob"')
    assert action == Action("dial", ("1002", "1003"), {"timeout": "20", "callerid": "Sales: Bob"})
    assert (action.source, action.line) == ("dialplans/default/main.j2", 7)


def test_blank_and_comment_lines_are_skipped() -> None:
    assert parse_line("") is None
    assert parse_line("   \t ") is None
    assert parse_line("# dial 1002") is None
    assert parse_line("   # indented comment") is None


def test_parse_actions_numbers_lines_and_splits_only_at_newline() -> None:
    actions = parse_actions("# plan\n\ndial 1002\r\nhangup 480\n", "f.j2")
    assert [(a.name, a.line) for a in actions] == [("dial", 3), ("hangup", 4)]
    # U+2028 is no line break in the action language: it is simply not allowed outside quotes
    with pytest.raises(DialplanError, match=r"f\.j2:1: unexpected character"):
        parse_actions("set a=1\u2028hangup", "f.j2")


def test_quoted_values_unescape() -> None:
    action = one(r'set a="x \"y\" \\ z" b="" c=plain')
    assert action.options == {"a": 'x "y" \\ z', "b": "", "c": "plain"}


def test_a_bare_prefix_joins_a_quoted_value() -> None:
    assert one('dial trunk:carrier/"5551234"').args == ("trunk:carrier/5551234",)
    assert one('set greeting=hello-"big world"').options == {"greeting": "hello-big world"}


def test_a_quoted_string_is_never_an_option_or_an_action() -> None:
    # "timeout=20" quoted is an argument, which dial rejects as a target
    assert "bad dial target 'timeout=20'" in error('dial 1002 "timeout=20"')
    assert "action name must be a plain word" in error('"dial" 1002')
    assert "action name must be a plain word" in error('"" hangup')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('dial "1002', "unterminated quoted string"),
        ('dial "10"02', "a quoted string must end its token"),
        ('dial "10""02"', "a quoted string must end its token"),
        ('set a="x\\n"', "bad escape"),
        ("dial 10\\02", "backslash"),
        ("dial 1002\x00", "unexpected character"),
        ('set a="x\x07"', "unexpected character"),
        ("dial 1002 time-out=3", "bad option name 'time-out'"),
        ("dial 1002 =3", "bad option name ''"),
        ("dial 1002 timeout=20 timeout=30", "option 'timeout' given twice"),
        ("Dial 1002", "expected an action name, not 'Dial'"),
        ("1002", "expected an action name"),
        ("dail 1002", "unknown action 'dail'"),
    ],
)
def test_malformed_lines(text: str, message: str) -> None:
    assert message in error(text)


def test_error_string_is_file_line_message() -> None:
    assert error("dail 1002") == "dialplans/default/main.j2:7: unknown action 'dail'"
    assert str(DialplanError("no such template", "d/x.j2")) == "d/x.j2: no such template"
    assert str(DialplanError("oops")) == "<dialplan>: oops"


def test_overlong_line() -> None:
    assert "longer than 4096" in error("play " + "a" * 5000)


# -- every action's validation -----------------------------------------------------------------------------

VALID = [
    "dial 1002",
    "dial 1002 1003 group:sales trunk:carrier/+15551234 timeout=20 callerid=Alice strategy=parallel",
    "dial 1000 1001 strategy=sequential ringtime=10 timeout=25.5",
    "dial 1002 if=busy|noanswer",
    "goto afterhours",
    "goto sub/dir",
    'set a=1 b_2="two words"',
    "set x=1 if=failed",
    "answer",
    "hangup",
    "hangup 404",
    "hangup 699",
    "voicemail 1002",
    "voicemailmain",
    "voicemailmain ask",
    "voicemailmain 1002",
    "voicemail 1002 greeting=busy operator=1000",
    "voicemail 8000 greeting=auto operator=group:sales if=noanswer|unavailable",
    "ivr main",
    "menu prompt=welcome",
    "menu prompt=lang/en/welcome timeout=5 maxdigits=4 retries=0",
    "menu prompt=welcome&menu choices=1|2|9|*0 invalid=sorry noanswer=yes",
    "play welcome goodbye",
    "pickup group",
    "dial 1002 transfer=## timeout=20",
    "pickup 1002",
    "play tone:beep tone:ringback:10 tone:busy:600 silence:500 digits:1234 noanswer=yes",
    "progress",
    "record greeting maxlength=60 silence=0",
    "record voicemail/1000/20261124-0522 beep=no",
    "feature dnd on",
    "feature dnd off prompt=no",
    "feature forward_all 1003",
    "feature forward_busy trunk:carrier/5551234",
    "feature forward_noanswer off",
    "park",
    "park announce=no",
    "unpark 701",
]


@pytest.mark.parametrize("text", VALID)
def test_valid_actions(text: str) -> None:
    action = one(text)
    assert action.name in ACTIONS
    assert one(str(action)) == action  # str() round-trips


INVALID = [
    ("dial", "dial takes at least 1 argument, not 0"),
    ("dial " + " ".join(str(1000 + i) for i in range(33)), "dial takes at most 32 arguments, not 33"),
    ("dial 1002 1002", "a target is listed twice"),
    ("dial 10 02x!", "bad dial target '02x!'"),
    ("dial group:", "bad dial target 'group:'"),
    ("dial group:../x", "bad dial target"),
    ("dial trunk:carrier", "bad dial target"),
    ("dial trunk:carrier/12ab", "bad dial target"),
    ("dial .hidden", "bad dial target"),
    ("dial 1002 timeout=0", "timeout must be a number of seconds from 1 to 3600, not '0'"),
    ("dial 1002 timeout=3601", "timeout must be a number of seconds"),
    ("dial 1002 timeout=abc", "timeout must be a number of seconds"),
    ("dial 1002 timeout=-5", "timeout must be a number of seconds"),
    ("dial 1002 strategy=random", "strategy must be parallel or sequential or failover, not 'random'"),
    ("dial 1002 ringtime=5", "ringtime= needs strategy=sequential"),
    ("dial 1002 callerid=" + "x" * 300, "callerid must be at most 256 characters"),
    (
        "dial 1002 timout=20",
        "dial: unknown option 'timout' (known: callerid, callername, if, privacy, ringtime, strategy,"
        " timeout, transfer)",
    ),
    ("dial 1002 if=answered", "if must be results joined by '|'"),
    ("dial 1002 if=busy|", "if must be results joined by '|'"),
    ("dial 1002 if=busy|busy", "if must be results joined by '|'"),
    ("goto", "goto takes 1 argument, not 0"),
    ("goto a b", "goto takes 1 argument, not 2"),
    ("goto ../etc/passwd", "goto: must be a template name"),
    ("goto /abs", "goto: must be a template name"),
    ("goto main.j2", "goto: must be a template name"),
    ("goto a/b/c/d/e", "goto: must be a template name"),
    ("set", "set needs at least one NAME=VALUE"),
    ("set if=busy", "set needs at least one NAME=VALUE"),
    ("set a", "set takes 0 arguments, not 1"),
    ("set a=" + "x" * 1025, "set: a must be at most 1024 characters"),
    ("answer now", "answer takes 0 arguments, not 1"),
    ("answer timeout=3", "answer: unknown option 'timeout' (known: if)"),
    ("hangup 200", "hangup: must be a whole number from 400 to 699, not '200'"),
    ("hangup 700", "hangup: must be a whole number from 400 to 699"),
    ("hangup busy", "hangup: must be a whole number from 400 to 699"),
    ("hangup 486 480", "hangup takes at most 1 argument, not 2"),
    ("hangup ٤٨٦", "hangup: must be a whole number"),  # Arabic-Indic digits are not a status
    ("voicemail", "voicemail takes 1 argument, not 0"),
    ("voicemail ../x", "voicemail: must be an extension number"),
    ("voicemailmain 1002 1003", "voicemailmain takes at most 1 argument, not 2"),
    ("voicemailmain ../x", "voicemailmain: must be a mailbox number or ask"),
    (
        "voicemail 1002 greeting=closed",
        "voicemail: greeting must be auto or busy or unavailable, not 'closed'",
    ),
    ("voicemail 1002 operator=../x", "voicemail: operator bad dial target"),
    ("voicemail 1002 beep=no", "voicemail: unknown option 'beep' (known: greeting, if, operator)"),
    ("ivr", "ivr takes 1 argument, not 0"),
    ("ivr ../../x", "ivr: must be a template name"),
    ("menu", "menu: prompt= is required"),
    ("menu welcome", "menu takes 0 arguments, not 1"),
    ("menu prompt=../x", "menu: prompt must be a prompt name"),
    ("menu prompt=w timeout=61", "menu: timeout must be a number of seconds from 1 to 60"),
    ("menu prompt=w maxdigits=0", "menu: maxdigits must be a whole number from 1 to 32"),
    ("menu prompt=w retries=11", "menu: retries must be a whole number from 0 to 10"),
    ("menu prompt=w&../x", "menu: prompt must be a prompt name"),
    ("menu prompt=w&", "menu: prompt must be a prompt name"),
    ("menu prompt=w choices=1|1", "menu: choices must be distinct key entries"),
    ("menu prompt=w choices=1||2", "menu: choices must be distinct key entries"),
    ("menu prompt=w choices=x", "menu: choices must be distinct key entries"),
    ("menu prompt=w noanswer=1", "menu: noanswer must be yes or no"),
    ("play", "play takes at least 1 argument, not 0"),
    ("pickup", "pickup takes 1 argument, not 0"),
    ("play tone:nosuch", "play: must be a prompt name"),
    ("play silence:x", "play: must be a prompt name"),
    ("play tone:ringback:601", "play: must be a prompt name"),
    ("play tone:ringback:0", "play: must be a prompt name"),
    ("progress now", "progress takes 0 arguments, not 1"),
    ("play a/../b", "play: must be a prompt name"),
    ("record", "record takes 1 argument, not 0"),
    ("record x maxlength=0", "record: maxlength must be a number of seconds from 1 to 3600"),
    ("record x silence=61", "record: silence must be a number of seconds from 0 to 60"),
    ("record tone:beep", "record: must be a recording name"),
    ("record x beep=off", "record: beep must be yes or no"),
    ("feature dnd", "feature takes 2 arguments, not 1"),
    ("feature dnd 1003", "feature dnd: must be on or off"),
    ("feature forward_all on", "feature forward_all: must be a dial target or off"),
    ("feature volume up", "the first argument must be one of dnd"),
    ('feature forward_all "10 02"', "bad dial target"),
    ("park 701", "park takes 0 arguments, not 1"),
    ("unpark", "unpark takes 1 argument, not 0"),
    ("unpark abc", "unpark: must be a park orbit number"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_actions(text: str, message: str) -> None:
    assert message in error(text)


def test_every_action_is_covered_by_valid_and_invalid_cases() -> None:
    assert {t.split()[0] for t in VALID} == set(ACTIONS)
    assert {t.split()[0] for t, _ in INVALID} == set(ACTIONS)


# -- Action helpers -----------------------------------------------------------------------------------------


def test_action_is_frozen_hashable_and_compares_without_source() -> None:
    a = Action("dial", ["1002"], {"timeout": "20"}, "a.j2", 3)
    b = Action("dial", ("1002",), {"timeout": "20"}, "b.j2", 9)
    assert a == b and hash(a) == hash(b)
    assert a != Action("dial", ("1002",), {"timeout": "30"})
    with pytest.raises(AttributeError):
        a.name = "hangup"  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.options["timeout"] = "1"  # type: ignore[index]
    assert repr(a) == "Action(name='dial', args=('1002',), options={'timeout': '20'}, source='a.j2', line=3)"


def test_action_helpers() -> None:
    dial = one("dial 1002 group:sales trunk:carrier/+1555 timeout=2.5 if=busy|noanswer")
    assert dial.targets == (
        DialTarget("extension", "1002"),
        DialTarget("group", "sales"),
        DialTarget("trunk", "carrier", "+1555"),
    )
    assert dial.condition == frozenset({"busy", "noanswer"})
    assert dial.number("timeout") == 2.5
    assert dial.number("ringtime") is None
    assert dial.number("ringtime", 7.0) == 7.0
    assert dial.variables == {}
    setter = one("set a=1 b=2 if=failed")
    assert setter.variables == {"a": "1", "b": "2"}
    assert setter.targets == ()
    assert one("hangup").condition == frozenset()
    assert template_for(one("goto after")) == "after"
    assert template_for(one("ivr main")) == "ivr/main"
    with pytest.raises(ValueError):
        template_for(one("hangup"))


def test_parse_target() -> None:
    assert parse_target("1002") == DialTarget("extension", "1002")
    for uri in ("sip:1002@h", "sips:bob@example.test:5061", "sip:[::1]:5070;transport=tcp", "sip:h.example"):
        assert parse_target(uri) == DialTarget("uri", uri)
    for bad in ("", "group:", "trunk:x", "trunk:/1", "a b", "1002;x", "sip:", "sip:a b@h", 'sip:"x"@h'):
        with pytest.raises(ValueError):
            parse_target(bad)


# -- escaping ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("1002", '"1002"'),
        ("", '""'),
        (None, '""'),
        (20, '"20"'),
        ('x" hangup="1', '"x\\" hangup=\\"1"'),
        ("a\\b", '"a\\\\b"'),
        ("1002\ndial 9999", '"1002 dial 9999"'),
        ("a\r\nb\tc\x00d\x1b[2Je", '"a  b c d [2Je"'),
        ("x\u2028y\u2029z\x85w", '"x y z w"'),
        ("\u202eevil\u200b", '" evil "'),
        ("Zoë 日本 ☎", '"Zoë 日本 ☎"'),
        ("\x1e12\x1fsneaky", '"sneaky"'),
    ],
)
def test_escape_value(value: object, rendered: str) -> None:
    assert escape_value(value) == rendered


@given(st.text())
def test_escaped_value_is_always_exactly_one_value(text: str) -> None:
    escaped = escape_value(text)
    assert "\n" not in escaped and "\r" not in escaped
    expected = "".join(c if c.isprintable() else " " for c in re.sub("\x1e[0-9]*\x1f", "", text))
    # before and after other tokens, as an option value and as an argument: always exactly one value
    assert one(f"set v={escaped} w=1").options == {"v": expected, "w": "1"}
    assert one(f"set w=1 v=x{escaped}").options == {"w": "1", "v": "x" + expected}
    with pytest.raises(DialplanError, match="set takes 0 arguments, not 1"):
        parse_line(f"set {escaped} w=1")


@given(st.text())
def test_format_value_round_trips(text: str) -> None:
    printable = "".join(c if c.isprintable() else " " for c in text)
    action = Action("set", (), {"v": printable})
    assert one(str(action)).options == {"v": printable}
    assert parse_line(f"set v={format_value(printable)} w=1") == Action("set", (), {"v": printable, "w": "1"})


# -- RunState ------------------------------------------------------------------------------------------------


def test_conditions_test_the_last_unconditional_dial() -> None:
    state = RunState()
    dial, forward_busy, forward_noanswer = (
        one("dial 1002"),
        one("dial 1003 if=busy"),
        one("dial 1004 if=noanswer"),
    )
    hangup_busy = one("hangup 486 if=busy")
    assert state.should_run(dial)
    assert not state.should_run(forward_busy)  # no guarding dial yet
    state.dial_finished(dial, "busy")
    assert state.should_run(forward_busy)
    state.dial_finished(forward_busy, "noanswer")
    assert (state.result, state.guard) == ("noanswer", "busy")
    assert not state.should_run(forward_noanswer)  # conditional dials never chain
    assert state.should_run(hangup_busy)
    assert state.hangup_status(one("hangup")) == 480  # from the most recent dial that ran
    assert state.hangup_status(hangup_busy) == 486
    state.dial_finished(one("dial 1005"), "unavailable")
    assert state.guard == "unavailable"


@pytest.mark.parametrize(
    ("result", "status"),
    [(None, 480), ("busy", 486), ("noanswer", 480), ("unavailable", 480), ("failed", 480)],
)
def test_hangup_status_without_code(result: str | None, status: int) -> None:
    state = RunState()
    if result is not None:
        state.dial_finished(one("dial 1002"), result)
    assert state.hangup_status() == status
    assert state.hangup_status(one("hangup")) == status
    assert state.hangup_status(one("hangup 404")) == 404


def test_dial_finished_rejects_unknown_results() -> None:
    with pytest.raises(ValueError):
        RunState().dial_finished(one("dial 1002"), "maybe")
