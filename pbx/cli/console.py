"""``pbx status``, ``pbx calls``, ``pbx registrations``: the running PBX seen through its console API.

The console's URL comes from ``--url``, else from the config's ``[admin]`` (`url`, or `listen`); the token
from ``--token``, else the ``PBX_TOKEN`` environment variable (create one with ``pbx user token NAME``).
Tables by default, ``--json`` for scripts; errors name the URL and the API's reason; exit 1 on an API
error, 2 on a usage or config error, 3 when the PBX cannot be reached. ``pbx registrations FILE`` without a
URL or token reads the PBX's database instead (works with the PBX down).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from pbx.config import ConfigError, load_config


class ApiFailure(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    """A small synchronous client of the console's JSON API."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0, insecure: bool = False) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.context = ssl._create_unverified_context() if insecure else None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                reason = json.loads(e.read()).get("reason", e.reason)
            except ValueError:
                reason = e.reason
            raise ApiFailure(f"{method} {path}: {e.code} {reason}", 1) from None
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", e)
            raise ApiFailure(f"cannot reach the PBX's console at {self.url}: {why}", 3) from None

    def tenants(self, only: str | None) -> list[str]:
        if only:
            return [only]
        return [t["name"] for t in self.call("GET", "/api/v1/tenants")]


def add_api_options(parser: argparse.ArgumentParser, *, config: bool = True) -> None:
    if config:
        parser.add_argument("--config", default="pbx.toml", help="the PBX configuration (default: pbx.toml)")
    parser.add_argument("--url", help="the console's URL (default: from the config's [admin])")
    parser.add_argument("--token", help="an API token (default: $PBX_TOKEN; pbx user token NAME makes one)")
    parser.add_argument("--insecure", action="store_true", help="do not verify the console's TLS certificate")
    parser.add_argument("--json", action="store_true", help="print JSON")


def wants_api(args: argparse.Namespace) -> bool:
    return bool(args.url or args.token or os.environ.get("PBX_TOKEN"))


def client(args: argparse.Namespace, config_file: str | None) -> ApiClient:
    url = args.url
    if not url:
        try:
            config = load_config(config_file or "pbx.toml")
        except ConfigError as e:
            raise ApiFailure(f"{config_file}: {e} (or give --url)", 2) from None
        url = config.admin.base_url
        if not url:
            raise ApiFailure("the console is off ([admin] listen is not set): give --url", 2)
    token = args.token or os.environ.get("PBX_TOKEN", "")
    if not token:
        raise ApiFailure("no API token: give --token or set PBX_TOKEN (pbx user token NAME makes one)", 2)
    return ApiClient(url, token, insecure=args.insecure)


def run(fn: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except ApiFailure as e:
            print(f"pbx: {e}", file=sys.stderr)
            return e.status

    return wrapped


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())


def _status(args: argparse.Namespace) -> int:
    status = client(args, args.config).call("GET", "/api/v1/status")
    if args.json:
        print(json.dumps(status, indent=1, sort_keys=True))
        return 0
    print(f"PBX {status['version']}, up {status['uptime']:.0f} s")
    print(f"  tenants:       {', '.join(status['tenants'])}")
    print(f"  registrations: {status['registrations']}")
    print(f"  calls:         {status['calls']} ({status['answered_calls']} answered)")
    print(f"  trunks:        {status['trunks_up']} of {status['trunks']} up")
    print(f"  dialplan errors: {status['dialplan_errors']}")
    return 0


def _calls(args: argparse.Namespace) -> int:
    api = client(args, args.config)
    if args.hangup:
        if not args.tenant:
            raise ApiFailure("--hangup needs --tenant", 2)
        api.call("DELETE", f"/api/v1/tenants/{_q(args.tenant)}/calls/{_q(args.hangup)}")
        print(f"call {args.hangup} hung up")
        return 0
    calls = [c for t in api.tenants(args.tenant) for c in api.call("GET", f"/api/v1/tenants/{_q(t)}/calls")]
    if args.json:
        print(json.dumps(calls, indent=1, sort_keys=True))
        return 0
    rows = [
        [c["tenant"], c["caller"], c["dialed"], c["state"], f"{c['duration']:.0f}s", c["codec"], c["id"]]
        for c in calls
    ]
    table(rows, ["tenant", "caller", "dialed", "state", "duration", "codec", "call-id"])
    print(f"{len(calls)} call(s)")
    return 0


def registrations_via_api(args: argparse.Namespace) -> int:
    api = client(args, args.file)
    rows = [
        {**r, "tenant": t}
        for t in api.tenants(args.tenant)
        for r in api.call("GET", f"/api/v1/tenants/{_q(t)}/registrations")
    ]
    if args.json:
        print(json.dumps(rows, indent=1, sort_keys=True))
        return 0
    table(
        [
            [
                r["tenant"],
                r["extension"],
                f"{r['expires_in']}s",
                r["transport"],
                r["source"],
                r["contact"],
                r["user_agent"],
            ]
            for r in rows
        ],
        ["tenant", "extension", "expires", "transport", "via", "contact", "user-agent"],
    )
    print(f"{len(rows)} registration(s)")
    return 0


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def add_commands(commands: Any) -> None:
    """Mount ``status`` and ``calls`` on the ``pbx`` command's subparsers."""
    status = commands.add_parser("status", help="the running PBX's figures (through the console API)")
    add_api_options(status)
    status.set_defaults(func=run(_status))
    calls = commands.add_parser("calls", help="the calls in progress (through the console API)")
    add_api_options(calls)
    calls.add_argument("--tenant", help="only this tenant")
    calls.add_argument("--hangup", metavar="CALL_ID", help="hang this call up (with --tenant)")
    calls.set_defaults(func=run(_calls))


def since(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds))
