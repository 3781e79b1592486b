"""``pbx trunks status FILE``: each configured trunk's state, read from the running PBX's status file.

The PBX (`pbx.service.trunks`) rewrites ``DATA_DIR/trunks.json`` on every change of a trunk's state; this
command reads it beside the config and prints one line per configured trunk: tenant/trunk, state, the last
code and reason, when the next registration attempt goes out (after a failure) or the binding expires, and the
Contact registered. A trunk the file does not know (the PBX has not started since it was added) shows as
`unknown`; a status file written by a PBX that is no longer running is named so. Then, from the store, every
node's view of every trunk (`pbx.store.trunk_state`: with a shared PostgreSQL store, all the nodes') and
which node holds each trunk's registration (`pbx.store.trunk_lease`: the others stand by).
Exit status 0, or 1 when the config cannot be read. No password is ever printed (none is in the file).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from pbx.config import ConfigError, load_config
from pbx.store import StoreError, offline
from pbx.trunks.status import STATUS_FILE, read_status


def _running(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _when(at: object, now: float) -> str:
    if not isinstance(at, int | float):
        return "-"
    left = at - now
    return f"in {left:.0f}s" if left >= 0 else f"{-left:.0f}s ago"


def format_row(row: dict[str, Any], now: float) -> str:
    """One trunk's line: name, state, code and reason, next retry or expiry, Contact."""
    name = f"{row.get('tenant')}/{row.get('trunk')}"
    state = str(row.get("state", "unknown"))
    code = row.get("code")
    result = f"{code} {row.get('reason') or ''}".strip() if code is not None else "-"
    if row.get("pings") and row.get("reachable") is False:
        result += f"; OPTIONS {row.get('ping_code') or 'unanswered'}"
    if row.get("registration") == "failed":
        next_step = "retry " + (_when(row.get("retry_at"), now) if row.get("retry_at") else "now")
    elif row.get("registration") == "registered":
        next_step = "expires " + _when(row.get("expires_at"), now)
    else:
        next_step = "-"
    contact = row.get("contact") or "-"
    if row.get("registration") == "standby":
        contact = f"registered by {row.get('holder') or 'an unknown node'}"
    return f"{name:<24} {state:<13} {result[:32]:<32} {next_step:<18} {contact}"


def _status(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return 1
    path = config.data_dir / STATUS_FILE
    document = read_status(path)
    rows = {(row.get("tenant"), row.get("trunk")): row for row in (document or {}).get("trunks", [])}
    now = time.time()
    print(f"{'trunk':<24} {'state':<13} {'code/reason':<32} {'next':<18} contact")
    count = 0
    for tenant in config.tenants:
        for trunk in tenant.trunks.values():
            count += 1
            row = rows.get((tenant.name, trunk.name))
            if row is None:
                row = {"tenant": tenant.name, "trunk": trunk.name, "state": "disabled"}
                if trunk.enabled:
                    row["state"] = "unknown"
            print(format_row(row, now))
    _print_store(config, now)
    if document is None:
        note = f"no status file ({path}): the PBX has not run with these trunks"
    elif not _running(document.get("pid")):
        note = f"the PBX is not running: last known state, written {_when(document.get('written_at'), now)}"
    else:
        note = "the PBX is running"
    print(f"{count} trunk(s); {note}")
    return 0


def format_status(status: Any, now: float) -> str:
    """One row of the store (`pbx.store.trunk_state.TrunkStatus`): trunk, node, state, code and reason, the
    binding's expiry, how long ago the node wrote it."""
    name = f"{status.tenant}/{status.trunk}"
    result = f"{status.code} {status.reason or ''}".strip() if status.code is not None else "-"
    if status.reachable is False:
        result += f"; OPTIONS {status.ping_code or 'unanswered'}"
    expires = "expires " + _when(status.expires_at, now) if status.registration == "registered" else "-"
    written = _when(status.updated_at, now)
    return f"{name:<24} {status.node:<24} {status.state:<13} {result[:32]:<32} {expires:<18} {written}"


def _print_store(config: Any, now: float) -> None:
    """Every node's view of every trunk, from the store (shared by the nodes with PostgreSQL)."""
    try:
        statuses = offline.trunk_statuses(config.store.url, config.data_dir)
    except StoreError as e:
        print(f"(the store cannot be read: {e})")
        return
    if statuses:
        print("\nevery node's view, from the store:")
        print(f"{'trunk':<24} {'node':<24} {'state':<13} {'code/reason':<32} {'next':<18} written")
        for status in statuses:
            print(format_status(status, now))
    try:
        leases = offline.trunk_leases(config.store.url, config.data_dir)
    except StoreError as e:
        print(f"(the registration leases cannot be read: {e})")
        return
    if leases:
        print("\nwho registers each trunk (the lease; the other nodes stand by):")
        print(f"{'trunk':<24} {'holder':<24} lease")
        for lease in leases:
            left = lease.expires_at - now
            until = f"expires {_when(lease.expires_at, now)}" if left >= 0 else f"lapsed {-left:.0f}s ago"
            print(f"{lease.tenant + '/' + lease.trunk:<24} {lease.node:<24} {until}")


def add_commands(commands: Any) -> None:
    """Mount ``trunks status`` on the ``pbx`` command's subparsers."""
    trunks = commands.add_parser("trunks", help="SIP trunk tools")
    trunk_commands = trunks.add_subparsers(dest="trunks_command", required=True)
    status = trunk_commands.add_parser("status", help="each trunk's registration state (from the PBX)")
    status.add_argument("file", help="the PBX configuration file")
    status.set_defaults(func=_status)
