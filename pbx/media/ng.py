"""A client of rtpengine's `ng` control protocol: bencoded dictionaries over UDP (rtpengine's ng protocol
documentation; bencode: `pbx.media.bencode`).

A request is `<cookie> <bencoded dictionary>` in one datagram, the dictionary holding at least `command`
("ping", "offer", "answer", "delete", "query" ...). rtpengine answers `<cookie> <bencoded dictionary>` with
the same cookie and a `result`: "ok" (or "pong"), "error" with an `error-reason`, or "load limit". It keeps
the answers of recent cookies and sends the same answer again for a repeated cookie, so a request is simply
retransmitted with its cookie until answered: after `interval` seconds, then twice that, and so on, until
`timeout` seconds have passed (then `NgTimeout`). Answers are matched by cookie; datagrams from another
address, with an unknown cookie, or that do not decode are dropped (and counted).

Cookies are a random per-client prefix and a counter: unique across PBX restarts, so rtpengine's cache of
answers never hands an old answer to a new request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from pbx.media.bencode import BencodeError, decode, encode

__all__ = ["NgClient", "NgError", "NgTimeout"]

Address = tuple[str, int]

MAX_REASON = 120
"""How much of rtpengine's `error-reason` goes into an `NgError` (printable ASCII only)."""


class NgError(Exception):
    """rtpengine refused a request (`result` "error" or "load limit"), or the client was closed.

    Attributes:
        reason: rtpengine's `error-reason` (printable ASCII, at most `MAX_REASON` characters) or ours.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NgTimeout(NgError):
    """No answer within the client's timeout (rtpengine down, unreachable, or overloaded)."""


def _text(value: object) -> str:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return "".join(chr(c) for c in raw if 0x20 <= c < 0x7F)[:MAX_REASON]


@dataclass(slots=True)
class _Pending:
    data: bytes
    deferred: Deferred[dict[bytes, Any]]
    deadline: float
    wait: float
    timer: IDelayedCall | None = field(default=None)


class NgClient(DatagramProtocol):
    """Sends ng requests to one rtpengine and matches the answers (module docstring).

    Args:
        clock: schedules retransmissions and timeouts.
        address: rtpengine's ng listener, (IP, port).
        interval: the first retransmission interval in seconds (doubled each time).
        timeout: seconds after which an unanswered request fails with `NgTimeout`.

    Listen with it on a UDP port (`reactor.listenUDP(0, client, interface=...)`) before `request`.
    """

    _log = Logger()

    def __init__(
        self, clock: IReactorTime, address: Address, *, interval: float = 0.5, timeout: float = 4.0
    ) -> None:
        self.clock = clock
        self.address = address
        self.interval = interval
        self.timeout = timeout
        self.counters = {"requests": 0, "retransmissions": 0, "timeouts": 0, "errors": 0, "dropped": 0}
        self._prefix = os.urandom(4).hex()
        self._next = 0
        self._pending: dict[bytes, _Pending] = {}
        self._closed = False

    @property
    def pending(self) -> int:
        """Requests waiting for their answer."""
        return len(self._pending)

    def request(self, command: dict[str, Any]) -> Deferred[dict[bytes, Any]]:
        """Send `command` (a dictionary with a "command" key; bencode's types) and fire with rtpengine's
        answer (a dictionary with bytes keys) when its `result` is "ok" or "pong".

        Fails with `NgError` for an "error" or "load limit" answer or a closed client, `NgTimeout` when no
        answer came within `timeout`, and `BencodeError` (synchronously, in the Deferred) for a command that
        cannot be encoded.
        """
        if self._closed or self.transport is None:
            return fail(NgError("ng client closed"))
        self._next += 1
        cookie = f"{self._prefix}_{self._next}".encode()
        try:
            data = cookie + b" " + encode(command)
        except BencodeError as e:
            return fail(e)
        deferred: Deferred[dict[bytes, Any]] = Deferred()
        pending = _Pending(data, deferred, self.clock.seconds() + self.timeout, self.interval)
        self._pending[cookie] = pending
        self.counters["requests"] += 1
        self._send(cookie, pending)
        return deferred

    def _send(self, cookie: bytes, pending: _Pending) -> None:
        left = pending.deadline - self.clock.seconds()
        pending.timer = self.clock.callLater(max(0.0, min(pending.wait, left)), self._expired, cookie)
        try:  # after the timer: an answer may come back before write returns (a fake, a local server)
            self.transport.write(pending.data, self.address)  # type: ignore[union-attr]
        except OSError as e:  # a full socket buffer, no route: the retransmission tries again
            self._log.warn("ng request to {addr} not sent: {e}", addr=self.address, e=e)

    def _expired(self, cookie: bytes) -> None:
        pending = self._pending.get(cookie)
        if pending is None:
            return
        pending.timer = None
        if self.clock.seconds() >= pending.deadline:
            del self._pending[cookie]
            self.counters["timeouts"] += 1
            pending.deferred.errback(NgTimeout(f"no answer from rtpengine at {self.address[0]}"))
            return
        self.counters["retransmissions"] += 1
        pending.wait *= 2
        self._send(cookie, pending)

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        cookie, _, body = data.partition(b" ")
        pending = self._pending.get(cookie)
        if pending is None or tuple(addr[:2]) != tuple(self.address):
            self.counters["dropped"] += 1  # a late answer to a retransmission, or a stranger
            return
        try:
            answer = decode(body)
        except BencodeError:
            self.counters["dropped"] += 1
            return
        if not isinstance(answer, dict):
            self.counters["dropped"] += 1
            return
        del self._pending[cookie]
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        result = answer.get(b"result")
        if result in (b"ok", b"pong"):
            pending.deferred.callback(answer)
            return
        self.counters["errors"] += 1
        reason = answer.get(b"error-reason", result if isinstance(result, bytes) else b"no result")
        pending.deferred.errback(NgError(_text(reason) or "error"))

    def close(self) -> None:
        """Fail every pending request with `NgError` and refuse new ones (the port is the caller's)."""
        self._closed = True
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            entry.deferred.errback(NgError("ng client closed"))
