"""`DialplanEngine`: rendering, template line numbers in errors, reload on edit, the last good version
after a broken edit, never-good templates, refused tags, the sandbox and the output limits; and a failed
stat or read (too many open files...) retried on the next render, never kept as a template error."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import Logger

from pbx.dialplan import Action, DialplanEngine, DialplanError, DialplanUnavailable
from pbx.dialplan import engine as engine_module


class Editor:
    """Writes templates and bumps their mtime explicitly, so that edits within one second are seen."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tick = 1_700_000_000

    def write(self, name: str, text: str, tenant: str = "default") -> Path:
        path = self.root / tenant / f"{name}.j2"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.tick += 10
        os.utime(path, (self.tick, self.tick))
        return path


@pytest.fixture
def editor(tmp_path: Path) -> Editor:
    return Editor(tmp_path / "dialplans")


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(DialplanEngine, "_log", Logger(observer=events.append))
    return events


def context(**extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "call": {"dialed": "1002", "display_name": "Alice"},
        "extensions": {"1002": {"name": "Bob"}},
        "now": datetime(2024, 5, 6, 10, 0, tzinfo=UTC),
        "digits": None,
        "result": None,
        "vars": {},
    }
    values.update(extra)
    return values


def render_error(engine: DialplanEngine, template: str = "main", **extra: Any) -> DialplanError:
    with pytest.raises(DialplanError) as info:
        engine.render("default", context(**extra), template)
    return info.value


def test_render_parses_actions_with_their_template_lines(editor: Editor) -> None:
    path = editor.write(
        "main",
        "{# the plan #}\n"
        "# a comment for the reader\n"
        "{% if call.dialed in extensions %}\n"
        "  dial {{ call.dialed }} timeout=20\n"
        "  {% for n in ['1003', '1004'] %}\n"
        "dial {{ n }} if=busy\n"
        "  {% endfor %}\n"
        "{% endif %}\n"
        "hangup\n",
    )
    actions = DialplanEngine(editor.root).render("default", context())
    assert actions == [
        Action("dial", ("1002",), {"timeout": "20"}),
        Action("dial", ("1003",), {"if": "busy"}),
        Action("dial", ("1004",), {"if": "busy"}),
        Action("hangup"),
    ]
    assert [(a.source, a.line) for a in actions] == [
        (str(path), 4),
        (str(path), 6),
        (str(path), 6),
        (str(path), 9),
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("answer\n\n\ndail 1002\n", 4, "unknown action 'dail'"),
        ("{% if true %}\n{% if true %}\n\ndail 1\n{% endif %}\n{% endif %}\n", 4, "unknown action 'dail'"),
        ("{% set x = 1 %}\n{% for i in [1] %}\nanswer\n{{ call.dialed }} 1\n{% endfor %}\n", 4, "plain word"),
        ("answer\ndial {{ 'a b' }}\n", 2, "bad dial target 'a b'"),
        ("answer\n{% if true %}hangup {{ 200 }}{% endif %}\n", 2, "from 400 to 699"),
        ('answer\nplay "{{ call.dialed }}"\n', 2, "a quoted string must end its token"),
    ],
)
def test_action_errors_name_the_template_line(editor: Editor, text: str, line: int, message: str) -> None:
    path = editor.write("main", text)
    error = render_error(DialplanEngine(editor.root))
    assert (error.file, error.line) == (str(path), line)
    assert message in error.message


def test_a_strict_undefined_typo_is_an_error_with_its_line(editor: Editor) -> None:
    path = editor.write("main", "answer\n{% if true %}\ndial {{ call.dialled }}\n{% endif %}\n")
    error = render_error(DialplanEngine(editor.root))
    assert (error.file, error.line) == (str(path), 3)
    assert "dialled" in error.message


def test_a_syntax_error_names_its_line(editor: Editor) -> None:
    path = editor.write("main", "answer\n\n{% if call.dialed %}\ndial 1002\n")
    error = render_error(DialplanEngine(editor.root))
    assert (error.file, error.line) == (str(path), 4)
    assert "endif" in error.message
    editor.write("main", "answer\n{{ call.dialed | nosuchfilter }}\n")
    assert render_error(DialplanEngine(editor.root)).line == 2


def test_other_exceptions_in_templates_become_located_errors(editor: Editor) -> None:
    editor.write("main", "answer\nhangup {{ 1 // 0 }}\n")
    error = render_error(DialplanEngine(editor.root))
    assert error.line == 2
    assert error.message.startswith("ZeroDivisionError")


def test_an_edit_takes_effect_on_the_next_render(editor: Editor) -> None:
    engine = DialplanEngine(editor.root)
    editor.write("main", "dial 1002\n")
    assert engine.render("default", context()) == [Action("dial", ("1002",))]
    editor.write("main", "dial 1003\n")  # same size: the mtime tells
    assert engine.render("default", context()) == [Action("dial", ("1003",))]
    editor.write("main", "hangup 404\n")
    assert engine.render("default", context()) == [Action("hangup", ("404",))]


def test_an_unchanged_template_is_not_recompiled(editor: Editor, monkeypatch: pytest.MonkeyPatch) -> None:
    editor.write("main", "dial 1002\n")
    engine = DialplanEngine(editor.root)
    compiled = []
    original = engine_module.compile_template
    monkeypatch.setattr(engine_module, "compile_template", lambda *a: compiled.append(a) or original(*a))
    for _ in range(5):
        engine.render("default", context())
    assert len(compiled) == 1


def test_with_a_clock_the_file_is_stated_once_per_interval(editor: Editor) -> None:
    now = [100.0]
    engine = DialplanEngine(editor.root, clock_seconds=lambda: now[0], stat_interval=1.0)
    editor.write("main", "dial 1002\n")
    assert engine.render("default", context())[0].args == ("1002",)
    editor.write("main", "dial 1003\n")
    now[0] = 100.5
    assert engine.render("default", context())[0].args == ("1002",)
    now[0] = 101.0
    assert engine.render("default", context())[0].args == ("1003",)


def test_a_broken_edit_keeps_the_last_good_version(editor: Editor, logged: list[dict[str, Any]]) -> None:
    engine = DialplanEngine(editor.root)
    path = editor.write("main", "dial 1002 timeout=20\n")
    good = engine.render("default", context())
    editor.write("main", "dial 1002 timeout=20\n{% if %}\n")
    for _ in range(3):
        assert engine.render("default", context()) == good
    errors = engine.errors()
    assert list(errors) == [path]
    assert (errors[path].file, errors[path].line) == (str(path), 2)
    assert len(logged) == 1  # once per change
    assert logged[0]["log_level"].name == "error"
    assert str(path) + ":2:" in logged[0]["error"]
    assert "last good version keeps routing" in logged[0]["log_format"]
    # a second broken edit is logged again; a fix clears the error
    editor.write("main", "dail 1002\n")
    assert engine.render("default", context()) == good
    assert len(logged) == 2
    assert engine.errors()[path].message == "unknown action 'dail'"
    editor.write("main", "dial 1004\n")
    assert engine.render("default", context()) == [Action("dial", ("1004",))]
    assert engine.errors() == {}


def test_an_edit_that_fails_to_render_falls_back_too(editor: Editor, logged: list[dict[str, Any]]) -> None:
    engine = DialplanEngine(editor.root)
    path = editor.write("main", "dial {{ call.dialed }}\n")
    assert engine.render("default", context()) == [Action("dial", ("1002",))]
    editor.write("main", "answer\ndial {{ call.dialled }}\n")  # compiles, but a typo
    assert engine.render("default", context()) == [Action("dial", ("1002",))]
    assert engine.errors()[path].line == 2
    assert len(logged) == 1
    # the broken version and the good one both fail for this context: the error is the new version's
    with pytest.raises(DialplanError, match="dialled"):
        engine.render("default", context(call={"display_name": "x"}))


def test_an_edit_that_works_for_some_calls_becomes_the_good_version(editor: Editor) -> None:
    engine = DialplanEngine(editor.root)
    editor.write("main", "dial 1002\n")
    engine.render("default", context())
    editor.write("main", "{% if call.dialed == '1' %}dial {{ call.nope }}{% else %}dial 1003{% endif %}\n")
    assert engine.render("default", context()) == [Action("dial", ("1003",))]  # the new version proved good
    with pytest.raises(DialplanError, match="nope"):  # so there is nothing older to fall back on
        engine.render("default", context(call={"dialed": "1"}))


def test_a_template_that_never_worked_raises(editor: Editor) -> None:
    path = editor.write("main", "{% if %}\n")
    engine = DialplanEngine(editor.root)
    for _ in range(2):
        error = render_error(engine)
        assert (error.file, error.line) == (str(path), 1)
    assert engine.errors()[path].line == 1


def test_missing_templates_and_bad_names(editor: Editor) -> None:
    engine = DialplanEngine(editor.root)
    error = render_error(engine)
    assert str(error) == f"{editor.root / 'default' / 'main.j2'}: no such template"
    for tenant, template in (("..", "main"), ("default", "../main"), ("default", "a.b"), ("", "main")):
        with pytest.raises(DialplanError, match="bad"):
            engine.render(tenant, context(), template)
    # a deleted template stops working (no last good version for a file that is gone)
    path = editor.write("main", "answer\n")
    assert engine.render("default", context()) == [Action("answer")]
    path.unlink()
    assert render_error(engine).message == "no such template"


def test_goto_and_ivr_templates_render_by_name(editor: Editor) -> None:
    editor.write("after", "hangup 480\n")
    editor.write("ivr/main", "menu prompt=welcome\n")
    engine = DialplanEngine(editor.root)
    assert engine.render("default", context(), "after") == [Action("hangup", ("480",))]
    assert engine.render("default", context(), "ivr/main") == [Action("menu", (), {"prompt": "welcome"})]
    assert engine.path("default", "ivr/main") == editor.root / "default" / "ivr" / "main.j2"


def test_tenants_are_separate(editor: Editor) -> None:
    editor.write("main", "dial 1002\n", tenant="default")
    editor.write("main", "dial 2002\n", tenant="acme")
    engine = DialplanEngine(editor.root)
    assert engine.render("acme", context())[0].args == ("2002",)
    assert engine.render("default", context())[0].args == ("1002",)


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("answer\n{% include 'other.j2' %}\n", "include"),
        ("answer\n{% import 'other.j2' as o %}\n", "import"),
        ("answer\n{% from 'other.j2' import m %}\n", "from ... import"),
        ("answer\n{% extends 'other.j2' %}\n", "extends"),
        ("answer\n{% filter upper %}dial {{ x }}{% endfilter %}\n", "filter"),
        ("{% macro m() %}x{% endmacro %}\n{% call m() %}{% endcall %}\n", "call"),
        ("answer\n{% autoescape false %}{{ x }}{% endautoescape %}\n", "autoescape"),
    ],
)
def test_tags_that_could_bypass_the_escaping_are_refused(editor: Editor, text: str, tag: str) -> None:
    editor.write("other", "answer\n")
    editor.write("main", text)
    error = render_error(DialplanEngine(editor.root))
    assert error.line == 2
    assert error.message.startswith(f"{{% {tag} %}} is not allowed")


def test_the_sandbox_holds(editor: Editor) -> None:
    engine = DialplanEngine(editor.root)
    editor.write("main", "set a={{ call.dialed.__class__.__mro__ }}\n")
    assert "__class__" in render_error(engine).message
    editor.write("main", "{% set _ = vars.update({'a': '1'}) %}\nanswer\n")
    assert "unsafe" in render_error(engine).message or "update" in render_error(engine).message
    editor.write("main", "{% set _ = extensions.pop('1002') %}\nanswer\n")
    render_error(engine)


def test_control_characters_and_bad_encodings_in_templates(editor: Editor) -> None:
    engine = DialplanEngine(editor.root)
    editor.write("main", "answer\nset a=1\x1e2\x1f\n")
    error = render_error(engine)
    assert error.line == 2 and "control character" in error.message
    path = editor.write("main", "answer\n")
    path.write_bytes(b"answer\nset a=\xff\n")
    os.utime(path, (editor.tick + 5, editor.tick + 5))
    error = render_error(engine)
    assert error.line == 2 and "UTF-8" in error.message


def test_output_limits(editor: Editor) -> None:
    engine = DialplanEngine(editor.root)
    editor.write("main", "{% for i in range(100000) %}\nplay x\n{% endfor %}\n")
    assert "more than 65536 characters" in render_error(engine).message
    editor.write("main", "{% for i in range(300) %}\nanswer\n{% endfor %}\n")
    assert "more than 256 actions" in render_error(engine).message


def test_match_test_and_digits_filter(editor: Editor) -> None:
    editor.write(
        "main",
        "{% if call.dialed is match('9[0-9]{7,15}') %}\n"
        "dial trunk:carrier/{{ call.dialed[1:] }}\n"
        "{% elif call.dialed is match('[0-9]') %}\n"
        "hangup 404\n"
        "{% else %}\n"
        "set digits={{ call.dialed | digits }} none={{ none | digits }}\n"
        "{% endif %}\n",
    )
    engine = DialplanEngine(editor.root)
    assert engine.render("default", context(call={"dialed": "915551234"})) == [
        Action("dial", ("trunk:carrier/15551234",))
    ]
    assert (
        engine.render("default", context(call={"dialed": "9155"}))[0].name == "set"
    )  # fullmatch, not search
    assert engine.render("default", context(call={"dialed": "+1 (555) 12"})) == [
        Action("set", (), {"digits": "155512", "none": ""})
    ]


def test_set_block_captures_keep_their_text(editor: Editor) -> None:
    editor.write(
        "main",
        "{% set greeting %}hello {{ call.dialed }}{% endset %}\n"
        "{% macro target() %}1003{% endmacro %}\n"
        "{% if greeting == 'hello \"1002\"' and target() == '1003' %}\n"
        "set g={{ greeting }}\n"
        "dial {{ target() }}\n"
        "{% endif %}\n",
    )
    assert DialplanEngine(editor.root).render("default", context()) == [
        Action("set", (), {"g": 'hello "1002"'}),
        Action("dial", ("1003",)),
    ]


# -- the environment failing: descriptors exhausted, I/O errors ----------------------------------------------


class Exhaustion:
    """Makes opening (or stating) template files fail with an `OSError` while `failing` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing: int | None = None
        self.stat_failing: int | None = None
        self.opens = 0
        real_open, real_stat = Path.open, os.stat

        def fake_open(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if mode != "rb":  # the editor writing
                return real_open(path, mode, *args, **kwargs)
            self.opens += 1
            if self.failing is not None:
                raise OSError(self.failing, os.strerror(self.failing))
            return real_open(path, mode, *args, **kwargs)

        def fake_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            if self.stat_failing is not None:
                raise OSError(self.stat_failing, os.strerror(self.stat_failing))
            return real_stat(path, *args, **kwargs)

        monkeypatch.setattr(Path, "open", fake_open)
        monkeypatch.setattr(engine_module.os, "stat", fake_stat)


@pytest.fixture
def exhaustion(monkeypatch: pytest.MonkeyPatch) -> Exhaustion:
    return Exhaustion(monkeypatch)


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.EIO, errno.EACCES])
def test_a_failed_read_is_retried_on_the_next_render(
    editor: Editor, exhaustion: Exhaustion, logged: list[dict[str, Any]], code: int
) -> None:
    path = editor.write("main", "hangup 486\n")
    now = [100.0]
    engine = DialplanEngine(editor.root, clock_seconds=lambda: now[0], stat_interval=1.0)
    exhaustion.failing = code
    for _ in range(3):
        with pytest.raises(DialplanUnavailable) as info:
            engine.render("default", context())
        assert info.value.file == str(path)
        assert os.strerror(code) in info.value.message
    assert isinstance(info.value, DialplanError)  # the B2BUA's handling stays as it is
    assert engine.errors() == {}  # not a template error
    assert exhaustion.opens == 3  # retried on every render, the stat interval notwithstanding
    assert [e["log_level"].name for e in logged] == ["warn"]  # once per reason
    exhaustion.failing = None  # descriptors are back; the file was not touched
    assert engine.render("default", context()) == [Action("hangup", ("486",))]
    assert "readable again" in logged[-1]["log_format"]
    assert engine.render("default", context()) == [Action("hangup", ("486",))]
    assert exhaustion.opens == 4  # and remembered once it succeeded


def test_the_compiled_version_keeps_routing_while_an_edit_cannot_be_read(
    editor: Editor, exhaustion: Exhaustion
) -> None:
    engine = DialplanEngine(editor.root)
    editor.write("main", "dial 1002\n")
    assert engine.render("default", context()) == [Action("dial", ("1002",))]
    editor.write("main", "dial 1003\n")
    exhaustion.failing = errno.EMFILE
    assert engine.render("default", context()) == [Action("dial", ("1002",))]
    assert engine.errors() == {}
    exhaustion.failing = None
    assert engine.render("default", context()) == [Action("dial", ("1003",))]


def test_a_failed_stat_keeps_the_template(editor: Editor, exhaustion: Exhaustion) -> None:
    engine = DialplanEngine(editor.root)
    editor.write("main", "dial 1002\n")
    engine.render("default", context())
    exhaustion.stat_failing = errno.EIO
    assert engine.render("default", context()) == [Action("dial", ("1002",))]  # not forgotten
    exhaustion.stat_failing = None
    editor.write("main", "dial 1003\n")
    assert engine.render("default", context()) == [Action("dial", ("1003",))]


def test_a_missing_template_is_still_a_template_error(editor: Editor, exhaustion: Exhaustion) -> None:
    engine = DialplanEngine(editor.root)
    with pytest.raises(DialplanError, match="no such template") as info:
        engine.render("default", context())
    assert not isinstance(info.value, DialplanUnavailable)


def test_a_syntax_error_is_remembered_and_reported_with_its_line(
    editor: Editor, exhaustion: Exhaustion, logged: list[dict[str, Any]]
) -> None:
    engine = DialplanEngine(editor.root)
    editor.write("main", "dial 1002\n")
    good = engine.render("default", context())
    path = editor.write("main", "dial 1002\n{% if %}\n")
    exhaustion.failing = errno.EMFILE  # first attempt: the environment fails
    assert engine.render("default", context()) == good
    exhaustion.failing = None
    opens = exhaustion.opens
    for _ in range(3):
        assert engine.render("default", context()) == good  # the last good version keeps routing
    assert exhaustion.opens == opens + 1  # read once: a template error is kept for this version
    error = engine.errors()[path]
    assert (error.file, error.line) == (str(path), 2)
    assert [e["log_level"].name for e in logged] == ["warn", "info", "error"]  # failed, readable, broken


def test_the_same_output_is_parsed_once_and_each_render_gets_its_own_list(
    editor: Editor, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor.write("main", "{% if call.dialed == '1002' %}\ndial {{ call.dialed }}\n{% endif %}\nhangup\n")
    engine = DialplanEngine(editor.root)
    first = engine.render("default", context())
    splits: list[str] = []
    real = engine_module._numbered_lines
    monkeypatch.setattr(engine_module, "_numbered_lines", lambda text: splits.append(text) or real(text))
    second = engine.render("default", context())
    assert second == first and second is not first and splits == []
    second.clear()
    assert engine.render("default", context()) == first
    other = engine.render("default", context(call={"dialed": "1003", "display_name": ""}))
    assert [a.name for a in other] == ["hangup"] and len(splits) == 1


def test_context_values_read_as_the_sandbox_reads_them(editor: Editor) -> None:
    """The short way for `context_value` types (`CallInfo`, `CallerInfo`, `ExtensionInfo`) returns what the
    sandbox returns for their fields and properties, and leaves everything else to the sandbox: dunder and
    private names are refused, an unknown name is undefined, a method is not data."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from pbx.dialplan import CallerInfo, CallInfo, ExtensionInfo

    call = CallInfo(id="c1", dialed="1002", display_name="Al", from_trunk="carrier", headers={"subject": "x"})
    caller = CallerInfo(tenant="default", extension="1001", name="Al", authenticated=True)
    ext = ExtensionInfo(number="1002", forward_busy="1003", ring_timeout=15.0, pickup_groups=("a",))
    plain = ImmutableSandboxedEnvironment()
    ours = engine_module.make_environment()
    for value in (call, caller, ext):
        for name in [*engine_module._DATA_FIELDS[type(value)], "__class__", "__init__", "__slots__", "nope"]:
            expected = plain.getattr(value, name)
            got = ours.getattr(value, name)
            if type(expected).__name__ == "StrictUndefined" or "Undefined" in type(expected).__name__:
                assert "Undefined" in type(got).__name__, name
            else:
                assert got is expected or got == expected, name
    assert ours.getattr(call, "trunk") == "carrier"
    assert ours.getattr(call, "headers") == {"subject": "x"}
    engine = DialplanEngine(editor.root)
    for text in ("set a={{ call.__class__ }}\n", "set a={{ ext.__reduce__ }}\n", "set a={{ call.nope }}\n"):
        editor.write("main", text)
        render_error(engine, call=call, ext=ext)
    editor.write(
        "main", "dial {{ ext.forward_busy }} timeout={{ ext.ring_timeout|int }}\nset t={{ call.trunk }}\n"
    )
    dial, trunk = engine.render("default", context(call=call, ext=ext))
    assert "1003" in str(dial) and "15" in str(dial) and "carrier" in str(trunk)


def test_template_globals_are_a_plain_dict(editor: Editor) -> None:
    """Each render copies the globals into its context: a dict, not Jinja's ChainMap, with the same names."""
    editor.write("main", "set a={{ range(2)|list|length }}\n")
    engine = DialplanEngine(editor.root)
    (action,) = engine.render("default", context())
    assert "2" in str(action)
    template = engine._by_name[("default", "main")].active
    assert type(template.globals) is dict
    assert set(template.globals) == set(engine_module.make_environment().globals)
