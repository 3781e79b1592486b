"""A throw-away PostgreSQL server for the tests: initdb in a temporary directory, `postgres` on a free
loopback port, as the `postgres` system user when the tests run as root (PostgreSQL refuses to run as root).

One server per test process, started on first use and stopped at exit; each test gets a schema of its own
(`PostgresServer.url(schema)` sets the search path), so tests do not see each other's tables and no database
has to be created per test. Without PostgreSQL's binaries the tests that need it are skipped with the reason;
CI installs Debian's `postgresql` (scripts/test).
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_server: PostgresServer | None = None
_counter = itertools.count()


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable() -> str | None:
    """Why no server can be started here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    if binaries() is None:
        return "PostgreSQL is not installed (Debian: postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A PostgreSQL server in `directory`, trusting local connections, listening on 127.0.0.1:`port`."""

    def __init__(self) -> None:
        bin_dir = binaries()
        assert bin_dir is not None
        self.directory = Path(tempfile.mkdtemp(prefix="pbx-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(self.data), "-U", "pbx", "-A", "trust", "--no-sync",
             "-E", "UTF8", "--locale=C"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self.log = self.directory / "postgres.log"
        self.process = subprocess.Popen(
            [*as_user, str(bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.directory), "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),  # noqa: SIM115 - the server's own log
        )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                psycopg.connect(self.base_url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # polling the server's readiness (no event to wait on from here)

    def base_url(self) -> str:
        return f"postgresql://pbx@127.0.0.1:{self.port}/postgres"

    def url(self, schema: str | None = None) -> str:
        """A URL whose connections work in `schema` (created now); a new schema when None."""
        import psycopg

        name = schema or f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.base_url(), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{name}"')
        return f"{self.base_url()}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def server() -> PostgresServer:
    """The process's server, started on first use."""
    global _server
    if _server is None:
        _server = PostgresServer()
        atexit.register(_server.stop)
    return _server
