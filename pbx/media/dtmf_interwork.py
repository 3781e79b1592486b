"""DTMF interworking and codec conversion between the two legs of a relayed call (RFC 4733, SIP INFO as
phones send it, in-band Q.23 tones; G.711 µ-law <-> A-law through `pbx.media.transcode`).

Each leg has a DTMF method, from what its phone negotiated (`LegFormats.method`): "rfc4733" when
telephone-event was agreed in SDP, else "info" when the phone takes SIP INFO (its Allow lists INFO, or it
sent DTMF by INFO in this call), else "inband". When the two legs differ, a key press is converted:

- RFC 4733 events from a leg -> SIP INFO (`Signal=`, `Duration=` in ms) or in-band tones to the other leg,
  once the event has ended (its full duration is known then);
- SIP INFO from a leg (`Interworking.info_received`) -> RFC 4733 events or in-band tones to the other leg;
- in-band tones from a leg without telephone-event (Goertzel, `InbandDtmfDetector`) -> RFC 4733 events to
  a leg that has telephone-event (not to an INFO leg: its in-band audio reaches it anyway).

Events and tones the PBX generates go into the RTP stream the other phone already receives (`RtpPath`): the
same SSRC, sequence numbers continuing it, timestamps on its clock (RFC 3550 5.1), a start packet with the
marker bit, an update every 20 ms and three end packets with the E bit (RFC 4733 2.5.1), all with the
event's start timestamp. Audio from the sending phone is withheld while they play, and relayed packets after
them are renumbered to follow on. A `RtpPath` is the relay's transform for one direction
(`IRelayLeg.set_transform`); it also rewrites payload types and transcodes PCMU <-> PCMA.

Time is the injected clock's; digits are generated one after another (queued). This module knows nothing of
SIP or SDP: call control passes the negotiated payload types and a function that sends an INFO.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pbx.media.digits import DEDUP_SECONDS
from pbx.media.dtmf import DtmfReceiver, DtmfSender, InbandDtmfDetector, TelephoneEvent
from pbx.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from pbx.media.interfaces import IRelaySession
from pbx.media.tones import dtmf_pcm
from pbx.media.transcode import PayloadMap, convert_rtp, payload_map, payload_offset

__all__ = [
    "DEFAULT_DURATION_MS",
    "INFO_CONTENT_TYPE",
    "Interworking",
    "LegFormats",
    "RtpPath",
    "build_dtmf_info",
    "info_duration",
]

INFO_CONTENT_TYPE = "application/dtmf-relay"
DEFAULT_DURATION_MS = 100  # an INFO without Duration, and a digit found in band
MIN_DURATION_MS, MAX_DURATION_MS = 40, 2000  # what is generated, whatever a phone asked for
_TICK = 0.02  # one packet per 20 ms
_FRAME = 160  # samples (timestamp units) per 20 ms at 8 kHz
_GAP_MS = 60  # silence after an in-band digit, so the next one is a new press
_HEADER = struct.Struct("!BBHII")
_DECODERS = {"pcmu": ulaw_decode, "pcma": alaw_decode}
_ENCODERS = {"pcmu": ulaw_encode, "pcma": alaw_encode}
_random = random.Random()
_log = Logger(namespace="pbx.media.dtmf_interwork")


def build_dtmf_info(digit: str, duration_ms: int = DEFAULT_DURATION_MS) -> tuple[str, bytes]:
    """The Content-Type and body of a SIP INFO carrying `digit` (`application/dtmf-relay`, as phones send:
    "Signal=5\\r\\nDuration=160\\r\\n", the duration in ms)."""
    if len(digit) != 1 or digit.upper() not in "0123456789*#ABCD":
        raise ValueError(f"not a DTMF digit: {digit!r}")
    duration = min(max(int(duration_ms), 1), 60000)
    return INFO_CONTENT_TYPE, f"Signal={digit.upper()}\r\nDuration={duration}\r\n".encode("ascii")


def info_duration(body: bytes | str) -> int | None:
    """The `Duration=` (ms) of an `application/dtmf-relay` body, None when absent or not a number."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "duration":
            value = value.strip()
            return int(value) if value.isdigit() and len(value) <= 6 else None
    return None


@dataclass(frozen=True, slots=True)
class LegFormats:
    """What one leg's phone negotiated.

    Attributes:
        audio: its audio formats, (payload type, lower-case encoding) in preference order.
        telephone_event: its telephone-event payload type, None when not negotiated.
        info: whether it takes DTMF by SIP INFO (its Allow lists INFO, or it sent DTMF INFO).
    """

    audio: tuple[tuple[int, str], ...] = ()
    telephone_event: int | None = None
    info: bool = False

    @property
    def method(self) -> str:
        """How DTMF reaches this phone: "rfc4733", "info" or "inband"."""
        if self.telephone_event is not None:
            return "rfc4733"
        return "info" if self.info else "inband"

    @property
    def codec(self) -> tuple[int, str] | None:
        """Its first audio format, (payload type, encoding): what the PBX generates tones in."""
        return self.audio[0] if self.audio else None


def _needed(source: LegFormats, target: LegFormats, pmap: PayloadMap) -> bool:
    """Whether the source -> target direction needs a path at all (else the relay's plain hot path)."""
    return bool(pmap) or source.telephone_event != target.telephone_event


class RtpPath:
    """The transform of one direction (source phone -> target phone): payload types, transcoding, and the
    DTMF the PBX converts or generates into the target's stream.

    Args:
        clock: for pacing what the PBX generates.
        source, target: the two legs' formats.
        send: sends one RTP packet to the target phone (the target relay leg's `send_rtp`).
        send_info: sends a digit by SIP INFO to the target phone: (digit, duration in ms).
    """

    def __init__(
        self,
        clock: IReactorTime,
        source: LegFormats,
        target: LegFormats,
        send: Callable[[bytes], None],
        send_info: Callable[[str, int], object],
    ) -> None:
        self._clock = clock
        self._send = send
        self._send_info = send_info
        self._ssrc = _random.getrandbits(32)
        self._seq = _random.getrandbits(16)
        self._ts = _random.getrandbits(32)
        self._ts_at = clock.seconds()
        self._seq_offset = 0
        self._resync = False
        self._queue: list[tuple[str, int]] = []
        self._packets: list[bytes] = []
        self._timer: IDelayedCall | None = None
        self._recent: list[tuple[float, str, str]] = []  # (time, digit, source) of recent presses
        self.generated = 0  # digits generated into the target's stream (events or tones)
        self.duplicates = 0  # presses reported by a second source, dropped
        self.converted = 0  # digits taken from the source's stream and sent on otherwise
        self.closed = False
        self.reconfigure(source, target)

    def reconfigure(self, source: LegFormats, target: LegFormats) -> None:
        """New formats after a new offer/answer (a re-INVITE): the stream state is kept."""
        self.source, self.target = source, target
        self._map = payload_map(source.audio, target.audio)
        self._source_te = source.telephone_event
        self._target_te = target.telephone_event
        self._receiver = DtmfReceiver() if self._source_te is not None and self._target_te is None else None
        detect = self._source_te is None and self._target_te is not None
        self._detector = InbandDtmfDetector() if detect else None
        self._decoders = {pt: _DECODERS[e] for pt, e in source.audio if e in _DECODERS} if detect else {}

    @property
    def needed(self) -> bool:
        return _needed(self.source, self.target, self._map)

    # -- the relay's transform ------------------------------------------------------------------------

    def __call__(self, packet: bytes) -> bytes | None:
        pt = packet[1] & 0x7F
        if pt == self._source_te and pt is not None:
            if self._target_te is None:
                self._event_in(packet)
                return None
            if self._target_te != pt:
                packet = convert_rtp(packet, None, self._target_te) or packet
        else:
            decode = self._decoders.get(pt)
            if decode is not None and self._detector is not None:
                self._detect(packet, decode)
            entry = self._map.get(pt)
            if entry is not None:
                converted = convert_rtp(packet, *entry)
                if converted is None:
                    return None
                packet = converted
        return self._out(packet)

    def _out(self, packet: bytes) -> bytes | None:
        """Note where the relayed stream is; renumber it after generated packets; withhold it while the
        PBX generates."""
        _, _, seq, ts, ssrc = _HEADER.unpack_from(packet)
        if self._packets or self._timer is not None:
            return None  # the PBX is speaking for the source: its audio waits
        if self._resync:
            self._resync = False
            self._seq_offset = (self._seq + 1 - seq) & 0xFFFF
        if self._seq_offset:
            seq = (seq + self._seq_offset) & 0xFFFF
            out = bytearray(packet)
            struct.pack_into("!H", out, 2, seq)
            packet = bytes(out)
        self._ssrc, self._seq, self._ts, self._ts_at = ssrc, seq, ts, self._clock.seconds()
        return packet

    # -- digits from the source ---------------------------------------------------------------------------

    def _event_in(self, packet: bytes) -> None:
        bounds = payload_offset(packet)
        if self._receiver is None or bounds is None or bounds[1] - bounds[0] != TelephoneEvent.SIZE:
            return
        try:
            event = TelephoneEvent.parse(packet[bounds[0] : bounds[1]])
        except ValueError:
            return
        timestamp = int.from_bytes(packet[4:8], "big")
        for digit in self._receiver.feed(timestamp, bool(packet[1] & 0x80), event):
            self.converted += 1
            self.deliver(digit, event.duration // 8 if event.end else DEFAULT_DURATION_MS, "rfc4733")

    def _detect(self, packet: bytes, decode: Callable[[bytes], bytes]) -> None:
        bounds = payload_offset(packet)
        if bounds is None or self._detector is None:
            return
        for digit in self._detector.feed(decode(packet[bounds[0] : bounds[1]])):
            self.converted += 1
            self.deliver(digit, DEFAULT_DURATION_MS, "inband")

    # -- digits to the target -------------------------------------------------------------------------------

    def duplicate(self, digit: str, source: str) -> bool:
        """Whether `digit` from `source` ("rfc4733", "info", "inband") is a key press already delivered
        from another source less than `DEDUP_SECONDS` ago (phones that send both events and INFO, or INFO
        and tones); if not, it is remembered."""
        now = self._clock.seconds()
        recent = [entry for entry in self._recent if now - entry[0] < DEDUP_SECONDS]
        for i, (_, seen, kind) in enumerate(recent):
            if seen == digit and kind != source:
                del recent[i]  # one report of another source absorbs one
                self._recent = recent
                self.duplicates += 1
                return True
        recent.append((now, digit, source))
        self._recent = recent[-8:]
        return False

    def deliver(self, digit: str, duration_ms: int = DEFAULT_DURATION_MS, source: str = "info") -> None:
        """Give `digit` (from the source phone by `source`) to the target phone its way: RFC 4733 events,
        SIP INFO, or in-band tones; a duplicate of a press reported by another source is dropped."""
        if self.closed or self.duplicate(digit, source):
            return
        method = self.target.method
        duration = min(max(duration_ms, MIN_DURATION_MS), MAX_DURATION_MS)
        if method == "info":
            try:
                self._send_info(digit, duration)
            except Exception:
                _log.failure("Sending a DTMF INFO failed")
            return
        if method == "inband" and self.target.codec is None:
            return
        self._queue.append((digit, duration))
        if self._timer is None and not self._packets:
            self._next_digit()

    def _now_ts(self) -> int:
        """The target stream's timestamp now: the last packet's, advanced by the time since."""
        elapsed = max(0.0, self._clock.seconds() - self._ts_at)
        return (self._ts + round(elapsed * 8000)) & 0xFFFFFFFF

    def _next_digit(self) -> None:
        if not self._queue:
            self._timer = None
            self._resync = True
            return
        digit, duration = self._queue.pop(0)
        self.generated += 1
        start = self._now_ts()
        if self.target.method == "rfc4733" and self._target_te is not None:
            te = self._target_te
            sender = DtmfSender(packet_ticks=_FRAME)
            self._packets = [
                self._packet(te, marker, ts, payload)
                for marker, ts, payload in sender.packets(digit, start, duration * 8)
            ]
        else:
            codec = self.target.codec
            assert codec is not None
            pt, encoding = codec
            encode = _ENCODERS.get(encoding)
            if encode is None:
                _log.warn("No in-band DTMF in {codec}: digit dropped", codec=encoding)
                self._packets = []
            else:
                audio = encode(dtmf_pcm(digit, duration, _GAP_MS))
                self._packets = [
                    self._packet(pt, False, (start + i) & 0xFFFFFFFF, audio[i : i + _FRAME])
                    for i in range(0, len(audio) - _FRAME + 1, _FRAME)
                ]
        self._tick()

    def _packet(self, pt: int, marker: bool, ts: int, payload: bytes) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        return _HEADER.pack(0x80, (0x80 if marker else 0) | pt, self._seq, ts, self._ssrc) + payload

    def _tick(self) -> None:
        if self.closed:
            self._timer = None
            return
        if self._packets:
            packet = self._packets.pop(0)
            if packet[1] & 0x7F != self._target_te:  # audio (a tone) moves the stream's clock on
                self._ts, self._ts_at = int.from_bytes(packet[4:8], "big"), self._clock.seconds()
            try:
                self._send(packet)
            except Exception:
                _log.failure("Sending a generated DTMF packet failed")
            self._timer = self._clock.callLater(_TICK, self._tick)
            return
        self._next_digit()

    def close(self) -> None:
        """Stop generating (queued digits are dropped); idempotent."""
        self.closed = True
        self._queue.clear()
        self._packets = []
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class Interworking:
    """The two directions of one relayed call: installs a `RtpPath` as each leg's transform where the legs
    differ (`configure`) and converts SIP INFO digits (`info_received`).

    Args:
        session: the call's relay session ("a" is the caller's leg, "b" the callee's).
        clock: for pacing generated DTMF.
        send_info: sends a DTMF INFO on a side: (side, digit, duration in ms).
    """

    def __init__(
        self,
        session: IRelaySession,
        clock: IReactorTime,
        send_info: Callable[[str, str, int], object] | None = None,
    ) -> None:
        self._session = session
        self._clock = clock
        self.send_info = send_info
        self.formats: dict[str, LegFormats] = {}
        self.paths: dict[str, RtpPath] = {}  # source side -> the path of what it sends
        self._info_learnt: set[str] = set()

    def configure(self, a: LegFormats, b: LegFormats) -> None:
        """The legs' formats after an offer/answer: set, change or remove each leg's transform."""
        if self._info_learnt:
            a, b = (self._learnt(s, f) for s, f in (("a", a), ("b", b)))
        self.formats = {"a": a, "b": b}
        for source, target in (("a", "b"), ("b", "a")):
            path = self.paths.get(source)
            src, dst = self.formats[source], self.formats[target]
            if path is None:
                path = RtpPath(
                    self._clock,
                    src,
                    dst,
                    self._session.leg(target).send_rtp,
                    partial(self._info_to, target),
                )
            else:
                path.reconfigure(src, dst)
            leg = self._session.leg(source)
            if path.needed or path.generated:  # a renumbered stream keeps its path
                self.paths[source] = path
                leg.set_transform(path)
            else:
                self.paths.pop(source, None)
                path.close()
                leg.set_transform(None)
        _log.debug(
            "{call_id}: DTMF caller {a} callee {b}; paths {paths}",
            call_id=self._session.call_id,
            a=a.method,
            b=b.method,
            paths=sorted(self.paths),
        )

    def _learnt(self, side: str, formats: LegFormats) -> LegFormats:
        if side in self._info_learnt and not formats.info:
            return LegFormats(formats.audio, formats.telephone_event, True)
        return formats

    def _info_to(self, side: str, digit: str, duration_ms: int) -> None:
        if self.send_info is not None:
            self.send_info(side, digit, duration_ms)

    def info_received(self, side: str, digit: str, duration_ms: int | None) -> bool:
        """A DTMF INFO from `side`'s phone: True when converted here (answer it 200 and pass nothing on),
        False when the other side takes INFO too (pass it on as it is)."""
        other = "b" if side == "a" else "a"
        if side not in self._info_learnt:
            self._info_learnt.add(side)
            current = self.formats.get(side)
            if current is not None and not current.info:
                learnt = self.formats[side] = self._learnt(side, current)
                towards = self.paths.get(other)  # what goes to this phone: INFO now, where not RFC 4733
                if towards is not None:
                    towards.reconfigure(self.formats[other], learnt)
        source, target = self.formats.get(side), self.formats.get(other)
        if target is None or (source is not None and source.method == target.method == "rfc4733"):
            return False  # its own events carry the press to a phone that takes them: pass it on as today
        path = self.paths.get(side)
        if target.method == "info":  # passed on as it is, unless its events were converted already
            return path is not None and path.duplicate(digit, "info")
        if path is None:  # the legs agree on everything else: a path only for this
            path = RtpPath(
                self._clock,
                source or LegFormats(),
                target,
                self._session.leg(other).send_rtp,
                partial(self._info_to, other),
            )
            self.paths[side] = path
            self._session.leg(side).set_transform(path)
        path.deliver(digit, duration_ms or DEFAULT_DURATION_MS, "info")
        return True

    def close(self) -> None:
        for path in self.paths.values():
            path.close()
        self.paths.clear()
