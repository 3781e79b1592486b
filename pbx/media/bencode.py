"""Bencode, the encoding of rtpengine's `ng` control protocol (BEP 3, "bencoding"; rtpengine's ng protocol
documentation).

Four types: byte strings (`4:spam`), integers (`i42e`), lists (`l...e`) and dictionaries (`d...e`, keys byte
strings in sorted order). Python values map to them as bytes/str -> string (str is UTF-8 encoded), int ->
integer, list/tuple -> list, dict -> dictionary (str or bytes keys); decoding gives bytes, int, list and dict
with bytes keys.

The decoder reads what a remote process sent, so it is strict and bounded: canonical integers only (no
leading zero, no `-0`), string lengths within the datagram, nesting at most `MAX_DEPTH` deep, no trailing
bytes. Anything else is a `BencodeError`, never another exception. The ng protocol does not need sorted keys
on input, so unsorted or duplicate dictionary keys are accepted (the last one wins).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_DEPTH", "BencodeError", "decode", "encode"]

MAX_DEPTH = 32
"""How deeply lists and dictionaries may nest in what `decode` accepts."""

_DIGITS = frozenset(b"0123456789")


class BencodeError(ValueError):
    """The bytes are not one well-formed bencoded value (or a value cannot be encoded)."""


def encode(value: Any) -> bytes:
    """The bencoding of `value` (bytes, str, int, bool is refused, list, tuple, dict).

    Raises:
        BencodeError: a value of another type (float, None, bool ...), or a dictionary key that is not
            str/bytes, or two keys that are equal once encoded.
    """
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deeply")
    if isinstance(value, bool) or value is None:
        raise BencodeError(f"cannot encode {type(value).__name__}")
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, dict):
        items: dict[bytes, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                key = key.encode()
            if not isinstance(key, bytes):
                raise BencodeError(f"dictionary key must be str or bytes, not {type(key).__name__}")
            if key in items:
                raise BencodeError("duplicate dictionary key")
            items[key] = item
        out.append(b"d")
        for key in sorted(items):
            _encode(key, out, depth + 1)
            _encode(items[key], out, depth + 1)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot encode {type(value).__name__}")


def decode(data: bytes) -> Any:
    """The one value bencoded in `data` (bytes, int, list, dict with bytes keys).

    Raises:
        BencodeError: `data` is not exactly one well-formed value (truncated, trailing bytes, a
            non-canonical integer, a non-string dictionary key, nesting deeper than `MAX_DEPTH`).
    """
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"trailing data at offset {end}")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= len(data):
        raise BencodeError("truncated")
    lead = data[pos]
    if lead == 0x69:  # i
        end = data.find(b"e", pos + 1)
        if end < 0:
            raise BencodeError("truncated integer")
        return _integer(data[pos + 1 : end]), end + 1
    if lead in _DIGITS:
        colon = data.find(b":", pos)
        if colon < 0:
            raise BencodeError("truncated string length")
        length = _length(data[pos:colon])
        start = colon + 1
        if start + length > len(data):
            raise BencodeError("truncated string")
        return data[start : start + length], start + length
    if lead in (0x6C, 0x64):  # l, d
        if depth >= MAX_DEPTH:
            raise BencodeError("nested too deeply")
        pos += 1
        if lead == 0x6C:
            items: list[Any] = []
            while pos < len(data) and data[pos] != 0x65:  # e
                item, pos = _decode(data, pos, depth + 1)
                items.append(item)
            if pos >= len(data):
                raise BencodeError("truncated list")
            return items, pos + 1
        mapping: dict[bytes, Any] = {}
        while pos < len(data) and data[pos] != 0x65:
            if data[pos] not in _DIGITS:
                raise BencodeError("dictionary key is not a string")
            key, pos = _decode(data, pos, depth + 1)
            mapping[key], pos = _decode(data, pos, depth + 1)
        if pos >= len(data):
            raise BencodeError("truncated dictionary")
        return mapping, pos + 1
    raise BencodeError(f"unexpected byte at offset {pos}")


def _length(digits: bytes) -> int:
    if not digits or not _DIGITS.issuperset(digits) or (digits[0] == 0x30 and len(digits) > 1):
        raise BencodeError("bad string length")
    if len(digits) > 10:
        raise BencodeError("string too long")
    return int(digits)


def _integer(text: bytes) -> int:
    digits = text[1:] if text[:1] == b"-" else text
    if not digits or not _DIGITS.issuperset(digits) or len(digits) > 64:
        raise BencodeError("bad integer")
    if (digits[0] == 0x30 and len(digits) > 1) or text == b"-0":
        raise BencodeError("non-canonical integer")
    return int(text)
