"""Per-call ladders: a bounded trace of each call's SIP messages, dialplan actions, media and timers.

`CallTracer` is a call observer (`pbx.b2bua.events`) and a transport trace hook (`TransportManager.trace`,
called with each SIP message's bytes as sent or received). It keeps one `CallTrace` per call, joining:

- the SIP messages of every leg, matched by Call-ID (the caller's and each outbound leg's), summarised as
  their first line and a few key headers, bodies truncated and SRTP keys masked (RFC 4568 `inline:`);
- the dialplan actions as they start, with the template and line that produced each (`Action.source`,
  `Action.line`), and each template render with its time;
- media: per side, the latched address, codec, DTMF method, packets relayed and dropped, when the call ends;
- timer expiries (ring timeout, maximum duration) and leg failures.

Every trace is capped in events and in bytes (later events are counted, not kept). A call that stays up has
its events packed (`CallTrace.pack`: one zlib-compressed bytes object, with another call's events as the
preset dictionary): ~0.4 KB of trace rather than ~7 (its messages repeat the same Call-ID, tags, Vias and
SDP, and the other calls' messages the rest); reading the trace unpacks it. Packing costs about what the
rest of the trace does, so it is done only for calls still up `pack_after` seconds (1 s) after their
caller's ACK (of the answer or of a re-INVITE), found when later calls start: no timer, and short calls never
pay it.
Ended calls are kept for the last `keep` calls, and failed ones (not answered) also in a second list of
`keep_failed`, so a failure stays visible longer on a busy PBX; memory is bounded by (active calls + keep +
keep_failed) traces.

The hook costs a Call-ID search in each message (a compiled regex over the head) and a dict lookup; with no
call being traced it returns at once. It knows nothing of sockets or of the config.
"""

from __future__ import annotations

import marshal
import re
import zlib
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from pbx.sip.sdp_crypto import mask_crypto

if TYPE_CHECKING:
    from pbx.b2bua.call import Call
    from pbx.b2bua.leg import OutboundLeg
    from pbx.dialplan import Action

_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_COMPACT = {"v": "via", "f": "from", "t": "to", "m": "contact", "c": "content-type", "i": "call-id"}
KEY_HEADERS = (
    "via",
    "from",
    "to",
    "cseq",
    "contact",
    "reason",
    "content-type",
    "user-agent",
    "server",
    "retry-after",
    "warning",
)
"""The headers a ladder shows (the first of each; the top Via only)."""
_MAX_HEADER = 160
_MAX_LINE = 200


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarise(data: bytes, body_bytes: int) -> dict[str, Any]:
    """The first line, the key headers (each cut to 160 characters) and the body (cut to `body_bytes`,
    SRTP keys masked) of a SIP message's bytes."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        if key in KEY_HEADERS and key not in headers:
            headers[key] = _short(mask_crypto(value.strip()), _MAX_HEADER)
    out: dict[str, Any] = {"line": _short(lines[0], _MAX_LINE), "headers": headers}
    if body:
        text = mask_crypto(body[:body_bytes].decode("utf-8", "replace"))
        out["body"] = text + (f"\n[{len(body) - body_bytes} more bytes]" if len(body) > body_bytes else "")
    return out


def template_name(source: str, tenant: str) -> str:
    """A template's path as the tenant's dialplan directory names it (`main.j2`, `ivr/main.j2`)."""
    marker = f"/{tenant}/"
    at = source.rfind(marker)
    return source[at + len(marker) :] if at >= 0 and tenant else source


def _size(event: dict[str, Any]) -> int:
    """About how many bytes an event holds (its strings and raw message)."""
    total = 64
    for value in event.values():
        if isinstance(value, str | bytes):
            total += len(value)
        elif isinstance(value, dict):
            total += sum(len(k) + len(str(v)) for k, v in value.items())
    return total


class SipEvent:
    """A SIP message in a trace: what the dict of another event would hold (`t`, `kind` "sip", `party`,
    `dir`, `peer`, `raw`), in a slotted object (a held call keeps about ten: a dict each cost ~250 bytes
    more; the peer is kept as the transport and the flow's own address tuple, made into `peer` when read).
    Read as a mapping (`event["dir"]`, `event.get(...)`, `as_dict()`)."""

    __slots__ = ("address", "dir", "party", "raw", "t", "transport")

    kind = "sip"

    def __init__(
        self, t: float, party: str, inbound: bool, transport: str, address: tuple[Any, ...], raw: bytes
    ) -> None:
        self.t = t
        self.party = party
        self.dir = "in" if inbound else "out"
        self.transport = transport
        self.address = address
        self.raw = raw

    @property
    def peer(self) -> tuple[Any, ...]:
        return (self.transport, *self.address[:2])

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "kind": "sip",
            "party": self.party,
            "dir": self.dir,
            "peer": self.peer,
            "raw": self.raw,
        }

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def row(self) -> tuple[Any, ...]:
        """The event as plain values (what `CallTrace.pack` keeps; `SipEvent(*row)` makes it again)."""
        return (self.t, self.party, self.dir == "in", self.transport, tuple(self.address), self.raw)


_ZDICT_MAX = 32768  # zlib's window: a longer preset dictionary is not used beyond its last 32 KiB
_ZDICT_EVERY = 1024  # packed traces between two refreshes of a tracer's preset dictionary


def _unpack(packed: bytes, zdict: bytes | None = None) -> list[dict[str, Any] | SipEvent]:
    if zdict is None:
        data = zlib.decompress(packed)
    else:
        inflate = zlib.decompressobj(zdict=zdict)
        data = inflate.decompress(packed) + inflate.flush()
    return [row if type(row) is dict else SipEvent(*row) for row in marshal.loads(data)]


def _rendered(event: dict[str, Any] | SipEvent, body_bytes: int) -> dict[str, Any]:
    """An event as the API shows it: a SIP message's raw bytes summarised (`summarise`), its peer as text,
    the text of media and render events (made here, not on the call's path)."""
    if isinstance(event, SipEvent):
        event = event.as_dict()
    raw = event.get("raw")
    if raw is None:
        out = dict(event)
        kind = out.get("kind")
        if kind == "media":
            out["text"] = (
                f"side {out['side']}: latched {out['latched']}, codec {out['codec'] or '?'}, "
                f"DTMF {out['dtmf'] or '?'}, {out['packets']} packets relayed, {out['dropped']} dropped"
            )
        elif kind == "render":
            out["text"] = f"rendered {out['template']} in {out['ms']:.2f} ms"
        return out
    out = {k: v for k, v in event.items() if k not in ("raw", "peer")}
    transport, host, port = event["peer"]
    out["peer"] = f"{transport} {host}:{port}"
    out.update(summarise(raw, body_bytes))
    return out


class CallTrace:
    """The trace of one call (see the module docstring); `as_dict()` is its JSON form."""

    __slots__ = (
        "_bytes",
        "_count",
        "_events",
        "_packed_size",
        "_zdict",
        "body_bytes",
        "call_id",
        "caller",
        "cause",
        "dialed",
        "dropped",
        "ended_at",
        "max_bytes",
        "max_events",
        "packed",
        "parties",
        "retained",
        "started_at",
        "status",
        "tenant",
    )

    def __init__(
        self,
        call_id: str,
        started_at: float,
        *,
        max_events: int = 200,
        max_bytes: int = 32768,
        body_bytes: int = 400,
    ) -> None:
        self.call_id = call_id
        self.body_bytes = body_bytes
        self.started_at = started_at
        self.ended_at: float | None = None
        self.tenant = ""
        self.caller = ""
        self.dialed = ""
        self.cause = ""
        self.status = 0
        # (id, label, Call-ID) of the caller and of each leg (`as_dict` shows each as a dict)
        self.parties: list[tuple[str, str, str]] = [("caller", "caller", call_id)]
        self._events: list[dict[str, Any] | SipEvent] = []  # those not packed yet
        self.packed: bytes | None = None  # the events packed so far (`pack`)
        self._packed_size = 0  # what `size` counted of them
        self._zdict: bytes | None = None  # the preset dictionary `packed` was compressed with (shared)
        self.dropped = 0
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._bytes = 0
        self._count = 0  # events kept (packed or not)
        self.retained = 0  # how many of the tracer's lists of ended calls hold this trace

    @property
    def failed(self) -> bool:
        """Ended without an answer (a 2xx to the caller)."""
        return self.ended_at is not None and self.status != 200

    @property
    def size(self) -> int:
        return self._bytes

    @property
    def held(self) -> int:
        """About how many bytes the trace holds now (`size`, with the packed events at their packed size)."""
        if self.packed is None:
            return self._bytes
        return len(self.packed) + self._bytes - self._packed_size

    @property
    def events(self) -> list[dict[str, Any] | SipEvent]:
        """The kept events in order (the packed ones unpacked: a new list each time they are)."""
        if self.packed is None:
            return self._events
        return [*_unpack(self.packed, self._zdict), *self._events]

    def pack(self, zdict: bytes | None = None) -> bytes | None:
        """Keep the events as one compressed bytes object (marshal and zlib: the messages of one call share
        most of their text), until more are added; `events` unpacks them. Events are plain values (dicts of
        strings and numbers, `SipEvent`s); should one not be, nothing is packed.

        `zdict`: a zlib preset dictionary, typically another call's packed events (`CallTracer` passes one
        to all its traces: calls through one PBX share most of their messages' text, so a trace packs to
        about a third of what it does alone); the trace keeps a reference to it. Returns what was packed
        (the marshalled events, a dictionary for later traces), or None if nothing was."""
        if not self._events:
            return None
        rows = [event.row() if type(event) is SipEvent else event for event in self.events]
        try:
            data = marshal.dumps(rows)
        except ValueError:  # an unmarshallable value: keep the objects
            return None
        if zdict is None:
            self.packed = zlib.compress(data, 6)
        else:
            deflate = zlib.compressobj(6, zdict=zdict)
            self.packed = deflate.compress(data) + deflate.flush()
        self._zdict = zdict
        self._packed_size = self._bytes
        self._events = []
        return data

    def add(self, event: dict[str, Any] | SipEvent, size: int = 0, *, force: bool = False) -> None:
        """Keep `event` unless the trace is full (then count it); `size`: about its bytes (0: counted here);
        `force`: the end summary, always kept."""
        if not size:
            size = _size(event) if isinstance(event, dict) else 96 + len(event.raw)
        if not force and (self._count >= self.max_events or self._bytes + size > self.max_bytes):
            self.dropped += 1
            return
        self._bytes += size
        self._count += 1
        self._events.append(event)

    def summary(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "tenant": self.tenant,
            "caller": self.caller,
            "dialed": self.dialed,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "cause": self.cause,
            "status": self.status,
            "active": self.ended_at is None,
            "failed": self.failed,
            "events": self._count,
        }

    def as_dict(self) -> dict[str, Any]:
        out = self.summary()
        out["parties"] = [{"id": id_, "label": label, "call_id": cid} for id_, label, cid in self.parties]
        out["events"] = [_rendered(e, self.body_bytes) for e in self.events]
        out["dropped_events"] = self.dropped
        out["bytes"] = self._bytes
        return out


class CallTracer:
    """Traces of the active and recent calls; a call observer and a SIP trace hook (`sip_message`).

    Args:
        clock: time source.
        keep: how many ended calls keep their trace (0 traces nothing).
        keep_failed: how many failed calls keep their trace in addition (the older ones of `keep`).
        max_events, max_bytes: the cap of one call's trace.
        body_bytes: how much of a SIP body a trace keeps.
        pack_after: seconds after the caller's ACK when a call still up has its trace packed.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        keep: int = 100,
        keep_failed: int = 100,
        max_events: int = 200,
        max_bytes: int = 32768,
        body_bytes: int = 400,
        pack_after: float = 1.0,
    ) -> None:
        self.clock = clock
        self.keep = keep
        self.pack_after = pack_after
        self.keep_failed = keep_failed
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.body_bytes = body_bytes
        self._active: dict[str, CallTrace] = {}  # the caller's Call-ID -> trace
        self._sip: dict[str, tuple[CallTrace, str]] = {}  # any leg's Call-ID -> (trace, party)
        self._recent: deque[CallTrace] = deque()
        self._failed: deque[CallTrace] = deque()
        self._to_pack: deque[tuple[float, CallTrace]] = deque()  # (when, trace) in time order
        # The preset dictionary traces are packed with: the events of a trace packed earlier (the first one
        # packed, then one every `_ZDICT_EVERY`, so that it follows what the calls look like); the traces
        # packed with an older one keep it.
        self._zdict: bytes | None = None
        self._packs = 0
        # The last INVITE received and sent whose Call-ID no trace knew yet: (Call-ID, bytes). The caller's
        # INVITE arrives (and an outbound leg's is sent) just before `call_started` (`leg_started`) makes
        # its trace, which then keeps these bytes instead of writing the message again.
        self._invite_in: tuple[str, bytes] | None = None
        self._invite_out: tuple[str, bytes] | None = None

    # -- lookups ----------------------------------------------------------------------------------------

    def get(self, call_id: str) -> CallTrace | None:
        """The trace of a call by its caller's Call-ID (or any of its legs' Call-IDs)."""
        found = self._active.get(call_id)
        if found is not None:
            return found
        entry = self._sip.get(call_id)
        return entry[0] if entry is not None else None

    def traces(self) -> Iterator[CallTrace]:
        """Active calls first, then ended ones, newest first; each once."""
        seen: set[int] = set()
        for trace in (*reversed(self._active.values()), *reversed(self._recent), *reversed(self._failed)):
            if id(trace) not in seen:
                seen.add(id(trace))
                yield trace

    def __len__(self) -> int:
        return len({id(t) for t in (*self._active.values(), *self._recent, *self._failed)})

    def memory(self) -> int:
        """About how many bytes the kept traces hold (with the dictionary they are packed with now)."""
        held = sum(t.held for t in {id(t): t for t in self._sip_traces()}.values())
        return held + (len(self._zdict) if self._zdict is not None else 0)

    def _sip_traces(self) -> Iterator[CallTrace]:
        yield from self._active.values()
        yield from self._recent
        yield from self._failed

    # -- the SIP trace hook -----------------------------------------------------------------------------

    def sip_message(self, direction: str, transport: str, flow: Any, data: bytes) -> None:
        """`TransportManager.trace`: add a message of a traced call to its trace."""
        traced = self._sip
        if not traced and not data.startswith(b"INVITE "):  # no call traced: only an INVITE may start one
            return
        start = data.find(b"\r\nCall-ID:")  # as the PBX and most phones write it; else any spelling
        if start >= 0:
            start += 10
            call_id = data[start : data.find(b"\r\n", start)].strip()
        else:
            found = _CALL_ID.search(data, 0, data.find(b"\r\n\r\n"))
            if found is None:
                return
            call_id = found.group(1).strip()
        text = call_id.decode("utf-8", "replace")
        entry = traced.get(text)
        if entry is None:
            if data.startswith(b"INVITE "):
                if direction == "recv":
                    self._invite_in = (text, data)
                else:
                    self._invite_out = (text, data)
            return
        if data.startswith(b"REGISTER "):  # never part of a call (RFC 3261 10: no dialog, its own Call-ID)
            return
        trace, party = entry
        inbound = direction == "recv"
        # `_sip_event` inlined (every message of every traced call comes here)
        head = data.find(b"\r\n\r\n")
        if head >= 0 and len(data) > head + 4 + self.body_bytes:
            data = data[: head + 4 + self.body_bytes] + b"[...]"
        now = self.clock.seconds()
        trace.add(SipEvent(now, party, inbound, transport, flow.remote_address, data), len(data) + 96)
        if inbound and party == "caller" and data.startswith(b"ACK ") and trace.ended_at is None:
            # The caller's set-up (or re-INVITE) is over: if the call is still up in a while, pack its trace.
            self._to_pack.append((now + self.pack_after, trace))

    def _pack_due(self) -> None:
        """Pack the traces of the calls still up whose time came (`pack_after`)."""
        queue = self._to_pack
        now = self.clock.seconds()
        while queue and queue[0][0] <= now:
            trace = queue.popleft()[1]
            if trace.ended_at is None:
                data = trace.pack(self._zdict)
                if data is not None:
                    self._packs += 1
                    if self._zdict is None or self._packs >= _ZDICT_EVERY:
                        self._zdict = data[-_ZDICT_MAX:]
                        self._packs = 0

    def _sip_event(
        self,
        trace: CallTrace,
        party: str,
        inbound: bool,
        transport: str,
        address: tuple[Any, ...],
        data: bytes,
    ) -> None:
        """Keep the message's bytes (its head and up to `body_bytes` of its body); the API summarises them."""
        head = data.find(b"\r\n\r\n")
        if head >= 0 and len(data) > head + 4 + self.body_bytes:
            data = data[: head + 4 + self.body_bytes] + b"[...]"
        trace.add(SipEvent(self.clock.seconds(), party, inbound, transport, address, data), len(data) + 96)

    # -- call observer ----------------------------------------------------------------------------------

    def call_started(self, call: Call) -> None:
        if self.keep <= 0 and self.keep_failed <= 0:
            return
        if self._to_pack:
            self._pack_due()
        trace = CallTrace(
            call.id,
            call.started_at,
            max_events=self.max_events,
            max_bytes=self.max_bytes,
            body_bytes=self.body_bytes,
        )
        trace.tenant = call.caller.tenant
        trace.caller = call.caller.extension or f"trunk:{call.caller.trunk}/{call.caller.number}"
        trace.dialed = call.dialed
        trace.parties[0] = ("caller", trace.caller, call.id)
        self._active[call.id] = trace
        self._sip[call.id] = (trace, "caller")
        flow = call.txn.flow
        seen, self._invite_in = self._invite_in, None
        raw = seen[1] if seen is not None and seen[0] == call.id else call.invite.to_bytes()
        self._sip_event(trace, "caller", True, flow.transport, flow.remote_address, raw)

    def leg_started(self, call: Call, leg: OutboundLeg) -> None:
        trace = self._active.get(call.id)
        if trace is None:
            return
        party = f"leg{len(trace.parties)}"
        label = leg.extension or leg.target.uri
        trace.parties.append((party, _short(label, 40), leg.call_id))
        self._sip[leg.call_id] = (trace, party)
        if leg.invite is not None:  # sent already: the hook did not know its Call-ID yet
            transport, host, port = leg.destination[:3]
            seen, self._invite_out = self._invite_out, None
            raw = seen[1] if seen is not None and seen[0] == leg.call_id else leg.invite.to_bytes()
            self._sip_event(trace, party, False, str(transport).upper(), (host, port), raw)

    def leg_ended(self, call: Call, leg: OutboundLeg) -> None:
        self.note(call, f"{leg.extension or leg.target.uri}: leg failed ({leg.status})", kind="leg")

    def call_answered(self, call: Call) -> None:
        who = call.winner.extension if call.winner is not None else "the PBX"
        self.note(call, f"answered by {who or 'the callee'}", kind="call")

    def action_started(self, call: Call, action: Action) -> None:
        trace = self._active.get(call.id)
        if trace is not None:
            trace.add(
                {
                    "t": self.clock.seconds(),
                    "kind": "action",
                    "template": template_name(action.source, trace.tenant),
                    "lineno": action.line,
                    "text": _short(str(action), _MAX_LINE),
                },
                192,
            )

    def dialplan_rendered(self, call: Call, template: str, seconds: float) -> None:
        trace = self._active.get(call.id)
        if trace is not None:  # the text is made when the trace is read (`_rendered`)
            trace.add(
                {"t": self.clock.seconds(), "kind": "render", "template": template, "ms": seconds * 1000}, 128
            )

    def timer_expired(self, call: Call, timer: str) -> None:
        self.note(call, f"{timer} expired", kind="timer")

    def media_closing(self, call: Call, media: Any) -> None:
        """The call's relay is about to close: what each side's media did."""
        trace = self._active.get(call.id)
        if trace is None:
            return
        try:
            stats = getattr(media, "final_stats", media.session.stats)()
        except Exception:
            return
        for side, leg in (("a", stats.a), ("b", stats.b)):
            formats = media.negotiated(side) if hasattr(media, "negotiated") else None
            codec = formats.codec[1] if formats is not None and formats.codec is not None else ""
            dtmf = formats.method if formats is not None else ""
            latched = f"{leg.latched[0]}:{leg.latched[1]}" if leg.latched else "none"
            trace.add(
                {
                    "t": self.clock.seconds(),
                    "kind": "media",
                    "side": side,
                    "latched": latched,
                    "codec": codec,
                    "dtmf": dtmf,
                    "packets": leg.packets,
                    "dropped": leg.dropped,
                },
                192,
            )

    def call_ended(self, call: Call) -> None:
        trace = self._active.pop(call.id, None)
        if trace is None:
            return
        cdr = call.cdr()
        trace.ended_at = cdr.end
        trace.cause, trace.status = cdr.cause, cdr.status
        trace.add(
            {
                "t": cdr.end,
                "kind": "call",
                "text": f"ended: {cdr.cause} (status {cdr.status}, hung up by {cdr.hangup_by})",
            },
            force=True,
        )
        self._retain(self._recent, self.keep, trace)
        if trace.failed:
            self._retain(self._failed, self.keep_failed, trace)
        if not trace.retained:
            self._forget(trace)

    def note(self, call: Call, text: str, *, kind: str = "note") -> None:
        trace = self._active.get(call.id)
        if trace is not None:
            trace.add(
                {"t": self.clock.seconds(), "kind": kind, "text": _short(text, _MAX_LINE)}, 96 + len(text)
            )

    def _retain(self, kept: deque[CallTrace], limit: int, trace: CallTrace) -> None:
        if limit <= 0:
            return
        kept.append(trace)
        trace.retained += 1
        while len(kept) > limit:
            old = kept.popleft()
            old.retained -= 1
            if not old.retained:
                self._forget(old)

    def _forget(self, trace: CallTrace) -> None:
        for _, _, call_id in trace.parties:
            entry = self._sip.get(call_id)
            if entry is not None and entry[0] is trace:
                del self._sip[call_id]
