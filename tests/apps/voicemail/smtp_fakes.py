"""An in-memory SMTP world for the mailer's unit tests: Twisted's own ESMTP server (`twisted.mail.smtp.ESMTP`)
joined to the mailer's client by `twisted.test.iosim` pumps on a `task.Clock`, a connector that can refuse,
and fake mailboxes and store that keep messages in dicts."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field, replace
from email.message import Message
from pathlib import Path
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.mail import smtp
from twisted.mail.imap4 import LOGINCredentials, PLAINCredentials
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect
from zope.interface import implementer

from pbx.store.records import VoicemailMessage


@implementer(smtp.IMessage)
class _Incoming:
    def __init__(self, inbox: Inbox, recipient: str) -> None:
        self._inbox, self._recipient, self._lines = inbox, recipient, []

    def lineReceived(self, line: bytes) -> None:
        self._lines.append(line)

    def eomReceived(self) -> Deferred[bytes]:
        self._inbox.mails.append(
            (self._recipient, email.message_from_bytes(b"\n".join(self._lines), policy=email.policy.default))
        )
        return succeed(b"queued")

    def connectionLost(self) -> None:
        pass


@implementer(smtp.IMessageDelivery)
class Inbox:
    """What the fake server received: (recipient, parsed mail) pairs."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, Message]] = []
        self.senders: list[str] = []

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: from test"

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        self.senders.append(str(origin))
        return origin

    def validateTo(self, user: Any) -> Any:
        return lambda: _Incoming(self, str(user.dest))


@implementer(IRealm)
class _Realm:
    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        return smtp.IMessageDelivery, self._inbox, lambda: None


@dataclass
class SmtpWorld:
    """The fake network: `connect` is the mailer's connector; `up` says whether connections are accepted."""

    clock: Clock
    inbox: Inbox = field(default_factory=Inbox)
    up: bool = True
    starttls: bool = False  # whether the server offers STARTTLS
    certificate_name: str = "mail.test"  # the name in the server's (pretend) certificate
    users: dict[str, str] = field(default_factory=dict)  # AUTH accounts; none: no AUTH offered
    connections: int = 0
    pumps: list[IOPump] = field(default_factory=list)
    transcript: list[bytes] = field(default_factory=list)

    def connect(self, host: str, port: int, factory: Any, timeout: float) -> Any:
        self.connections += 1
        connector = _Connector()
        if not self.up:
            factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
            return connector
        client = factory.buildProtocol(None)
        server = smtp.ESMTP(contextFactory=FakeTls(self.certificate_name) if self.starttls else None)
        server.host = b"mail.test"
        server.timeout = None
        server.callLater = self.clock.callLater
        if self.users:
            checker = InMemoryUsernamePasswordDatabaseDontUse(
                **{user: password.encode() for user, password in self.users.items()}
            )
            server.portal = Portal(_Realm(self.inbox), [checker])
            server.challengers = {b"LOGIN": LOGINCredentials, b"PLAIN": PLAINCredentials}
        else:
            server.delivery = self.inbox
        client_addr, server_addr = (
            IPv4Address("TCP", "127.0.0.1", 40000),
            IPv4Address("TCP", "127.0.0.1", port),
        )
        client_io = FakeTransport(client, False, hostAddress=client_addr, peerAddress=server_addr)
        server_io = FakeTransport(server, True, hostAddress=server_addr, peerAddress=client_addr)
        _record(client_io, self.transcript)
        _report_loss(client, factory, connector)
        self.pumps.append(connect(server, server_io, client, client_io, greet=False, clock=self.clock))
        return connector

    def run(self) -> None:
        """Move bytes until every connection is quiet (bounded)."""
        for _ in range(1000):
            if not any([pump.pump() for pump in list(self.pumps)]):
                self.pumps = [p for p in self.pumps if not p.clientIO.disconnected]
                return
        raise AssertionError("the SMTP exchange does not end")


class FakeTls:
    """Pretend TLS options for `twisted.test.iosim`: a handshake succeeds when the client's expected name is
    the server's certificate name (`iosimVerify` is called on both sides with the other's options)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.handshakes = 0

    def iosimVerify(self, other: FakeTls) -> bool:
        self.handshakes += 1
        return self.name == other.name


def _report_loss(client: Any, factory: Any, connector: _Connector) -> None:
    """Tell the factory when the client's connection ends, as a reactor's TCP connector does."""
    lost = client.connectionLost

    def losing(reason: Failure) -> None:
        lost(reason)
        factory.clientConnectionLost(connector, reason)

    client.connectionLost = losing


def _record(transport: FakeTransport, transcript: list[bytes]) -> None:
    write = transport.write

    def recording(data: bytes) -> None:
        transcript.append(data)
        write(data)

    transport.write = recording  # type: ignore[method-assign]


class _Connector:
    def __init__(self) -> None:
        self.disconnected = False

    def disconnect(self) -> None:
        self.disconnected = True

    def connect(self) -> None:
        raise AssertionError("the mailer retries by itself, never through the factory")


@dataclass(frozen=True)
class Box:
    """A mailbox's settings (the attributes of `pbx.apps.voicemail.boxes.Mailbox`)."""

    number: str
    email: str = ""
    email_attach: bool = True
    delete_after_email: bool = False
    name: str = ""
    phones: tuple[str, ...] = ()
    max_messages: int = 100
    max_message_seconds: float = 180.0


class FakeVoicemail:
    """The mailboxes as the mailer sees them (`MailerBoxes`): `boxes` by (tenant, number), messages by
    (tenant, number, id), audio files under `root`. `deleted` lists the messages removed through `delete`
    (what tells MWI), `updates` those marked emailed."""

    def __init__(self, root: Path, boxes: list[Box], tenant: str = "default") -> None:
        self.root = root
        self.boxes = {(tenant, box.number): box for box in boxes}
        self.entries: dict[tuple[str, str, str], VoicemailMessage] = {}
        self.deleted: list[VoicemailMessage] = []
        self.updates: list[VoicemailMessage] = []

    def add(self, message: VoicemailMessage, audio: bytes = b"RIFF....WAVEfmt ") -> VoicemailMessage:
        path = self.root / message.audio
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(audio)
        self.entries[(message.tenant, message.mailbox, message.id)] = message
        return message

    # IMailboxes (the part the mailer uses)
    def mailbox(self, tenant: str, number: str) -> Box | None:
        return self.boxes.get((tenant, number))

    def messages(self, tenant: str, number: str) -> Deferred[list[VoicemailMessage]]:
        return succeed([m for (t, n, _), m in self.entries.items() if (t, n) == (tenant, number)])

    def audio_path(self, message: VoicemailMessage) -> Path:
        return self.root / message.audio

    def delete(self, message: VoicemailMessage) -> Deferred[None]:
        self.entries.pop((message.tenant, message.mailbox, message.id), None)
        (self.root / message.audio).unlink(missing_ok=True)
        self.deleted.append(message)
        return succeed(None)

    def mark_emailed(self, message: VoicemailMessage) -> Deferred[VoicemailMessage]:
        mailed = replace(message, emailed=True)
        key = (message.tenant, message.mailbox, message.id)
        if key in self.entries:
            self.entries[key] = mailed
        self.updates.append(mailed)
        return succeed(mailed)

    def unsent(self) -> Deferred[list[tuple[VoicemailMessage, Box]]]:
        found = []
        for message in self.entries.values():
            box = self.mailbox(message.tenant, message.mailbox)
            if box is not None and box.email and not message.emailed:
                found.append((message, box))
        return succeed(found)


def voicemail_message(id: str = "m1", mailbox: str = "1002", **kwargs: Any) -> VoicemailMessage:
    values: dict[str, Any] = {
        "tenant": "default",
        "mailbox": mailbox,
        "id": id,
        "caller_number": "1001",
        "caller_name": "Alice",
        "received_at": 1_765_000_000.0,
        "duration": 7.4,
        "call_id": "call-1",
        "audio": f"voicemail/default/{mailbox}/{id}.wav",
    }
    values.update(kwargs)
    return VoicemailMessage(**values)
