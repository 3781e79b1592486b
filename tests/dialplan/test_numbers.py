"""The number filters of dialplan templates (`pbx.dialplan.numbers`): examples, properties, the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.dialplan.engine import DialplanEngine
from pbx.dialplan.numbers import e164, national, strip_plus


@pytest.mark.parametrize(
    ("value", "country", "expected"),
    [
        ("5551234567", "1", "+15551234567"),
        ("15551234567", "1", "+15551234567"),
        ("(555) 123-4567", "1", "+15551234567"),
        ("011442071234567", "1", "+442071234567"),
        ("+442071234567", "1", "+442071234567"),
        ("02071234567", "44", "+442071234567"),
        ("00331234567", "44", "+331234567"),
        ("030 1234567", "49", "+49301234567"),
        ("", "1", ""),
        ("12ab", "1", ""),
        ("+0123", "1", ""),
        ("1234567890123456", "44", ""),  # more than 15 digits
        ("123", "0", ""),  # no such country code
        (None, "1", ""),
    ],
)
def test_e164_examples(value: object, country: str, expected: str) -> None:
    assert e164(value, country=country) == expected


def test_strip_plus_and_national() -> None:
    assert strip_plus("+15551234567") == "15551234567"
    assert strip_plus("5551234") == "5551234"
    assert strip_plus("x") == ""
    assert national("+442071234567", country="44") == "02071234567"
    assert national("+15551234567", country="1") == "5551234567"
    assert national("+331234567", country="44") == "+331234567"


numbers = st.text(alphabet="0123456789+ -().", max_size=40)


@given(numbers, st.sampled_from(["1", "44", "49", "353"]))
def test_e164_output_is_always_e164_or_empty(value: str, country: str) -> None:
    out = e164(value, country=country)
    assert out == "" or (out.startswith("+") and out[1:].isdigit() and out[1] != "0" and len(out) <= 16)


valid = st.one_of(
    st.tuples(st.from_regex(r"\+1[2-9][0-9]{9}", fullmatch=True), st.just("1")),
    st.tuples(st.from_regex(r"\+(44|49|353)[1-9][0-9]{6,10}", fullmatch=True), st.sampled_from(["44", "49"])),
)


@given(valid)
def test_e164_is_idempotent_and_national_round_trips(case: tuple[str, str]) -> None:
    number, country = case
    assert e164(number, country=country) == number
    assert e164(e164(number, country=country), country=country) == number
    assert e164(national(number, country=country), country=country) == number


@given(st.text(max_size=80))
def test_the_filters_never_raise(value: str) -> None:
    for f in (e164, strip_plus, national):
        assert isinstance(f(value), str)


def test_filters_in_the_sandbox(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "main.j2").write_text(
        'dial trunk:carrier/{{ dialed[1:] | e164(country="44") | strip_plus }}\n'
    )
    (action,) = DialplanEngine(tmp_path).render("t", {"dialed": "902071234567"})
    assert action.targets[0].number == "442071234567"
