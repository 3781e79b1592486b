"""The action language: what a dialplan template renders to, and the escaping that keeps it data.

A rendered template is text, one action per line (docs/dialplan.md has the reference)::

    # a comment: a line whose first non-blank character is '#'
    dial 1002 timeout=20
    dial 1003 timeout=20 if=busy
    hangup

A line is tokens separated by spaces or tabs. The first token is the action name, a plain lower-case word.
Each further token is either an option ``key=value`` (``key`` a bare identifier written in the template) or a
positional argument. A token is a bare part, a quoted part, or a bare part followed by a quoted part
(``trunk:carrier/"5551234"``); a quoted part is ``"..."`` with ``\\\\`` and ``\\"`` as its only escapes, and
must end its token.

The escaping (`escape_value`, the Jinja ``finalize`` hook) turns EVERY ``{{ }}`` output into exactly one
quoted part with no line break in it, so a value a caller controls (display name, dialed digits, a header)
can never become a new line, a new token, an action name or an option name: the tokenizer reads a quoted part
only ever as (part of) one value. It never outputs a bare word, not even for ``1002``: an expression placed
where an action or option name belongs is an error, not a name the caller chooses.

Parsed lines become `Action` values, validated against `ACTIONS`; every problem is a `DialplanError` naming
the file and line. `RunState` is the execution protocol's bookkeeping (conditions, results, hang-up status),
shared by the B2BUA and the simulator so that both do exactly what docs/dialplan.md says.

This module knows nothing of Jinja, files, SIP or calls; it imports only the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import overload

RESULTS: tuple[str, ...] = ("answered", "busy", "noanswer", "unavailable", "failed")
"""The outcomes of a ``dial``, as seen in the context's ``result``."""

CONDITIONS: tuple[str, ...] = ("busy", "noanswer", "unavailable", "failed")
"""The outcomes an ``if=`` option may name (after ``answered`` no further action runs)."""

RESULT_STATUS: Mapping[str | None, int] = MappingProxyType(
    {None: 480, "busy": 486, "noanswer": 480, "unavailable": 480, "failed": 480}
)
"""The SIP status of a code-less ``hangup`` (and of running out of actions), by the last dial's result."""

GREETING_CHOICES: tuple[str, ...] = ("auto", "busy", "unavailable")
"""The ``greeting=`` of ``voicemail``: ``auto`` (the default) plays the busy greeting when the last dial was
busy, else the unavailable one."""

OPERATOR = "operator"
"""What the ``voicemail`` application returns when the caller pressed 0 during the greeting and the action has
an ``operator=`` target: the interpreter then dials that target."""

MAX_LINE = 4096
"""The longest action line accepted, in characters."""

_ACTION_NAME = re.compile(r"[a-z][a-z0-9_]*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAFE_WORD = re.compile(r"[A-Za-z0-9_.@:+*#/|-]+")
_EXTENSION = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_GROUP_OR_TRUNK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,62}")
_FEATURE_CODE = re.compile(r"[0-9*#]{1,4}")
_TRUNK_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")
# sip:/sips: URI: optional user part, a host name, IPv4 or [IPv6] address, optional port and parameters.
_SIP_URI = re.compile(
    r"sips?:(?:[A-Za-z0-9_.!~*'()&=+$,;?/%-]{1,64}@)?"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::[0-9]{1,5})?(?:;[A-Za-z0-9_.!~*'()%+=-]{1,64}){0,8}"
)
_NAME_PART = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}"
_TEMPLATE_NAME = re.compile(rf"{_NAME_PART}(?:/{_NAME_PART}){{0,3}}")
_NUMBER = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")
_ORBIT = re.compile(r"[0-9]{1,16}")
_MARKER = re.compile("\x1e[0-9]*\x1f")
_SEPARATORS = " \t"


class DialplanError(Exception):
    """A dialplan problem: a template that does not compile or render, or a bad action line.

    ``str(error)`` is ``FILE:LINE: MESSAGE`` (``FILE: MESSAGE`` when the line is unknown), the form editors
    and ``pbx dialplan check`` use.

    Attributes:
        message: What is wrong, without the location.
        file: The template file, as a path string, or None when unknown.
        line: The 1-based line in ``file``, or None when unknown.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message, file, line)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        where = self.file if self.file is not None else "<dialplan>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"


# -- escaping --------------------------------------------------------------------------------------------


def escape_value(value: object) -> str:
    """Render one ``{{ }}`` output as exactly one quoted value of the action language (the ``finalize`` hook).

    Every character that is not printable (control characters, line and paragraph separators, format
    characters, unassigned code points) becomes a space, so the output never holds a line break; then ``\\``
    and ``"`` are escaped and the whole is put in double quotes. None renders as ``""``.

    Args:
        value: Whatever the expression produced.

    Returns:
        ``"..."``, which the tokenizer reads back as one value equal to the sanitized text.
    """
    text = "" if value is None else str(value)
    if "\x1e" in text:
        text = _MARKER.sub("", text)  # line markers inside captured template text (see engine.py)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else " " for c in text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_value(text: str) -> str:
    """Write a value for display: as is when it is a safe word, else quoted like `escape_value`.

    ``parse_line`` reads the result back as the same value, so ``str(action)`` round-trips.
    """
    if _SAFE_WORD.fullmatch(text):
        return text
    return escape_value(text)


# -- values ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DialTarget:
    """One parsed ``dial`` target.

    Attributes:
        kind: ``"extension"``, ``"group"``, ``"trunk"`` or ``"uri"`` (a ``sip:``/``sips:`` URI).
        name: The extension number, group name, trunk name or URI.
        number: For a trunk, the number to call through it; else None.
    """

    kind: str
    name: str
    number: str | None = None


def parse_target(text: str) -> DialTarget:
    """Parse a dial target: ``NUMBER``, ``group:NAME``, ``trunk:NAME/NUMBER`` or a ``sip:``/``sips:`` URI.

    Raises:
        ValueError: ``text`` is none of these.
    """
    if text.startswith("group:"):
        name = text[6:]
        if _GROUP_OR_TRUNK.fullmatch(name):
            return DialTarget("group", name)
    elif text.startswith("trunk:"):
        name, slash, number = text[6:].partition("/")
        if slash and _GROUP_OR_TRUNK.fullmatch(name) and _TRUNK_NUMBER.fullmatch(number):
            return DialTarget("trunk", name, number)
    elif text.startswith(("sip:", "sips:")):
        if _SIP_URI.fullmatch(text):
            return DialTarget("uri", text)
    elif _EXTENSION.fullmatch(text):
        return DialTarget("extension", text)
    raise ValueError(
        f"bad dial target {_show(text)} (an extension number, group:NAME, trunk:NAME/NUMBER or a sip: URI)"
    )


@dataclass(frozen=True, slots=True, repr=False)
class Action:
    """One parsed, validated action line.

    Two actions are equal when they do the same thing: ``source`` and ``line`` take no part in comparisons.

    Attributes:
        name: The action, one of `ACTIONS`.
        args: The positional arguments, in order.
        options: The ``key=value`` options, read-only; ``if`` (the condition) among them when given.
        source: The template file the line came from.
        line: The line in ``source`` (1-based), or 0 when unknown.
    """

    name: str
    args: tuple[str, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict, hash=False)
    source: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        if not isinstance(self.options, MappingProxyType):
            object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def __str__(self) -> str:
        words = [self.name, *(format_value(a) for a in self.args)]
        words += [f"{k}={format_value(v)}" for k, v in self.options.items()]
        return " ".join(words)

    def __repr__(self) -> str:
        return (
            f"Action(name={self.name!r}, args={self.args!r}, options={dict(self.options)!r}, "
            f"source={self.source!r}, line={self.line!r})"
        )

    @property
    def condition(self) -> frozenset[str]:
        """The results named by ``if=`` (a subset of `CONDITIONS`); empty when the action is unconditional."""
        value = self.options.get("if")
        return frozenset(value.split("|")) if value else frozenset()

    @property
    def variables(self) -> dict[str, str]:
        """For ``set``: the variables it sets (its options except ``if``); else an empty dict."""
        if self.name != "set":
            return {}
        return {k: v for k, v in self.options.items() if k != "if"}

    @property
    def targets(self) -> tuple[DialTarget, ...]:
        """For ``dial``: its parsed targets, in order; else an empty tuple."""
        if self.name != "dial":
            return ()
        return tuple(parse_target(a) for a in self.args)

    @overload
    def number(self, key: str) -> float | None: ...

    @overload
    def number(self, key: str, default: float) -> float: ...

    def number(self, key: str, default: float | None = None) -> float | None:
        """A numeric option (``timeout``, ``ringtime``, ``maxdigits``...) as a float, or ``default``."""
        value = self.options.get(key)
        return default if value is None else float(value)


# -- the execution protocol ------------------------------------------------------------------------------


@dataclass(slots=True)
class RunState:
    """The bookkeeping of one call running its actions (docs/dialplan.md, "How actions run").

    Keep one per call, across ``goto``, ``ivr`` and menu re-renders.

    Attributes:
        result: The outcome of the most recent dial that ran (conditional or not), or None before any; the
            context's ``result`` on the next render, and what a code-less ``hangup`` maps to a status.
        guard: The outcome of the most recent UNconditional dial, or None before any; what ``if=`` tests.
    """

    result: str | None = None
    guard: str | None = None

    def should_run(self, action: Action) -> bool:
        """Whether ``action`` runs: always without ``if=``, else only when `guard` is one of its results."""
        condition = action.condition
        if not condition:
            return True
        return self.guard is not None and self.guard in condition

    def dial_finished(self, action: Action, result: str) -> None:
        """Record how a ``dial`` ended (one of `RESULTS`); only an unconditional dial moves `guard`."""
        if result not in RESULTS:
            raise ValueError(f"unknown dial result {result!r}")
        self.result = result
        if not action.condition:
            self.guard = result

    def hangup_status(self, action: Action | None = None) -> int:
        """The SIP status to reject the call with: ``hangup CODE``'s code, else `RESULT_STATUS` of `result`.

        Args:
            action: The ``hangup`` action, or None when the actions ran out.
        """
        if action is not None and action.args:
            return int(action.args[0])
        return RESULT_STATUS.get(self.result, 480)


def template_for(action: Action) -> str:
    """The template a ``goto NAME`` (``NAME``) or ``ivr NAME`` (``ivr/NAME``) renders next."""
    if action.name == "goto":
        return action.args[0]
    if action.name == "ivr":
        return f"ivr/{action.args[0]}"
    raise ValueError(f"{action.name} renders no template")


# -- validation ------------------------------------------------------------------------------------------

_Check = Callable[[str], str | None]  # value -> what is wrong with it, or None


def _show(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _seconds(low: float, high: float) -> _Check:
    def check(value: str) -> str | None:
        if _NUMBER.fullmatch(value) and low <= float(value) <= high:
            return None
        return f"must be a number of seconds from {low:g} to {high:g}, not {_show(value)}"

    return check


def _integer(low: int, high: int) -> _Check:
    def check(value: str) -> str | None:
        if value.isascii() and value.isdigit() and low <= int(value) <= high:
            return None
        return f"must be a whole number from {low} to {high}, not {_show(value)}"

    return check


def _pattern(regex: re.Pattern[str], what: str) -> _Check:
    def check(value: str) -> str | None:
        return None if regex.fullmatch(value) else f"must be {what}, not {_show(value)}"

    return check


def _choice(*choices: str) -> _Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be {' or '.join(choices)}, not {_show(value)}"

    return check


def _text(max_length: int) -> _Check:
    def check(value: str) -> str | None:
        return None if len(value) <= max_length else f"must be at most {max_length} characters"

    return check


def _target(value: str) -> str | None:
    try:
        parse_target(value)
    except ValueError as e:
        return str(e)
    return None


def _condition(value: str) -> str | None:
    parts = value.split("|")
    if value and all(p in CONDITIONS for p in parts) and len(set(parts)) == len(parts):
        return None
    return f"must be results joined by '|' ({', '.join(CONDITIONS)}), not {_show(value)}"


_template_name = _pattern(_TEMPLATE_NAME, "a template name (letters, digits, '_', '-', '/')")
_recording_name = _pattern(_TEMPLATE_NAME, "a recording name (letters, digits, '_', '-', '/')")
# A prompt: a file name, or an item the media layer generates (a tone, a pause, digits spoken one by one).
_PROMPT = re.compile(
    rf"{_TEMPLATE_NAME.pattern}|tone:(?:beep|ringback|busy|dial|congestion)(?::(?:[1-9][0-9]?|[1-5][0-9]{{2}}|600))?"
    r"|silence:[0-9]{1,5}|digits:[0-9]{1,32}"
)
_prompt_name = _pattern(
    _PROMPT, "a prompt name (letters, digits, '_', '-', '/'), tone:NAME, silence:MS or digits:N"
)


def _prompt_list(value: str) -> str | None:
    parts = value.split("&")
    if len(parts) > 32:
        return "must be at most 32 prompts joined by '&'"
    for part in parts:
        problem = _prompt_name(part)
        if problem is not None:
            return problem
    return None


_MENU_ENTRY = re.compile(r"[0-9*#A-Da-d]{1,32}")


def _choices(value: str) -> str | None:
    parts = value.split("|")
    if value and all(_MENU_ENTRY.fullmatch(p) for p in parts) and len(set(parts)) == len(parts):
        return None
    return f"must be distinct key entries joined by '|' (e.g. 1|2|9), not {_show(value)}"


_yes_no = _choice("yes", "no")

FEATURE_NAMES: tuple[str, ...] = ("dnd", "forward_all", "forward_busy", "forward_noanswer")
"""What ``feature NAME ...`` changes for the caller's extension (docs/features.md)."""


def _feature_arg(value: str) -> str | None:
    if value in FEATURE_NAMES or value in ("on", "off"):
        return None
    return _target(value)


def _feature_problem(args: list[str]) -> str | None:
    """What is wrong with the two arguments of a ``feature`` action, or None."""
    name, value = args
    if name not in FEATURE_NAMES:
        return f"feature: the first argument must be one of {', '.join(FEATURE_NAMES)}, not {_show(name)}"
    if name == "dnd" and value not in ("on", "off"):
        return f"feature dnd: must be on or off, not {_show(value)}"
    if name != "dnd" and (value == "on" or value in FEATURE_NAMES):
        return f"feature {name}: must be a dial target or off, not {_show(value)}"
    return None


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """What one action accepts.

    Attributes:
        usage: The synopsis shown in errors and docs.
        min_args: The fewest positional arguments.
        max_args: The most positional arguments.
        arg: The check for each positional argument.
        options: The checks of the known options (``if`` is known to every action).
        required: The options that must be given.
        free_options: Whether any identifier may be an option (``set``).
    """

    usage: str
    min_args: int = 0
    max_args: int = 0
    arg: _Check | None = None
    options: Mapping[str, _Check] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    free_options: bool = False


ACTIONS: Mapping[str, ActionSpec] = MappingProxyType(
    {
        "dial": ActionSpec(
            "dial TARGET... [timeout=S] [callerid=TEXT] [callername=TEXT] [privacy=yes|no]"
            " [strategy=parallel|sequential|failover] [ringtime=S] [transfer=CODE]",
            1,
            32,
            _target,
            {
                "timeout": _seconds(1, 3600),
                "callerid": _text(256),
                "callername": _text(256),
                "privacy": _yes_no,
                "strategy": _choice("parallel", "sequential", "failover"),
                "ringtime": _seconds(1, 3600),
                "transfer": _pattern(_FEATURE_CODE, "a feature code of 1-4 of 0-9 * #"),
            },
        ),
        "goto": ActionSpec("goto NAME", 1, 1, _template_name),
        "set": ActionSpec("set NAME=VALUE...", free_options=True),
        "answer": ActionSpec("answer"),
        "hangup": ActionSpec("hangup [CODE]", 0, 1, _integer(400, 699)),
        "voicemail": ActionSpec(
            "voicemail MAILBOX [greeting=auto|busy|unavailable] [operator=TARGET]",
            1,
            1,
            _pattern(_EXTENSION, "an extension number"),
            {"greeting": _choice(*GREETING_CHOICES), "operator": _target},
        ),
        "voicemailmain": ActionSpec(
            "voicemailmain [MAILBOX|ask]", 0, 1, _pattern(_EXTENSION, "a mailbox number or ask")
        ),
        "progress": ActionSpec("progress"),
        "ivr": ActionSpec("ivr NAME", 1, 1, _template_name),
        "menu": ActionSpec(
            "menu prompt=NAME[&NAME...] [timeout=S] [maxdigits=N] [retries=N] [choices=E|E...] [invalid=NAME]"
            " [noanswer=yes]",
            options={
                "prompt": _prompt_list,
                "timeout": _seconds(1, 60),
                "maxdigits": _integer(1, 32),
                "retries": _integer(0, 10),
                "choices": _choices,
                "invalid": _prompt_name,
                "noanswer": _yes_no,
            },
            required=("prompt",),
        ),
        "pickup": ActionSpec(
            "pickup group|EXTENSION", 1, 1, _pattern(_EXTENSION, "group or an extension number")
        ),
        "play": ActionSpec("play PROMPT... [noanswer=yes]", 1, 32, _prompt_name, {"noanswer": _yes_no}),
        "feature": ActionSpec(
            "feature dnd on|off | feature forward_all|forward_busy|forward_noanswer TARGET|off"
            " [prompt=yes|no]",
            2,
            2,
            _feature_arg,
            {"prompt": _yes_no},
        ),
        "park": ActionSpec("park [announce=yes|no]", options={"announce": _yes_no}),
        "unpark": ActionSpec("unpark ORBIT", 1, 1, _pattern(_ORBIT, "a park orbit number")),
        "record": ActionSpec(
            "record NAME [maxlength=S] [silence=S] [beep=yes|no]",
            1,
            1,
            _recording_name,
            {"maxlength": _seconds(1, 3600), "silence": _seconds(0, 60), "beep": _yes_no},
        ),
    }
)
"""Every action the language knows, by name."""

_SET_VALUE = _text(1024)


def _validate(name: str, args: list[str], options: dict[str, str]) -> str | None:
    """What is wrong with an action, or None."""
    spec = ACTIONS.get(name)
    if spec is None:
        return f"unknown action {name!r}"
    if not spec.min_args <= len(args) <= spec.max_args:
        if spec.min_args == spec.max_args:
            wanted = _plural(spec.min_args, "argument")
        elif len(args) < spec.min_args:
            wanted = "at least " + _plural(spec.min_args, "argument")
        else:
            wanted = "at most " + _plural(spec.max_args, "argument")
        return f"{name} takes {wanted}, not {len(args)} (usage: {spec.usage})"
    if spec.arg is not None:
        for arg in args:
            problem = spec.arg(arg)
            if problem is not None:
                return f"{name}: {problem}"
    for key, value in options.items():
        check = _condition if key == "if" else spec.options.get(key)
        if check is None and spec.free_options:
            check = _SET_VALUE
        if check is None:
            known = ", ".join(sorted([*spec.options, "if"]))
            return f"{name}: unknown option {key!r} (known: {known})"
        problem = check(value)
        if problem is not None:
            return f"{name}: {key} {problem}"
    for key in spec.required:
        if key not in options:
            return f"{name}: {key}= is required (usage: {spec.usage})"
    if spec.free_options and not any(k != "if" for k in options):
        return f"{name} needs at least one NAME=VALUE (usage: {spec.usage})"
    if name == "feature":
        return _feature_problem(args)
    if name == "dial":
        ordered = options.get("strategy") in ("sequential", "failover")
        trunks_only = "strategy" not in options and all(a.startswith("trunk:") for a in args)
        if "ringtime" in options and not (ordered or trunks_only):
            return "dial: ringtime= needs strategy=sequential or failover (the default for trunks)"
        if len(set(args)) != len(args):
            return "dial: a target is listed twice"
    return None


# -- tokenizer and parser --------------------------------------------------------------------------------


def _tokens(text: str) -> list[tuple[str, str | None]]:
    """Split a line into tokens, each (bare part, quoted part or None).

    Raises:
        ValueError: the line is not well formed.
    """
    tokens: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SEPARATORS:
            i += 1
        if i >= n:
            return tokens
        start = i
        while i < n and text[i] not in ' \t"':
            c = text[i]
            if c == "\\":
                raise ValueError("a backslash may only appear inside a quoted string")
            if not c.isprintable():
                raise ValueError(f"unexpected character {c!r}")
            i += 1
        bare = text[start:i]
        quoted: str | None = None
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    if i + 1 < n and text[i + 1] in '\\"':
                        chars.append(text[i + 1])
                        i += 2
                        continue
                    raise ValueError('bad escape in a quoted string (only \\\\ and \\" are escapes)')
                if not c.isprintable():
                    raise ValueError(f"unexpected character {c!r} in a quoted string")
                chars.append(c)
                i += 1
            quoted = "".join(chars)
            if i < n and text[i] not in _SEPARATORS:
                raise ValueError(
                    "a quoted string must end its token (do not put {{ }} inside quotes or before other text)"
                )
        tokens.append((bare, quoted))


def parse_line(text: str, source: str = "", line: int = 0) -> Action | None:
    """Parse and validate one line of the action language.

    Args:
        text: The line, without its line break.
        source: The template file, for `Action.source` and errors.
        line: The line number in ``source``, for `Action.line` and errors.

    Returns:
        The action, or None for a blank or comment line.

    Raises:
        DialplanError: the line is malformed, names an unknown action, or the action's arguments or options
            are wrong.
    """
    stripped = text.strip(_SEPARATORS)
    if not stripped or stripped.startswith("#"):
        return None

    def fail(message: str) -> DialplanError:
        return DialplanError(message, source or None, line or None)

    if len(text) > MAX_LINE:
        raise fail(f"line longer than {MAX_LINE} characters")
    try:
        tokens = _tokens(stripped)
    except ValueError as e:
        raise fail(str(e))
    (bare_name, quoted_name), rest = tokens[0], tokens[1:]
    if quoted_name is not None:
        raise fail("the action name must be a plain word in the template, not a value from {{ }} or quotes")
    if not _ACTION_NAME.fullmatch(bare_name):
        raise fail(f"expected an action name, not {_show(bare_name)}")
    args: list[str] = []
    options: dict[str, str] = {}
    for bare, quoted in rest:
        if "=" in bare:
            key, _, value = bare.partition("=")
            if not _IDENT.fullmatch(key):
                raise fail(f"{bare_name}: bad option name {_show(key)}")
            if key in options:
                raise fail(f"{bare_name}: option {key!r} given twice")
            options[key] = value + (quoted or "")
        else:
            args.append(bare + (quoted or ""))
    problem = _validate(bare_name, args, options)
    if problem is not None:
        raise fail(problem)
    return Action(bare_name, tuple(args), options, source, line)


def parse_actions(text: str, source: str = "", first_line: int = 1) -> list[Action]:
    """Parse every line of ``text`` (split at ``\\n`` only) into actions, skipping blanks and comments.

    Raises:
        DialplanError: for the first bad line, with its line number.
    """
    actions = []
    for offset, raw in enumerate(text.split("\n")):
        action = parse_line(raw.removesuffix("\r"), source, first_line + offset)
        if action is not None:
            actions.append(action)
    return actions
