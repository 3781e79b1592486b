"""What an endpoint sends: play lists resolved to G.711 once, and outputs the pacer drains 20 ms at a time.

`Codec` names a G.711 variant ("PCMU"/"PCMA") with its payload type, encoder, decoder and silence code.
`PromptLibrary` finds prompts by name in a directory ("welcome" -> <dir>/welcome.wav), loads any 16-bit PCM
WAV through `pbx.media.wav.load_prompt` (other rates and channel counts are converted), and caches each prompt
ENCODED per codec: a prompt is encoded once and every playback sends slices of the same bytes. Files outside
the prompt directory (voicemail messages) are loaded on each play and not cached. Loading is blocking file
I/O on first use: `preload()` at start-up keeps it off the call path.

`resolve(items)` turns a play list into one encoded byte string (the item syntax is documented on
`IMediaEndpoint.play`), validating everything before anything is sent. `AudioOutput` cuts it into 160-byte
payloads (the last one padded with the codec's silence), optionally looping (music on hold);
`DigitOutput` yields the RFC 4733 packets of `pbx.media.dtmf.DtmfSender` one per packet interval.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pbx.media import g711, tones
from pbx.media.dtmf import DtmfSender, digit_to_event
from pbx.media.wav import load_prompt

__all__ = ["CODECS", "SKIP", "AudioOutput", "Codec", "DigitOutput", "PromptLibrary", "codec_by_name"]

FRAME = 160  # samples (and G.711 bytes) per 20 ms packet


@dataclass(frozen=True, slots=True)
class Codec:
    """A G.711 variant: its SDP name, static payload type, PCM <-> code functions and its silence code."""

    name: str
    payload_type: int
    encode: Callable[[bytes], bytes]
    decode: Callable[[bytes], bytes]
    silence: int

    def __repr__(self) -> str:
        return f"<Codec {self.name}/{self.payload_type}>"


CODECS = {
    "PCMU": Codec("PCMU", 0, g711.ulaw_encode, g711.ulaw_decode, 0xFF),
    "PCMA": Codec("PCMA", 8, g711.alaw_encode, g711.alaw_decode, 0xD5),
}


def codec_by_name(name: str) -> Codec:
    """The `Codec` called `name` (case-insensitive); ValueError for anything but PCMU and PCMA."""
    try:
        return CODECS[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported codec {name!r}: the media endpoint speaks PCMU and PCMA") from None


class PromptLibrary:
    """Prompts by name from `directory`, cached as PCM and encoded per codec."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = os.path.abspath(os.fspath(directory)) if directory is not None else None
        self._pcm: dict[str, bytes] = {}
        self._encoded: dict[tuple[str, str], bytes] = {}

    def path_of(self, item: str) -> str:
        """The file a play item names: a path (absolute, or with a separator or .wav) or a prompt name."""
        if os.path.isabs(item) or os.sep in item or item.endswith(".wav"):
            return os.path.abspath(item)
        if self.directory is None:
            raise ValueError(f"prompt {item!r}: no prompt directory is configured")
        if not item or item.startswith("."):
            raise ValueError(f"bad prompt name {item!r}")
        return os.path.join(self.directory, item + ".wav")

    def _cacheable(self, path: str) -> bool:
        return self.directory is not None and os.path.dirname(path) == self.directory

    def pcm(self, item: str) -> bytes:
        """8 kHz mono 16-bit PCM of a prompt name or file; ValueError when missing or unreadable."""
        path = self.path_of(item)
        cached = self._pcm.get(path)
        if cached is not None:
            return cached
        if not os.path.isfile(path):
            raise ValueError(f"prompt {item!r}: no such file {path}")
        pcm = load_prompt(path)
        if self._cacheable(path):
            self._pcm[path] = pcm
        return pcm

    def encoded(self, item: str, codec: Codec) -> bytes:
        """The prompt encoded with `codec` (cached for prompts of the directory)."""
        path = self.path_of(item)
        key = (path, codec.name)
        cached = self._encoded.get(key)
        if cached is not None:
            return cached
        data = codec.encode(self.pcm(item))
        if self._cacheable(path):
            self._encoded[key] = data
        return data

    def preload(self, codecs: Iterable[Codec] = CODECS.values()) -> int:
        """Load and encode every WAV of the directory now (at start-up); returns how many prompts."""
        if self.directory is None or not os.path.isdir(self.directory):
            return 0
        names = sorted(n[:-4] for n in os.listdir(self.directory) if n.endswith(".wav"))
        for name in names:
            for codec in codecs:
                self.encoded(name, codec)
        return len(names)

    def resolve(self, items: Iterable[str], codec: Codec) -> bytes:
        """A play list as one encoded byte string; ValueError for an unknown item or unreadable file."""
        parts = [self._item(item, codec) for item in items]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _item(self, item: str, codec: Codec) -> bytes:
        if not isinstance(item, str) or not item:
            raise ValueError(f"bad play item {item!r}")
        kind, sep, arg = item.partition(":")
        if sep and kind == "tone":
            name, _, length = arg.partition(":")
            try:
                seconds = float(length) if length else None
            except ValueError:
                raise ValueError(f"bad tone length in {item!r}") from None
            return self._cached(
                ("tone", name, seconds, codec.name), lambda: tones.tone_pcm(name, seconds), codec
            )
        if sep and kind == "silence":
            if not arg.isdigit() or int(arg) > 600_000:
                raise ValueError(f"bad silence {item!r}: want silence:MILLISECONDS (at most 600000)")
            return bytes([codec.silence]) * (int(arg) * 8)
        if sep and kind == "dtmf":
            for digit in arg:
                digit_to_event(digit)
            return self._cached(("dtmf", arg, None, codec.name), lambda: tones.dtmf_pcm(arg), codec)
        if sep and kind == "digits":
            if not arg.isdigit():
                raise ValueError(f"bad digits item {item!r}: want digits:0123456789")
            return b"".join(self.encoded(f"digit-{d}", codec) for d in arg)
        return self.encoded(item, codec)

    _generated: dict[tuple[str, str, float | None, str], bytes] = {}

    def _cached(
        self, key: tuple[str, str, float | None, str], make: Callable[[], bytes], codec: Codec
    ) -> bytes:
        data = self._generated.get(key)
        if data is None:
            data = codec.encode(make())
            if len(self._generated) < 512:
                self._generated[key] = data
        return data


class AudioOutput:
    """Encoded audio cut into 160-byte payloads; `loop` starts over at the end (music on hold)."""

    kind = "audio"

    def __init__(self, data: bytes, codec: Codec, loop: bool = False) -> None:
        if len(data) % FRAME:
            data = data + bytes([codec.silence]) * (FRAME - len(data) % FRAME)
        if loop and not data:
            raise ValueError("cannot loop empty audio")
        self.data = data
        self.loop = loop
        self.offset = 0

    def next_payload(self) -> bytes | None:
        """The next 20 ms payload, or None when finished."""
        offset = self.offset
        if offset >= len(self.data):
            if not self.loop:
                return None
            offset = 0
        self.offset = offset + FRAME
        return self.data[offset : offset + FRAME]


SKIP: tuple[bool, int, bytes] = (False, -1, b"")
"""`DigitOutput.next_event`: nothing to send in this interval (the gap between digits)."""


class DigitOutput:
    """RFC 4733 events for `digits`, one packet per interval, with `gap` silent intervals between digits."""

    kind = "digits"

    def __init__(self, digits: str, duration_ms: int = 100, gap: int = 3) -> None:
        for digit in digits:
            digit_to_event(digit)
        if not 40 <= duration_ms <= 5000:
            raise ValueError(f"DTMF duration must be 40..5000 ms, got {duration_ms}")
        self.digits = digits
        self.duration = duration_ms * 8
        self.gap = gap
        self._sender = DtmfSender()
        self._packets: list[tuple[bool, int, bytes]] = []
        self._index = 0
        self._wait = 0
        self._digit = 0

    def next_event(self, timestamp: int) -> tuple[bool, int, bytes] | None:
        """(marker, event timestamp, payload) to send now, `SKIP` (send nothing this interval), or None: done.

        `timestamp` is the RTP timestamp of this interval; an event starts at the interval it is sent in."""
        if self._index >= len(self._packets):
            if self._wait:
                self._wait -= 1
                return SKIP
            if self._digit >= len(self.digits):
                return None
            self._packets = self._sender.packets(self.digits[self._digit], timestamp, self.duration)
            self._index = 0
            self._digit += 1
            self._wait = self.gap
        packet = self._packets[self._index]
        self._index += 1
        return packet
