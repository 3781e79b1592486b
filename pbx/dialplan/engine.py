"""Render a tenant's dialplan templates into actions: the Jinja sandbox, the loader, reload and fallback.

Templates live in ``DIRECTORY/TENANT/NAME.j2``: ``main.j2`` is where every call starts, ``goto NAME`` renders
``NAME.j2`` and ``ivr NAME`` renders ``ivr/NAME.j2``. The environment is an `ImmutableSandboxedEnvironment`
with `StrictUndefined` (a typo is an error, not an empty string), ``trim_blocks`` and ``lstrip_blocks``, and a
``finalize`` hook (`escape_value`) that makes every ``{{ }}`` output one quoted value of the action language.
Tags that could bypass that escaping or reach other files (``include``, ``import``, ``extends``, ``filter``,
``call``, ``autoescape``) are refused when a template is compiled.

Reload: each `DialplanEngine.render` stats the template file (one ``os.stat``; with a clock, at most once per
``stat_interval`` seconds) and recompiles it when its mtime, size or inode changed, so an edit takes effect
on the next call with no restart. A broken edit (it does not compile, or its renders fail) never stops a
template that worked: the last version that rendered successfully keeps routing, and the error is logged once
per change and kept in `DialplanEngine.errors`. A template that never worked raises `DialplanError`.

Failures of the environment are not template errors: when the file cannot be stated or read (`OSError`: too
many open files, an I/O error, a permission being fixed...) nothing is remembered, the next render tries
again, and meanwhile the version compiled last keeps routing; with no such version the render raises
`DialplanUnavailable` (a `DialplanError`, not kept in `errors`). Only an attempt that read the file is
remembered (by the file's stamp), whether its source compiled or not.

Line numbers: an extension plants invisible markers in the template text (``\\x1e<line>\\x1f``) that the
engine strips after rendering, so an action error names the template line that produced the action. Values
from ``{{ }}`` cannot forge them: `escape_value` turns every control character into a space.

This module knows nothing of SIP or calls: the caller supplies the context (see docs/dialplan.md).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType, NoneType
from typing import Any, TypeVar

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.sandbox import ImmutableSandboxedEnvironment
from twisted.logger import Logger

from pbx.dialplan.actions import Action, DialplanError, escape_value, parse_line
from pbx.dialplan.numbers import FILTERS as NUMBER_FILTERS

MAX_TEMPLATE_BYTES = 1 << 20
"""The largest template file read."""
MAX_OUTPUT = 64 * 1024
"""The most characters one render may produce."""
MAX_ACTIONS = 256
"""The most actions one render may produce."""

_TENANT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,62}")
_NAME_PART = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}"
_TEMPLATE = re.compile(rf"{_NAME_PART}(?:/{_NAME_PART}){{0,3}}")
_MARKER = re.compile("\x1e([0-9]+)\x1f")
_BAD_SOURCE_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BANNED: Mapping[type[nodes.Node], str] = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
    nodes.Extends: "extends",
    nodes.FilterBlock: "filter",
    nodes.CallBlock: "call",
    nodes.EvalContextModifier: "autoescape",
}


class DialplanUnavailable(DialplanError):
    """A template could not be read for a reason outside it (`OSError`); the next render tries again."""


_MISSING = frozenset({errno.ENOENT, errno.ENOTDIR})
"""`os.stat` errors meaning the template does not exist (remembered); any other `OSError` is retried."""


def _marker(line: int) -> str:
    return f"\x1e{line}\x1f"


class _LineMarkers(Extension):
    """Put a line marker before every ``{{`` and at the start of every template line of literal text.

    Text captured by a block ``{% set %}`` or a ``{% macro %}`` body gets none, so comparing it works as
    written; such text only ever reaches the output through ``{{ }}``, as one quoted value.
    """

    def filter_stream(self, stream: TokenStream) -> Iterable[Token]:
        depth = 0  # nesting of block sets and macros
        tag: list[Token] = []  # the tokens of a {% ... %} tag being read
        for token in stream:
            if tag:
                tag.append(token)
                if token.type == "block_end":
                    depth = self._depth_after(tag, depth)
                    yield from tag
                    tag = []
                continue
            if token.type == "block_begin":
                tag = [token]
                continue
            if depth == 0 and token.type == "data":
                yield Token(token.lineno, "data", self._mark(token.value, token.lineno))
                continue
            if depth == 0 and token.type == "variable_begin":
                yield Token(token.lineno, "data", _marker(token.lineno))
            yield token
        yield from tag

    @staticmethod
    def _depth_after(tag: list[Token], depth: int) -> int:
        name = tag[1].value if len(tag) > 1 and tag[1].type == "name" else ""
        if name == "macro" or (name == "set" and not any(t.type == "assign" for t in tag)):
            return depth + 1
        if name in ("endmacro", "endset") and depth > 0:
            return depth - 1
        return depth

    @staticmethod
    def _mark(text: str, lineno: int) -> str:
        parts = text.split("\n")
        return "\n".join(_marker(lineno + i) + part for i, part in enumerate(parts))


def _match(value: object, pattern: str) -> bool:
    """The ``match`` test: the whole of ``str(value)`` matches the regular expression."""
    return value is not None and re.fullmatch(pattern, str(value)) is not None


def _digits(value: object) -> str:
    """The ``digits`` filter: only the ASCII digits of ``str(value)`` (None gives ``""``)."""
    return "" if value is None else "".join(c for c in str(value) if "0" <= c <= "9")


_DATA_FIELDS: dict[type, frozenset[str]] = {}
"""Context value types (`context_value`) -> their public fields and read-only properties."""
_DATA_TYPES = frozenset({str, int, float, bool, NoneType, tuple, MappingProxyType})
"""What such a field may hold to be read without the sandbox's checks (anything else goes through them)."""
_T = TypeVar("_T")


def context_value(*properties: str) -> Callable[[type[_T]], type[_T]]:
    """Class decorator (over ``@dataclass(frozen=True)``) for the values the PBX puts in a template's context
    (``call``, ``caller``, an extension): a template reads their public fields and the read-only
    ``properties`` named here without the sandbox's per-access checks, which would find them safe anyway
    (plain data of an immutable object that is no function, type, frame or known mutable: `_Environment`)."""

    def register(cls: type[_T]) -> type[_T]:
        names = {f.name for f in fields(cls) if not f.name.startswith("_")}  # type: ignore[arg-type]
        _DATA_FIELDS[cls] = frozenset(names | {p for p in properties if not p.startswith("_")})
        return cls

    return register


class _Environment(ImmutableSandboxedEnvironment):
    """`ImmutableSandboxedEnvironment` with a short way for the context's own values (`context_value`): a
    render reads a handful of their fields (``call.dialed``, ``ext.forward_all`` ...), and each read through
    the sandbox costs a dozen `isinstance` checks. The value returned is the one the sandbox would return:
    ``getattr(obj, name)`` when that is plain data (`_DATA_TYPES`), for a name the class declares; anything
    else (other objects, other names, other values) takes the sandbox's way."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        names = _DATA_FIELDS.get(type(obj))
        if names is not None and attribute in names:
            value = getattr(obj, attribute)
            if type(value) in _DATA_TYPES:
                return value
        return super().getattr(obj, attribute)


def make_environment() -> ImmutableSandboxedEnvironment:
    """The Jinja environment every dialplan template is compiled in (docs/dialplan.md, "Templates")."""
    env = _Environment(
        undefined=StrictUndefined,
        autoescape=False,
        finalize=escape_value,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        extensions=[_LineMarkers],
        cache_size=0,
        auto_reload=False,
    )
    env.tests["match"] = _match
    env.filters["digits"] = _digits
    env.filters.update(NUMBER_FILTERS)  # e164, strip_plus, national (docs/trunks.md)
    return env


def compile_template(env: ImmutableSandboxedEnvironment, source: str, name: str, file: str) -> Template:
    """Compile a template's source, refusing the tags that could escape the action language's escaping.

    Args:
        env: From `make_environment`.
        source: The template text.
        name: The template's name (``main``, ``ivr/main``).
        file: The file it came from, for errors and tracebacks.

    Raises:
        DialplanError: a syntax error, an unknown filter or test, a refused tag, or a control character,
            with its line.
    """
    bad = _BAD_SOURCE_CHARS.search(source)
    if bad is not None:
        line = source.count("\n", 0, bad.start()) + 1
        raise DialplanError(f"control character {bad.group()!r} in the template", file, line)
    try:
        tree = env.parse(source, name, file)
        for node in tree.find_all(tuple(_BANNED)):
            tag = next(t for cls, t in _BANNED.items() if isinstance(node, cls))
            hint = (
                "; use goto to share lines" if tag in ("include", "import", "from ... import", "call") else ""
            )
            raise DialplanError(f"{{% {tag} %}} is not allowed in a dialplan{hint}", file, node.lineno)
        code = env.compile(tree, name, file)
    except TemplateSyntaxError as e:
        raise DialplanError(e.message or "syntax error", file, e.lineno)
    # The globals as one plain dict, not Jinja's ChainMap over the environment's (never changed once made):
    # every render copies them into its context, and a ChainMap iterates in Python.
    return env.template_class.from_code(env, code, dict(env.make_globals(None)), None)


def _error_line(error: BaseException, file: str) -> int | None:
    """The template line of the innermost traceback frame in ``file`` (Jinja rewrites frames to those)."""
    line = None
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == file:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _numbered_lines(text: str) -> Iterator[tuple[str, int]]:
    """Strip the line markers from rendered text, giving each output line with its template line."""
    current = 0
    for raw in text.split("\n"):
        if "\x1e" not in raw:  # no marker: the line continues the current template line
            yield raw, current
            continue
        line = current
        clean: list[str] = []
        content = False
        position = 0
        for m in _MARKER.finditer(raw):
            piece = raw[position : m.start()]
            clean.append(piece)
            content = content or bool(piece.strip(" \t"))
            current = int(m.group(1))
            if not content:
                line = current
            position = m.end()
        clean.append(raw[position:])
        yield "".join(clean), line


_PARSED: dict[tuple[str, str, int], Any] = {}
"""(line text, file, line) -> its parsed `Action` (immutable) or None: most renders print the same lines."""
_PARSED_MAX = 4096
_UNPARSED = object()
_RENDERED: dict[tuple[str, str], tuple[Action, ...]] = {}
"""(whole rendered text, file) -> its actions: most calls render the very same text, which then needs no
splitting, no marker stripping and no per-line look-up. Only outputs that parsed entirely are kept."""
_RENDERED_MAX = 1024
_RENDERED_TEXT_MAX = 4096
"""The longest rendered text `_RENDERED` keeps (at most about 4 MB in all)."""


def render_template(template: Template, context: Mapping[str, Any], file: str) -> list[Action]:
    """Render a compiled template with ``context`` and parse its output into actions.

    Raises:
        DialplanError: the render failed (with the template line), produced too much, or produced a bad
            action line (with the template line that produced it).
    """
    chunks: list[str] = []
    size = 0
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise DialplanError(f"the template renders more than {MAX_OUTPUT} characters", file)
            chunks.append(chunk)
    except DialplanError:
        raise
    except Exception as e:  # a template can raise anything; it must become a located DialplanError
        message = str(e) if e.__class__.__module__.startswith("jinja2") else f"{type(e).__name__}: {e}"
        raise DialplanError(message, file, _error_line(e, file))
    output = "".join(chunks)
    whole = (output, file)
    known = _RENDERED.get(whole)
    if known is not None:
        return list(known)
    actions = []
    parsed = _PARSED
    for text, line in _numbered_lines(output):
        key = (text, file, line)
        action = parsed.get(key, _UNPARSED)
        if action is _UNPARSED:
            action = parse_line(text, file, line)  # raises DialplanError (not remembered)
            if len(parsed) >= _PARSED_MAX:
                parsed.clear()
            parsed[key] = action
        if action is not None:
            actions.append(action)
            if len(actions) > MAX_ACTIONS:
                raise DialplanError(f"the template renders more than {MAX_ACTIONS} actions", file, line)
    if len(output) <= _RENDERED_TEXT_MAX:
        if len(_RENDERED) >= _RENDERED_MAX:
            _RENDERED.clear()
        _RENDERED[whole] = tuple(actions)
    return actions


class _CompileFailed(Exception):
    """A version of a template was read and does not compile."""

    def __init__(self, stamp: tuple[int, int, int], error: DialplanError) -> None:
        super().__init__(stamp, error)
        self.stamp = stamp
        self.error = error


@dataclass(eq=False, slots=True)
class _Entry:
    """What the engine knows of one template file."""

    path: Path
    stamp: tuple[int, int, int] | None = None  # (mtime_ns, size, inode) of the source last compiled
    checked_at: float | None = None
    active: Template | None = None  # the newest version that compiled
    good: Template | None = None  # the newest version that rendered successfully
    error: DialplanError | None = None  # the latest error of the current file version
    logged: set[str] = field(default_factory=set)
    unavailable: DialplanUnavailable | None = None  # the environment failure of the latest attempt, if any


class DialplanEngine:
    """Loads, reloads and renders the dialplan templates of every tenant under one directory.

    Args:
        directory: The directory holding one dialplan directory per tenant (``config.dialplan_dir``).
        clock_seconds: A time source (e.g. ``reactor.seconds``). Without one, every render stats the
            template file; with one, a file is stated at most once per ``stat_interval`` seconds.
        stat_interval: See ``clock_seconds``.
    """

    _log = Logger()

    def __init__(
        self,
        directory: Path,
        *,
        clock_seconds: Callable[[], float] | None = None,
        stat_interval: float = 1.0,
    ) -> None:
        self._directory = Path(directory)
        self._clock_seconds = clock_seconds
        self._stat_interval = stat_interval
        self._env = make_environment()
        self._entries: dict[Path, _Entry] = {}
        self._by_name: dict[
            tuple[str, str], _Entry
        ] = {}  # (tenant, template) -> its entry: no path per render

    @property
    def directory(self) -> Path:
        """The directory holding the tenants' dialplan directories."""
        return self._directory

    def path(self, tenant: str, template: str = "main") -> Path:
        """The file of a tenant's template (``main`` -> ``DIRECTORY/TENANT/main.j2``).

        Raises:
            DialplanError: the tenant or template name is not a valid name (it could leave the directory).
        """
        if not _TENANT.fullmatch(tenant):
            raise DialplanError(f"bad tenant name {tenant!r}", str(self._directory))
        if not _TEMPLATE.fullmatch(template):
            raise DialplanError(f"bad template name {template!r}", str(self._directory / tenant))
        return self._directory / tenant / f"{template}.j2"

    def render(self, tenant: str, context: Mapping[str, Any], template: str = "main") -> list[Action]:
        """Render a tenant's template with ``context`` into the actions to run.

        Args:
            tenant: The tenant's name (its directory under ``directory``).
            context: The template's variables (docs/dialplan.md, "The context"); rendered as given.
            template: The template's name: ``main``, a ``goto`` target, or ``ivr/NAME``.

        Returns:
            The actions, in order; blank and comment lines left out.

        Raises:
            DialplanError: the template does not exist, or neither its current version nor the last version
                that rendered successfully renders with this context.
        """
        entry = self._by_name.get((tenant, template))
        if entry is None:
            path = self.path(tenant, template)
            entry = self._entries.get(path)
            if entry is None:
                entry = self._entries[path] = _Entry(path)
            if len(self._by_name) >= 10_000:
                self._by_name.clear()
            self._by_name[(tenant, template)] = entry
        path = entry.path
        self._refresh(entry, template)
        if entry.active is None:
            if entry.unavailable is not None:
                raise entry.unavailable
            assert entry.error is not None
            raise entry.error
        file = str(path)
        try:
            actions = render_template(entry.active, context, file)
        except DialplanError as e:
            fallback = entry.good is not None and entry.good is not entry.active
            self._report(entry, e, fallback)
            if entry.good is not None and fallback:
                try:
                    return render_template(entry.good, context, file)
                except DialplanError:
                    pass
            raise
        entry.good = entry.active
        return actions

    def errors(self) -> dict[Path, DialplanError]:
        """The latest error of each template file's current version, for the CLI and the admin status.

        An entry goes when the file changes (and comes back if the new version fails too).
        """
        return {path: e.error for path, e in self._entries.items() if e.error is not None}

    def _refresh(self, entry: _Entry, name: str) -> None:
        """Recompile ``entry`` if its file changed; a missing file forgets the template altogether.

        Only an attempt that read the file records its stamp: after an `OSError` (stat or read) the next
        render tries again, whatever ``stat_interval`` says, and the compiled version (if any) stays.
        """
        now = self._clock_seconds() if self._clock_seconds is not None else None
        if now is not None and entry.checked_at is not None and now - entry.checked_at < self._stat_interval:
            return
        entry.checked_at = now
        try:
            st = os.stat(entry.path)
        except OSError as e:
            if e.errno not in _MISSING:
                self._unavailable(entry, e)
                return
            self._entries.pop(entry.path, None)
            self._by_name = {key: e for key, e in self._by_name.items() if e is not entry}
            entry.active = entry.good = entry.unavailable = None
            entry.error = DialplanError("no such template", str(entry.path))
            return
        if (st.st_mtime_ns, st.st_size, st.st_ino) == entry.stamp:
            return
        try:
            stamp, compiled = self._compile(entry.path, name, st)
        except OSError as e:
            self._unavailable(entry, e)
            return
        except _CompileFailed as failed:
            self._read_ok(entry, failed.stamp)
            self._report(entry, failed.error, entry.good is not None or entry.active is not None)
            return
        self._read_ok(entry, stamp)
        entry.active = compiled

    def _read_ok(self, entry: _Entry, stamp: tuple[int, int, int]) -> None:
        """Remember the stamp of a version that was read (its errors, if any, are the template's)."""
        if entry.unavailable is not None:
            self._log.info("Dialplan template {file} is readable again", file=str(entry.path))
        entry.stamp = stamp
        entry.error = None
        entry.unavailable = None
        entry.logged.clear()

    def _unavailable(self, entry: _Entry, error: OSError) -> None:
        """An attempt failed for a reason outside the template: nothing kept; the next render tries again."""
        entry.checked_at = None
        reason = error.strerror or type(error).__name__
        unavailable = DialplanUnavailable(
            f"cannot read the template now ({reason}); will retry", str(entry.path)
        )
        first = entry.unavailable is None or entry.unavailable.message != unavailable.message
        entry.unavailable = unavailable
        if first:  # once per reason until the file is read again
            keeps = " (the version compiled last keeps routing)" if entry.active is not None else ""
            self._log.warn("Dialplan {error}{keeps}", error=str(unavailable), keeps=keeps)

    def _compile(self, path: Path, name: str, st: os.stat_result) -> tuple[tuple[int, int, int], Template]:
        """Read and compile a template: (the stamp of the version read, its template).

        Raises:
            OSError: the file could not be opened or read (not the template's fault).
            _CompileFailed: the version read does not compile.
        """
        file = str(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if st.st_size > MAX_TEMPLATE_BYTES:
            raise _CompileFailed(
                stamp, DialplanError(f"the template is larger than {MAX_TEMPLATE_BYTES} bytes", file)
            )
        with path.open("rb") as f:
            opened = os.fstat(f.fileno())  # the stamp of what is read, should it change meanwhile
            stamp = (opened.st_mtime_ns, opened.st_size, opened.st_ino)
            data = f.read(MAX_TEMPLATE_BYTES + 1)
        try:
            if len(data) > MAX_TEMPLATE_BYTES:
                raise DialplanError(f"the template is larger than {MAX_TEMPLATE_BYTES} bytes", file)
            try:
                source = data.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                raise DialplanError("the template is not UTF-8", file, data.count(b"\n", 0, e.start) + 1)
            return stamp, compile_template(self._env, source, name, file)
        except DialplanError as e:
            raise _CompileFailed(stamp, e)

    def _report(self, entry: _Entry, error: DialplanError, fallback: bool) -> None:
        """Keep ``error`` as the entry's latest, and log it once per file version."""
        entry.error = error
        key = str(error)
        if key in entry.logged or len(entry.logged) >= 100:
            return
        entry.logged.add(key)
        if fallback:
            self._log.error("Dialplan error: {error} (the last good version keeps routing)", error=key)
        else:
            self._log.error("Dialplan error: {error}", error=key)
