"""The toll-fraud classifier (`pbx.trunks.tollfraud`) and the outbound limits (`pbx.trunks.limits`): numbers
judged as the carrier will see them, and sliding one-hour windows on a task.Clock (calls, minutes of calls
in progress, per extension and per tenant), ending with no delayed call left."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from pbx.trunks.limits import Limit, OutboundLimits
from pbx.trunks.tollfraud import ALWAYS, NumberRules, allowed_classes, classify, judge

US = NumberRules(country="1", local=("+1555",))
UK = NumberRules(country="44")


@pytest.mark.parametrize(
    ("number", "rules", "expected"),
    [
        ("911", US, ("emergency", "+1911")),
        ("+1911", US, ("emergency", "+1911")),
        ("1911", US, ("emergency", "+1911")),
        ("112", US, ("emergency", "+1112")),
        ("999", UK, ("emergency", "+44999")),
        ("+44999", UK, ("emergency", "+44999")),
        ("*67911", US, ("emergency", "+1911")),
        ("5551234567", US, ("local", "+15551234567")),
        ("+1 (555) 123-4567", US, ("local", "+15551234567")),
        ("2125551234", US, ("national", "+12125551234")),
        ("12125551234", US, ("national", "+12125551234")),
        ("*672125551234#", US, ("national", "+12125551234")),
        ("011442071234567", US, ("international", "+442071234567")),
        ("+442071234567", US, ("international", "+442071234567")),
        ("18765551234", US, ("international", "+18765551234")),  # Jamaica: NANP, billed as international
        ("+18095551234", US, ("international", "+18095551234")),  # Dominican Republic
        ("19005551234", US, ("premium", "+19005551234")),
        ("+9791234567", US, ("premium", "+9791234567")),
        ("+881612345678", UK, ("premium", "+881612345678")),
        ("09098790000", UK, ("premium", "+449098790000")),
        ("02071234567", UK, ("national", "+442071234567")),
        ("0012125551234", UK, ("international", "+12125551234")),
        ("+44 20 7123 4567", UK, ("national", "+442071234567")),
        ("abc", US, ("invalid", "")),
        ("12*34", US, ("invalid", "")),
        ("", US, ("invalid", "")),
        ("1" * 40, US, ("invalid", "")),
        ("9011442071234567", US, ("invalid", "")),  # a template that forgot to strip the 9: no E.164
        ("x" * 100, US, ("invalid", "")),
    ],
)
def test_classify(number: str, rules: NumberRules, expected: tuple[str, str]) -> None:
    assert classify(number, rules) == expected


def test_the_emergency_list_and_premium_ranges_can_be_set() -> None:
    rules = NumberRules(country="49", emergency=("110",), premium=("+4915",))
    assert classify("110", rules)[0] == "emergency"
    assert classify("112", rules)[0] == "national"  # not in the tenant's own list
    assert classify("+4915112345678", rules)[0] == "premium"
    assert classify("+4990012345", rules)[0] == "national"  # the default range was replaced
    with pytest.raises(ValueError, match="country"):
        NumberRules(country="0")
    with pytest.raises(ValueError, match="class"):
        NumberRules(classes=("world",))


def test_classes_of_a_caller_and_the_may_call_out_mapping() -> None:
    assert allowed_classes(US, (), may_call_out=False) == ALWAYS
    assert allowed_classes(US, (), may_call_out=True) == {"internal", "local", "national", "emergency"}
    own = allowed_classes(US, ("international",), may_call_out=True)
    assert own == {"internal", "international", "emergency"}


def test_judge_never_refuses_emergency_and_always_refuses_invalid() -> None:
    nothing = allowed_classes(US, (), may_call_out=False)
    verdict = judge("911", US, nothing)
    assert (verdict.kind, verdict.allowed) == ("emergency", True)
    verdict = judge("011442071234567", US, allowed_classes(US, (), may_call_out=True))
    assert (verdict.kind, verdict.allowed, verdict.rule) == (
        "international",
        False,
        "class international not allowed",
    )
    everything = frozenset({"local", "national", "international", "premium"})
    assert not judge("1-800-FLOWERS", US, everything).allowed
    assert judge("+442071234567", US, everything).allowed


# -- limits ----------------------------------------------------------------------------------------------

EXT = ("extension acme/1001", Limit(concurrent=2, calls_per_hour=3, minutes_per_hour=10))
EXT2 = ("extension acme/1002", Limit(concurrent=2, calls_per_hour=3, minutes_per_hour=10))
TENANT = ("tenant acme", Limit(concurrent=3, calls_per_hour=5, minutes_per_hour=15))


def admit(limits: OutboundLimits, owner: object, *keys: tuple[str, Limit]) -> str:
    breach = limits.check(owner, keys)
    if breach is not None:
        return breach.limit
    limits.start(owner, [key for key, _ in keys])
    return "ok"


def test_concurrent_calls_per_extension_and_per_tenant() -> None:
    clock = Clock()
    limits = OutboundLimits(clock)
    a, b, c, d = object(), object(), object(), object()
    assert admit(limits, a, EXT, TENANT) == "ok"
    assert admit(limits, b, EXT, TENANT) == "ok"
    assert admit(limits, c, EXT, TENANT) == "concurrent calls"  # the extension's 2
    assert admit(limits, c, EXT2, TENANT) == "ok"
    assert admit(limits, d, EXT2, TENANT) == "concurrent calls"  # the tenant's 3
    assert limits.check(a, (EXT, TENANT)) is None  # a call already counted passes (its next fork)
    limits.forget(a)
    assert admit(limits, d, EXT2, TENANT) == "ok"
    assert limits.usage("tenant acme")[0] == 3
    for owner in (b, c, d):
        limits.forget(owner)
    assert limits.usage("tenant acme")[0] == 0
    assert clock.getDelayedCalls() == []


def test_calls_per_hour_slide() -> None:
    clock = Clock()
    limits = OutboundLimits(clock)
    for minute in (0, 10, 20):
        clock.advance(600 if minute else 0)
        owner = object()
        assert admit(limits, owner, EXT) == "ok"
        limits.forget(owner)
    breach = limits.check(object(), (EXT,))
    assert breach is not None and str(breach) == "extension acme/1001: calls per hour 3 of 3"
    clock.advance(2399)  # 59:59 after the first call
    assert admit(limits, object(), EXT) == "calls per hour"
    clock.advance(1)  # the first call leaves the window
    assert admit(limits, object(), EXT) == "ok"
    assert clock.getDelayedCalls() == []


def test_a_failover_call_counts_once_and_holds_no_call_between_attempts() -> None:
    clock = Clock()
    limits = OutboundLimits(clock)
    call = object()
    one = ("extension acme/1001", Limit(concurrent=1, calls_per_hour=1))
    assert admit(limits, call, one) == "ok"
    limits.stop(call)  # its first trunk failed
    assert limits.usage("extension acme/1001")[:2] == (0, 1)
    assert admit(limits, call, one) == "ok"  # the next trunk: not a second call this hour
    assert admit(limits, object(), one) == "concurrent calls"
    limits.forget(call)
    assert admit(limits, object(), one) == "calls per hour"
    assert clock.getDelayedCalls() == []


def test_minutes_count_calls_in_progress_and_slide() -> None:
    clock = Clock()
    limits = OutboundLimits(clock)
    long_call = object()
    assert admit(limits, long_call, EXT, TENANT) == "ok"
    clock.advance(30)  # ringing: no minutes yet
    limits.answered(long_call)
    clock.advance(9 * 60)
    assert limits.usage("extension acme/1001")[2] == pytest.approx(9)
    short = object()
    assert admit(limits, short, EXT, TENANT) == "ok"  # 9 of 10 minutes
    limits.forget(short)  # unanswered
    clock.advance(60)
    breach = limits.check(object(), (EXT, TENANT))
    assert breach is not None and breach.limit == "minutes per hour"  # 10 minutes, still talking
    assert limits.check(object(), (EXT2, TENANT)) is None  # another extension: the tenant has 15
    limits.forget(long_call)  # hung up after 10 minutes
    assert limits.usage("extension acme/1001")[2] == pytest.approx(10)
    clock.advance(60 * 60 - 10 * 60)  # the call was answered 60 minutes ago
    assert limits.usage("extension acme/1001")[2] == pytest.approx(10)
    clock.advance(5 * 60)  # half of it has left the window
    assert limits.usage("extension acme/1001")[2] == pytest.approx(5)
    assert limits.check(object(), (EXT, TENANT)) is None
    clock.advance(5 * 60)
    assert limits.usage("extension acme/1001") == (0, 0, 0.0)
    assert clock.getDelayedCalls() == []


def test_tenant_minutes_add_up_over_extensions() -> None:
    clock = Clock()
    limits = OutboundLimits(clock)
    a, b = object(), object()
    assert admit(limits, a, EXT, TENANT) == "ok"
    assert admit(limits, b, EXT2, TENANT) == "ok"
    limits.answered(a)
    limits.answered(b)
    clock.advance(8 * 60)  # 16 tenant minutes, 8 each
    assert limits.check(object(), (EXT, TENANT)) is not None
    assert limits.check(object(), (EXT, TENANT)).key == "tenant acme"  # type: ignore[union-attr]
    assert limits.check(object(), (EXT,)) is None
    limits.forget(a)
    limits.forget(b)
    clock.advance(3600)
    assert limits.usage("tenant acme") == (0, 0, 0.0)
    admit(limits, object(), ("extension acme/1003", Limit()))  # a start sweeps the idle keys away
    assert list(limits._usage) == ["extension acme/1003"]
    assert clock.getDelayedCalls() == []


def test_no_limit_is_no_limit() -> None:
    clock = Clock()
    limits = OutboundLimits(clock)
    free = ("extension acme/1001", Limit())
    for _ in range(100):
        assert admit(limits, object(), free) == "ok"
    assert limits.usage("extension acme/1001")[0] == 100
