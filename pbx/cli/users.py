"""``pbx user add|list|passwd|remove|token``: the console's users, kept in the PBX's database.

These work with the PBX down (they open its store directly: the SQLite file, or PostgreSQL with `[store] url`,
creating the schema if need be) and while it runs (SQLite's WAL and busy timeout let both write; the console
reads users at each login).
Passwords are read from the terminal (twice) or, without one, from the first line of standard input; they
are stored as scrypt hashes. `pbx user token NAME` prints a new bearer token for scripts once: only its
SHA-256 is kept.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pbx.admin.passwords import hash_password, new_token, password_problem, token_hash
from pbx.config import ConfigError, load_config
from pbx.store import StoreError
from pbx.store import offline as offline_store
from pbx.store.admin import ROLES, AdminUser, ApiToken
from pbx.store.sqlite_admin import insert_token, remove_user, select_user, select_users, upsert_user


def _store(args: argparse.Namespace, work: Callable[[Any], T]) -> T:
    """`work(connection)` in one transaction on the PBX's store (the SQLite file, or `[store] url`)."""
    config = load_config(args.config)
    return offline_store.write(config.store.url, config.data_dir, work)


T = TypeVar("T")


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _fail(message: str, status: int = 1) -> int:
    print(f"pbx user: {message}", file=sys.stderr)
    return status


def _add(args: argparse.Namespace) -> int:
    if args.role not in ROLES:
        return _fail(f"--role must be one of {', '.join(ROLES)}", 2)
    if args.role == "tenant_admin" and not args.tenant:
        return _fail("a tenant_admin needs --tenant", 2)
    if args.role == "admin" and args.tenant:
        return _fail("an admin sees every tenant: no --tenant", 2)
    config = load_config(args.config)
    if args.tenant and config.tenant(args.tenant) is None:
        return _fail(f"no tenant {args.tenant!r} in {args.config}", 2)
    try:
        password = _read_password()
    except ValueError as e:
        return _fail(str(e))
    problem = password_problem(password)
    if problem:
        return _fail(problem)
    user = AdminUser(
        name=args.name,
        password_hash=hash_password(password),
        role=args.role,
        tenant=args.tenant,
        created_at=time.time(),
    )

    def add(conn: Any) -> bool:
        if select_user(conn, args.name) is not None:
            return False
        upsert_user(conn, user)
        return True

    if not _store(args, add):
        return _fail(f"user {args.name!r} exists (pbx user passwd to change the password)")
    print(f"user {args.name} added ({args.role}{' of ' + args.tenant if args.tenant else ''})")
    return 0


def _list(args: argparse.Namespace) -> int:
    users = _store(args, select_users)
    if args.json:
        print(json.dumps([{"name": u.name, "role": u.role, "tenant": u.tenant} for u in users], indent=1))
        return 0
    print(f"{'user':<20} {'role':<13} tenant")
    for u in users:
        print(f"{u.name:<20} {u.role:<13} {u.tenant or '(all)'}")
    print(f"{len(users)} user(s)")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    if _store(args, lambda conn: select_user(conn, args.name)) is None:
        return _fail(f"no user {args.name!r}")
    try:
        password = _read_password()
    except ValueError as e:
        return _fail(str(e))
    problem = password_problem(password)
    if problem:
        return _fail(problem)
    hashed = hash_password(password)

    def change(conn: Any) -> None:
        user = select_user(conn, args.name)
        assert user is not None
        upsert_user(
            conn,
            AdminUser(
                name=user.name,
                password_hash=hashed,
                role=user.role,
                tenant=user.tenant,
                created_at=user.created_at,
            ),
        )

    _store(args, change)
    print(f"password of {args.name} changed")
    return 0


def _remove(args: argparse.Namespace) -> int:
    if not _store(args, lambda conn: remove_user(conn, args.name)):
        return _fail(f"no user {args.name!r}")
    print(f"user {args.name} removed (and its tokens)")
    return 0


def _token(args: argparse.Namespace) -> int:
    token = new_token()

    def create(conn: Any) -> bool:
        if select_user(conn, args.name) is None:
            return False
        insert_token(
            conn,
            ApiToken(token_hash=token_hash(token), user=args.name, label=args.label, created_at=time.time()),
        )
        return True

    if not _store(args, create):
        return _fail(f"no user {args.name!r}")
    print(token)
    return 0


def _guarded(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except ConfigError as e:
            return _fail(f"{args.config}: {e}", 2)
        except (OSError, StoreError) as e:
            return _fail(str(e))

    return run


def add_commands(commands: Any) -> None:
    """Mount ``user`` on the ``pbx`` command's subparsers."""
    user = commands.add_parser("user", help="console users (kept in the PBX's database)")
    sub = user.add_subparsers(dest="user_command", required=True)

    def command(name: str, help: str, fn: Any, *, named: bool = True) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help)
        if named:
            parser.add_argument("name", help="the user's login name")
        parser.add_argument("--config", default="pbx.toml", help="the PBX configuration (default: pbx.toml)")
        parser.set_defaults(func=_guarded(fn))
        return parser

    add = command("add", "add a user (password from the terminal or stdin)", _add)
    add.add_argument("--role", default="admin", help=f"one of {', '.join(ROLES)} (default: admin)")
    add.add_argument("--tenant", default="", help="the tenant of a tenant_admin (or of a restricted viewer)")
    listing = command("list", "list the users", _list, named=False)
    listing.add_argument("--json", action="store_true", help="print JSON")
    command("passwd", "change a user's password", _passwd)
    command("remove", "remove a user and its tokens", _remove)
    token = command("token", "print a new API token for a user (shown once)", _token)
    token.add_argument("--label", default="", help="what the token is for")
