"""The stack's dialog table: each dialog with the usage that owns it (RFC 3261 12.2.2, 13.2.2.4, 13.3.1.4).

`DialogRouter` keeps the live dialogs of every usage of one stack (call legs, subscriptions, registration
clients' dialogs are none, INVITE sessions) and routes what arrives inside a dialog to its owner:

- a request with a To tag -> `IDialogUsage.dialog_request` after `Dialog.receive_request` has checked its
  CSeq and followed a target refresh; no dialog -> the caller answers `481` (RFC 3261 12.2.2);
- an ACK that matched no INVITE server transaction (the ACK of a 2xx) -> `dialog_ack`; no dialog: dropped;
- a response that matched no client transaction (a retransmitted 2xx after the INVITE transaction ended,
  a second fork's 2xx) -> `dialog_response`; no dialog: dropped.

An early UAC dialog that has no remote tag yet matches a request or response from any remote tag when no
dialog has that tag (RFC 6665 4.1.2.4: a NOTIFY may arrive before the 2xx to its SUBSCRIBE).

It knows nothing of transports or transactions; the stack calls it.
"""

from __future__ import annotations

from collections.abc import Iterator

from pbx.sip.dialog import Dialog
from pbx.sip.interfaces import IDialogUsage, IFlow, IServerTransaction
from pbx.sip.message import Request, Response


class DialogRouter:
    """Dialogs indexed by (Call-ID, local tag), which never changes, each with its usage."""

    __slots__ = ("_by_local",)

    def __init__(self) -> None:
        self._by_local: dict[tuple[str, str], list[tuple[Dialog, IDialogUsage]]] = {}

    def add(self, dialog: Dialog, usage: IDialogUsage) -> None:
        """Route `dialog` to `usage`; adding the same dialog again changes its usage.

        Raises:
            ValueError: another dialog has the same key (Call-ID, local tag, remote tag).
        """
        entries = self._by_local.setdefault((dialog.call_id, dialog.local_tag), [])
        for i, (other, _usage) in enumerate(entries):
            if other is dialog:
                entries[i] = (dialog, usage)
                return
            if other.remote_tag == dialog.remote_tag:
                raise ValueError(f"a dialog with key {dialog.key!r} exists")
        entries.append((dialog, usage))

    def remove(self, dialog: Dialog) -> None:
        """Forget a dialog; one that is not in the table is ignored."""
        index = (dialog.call_id, dialog.local_tag)
        entries = self._by_local.get(index)
        if entries is None:
            return
        entries[:] = [entry for entry in entries if entry[0] is not dialog]
        if not entries:
            del self._by_local[index]

    def _match(
        self, call_id: str | None, local_tag: str | None, remote_tag: str | None
    ) -> tuple[Dialog, IDialogUsage] | None:
        if local_tag is None or call_id is None:
            return None
        untagged = None
        for entry in self._by_local.get((call_id, local_tag), ()):
            dialog = entry[0]
            if dialog.remote_tag == remote_tag:
                return entry
            if dialog.remote_tag is None and dialog.is_uac:
                untagged = entry
        return untagged

    def find(self, request: Request) -> tuple[Dialog, IDialogUsage] | None:
        """The dialog and usage of a request the peer sent: local tag = To tag, remote tag = From tag."""
        return self._match(request.call_id, request.to.tag, request.from_.tag)

    def find_for_response(self, response: Response) -> tuple[Dialog, IDialogUsage] | None:
        """The dialog and usage of a response to our request: local tag = From tag, remote tag = To tag."""
        return self._match(response.call_id, response.from_.tag, response.to.tag)

    # -- routing -----------------------------------------------------------------------------------------

    def route_request(self, transaction: IServerTransaction, request: Request) -> object:
        """Hand an in-dialog request to its usage and return what the usage returned (maybe a Deferred).

        Raises:
            LookupError: no dialog matches (the stack answers 481 or lets another handler try).
            SipError: the dialog refused it (481 when terminated, 500 for a CSeq out of order).
        """
        found = self.find(request)
        if found is None:
            raise LookupError("no dialog")
        dialog, usage = found
        dialog.receive_request(request)
        return usage.dialog_request(transaction, request, dialog)

    def route_ack(self, request: Request, flow: IFlow) -> bool:
        """Hand the ACK of a 2xx to its usage; False when no dialog matches (the ACK is dropped)."""
        found = self.find(request)
        if found is None:
            return False
        found[1].dialog_ack(request, flow, found[0])
        return True

    def route_response(self, response: Response) -> bool:
        """Hand a response that matched no transaction to its dialog's usage; False when none matches."""
        found = self.find_for_response(response)
        if found is None:
            return False
        found[1].dialog_response(response, found[0])
        return True

    def usage_of(self, dialog: Dialog) -> IDialogUsage | None:
        """The usage that owns `dialog`, or None when it is not in the table."""
        for d, usage in self._by_local.get((dialog.call_id, dialog.local_tag), ()):
            if d is dialog:
                return usage
        return None

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._by_local.values())

    def __iter__(self) -> Iterator[Dialog]:
        for entries in list(self._by_local.values()):
            for dialog, _usage in list(entries):
                yield dialog

    def __contains__(self, dialog: object) -> bool:
        if not isinstance(dialog, Dialog):
            return False
        return any(d is dialog for d, _u in self._by_local.get((dialog.call_id, dialog.local_tag), ()))
