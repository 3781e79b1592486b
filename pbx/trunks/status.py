"""The trunks' state in a small JSON file, for `pbx trunks status` (another process) to read.

`StatusFile` listens to a `TrunkStates` and rewrites the file shortly after each change (changes within
`delay` seconds are written once: a thousand trunks refreshing together make one write, not a thousand).
The file is replaced atomically (a temporary file in the same directory, then `os.replace`), so a reader
never sees half of it. Its content::

    {"version": 1, "pid": 1234, "written_at": 1765080000.0,
     "trunks": [{"tenant": "default", "trunk": "carrier", "state": "registered", "up": true,
                 "registration": "registered", "code": 200, "reason": "OK", "retry_at": null,
                 "expires_at": 1765083600.0, "contact": "<sip:1555@192.0.2.1:5060>", ...}, ...]}

Times are the clock's seconds (the reactor's: UNIX time). No password is in a `TrunkState`, so none is here.
`read_status` reads it back (None when there is none).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pbx.trunks.state import TrunkState, TrunkStates

STATUS_FILE = "trunks.json"
"""The status file's name in the data directory."""
VERSION = 1


class StatusFile:
    """Keep `path` in step with `states` (see the module docstring).

    Args:
        path: the file (its directory must exist).
        states: the trunks' states; the file is rewritten after each change.
        clock: the clock of the write delay, and of `written_at`.
        delay: seconds a change waits for others before the file is written.
    """

    _log = Logger(namespace="pbx.trunks")

    def __init__(self, path: Path, states: TrunkStates, clock: IReactorTime, delay: float = 0.5) -> None:
        self.path = path
        self._states = states
        self._clock = clock
        self._delay = delay
        self._timer_write: IDelayedCall | None = None
        self.writes = 0
        states.on_change(self._changed)

    def _changed(self, _state: TrunkState) -> None:
        if self._timer_write is None:
            self._timer_write = self._clock.callLater(self._delay, self.write)

    def write(self) -> None:
        """Write the file now (a pending delayed write is cancelled); a failure is logged, not raised."""
        if self._timer_write is not None and self._timer_write.active():
            self._timer_write.cancel()
        self._timer_write = None
        document = {
            "version": VERSION,
            "pid": os.getpid(),
            "written_at": self._clock.seconds(),
            "trunks": [state.as_dict() for state in self._states],
        }
        try:
            _replace(self.path, json.dumps(document, indent=1).encode())
        except OSError as e:
            self._log.warn("Cannot write the trunk status file {path}: {error}", path=str(self.path), error=e)
            return
        self.writes += 1

    def close(self) -> None:
        """Write what is pending now and stop listening for the timer."""
        self.write()


def _replace(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(path: Path) -> dict[str, Any] | None:
    """The status file's document, or None when it does not exist or cannot be read as one."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("trunks"), list):
        return None
    return document
