"""`pbx.service.overload`: `[overload]` turned into the stack's guard, the lag monitor and its queue delay."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher

from pbx.config import parse_config
from pbx.service.overload import build_overload
from pbx.service.sip import build_sip
from pbx.sip import refusal
from pbx.sip.overload import CRITICAL, HIGH, Prioritize, QueueDrop, ReceiveBufferLimit

DOCUMENT = {
    "sip": {"listen": [{"transport": "udp", "host": "127.0.0.1", "port": 5060}]},
    "tenants": {"default": {"domain": "localhost", "extensions": {"1000": {"password": "secret"}}}},
}


def build(tmp_path: Path, overload: dict) -> tuple:
    config = parse_config({**DOCUMENT, "overload": overload}, tmp_path)
    reactor = MemoryReactorClock()
    stack, _ = build_sip(config, reactor)
    return build_overload(config, stack, reactor), stack, reactor


def test_defaults_attach_a_guard_and_run_the_monitor_while_started(tmp_path: Path) -> None:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        overload, stack, reactor = build(tmp_path, {"stateless_cache_size": 10})
        assert stack.overload is overload.guard and overload.guard is not None
        assert stack.stateless_cache.max_entries == 10
        assert stack.stateless_cache.lifetime == 32.0
        assert stack.transport.intake.screen == stack.shed_screen.screen
        assert stack.transport.intake.refuse == stack.shed_screen.quick  # refused at once, not deferred
        assert build(tmp_path, {"refuse_at_once": False})[1].transport.intake.refuse is None
        overload.startService()
        assert overload.monitor.running
        reactor.advance(0.05)
        reactor.advance(1.5)  # the loop was stuck 1.45 s: the level changes, logged once
        reactor.advance(0.05)
        assert overload.monitor.level() > 0
        assert [e for e in events if "Overload level" in e.get("log_format", "")]
        overload.stopService()
        assert not overload.monitor.running and reactor.getDelayedCalls() == []
    finally:
        globalLogPublisher.removeObserver(events.append)


def test_a_missing_c_twin_is_said_once_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = refusal.SPEEDUPS is not None
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        build(tmp_path, {})
        said = [e for e in events if "C twin" in e.get("log_format", "")]
        monkeypatch.setattr(refusal, "SPEEDUPS", None)
        build(tmp_path, {})
        missing = [e for e in events if "C twin" in e.get("log_format", "")]
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert len(said) == (0 if built else 1)  # quiet when it was built
    assert len(missing) == len(said) + 1


def test_disabled_keeps_only_the_cache(tmp_path: Path) -> None:
    overload, stack, reactor = build(tmp_path, {"enabled": False})
    assert stack.overload is None and overload.guard is None and overload.monitor is None
    overload.startService()
    overload.stopService()
    assert reactor.getDelayedCalls() == []
    assert stack.stateless_cache.max_entries == 8192


def test_the_read_rate_counts_every_datagram_read_refused_ones_included(tmp_path: Path) -> None:
    """The queue delay divides what waits by the rate the loop drains the sockets: every datagram offered to
    the pre-parse entry counts once, whether the admission refused it, the overload screen dealt with it or
    it was parsed (a flood the admission drops at a microsecond each drains fast: it is no backlog)."""
    overload, stack, reactor = build(tmp_path, {})
    delay = overload.socket_delay
    intake = stack.transport.intake
    assert delay is not None and delay.rate == 500.0
    delay()
    reactor.advance(1.0)
    for _ in range(10000):
        intake.admit("192.0.2.1", b"REGISTER sip:x SIP/2.0\r\n\r\n")
    stack.counters["screened"] += 6000  # counted by the intake already
    stack.transport.monitor.counters.messages_received += 4000
    delay()
    assert delay.rate == 0.5 * 500.0 + 0.5 * 10000.0  # smoothed: 10,000 datagrams read in that second
    assert reactor.getDelayedCalls() == []


def test_the_receive_buffers_shrink_from_the_level_asked(tmp_path: Path) -> None:
    for setting, level in (("critical", CRITICAL), ("high", HIGH)):
        overload, _stack, reactor = build(tmp_path, {"receive_buffer_level": setting})
        [limit] = [f for f in overload.monitor.listeners if isinstance(f, ReceiveBufferLimit)]
        assert limit.from_level == level
        assert reactor.getDelayedCalls() == []


def test_queue_drop_is_off_by_default_and_attached_when_asked(tmp_path: Path) -> None:
    overload, _stack, reactor = build(tmp_path, {})
    assert not [f for f in overload.monitor.listeners if isinstance(f, QueueDrop)]
    overload, stack, reactor = build(tmp_path, {"queue_drop": 0.1})
    [drop] = [f for f in overload.monitor.listeners if isinstance(f, QueueDrop)]
    assert drop.target == 0.1 and stack.transport.intake.new_starts == overload.guard.starts
    assert reactor.getDelayedCalls() == []


def test_samples_add_the_wait_behind_work_in_flight(tmp_path: Path) -> None:
    overload, _stack, reactor = build(tmp_path, {"follow_completions": True})
    guard = overload.guard
    assert guard.policy.follow_completions
    for _ in range(1000):
        guard.work_started()
    overload.startService()
    reactor.advance(0.05)
    assert overload.monitor.last == pytest.approx(1000 / guard.min_work_rate)
    overload.stopService()
    assert reactor.getDelayedCalls() == []


def test_prioritize_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    for setting, expected in (({}, 1), ({"prioritize": False}, 0)):
        overload, stack, reactor = build(tmp_path, setting)
        found = [listener for listener in overload.monitor.listeners if isinstance(listener, Prioritize)]
        assert len(found) == expected
        if found:
            guard, intake = overload.guard, stack.transport.intake
            guard.admit_share = 0.5  # shedding
            found[0](overload.monitor)
            assert intake.prioritize and intake.clock is reactor
            guard.admit_share = 1.0
            found[0](overload.monitor)
            assert not intake.prioritize
        assert reactor.getDelayedCalls() == []
