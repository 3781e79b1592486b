"""`IMediaRelay` on an external rtpengine (Sipwise's media proxy), driven by its `ng` control protocol
(`pbx.media.ng`).

The B2BUA's relay interface is address based: a session has two legs, each with a local port that the SDP
sent to that leg's phone advertises, and `set_remote` tells a leg where its phone receives. rtpengine is
SDP based: an `offer` from one party's tag allocates the ports facing the other party and returns the SDP to
send there, an `answer` from the other tag does the reverse. The two meet like this:

- Creating a session starts its setup (`ready` fires when done): an `offer` (from-tag "a") and an `answer`
  (to-tag "b") with synthetic SDP (one audio stream, `c=0.0.0.0`, "do not send yet"), then a `query` that
  reads the local address and port of each party's stream: leg "a"'s port is the one rtpengine listens on
  for the "a" phone. Until `ready` has fired the legs have port 0: the B2BUA waits for it before it writes
  an SDP (`pbx.b2bua.dialing`).
- `set_remote` on either leg sends a re-`offer` and re-`answer` with both legs' current remotes (one cycle
  at a time; changes made meanwhile go in the next cycle). The flag "port latching" keeps rtpengine's ports
  when a remote moves, so the SDP already sent stays right. rtpengine's own endpoint learning (latching on
  the first packets) does the rest.
- `close` sends `delete`; `query` (`refresh_stats`) reads its packet counters into `stats()`.

Media rtpengine makes itself (its `play media`, `stop media` and `play DTMF`; Debian's build has the
transcoding they need): `RtpengineLeg.play_media` plays an audio file (on rtpengine's machine) to a leg's
phone, which is how a held phone hears music on rtpengine calls (`pbx.apps.moh`); `RtpengineLeg.play_dtmf`
sends a digit to a leg's phone as if the other phone had sent it (RFC 4733 when that phone takes
telephone-event, else a tone), for a relay made with `inject_dtmf` (the flag "inject DTMF" on every
`offer`/`answer`: rtpengine then decodes and re-encodes every call's audio, so it is off by default).

What rtpengine cannot do through this interface: the PBX speaking on a leg (`attach`: prompts, IVR),
transforms (`set_transform`: PCMU/PCMA transcoding, DTMF interworking, SRTP termination) and
`send_rtp`. `attach` and non-None transforms are ignored (logged); `clock` is None so the B2BUA converts
nothing on these calls. The PBX therefore uses this relay only for calls it bridges from the start (a plain
RTP offer to a phone or a trunk); calls the PBX answers itself keep the built-in relay (docs/media.md).

Failures: a setup that rtpengine refuses or does not answer fails `ready` with `NgError` (the caller gets a
503); the session is deleted and leaks nothing. Failed updates and deletes are logged.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pbx.media.interfaces import LEGS, IMediaRelay, IRelayLeg, IRelaySession, LegStats, SessionStats
from pbx.media.ng import NgClient, NgError

__all__ = ["RtpengineLeg", "RtpengineRelay", "RtpengineSession"]

Address = tuple[str, int]

_log = Logger()
_FLAGS = ["port latching"]  # keep the ports already advertised when a remote moves
_FORMATS = "0 8 9 18 101"  # rtpengine passes payload types through; the list only has to be plausible


def synthetic_sdp(remote: Address | None, version: int) -> bytes:
    """One audio stream at `remote` (None: `c=0.0.0.0`, port 9, "nothing to send to yet")."""
    host, port = remote if remote is not None else ("0.0.0.0", 9)
    family = "IP6" if ":" in host else "IP4"
    return (
        f"v=0\r\no=pbx 1 {version} IN {family} {host}\r\ns=-\r\nc=IN {family} {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {_FORMATS}\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    ).encode()


@implementer(IRelayLeg)
class RtpengineLeg:
    """A leg of `RtpengineSession`: rtpengine's port facing this leg's phone, and where that phone is."""

    def __init__(self, name: str, session: RtpengineSession) -> None:
        self.name = name
        self.local_port = 0  # until the session is ready
        self.local_address = ""
        self.remote: Address | None = None
        self.rtcp_remote: Address | None = None
        self.latched: Address | None = None  # rtpengine's endpoint, from the last query
        self.unsent = 0
        self._session = session
        self._stats: dict[str, int] = {}  # rtpengine's counters of this party's streams, from a query

    @property
    def attached(self) -> bool:
        return False

    def set_remote(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        address = ipaddress.ip_address(host)  # ValueError for a host name
        if address.is_multicast:
            raise ValueError(f"multicast address: {host}")
        remote = None if address.is_unspecified or not port else (str(address), port)
        rtcp = None if remote is None else (remote[0], port + 1 if rtcp_port is None else rtcp_port)
        changed = remote != self.remote
        self.remote, self.rtcp_remote = remote, rtcp
        if changed:
            self._session._changed()

    def attach(self, consumer: Any) -> None:
        _log.warn(
            "Call {id}: rtpengine leg {leg} cannot carry the PBX's own media",
            id=self._session.call_id,
            leg=self.name,
        )

    def detach(self) -> None:
        pass

    def set_transform(self, transform: Any) -> None:
        if transform is not None:
            _log.warn(
                "Call {id}: rtpengine leg {leg} cannot transform media",
                id=self._session.call_id,
                leg=self.name,
            )

    def send_rtp(self, data: bytes) -> None:
        self.unsent += 1

    def send_rtcp(self, data: bytes) -> None:
        self.unsent += 1

    def play_media(self, path: str, repeat: int = 1) -> Deferred[int | None]:
        """rtpengine plays the audio file `path` (a path on rtpengine's machine, any format its ffmpeg reads)
        to this leg's phone, in that phone's codec, `repeat` times (`play media`); fires with the file's
        length in milliseconds when rtpengine gives it. Fails with `NgError` on a closed call."""
        if not 1 <= repeat <= 100_000:
            raise ValueError(f"repeat out of range: {repeat}")
        answer = self._session._party_command("play media", self.name, file=path, **{"repeat-times": repeat})
        return answer.addCallback(
            lambda a: int(a[b"duration"]) if isinstance(a.get(b"duration"), int) else None
        )

    def stop_media(self) -> Deferred[None]:
        """Stop what `play_media` plays to this leg's phone (`stop media`)."""
        return self._session._party_command("stop media", self.name).addCallback(lambda _: None)

    def play_dtmf(self, digit: str, duration_ms: int = 250) -> Deferred[None]:
        """rtpengine sends `digit` (0-9, *, #, A-D) to this leg's phone as if the other leg's phone had sent
        it (`play DTMF` from the other party), for `duration_ms` (100 to 5000). Needs a relay made with
        `inject_dtmf`."""
        if len(digit) != 1 or digit.upper() not in "0123456789*#ABCD":
            raise ValueError(f"not a DTMF digit: {digit!r}")
        if not 100 <= duration_ms <= 5000:
            raise ValueError(f"DTMF duration out of range: {duration_ms}")
        other = "b" if self.name == "a" else "a"
        sent = self._session._party_command("play DTMF", other, code=digit.upper(), duration=duration_ms)
        return sent.addCallback(lambda _: None)

    def stats(self) -> LegStats:
        counters = self._stats
        return LegStats(
            name=self.name,
            local_port=self.local_port,
            remote=self.remote,
            rtcp_remote=self.rtcp_remote,
            latched=self.latched,
            rtcp_latched=None,
            packets=counters.get("rtp_packets", 0),
            bytes=counters.get("rtp_bytes", 0),
            rtcp_packets=counters.get("rtcp_packets", 0),
            rtcp_bytes=counters.get("rtcp_bytes", 0),
            dropped=0,
            invalid=counters.get("rtp_errors", 0),
            foreign=0,
            relatched=0,
            send_errors=0,
        )

    def _learn(self, monologue: Any) -> None:
        """Read this party's stream from a `query` answer: local address and port, endpoint, counters."""
        try:
            streams = monologue[b"medias"][0][b"streams"]
            rtp = streams[0]
            self.local_port = int(rtp[b"local port"])
            self.local_address = rtp[b"local address"].decode("ascii")
            endpoint = rtp.get(b"endpoint") or {}
            if endpoint.get(b"port"):
                self.latched = (endpoint[b"address"].decode("ascii"), int(endpoint[b"port"]))
            rtcp = streams[1].get(b"stats", {}) if len(streams) > 1 else {}
            self._stats = {
                f"{kind}_{key.decode()}": int(counters.get(key, 0))
                for kind, counters in (("rtp", rtp.get(b"stats", {})), ("rtcp", rtcp))
                for key in (b"packets", b"bytes", b"errors")
            }
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as e:
            raise NgError(f"unexpected query answer ({type(e).__name__})") from None


@implementer(IRelaySession)
class RtpengineSession:
    """One call on rtpengine: two parties with tags "a" and "b" (module docstring)."""

    def __init__(self, call_id: str, relay: RtpengineRelay) -> None:
        self.call_id = call_id
        self.ng_call_id = f"{call_id}~{os.urandom(4).hex()}"  # a Call-ID seen twice is two rtpengine calls
        self.closed = False
        self._relay = relay
        self._legs = {name: RtpengineLeg(name, self) for name in LEGS}
        self._version = 0
        self._busy = False  # a setup or update cycle is in flight
        self._dirty = False  # a remote changed while it was
        self._set_up = False
        self._deleted: Deferred[None] | None = None
        self.ready: Deferred[None] = Deferred()
        self._busy = True
        self._cycle(setup=True).addCallbacks(self._setup_done, self._setup_failed)

    def leg(self, name: str) -> RtpengineLeg:
        return self._legs[name]

    def stats(self) -> SessionStats:
        return SessionStats(self.call_id, self._legs["a"].stats(), self._legs["b"].stats())

    def _command(self, command: str, **extra: Any) -> Deferred[dict[bytes, Any]]:
        return self._relay.client.request({"command": command, "call-id": self.ng_call_id, **extra})

    def _party_command(self, command: str, tag: str, **extra: Any) -> Deferred[dict[bytes, Any]]:
        """`command` for the party with `tag` of a set-up call (`NgError` once closed or not set up)."""
        if self.closed or not self._set_up:
            return fail(NgError(f"{command}: the call is {'closed' if self.closed else 'not set up yet'}"))
        return self._command(command, **{"from-tag": tag}, **extra)

    def _cycle(self, setup: bool = False) -> Deferred[Any]:
        """`offer` from "a", `answer` from "b" with the legs' current remotes (and a `query` in setup)."""
        self._version += 1
        a, b = self._legs["a"], self._legs["b"]
        flags = [*_FLAGS, "inject DTMF"] if self._relay.inject_dtmf else _FLAGS
        tags: dict[str, Any] = {"from-tag": "a", "flags": flags, "ICE": "remove"}
        offer = self._command("offer", sdp=synthetic_sdp(a.remote, self._version), **tags)

        def answer(_: object) -> Deferred[dict[bytes, Any]]:
            return self._command(
                "answer", sdp=synthetic_sdp(b.remote, self._version), **{"to-tag": "b"}, **tags
            )

        offer.addCallback(answer)
        if setup:
            offer.addCallback(lambda _: self._command("query"))
        return offer

    def _setup_done(self, answer: dict[bytes, Any]) -> None:
        try:
            tags = answer[b"tags"]
            for name, leg in self._legs.items():
                leg._learn(tags[name.encode()])
        except (KeyError, TypeError, NgError) as e:
            self._setup_failed_with(NgError(getattr(e, "reason", "query answer without the call's tags")))
            return
        self._set_up = True
        self._after_cycle()
        if not self.ready.called:
            self.ready.callback(None)

    def _setup_failed(self, failure: Any) -> None:
        error = failure.value if isinstance(failure.value, NgError) else NgError(str(failure.value)[:120])
        self._setup_failed_with(error)

    def _setup_failed_with(self, error: NgError) -> None:
        self._busy = False
        _log.warn("Call {id}: rtpengine setup failed: {reason}", id=self.call_id, reason=error.reason)
        if self.closed:
            self._delete()  # closed during the setup: the delete waited for it
        else:
            self.close()
        if not self.ready.called:
            self.ready.errback(error)

    def _changed(self) -> None:
        if self.closed:
            return
        if self._busy:
            self._dirty = True
            return
        self._busy = True
        self._cycle().addCallbacks(lambda _: self._after_cycle(), self._update_failed)

    def _update_failed(self, failure: Any) -> None:
        _log.warn("Call {id}: rtpengine update failed: {e}", id=self.call_id, e=failure.getErrorMessage())
        self._after_cycle()

    def _after_cycle(self) -> None:
        self._busy = False
        if self.closed:
            self._delete()
        elif self._dirty:
            self._dirty = False
            self._changed()

    def refresh_stats(self) -> Deferred[SessionStats]:
        """Ask rtpengine (`query`) for the call's counters and endpoints; fires with `stats()` after."""
        if self.closed:
            return succeed(self.stats())

        def learn(answer: dict[bytes, Any]) -> SessionStats:
            for name, leg in self._legs.items():
                monologue = answer.get(b"tags", {}).get(name.encode())
                if monologue is not None:
                    leg._learn(monologue)
            return self.stats()

        return self._command("query").addCallback(learn)

    def close(self) -> Deferred[None]:
        """Delete the call on rtpengine (after a setup or update in flight); idempotent. The Deferred fires
        when rtpengine answered the `delete` (errors are logged, never raised)."""
        if not self.closed:
            self.closed = True
            self._deleted = Deferred()
            self._relay._closed_session(self, _follow(self._deleted))
            if not self._busy:
                self._delete()
        assert self._deleted is not None
        return _follow(self._deleted)

    def _delete(self) -> None:
        done = self._deleted
        if done is None or done.called or self._busy:
            return

        def deleted(result: object) -> None:
            if isinstance(result, Failure):
                _log.warn(
                    "Call {id}: rtpengine delete failed: {e}", id=self.call_id, e=result.getErrorMessage()
                )
            done.callback(None)

        self._busy = True  # nothing else is sent for this call
        self._command("delete", **{"from-tag": "a"}).addBoth(deleted)


def _follow(d: Deferred[None]) -> Deferred[None]:
    """A new Deferred that fires (None) when `d` fires (`d` fires once, with None)."""
    follower: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        follower.callback(None)
        return result

    d.addBoth(fire)
    return follower


@implementer(IMediaRelay)
class RtpengineRelay:
    """`IMediaRelay` on rtpengine (module docstring).

    Args:
        client: an `NgClient` listening on its UDP port, addressed to rtpengine's ng listener.
        inject_dtmf: mark every call for `play DTMF` (`RtpengineLeg.play_dtmf`; module docstring).
    """

    clock = None  # no DTMF interworking or transcoding on rtpengine calls

    def __init__(self, client: NgClient, *, inject_dtmf: bool = False) -> None:
        self.client = client
        self.inject_dtmf = inject_dtmf
        self._open: set[RtpengineSession] = set()
        self._deleting: set[Deferred[None]] = set()  # deletes in flight (`close` waits for them too)
        self.created = 0

    @property
    def sessions(self) -> int:
        return len(self._open)

    def create_session(self, call_id: str) -> RtpengineSession:
        """A session whose setup is under way: wait for its `ready` before using the legs' ports."""
        session = RtpengineSession(call_id, self)
        if not session.closed:
            self._open.add(session)
        self.created += 1
        return session

    def _closed_session(self, session: RtpengineSession, deleted: Deferred[None]) -> None:
        """`session` was closed: `deleted` fires once rtpengine answered its `delete` (or gave up)."""
        self._open.discard(session)
        self._deleting.add(deleted)
        deleted.addBoth(lambda _: self._deleting.discard(deleted))

    def ping(self) -> Deferred[dict[bytes, Any]]:
        """`ping`: fires when rtpengine answers "pong"."""
        return self.client.request({"command": "ping"})

    def close(self) -> Deferred[None]:
        """Delete every open call; fires when rtpengine answered every delete, also those of sessions
        closed before (or the requests timed out): then the client may be closed."""
        for session in list(self._open):
            session.close()
        return DeferredList(list(self._deleting)).addCallback(lambda _: None)
