"""The `dialog` event package's body (RFC 4235): `application/dialog-info+xml`, what busy lamps show.

A notifier sends the full state of one watched resource (an extension, a park orbit) in each NOTIFY:
`<dialog-info version="N" state="full" entity="sip:1002@example.com">` with one `<dialog>` per dialog of the
resource (RFC 4235 4.1). `version` starts at 0 and increases by one with every NOTIFY of a subscription
(4.1.1: per subscription, so the notifier numbers them). Each dialog has a `<state>` (4.1.6.1: `trying`,
`proceeding`, `early`, `confirmed`, `terminated`), a `direction` (`initiator`: the resource called;
`recipient`: it is being called) and, where known, the `<remote>` participant's identity (4.1.6.5), which
phones show on a ringing lamp (who is calling). No dialog, or only terminated ones, is an idle resource.

`DialogInfo.to_bytes()` writes the document (every value XML-escaped); `DialogInfo.parse` reads one back
(strictly: for tests and a subscriber). This module knows nothing of calls or of the notifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

EVENT: Final = "dialog"
CONTENT_TYPE: Final = "application/dialog-info+xml"
NAMESPACE: Final = "urn:ietf:params:xml:ns:dialog-info"

STATES: Final = ("trying", "proceeding", "early", "confirmed", "terminated")
"""The dialog states of RFC 4235 4.1.6.1 (3.7.1's state machine)."""
DIRECTIONS: Final = ("initiator", "recipient")


class DialogInfoError(ValueError):
    """A dialog-info document that is not well formed or not RFC 4235."""


@dataclass(frozen=True, slots=True)
class DialogEntry:
    """One `<dialog>` of a dialog-info document.

    Attributes:
        id: the dialog's identifier within the document (unique per resource; any token).
        state: one of `STATES`.
        direction: "initiator", "recipient" or "" (unknown: the attribute is left out).
        call_id: the Call-ID attribute, or "" to leave it out (a notifier may hide it, 4.1.2).
        remote_identity: the other party's URI (`<remote><identity>`), or "" for none.
        remote_display: its display name, or "".
        local_identity: the resource's own URI in this dialog (`<local><identity>`), or "".
    """

    id: str
    state: str
    direction: str = ""
    call_id: str = ""
    remote_identity: str = ""
    remote_display: str = ""
    local_identity: str = ""

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise DialogInfoError(f"unknown dialog state {self.state!r}")
        if self.direction not in ("", *DIRECTIONS):
            raise DialogInfoError(f"unknown dialog direction {self.direction!r}")


@dataclass(frozen=True, slots=True)
class DialogInfo:
    """A dialog-info document (full state).

    Attributes:
        entity: the watched resource's URI.
        version: the document's version (0, 1, 2 ... per subscription).
        dialogs: its dialogs.
        state: "full" (all the resource's dialogs) or "partial".
    """

    entity: str
    version: int
    dialogs: tuple[DialogEntry, ...] = ()
    state: str = "full"

    @property
    def idle(self) -> bool:
        """No dialog, or only terminated ones."""
        return all(d.state == "terminated" for d in self.dialogs)

    def to_bytes(self) -> bytes:
        """The XML document (UTF-8)."""
        lines = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<dialog-info xmlns="{NAMESPACE}" version="{self.version}" state="{self.state}"'
            f" entity={quoteattr(self.entity)}>",
        ]
        for d in self.dialogs:
            attrs = f"id={quoteattr(d.id)}"
            if d.call_id:
                attrs += f" call-id={quoteattr(d.call_id)}"
            if d.direction:
                attrs += f' direction="{d.direction}"'
            lines.append(f"  <dialog {attrs}>")
            lines.append(f"    <state>{d.state}</state>")
            if d.local_identity:
                lines.append(f"    <local><identity>{escape(d.local_identity)}</identity></local>")
            if d.remote_identity:
                display = f" display={quoteattr(d.remote_display)}" if d.remote_display else ""
                lines.append("    <remote>")
                lines.append(f"      <identity{display}>{escape(d.remote_identity)}</identity>")
                lines.append(f"      <target uri={quoteattr(d.remote_identity)}/>")
                lines.append("    </remote>")
            lines.append("  </dialog>")
        lines.append("</dialog-info>")
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes) -> DialogInfo:
        """Read a dialog-info document.

        Raises:
            DialogInfoError: not well-formed XML, not a dialog-info document, or bad values.
        """
        try:
            root = ElementTree.fromstring(data)  # our own bodies and test input (no DTDs expanded)
        except ElementTree.ParseError as e:
            raise DialogInfoError(f"not well-formed XML: {e}") from None
        ns = f"{{{NAMESPACE}}}"
        if root.tag != f"{ns}dialog-info":
            raise DialogInfoError(f"not a dialog-info document: {root.tag}")
        version = root.get("version", "")
        if not version.isdigit():
            raise DialogInfoError(f"bad version {version!r}")
        dialogs = []
        for element in root.findall(f"{ns}dialog"):
            state = element.find(f"{ns}state")
            identity = element.find(f"{ns}remote/{ns}identity")
            local = element.find(f"{ns}local/{ns}identity")
            dialogs.append(
                DialogEntry(
                    id=element.get("id", ""),
                    state=(state.text or "").strip() if state is not None else "",
                    direction=element.get("direction", ""),
                    call_id=element.get("call-id", ""),
                    remote_identity=(identity.text or "").strip() if identity is not None else "",
                    remote_display=identity.get("display", "") if identity is not None else "",
                    local_identity=(local.text or "").strip() if local is not None else "",
                )
            )
        return cls(root.get("entity", ""), int(version), tuple(dialogs), root.get("state", "full"))
