"""Fakes for the call applications: a call (`AppCall`), a relay leg, a media engine and an endpoint that
behaves like `IMediaEndpoint` on a `task.Clock` (prompts take a fixed time, the test presses digits)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from pbx.media.interfaces import RecordingResult

OFFER_ANSWER = (
    b"v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)


class FakeLeg:
    def __init__(self) -> None:
        self.consumer: Any = None
        self.attach_calls = 0

    @property
    def attached(self) -> bool:
        return self.consumer is not None

    def attach(self, consumer: Any) -> None:
        self.attach_calls += 1
        self.consumer = consumer

    def detach(self) -> None:
        self.consumer = None

    def send_rtp(self, data: bytes) -> None:
        pass

    def send_rtcp(self, data: bytes) -> None:
        pass


class FakeCall:
    """An `AppCall`: `answer_locally`/`early_media` record what the PBX would send."""

    def __init__(self, sdp: bytes | None = OFFER_ANSWER, tenant: str = "default") -> None:
        self.id = "call-1"
        self._tenant = tenant
        self.ended = False
        self.endpoint: Any = None
        self.sent: list[int] = []  # 183 / 200, in order
        self._sdp = sdp
        self.leg = FakeLeg()

    @property
    def tenant(self) -> str:
        return self._tenant

    @property
    def answered(self) -> bool:
        return 200 in self.sent

    @property
    def local_sdp(self) -> bytes | None:
        return self._sdp if self.sent else None

    def answer_locally(self) -> None:
        if not self.answered:
            self.sent.append(200)

    def early_media(self) -> bool:
        if not self.sent:
            self.sent.append(183)
        return self.sent[0] == 183

    def media_ready(self) -> Deferred[bool]:
        return succeed(not self.ended)

    def media_leg(self) -> Any:
        return self.leg if self.sent and self._sdp else None

    def end(self) -> None:
        """The caller hangs up: the call closes its endpoint, as `Call._end` does."""
        self.ended = True
        if self.endpoint is not None:
            self.endpoint.close()


class FakeEndpoint:
    """An `IMediaEndpoint` on a clock: each played item lasts `item_seconds`; `press` delivers a digit."""

    def __init__(self, clock: Clock, codec: str, payload_type: int, telephone_event: int | None) -> None:
        self.clock = clock
        self.codec = codec
        self.payload_type = payload_type
        self.telephone_event = telephone_event
        self.item_seconds = 2.0
        self.closed = False
        self.continue_from: Any = None
        self.moh = False
        self.played: list[tuple[list[str], bool]] = []
        self.buffer: list[str] = []
        self.unknown: set[str] = set()  # items that make play() fail with ValueError
        self._play: tuple[Deferred[str | None], bool, Any] | None = None
        self._collect: dict[str, Any] | None = None
        self._record: tuple[Deferred[RecordingResult], str, float, str, Any] | None = None
        self.records: list[dict[str, Any]] = []

    @property
    def playing(self) -> bool:
        return self._play is not None

    # output

    def play(self, items: list[str], barge_in: bool = True) -> Deferred[str | None]:
        self._stop_play(None)
        self.played.append((list(items), barge_in))
        if any(i in self.unknown for i in items):
            d: Deferred[str | None] = Deferred()
            d.errback(ValueError(f"unknown prompt {items}"))
            return d
        d = Deferred()
        timer = self.clock.callLater(self.item_seconds * len(items), self._stop_play, None)
        self._play = (d, barge_in, timer)
        return d

    def music_on_hold(self, path: str | None = None) -> None:
        self._stop_play(None)
        self.played.append(([path or "moh"], False))
        self.moh = True

    def _stop_play(self, digit: str | None) -> None:
        self.moh = False
        if self._play is not None:
            d, _, timer = self._play
            self._play = None
            if timer.active():
                timer.cancel()
            d.callback(digit)

    def stop(self) -> None:
        self._stop_play(None)
        self._end_record("stopped", None)

    # digits

    def press(self, digit: str) -> None:
        if self._record is not None and digit in self._record[3]:
            self._end_record("digit", digit)
            return
        self.buffer.append(digit)
        if self._play is not None and self._play[1]:
            self._stop_play(digit)
        self._feed()

    def inject_digit(self, digit: str, source: str = "info") -> bool:
        self.press(digit)
        return True

    def clear_digits(self) -> None:
        self.buffer.clear()

    def collect(
        self,
        max_digits: int,
        timeout: float = 5.0,
        first_timeout: float | None = None,
        terminators: str = "#",
    ) -> Deferred[str]:
        if self._collect is not None:
            self._finish_collect()
        d: Deferred[str] = Deferred()
        self._collect = {"d": d, "max": max_digits, "timeout": timeout, "term": terminators, "got": ""}
        self._collect["timer"] = self.clock.callLater(
            timeout if first_timeout is None else first_timeout, self._finish_collect
        )
        self._feed()
        return d

    def _feed(self) -> None:
        c = self._collect
        if c is None:
            return
        while self.buffer and self._collect is c:
            digit = self.buffer.pop(0)
            if digit in c["term"]:
                self._finish_collect()
                return
            c["got"] += digit
            if len(c["got"]) >= c["max"]:
                self._finish_collect()
                return
            c["timer"].cancel()
            c["timer"] = self.clock.callLater(c["timeout"], self._finish_collect)

    def _finish_collect(self) -> None:
        c, self._collect = self._collect, None
        if c is not None:
            if c["timer"].active():
                c["timer"].cancel()
            c["d"].callback(c["got"])

    # recording

    def record(
        self, path: str, max_seconds: float = 60.0, silence_seconds: float = 5.0, stop_digits: str = "#"
    ) -> Deferred[RecordingResult]:
        d: Deferred[RecordingResult] = Deferred()
        timer = self.clock.callLater(max_seconds, self._end_record, "max_length", None)
        self._record = (d, path, self.clock.seconds(), stop_digits, timer)
        self.records.append({"path": path, "max_seconds": max_seconds, "silence_seconds": silence_seconds})
        return d

    def _end_record(self, reason: str, digit: str | None) -> None:
        if self._record is not None:
            d, path, start, _, timer = self._record
            self._record = None
            if timer.active():
                timer.cancel()
            d.callback(RecordingResult(path, self.clock.seconds() - start, reason, digit, True))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._stop_play(None)
            self._finish_collect()
            self._end_record("closed", None)


class FakeEngine:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.created: list[FakeEndpoint] = []
        self.transports: list[Any] = []

    def create_endpoint(
        self,
        transport: Any,
        codec: str = "PCMU",
        payload_type: int | None = None,
        telephone_event: int | None = 101,
        continue_from: tuple[int, int, int, float] | None = None,
    ) -> FakeEndpoint:
        endpoint = self._create(transport, codec, payload_type, telephone_event)
        endpoint.continue_from = continue_from
        return endpoint

    def _create(
        self,
        transport: Any,
        codec: str = "PCMU",
        payload_type: int | None = None,
        telephone_event: int | None = 101,
    ) -> FakeEndpoint:
        endpoint = FakeEndpoint(
            self.clock, codec, payload_type if payload_type is not None else 0, telephone_event
        )
        self.created.append(endpoint)
        self.transports.append(transport)
        return endpoint


def done(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (AssertionError if it has not)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


__all__ = ["FakeCall", "FakeEndpoint", "FakeEngine", "FakeLeg", "OFFER_ANSWER", "done", "succeed"]
