"""`message-summary` bodies (RFC 3842 5): parse, write, strict errors and a hypothesis round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.sip.events.message_summary import CLASSES, MAX_COUNT, MessageCounts, MessageSummary

RFC_EXAMPLE = (
    b"Messages-Waiting: yes\r\n"
    b"Message-Account: sip:alice@vmail.example.com\r\n"
    b"Voice-Message: 4/8 (1/2)\r\n"
    b"\r\n"
    b"To: <alice@atlanta.example.com>\r\n"
    b"From: <bob@biloxi.example.com>\r\n"
)


def test_parse_the_rfc_3842_example_skipping_message_headers():
    summary = MessageSummary.parse(RFC_EXAMPLE)
    assert summary.waiting
    assert summary.account == "sip:alice@vmail.example.com"
    assert summary.count("voice") == MessageCounts(4, 8, (1, 2))
    assert summary.count("fax") is None


def test_voice_summary_writes_the_usual_body():
    assert MessageSummary.voice(2, 5, "sip:1000@pbx.example.com").to_bytes() == (
        b"Messages-Waiting: yes\r\nMessage-Account: sip:1000@pbx.example.com\r\nVoice-Message: 2/5\r\n"
    )
    assert MessageSummary.voice(0, 5).to_bytes() == b"Messages-Waiting: no\r\nVoice-Message: 0/5\r\n"


def test_lenient_spelling_is_accepted():
    summary = MessageSummary.parse(b"messages-waiting:NO\nfax-message: 1 / 2 ( 0 / 1 )\nX-Other: 1\n")
    assert not summary.waiting and summary.count("fax") == MessageCounts(1, 2, (0, 1))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"Voice-Message: 1/2\r\n",
        b"Messages-Waiting: maybe\r\n",
        b"Messages-Waiting: yes\r\nVoice-Message: 1\r\n",
        b"Messages-Waiting: yes\r\nVoice-Message: -1/2\r\n",
        b"Messages-Waiting: yes\r\nVoice-Message: 99999999999/2\r\n",
        b"Messages-Waiting: yes\r\nVoice-Message: 9999999999/2\r\n",
        b"Messages-Waiting: yes\r\nno colon here\r\n",
        b"Messages-Waiting: yes\r\nMessage-Account:\r\n",
        b"Messages-Waiting: \xff\r\n",
        b"Messages-Waiting: yes\r\n" + b"X: y\r\n" * 2000,
    ],
)
def test_malformed_bodies_raise_value_error(body: bytes):
    with pytest.raises(ValueError):
        MessageSummary.parse(body)


def test_values_are_checked_on_construction():
    with pytest.raises(ValueError):
        MessageCounts(-1, 0)
    with pytest.raises(ValueError):
        MessageSummary(True, None, (("fax", MessageCounts()), ("voice", MessageCounts())))
    with pytest.raises(ValueError):
        MessageSummary(True, "sip:a\r\nX: injected")


counts = st.builds(
    MessageCounts,
    st.integers(0, MAX_COUNT),
    st.integers(0, MAX_COUNT),
    st.none() | st.tuples(st.integers(0, MAX_COUNT), st.integers(0, MAX_COUNT)),
)
summaries = st.builds(
    MessageSummary,
    st.booleans(),
    st.none() | st.from_regex(r"sips?:[a-z0-9]{1,8}@[a-z0-9.]{1,20}", fullmatch=True),
    st.lists(st.sampled_from([name for name, _ in CLASSES]), unique=True).flatmap(
        lambda names: st.tuples(
            *[st.tuples(st.just(n), counts) for n in [c for c, _ in CLASSES if c in names]]
        )
    ),
)


@given(summaries)
def test_round_trip(summary: MessageSummary):
    assert MessageSummary.parse(summary.to_bytes()) == summary
