"""Message waiting with the second softphone family, linphone (Debian 5.1), against a live PBX.

- `linphonec` registers with digest authentication (LinphoneRegistrationOk; `pbx registrations` lists it
  with linphone's User-Agent) and unregisters when it quits.
- linphonec 5.1 itself cannot subscribe to message-summary: it has no command for it, its config no key,
  and its library no MWI feature of its own (the string `message-summary` is nowhere in liblinphone.so.10).
  The library's generic `linphone_core_subscribe` can, so `tests/e2e/liblinphone_mwi.py` drives the same
  liblinphone through ctypes: it registers, subscribes to message-summary (401, then credentials), and
  receives the NOTIFY with `Messages-Waiting` and `Voice-Message` that it answers with 200; on stop the
  subscription ends (Expires: 0, a `terminated` NOTIFY).

Every wait is on an event (a log line, an output line) with a timeout; ports are free ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PbxProcess, registrations, write_config
from tests.e2e.linphone import LiblinphoneSubscriber, Linphonec, linphonec_available, write_linphonerc

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not linphonec_available(), reason="linphonec (Debian linphone-cli) is not installed"),
]


@pytest.fixture
def mwi_pbx(tmp_path: Path) -> Iterator[tuple[PbxProcess, dict]]:
    ports = write_config(
        tmp_path, extra="[mwi]\nmin_expires = 1\nmax_expires = 3600\ndefault_expires = 600\n"
    )
    process = PbxProcess(ports["path"])
    try:
        process.wait_ready(ports["listeners"])
        yield process, ports
    finally:
        process.stop()


def test_linphonec_registers_and_unregisters(mwi_pbx, tmp_path):
    process, ports = mwi_pbx
    config = write_linphonerc(tmp_path / "linphonec", user="1001", password="pass1001", pbx_port=ports["sip"])
    phone = Linphonec(tmp_path / "linphonec", config)
    try:
        phone.log.wait_for(r"to \[LinphoneRegistrationOk\]", 20, "linphonec registration")
        process.wait_for(r"Registered 1001@default", timeout=5)
        [binding] = [b for b in registrations(ports["path"]) if b.extension == "1001"]
        assert "linphone" in binding.user_agent.lower(), binding
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
        assert "Messages-Waiting: no" in body and "Voice-Message: 0/0" in body, body
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
