"""A loopback SMTP server for end-to-end tests: `python -m tests.e2e.smtp_server PORT DIR [USER PASSWORD]`.

Twisted's ESMTP server (`twisted.mail.smtp.ESMTP`) on 127.0.0.1:PORT. Every mail it accepts is written to
DIR as `N.eml` (whole: a temporary name, then a rename) and announced on stdout as `received N.eml FROM TO`.
With USER and PASSWORD it offers AUTH (LOGIN, PLAIN) and takes mail only from a client that authenticated.
It prints `ready` once it listens and runs until killed (the test stops it).
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, protocol, reactor
from twisted.mail import smtp
from twisted.mail.imap4 import LOGINCredentials, PLAINCredentials
from zope.interface import implementer

_numbers = itertools.count(1)


@implementer(smtp.IMessage)
class _Mail:
    def __init__(self, directory: Path, origin: str, recipient: str) -> None:
        self._directory, self._origin, self._recipient = directory, origin, recipient
        self._lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self._lines.append(line)

    def eomReceived(self) -> defer.Deferred[bytes]:
        name = f"{next(_numbers)}.eml"
        temporary = self._directory / f".{name}.tmp"
        temporary.write_bytes(b"\n".join(self._lines) + b"\n")
        os.replace(temporary, self._directory / name)
        print(f"received {name} {self._origin} {self._recipient}", flush=True)
        return defer.succeed(b"queued as " + name.encode())

    def connectionLost(self) -> None:
        self._lines = []


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._origin = ""

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: from " + helo[0] + b" by the test server"

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        self._origin = str(origin)
        return origin

    def validateTo(self, user: Any) -> Any:
        origin, recipient = self._origin, str(user.dest)
        return lambda: _Mail(self._directory, origin, recipient)


@implementer(IRealm)
class _Realm:
    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        return smtp.IMessageDelivery, _Delivery(self._directory), lambda: None


class _Factory(protocol.ServerFactory):
    def __init__(self, directory: Path, user: str | None, password: str | None) -> None:
        self._directory = directory
        self._portal = None
        if user is not None and password is not None:
            checker = InMemoryUsernamePasswordDatabaseDontUse(**{user: password.encode()})
            self._portal = Portal(_Realm(directory), [checker])

    def buildProtocol(self, addr: Any) -> smtp.ESMTP:
        server = smtp.ESMTP()
        server.factory = self
        server.host = b"smtp.test"
        if self._portal is not None:
            server.portal = self._portal
            server.challengers = {b"LOGIN": LOGINCredentials, b"PLAIN": PLAINCredentials}
        else:
            server.delivery = _Delivery(self._directory)
        return server


def main() -> None:
    port, directory = int(sys.argv[1]), Path(sys.argv[2])
    user, password = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else (None, None)
    directory.mkdir(parents=True, exist_ok=True)
    reactor.listenTCP(port, _Factory(directory, user, password), interface="127.0.0.1")  # type: ignore[attr-defined]
    print("ready", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
