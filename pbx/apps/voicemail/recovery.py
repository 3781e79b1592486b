"""Start-up recovery of the voicemail files and index (`Mailboxes.recover`): make them agree, then count.

For every box directory under `data_dir/voicemail/TENANT/MAILBOX/` and every index row:

- a temp file (a recording or greeting cut short by a hangup or `kill -9`) is deleted;
- a row whose WAV is missing is dropped, with a log line (nothing to play);
- a WAV with no row but a sidecar (the PBX died between the recorder's rename and the commit: the caller had
  finished) is adopted as a new message, with the caller from the sidecar and the duration from the WAV;
  one shorter than the minimum message, or unreadable, is removed like a discarded recording;
- a WAV with neither row nor sidecar is removed (it was never a message of ours); a sidecar without WAV
  (the recording never finished) is removed;
- files that are not ours are left alone and logged.

Rows of boxes that are no longer configured are kept (their files too) but not counted, so a box taken out of
the config and put back finds its messages. This module is used once per start; it knows the files and the
store's interface, nothing of SIP.

With a store shared by several PBX nodes (`Mailboxes.shared`, PostgreSQL), another node may be recording or
committing right now, and its files may live on storage this node does not see: then rows without audio here
are kept (and counted), and files younger than `SHARED_GRACE` are left alone (neither removed nor adopted).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from pbx.apps.voicemail import files
from pbx.store.interfaces import IVoicemailStore
from pbx.store.records import VoicemailMessage

if TYPE_CHECKING:
    from pbx.apps.voicemail.mailboxes import Mailboxes

_log = Logger(namespace="pbx.apps.voicemail")


def _text(value: Any, limit: int = 256) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _adoptable(boxes: Mailboxes, tenant: str, number: str, id: str, minimum: float, now: float) -> Any:
    """The message to index for an orphan WAV with a sidecar, or None to remove it."""
    directory = boxes.box_dir(tenant, number)
    audio = directory / f"{id}{files.AUDIO}"
    sidecar = files.read_sidecar(audio)
    seconds = files.wav_seconds(audio)
    if sidecar is None or seconds is None or seconds < minimum:
        return None
    received = sidecar.get("received_at")
    return VoicemailMessage(
        tenant=tenant,
        mailbox=number,
        id=id,
        caller_number=_text(sidecar.get("caller_number")),
        caller_name=_text(sidecar.get("caller_name")),
        call_id=_text(sidecar.get("call_id")),
        received_at=float(received) if isinstance(received, int | float) else now,
        duration=seconds,
        audio=audio.relative_to(boxes.data_dir).as_posix(),
    )


SHARED_GRACE = 3600.0
"""Seconds a file must have been left alone before a node sharing its store removes or adopts it."""


def _young(path: Any, now: float) -> bool:
    """Modified less than `SHARED_GRACE` ago (or gone)."""
    try:
        return now - os.stat(path).st_mtime < SHARED_GRACE
    except OSError:
        return True


def _box_dirs(boxes: Mailboxes) -> list[tuple[str, str]]:
    """(tenant, number) of every box directory on disk plus every configured box."""
    found = {(tenant, box.number) for tenant, box in boxes.mailboxes()}
    try:
        tenants = os.listdir(boxes.root)
    except OSError:
        tenants = []
    for tenant in tenants:
        try:
            numbers = os.listdir(boxes.root / tenant)
        except OSError:
            continue
        found.update((tenant, number) for number in numbers if number.isdigit())
    return sorted(found)


def recover(
    boxes: Mailboxes, store: IVoicemailStore, rows: list[VoicemailMessage], minimum: float, now: float
) -> Deferred[None]:
    """Recover every box (see the module docstring), then hand the counts to `boxes.loaded`."""
    by_box: dict[tuple[str, str], dict[str, VoicemailMessage]] = {}
    for row in rows:
        by_box.setdefault((row.tenant, row.mailbox), {})[row.id] = row
    writes: list[Deferred[Any]] = []
    kept: list[VoicemailMessage] = []
    adopted: list[VoicemailMessage] = []
    for tenant, number in sorted(set(_box_dirs(boxes)) | set(by_box)):
        indexed = by_box.get((tenant, number), {})
        on_disk = files.scan_box(boxes.box_dir(tenant, number))
        for temp in on_disk.temps:
            if boxes.shared and _young(temp, now):
                continue  # another node may be recording it
            if files.remove(temp):
                _log.info("Voicemail recovery: removed the unfinished recording {path}", path=str(temp))
        for stray in on_disk.strays:
            if stray.name != files.GREETINGS_DIR:
                _log.warn("Voicemail recovery: {path} is not a voicemail file; left alone", path=str(stray))
        for id, row in indexed.items():
            if id in on_disk.audio and (boxes.data_dir / row.audio).is_file():
                kept.append(row)
                continue
            if boxes.shared:  # its audio may be on another node's storage, or being written
                kept.append(row)
                continue
            _log.warn(
                "Voicemail recovery: message {id} of {box} has no audio ({audio}); its entry is dropped",
                id=id,
                box=f"{tenant}/{number}",
                audio=row.audio,
            )
            writes.append(store.delete_message(tenant, number, id))
        for id in sorted(on_disk.audio - set(indexed)):
            audio = boxes.box_dir(tenant, number) / f"{id}{files.AUDIO}"
            if boxes.shared and _young(audio, now):
                continue  # another node may be about to index it
            message = _adoptable(boxes, tenant, number, id, minimum, now)
            if message is None:
                files.remove(audio)
                files.remove(audio.with_suffix(files.SIDECAR))
                _log.warn(
                    "Voicemail recovery: removed {path}: no message of a finished call", path=str(audio)
                )
                continue
            _log.info("Voicemail recovery: message {id} of {box} adopted", id=id, box=f"{tenant}/{number}")
            writes.append(store.add_message(message))
            adopted.append(message)
        for id in on_disk.sidecars:
            if boxes.shared and _young(boxes.box_dir(tenant, number) / f"{id}{files.SIDECAR}", now):
                continue
            if id in indexed or id not in on_disk.audio:
                files.remove(boxes.box_dir(tenant, number) / f"{id}{files.SIDECAR}")

    def done(_: object) -> None:
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        for message in kept + adopted:
            if boxes.mailbox(message.tenant, message.mailbox) is None:
                continue
            new, old = counts.get((message.tenant, message.mailbox), (0, 0))
            if message.folder == "new":
                new += 1
            else:
                old += 1
            counts[(message.tenant, message.mailbox)] = (new, old)
        boxes.loaded(counts)
        for message in adopted:
            files.remove(boxes.audio_path(message).with_suffix(files.SIDECAR))
            boxes.adopted(message)
        _log.info(
            "Voicemail: {count} messages in {boxes} boxes ({adopted} recovered)",
            count=sum(n + o for n, o in counts.values()),
            boxes=len(counts),
            adopted=len(adopted),
        )

    return gatherResults(writes, consumeErrors=True).addCallback(done)
