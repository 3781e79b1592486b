"""One side of an answered call as the B2BUA sees it: a dialog and where its requests go.

Requests inside a dialog go to the flow the peer used (its registration's flow, or the flow its INVITE came
on), not to a private Contact address: phones behind NAT are reached the way they reached us.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pbx.sip.dialog import Dialog


@dataclass(eq=False)
class Peer:
    """A dialog with one phone (side "a": the caller, side "b": the callee).

    Attributes:
        side: "a" or "b".
        dialog: the dialog.
        destination: (transport, host, port) for requests to this peer.
        pending_2xx: the retransmitter of a 2xx we sent to this peer and whose ACK we await, if any.
        pending_ack_body: when the peer's ACK will carry an SDP answer that must be forwarded (late offer), a
            callable taking that body.
    """

    side: str
    dialog: Dialog
    destination: tuple[str, str, int]
    pending_2xx: Any = None
    pending_ack_body: Any = None
    extension: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    credentials: Any = None  # realm -> Credentials for challenges to our requests (SIP URI targets)
    digests: Any = None  # the DigestCache of those challenges
