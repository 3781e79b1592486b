"""Message waiting over the voicemail boxes: a phone's lamp sums the boxes whose `phones` include it, a shared
box lights all its phones, a phone may subscribe to a shared box by number, never across tenants; and the
unsolicited NOTIFYs (`pbx.apps.mwi_unsolicited`) for boxes with `unsolicited_notify`."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from pbx.apps.mwi import Mailbox as Resource
from pbx.apps.mwi import SharedBox
from pbx.apps.mwi_unsolicited import UnsolicitedMwi
from pbx.apps.voicemail.mailboxes import Mailboxes
from pbx.config import Mailbox
from pbx.media.wav import write_pcm_atomic
from pbx.sip.events.message_summary import MessageSummary
from pbx.sip.message import Request
from pbx.sip.parser import parse_message
from pbx.store import Binding, MemoryLocationStore
from tests.apps import test_mwi
from tests.apps.test_mwi import World as MwiWorld
from tests.sip.test_stack import deliver

NOW = 1_700_000_000.0
BOXES = {
    "acme": {
        "1000": Mailbox(number="1000", pin="1000", phones=("1000",)),
        "1001": Mailbox(number="1001", pin="1001", phones=("1001",), unsolicited_notify=True),
        "8000": Mailbox(number="8000", pin="8000", phones=("1000", "1001")),
    },
    "other": {"1000": Mailbox(number="1000", pin="1000", phones=("1000",))},
}


def binding(aor: str, contact: str, tenant: str = "acme") -> Binding:
    return Binding(
        tenant=tenant,
        aor=aor,
        contact=contact,
        expires_at=NOW + 3600,
        call_id="r1",
        cseq=1,
        received="udp:192.0.2.20:5080",
        local="udp:127.0.0.1:5060",
        registered_at=NOW,
    )


class World(MwiWorld):
    """The MWI world with real `Mailboxes` (memory store, temp data directory) and unsolicited NOTIFYs."""

    def __init__(self) -> None:
        super().__init__()
        self.data_dir = Path(tempfile.mkdtemp(prefix="pbx-mwi-"))
        self.boxes = Mailboxes(MemoryLocationStore(), self.data_dir, BOXES, clock=self.clock)
        self.boxes.recover()
        from pbx.apps.mwi import MessageSummaryPackage, Mwi

        self.package = MessageSummaryPackage(
            self.boxes.phone_counts,
            {"acme": "pbx.example.com"}.get,
            self.boxes.boxes_of_phone,
            self.boxes.counts,
        )
        self.notifier.add_package(self.package)  # replaces the base world's package of the same name

        def phones_of(tenant: str, number: str) -> tuple[str, ...]:
            box = self.boxes.mailbox(tenant, number)
            return box.phones if box else ()

        def unsolicited_phones(tenant: str, number: str) -> tuple[str, ...]:
            box = self.boxes.mailbox(tenant, number)
            return box.phones if box and box.unsolicited_notify else ()

        self.mwi = Mwi(self.notifier, phones_of)
        self.bindings: dict[tuple[str, str], list[Binding]] = {}
        self.unsolicited = UnsolicitedMwi(
            self.clock,
            self.stack,
            lambda tenant, aor: self.bindings.get((tenant, aor), []),
            self.boxes.phone_counts,
            unsolicited_phones,
            lambda t, e: any(unsolicited_phones(t, n) for n in self.boxes.boxes_of_phone(t, e)),
            self.mwi.subscribed,
            {"acme": "pbx.example.com"}.get,
        )
        self.boxes.watchers.append(self.mwi.changed)
        self.boxes.watchers.append(self.unsolicited.changed)

    def leave(self, box: str, tenant: str = "acme") -> Any:
        path = self.boxes.prepare(tenant, box)
        write_pcm_atomic(path, b"\0\0" * 16000)
        kw: dict[str, Any] = {"caller_number": "1002", "caller_name": "", "call_id": "c", "duration": 2.0}
        d = self.boxes.commit(tenant, box, path, received_at=NOW, **kw)
        return d.result

    def last_summary(self) -> MessageSummary:
        return MessageSummary.parse(self.notifies()[-1].body)

    def finish(self) -> None:
        super().finish()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def test_the_lamp_sums_own_and_shared_boxes():
    world = World()
    world.leave("1000")
    world.leave("8000")
    assert world.subscribe(password="pw1000").status == 200
    summary = world.last_summary()
    assert summary.waiting and str(summary.count("voice")) == "2/0"
    assert summary.account == "sip:1000@pbx.example.com"
    world.finish()


def test_a_shared_box_lights_all_its_phones():
    world = World()
    assert world.subscribe(user="1000", password="pw1000").status == 200
    assert world.subscribe(user="1001", target="1001", password="pw1001").status == 200
    world.answer_all()
    before = len(world.notifies())
    world.leave("8000")
    after = world.notifies()[before:]
    assert len(after) == 2
    assert all(str(MessageSummary.parse(n.body).count("voice")) == "1/0" for n in after)
    world.answer_all()
    world.leave("1000")  # only 1000's own lamp
    assert len(world.notifies()) == before + 3
    assert str(world.last_summary().count("voice")) == "2/0"
    world.finish()


def test_heard_and_deleted_messages_notify():
    world = World()
    message = world.leave("1000")
    assert world.subscribe(password="pw1000").status == 200
    world.answer_all()
    heard = world.boxes.mark_old(message).result
    assert not world.last_summary().waiting and str(world.last_summary().count("voice")) == "0/1"
    world.answer_all()
    world.boxes.delete(heard)
    assert str(world.last_summary().count("voice")) == "0/0"
    world.finish()


def test_subscribing_to_a_shared_box_by_number():
    world = World()
    world.leave("1000")
    world.leave("8000")
    assert world.subscribe(user="1000", target="8000", password="pw1000").status == 200
    summary = world.last_summary()
    assert str(summary.count("voice")) == "1/0" and summary.account == "sip:8000@pbx.example.com"
    request = world._request("1000", "8000", "pbx.example.com")
    assert world.package.resource_for(request, Resource("acme", "1000")) == SharedBox("acme", "8000")
    world.finish()


def test_a_box_of_which_one_is_not_a_phone_is_forbidden():
    world = World()
    assert world.subscribe(user="1000", target="1001", password="pw1000").status == 403
    world.finish()


def test_subscriptions_never_cross_tenants():
    """The same numbers in another tenant: its messages never reach acme's phones, and acme's subscriber
    cannot name the other tenant's box (the tenant is the subscriber's digest domain)."""
    world = World()
    world.leave("1000", tenant="other")
    assert world.subscribe(password="pw1000").status == 200
    assert str(world.last_summary().count("voice")) == "0/0"
    world.answer_all()
    before = len(world.notifies())
    world.leave("1000", tenant="other")
    assert len(world.notifies()) == before
    world.finish()


def test_unsolicited_notify_on_change_to_every_contact():
    world = World()
    world.bindings[("acme", "1001")] = [
        binding("1001", "sip:1001@192.0.2.20:5080"),
        binding("1001", "sip:b@h"),
    ]
    world.bindings[("acme", "1000")] = [binding("1000", "sip:1000@192.0.2.21:5080")]
    world.leave("1001")
    sent = world.notifies()
    assert len(sent) == 2 and world.unsolicited.counters["sent"] == 2
    notify = sent[0]
    assert notify.method == "NOTIFY" and str(notify.uri) == "sip:1001@192.0.2.20:5080"
    assert notify.headers.get("Event") == "message-summary"
    assert notify.headers.get("Subscription-State") == "active"
    assert notify.headers.get("Content-Type") == "application/simple-message-summary"
    assert world.transports.sent[0][1:] == ("udp", "192.0.2.20", 5080)
    assert str(MessageSummary.parse(notify.body).count("voice")) == "1/0"
    world.leave("1000")  # 1000's box is not unsolicited
    assert len(world.notifies()) == 2
    for request in world.notifies():
        deliver(world.stack, request.response(200).to_bytes(), world.flow)
    assert world.unsolicited.counters["answered"] == 2
    world.finish()


def test_unsolicited_notify_after_registration():
    world = World()
    world.leave("8000")
    world.unsolicited.registered(binding("1001", "sip:1001@192.0.2.20:5080"))
    world.unsolicited.registered(binding("1000", "sip:1000@192.0.2.21:5080"))  # does not want them
    assert world.notifies() == []  # after the REGISTER's 200
    world.clock.advance(0)
    (notify,) = world.notifies()
    assert str(MessageSummary.parse(notify.body).count("voice")) == "1/0"
    world.answer_all()
    world.finish()


def test_an_unsolicited_notify_to_a_contact_registered_through_a_proxy_follows_its_path():
    world = World()
    world.leave("8000")
    path = "<sip:192.0.2.1;lr;received=sip:192.0.2.20:5080>"
    world.unsolicited.registered(replace(binding("1001", "sip:1001@10.0.0.20:5080"), path=path))
    world.clock.advance(0)
    (notify,) = world.notifies()
    assert notify.headers.get_all("Route") == [path]
    world.answer_all()
    world.finish()


def test_a_subscribed_phone_gets_no_unsolicited_notify():
    world = World()
    world.bindings[("acme", "1001")] = [binding("1001", "sip:1001@192.0.2.20:5080")]
    assert world.subscribe(user="1001", target="1001", password="pw1001").status == 200
    world.answer_all()
    before = len(world.notifies())
    world.leave("1001")
    assert len(world.notifies()) == before + 1  # in the subscription's dialog only
    assert world.unsolicited.counters["sent"] == 0
    world.finish()


def test_unanswered_unsolicited_notify_times_out_quietly():
    world = World()
    world.bindings[("acme", "1001")] = [binding("1001", "sip:1001@192.0.2.20:5080")]
    world.leave("1001")
    world.clock.advance(64)
    assert world.unsolicited.counters["timeouts"] == 1
    world.finish()


def test_requests_are_parseable():
    world = World()
    world.bindings[("acme", "1001")] = [binding("1001", "sip:1001@192.0.2.20:5080")]
    world.leave("1001")
    data = world.transports.sent[-1][0]
    assert isinstance(parse_message(data), Request)
    world.answer_all()
    world.finish()


assert test_mwi.PASSWORDS  # the base world's accounts: 1000 and 1001


def test_location_service_tells_new_contacts_only():
    from twisted.internet.task import Clock

    from pbx.registrar import LocationService

    clock = Clock()
    clock.advance(NOW)
    location = LocationService(clock, MemoryLocationStore())
    added: list[Binding] = []
    location.on_added(added.append)
    first = binding("1001", "sip:1001@192.0.2.20:5080")
    location.apply("acme", "1001", [first], [])
    location.apply("acme", "1001", [first], [])  # a refresh
    assert added == [first]
    location.stop()
    assert clock.getDelayedCalls() == []
