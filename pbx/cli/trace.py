"""``pbx trace [CALL-ID]``: a call's ladder from the running PBX, or the list of the traces it keeps.

It fetches `GET /api/v1/calls/CALL-ID/trace` (or `GET /api/v1/traces` without a Call-ID) over HTTP from the
PBX (`pbx.admin.trace_api`: the console's API, or `[metrics] listen`'s own listener) and prints it as a ladder
(`pbx.cli.ladder`); `--json` prints the JSON as received. `--url` and `--token` default to `[metrics] listen`
and `[metrics] token` of the config file (`--config`, default pbx.toml when it exists), else
http://127.0.0.1:9464. Exit status 0; 1 when the PBX cannot be reached or answers with an error (the
reason is printed); 2 when the call is unknown (never seen, or its trace forgotten).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pbx.cli.ladder import render_ladder, render_list
from pbx.config import ConfigError, load_config

DEFAULT_URL = "http://127.0.0.1:9464"


def _defaults(args: argparse.Namespace) -> tuple[str, str]:
    """(url, token) from the arguments, else from the config's [metrics], else the defaults."""
    url, token = args.url, args.token
    path = Path(args.config)
    if (url is None or token is None) and (args.config != "pbx.toml" or path.exists()):
        config = load_config(path)
        if url is None and config.metrics.listen:
            url = f"http://{config.metrics.listen}"
        if token is None:
            token = config.metrics.token
    return (url or DEFAULT_URL).rstrip("/"), token or ""


def fetch(url: str, token: str, timeout: float = 10.0) -> tuple[int, Any]:
    """(HTTP status, decoded JSON) of a GET; raises OSError when the PBX cannot be reached."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read(32 << 20))
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read(65536))
        except ValueError:
            body = {"reason": e.reason}
        return e.code, body


def _trace(args: argparse.Namespace) -> int:
    try:
        base, token = _defaults(args)
    except ConfigError as e:
        print(f"{args.config}: {e}", file=sys.stderr)
        return 1
    if args.call_id:
        url = f"{base}/api/v1/calls/{quote(args.call_id, safe='')}/trace"
    else:
        url = f"{base}/api/v1/traces?limit={args.limit}" + ("&failed=1" if args.failed else "")
    try:
        status, body = fetch(url, token)
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        print(
            f"pbx trace: cannot reach the PBX at {base}: {reason} (is it running, with [metrics] listen?)",
            file=sys.stderr,
        )
        return 1
    if status == 404 and args.call_id:
        print(f"pbx trace: {body.get('reason', 'unknown call')}", file=sys.stderr)
        return 2
    if status != 200:
        print(f"pbx trace: the PBX answered {status}: {body.get('reason', '')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
    elif args.call_id:
        sys.stdout.write(render_ladder(body, width=args.width, headers=args.headers))
    else:
        sys.stdout.write(render_list(body.get("traces", [])))
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`pbx trace`."""
    trace = subparsers.add_parser("trace", help="print a call's ladder (or list the kept traces)")
    trace.add_argument("call_id", nargs="?", metavar="CALL-ID", help="the caller's Call-ID (or a leg's)")
    trace.add_argument("--url", help=f"the PBX's API (default: [metrics] listen, else {DEFAULT_URL})")
    trace.add_argument("--token", help="the bearer token (default: [metrics] token)")
    trace.add_argument("--config", default="pbx.toml", help="the PBX configuration (default: pbx.toml)")
    trace.add_argument("--json", action="store_true", help="print the JSON as received")
    trace.add_argument("--headers", action="store_true", help="show the key headers and bodies")
    trace.add_argument("--width", type=int, default=20, help="the width of one party's column")
    trace.add_argument("--limit", type=int, default=50, help="how many traces to list")
    trace.add_argument("--failed", action="store_true", help="list only failed calls")
    trace.set_defaults(func=_trace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pbx")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
