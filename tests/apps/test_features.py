"""DND and forwarding set by phone (`pbx.apps.features`): the `feature` app on a fake call, the settings in
memory and in the store, what the dialplan context sees, and that they survive a restart."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from pbx.apps import IvrApps
from pbx.apps.features import PhoneFeatures
from pbx.dialplan.actions import parse_line
from pbx.dialplan.simulate import ExtensionInfo, LiveExtensions, extension_variants
from pbx.store import ExtensionFeatures, MemoryLocationStore
from tests.apps.fakes import FakeCall, FakeEngine, done


class Caller(FakeCall):
    def __init__(self, extension: str = "1001", **kw: Any) -> None:
        super().__init__(**kw)
        self.caller = SimpleNamespace(extension=extension, tenant="default")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemoryLocationStore:
    return MemoryLocationStore()


@pytest.fixture
def engine(clock: Clock) -> FakeEngine:
    return FakeEngine(clock)


@pytest.fixture
def features(store: MemoryLocationStore, clock: Clock, engine: FakeEngine, tmp_path: Path) -> PhoneFeatures:
    return PhoneFeatures(store, clock, IvrApps(engine, tmp_path, tmp_path))


def run(features: PhoneFeatures, call: FakeCall, line: str, clock: Clock) -> str:
    apps: dict[str, Any] = {}
    features.register(apps)
    action = parse_line(line)
    assert action is not None
    d = ensureDeferred(apps[action.name](call, action))
    clock.advance(60)  # the prompts
    return str(done(d))


def test_dnd_on_is_stored_seen_by_the_context_and_confirmed(features, store, engine, clock) -> None:
    call = Caller()
    assert run(features, call, "feature dnd on", clock) == "on"
    assert call.sent == [200]
    assert engine.created[0].played == [(["dnd-on"], False)]
    assert features.overrides("default", "1001") == {"dnd": True}
    assert store.features[("default", "1001")].dnd is True
    assert run(features, Caller(), "feature dnd off", clock) == "off"
    assert features.overrides("default", "1001") is None
    assert clock.getDelayedCalls() == []


def test_forward_all_speaks_the_target_and_off_overrides_the_config(features, engine, clock) -> None:
    assert run(features, Caller(), "feature forward_all 1003", clock) == "on"
    spoken = ["forward-all-on", "digit-1", "digit-0", "digit-0", "digit-3"]
    assert engine.created[0].played == [(spoken, False)]
    assert features.overrides("default", "1001") == {"forward_all": "1003"}
    assert run(features, Caller(), "feature forward_all off prompt=no", clock) == "off"
    assert features.overrides("default", "1001") == {"forward_all": ""}  # "" beats a configured target
    assert len(engine.created) == 1  # prompt=no: nothing answered, nothing played


def test_busy_and_noanswer_forwarding_are_separate(features, clock) -> None:
    caller = Caller()
    caller.caller.may_call_out = True
    run(features, Caller(), "feature forward_busy 1000", clock)
    run(features, caller, "feature forward_noanswer trunk:carrier/5551234", clock)
    settings = features.settings("default", "1001")
    assert (settings.forward_all, settings.forward_busy, settings.forward_noanswer) == (
        None,
        "1000",
        "trunk:carrier/5551234",
    )


def test_forwarding_outside_needs_permission_to_call_out(features, clock) -> None:
    assert run(features, Caller(), "feature forward_all trunk:carrier/5551234", clock) == "invalid"
    assert run(features, Caller(), "feature forward_busy sip:help@example.com", clock) == "invalid"
    allowed = Caller()
    allowed.caller.may_call_out = True
    assert run(features, allowed, "feature forward_all trunk:carrier/5551234", clock) == "on"


def test_forwarding_to_itself_is_refused(features, engine, clock) -> None:
    assert run(features, Caller("1001"), "feature forward_all 1001", clock) == "invalid"
    assert features.overrides("default", "1001") is None
    assert engine.created[0].played == [(["invalid"], False)]


def test_a_caller_without_extension_changes_nothing(features, clock) -> None:
    assert run(features, Caller(""), "feature dnd on", clock) == "failed"
    assert features.overrides("default", "") is None


def test_settings_survive_a_restart(store, clock) -> None:
    store.features[("default", "1002")] = ExtensionFeatures(
        tenant="default", extension="1002", dnd=True, forward_busy="1000"
    )
    fresh = PhoneFeatures(store, clock)
    assert done(fresh.load()) == 1
    assert fresh.overrides("default", "1002") == {"dnd": True, "forward_busy": "1000"}


def test_the_context_lays_the_settings_over_the_configured_extension(features, clock) -> None:
    run(features, Caller("1002"), "feature forward_all off prompt=no", clock)
    run(features, Caller("1002"), "feature dnd on prompt=no", clock)
    configured = {"1002": ExtensionInfo("1002", "Bob", forward_all="1003", forward_busy="1000")}
    extensions = LiveExtensions(
        extension_variants(configured), lambda n: True, lambda n: features.overrides("default", n)
    )
    ext = extensions["1002"]
    assert (ext.dnd, ext.forward_all, ext.forward_busy, ext.registered) == (True, "", "1000", True)
