"""The `pbx` command: offline tools that need no running PBX (it grows with each layer).

- `pbx config check FILE`: validate a configuration file and print a summary, or the error naming the key.
- `pbx dialplan check` / `pbx dialplan simulate`: lint the dialplans, print the actions a call would run.
- `pbx registrations FILE`: the phones registered now (read from the PBX's database; works while it runs).
- `pbx voicemail list EXT`: a mailbox's messages (the same way); `pbx voicemail hash-pin`: a PIN's hash.
- `pbx trunks status FILE`: each trunk's registration state (read from the status file the PBX keeps).
- `pbx trace [CALL-ID]`: a call's ladder from the running PBX (over its HTTP API), or the kept traces.
- `pbx version`
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from pbx import __version__
from pbx.cli.dialplan import add_commands as add_dialplan_commands
from pbx.cli.trace import add_commands as add_trace_commands
from pbx.cli.trunks import add_commands as add_trunk_commands
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
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return 1
    now = time.time()
    bindings = offline.bindings(config.store.url, config.data_dir, now)
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
    registrations.add_argument("file", help="the PBX configuration file")
    registrations.set_defaults(func=_registrations)
    add_voicemail_commands(commands)
    add_trunk_commands(commands)
    add_trace_commands(commands)
    version = commands.add_parser("version", help="print the version")
    version.set_defaults(func=lambda _args: print(__version__) or 0)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
