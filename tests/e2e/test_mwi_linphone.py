"""Message waiting with the second softphone family, linphone (Debian 5.1), against a live PBX whose mailbox
1001 holds one new message (put in place before the PBX starts, as `tests/e2e/voicemail_seed.py` does).

- `linphonec` registers with digest authentication (LinphoneRegistrationOk; `pbx registrations` lists it
  with linphone's User-Agent). It cannot subscribe to message-summary (below), but with the box's
  `unsolicited_notify` the PBX sends it an unsolicited NOTIFY (`Messages-Waiting: yes`, `Voice-Message:
  1/0`) at registration, which linphonec answers with 200. It unregisters when it quits.
- linphonec 5.1 itself cannot subscribe to message-summary: it has no command for it, its config no key,
  and its library no MWI feature of its own (the string `message-summary` is nowhere in liblinphone.so.10).
  The library's generic `linphone_core_subscribe` can, so `tests/e2e/liblinphone_mwi.py` drives the same
  liblinphone through ctypes: it registers, subscribes to message-summary (401, then credentials), and
  receives the NOTIFY with the box's counts that it answers with 200; on stop the subscription ends
  (Expires: 0, a `terminated` NOTIFY).

Every wait is on an event (a log line, an output line) with a timeout; ports are free ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PbxProcess, registrations, write_config
from tests.e2e.linphone import LiblinphoneSubscriber, Linphonec, linphonec_available, write_linphonerc
from tests.e2e.voicemail_seed import seed_message

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not linphonec_available(), reason="linphonec (Debian linphone-cli) is not installed"),
]


def start_pbx(directory: Path, *, unsolicited: bool) -> tuple[PbxProcess, dict]:
    extra = (
        "[mwi]\nmin_expires = 1\nmax_expires = 3600\ndefault_expires = 600\n\n"
        f'[tenants.default.mailboxes.1001]\npin = "1001"\nunsolicited_notify = {str(unsolicited).lower()}\n'
    )
    ports = write_config(directory, extra=extra)
    seed_message(directory / "data", "default", "1001")
    process = PbxProcess(ports["path"])
    try:
        process.wait_ready(ports["listeners"])
    except BaseException:
        process.stop()
        raise
    return process, ports


@pytest.fixture
def unsolicited_pbx(tmp_path: Path) -> Iterator[tuple[PbxProcess, dict]]:
    process, ports = start_pbx(tmp_path, unsolicited=True)
    try:
        yield process, ports
    finally:
        process.stop()


@pytest.fixture
def mwi_pbx(tmp_path: Path) -> Iterator[tuple[PbxProcess, dict]]:
    process, ports = start_pbx(tmp_path, unsolicited=False)
    try:
        yield process, ports
    finally:
        process.stop()


def test_linphonec_registers_gets_the_unsolicited_notify_and_unregisters(unsolicited_pbx, tmp_path):
    process, ports = unsolicited_pbx
    config = write_linphonerc(tmp_path / "linphonec", user="1001", password="pass1001", pbx_port=ports["sip"])
    phone = Linphonec(tmp_path / "linphonec", config)
    try:
        phone.log.wait_for(r"to \[LinphoneRegistrationOk\]", 20, "linphonec registration")
        process.wait_for(r"Registered 1001@default", timeout=5)
        [binding] = [b for b in registrations(ports["path"]) if b.extension == "1001"]
        assert "linphone" in binding.user_agent.lower(), binding
        # the NOTIFY as linphonec received it, and its answer as the PBX received it
        phone.log.wait_for(r"^Event: message-summary", 15, "the unsolicited NOTIFY")
        phone.log.wait_for(r"^Voice-Message: 1/0", 5, "the counts")
        assert "Messages-Waiting: yes" in phone.log.text
        process.wait_for(r"CSeq: 1 NOTIFY", timeout=10, count=2)
        answer = re.search(
            r"<-- UDP [^\n]*\n\s*SIP/2\.0 (\d+)[^\n]*\n(?:[^\n]*\n){0,8}?\s*CSeq: 1 NOTIFY", process.output
        )
        assert answer is not None and answer.group(1) == "200", process.output[-3000:]
        phone.command("status register")
        phone.stdout.wait_for(r"^registered, identity=", 10, "linphonec status")
    finally:
        phone.stop()
    assert phone.proc.returncode == 0, phone.stdout.text[-2000:]
    assert "LinphoneRegistrationCleared" in phone.log.text
    assert [b for b in registrations(ports["path"]) if b.extension == "1001"] == []


def test_liblinphone_subscribes_to_message_summary_and_is_notified(mwi_pbx, tmp_path):
    process, ports = mwi_pbx
    directory = tmp_path / "liblinphone"
    config = write_linphonerc(directory, user="1001", password="pass1001", pbx_port=ports["sip"])
    phone = LiblinphoneSubscriber(directory, config, f"sip:1001@127.0.0.1:{ports['sip']}", seconds=30)
    try:
        phone.output.wait_for(r"^registered$", 20, "liblinphone registration")
        phone.output.wait_for(r"^subscribed$", 5, "liblinphone subscription")
        [notify] = phone.output.wait_for(r"^notify message-summary ", 15, "message-summary NOTIFY")
        body = json.loads(notify.split(" ", 2)[2])
        assert "Messages-Waiting: yes" in body and "Voice-Message: 1/0" in body, body
        phone.output.wait_for(r"^state 4$", 5, "active subscription")  # LinphoneSubscriptionActive
        # the PBX's side, from its SIP trace: challenged, accepted, notified, answered
        process.wait_for(r"SUBSCRIBE sip:1001@127\.0\.0\.1", timeout=5, count=2)
        process.wait_for(r"SIP/2\.0 401 Unauthorized", timeout=5)
        process.wait_for(r"Subscription-State: active;expires=600", timeout=5)
        process.wait_for(r"SIP/2\.0 200 Ok", timeout=5)  # liblinphone's answer to the NOTIFY
    finally:
        phone.stop()
    phone.output.wait_for(r"^stopped$", 10, "liblinphone stop")
    process.wait_for(r"Subscription-State: terminated", timeout=10)
