"""Call park (`pbx.apps.park`) on fake calls and a `task.Clock`: parking on the first free orbit with the
orbit spoken and music after it, the timeout back to the dialplan, retrieval joining the two calls' media
(with G.711 transcoding), two retrievers racing (one wins), hang-ups on either side."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from pbx.apps import IvrApps
from pbx.apps.park import CallPark
from pbx.dialplan.actions import parse_line
from pbx.media.g711 import ulaw_encode
from tests.apps.fakes import OFFER_ANSWER, FakeCall, FakeEngine, FakeLeg, done

PCMU_ANSWER = OFFER_ANSWER.replace(b"RTP/AVP 8 101", b"RTP/AVP 0 101").replace(b"8 PCMA", b"0 PCMU")


class Leg(FakeLeg):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def send_rtp(self, data: bytes) -> None:
        self.sent.append(data)


class Call(FakeCall):
    """A call the B2BUA would run: a caller, variables, and hanging up tells the observers."""

    def __init__(self, id: str, caller: str, park: CallPark, sdp: bytes = OFFER_ANSWER, **extra: Any) -> None:
        super().__init__(sdp)
        self.id = id
        self.caller = SimpleNamespace(extension=caller, tenant="default")
        self.vars: dict[str, str] = {}
        self.leg = Leg()
        self.park = park
        self.hung_up_by = ""
        for key, value in extra.items():
            setattr(self, key, value)

    def hangup(self, by: str) -> None:
        self.hung_up_by = by
        self.hang_up()

    def hang_up(self) -> None:
        """The call ends (BYE): the B2BUA closes its media and tells its observers."""
        if not self.ended:
            self.end()
            self.park.call_ended(self)


class World:
    def __init__(self, tmp_path: Path, orbits: tuple[str, ...] = ("701", "702")) -> None:
        self.clock = Clock()
        self.engine = FakeEngine(self.clock)
        self.events: list[tuple[str, str, str]] = []
        self.park = CallPark(
            self.clock,
            IvrApps(self.engine, tmp_path, tmp_path),
            orbits=lambda tenant: orbits,
            timeout=lambda tenant: 45.0,
            emit=lambda event, call, tenant, orbit: self.events.append((event, call.id, orbit)),
        )
        self.apps: dict[str, Any] = {}
        self.park.register(self.apps)

    def call(self, id: str, caller: str = "1001", **kw: Any) -> Call:
        return Call(id, caller, self.park, **kw)

    def run(self, call: Call, line: str) -> Deferred[str]:
        action = parse_line(line)
        assert action is not None
        return ensureDeferred(self.apps[action.name](call, action))

    def endpoint_of(self, call: Call) -> Any:
        return next(
            e for e, t in zip(self.engine.created, self.engine.transports, strict=True) if t is call.leg
        )


def test_a_parked_call_hears_its_orbit_then_music_and_times_out(tmp_path: Path) -> None:
    world = World(tmp_path)
    parked = world.call("p1", referred_by="1003")
    d = world.run(parked, "park")
    assert parked.sent == [200]
    assert world.park.parked("default") == {"701": parked}
    assert world.events == [("parked", "p1", "701")]
    world.clock.advance(10)  # the announcement (2 s per item in the fake)
    endpoint = world.endpoint_of(parked)
    assert endpoint.played[0] == (["park-parked-on", "digit-7", "digit-0", "digit-1"], False)
    assert endpoint.moh
    world.clock.advance(35)  # 45 s after parking
    assert done(d) == "timeout"
    assert not endpoint.moh
    assert parked.vars == {"parker": "1003", "park_orbit": "701"}  # for the template (park-return.j2)
    assert world.park.parked("default") == {}
    assert world.events[-1] == ("unparked", "p1", "701")
    assert world.clock.getDelayedCalls() == []


def test_retrieval_joins_the_two_calls_media_with_transcoding(tmp_path: Path) -> None:
    world = World(tmp_path)
    parked = world.call("p1")  # PCMA
    parking = world.run(parked, "park announce=no")
    retriever = world.call("r1", "1002", sdp=PCMU_ANSWER)
    retrieving = world.run(retriever, "unpark 701")
    assert retriever.sent == [200]
    assert world.park.parked("default") == {}
    assert world.events == [("parked", "p1", "701"), ("unparked", "p1", "701")]
    assert parked.endpoint is None and world.endpoint_of(parked).closed
    # RTP from the retriever's phone (PCMU, pt 0) reaches the parked phone as PCMA (pt 8), and back.
    samples = (1000).to_bytes(2, "little", signed=True) * 160
    packet = bytes([0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7]) + ulaw_encode(samples)
    retriever.leg.consumer.rtp_received(packet, ("127.0.0.1", 4000))
    (forwarded,) = parked.leg.sent
    assert forwarded[1] & 0x7F == 8 and len(forwarded) == len(packet)
    assert forwarded[12:] != packet[12:]  # translated to A-law
    parked.leg.consumer.rtp_received(forwarded, ("127.0.0.1", 4002))
    assert retriever.leg.sent[0][1] & 0x7F == 0
    # Telephone-events go across too (both negotiated 101); anything else is dropped.
    retriever.leg.consumer.rtp_received(bytes([0x80, 101]) + packet[2:16], ("127.0.0.1", 4000))
    retriever.leg.consumer.rtp_received(bytes([0x80, 13]) + packet[2:], ("127.0.0.1", 4000))
    assert [p[1] & 0x7F for p in parked.leg.sent] == [8, 101]
    assert not parking.called and not retrieving.called  # both calls go on, joined
    retriever.hang_up()  # either side hanging up ends the other
    assert parked.ended and parked.hung_up_by == "callee"
    assert (done(parking), done(retrieving)) == ("retrieved", "retrieved")
    assert world.clock.getDelayedCalls() == []


def test_two_retrievers_race_and_one_wins(tmp_path: Path) -> None:
    world = World(tmp_path)
    parked = world.call("p1")
    parking = world.run(parked, "park announce=no")
    first, second = world.call("r1", "1002"), world.call("r2", "1003")
    won = world.run(first, "unpark 701")
    lost = world.run(second, "unpark 701")
    world.clock.advance(10)
    assert done(lost) == "empty"
    assert world.endpoint_of(second).played == [(["park-empty"], False)]
    assert first.leg.consumer is not None and parked.leg.consumer is not None
    parked.hang_up()
    assert first.ended
    assert (done(parking), done(won)) == ("retrieved", "retrieved")
    assert world.clock.getDelayedCalls() == []


def test_the_parked_party_hanging_up_frees_the_orbit(tmp_path: Path) -> None:
    world = World(tmp_path)
    parked = world.call("p1")
    parking = world.run(parked, "park")
    world.clock.advance(3)
    parked.hang_up()
    assert done(parking) == "hangup"
    assert world.park.parked("default") == {}
    assert world.events == [("parked", "p1", "701"), ("unparked", "p1", "701")]
    later = world.run(world.call("r1"), "unpark 701")
    world.clock.advance(5)
    assert done(later) == "empty"
    assert world.clock.getDelayedCalls() == []


def test_orbits_are_taken_in_order_and_a_full_lot_says_so(tmp_path: Path) -> None:
    world = World(tmp_path, orbits=("701",))
    first = world.call("p1")
    parking = world.run(first, "park announce=no")
    second = world.call("p2", "1002")
    full = world.run(second, "park")
    world.clock.advance(5)
    assert done(full) == "full"
    assert world.endpoint_of(second).played == [(["park-full"], False)]
    world.clock.advance(45)
    assert done(parking) == "timeout"
    assert world.clock.getDelayedCalls() == []


def test_a_call_cannot_retrieve_itself_and_a_retriever_hanging_up_early_leaves_it_parked(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    parked = world.call("p1")
    parking = world.run(parked, "park announce=no")
    gone = world.call("r1")
    gone.ended = True  # hung up before its media was agreed
    assert done(world.run(gone, "unpark 701")) in ("failed", "empty")
    assert world.park.parked("default") == {"701": parked}
    world.clock.advance(45)  # the timer was started again
    assert done(parking) == "timeout"
    assert world.clock.getDelayedCalls() == []


def test_a_retriever_whose_offer_fails_leaves_the_call_parked(tmp_path: Path) -> None:
    world = World(tmp_path)
    parked = world.call("p1")
    parking = world.run(parked, "park announce=no")
    broken = world.call("r1")

    def refuse() -> None:
        raise ValueError("488")

    broken.answer_locally = refuse  # type: ignore[method-assign]
    failure = world.run(broken, "unpark 701")
    assert isinstance(done(failure).value, ValueError)
    assert world.park.parked("default") == {"701": parked}
    second = world.call("r2")
    retrieving = world.run(second, "unpark 701")
    assert world.park.parked("default") == {}
    second.hang_up()
    assert (done(parking), done(retrieving)) == ("retrieved", "retrieved")
    assert world.clock.getDelayedCalls() == []
