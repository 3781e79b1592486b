"""The RTP port pool: even ports for RTP, the next odd port for RTCP (RFC 3550 section 11).

`PortPool` hands out the even port N of each pair (N, N + 1) inside a configured range, round-robin: a
released port goes to the back of the queue, so the port a call just gave up is the last one handed out again
and late packets of the previous call cannot leak into the next one.

The pool binds nothing and knows nothing of sockets: a caller that cannot bind a port it was given releases it
(back to the end of the queue) and asks for the next one; `pbx.media.relay` does exactly that, unless the bind
failed for want of resources (`out_of_resources`: no descriptor left), which another port would not cure.
"""

from __future__ import annotations

import errno
from collections import deque

__all__ = ["PortPool", "PortsExhausted", "out_of_resources"]

_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def out_of_resources(error: BaseException) -> bool:
    """Whether a failed bind (an `OSError`, or Twisted's `CannotListenError` around one) says the process or
    the system is out of descriptors or memory, rather than that this port is taken: other ports of the
    pool would fail the same way now, and succeed again once resources come back."""
    inner = getattr(error, "socketError", error)
    return isinstance(inner, OSError) and inner.errno in _RESOURCE_ERRORS


class PortsExhausted(Exception):
    """No RTP port pair is free (or none that could be bound)."""


class PortPool:
    """Even RTP ports from `[start, end]`, each with its RTCP port (N + 1) also inside the range.

    Args:
        start: the lowest port of the range (rounded up to an even port).
        end: the highest port of the range, inclusive; the last pair is (N, N + 1) with N + 1 <= end.

    Raises:
        ValueError: when the range holds no pair or leaves 1..65535.
    """

    def __init__(self, start: int, end: int) -> None:
        if not 1 <= start <= end <= 65535:
            raise ValueError(f"bad RTP port range {start}-{end}: need 1 <= start <= end <= 65535")
        first = start + (start & 1)
        ports = range(first, end, 2)  # N + 1 <= end
        if not ports:
            raise ValueError(f"RTP port range {start}-{end} holds no even/odd port pair")
        self.start = start
        self.end = end
        self._free: deque[int] = deque(ports)
        self._used: set[int] = set()

    @property
    def capacity(self) -> int:
        """How many pairs the range holds."""
        return len(self._free) + len(self._used)

    @property
    def available(self) -> int:
        """How many pairs can still be allocated."""
        return len(self._free)

    @property
    def in_use(self) -> int:
        """How many pairs are allocated."""
        return len(self._used)

    def allocate(self) -> int:
        """The even RTP port of a free pair (its RTCP port is the returned port + 1).

        Raises:
            PortsExhausted: when every pair is in use.
        """
        if not self._free:
            raise PortsExhausted(f"all {self.capacity} RTP port pairs of {self.start}-{self.end} are in use")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a pair back; it is handed out again only after every other free pair.

        Raises:
            ValueError: when `port` is not allocated (a double release is a bug in the caller).
        """
        try:
            self._used.remove(port)
        except KeyError:
            raise ValueError(f"RTP port {port} is not allocated from {self.start}-{self.end}") from None
        self._free.append(port)

    def __repr__(self) -> str:
        return f"<PortPool {self.start}-{self.end}: {self.in_use} in use, {self.available} free>"
