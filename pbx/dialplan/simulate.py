"""The template context, and the offline tools built on it: simulate a call, check every template.

`make_context` builds the context of docs/dialplan.md from plain values (`CallInfo`, `CallerInfo`,
`ExtensionInfo`); the B2BUA uses it for real calls and the tools for imagined ones, so both render the same
shape. `simulate_call` runs a call's actions through the same interpreter as a live call
(`pbx.dialplan.interpreter.run_actions`) against assumed dial results, with no phone and no network.
`check_dialplans` lints a dialplan directory: every template must compile, render with representative
contexts, produce valid actions, and name existing templates in ``goto`` and ``ivr``.

This module knows nothing of SIP or of the config layer: `pbx.cli.dialplan` turns a config into plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.python.failure import Failure

from pbx.dialplan.actions import CONDITIONS, OPERATOR, RESULTS, Action, DialplanError, RunState, template_for
from pbx.dialplan.engine import DialplanEngine, context_value
from pbx.dialplan.interpreter import MAX_RENDERS, RenderLoopError, run_actions


@context_value("trunk")
@dataclass(frozen=True, slots=True)
class CallInfo:
    """The context's ``call``: the request being routed.

    Attributes:
        id: The call's identifier (unique per call; for logs and ``set``).
        dialed: What the caller dialed: the user part of the Request-URI (``"1002"``); caller-controlled.
        display_name: The display name in the caller's From header, ``""`` if none; caller-controlled.
        from_trunk: The name of the trunk the call came in on, or None for a call from a phone.
        did: For a call from a trunk, the number dialed on the public network, else None.
        headers: Selected request headers by lower-case name; caller-controlled.
        transport: ``"udp"``, ``"tcp"`` or ``"tls"``.
        referred_by: For a transferred party routed as its transferor, the transferor's extension (``caller``
            is the transferor); ``""`` otherwise.
    """

    id: str
    dialed: str
    display_name: str = ""
    from_trunk: str | None = None
    did: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    transport: str = "udp"
    referred_by: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.headers, MappingProxyType):
            object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    @property
    def trunk(self) -> str | None:
        """The trunk the call came in on (`from_trunk`), or None for a call from a phone."""
        return self.from_trunk


@context_value()
@dataclass(frozen=True, slots=True)
class CallerInfo:
    """The context's ``caller``: who is calling, as far as the PBX knows.

    Attributes:
        tenant: The tenant's name.
        extension: The caller's extension number, or None for a caller that is none (a trunk).
        name: The extension's configured name (not the From display name), ``""`` if none.
        authenticated: Whether the caller proved to be ``extension`` (digest authentication).
        may_call_out: Whether the caller may place calls through trunks.
    """

    tenant: str
    extension: str | None = None
    name: str = ""
    authenticated: bool = False
    may_call_out: bool = False


@context_value()
@dataclass(frozen=True, slots=True)
class ExtensionInfo:
    """One entry of the context's ``extensions``: an extension of the tenant's directory.

    Attributes:
        number: The extension number (also its key in ``extensions``).
        name: Its configured name, ``""`` if none.
        forward_all: Where all its calls go instead (a dial target), ``""`` for none.
        forward_busy: Where its calls go when it is busy, ``""`` for none.
        forward_noanswer: Where its calls go when it does not answer, ``""`` for none.
        ring_timeout: Seconds it rings before a call counts as unanswered; 0 for the PBX default.
        may_call_out: Whether it may place calls through trunks.
        registered: Whether it has a registered device at the time of the render (the simulator and the
            checker assume it has).
        srtp: Its SRTP setting: "off", "optional" or "mandatory" (`docs/security.md`).
        allow_srtp_over_plain: Whether its SRTP keys may travel over plain UDP/TCP signalling.
        outbound_classes: The outbound classes it has (docs/security.md, "Toll fraud"); () for the tenant's
            default when it may call out, else internal and emergency only.
        dnd: Do-not-disturb is on (set by phone with a feature code: docs/features.md).
        pickup_groups: The call pickup groups it belongs to (`pickup group` picks up calls ringing at an
            extension sharing one of them).
        directed_pickup: Whether it may pick up a call ringing at any extension of the tenant
            (`pickup EXTENSION`; without it, only at extensions sharing a pickup group).
    """

    number: str
    name: str = ""
    forward_all: str = ""
    forward_busy: str = ""
    forward_noanswer: str = ""
    ring_timeout: float = 0.0
    may_call_out: bool = False
    registered: bool = True
    srtp: str = "optional"
    allow_srtp_over_plain: bool = False
    outbound_classes: tuple[str, ...] = ()
    dnd: bool = False
    pickup_groups: tuple[str, ...] = ()
    directed_pickup: bool = False

    @classmethod
    def from_attributes(cls, extension: object) -> ExtensionInfo:
        """Copy the fields of any object that has them (a ``pbx.config.Extension``); missing ones default."""
        return cls(
            number=str(getattr(extension, "number", "")),
            name=str(getattr(extension, "name", "") or ""),
            forward_all=str(getattr(extension, "forward_all", "") or ""),
            forward_busy=str(getattr(extension, "forward_busy", "") or ""),
            forward_noanswer=str(getattr(extension, "forward_noanswer", "") or ""),
            ring_timeout=float(getattr(extension, "ring_timeout", 0.0) or 0.0),
            may_call_out=bool(getattr(extension, "may_call_out", False)),
            registered=bool(getattr(extension, "registered", True)),
            dnd=bool(getattr(extension, "dnd", False)),
            pickup_groups=tuple(getattr(extension, "pickup_groups", ()) or ()),
            directed_pickup=bool(getattr(extension, "directed_pickup", False)),
        )


class LiveExtensions(Mapping[str, ExtensionInfo]):
    """A tenant's extensions for one render, whose ``registered`` is asked of the location service only for
    the extensions the template looks up (the context's ``extensions`` of a real call).

    Built from `extension_variants` of the directory (made once per directory, not per call): looking up a
    number returns one of its two prepared `ExtensionInfo` values and asks ``is_registered(number)`` once per
    view; ``in``, ``len`` and iteration never ask. Read-only, like the rest of the context.
    ``overrides(number)``, when given, returns the fields its owner set by phone (DND, forwarding:
    `pbx.apps.features`), laid over it.
    """

    __slots__ = ("_is_registered", "_overrides", "_seen", "_variants")

    def __init__(
        self,
        variants: Mapping[str, tuple[ExtensionInfo, ExtensionInfo]],
        is_registered: Callable[[str], bool],
        overrides: Callable[[str], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self._variants = variants
        self._is_registered = is_registered
        self._overrides = overrides
        self._seen: dict[str, ExtensionInfo] = {}

    def __getitem__(self, number: str) -> ExtensionInfo:
        found = self._seen.get(number)
        if found is None:
            absent, present = self._variants[number]
            found = present if self._is_registered(number) else absent
            if self._overrides is not None and (fields := self._overrides(number)):
                found = replace(found, **fields)
            self._seen[number] = found
        return found

    def __contains__(self, number: object) -> bool:
        return number in self._variants

    def __iter__(self) -> Iterator[str]:
        return iter(self._variants)

    def __len__(self) -> int:
        return len(self._variants)

    def __repr__(self) -> str:
        return f"<LiveExtensions of {len(self._variants)}>"


def extension_variants(
    extensions: Mapping[str, ExtensionInfo],
) -> Mapping[str, tuple[ExtensionInfo, ExtensionInfo]]:
    """Each extension as (not registered, registered), for `LiveExtensions`; read-only."""
    return MappingProxyType(
        {
            number: (replace(e, registered=False), replace(e, registered=True))
            for number, e in extensions.items()
        }
    )


@dataclass(frozen=True, slots=True)
class TenantDirectory:
    """A tenant's directory as the context shows it: extensions by number, groups by name.

    Attributes:
        extensions: The extensions, by number.
        groups: The ring groups: name to member extension numbers, in ring order.
    """

    extensions: Mapping[str, ExtensionInfo] = field(default_factory=dict, hash=False)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Read-only mappings are kept as they are (no copy per call); anything else is copied.
        if not isinstance(self.extensions, (MappingProxyType, LiveExtensions)):
            object.__setattr__(self, "extensions", MappingProxyType(dict(self.extensions)))
        if not isinstance(self.groups, MappingProxyType):
            object.__setattr__(
                self, "groups", MappingProxyType({k: tuple(v) for k, v in self.groups.items()})
            )


def make_context(
    *,
    call: CallInfo,
    caller: CallerInfo,
    directory: TenantDirectory,
    now: datetime,
    digits: str | None = None,
    result: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The context a template renders with (every key is documented in docs/dialplan.md).

    Args:
        call: The context's ``call``.
        caller: The context's ``caller``.
        directory: Gives ``extensions`` and ``groups``.
        now: The context's ``now``: the time of the render, timezone-aware.
        digits: The digits collected by the last ``menu`` (``""`` when none were pressed); None otherwise.
        result: `RunState.result`: how the most recent dial ended, or None.
        variables: The context's ``vars``: what ``set`` actions have set so far.
    """
    return {
        "call": call,
        "caller": caller,
        "extensions": directory.extensions,
        "groups": directory.groups,
        "now": now,
        "digits": digits,
        "result": result,
        "vars": MappingProxyType(dict(variables or {})),
    }


Render = Callable[[Mapping[str, Any], str], list[Action]]
"""Render (context, template name) of one tenant into actions: ``partial(engine.render, tenant)``."""


def simulate_call(
    render: Render,
    context: Mapping[str, Any],
    dial_results: Sequence[str],
    *,
    template: str = "main",
    digits: Sequence[str] = (),
    show_source: bool = False,
    describe_dial: Callable[[Action], list[str]] | None = None,
    park_orbit: str = "701",
) -> list[str]:
    """Run a call's actions through the live calls' interpreter (`run_actions`), with assumed outcomes,
    and describe what happens.

    Args:
        render: Renders a template of the call's tenant.
        context: The first render's context (``result`` None, ``digits`` None, as for a new call).
        dial_results: How each ``dial`` that runs ends, in order (`RESULTS`); the last one repeats.
        template: The template the call starts in.
        digits: What each ``menu`` collects, in order (the last one repeats); ``""`` without any. A
            ``voicemail`` with ``operator=`` takes the next one too: ``"0"`` sends the caller to the operator.
        show_source: Whether to follow each action with ``  # FILE:LINE``.
        describe_dial: Comment lines written after each dial that runs (where its trunk targets go).
        park_orbit: The orbit a ``park`` takes (the tenant's first); the parked call is never retrieved.

    Returns:
        One line per action that runs (as `str(Action)`), a ``# -> RESULT`` line after each dial, and a final
        ``# ...`` line saying how the call ends.

    Raises:
        DialplanError: a render failed, as it would fail the real call.
        ValueError: a dial result is not one of `RESULTS`.
    """
    for r in dial_results:
        if r not in RESULTS:
            raise ValueError(f"unknown dial result {r!r} (one of {', '.join(RESULTS)})")
    call = _SimulatedCall(render, context, dial_results, digits, show_source)
    call.describe_dial = describe_dial
    call.park_orbit = park_orbit
    failures: list[Failure] = []
    ensureDeferred(run_actions(call, template)).addErrback(failures.append)  # fired: the host never waits
    if failures:
        if failures[0].check(RenderLoopError):
            call.out.append(f"# end: more than {MAX_RENDERS} renders (a goto loop?): the call fails")
            return call.out
        failures[0].raiseException()
    if not call.ended and not call.connected:
        call.out.append(_end(call.run_state, None, call.answered))
    return call.out


class _SimulatedCall:
    """The simulator's `ActionHost`: dials end as assumed, menus collect the given digits, and every action
    that runs is written down. Its awaitables are already fired Deferreds, so a run is synchronous."""

    def __init__(
        self,
        render: Render,
        context: Mapping[str, Any],
        dial_results: Sequence[str],
        digits: Sequence[str],
        show_source: bool,
    ) -> None:
        self._render, self._context = render, context
        self._dial_results, self._digits, self._show_source = dial_results, digits, show_source
        self.run_state = RunState()
        self.variables: dict[str, str] = dict(context.get("vars") or {})
        self.out: list[str] = []
        self.ended = self.connected = self.answered = False
        self.describe_dial: Callable[[Action], list[str]] | None = None
        self.park_orbit = "701"
        self._dials = self._menus = self._renders = 0

    @staticmethod
    def _next_of(values: Sequence[str], index: int, default: str) -> str:
        return values[min(index, len(values) - 1)] if values else default

    def render(self, template: str, digits: str | None) -> list[Action]:
        context = dict(self._context)
        if self._renders:
            state = self.run_state
            context.update(result=state.result, digits=digits, vars=MappingProxyType(dict(self.variables)))
        self._renders += 1
        return self._render(context, template)

    def starting(self, action: Action) -> None:
        source = f"  # {action.source}:{action.line}" if self._show_source else ""
        self.out.append(f"{action}{source}")

    def run_dial(self, action: Action) -> Deferred[str]:
        outcome = self._next_of(self._dial_results, self._dials, "answered")
        self._dials += 1
        if self.describe_dial is not None:
            self.out.extend(self.describe_dial(action))
        self.out.append(f"# -> {outcome}")
        if outcome == "answered":
            self.out.append("# end: the call is connected; it ends when either side hangs up")
            self.connected = True
        return succeed(outcome)

    def run_app(self, action: Action) -> Deferred[str]:
        name, early = action.name, action.options.get("noanswer") == "yes"  # noanswer: early media
        if name == "voicemail":
            return succeed(self._voicemail(action))
        if name in _FEATURE_APPS:
            return succeed(self._feature_app(action))
        if name == "voicemailmain":
            self.out.append("# end: mailbox access (PIN, then the messages); the PBX hangs up after it")
            self.ended = True
            return succeed("done")
        if name in ("answer", "ivr", "record") or (name in ("menu", "play") and not early):
            self.answered = True  # `progress` and `play ... noanswer=yes` are early media: not an answer
        if name == "menu":
            collected = self._next_of(self._digits, self._menus, "")
            self._menus += 1
            self.out.append(f"# -> digits {collected!r}")
            return succeed(collected)
        return succeed("done")

    def _voicemail(self, action: Action) -> str:
        """The steps of `voicemail MAILBOX` (pbx.apps.voicemail.deposit): the greeting it picks, the key the
        caller presses during it (the next of `digits`, only when there is an `operator=`), the recording."""
        number, kind = action.args[0], action.options.get("greeting", "auto")
        if kind == "auto":
            kind = "busy" if self.run_state.result == "busy" else "unavailable"
        said = "is busy" if kind == "busy" else "is not available"
        self.answered = True
        self.out.append(
            f"# answers; plays mailbox {number}'s {kind} greeting (none recorded: "
            f'"the person at extension {number} {said}"); * skips it'
        )
        operator = action.options.get("operator")
        if operator is not None:
            key = self._next_of(self._digits, self._menus, "")
            self._menus += 1
            if key == "0":
                self.out.append(f"# -> 0 pressed: the call goes to the operator ({operator})")
                return OPERATOR
            self.out.append(f"# -> no 0 pressed (0 would go to {operator})")
        self.out.append("# beep; records until #, silence, the mailbox's longest message or hang-up")
        self.out.append("# end: the caller leaves a message (a full mailbox says so and records nothing)")
        self.ended = True
        return "recorded"

    def _feature_app(self, action: Action) -> str:
        """The phone features (pbx.apps.features, pbx.apps.park; the pickup of the transfer work): what each
        does, and the outcome the simulator assumes (a parked call is not retrieved in time)."""
        name, args = action.name, action.args
        call, caller = self._context.get("call"), self._context.get("caller")
        me = getattr(caller, "extension", None) or "(no extension: nothing changes)"
        if name == "feature":
            self.answered = action.options.get("prompt") != "no"
            what = "do-not-disturb" if args[0] == "dnd" else args[0].replace("_", " ")
            value = args[1] if args[0] == "dnd" or args[1] == "off" else f"to {args[1]}"
            self.out.append(f"# sets {what} {value} for {me} (stored; it survives restarts), says so")
            return "off" if args[1] == "off" else "on"
        if name == "park":
            parker = getattr(call, "referred_by", "") or getattr(caller, "extension", None) or ""
            self.answered = True
            self.variables.update(parker=parker, park_orbit=self.park_orbit)
            self.out.append(
                f"# answers; parks the call on the first free orbit ({self.park_orbit}), says it, plays music"
            )
            self.out.append(f"# -> timeout (nobody dialled {self.park_orbit}): vars.parker = {parker!r}")
            return "timeout"
        if name == "unpark":
            self.out.append(
                f"# answers and joins the call parked on {args[0]} (nothing parked: 'park-empty')"
            )
            self.out.append("# end: the two calls are connected; either hanging up ends both")
            self.connected = True
            return "retrieved"
        target = "a call ringing in the caller's pickup group" if args[0] == "group" else f"{args[0]}'s call"
        self.out.append(f"# picks up {target} (the first picker wins; none ringing: the next action)")
        self.out.append("# end: the picked-up call is connected to the caller; its ringing phones stop")
        self.connected = True
        return "answered"

    def run_hangup(self, action: Action) -> None:
        self.out.append(_end(self.run_state, action, self.answered))
        self.ended = True


_FEATURE_APPS = frozenset({"feature", "park", "unpark", "pickup"})


def _end(state: RunState, action: Action | None, answered: bool) -> str:
    how = "hangup" if action is not None else "no more actions"
    if answered:
        return f"# end ({how}): the PBX hangs up (BYE)"
    return f"# end ({how}): the call is rejected with {state.hangup_status(action)}"


# -- check ----------------------------------------------------------------------------------------------

_SAMPLE_DIRECTORY = TenantDirectory(
    extensions={
        "1000": ExtensionInfo("1000", "Reception"),
        "1001": ExtensionInfo("1001", "Alice", forward_all="1000", may_call_out=True),
        "1002": ExtensionInfo("1002", "Bob", forward_busy="1000", forward_noanswer="group:sales"),
        "1003": ExtensionInfo("1003", "Carol", forward_noanswer="trunk:carrier/15551234", ring_timeout=15),
    },
    groups={"sales": ("1000", "1001")},
)
_SAMPLE_DIALED = ("0", "100", "500", "600", "999", "9015551234", "+15551234", "*97", "")
_SAMPLE_DIGITS = (None, "", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#", "12")


def _sample_contexts(tenant: str, directory: TenantDirectory, ivr: bool, now: datetime) -> Iterable[dict]:
    """Representative contexts: each extension dialed (up to 20) and odd numbers, from inside and a trunk."""
    numbers = list(directory.extensions)[:20]
    first = directory.extensions[numbers[0]] if numbers else None
    callers = [
        (
            CallerInfo(tenant, first.number, first.name, True, True) if first else CallerInfo(tenant),
            None,
        ),
        (CallerInfo(tenant), "carrier"),
    ]
    dialed_values = [*numbers, *directory.groups, *_SAMPLE_DIALED]
    for caller, trunk in callers:
        for dialed in dialed_values:
            call = CallInfo(
                id="check",
                dialed=dialed,
                display_name="Check",
                from_trunk=trunk,
                did=dialed if trunk else None,
                headers={"user-agent": "pbx dialplan check"},
            )
            for result in (None, *CONDITIONS):
                for digits in _SAMPLE_DIGITS if ivr else (None,):
                    yield make_context(
                        call=call, caller=caller, directory=directory, now=now, digits=digits, result=result
                    )


def check_dialplans(
    directory: Path,
    tenants: Mapping[str, TenantDirectory] | None = None,
    *,
    now: datetime,
    trunks: Mapping[str, Collection[str]] | None = None,
) -> tuple[list[DialplanError], int]:
    """Lint every template under a dialplan directory.

    Args:
        directory: The directory holding one dialplan directory per tenant.
        tenants: The configured tenants' directories by tenant name, or None without a configuration; a
            tenant directory that is not configured is checked with a sample directory.
        now: The ``now`` of the sample contexts.
        trunks: The configured tenants' trunk names by tenant name; None: trunk targets are not checked.

    Returns:
        The problems found (each once, in file and line order) and the number of templates checked.
    """
    problems: dict[str, DialplanError] = {}

    def add(error: DialplanError) -> None:
        problems.setdefault(str(error), error)

    if not directory.is_dir():
        return [DialplanError("no such directory", str(directory))], 0
    engine = DialplanEngine(directory)
    names = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    for tenant in sorted(tenants or {}):
        if tenant not in names:
            add(DialplanError(f"no dialplan for tenant {tenant!r}", str(directory / tenant / "main.j2")))
    checked = 0
    for tenant in names:
        configured = tenants is not None and tenant in tenants
        tenant_directory = tenants[tenant] if tenants is not None and configured else _SAMPLE_DIRECTORY
        base = directory / tenant
        if not (base / "main.j2").is_file():
            add(DialplanError("missing: every call of the tenant starts here", str(base / "main.j2")))
        for path in sorted(base.rglob("*.j2")):
            name = path.relative_to(base).with_suffix("").as_posix()
            checked += 1
            try:
                engine.path(tenant, name)
            except DialplanError:
                add(
                    DialplanError(
                        f"{name!r} is no valid template name: goto and ivr cannot reach it", str(path)
                    )
                )
                continue
            contexts = _sample_contexts(tenant, tenant_directory, name.startswith("ivr/"), now)
            for context in contexts:
                try:
                    actions = engine.render(tenant, context, name)
                except DialplanError as e:
                    add(e)
                    continue
                for action in actions:
                    known = None if trunks is None else trunks.get(tenant, ())
                    for problem in _action_problems(
                        engine, tenant, action, tenant_directory, configured, known
                    ):
                        add(DialplanError(problem, action.source, action.line))
    ordered = sorted(problems.values(), key=lambda e: (e.file or "", e.line or 0, e.message))
    return ordered, checked


def _action_problems(
    engine: DialplanEngine,
    tenant: str,
    action: Action,
    directory: TenantDirectory,
    configured: bool,
    trunks: Collection[str] | None = None,
) -> Iterable[str]:
    """What a rendered action refers to that does not exist."""
    if action.name in ("goto", "ivr"):
        path = engine.path(tenant, template_for(action))
        if not path.is_file():
            yield f"{action.name} {action.args[0]}: no template {path}"
    if action.name == "dial" and configured:
        for target in action.targets:
            if target.kind == "extension" and target.name not in directory.extensions:
                yield f"dial: tenant {tenant!r} has no extension {target.name!r}"
            elif target.kind == "group" and target.name not in directory.groups:
                yield f"dial: tenant {tenant!r} has no group {target.name!r}"
            elif target.kind == "trunk" and trunks is not None and target.name not in trunks:
                yield f"dial: tenant {tenant!r} has no trunk {target.name!r}"
