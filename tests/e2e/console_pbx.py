"""A live PBX with its console on a free loopback port, for the console's end-to-end tests (API and browser):
an admin user and an API token made with `pbx user add` / `pbx user token` before it starts, a mailbox for
1002 with a seeded message, and a small HTTP client (urllib, its own cookie jar)."""

from __future__ import annotations

import http.cookiejar
import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.harness import PbxProcess, executable, free_port, write_config
from tests.e2e.test_calls_sipp import DEMO_DIALPLAN, CallPbx, rtp_range
from tests.e2e.voicemail_seed import seed_message

ADMIN, ADMIN_PASSWORD = "root", "root-password-1"


def pbx_cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [executable("pbx"), *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class ConsolePbx:
    pbx: CallPbx
    url: str
    token: str
    message_id: str

    @property
    def config(self) -> Path:
        return self.pbx.ports["path"]


def launch_console_pbx(directory: Path) -> ConsolePbx:
    """A PBX as `launch_pbx` starts one (demo extensions 1000-1003, the demo dialplan, its own RTP range, no
    OPTIONS pings), plus `[admin] listen` on a free port, a user and a token made with the `pbx` command
    before the start, and a message seeded in mailbox 1002."""
    port = free_port(udp=False)
    directory.mkdir(parents=True)
    low, high = rtp_range()
    extra = (
        f"[media]\nrtp_port_min = {low}\nrtp_port_max = {high}\n\n"
        '[registrar]\nkeepalive = "crlf"\n\n'
        f'[admin]\nlisten = "127.0.0.1:{port}"\n\n'
        '[tenants.default.mailboxes.1002]\npin = "1234"\n\n'
    )
    ports = write_config(directory, ipv6=False, extra=extra)
    message, _ = seed_message(directory / "data", "default", "1002", caller_number="1001", seconds=1.0)
    added = pbx_cli(ports["path"], "user", "add", ADMIN, stdin=ADMIN_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    token = pbx_cli(ports["path"], "user", "token", ADMIN, "--label", "e2e")
    assert token.returncode == 0, token.stderr
    pbx = CallPbx(PbxProcess(ports["path"]), ports, directory, (low, high))
    pbx.write_dialplan(DEMO_DIALPLAN)
    try:
        pbx.process.wait_ready(ports["listeners"])
        pbx.wait_for(r"Location service loaded \d+ bindings")
        pbx.wait_for(r"Console on http://127\.0\.0\.1:")
    except BaseException:
        pbx.process.stop()
        raise
    return ConsolePbx(pbx, f"http://127.0.0.1:{port}", token.stdout.strip(), message.id)


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    """A browser-like client: cookies kept, redirects not followed, every answer returned (no raise)."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base
        self.token = token
        self.csrf: str | None = None
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def call(self, method: str, path: str, body: Any = None, *, csrf: bool = True) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            request.add_header("X-CSRF-Token", self.csrf)
        try:
            with self.opener.open(request, timeout=15) as response:
                return Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.headers, e.read())

    def login(self, name: str = ADMIN, password: str = ADMIN_PASSWORD) -> Answer:
        answer = self.call("POST", "/api/v1/session", {"username": name, "password": password})
        if answer.status == 200:
            self.csrf = answer.json["csrf"]
        return answer
