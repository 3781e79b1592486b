"""Voicemail to e-mail: each new message of a box with an `email` is mailed through one SMTP server (RFC 5321)
with `twisted.mail.smtp` (ESMTP, STARTTLS of RFC 3207, AUTH of RFC 4954), the WAV attached.

A failed delivery never loses anything: the message stays in its box, the failure is one log line (never the
password), and the mail is tried again after a back-off that starts at `retry_min` and doubles up to
`retry_max`, for as long as the message is in its box. Once the server took the mail, the message is marked
`emailed` (`mark_emailed`: the index remembers it across restarts); a box with `delete_after_email` then loses
the message through `delete` (so the phones' lights follow). At start-up every message not yet mailed whose
box has an address (`unsent`) is queued again.

One delivery runs at a time (one connection to the one server); the others wait in a FIFO queue. Time comes
from an injected clock and connections from an injected `connect` (the composition root passes the reactor's
`connectTCP`; unit tests pass an in-memory server), so this module never names the reactor. It knows nothing
of the config nor of the store: the SMTP settings arrive as an object with the attributes of `SmtpSettings`,
the boxes as a `MailerBoxes` (`pbx.apps.voicemail.mailboxes.Mailboxes` is one; the mailer subscribes
`message_added` to its `listeners`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger
from twisted.mail.smtp import ESMTPSenderFactory, SMTPClientError, SMTPConnectError
from twisted.python.failure import Failure

from pbx.apps.voicemail.mail_message import build_mail, clean, domain_of, mail_bytes
from pbx.store.records import VoicemailMessage

__all__ = ["Connect", "MailedBox", "MailerBoxes", "SmtpSettings", "VoicemailMailer"]

STARTTLS_MODES: tuple[str, ...] = ("required", "optional", "off")

Connect = Callable[[str, int, ClientFactory, float], Any]
"""`connect(host, port, factory, timeout)`: open a TCP connection for `factory` and return its connector (an
`IConnector`: its `disconnect()` abandons a pending attempt); a refused or timed-out connection is reported to
`factory.clientConnectionFailed`, as `IReactorTCP.connectTCP` does."""

TlsOptions = Callable[[str], Any]
"""`tls_options(hostname)`: the TLS client options for STARTTLS (default `ssl.optionsForClientTLS`, which
checks the server's certificate against the platform's trust roots and the name)."""


class SmtpSettings(Protocol):
    """The SMTP server's settings as the mailer reads them (`pbx.config.SmtpConfig` has these attributes)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def starttls(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def timeout(self) -> float: ...


class MailedBox(Protocol):
    """A box's settings as the mailer reads them (`pbx.config.Mailbox` has these attributes)."""

    @property
    def number(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def email_attach(self) -> bool: ...
    @property
    def delete_after_email(self) -> bool: ...


class MailerBoxes(Protocol):
    """What the mailer needs of the mailboxes (`pbx.apps.voicemail.mailboxes.Mailboxes` provides it)."""

    def mailbox(self, tenant: str, number: str) -> MailedBox | None:
        """The box's settings, or None when the tenant has no such box."""

    def messages(self, tenant: str, number: str) -> Deferred[list[VoicemailMessage]]:
        """The box's messages (to check that a message is still there before mailing it)."""

    def audio_path(self, message: VoicemailMessage) -> Path:
        """The message's WAV."""

    def mark_emailed(self, message: VoicemailMessage) -> Deferred[VoicemailMessage]:
        """Remember durably that the message was handed to the SMTP server."""

    def delete(self, message: VoicemailMessage) -> Deferred[None]:
        """Remove the message (entry and audio); tells MWI."""

    def unsent(self) -> Deferred[Any]:
        """Fires with (message, box) pairs: the messages of boxes with an address not mailed yet."""


class TooSlow(Exception):
    """A delivery attempt took longer than the SMTP settings' `timeout`."""


def default_tls_options(hostname: str) -> Any:
    from twisted.internet.ssl import optionsForClientTLS

    return optionsForClientTLS(hostname)


class _SenderFactory(ESMTPSenderFactory):
    """Twisted's sender factory whose protocols time out on the injected clock (not the global reactor)."""

    def __init__(self, clock: IReactorTime, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.callLater = self._clock.callLater
        return protocol


Key = tuple[str, str, str]
"""(tenant, mailbox, message id)."""


@dataclass(slots=True)
class _Job:
    """A message waiting to be mailed, with its back-off."""

    key: Key
    delay: float
    attempts: int = 0
    timer: IDelayedCall | None = field(default=None, repr=False)


class VoicemailMailer:
    """Mails new voicemail messages, one at a time, retrying with back-off until the server takes them.

    Args:
        mailboxes: The boxes: their settings (`email`, `email_attach`, `delete_after_email`), messages,
            audio, what was mailed, and deletion (which tells MWI).
        smtp: The server and how to talk to it (`starttls`: one of "required", "optional", "off").
        sender: The From address.
        retry_min: Seconds before the first retry of a message.
        retry_max: The longest wait between two tries of a message (the wait doubles up to it).
        clock: Time for back-off and the SMTP client's timeouts.
        connect: How a TCP connection is opened (see `Connect`).
        tls_options: The TLS options for STARTTLS (see `TlsOptions`).
    """

    _log = Logger()

    def __init__(
        self,
        mailboxes: MailerBoxes,
        smtp: SmtpSettings,
        *,
        sender: str,
        retry_min: float,
        retry_max: float,
        clock: IReactorTime,
        connect: Connect,
        tls_options: TlsOptions = default_tls_options,
    ) -> None:
        if smtp.starttls not in STARTTLS_MODES:
            raise ValueError(f"starttls must be one of {STARTTLS_MODES}, not {smtp.starttls!r}")
        self._mailboxes = mailboxes
        self._smtp = smtp
        self._sender = sender
        self._retry_min = max(0.0, retry_min)
        self._retry_max = max(self._retry_min, retry_max)
        self._clock = clock
        self._connect = connect
        self._tls_options = tls_options
        self._jobs: dict[Key, _Job] = {}
        self._ready: deque[Key] = deque()
        self._busy: Key | None = None
        self._sending: Deferred[Any] | None = None
        self._stopped = False
        self._pumping = False

    # -- what the composition root and the mailboxes call

    def start(self) -> Deferred[None]:
        """Queue every message not yet mailed whose box has an address (after a restart); fires once queued
        (never fails: a store error is logged)."""
        d = self._mailboxes.unsent()

        def queue(unsent: list[tuple[VoicemailMessage, MailedBox]]) -> None:
            for message, _ in unsent:
                self.message_added(message)

        def failed(failure: Failure) -> None:
            self._log.error(
                "Voicemail e-mail: cannot read the messages to mail: {e}", e=failure.getErrorMessage()
            )

        return d.addCallbacks(queue, failed)

    def message_added(self, message: VoicemailMessage, box: object = None) -> None:
        """A new message is in its box: mail it when its box has an address (a no-op otherwise, or when it was
        mailed already or is queued). The signature of a `Mailboxes.listeners` hook; `box` is not used (the
        box's settings are read again at each attempt)."""
        if self._stopped or message.emailed:
            return
        key = (message.tenant, message.mailbox, message.id)
        if key in self._jobs or not self._address(message.tenant, message.mailbox):
            return
        self._jobs[key] = _Job(key, self._retry_min)
        self._ready.append(key)
        self._pump()

    def stop(self) -> None:
        """Forget the queue (the messages stay unmailed in the store: the next start queues them again),
        cancel the retry timers and abandon a delivery under way."""
        self._stopped = True
        for job in self._jobs.values():
            if job.timer is not None and job.timer.active():
                job.timer.cancel()
        self._jobs.clear()
        self._ready.clear()
        if self._sending is not None:
            sending, self._sending = self._sending, None
            sending.cancel()

    @property
    def pending(self) -> list[Key]:
        """The messages waiting to be mailed (queued, being sent or waiting for a retry), in arrival order."""
        return list(self._jobs)

    # -- the queue

    def _address(self, tenant: str, number: str) -> str:
        box = self._mailboxes.mailbox(tenant, number)
        return box.email if box is not None else ""

    def _pump(self) -> None:
        if self._pumping:  # an attempt that ended at once: the loop below goes on (no recursion per message)
            return
        self._pumping = True
        try:
            while self._busy is None and self._ready and not self._stopped:
                key = self._ready.popleft()
                job = self._jobs.get(key)
                if job is not None:
                    self._busy = key
                    self._attempt(job)
        finally:
            self._pumping = False

    def _done(self, job: _Job) -> None:
        self._jobs.pop(job.key, None)
        self._idle(job)

    def _idle(self, job: _Job) -> None:
        if self._busy == job.key:
            self._busy = None
            self._sending = None
        self._pump()

    def _retry_later(self, job: _Job) -> None:
        job.timer = self._clock.callLater(job.delay, self._due, job)
        job.delay = min(job.delay * 2, self._retry_max)
        self._idle(job)

    def _due(self, job: _Job) -> None:
        job.timer = None
        if not self._stopped and self._jobs.get(job.key) is job:
            self._ready.append(job.key)
            self._pump()

    # -- one delivery

    def _attempt(self, job: _Job) -> None:
        tenant, number, _ = job.key
        d = self._mailboxes.messages(tenant, number)
        d.addCallback(self._found, job)
        d.addErrback(self._failed, job, None)

    def _found(self, messages: list[VoicemailMessage], job: _Job) -> Deferred[None] | None:
        if self._stopped:
            return None
        tenant, number, message_id = job.key
        message = next((m for m in messages if m.id == message_id), None)
        box = self._mailboxes.mailbox(tenant, number)
        if message is None or message.emailed or box is None or not box.email:
            self._log.info(
                "Voicemail e-mail {tenant}/{box}/{id}: not mailed (no longer in the box, or no address)",
                tenant=tenant,
                box=number,
                id=message_id,
            )
            self._done(job)
            return None
        job.attempts += 1
        audio = None
        if box.email_attach:
            audio = self._mailboxes.audio_path(message).read_bytes()  # an OSError is a failed attempt
        mail = build_mail(message, sender=self._sender, recipient=box.email, box_name=box.name, audio=audio)
        self._sending = sending = self._send(box.email, mail_bytes(mail))
        # the whole attempt is bounded too: a server that answers, slowly, forever never resets the clock
        watchdog = self._clock.callLater(self._smtp.timeout, self._too_slow, sending)
        sending.addBoth(self._disarm, watchdog)
        sending.addCallback(lambda _: self._sent(message, job, box.email, box.delete_after_email))
        sending.addErrback(self._failed, job, box.email)
        return None

    def _too_slow(self, sending: Deferred[Any]) -> None:
        sending.cancel()  # the connection is dropped; _failed sees the TooSlow below

    @staticmethod
    def _disarm(result: Any, watchdog: IDelayedCall) -> Any:
        if watchdog.active():
            watchdog.cancel()
        elif isinstance(result, Failure) and result.check(CancelledError):
            return Failure(TooSlow())
        return result

    def _send(self, recipient: str, data: bytes) -> Deferred[Any]:
        smtp = self._smtp
        tls = smtp.starttls != "off"
        result: Deferred[Any] = Deferred(lambda _: cancel())
        factory = _SenderFactory(
            self._clock,
            smtp.username.encode() if smtp.username else None,
            smtp.password.encode() if smtp.username else None,
            self._sender,
            [recipient],
            BytesIO(data),
            result,
            retries=0,
            timeout=smtp.timeout,
            contextFactory=self._tls_options(smtp.host) if tls else None,
            heloFallback=not smtp.username and smtp.starttls != "required",
            requireAuthentication=bool(smtp.username),
            requireTransportSecurity=smtp.starttls == "required",
        )
        factory.domain = domain_of(self._sender).encode("idna")
        connector = self._connect(smtp.host, smtp.port, factory, smtp.timeout)

        def cancel() -> None:
            factory.sendFinished = True
            if factory.currentProtocol is not None and factory.currentProtocol.transport is not None:
                factory.currentProtocol.transport.abortConnection()
            elif connector is not None:
                connector.disconnect()

        return result

    def _sent(self, message: VoicemailMessage, job: _Job, address: str, delete: bool) -> Deferred[None]:
        if self._stopped:
            return succeed(None)
        self._log.info(
            "Voicemail e-mail {tenant}/{box}/{id}: mailed to {to}",
            tenant=message.tenant,
            box=message.mailbox,
            id=message.id,
            to=address,
        )
        d: Deferred[Any] = self._mailboxes.mark_emailed(message)
        if delete:
            d.addCallback(self._mailboxes.delete)

        def after(result: object) -> None:
            if isinstance(result, Failure):  # mailed, but not marked or not deleted: no second mail now
                self._log.error(
                    "Voicemail e-mail {tenant}/{box}/{id}: mailed, but the box was not updated: {e}",
                    tenant=message.tenant,
                    box=message.mailbox,
                    id=message.id,
                    e=result.getErrorMessage(),
                )
            self._done(job)

        d.addBoth(after)
        return d

    def _failed(self, failure: Failure, job: _Job, address: str | None) -> None:
        if self._stopped or self._jobs.get(job.key) is not job:
            return
        tenant, number, message_id = job.key
        self._log.warn(
            "Voicemail e-mail {tenant}/{box}/{id} to {to}: attempt {n} failed: {reason}; "
            "next try in {delay:g} s",
            tenant=tenant,
            box=number,
            id=message_id,
            to=address or "-",
            n=job.attempts,
            reason=self._reason(failure),
            delay=job.delay,
        )
        self._retry_later(job)

    def _reason(self, failure: Failure) -> str:
        """Why a delivery failed, for the log: the server's code and text, never the exchange (which holds the
        AUTH lines) nor the password."""
        error = failure.value
        if isinstance(error, TooSlow):
            return f"not done within {self._smtp.timeout:g} s"
        if isinstance(error, SMTPConnectError) and isinstance(error.__cause__, SMTPClientError):
            error = error.__cause__
        if isinstance(error, SMTPClientError):
            resp = error.resp.decode("utf-8", "replace") if isinstance(error.resp, bytes) else str(error.resp)
            text = f"{error.code} {resp}" if error.code > 0 else resp
        else:
            text = f"{type(error).__name__}: {error}"
        text = clean(text, 300)
        password = self._smtp.password
        return text.replace(password, "***") if password else text
