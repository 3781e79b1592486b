"""Kamailio (Debian `kamailio` 5.6) as a carrier in end-to-end tests: a registrar with digest auth, loopback.

`Kamailio(directory, users)` writes a minimal `kamailio.cfg` and a db_text database (the `version` and
`subscriber` tables; the password checked with `calculate_ha1`, the H(A1) columns filled too) under
`directory`, and runs `kamailio -DD -E` in the foreground (its own runtime directory, pid file and control
socket, a free UDP port on 127.0.0.1; no root needed). The request route:

- `REGISTER`: `www_authenticate(REALM, "subscriber")`, else `www_challenge(REALM, 1)` (a 401 with
  qop=auth, MD5); then `save("location")` in memory (usrloc `db_mode` 0). Every REGISTER is logged
  (`KAMAILIO REGISTER from=... auth=...`).
- `OPTIONS`: 200.
- whatever `route` adds (Kamailio script, e.g. the relay of INVITEs to a SIPp UAS for call tests), inserted
  before the final `404`; `modules` loads further modules for it.

`bindings()` reads the location table through `kamcmd ul.dump` (AoR -> Contacts). Use it as a context
manager, or call `stop()`; the process is ended by its own PID.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.e2e.harness import free_port

MODULES_DIR = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
BASE_MODULES = (
    "tm",
    "sl",
    "pv",
    "xlog",
    "maxfwd",
    "textops",
    "siputils",
    "usrloc",
    "registrar",
    "db_text",
    "auth",
    "auth_db",
    "ctl",
    "kex",
)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def kamailio_binary(name: str = "kamailio") -> str:
    """The Kamailio program (`kamailio`, `kamcmd`): on PATH, else in /usr/sbin (a user's PATH may lack it)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError(f"{name} (Debian package kamailio)")
    return found


def modules_dir() -> str:
    """Where the Kamailio modules are (multiarch path on Debian)."""
    for candidate in (MODULES_DIR, "/usr/lib/kamailio/modules/", "/usr/local/lib64/kamailio/modules/"):
        if Path(candidate, "tm.so").exists():
            return candidate
    return MODULES_DIR


class Kamailio:
    """One Kamailio process acting as a carrier's registrar (see the module docstring).

    Args:
        directory: where its config, database, runtime files and log go.
        users: (username, password) pairs of the subscriber table.
        realm: the digest realm of its challenges.
        port: its UDP port on 127.0.0.1 (a free one by default).
        route: more of the request route (Kamailio script), run for requests other than REGISTER/OPTIONS.
        modules: more modules to load for `route`.
    """

    def __init__(
        self,
        directory: Path,
        users: Sequence[tuple[str, str]] = (("1555", "secret"),),
        *,
        realm: str = "carrier.test",
        port: int = 0,
        route: str = "",
        modules: Sequence[str] = (),
    ) -> None:
        self.directory = directory / "kamailio"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(tcp=False)
        self.realm = realm
        self.ctl = self.directory / "kamailio_ctl"
        self.log_file = self.directory / "kamailio.log"
        db = self.directory / "db"
        db.mkdir(exist_ok=True)
        (db / "version").write_text(
            "id(int,auto) table_name(string) table_version(int) \n0:version:1\n0:subscriber:7\n0:location:9\n"
        )
        rows = "".join(
            f"{i}:{user}:{realm}:{password}:{_md5(f'{user}:{realm}:{password}')}:"
            f"{_md5(f'{user}@{realm}:{realm}:{password}')}\n"
            for i, (user, password) in enumerate(users, 1)
        )
        (db / "subscriber").write_text(
            "id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string) \n" + rows
        )
        self.config = self.directory / "kamailio.cfg"
        self.config.write_text(self._config(db, route, [*BASE_MODULES, *modules]))
        command = [
            kamailio_binary(),
            "-f", str(self.config),
            "-DD", "-E",
            "-Y", str(self.directory),
            "-P", str(self.directory / "kamailio.pid"),
            "-m", "64", "-M", "8",
        ]  # fmt: skip
        self._log = open(self.log_file, "wb")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(
            command, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    def _config(self, db: Path, route: str, modules: Sequence[str]) -> str:
        loads = "\n".join(f'loadmodule "{name}.so"' for name in dict.fromkeys(modules))
        return f"""#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{self.port}
alias="127.0.0.1:{self.port}"
alias="{self.realm}"

mpath="{modules_dir()}"
{loads}

modparam("usrloc", "db_mode", 0)
modparam("auth_db", "db_url", "text://{db}")
modparam("auth_db", "calculate_ha1", 1)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "use_domain", 0)
modparam("auth_db", "load_credentials", "")
modparam("ctl", "binrpc", "unix:{self.ctl}")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("REGISTER")) {{
        xlog("L_NOTICE", "KAMAILIO REGISTER from=$fu contact=$ct expires=$hdr(Expires) auth=$au\\n");
        if (!www_authenticate("{self.realm}", "subscriber")) {{
            www_challenge("{self.realm}", "1");
            exit;
        }}
        consume_credentials();
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (is_method("OPTIONS")) {{
        sl_send_reply("200", "OK");
        exit;
    }}
{route}
    sl_send_reply("404", "Not Here");
    exit;
}}
"""

    def wait_listening(self, timeout: float = 15.0) -> Kamailio:
        """Wait until Kamailio has bound its UDP port and its control socket (started all processes)."""
        wanted = {f"0100007F:{self.port:04X}"}
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):
            with open("/proc/net/udp") as table:
                bound = any(line.split()[1] in wanted for line in table.readlines()[1:])
            if bound and self.ctl.exists():
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"kamailio exited ({self.proc.returncode}) before listening\n{self}")
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling /proc/net/udp for an event: the bind
        raise AssertionError(f"kamailio is not listening on {self.port} after {timeout} s\n{self}")

    def kamcmd(self, *args: str, timeout: float = 10.0) -> str:
        """Run a `kamcmd` RPC on this instance's control socket; its output."""
        result = subprocess.run(
            [kamailio_binary("kamcmd"), "-s", f"unixs:{self.ctl}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"kamcmd {' '.join(args)} failed: {result.stdout}{result.stderr}\n{self}")
        return result.stdout

    def bindings(self) -> dict[str, list[str]]:
        """The location table: AoR -> its Contact URIs (from `kamcmd ul.dump`)."""
        found: dict[str, list[str]] = {}
        aor = None
        for line in self.kamcmd("ul.dump").splitlines():
            match = re.match(r"\s*AoR:\s*(\S+)", line)
            if match:
                aor = match.group(1)
                found.setdefault(aor, [])
                continue
            match = re.match(r"\s*Address:\s*(\S+)", line)
            if match and aor is not None:
                found[aor].append(match.group(1))
        return found

    def wait_binding(self, aor: str, timeout: float = 15.0) -> list[str]:
        """Wait until `aor` has a binding; its Contacts."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.2) + 1):
            contacts = self.bindings().get(aor)
            if contacts:
                return contacts
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)  # polling the location table for an event: the REGISTER
        raise AssertionError(f"no binding for {aor} after {timeout} s: {self.bindings()}\n{self}")

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> Kamailio:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __str__(self) -> str:
        return f"== kamailio (exit {self.proc.poll()}) log tail:\n{self.log[-4000:]}"
