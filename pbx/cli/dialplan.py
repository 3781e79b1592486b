"""``pbx dialplan check`` and ``pbx dialplan simulate``: the dialplan tools, offline (no phone, no network).

`add_commands` mounts ``dialplan`` on the ``pbx`` command's subparsers; each command's function takes the
parsed arguments and returns the exit status. `main` runs them alone (tests, ``python -m``).

- ``pbx dialplan check [--config FILE] [--dir DIR]``: lint every template; prints ``file:line: message`` per
  problem and exits 1 if there is any.
- ``pbx dialplan simulate [--config FILE] [--dir DIR] --tenant T --from EXT --to NUMBER [--result R]...
  [--digits D]... [--list]``: print the actions a call would run, one per line, as parsed.
  ``--referred-by EXT`` routes a transferred party as its transferor EXT (docs/features.md); with a config,
  the DND and forwarding its phones set (the PBX's database, read-only) are part of the directory.

Part of the command line (`pbx.cli`), which with `pbx/tap.py` and `pbx.service` is all that reads the
configuration (through `pbx.config.load_config`).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from pbx.b2bua.outbound_policy import TenantOutbound
from pbx.config import Config, ConfigError, Tenant, load_config
from pbx.dialplan.actions import RESULTS, Action, DialplanError
from pbx.dialplan.engine import DialplanEngine
from pbx.dialplan.simulate import (
    CallerInfo,
    CallInfo,
    ExtensionInfo,
    TenantDirectory,
    check_dialplans,
    make_context,
    simulate_call,
)
from pbx.store import StoreError
from pbx.store import offline as offline_store
from pbx.trunks.outbound import request_uri
from pbx.trunks.tollfraud import allowed_classes, judge


def tenant_directories(config: Config) -> dict[str, TenantDirectory]:
    """Every configured tenant's directory (extensions and groups) as plain context values."""
    return {
        tenant.name: TenantDirectory(
            {number: ExtensionInfo.from_attributes(e) for number, e in tenant.extensions.items()},
            getattr(tenant, "groups", {}),
        )
        for tenant in config.tenants
    }


def with_phone_settings(config: Config, tenants: dict[str, TenantDirectory]) -> dict[str, TenantDirectory]:
    """The directories with the DND and forwarding set by phone (feature codes, docs/features.md) laid over
    the configured extensions, as a live call sees them; read-only from the PBX's database."""
    try:
        settings = offline_store.features(config.store.url, config.data_dir)
    except (sqlite3.Error, StoreError):
        return tenants  # a database being created or of another version: the config alone
    out = dict(tenants)
    for row in settings:
        directory = out.get(row.tenant)
        if directory is None or row.extension not in directory.extensions:
            continue
        fields: dict[str, Any] = {"dnd": row.dnd} if row.dnd else {}
        for name in ("forward_all", "forward_busy", "forward_noanswer"):
            if getattr(row, name) is not None:
                fields[name] = getattr(row, name)
        extensions = dict(directory.extensions)
        extensions[row.extension] = replace(extensions[row.extension], **fields)
        out[row.tenant] = TenantDirectory(extensions, directory.groups)
    return out


def _load(args: argparse.Namespace) -> tuple[Config | None, Path]:
    """The config (if any) and the dialplan directory: ``--dir``, else the config's, else ./dialplans."""
    config = load_config(args.config) if args.config else None
    if args.dir:
        return config, Path(args.dir)
    return config, config.dialplan_dir if config is not None else Path("dialplans")


def _now(text: str | None) -> datetime:
    if text is None:
        return datetime.now().astimezone()
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.astimezone()


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, str]:
    pairs = {}
    for item in items or ():
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"{what} must be NAME=VALUE, not {item!r}")
        pairs[key] = value
    return pairs


def _check(args: argparse.Namespace) -> int:
    try:
        config, directory = _load(args)
    except ConfigError as e:
        print(f"{args.config}: {e}", file=sys.stderr)
        return 2
    tenants = tenant_directories(config) if config is not None else None
    trunks = {t.name: tuple(t.trunks) for t in config.tenants} if config is not None else None
    problems, checked = check_dialplans(directory, tenants, now=_now(None), trunks=trunks)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {checked} template(s) under {directory}", file=sys.stderr)
        return 1
    print(f"{directory}: {checked} template(s) OK")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    try:
        config, directory = _load(args)
    except ConfigError as e:
        print(f"{args.config}: {e}", file=sys.stderr)
        return 2
    try:
        context = _simulated_context(args, config)
        results = [r for item in args.result or () for r in item.split(",") if r]
        for r in results:
            if r not in RESULTS:
                raise ValueError(f"--result must be one of {', '.join(RESULTS)}, not {r!r}")
    except ValueError as e:
        print(f"pbx dialplan simulate: {e}", file=sys.stderr)
        return 2
    engine = DialplanEngine(directory)
    try:
        if args.list:
            actions = engine.render(args.tenant, context, args.template)
            lines = [f"{a}  # {a.source}:{a.line}" if args.verbose else str(a) for a in actions]
        else:
            lines = simulate_call(
                partial(engine.render, args.tenant),
                context,
                results,
                template=args.template,
                digits=args.digits or (),
                show_source=args.verbose,
                describe_dial=trunk_notes(config, args.tenant, args.caller, bool(args.from_trunk))
                if config is not None
                else None,
                park_orbit=_first_orbit(config, args.tenant),
            )
    except DialplanError as e:
        print(e, file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def _first_orbit(config: Config | None, tenant_name: str) -> str:
    """The orbit `park` takes first in the tenant ([tenants.NAME.features] park_orbits), else 701."""
    tenant = config.tenant(tenant_name) if config is not None else None
    orbits = getattr(getattr(tenant, "features", None), "park_orbits", ()) if tenant is not None else ()
    return orbits[0] if orbits else "701"


def trunk_notes(
    config: Config, tenant_name: str, caller: str | None = None, from_trunk: bool = False
) -> Callable[[Action], list[str]]:
    """For `simulate_call`: after a dial, where each of its trunk targets would go (docs/trunks.md), and
    whether the toll-fraud checks would refuse it for `caller` (docs/security.md; limits not simulated)."""
    tenant = next((t for t in config.tenants if t.name == tenant_name), None)
    trunks: Mapping[str, Any] = tenant.trunks if tenant is not None else {}
    toll = toll_note(tenant, caller, from_trunk) if tenant is not None else (lambda number: "")

    def notes(action: Action) -> list[str]:
        lines = []
        targets = [t for t in action.targets if t.kind == "trunk"]
        for target in targets:
            trunk = trunks.get(target.name)
            if trunk is None:
                lines.append(f"#   trunk:{target.name}: no such trunk (the target is unavailable)")
                continue
            state = "" if trunk.enabled else " (disabled: 503, the next target is tried)"
            uri = request_uri(trunk, target.number or "")
            lines.append(
                f"#   trunk:{target.name}/{target.number} -> {uri}{state}{toll(target.number or '')}"
            )
        if len(targets) > 1 and action.options.get("strategy") in (None, "failover"):
            lines.append("#   failover: the next trunk after a timeout, 5xx/6xx or transport error")
        return lines

    return notes


def toll_note(tenant: Tenant, caller: str | None, from_trunk: bool) -> Callable[[str], str]:
    """ " (refused: 403, WHY)" for a number the caller may not call through a trunk, else ""."""
    settings = TenantOutbound.from_attributes(tenant.outbound)
    rules = settings.rules
    extension = tenant.extensions.get(caller or "")
    if from_trunk:
        classes = frozenset(rules.classes) - {"emergency"} if settings.trunk_to_trunk else frozenset()
    else:
        own_settings = tenant.outbound.extensions.get(caller or "")
        own = own_settings.classes if own_settings is not None else ()
        classes = allowed_classes(rules, own, extension is not None and extension.may_call_out)

    def note(number: str) -> str:
        verdict = judge(number, rules, classes)
        if from_trunk and (not settings.trunk_to_trunk or verdict.kind == "emergency"):
            return " (refused: 403, calls from trunks may not go out again)"
        return "" if verdict.allowed else f" (refused: 403, {verdict.rule})"

    return note


def _simulated_context(args: argparse.Namespace, config: Config | None) -> dict:
    tenants = with_phone_settings(config, tenant_directories(config)) if config is not None else {}
    if config is not None and args.tenant not in tenants:
        raise ValueError(f"the configuration has no tenant {args.tenant!r}")
    directory = tenants.get(args.tenant, TenantDirectory())
    referred_by = args.referred_by or ""
    if referred_by:  # a transferred party is routed as its transferor (docs/features.md)
        if args.from_trunk or (args.caller is not None and args.caller != referred_by):
            raise ValueError("--referred-by EXT routes the call as EXT: leave out --from and --from-trunk")
        args.caller = referred_by
    if args.from_trunk:
        caller = CallerInfo(args.tenant)
    elif args.caller is not None:
        extension = directory.extensions.get(args.caller)
        if config is not None and extension is None:
            raise ValueError(f"tenant {args.tenant!r} has no extension {args.caller!r} (use --from-trunk)")
        extension = extension or ExtensionInfo(args.caller)
        caller = CallerInfo(args.tenant, extension.number, extension.name, True, extension.may_call_out)
    else:
        raise ValueError("give --from EXTENSION or --from-trunk NAME")
    if args.to is None:
        raise ValueError("give --to NUMBER (or --did NUMBER with --trunk)")
    call = CallInfo(
        id="simulated",
        dialed=args.to,
        display_name=args.display_name if args.display_name is not None else caller.name,
        from_trunk=args.from_trunk,
        did=args.to if args.from_trunk else None,
        headers={k.lower(): v for k, v in _pairs(args.header, "--header").items()},
        transport=args.transport,
        referred_by=referred_by,
    )
    listing = bool(args.list)
    return make_context(
        call=call,
        caller=caller,
        directory=directory,
        now=_now(args.time),
        digits=(args.digits or [None])[0] if listing else None,
        result=next(iter(args.result or ()), None) if listing else None,
        variables=_pairs(args.var, "--var"),
    )


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dialplan check`` and ``dialplan simulate`` to the ``pbx`` command's subparsers.

    Each command sets ``func``: call ``args.func(args)`` for the exit status.
    """
    dialplan = subparsers.add_parser("dialplan", help="dialplan tools: check and simulate")
    commands = dialplan.add_subparsers(dest="dialplan_command", required=True)

    check = commands.add_parser(
        "check", help="lint every dialplan template", description="Lint every dialplan template."
    )
    check.add_argument(
        "--config", help="the PBX configuration (gives the tenants and the dialplan directory)"
    )
    check.add_argument("--dir", help="the dialplan directory (default: the config's, else ./dialplans)")
    check.set_defaults(func=_check)

    simulate = commands.add_parser(
        "simulate",
        help="print the actions a call would run",
        description="Print the actions a call would run (one per line, as parsed), with no phone and no "
        "network. Dials end as --result says (default: answered); menus collect --digits.",
    )
    simulate.add_argument("--config", help="the PBX configuration (gives the tenant's extensions and groups)")
    simulate.add_argument("--dir", help="the dialplan directory (default: the config's, else ./dialplans)")
    simulate.add_argument("--tenant", default="default", help="the tenant (default: default)")
    simulate.add_argument("--from", dest="caller", metavar="EXTENSION", help="the calling extension")
    simulate.add_argument(
        "--from-trunk", "--trunk", metavar="TRUNK", help="simulate a call coming in on a trunk"
    )
    simulate.add_argument(
        "--to", "--did", metavar="NUMBER", help="what the caller dialed (for a trunk's call: the DID)"
    )
    simulate.add_argument(
        "--referred-by",
        metavar="EXTENSION",
        help="simulate a transferred party: routed as the transferor EXTENSION, with call.referred_by set",
    )
    simulate.add_argument("--display-name", help="the caller's From display name (default: its name)")
    simulate.add_argument("--header", action="append", metavar="NAME=VALUE", help="a request header")
    simulate.add_argument("--var", action="append", metavar="NAME=VALUE", help="a call variable (vars)")
    simulate.add_argument(
        "--result",
        action="append",
        metavar="RESULT",
        help=f"how each dial ends, in order, the last repeating ({', '.join(RESULTS)}); repeat or use ','",
    )
    simulate.add_argument(
        "--digits",
        action="append",
        metavar="DIGITS",
        help="what each menu collects, in order (and a voicemail with operator=: 0 goes to the operator)",
    )
    simulate.add_argument("--template", default="main", help="the template to start in (default: main)")
    simulate.add_argument("--time", metavar="ISO", help="the time of the call (default: now)")
    simulate.add_argument("--transport", default="udp", choices=("udp", "tcp", "tls"))
    simulate.add_argument(
        "--list",
        action="store_true",
        help="print the rendered actions as they are, without running them (--result and --digits then "
        "set the context's result and digits)",
    )
    simulate.add_argument("-v", "--verbose", action="store_true", help="show each action's template line")
    simulate.set_defaults(func=_simulate)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dialplan ...`` as the ``pbx`` command would."""
    parser = argparse.ArgumentParser(prog="pbx", description="Dialplan tools for the PBX.")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
