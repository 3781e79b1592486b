"""The voicemail files in the data directory, and the PIN hashes: what `Mailboxes` does on disk.

Layout (relative to the PBX's data directory):

```
voicemail/TENANT/MAILBOX/ID.wav               a message's audio (written by the recorder: temp + rename)
voicemail/TENANT/MAILBOX/ID.json              its sidecar: who called, written before the audio appears
voicemail/TENANT/MAILBOX/.tmp-*.wav           a recording in progress (the recorder's temp file)
voicemail/TENANT/MAILBOX/greetings/KIND.wav   the owner's greetings (unavailable, busy, name)
```

A message is whole when its index row is in the store; the sidecar only bridges the instant between the
recorder's rename and the row's commit: a WAV found at start-up with a sidecar but no row was acknowledged to
its caller (a `kill -9` came between the rename and the commit) and is adopted; a WAV with neither is removed.
`scan_box` tells the start-up recovery what lies in a box's directory.

PINs an owner sets are stored as `pbkdf2_sha256$ITERATIONS$SALT$HASH` (hex; a fresh 16-byte salt each);
`pin_matches` compares in constant time. This module knows nothing of the store, SIP or the reactor.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

TEMP_PREFIX: Final = ".tmp-"
"""The prefix of the recorder's temp files (`pbx.media.wav.write_pcm_atomic`)."""
SIDECAR: Final = ".json"
AUDIO: Final = ".wav"
GREETINGS_DIR: Final = "greetings"
PIN_ITERATIONS: Final = 100_000
PIN_PATTERN: Final = re.compile(r"[0-9]{4,12}")
"""A PIN: 4 to 12 digits (the config's rule, also for a PIN set by phone)."""
_ID = re.compile(r"[0-9]{13}-[0-9a-f]{6}")
_MAX_SIDECAR = 4096


def new_message_id(now: float) -> str:
    """A message id that sorts by time: epoch milliseconds (13 digits) and 24 random bits."""
    return f"{int(now * 1000):013d}-{secrets.token_hex(3)}"


def is_message_id(text: str) -> bool:
    """Whether `text` is an id `new_message_id` makes (a file name of ours, never a path)."""
    return bool(_ID.fullmatch(text))


def write_sidecar(path: Path, **values: Any) -> None:
    """Write the sidecar of the message whose audio will be `path` (`ID.json` beside `ID.wav`).

    Raises:
        OSError: The directory cannot be written (full, read-only).
    """
    data = json.dumps(values, separators=(",", ":")).encode()
    with open(path.with_suffix(SIDECAR), "wb") as file:
        file.write(data)


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar of the audio `path`, or None when it is missing, too big or unreadable."""
    try:
        with open(path.with_suffix(SIDECAR), "rb") as file:
            data = file.read(_MAX_SIDECAR + 1)
        values = json.loads(data) if len(data) <= _MAX_SIDECAR else None
    except (OSError, ValueError):
        return None
    return values if isinstance(values, dict) else None


def remove(path: Path) -> bool:
    """Unlink `path`; False (and no error) when it is gone already or cannot be removed."""
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def wav_seconds(path: Path) -> float | None:
    """The duration of a WAV file, or None when it is not a readable WAV."""
    try:
        with wave.open(os.fspath(path), "rb") as reader:
            rate = reader.getframerate()
            return reader.getnframes() / rate if rate > 0 else None
    except (OSError, EOFError, wave.Error):
        return None


@dataclass(slots=True)
class BoxFiles:
    """What `scan_box` found in a box's directory (ids are file stems).

    Attributes:
        audio: Ids with a WAV.
        sidecars: Ids with a sidecar.
        temps: Leftover temp files (recordings cut short), to delete.
        strays: Other files that are not ours (left alone, logged).
    """

    audio: set[str] = field(default_factory=set)
    sidecars: set[str] = field(default_factory=set)
    temps: list[Path] = field(default_factory=list)
    strays: list[Path] = field(default_factory=list)


def scan_box(directory: Path) -> BoxFiles:
    """List a box's directory (and the temp files of its greetings directory)."""
    found = BoxFiles()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    for entry in entries:
        name = entry.name
        if name.startswith(TEMP_PREFIX):
            found.temps.append(Path(entry.path))
        elif name == GREETINGS_DIR and entry.is_dir():
            found.temps.extend(
                Path(directory, GREETINGS_DIR, inner)
                for inner in _names(Path(entry.path))
                if inner.startswith(TEMP_PREFIX)
            )
        elif name.endswith(AUDIO) and is_message_id(name[: -len(AUDIO)]):
            found.audio.add(name[: -len(AUDIO)])
        elif name.endswith(SIDECAR) and is_message_id(name[: -len(SIDECAR)]):
            found.sidecars.add(name[: -len(SIDECAR)])
        else:
            found.strays.append(Path(entry.path))
    return found


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def writable_with_space(directory: Path, needed: int) -> str | None:
    """Why a recording of about `needed` bytes cannot be written in `directory` now, or None when it can."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        stats = os.statvfs(directory)
    except OSError as e:
        return f"{directory}: {e.strerror or e}"
    if not os.access(directory, os.W_OK | os.X_OK) or stats.f_flag & os.ST_RDONLY:
        return f"{directory}: not writable"
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        return f"{directory}: {free} bytes free, {needed} needed"
    return None


def hash_pin(pin: str, iterations: int = PIN_ITERATIONS) -> str:
    """The stored form of a PIN: PBKDF2-HMAC-SHA256 with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def pin_matches(pin: str, stored: str) -> bool:
    """Whether `pin` is the PIN `stored` (from `hash_pin`) was made of; constant time, False for a malformed
    `stored`."""
    try:
        scheme, iterations, salt, expected = stored.split("$")
        rounds = int(iterations)
        if scheme != "pbkdf2_sha256" or not 1 <= rounds <= 10_000_000:
            return False
        digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), bytes.fromhex(salt), rounds)
        return hmac.compare_digest(digest, bytes.fromhex(expected))
    except ValueError:
        return False
