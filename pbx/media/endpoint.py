"""The PBX's own RTP endpoint on a call leg (RFC 3550): play, collect digits, record, music on hold.

`MediaEndpoint` implements `IMediaEndpoint` (read its docstrings for the behaviour the application sees).
It sends through an `IRtpTransport` (a relay leg it is attached to, or `pbx.media.udp.UdpRtpTransport`) and
is that transport's `IRtpConsumer`. Its output is paced by the shared `pbx.media.pacer.MediaClock` against
absolute deadlines (one timer for all endpoints); it registers with the clock only while it has something
to send, so idle endpoints cost nothing between packets. The RTP timestamp follows the reactor clock, the
first packet after silence carries the marker bit.

Receiving: packets of the current remote SSRC are tracked per RFC 3550 appendix A (`pbx.media.rtpsession`),
duplicates dropped, a new SSRC taken over after two sequential packets. Audio frames go to the recorder and,
when no telephone-event payload type was negotiated, to the Goertzel detector; telephone-events go to
`pbx.media.dtmf.DtmfReceiver` (one digit per event, whatever the redundancy and retransmitted ends; an event
whose end is lost is reported after 300 ms of quiet). RTCP: an SR (RR when we sent nothing) + SDES every
~5 s (randomised 0.5-1.5x, RFC 3550 6.2), BYE on close; received reports are parsed into `stats()`.

Digits from every source are de-duplicated, buffered and collected by `pbx.media.digits.DigitBuffer`; the
endpoint adds what only it knows: a recording's stop digit, and barge-in.

`MediaEngine` implements `IMediaEngine`: one clock, one pacer, one prompt cache for every endpoint.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pbx.media.digits import DEDUP_SECONDS, DigitBuffer
from pbx.media.dtmf import DtmfReceiver, InbandDtmfDetector, TelephoneEvent, digit_to_event
from pbx.media.interfaces import (
    DIGIT_SOURCES,
    EndpointStats,
    IMediaEndpoint,
    IMediaEngine,
    IRtpTransport,
    RecordingResult,
)
from pbx.media.pacer import MediaClock
from pbx.media.player import SKIP, AudioOutput, Codec, DigitOutput, PromptLibrary, codec_by_name
from pbx.media.recorder import Recorder, Writer
from pbx.media.rtpsession import RtpReceiver, RtpSender, build_report, parse_report

__all__ = ["DEDUP_SECONDS", "LATE_THRESHOLD", "MediaEndpoint", "MediaEngine", "RTCP_INTERVAL"]

LATE_THRESHOLD = 0.005
"""A packet sent more than this after its deadline counts in `late_sends`."""
RTCP_INTERVAL = 5.0
DTMF_QUIET = 0.3  # report an RFC 4733 event whose end never came after this long without its packets
CN_PAYLOAD_TYPE = 13  # comfort noise (RFC 3389): accepted and ignored

_HEADER = struct.Struct("!BBHII")
_log = Logger()


@implementer(IMediaEndpoint)
class MediaEndpoint:
    """The PBX speaking and listening on one call leg (see `IMediaEndpoint`)."""

    def __init__(
        self,
        clock: IReactorTime,
        transport: IRtpTransport,
        pacer: MediaClock,
        prompts: PromptLibrary,
        codec: str = "PCMU",
        payload_type: int | None = None,
        telephone_event: int | None = 101,
        rng: random.Random | None = None,
        writer: Writer | None = None,
        rtcp_interval: float = RTCP_INTERVAL,
        on_close: Callable[[MediaEndpoint], object] | None = None,
        continue_from: tuple[int, int, int, float] | None = None,
    ) -> None:
        self._codec: Codec = codec_by_name(codec)
        self.codec = self._codec.name
        self.payload_type = self._codec.payload_type if payload_type is None else payload_type
        if telephone_event is not None and (
            telephone_event == self.payload_type or not 0 <= telephone_event <= 127
        ):
            raise ValueError(f"bad telephone-event payload type {telephone_event}")
        self.telephone_event = telephone_event
        self.clock = clock
        self.transport = transport
        self.pacer = pacer
        self.prompts = prompts
        self.closed = False
        self.on_sent: Callable[[float], object] | None = None  # lateness of each packet sent (benchmarks)
        self._rng = rng or random.Random()
        self._writer = writer
        self._on_close = on_close
        self._sender = RtpSender(self.payload_type, clock.seconds(), rng, continue_from)
        self._receiver = RtpReceiver()
        self._cname = f"pbx-{self._sender.ssrc:08x}".encode()
        self._dtmf = DtmfReceiver()
        self._dtmf_timer: IDelayedCall | None = None
        self._inband = InbandDtmfDetector() if telephone_event is None else None
        self._output: AudioOutput | DigitOutput | None = None
        self._output_done: Deferred[Any] | None = None
        self._barge_in = False
        self._keys = DigitBuffer(clock)
        self._recorder: Recorder | None = None
        self._late_sends = 0
        self._max_late = 0.0
        self._packets_received = 0
        self._octets_received = 0
        self._invalid = 0
        self._rtcp_sent = 0
        self._rtcp_received = 0
        self._rtcp_invalid = 0
        self._remote_block: tuple[int, int] | None = None
        self._rtcp_interval = rtcp_interval
        self._rtcp_timer: IDelayedCall | None = clock.callLater(self._rtcp_delay(), self._send_rtcp)

    # --- output ------------------------------------------------------------------------------------------

    @property
    def playing(self) -> bool:
        return self._output is not None

    @property
    def last_sent(self) -> tuple[int, int, int, float] | None:
        """(SSRC, sequence number, RTP timestamp, reactor time) of the last audio packet sent, or None."""
        return self._sender.last_sent

    def play(self, items: Sequence[str], barge_in: bool = True) -> Deferred[str | None]:
        if self.closed:
            return succeed(None)
        if isinstance(items, str):
            items = [items]
        try:
            data = self.prompts.resolve(items, self._codec)
        except (ValueError, OSError) as error:
            return fail(ValueError(str(error)))
        done: Deferred[str | None] = Deferred()
        self._start_output(AudioOutput(data, self._codec), done, barge_in)
        return done

    def music_on_hold(self, path: str | None = None) -> None:
        if self.closed:
            return
        data = self.prompts.encoded(path or "moh", self._codec)
        self._start_output(AudioOutput(data, self._codec, loop=True), None, False)

    def send_digits(self, digits: str, duration_ms: int = 100) -> Deferred[None]:
        if self.closed:
            return succeed(None)
        if self.telephone_event is None:
            d = self.play([f"dtmf:{digits}"], barge_in=False)
            return d.addCallback(lambda _: None)
        done: Deferred[None] = Deferred()
        self._start_output(DigitOutput(digits, duration_ms), done, False)
        return done

    def stop(self) -> None:
        self._finish_output(None)
        if self._recorder is not None:
            self._recorder.finish("stopped")

    def _start_output(
        self, output: AudioOutput | DigitOutput, done: Deferred[Any] | None, barge_in: bool
    ) -> None:
        self._finish_output(None)
        self._output, self._output_done, self._barge_in = output, done, barge_in
        self._sender.talking = False  # the next packet starts a talkspurt
        self.pacer.add(self)

    def _finish_output(self, result: str | None) -> None:
        if self._output is None:
            return
        done = self._output_done
        self._output = self._output_done = None
        self._sender.talking = False
        self.pacer.remove(self)
        if done is not None:
            done.callback(result)

    def pace(self, deadline: float) -> None:
        """Send the packet due at `deadline` (called by the MediaClock)."""
        output = self._output
        if output is None:
            self.pacer.remove(self)
            return
        sender = self._sender
        timestamp = sender.timestamp_at(deadline)
        if isinstance(output, AudioOutput):
            payload = output.next_payload()
            if payload is None:
                self._finish_output(None)
                return
            data = sender.build(payload, timestamp, deadline)
        else:
            event = output.next_event(timestamp)
            if event is None:
                self._finish_output(None)
                return
            if event is SKIP:
                return
            marker, event_ts, payload = event
            data = sender.build_raw(payload, event_ts, deadline, marker, self.telephone_event)
        late = self.clock.seconds() - deadline
        self.transport.send_rtp(data)
        if late > LATE_THRESHOLD:
            self._late_sends += 1
        if late > self._max_late:
            self._max_late = late
        if self.on_sent is not None:
            self.on_sent(late)

    # --- input -------------------------------------------------------------------------------------------

    def rtp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.closed:
            return
        try:
            self._rtp(data)
        except Exception:  # never raise into the transport
            self._invalid += 1
            _log.failure("media endpoint: failed to handle an RTP packet")

    def _rtp(self, data: bytes) -> None:
        if len(data) < 12 or data[0] & 0xC0 != 0x80:
            self._invalid += 1
            return
        first, second, seq, timestamp, ssrc = _HEADER.unpack_from(data)
        start = 12
        end = len(data)
        if first & 0x3F:  # CSRCs, extension or padding
            start += 4 * (first & 0x0F)
            if first & 0x10 and end >= start + 4:
                start += 4 + 4 * struct.unpack_from("!H", data, start + 2)[0]
            if first & 0x20 and end > start:
                end -= data[-1]
            if start > end:
                self._invalid += 1
                return
        now = self.clock.seconds()
        accepted, changed = self._receiver.update(ssrc, seq, timestamp, now)
        if not accepted:
            return
        payload = data[start:end]
        if changed:
            self._flush_dtmf()
            self._dtmf = DtmfReceiver()
        self._packets_received += 1
        self._octets_received += len(payload)
        pt = second & 0x7F
        if pt == self.payload_type:
            if self._recorder is not None:
                self._recorder.feed(timestamp, payload, self.codec, changed)
            if self._inband is not None:
                for digit in self._inband.feed(self._codec.decode(payload)):
                    self._deliver(digit, "inband")
        elif pt == self.telephone_event:
            try:
                event = TelephoneEvent.parse(payload)
            except ValueError:
                self._invalid += 1
                return
            digits = self._dtmf.feed(timestamp, bool(second & 0x80), event)
            if self._dtmf_timer is not None and self._dtmf_timer.active():
                self._dtmf_timer.reset(DTMF_QUIET)
            else:
                self._dtmf_timer = self.clock.callLater(DTMF_QUIET, self._flush_dtmf)
            for digit in digits:
                self._deliver(digit, "rfc4733")
        elif pt != CN_PAYLOAD_TYPE:
            self._invalid += 1

    def _flush_dtmf(self) -> None:
        if self._dtmf_timer is not None and self._dtmf_timer.active():
            self._dtmf_timer.cancel()
        self._dtmf_timer = None
        for digit in self._dtmf.flush():
            self._deliver(digit, "rfc4733")

    def rtcp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.closed:
            return
        try:
            block = parse_report(data, self._receiver, self._sender.ssrc, self.clock.seconds())
        except ValueError:
            self._rtcp_invalid += 1
            return
        self._rtcp_received += 1
        if block is not None:
            self._remote_block = (block.fraction_lost, block.jitter)

    def _rtcp_delay(self) -> float:
        return self._rtcp_interval * self._rng.uniform(0.5, 1.5)

    def _send_rtcp(self, bye: bool = False) -> None:
        self._rtcp_timer = None
        data = build_report(self._sender, self._receiver, self.clock.seconds(), self._cname, bye)
        self.transport.send_rtcp(data)
        self._rtcp_sent += 1
        if not bye:
            self._rtcp_timer = self.clock.callLater(self._rtcp_delay(), self._send_rtcp)

    # --- digits ------------------------------------------------------------------------------------------

    @property
    def duplicate_digits(self) -> int:
        """Reports of a key press already delivered from another source (within `DEDUP_SECONDS`)."""
        return self._keys.duplicates

    def on_digit(self, callback: Callable[[str, str], object]) -> Callable[[], None]:
        return self._keys.on_digit(callback)

    def inject_digit(self, digit: str, source: str = "info") -> bool:
        digit = "0123456789*#ABCD"[digit_to_event(digit)]
        if source not in DIGIT_SOURCES:
            raise ValueError(f"unknown digit source {source!r}; known: {', '.join(DIGIT_SOURCES)}")
        if self.closed:
            return False
        return self._deliver(digit, source)

    def _deliver(self, digit: str, source: str) -> bool:
        keys = self._keys
        if not keys.first_report(digit, source):
            return False
        if self._recorder is not None and self._recorder.stop_digit(digit, source == "inband"):
            return True
        keys.publish(digit, source)
        if self._barge_in and isinstance(self._output, AudioOutput):
            self._finish_output(digit)
        keys.take_buffered()
        return True

    def clear_digits(self) -> None:
        self._keys.clear()

    def collect(
        self,
        max_digits: int,
        timeout: float = 5.0,
        first_timeout: float | None = None,
        terminators: str = "#",
    ) -> Deferred[str]:
        return self._keys.collect(max_digits, timeout, first_timeout, terminators, closed=self.closed)

    # --- recording ---------------------------------------------------------------------------------------

    def record(
        self,
        path: str,
        max_seconds: float = 60.0,
        silence_seconds: float = 5.0,
        stop_digits: str = "#",
    ) -> Deferred[RecordingResult]:
        if self.closed:
            return succeed(RecordingResult(None, 0.0, "closed"))
        if self._recorder is not None:
            self._recorder.finish("stopped")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            return fail(ValueError(f"cannot record to {path}: no directory {directory}"))
        done: Deferred[RecordingResult] = Deferred()

        def finished(result: RecordingResult | BaseException) -> None:
            if self._recorder is recorder:
                self._recorder = None
            if isinstance(result, BaseException):
                done.errback(Failure(result))
            else:
                done.callback(result)

        recorder = Recorder(
            self.clock, path, max_seconds, silence_seconds, stop_digits, finished, self._writer
        )
        self._recorder = recorder
        return done

    # --- life cycle --------------------------------------------------------------------------------------

    def stats(self) -> EndpointStats:
        source = self._receiver.source
        return EndpointStats(
            ssrc=self._sender.ssrc,
            packets_sent=self._sender.packets,
            octets_sent=self._sender.octets,
            packets_received=self._packets_received,
            octets_received=self._octets_received,
            remote_ssrc=None if source is None else source.ssrc,
            ssrc_changes=self._receiver.ssrc_changes,
            expected=0 if source is None else source.expected,
            lost=0 if source is None else source.lost,
            duplicates=0 if source is None else source.duplicates,
            reordered=0 if source is None else source.reordered,
            jitter_ms=0.0 if source is None else source.jitter / 8.0,
            late_sends=self._late_sends,
            max_late_ms=self._max_late * 1000.0,
            resyncs=self.pacer.resyncs,
            rtcp_sent=self._rtcp_sent,
            rtcp_received=self._rtcp_received,
            rtcp_invalid=self._rtcp_invalid,
            invalid=self._invalid,
            digits=dict(self._keys.counts),
            remote_fraction_lost=None if self._remote_block is None else self._remote_block[0],
            remote_jitter=None if self._remote_block is None else self._remote_block[1],
        )

    def close(self) -> None:
        if self.closed:
            return
        self._finish_output(None)
        if self._recorder is not None:
            self._recorder.finish("closed")
        self._keys.end_collect()
        if self._dtmf_timer is not None and self._dtmf_timer.active():
            self._dtmf_timer.cancel()
        self._dtmf_timer = None
        if self._rtcp_timer is not None and self._rtcp_timer.active():
            self._rtcp_timer.cancel()
        self._send_rtcp(bye=True)
        self.closed = True
        self._keys.unsubscribe_all()
        if self._on_close is not None:
            self._on_close(self)


@implementer(IMediaEngine)
class MediaEngine:
    """Endpoints sharing one clock, one pacer and one prompt cache.

    Args:
        clock: the reactor's time.
        prompt_dir: where prompt names are looked up (sounds/en); None: only paths and tones play.
        phases: pacer slots per 20 ms (see `MediaClock`).
        writer: writes a recording (path, pcm); default `wav.write_pcm_atomic` inline. Pass one that runs
            it in a thread and returns a Deferred to keep the fsync off the reactor.
    """

    def __init__(
        self,
        clock: IReactorTime,
        prompt_dir: str | os.PathLike[str] | None,
        phases: int = 10,
        writer: Writer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.pacer = MediaClock(clock, phases=phases)
        self.prompts = PromptLibrary(prompt_dir)
        self.writer = writer
        self.rng = rng
        self._open: set[MediaEndpoint] = set()

    @property
    def endpoints(self) -> int:
        return len(self._open)

    def create_endpoint(
        self,
        transport: IRtpTransport,
        codec: str = "PCMU",
        payload_type: int | None = None,
        telephone_event: int | None = 101,
        continue_from: tuple[int, int, int, float] | None = None,
    ) -> MediaEndpoint:
        endpoint = MediaEndpoint(
            self.clock,
            transport,
            self.pacer,
            self.prompts,
            codec=codec,
            payload_type=payload_type,
            telephone_event=telephone_event,
            rng=self.rng,
            writer=self.writer,
            on_close=self._open.discard,
            continue_from=continue_from,
        )
        self._open.add(endpoint)
        return endpoint

    def close(self) -> None:
        for endpoint in list(self._open):
            endpoint.close()
        self.pacer.stop()
