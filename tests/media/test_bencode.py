"""`pbx.media.bencode`: the ng protocol's encoding (BEP 3): known encodings, round trips of any value
(hypothesis), and a strict decoder that refuses malformed input with `BencodeError` only."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.bencode import MAX_DEPTH, BencodeError, decode, encode

values = st.recursive(
    st.binary(max_size=40) | st.integers(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.binary(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


class KnownEncodingTests(SynchronousTestCase):
    def test_the_four_types(self) -> None:
        self.assertEqual(encode(b"spam"), b"4:spam")
        self.assertEqual(encode(""), b"0:")
        self.assertEqual(encode(42), b"i42e")
        self.assertEqual(encode(-3), b"i-3e")
        self.assertEqual(encode(0), b"i0e")
        self.assertEqual(encode([b"spam", 1]), b"l4:spami1ee")
        self.assertEqual(encode({"cow": "moo", "spam": "eggs"}), b"d3:cow3:moo4:spam4:eggse")

    def test_keys_are_sorted_as_bytes_and_str_is_utf8(self) -> None:
        self.assertEqual(encode({"b": 1, "a": 2, "B": 3}), b"d1:Bi3e1:ai2e1:bi1ee")
        self.assertEqual(encode("é"), b"2:\xc3\xa9")

    def test_an_ng_command(self) -> None:
        command = {"command": "offer", "call-id": "c1", "flags": ["port latching"]}
        data = encode(command)
        self.assertEqual(data, b"d7:call-id2:c17:command5:offer5:flagsl13:port latchingee")
        self.assertEqual(
            decode(data), {b"command": b"offer", b"call-id": b"c1", b"flags": [b"port latching"]}
        )

    def test_unencodable_values_are_refused(self) -> None:
        for value in (None, True, 1.5, {1: 2}, {"a": 1, b"a": 2}, object()):
            with self.assertRaises(BencodeError):
                encode(value)

    def test_encoding_depth_is_bounded(self) -> None:
        value: Any = 1
        for _ in range(MAX_DEPTH + 2):
            value = [value]
        with self.assertRaises(BencodeError):
            encode(value)


class DecoderTests(SynchronousTestCase):
    def test_malformed_input_is_refused(self) -> None:
        for data in (
            b"", b"i", b"ie", b"i-e", b"i-0e", b"i03e", b"i1x2e", b"i1", b"4:spa", b"04:spam", b"-1:a",
            b"5", b"l", b"li1e", b"d", b"d1:a", b"di1ei2ee", b"x", b"i1ei2e", b"4:spamX", b"d1:ai1e",
            b"99999999999:a", b"i" + b"9" * 70 + b"e",
        ):  # fmt: skip
            with self.assertRaises(BencodeError, msg=repr(data)):
                decode(data)

    def test_nesting_is_bounded(self) -> None:
        self.assertEqual(decode(b"l" * MAX_DEPTH + b"e" * MAX_DEPTH), _nested(MAX_DEPTH))
        with self.assertRaises(BencodeError):
            decode(b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1))
        with self.assertRaises(BencodeError):
            decode(b"l" * 100_000)

    def test_unsorted_keys_are_accepted(self) -> None:
        self.assertEqual(decode(b"d1:bi1e1:ai2ee"), {b"a": 2, b"b": 1})

    @given(values)
    @settings(max_examples=200, deadline=None)
    def test_round_trip(self, value: Any) -> None:
        self.assertEqual(decode(encode(value)), value)

    @given(st.binary(max_size=60))
    @settings(max_examples=300, deadline=None)
    def test_arbitrary_bytes_decode_or_raise_bencode_error(self, data: bytes) -> None:
        try:
            value = decode(data)
        except BencodeError:
            return
        self.assertEqual(decode(encode(value)), value)  # what decodes re-encodes (canonically, keys sorted)

    @given(values, st.integers(min_value=0, max_value=200))
    @settings(max_examples=200, deadline=None)
    def test_truncated_encodings_are_refused(self, value: Any, cut: int) -> None:
        data = encode(value)
        if cut < len(data):
            with self.assertRaises(BencodeError):
                decode(data[:cut])


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value
