"""`pbx.service.voicemail_mail`: the mailer exists only with `[smtp] host`, listens to the mailboxes' new
messages, starts once voicemail recovery is done and connects through the reactor's `connectTCP`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory
from twisted.internet.testing import MemoryReactorClock

from pbx.config import SmtpConfig, load_config
from pbx.service.voicemail import build_voicemail
from pbx.service.voicemail_mail import build_mailer
from pbx.store import MemoryLocationStore

EXAMPLE = Path(__file__).resolve().parent.parent / "pbx.example.toml"


def config(tmp_path: Path, **smtp: Any) -> Any:
    loaded = load_config(EXAMPLE)
    return dataclasses.replace(loaded, data_dir=tmp_path, smtp=SmtpConfig(**smtp))


def test_no_host_no_mailer(tmp_path):
    reactor = MemoryReactorClock()
    voicemail = build_voicemail(config(tmp_path), MemoryLocationStore(), reactor)
    assert build_mailer(config(tmp_path), voicemail, reactor) is None
    assert voicemail.mailboxes.listeners == []


def test_with_a_host_the_mailer_listens_starts_after_recovery_and_connects_by_tcp(tmp_path):
    reactor = MemoryReactorClock()
    cfg = config(tmp_path, host="127.0.0.1", port=2525, starttls="off", timeout=7.0)
    voicemail = build_voicemail(cfg, MemoryLocationStore(), reactor)
    voicemail.ready = Deferred()  # recovery not done yet
    mail = build_mailer(cfg, voicemail, reactor)
    assert mail is not None
    assert voicemail.mailboxes.listeners == [mail.mailer.message_added]
    started: list[bool] = []
    mail.mailer.start = lambda: started.append(True)  # type: ignore[method-assign]
    mail.startService()
    assert started == []
    voicemail.ready.callback(None)
    assert started == [True]
    mail.stopService()
    # the connector is the reactor's connectTCP, with the configured timeout
    mail.mailer._connect("127.0.0.1", 2525, ClientFactory(), 7.0)
    [(host, port, _, timeout, _)] = reactor.tcpClients
    assert (host, port, timeout) == ("127.0.0.1", 2525, 7.0)
