"""RTP session state of one endpoint: what we send (SSRC, sequence, timestamp) and what we receive
(RFC 3550 appendix A statistics), and the RTCP reports built from both (section 6.4).

`RtpSender` starts SSRC, sequence number and timestamp at random values (section 5.1), or continues a
stream the peer already receives (`continue_from`: some phones, baresip among them, drop packets whose
timestamp goes backwards even across an SSRC change), and builds packets;
its timestamp follows the reactor clock (`timestamp_at(t)`), so silence between two playbacks advances it by
the real time elapsed, and the first packet after silence carries the marker bit (a talkspurt start).

`SourceStats` is the receiver side for one remote SSRC: the sequence-number tracking of appendix A.1
(probation of MIN_SEQUENTIAL packets, MAX_DROPOUT/MAX_MISORDER, wrap counting, resync on a large jump),
duplicates and reordering, expected/lost (A.3), fraction lost per interval and the interarrival jitter
of A.8. `RtpReceiver` switches to a new SSRC once it has sent two packets in sequence (a peer that
restarts its stream), without letting a stray packet of another source flap it.

`build_report` makes the compound SR (or RR when we sent nothing since the last report) + SDES CNAME (BYE
on close); `parse_report` reads the peer's SR/RR (its LSR/DLSR are kept for the next report block).
"""

from __future__ import annotations

import random
import struct

from pbx.media.rtp import (
    RtcpPacket,
    RtcpReceiverReport,
    RtcpReportBlock,
    RtcpSenderReport,
    RtcpUnknown,
)

__all__ = ["RtpReceiver", "RtpSender", "SourceStats", "build_report", "ntp_time"]

RATE = 8000
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
SEQ_MOD = 1 << 16
NTP_OFFSET = 2208988800  # seconds from 1900 to 1970

_HEADER = struct.Struct("!BBHII")


def ntp_time(seconds: float) -> int:
    """64-bit NTP timestamp of a Unix time."""
    whole = int(seconds)
    fraction = int((seconds - whole) * (1 << 32)) & 0xFFFFFFFF
    return (((whole + NTP_OFFSET) & 0xFFFFFFFF) << 32) | fraction


class RtpSender:
    """Our side of the stream: random SSRC/sequence/timestamp origin; packet building; SR counters."""

    def __init__(
        self,
        payload_type: int,
        start: float,
        rng: random.Random | None = None,
        continue_from: tuple[int, int, int, float] | None = None,
    ) -> None:
        rng = rng or random.SystemRandom()
        self.ssrc = rng.getrandbits(32)
        self.payload_type = payload_type
        self.seq = rng.getrandbits(16)
        self.ts_origin = rng.getrandbits(32)
        self.start = start  # reactor time of timestamp origin
        if continue_from is not None:  # carry on a stream the peer already receives (same SSRC, seq + 1, ts)
            ssrc, seq, timestamp, at = continue_from
            self.ssrc = ssrc & 0xFFFFFFFF
            self.seq = (seq + 1) & 0xFFFF
            self.ts_origin = timestamp & 0xFFFFFFFF
            self.start = at
        self.last_sent: tuple[int, int, int, float] | None = None
        self.packets = 0
        self.octets = 0
        self.last_ts = self.ts_origin
        self.last_time = start
        self.sent_since_report = False
        self.talking = False  # a talkspurt is in progress: no marker bit

    def timestamp_at(self, t: float) -> int:
        """The RTP timestamp of reactor time `t` (8 kHz)."""
        return (self.ts_origin + round((t - self.start) * RATE)) & 0xFFFFFFFF

    def build(self, payload: bytes, timestamp: int, t: float, payload_type: int | None = None) -> bytes:
        """One RTP packet; the marker bit is set on the first packet of a talkspurt."""
        marker = not self.talking
        self.talking = True
        return self.build_raw(payload, timestamp, t, marker, payload_type)

    def build_raw(
        self, payload: bytes, timestamp: int, t: float, marker: bool, payload_type: int | None = None
    ) -> bytes:
        pt = self.payload_type if payload_type is None else payload_type
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        self.packets += 1
        self.octets += len(payload)
        self.last_ts = timestamp
        self.last_time = t
        self.sent_since_report = True
        if pt == self.payload_type:
            self.last_sent = (self.ssrc, seq, timestamp, t)
        return _HEADER.pack(0x80, (0x80 if marker else 0) | pt, seq, timestamp, self.ssrc) + payload


class SourceStats:
    """Reception statistics of one remote SSRC (RFC 3550 appendix A.1, A.3, A.8)."""

    def __init__(self, ssrc: int, seq: int) -> None:
        self.ssrc = ssrc
        self.duplicates = 0
        self.reordered = 0
        self.jitter = 0.0  # in timestamp units
        self._transit: int | None = None
        self.lsr = 0  # middle 32 bits of the peer's last SR NTP time
        self.lsr_time: float | None = None  # when we got it
        self._init_seq(seq)
        self.probation = MIN_SEQUENTIAL - 1  # the packet that created it was the first in sequence

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        self._recent: set[int] = set()

    def update(self, seq: int, timestamp: int, arrival: float) -> bool:
        """Account one packet; False when it must be dropped (probation or a bad jump/duplicate)."""
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self._count(seq, timestamp, arrival)
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta == 0 or (udelta >= SEQ_MOD - MAX_MISORDER and self._extended(seq) in self._recent):
            self.duplicates += 1
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += SEQ_MOD
            self.max_seq = seq
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:  # two sequential packets after a big jump: the source restarted
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        else:
            self.reordered += 1
        self._count(seq, timestamp, arrival)
        return True

    def _extended(self, seq: int) -> int:
        ext = self.cycles + seq
        if seq > self.max_seq and seq - self.max_seq > SEQ_MOD // 2:
            ext -= SEQ_MOD
        return ext

    def _count(self, seq: int, timestamp: int, arrival: float) -> None:
        self.received += 1
        ext = self._extended(seq)
        recent = self._recent
        recent.add(ext)
        if len(recent) > 2 * MAX_MISORDER:
            floor = self.cycles + self.max_seq - MAX_MISORDER
            self._recent = {s for s in recent if s >= floor}
        transit = round(arrival * RATE) - timestamp
        if self._transit is not None:
            d = abs(((transit - self._transit) + 0x80000000) % 0x100000000 - 0x80000000)
            self.jitter += (d - self.jitter) / 16.0
        self._transit = transit

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def report_block(self, now: float) -> RtcpReportBlock:
        """A report block for this source (A.3 interval loss), advancing the interval."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior, self.received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = (
            0 if expected_interval <= 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        )
        lost = max(-0x800000, min(0x7FFFFF, self.lost))
        dlsr = 0 if self.lsr_time is None else int((now - self.lsr_time) * 65536) & 0xFFFFFFFF
        return RtcpReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            cumulative_lost=lost,
            highest_seq=self.extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter) & 0xFFFFFFFF,
            lsr=self.lsr,
            dlsr=dlsr,
        )


class RtpReceiver:
    """The remote stream: one current SSRC; a new one takes over after two sequential packets."""

    def __init__(self) -> None:
        self.source: SourceStats | None = None
        self.candidate: SourceStats | None = None
        self.ssrc_changes = 0

    def update(self, ssrc: int, seq: int, timestamp: int, arrival: float) -> tuple[bool, bool]:
        """(accept the packet, the SSRC changed with it)."""
        source = self.source
        if source is not None and source.ssrc == ssrc:
            return source.update(seq, timestamp, arrival), False
        candidate = self.candidate
        if candidate is None or candidate.ssrc != ssrc:
            candidate = self.candidate = SourceStats(ssrc, seq)
            if source is None:  # the very first source is accepted at once (A.1 probation aside)
                candidate.probation = 0
                candidate._count(seq, timestamp, arrival)
                self.source, self.candidate = candidate, None
                return True, False
            return False, False
        if candidate.update(seq, timestamp, arrival):
            self.source, self.candidate = candidate, None
            self.ssrc_changes += 1
            return True, True
        return False, False


_SDES = 202
_BYE = 203


def _sdes_cname(ssrc: int, cname: bytes) -> RtcpUnknown:
    item = bytes([1, len(cname)]) + cname
    chunk = struct.pack("!I", ssrc) + item + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return RtcpUnknown(_SDES, 1, chunk)


def build_report(
    sender: RtpSender, receiver: RtpReceiver, now: float, cname: bytes, bye: bool = False
) -> bytes:
    """The compound RTCP packet to send now: SR (or RR) + SDES CNAME (+ BYE)."""
    blocks: tuple[RtcpReportBlock, ...] = ()
    if receiver.source is not None and receiver.source.received:
        blocks = (receiver.source.report_block(now),)
    first: RtcpPacket
    if sender.sent_since_report:
        sender.sent_since_report = False
        first = RtcpSenderReport(
            ssrc=sender.ssrc,
            ntp=ntp_time(now),
            rtp_ts=sender.timestamp_at(now),
            packet_count=sender.packets & 0xFFFFFFFF,
            octet_count=sender.octets & 0xFFFFFFFF,
            reports=blocks,
        )
    else:
        first = RtcpReceiverReport(ssrc=sender.ssrc, reports=blocks)
    packets: list[RtcpPacket] = [first, _sdes_cname(sender.ssrc, cname[:255])]
    if bye:
        packets.append(RtcpUnknown(_BYE, 1, struct.pack("!I", sender.ssrc)))
    return RtcpPacket.build_compound(packets)


def parse_report(data: bytes, receiver: RtpReceiver, our_ssrc: int, now: float) -> RtcpReportBlock | None:
    """Read a peer's compound RTCP: note its SR time for our LSR/DLSR; the block it reports about us.

    ValueError when the datagram is not valid RTCP."""
    about_us: RtcpReportBlock | None = None
    for packet in RtcpPacket.parse_compound(data):
        if isinstance(packet, RtcpSenderReport):
            source = receiver.source
            if source is not None and source.ssrc == packet.ssrc:
                source.lsr = (packet.ntp >> 16) & 0xFFFFFFFF
                source.lsr_time = now
        if isinstance(packet, (RtcpSenderReport, RtcpReceiverReport)):
            for block in packet.reports:
                if block.ssrc == our_ssrc:
                    about_us = block
    return about_us
