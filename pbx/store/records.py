"""The records the location service stores: a registrar's bindings (RFC 3261 10.3) and changes to them.

A `Binding` maps one address-of-record (a tenant and an extension) to one Contact, with what a registrar needs
to reach the device again: the flow the REGISTER came in on (for NAT, RFC 3581 / RFC 5626), the listener it
reached, the outbound instance and reg-id (RFC 5626), the Path (RFC 3327) and the Call-ID/CSeq that order
refreshes (RFC 3261 10.3 step 7). A batch of `BindingChange` values is what a registrar hands to
`ILocationStore.apply`.

These are plain values: they know nothing of SIP parsing, of how a Contact is normalized (the registrar
produces the exact text used as the key), of expiry policy, or of where they are stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One Contact registered for an address-of-record, as the location service keeps it.

    Small by design (plain str/int/float fields, slots): a registrar holds every binding in memory, and
    100,000 of them must stay well under 2 KiB each including the registrar's index.

    Attributes:
        tenant: The tenant (its SIP domain, `default` on a single-tenant install).
        aor: The user part of the address-of-record, e.g. "1001"; with `tenant` it names the AOR.
        contact: The Contact URI as text, exactly as the registrar normalized it; part of the key.
        expires_at: Wall-clock expiry, epoch seconds; the binding is gone at and after this instant.
        q: The Contact's preference, 0..1 (RFC 3261 20.10).
        call_id: Call-ID of the REGISTER that created or refreshed the binding.
        cseq: CSeq number of that REGISTER.
        received: The flow the REGISTER arrived on, "transport:host:port" (e.g. "udp:203.0.113.5:5062"); IPv6
            hosts are written in brackets.
        local: Our listener that received it, same form (e.g. "udp:127.0.0.1:5060").
        instance_id: The Contact's +sip.instance value (RFC 5626), or None.
        reg_id: The Contact's reg-id (RFC 5626), or None.
        user_agent: The User-Agent header, "" if absent.
        path: The Path header values joined with ",", "" if none (RFC 3327).
        registered_at: Wall-clock epoch seconds of the REGISTER that last wrote this binding.
    """

    tenant: str
    aor: str
    contact: str
    expires_at: float
    q: float = 1.0
    call_id: str
    cseq: int
    received: str
    local: str
    instance_id: str | None = None
    reg_id: int | None = None
    user_agent: str = ""
    path: str = ""
    registered_at: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"q must be between 0 and 1, not {self.q!r}")

    @property
    def key(self) -> tuple[str, str, str]:
        """The identity of the binding: (tenant, aor, contact)."""
        return (self.tenant, self.aor, self.contact)

    def is_expired(self, now: float) -> bool:
        """Whether the binding has expired at wall-clock time `now` (epoch seconds)."""
        return self.expires_at <= now


@dataclass(frozen=True, slots=True)
class PutBinding:
    """Insert `binding`, or replace the binding with the same (tenant, aor, contact)."""

    binding: Binding


@dataclass(frozen=True, slots=True)
class DeleteBinding:
    """Remove the binding (tenant, aor, contact), if there is one."""

    tenant: str
    aor: str
    contact: str


@dataclass(frozen=True, slots=True)
class DeleteAor:
    """Remove every binding of the address-of-record (tenant, aor) (a `Contact: *` REGISTER)."""

    tenant: str
    aor: str


BindingChange: TypeAlias = PutBinding | DeleteBinding | DeleteAor
"""One change in a batch given to `ILocationStore.apply`."""

CHANGE_TYPES = (PutBinding, DeleteBinding, DeleteAor)
"""The classes of `BindingChange`, for isinstance checks."""


def check_changes(changes: Iterable[object]) -> tuple[BindingChange, ...]:
    """Copy a batch of changes into a tuple, checking every item's type.

    Args:
        changes: What the caller passed to `apply`: a sequence of `BindingChange`.

    Returns:
        The changes as a tuple, safe to hand to another thread.

    Raises:
        TypeError: If `changes` is not a sequence of `BindingChange`, or is a str.
    """
    if isinstance(changes, str | bytes):
        raise TypeError(f"changes must be a sequence of BindingChange, not {type(changes).__name__}")
    batch: list[BindingChange] = []
    for change in changes:
        if not isinstance(change, CHANGE_TYPES):
            raise TypeError(f"not a BindingChange: {change!r}")
        batch.append(change)
    return tuple(batch)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cdr:
    """A call detail record, written when a call ends.

    Attributes:
        call_id: The PBX's id of the call (the inbound leg's Call-ID).
        tenant: The tenant of the caller.
        caller: Who called (extension number, or a trunk's number).
        dialed: What was dialed.
        answered_by: The extension that answered, or "" if nobody did.
        start: Epoch seconds when the INVITE arrived.
        answer: Epoch seconds when the call was answered, or None.
        end: Epoch seconds when the call ended.
        cause: Why it ended: "normal" (a BYE), "busy", "noanswer", "unavailable", "cancelled", "failed", ...
        status: The final SIP status the caller got (200 for answered calls).
        hangup_by: "caller", "callee" or "pbx".
        legs: A short description of the outbound legs: "1002@sip:1002@127.0.0.1:5062=486,..." (one item per
            fork with its final status).
    """

    call_id: str
    tenant: str
    caller: str
    dialed: str
    answered_by: str = ""
    start: float
    answer: float | None = None
    end: float
    cause: str
    status: int
    hangup_by: str = "pbx"
    legs: str = ""

    @property
    def duration(self) -> float:
        """Seconds from the INVITE to the end."""
        return self.end - self.start

    @property
    def billsec(self) -> float:
        """Seconds from the answer to the end (0 when never answered)."""
        return 0.0 if self.answer is None else self.end - self.answer


FOLDERS: tuple[str, ...] = ("new", "old")
"""The folders of a voicemail message: not yet heard, heard and kept."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VoicemailMessage:
    """One voicemail message's index entry; its audio is a WAV file the entry names.

    Attributes:
        tenant: The tenant's name.
        mailbox: The mailbox number.
        id: The message's identifier, unique in the mailbox (also the WAV file's stem).
        folder: One of `FOLDERS`.
        caller_number: The caller's number ("" when withheld or unknown).
        caller_name: The caller's display name, possibly "".
        received_at: Wall-clock epoch seconds when the recording started.
        duration: Seconds of audio.
        call_id: The PBX's id of the call that left it.
        audio: The WAV file, relative to the PBX's data directory
            ("voicemail/TENANT/MAILBOX/ID.wav").
        emailed: Whether it was handed to the SMTP server (for retries after a restart).
    """

    tenant: str
    mailbox: str
    id: str
    folder: str = "new"
    caller_number: str = ""
    caller_name: str = ""
    received_at: float
    duration: float
    call_id: str = ""
    audio: str
    emailed: bool = False

    def __post_init__(self) -> None:
        if self.folder not in FOLDERS:
            raise ValueError(f"folder must be one of {FOLDERS}, not {self.folder!r}")


FORWARD_KINDS: tuple[str, ...] = ("all", "busy", "noanswer")
"""The kinds of call forwarding an extension's owner can set by phone (`*72`, `*90`, `*52` ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtensionFeatures:
    """What an extension's owner set by phone (feature codes, docs/features.md): do-not-disturb and call
    forwarding. A forwarding of None was never set by phone (the config's `forward_*` applies); ``""`` was
    turned off by phone (it overrides the config's); anything else is the dial target set by phone.

    Attributes:
        tenant: The tenant's name.
        extension: The extension number.
        dnd: Do-not-disturb is on.
        forward_all: Where every call goes instead, "" (off) or None (the config's).
        forward_busy: Where a call goes when the extension is busy, "" or None.
        forward_noanswer: Where a call goes when it does not answer, "" or None.
        updated_at: Wall-clock epoch seconds of the last change.
    """

    tenant: str
    extension: str
    dnd: bool = False
    forward_all: str | None = None
    forward_busy: str | None = None
    forward_noanswer: str | None = None
    updated_at: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        """(tenant, extension)."""
        return (self.tenant, self.extension)
