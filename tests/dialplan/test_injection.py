"""Hostile values never become actions, arguments or options (STYLE.md 11).

Every caller-controlled value (display name, dialed digits, headers, the DID, call variables) goes through
templates in every position a template author might put it; and every shipped template is rendered with
hostile values and must produce exactly the actions it produces for harmless ones."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import markupsafe
import pytest

from pbx.dialplan import (
    Action,
    CallerInfo,
    CallInfo,
    DialplanEngine,
    DialplanError,
    ExtensionInfo,
    TenantDirectory,
    escape_value,
    make_context,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "dialplans"
NOW = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)

HOSTILE = [
    "1002\ndial 9999",
    'x" hangup="1',
    '"; hangup 404; "',
    '"',
    '""',
    "\\",
    '\\"',
    'a\\" hangup=\\"1',
    "timeout=1",
    "if=busy",
    "=",
    "a=b c=d",
    "#",
    "# hangup",
    " dial 9999 ",
    "\r\nhangup 200\r\n",
    "\rdial 9999",
    "\u2028dial 9999",
    "\u2029dial 9999",
    "\x85dial 9999",
    "\x0bdial 9999\x0c",
    "\x1c\x1d\x1edial 9999",
    "\x1e3\x1fdial 9999",
    "\x00",
    "\x1b[31mred\x1b[0m",
    "\u202edial 9999",
    "Zoë ☎ 日本語",
    "{{ 7*7 }}",
    "{% if %}",
    "' or 1=1 --",
    "; rm -rf /",
    "trunk:carrier/1 group:sales",
    "group:sales",
    "../../etc/passwd",
    "\t",
    "",
    "x" * 1000,
]
LONG = "x" * 5000
hostile = pytest.mark.parametrize("value", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])


def sanitize(value: str) -> str:
    """What a value becomes after the escaping: non-printable characters turned into spaces."""
    return "".join(c if c.isprintable() else " " for c in re.sub("\x1e[0-9]*\x1f", "", value))


DIRECTORY = TenantDirectory(
    {
        "1000": ExtensionInfo("1000", "Reception"),
        "1001": ExtensionInfo("1001", "Alice"),
        "1002": ExtensionInfo("1002", "Bob", forward_busy="1003", forward_noanswer="group:sales"),
        "1003": ExtensionInfo("1003", "Carol", ring_timeout=15),
        "1004": ExtensionInfo("1004", "Dave", forward_all="1000"),
    },
    {"sales": ("1000", "1001")},
)


def context(
    *,
    dialed: str = "1002",
    value: str = "harmless",
    directory: TenantDirectory = DIRECTORY,
    trunk: bool = False,
) -> dict[str, Any]:
    """A call with ``value`` in every caller-controlled field except the dialed number."""
    call = CallInfo(
        id="c1",
        dialed=dialed,
        display_name=value,
        from_trunk="carrier" if trunk else None,
        did=value if trunk else None,
        headers={"user-agent": value, "x-hostile": value},
    )
    caller = CallerInfo("default", None if trunk else "1001", "Alice", not trunk, False)
    return make_context(
        call=call, caller=caller, directory=directory, now=NOW, variables={"note": value}, digits=None
    )


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DialplanEngine, Path]]:
    root = tmp_path_factory.mktemp("dialplans")
    (root / "default").mkdir()
    yield DialplanEngine(root), root


_names = itertools.count()


def render_text(engine: tuple[DialplanEngine, Path], text: str, value: str) -> list[Action]:
    """Render ``text`` (as a new template, so no reload question arises) with ``v`` = ``value``."""
    directory, root = engine
    name = f"t{next(_names)}"
    (root / "default" / f"{name}.j2").write_text(text)
    return directory.render("default", {"v": value}, name)


# -- every position a value can take in a template ---------------------------------------------------------


@hostile
def test_as_an_option_value_it_stays_one_value(engine: tuple[DialplanEngine, Path], value: str) -> None:
    actions = render_text(engine, "set v={{ v }} w=1\nanswer\n", value)
    assert actions == [Action("set", (), {"v": sanitize(value), "w": "1"}), Action("answer")]


def test_an_overlong_value_is_an_error(engine: tuple[DialplanEngine, Path]) -> None:
    with pytest.raises(DialplanError, match="line longer than 4096"):
        render_text(engine, "answer\nset v={{ v }}\n", LONG)
    with pytest.raises(DialplanError, match="at most 1024"):
        render_text(engine, "answer\nset v={{ v[:2000] }}\n", LONG)


@hostile
def test_as_an_argument_it_stays_one_argument_or_fails(
    engine: tuple[DialplanEngine, Path], value: str
) -> None:
    try:
        actions = render_text(engine, "play intro {{ v }}\nanswer\n", value)
    except DialplanError as e:
        assert e.line == 1 and e.message.startswith("play: must be a prompt name")
        return
    assert actions == [Action("play", ("intro", sanitize(value))), Action("answer")]


@hostile
def test_after_bare_text_it_stays_in_the_same_token(engine: tuple[DialplanEngine, Path], value: str) -> None:
    try:
        actions = render_text(engine, "dial trunk:carrier/{{ v }} timeout=20\n", value)
    except DialplanError as e:
        assert e.line == 1 and e.message.startswith("dial: bad dial target")
        return
    assert actions == [Action("dial", ("trunk:carrier/" + value,), {"timeout": "20"})]


@pytest.mark.parametrize("value", [*HOSTILE, "dial", "hangup", "answer", "timeout", "set"], ids=repr)
@pytest.mark.parametrize(
    "template",
    [
        "{{ v }} 1002\n",  # where the action name goes
        "{{ v }}\n",
        "dial 1002 {{ v }}=1\n",  # where an option name goes
        'set a="{{ v }}"\n',  # inside quotes the author wrote
        "set a={{ v }}{{ v }}\n",  # two values in one token
        "play {{ v }}x\n",  # text after a value
    ],
)
def test_where_only_the_template_may_write_it_is_an_error(
    engine: tuple[DialplanEngine, Path], value: str, template: str
) -> None:
    with pytest.raises(DialplanError) as info:
        render_text(engine, template, value)
    assert info.value.line == 1


@hostile
def test_in_a_comment_it_stays_a_comment(engine: tuple[DialplanEngine, Path], value: str) -> None:
    assert render_text(engine, "# caller: {{ v }}\nanswer\n", value) == [Action("answer")]


@hostile
def test_through_filters_and_macros_it_stays_one_value(
    engine: tuple[DialplanEngine, Path], value: str
) -> None:
    text = (
        "{% macro line(x) %}dial {{ x }}\nhangup 404{% endmacro %}\n"
        "set a={{ v | upper }} b={{ v | safe }} c={{ v | e }} d={{ line(v) }} e={{ [v, v] | join('\\n') }}\n"
    )
    value = value[:200]  # five copies must fit on one line
    (action,) = render_text(engine, text, value)
    assert action.options == {
        "a": sanitize(value.upper()),
        "b": sanitize(value),
        "c": sanitize(str(markupsafe.escape(value))),
        "d": f"dial {escape_value(value)} hangup 404",  # the macro's lines are one value, never two actions
        "e": sanitize(value + "\n" + value),
    }


# -- the shipped dialplans ---------------------------------------------------------------------------------


def render_shipped(**kwargs: Any) -> list[Action]:
    return DialplanEngine(SHIPPED).render("default", context(**kwargs))


@hostile
def test_demo_dialplan_with_a_hostile_caller(value: str) -> None:
    """The demo's output is exactly what it is for a harmless caller; only the callerid text may differ."""
    assert render_shipped(dialed="1002", value=value) == [
        Action("dial", ("1002",), {"timeout": "20", "transfer": "##"}),
        Action("dial", ("1003",), {"timeout": "20", "if": "busy"}),
        Action("dial", ("group:sales",), {"timeout": "20", "if": "noanswer|unavailable"}),
        Action("hangup"),
    ]
    assert render_shipped(dialed="1004", value=value) == [
        Action("dial", ("1000",), {"timeout": "20"}),
        Action("hangup"),
    ]
    assert render_shipped(dialed="1003", value=value, trunk=True) == [Action("hangup", ("404",))]
    shown = value or "Alice"
    assert render_shipped(dialed="600", value=value) == [
        Action("dial", ("group:sales",), {"timeout": "20", "callerid": sanitize(("Sales: " + shown)[:64])}),
        Action("hangup"),
    ]


@pytest.mark.parametrize(
    "value", [*HOSTILE, "600", "1002", "1002 ", " 1002", "1002\n", "60\x000"], ids=lambda v: repr(v[:20])
)
def test_demo_dialplan_with_a_hostile_dialed_number(value: str) -> None:
    actions = render_shipped(dialed=value, value=value)
    if value == "600":
        assert [a.name for a in actions] == ["dial", "hangup"]
    elif value == "1002":
        assert len(actions) == 4
    else:
        assert actions == [Action("hangup", ("404",))]


def shape(actions: list[Action]) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(a.name, len(a.args), tuple(a.options)) for a in actions]


def shipped_templates() -> list[tuple[str, str]]:
    found = []
    for path in sorted(SHIPPED.rglob("*.j2")):
        tenant = path.relative_to(SHIPPED).parts[0]
        found.append((tenant, path.relative_to(SHIPPED / tenant).with_suffix("").as_posix()))
    return found


def test_there_are_shipped_templates() -> None:
    assert ("default", "main") in shipped_templates()


@pytest.mark.parametrize(("tenant", "template"), shipped_templates())
def test_every_shipped_template_has_the_same_shape_for_hostile_values(tenant: str, template: str) -> None:
    """Every action, argument count and option name is the same as for a harmless caller."""
    engine = DialplanEngine(SHIPPED)
    for dialed in [*DIRECTORY.extensions, *DIRECTORY.groups, "600", "500", "0", "99999"]:
        for trunk in (False, True):
            for digits in (None, "", "1", "9", "#"):
                harmless = context(dialed=dialed, trunk=trunk) | {"digits": digits}
                expected = shape(engine.render(tenant, harmless, template))
                for value in HOSTILE:
                    hostile = context(dialed=dialed, value=value, trunk=trunk) | {"digits": digits}
                    assert shape(engine.render(tenant, hostile, template)) == expected, (dialed, value)
                    if dialed != "600":
                        assert engine.render(tenant, hostile, template) == engine.render(
                            tenant, harmless, template
                        )
