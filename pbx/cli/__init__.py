"""The `pbx` command: offline tools that need no running PBX (it grows with each layer).

- `pbx config check FILE`: validate a configuration file and print a summary, or the error naming the key.
- `pbx dialplan check` / `pbx dialplan simulate`: lint the dialplans, print the actions a call would run.
- `pbx registrations FILE`: the phones registered now (read from the PBX's database; works while it runs),
  or through the console API with `--url`/`--token` (`pbx.cli.console`);
- `pbx status`, `pbx calls`: the running PBX through its console API (`pbx.cli.console`);
- `pbx user add|list|passwd|remove|token`: the console's users (`pbx.cli.users`).
- `pbx voicemail list EXT`: a mailbox's messages (the same way); `pbx voicemail hash-pin`: a PIN's hash.
- `pbx trunks status FILE`: each trunk's registration state (read from the status file the PBX keeps).
- `pbx trace [CALL-ID]`: a call's ladder from the running PBX (over its HTTP API), or the kept traces.
- `pbx version`
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from pbx import __version__
from pbx.cli.console import add_api_options, registrations_via_api, wants_api
from pbx.cli.console import add_commands as add_console_commands
from pbx.cli.console import run as run_api
from pbx.cli.dialplan import add_commands as add_dialplan_commands
from pbx.cli.trace import add_commands as add_trace_commands
from pbx.cli.trunks import add_commands as add_trunk_commands
from pbx.cli.users import add_commands as add_user_commands
from pbx.cli.voicemail import add_commands as add_voicemail_commands
from pbx.config import ConfigError, load_config
from pbx.store import offline


def _config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return 1
    listeners = ", ".join(f"{x.transport}:{x.host}:{x.port}" for x in config.sip.listeners)
    print(f"{args.file}: OK")
    print(f"  listeners: {listeners}")
    for tenant in config.tenants:
        print(
            f"  tenant {tenant.name} ({tenant.domain}): {len(tenant.extensions)} extensions, "
            f"{len(tenant.mailboxes)} mailboxes"
        )
    print(f"  data_dir: {config.data_dir}")
    return 0


def _registrations(args: argparse.Namespace) -> int:
    if wants_api(args):
        return int(run_api(registrations_via_api)(args))
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return 1
    now = time.time()
    bindings = offline.bindings(config.store.url, config.data_dir, now)
    if args.tenant:
        bindings = [b for b in bindings if b.tenant == args.tenant]
    if args.json:
        keys = ("tenant", "aor", "contact", "expires_at", "received", "user_agent")
        print(json.dumps([{k: getattr(b, k) for k in keys} for b in bindings], indent=1))
        return 0
    print(f"{'tenant':<12} {'extension':<10} {'expires':>7}  {'via':<28} {'contact':<40} user-agent")
    for b in bindings:
        print(
            f"{b.tenant:<12} {b.aor:<10} {b.expires_at - now:>6.0f}s  {b.received:<28} {b.contact:<40} "
            f"{b.user_agent}"
        )
    print(f"{len(bindings)} registration(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pbx", description="Offline tools for the PBX.")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=_config_check)
    add_dialplan_commands(commands)
    registrations = commands.add_parser("registrations", help="list the phones registered now")
    registrations.add_argument("file", nargs="?", default="pbx.toml", help="the PBX configuration file")
    add_api_options(registrations, config=False)
    registrations.add_argument("--tenant", help="only this tenant")
    registrations.set_defaults(func=_registrations)
    add_console_commands(commands)
    add_user_commands(commands)
    add_voicemail_commands(commands)
    add_trunk_commands(commands)
    add_trace_commands(commands)
    version = commands.add_parser("version", help="print the version")
    version.set_defaults(func=lambda _args: print(__version__) or 0)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
