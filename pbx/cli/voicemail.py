"""`pbx voicemail list EXT`: a mailbox's messages, read from the PBX's database (read-only, safe while the PBX
runs: SQLite's WAL lets a reader see the last committed state without blocking the writer).

Prints one line per message, new ones first, each folder oldest first: folder, when it was left (local time),
its length, the caller, and the WAV file. Nothing is changed: a listed message stays new.

`pbx voicemail hash-pin` reads a PIN (asked for on a terminal, else one line of standard input) and prints the
`pin_hash` to put in a mailbox's table instead of its `pin`.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time

from pbx.apps.voicemail.files import hash_pin
from pbx.config import ConfigError, load_config
from pbx.store import offline
from pbx.store.records import VoicemailMessage


def _caller(message: VoicemailMessage) -> str:
    number = message.caller_number or "unknown"
    return f'"{message.caller_name}" <{number}>' if message.caller_name else number


def _list(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"{args.config}: {e}", file=sys.stderr)
        return 1
    tenant = config.tenant(args.tenant)
    if tenant is None:
        print(f"{args.config}: no tenant {args.tenant!r}", file=sys.stderr)
        return 1
    box = tenant.mailboxes.get(args.mailbox)
    if box is None:
        print(f"tenant {tenant.name} has no mailbox {args.mailbox!r}", file=sys.stderr)
        return 1
    found = offline.messages(config.store.url, config.data_dir, tenant.name, box.number)
    messages = [m for m in found if m.folder == "new"] + [m for m in found if m.folder != "new"]
    new = sum(1 for m in messages if m.folder == "new")
    title = f" ({box.name})" if box.name else ""
    print(f"mailbox {box.number}{title} of tenant {tenant.name}: {new} new, {len(messages) - new} old")
    if messages:
        print(f"{'folder':<6} {'received':<19} {'length':>7}  {'caller':<32} file")
    for m in messages:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.received_at))
        print(f"{m.folder:<6} {when:<19} {m.duration:>6.1f}s  {_caller(m):<32} {config.data_dir / m.audio}")
    return 0


def _hash_pin(args: argparse.Namespace) -> int:
    terminal = sys.stdin.isatty()
    pin = getpass.getpass("PIN (4 to 12 digits): ") if terminal else sys.stdin.readline().strip()
    if not re.fullmatch(r"[0-9]{4,12}", pin):
        print("a PIN is 4 to 12 digits", file=sys.stderr)
        return 1
    print(hash_pin(pin))
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`pbx voicemail list`."""
    voicemail = subparsers.add_parser("voicemail", help="voicemail tools")
    commands = voicemail.add_subparsers(dest="voicemail_command", required=True)
    listing = commands.add_parser("list", help="print a mailbox's messages")
    listing.add_argument("mailbox", metavar="EXT", help="the mailbox number (usually the extension)")
    listing.add_argument("--config", default="pbx.toml", help="the PBX configuration (default: pbx.toml)")
    listing.add_argument("--tenant", default="default", help="the tenant (default: default)")
    listing.set_defaults(func=_list)
    hashing = commands.add_parser(
        "hash-pin", help="print the pin_hash of a PIN (read from the terminal or stdin)"
    )
    hashing.set_defaults(func=_hash_pin)
