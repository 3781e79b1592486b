"""A fake rtpengine for `pbx.media.ng` and `pbx.media.rtpengine` tests: the client's UDP transport, which
answers each ng request (bencoded) the way rtpengine does, at once or when the test says so."""

from __future__ import annotations

from typing import Any

from pbx.media.bencode import decode, encode
from pbx.media.ng import NgClient

NG = ("127.0.0.1", 2223)
ENGINE_ADDRESS = "10.0.0.5"


class FakeNgServer:
    """The transport of an `NgClient`: records every datagram and answers like rtpengine.

    Attributes:
        requests: (cookie, decoded command) of every datagram written, retransmissions included.
        calls: ng call-id -> {"a": port, "b": port} of the calls set up (offer seen) and not deleted.
        fail: command name -> error-reason: answered {"result": "error"} instead.
        silent: command names never answered (timeouts).
        auto: answer within `write` (else `deliver()` answers what is waiting).
    """

    def __init__(self, client: NgClient, *, auto: bool = True) -> None:
        self.client = client
        self.requests: list[tuple[bytes, dict[bytes, Any]]] = []
        self.calls: dict[bytes, dict[str, int]] = {}
        self.deleted: list[bytes] = []
        self.fail: dict[str, str] = {}
        self.silent: set[str] = set()
        self.auto = auto
        self.waiting: list[bytes] = []
        self._next_port = 30000
        self._answers: dict[bytes, bytes] = {}  # rtpengine answers a repeated cookie with the same answer
        client.makeConnection(self)  # type: ignore[arg-type]

    # -- the transport -------------------------------------------------------------------------------------

    def write(self, data: bytes, addr: Any = None) -> None:
        assert addr == self.client.address
        cookie, _, body = data.partition(b" ")
        command = decode(body)
        self.requests.append((cookie, command))
        name = command[b"command"].decode()
        if name in self.silent:
            return
        if cookie not in self._answers:
            self._answers[cookie] = cookie + b" " + encode(self._answer(name, command))
        if self.auto:
            self.client.datagramReceived(self._answers[cookie], NG)
        else:
            self.waiting.append(self._answers[cookie])

    def deliver(self) -> None:
        waiting, self.waiting = self.waiting, []
        for data in waiting:
            self.client.datagramReceived(data, NG)

    def getHost(self) -> Any:
        return None

    def stopListening(self) -> None:
        pass

    # -- rtpengine -----------------------------------------------------------------------------------------

    def commands(self, name: str | None = None) -> list[dict[bytes, Any]]:
        """The requests (each cookie once), or those of one command."""
        seen: set[bytes] = set()
        out = []
        for cookie, command in self.requests:
            if cookie not in seen and (name is None or command[b"command"] == name.encode()):
                out.append(command)
            seen.add(cookie)
        return out

    def _answer(self, name: str, command: dict[bytes, Any]) -> dict[str, Any]:
        if name in self.fail:
            return {"result": "error", "error-reason": self.fail[name]}
        if name == "ping":
            return {"result": "pong"}
        call_id = command.get(b"call-id", b"")
        if name in ("offer", "answer"):
            ports = self.calls.setdefault(call_id, {})
            if name == "offer" and "b" not in ports:
                ports["b"] = self._port()
            if name == "answer" and "a" not in ports:
                ports["a"] = self._port()
            side = "b" if name == "offer" else "a"
            sdp = command[b"sdp"].replace(b"m=audio 9 ", b"m=audio %d " % ports[side])
            return {"result": "ok", "sdp": sdp}
        if name == "query":
            if call_id not in self.calls:
                return {"result": "error", "error-reason": "Unknown call-id"}
            return {
                "result": "ok",
                "tags": {tag: self._monologue(port) for tag, port in self.calls[call_id].items()},
            }
        if name == "delete":
            if self.calls.pop(call_id, None) is None:
                return {"result": "error", "error-reason": "Unknown call-id"}
            self.deleted.append(call_id)
            return {"result": "ok"}
        if name in ("play media", "stop media", "play DTMF"):
            if call_id not in self.calls:
                return {"result": "error", "error-reason": "Unknown call-id"}
            return {"result": "ok", "duration": 2000} if name == "play media" else {"result": "ok"}
        return {"result": "error", "error-reason": "Unrecognized command"}

    def _port(self) -> int:
        port, self._next_port = self._next_port, self._next_port + 2
        return port

    @staticmethod
    def _monologue(port: int) -> dict[str, Any]:
        def stream(number: int, packets: int) -> dict[str, Any]:
            return {
                "local port": number,
                "local address": ENGINE_ADDRESS,
                "endpoint": {"family": "IPv4", "address": "192.168.1.10", "port": 4000},
                "stats": {"packets": packets, "bytes": packets * 172, "errors": 0},
            }

        return {"medias": [{"index": 1, "type": "audio", "streams": [stream(port, 50), stream(port + 1, 2)]}]}
