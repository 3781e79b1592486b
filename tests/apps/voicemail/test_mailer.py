"""`VoicemailMailer`: new messages mailed through Twisted's SMTP client to an in-memory ESMTP server on a
`task.Clock`; failures retried with a doubling back-off, never losing the message; `emailed` marked;
`delete_after_email` through the mailboxes; start-up queueing; one connection at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from pbx.apps.voicemail.mailboxes import Mailboxes
from pbx.apps.voicemail.mailer import VoicemailMailer
from pbx.config import Mailbox
from pbx.media.wav import write_pcm_atomic
from pbx.store import MemoryLocationStore
from tests.apps.voicemail.smtp_fakes import Box, FakeTls, FakeVoicemail, SmtpWorld, voicemail_message

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4


class Smtp:
    def __init__(self, **kwargs: Any) -> None:
        self.host = "mail.test"
        self.port = 587
        self.starttls = "off"
        self.username = ""
        self.password = ""
        self.timeout = 30.0
        self.__dict__.update(kwargs)


@pytest.fixture
def logged():
    events: list[str] = []

    def observer(event: LogEvent) -> None:
        if "Voicemail e-mail" in str(event.get("log_format", "")):
            events.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def make(
    tmp_path: Path,
    boxes: list[Box],
    *,
    retry_min: float = 60,
    retry_max: float = 3600,
    tls: list[FakeTls] | None = None,
    **smtp: Any,
) -> tuple[VoicemailMailer, FakeVoicemail, SmtpWorld, Clock]:
    """A mailer on a fake network; the client's TLS options (one per STARTTLS) are appended to `tls`."""
    clock = Clock()
    world = SmtpWorld(clock)
    vm = FakeVoicemail(tmp_path, boxes)

    def tls_options(host: str) -> FakeTls:
        options = FakeTls(host)
        if tls is not None:
            tls.append(options)
        return options

    mailer = VoicemailMailer(
        vm,
        Smtp(**smtp),
        sender="voicemail@pbx.test",
        retry_min=retry_min,
        retry_max=retry_max,
        clock=clock,
        connect=world.connect,
        tls_options=tls_options,
    )
    return mailer, vm, world, clock


def test_a_new_message_is_mailed_with_the_wav_and_marked_emailed(tmp_path, logged):
    mailer, vm, world, clock = make(tmp_path, [Box("1002", email="bob@example.test", name="Bob")])
    message = vm.add(voicemail_message(), WAV)
    mailer.message_added(message)
    world.run()
    [(recipient, mail)] = world.inbox.mails
    assert recipient == "bob@example.test"
    assert world.inbox.senders == ["voicemail@pbx.test"]
    assert mail["Subject"] == "New voicemail from Alice <1001> in mailbox 1002"
    assert mail["From"] == "voicemail@pbx.test" and mail["To"] == "bob@example.test"
    text, attachment = [part for part in mail.walk() if not part.is_multipart()]
    body = text.get_payload(decode=True).decode()
    assert "1001" in body and "Alice" in body and "0:07" in body and "1002 (Bob)" in body
    assert "2025-12-06 05:46:40 UTC" in body
    assert attachment.get_content_type() == "audio/wav"
    assert attachment.get_filename() == "voicemail-1002-m1.wav"
    assert attachment.get_payload(decode=True) == WAV
    assert vm.entries["default", "1002", "m1"].emailed
    assert mailer.pending == []
    assert any("mailed to bob@example.test" in line for line in logged)
    assert clock.getDelayedCalls() == []


def test_without_attach_the_mail_has_only_the_details(tmp_path):
    mailer, vm, world, clock = make(tmp_path, [Box("1002", email="bob@example.test", email_attach=False)])
    mailer.message_added(vm.add(voicemail_message(), WAV))
    world.run()
    [(_, mail)] = world.inbox.mails
    assert not mail.is_multipart()
    assert "*97" in mail.get_payload(decode=True).decode()
    assert clock.getDelayedCalls() == []


def test_a_box_without_address_or_a_mailed_message_is_not_mailed(tmp_path):
    mailer, vm, world, clock = make(tmp_path, [Box("1002"), Box("1003", email="c@example.test")])
    mailer.message_added(vm.add(voicemail_message("a", "1002")))
    mailer.message_added(vm.add(voicemail_message("b", "1003", emailed=True)))
    world.run()
    assert world.connections == 0 and mailer.pending == []
    assert clock.getDelayedCalls() == []


def test_a_hostile_caller_name_cannot_add_a_header(tmp_path):
    mailer, vm, world, clock = make(tmp_path, [Box("1002", email="bob@example.test")])
    evil = "Eve\r\nBcc: victim@example.test\r\n"
    mailer.message_added(vm.add(voicemail_message(caller_name=evil)))
    world.run()
    [(_, mail)] = world.inbox.mails
    assert mail["Bcc"] is None
    assert mail["Subject"].strip() == "New voicemail from Eve Bcc: victim@example.test <1001> in mailbox 1002"
    assert clock.getDelayedCalls() == []


def test_server_down_then_retries_with_doubling_back_off_and_nothing_is_lost(tmp_path, logged):
    mailer, vm, world, clock = make(
        tmp_path, [Box("1002", email="bob@example.test")], retry_min=10, retry_max=40, password="s3cret!"
    )
    world.up = False
    mailer.message_added(vm.add(voicemail_message(), WAV))
    attempts_at = [clock.seconds()] if world.connections == 1 else []
    for _ in range(5):
        before = world.connections
        [call] = clock.getDelayedCalls()
        clock.advance(call.getTime() - clock.seconds())
        world.run()
        assert world.connections == before + 1
        attempts_at.append(clock.seconds())
    assert attempts_at == [0, 10, 30, 70, 110, 150]  # waits 10, 20, 40, 40, 40
    assert ("default", "1002", "m1") in vm.entries and not vm.entries["default", "1002", "m1"].emailed
    failures = [line for line in logged if "failed" in line]
    assert len(failures) == 6
    assert "Connection was refused" in failures[0] and "next try in 10 s" in failures[0]
    assert all("s3cret" not in line for line in logged)
    world.up = True
    [call] = clock.getDelayedCalls()
    clock.advance(call.getTime() - clock.seconds())
    world.run()
    assert len(world.inbox.mails) == 1
    assert vm.entries["default", "1002", "m1"].emailed
    assert clock.getDelayedCalls() == []


def test_starttls_required_but_not_offered_fails_is_logged_and_retried(tmp_path, logged):
    mailer, vm, world, clock = make(
        tmp_path, [Box("1002", email="bob@example.test")], starttls="required", retry_min=5
    )
    mailer.message_added(vm.add(voicemail_message()))
    world.run()
    assert world.inbox.mails == [] and world.connections == 1
    [failure] = [line for line in logged if "failed" in line]
    assert "502" in failure and "TLS" in failure and "next try in 5 s" in failure
    assert not vm.entries["default", "1002", "m1"].emailed
    [call] = clock.getDelayedCalls()
    assert call.getTime() == 5
    clock.advance(5)
    world.run()
    assert world.connections == 2 and world.inbox.mails == []
    mailer.stop()
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_starttls_offered_is_used_before_auth(tmp_path, mode):
    tls: list[FakeTls] = []
    mailer, vm, world, clock = make(
        tmp_path,
        [Box("1002", email="bob@example.test")],
        starttls=mode,
        username="pbx",
        password="pw",
        tls=tls,
    )
    world.starttls, world.users = True, {"pbx": "pw"}
    mailer.message_added(vm.add(voicemail_message()))
    world.run()
    assert len(world.inbox.mails) == 1
    sent = b"".join(world.transcript)
    assert sent.index(b"STARTTLS") < sent.index(b"AUTH")  # the password only crosses after the handshake
    assert [options.name for options in tls] == ["mail.test"] and tls[0].handshakes == 1
    assert clock.getDelayedCalls() == []


def test_optional_starttls_with_a_certificate_for_another_name_fails_and_never_falls_back(tmp_path, logged):
    mailer, vm, world, clock = make(
        tmp_path, [Box("1002", email="bob@example.test")], starttls="optional", username="pbx", password="pw"
    )
    world.starttls, world.users, world.certificate_name = True, {"pbx": "pw"}, "evil.test"
    mailer.message_added(vm.add(voicemail_message()))
    world.run()
    assert world.inbox.mails == []
    assert b"AUTH" not in b"".join(world.transcript)
    [failure] = [line for line in logged if "failed" in line]
    assert "next try in 60 s" in failure
    assert not vm.entries["default", "1002", "m1"].emailed
    mailer.stop()
    assert clock.getDelayedCalls() == []


def test_a_silent_server_times_out_on_the_clock_and_is_retried(tmp_path, logged):
    mailer, vm, _world, clock = make(
        tmp_path, [Box("1002", email="bob@example.test")], timeout=30, retry_min=5
    )
    transports: list[StringTransport] = []

    def silent(host: str, port: int, factory: Any, timeout: float) -> None:
        assert timeout == 30
        transports.append(StringTransport())
        factory.buildProtocol(None).makeConnection(transports[-1])

    mailer._connect = silent  # type: ignore[method-assign]
    mailer.message_added(vm.add(voicemail_message()))
    clock.advance(29)
    assert logged == []
    clock.advance(1)
    [failure] = [line for line in logged if "failed" in line]
    assert "Timeout" in failure and "next try in 5 s" in failure
    assert transports[0].disconnecting
    mailer.stop()
    assert clock.getDelayedCalls() == []


def test_a_server_that_answers_slowly_forever_is_cut_off_after_the_timeout(tmp_path, logged):
    mailer, vm, _world, clock = make(
        tmp_path, [Box("1002", email="bob@example.test")], timeout=30, retry_min=5
    )
    clients: list[Any] = []

    def slow(host: str, port: int, factory: Any, timeout: float) -> None:
        clients.append(factory.buildProtocol(None))
        clients[-1].makeConnection(StringTransport())

    mailer._connect = slow  # type: ignore[method-assign]
    mailer.message_added(vm.add(voicemail_message()))
    [client] = clients
    client.dataReceived(b"220 mail.test ESMTP\r\n")
    assert client.transport.value().startswith(b"EHLO ")
    for _ in range(4):  # an EHLO answer that never ends, each line within the idle timeout
        clock.advance(6)
        client.dataReceived(b"250-mail.test\r\n")
    assert logged == []
    clock.advance(6)  # 30 s after the attempt began
    [failure] = [line for line in logged if "failed" in line]
    assert "not done within 30 s" in failure and "next try in 5 s" in failure
    assert client.transport.disconnecting
    client.connectionLost(Failure(ConnectionAborted()))  # what the reactor does after the abort
    mailer.stop()
    assert clock.getDelayedCalls() == []


def test_starttls_off_never_asks_for_tls(tmp_path):
    mailer, vm, world, clock = make(tmp_path, [Box("1002", email="bob@example.test")], starttls="off")
    world.starttls = True
    mailer.message_added(vm.add(voicemail_message()))
    world.run()
    assert len(world.inbox.mails) == 1
    assert b"STARTTLS" not in b"".join(world.transcript)
    assert clock.getDelayedCalls() == []


def test_auth_with_username_and_password_and_a_wrong_password_is_retried(tmp_path, logged):
    mailer, vm, world, clock = make(
        tmp_path, [Box("1002", email="bob@example.test")], username="pbx", password="wrong-pw", retry_min=5
    )
    world.users = {"pbx": "right-pw"}
    mailer.message_added(vm.add(voicemail_message()))
    world.run()
    assert world.inbox.mails == []
    [failure] = [line for line in logged if "failed" in line]
    assert "535" in failure
    assert all("wrong-pw" not in line for line in logged)
    mailer._smtp.password = "right-pw"  # type: ignore[misc]  # the operator fixed the config
    clock.advance(5)
    world.run()
    assert len(world.inbox.mails) == 1
    assert b"AUTH" in b"".join(world.transcript)
    assert clock.getDelayedCalls() == []


def test_delete_after_email_removes_the_message_through_the_mailboxes(tmp_path):
    mailer, vm, world, clock = make(
        tmp_path, [Box("1002", email="bob@example.test", delete_after_email=True)]
    )
    message = vm.add(voicemail_message(), WAV)
    mailer.message_added(message)
    world.run()
    assert len(world.inbox.mails) == 1
    assert [m.id for m in vm.deleted] == ["m1"] and vm.deleted[0].emailed
    assert vm.entries == {} and not (tmp_path / message.audio).exists()
    assert clock.getDelayedCalls() == []


def test_a_message_deleted_while_waiting_for_a_retry_is_dropped(tmp_path):
    mailer, vm, world, clock = make(tmp_path, [Box("1002", email="bob@example.test")], retry_min=10)
    world.up = False
    message = vm.add(voicemail_message())
    mailer.message_added(message)
    vm.delete(message)  # the owner listened and deleted it
    world.up = True
    clock.advance(10)
    world.run()
    assert world.inbox.mails == [] and mailer.pending == [] and world.connections == 1
    assert clock.getDelayedCalls() == []


def test_start_queues_the_messages_not_yet_mailed(tmp_path):
    mailer, vm, world, clock = make(
        tmp_path, [Box("1002", email="bob@example.test"), Box("1003"), Box("1000", email="a@example.test")]
    )
    vm.add(voicemail_message("old", "1002", emailed=True))
    vm.add(voicemail_message("new1", "1002"))
    vm.add(voicemail_message("noaddr", "1003"))
    vm.add(voicemail_message("new2", "1000"))
    mailer.start()
    world.run()
    assert sorted(recipient for recipient, _ in world.inbox.mails) == ["a@example.test", "bob@example.test"]
    assert world.connections == 2
    assert clock.getDelayedCalls() == []


def test_one_connection_at_a_time(tmp_path):
    mailer, vm, world, clock = make(tmp_path, [Box("1002", email="bob@example.test")])
    for n in range(3):
        mailer.message_added(vm.add(voicemail_message(f"m{n}")))
    assert world.connections == 1  # the others wait in the queue
    assert len(mailer.pending) == 3
    mailer.message_added(vm.entries["default", "1002", "m0"])  # queued already: no second mail
    world.run()
    assert world.connections == 3 and len(world.inbox.mails) == 3
    assert all(m.emailed for m in vm.entries.values())
    assert clock.getDelayedCalls() == []


def test_stop_abandons_the_delivery_and_the_timers(tmp_path):
    mailer, vm, world, clock = make(tmp_path, [Box("1002", email="bob@example.test")], retry_min=10)
    world.up = False
    mailer.message_added(vm.add(voicemail_message("a")))
    world.up = True
    mailer.message_added(vm.add(voicemail_message("b")))  # connected, nothing pumped yet
    mailer.stop()
    world.run()
    assert world.inbox.mails == [] and mailer.pending == []
    assert clock.getDelayedCalls() == []
    mailer.message_added(vm.add(voicemail_message("c")))
    assert world.connections == 2


def test_many_attempts_that_end_at_once_do_not_recurse(tmp_path, logged):
    """The first attempt waits on the store while 400 queue up; then all end at once (unreadable WAVs)
    without the stack growing per message (about 9 frames each would pass Python's limit of 1,000)."""
    mailer, vm, world, clock = make(tmp_path, [Box("1002", email="bob@example.test")], retry_min=10)
    for n in range(400):
        message = vm.add(voicemail_message(f"m{n}"))
        (tmp_path / message.audio).unlink()
    first: Deferred[Any] = Deferred()
    messages = vm.messages
    vm.messages = lambda tenant, number: first if not first.called else messages(tenant, number)  # type: ignore[method-assign]
    mailer.start()
    assert len(mailer.pending) == 400 and logged == []
    first.callback(list(vm.entries.values()))
    failures = [line for line in logged if "failed" in line]
    assert len(failures) == 400 and all("FileNotFoundError" in line for line in failures)
    assert len(clock.getDelayedCalls()) == 400 and world.connections == 0
    mailer.stop()
    assert clock.getDelayedCalls() == []


def test_an_unreadable_wav_is_a_failed_attempt_not_a_lost_message(tmp_path, logged):
    mailer, vm, world, clock = make(tmp_path, [Box("1002", email="bob@example.test")], retry_min=10)
    message = vm.add(voicemail_message())
    (tmp_path / message.audio).unlink()
    mailer.message_added(message)
    assert world.connections == 0
    [failure] = [line for line in logged if "failed" in line]
    assert "FileNotFoundError" in failure
    assert ("default", "1002", "m1") in vm.entries
    mailer.stop()
    assert clock.getDelayedCalls() == []


def test_with_the_real_mailboxes_a_deposit_is_mailed_marked_and_deleted_with_mwi_told(tmp_path):
    """`Mailboxes` (memory store) tells the mailer through `listeners`; with delete_after_email the box is
    empty afterwards and its watchers (MWI) saw the count go up and down again."""
    clock = Clock()
    clock.advance(1_765_000_000)
    store = MemoryLocationStore()
    boxes = {
        "default": {
            "1002": Mailbox(number="1002", pin="1234", email="bob@example.test", delete_after_email=True),
            "1003": Mailbox(number="1003", pin="1234", email="carol@example.test"),
        }
    }
    mailboxes = Mailboxes(store, tmp_path, boxes, clock=clock, spare_bytes=0)
    world = SmtpWorld(clock)
    mailer = VoicemailMailer(
        mailboxes,
        Smtp(),
        sender="voicemail@pbx.test",
        retry_min=60,
        retry_max=600,
        clock=clock,
        connect=world.connect,
    )
    mailboxes.listeners.append(mailer.message_added)
    counts: list[tuple[int, int]] = []
    mailboxes.watchers.append(lambda tenant, box: counts.append(mailboxes.counts(tenant, box)))
    successResultOf(mailboxes.recover())
    successResultOf(mailer.start())
    for box in ("1002", "1003"):
        path = mailboxes.prepare("default", box, caller_number="1001", caller_name="Alice", call_id="c1")
        write_pcm_atomic(path, b"\x01\x00" * 16000)
        successResultOf(
            mailboxes.commit(
                "default",
                box,
                path,
                caller_number="1001",
                caller_name="Alice",
                received_at=clock.seconds(),
                duration=2.0,
                call_id="c1",
            )
        )
    world.run()
    assert [recipient for recipient, _ in world.inbox.mails] == ["bob@example.test", "carol@example.test"]
    assert all(len(mail.get_payload()[1].get_payload(decode=True)) > 32000 for _, mail in world.inbox.mails)
    assert successResultOf(mailboxes.messages("default", "1002")) == []
    assert mailboxes.counts("default", "1002") == (0, 0) and (1, 0) in counts
    [kept] = successResultOf(mailboxes.messages("default", "1003"))
    assert kept.emailed and (tmp_path / kept.audio).exists()
    assert successResultOf(mailboxes.unsent()) == []
    assert clock.getDelayedCalls() == []


def successResultOf(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results and not isinstance(results[0], Failure), results
    return results[0]
